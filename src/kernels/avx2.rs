//! AVX2 + FMA + F16C kernels (8 f32 lanes, 16 ymm registers).
//!
//! Same math as `portable` (see the field docs of [`Kernels`]). Entry points
//! carry `#[target_feature]`; everything below is `#[inline(always)]` so it
//! compiles with those features. The entry points are private and reachable
//! only through [`KERNELS`], which `Kernels::for_level` hands out only when
//! the CPU has AVX2, FMA and F16C: that is the safety argument of every
//! `unsafe` call in the safe wrappers.
//!
//! The read of M (`query_s`) is column-blocked: a block of up to 64 columns
//! (8 ymm) of `acc` stays in registers while the rows stream by, so each
//! element of `s` is loaded once per token. With `dv <= 64` there is one
//! block and the rows are read contiguously. The update of M is a block
//! product (`gemm`, 6 x 16 FMA tiles) every few tokens (`sketch::state`).

use super::{Gemm, Kernels, Level};
use crate::poly::FeatureMap;
use core::arch::x86_64::*;

/// The AVX2 kernel table.
pub(super) static KERNELS: Kernels = Kernels {
    level: Level::Avx2,
    expand,
    weight,
    query_s,
    query_zs,
    absorb_z,
    flush,
    max_abs,
    f16_to_f32,
    bf16_to_f32,
    f16_rows,
    i8_rows,
    row_dots,
    i16_row_dots,
    row_dists,
    exp_shift,
    gemm,
    u4_row_dots,
    u4_rows,
    u4_row_dots_multi,
    u4_rows_multi,
    i8_row_dots,
    rec_buckets: super::recovery_avx2::buckets,
    rec_signs: super::recovery_avx2::signs,
    rec_token_slots: super::recovery_avx2::token_slots,
    rec_scatter_add: super::recovery_avx2::scatter_add,
    rec_project_dot: super::recovery_avx2::project_dot,
    rec_median: super::recovery_avx2::median,
    rec_top_k: super::recovery_avx2::top_k,
};

/// Lanes per vector.
const W: usize = 8;
/// Vectors per column block.
const NB: usize = 8;

/// Declares a safe wrapper `$name` around the `#[target_feature]` entry `$imp`.
macro_rules! safe {
    ($(fn $name:ident => $imp:ident ($($a:ident : $t:ty),*) $(-> $r:ty)?;)*) => {$(
        fn $name($($a: $t),*) $(-> $r)? {
            // SAFETY: only reachable through KERNELS, handed out by
            // `Kernels::for_level` only when the CPU supports this level.
            unsafe { $imp($($a),*) }
        }
    )*};
}

safe! {
    fn expand => expand_imp(map: &FeatureMap, x: &[f32], out: &mut [f32]);
    fn weight => weight_imp(x: &mut [f32], w: &[f32], alpha: f32);
    fn query_s => query_s_imp(s: &[f32], phiq: &[f32], acc: &mut [f32]);
    fn query_zs => query_zs_imp(zs: &[f32], phiq: &[f32]) -> (f32, f32);
    fn absorb_z => absorb_z_imp(zd: &mut [f32], phik: &[f32]);
    fn flush => flush_imp(s: &mut [f32], d: &mut [f32]);
    fn max_abs => max_abs_imp(x: &[f32]) -> f32;
    fn f16_to_f32 => f16_to_f32_imp(src: &[u16], dst: &mut [f32]);
    fn bf16_to_f32 => bf16_to_f32_imp(src: &[u16], dst: &mut [f32]);
    fn f16_rows => f16_rows_imp(w: &[f32], h: &[u16], out: &mut [f32]);
    fn i8_rows => i8_rows_imp(w: &[f32], a: &[i8], out: &mut [f32]);
    fn row_dots => row_dots_imp(a: &[f32], q: &[f32], out: &mut [f32]) -> f32;
    fn i16_row_dots => i16_row_dots_imp(a: &[i16], scale: &[f32], q: &[f32], out: &mut [f32]) -> f32;
    fn row_dists => row_dists_imp(a: &[f32], q: &[f32], out: &mut [f32]);
    fn exp_shift => exp_shift_imp(x: &mut [f32], s: f32, xmax: f32) -> f64;
}

#[inline(always)]
unsafe fn ld(p: *const f32) -> __m256 {
    unsafe { _mm256_loadu_ps(p) }
}
#[inline(always)]
unsafe fn st(p: *mut f32, x: __m256) {
    unsafe { _mm256_storeu_ps(p, x) }
}

/// Lane mask of the first `n < 8` lanes.
#[inline(always)]
unsafe fn tail_mask(n: usize) -> __m256i {
    unsafe {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }
}

/// Sum of the 8 lanes.
#[inline(always)]
unsafe fn hsum(x: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// `|x|` per lane.
#[inline(always)]
unsafe fn vabs(x: __m256) -> __m256 {
    unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), x) }
}

