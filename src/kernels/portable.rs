//! Portable kernels on `wide::f32x8` (8 lanes at whatever width the build's
//! target features give: SSE2 pairs on baseline x86-64, one AVX register with
//! `-C target-cpu=x86-64-v3`). Scalar tails handle every remainder.

use super::{u4_fixed, Gemm, Kernels, Level};
use crate::poly::FeatureMap;
use wide::f32x8;

/// The portable kernel table.
pub static KERNELS: Kernels = Kernels {
    level: Level::Portable,
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
    rec_buckets: super::recovery_portable::buckets,
    rec_signs: super::recovery_portable::signs,
    rec_token_slots: super::recovery_portable::token_slots,
    rec_scatter_add: super::recovery_portable::scatter_add,
    rec_project_dot: super::recovery_portable::project_dot,
    rec_median: super::recovery_portable::median,
    rec_top_k: super::recovery_portable::top_k,
};

const L: usize = 8;

#[inline(always)]
fn ld(x: &[f32]) -> f32x8 {
    let a: [f32; L] = x[..L].try_into().unwrap();
    f32x8::from(a)
}

#[inline(always)]
fn st(x: &mut [f32], v: f32x8) {
    x[..L].copy_from_slice(&v.to_array());
}

/// `dst = a * src` (equal lengths).
#[inline(always)]
fn scale_copy(a: f32, src: &[f32], dst: &mut [f32]) {
    let n = dst.len();
    let va = f32x8::splat(a);
    let mut i = 0;
    while i + L <= n {
        st(&mut dst[i..], va * ld(&src[i..]));
        i += L;
    }
    while i < n {
        dst[i] = a * src[i];
        i += 1;
    }
}

/// `out[..t] = x^a` (see [`FeatureMap`] for the order).
pub fn expand(map: &FeatureMap, x: &[f32], out: &mut [f32]) {
    let out = &mut out[..map.len()];
    out[0] = 1.0;
    map.for_each_copy(|i, src, dst, len| {
        // src block lies strictly before dst block.
        let (lo, hi) = out.split_at_mut(dst);
        scale_copy(x[i], &lo[src..src + len], &mut hi[..len]);
    });
}

/// `x[i] *= w[i] * alpha`.
pub fn weight(x: &mut [f32], w: &[f32], alpha: f32) {
    let n = x.len();
    let w = &w[..n];
    let va = f32x8::splat(alpha);
    let mut i = 0;
    while i + L <= n {
        let r = ld(&x[i..]) * (ld(&w[i..]) * va);
        st(&mut x[i..], r);
        i += L;
    }
    while i < n {
        x[i] *= w[i] * alpha;
        i += 1;
    }
}

/// `zd += phik`.
pub fn absorb_z(zd: &mut [f32], phik: &[f32]) {
    let n = zd.len();
    let phik = &phik[..n];
    let mut i = 0;
    while i + L <= n {
        let r = ld(&zd[i..]) + ld(&phik[i..]);
        st(&mut zd[i..], r);
        i += L;
    }
    while i < n {
        zd[i] += phik[i];
        i += 1;
    }
}

/// TwoSum: `s' = fl(s + d)`, `d' = (s + d) - s'` exactly.
pub fn flush(s: &mut [f32], d: &mut [f32]) {
    let n = s.len();
    let d = &mut d[..n];
    let mut i = 0;
    while i + L <= n {
        let (a, b) = (ld(&s[i..]), ld(&d[i..]));
        let sum = a + b;
        let bb = sum - a;
        let err = (a - (sum - bb)) + (b - bb);
        st(&mut s[i..], sum);
        st(&mut d[i..], err);
        i += L;
    }
    while i < n {
        let (a, b) = (s[i], d[i]);
        let sum = a + b;
        let bb = sum - a;
        d[i] = (a - (sum - bb)) + (b - bb);
        s[i] = sum;
        i += 1;
    }
}

/// `max |x_i|`; NaN and Inf propagate as +Inf.
pub fn max_abs(x: &[f32]) -> f32 {
    let mut m = 0.0f32;
    for &v in x {
        let a = v.abs();
        // `!(a <= m)` is true for NaN, so NaN turns into +Inf.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if !(a <= m) {
            m = if a.is_nan() { f32::INFINITY } else { a };
        }
    }
    m
}

