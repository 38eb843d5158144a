//! The recovery kernels, scalar and portable, shaped for SIMD (plain slices,
//! no allocation, fixed-stride loops). Each has a naive twin in
//! [`super::reference`] and is tested against it (hashes exactly, floats
//! with a stated tolerance).

use super::hash::{BucketHash, SignHash};
use super::sketch::{Shape, FANOUT_BITS};

/// Cells and signs of token `j`:
/// `slot[l*R + r] = cell(l, r, h_{l,r}(j >> 4l))`, `slot_sign[l*R + r] = s_r(j)`.
pub fn token_slots(
    bucket: &[BucketHash],
    sign: &[SignHash],
    shape: &Shape,
    j: u64,
    slot: &mut [u32],
    slot_sign: &mut [f32],
) {
    let rows = shape.rows;
    for (r, s) in sign.iter().enumerate() {
        slot_sign[r] = s.sign(j);
    }
    for l in 1..shape.levels {
        slot_sign.copy_within(0..rows, l * rows);
    }
    for l in 0..shape.levels {
        let b = shape.buckets_at(l) as u32;
        let key = if (l as u32) * FANOUT_BITS >= 64 {
            0
        } else {
            j >> (l as u32 * FANOUT_BITS)
        };
        for r in 0..rows {
            let i = l * rows + r;
            slot[i] = shape.cell(l, r, bucket[i].bucket(key, b)) as u32;
        }
    }
}

/// Bucket accumulation: `y[slot[i]*w .. +w] += sign[i] * x` for every `i`
/// (`x.len() == w`).
pub fn scatter_add(y: &mut [f32], w: usize, slot: &[u32], sign: &[f32], x: &[f32]) {
    for (&c, &s) in slot.iter().zip(sign) {
        let row = &mut y[c as usize * w..(c as usize + 1) * w];
        for (o, &v) in row.iter_mut().zip(x) {
            *o += s * v;
        }
    }
}

/// Projection of every cell to a scalar by column: `out[c] = y[c*w + col]`.
pub fn project_column(y: &[f32], w: usize, col: usize, out: &mut [f64]) {
    for (c, o) in out.iter_mut().enumerate() {
        *o = y[c * w + col] as f64;
    }
}

/// Projection of every cell by a functional: `out[c] = sum_i y[c*w + i] f_i`
/// (f64 accumulation).
pub fn project_dot(y: &[f32], w: usize, f: &[f32], out: &mut [f64]) {
    for (c, o) in out.iter_mut().enumerate() {
        let row = &y[c * w..(c + 1) * w];
        let mut acc = [0.0f64; 4];
        let mut i = 0;
        while i + 4 <= w {
            for (lane, a) in acc.iter_mut().enumerate() {
                *a += row[i + lane] as f64 * f[i + lane] as f64;
            }
            i += 4;
        }
        let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        while i < w {
            s += row[i] as f64 * f[i] as f64;
            i += 1;
        }
        *o = s;
    }
}

/// Median of each group of `rows` values: `out[i] = median(v[i*rows .. (i+1)*rows])`
/// (mean of the two middle values for even `rows`). Sorts the groups in place.
pub fn median_rows(v: &mut [f64], rows: usize, out: &mut [f64]) {
    for (g, o) in v.chunks_exact_mut(rows).zip(out.iter_mut()) {
        // Insertion sort: rows is small (5..9).
        for i in 1..g.len() {
            let x = g[i];
            let mut j = i;
            while j > 0 && g[j - 1] > x {
                g[j] = g[j - 1];
                j -= 1;
            }
            g[j] = x;
        }
        let m = rows / 2;
        *o = if rows % 2 == 1 {
            g[m]
        } else {
            0.5 * (g[m - 1] + g[m])
        };
    }
}

/// Indices of the `k` largest `score`s, largest first; ties go to the lower
/// index. NaN scores are never selected ahead of numbers.
pub fn top_k(score: &[f64], k: usize) -> Vec<usize> {
    let key = |i: usize| {
        let s = score[i];
        if s.is_nan() {
            f64::NEG_INFINITY
        } else {
            s
        }
    };
    let cmp = |a: &usize, b: &usize| key(*b).total_cmp(&key(*a)).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..score.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx
}
