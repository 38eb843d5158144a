//! The sketch state `M = sum_j phi_k(k_j) v_j^T` (t x dv) and
//! `z = sum_j phi_k(k_j)` (t), held as compensated f32.
//!
//! Each of M and z is split into a total `s` and a block accumulator `d`,
//! with value `s + d`. Tokens add into `d`; every [`FLUSH_INTERVAL`] tokens
//! an error-free TwoSum moves `d` into `s` and leaves the rounding residual
//! in `d`. Because `d` only ever holds one block of increments plus a residual
//! below one ulp of `s`, the accumulated error is at most about
//! `FLUSH_INTERVAL * 2^-24 * sum_j |increment_j|` (+ `n 2^-48 |M|`): a
//! relative bound of ~4e-6 that does not grow with the stream length, where
//! plain f32 sums stagnate once `|M|` passes `2^24` increments.
//!
//! Bytes: `8 t (dv + 1)`.

use crate::error::{try_vec, Result};
use crate::kernels::Kernels;

/// Tokens between two flushes of the block accumulators.
pub const FLUSH_INTERVAL: u32 = 64;

/// Compensated M and z.
#[derive(Clone, Debug)]
pub struct State {
    /// M total, t x dv row-major.
    pub(crate) s: Vec<f32>,
    /// M block accumulator, t x dv.
    pub(crate) d: Vec<f32>,
    /// z total, t.
    pub(crate) zs: Vec<f32>,
    /// z block accumulator, t.
    pub(crate) zd: Vec<f32>,
    /// Tokens added to `d` since the last flush.
    pub(crate) since_flush: u32,
}

impl State {
    /// All-zero state for `t` features and `dv` value columns.
    pub fn new(t: usize, dv: usize) -> Result<Self> {
        let n = t.checked_mul(dv).ok_or(crate::Error::InvalidArg)?;
        Ok(State {
            s: try_vec(n, 0.0)?,
            d: try_vec(n, 0.0)?,
            zs: try_vec(t, 0.0)?,
            zd: try_vec(t, 0.0)?,
            since_flush: 0,
        })
    }

    /// Bytes of the four arrays.
    pub fn heap_bytes(&self) -> usize {
        (self.s.capacity() + self.d.capacity() + self.zs.capacity() + self.zd.capacity()) * 4
    }

    /// Counts one absorbed token and flushes when a block is full.
    #[inline]
    pub(crate) fn tick(&mut self, k: &Kernels) {
        self.since_flush += 1;
        if self.since_flush >= FLUSH_INTERVAL {
            self.flush(k);
        }
    }

    /// Moves the block accumulators into the totals (error-free).
    pub(crate) fn flush(&mut self, k: &Kernels) {
        (k.flush)(&mut self.s, &mut self.d);
        (k.flush)(&mut self.zs, &mut self.zd);
        self.since_flush = 0;
    }

    /// M as f64 (`s + d` summed exactly in f64), t x dv row-major.
    pub fn m_f64(&self) -> Vec<f64> {
        self.s
            .iter()
            .zip(&self.d)
            .map(|(&a, &b)| a as f64 + b as f64)
            .collect()
    }

    /// z as f64, length t.
    pub fn z_f64(&self) -> Vec<f64> {
        self.zs
            .iter()
            .zip(&self.zd)
            .map(|(&a, &b)| a as f64 + b as f64)
            .collect()
    }
}