/// binary16 -> f32 by `half`'s slice conversion (exact; it uses the
/// target's conversion instructions where the CPU has them: F16C on x86-64,
/// FP16 on AArch64, detected once per call, else software). A per-element
/// `to_f32` loop was 4-7x slower for the hybrid's binary16 value rows
/// (`cargo bench --bench hybrid`, portable level).
pub fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
    let n = src.len().min(dst.len());
    let h: &[half::f16] = src[..n].reinterpret_cast();
    h.convert_to_f32_slice(&mut dst[..n]);
}

/// `out[j] += sum_i w[i] f32(h[i dv + j])` (see [`Kernels::f16_rows`]):
/// [`weighted_rows`], each row segment converted by [`f16_to_f32`].
pub fn f16_rows(w: &[f32], h: &[u16], out: &mut [f32]) {
    assert!(h.len() >= w.len() * out.len(), "f16_rows: h too short");
    weighted_rows(w, h, out, f16_to_f32);
}

/// `out[j] += sum_i w[i] f32(a[i dv + j])` (see [`Kernels::i8_rows`]):
/// [`weighted_rows`], each row segment converted exactly (i8 -> f32).
pub fn i8_rows(w: &[f32], a: &[i8], out: &mut [f32]) {
    assert!(a.len() >= w.len() * out.len(), "i8_rows: a too short");
    weighted_rows(w, a, out, |src, dst| {
        dst.iter_mut()
            .zip(src)
            .for_each(|(d, &x)| *d = f32::from(x))
    });
}

/// `out[j] += sum_i w[i] f32(a[i dv + j])`, `dv = out.len()`: column blocks
/// of 64 held in eight `f32x8` accumulators while the rows stream by, each
/// row segment converted into an f32 buffer by `conv(src, dst)`. Needs
/// `a.len() >= w.len() dv`.
#[inline(always)]
fn weighted_rows<T: Copy>(w: &[f32], a: &[T], out: &mut [f32], conv: impl Fn(&[T], &mut [f32])) {
    const CB: usize = 64;
    let dv = out.len();
    let mut c0 = 0;
    while c0 < dv {
        let cw = CB.min(dv - c0);
        let nv = cw.div_ceil(8);
        let mut buf = [0.0f32; CB];
        let mut acc = [f32x8::ZERO; CB / 8];
        for (i, &wi) in w.iter().enumerate() {
            conv(&a[i * dv + c0..i * dv + c0 + cw], &mut buf[..cw]);
            let wv = f32x8::splat(wi);
            for (v, acc) in acc[..nv].iter_mut().enumerate() {
                let x: [f32; 8] = buf[v * 8..v * 8 + 8].try_into().unwrap();
                *acc = wv.mul_add(f32x8::from(x), *acc);
            }
        }
        for (v, acc) in acc[..nv].iter().enumerate() {
            for (l, &x) in acc.to_array().iter().enumerate() {
                if v * 8 + l < cw {
                    out[c0 + v * 8 + l] += x;
                }
            }
        }
        c0 += cw;
    }
}

/// `out[i] = a_i . q` (see [`Kernels::row_dots`]).
pub fn row_dots(a: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    key_rows::<false>(a, q, out)
}

/// `out[i] = |a_i - q|^2` (see [`Kernels::row_dists`]).
pub fn row_dists(a: &[f32], q: &[f32], out: &mut [f32]) {
    key_rows::<true>(a, q, out);
}

/// One pass of `row_dots` (`DIST` false: `a_i . q`) or `row_dists` (`|a_i -
/// q|^2`): eight `f32x8` lanes per row, the lanes summed, the remainder
/// added; returns the largest result.
#[inline(always)]
fn key_rows<const DIST: bool>(a: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    let d = q.len();
    assert!(a.len() >= out.len() * d, "row_dots/row_dists: a too short");
    let mut mx = f32::NEG_INFINITY;
    for (i, o) in out.iter_mut().enumerate() {
        let row = &a[i * d..(i + 1) * d];
        let mut acc = f32x8::ZERO;
        let (cr, cq) = (row.chunks_exact(8), q.chunks_exact(8));
        let (rr, rq) = (cr.remainder(), cq.remainder());
        for (x, y) in cr.zip(cq) {
            let x: [f32; 8] = x.try_into().unwrap();
            let y: [f32; 8] = y.try_into().unwrap();
            let (x, y) = (f32x8::from(x), f32x8::from(y));
            acc = if DIST {
                (x - y).mul_add(x - y, acc)
            } else {
                x.mul_add(y, acc)
            };
        }
        let mut v = acc.reduce_add();
        for (x, y) in rr.iter().zip(rq) {
            v += if DIST { (x - y) * (x - y) } else { x * y };
        }
        *o = v;
        mx = mx.max(v);
    }
    mx
}

