//! AVX2 + FMA recovery kernels: 4 u64 / f64 lanes or 8 f32 lanes.
//!
//! Hashing mod `p = 2^61 - 1` has no 64x64->128 lane multiply: with
//! `a = a1 2^32 + a0`, `x = x1 2^32 + x0` (`a, x < p`, so `a1, x1 < 2^29`)
//! the four `_mm256_mul_epu32` partial products give
//!
//! ```text
//!   a x = hh 2^64 + mid 2^32 + ll        hh = a1 x1 < 2^58, mid = a1 x0 + a0 x1 < 2^62, ll = a0 x0 < 2^64
//!       = 8 hh + (mid >> 29) + (mid mod 2^29) 2^32 + (ll mod 2^61) + (ll >> 61)   (mod p; 2^61 = 1, 2^64 = 8)
//! ```
//!
//! a sum below `2^63`, folded twice (`(t mod 2^61) + (t >> 61)`, then one
//! conditional subtraction of `p`) into the canonical residue in `[0, p)`:
//! the scalar `mulmod` is canonical too, so buckets and signs are equal to
//! `recovery::hash` bit for bit. The range reduction
//! `(h b) >> 61 = (h1 b + (h0 b >> 32)) >> 29` is exact (the dropped low
//! 32 bits of `h0 b` cannot carry into bit 61).
//!
//! Entry points carry `#[target_feature(enable = "avx2,fma")]`, are private
//! and reachable only through the kernel tables (`Kernels::for_level` hands
//! them out only on CPUs with AVX2 + FMA): that is the safety argument of
//! the wrappers. Helpers are `#[inline(always)]`.

use super::recovery_common::{
    by_rows, median_group, median_shape, scan_scalar, sort_network, top_k_with,
};
use super::recovery_portable::level_key;
use crate::recovery::hash::{self, BucketHash, SignHash, P61};
use crate::recovery::Shape;
use core::arch::x86_64::*;

macro_rules! safe {
    ($(fn $name:ident => $imp:ident ($($a:ident : $t:ty),*) $(-> $r:ty)?;)*) => {$(
        pub(super) fn $name($($a: $t),*) $(-> $r)? {
            // SAFETY: only reachable through the AVX2 / AVX-512 kernel
            // tables, handed out only when the CPU has AVX2 + FMA.
            unsafe { $imp($($a),*) }
        }
    )*};
}

safe! {
    fn buckets => buckets_imp(h: &BucketHash, b: u32, keys: &[u64], out: &mut [u32]);
    fn signs => signs_imp(s: &SignHash, keys: &[u64], out: &mut [f32]);
    fn token_slots => token_slots_imp(bucket: &[BucketHash], sign: &[SignHash], shape: &Shape, j: u64, slot: &mut [u32], slot_sign: &mut [f32]);
    fn scatter_add => scatter_add_imp(y: &mut [f32], w: usize, slot: &[u32], sign: &[f32], x: &[f32]);
    fn project_dot => project_dot_imp(y: &[f32], w: usize, f: &[f32], out: &mut [f64]);
    fn median => median_imp(v: &mut [f64], rows: usize, out: &mut [f64]);
    fn top_k => top_k_imp(score: &[f64], k: usize) -> Vec<usize>;
}

// ---- arithmetic mod p on 4 u64 lanes ----

#[inline(always)]
unsafe fn splat(x: u64) -> __m256i {
    unsafe { _mm256_set1_epi64x(x as i64) }
}

/// `(x mod 2^61) + (x >> 61)`: congruent to `x`, below `2^61 + 8`.
#[inline(always)]
unsafe fn fold(x: __m256i) -> __m256i {
    unsafe { _mm256_add_epi64(_mm256_and_si256(x, splat(P61)), _mm256_srli_epi64::<61>(x)) }
}

/// `y - p` if `y >= p`, for `y < 2^63` (signed compare is exact there).
#[inline(always)]
unsafe fn csub(y: __m256i) -> __m256i {
    unsafe {
        let ge = _mm256_cmpgt_epi64(y, splat(P61 - 1));
        _mm256_sub_epi64(y, _mm256_and_si256(ge, splat(P61)))
    }
}

