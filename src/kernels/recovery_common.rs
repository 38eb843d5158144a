//! Scalar pieces shared by every level's recovery kernels: the total-order
//! key of an f64, the median of one group, and the top-k driver around a
//! level's vector scan.
//!
//! Total order. `ord(x) = bits(x) ^ ((bits(x) >>a 63) >>l 1)` as an `i64`
//! satisfies `ord(x) < ord(y)` iff `x.total_cmp(&y) == Less` (negative
//! numbers get their magnitude bits flipped). It is its own inverse, so a
//! sorting network over `ord` keys returns the original bit patterns in the
//! order of `f64::total_cmp`: that is what makes the SIMD medians equal the
//! reference (a full `total_cmp` sort) bit for bit, NaN and `-0.0` included.
//!
//! Top-k order. The reference ranks by `key(i)` descending (`key` = score,
//! NaN replaced by -inf, compared with `total_cmp`), ties to the lower
//! index. `comp(i) = ((ord(key(i)) ^ 2^63) << 64) | !i` (a u128) is a strict
//! total order with the same ranking, so the top k are unique: the `k`
//! largest `comp`.

/// `ord(x)`: the `i64` whose signed order is `f64::total_cmp`.
#[inline(always)]
pub(super) fn ord_key(x: f64) -> i64 {
    let b = x.to_bits() as i64;
    b ^ (((b >> 63) as u64) >> 1) as i64
}

/// Inverse of [`ord_key`] (the same xor).
#[inline(always)]
pub(super) fn from_ord_key(k: i64) -> f64 {
    f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64)
}

/// Sorts the group `i` of the planes `v[r * m + i]` (`r < rows`) in
/// `total_cmp` order in place and returns its median (the middle value, or
/// `0.5 * (lo + hi)` of the two middle ones for even `rows`).
pub(super) fn median_group(v: &mut [f64], m: usize, rows: usize, i: usize) -> f64 {
    // Insertion sort on ord keys; rows is small.
    for a in 1..rows {
        let x = v[a * m + i];
        let kx = ord_key(x);
        let mut b = a;
        while b > 0 && ord_key(v[(b - 1) * m + i]) > kx {
            v[b * m + i] = v[(b - 1) * m + i];
            b -= 1;
        }
        v[b * m + i] = x;
    }
    let h = rows / 2;
    if rows % 2 == 1 {
        v[h * m + i]
    } else {
        0.5 * (v[(h - 1) * m + i] + v[h * m + i])
    }
}

/// Checks the planar median shapes; returns `m` (groups).
#[inline(always)]
pub(super) fn median_shape(v: &[f64], rows: usize, out: &[f64]) -> usize {
    let m = out.len();
    assert!(rows > 0 && v.len() >= rows * m, "median: shape");
    m
}

/// Rank key of a score: `ord(score)`, NaN ranked as -inf.
#[inline(always)]
fn rank_key(x: f64) -> i64 {
    if x.is_nan() {
        ord_key(f64::NEG_INFINITY)
    } else {
        ord_key(x)
    }
}

/// `comp(i)`, see the module doc: larger is better.
#[inline(always)]
fn comp(score: &[f64], i: usize) -> u128 {
    let k = (rank_key(score[i]) as u64) ^ (1 << 63);
    ((k as u128) << 64) | (!(i as u64)) as u128
}

/// The score value of a composite's key (never NaN).
#[inline(always)]
fn comp_value(c: u128) -> f64 {
    from_ord_key((((c >> 64) as u64) ^ (1 << 63)) as i64)
}

/// Below `n < SORT_BELOW * k` the driver sorts everything instead of
/// streaming through a candidate buffer.
const SORT_BELOW: usize = 8;

