//! The moment tail: at most `G` groups summarising evicted tokens, each by
//! its count `N_g`, mean key `m_g` (d), per-coordinate key variance `var_g`
//! (d) and mean value `mv_g` (dv). A query `q` (scale `s`) sees group g as
//!
//! ```text
//! mu_g = s q.m_g      V_g = clamp(s^2 sum_c q_c^2 var_g[c], 0, VAR_MAX)
//! lw_g = ln N_g + mu_g + ln(1 + V_g / 2)      (2nd-order expansion of E[e^x])
//! ```
//!
//! contributing `e^(lw_g - c)` to the denominator and `e^(lw_g - c) mv_g` to
//! the numerator on the common scale `c`. A new token becomes a singleton
//! group; beyond G groups the two of least Ward cost `N_a N_b / (N_a + N_b)
//! |m_a - m_b|^2` merge (Chan et al.'s pairwise update, in f64, stored f32).
//! The same math as the hybrid's tail (`sketch::hybrid`).

use crate::error::{try_vec, Result};
use crate::kernels::Kernels;
use crate::sketch::hybrid::VAR_MAX;

/// Moment groups of evicted tokens (`G + 1` rows: one spare for the newest).
#[derive(Clone, Debug)]
pub struct Tail {
    d: usize,
    dv: usize,
    groups: usize,
    ng: usize,
    n: Vec<f64>,
    mk: Vec<f32>,
    vk: Vec<f32>,
    mv: Vec<f32>,
}

impl Tail {
    /// Bytes of a tail of `groups` groups (what `new` allocates).
    pub fn bytes_for(groups: usize, d: usize, dv: usize) -> usize {
        (groups + 1) * (8 + (2 * d + dv) * 4)
    }

    /// An empty tail.
    pub fn new(groups: usize, d: usize, dv: usize) -> Result<Self> {
        let g1 = groups + 1;
        Ok(Tail {
            d,
            dv,
            groups,
            ng: 0,
            n: try_vec(g1, 0.0)?,
            mk: try_vec(g1 * d, 0.0)?,
            vk: try_vec(g1 * d, 0.0)?,
            mv: try_vec(g1 * dv, 0.0)?,
        })
    }

    /// Bytes owned.
    pub fn heap_bytes(&self) -> usize {
        self.n.capacity() * 8 + (self.mk.capacity() + self.vk.capacity() + self.mv.capacity()) * 4
    }

    /// Group capacity G.
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Live groups.
    pub fn len(&self) -> usize {
        self.ng
    }

    /// Whether no token was folded in.
    pub fn is_empty(&self) -> bool {
        self.ng == 0
    }

    /// Tokens folded in.
    pub fn tokens(&self) -> u64 {
        self.n[..self.ng].iter().sum::<f64>() as u64
    }

    /// `lw_g` of every live group into `lw` (see the module doc); returns
    /// their maximum (-inf when empty).
    pub fn log_weights(&self, q: &[f32], scale: f64, lw: &mut [f64]) -> f64 {
        let d = self.d;
        let mut mx = f64::NEG_INFINITY;
        for g in 0..self.ng {
            let (mk, vk) = (&self.mk[g * d..(g + 1) * d], &self.vk[g * d..(g + 1) * d]);
            let (mut mu, mut var) = (0.0f64, 0.0f64);
            for ((&a, &b), &qf) in mk.iter().zip(vk).zip(q) {
                let qc = qf as f64;
                mu += qc * a as f64;
                var += qc * qc * b as f64;
            }
            let var = (scale * scale * var).clamp(0.0, VAR_MAX);
            lw[g] = self.n[g].ln() + scale * mu + (0.5 * var).ln_1p();
            mx = mx.max(lw[g]);
        }
        mx
    }

    /// Adds `sum_g e^(lw_g - c) mv_g` into `num` and returns `sum_g e^(lw_g - c)`.
    pub fn accumulate(&self, lw: &[f64], c: f64, num: &mut [f64]) -> f64 {
        let dv = self.dv;
        let mut den = 0.0;
        for g in 0..self.ng {
            let w = (lw[g] - c).exp();
            den += w;
            for (o, &mv) in num.iter_mut().zip(&self.mv[g * dv..(g + 1) * dv]) {
                *o += w * mv as f64;
            }
        }
        den
    }

    /// Folds token `(k, v)` in as a singleton group, merging the closest
    /// pair beyond G groups.
    pub fn add(&mut self, kern: &Kernels, k: &[f32], v: &[f32]) {
        let (d, dv, g) = (self.d, self.dv, self.ng);
        self.n[g] = 1.0;
        self.mk[g * d..(g + 1) * d].copy_from_slice(k);
        self.vk[g * d..(g + 1) * d].fill(0.0);
        self.mv[g * dv..(g + 1) * dv].copy_from_slice(v);
        self.ng += 1;
        if self.ng > self.groups {
            self.merge_closest(kern);
        }
    }

