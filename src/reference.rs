//! Naive f64 references (for tests and tools): the math, written plainly.

/// Plain monomials of `x` up to degree `g`, in feature order (see `poly`):
/// `list(0) = [()]`, `list(l) = [ (i) ++ m : i in 0..d, m in list(l-1), min(m) >= i ]`.
/// Returns the index tuples.
pub fn monomials(d: usize, g: usize) -> Vec<Vec<usize>> {
    let mut all: Vec<Vec<usize>> = vec![vec![]];
    let mut prev: Vec<Vec<usize>> = vec![vec![]];
    for _ in 1..=g {
        let mut cur = Vec::new();
        for i in 0..d {
            for m in &prev {
                if m.first().is_none_or(|&f| f >= i) {
                    let mut t = vec![i];
                    t.extend_from_slice(m);
                    cur.push(t);
                }
            }
        }
        all.extend(cur.iter().cloned());
        prev = cur;
    }
    all
}

/// `multinomial(|a|; a)` of an index tuple.
pub fn multinomial(tuple: &[usize]) -> f64 {
    let mut f = 1.0;
    for k in 1..=tuple.len() {
        f *= k as f64;
    }
    let mut i = 0;
    while i < tuple.len() {
        let mut j = i;
        while j < tuple.len() && tuple[j] == tuple[i] {
            j += 1;
        }
        for k in 1..=(j - i) {
            f /= k as f64;
        }
        i = j;
    }
    f
}

/// `phi_k(x)` in f64.
pub fn phi_k(x: &[f64], g: usize) -> Vec<f64> {
    monomials(x.len(), g)
        .iter()
        .map(|m| m.iter().map(|&i| x[i]).product())
        .collect()
}

/// `phi_q(x)_a = c_|a| s^|a| multinomial(a) x^a` in f64.
pub fn phi_q(x: &[f64], coeffs: &[f64], s: f64, g: usize) -> Vec<f64> {
    monomials(x.len(), g)
        .iter()
        .map(|m| {
            let l = m.len();
            coeffs.get(l).copied().unwrap_or(0.0)
                * s.powi(l as i32)
                * multinomial(m)
                * m.iter().map(|&i| x[i]).product::<f64>()
        })
        .collect()
}

/// `P(x) = sum_l c_l x^l`.
pub fn poly_eval(coeffs: &[f64], x: f64) -> f64 {
    coeffs.iter().rev().fold(0.0, |a, &c| a * x + c)
}

/// Causal polynomial attention in f64:
/// `o_j = sum_{i<=j} P(s q_j.k_i) v_i / sum_{i<=j} P(s q_j.k_i)`. Rows: n x d, n x dv.
pub fn poly_attention_causal(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d: usize,
    dv: usize,
    coeffs: &[f64],
    s: f64,
) -> Vec<f64> {
    let n = q.len() / d;
    let mut out = vec![0.0; n * dv];
    for j in 0..n {
        let mut den = 0.0;
        for i in 0..=j {
            let x: f64 = (0..d).map(|c| q[j * d + c] * k[i * d + c]).sum::<f64>() * s;
            let w = poly_eval(coeffs, x);
            den += w;
            for c in 0..dv {
                out[j * dv + c] += w * v[i * dv + c];
            }
        }
        for c in 0..dv {
            out[j * dv + c] /= den;
        }
    }
    out
}

/// Exact causal softmax attention in f64 (log-sum-exp stable).
pub fn softmax_attention_causal(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    d: usize,
    dv: usize,
    s: f64,
) -> Vec<f64> {
    let n = q.len() / d;
    let mut out = vec![0.0; n * dv];
    let mut sc = vec![0.0; n];
    for j in 0..n {
        let mut mx = f64::NEG_INFINITY;
        for i in 0..=j {
            sc[i] = (0..d).map(|c| q[j * d + c] * k[i * d + c]).sum::<f64>() * s;
            mx = mx.max(sc[i]);
        }
        let mut den = 0.0;
        for i in 0..=j {
            let w = (sc[i] - mx).exp();
            den += w;
            for c in 0..dv {
                out[j * dv + c] += w * v[i * dv + c];
            }
        }
        for c in 0..dv {
            out[j * dv + c] /= den;
        }
    }
    out
}

/// Relative Frobenius error `||a - b|| / ||b||`.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// The 4-bit code of channel `c` in a row of 32-channel nibble groups
/// (`kernels::Kernels::u4_row_dots`): group `c / 32` is the 16 bytes at
/// `16 (c / 32)`; within it, channel `t < 16` is the low nibble of byte `t`
/// and channel `t + 16` the high nibble of byte `t`.
pub fn u4_code(row: &[u8], c: usize) -> u8 {
    let (g, t) = (c / 32, c % 32);
    let b = row[16 * g + t % 16];
    if t < 16 {
        b & 15
    } else {
        b >> 4
    }
}