/// `out[i] = scale[i] (f32(a_i) . q)` (see [`Kernels::i16_row_dots`]): as
/// [`row_dots`], eight `f32x8` lanes per row (each chunk of 8 int16 values
/// converted exactly to f32), the lanes summed, the remainder added, then one
/// multiply by the row's scale; returns the largest result.
pub fn i16_row_dots(a: &[i16], scale: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    let d = q.len();
    let n = out.len();
    assert!(a.len() >= n * d, "i16_row_dots: a too short");
    assert!(scale.len() >= n, "i16_row_dots: scale too short");
    let mut mx = f32::NEG_INFINITY;
    for (i, (o, &s)) in out.iter_mut().zip(scale).enumerate() {
        let row = &a[i * d..(i + 1) * d];
        let mut acc = f32x8::ZERO;
        let (cr, cq) = (row.chunks_exact(8), q.chunks_exact(8));
        let (rr, rq) = (cr.remainder(), cq.remainder());
        for (x, y) in cr.zip(cq) {
            let x: [f32; 8] = core::array::from_fn(|l| x[l] as f32);
            let y: [f32; 8] = y.try_into().unwrap();
            acc = f32x8::from(x).mul_add(f32x8::from(y), acc);
        }
        let mut v = acc.reduce_add();
        for (&x, &y) in rr.iter().zip(rq) {
            v += x as f32 * y;
        }
        let v = s * v;
        *o = v;
        mx = mx.max(v);
    }
    mx
}

/// `x_i <- e^(s (x_i - xmax))`, returns the sum (see
/// [`Kernels::exp_shift`]): `wide`'s vector exp on eight lanes.
pub fn exp_shift(x: &mut [f32], s: f32, xmax: f32) -> f64 {
    let (sv, mv) = (f32x8::splat(s), f32x8::splat(xmax));
    let mut acc = f32x8::ZERO;
    let mut chunks = x.chunks_exact_mut(8);
    for ch in &mut chunks {
        let v: [f32; 8] = (&*ch).try_into().unwrap();
        let e = ((f32x8::from(v) - mv) * sv).exp();
        ch.copy_from_slice(&e.to_array());
        acc += e;
    }
    let mut sum = acc.reduce_add() as f64;
    for v in chunks.into_remainder() {
        *v = ((*v - xmax) * s).exp();
        sum += *v as f64;
    }
    sum
}

/// bfloat16 -> f32 via `half`.
pub fn bf16_to_f32(src: &[u16], dst: &mut [f32]) {
    for (o, &h) in dst.iter_mut().zip(src) {
        *o = half::bf16::from_bits(h).to_f32();
    }
}

/// Block product `C += A B` (see [`Kernels::gemm`]): per row `i` of C, the
/// row `sum_p a_ip b_p` is accumulated in a zeroed scratch strip of up to 64
/// columns and then added to C.
pub fn gemm(g: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(g.fits(a.len(), b.len(), c.len()), "gemm shape {g:?}");
    const NS: usize = 64;
    let mut strip = [0.0f32; NS];
    for i in 0..g.m {
        let mut j0 = 0;
        while j0 < g.n {
            let w = (g.n - j0).min(NS);
            let acc = &mut strip[..w];
            acc.fill(0.0);
            for p in 0..g.k {
                let aip = f32x8::splat(a[i * g.rsa + p * g.csa]);
                let brow = &b[p * g.ldb + j0..p * g.ldb + j0 + w];
                let mut j = 0;
                while j + L <= w {
                    let x = ld(&acc[j..]) + aip * ld(&brow[j..]);
                    st(&mut acc[j..], x);
                    j += L;
                }
                let s = a[i * g.rsa + p * g.csa];
                while j < w {
                    acc[j] += s * brow[j];
                    j += 1;
                }
            }
            for (o, &x) in c[i * g.ldc + j0..i * g.ldc + j0 + w]
                .iter_mut()
                .zip(acc.iter())
            {
                *o += x;
            }
            j0 += w;
        }
    }
}