/// `dst[r] = a * src[r]`, `r < n` (non-overlapping).
#[inline(always)]
unsafe fn scale_copy(a: f32, src: *const f32, dst: *mut f32, n: usize) {
    unsafe {
        let va = _mm256_set1_ps(a);
        let mut i = 0;
        while i + W <= n {
            st(dst.add(i), _mm256_mul_ps(va, ld(src.add(i))));
            i += W;
        }
        while i < n {
            *dst.add(i) = a * *src.add(i);
            i += 1;
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn expand_imp(map: &FeatureMap, x: &[f32], out: &mut [f32]) {
    let t = map.len();
    assert!(out.len() >= t && x.len() >= map.dim());
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    // SAFETY: every copy reads and writes inside out[..t]; src lies before dst.
    unsafe {
        *op = 1.0;
        map.for_each_copy(|i, src, dst, len| scale_copy(*xp.add(i), op.add(src), op.add(dst), len));
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn weight_imp(x: &mut [f32], w: &[f32], alpha: f32) {
    let n = x.len().min(w.len());
    let (xp, wp) = (x.as_mut_ptr(), w.as_ptr());
    unsafe {
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + W <= n {
            st(
                xp.add(i),
                _mm256_mul_ps(ld(xp.add(i)), _mm256_mul_ps(ld(wp.add(i)), va)),
            );
            i += W;
        }
        while i < n {
            *xp.add(i) *= *wp.add(i) * alpha;
            i += 1;
        }
    }
}

/// Pointers and shape of one `query_s` pass.
#[derive(Clone, Copy)]
struct Pass {
    s: *const f32,
    phiq: *const f32,
    acc: *mut f32,
    /// Row stride (dv).
    stride: usize,
    rows: usize,
}

/// One column block of `N` full vectors (+ one masked vector if `TAIL`)
/// over every row: `acc += phiq_i s_i`, the block of `acc` in registers.
/// Pointers are already offset to the block's first column.
#[inline(always)]
unsafe fn block<const N: usize, const TAIL: bool>(p: Pass, mask: __m256i) {
    unsafe {
        let z = _mm256_setzero_ps();
        let mut aa = [z; N];
        let mut at = z;
        for (j, a) in aa.iter_mut().enumerate() {
            *a = ld(p.acc.add(j * W));
        }
        if TAIL {
            at = _mm256_maskload_ps(p.acc.add(N * W), mask);
        }
        let mut sp = p.s;
        for i in 0..p.rows {
            let b = _mm256_set1_ps(*p.phiq.add(i));
            for (j, a) in aa.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(b, ld(sp.add(j * W)), *a);
            }
            if TAIL {
                at = _mm256_fmadd_ps(b, _mm256_maskload_ps(sp.add(N * W), mask), at);
            }
            sp = sp.add(p.stride);
        }
        for (j, a) in aa.iter().enumerate() {
            st(p.acc.add(j * W), *a);
        }
        if TAIL {
            _mm256_maskstore_ps(p.acc.add(N * W), mask, at);
        }
    }
}

/// Runs [`block`] over every column block of width `NB * W`.
#[inline(always)]
unsafe fn pass(p: Pass) {
    let dv = p.stride;
    let mut c0 = 0;
    while c0 < dv {
        let wc = (dv - c0).min(NB * W);
        let (n, rem) = (wc / W, wc % W);
        // SAFETY: columns c0..c0+wc of every row lie inside the arrays.
        unsafe {
            let q = Pass {
                s: p.s.add(c0),
                acc: p.acc.add(c0),
                ..p
            };
            let mask = tail_mask(rem);
            macro_rules! go {
                ($($n:literal)*) => {
                    match (n, rem != 0) {
                        $(
                            ($n, false) => block::<$n, false>(q, mask),
                            ($n, true) => block::<$n, true>(q, mask),
                        )*
                        _ => {}
                    }
                };
            }
            go!(0 1 2 3 4 5 6 7 8);
        }
        c0 += wc;
    }
}

/// Rows of a pass: the largest `t` every slice can hold.
#[inline(always)]
fn rows(dv: usize, m: &[usize], v: &[usize]) -> usize {
    let mut t = usize::MAX;
    for &len in m {
        t = t.min(len / dv.max(1));
    }
    for &len in v {
        t = t.min(len);
    }
    t
}

/// `(den, mag) = (sum_i phiq_i zs_i, sum_i |phiq_i zs_i|)` over `i < n`.
#[inline(always)]
unsafe fn zs_pass(zs: *const f32, phiq: *const f32, n: usize) -> (f32, f32) {
    unsafe {
        let (mut den, mut mag) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + W <= n {
            let term = _mm256_mul_ps(ld(phiq.add(i)), ld(zs.add(i)));
            den = _mm256_add_ps(den, term);
            mag = _mm256_add_ps(mag, vabs(term));
            i += W;
        }
        let (mut den_s, mut mag_s) = (hsum(den), hsum(mag));
        while i < n {
            let term = *phiq.add(i) * *zs.add(i);
            den_s += term;
            mag_s += term.abs();
            i += 1;
        }
        (den_s, mag_s)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn absorb_z_imp(zd: &mut [f32], phik: &[f32]) {
    let n = zd.len().min(phik.len());
    let (zp, kp) = (zd.as_mut_ptr(), phik.as_ptr());
    unsafe {
        let mut i = 0;
        while i + W <= n {
            st(zp.add(i), _mm256_add_ps(ld(zp.add(i)), ld(kp.add(i))));
            i += W;
        }
        while i < n {
            *zp.add(i) += *kp.add(i);
            i += 1;
        }
    }
}

/// TwoSum, elementwise. Intrinsics are never contracted into FMAs, so this
/// is the exact error-free transformation (bitwise equal to `portable`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn flush_imp(s: &mut [f32], d: &mut [f32]) {
    let n = s.len().min(d.len());
    let (sp, dp) = (s.as_mut_ptr(), d.as_mut_ptr());
    unsafe {
        let mut i = 0;
        while i + W <= n {
            let (a, b) = (ld(sp.add(i)), ld(dp.add(i)));
            let sum = _mm256_add_ps(a, b);
            let bb = _mm256_sub_ps(sum, a);
            let err = _mm256_add_ps(
                _mm256_sub_ps(a, _mm256_sub_ps(sum, bb)),
                _mm256_sub_ps(b, bb),
            );
            st(sp.add(i), sum);
            st(dp.add(i), err);
            i += W;
        }
        while i < n {
            let (a, b) = (*sp.add(i), *dp.add(i));
            let sum = a + b;
            let bb = sum - a;
            *dp.add(i) = (a - (sum - bb)) + (b - bb);
            *sp.add(i) = sum;
            i += 1;
        }
    }
}

/// `max |x_i|`; any NaN gives +Inf (as `portable`).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn max_abs_imp(x: &[f32]) -> f32 {
    let n = x.len();
    let xp = x.as_ptr();
    unsafe {
        let (mut m, mut nan) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + W <= n {
            let v = ld(xp.add(i));
            m = _mm256_max_ps(m, vabs(v));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            i += W;
        }
        let mut buf = [0.0f32; W];
        st(buf.as_mut_ptr(), m);
        let mut r = 0.0f32;
        for &b in &buf {
            r = r.max(b);
        }
        let mut any_nan = _mm256_movemask_ps(nan) != 0;
        while i < n {
            let a = (*xp.add(i)).abs();
            any_nan |= a.is_nan();
            if a > r {
                r = a;
            }
            i += 1;
        }
        if any_nan {
            f32::INFINITY
        } else {
            r
        }
    }
}

/// Converts 8 u16 at a time with `cvt`; the tail goes through a zeroed buffer.
#[inline(always)]
unsafe fn convert(src: &[u16], dst: &mut [f32], cvt: impl Fn(__m128i) -> __m256) {
    let n = src.len().min(dst.len());
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    unsafe {
        let mut i = 0;
        while i + W <= n {
            st(dp.add(i), cvt(_mm_loadu_si128(sp.add(i) as *const __m128i)));
            i += W;
        }
        if i < n {
            let r = n - i;
            let mut hb = [0u16; W];
            let mut fb = [0.0f32; W];
            core::ptr::copy_nonoverlapping(sp.add(i), hb.as_mut_ptr(), r);
            st(
                fb.as_mut_ptr(),
                cvt(_mm_loadu_si128(hb.as_ptr() as *const __m128i)),
            );
            core::ptr::copy_nonoverlapping(fb.as_ptr(), dp.add(i), r);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_to_f32_imp(src: &[u16], dst: &mut [f32]) {
    unsafe { convert(src, dst, |h| _mm256_cvtph_ps(h)) }
}

/// `out[j] += sum_i w[i] f32(h[i dv + j])` (see [`Kernels::f16_rows`]):
/// column blocks of up to 64 (8 ymm accumulators) while the rows stream by,
/// one 16-byte load, one `vcvtph2ps` and one FMA per 8 values.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_rows_imp(w: &[f32], h: &[u16], out: &mut [f32]) {
    let dv = out.len();
    assert!(h.len() >= w.len() * dv, "f16_rows: h too short");
    let (hp, op) = (h.as_ptr(), out.as_mut_ptr());
    let mut c0 = 0;
    while c0 < dv {
        let cw = (NB * W).min(dv - c0);
        // SAFETY: rows i < w.len() of h span i dv + c0 .. + cw <= h.len();
        // out spans c0 .. c0 + cw <= dv.
        unsafe {
            let (hc, oc) = (hp.add(c0), op.add(c0));
            by_vectors!(cw.div_ceil(W), rows_f16(w, hc, dv, cw, oc));
        }
        c0 += cw;
    }
}

/// One column block of `f16_rows`: `N = ceil(cw / 8)` accumulators; the
/// last one partial when `cw % 8 != 0` (its halves copied into a zeroed
/// 8-lane buffer, its sums added lane by lane).
#[inline(always)]
unsafe fn rows_f16<const N: usize>(w: &[f32], h: *const u16, dv: usize, cw: usize, out: *mut f32) {
    unsafe {
        let full = cw / W;
        let rem = cw % W;
        let mut acc = [_mm256_setzero_ps(); N];
        for (i, &wi) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wi);
            let row = h.add(i * dv);
            for (v, a) in acc.iter_mut().enumerate() {
                let x = if v < full {
                    _mm256_cvtph_ps(_mm_loadu_si128(row.add(v * W) as *const __m128i))
                } else {
                    let mut t = [0u16; W];
                    core::ptr::copy_nonoverlapping(row.add(v * W), t.as_mut_ptr(), rem);
                    _mm256_cvtph_ps(_mm_loadu_si128(t.as_ptr() as *const __m128i))
                };
                *a = _mm256_fmadd_ps(wv, x, *a);
            }
        }
        for (v, a) in acc.iter().enumerate() {
            if v < full {
                st(out.add(v * W), _mm256_add_ps(ld(out.add(v * W)), *a));
            } else {
                let mut t = [0.0f32; W];
                st(t.as_mut_ptr(), *a);
                for (l, &x) in t[..rem].iter().enumerate() {
                    *out.add(v * W + l) += x;
                }
            }
        }
    }
}

/// `out[j] += sum_i w[i] f32(a[i dv + j])` (see [`Kernels::i8_rows`]):
/// column blocks of up to 64 (8 ymm accumulators) while the rows stream by,
/// one 8-byte load (`vmovq`), one `vpmovsxbd`, one `vcvtdq2ps` (exact) and
/// one FMA per 8 values. A block's partial last vector (`cw % 8 != 0`) is
/// loaded whole, its extra lanes (bytes of the next row) summed and dropped,
/// on every row whose 8 bytes lie inside `a`; only the last rows, where they
/// may not, copy their tail bytes into a zeroed 8-byte buffer.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8_rows_imp(w: &[f32], a: &[i8], out: &mut [f32]) {
    let (m, dv) = (w.len(), out.len());
    assert!(a.len() >= m * dv, "i8_rows: a too short");
    let (ap, op) = (a.as_ptr(), out.as_mut_ptr());
    let mut c0 = 0;
    while c0 < dv {
        let cw = (NB * W).min(dv - c0);
        // Rows i < direct read the block's last vector whole: its 8 bytes
        // at i dv + t0 lie inside a (all rows when the block has no tail).
        let t0 = c0 + cw / W * W;
        let direct = if cw % W == 0 {
            m
        } else {
            a.len()
                .checked_sub(t0 + W)
                .map_or(0, |s| (s / dv + 1).min(m))
        };
        // SAFETY: rows i < m of the block span i dv + c0 .. + cw <= m dv <=
        // a.len(), so its full vectors are inside a; a partial last vector
        // is read whole only for i < direct (i dv + t0 + 8 <= a.len(), by
        // the definition of direct), else through a buffer of its cw % 8
        // bytes; out spans c0 .. c0 + cw <= dv.
        unsafe {
            let (ac, oc) = (ap.add(c0), op.add(c0));
            by_vectors!(cw.div_ceil(W), rows_i8(w, ac, dv, cw, direct, oc));
        }
        c0 += cw;
    }
}

/// 8 int8 at `p` as 8 f32 (exact): `vmovq` + `vpmovsxbd` + `vcvtdq2ps`.
#[inline(always)]
unsafe fn i8x8(p: *const i8) -> __m256 {
    unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))) }
}

