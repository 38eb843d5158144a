//! The sketch state `M = sum_j phi_k(k_j) v_j^T` (t x dv) and
//! `z = sum_j phi_k(k_j)` (t): a compensated f32 total plus the raw tokens
//! since the last flush.
//!
//! ```text
//! M = s + d + sum_{staged j} phi_k(k_j) v_j^T          (z likewise with zs, zd)
//! query:  phi_q(q)^T M  =  phi_q(q)^T s  +  sum_{pending j} P(s q.k_j) v_j   (+ residual)
//! ```
//!
//! - `s`: the flushed total. Queries read it alone: 4 bytes per element
//!   per token, the least a query of the state can move.
//! - pending tokens: the `since_flush < FLUSH_INTERVAL` tokens since the
//!   last flush, kept raw (`k`, `v`). A query adds their terms directly as
//!   `P(s q.k_j) v_j` (`<phi_q(q), phi_k(k)> = P(s q.k)` exactly), so it
//!   never reads `d`.
//! - `d`: accumulator of the pending tokens already added as features, in
//!   blocks of [`stage_rows`] (16 at dv = 64) by one [`Kernels::gemm`] (`d += Phi_k^T V`); plus
//!   the TwoSum residual of the last flush (below half an ulp of `s`, the one
//!   part of `M` a query leaves out: one f32 rounding of `s + d`).
//! - `stage`: `phi_k` rows of pending tokens not yet added (`< stage_rows`).
//!
//! Every [`FLUSH_INTERVAL`] tokens the stage is added and an error-free
//! TwoSum moves `d` into `s`, leaving the residual in `d`. Because `d` only
//! holds one block of increments plus a residual, the accumulated error is
//! at most about `FLUSH_INTERVAL * 2^-24 * sum_j |increment_j|`: a relative
//! bound that does not grow with the stream length.
//!
//! Bytes: `8 t (dv + 1)` (s, d, zs, zd) `+ 4 stage_rows t` (stage)
//! `+ 4 FLUSH_INTERVAL (d + dv)` (pending tokens).

use crate::error::{try_vec, Result};
use crate::kernels::{Gemm, Kernels};

/// Tokens between two flushes of the accumulators (and most pending tokens).
pub const FLUSH_INTERVAL: u32 = 64;
/// Most pending tokens per block product into `d`.
pub const STAGE: u32 = 16;

/// Stage rows for value width `dv`: `clamp((dv + 1) / 4, 1, STAGE)`, so the
/// stage (`4 rows t` bytes) stays within 1/8 of `s + d + z` (`8 t (dv + 1)`).
pub fn stage_rows(dv: usize) -> usize {
    ((dv + 1) / 4).clamp(1, STAGE as usize)
}
const FI: usize = FLUSH_INTERVAL as usize;

/// Compensated M and z plus the pending tokens.
#[derive(Clone, Debug)]
pub struct State {
    /// M total, t x dv row-major.
    pub(crate) s: Vec<f32>,
    /// M accumulator of applied pending tokens (+ flush residual), t x dv.
    pub(crate) d: Vec<f32>,
    /// z total, t.
    pub(crate) zs: Vec<f32>,
    /// z accumulator, t.
    pub(crate) zd: Vec<f32>,
    /// Tokens since the last flush (all kept raw).
    pub(crate) since_flush: u32,
    /// Of those, how many are already added into `d`, `zd`.
    pub(crate) applied: u32,
    /// Pending keys, transposed: `pkt[a * FLUSH_INTERVAL + j] = k_j[a]` (d x 64).
    pub(crate) pkt: Vec<f32>,
    /// Pending values, row-major, 64 x dv.
    pub(crate) pv: Vec<f32>,
    /// `phi_k` of pending tokens `applied..since_flush`, stage_rows x t.
    pub(crate) stage: Vec<f32>,
    t: usize,
    dk: usize,
    dv: usize,
}