/// Indices of the `k` largest scores (reference order, see the module doc).
///
/// `scan(score, from, thr)` must return the first index `i >= from` with
/// `score[i] >= thr` (an ordered compare: NaN never qualifies), or
/// `score.len()` if there is none. It is a superset filter: every index
/// that can enter the current top k passes it (`comp(i) > min comp` implies
/// `score[i] >= thr` numerically, since indices grow), and the exact test is
/// made here, against a buffer of up to `2k` candidates that is cut back
/// to its `k` best (`select_nth`, `O(k)`) when full. Cost: `O(n)` vector
/// compares plus `O(k log(n/k))` expected candidates in random order, each
/// `O(1)` amortized; `O(n)` worst case (ascending scores).
#[inline(always)]
pub(super) fn top_k_with(
    score: &[f64],
    k: usize,
    scan: impl Fn(&[f64], usize, f64) -> usize,
) -> Vec<usize> {
    let n = score.len();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let mut best: Vec<u128>;
    if n < SORT_BELOW.saturating_mul(k) {
        best = (0..n).map(|i| comp(score, i)).collect();
        if k < n {
            best.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
            best.truncate(k);
        }
    } else {
        // Candidate buffer of up to 2k composites; `min` is the k-th largest
        // at the last compaction (or the least of the first k), so every
        // index it filters out has k larger composites.
        best = Vec::with_capacity(2 * k);
        best.extend((0..k).map(|i| comp(score, i)));
        let mut min = best.iter().copied().min().unwrap_or(0);
        let mut i = k;
        loop {
            i = scan(score, i, comp_value(min));
            if i >= n {
                break;
            }
            let c = comp(score, i);
            if c > min {
                if best.len() == 2 * k {
                    best.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
                    best.truncate(k);
                    min = best[k - 1];
                }
                if c > min {
                    best.push(c);
                }
            }
            i += 1;
        }
        if best.len() > k {
            best.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
            best.truncate(k);
        }
    }
    best.sort_unstable_by(|a, b| b.cmp(a));
    best.into_iter().map(|c| !(c as u64) as usize).collect()
}

/// The scalar scan of [`top_k_with`] from `i` on.
#[inline(always)]
pub(super) fn scan_scalar(score: &[f64], mut i: usize, thr: f64) -> usize {
    while i < score.len() && (score[i] < thr || score[i].is_nan()) {
        i += 1;
    }
    i
}

/// `match rows { 1 => f::<1>(..), ..., 16 => f::<16>(..), _ => fallback }`:
/// the sorting networks are unrolled per row count.
macro_rules! by_rows {
    ($rows:expr, $f:ident ( $($a:expr),* ), $fallback:expr) => {
        match $rows {
            1 => $f::<1>($($a),*),
            2 => $f::<2>($($a),*),
            3 => $f::<3>($($a),*),
            4 => $f::<4>($($a),*),
            5 => $f::<5>($($a),*),
            6 => $f::<6>($($a),*),
            7 => $f::<7>($($a),*),
            8 => $f::<8>($($a),*),
            9 => $f::<9>($($a),*),
            10 => $f::<10>($($a),*),
            11 => $f::<11>($($a),*),
            12 => $f::<12>($($a),*),
            13 => $f::<13>($($a),*),
            14 => $f::<14>($($a),*),
            15 => $f::<15>($($a),*),
            16 => $f::<16>($($a),*),
            _ => $fallback,
        }
    };
}
pub(super) use by_rows;

/// Applies the comparators `(a, b)` in sequence, as straight-line code
/// (constant indices: the keys stay in registers).
macro_rules! comparators {
    ($cx:ident, $k:ident; $(($a:literal, $b:literal)),* $(,)?) => {
        $( $cx($k, $a, $b); )*
    };
}

/// Sorts `R` keys with a fixed comparator network. For the row counts the
/// sketches use, a best known (size-optimal) network: 9 (output sketch,
/// 25 comparators instead of 36), 7 (key sketch, 16), and 5 (9). Otherwise
/// odd-even transposition: `R` rounds of disjoint compare-exchanges
/// `(b, b+1)`, `b` of the round's parity (`R (R-1) / 2` comparators, depth
/// `R`; sorts any input). `cx(k, a, b)` must leave `(min, max)` in
/// `(k[a], k[b])`. All are checked on every 0-1 input (which proves them,
/// by the 0-1 principle) in `tests/recovery_kernels.rs`.
#[inline(always)]
pub(super) fn sort_network<T, const R: usize>(
    k: &mut [T; R],
    cx: impl Fn(&mut [T; R], usize, usize),
) {
    match R {
        5 => {
            comparators!(cx, k; (0, 3), (1, 4), (0, 2), (1, 3), (0, 1), (2, 4), (1, 2), (3, 4), (2, 3));
        }
        7 => {
            comparators!(cx, k;
                (0, 6), (2, 3), (4, 5), (0, 2), (1, 4), (3, 6), (0, 1), (2, 5),
                (3, 4), (1, 2), (4, 6), (2, 3), (4, 5), (1, 2), (3, 4), (5, 6));
        }
        9 => {
            comparators!(cx, k;
                (0, 3), (1, 7), (2, 5), (4, 8), (0, 7), (2, 4), (3, 8), (5, 6), (0, 2),
                (1, 3), (4, 5), (7, 8), (1, 4), (3, 6), (5, 7), (0, 1), (2, 4), (3, 5),
                (6, 8), (2, 3), (4, 5), (6, 7), (1, 2), (3, 4), (5, 6));
        }
        _ => {
            for round in 0..R {
                let mut b = round % 2;
                while b + 1 < R {
                    cx(k, b, b + 1);
                    b += 2;
                }
            }
        }
    }
}
