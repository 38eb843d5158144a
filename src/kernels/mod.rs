//! Compute kernels, one implementation per CPU [`Level`], all with the same
//! signatures, collected in a [`Kernels`] table chosen once per handle.
//!
//! Shapes: `t` features, `dv` value columns; `M` halves `s`, `d` are `t x dv`
//! row-major, `z` halves `zs`, `zd` have length `t`. The state value is
//! `M = s + d` (see `sketch::state` for why it is split).
//! Each kernel's math is stated on its field and checked against
//! `crate::reference` in `tests/kernels.rs` for every level.

/// `$f::<N>(args)` for `N = $n` in 1..=8 (a runtime vector count turned
/// into a monomorphised register block; 0 and > 8 are not valid counts).
#[cfg(target_arch = "x86_64")]
macro_rules! by_vectors {
    // `$f::<$t, N>`: a kernel generic over its element type too.
    ($n:expr, $f:ident::<$t:ty> ($($a:expr),*)) => {
        match $n {
            8 => $f::<$t, 8>($($a),*),
            7 => $f::<$t, 7>($($a),*),
            6 => $f::<$t, 6>($($a),*),
            5 => $f::<$t, 5>($($a),*),
            4 => $f::<$t, 4>($($a),*),
            3 => $f::<$t, 3>($($a),*),
            2 => $f::<$t, 2>($($a),*),
            _ => $f::<$t, 1>($($a),*),
        }
    };
    ($n:expr, $f:ident ($($a:expr),*)) => {
        match $n {
            8 => $f::<8>($($a),*),
            7 => $f::<7>($($a),*),
            6 => $f::<6>($($a),*),
            5 => $f::<5>($($a),*),
            4 => $f::<4>($($a),*),
            3 => $f::<3>($($a),*),
            2 => $f::<2>($($a),*),
            _ => $f::<1>($($a),*),
        }
    };
}