/// `x mod p` for any u64 (`hash::key`).
#[inline(always)]
unsafe fn key(x: __m256i) -> __m256i {
    unsafe { csub(fold(fold(x))) }
}

/// `a x mod p` for `a, x < p`; `a1 = a >> 32`, `x1 = x >> 32`.
#[inline(always)]
unsafe fn mulmod(a: __m256i, a1: __m256i, x: __m256i, x1: __m256i) -> __m256i {
    unsafe {
        let ll = _mm256_mul_epu32(a, x);
        let mid = _mm256_add_epi64(_mm256_mul_epu32(a, x1), _mm256_mul_epu32(a1, x));
        let hh = _mm256_mul_epu32(a1, x1);
        let m29 = splat((1 << 29) - 1);
        let t = _mm256_add_epi64(
            _mm256_add_epi64(_mm256_slli_epi64::<3>(hh), _mm256_srli_epi64::<29>(mid)),
            _mm256_add_epi64(
                _mm256_slli_epi64::<32>(_mm256_and_si256(mid, m29)),
                fold(ll),
            ),
        );
        csub(fold(t))
    }
}

/// `(u + c) mod p` for `u, c < p`.
#[inline(always)]
unsafe fn addmod(u: __m256i, c: __m256i) -> __m256i {
    unsafe { csub(fold(_mm256_add_epi64(u, c))) }
}

/// `(h b) >> 61` for `h < 2^61`, `b < 2^32`.
#[inline(always)]
unsafe fn range(h: __m256i, b: __m256i) -> __m256i {
    unsafe {
        let t0 = _mm256_mul_epu32(h, b);
        let t1 = _mm256_mul_epu32(_mm256_srli_epi64::<32>(h), b);
        _mm256_srli_epi64::<29>(_mm256_add_epi64(t1, _mm256_srli_epi64::<32>(t0)))
    }
}

/// The low 32 bits of the 4 lanes, packed.
#[inline(always)]
unsafe fn pack4(v: __m256i) -> __m128i {
    unsafe {
        let idx = _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0);
        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(v, idx))
    }
}

/// `(h & 1) ? -1.0f32 : 1.0f32` per lane, packed.
#[inline(always)]
unsafe fn sign_bits(h: __m256i) -> __m128 {
    unsafe {
        let s = _mm256_slli_epi64::<31>(_mm256_and_si256(h, splat(1)));
        _mm_castsi128_ps(pack4(_mm256_or_si256(s, splat(0x3f80_0000))))
    }
}