/// One column block of `i8_rows`: `N = ceil(cw / 8)` accumulators, the last
/// one partial when `cw % 8 != 0` (read whole on rows `< direct`, through a
/// zeroed 8-byte buffer after; only its first `cw % 8` sums are added).
#[inline(always)]
unsafe fn rows_i8<const N: usize>(
    w: &[f32],
    a: *const i8,
    dv: usize,
    cw: usize,
    direct: usize,
    out: *mut f32,
) {
    unsafe {
        let rem = cw % W;
        // Vector v is whole (all 8 lanes live) unless it is the partial last.
        let whole = |v: usize| v + 1 < N || rem == 0;
        let mut acc = [_mm256_setzero_ps(); N];
        let (wd, wb) = w.split_at(direct);
        for (i, &wi) in wd.iter().enumerate() {
            let wv = _mm256_set1_ps(wi);
            let row = a.add(i * dv);
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(wv, i8x8(row.add(v * W)), *acc);
            }
        }
        for (i, &wi) in wb.iter().enumerate() {
            let wv = _mm256_set1_ps(wi);
            let row = a.add((direct + i) * dv);
            for (v, acc) in acc.iter_mut().enumerate() {
                let x = if whole(v) {
                    i8x8(row.add(v * W))
                } else {
                    let mut t = [0i8; W];
                    core::ptr::copy_nonoverlapping(row.add(v * W), t.as_mut_ptr(), rem);
                    i8x8(t.as_ptr())
                };
                *acc = _mm256_fmadd_ps(wv, x, *acc);
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            if whole(v) {
                st(out.add(v * W), _mm256_add_ps(ld(out.add(v * W)), *acc));
            } else {
                let mut t = [0.0f32; W];
                st(t.as_mut_ptr(), *acc);
                for (l, &x) in t[..rem].iter().enumerate() {
                    *out.add(v * W + l) += x;
                }
            }
        }
    }
}

/// `out[i] = a_i . q` (see [`Kernels::row_dots`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_dots_imp(a: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    unsafe { key_rows::<false>(a, q, out) }
}

/// `out[i] = |a_i - q|^2` (see [`Kernels::row_dists`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_dists_imp(a: &[f32], q: &[f32], out: &mut [f32]) {
    unsafe { key_rows::<true>(a, q, out) };
}

/// `acc + x y` (`DIST` false) or `acc + (x - y)^2`, one FMA.
#[inline(always)]
unsafe fn step<const DIST: bool>(x: __m256, y: __m256, acc: __m256) -> __m256 {
    unsafe {
        if DIST {
            let t = _mm256_sub_ps(x, y);
            _mm256_fmadd_ps(t, t, acc)
        } else {
            _mm256_fmadd_ps(x, y, acc)
        }
    }
}

