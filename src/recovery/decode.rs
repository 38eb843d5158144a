//! Sublinear decode: descend the 16-ary tree from the top stored level,
//! keeping the `beam` most energetic nodes per level, then estimate the
//! surviving tokens with the CountSketch median.
//!
//! Input is the *scalar* sketch `ys[cell]` (the sketch projected onto one
//! column, or onto `phi_q(q)`), `levels * rows * buckets` values, so the cost
//! of a decode is
//!
//! ```text
//!   projection  levels * rows * buckets * (1 or width)
//!   descent     (top level + 1) * 2 beam * 16 * rows   hash evaluations
//! ```
//!
//! with `top = min { l : ceil(n / 16^l) <= beam }`: logarithmic in n, never a
//! scan over the n token indices (unless n exceeds the `max_tokens` hint, when
//! the top stored level holds more than `beam` nodes and all of them are
//! scored).
//!
//! Scores: a node `p` at level `l >= 1` has the squares
//! `e_r = ys[l, r, h_{l,r}(p)]^2`, each an estimate of its energy
//! `sum_{j in p} x_j^2` (4-wise signs) plus colliding mass. The beam keeps
//! the union of the `beam` best nodes by `median_r e_r` (robust to a heavy
//! colliding in a few rows) and by the second largest `e_r` (robust to two
//! heavy entries of the node cancelling in some rows), so up to `2 beam`
//! nodes survive a level. A token scores
//! `x^_j = median_r s_r(j) ys[0, r, h_{0,r}(j)]`.

use super::sketch::{Dyadic, FANOUT, FANOUT_BITS};

/// How the final candidates are ranked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    /// By `|x^_j|` (output columns: signed values).
    Magnitude,
    /// By `x^_j`, positive estimates only (kernel weights).
    Positive,
}

/// Nodes at level `l` for `n` indices: `ceil(n / 16^l)`.
fn nodes(n: u64, l: usize) -> u64 {
    let shift = l as u32 * FANOUT_BITS;
    if shift >= 64 {
        return u64::from(n > 0);
    }
    (n >> shift) + u64::from(n & ((1u64 << shift) - 1) != 0)
}

/// The level where the descent starts for `n` indices.
pub fn top_level(n: u64, levels: usize, beam: usize) -> usize {
    (0..levels)
        .find(|&l| nodes(n, l) <= beam as u64)
        .unwrap_or(levels - 1)
}

/// Per-thread buffers of [`decode`]: grown to the largest decode seen on the
/// thread and reused, so repeated decodes neither allocate nor fault in
/// fresh pages (the candidate planes reach ~150 KB, above malloc's mmap
/// threshold).
#[derive(Default)]
struct Scratch {
    cands: Vec<u64>,
    next: Vec<u64>,
    bk: Vec<u32>,
    score: Vec<f64>,
    vals: Vec<f64>,
    sg: Vec<f32>,
    est: Vec<f64>,
    key: Vec<f64>,
}

thread_local! {
    static SCRATCH: core::cell::RefCell<Scratch> = core::cell::RefCell::new(Scratch::default());
}

/// Up to `k` `(index, estimate)` pairs from the scalar sketch `ys` of `sk`
/// over indices `0..n`, ranked by `rank`, best first. Zero (or, for
/// `Positive`, non-positive) estimates are dropped.
///
/// Runs on the kernels of `sk` ([`Dyadic::kernels`]): batched hashes,
/// planar medians (`vals[r * m + i]`: row `r` of candidate `i`) and top-k;
/// buffers from a per-thread scratch.
pub fn decode(sk: &Dyadic, ys: &[f64], n: u64, k: usize, rank: Rank) -> Vec<(u64, f64)> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => decode_with(&mut s, sk, ys, n, k, rank),
        Err(_) => decode_with(&mut Scratch::default(), sk, ys, n, k, rank),
    })
}

fn decode_with(
    s: &mut Scratch,
    sk: &Dyadic,
    ys: &[f64],
    n: u64,
    k: usize,
    rank: Rank,
) -> Vec<(u64, f64)> {
    let kern = sk.kernels();
    let sh = *sk.shape();
    debug_assert_eq!(ys.len(), sh.cells());
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let b = sh.buckets as u32;
    let b0 = sh.buckets0 as u32;
    let top = top_level(n, sh.levels, sh.beam);
    let Scratch {
        cands,
        next,
        bk,
        score,
        vals,
        sg,
        est,
        key,
    } = s;
    cands.clear();
    cands.extend(0..nodes(n, top));
    for l in (1..=top).rev() {
        if cands.len() > sh.beam {
            // Squares of the node's bucket in every row: plane r, vals[r * m + i].
            let m = cands.len();
            bk.resize(m, 0);
            vals.clear();
            vals.resize(m * sh.rows, 0.0);
            for (r, plane) in vals.chunks_exact_mut(m).enumerate() {
                (kern.rec_buckets)(sk.bucket_hash(l, r), b, cands, bk);
                let base = sh.cell(l, r, 0);
                for (o, &c) in plane.iter_mut().zip(bk.iter()) {
                    let v = ys[base + c as usize];
                    *o = v * v;
                }
            }
            // Sorted per node; median (robust to collisions) and second
            // largest (robust to two heavies cancelling in some rows).
            score.clear();
            score.resize(m, 0.0);
            (kern.rec_median)(vals, sh.rows, score);
            let r2 = sh.rows.saturating_sub(2);
            let second = &vals[r2 * m..(r2 + 1) * m];
            let mut keep = (kern.rec_top_k)(score, sh.beam);
            keep.extend((kern.rec_top_k)(second, sh.beam));
            keep.sort_unstable();
            keep.dedup();
            next.clear();
            next.extend(keep.iter().map(|&i| cands[i]));
            core::mem::swap(cands, next);
        }
        let below = nodes(n, l - 1);
        next.clear();
        for &p in cands.iter() {
            let first = p << FANOUT_BITS;
            next.extend(first..(first + FANOUT).min(below));
        }
        core::mem::swap(cands, next);
    }
    // Level 0: median estimate of each candidate token.
    let rows = sh.rows;
    let m = cands.len();
    bk.resize(m, 0);
    sg.clear();
    sg.resize(m, 0.0);
    vals.clear();
    vals.resize(m * rows, 0.0);
    for (r, plane) in vals.chunks_exact_mut(m.max(1)).enumerate() {
        (kern.rec_buckets)(sk.bucket_hash(0, r), b0, cands, bk);
        (kern.rec_signs)(sk.sign_hash(r), cands, sg);
        let base = sh.cell(0, r, 0);
        for ((o, &c), &sgn) in plane.iter_mut().zip(bk.iter()).zip(sg.iter()) {
            *o = sgn as f64 * ys[base + c as usize];
        }
    }
    est.clear();
    est.resize(m, 0.0);
    (kern.rec_median)(vals, rows, est);
    key.clear();
    match rank {
        Rank::Magnitude => key.extend(est.iter().map(|e| e.abs())),
        Rank::Positive => key.extend_from_slice(est),
    }
    (kern.rec_top_k)(key, k)
        .into_iter()
        .filter(|&i| key[i] > 0.0)
        .map(|i| (cands[i], est[i]))
        .collect()
}