impl State {
    /// All-zero state for `t` features, keys of `d` and values of `dv`.
    /// Without `pending` (hybrid heads never use this state) the pending
    /// arrays are left empty.
    pub fn new(t: usize, d: usize, dv: usize, pending: bool) -> Result<Self> {
        let n = t.checked_mul(dv).ok_or(crate::Error::InvalidArg)?;
        let p = |n: usize| if pending { n } else { 0 };
        Ok(State {
            s: try_vec(n, 0.0)?,
            d: try_vec(n, 0.0)?,
            zs: try_vec(t, 0.0)?,
            zd: try_vec(t, 0.0)?,
            since_flush: 0,
            applied: 0,
            pkt: try_vec(p(d * FI), 0.0)?,
            pv: try_vec(p(dv * FI), 0.0)?,
            stage: try_vec(p(stage_rows(dv) * t), 0.0)?,
            t,
            dk: d,
            dv,
        })
    }

    /// Heap bytes [`new`](Self::new) allocates.
    pub fn heap_bytes_for(t: usize, d: usize, dv: usize, pending: bool) -> usize {
        let p = if pending {
            (d + dv) * FI + stage_rows(dv) * t
        } else {
            0
        };
        (2 * t * dv + 2 * t + p) * 4
    }

    /// Bytes of all arrays.
    pub fn heap_bytes(&self) -> usize {
        (self.s.capacity()
            + self.d.capacity()
            + self.zs.capacity()
            + self.zd.capacity()
            + self.pkt.capacity()
            + self.pv.capacity()
            + self.stage.capacity())
            * 4
    }

    /// Tokens since the last flush (kept raw; `< FLUSH_INTERVAL`).
    pub fn since_flush(&self) -> u32 {
        self.since_flush
    }

    /// Pending tokens whose features wait in the stage (not yet in `d`).
    pub fn staged_count(&self) -> u32 {
        self.since_flush - self.applied
    }

    /// Pending tokens not yet added into `d` (rows of `stage` in use).
    #[inline]
    pub(crate) fn staged(&self) -> usize {
        (self.since_flush - self.applied) as usize
    }

    /// The stage row the next pending token's `phi_k` goes to.
    #[inline]
    pub(crate) fn next_stage_row(&mut self) -> &mut [f32] {
        let (r, t) = (self.staged(), self.t);
        &mut self.stage[r * t..(r + 1) * t]
    }

    /// Stage row `r` (`r < staged()`).
    #[inline]
    pub(crate) fn stage_row(&self, r: usize) -> &[f32] {
        &self.stage[r * self.t..(r + 1) * self.t]
    }

    /// Appends a raw pending token (its `phi_k` already in the next stage row).
    #[inline]
    pub(crate) fn add_raw(&mut self, k: &[f32], v: &[f32]) {
        let j = self.since_flush as usize;
        for (a, &x) in k.iter().enumerate() {
            self.pkt[a * FI + j] = x;
        }
        self.pv[j * self.dv..(j + 1) * self.dv].copy_from_slice(v);
        self.since_flush += 1;
    }

    /// After a token was added: a full stage goes into `d`; a full block flushes.
    #[inline]
    pub(crate) fn after_token(&mut self, k: &Kernels) {
        if self.since_flush >= FLUSH_INTERVAL {
            self.flush(k);
        } else if self.staged() >= stage_rows(self.dv) {
            self.apply(k);
        }
    }

    /// `d += Stage^T V_staged`, `zd += Stage^T 1`: one block product.
    pub(crate) fn apply(&mut self, k: &Kernels) {
        let (r, t, dv, a0) = (self.staged(), self.t, self.dv, self.applied as usize);
        let (stage, pv) = (&self.stage[..r * t], &self.pv[a0 * dv..(a0 + r) * dv]);
        add_features(k, t, dv, stage, pv, &mut self.d, &mut self.zd);
        self.applied = self.since_flush;
    }

    /// Adds `src`'s staged tokens (features not yet in its `d`) into this
    /// state's accumulators (merge: same t and dv).
    pub(crate) fn absorb_staged_of(&mut self, k: &Kernels, src: &State) {
        let (r, t, dv, a0) = (src.staged(), src.t, src.dv, src.applied as usize);
        let (stage, pv) = (&src.stage[..r * t], &src.pv[a0 * dv..(a0 + r) * dv]);
        add_features(k, t, dv, stage, pv, &mut self.d, &mut self.zd);
    }

