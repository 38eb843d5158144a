//! Portable recovery kernels (the math of each is on its `Kernels` field).
//!
//! - Hashes: scalar `u128` arithmetic, as `recovery::hash` (one `mul` per
//!   64x64 product; `wide` 1.7 exposes no 32x32->64 widening lane multiply,
//!   so a vector version would be four emulated multiplies per product).
//! - `scatter_add`, `project_dot`: `wide::f32x8` / `wide::f64x4` over the
//!   bucket width.
//! - `median`: `wide::i64x4` min/max transposition network on total-order
//!   keys, four groups per vector (rows <= 16; more rows sort per group).
//! - `top_k`: heap driver of `recovery_common` with a `wide::f64x4` scan.

use super::recovery_common::{
    by_rows, from_ord_key, median_group, median_shape, ord_key, scan_scalar, top_k_with,
    transposition_sort,
};
use crate::recovery::hash::{BucketHash, SignHash};
use crate::recovery::{Shape, FANOUT_BITS};
use wide::{f32x8, f64x4, i64x4};

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

/// Cells and signs of token `j` in every `(level, row)`.
pub fn token_slots(
    bucket: &[BucketHash],
    sign: &[SignHash],
    shape: &Shape,
    j: u64,
    slot: &mut [u32],
    slot_sign: &mut [f32],
) {
    let rows = shape.rows;
    for (r, s) in sign.iter().take(rows).enumerate() {
        slot_sign[r] = s.sign(j);
    }
    for l in 1..shape.levels {
        slot_sign.copy_within(0..rows, l * rows);
    }
    for l in 0..shape.levels {
        let b = shape.buckets_at(l) as u32;
        let key = level_key(j, l);
        let base = shape.cell(l, 0, 0);
        for r in 0..rows {
            let i = l * rows + r;
            slot[i] = (base + r * b as usize + bucket[i].bucket(key, b) as usize) as u32;
        }
    }
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

const L: usize = 8;

#[inline(always)]
fn ld(x: &[f32]) -> f32x8 {
    let a: [f32; L] = x[..L].try_into().unwrap();
    f32x8::from(a)
}

/// `y[slot[i] w ..][..w] += sign[i] * x` (mul then add: bitwise the scalar
/// `recovery::kernels::scatter_add`).
pub fn scatter_add(y: &mut [f32], w: usize, slot: &[u32], sign: &[f32], x: &[f32]) {
    let x = &x[..w];
    for (&c, &s) in slot.iter().zip(sign) {
        let row = &mut y[c as usize * w..(c as usize + 1) * w];
        let vs = f32x8::splat(s);
        let mut i = 0;
        while i + L <= w {
            let r = ld(&row[i..]) + vs * ld(&x[i..]);
            row[i..i + L].copy_from_slice(&r.to_array());
            i += L;
        }
        while i < w {
            row[i] += s * x[i];
            i += 1;
        }
    }
}

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

/// Sorts and takes the medians of the groups `0..4 floor(m/4)`; returns
/// the first group left to the scalar path.
#[inline(always)]
fn median_net<const R: usize>(v: &mut [f64], m: usize, out: &mut [f64]) -> usize {
    let mut i = 0;
    while i + 4 <= m {
        let mut k: [i64x4; R] = core::array::from_fn(|r| {
            i64x4::new(core::array::from_fn(|l| ord_key(v[r * m + i + l])))
        });
        transposition_sort(&mut k, |k, a, b| {
            let (x, y) = (k[a], k[b]);
            k[a] = x.min(y);
            k[b] = x.max(y);
        });
        for (r, kr) in k.iter().enumerate() {
            for (l, &e) in kr.to_array().iter().enumerate() {
                v[r * m + i + l] = from_ord_key(e);
            }
        }
        for l in 0..4 {
            let h = R / 2;
            out[i + l] = if R % 2 == 1 {
                v[h * m + i + l]
            } else {
                0.5 * (v[(h - 1) * m + i + l] + v[h * m + i + l])
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