/// The four-row driver of the x86 `i16_row_dots`: `$block::<R>($k, i)`
/// gives the partial sums of rows `i..i + R` (`R <= KR = 4`, missing rows
/// zero) that `hsum4` reduces to one `__m128`; times the four row scales
/// from `$sp`, stored to `$op`; leftover rows take `R = n mod 4`. Returns
/// the largest result (a NaN score is skipped as by `f32::max`). Must run
/// inside `unsafe` with `$sp`, `$op` valid for `$n` elements.
#[cfg(target_arch = "x86_64")]
macro_rules! scaled_rows_by_4 {
    ($k:expr, $n:expr, $sp:expr, $op:expr, $block:ident) => {{
        let (n, sp, op) = ($n, $sp, $op);
        let mut m4 = _mm_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i + KR <= n {
            let v = _mm_mul_ps(hsum4($block::<KR>($k, i)), _mm_loadu_ps(sp.add(i)));
            _mm_storeu_ps(op.add(i), v);
            // maxps returns its second operand when the first is NaN, so a
            // NaN score is skipped as by `f32::max` (m4 is never NaN).
            m4 = _mm_max_ps(v, m4);
            i += KR;
        }
        let mut buf = [0.0f32; KR];
        _mm_storeu_ps(buf.as_mut_ptr(), m4);
        let mut mx = buf.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        if i < n {
            let s = match n - i {
                1 => $block::<1>($k, i),
                2 => $block::<2>($k, i),
                _ => $block::<3>($k, i),
            };
            _mm_storeu_ps(buf.as_mut_ptr(), hsum4(s));
            for (j, &x) in buf[..n - i].iter().enumerate() {
                let v = *sp.add(i + j) * x;
                *op.add(i + j) = v;
                mx = mx.max(v);
            }
        }
        mx
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod level;
pub mod portable;
#[cfg(target_arch = "x86_64")]
mod recovery_avx2;
#[cfg(target_arch = "x86_64")]
mod recovery_avx512;
mod recovery_common;
pub mod recovery_portable;
#[cfg(target_arch = "x86_64")]
mod u4_dots_avx2;
pub mod u4_fixed;

pub use level::Level;

use crate::error::Result;
use crate::poly::FeatureMap;

/// The kernel set of one level. Slices must have the shapes stated; callers
/// (the `sketch` module) guarantee them.
pub struct Kernels {
    /// Level these kernels belong to.
    pub level: Level,
    /// `out[..t] = x^a` for every monomial `a` in [`FeatureMap`] order.
    pub expand: fn(map: &FeatureMap, x: &[f32], out: &mut [f32]),
    /// `x[i] *= w[i] * alpha` (per-degree query weights).
    pub weight: fn(x: &mut [f32], w: &[f32], alpha: f32),
    /// `acc += sum_i phiq_i s_i` (read-only query of the flushed total alone).
    pub query_s: fn(s: &[f32], phiq: &[f32], acc: &mut [f32]),
    /// `(den, mag) = (sum_i phiq_i zs_i, sum_i |phiq_i zs_i|)`.
    pub query_zs: fn(zs: &[f32], phiq: &[f32]) -> (f32, f32),
    /// `zd += phik`.
    pub absorb_z: fn(zd: &mut [f32], phik: &[f32]),
    /// Error-free transfer of the block accumulator into the total:
    /// `(s, d) <- (fl(s + d), (s + d) - fl(s + d))` (TwoSum, elementwise).
    pub flush: fn(s: &mut [f32], d: &mut [f32]),
    /// `max_i |x_i|`, or +Inf if some element is not finite (NaN gives +Inf).
    pub max_abs: fn(x: &[f32]) -> f32,
    /// `dst[i] = f32(binary16 bits src[i])` for `i < min(len)`, exact
    /// (NaNs come out quiet, payload kept: as `half::f16::to_f32`).
    pub f16_to_f32: fn(src: &[u16], dst: &mut [f32]),
    /// `dst[i] = f32(bfloat16 bits src[i])` for `i < min(len)`, exact
    /// (NaNs come out quiet: as `half::bf16::to_f32`).
    pub bf16_to_f32: fn(src: &[u16], dst: &mut [f32]),
    /// Scores of the hybrid's exact keys: `out[i] = a[i d..(i + 1) d] . q`
    /// for `i < out.len()`, `d = q.len()`; returns `max_i out[i]` (-inf when
    /// `out` is empty). Panics if `a` is shorter than `out.len() d`.
    pub row_dots: fn(a: &[f32], q: &[f32], out: &mut [f32]) -> f32,
    /// Scores of the hybrid's int16 keys (`key_format` 1): `out[i] = scale[i]
    /// (sum_c f32(a[i d + c]) q[c])` for `i < out.len()`, `d = q.len()`; the sum
    /// in f32 (FMA where the level has it), then one multiply by the row's scale;
    /// returns `max_i out[i]` (-inf when `out` is empty). Panics if `a` is
    /// shorter than `out.len() d` or `scale` shorter than `out.len()`.
    #[allow(clippy::type_complexity)]
    pub i16_row_dots: fn(a: &[i16], scale: &[f32], q: &[f32], out: &mut [f32]) -> f32,
    /// Squared distances `out[i] = |a[i d..(i + 1) d] - q|^2` (the tail's
    /// Ward merge), `d = q.len()`. Panics if `a` is shorter than `out.len() d`.
    pub row_dists: fn(a: &[f32], q: &[f32], out: &mut [f32]),
    /// `x_i <- e^(s (x_i - xmax))` for `x_i <= xmax`, `s > 0` (so every
    /// result lies in [0, 1]; arguments below ln of the smallest normal f32,
    /// -inf included, give 0 or a subnormal, never NaN); returns `sum_i x_i`.
    pub exp_shift: fn(x: &mut [f32], s: f32, xmax: f32) -> f64,
    /// Weighted sum of binary16 rows (the hybrid's value rows):
    /// `out[j] += sum_{i < m} w[i] f32(h[i dv + j])` with `m = w.len()`,
    /// `dv = out.len()`. Per column the sum runs over the rows in order, in
    /// f32 (one FMA per row where the level has FMA), and is then added to
    /// `out`. Panics (caught at the C boundary) if `h` is shorter than `m dv`.
    pub f16_rows: fn(w: &[f32], h: &[u16], out: &mut [f32]),
    /// Weighted sum of int8 rows (the hybrid's `AS_VALUES_I8` value rows):
    /// `out[j] += sum_{i < m} w[i] f32(a[i dv + j])` with `m = w.len()`,
    /// `dv = out.len()`; as [`Kernels::f16_rows`] (rows in order per column,
    /// f32, then added to `out`). Panics if `a` is shorter than `m dv`.
    pub i8_rows: fn(w: &[f32], a: &[i8], out: &mut [f32]),
    /// Scores of 4-bit code rows (`sketch::hybrid::quant`): `out[i] = sum_c
    /// q[c] code(a_i, c)` for `i < out.len()`, `d = q.len()` (a multiple of
    /// 32), rows of `d / 2` bytes in the nibble layout of a 32-channel group
    /// (16 bytes: byte `t` holds channel `t` in its low and channel `t + 16`
    /// in its high nibble). The query is taken in 16-bit fixed point, `q_c
    /// ~ 2^e qi_c` ([`u4_fixed`]), each row's sum `sum_c qi_c code_c` is
    /// exact in i32, and `out[i]` is that sum rounded to f32 times `2^e`: the
    /// same bits at every level and blocking, within `2^e / 2 sum_c code_c +
    /// 2^-24 |out[i]|` (`2^e <= max_c |q_c| 2^-13`) of the exact value; a
    /// query below `2^-100` in every channel scores 0. `q` must be finite.
    /// Panics if `d` is not a multiple of 32 or above 4096, or `a` is shorter
    /// than `out.len() d / 2`.
    pub u4_row_dots: fn(a: &[u8], q: &[f32], out: &mut [f32]),
    /// Weighted sum of 4-bit code rows with one weight per row and 32-channel
    /// group: `out[c] += sum_{i < m} w[i G + c / 32] code(a_i, c)`, `dv =
    /// out.len()` (a multiple of 32), `G = dv / 32`, `m = w.len() / G`;
    /// per column the sum runs over the rows in order in f32, then is added
    /// to `out`. Panics if `dv` is not a multiple of 32 or `a` is shorter
    /// than `m dv / 2`.
    pub u4_rows: fn(w: &[f32], a: &[u8], out: &mut [f32]),
    /// Scores of 4-bit code rows against `m` queries at once (a GQA group,
    /// a prefill block): `q` is `m x d` row-major, `m = q.len() / d`, `n =
    /// out.len() / m`, and `out[i n + t] = sum_c q[i d + c] code(a_t, c)`
    /// for `i < m`, `t < n`, rows in the nibble layout of
    /// [`Kernels::u4_row_dots`]. Each code row is decoded once and applied
    /// to every query (three at a time at AVX2). Per result the arithmetic
    /// is that of [`Kernels::u4_row_dots`] (exact integer sums of the
    /// fixed-point query), so `out` equals `m` single calls bitwise. `m = 0`
    /// (empty `q`) does nothing. Panics if `d` is 0, above 4096 or not a
    /// multiple of 32, `q.len()`
    /// not a multiple of `d`, `out.len()` not a multiple of `m`, or `a`
    /// shorter than `n d / 2`.
    pub u4_row_dots_multi: fn(a: &[u8], q: &[f32], d: usize, out: &mut [f32]),
    /// Weighted sums of 4-bit code rows for `m` weight sets at once: `out` is
    /// `m x dv`, `m = out.len() / dv`, `G = dv / 32`; `w` is `m x (n G)`
    /// row-major (set `i` is `w[i n G..(i + 1) n G]`, laid out as
    /// [`Kernels::u4_rows`] takes it), `n = w.len() / (m G)`; `out[i dv + c]
    /// += sum_{t < n} w[i n G + t G + c / 32] code(a_t, c)`. Each code row is
    /// decoded once for every set; per column the sum runs over the rows in
    /// order in f32 (FMA where the level has it) and is then added to `out`,
    /// so `out` equals `m` single [`Kernels::u4_rows`] calls bitwise. `m = 0`
    /// (empty `out`) does nothing. Panics if `dv` is 0 or not a multiple of
    /// 32, `out.len()` not a multiple of `dv`, `w.len()` not a multiple of
    /// `m G`, or `a` shorter than `n dv / 2`.
    pub u4_rows_multi: fn(w: &[f32], a: &[u8], dv: usize, out: &mut [f32]),
    /// Scores of int8 rows with a scale each: `out[i] = scale[i] (sum_c
    /// f32(a[i d + c]) q[c])`, `d = q.len()`, as [`Kernels::i16_row_dots`];
    /// returns `max_i out[i]` (-inf when `out` is empty). Panics if `a` is
    /// shorter than `out.len() d` or `scale` shorter than `out.len()`.
    #[allow(clippy::type_complexity)]
    pub i8_row_dots: fn(a: &[i8], scale: &[f32], q: &[f32], out: &mut [f32]) -> f32,
    /// Block product (batched prefill): `c[i ldc + j] += sum_p a[i rsa + p csa] b[p ldb + j]`
    /// for `i < m, j < n, p < k` (A is m x k with any strides, B k x n and C
    /// m x n row-major). The sum over `p` is formed first and then added to C.
    /// Panics (caught at the C boundary) if a slice is too short for the shape.
    pub gemm: fn(shape: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]),
    // ---- Recovery (CountSketch) kernels: `src/kernels/recovery_*.rs`,
    // checked against `recovery::reference` in `tests/recovery_kernels.rs`.
    // Hash coefficients lie in `[0, p)`, `p = 2^61 - 1`.
    /// `out[i] = ((a key(keys[i]) + c) mod p) b >> 61`, `key(x) = x mod p`,
    /// for `i < min(len)`: bitwise `hash::BucketHash::bucket`.
    pub rec_buckets:
        fn(h: &crate::recovery::hash::BucketHash, b: u32, keys: &[u64], out: &mut [u32]),
    /// `out[i] = 1 - 2 ((c3 x^3 + c2 x^2 + c1 x + c0) mod p & 1)`,
    /// `x = key(keys[i])`: bitwise `hash::SignHash::sign`.
    pub rec_signs: fn(s: &crate::recovery::hash::SignHash, keys: &[u64], out: &mut [f32]),
    /// Token `j`'s cells `slot[l R + r] = cell(l, r, h_{l,r}(j >> 4l))` and
    /// signs `slot_sign[l R + r] = s_r(j)` (`recovery::kernels::token_slots`).
    #[allow(clippy::type_complexity)]
    pub rec_token_slots: fn(
        bucket: &[crate::recovery::hash::BucketHash],
        sign: &[crate::recovery::hash::SignHash],
        shape: &crate::recovery::Shape,
        j: u64,
        slot: &mut [u32],
        slot_sign: &mut [f32],
    ),
    /// `y[slot[i] w .. +w] += sign[i] * x` (one product, one add per element:
    /// bitwise `recovery::kernels::scatter_add`). Panics on a slot past `y`.
    #[allow(clippy::type_complexity)]
    pub rec_scatter_add: fn(y: &mut [f32], w: usize, slot: &[u32], sign: &[f32], x: &[f32]),
    /// `out[c] = sum_{i<w} y[c w + i] f_i` in f64 (exact products, summation
    /// order per level: `|err| <= (w + 2) 2^-53 sum |y f|`).
    pub rec_project_dot: fn(y: &[f32], w: usize, f: &[f32], out: &mut [f64]),
    /// Planar medians: group `i < m = out.len()` is `v[r m + i]`, `r < rows`;
    /// sorts each group in place in `f64::total_cmp` order and writes
    /// `out[i]` = its middle value (odd `rows`) or `0.5 (lo + hi)` of the two
    /// middle ones: bitwise `recovery::reference::median`.
    pub rec_median: fn(v: &mut [f64], rows: usize, out: &mut [f64]),
    /// Indices of the `k` largest scores, largest first, ties to the lower
    /// index, NaN ranked as -inf: exactly `recovery::reference::top_k`.
    pub rec_top_k: fn(score: &[f64], k: usize) -> Vec<usize>,
}

/// Shape and strides of one [`Kernels::gemm`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gemm {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// A row stride.
    pub rsa: usize,
    /// A column stride.
    pub csa: usize,
    /// B row stride (`>= n`).
    pub ldb: usize,
    /// C row stride (`>= n`).
    pub ldc: usize,
}

impl Gemm {
    /// True when every index the product touches lies inside the slices.
    pub fn fits(&self, a: usize, b: usize, c: usize) -> bool {
        if self.m == 0 || self.n == 0 || self.k == 0 {
            return true;
        }
        let last = |rows: usize, rs: usize, cols: usize, cs: usize| {
            (rows - 1)
                .checked_mul(rs)
                .and_then(|x| (cols - 1).checked_mul(cs).and_then(|y| x.checked_add(y)))
        };
        self.ldb >= self.n
            && self.ldc >= self.n
            && last(self.m, self.rsa, self.k, self.csa).is_some_and(|x| x < a)
            && last(self.k, self.ldb, self.n, 1).is_some_and(|x| x < b)
            && last(self.m, self.ldc, self.n, 1).is_some_and(|x| x < c)
    }
}

/// `(m, n)` of a [`Kernels::u4_row_dots_multi`] call (queries, rows),
/// after its shape checks (panics as that field's doc says).
fn u4_multi_dots_shape(a: usize, q: usize, d: usize, out: usize) -> (usize, usize) {
    assert!(
        d > 0 && d.is_multiple_of(32),
        "u4_row_dots_multi: d not a positive multiple of 32"
    );
    assert!(d <= u4_fixed::MAX_D, "u4_row_dots_multi: d above 4096");
    assert!(
        q.is_multiple_of(d),
        "u4_row_dots_multi: q.len() not a multiple of d"
    );
    let m = q / d;
    if m == 0 {
        return (0, 0);
    }
    assert!(
        out.is_multiple_of(m),
        "u4_row_dots_multi: out.len() not a multiple of m"
    );
    let n = out / m;
    assert!(a >= n * (d / 2), "u4_row_dots_multi: a too short");
    (m, n)
}

/// `(m, n)` of a [`Kernels::u4_rows_multi`] call (weight sets, rows), after
/// its shape checks (panics as that field's doc says).
fn u4_multi_rows_shape(w: usize, a: usize, dv: usize, out: usize) -> (usize, usize) {
    assert!(
        dv > 0 && dv.is_multiple_of(32),
        "u4_rows_multi: dv not a positive multiple of 32"
    );
    assert!(
        out.is_multiple_of(dv),
        "u4_rows_multi: out.len() not a multiple of dv"
    );
    let m = out / dv;
    if m == 0 {
        return (0, 0);
    }
    let per = m * (dv / 32);
    assert!(
        w.is_multiple_of(per),
        "u4_rows_multi: w.len() not a multiple of m G"
    );
    let n = w / per;
    assert!(a >= n * (dv / 2), "u4_rows_multi: a too short");
    (m, n)
}

impl Kernels {
    /// The kernel table of `level`, or `Unsupported` if the CPU lacks it.
    pub fn for_level(level: Level) -> Result<&'static Kernels> {
        let level = level.forced()?;
        Ok(match level {
            Level::Portable => &portable::KERNELS,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => &avx2::KERNELS,
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => &avx512::KERNELS,
            #[cfg(not(target_arch = "x86_64"))]
            _ => return Err(crate::error::Error::Unsupported),
        })
    }

    /// The kernel table of [`Level::detect`].
    pub fn detect() -> &'static Kernels {
        Kernels::for_level(Level::detect()).unwrap_or(&portable::KERNELS)
    }
}
