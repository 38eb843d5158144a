//! AVX-512 F/VL/BW kernels (16 f32 lanes, 32 zmm registers, lane masks).
//!
//! Same structure as `avx2` (read its module doc): column blocks of up to
//! 128 columns (8 zmm) keep `acc` in registers while the rows of M stream
//! by. Every remainder is one masked vector (no scalar tails). Entry
//! points are private and reachable only through [`KERNELS`], which
//! `Kernels::for_level` hands out only when the CPU has AVX-512 F/VL/BW
//! (and AVX2/FMA/F16C).

/// The block product is the AVX2 one: every AVX-512 CPU has AVX2 + FMA, and
/// on the Zen 4 development machine a 512-bit FMA runs at the rate of two
/// 256-bit ones, so a zmm tile would not be faster there (docs/simd.md).
use super::avx2::gemm;
/// The compact-format kernels (4-bit code rows single and multi-query,
/// int8 key rows) are the AVX2 ones too: every CPU the AVX-512 level accepts has AVX2 + FMA + F16C, and
/// no AVX-512 version has been run yet (the machine they were written on has
/// no AVX-512; docs/simd.md).
use super::avx2::{i8_row_dots, u4_row_dots, u4_row_dots_multi, u4_rows, u4_rows_multi};
use super::{Kernels, Level};
use crate::poly::FeatureMap;
use core::arch::x86_64::*;

/// The AVX-512 kernel table.
pub(super) static KERNELS: Kernels = Kernels {
    level: Level::Avx512,
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
    rec_buckets: super::recovery_avx512::buckets,
    rec_signs: super::recovery_avx512::signs,
    rec_token_slots: super::recovery_avx512::token_slots,
    rec_scatter_add: super::recovery_avx512::scatter_add,
    rec_project_dot: super::recovery_avx512::project_dot,
    rec_median: super::recovery_avx512::median,
    rec_top_k: super::recovery_avx512::top_k,
};

/// Lanes per vector.
const W: usize = 16;
/// Vectors per column block.
const NB: usize = 8;

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
unsafe fn ld(p: *const f32) -> __m512 {
    unsafe { _mm512_loadu_ps(p) }
}
#[inline(always)]
unsafe fn st(p: *mut f32, x: __m512) {
    unsafe { _mm512_storeu_ps(p, x) }
}
/// Masked load; lanes outside `k` read as 0 and touch no memory.
#[inline(always)]
unsafe fn ldm(p: *const f32, k: __mmask16) -> __m512 {
    unsafe { _mm512_maskz_loadu_ps(k, p) }
}
#[inline(always)]
unsafe fn stm(p: *mut f32, k: __mmask16, x: __m512) {
    unsafe { _mm512_mask_storeu_ps(p, k, x) }
}