/// `row_dots` / `row_dists`: two FMA chains per row over 16 columns at a
/// time, the last `d mod 8` columns masked (zero in both operands); returns
/// the largest result.
#[inline(always)]
unsafe fn key_rows<const DIST: bool>(a: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    let d = q.len();
    assert!(a.len() >= out.len() * d, "row_dots/row_dists: a too short");
    let full = d / W * W;
    let (ap, qp) = (a.as_ptr(), q.as_ptr());
    let mut mx = f32::NEG_INFINITY;
    // SAFETY: row i spans a[i d .. (i + 1) d] <= a.len(); masked lanes past
    // d touch no memory.
    unsafe {
        let mk = tail_mask(d - full);
        for (i, o) in out.iter_mut().enumerate() {
            let p = ap.add(i * d);
            let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let mut c = 0;
            while c + 2 * W <= full {
                s0 = step::<DIST>(ld(p.add(c)), ld(qp.add(c)), s0);
                s1 = step::<DIST>(ld(p.add(c + W)), ld(qp.add(c + W)), s1);
                c += 2 * W;
            }
            if c < full {
                s0 = step::<DIST>(ld(p.add(c)), ld(qp.add(c)), s0);
            }
            if full < d {
                let x = _mm256_maskload_ps(p.add(full), mk);
                let y = _mm256_maskload_ps(qp.add(full), mk);
                s1 = step::<DIST>(x, y, s1);
            }
            let v = hsum(_mm256_add_ps(s0, s1));
            *o = v;
            mx = mx.max(v);
        }
    }
    mx
}

/// Int16 rows per pass of `i16_row_dots`.
const KR: usize = 4;

/// `out[i] = scale[i] (f32(a_i) . q)` (see [`Kernels::i16_row_dots`]): four
/// rows per pass, each with two FMA chains over 16 columns at a time (a
/// 16-byte load, `vpmovsxwd`, `vcvtdq2ps` and one FMA per 8 values; the
/// exact i16 -> f32 conversion), the last `d mod 8` columns one partial
/// vector ([`tail_i16`]) against masked `q` lanes; the four sums reduced together, times
/// the four scales, stored as one vector. Leftover rows (`< 4`) take the
/// same path with zero rows, so a row's result does not depend on its
/// position. Returns the largest result.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i16_row_dots_imp(a: &[i16], scale: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    let d = q.len();
    let n = out.len();
    assert!(a.len() >= n * d, "i16_row_dots: a too short");
    assert!(scale.len() >= n, "i16_row_dots: scale too short");
    let full = d / W * W;
    let (sp, op) = (scale.as_ptr(), out.as_mut_ptr());
    // SAFETY: rows i < n span a[i d .. (i + 1) d] <= a.len(); scale and out
    // are read / written at i < n <= len; masked lanes past d (of q and of
    // a row's tail, see `tail_i16`) touch no memory.
    unsafe {
        let rem = d - full;
        let lane = _mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7);
        let odd = if rem % 2 == 1 { rem as i16 - 1 } else { -1 };
        let k = I16Rows {
            a: a.as_ptr(),
            d,
            q: q.as_ptr(),
            full,
            mask: tail_mask(rem),
            pairs: _mm256_castsi256_si128(tail_mask(rem / 2)),
            odd: _mm_cmpeq_epi16(_mm_set1_epi16(odd), lane),
        };
        scaled_rows_by_4!(k, n, sp, op, i16_block)
    }
}

/// Pointers and shape of one `i16_row_dots` call.
#[derive(Clone, Copy)]
struct I16Rows {
    a: *const i16,
    /// Row length and stride.
    d: usize,
    q: *const f32,
    /// `d` rounded down to a multiple of 8.
    full: usize,
    /// Lanes `< d - full` of the tail vector.
    mask: __m256i,
    /// The `(d - full) / 2` whole int32 lanes of the tail's int16 pairs.
    pairs: __m128i,
    /// int16 lane `d - full - 1` when `d - full` is odd, else none.
    odd: __m128i,
}

/// 8 int16 at `p` as 8 f32 (exact).
#[inline(always)]
unsafe fn cvt_i16(p: *const i16) -> __m256 {
    unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128(p as *const __m128i))) }
}

/// The `rem = d - full` (1..=7) int16 at `p` as 8 f32, lanes `>= rem` zero,
/// reading only `p[..rem]`: the `rem / 2` pairs by a masked 32-bit load
/// (`vpmaskmovd`, no alignment needed; masked lanes touch no memory), an odd
/// last value blended in from a scalar read of `p[rem - 1]`.
#[inline(always)]
unsafe fn tail_i16(k: I16Rows, p: *const i16) -> __m256 {
    unsafe {
        let x = _mm_maskload_epi32(p as *const i32, k.pairs);
        let last = _mm_set1_epi16(*p.add(k.d - k.full - 1));
        let x = _mm_blendv_epi8(x, last, k.odd);
        _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(x))
    }
}

/// Lane vectors of `f32(a_r) . q` for the `R <= 4` rows `i..i + R` (entries
/// `R..4` zero): two FMA chains per row.
#[inline(always)]
unsafe fn i16_block<const R: usize>(k: I16Rows, i: usize) -> [__m256; KR] {
    unsafe {
        let z = _mm256_setzero_ps();
        let (mut s0, mut s1) = ([z; R], [z; R]);
        let p = k.a.add(i * k.d);
        let mut c = 0;
        while c + 2 * W <= k.full {
            let (y0, y1) = (ld(k.q.add(c)), ld(k.q.add(c + W)));
            for (r, (a0, a1)) in s0.iter_mut().zip(s1.iter_mut()).enumerate() {
                let row = p.add(r * k.d + c);
                *a0 = _mm256_fmadd_ps(cvt_i16(row), y0, *a0);
                *a1 = _mm256_fmadd_ps(cvt_i16(row.add(W)), y1, *a1);
            }
            c += 2 * W;
        }
        if c < k.full {
            let y = ld(k.q.add(c));
            for (r, a0) in s0.iter_mut().enumerate() {
                *a0 = _mm256_fmadd_ps(cvt_i16(p.add(r * k.d + c)), y, *a0);
            }
        }
        if k.full < k.d {
            let y = _mm256_maskload_ps(k.q.add(k.full), k.mask);
            for (r, a1) in s1.iter_mut().enumerate() {
                *a1 = _mm256_fmadd_ps(tail_i16(k, p.add(r * k.d + k.full)), y, *a1);
            }
        }
        let mut o = [z; KR];
        for (o, (a0, a1)) in o.iter_mut().zip(s0.iter().zip(&s1)) {
            *o = _mm256_add_ps(*a0, *a1);
        }
        o
    }
}

/// The lane sums of four vectors, as one 4-lane vector.
#[inline(always)]
unsafe fn hsum4(x: [__m256; KR]) -> __m128 {
    unsafe {
        let t01 = _mm256_hadd_ps(x[0], x[1]);
        let t23 = _mm256_hadd_ps(x[2], x[3]);
        let t = _mm256_hadd_ps(t01, t23);
        _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1))
    }
}

