//! Batched causal pushes in block form (`push_tokens`, the bank's prefill).
//!
//! A block holds `c` tokens that join the state's pending list (see
//! `sketch::state`: `s` is the flushed total, pending tokens are kept raw).
//! Query row `i` belongs to token `j(i)` (with GQA, several query rows share
//! a token); `p` runs over pending tokens up to and including `j(i)`:
//!
//! ```text
//! num_i = phi_q(q_i)^T s + sum_p P(s q_i.k_p) v_p     (rows x t)(t x dv) + (rows x 64)(64 x dv)
//! den_i = phi_q(q_i)^T zs + sum_p P(s q_i.k_p)
//! d    += Phi_k^T V,   zd += Phi_k^T 1                (t x c)(c x dv)
//! ```
//!
//! This is exactly what `c` single pushes compute (the same formula, the
//! same pending terms), organised as [`Kernels::gemm`] products with `rows`
//! queries at once. Blocks end on flush boundaries ([`FLUSH_INTERVAL`]), so
//! the compensated state keeps its error bound.
//! Scratch is per thread (`PREFILL_SCRATCH`), not per handle.

use super::Sketch;
use crate::error::{Error, Result};
use crate::kernels::{Gemm, Kernels};
use crate::sketch::state::FLUSH_INTERVAL;
use std::cell::RefCell;

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
    acc: usize,
    qs: usize,
    sc: usize,
    dm: usize,
    end: usize,
}