/// Mask of the first `n <= 16` lanes.
#[inline(always)]
fn mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// Applies `f(offset, mask)` over `0..n` in steps of 16; the last step masked.
#[inline(always)]
unsafe fn each(n: usize, mut f: impl FnMut(usize, __mmask16)) {
    let mut i = 0;
    while i + W <= n {
        f(i, 0xffff);
        i += W;
    }
    if i < n {
        f(i, mask(n - i));
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn expand_imp(map: &FeatureMap, x: &[f32], out: &mut [f32]) {
    let t = map.len();
    assert!(out.len() >= t && x.len() >= map.dim());
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr());
    // SAFETY: every copy reads and writes inside out[..t]; src lies before dst.
    unsafe {
        *op = 1.0;
        map.for_each_copy(|i, src, dst, len| {
            let va = _mm512_set1_ps(*xp.add(i));
            let (s, d) = (op.add(src), op.add(dst));
            each(len, |j, k| {
                stm(d.add(j), k, _mm512_mul_ps(va, ldm(s.add(j), k)))
            });
        });
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn weight_imp(x: &mut [f32], w: &[f32], alpha: f32) {
    let n = x.len().min(w.len());
    let (xp, wp) = (x.as_mut_ptr(), w.as_ptr());
    unsafe {
        let va = _mm512_set1_ps(alpha);
        each(n, |i, k| {
            let r = _mm512_mul_ps(ldm(xp.add(i), k), _mm512_mul_ps(ldm(wp.add(i), k), va));
            stm(xp.add(i), k, r)
        });
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
unsafe fn block<const N: usize, const TAIL: bool>(p: Pass, k: __mmask16) {
    unsafe {
        let z = _mm512_setzero_ps();
        let mut aa = [z; N];
        let mut at = z;
        for (j, a) in aa.iter_mut().enumerate() {
            *a = ld(p.acc.add(j * W));
        }
        if TAIL {
            at = ldm(p.acc.add(N * W), k);
        }
        let mut sp = p.s;
        for i in 0..p.rows {
            let b = _mm512_set1_ps(*p.phiq.add(i));
            for (j, a) in aa.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(b, ld(sp.add(j * W)), *a);
            }
            if TAIL {
                at = _mm512_fmadd_ps(b, ldm(sp.add(N * W), k), at);
            }
            sp = sp.add(p.stride);
        }
        for (j, a) in aa.iter().enumerate() {
            st(p.acc.add(j * W), *a);
        }
        if TAIL {
            stm(p.acc.add(N * W), k, at);
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
            let k = mask(rem);
            macro_rules! go {
                ($($n:literal)*) => {
                    match (n, rem != 0) {
                        $(
                            ($n, false) => block::<$n, false>(q, k),
                            ($n, true) => block::<$n, true>(q, k),
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
        let (mut den, mut mag) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i < n {
            let k = if i + W <= n { 0xffff } else { mask(n - i) };
            let term = _mm512_mul_ps(ldm(phiq.add(i), k), ldm(zs.add(i), k));
            den = _mm512_add_ps(den, term);
            mag = _mm512_add_ps(mag, _mm512_abs_ps(term));
            i += W;
        }
        (_mm512_reduce_add_ps(den), _mm512_reduce_add_ps(mag))
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn absorb_z_imp(zd: &mut [f32], phik: &[f32]) {
    let n = zd.len().min(phik.len());
    let (zp, kp) = (zd.as_mut_ptr(), phik.as_ptr());
    unsafe {
        each(n, |i, k| {
            stm(
                zp.add(i),
                k,
                _mm512_add_ps(ldm(zp.add(i), k), ldm(kp.add(i), k)),
            )
        })
    }
}

/// TwoSum, elementwise; never contracted into FMAs (bitwise equal to `portable`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn flush_imp(s: &mut [f32], d: &mut [f32]) {
    let n = s.len().min(d.len());
    let (sp, dp) = (s.as_mut_ptr(), d.as_mut_ptr());
    unsafe {
        each(n, |i, k| {
            let (a, b) = (ldm(sp.add(i), k), ldm(dp.add(i), k));
            let sum = _mm512_add_ps(a, b);
            let bb = _mm512_sub_ps(sum, a);
            let err = _mm512_add_ps(
                _mm512_sub_ps(a, _mm512_sub_ps(sum, bb)),
                _mm512_sub_ps(b, bb),
            );
            stm(sp.add(i), k, sum);
            stm(dp.add(i), k, err);
        });
    }
}

/// `max |x_i|`; any NaN gives +Inf (as `portable`).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn max_abs_imp(x: &[f32]) -> f32 {
    let xp = x.as_ptr();
    unsafe {
        let mut m = _mm512_setzero_ps();
        let mut nan: __mmask16 = 0;
        each(x.len(), |i, k| {
            let v = ldm(xp.add(i), k);
            m = _mm512_max_ps(m, _mm512_abs_ps(v));
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        });
        if nan != 0 {
            f32::INFINITY
        } else {
            _mm512_reduce_max_ps(m)
        }
    }
}

/// `out[j] += sum_i w[i] f32(h[i dv + j])` (see [`Kernels::f16_rows`]):
/// [`weighted_rows`] with one 32-byte load and one `vcvtph2ps` per 16
/// values.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn f16_rows_imp(w: &[f32], h: &[u16], out: &mut [f32]) {
    assert!(h.len() >= w.len() * out.len(), "f16_rows: h too short");
    // SAFETY: the length is checked.
    unsafe { weighted_rows(w, h, out) }
}

/// `out[j] += sum_i w[i] f32(a[i dv + j])` (see [`Kernels::i8_rows`]):
/// [`weighted_rows`] with one 16-byte load, one `vpmovsxbd` and one
/// `vcvtdq2ps` (exact) per 16 values.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn i8_rows_imp(w: &[f32], a: &[i8], out: &mut [f32]) {
    assert!(a.len() >= w.len() * out.len(), "i8_rows: a too short");
    // SAFETY: the length is checked.
    unsafe { weighted_rows(w, a, out) }
}

/// Row elements that load as 16 f32 lanes.
trait Lanes: Copy {
    /// The lanes of `k` at `p` as f32 (exact), the others 0; masked lanes
    /// touch no memory.
    unsafe fn lanes(k: __mmask16, p: *const Self) -> __m512;
}

impl Lanes for u16 {
    #[inline(always)]
    unsafe fn lanes(k: __mmask16, p: *const u16) -> __m512 {
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p as *const i16)) }
    }
}

impl Lanes for i8 {
    #[inline(always)]
    unsafe fn lanes(k: __mmask16, p: *const i8) -> __m512 {
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, p))) }
    }
}