/// 4-bit code rows against a query in f64: `out[i] = sum_{c < d} q_c
/// code(a_i, c)`, `i < rows`, `d = q.len()`, rows of `d / 2` bytes.
pub fn u4_row_dots(a: &[u8], q: &[f32], rows: usize) -> Vec<f64> {
    let rb = q.len() / 2;
    (0..rows)
        .map(|i| {
            let row = &a[i * rb..(i + 1) * rb];
            q.iter()
                .enumerate()
                .map(|(c, &qc)| qc as f64 * u4_code(row, c) as f64)
                .sum()
        })
        .collect()
}

/// The 4-bit score kernels' fixed-point result (`kernels::u4_fixed`),
/// computed independently: the least `e` with every `|round_ties_even(q_c
/// 2^-e)| <= 32767` (searched in f64 from above), the exact integer sum of
/// `qi_c code(a_i, c)` in i64, then `f32(sum) 2^e`; all zero when `max_c
/// |q_c| < 2^-100`. Every level must give these bits.
pub fn u4_row_dots_fixed(a: &[u8], q: &[f32], rows: usize) -> Vec<f32> {
    let rb = q.len() / 2;
    let m = q.iter().fold(0.0f64, |m, &x| m.max((x as f64).abs()));
    if m < 2f64.powi(-100) {
        return vec![0.0; rows];
    }
    let fits = |e: i32| {
        q.iter()
            .all(|&x| (x as f64 * 2f64.powi(-e)).round_ties_even().abs() <= 32767.0)
    };
    let mut e = 130;
    while fits(e - 1) {
        e -= 1;
    }
    let qi: Vec<i64> = q
        .iter()
        .map(|&x| (x as f64 * 2f64.powi(-e)).round_ties_even() as i64)
        .collect();
    (0..rows)
        .map(|i| {
            let row = &a[i * rb..(i + 1) * rb];
            let s: i64 = qi
                .iter()
                .enumerate()
                .map(|(c, &x)| x * u4_code(row, c) as i64)
                .sum();
            (s as f32) * 2f32.powi(e)
        })
        .collect()
}

/// Weighted sum of 4-bit code rows in f64, one weight per row and group:
/// `out0[c] + sum_{i < m} w[i G + c / 32] code(a_i, c)`, `dv = out0.len()`,
/// `G = dv / 32`, `m = w.len() / G`, rows of `dv / 2` bytes.
pub fn u4_rows(w: &[f32], a: &[u8], out0: &[f32]) -> Vec<f64> {
    let dv = out0.len();
    let groups = dv / 32;
    let m = w.len() / groups.max(1);
    let rb = dv / 2;
    (0..dv)
        .map(|c| {
            let mut r = out0[c] as f64;
            for i in 0..m {
                r += w[i * groups + c / 32] as f64 * u4_code(&a[i * rb..(i + 1) * rb], c) as f64;
            }
            r
        })
        .collect()
}

/// 4-bit code rows against `m = q.len() / d` queries in f64
/// (`kernels::Kernels::u4_row_dots_multi`): `out[i n + t] = sum_{c < d}
/// q[i d + c] code(a_t, c)`, `i < m`, `t < n`.
pub fn u4_row_dots_multi(a: &[u8], q: &[f32], d: usize, n: usize) -> Vec<f64> {
    q.chunks_exact(d)
        .flat_map(|qi| u4_row_dots(a, qi, n))
        .collect()
}

/// Weighted sums of 4-bit code rows for `m = out0.len() / dv` weight sets
/// in f64 (`kernels::Kernels::u4_rows_multi`): `out0[i dv + c] + sum_{t <
/// n} w[i n G + t G + c / 32] code(a_t, c)`, `G = dv / 32`, `n = w.len() /
/// (m G)`.
pub fn u4_rows_multi(w: &[f32], a: &[u8], dv: usize, out0: &[f32]) -> Vec<f64> {
    let m = out0.len() / dv;
    if m == 0 {
        return Vec::new();
    }
    let per = w.len() / m;
    (0..m)
        .flat_map(|i| u4_rows(&w[i * per..(i + 1) * per], a, &out0[i * dv..(i + 1) * dv]))
        .collect()
}

/// Scaled int8 rows against a query in f64: `out[i] = s_i sum_{c < d} a_{i d
/// + c} q_c`, `i < scale.len()`, `d = q.len()`.
pub fn i8_row_dots(a: &[i8], scale: &[f32], q: &[f32]) -> Vec<f64> {
    let d = q.len();
    scale
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            s as f64
                * (0..d)
                    .map(|c| a[i * d + c] as f64 * q[c] as f64)
                    .sum::<f64>()
        })
        .collect()
}
