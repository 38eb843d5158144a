//! Monomial feature maps and the polynomial `P ~ exp`.
//!
//! Feature order (fixed; the serialized format and the kernels rely on it):
//! block `l` (degree l) follows block `l-1`; inside block `l`, sub-block `i`
//! holds `x_i * m` for every degree-(l-1) monomial `m` whose smallest index is
//! `>= i`, in block `l-1` order. Those `m` form a contiguous suffix of block
//! `l-1`, so block `l` is built by `d` scaled copies:
//!
//! ```text
//!   block_0 = [1]
//!   block_l = concat_{i=0..d-1}  x_i * block_{l-1}[sub_start[l-1][i] ..]
//! ```
//!
//! and `t = sum_l binom(d + l - 1, l) = binom(d + g, g)`.

use crate::error::{try_vec, Error, Result};

/// `binom(d + g, g)`: the number of monomials of degree `<= g` in `d`
/// variables, or `None` if it does not fit in `u64`.
pub fn feature_count(d: u32, g: u32) -> Option<u64> {
    let (n, k) = (d as u128 + g as u128, g as u128);
    let mut r: u128 = 1;
    for i in 0..k {
        // r = binom(n - k + i + 1, i + 1), exact at every step.
        r = r.checked_mul(n - k + i + 1)? / (i + 1);
        if r > u64::MAX as u128 {
            return None;
        }
    }
    Some(r as u64)
}

/// Index tables of the monomial features of `d` variables up to degree `g`.
#[derive(Clone, Debug)]
pub struct FeatureMap {
    d: usize,
    g: usize,
    t: usize,
    /// `block_off[l]` = first feature of degree l; `block_off[g + 1] = t`.
    block_off: Vec<usize>,
    /// `sub_start[l * d + i]` = offset inside block l of the first monomial
    /// whose smallest index is `>= i` (block 0: always 0).
    sub_start: Vec<u32>,
    /// `mult[a] = multinomial(|a|; a) = |a|! / prod_c a_c!`, one per feature.
    mult: Vec<f32>,
}

impl FeatureMap {
    /// Tables for `d >= 1` variables and degree `g`. Refuses sizes that do not
    /// fit memory with `Alloc` and absurd ones with `InvalidArg`.
    pub fn new(d: usize, g: usize) -> Result<Self> {
        if d == 0 {
            return Err(Error::InvalidArg);
        }
        let t = feature_count(d as u32, g as u32).ok_or(Error::InvalidArg)?;
        let t = usize::try_from(t).map_err(|_| Error::InvalidArg)?;
        let mut block_off = try_vec(g + 2, 0usize)?;
        let mut sub_start = try_vec((g + 1) * d, 0u32)?;
        let mut mult = try_vec(t, 0f32)?;
        // Per feature: smallest index and its exponent, to build multinomials.
        let mut min_idx = try_vec(t, u32::MAX)?;
        let mut lead = try_vec(t, 0u32)?;
        mult[0] = 1.0;
        block_off[1] = 1;
        let mut block_len_prev = 1usize; // block 0
        for l in 1..=g {
            let prev = block_off[l - 1];
            let mut dst = block_off[l];
            for i in 0..d {
                sub_start[l * d + i] = (dst - block_off[l]) as u32;
                let from = prev + sub_start[(l - 1) * d + i] as usize;
                let to = prev + block_len_prev;
                for src in from..to {
                    let e = if min_idx[src] == i as u32 {
                        lead[src] + 1
                    } else {
                        1
                    };
                    // multinomial(l; a + e_i) = multinomial(l-1; a) * l / (a_i + 1)
                    mult[dst] = (mult[src] as f64 * l as f64 / e as f64) as f32;
                    min_idx[dst] = i as u32;
                    lead[dst] = e;
                    dst += 1;
                }
            }
            block_len_prev = dst - block_off[l];
            block_off[l + 1] = dst;
        }
        debug_assert_eq!(block_off[g + 1], t);
        Ok(FeatureMap {
            d,
            g,
            t,
            block_off,
            sub_start,
            mult,
        })
    }

    /// Number of variables d.
    pub fn dim(&self) -> usize {
        self.d
    }
    /// Degree g.
    pub fn degree(&self) -> usize {
        self.g
    }
    /// Feature count t.
    pub fn len(&self) -> usize {
        self.t
    }
    /// Always false (t >= 1).
    pub fn is_empty(&self) -> bool {
        false
    }
    /// Feature range of degree `l`.
    pub fn block(&self, l: usize) -> core::ops::Range<usize> {
        self.block_off[l]..self.block_off[l + 1]
    }
    /// Offset inside block `l` of the sub-block of smallest index `i`.
    #[inline(always)]
    pub fn sub_start(&self, l: usize, i: usize) -> usize {
        self.sub_start[l * self.d + i] as usize
    }
    /// Multinomial coefficients, one per feature.
    pub fn mult(&self) -> &[f32] {
        &self.mult
    }
    /// Bytes `new(d, g)` allocates when it has `t` features.
    pub fn heap_bytes_for(d: usize, g: usize, t: usize) -> usize {
        (g + 2) * core::mem::size_of::<usize>() + (g + 1) * d * 4 + t * 4
    }