/// `out[j] += sum_i w[i] f32(a[i dv + j])`, `dv = out.len()`: column blocks
/// of up to 128 (8 zmm accumulators) while the rows stream by, one FMA per
/// 16 values; the last vector of a block is masked. Needs `a.len() >=
/// w.len() dv`.
#[inline(always)]
unsafe fn weighted_rows<T: Lanes>(w: &[f32], a: &[T], out: &mut [f32]) {
    let dv = out.len();
    let (ap, op) = (a.as_ptr(), out.as_mut_ptr());
    let mut c0 = 0;
    while c0 < dv {
        let cw = (NB * W).min(dv - c0);
        // SAFETY: rows i < w.len() of a span i dv + c0 .. + cw <= a.len();
        // out spans c0 .. c0 + cw <= dv; lanes past cw are masked.
        unsafe {
            let (ac, oc) = (ap.add(c0), op.add(c0));
            by_vectors!(cw.div_ceil(W), rows_block::<T>(w, ac, dv, cw, oc));
        }
        c0 += cw;
    }
}

/// One column block of [`weighted_rows`]: `N = ceil(cw / 16)` accumulators,
/// the last one under the mask of the `cw - 16 (N - 1)` live lanes.
#[inline(always)]
unsafe fn rows_block<T: Lanes, const N: usize>(
    w: &[f32],
    a: *const T,
    dv: usize,
    cw: usize,
    out: *mut f32,
) {
    unsafe {
        let last = mask(cw - W * (N - 1));
        let k = |v: usize| if v + 1 < N { 0xffff } else { last };
        let mut acc = [_mm512_setzero_ps(); N];
        for (i, &wi) in w.iter().enumerate() {
            let wv = _mm512_set1_ps(wi);
            let row = a.add(i * dv);
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = _mm512_fmadd_ps(wv, T::lanes(k(v), row.add(v * W)), *acc);
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            let p = out.add(v * W);
            stm(p, k(v), _mm512_add_ps(ldm(p, k(v)), *acc));
        }
    }
}

/// `out[i] = a_i . q` (see [`Kernels::row_dots`]).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn row_dots_imp(a: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    unsafe { key_rows::<false>(a, q, out) }
}

/// `out[i] = |a_i - q|^2` (see [`Kernels::row_dists`]).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn row_dists_imp(a: &[f32], q: &[f32], out: &mut [f32]) {
    unsafe { key_rows::<true>(a, q, out) };
}

/// `acc + x y` (`DIST` false) or `acc + (x - y)^2`, one FMA.
#[inline(always)]
unsafe fn step<const DIST: bool>(x: __m512, y: __m512, acc: __m512) -> __m512 {
    unsafe {
        if DIST {
            let t = _mm512_sub_ps(x, y);
            _mm512_fmadd_ps(t, t, acc)
        } else {
            _mm512_fmadd_ps(x, y, acc)
        }
    }
}

/// `row_dots` / `row_dists`: two FMA chains per row over 32 columns at a
/// time, the last `d mod 16` columns masked (zero in both operands);
/// returns the largest result.
#[inline(always)]
unsafe fn key_rows<const DIST: bool>(a: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    let d = q.len();
    assert!(a.len() >= out.len() * d, "row_dots/row_dists: a too short");
    let full = d / W * W;
    let (ap, qp) = (a.as_ptr(), q.as_ptr());
    let mk = mask(d - full);
    let mut mx = f32::NEG_INFINITY;
    // SAFETY: row i spans a[i d .. (i + 1) d] <= a.len(); masked lanes past
    // d touch no memory.
    unsafe {
        for (i, o) in out.iter_mut().enumerate() {
            let p = ap.add(i * d);
            let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
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
                s1 = step::<DIST>(ldm(p.add(full), mk), ldm(qp.add(full), mk), s1);
            }
            let v = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
            *o = v;
            mx = mx.max(v);
        }
    }
    mx
}

