//! AVX-512 F/VL/BW recovery kernels: 8 u64 / f64 lanes or 16 f32 lanes,
//! every remainder one masked vector (no scalar tails, except the groups of
//! more than 16 rows in `median`). `project_dot` reuses the AVX2 routine
//! (measured faster here, see below).
//!
//! Same math as `recovery_avx2` (read its module doc for the mod-p
//! multiply from `_mm512_mul_epu32` partial products and why the results
//! are bitwise those of `recovery::hash`); AVX-512F adds unsigned 64-bit
//! compares (`csub` is one masked subtract), 64-bit min/max and arithmetic
//! shifts (the median network is two instructions per comparator), and
//! `vpmovqd` to pack lanes. Only F/VL instructions are used (no DQ/IFMA),
//! so the level's CPU test (F/VL/BW) covers them.
//!
//! Entry points carry `#[target_feature(enable = "avx512f,avx512vl,
//! avx512bw,avx2,fma")]`, are private and reachable only through the
//! AVX-512 table, which `Kernels::for_level` hands out only when the CPU
//! has them: the safety argument of the wrappers.

/// `project_dot` is the AVX2 routine: an AVX-512 version (f32 -> f64
/// widening of 8 floats per `vcvtps2pd zmm`, same summation) measured 1.25x
/// slower than AVX2 on this Zen 4 guest (38.9 vs 31.2 us at 2016 x 153),
/// whose 512-bit units are double-pumped 256-bit ones.
pub(super) use super::recovery_avx2::project_dot;
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
            // SAFETY: only reachable through the AVX-512 kernel table,
            // handed out only when the CPU has AVX-512 F/VL/BW, AVX2, FMA.
            unsafe { $imp($($a),*) }
        }
    )*};
}

safe! {
    fn buckets => buckets_imp(h: &BucketHash, b: u32, keys: &[u64], out: &mut [u32]);
    fn signs => signs_imp(s: &SignHash, keys: &[u64], out: &mut [f32]);
    fn token_slots => token_slots_imp(bucket: &[BucketHash], sign: &[SignHash], shape: &Shape, j: u64, slot: &mut [u32], slot_sign: &mut [f32]);
    fn scatter_add => scatter_add_imp(y: &mut [f32], w: usize, slot: &[u32], sign: &[f32], x: &[f32]);
    fn median => median_imp(v: &mut [f64], rows: usize, out: &mut [f64]);
    fn top_k => top_k_imp(score: &[f64], k: usize) -> Vec<usize>;
}

/// Mask of the first `n <= 8` 64-bit lanes.
#[inline(always)]
fn m8(n: usize) -> __mmask8 {
    ((1u32 << n) - 1) as __mmask8
}

#[inline(always)]
unsafe fn splat(x: u64) -> __m512i {
    unsafe { _mm512_set1_epi64(x as i64) }
}

/// `(x mod 2^61) + (x >> 61)`.
#[inline(always)]
unsafe fn fold(x: __m512i) -> __m512i {
    unsafe { _mm512_add_epi64(_mm512_and_si512(x, splat(P61)), _mm512_srli_epi64::<61>(x)) }
}

/// `y - p` if `y >= p` (unsigned compare).
#[inline(always)]
unsafe fn csub(y: __m512i) -> __m512i {
    unsafe {
        let p = splat(P61);
        _mm512_mask_sub_epi64(y, _mm512_cmpge_epu64_mask(y, p), y, p)
    }
}

/// `x mod p` for any u64 (`hash::key`).
#[inline(always)]
unsafe fn key(x: __m512i) -> __m512i {
    unsafe { csub(fold(fold(x))) }
}

