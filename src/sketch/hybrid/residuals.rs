//! Exact residuals of rounded rows (binary16 values, int16 keys) for the
//! sinks and the `R` newest tokens: `lo = x - round(x)` in f32, so those rows
//! are exact. Sharp heads put most of their weight on them, and their
//! rounding error does not average out.
//!
//! Row `i < sinks` belongs to sink slot i; row `sinks + p mod R` to the token
//! at position p while it is live and younger than `R` tokens (a newer token
//! at the same row takes it over). `R = clamp(C / 64, 1, 64)`.

use crate::error::{try_vec, Result};

/// No owner (a residual row whose token was evicted or never written).
const NONE: u32 = u32::MAX;

/// Newest tokens with an exact residual, for `cap` exact slots.
pub fn fresh_rows(cap: usize) -> usize {
    (cap / 64).clamp(1, 64)
}

/// `(sinks + R) x width` residual rows and their owners.
#[derive(Clone, Debug)]
pub struct Residuals {
    width: usize,
    sinks: usize,
    fresh: usize,
    /// `(sinks + fresh) x width` residuals.
    pub lo: Vec<f32>,
    /// Slot owning each row, or `NONE`.
    slot: Vec<u32>,
}

impl Residuals {
    /// Empty rows for `cap` slots of `width` floats.
    pub fn new(cap: usize, width: usize, sinks: usize) -> Result<Self> {
        let fresh = fresh_rows(cap);
        Ok(Residuals {
            width,
            sinks,
            fresh,
            lo: try_vec((sinks + fresh) * width, 0.0)?,
            slot: try_vec(sinks + fresh, NONE)?,
        })
    }

    /// Rows kept for `cap` slots and `sinks` sinks.
    pub fn rows_for(cap: usize, sinks: usize) -> usize {
        sinks + fresh_rows(cap)
    }

    /// Bytes owned (capacities).
    pub fn heap_bytes(&self) -> usize {
        (self.lo.capacity() + self.slot.capacity()) * 4
    }

    /// Row of `slot` at position `p` (owned or not).
    fn row(&self, slot: usize, p: u64) -> usize {
        if slot < self.sinks {
            slot
        } else {
            self.sinks + (p % self.fresh as u64) as usize
        }
    }

    /// The row `slot` (position `p`) owns, if any.
    pub fn live_row(&self, slot: usize, p: u64) -> Option<usize> {
        let r = self.row(slot, p);
        (self.slot[r] == slot as u32).then_some(r)
    }

    /// Writes `lo[c] = x[c] - rounded(c)` for the newest token in `slot`
    /// (position `p`), taking the row over.
    pub fn store(&mut self, slot: usize, p: u64, x: &[f32], rounded: impl Fn(usize) -> f32) {
        let w = self.width;
        let r = self.row(slot, p);
        for (c, (o, &v)) in self.lo[r * w..(r + 1) * w].iter_mut().zip(x).enumerate() {
            *o = v - rounded(c);
        }
        self.slot[r] = slot as u32;
    }

    /// `out += lo` of `slot` (position `p`) when it owns a row.
    pub fn add_into(&self, slot: usize, p: u64, out: &mut [f32]) {
        if let Some(r) = self.live_row(slot, p) {
            let w = self.width;
            out.iter_mut()
                .zip(&self.lo[r * w..(r + 1) * w])
                .for_each(|(o, &l)| *o += l);
        }
    }

    /// `slot` (position `p`) leaves the exact set.
    pub fn evicted(&mut self, slot: usize, p: u64) {
        if let Some(r) = self.live_row(slot, p) {
            self.slot[r] = NONE;
        }
    }

    /// The token of slot `from` (position `p`) moves to slot `to`.
    pub fn moved(&mut self, from: usize, to: usize, p: u64) {
        if let Some(r) = self.live_row(from, p) {
            self.slot[r] = to as u32;
        }
    }

    /// `out += sum_{live rows} w[slot] lo` over the slots `< m`.
    pub fn add_weighted(&self, m: usize, w: &[f32], out: &mut [f32]) {
        for (slot, lo) in self.live(m) {
            let x = w[slot];
            out.iter_mut().zip(lo).for_each(|(o, &l)| *o += x * l);
        }
    }

    /// `(slot, residual row)` of every live row whose slot is `< m`.
    pub fn live(&self, m: usize) -> impl Iterator<Item = (usize, &[f32])> + '_ {
        let w = self.width;
        self.slot
            .iter()
            .enumerate()
            .filter(move |&(_, &s)| (s as usize) < m)
            .map(move |(r, &s)| (s as usize, &self.lo[r * w..(r + 1) * w]))
    }

    /// Owners after a load: live sinks and live slots younger than `R`
    /// (`pos(i)` is the absolute position of slot `i < m`, `j` the tokens
    /// seen).
    pub fn set_owners(&mut self, m: usize, j: u64, pos: impl Fn(usize) -> u64) {
        self.slot.fill(NONE);
        for i in 0..m {
            let pi = pos(i);
            if i < self.sinks || j - 1 - pi < self.fresh as u64 {
                let r = self.row(i, pi);
                self.slot[r] = i as u32;
            }
        }
    }
}