/// Int16 rows per pass of `i16_row_dots`.
const KR: usize = 4;

/// `out[i] = scale[i] (f32(a_i) . q)` (see [`Kernels::i16_row_dots`]): four
/// rows per pass, each with two FMA chains over 32 columns at a time (a
/// 32-byte load, `vpmovsxwd`, `vcvtdq2ps` and one FMA per 16 values; the
/// exact i16 -> f32 conversion), the last `d mod 16` columns one masked
/// vector (`vmovdqu16` with a zeroing mask, zero in both operands); the four
/// sums reduced together, times the four scales, stored as one vector.
/// Leftover rows (`< 4`) take the same path with zero rows, so a row's
/// result does not depend on its position. Returns the largest result.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn i16_row_dots_imp(a: &[i16], scale: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    let d = q.len();
    let n = out.len();
    assert!(a.len() >= n * d, "i16_row_dots: a too short");
    assert!(scale.len() >= n, "i16_row_dots: scale too short");
    let full = d / W * W;
    let (sp, op) = (scale.as_ptr(), out.as_mut_ptr());
    let k = I16Rows {
        a: a.as_ptr(),
        d,
        q: q.as_ptr(),
        full,
        mask: mask(d - full),
    };
    // SAFETY: rows i < n span a[i d .. (i + 1) d] <= a.len(); scale and out
    // are read / written at i < n <= len; masked lanes past d touch no memory.
    unsafe { scaled_rows_by_4!(k, n, sp, op, i16_block) }
}

/// Pointers and shape of one `i16_row_dots` call.
#[derive(Clone, Copy)]
struct I16Rows {
    a: *const i16,
    /// Row length and stride.
    d: usize,
    q: *const f32,
    /// `d` rounded down to a multiple of 16.
    full: usize,
    /// Lanes `< d - full` of the tail vector.
    mask: __mmask16,
}

/// 16 int16 at `p` (lanes outside `k` read as 0, touching no memory) as 16
/// f32 (exact).
#[inline(always)]
unsafe fn cvt_i16(p: *const i16, k: __mmask16) -> __m512 {
    unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(k, p))) }
}

/// Lane vectors of `f32(a_r) . q` for the `R <= 4` rows `i..i + R` (entries
/// `R..4` zero): two FMA chains per row.
#[inline(always)]
unsafe fn i16_block<const R: usize>(k: I16Rows, i: usize) -> [__m512; KR] {
    unsafe {
        let z = _mm512_setzero_ps();
        let (mut s0, mut s1) = ([z; R], [z; R]);
        let p = k.a.add(i * k.d);
        let mut c = 0;
        while c + 2 * W <= k.full {
            let (y0, y1) = (ld(k.q.add(c)), ld(k.q.add(c + W)));
            for (r, (a0, a1)) in s0.iter_mut().zip(s1.iter_mut()).enumerate() {
                let row = p.add(r * k.d + c);
                *a0 = _mm512_fmadd_ps(cvt_i16(row, 0xffff), y0, *a0);
                *a1 = _mm512_fmadd_ps(cvt_i16(row.add(W), 0xffff), y1, *a1);
            }
            c += 2 * W;
        }
        if c < k.full {
            let y = ld(k.q.add(c));
            for (r, a0) in s0.iter_mut().enumerate() {
                *a0 = _mm512_fmadd_ps(cvt_i16(p.add(r * k.d + c), 0xffff), y, *a0);
            }
        }
        if k.full < k.d {
            let y = ldm(k.q.add(k.full), k.mask);
            for (r, a1) in s1.iter_mut().enumerate() {
                let x = cvt_i16(p.add(r * k.d + k.full), k.mask);
                *a1 = _mm512_fmadd_ps(x, y, *a1);
            }
        }
        let mut o = [z; KR];
        for (o, (a0, a1)) in o.iter_mut().zip(s0.iter().zip(&s1)) {
            *o = _mm512_add_ps(*a0, *a1);
        }
        o
    }
}