    /// Merges the two groups of least Ward cost: `n = n_a + n_b`, `f = n_a /
    /// n`, `m = f m_a + (1 - f) m_b`, `var = f var_a + (1 - f) var_b + f (1 -
    /// f) (m_a - m_b)^2`.
    fn merge_closest(&mut self, kern: &Kernels) {
        let (d, dv, ng) = (self.d, self.dv, self.ng);
        let (mut ba, mut bb, mut bc) = (0usize, 1usize, f64::INFINITY);
        let mut dist = [0.0f32; 64];
        for a in 0..ng {
            let ka = &self.mk[a * d..(a + 1) * d];
            let mut b0 = a + 1;
            while b0 < ng {
                let nb_ = (ng - b0).min(dist.len());
                (kern.row_dists)(&self.mk[b0 * d..(b0 + nb_) * d], ka, &mut dist[..nb_]);
                for (i, &dd) in dist[..nb_].iter().enumerate() {
                    let b = b0 + i;
                    let (na, nb) = (self.n[a], self.n[b]);
                    let cost = dd as f64 * na * nb / (na + nb);
                    if cost < bc {
                        (ba, bb, bc) = (a, b, cost);
                    }
                }
                b0 += nb_;
            }
        }
        let (na, nb) = (self.n[ba], self.n[bb]);
        let f = na / (na + nb);
        let h = 1.0 - f;
        for cc in 0..d {
            let (ia, ib) = (ba * d + cc, bb * d + cc);
            let (ma, mb) = (self.mk[ia] as f64, self.mk[ib] as f64);
            let (va, vb) = (self.vk[ia] as f64, self.vk[ib] as f64);
            self.mk[ia] = (f * ma + h * mb) as f32;
            self.vk[ia] = (f * va + h * vb + f * h * (ma - mb) * (ma - mb)) as f32;
        }
        for cc in 0..dv {
            let (ia, ib) = (ba * dv + cc, bb * dv + cc);
            self.mv[ia] = (f * self.mv[ia] as f64 + h * self.mv[ib] as f64) as f32;
        }
        self.n[ba] = na + nb;
        let last = ng - 1;
        self.n[bb] = self.n[last];
        for (arr, w) in [(&mut self.mk, d), (&mut self.vk, d), (&mut self.mv, dv)] {
            arr.copy_within(last * w..(last + 1) * w, bb * w);
            arr[last * w..(last + 1) * w].fill(0.0);
        }
        self.n[last] = 0.0;
        self.ng = last;
    }

    /// Appends the tail's serialized form: `u64 ng | f64 n[G+1] | f32
    /// mean_k[(G+1) d] | f32 var_k[(G+1) d] | f32 mean_v[(G+1) dv]`.
    pub fn write(&self, put: &mut dyn FnMut(&[u8])) {
        put(&(self.ng as u64).to_le_bytes());
        for x in &self.n {
            put(&x.to_le_bytes());
        }
        for arr in [&self.mk, &self.vk, &self.mv] {
            for x in arr.iter() {
                put(&x.to_le_bytes());
            }
        }
    }

    /// Serialized bytes of a tail of `groups` groups.
    pub fn payload_len(groups: usize, d: usize, dv: usize) -> usize {
        8 + Self::bytes_for(groups, d, dv)
    }

    /// Loads what [`write`](Self::write) wrote; `false` when inconsistent
    /// (too many groups, a count below 1 or not finite, a negative variance,
    /// non-finite moments, or non-zero unused rows).
    pub fn read(&mut self, b: &[u8]) -> bool {
        let (d, dv, g1) = (self.d, self.dv, self.groups + 1);
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let ng = u64_at(0);
        if ng > self.groups as u64 {
            return false;
        }
        let ng = ng as usize;
        let mut at = 8;
        for (g, x) in self.n.iter_mut().enumerate() {
            *x = f64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            at += 8;
            let ok = if g < ng {
                x.is_finite() && *x >= 1.0
            } else {
                x.to_bits() == 0
            };
            if !ok {
                return false;
            }
        }
        for (arr, w, nonneg) in [
            (&mut self.mk, d, false),
            (&mut self.vk, d, true),
            (&mut self.mv, dv, false),
        ] {
            for (i, x) in arr.iter_mut().enumerate() {
                *x = f32::from_le_bytes(b[at..at + 4].try_into().unwrap());
                at += 4;
                let live = i / w < ng;
                let ok = if live {
                    x.is_finite() && (!nonneg || *x >= 0.0)
                } else {
                    x.to_bits() == 0
                };
                if !ok {
                    return false;
                }
            }
        }
        debug_assert_eq!(at, Self::payload_len(g1 - 1, d, dv));
        self.ng = ng;
        true
    }
}