// ---- Compact token formats: 4-bit code rows and int8 key rows. These
// five entry points are `pub(super)`: the AVX-512 table uses them too.

/// `out[i] = 2^e sum_c qi_c code(a_i, c)` (see [`Kernels::u4_row_dots`]).
pub(super) fn u4_row_dots(a: &[u8], q: &[f32], out: &mut [f32]) {
    let d = q.len();
    assert!(d.is_multiple_of(U4G), "u4_row_dots: d not a multiple of 32");
    assert!(d <= super::u4_fixed::MAX_D, "u4_row_dots: d above 4096");
    assert!(a.len() >= out.len() * (d / 2), "u4_row_dots: a too short");
    if d == 0 {
        out.fill(0.0);
        return;
    }
    let n = out.len();
    // SAFETY: only reachable through the AVX2 and AVX-512 tables, handed
    // out by `Kernels::for_level` only when the CPU has AVX2 + FMA + F16C
    // (the AVX-512 level requires them too); shapes checked above.
    unsafe { super::u4_dots_avx2::dots(a, q, d, n, out) }
}

/// `out[c] += sum_i w[i G + c / 32] code(a_i, c)` (see [`Kernels::u4_rows`]).
pub(super) fn u4_rows(w: &[f32], a: &[u8], out: &mut [f32]) {
    // SAFETY: as `u4_row_dots`.
    unsafe { u4_rows_imp(w, a, out) }
}

/// `out[i n + t] = 2^e_i sum_c qi_ic code(a_t, c)` (see
/// [`Kernels::u4_row_dots_multi`]).
pub(super) fn u4_row_dots_multi(a: &[u8], q: &[f32], d: usize, out: &mut [f32]) {
    let (m, n) = super::u4_multi_dots_shape(a.len(), q.len(), d, out.len());
    if m > 0 {
        // SAFETY: as `u4_row_dots` (shapes checked by u4_multi_dots_shape).
        unsafe { super::u4_dots_avx2::dots(a, q, d, n, out) }
    }
}

/// `out[i dv + c] += sum_t w[i n G + t G + c / 32] code(a_t, c)` (see
/// [`Kernels::u4_rows_multi`]).
pub(super) fn u4_rows_multi(w: &[f32], a: &[u8], dv: usize, out: &mut [f32]) {
    // SAFETY: as `u4_row_dots`.
    unsafe { u4_rows_multi_imp(w, a, dv, out) }
}

/// `out[i] = scale[i] (f32(a_i) . q)` (see [`Kernels::i8_row_dots`]).
pub(super) fn i8_row_dots(a: &[i8], scale: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    // SAFETY: as `u4_row_dots`.
    unsafe { i8_row_dots_imp(a, scale, q, out) }
}

/// Channels per 4-bit group (16 bytes).
const U4G: usize = 32;

/// The 32 codes of the 16-byte group at `p` as f32 (exact), channels
/// `0..8, 8..16, 16..24, 24..32`: each 8-byte half zero-extended to int32
/// (`vpmovzxbd` from memory), the low nibbles by `vpand` 15 (channels `t`),
/// the high ones by `vpsrld` 4 (channels `t + 16`), then `vcvtdq2ps`.
/// Reads exactly `p[..16]`.
#[inline(always)]
unsafe fn u4x32(p: *const u8) -> [__m256; 4] {
    unsafe {
        let m = _mm256_set1_epi32(15);
        let b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
        let b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8) as *const __m128i));
        [
            _mm256_cvtepi32_ps(_mm256_and_si256(b0, m)),
            _mm256_cvtepi32_ps(_mm256_and_si256(b1, m)),
            _mm256_cvtepi32_ps(_mm256_srli_epi32(b0, 4)),
            _mm256_cvtepi32_ps(_mm256_srli_epi32(b1, 4)),
        ]
    }
}

/// Groups (of 32 columns, 4 ymm accumulators each) per `u4_rows` pass.
const U4NG: usize = 2;

/// Weighted sum of 4-bit rows: passes over up to two groups (64 columns,
/// 8 ymm accumulators) while the rows stream by; per row and group one
/// broadcast weight, [`u4x32`] and four FMAs (rows in order per column).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u4_rows_imp(w: &[f32], a: &[u8], out: &mut [f32]) {
    let dv = out.len();
    assert!(dv.is_multiple_of(U4G), "u4_rows: dv not a multiple of 32");
    let groups = dv / U4G;
    let m = w.len() / groups.max(1);
    let rb = dv / 2;
    assert!(a.len() >= m * rb, "u4_rows: a too short");
    let k = U4Rows {
        w: w.as_ptr(),
        a: a.as_ptr(),
        out: out.as_mut_ptr(),
        groups,
        m,
        rb,
    };
    // SAFETY: rows i < m span a[i rb .. (i + 1) rb] <= m rb <= a.len()
    // and each pass reads groups g..g + ng <= groups of them; w is read at
    // i G + g' < m G <= w.len(); out at columns < dv.
    unsafe { u4_rows_one(k) }
}

/// The body of `u4_rows`: passes of [`u4_rows_pass`] over every group
/// (also the odd weight set of `u4_rows_multi`).
#[inline(always)]
unsafe fn u4_rows_one(k: U4Rows) {
    let mut g = 0;
    while g < k.groups {
        let ng = (k.groups - g).min(U4NG);
        unsafe {
            match ng {
                1 => u4_rows_pass::<1>(k, g),
                _ => u4_rows_pass::<U4NG>(k, g),
            }
        }
        g += ng;
    }
}

/// Pointers and shape of one `u4_rows` call.
#[derive(Clone, Copy)]
struct U4Rows {
    w: *const f32,
    a: *const u8,
    out: *mut f32,
    /// Groups per row (`G = dv / 32`).
    groups: usize,
    /// Rows.
    m: usize,
    /// Bytes per row (`dv / 2`).
    rb: usize,
}

/// Groups `g0..g0 + NG` of `u4_rows`: `4 NG` accumulators over every row,
/// then added to `out`.
#[inline(always)]
unsafe fn u4_rows_pass<const NG: usize>(k: U4Rows, g0: usize) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 4]; NG];
        let (mut row, mut wr) = (k.a.add(g0 * U4G / 2), k.w.add(g0));
        for _ in 0..k.m {
            for (h, acc) in acc.iter_mut().enumerate() {
                let wv = _mm256_set1_ps(*wr.add(h));
                let x = u4x32(row.add(h * U4G / 2));
                for (a, x) in acc.iter_mut().zip(x) {
                    *a = _mm256_fmadd_ps(wv, x, *a);
                }
            }
            row = row.add(k.rb);
            wr = wr.add(k.groups);
        }
        for (h, acc) in acc.iter().enumerate() {
            let o = k.out.add((g0 + h) * U4G);
            for (v, a) in acc.iter().enumerate() {
                st(o.add(v * W), _mm256_add_ps(ld(o.add(v * W)), *a));
            }
        }
    }
}

