//! Exact-attention decode baseline: one query against an n-token f32 KV
//! cache, the computation a sketch replaces.
//!
//! ```text
//!   o = sum_j exp(s q.k_j - m) v_j / sum_j exp(s q.k_j - m),   m = max_j s q.k_j
//! ```
//!
//! One pass over K and V (online softmax, FlashAttention-style): keys are
//! taken in blocks of [`BLOCK`] tokens; per block the scores (dots over d),
//! their max, one vectorised exp, a rescale of the running sum when the max
//! grows, and axpys of 4 value rows at a time into the output row. Bytes
//! moved: `4 n (d + dv)`; no allocation (the scores live on the stack and the
//! output row is the accumulator).
//!
//! AVX2 and AVX-512 run one generic routine over the [`vector::Vector`]
//! trait (`__m256` / `__m512` intrinsics, vectorised exp) under their own
//! `#[target_feature]` entry points, so the baseline gets the same CPU level
//! as the sketch it is compared with. Portable writes the same pass with
//! fixed-size lane arrays (`[f32; 8]`) that LLVM maps onto the build's
//! vector registers.

use crate::error::{Error, Result};
use crate::kernels::Level;

mod vector;

/// Keys per block of the online softmax.
pub const BLOCK: usize = 64;

type DecodeFn = fn(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]);

/// Exact decode attention at one CPU level.
#[derive(Clone, Copy)]
pub struct ExactDecoder {
    level: Level,
    f: DecodeFn,
}

impl ExactDecoder {
    /// The decoder of `level` (`Unsupported` if the CPU lacks it).
    pub fn new(level: Level) -> Result<Self> {
        let level = level.forced()?;
        let f: DecodeFn = match level {
            Level::Portable => portable,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => x86::avx2,
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => x86::avx512,
            #[cfg(not(target_arch = "x86_64"))]
            _ => return Err(Error::Unsupported),
        };
        Ok(ExactDecoder { level, f })
    }

    /// The decoder of [`Level::detect`].
    pub fn detect() -> Self {
        Self::new(Level::detect()).unwrap_or(ExactDecoder {
            level: Level::Portable,
            f: portable,
        })
    }

    /// Its level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// `out = softmax(scale q K^T) V` for `K`: n x d, `V`: n x dv row-major
    /// (`n = k.len() / d`). `InvalidArg` on mismatched shapes. `n = 0` gives zeros.
    pub fn decode(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        scale: f32,
        out: &mut [f32],
    ) -> Result<()> {
        let (d, dv) = (q.len(), out.len());
        if d == 0 || dv == 0 || !k.len().is_multiple_of(d) || v.len() != (k.len() / d) * dv {
            return Err(Error::InvalidArg);
        }
        (self.f)(q, k, v, scale, out);
        Ok(())
    }
}

fn portable(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
    decode::<8, false>(q, k, v, scale, out)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::decode_v;
    use core::arch::x86_64::{__m256, __m512};

    pub(super) fn avx2(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn imp(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
            unsafe { decode_v::<__m256>(q, k, v, scale, out) }
        }
        // SAFETY: only reachable through ExactDecoder::new(Level::Avx2),
        // which checks that the CPU supports the level.
        unsafe { imp(q, k, v, scale, out) }
    }

    pub(super) fn avx512(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
        #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
        unsafe fn imp(q: &[f32], k: &[f32], v: &[f32], scale: f32, out: &mut [f32]) {
            unsafe { decode_v::<__m512>(q, k, v, scale, out) }
        }
        // SAFETY: as above, for Level::Avx512.
        unsafe { imp(q, k, v, scale, out) }
    }
}

/// `a b + c`, fused when the level has FMA.
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `sum_i a_i b_i` with `2 L` independent partial sums.
#[inline(always)]
fn dot<const L: usize, const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let b = &b[..a.len()];
    let mut acc = [[0.0f32; L]; 2];
    let (ca, cb) = (a.chunks_exact(2 * L), b.chunks_exact(2 * L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for h in 0..2 {
            for l in 0..L {
                acc[h][l] = madd::<FMA>(x[h * L + l], y[h * L + l], acc[h][l]);
            }
        }
    }
    let mut s = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        s = madd::<FMA>(*x, *y, s);
    }
    let mut lanes = [0.0f32; L];
    for l in 0..L {
        lanes[l] = acc[0][l] + acc[1][l];
    }
    hsum(lanes) + s
}