/// `acc += sum_i phiq_i s_i`.
pub fn query_s(s: &[f32], phiq: &[f32], acc: &mut [f32]) {
    let dv = acc.len();
    for (srow, &b) in s.chunks_exact(dv).zip(phiq) {
        let vb = f32x8::splat(b);
        let mut c = 0;
        while c + L <= dv {
            let r = vb.mul_add(ld(&srow[c..]), ld(&acc[c..]));
            st(&mut acc[c..], r);
            c += L;
        }
        while c < dv {
            acc[c] = b.mul_add(srow[c], acc[c]);
            c += 1;
        }
    }
}

/// `(sum_i phiq_i zs_i, sum_i |phiq_i zs_i|)`.
pub fn query_zs(zs: &[f32], phiq: &[f32]) -> (f32, f32) {
    let n = zs.len().min(phiq.len());
    let mut den = f32x8::ZERO;
    let mut mag = f32x8::ZERO;
    let mut i = 0;
    while i + L <= n {
        let term = ld(&phiq[i..]) * ld(&zs[i..]);
        den += term;
        mag += term.abs();
        i += L;
    }
    let mut den_s = den.reduce_add();
    let mut mag_s = mag.reduce_add();
    while i < n {
        let term = phiq[i] * zs[i];
        den_s += term;
        mag_s += term.abs();
        i += 1;
    }
    (den_s, mag_s)
}

/// Channels per 4-bit group (see [`Kernels::u4_row_dots`]).
const U4G: usize = 32;

/// The 32 codes of one 16-byte group in channel order.
#[inline(always)]
fn u4_unpack(b: &[u8], out: &mut [f32; U4G]) {
    for t in 0..U4G / 2 {
        out[t] = (b[t] & 15) as f32;
        out[t + U4G / 2] = (b[t] >> 4) as f32;
    }
}

/// `out[i] = 2^e sum_c qi_c code(a_i, c)` (see [`Kernels::u4_row_dots`]
/// and `u4_fixed`): the query in fixed point once, then each row's exact
/// i32 sum, converted and scaled.
pub fn u4_row_dots(a: &[u8], q: &[f32], out: &mut [f32]) {
    let d = q.len();
    let rb = d / 2;
    assert!(d.is_multiple_of(U4G), "u4_row_dots: d not a multiple of 32");
    assert!(d <= u4_fixed::MAX_D, "u4_row_dots: d above 4096");
    assert!(a.len() >= out.len() * rb, "u4_row_dots: a too short");
    // A small buffer for the usual head sizes: zeroing 8 KiB per call (per
    // page of 32 rows) would cost as much as the rows.
    if d <= 256 {
        u4_row_dots_with(a, q, out, &mut [0i16; 256]);
    } else {
        u4_row_dots_with(a, q, out, &mut [0i16; u4_fixed::MAX_D]);
    }
}

/// The body of [`u4_row_dots`] with the fixed-point query in `qi` (at
/// least `q.len()` elements).
fn u4_row_dots_with(a: &[u8], q: &[f32], out: &mut [f32], qi: &mut [i16]) {
    let rb = q.len() / 2;
    let qi = &mut qi[..q.len()];
    let m = q.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
    let (s, inv) = u4_fixed::scale(m);
    for (o, &x) in qi.iter_mut().zip(q) {
        *o = u4_fixed::quantize(x, inv) as i16;
    }
    for (i, o) in out.iter_mut().enumerate() {
        let row = &a[i * rb..(i + 1) * rb];
        let mut acc = 0i32;
        for (b, qg) in row.chunks_exact(U4G / 2).zip(qi.chunks_exact(U4G)) {
            for t in 0..U4G / 2 {
                acc +=
                    (b[t] & 15) as i32 * qg[t] as i32 + (b[t] >> 4) as i32 * qg[t + U4G / 2] as i32;
            }
        }
        *o = acc as f32 * s;
    }
}

/// `out[c] += sum_i w[i G + c / 32] code(a_i, c)` (see [`Kernels::u4_rows`]):
/// the 32 columns of a group in four `f32x8` accumulators while the rows
/// stream by.
pub fn u4_rows(w: &[f32], a: &[u8], out: &mut [f32]) {
    let dv = out.len();
    assert!(dv.is_multiple_of(U4G), "u4_rows: dv not a multiple of 32");
    let groups = dv / U4G;
    let m = w.len() / groups.max(1);
    let rb = dv / 2;
    assert!(a.len() >= m * rb, "u4_rows: a too short");
    let mut buf = [0.0f32; U4G];
    for g in 0..groups {
        let mut acc = [f32x8::ZERO; U4G / L];
        for i in 0..m {
            u4_unpack(&a[i * rb + g * U4G / 2..], &mut buf);
            let wv = f32x8::splat(w[i * groups + g]);
            for (v, acc) in acc.iter_mut().enumerate() {
                *acc = wv.mul_add(ld(&buf[v * L..]), *acc);
            }
        }
        for (v, acc) in acc.iter().enumerate() {
            let o = &mut out[g * U4G + v * L..g * U4G + (v + 1) * L];
            st(o, ld(o) + *acc);
        }
    }
}

