//! Key rows of the exact slots: plain f32, or int16 with a row scale
//! (`key_format` 1, `AS_KEYS_I16`).
//!
//! Int16 rows: `k ~ s n` with `s = max_c |k_c| / 32767` (f32) and
//! `n_c = round(k_c / s)`, so every element is within `s / 2` of the key:
//! 2^-16 of the row's largest element. The score error `q . (k - s n)` is
//! bounded by the largest coordinates, which carry the dot product; binary16
//! keys (relative 2^-11 per element) err ~10x more. Sinks and the `R` newest
//! tokens also keep the exact residual `lo = k - s n` (`residuals`):
//!
//! ```text
//! q . k_i = s_i (q . n_i) + [i in sinks, newest R] q . lo_i
//! ```
//!
//! (the first term by the level's `Kernels::i16_row_dots`).
//! Measured in numpy (exact attention over all 8192 tokens, rows n/2..n, 8
//! heads of three texts): rounding every non-sink key gives 4e-6..1e-4
//! relative error for int16 and 4e-5..1.1e-3 for binary16; with the 64 newest
//! keys exact, int16 gives 2e-6..2.7e-5. At d = 64 a key costs 132 bytes
//! instead of 256.

use super::residuals::Residuals;
use crate::error::{try_vec, Error, Result};
use crate::kernels::Kernels;

/// Largest int16 magnitude used (symmetric range).
const QMAX: f32 = 32767.0;

/// Key storage of the exact slots.
#[derive(Clone, Debug)]
pub enum Keys {
    /// `C x d` f32 rows, and d.
    F32(Vec<f32>, usize),
    /// Int16 rows with scales and exact residuals.
    I16(Fixed),
}

/// Int16 rows (see the module doc).
#[derive(Clone, Debug)]
pub struct Fixed {
    d: usize,
    /// `C x d` int16 rows.
    n: Vec<i16>,
    /// `C` row scales `s >= 0`.
    scale: Vec<f32>,
    /// Exact residuals of the sinks and the newest rows.
    res: Residuals,
}

/// `(s, n)` of one row into `n`; returns `s`.
fn encode(k: &[f32], n: &mut [i16]) -> f32 {
    let amax = k.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    if amax == 0.0 {
        n.fill(0);
        return 0.0;
    }
    let s = amax / QMAX;
    let inv = 1.0 / s;
    for (o, &x) in n.iter_mut().zip(k) {
        *o = (x * inv).round().clamp(-QMAX, QMAX) as i16;
    }
    s
}

impl Keys {
    /// Empty storage for `cap` slots (`format`: 0 f32, 1 int16).
    pub fn new(format: u32, cap: usize, d: usize, sinks: usize) -> Result<Self> {
        let cap_d = cap.checked_mul(d).ok_or(Error::InvalidArg)?;
        Ok(if format == 0 {
            Keys::F32(try_vec(cap_d, 0.0)?, d)
        } else {
            Keys::I16(Fixed {
                d,
                n: try_vec(cap_d, 0)?,
                scale: try_vec(cap, 0.0)?,
                res: Residuals::new(cap, d, sinks)?,
            })
        })
    }

    /// Bytes `new` allocates.
    pub fn bytes_for(format: u32, cap: usize, d: usize, sinks: usize) -> usize {
        if format == 0 {
            cap * d * 4
        } else {
            cap * d * 2 + cap * 4 + Residuals::rows_for(cap, sinks) * (d * 4 + 4)
        }
    }

    /// Bytes owned (capacities).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Keys::F32(k, _) => k.capacity() * 4,
            Keys::I16(f) => f.n.capacity() * 2 + f.scale.capacity() * 4 + f.res.heap_bytes(),
        }
    }

    /// The format code (0 f32, 1 int16).
    pub fn format(&self) -> u32 {
        match self {
            Keys::F32(..) => 0,
            Keys::I16(_) => 1,
        }
    }

    /// Stores `k` in `slot`, the newest token, at absolute position `p`.
    pub fn store(&mut self, slot: usize, p: u64, k: &[f32]) {
        match self {
            Keys::F32(a, d) => a[slot * *d..(slot + 1) * *d].copy_from_slice(k),
            Keys::I16(f) => {
                let d = f.d;
                let s = encode(k, &mut f.n[slot * d..(slot + 1) * d]);
                f.scale[slot] = s;
                let n = &f.n[slot * d..(slot + 1) * d];
                f.res.store(slot, p, k, |c| s * n[c] as f32);
            }
        }
    }

    /// The key of `slot` (position `p`) into `out`: exact where a residual
    /// is live, else `s n`.
    pub fn get(&self, slot: usize, p: u64, out: &mut [f32]) {
        match self {
            Keys::F32(a, d) => out.copy_from_slice(&a[slot * d..(slot + 1) * d]),
            Keys::I16(f) => {
                let (d, s) = (f.d, f.scale[slot]);
                for (o, &x) in out.iter_mut().zip(&f.n[slot * d..(slot + 1) * d]) {
                    *o = s * x as f32;
                }
                f.res.add_into(slot, p, out);
            }
        }
    }

    /// `slot` (position `p`) leaves the exact set.
    pub fn evicted(&mut self, slot: usize, p: u64) {
        if let Keys::I16(f) = self {
            f.res.evicted(slot, p);
        }
    }

    /// The row of slot `from` (position `p`) moves to slot `to`.
    pub fn moved(&mut self, from: usize, to: usize, p: u64) {
        match self {
            Keys::F32(a, d) => a.copy_within(from * *d..(from + 1) * *d, to * *d),
            Keys::I16(f) => {
                let d = f.d;
                f.n.copy_within(from * d..(from + 1) * d, to * d);
                f.scale[to] = f.scale[from];
                f.res.moved(from, to, p);
            }
        }
    }

    /// Scores `out[i] = q . k_i` of the slots `i < out.len()`; returns
    /// `max_i out[i]` (-inf for no rows). For int16 keys the rows with
    /// residuals are corrected after the kernel; when the kernel's maximum
    /// was one of them, the true maximum takes one more pass over `out`
    /// (a bound would do for the softmax's shift, but a loose one
    /// underflows every weight: with |q| ~ 1e10 the rounded score of a sink
    /// can exceed its exact one by 1e5).
    pub fn dots(&self, kern: &Kernels, q: &[f32], out: &mut [f32]) -> f32 {
        let m = out.len();
        match self {
            Keys::F32(a, d) => (kern.row_dots)(&a[..m * d], q, out),
            Keys::I16(f) => {
                let kmax = (kern.i16_row_dots)(&f.n[..m * f.d], &f.scale[..m], q, out);
                let (mut xmax, mut stale) = (kmax, false);
                let mut one = [0.0f32];
                for (slot, lo) in f.res.live(m) {
                    stale |= out[slot] == kmax;
                    (kern.row_dots)(lo, q, &mut one);
                    out[slot] += one[0];
                    xmax = xmax.max(out[slot]);
                }
                if stale {
                    max_of(out)
                } else {
                    xmax
                }
            }
        }
    }
}