/// Pairwise sum of the lanes.
#[inline(always)]
fn hsum<const L: usize>(mut x: [f32; L]) -> f32 {
    let mut w = L;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            x[l] += x[l + w];
        }
    }
    x[0]
}

/// `exp(x)` for `x <= 0` (Cephes-style: `2^n p(r)`, |rel err| < 2e-7;
/// `x < -87` gives 0). Branch-free so a lane array vectorises.
#[inline(always)]
fn exp_neg<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.max(-87.0);
    // round to nearest via the 1.5 * 2^23 trick
    let n = (x * LOG2E + 12_582_912.0) - 12_582_912.0;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 0.5);
    let p = madd::<FMA>(p, r * r, r) + 1.0;
    // n is integral: its bits in (n + 1.5 * 2^23) are the low mantissa bits.
    let nb = (n + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let e = f32::from_bits(nb.wrapping_add(127) << 23);
    p * e
}

/// The online-softmax pass (see the module doc).
#[inline(always)]
fn decode<const L: usize, const FMA: bool>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: f32,
    out: &mut [f32],
) {
    let (d, dv) = (q.len(), out.len());
    let n = k.len() / d;
    out.fill(0.0);
    let mut m = f32::NEG_INFINITY;
    let mut l_sum = 0.0f32;
    let mut sc = [0.0f32; BLOCK];
    let mut j0 = 0;
    while j0 < n {
        let bl = (n - j0).min(BLOCK);
        let kb = &k[j0 * d..(j0 + bl) * d];
        let vb = &v[j0 * dv..(j0 + bl) * dv];
        let sc = &mut sc[..bl];
        let mut mb = f32::NEG_INFINITY;
        for (s, kr) in sc.iter_mut().zip(kb.chunks_exact(d)) {
            *s = scale * dot::<L, FMA>(q, kr);
            mb = mb.max(*s);
        }
        if mb > m {
            // Rescale what was accumulated under the old max (0 at the start).
            let c = if m == f32::NEG_INFINITY {
                0.0
            } else {
                exp_neg::<FMA>(m - mb)
            };
            l_sum *= c;
            for o in out.iter_mut() {
                *o *= c;
            }
            m = mb;
        }
        for s in sc.iter_mut() {
            *s = exp_neg::<FMA>(*s - m);
        }
        l_sum += sc.iter().sum::<f32>();
        // out += sum_j w_j v_j, four rows per sweep over `out`.
        let mut rows = vb.chunks_exact(4 * dv);
        let mut ws = sc.chunks_exact(4);
        for (r4, w4) in (&mut rows).zip(&mut ws) {
            let (r0, r) = r4.split_at(dv);
            let (r1, r) = r.split_at(dv);
            let (r2, r3) = r.split_at(dv);
            for c in 0..dv {
                let mut o = out[c];
                o = madd::<FMA>(w4[0], r0[c], o);
                o = madd::<FMA>(w4[1], r1[c], o);
                o = madd::<FMA>(w4[2], r2[c], o);
                o = madd::<FMA>(w4[3], r3[c], o);
                out[c] = o;
            }
        }
        for (r, &w) in rows.remainder().chunks_exact(dv).zip(ws.remainder()) {
            for (o, &x) in out.iter_mut().zip(r) {
                *o = madd::<FMA>(w, x, *o);
            }
        }
        j0 += bl;
    }
    if n > 0 {
        let inv = 1.0 / l_sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// The online-softmax pass over `V` vectors (see the module doc).
///
/// # Safety
/// The CPU supports `V`'s instructions; `k.len() == n d`, `v.len() == n dv`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn decode_v<V: vector::Vector>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: f32,
    out: &mut [f32],
) {
    let (d, dv) = (q.len(), out.len());
    let n = k.len() / d;
    let l = V::L;
    out.fill(0.0);
    let (qp, kp, vp, op) = (q.as_ptr(), k.as_ptr(), v.as_ptr(), out.as_mut_ptr());
    let mut m = f32::NEG_INFINITY;
    let mut l_sum = 0.0f32;
    let mut sc = [0.0f32; BLOCK];
    let scp = sc.as_mut_ptr();
    let mut j0 = 0;
    // SAFETY: every pointer below stays inside q (d), k (n d), v (n dv),
    // out (dv) and sc (BLOCK, a multiple of L).
    unsafe {
        let z = V::splat(0.0);
        while j0 < n {
            let bl = (n - j0).min(BLOCK);
            let mut mb = f32::NEG_INFINITY;
            for jj in 0..bl {
                let kr = kp.add((j0 + jj) * d);
                let (mut a0, mut a1) = (z, z);
                let mut c = 0;
                while c + 2 * l <= d {
                    a0 = V::load(qp.add(c)).fmadd(V::load(kr.add(c)), a0);
                    a1 = V::load(qp.add(c + l)).fmadd(V::load(kr.add(c + l)), a1);
                    c += 2 * l;
                }
                if c + l <= d {
                    a0 = V::load(qp.add(c)).fmadd(V::load(kr.add(c)), a0);
                    c += l;
                }
                let mut s = a0.add(a1).hsum();
                while c < d {
                    s = (*qp.add(c)).mul_add(*kr.add(c), s);
                    c += 1;
                }
                let s = s * scale;
                *scp.add(jj) = s;
                mb = mb.max(s);
            }
            if mb > m {
                let c = if m == f32::NEG_INFINITY {
                    0.0
                } else {
                    exp_neg::<true>(m - mb)
                };
                l_sum *= c;
                for o in out.iter_mut() {
                    *o *= c;
                }
                m = mb;
            }
            let negm = V::splat(-m);
            let mut c = 0;
            while c < bl {
                V::load(scp.add(c)).add(negm).exp_neg().store(scp.add(c));
                c += l;
            }
            for jj in 0..bl {
                l_sum += *scp.add(jj);
            }
            let mut jj = 0;
            while jj + 4 <= bl {
                let r0 = vp.add((j0 + jj) * dv);
                let (r1, r2, r3) = (r0.add(dv), r0.add(2 * dv), r0.add(3 * dv));
                let w = [
                    *scp.add(jj),
                    *scp.add(jj + 1),
                    *scp.add(jj + 2),
                    *scp.add(jj + 3),
                ];
                let (w0, w1, w2, w3) = (
                    V::splat(w[0]),
                    V::splat(w[1]),
                    V::splat(w[2]),
                    V::splat(w[3]),
                );
                let mut c = 0;
                while c + l <= dv {
                    let mut o = V::load(op.add(c));
                    o = w0.fmadd(V::load(r0.add(c)), o);
                    o = w1.fmadd(V::load(r1.add(c)), o);
                    o = w2.fmadd(V::load(r2.add(c)), o);
                    o = w3.fmadd(V::load(r3.add(c)), o);
                    o.store(op.add(c));
                    c += l;
                }
                while c < dv {
                    let mut o = *op.add(c);
                    o = w[0].mul_add(*r0.add(c), o);
                    o = w[1].mul_add(*r1.add(c), o);
                    o = w[2].mul_add(*r2.add(c), o);
                    o = w[3].mul_add(*r3.add(c), o);
                    *op.add(c) = o;
                    c += 1;
                }
                jj += 4;
            }
            while jj < bl {
                let r = vp.add((j0 + jj) * dv);
                let w = *scp.add(jj);
                let wv = V::splat(w);
                let mut c = 0;
                while c + l <= dv {
                    wv.fmadd(V::load(r.add(c)), V::load(op.add(c)))
                        .store(op.add(c));
                    c += l;
                }
                while c < dv {
                    *op.add(c) = w.mul_add(*r.add(c), *op.add(c));
                    c += 1;
                }
                jj += 1;
            }
            j0 += bl;
        }
    }
    if n > 0 {
        let inv = 1.0 / l_sum;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_accuracy() {
        let mut x = 0.0f32;
        while x > -90.0 {
            let got = exp_neg::<false>(x) as f64;
            let want = (x as f64).exp();
            if x > -87.0 {
                assert!((got - want).abs() <= 3e-7 * want, "x={x}: {got} vs {want}");
            }
            x -= 0.0137;
        }
        let tiny = exp_neg::<true>(-1000.0);
        assert!((0.0..1e-37).contains(&tiny));
    }
}