/// Queries per block of the portable multi-query 4-bit kernels.
const U4MB: usize = 8;

/// `out[i n + t] = 2^e_i sum_c qi_ic code(a_t, c)` (see
/// [`Kernels::u4_row_dots_multi`]): one [`u4_row_dots`] per query (exact
/// integer sums: the same bits however the rows are blocked).
pub fn u4_row_dots_multi(a: &[u8], q: &[f32], d: usize, out: &mut [f32]) {
    let (m, n) = super::u4_multi_dots_shape(a.len(), q.len(), d, out.len());
    for i in 0..m {
        u4_row_dots(a, &q[i * d..(i + 1) * d], &mut out[i * n..(i + 1) * n]);
    }
}

/// `out[i dv + c] += sum_t w[i n G + t G + c / 32] code(a_t, c)` (see
/// [`Kernels::u4_rows_multi`]): per group, weight sets in blocks of up to
/// 8, each with the four `f32x8` accumulators of [`u4_rows`]; per row the
/// group's codes unpacked once for the block (bitwise as the single kernel).
pub fn u4_rows_multi(w: &[f32], a: &[u8], dv: usize, out: &mut [f32]) {
    let (m, n) = super::u4_multi_rows_shape(w.len(), a.len(), dv, out.len());
    let groups = dv / U4G;
    let (rb, ws) = (dv / 2, n * groups);
    let mut buf = [0.0f32; U4G];
    for g in 0..groups {
        let mut i0 = 0;
        while i0 < m {
            let mb = (m - i0).min(U4MB);
            let mut acc = [[f32x8::ZERO; U4G / L]; U4MB];
            for t in 0..n {
                u4_unpack(&a[t * rb + g * U4G / 2..], &mut buf);
                for (j, acc) in acc[..mb].iter_mut().enumerate() {
                    let wv = f32x8::splat(w[(i0 + j) * ws + t * groups + g]);
                    for (v, acc) in acc.iter_mut().enumerate() {
                        *acc = wv.mul_add(ld(&buf[v * L..]), *acc);
                    }
                }
            }
            for (j, acc) in acc[..mb].iter().enumerate() {
                let o = &mut out[(i0 + j) * dv + g * U4G..];
                for (v, acc) in acc.iter().enumerate() {
                    let o = &mut o[v * L..(v + 1) * L];
                    st(o, ld(o) + *acc);
                }
            }
            i0 += mb;
        }
    }
}

/// `out[i] = scale[i] (f32(a_i) . q)` (see [`Kernels::i8_row_dots`]): as
/// [`i16_row_dots`] with int8 rows.
pub fn i8_row_dots(a: &[i8], scale: &[f32], q: &[f32], out: &mut [f32]) -> f32 {
    let d = q.len();
    let n = out.len();
    assert!(a.len() >= n * d, "i8_row_dots: a too short");
    assert!(scale.len() >= n, "i8_row_dots: scale too short");
    let mut mx = f32::NEG_INFINITY;
    for (i, (o, &s)) in out.iter_mut().zip(scale).enumerate() {
        let row = &a[i * d..(i + 1) * d];
        let mut acc = f32x8::ZERO;
        let (cr, cq) = (row.chunks_exact(8), q.chunks_exact(8));
        let (rr, rq) = (cr.remainder(), cq.remainder());
        for (x, y) in cr.zip(cq) {
            let x: [f32; 8] = core::array::from_fn(|l| x[l] as f32);
            let y: [f32; 8] = y.try_into().unwrap();
            acc = f32x8::from(x).mul_add(f32x8::from(y), acc);
        }
        let mut v = acc.reduce_add();
        for (&x, &y) in rr.iter().zip(rq) {
            v += x as f32 * y;
        }
        let v = s * v;
        *o = v;
        mx = mx.max(v);
    }
    mx
}