/// Degree-3 Horner of the sign polynomial with lane coefficients `c`.
#[inline(always)]
unsafe fn sign_poly(c: [__m256i; 4], x: __m256i, x1: __m256i) -> __m256i {
    unsafe {
        let mut h = c[3];
        for &ck in c[..3].iter().rev() {
            h = addmod(mulmod(h, _mm256_srli_epi64::<32>(h), x, x1), ck);
        }
        h
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn buckets_imp(h: &BucketHash, b: u32, keys: &[u64], out: &mut [u32]) {
    let n = keys.len().min(out.len());
    let (kp, op) = (keys.as_ptr(), out.as_mut_ptr());
    unsafe {
        let (a, a1, c, bv) = (splat(h.a), splat(h.a >> 32), splat(h.c), splat(b as u64));
        let mut i = 0;
        while i + 4 <= n {
            let x = key(_mm256_loadu_si256(kp.add(i) as *const __m256i));
            let v = addmod(mulmod(a, a1, x, _mm256_srli_epi64::<32>(x)), c);
            _mm_storeu_si128(op.add(i) as *mut __m128i, pack4(range(v, bv)));
            i += 4;
        }
        while i < n {
            *op.add(i) = h.bucket(*kp.add(i), b);
            i += 1;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn signs_imp(s: &SignHash, keys: &[u64], out: &mut [f32]) {
    let n = keys.len().min(out.len());
    let (kp, op) = (keys.as_ptr(), out.as_mut_ptr());
    unsafe {
        let c = [splat(s.c[0]), splat(s.c[1]), splat(s.c[2]), splat(s.c[3])];
        let mut i = 0;
        while i + 4 <= n {
            let x = key(_mm256_loadu_si256(kp.add(i) as *const __m256i));
            let h = sign_poly(c, x, _mm256_srli_epi64::<32>(x));
            _mm_storeu_ps(op.add(i), sign_bits(h));
            i += 4;
        }
        while i < n {
            *op.add(i) = s.sign(*kp.add(i));
            i += 1;
        }
    }
}

/// Mask of the first `nl <= 4` 32-bit lanes.
#[inline(always)]
unsafe fn lane_mask32(nl: usize) -> __m128i {
    unsafe { _mm_cmpgt_epi32(_mm_set1_epi32(nl as i32), _mm_setr_epi32(0, 1, 2, 3)) }
}

/// `(a, c)` of the bucket functions `p[0..nl]` (`nl <= 4`, AoS `[a, c]`
/// pairs) as lanes in the order `(0, 2, 1, 3)` that `unpack` gives; masked
/// loads read nothing past function `nl`.
#[inline(always)]
unsafe fn load_ac(p: *const u64, nl: usize) -> (__m256i, __m256i) {
    unsafe {
        let q = _mm256_setr_epi64x(0, 1, 2, 3);
        let n2 = 2 * nl as i64;
        let m0 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n2), q);
        let m1 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n2 - 4), q);
        let v0 = _mm256_maskload_epi64(p as *const i64, m0);
        let v1 = _mm256_maskload_epi64(p.add(4) as *const i64, m1);
        (_mm256_unpacklo_epi64(v0, v1), _mm256_unpackhi_epi64(v0, v1))
    }
}

/// Coefficients `c_k` (lane = function) of the sign functions `p[0..nl]`
/// (`nl <= 4`, AoS `[c0, c1, c2, c3]`): a 4x4 transpose; missing rows are 0.
#[inline(always)]
unsafe fn load_sign_coeffs(p: *const u64, nl: usize) -> [__m256i; 4] {
    unsafe {
        let mut s = [_mm256_setzero_si256(); 4];
        for (i, si) in s.iter_mut().enumerate().take(nl) {
            *si = _mm256_loadu_si256(p.add(4 * i) as *const __m256i);
        }
        let t0 = _mm256_unpacklo_epi64(s[0], s[1]);
        let t1 = _mm256_unpackhi_epi64(s[0], s[1]);
        let t2 = _mm256_unpacklo_epi64(s[2], s[3]);
        let t3 = _mm256_unpackhi_epi64(s[2], s[3]);
        [
            _mm256_permute2x128_si256::<0x20>(t0, t2),
            _mm256_permute2x128_si256::<0x20>(t1, t3),
            _mm256_permute2x128_si256::<0x31>(t0, t2),
            _mm256_permute2x128_si256::<0x31>(t1, t3),
        ]
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn token_slots_imp(
    bucket: &[BucketHash],
    sign: &[SignHash],
    shape: &Shape,
    j: u64,
    slot: &mut [u32],
    slot_sign: &mut [f32],
) {
    let (rows, levels) = (shape.rows, shape.levels);
    let lr = levels * rows;
    assert!(bucket.len() >= lr && sign.len() >= rows && slot.len() >= lr && slot_sign.len() >= lr);
    // SAFETY: every load and store is masked (or guarded) to rows < `rows`
    // of a (level, row) block inside the lengths asserted above.
    unsafe {
        // Signs: lanes = rows, one key.
        let x = splat(hash::key(j));
        let x1 = _mm256_srli_epi64::<32>(x);
        let sp = sign.as_ptr() as *const u64;
        let mut r = 0;
        while r < rows {
            let nl = (rows - r).min(4);
            let m32 = lane_mask32(nl);
            let c = load_sign_coeffs(sp.add(4 * r), nl);
            _mm_maskstore_ps(
                slot_sign.as_mut_ptr().add(r),
                m32,
                sign_bits(sign_poly(c, x, x1)),
            );
            r += 4;
        }
        for l in 1..levels {
            slot_sign.copy_within(0..rows, l * rows);
        }
        // Buckets: lanes = rows of one level (same key, same b).
        let bp = bucket.as_ptr() as *const u64;
        // Row offsets of the lanes in `load_ac` order, and the packing
        // that restores row order: 32-bit words 0, 4, 2, 6.
        let lane = _mm256_setr_epi64x(0, 2, 1, 3);
        let unperm = _mm256_setr_epi32(0, 4, 2, 6, 0, 0, 0, 0);
        for l in 0..levels {
            let b = shape.buckets_at(l) as u64;
            let bv = splat(b);
            let x = splat(hash::key(level_key(j, l)));
            let x1 = _mm256_srli_epi64::<32>(x);
            let base = shape.cell(l, 0, 0) as u64;
            let mut r = 0;
            while r < rows {
                let nl = (rows - r).min(4);
                let m32 = lane_mask32(nl);
                let (a, c) = load_ac(bp.add(2 * (l * rows + r)), nl);
                let v = addmod(mulmod(a, _mm256_srli_epi64::<32>(a), x, x1), c);
                // cell = base + (r + lane) b + bucket (< 2^32: Dyadic::new checks cells).
                let cell = _mm256_add_epi64(
                    _mm256_add_epi64(splat(base + r as u64 * b), _mm256_mul_epu32(lane, bv)),
                    range(v, bv),
                );
                let packed = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(cell, unperm));
                _mm_maskstore_epi32(slot.as_mut_ptr().add(l * rows + r) as *mut i32, m32, packed);
                r += 4;
            }
        }
    }
}

#[inline(always)]
unsafe fn tail_mask(n: usize) -> __m256i {
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn scatter_add_imp(y: &mut [f32], w: usize, slot: &[u32], sign: &[f32], x: &[f32]) {
    if w == 0 {
        return;
    }
    assert!(x.len() >= w);
    let rows = y.len() / w;
    let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
    let tm = unsafe { tail_mask(w % 8) };
    for (&c, &s) in slot.iter().zip(sign) {
        let c = c as usize;
        assert!(c < rows, "scatter_add: slot out of range");
        // SAFETY: row c lies inside y (checked above), x has w elements.
        unsafe {
            let rp = yp.add(c * w);
            let vs = _mm256_set1_ps(s);
            let mut i = 0;
            while i + 8 <= w {
                let r = _mm256_add_ps(
                    _mm256_loadu_ps(rp.add(i)),
                    _mm256_mul_ps(vs, _mm256_loadu_ps(xp.add(i))),
                );
                _mm256_storeu_ps(rp.add(i), r);
                i += 8;
            }
            if i < w {
                let r = _mm256_add_ps(
                    _mm256_maskload_ps(rp.add(i), tm),
                    _mm256_mul_ps(vs, _mm256_maskload_ps(xp.add(i), tm)),
                );
                _mm256_maskstore_ps(rp.add(i), tm, r);
            }
        }
    }
}

#[inline(always)]
unsafe fn hsum_pd(x: __m256d) -> f64 {
    unsafe {
        let s = _mm_add_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd::<1>(x));
        _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
    }
}

/// `acc += y * f` for 8 floats widened to f64 (products exact, one rounding per add).
#[inline(always)]
unsafe fn dot8(acc: &mut [__m256d; 2], y: __m256, f: __m256) {
    unsafe {
        let (y0, y1) = (
            _mm256_cvtps_pd(_mm256_castps256_ps128(y)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(y)),
        );
        let (f0, f1) = (
            _mm256_cvtps_pd(_mm256_castps256_ps128(f)),
            _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(f)),
        );
        acc[0] = _mm256_fmadd_pd(y0, f0, acc[0]);
        acc[1] = _mm256_fmadd_pd(y1, f1, acc[1]);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn project_dot_imp(y: &[f32], w: usize, f: &[f32], out: &mut [f64]) {
    assert!(f.len() >= w && y.len() >= out.len() * w);
    let (yp, fp) = (y.as_ptr(), f.as_ptr());
    // SAFETY: cell c reads y[c w .. c w + w] (checked above) and f[..w].
    unsafe {
        let tm = tail_mask(w % 8);
        for (c, o) in out.iter_mut().enumerate() {
            let rp = yp.add(c * w);
            let mut acc = [_mm256_setzero_pd(); 2];
            let mut i = 0;
            while i + 8 <= w {
                dot8(
                    &mut acc,
                    _mm256_loadu_ps(rp.add(i)),
                    _mm256_loadu_ps(fp.add(i)),
                );
                i += 8;
            }
            if i < w {
                dot8(
                    &mut acc,
                    _mm256_maskload_ps(rp.add(i), tm),
                    _mm256_maskload_ps(fp.add(i), tm),
                );
            }
            *o = hsum_pd(_mm256_add_pd(acc[0], acc[1]));
        }
    }
}

/// `ord` of 4 f64 lanes (see `recovery_common`); its own inverse.
#[inline(always)]
unsafe fn ord4(x: __m256i) -> __m256i {
    unsafe {
        let neg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
        _mm256_xor_si256(x, _mm256_srli_epi64::<1>(neg))
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn median_imp(v: &mut [f64], rows: usize, out: &mut [f64]) {
    let m = median_shape(v, rows, out);
    // SAFETY: median_net touches v[r m + i], r < rows, i < m, and out[..m].
    let start = unsafe { by_rows!(rows, median_net(v.as_mut_ptr(), m, out.as_mut_ptr()), 0) };
    for (i, o) in out.iter_mut().enumerate().skip(start) {
        *o = median_group(v, m, rows, i);
    }
}

/// Sorts groups `0..4 floor(m/4)` (4 per vector, `R` planes) with the
/// comparator network on ord keys, writes their medians; returns the
/// first group not done.
#[inline(always)]
unsafe fn median_net<const R: usize>(vp: *mut f64, m: usize, op: *mut f64) -> usize {
    unsafe {
        let mut i = 0;
        while i + 4 <= m {
            let mut k = [_mm256_setzero_si256(); R];
            for (r, kr) in k.iter_mut().enumerate() {
                *kr = ord4(_mm256_loadu_si256(vp.add(r * m + i) as *const __m256i));
            }
            sort_network(&mut k, |k, a, b| {
                let (x, y) = (k[a], k[b]);
                let gt = _mm256_cmpgt_epi64(x, y);
                k[a] = _mm256_blendv_epi8(x, y, gt);
                k[b] = _mm256_blendv_epi8(y, x, gt);
            });
            let mut val = [_mm256_setzero_pd(); R];
            for r in 0..R {
                let s = ord4(k[r]);
                _mm256_storeu_si256(vp.add(r * m + i) as *mut __m256i, s);
                val[r] = _mm256_castsi256_pd(s);
            }
            let h = R / 2;
            let med = if R % 2 == 1 {
                val[h]
            } else {
                _mm256_mul_pd(_mm256_set1_pd(0.5), _mm256_add_pd(val[h - 1], val[h]))
            };
            _mm256_storeu_pd(op.add(i), med);
            i += 4;
        }
        i
    }
}

/// First `i >= from` with `s[i] >= thr` (ordered), or `s.len()`.
#[inline(always)]
unsafe fn scan(s: &[f64], mut i: usize, thr: f64) -> usize {
    let (n, p) = (s.len(), s.as_ptr());
    unsafe {
        let t = _mm256_set1_pd(thr);
        while i + 8 <= n {
            let a = _mm256_cmp_pd::<_CMP_GE_OQ>(_mm256_loadu_pd(p.add(i)), t);
            let b = _mm256_cmp_pd::<_CMP_GE_OQ>(_mm256_loadu_pd(p.add(i + 4)), t);
            if _mm256_movemask_pd(_mm256_or_pd(a, b)) != 0 {
                break;
            }
            i += 8;
        }
    }
    scan_scalar(s, i, thr)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn top_k_imp(score: &[f64], k: usize) -> Vec<usize> {
    // SAFETY: this function runs with AVX2 enabled (see the module doc).
    top_k_with(score, k, |s, i, thr| unsafe { scan(s, i, thr) })
}