    /// Adds the stage, then moves the accumulators into the totals
    /// (error-free TwoSum) and clears the pending tokens.
    pub(crate) fn flush(&mut self, k: &Kernels) {
        self.apply(k);
        (k.flush)(&mut self.s, &mut self.d);
        (k.flush)(&mut self.zs, &mut self.zd);
        self.since_flush = 0;
        self.applied = 0;
    }

    /// The pending part of a query: for pending tokens `j < upto`,
    /// `w_j = P(sq . k_j)` (`sq` = the scaled query, `P` by its coefficients
    /// `alphas` in f32), then `acc += sum_j w_j v_j`, `den += sum_j w_j`,
    /// `mag += sum_j |w_j|`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn pending_part(
        &self,
        k: &Kernels,
        sq: &[f32],
        alphas: &[f32],
        upto: usize,
        acc: &mut [f32],
        den: &mut f32,
        mag: &mut f32,
    ) {
        if upto == 0 {
            return;
        }
        let mut w = [0.0f32; FI];
        let shape = Gemm {
            m: 1,
            n: upto,
            k: self.dk,
            rsa: self.dk,
            csa: 1,
            ldb: FI,
            ldc: FI,
        };
        (k.gemm)(&shape, sq, &self.pkt, &mut w);
        let g = alphas.len() - 1;
        for x in w[..upto].iter_mut() {
            let mut p = alphas[g];
            for a in alphas[..g].iter().rev() {
                p = p * *x + a;
            }
            *x = p;
            *den += p;
            *mag += p.abs();
        }
        let shape = Gemm {
            m: 1,
            n: self.dv,
            k: upto,
            rsa: upto,
            csa: 1,
            ldb: self.dv,
            ldc: self.dv,
        };
        (k.gemm)(&shape, &w[..upto], &self.pv, acc);
    }

    /// Uniform attention over every absorbed token (the normaliser
    /// fallback): `(s_0 + sum_pending v) / (zs_0 + pending)`, row 0 being the
    /// constant feature.
    pub(crate) fn mean_value(&self, out: &mut [f32]) {
        let n = self.zs[0] as f64 + self.since_flush as f64;
        for (c, o) in out.iter_mut().enumerate() {
            let mut sum = self.s[c] as f64;
            for j in 0..self.since_flush as usize {
                sum += self.pv[j * self.dv + c] as f64;
            }
            *o = (sum / n) as f32;
        }
    }

    /// M as f64: `s + d + staged`, t x dv row-major.
    pub fn m_f64(&self) -> Vec<f64> {
        let mut m: Vec<f64> = self
            .s
            .iter()
            .zip(&self.d)
            .map(|(&a, &b)| a as f64 + b as f64)
            .collect();
        let (t, dv, a0) = (self.t, self.dv, self.applied as usize);
        for r in 0..self.staged() {
            let v = &self.pv[(a0 + r) * dv..(a0 + r + 1) * dv];
            for (i, &f) in self.stage_row(r).iter().enumerate().take(t) {
                for (c, &x) in v.iter().enumerate() {
                    m[i * dv + c] += f as f64 * x as f64;
                }
            }
        }
        m
    }

    /// z as f64, length t.
    pub fn z_f64(&self) -> Vec<f64> {
        let mut z: Vec<f64> = self
            .zs
            .iter()
            .zip(&self.zd)
            .map(|(&a, &b)| a as f64 + b as f64)
            .collect();
        for r in 0..self.staged() {
            for (o, &f) in z.iter_mut().zip(self.stage_row(r)) {
                *o += f as f64;
            }
        }
        z
    }
}

/// `d += Phi^T V` and `zd += Phi^T 1` for `r` tokens: `phi` holds their
/// feature rows (r x t), `v` their values (r x dv).
fn add_features(
    k: &Kernels,
    t: usize,
    dv: usize,
    phi: &[f32],
    v: &[f32],
    d: &mut [f32],
    zd: &mut [f32],
) {
    let r = v.len() / dv.max(1);
    if r == 0 {
        return;
    }
    let shape = Gemm {
        m: t,
        n: dv,
        k: r,
        rsa: 1,
        csa: t,
        ldb: dv,
        ldc: dv,
    };
    (k.gemm)(&shape, phi, v, d);
    for row in phi.chunks_exact(t).take(r) {
        (k.absorb_z)(zd, row);
    }
}