/// Vector `V` of [`u4x32`] for the 16-byte group at `p` alone (channels
/// `8 V .. 8 V + 8`): one `vpmovzxbd` from memory, `vpand` 15 (`V < 2`) or
/// `vpsrld` 4, `vcvtdq2ps`. The multi-query kernels decode one vector at a
/// time so that their accumulators and weights fit the 16 registers.
#[inline(always)]
unsafe fn u4x8<const V: usize>(p: *const u8) -> __m256 {
    unsafe {
        let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8 * (V % 2)) as *const __m128i));
        let c = if V < 2 {
            _mm256_and_si256(b, _mm256_set1_epi32(15))
        } else {
            _mm256_srli_epi32(b, 4)
        };
        _mm256_cvtepi32_ps(c)
    }
}

/// Weighted sums of 4-bit rows for `m` weight sets: an odd `m >= 3` starts
/// with a triple (per group two half-group passes, [`u4_rows_multi_half`],
/// so that three sets' accumulators fit the 16 ymm registers; faster than
/// a pair and a single, slower than two pairs), then pairs (per group the rows
/// stream by once for both, [`u4_rows_multi_group`]: per row each code
/// vector decoded once, [`u4x8`], one FMA per set with the set's broadcast
/// weight); an odd last set takes the single kernel's path. Rows in order
/// per column, as `u4_rows`: bitwise equal to it.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u4_rows_multi_imp(w: &[f32], a: &[u8], dv: usize, out: &mut [f32]) {
    let (m, n) = super::u4_multi_rows_shape(w.len(), a.len(), dv, out.len());
    let groups = dv / U4G;
    let k = U4RowsMulti {
        w: w.as_ptr(),
        a: a.as_ptr(),
        out: out.as_mut_ptr(),
        groups,
        n,
        dv,
    };
    // SAFETY: rows t < n span a[t dv / 2 .. (t + 1) dv / 2] <= a.len()
    // (checked), read in whole 16-byte groups; set i < m's weights at
    // i n G + t G + g < m n G = w.len(); out at i dv + c, c < dv.
    unsafe {
        let mut i = 0;
        if m % 2 == 1 && m >= 3 {
            for g in 0..groups {
                u4_rows_multi_half::<3, 0>(k, g, i);
                u4_rows_multi_half::<3, 1>(k, g, i);
            }
            i += 3;
        }
        while i + 2 <= m {
            for g in 0..groups {
                u4_rows_multi_group::<2>(k, g, i);
            }
            i += 2;
        }
        if i < m {
            u4_rows_one(U4Rows {
                w: k.w.add(i * n * groups),
                a: k.a,
                out: k.out.add(i * dv),
                groups,
                m: n,
                rb: dv / 2,
            });
        }
    }
}

/// Pointers and shape of one `u4_rows_multi` call.
#[derive(Clone, Copy)]
struct U4RowsMulti {
    w: *const f32,
    a: *const u8,
    out: *mut f32,
    /// Groups per row (`G = dv / 32`).
    groups: usize,
    /// Rows.
    n: usize,
    /// Columns (`out` row stride).
    dv: usize,
}

/// Sets `i0..i0 + M` (`M <= 2`) of `u4_rows_multi` over group `g`: `4 M`
/// accumulators over every row, then added to `out`.
#[inline(always)]
unsafe fn u4_rows_multi_group<const M: usize>(k: U4RowsMulti, g: usize, i0: usize) {
    unsafe {
        let z = _mm256_setzero_ps();
        let ws = k.n * k.groups;
        let mut acc = [[z; 4]; M];
        let (mut p, mut wr) = (k.a.add(g * U4G / 2), k.w.add(i0 * ws + g));
        for _ in 0..k.n {
            let mut wv = [z; M];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm256_set1_ps(*wr.add(j * ws));
            }
            macro_rules! fmas {
                ($v:literal) => {
                    let x = u4x8::<$v>(p);
                    for (a, &wj) in acc.iter_mut().zip(&wv) {
                        a[$v] = _mm256_fmadd_ps(wj, x, a[$v]);
                    }
                };
            }
            fmas!(0);
            fmas!(1);
            fmas!(2);
            fmas!(3);
            p = p.add(k.dv / 2);
            wr = wr.add(k.groups);
        }
        for (j, acc) in acc.iter().enumerate() {
            let o = k.out.add((i0 + j) * k.dv + g * U4G);
            for (v, a) in acc.iter().enumerate() {
                st(o.add(v * W), _mm256_add_ps(ld(o.add(v * W)), *a));
            }
        }
    }
}

/// Sets `i0..i0 + M` of `u4_rows_multi` over half `H` of group `g`: bytes
/// `8 H..8 H + 8` of each row, i.e. vectors `H` (low nibbles) and `2 + H`
/// (high nibbles) of [`u4x32`], from one `vpmovzxbd` load; two
/// accumulators per set, so three sets fit the registers (6 accumulators,
/// 2 code vectors, 3 weights). Each column's chain is `u4_rows`' (rows in
/// order, one FMA each, then added to `out`): bitwise the single kernel.
#[inline(always)]
unsafe fn u4_rows_multi_half<const M: usize, const H: usize>(k: U4RowsMulti, g: usize, i0: usize) {
    unsafe {
        let z = _mm256_setzero_ps();
        let m15 = _mm256_set1_epi32(15);
        let ws = k.n * k.groups;
        let mut acc = [[z; 2]; M];
        let (mut p, mut wr) = (k.a.add(g * U4G / 2 + 8 * H), k.w.add(i0 * ws + g));
        for _ in 0..k.n {
            let b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i));
            let x = [
                _mm256_cvtepi32_ps(_mm256_and_si256(b, m15)),
                _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4)),
            ];
            for (j, a) in acc.iter_mut().enumerate() {
                let wv = _mm256_set1_ps(*wr.add(j * ws));
                a[0] = _mm256_fmadd_ps(wv, x[0], a[0]);
                a[1] = _mm256_fmadd_ps(wv, x[1], a[1]);
            }
            p = p.add(k.dv / 2);
            wr = wr.add(k.groups);
        }
        for (j, acc) in acc.iter().enumerate() {
            let o = k.out.add((i0 + j) * k.dv + g * U4G);
            for (v, a) in [H, 2 + H].into_iter().zip(acc) {
                st(o.add(v * W), _mm256_add_ps(ld(o.add(v * W)), *a));
            }
        }
    }
}

