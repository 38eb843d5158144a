//! The fixed-point query of the 4-bit score kernels (`Kernels::u4_row_dots`,
//! `Kernels::u4_row_dots_multi`), the same at every level.
//!
//! A query `q` (d floats) becomes `q_c ~ 2^e qi_c` with 16-bit integers
//! `qi_c = round_ties_even(q_c 2^-e)`, `e` the least integer with
//! `max_c |q_c| 2^-e < 2^15` after rounding (so `|qi_c| <= 32767`). A row's
//! score is then the exact integer `sum_c qi_c code_c` (`|.| <= 15 * 32767 d
//! < 2^31` for `d <= MAX_D`) times `2^e`: one rounding (i32 -> f32) and an
//! exact power-of-two scale. Against the f32 sum the error is at most
//! `2^e / 2 sum_c code_c + 2^-24 |score|` with `2^e <= max_c |q_c| 2^-13`,
//! about `1e-4` of `max_c |q_c| sum_c code_c`: far below the 4-bit codes'
//! own error (half a step per channel). Being exact integer arithmetic, the
//! result does not depend on the summation order, so every level, every
//! register blocking and the single and multi-query calls agree bitwise.
//! A query with `max_c |q_c| < 2^-100` (or not finite) counts as zero.

/// Largest head dimension of the 4-bit score kernels: `15 * 32767 * MAX_D <
/// 2^31` keeps every row sum inside i32.
pub const MAX_D: usize = 4096;

/// Largest magnitude of a fixed-point query element.
pub const QMAX: f32 = 32767.0;

/// `(2^e, 2^-e)` for a query whose largest magnitude is `m` (see the module
/// doc); `(0, 0)` when `m < 2^-100` or `m` is not finite.
#[inline]
pub fn scale(m: f32) -> (f32, f32) {
    if !(m.is_finite() && m >= f32::from_bits((127 - 100) << 23)) {
        return (0.0, 0.0);
    }
    // m in [2^E, 2^(E+1)) with -100 <= E <= 127 (m is normal).
    let big_e = ((m.to_bits() >> 23) & 0xff) as i32 - 127;
    let mut e = big_e - 14;
    if (m * pow2(-e)).round_ties_even() > QMAX {
        e += 1;
    }
    // -114 <= e <= 114: both powers are normal f32.
    (pow2(e), pow2(-e))
}

/// `2^e` for `-126 <= e <= 127`.
#[inline]
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

/// `qi_c = round_ties_even(q_c inv)` (the scale's `2^-e`).
#[inline]
pub fn quantize(q: f32, inv: f32) -> i32 {
    (q * inv).round_ties_even() as i32
}
