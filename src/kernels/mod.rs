//! Compute kernels, one implementation per CPU [`Level`], all with the same
//! signatures, collected in a [`Kernels`] table chosen once per handle.
//!
//! Shapes: `t` features, `dv` value columns; `M` halves `s`, `d` are `t x dv`
//! row-major, `z` halves `zs`, `zd` have length `t`. The state value is
//! `M = s + d` (see `sketch::state` for why it is split).
//! Each kernel's math is stated on its field and checked against
//! `crate::reference` in `tests/kernels.rs` for every level.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod level;
pub mod portable;

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
    /// Fused causal pass over the rows of M: for each feature `i`,
    /// `d_i += phik_i v` and `acc += phiq_i (s_i + d_i)` (after the update).
    pub absorb_query:
        fn(s: &[f32], d: &mut [f32], phik: &[f32], v: &[f32], phiq: &[f32], acc: &mut [f32]),
    /// `d_i += phik_i v` for each row `i` (non-causal append).
    pub absorb: fn(d: &mut [f32], phik: &[f32], v: &[f32]),
    /// `acc += sum_i phiq_i (s_i + d_i)` (read-only query).
    pub query: fn(s: &[f32], d: &[f32], phiq: &[f32], acc: &mut [f32]),
    /// `acc += sum_i phiq_i s_i` (read-only query of the flushed total alone).
    pub query_s: fn(s: &[f32], phiq: &[f32], acc: &mut [f32]),
    /// `(den, mag) = (sum_i phiq_i zs_i, sum_i |phiq_i zs_i|)`.
    pub query_zs: fn(zs: &[f32], phiq: &[f32]) -> (f32, f32),
    /// Fused z pass: `zd += phik`, then returns
    /// `(den, mag) = (sum_i phiq_i (zs_i + zd_i), sum_i |phiq_i (zs_i + zd_i)|)`.
    pub absorb_query_z: fn(zs: &[f32], zd: &mut [f32], phik: &[f32], phiq: &[f32]) -> (f32, f32),
    /// `zd += phik`.
    pub absorb_z: fn(zd: &mut [f32], phik: &[f32]),
    /// `(den, mag)` of the current z, as in `absorb_query_z`, without update.
    pub query_z: fn(zs: &[f32], zd: &[f32], phiq: &[f32]) -> (f32, f32),
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
    /// Block product (batched prefill): `c[i ldc + j] += sum_p a[i rsa + p csa] b[p ldb + j]`
    /// for `i < m, j < n, p < k` (A is m x k with any strides, B k x n and C
    /// m x n row-major). The sum over `p` is formed first and then added to C.
    /// Panics (caught at the C boundary) if a slice is too short for the shape.
    pub gemm: fn(shape: &Gemm, a: &[f32], b: &[f32], c: &mut [f32]),
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