/// `a x mod p` for `a, x < p`; `a1 = a >> 32`, `x1 = x >> 32`.
#[inline(always)]
unsafe fn mulmod(a: __m512i, a1: __m512i, x: __m512i, x1: __m512i) -> __m512i {
    unsafe {
        let ll = _mm512_mul_epu32(a, x);
        let mid = _mm512_add_epi64(_mm512_mul_epu32(a, x1), _mm512_mul_epu32(a1, x));
        let hh = _mm512_mul_epu32(a1, x1);
        let m29 = splat((1 << 29) - 1);
        let t = _mm512_add_epi64(
            _mm512_add_epi64(_mm512_slli_epi64::<3>(hh), _mm512_srli_epi64::<29>(mid)),
            _mm512_add_epi64(
                _mm512_slli_epi64::<32>(_mm512_and_si512(mid, m29)),
                fold(ll),
            ),
        );
        csub(fold(t))
    }
}

/// `(u + c) mod p` for `u, c < p`.
#[inline(always)]
unsafe fn addmod(u: __m512i, c: __m512i) -> __m512i {
    unsafe { csub(fold(_mm512_add_epi64(u, c))) }
}

/// `(h b) >> 61` for `h < 2^61`, `b < 2^32`.
#[inline(always)]
unsafe fn range(h: __m512i, b: __m512i) -> __m512i {
    unsafe {
        let t0 = _mm512_mul_epu32(h, b);
        let t1 = _mm512_mul_epu32(_mm512_srli_epi64::<32>(h), b);
        _mm512_srli_epi64::<29>(_mm512_add_epi64(t1, _mm512_srli_epi64::<32>(t0)))
    }
}

/// `(h & 1) ? -1.0f32 : 1.0f32` per lane, packed to 8 f32 bit patterns.
#[inline(always)]
unsafe fn sign_bits(h: __m512i) -> __m256i {
    unsafe {
        let s = _mm512_slli_epi64::<31>(_mm512_and_si512(h, splat(1)));
        _mm512_cvtepi64_epi32(_mm512_or_si512(s, splat(0x3f80_0000)))
    }
}

/// Degree-3 Horner of the sign polynomial with lane coefficients `c`.
#[inline(always)]
unsafe fn sign_poly(c: [__m512i; 4], x: __m512i, x1: __m512i) -> __m512i {
    unsafe {
        let mut h = c[3];
        for &ck in c[..3].iter().rev() {
            h = addmod(mulmod(h, _mm512_srli_epi64::<32>(h), x, x1), ck);
        }
        h
    }
}

