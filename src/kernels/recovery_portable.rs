//! Portable recovery kernels (the math of each is on its `Kernels` field).
//!
//! - Hashes: scalar `u128` arithmetic, as `recovery::hash` (one `mul` per
//!   64x64 product; `wide` 1.7 exposes no 32x32->64 widening lane multiply,
//!   so a vector version would be four emulated multiplies per product).
//! - `scatter_add`: the scalar loop (LLVM vectorizes it); `project_dot`:
//!   f64 products in 8 partial sums on `wide::f64x4`.
//! - `median`: four groups at a time, a comparator network
//!   (`sort_network`) on total-order keys with scalar `i64` min/max
//!   (branch-free; `wide::i64x4` compares are emulated without SSE4.2 and
//!   measured 2x slower).
//! - `top_k`: heap driver of `recovery_common` with a `wide::f64x4` scan.

use super::recovery_common::{
    by_rows, from_ord_key, median_group, median_shape, ord_key, scan_scalar, sort_network,
    top_k_with,
};
use crate::recovery::hash::{BucketHash, SignHash};
use crate::recovery::{Shape, FANOUT_BITS};
use wide::f64x4;

/// `out[i] = h(keys[i])` among `b` buckets.
pub fn buckets(h: &BucketHash, b: u32, keys: &[u64], out: &mut [u32]) {
    for (o, &x) in out.iter_mut().zip(keys) {
        *o = h.bucket(x, b);
    }
}

/// `out[i] = s(keys[i])` (`+1.0` / `-1.0`).
pub fn signs(s: &SignHash, keys: &[u64], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(keys) {
        *o = s.sign(x);
    }
}

/// Cells and signs of token `j` in every `(level, row)`: the scalar
/// `recovery::kernels::token_slots`.
pub fn token_slots(
    bucket: &[BucketHash],
    sign: &[SignHash],
    shape: &Shape,
    j: u64,
    slot: &mut [u32],
    slot_sign: &mut [f32],
) {
    crate::recovery::kernels::token_slots(bucket, sign, shape, j, slot, slot_sign);
}

/// The key of token `j` at level `l`: `j >> 4 l` (0 past 64 bits).
#[inline(always)]
pub(super) fn level_key(j: u64, l: usize) -> u64 {
    let sh = l as u32 * FANOUT_BITS;
    if sh >= 64 {
        0
    } else {
        j >> sh
    }
}

/// `y[slot[i] w ..][..w] += sign[i] * x`: the scalar loop, which LLVM
/// vectorizes at the build's width (a `wide::f32x8` version measured 1.4x
/// slower at w = 16: the 8-lane loads and stores go through arrays).
pub fn scatter_add(y: &mut [f32], w: usize, slot: &[u32], sign: &[f32], x: &[f32]) {
    crate::recovery::kernels::scatter_add(y, w, slot, sign, &x[..w]);
}

const L: usize = 8;

/// `out[c] = sum_i y[c w + i] f_i` in f64 (8 partial sums, then the tail).
pub fn project_dot(y: &[f32], w: usize, f: &[f32], out: &mut [f64]) {
    let f = &f[..w];
    for (c, o) in out.iter_mut().enumerate() {
        let row = &y[c * w..(c + 1) * w];
        let (mut a0, mut a1) = (f64x4::ZERO, f64x4::ZERO);
        let mut i = 0;
        while i + L <= w {
            let p: [f64; L] = core::array::from_fn(|l| row[i + l] as f64 * f[i + l] as f64);
            a0 += f64x4::new([p[0], p[1], p[2], p[3]]);
            a1 += f64x4::new([p[4], p[5], p[6], p[7]]);
            i += L;
        }
        let mut s = (a0 + a1).reduce_add();
        while i < w {
            s += row[i] as f64 * f[i] as f64;
            i += 1;
        }
        *o = s;
    }
}

/// Medians of `m = out.len()` groups stored as planes `v[r m + i]`; each
/// group is sorted in place (`total_cmp` order).
pub fn median(v: &mut [f64], rows: usize, out: &mut [f64]) {
    let m = median_shape(v, rows, out);
    let start = by_rows!(rows, median_net(v, m, out), 0);
    for (i, o) in out.iter_mut().enumerate().skip(start) {
        *o = median_group(v, m, rows, i);
    }
}

/// Sorts the groups `0..4 floor(m/4)`, four at a time (four independent
/// comparator chains), with the comparator network on ord keys (scalar
/// `i64` min/max: branch-free; `wide::i64x4` compares are emulated without
/// SSE4.2 and measured 2x slower) and writes their medians; returns the
/// first group left to the scalar path.
#[inline(always)]
fn median_net<const R: usize>(v: &mut [f64], m: usize, out: &mut [f64]) -> usize {
    let mut i = 0;
    while i + 4 <= m {
        let mut k: [[i64; 4]; R] = [[0; 4]; R];
        for (r, kr) in k.iter_mut().enumerate() {
            let src = &v[r * m + i..r * m + i + 4];
            for (e, &x) in kr.iter_mut().zip(src) {
                *e = ord_key(x);
            }
        }
        sort_network(&mut k, |k, a, b| {
            // Every comparator has a < b.
            let (lo, hi) = k.split_at_mut(b);
            for (x, y) in lo[a].iter_mut().zip(hi[0].iter_mut()) {
                let (p, q) = (*x, *y);
                *x = p.min(q);
                *y = p.max(q);
            }
        });
        for (r, kr) in k.iter().enumerate() {
            let dst = &mut v[r * m + i..r * m + i + 4];
            for (d, &e) in dst.iter_mut().zip(kr) {
                *d = from_ord_key(e);
            }
        }
        let h = R / 2;
        for l in 0..4 {
            out[i + l] = if R % 2 == 1 {
                from_ord_key(k[h][l])
            } else {
                0.5 * (from_ord_key(k[h - 1][l]) + from_ord_key(k[h][l]))
            };
        }
        i += 4;
    }
    i
}

/// Indices of the `k` largest scores, largest first, ties to the lower
/// index, NaN ranked as -inf (exactly `recovery::reference::top_k`).
pub fn top_k(score: &[f64], k: usize) -> Vec<usize> {
    top_k_with(score, k, |s, mut i, thr| {
        let t = f64x4::splat(thr);
        while i + 8 <= s.len() {
            let a = f64x4::new(s[i..i + 4].try_into().unwrap()).simd_ge(t);
            let b = f64x4::new(s[i + 4..i + 8].try_into().unwrap()).simd_ge(t);
            if (a | b).any() {
                break;
            }
            i += 8;
        }
        scan_scalar(s, i, thr)
    })
}