/// Low plus high 8 lanes (AVX-512F only: no DQ for `vextractf32x8`).
#[inline(always)]
unsafe fn fold8(v: __m512) -> __m256 {
    unsafe {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
        _mm256_add_ps(_mm512_castps512_ps256(v), hi)
    }
}

/// The lane sums of four vectors, as one 4-lane vector: each folded to 8
/// lanes, then `vhaddps` as in the AVX2 level. (No closure here: a closure
/// does not inherit the caller's target features, see docs/simd.md.)
#[inline(always)]
unsafe fn hsum4(x: [__m512; KR]) -> __m128 {
    unsafe {
        let t01 = _mm256_hadd_ps(fold8(x[0]), fold8(x[1]));
        let t23 = _mm256_hadd_ps(fold8(x[2]), fold8(x[3]));
        let t = _mm256_hadd_ps(t01, t23);
        _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t))
    }
}

/// `e^t` for `t <= 0`, 16 lanes: the AVX2 level's `exp_nonpos` (same
/// reduction, polynomial and cut-off) on zmm registers.
#[inline(always)]
#[allow(clippy::excessive_precision)] // fdlibm's f32 split of ln 2, as `wide`
unsafe fn exp_nonpos(t: __m512) -> __m512 {
    unsafe {
        let t = _mm512_max_ps(t, _mm512_set1_ps(-104.0));
        let r = _mm512_roundscale_ps(
            _mm512_mul_ps(t, _mm512_set1_ps(core::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let x = _mm512_fnmadd_ps(r, _mm512_set1_ps(0.693359375), t);
        let x = _mm512_fnmadd_ps(r, _mm512_set1_ps(-2.12194440e-4), x);
        let mut z = _mm512_set1_ps(1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5f32] {
            z = _mm512_fmadd_ps(z, x, _mm512_set1_ps(c));
        }
        let z = _mm512_fmadd_ps(z, _mm512_mul_ps(x, x), x);
        let z = _mm512_add_ps(z, _mm512_set1_ps(1.0));
        let ri = _mm512_cvtps_epi32(r);
        let pow2 = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_add_epi32(ri, _mm512_set1_epi32(127)),
            23,
        ));
        let live = _mm512_cmp_ps_mask(r, _mm512_set1_ps(-126.0), _CMP_GE_OQ);
        _mm512_maskz_mul_ps(live, z, pow2)
    }
}

/// `x_i <- e^(s (x_i - xmax))`, returns the sum (see [`Kernels::exp_shift`]).
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn exp_shift_imp(x: &mut [f32], s: f32, xmax: f32) -> f64 {
    let n = x.len();
    let xp = x.as_mut_ptr();
    // SAFETY: lanes past n are masked (no memory touched).
    unsafe {
        let (sv, mv) = (_mm512_set1_ps(s), _mm512_set1_ps(xmax));
        let mut acc = _mm512_setzero_ps();
        each(n, |i, k| {
            let v = ldm(xp.add(i), k);
            let e = _mm512_maskz_mov_ps(k, exp_nonpos(_mm512_mul_ps(_mm512_sub_ps(v, mv), sv)));
            stm(xp.add(i), k, e);
            acc = _mm512_add_ps(acc, e);
        });
        _mm512_reduce_add_ps(acc) as f64
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn f16_to_f32_imp(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    unsafe {
        each(n, |i, k| {
            let h = _mm256_maskz_loadu_epi16(k, sp.add(i) as *const i16);
            stm(dp.add(i), k, _mm512_cvtph_ps(h));
        });
    }
}

/// bf16 -> f32: `bits << 16`, NaNs made quiet (`| 0x0040` first), as `half`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn bf16_to_f32_imp(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    unsafe {
        each(n, |i, k| {
            let h = _mm256_maskz_loadu_epi16(k, sp.add(i) as *const i16);
            let x = _mm512_cvtepu16_epi32(h);
            let abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7fff));
            let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80));
            let q = _mm512_mask_or_epi32(x, nan, x, _mm512_set1_epi32(0x40));
            stm(
                dp.add(i),
                k,
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(q)),
            );
        });
    }
}

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
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

#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma,f16c")]
unsafe fn query_zs_imp(zs: &[f32], phiq: &[f32]) -> (f32, f32) {
    let n = zs.len().min(phiq.len());
    unsafe { zs_pass(zs.as_ptr(), phiq.as_ptr(), n) }
}
