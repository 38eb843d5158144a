//! Naive references of the recovery kernels (tests only): the math written
//! plainly, in u128 / f64.

use super::hash::{BucketHash, SignHash, P61};

/// `h(x) = ((a x + c) mod p) * b >> 61`, with `%` on u128.
pub fn bucket(h: &BucketHash, x: u64, b: u32) -> u32 {
    let p = P61 as u128;
    let x = x as u128 % p;
    let v = (h.a as u128 * x + h.c as u128) % p;
    ((v * b as u128) >> 61) as u32
}

/// `s(x) = 1 - 2 ((c3 x^3 + c2 x^2 + c1 x + c0) mod p & 1)`, term by term.
pub fn sign(s: &SignHash, x: u64) -> f32 {
    let p = P61 as u128;
    let x = x as u128 % p;
    let mut acc = 0u128;
    let mut pw = 1u128;
    for &c in &s.c {
        acc = (acc + c as u128 * pw) % p;
        pw = pw * x % p;
    }
    if acc & 1 == 1 {
        -1.0
    } else {
        1.0
    }
}

/// The dense CountSketch estimate of one row for a vector `x`:
/// `y[b] = sum_{j: h(j >> shift) = b} s(j) x_j` in f64.
pub fn row_sketch(h: &BucketHash, s: &SignHash, shift: u32, b: u32, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; b as usize];
    for (j, &v) in x.iter().enumerate() {
        let j = j as u64;
        y[bucket(h, j >> shift, b) as usize] += sign(s, j) as f64 * v;
    }
    y
}

/// Median by full sort.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    }
}

/// Top-k by full stable sort (largest first, lower index on ties).
pub fn top_k(score: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    let key = |i: usize| {
        if score[i].is_nan() {
            f64::NEG_INFINITY
        } else {
            score[i]
        }
    };
    idx.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
    idx.truncate(k);
    idx
}

/// Best k-term approximation error `min_{k-sparse y} ||x - y||_2` (f64).
pub fn best_k_error(x: &[f64], k: usize) -> f64 {
    let mut sq: Vec<f64> = x.iter().map(|v| v * v).collect();
    sq.sort_by(|a, b| b.total_cmp(a));
    sq.iter().skip(k).sum::<f64>().sqrt()
}

/// `||x - y||_2` where `y` is sparse `(index, value)` pairs.
pub fn sparse_error(x: &[f64], y: &[(u64, f64)]) -> f64 {
    let mut d = x.to_vec();
    for &(i, v) in y {
        d[i as usize] -= v;
    }
    d.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Exact softmax attention of one query over all `n` keys (`k` is `n x d`,
/// `v` is `n x dv`), f64, log-sum-exp stable.
pub fn softmax_attention(q: &[f64], k: &[f64], v: &[f64], d: usize, dv: usize, s: f64) -> Vec<f64> {
    let w = softmax_weights(q, k, d, s);
    let mut out = vec![0.0; dv];
    for (i, &wi) in w.iter().enumerate() {
        for c in 0..dv {
            out[c] += wi * v[i * dv + c];
        }
    }
    out
}

/// Softmax weights `exp(s q.k_i) / sum_j exp(s q.k_j)` over the `n` rows of `k`.
pub fn softmax_weights(q: &[f64], k: &[f64], d: usize, s: f64) -> Vec<f64> {
    let n = k.len() / d;
    let sc: Vec<f64> = (0..n)
        .map(|i| (0..d).map(|c| q[c] * k[i * d + c]).sum::<f64>() * s)
        .collect();
    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
    let den: f64 = e.iter().sum();
    e.iter().map(|x| x / den).collect()
}