/// `out[i] = scale[i] (f32(a_i) . q)` (see [`Kernels::i8_row_dots`]): as
/// [`i16_row_dots_imp`] (four rows per pass, two FMA chains each over 16
/// columns, the sums reduced together, times the four scales) with int8
/// rows: one 8-byte load (`vmovq`), `vpmovsxbd` and `vcvtdq2ps` (exact) per
/// 8 values. The last `d mod 8` columns are one vector against masked `q`
/// lanes ([`tail_i8`]). Returns the largest result.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8_row_dots_imp(a: &[i8], scale: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    let d = q.len();
    let n = out.len();
    assert!(a.len() >= n * d, "i8_row_dots: a too short");
    assert!(scale.len() >= n, "i8_row_dots: scale too short");
    let full = d / W * W;
    let (sp, op) = (scale.as_ptr(), out.as_mut_ptr());
    // SAFETY: rows i < n span a[i d .. (i + 1) d] <= a.len(); scale and out
    // are read / written at i < n <= len; masked lanes of q past d touch no
    // memory; a row's tail reads 8 bytes only where they lie inside a
    // (`tail_i8`).
    unsafe {
        let k = I8Rows {
            a: a.as_ptr(),
            len: a.len(),
            d,
            q: q.as_ptr(),
            full,
            mask: tail_mask(d - full),
        };
        scaled_rows_by_4!(k, n, sp, op, i8_block)
    }
}

/// Pointers and shape of one `i8_row_dots` call.
#[derive(Clone, Copy)]
struct I8Rows {
    a: *const i8,
    /// `a.len()`.
    len: usize,
    /// Row length and stride.
    d: usize,
    q: *const f32,
    /// `d` rounded down to a multiple of 8.
    full: usize,
    /// Lanes `< d - full` of the tail vector.
    mask: __m256i,
}

/// The tail of the row at offset `off` (`a[off..off + d - full]`, 1..=7
/// values) as 8 f32 lanes, meant for `q` lanes masked to zero past it (so
/// lanes `>= d - full` do not count, whatever they hold): the 8 bytes at
/// `off` read whole when they lie inside `a` (the extra lanes hold the next
/// row's bytes, finite integers), else copied into a zeroed buffer.
#[inline(always)]
unsafe fn tail_i8(k: I8Rows, off: usize) -> __m256 {
    unsafe {
        if off + W <= k.len {
            i8x8(k.a.add(off))
        } else {
            let mut t = [0i8; W];
            core::ptr::copy_nonoverlapping(k.a.add(off), t.as_mut_ptr(), k.d - k.full);
            i8x8(t.as_ptr())
        }
    }
}

/// Lane vectors of `f32(a_r) . q` for the `R <= 4` rows `i..i + R` (entries
/// `R..4` zero): two FMA chains per row.
#[inline(always)]
unsafe fn i8_block<const R: usize>(k: I8Rows, i: usize) -> [__m256; KR] {
    unsafe {
        let z = _mm256_setzero_ps();
        let (mut s0, mut s1) = ([z; R], [z; R]);
        let p = k.a.add(i * k.d);
        let mut c = 0;
        while c + 2 * W <= k.full {
            let (y0, y1) = (ld(k.q.add(c)), ld(k.q.add(c + W)));
            for (r, (a0, a1)) in s0.iter_mut().zip(s1.iter_mut()).enumerate() {
                let row = p.add(r * k.d + c);
                *a0 = _mm256_fmadd_ps(i8x8(row), y0, *a0);
                *a1 = _mm256_fmadd_ps(i8x8(row.add(W)), y1, *a1);
            }
            c += 2 * W;
        }
        if c < k.full {
            let y = ld(k.q.add(c));
            for (r, a0) in s0.iter_mut().enumerate() {
                *a0 = _mm256_fmadd_ps(i8x8(p.add(r * k.d + c)), y, *a0);
            }
        }
        if k.full < k.d {
            let y = _mm256_maskload_ps(k.q.add(k.full), k.mask);
            for (r, a1) in s1.iter_mut().enumerate() {
                let x = tail_i8(k, (i + r) * k.d + k.full);
                *a1 = _mm256_fmadd_ps(x, y, *a1);
            }
        }
        let mut o = [z; KR];
        for (o, (a0, a1)) in o.iter_mut().zip(s0.iter().zip(&s1)) {
            *o = _mm256_add_ps(*a0, *a1);
        }
        o
    }
}

/// `e^t` for `t <= 0` (-inf included), 8 lanes: `t = r ln 2 + x` with
/// `r = round(t / ln 2)` and `|x| <= ln 2 / 2` (ln 2 split in two for an
/// exact reduction), `e^x ~ 1 + x + x^2 P5(x)` (the Taylor coefficients
/// 1/2 .. 1/5040, as `wide`), times `2^r` from the exponent bits; `t` below
/// -87.33 (`r < -126`) gives 0.
#[inline(always)]
#[allow(clippy::excessive_precision)] // fdlibm's f32 split of ln 2, as `wide`
unsafe fn exp_nonpos(t: __m256) -> __m256 {
    unsafe {
        let t = _mm256_max_ps(t, _mm256_set1_ps(-104.0));
        let r = _mm256_round_ps(
            _mm256_mul_ps(t, _mm256_set1_ps(core::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let x = _mm256_fnmadd_ps(r, _mm256_set1_ps(0.693359375), t);
        let x = _mm256_fnmadd_ps(r, _mm256_set1_ps(-2.12194440e-4), x);
        let mut z = _mm256_set1_ps(1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5f32] {
            z = _mm256_fmadd_ps(z, x, _mm256_set1_ps(c));
        }
        let z = _mm256_fmadd_ps(z, _mm256_mul_ps(x, x), x);
        let z = _mm256_add_ps(z, _mm256_set1_ps(1.0));
        let ri = _mm256_cvtps_epi32(r);
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(
            _mm256_add_epi32(ri, _mm256_set1_epi32(127)),
            23,
        ));
        let live = _mm256_cmp_ps(r, _mm256_set1_ps(-126.0), _CMP_GE_OQ);
        _mm256_and_ps(_mm256_mul_ps(z, pow2), live)
    }
}

/// `x_i <- e^(s (x_i - xmax))`, returns the sum (see [`Kernels::exp_shift`]).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_shift_imp(x: &mut [f32], s: f32, xmax: f32) -> f64 {
    let n = x.len();
    let xp = x.as_mut_ptr();
    // SAFETY: lanes i..i + 8 <= n, or masked past n.
    unsafe {
        let (sv, mv) = (_mm256_set1_ps(s), _mm256_set1_ps(xmax));
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + W <= n {
            let e = exp_nonpos(_mm256_mul_ps(_mm256_sub_ps(ld(xp.add(i)), mv), sv));
            st(xp.add(i), e);
            acc = _mm256_add_ps(acc, e);
            i += W;
        }
        if i < n {
            let mk = tail_mask(n - i);
            let v = _mm256_maskload_ps(xp.add(i), mk);
            let e = exp_nonpos(_mm256_mul_ps(_mm256_sub_ps(v, mv), sv));
            let e = _mm256_and_ps(e, _mm256_castsi256_ps(mk));
            _mm256_maskstore_ps(xp.add(i), mk, e);
            acc = _mm256_add_ps(acc, e);
        }
        hsum(acc) as f64
    }
}

/// bf16 -> f32 is `bits << 16`, with NaNs made quiet (`| 0x0040` first),
/// as `half::bf16::to_f32`.
#[inline(always)]
unsafe fn bf16x8(h: __m128i) -> __m256 {
    unsafe {
        let x = _mm256_cvtepu16_epi32(h);
        let abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7fff));
        let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f80));
        let q = _mm256_or_si256(x, _mm256_and_si256(nan, _mm256_set1_epi32(0x40)));
        _mm256_castsi256_ps(_mm256_slli_epi32(q, 16))
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bf16_to_f32_imp(src: &[u16], dst: &mut [f32]) {
    unsafe { convert(src, dst, |h| bf16x8(h)) }
}