    /// Bytes owned by the tables.
    pub fn heap_bytes(&self) -> usize {
        self.block_off.capacity() * core::mem::size_of::<usize>()
            + self.sub_start.capacity() * 4
            + self.mult.capacity() * 4
    }

    /// Drives the expansion: `out[0] = 1`, then for each degree `l` and index
    /// `i`, `copy(x_i, src_range, dst_start)` meaning
    /// `out[dst_start + r] = x_i * out[src_range.start + r]`. Kernels supply
    /// `copy`; this keeps the index logic in one place.
    #[inline(always)]
    pub fn for_each_copy(&self, mut copy: impl FnMut(usize, usize, usize, usize)) {
        for l in 1..=self.g {
            let prev = self.block_off[l - 1];
            let prev_len = self.block_off[l] - prev;
            let mut dst = self.block_off[l];
            for i in 0..self.d {
                let from = self.sub_start[(l - 1) * self.d + i] as usize;
                let len = prev_len - from;
                copy(i, prev + from, dst, len);
                dst += len;
            }
        }
    }
}

/// A polynomial `P(x) = sum_l c_l x^l` standing in for `exp(x)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Polynomial {
    coeffs: Vec<f64>,
}

impl Polynomial {
    /// Taylor polynomial of exp: `c_l = 1 / l!`.
    pub fn taylor(g: usize) -> Self {
        let mut c = Vec::with_capacity(g + 1);
        let mut f = 1.0f64;
        for l in 0..=g {
            if l > 0 {
                f /= l as f64;
            }
            c.push(f);
        }
        Polynomial { coeffs: c }
    }

    /// Any coefficients `c_0 .. c_g` (finite).
    pub fn from_coeffs(coeffs: &[f64]) -> Result<Self> {
        if coeffs.is_empty() || coeffs.iter().any(|c| !c.is_finite()) {
            return Err(Error::InvalidArg);
        }
        Ok(Polynomial {
            coeffs: coeffs.to_vec(),
        })
    }

    /// Coefficients `c_0 .. c_g`.
    pub fn coeffs(&self) -> &[f64] {
        &self.coeffs
    }

    /// Degree (number of coefficients minus one).
    pub fn degree(&self) -> usize {
        self.coeffs.len() - 1
    }

    /// `P(x)` in f64 (Horner).
    pub fn eval(&self, x: f64) -> f64 {
        self.coeffs.iter().rev().fold(0.0, |acc, &c| acc * x + c)
    }

    /// Per-degree query weights `c_l` as f32, padded with zeros to `g + 1`
    /// entries, so `phi_q(q)_a = c_|a| mult_a (s q)^a`.
    pub fn alphas(&self, g: usize, out: &mut [f32]) {
        for (l, o) in out.iter_mut().enumerate().take(g + 1) {
            *o = self.coeffs.get(l).copied().unwrap_or(0.0) as f32;
        }
    }

    /// Upper bound of `||phi_q(q)||_1` and of every intermediate of its
    /// expansion: `sum_l max(|c_l|, 1) (s ||q||_1)^l` (multinomial theorem).
    pub fn query_l1_bound(&self, scale: f32, q_l1: f64, g: usize) -> f64 {
        let x = scale as f64 * q_l1;
        let mut xl = 1.0f64;
        let mut b = 0.0f64;
        for l in 0..=g {
            let c = self.coeffs.get(l).copied().unwrap_or(0.0).abs().max(1.0);
            b += c * xl;
            xl *= x;
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(feature_count(64, 2), Some(2145));
        assert_eq!(feature_count(64, 3), Some(47905));
        assert_eq!(feature_count(16, 4), Some(4845));
        assert_eq!(feature_count(1, 0), Some(1));
        assert_eq!(feature_count(u32::MAX, 16), None);
        for d in 1..10u32 {
            for g in 0..6u32 {
                let m = FeatureMap::new(d as usize, g as usize).unwrap();
                assert_eq!(m.len() as u64, feature_count(d, g).unwrap());
            }
        }
    }

    #[test]
    fn multinomials_sum_to_d_pow_l() {
        // sum_{|a| = l} multinomial(l; a) = d^l
        for d in 1..8usize {
            for g in 0..5usize {
                let m = FeatureMap::new(d, g).unwrap();
                for l in 0..=g {
                    let s: f64 = m.mult()[m.block(l)].iter().map(|&x| x as f64).sum();
                    assert_eq!(s, (d as f64).powi(l as i32), "d={d} g={g} l={l}");
                }
            }
        }
    }
}