/// Applies `f(offset, mask)` over `0..n` in steps of 8 lanes, the last masked.
#[inline(always)]
unsafe fn each8(n: usize, mut f: impl FnMut(usize, __mmask8)) {
    let mut i = 0;
    while i + 8 <= n {
        f(i, 0xff);
        i += 8;
    }
    if i < n {
        f(i, m8(n - i));
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
unsafe fn buckets_imp(h: &BucketHash, b: u32, keys: &[u64], out: &mut [u32]) {
    let n = keys.len().min(out.len());
    let (kp, op) = (keys.as_ptr(), out.as_mut_ptr());
    // SAFETY: masked lanes touch keys[..n], out[..n] only.
    unsafe {
        let (a, a1, c, bv) = (splat(h.a), splat(h.a >> 32), splat(h.c), splat(b as u64));
        each8(n, |i, k| {
            let x = key(_mm512_maskz_loadu_epi64(k, kp.add(i) as *const i64));
            let v = addmod(mulmod(a, a1, x, _mm512_srli_epi64::<32>(x)), c);
            _mm256_mask_storeu_epi32(
                op.add(i) as *mut i32,
                k,
                _mm512_cvtepi64_epi32(range(v, bv)),
            );
        });
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
unsafe fn signs_imp(s: &SignHash, keys: &[u64], out: &mut [f32]) {
    let n = keys.len().min(out.len());
    let (kp, op) = (keys.as_ptr(), out.as_mut_ptr());
    // SAFETY: masked lanes touch keys[..n], out[..n] only.
    unsafe {
        let c = [splat(s.c[0]), splat(s.c[1]), splat(s.c[2]), splat(s.c[3])];
        each8(n, |i, k| {
            let x = key(_mm512_maskz_loadu_epi64(k, kp.add(i) as *const i64));
            let h = sign_poly(c, x, _mm512_srli_epi64::<32>(x));
            _mm256_mask_storeu_epi32(op.add(i) as *mut i32, k, sign_bits(h));
        });
    }
}

/// Lanes `p[stride l + off]`, `l < 8`, masked by `k` (others read nothing, give 0).
#[inline(always)]
unsafe fn gather(p: *const u64, stride: i64, off: i64, k: __mmask8) -> __m512i {
    unsafe {
        let s = stride;
        let idx = _mm512_setr_epi64(
            off,
            s + off,
            2 * s + off,
            3 * s + off,
            4 * s + off,
            5 * s + off,
            6 * s + off,
            7 * s + off,
        );
        _mm512_mask_i64gather_epi64::<8>(_mm512_setzero_si512(), k, idx, p as *const i64)
    }
}

/// `(a, c)` of the bucket functions `p[0..nl]` (`nl <= 8`, AoS `[a, c]`
/// pairs), lanes in order: two masked loads and an even/odd permute.
#[inline(always)]
unsafe fn load_ac(p: *const u64, nl: usize) -> (__m512i, __m512i) {
    unsafe {
        let n2 = 2 * nl;
        let v0 = _mm512_maskz_loadu_epi64(m8(n2.min(8)), p as *const i64);
        let v1 = _mm512_maskz_loadu_epi64(m8(n2.saturating_sub(8)), p.add(8) as *const i64);
        let even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
        let odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
        (
            _mm512_permutex2var_epi64(v0, even, v1),
            _mm512_permutex2var_epi64(v0, odd, v1),
        )
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
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
    // SAFETY: every gather and store is masked to rows < `rows` of a
    // (level, row) block inside the lengths asserted above.
    unsafe {
        let x = splat(hash::key(j));
        let x1 = _mm512_srli_epi64::<32>(x);
        let sp = sign.as_ptr() as *const u64;
        let ssp = slot_sign.as_mut_ptr();
        each8(rows, |r, k| {
            let p = sp.add(4 * r);
            let c = [
                gather(p, 4, 0, k),
                gather(p, 4, 1, k),
                gather(p, 4, 2, k),
                gather(p, 4, 3, k),
            ];
            _mm256_mask_storeu_epi32(ssp.add(r) as *mut i32, k, sign_bits(sign_poly(c, x, x1)));
        });
        for l in 1..levels {
            slot_sign.copy_within(0..rows, l * rows);
        }
        let bp = bucket.as_ptr() as *const u64;
        let sp = slot.as_mut_ptr();
        let lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
        for l in 0..levels {
            let b = shape.buckets_at(l) as u64;
            let bv = splat(b);
            let x = splat(hash::key(level_key(j, l)));
            let x1 = _mm512_srli_epi64::<32>(x);
            let base = shape.cell(l, 0, 0) as u64;
            each8(rows, |r, k| {
                let (a, c) = load_ac(bp.add(2 * (l * rows + r)), k.count_ones() as usize);
                let v = addmod(mulmod(a, _mm512_srli_epi64::<32>(a), x, x1), c);
                // cell = base + (r + lane) b + bucket (< 2^32: Dyadic::new checks cells).
                let cell = _mm512_add_epi64(
                    _mm512_add_epi64(splat(base + r as u64 * b), _mm512_mul_epu32(lane, bv)),
                    range(v, bv),
                );
                _mm256_mask_storeu_epi32(
                    sp.add(l * rows + r) as *mut i32,
                    k,
                    _mm512_cvtepi64_epi32(cell),
                );
            });
        }
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
unsafe fn scatter_add_imp(y: &mut [f32], w: usize, slot: &[u32], sign: &[f32], x: &[f32]) {
    if w == 0 {
        return;
    }
    assert!(x.len() >= w);
    let rows = y.len() / w;
    let (yp, xp) = (y.as_mut_ptr(), x.as_ptr());
    let tm = ((1u32 << (w % 16)) - 1) as __mmask16;
    for (&c, &s) in slot.iter().zip(sign) {
        let c = c as usize;
        assert!(c < rows, "scatter_add: slot out of range");
        // SAFETY: row c lies inside y (checked above), x has w elements.
        unsafe {
            let rp = yp.add(c * w);
            let vs = _mm512_set1_ps(s);
            let mut i = 0;
            while i + 16 <= w {
                let r = _mm512_add_ps(
                    _mm512_loadu_ps(rp.add(i)),
                    _mm512_mul_ps(vs, _mm512_loadu_ps(xp.add(i))),
                );
                _mm512_storeu_ps(rp.add(i), r);
                i += 16;
            }
            if i < w {
                let r = _mm512_add_ps(
                    _mm512_maskz_loadu_ps(tm, rp.add(i)),
                    _mm512_mul_ps(vs, _mm512_maskz_loadu_ps(tm, xp.add(i))),
                );
                _mm512_mask_storeu_ps(rp.add(i), tm, r);
            }
        }
    }
}

/// `ord` of 8 f64 lanes (see `recovery_common`); its own inverse.
#[inline(always)]
unsafe fn ord8(x: __m512i) -> __m512i {
    unsafe { _mm512_xor_si512(x, _mm512_srli_epi64::<1>(_mm512_srai_epi64::<63>(x))) }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
unsafe fn median_imp(v: &mut [f64], rows: usize, out: &mut [f64]) {
    let m = median_shape(v, rows, out);
    // SAFETY: median_net touches v[r m + i], r < rows, i < m, and out[..m]
    // (the last block masked).
    let start = unsafe { by_rows!(rows, median_net(v.as_mut_ptr(), m, out.as_mut_ptr()), 0) };
    for (i, o) in out.iter_mut().enumerate().skip(start) {
        *o = median_group(v, m, rows, i);
    }
}

/// Sorts all `m` groups (8 per vector, the last block masked) with the
/// comparator network on ord keys and writes their medians; returns `m`.
#[inline(always)]
unsafe fn median_net<const R: usize>(vp: *mut f64, m: usize, op: *mut f64) -> usize {
    unsafe {
        let mut i = 0;
        while i < m {
            let km = m8((m - i).min(8));
            let mut k = [_mm512_setzero_si512(); R];
            for (r, kr) in k.iter_mut().enumerate() {
                *kr = ord8(_mm512_maskz_loadu_epi64(
                    km,
                    vp.add(r * m + i) as *const i64,
                ));
            }
            sort_network(&mut k, |k, a, b| {
                let (x, y) = (k[a], k[b]);
                k[a] = _mm512_min_epi64(x, y);
                k[b] = _mm512_max_epi64(x, y);
            });
            let mut val = [_mm512_setzero_pd(); R];
            for r in 0..R {
                let s = ord8(k[r]);
                _mm512_mask_storeu_epi64(vp.add(r * m + i) as *mut i64, km, s);
                val[r] = _mm512_castsi512_pd(s);
            }
            let h = R / 2;
            let med = if R % 2 == 1 {
                val[h]
            } else {
                _mm512_mul_pd(_mm512_set1_pd(0.5), _mm512_add_pd(val[h - 1], val[h]))
            };
            _mm512_mask_storeu_pd(op.add(i), km, med);
            i += 8;
        }
        m
    }
}

/// First `i >= from` with `s[i] >= thr` (ordered), or `s.len()`.
#[inline(always)]
unsafe fn scan(s: &[f64], mut i: usize, thr: f64) -> usize {
    let (n, p) = (s.len(), s.as_ptr());
    unsafe {
        let t = _mm512_set1_pd(thr);
        while i + 16 <= n {
            let a = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(_mm512_loadu_pd(p.add(i)), t);
            let b = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(_mm512_loadu_pd(p.add(i + 8)), t);
            if (a | b) != 0 {
                break;
            }
            i += 16;
        }
    }
    scan_scalar(s, i, thr)
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
unsafe fn top_k_imp(score: &[f64], k: usize) -> Vec<usize> {
    // SAFETY: this function runs with AVX-512 enabled (see the module doc).
    top_k_with(score, k, |s, i, thr| unsafe { scan(s, i, thr) })
}
