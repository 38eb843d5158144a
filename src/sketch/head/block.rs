//! Batched causal pushes in block form (`push_tokens`, the bank's prefill).
//!
//! A block holds `c` tokens; `S = s + d` and `z = zs + zd` are the state
//! before it. Query row `i` belongs to token `j(i)` of the block (with GQA,
//! several query rows share a token):
//!
//! ```text
//! num_i = phi_q(q_i)^T S  + sum_{j' <= j(i)} P(s q_i.k_j') v_j'     (rows x t)(t x dv), (rows x c)(c x dv)
//! den_i = phi_q(q_i)^T z  + sum_{j' <= j(i)} P(s q_i.k_j')
//! d    += Phi_k^T V,   zd += Phi_k^T 1                              (t x c)(c x dv)
//! ```
//!
//! This is the single-token push summed differently, because
//! `<phi_q(q), phi_k(k)> = P(s q.k)` exactly: the inter-block part and the
//! update are [`Kernels::gemm`] products, the intra-block part is the
//! polynomial of the scores. Blocks end on flush boundaries
//! ([`FLUSH_INTERVAL`]), so the compensated state keeps its error bound.
//! Scratch is per thread (`PREFILL_SCRATCH`), not per handle.

use super::Sketch;
use crate::error::{Error, Result};
use crate::kernels::{Gemm, Kernels};
use crate::sketch::state::FLUSH_INTERVAL;
use std::cell::RefCell;

/// Inner-dimension slice of the inter-block product (the packed `S` slice).
const KC: usize = 256;
/// Largest per-thread feature scratch (`rows x t` floats) before the block
/// is shortened.
const PHI_BYTES: usize = 8 << 20;

thread_local! {
    static PREFILL_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The caller's arrays for one key/value head: token `j`, query `r` of the
/// group. `q` row at `q_at + j q_tok + r d`, `k` row at `k_at + j k_tok`,
/// `v` row at `v_at + j v_tok`, output row at `out_at + j out_tok + r dv`.
pub(crate) struct Rows<'a> {
    pub q: &'a [f32],
    pub q_at: usize,
    pub q_tok: usize,
    pub k: &'a [f32],
    pub k_at: usize,
    pub k_tok: usize,
    pub v: &'a [f32],
    pub v_at: usize,
    pub v_tok: usize,
    pub out: &'a mut [f32],
    pub out_at: usize,
    pub out_tok: usize,
    /// Query heads per key/value head (1 for a single head).
    pub group: usize,
}

/// Scratch layout of one block: offsets into the per-thread buffer.
struct Layout {
    sb: usize,
    acc: usize,
    qs: usize,
    kt: usize,
    sc: usize,
    dm: usize,
    end: usize,
}

impl Layout {
    fn new(rows: usize, c: usize, t: usize, d: usize, dv: usize) -> Option<Layout> {
        let sb = rows.max(c).checked_mul(t)?;
        let acc = sb + KC.min(t) * dv;
        let qs = acc + rows * dv;
        let kt = qs + rows * d;
        let sc = kt + d * c;
        let dm = sc + rows * c;
        let end = dm + 2 * rows;
        Some(Layout {
            sb,
            acc,
            qs,
            kt,
            sc,
            dm,
            end,
        })
    }
}

impl Rows<'_> {
    fn q(&self, d: usize, j: usize, r: usize) -> &[f32] {
        let o = self.q_at + j * self.q_tok + r * d;
        &self.q[o..o + d]
    }
    fn k(&self, d: usize, j: usize) -> &[f32] {
        let o = self.k_at + j * self.k_tok;
        &self.k[o..o + d]
    }
    fn v(&self, dv: usize, j: usize) -> &[f32] {
        let o = self.v_at + j * self.v_tok;
        &self.v[o..o + dv]
    }
}

impl Sketch {
    /// Tokens per block: `FLUSH_INTERVAL`, shortened so `rows x t` floats
    /// of features stay within `PHI_BYTES`.
    fn block_len(&self, group: usize) -> usize {
        let t = self.map.len().max(1);
        (PHI_BYTES / 4 / t / group.max(1)).clamp(1, FLUSH_INTERVAL as usize)
    }