/// `max_i x_i` (-inf for none; NaN entries are skipped), eight
/// independent lanes so the compiler can keep it in vector registers.
fn max_of(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for ch in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(ch) {
            *l = if v > *l { v } else { *l };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    lanes.iter().fold(tail, |a, &v| a.max(v))
}

/// Largest int16 row scale a payload may hold: `MAX_INPUT / 32767`.
fn max_scale(max: f32) -> f32 {
    max / QMAX
}

/// Serialized form (inside the hybrid's `EXCT` payload, format v5): f32 rows
/// `[C d]`, or int16 rows `i16 [C d] | f32 scale [C] | f32 residual
/// [(sinks + R) d]`; residual owners are derived on load from the slots'
/// positions, as for the values.
impl Keys {
    /// Payload bytes of the key rows.
    pub fn payload_len(format: u32, cap: usize, d: usize, sinks: usize) -> usize {
        if format == 0 {
            cap * d * 4
        } else {
            cap * d * 2 + cap * 4 + Residuals::rows_for(cap, sinks) * d * 4
        }
    }

    /// Appends the payload through `put`.
    pub fn write_payload(&self, put: &mut dyn FnMut(&[u8])) {
        match self {
            Keys::F32(a, _) => a.iter().for_each(|x| put(&x.to_le_bytes())),
            Keys::I16(f) => {
                f.n.iter().for_each(|x| put(&x.to_le_bytes()));
                f.scale.iter().for_each(|x| put(&x.to_le_bytes()));
                f.res.lo.iter().for_each(|x| put(&x.to_le_bytes()));
            }
        }
    }

    /// Checks a payload of `payload_len` bytes: f32 keys finite with
    /// magnitude `<= max`; int16 rows in `[-32767, 32767]`, scales finite in
    /// `[0, max / 32767]`, residuals finite and `<= max`.
    pub fn check_payload(format: u32, cap: usize, d: usize, p: &[u8], max: f32) -> Result<()> {
        let f32_at = |o: usize| f32::from_le_bytes(p[o..o + 4].try_into().unwrap());
        let ok = |x: f32| x.is_finite() && x.abs() <= max;
        let good = if format == 0 {
            (0..cap * d).all(|i| ok(f32_at(4 * i)))
        } else {
            let rows =
                (0..cap * d).all(|i| i16::from_le_bytes([p[2 * i], p[2 * i + 1]]) != i16::MIN);
            let off = cap * d * 2;
            let smax = max_scale(max);
            let scales = (0..cap).all(|i| {
                let s = f32_at(off + 4 * i);
                s.is_finite() && (0.0..=smax).contains(&s)
            });
            let off = off + cap * 4;
            let res = (0..(p.len() - off) / 4).all(|i| ok(f32_at(off + 4 * i)));
            rows && scales && res
        };
        if good {
            Ok(())
        } else {
            Err(Error::Corrupt)
        }
    }

    /// Loads a checked payload; `pos(i)` is the absolute position of live
    /// slot `i < m`, `j` the tokens seen.
    pub fn load_payload(&mut self, p: &[u8], m: usize, j: u64, pos: impl Fn(usize) -> u64) {
        let f32_at = |o: usize| f32::from_le_bytes(p[o..o + 4].try_into().unwrap());
        match self {
            Keys::F32(a, _) => {
                for (i, x) in a.iter_mut().enumerate() {
                    *x = f32_at(4 * i);
                }
            }
            Keys::I16(f) => {
                for (i, x) in f.n.iter_mut().enumerate() {
                    *x = i16::from_le_bytes([p[2 * i], p[2 * i + 1]]);
                }
                let mut off = f.n.len() * 2;
                for x in f.scale.iter_mut().chain(f.res.lo.iter_mut()) {
                    *x = f32_at(off);
                    off += 4;
                }
                f.res.set_owners(m, j, pos);
            }
        }
    }
}