impl Layout {
    /// `phi` (max(rows, c) x t), `acc` (rows x dv), `qs` (rows x d),
    /// `sc` (rows x FLUSH_INTERVAL), `dm` (rows x 2).
    fn new(rows: usize, c: usize, t: usize, d: usize, dv: usize) -> Option<Layout> {
        let acc = rows.max(c).checked_mul(t)?;
        let qs = acc + rows * dv;
        let sc = qs + rows * d;
        let dm = sc + rows * FLUSH_INTERVAL as usize;
        let end = dm + 2 * rows;
        Some(Layout {
            acc,
            qs,
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

    /// Reserves the per-thread scratch for `n` tokens of `group` queries
    /// each (before anything is committed, so a failure changes nothing).
    /// A paged head's prefill blocks (`n > 1`) want more than its single
    /// steps; if that much cannot be had it prefills token by token.
    pub(crate) fn reserve_block_scratch(&self, group: usize, n: usize) -> Result<()> {
        let need = self.block_scratch_len(group, 1)?;
        let want = self.block_scratch_len(group, n)?;
        PREFILL_SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            let have = buf.len();
            if have < want && buf.try_reserve_exact(want - have).is_ok() {
                buf.resize(want, 0.0);
            }
            if buf.len() < need {
                let extra = need - buf.len();
                buf.try_reserve_exact(extra).map_err(|_| Error::Alloc)?;
                buf.resize(need, 0.0);
            }
            Ok(())
        })
    }

    /// Runs `f` with this thread's scratch (reserved before by
    /// [`reserve_block_scratch`](Self::reserve_block_scratch)).
    pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut [f32]) -> R) -> R {
        PREFILL_SCRATCH.with(|cell| f(&mut cell.borrow_mut()))
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
    /// `n` tokens of `group` queries per token (hybrid heads: what their
    /// single steps need, and for `n > 1` what a paged head's prefill
    /// blocks want: with less it prefills token by token).
    pub(crate) fn block_scratch_len(&self, group: usize, n: usize) -> Result<usize> {
        if let Some(h) = self.hybrid.as_deref() {
            return Ok(if n > 1 {
                h.scratch_len_block(group)
            } else {
                h.scratch_len_group(group)
            });
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
            if let Some(h) = self.hybrid.as_deref() {
                let (d, dv) = self.dims();
                // A block's queries and outputs (`mb` rows at most) are
                // gathered ahead of the paged state's own scratch
                // (`Paged::scratch_len_block`).
                let mb = h.block_tokens(rows.group) * rows.group;
                let b = h.block_len(rows.group, n - j, buf.len().saturating_sub(mb * (d + dv)));
                if b > 1 {
                    self.commit_hybrid_block(rows, j, b, mb, buf);
                } else {
                    self.commit_one(rows, j, buf);
                }
                j += b;
                continue;
            }
            let room = (FLUSH_INTERVAL - self.state.since_flush) as usize;
            let c = self.block_len(rows.group).min(room).min(n - j);
            if c == 1 {
                self.commit_one(rows, j, buf);
                j += 1;
                continue;
            }
            self.commit_block(rows, j, c, buf);
            j += c;
        }
    }

    /// Tokens `j0..j0 + b` of `rows` through a paged head's prefill block
    /// (`Hybrid::step_block`; `b` from `Hybrid::block_len`; `mb`: the
    /// queries of a full block, whose rows `buf` starts with): the same
    /// outputs and state as `b` single-token commits, bitwise.
    fn commit_hybrid_block(
        &mut self,
        rows: &mut Rows,
        j0: usize,
        b: usize,
        mb: usize,
        buf: &mut [f32],
    ) {
        let (d, dv) = self.dims();
        let g = rows.group;
        let m = b * g;
        let kern: &Kernels = self.kern;
        let (qs, rest) = buf.split_at_mut(mb * d);
        let (outs, buf) = rest.split_at_mut(mb * dv);
        let (qs, outs) = (&mut qs[..m * d], &mut outs[..m * dv]);
        for t in 0..b {
            let qa = rows.q_at + (j0 + t) * rows.q_tok;
            qs[t * g * d..(t + 1) * g * d].copy_from_slice(&rows.q[qa..qa + g * d]);
        }
        let Some(h) = self.hybrid.as_mut() else {
            return;
        };
        self.poisoned = true;
        for t in 0..b {
            h.insert(kern, rows.k(d, j0 + t), rows.v(dv, j0 + t), buf);
        }
        h.step_block(kern, b, qs, outs, buf);
        for t in 0..b {
            let o = rows.out_at + (j0 + t) * rows.out_tok;
            rows.out[o..o + g * dv].copy_from_slice(&outs[t * g * dv..(t + 1) * g * dv]);
            // As `commit_one`: the bound grows by each token's increment in turn.
            self.bound += self
                .kv_incr(rows.k(d, j0 + t), rows.v(dv, j0 + t))
                .unwrap_or(0.0);
        }
        self.tokens += b as u64;
        self.poisoned = false;
    }

    /// One token through the single-token path. Hybrid heads take the
    /// whole group at once (eviction sees every query head); otherwise the
    /// other queries of the group read the state after it.
    fn commit_one(&mut self, rows: &mut Rows, j: usize, buf: &mut [f32]) {
        let (d, dv) = self.dims();
        let incr = self.kv_incr(rows.k(d, j), rows.v(dv, j)).unwrap_or(0.0);
        let o = rows.out_at + j * rows.out_tok;
        let (qa, ka, va) = (
            rows.q_at + j * rows.q_tok,
            rows.k_at + j * rows.k_tok,
            rows.v_at + j * rows.v_tok,
        );
        if self.hybrid.is_some() {
            let g = rows.group;
            self.commit_token(
                &rows.q[qa..qa + g * d],
                &rows.k[ka..ka + d],
                &rows.v[va..va + dv],
                incr,
                &mut rows.out[o..o + g * dv],
                buf,
            );
            return;
        }
        self.commit_token(
            &rows.q[qa..qa + d],
            &rows.k[ka..ka + d],
            &rows.v[va..va + dv],
            incr,
            &mut rows.out[o..o + dv],
            buf,
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
        const FI: usize = FLUSH_INTERVAL as usize;
        let (d, dv) = self.dims();
        let t = self.map.len();
        let g = rows.group;
        let nr = c * g;
        let kern: &Kernels = self.kern;
        let l = Layout::new(nr, c, t, d, dv).expect("layout reserved");
        let buf = &mut buf[..l.end];
        let (phi, rest) = buf.split_at_mut(l.acc);
        let (acc, rest) = rest.split_at_mut(l.qs - l.acc);
        let (qs, rest) = rest.split_at_mut(l.sc - l.qs);
        let (sc, dm) = rest.split_at_mut(l.dm - l.sc);
        self.poisoned = true;

        // The block's tokens join the pending list (p0 + c <= FLUSH_INTERVAL).
        let p0 = self.state.since_flush as usize;
        {
            let st = &mut self.state;
            for jj in 0..c {
                let (k, v) = (rows.k(d, j0 + jj), rows.v(dv, j0 + jj));
                for (a, &x) in k.iter().enumerate() {
                    st.pkt[a * FI + p0 + jj] = x;
                }
                st.pv[(p0 + jj) * dv..(p0 + jj + 1) * dv].copy_from_slice(v);
            }
        }
        // Query features, one row per (token, group member); qs = s q.
        for jj in 0..c {
            for r in 0..g {
                let i = jj * g + r;
                Self::query_features(
                    kern,
                    &self.map,
                    &self.alphas,
                    self.cfg.scale,
                    rows.q(d, j0 + jj, r),
                    &mut qs[i * d..(i + 1) * d],
                    &mut phi[i * t..(i + 1) * t],
                );
            }
        }
        let st = &self.state;
        // num = Phi_q s; (den, mag) of the flushed total.
        acc.fill(0.0);
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
        for i in 0..nr {
            let (den, mag) = (kern.query_zs)(&st.zs, &phi[i * t..(i + 1) * t]);
            dm[2 * i] = den;
            dm[2 * i + 1] = mag;
        }
        // Pending part: w = P(s q_i . k_j) for pending j <= p0 + j(i).
        let np = p0 + c;
        sc.fill(0.0);
        let shape = Gemm {
            m: nr,
            n: np,
            k: d,
            rsa: d,
            csa: 1,
            ldb: FI,
            ldc: FI,
        };
        (kern.gemm)(&shape, qs, &st.pkt, sc);
        let gdeg = self.alphas.len() - 1;
        for (i, row) in sc.chunks_exact_mut(FI).enumerate() {
            let last = p0 + i / g;
            let (mut den, mut mag) = (0.0f32, 0.0f32);
            for (col, x) in row.iter_mut().enumerate().take(np) {
                if col > last {
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
            k: np,
            rsa: FI,
            csa: 1,
            ldb: dv,
            ldc: dv,
        };
        (kern.gemm)(&shape, sc, &st.pv, acc);

        // Outputs; the fallback is uniform attention over tokens 0..=j.
        for i in 0..nr {
            let jj = i / g;
            let (den, mag) = (dm[2 * i], dm[2 * i + 1]);
            let o = rows.out_at + (j0 + jj) * rows.out_tok + (i % g) * dv;
            let (num, dst) = (&acc[i * dv..(i + 1) * dv], &mut rows.out[o..o + dv]);
            if !Self::divide(num, den, mag, dst) {
                self.fallbacks
                    .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                let upto = p0 + jj + 1;
                let cnt = st.zs[0] as f64 + upto as f64;
                for (col, x) in dst.iter_mut().enumerate() {
                    let mut sum = st.s[col] as f64;
                    for jp in 0..upto {
                        sum += st.pv[jp * dv + col] as f64;
                    }
                    *x = (sum / cnt) as f32;
                }
            }
        }

        // Update: the earlier stage first, then d += Phi_k^T V_block, zd += Phi_k^T 1.
        let mut bound = self.bound;
        for jj in 0..c {
            let k = rows.k(d, j0 + jj);
            (kern.expand)(&self.map, k, &mut phi[jj * t..(jj + 1) * t]);
            bound += self.kv_incr(k, rows.v(dv, j0 + jj)).unwrap_or(0.0);
        }
        let n0 = self.tokens;
        for jj in 0..c {
            self.rec
                .record_key(n0 + jj as u64, &phi[jj * t..(jj + 1) * t]);
            if g == 1 {
                let o = rows.out_at + (j0 + jj) * rows.out_tok;
                self.rec.record_output(n0 + jj as u64, &rows.out[o..o + dv]);
            }
        }
        let st = &mut self.state;
        st.apply(kern);
        let shape = Gemm {
            m: t,
            n: dv,
            k: c,
            rsa: 1,
            csa: t,
            ldb: dv,
            ldc: dv,
        };
        (kern.gemm)(&shape, &phi[..c * t], &st.pv[p0 * dv..np * dv], &mut st.d);
        for jj in 0..c {
            (kern.absorb_z)(&mut st.zd, &phi[jj * t..(jj + 1) * t]);
        }
        st.since_flush = np as u32;
        st.applied = np as u32;
        if st.since_flush >= FLUSH_INTERVAL {
            st.flush(kern);
        }
        self.tokens += c as u64;
        self.bound = bound;
        self.poisoned = false;
    }
}