    /// Reserves the per-thread scratch for blocks of `group` queries per
    /// token (before anything is committed, so a failure changes nothing).
    pub(crate) fn reserve_block_scratch(&self, group: usize) -> Result<()> {
        let need = self.block_scratch_len(group)?;
        PREFILL_SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            if buf.len() < need {
                let extra = need - buf.len();
                buf.try_reserve_exact(extra).map_err(|_| Error::Alloc)?;
                buf.resize(need, 0.0);
            }
            Ok(())
        })
    }

    /// Commits tokens `0..n` of `rows` (already validated; scratch reserved
    /// by [`reserve_block_scratch`](Self::reserve_block_scratch)).
    pub(crate) fn commit_rows(&mut self, rows: &mut Rows, n: usize) {
        PREFILL_SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            self.commit_rows_with(rows, n, &mut buf);
        });
    }

    /// Scratch floats [`commit_rows_with`](Self::commit_rows_with) needs for
    /// blocks of `group` queries per token.
    pub(crate) fn block_scratch_len(&self, group: usize) -> Result<usize> {
        if self.hybrid.is_some() {
            return Ok(0);
        }
        let (d, dv) = self.dims();
        let c = self.block_len(group);
        Ok(Layout::new(c * group, c, self.map.len(), d, dv)
            .ok_or(Error::Alloc)?
            .end)
    }

    /// [`commit_rows`](Self::commit_rows) with a caller-owned scratch of at
    /// least [`block_scratch_len`](Self::block_scratch_len) floats.
    pub(crate) fn commit_rows_with(&mut self, rows: &mut Rows, n: usize, buf: &mut [f32]) {
        let mut j = 0;
        while j < n {
            let room = (FLUSH_INTERVAL - self.state.since_flush) as usize;
            let c = self.block_len(rows.group).min(room).min(n - j);
            if self.hybrid.is_some() || c == 1 {
                self.commit_one(rows, j);
                j += 1;
                continue;
            }
            self.commit_block(rows, j, c, buf);
            j += c;
        }
    }

    /// One token through the single-token path; the other queries of the
    /// group read the state after it.
    fn commit_one(&mut self, rows: &mut Rows, j: usize) {
        let (d, dv) = self.dims();
        let incr = self.kv_incr(rows.k(d, j), rows.v(dv, j)).unwrap_or(0.0);
        let o = rows.out_at + j * rows.out_tok;
        let (qa, ka, va) = (
            rows.q_at + j * rows.q_tok,
            rows.k_at + j * rows.k_tok,
            rows.v_at + j * rows.v_tok,
        );
        self.commit_token(
            &rows.q[qa..qa + d],
            &rows.k[ka..ka + d],
            &rows.v[va..va + dv],
            incr,
            &mut rows.out[o..o + dv],
        );
        for r in 1..rows.group {
            let q = &rows.q[qa + r * d..qa + (r + 1) * d];
            let out = &mut rows.out[o + r * dv..o + (r + 1) * dv];
            // Validated by the caller; a read-only query cannot fail here.
            let _ = self.query(q, out);
        }
    }

    /// Tokens `j0..j0 + c` of `rows` as one block (see the module doc).
    fn commit_block(&mut self, rows: &mut Rows, j0: usize, c: usize, buf: &mut [f32]) {
        let (d, dv) = self.dims();
        let t = self.map.len();
        let g = rows.group;
        let nr = c * g;
        let kern: &Kernels = self.kern;
        let l = Layout::new(nr, c, t, d, dv).expect("layout reserved");
        let buf = &mut buf[..l.end];
        let (phi, rest) = buf.split_at_mut(l.sb);
        let (sb, rest) = rest.split_at_mut(l.acc - l.sb);
        let (acc, rest) = rest.split_at_mut(l.qs - l.acc);
        let (qs, rest) = rest.split_at_mut(l.kt - l.qs);
        let (kt, rest) = rest.split_at_mut(l.sc - l.kt);
        let (sc, dm) = rest.split_at_mut(l.dm - l.sc);
        let v_all: &[f32] = rows.v;
        self.poisoned = true;

        // Query features, one row per (token, group member).
        for jj in 0..c {
            for r in 0..g {
                let i = jj * g + r;
                let q = rows.q(d, j0 + jj, r);
                Self::query_features(
                    kern,
                    &self.map,
                    &self.alphas,
                    self.cfg.scale,
                    q,
                    &mut qs[i * d..(i + 1) * d],
                    &mut phi[i * t..(i + 1) * t],
                );
            }
        }
        // num = Phi_q S. At a flush boundary (every block but a first partial
        // one) d holds only TwoSum residuals below half an ulp of s, and S is
        // read as s: the same single rounding a f32 read of s + d has.
        // Otherwise S is packed slice by slice as s + d.
        acc.fill(0.0);
        let st = &self.state;
        if st.since_flush == 0 {
            let shape = Gemm {
                m: nr,
                n: dv,
                k: t,
                rsa: t,
                csa: 1,
                ldb: dv,
                ldc: dv,
            };
            (kern.gemm)(&shape, phi, &st.s, acc);
        } else {
            let mut p0 = 0;
            while p0 < t {
                let kc = (t - p0).min(KC);
                let src = p0 * dv..(p0 + kc) * dv;
                for ((o, &a), &b) in sb.iter_mut().zip(&st.s[src.clone()]).zip(&st.d[src]) {
                    *o = a + b;
                }
                let shape = Gemm {
                    m: nr,
                    n: dv,
                    k: kc,
                    rsa: t,
                    csa: 1,
                    ldb: dv,
                    ldc: dv,
                };
                (kern.gemm)(&shape, &phi[p0..], &sb[..kc * dv], acc);
                p0 += kc;
            }
        }
        // den, mag of the state part.
        for i in 0..nr {
            let (den, mag) = (kern.query_z)(&st.zs, &st.zd, &phi[i * t..(i + 1) * t]);
            dm[2 * i] = den;
            dm[2 * i + 1] = mag;
        }
        // Intra-block scores P(s q_i . k_j'), causal; qs holds s q.
        for jj in 0..c {
            let k = rows.k(d, j0 + jj);
            for (a, &x) in k.iter().enumerate() {
                kt[a * c + jj] = x;
            }
        }
        sc.fill(0.0);
        let shape = Gemm {
            m: nr,
            n: c,
            k: d,
            rsa: d,
            csa: 1,
            ldb: c,
            ldc: c,
        };
        (kern.gemm)(&shape, qs, kt, sc);
        let gdeg = self.map.degree();
        for (i, row) in sc.chunks_exact_mut(c).enumerate() {
            let jj = i / g;
            let (mut den, mut mag) = (0.0f32, 0.0f32);
            for (col, x) in row.iter_mut().enumerate() {
                if col > jj {
                    *x = 0.0;
                    continue;
                }
                let mut p = self.alphas[gdeg];
                for a in self.alphas[..gdeg].iter().rev() {
                    p = p * *x + a;
                }
                *x = p;
                den += p;
                mag += p.abs();
            }
            dm[2 * i] += den;
            dm[2 * i + 1] += mag;
        }
        let shape = Gemm {
            m: nr,
            n: dv,
            k: c,
            rsa: c,
            csa: 1,
            ldb: rows.v_tok,
            ldc: dv,
        };
        let v_blk = &v_all[rows.v_at + j0 * rows.v_tok..];
        (kern.gemm)(&shape, sc, v_blk, acc);

        // Key features, then the state update d += Phi_k^T V, zd += Phi_k^T 1.
        let mut bound = self.bound;
        for jj in 0..c {
            let k = rows.k(d, j0 + jj);
            (kern.expand)(&self.map, k, &mut phi[jj * t..(jj + 1) * t]);
            bound += self.kv_incr(k, rows.v(dv, j0 + jj)).unwrap_or(0.0);
        }
        let n0 = self.tokens;
        // Outputs (before the update: the fallback reads the old degree-0 row).
        for i in 0..nr {
            let jj = i / g;
            let (den, mag) = (dm[2 * i], dm[2 * i + 1]);
            let o = rows.out_at + (j0 + jj) * rows.out_tok + (i % g) * dv;
            let (num, dst) = (&acc[i * dv..(i + 1) * dv], &mut rows.out[o..o + dv]);
            if !Self::divide(num, den, mag, dst) {
                self.fallbacks
                    .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                // Uniform attention over tokens 0..=j: degree-0 row plus the block's values.
                let cnt = st.zs[0] as f64 + st.zd[0] as f64 + (jj + 1) as f64;
                for col in 0..dv {
                    let mut sum = st.s[col] as f64 + st.d[col] as f64;
                    for jp in 0..=jj {
                        sum += v_all[rows.v_at + (j0 + jp) * rows.v_tok + col] as f64;
                    }
                    dst[col] = (sum / cnt) as f32;
                }
            }
        }
        for jj in 0..c {
            self.rec
                .record_key(n0 + jj as u64, &phi[jj * t..(jj + 1) * t]);
            if g == 1 {
                let o = rows.out_at + (j0 + jj) * rows.out_tok;
                self.rec.record_output(n0 + jj as u64, &rows.out[o..o + dv]);
            }
        }
        let st = &mut self.state;
        let shape = Gemm {
            m: t,
            n: dv,
            k: c,
            rsa: 1,
            csa: t,
            ldb: rows.v_tok,
            ldc: dv,
        };
        (kern.gemm)(&shape, phi, v_blk, &mut st.d);
        for jj in 0..c {
            (kern.absorb_z)(&mut st.zd, &phi[jj * t..(jj + 1) * t]);
        }
        self.tokens += c as u64;
        self.bound = bound;
        st.since_flush += c as u32;
        if st.since_flush >= FLUSH_INTERVAL {
            st.flush(kern);
        }
        self.poisoned = false;
    }
}