/// Rows of C per register tile.
const MR: usize = 6;
/// Inner-dimension slice kept hot in cache.
const KC: usize = 256;

/// Pointers and strides of one tile product.
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    k: usize,
}

/// `C[0..R, 0..16] += A[0..R, 0..k] B[0..k, 0..16]` with the 16 columns
/// masked by `(m0, m1)` unless `FULL`: 2R ymm accumulators, one broadcast of
/// `a_ip` per row and two loads of `b_p` per step.
#[inline(always)]
unsafe fn tile<const R: usize, const FULL: bool>(t: Tile, m0: __m256i, m1: __m256i) {
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for p in 0..t.k {
            let bp = t.b.add(p * t.ldb);
            let (b0, b1) = if FULL {
                (ld(bp), ld(bp.add(W)))
            } else {
                (
                    _mm256_maskload_ps(bp, m0),
                    _mm256_maskload_ps(bp.add(W), m1),
                )
            };
            let ap = t.a.add(p * t.csa);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*ap.add(i * t.rsa));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let cp = t.c.add(i * t.ldc);
            if FULL {
                st(cp, _mm256_add_ps(ld(cp), row[0]));
                st(cp.add(W), _mm256_add_ps(ld(cp.add(W)), row[1]));
            } else {
                let c0 = _mm256_add_ps(_mm256_maskload_ps(cp, m0), row[0]);
                let c1 = _mm256_add_ps(_mm256_maskload_ps(cp.add(W), m1), row[1]);
                _mm256_maskstore_ps(cp, m0, c0);
                _mm256_maskstore_ps(cp.add(W), m1, c1);
            }
        }
    }
}

#[inline(always)]
unsafe fn tile_rows<const FULL: bool>(r: usize, t: Tile, m0: __m256i, m1: __m256i) {
    unsafe {
        match r {
            1 => tile::<1, FULL>(t, m0, m1),
            2 => tile::<2, FULL>(t, m0, m1),
            3 => tile::<3, FULL>(t, m0, m1),
            4 => tile::<4, FULL>(t, m0, m1),
            5 => tile::<5, FULL>(t, m0, m1),
            _ => tile::<6, FULL>(t, m0, m1),
        }
    }
}

/// Rows of A copied per panel when A is stored transposed.
const PR: usize = 48;
/// Inner-dimension slice of a copied panel (`PR x KP` floats = 12 KiB, L1).
const KP: usize = 64;

/// Block product (see [`Kernels::gemm`]): 6 x 16 register tiles; the inner
/// dimension in slices of 256 so a B slice stays in L2 while the row tiles
/// of A pass over it. A stored transposed (`rsa == 1`, the state update
/// `Phi_k^T V`) is first copied, 48 rows x 64 steps at a time, into a
/// contiguous panel (`panel[p][i]`, one vector copy per step), so the
/// broadcasts read one L1-resident block instead of 64 strided lines.
pub(super) fn gemm(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(g.fits(a.len(), b.len(), c.len()), "gemm shape {g:?}");
    // SAFETY: `fits` bounds every index below; only reachable through the
    // AVX2 and AVX-512 tables, handed out only when the CPU has AVX2 + FMA.
    unsafe { gemm_imp(g, a.as_ptr(), b.as_ptr(), c.as_mut_ptr()) }
}

/// Row tiles `i0..i1` of C over the inner slice `p0..p0 + kc`; row `i` of A
/// at `a + (i - i0) rsa`, step `p` at `+ p csa`.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a tile pass's pointers and strides
unsafe fn rows_pass(
    g: &Gemm,
    i1: usize,
    i0: usize,
    p0: usize,
    kc: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    c: *mut f32,
) {
    unsafe {
        let mut i = i0;
        while i < i1 {
            let r = (i1 - i).min(MR);
            let mut j0 = 0;
            while j0 < g.n {
                let w = (g.n - j0).min(2 * W);
                let t = Tile {
                    a: a.add((i - i0) * rsa),
                    rsa,
                    csa,
                    b: b.add(p0 * g.ldb + j0),
                    ldb: g.ldb,
                    c: c.add(i * g.ldc + j0),
                    ldc: g.ldc,
                    k: kc,
                };
                if w == 2 * W {
                    let z = _mm256_setzero_si256();
                    tile_rows::<true>(r, t, z, z);
                } else {
                    let m0 = tail_mask(w.min(W));
                    let m1 = tail_mask(w.saturating_sub(W));
                    tile_rows::<false>(r, t, m0, m1);
                }
                j0 += w;
            }
            i += r;
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_imp(g: &Gemm, a: *const f32, b: *const f32, c: *mut f32) {
    unsafe {
        let transposed = g.rsa == 1 && g.csa != 1;
        // Only the transposed case packs A, and rows_pass reads only the
        // packed entries: no zeroing (a zeroed panel per call was most of a
        // small product's time: m = 1, k = 16, the hybrid's value blocks).
        let mut panel = core::mem::MaybeUninit::<[f32; PR * KP]>::uninit();
        let panel = panel.as_mut_ptr() as *mut f32;
        let kmax = if transposed { KP } else { KC };
        let mut p0 = 0;
        while p0 < g.k {
            let kc = (g.k - p0).min(kmax);
            if !transposed {
                rows_pass(g, g.m, 0, p0, kc, a.add(p0 * g.csa), g.rsa, g.csa, b, c);
            } else {
                let mut i0 = 0;
                while i0 < g.m {
                    let r = (g.m - i0).min(PR);
                    for p in 0..kc {
                        let src = a.add(i0 + (p0 + p) * g.csa);
                        let dst = panel.add(p * PR);
                        let mut x = 0;
                        while x + W <= r {
                            st(dst.add(x), ld(src.add(x)));
                            x += W;
                        }
                        while x < r {
                            *dst.add(x) = *src.add(x);
                            x += 1;
                        }
                    }
                    rows_pass(g, i0 + r, i0, p0, kc, panel, 1, PR, b, c);
                    i0 += r;
                }
            }
            p0 += kc;
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn query_s_imp(s: &[f32], phiq: &[f32], acc: &mut [f32]) {
    let dv = acc.len();
    if dv == 0 {
        return;
    }
    let t = rows(dv, &[s.len()], &[phiq.len()]);
    let p = Pass {
        s: s.as_ptr(),
        phiq: phiq.as_ptr(),
        acc: acc.as_mut_ptr(),
        stride: dv,
        rows: t,
    };
    unsafe { pass(p) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn query_zs_imp(zs: &[f32], phiq: &[f32]) -> (f32, f32) {
    let n = zs.len().min(phiq.len());
    unsafe { zs_pass(zs.as_ptr(), phiq.as_ptr(), n) }
}
