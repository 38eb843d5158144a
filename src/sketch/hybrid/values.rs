//! Value rows of the exact slots: plain f32, or binary16 (`value_format` 1).
//!
//! Binary16 rows: `v ~ 2^e h` with `h = f16(v / 2^e)` and one power-of-two
//! scale per row, `2^e` chosen so `max_c |v_c| / 2^e` lies in `[2^13, 2^14)`
//! (any input up to the hybrid range fits; relative precision is the
//! format's 2^-11 for every element down to 2^-27 of the row maximum).
//! Sinks and the `R` newest tokens also keep the exact residual
//! `lo = v - 2^e h` (f32, exact; see `residuals`).
//!
//! ```text
//! sum_i w_i v_i = sum_i (w_i 2^e_i) h_i + sum_{r live} w_slot(r) lo_r
//! ```
//! (the first sum by the level's `Kernels::f16_rows`: binary16 -> f32 and
//! FMA in registers, the scaled weights `w_i 2^e_i` of up to
//! `BLOCK (dv + 1)` rows at a time in the caller's scratch;
//! `R = clamp(C / 64, 1, 64)`).
//! Measured (exact attention over all 8192 tokens of a head, rows n/2..n):
//! rounding every value gives 1.2e-4..1.6e-4 relative error; with exact sinks
//! and 64 exact newest rows, 2e-6..2.7e-5.

use super::residuals::Residuals;
use crate::error::{try_vec, Error, Result};
use crate::kernels::{Gemm, Kernels};

/// The weighted sum's scratch is `BLOCK (dv + 1)` f32 (scaled weights of
/// that many rows per kernel call). It was a converted 16-row block plus its
/// weights before `f16_rows`; the size was kept so that the memory formula
/// and the presets' capacities did not change.
pub const BLOCK: usize = 16;
/// `(2^e, halves)` of one row (see the module doc) into `h`; returns the scale.
fn encode(v: &[f32], h: &mut [u16]) -> f32 {
    let amax = v.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    let e = if amax > 0.0 {
        (amax.log2().floor() as i32 - 13).clamp(-126, 127)
    } else {
        0
    };
    // floor(log2) from a float log may be off by one near powers of two.
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    let mut e = e;
    while e < 127 && amax / pow2(e) >= 16384.0 {
        e += 1;
    }
    while e > -126 && amax > 0.0 && amax / pow2(e - 1) < 16384.0 {
        e -= 1;
    }
    let scale = f32::from_bits(((e + 127) as u32) << 23);
    let inv = 1.0 / scale;
    for (o, &x) in h.iter_mut().zip(v) {
        *o = half::f16::from_f32(x * inv).to_bits();
    }
    scale
}

/// Value storage of the exact slots.
#[derive(Clone, Debug)]
pub enum Values {
    /// `C x dv` f32 rows, and dv.
    F32(Vec<f32>, usize),
    /// Binary16 rows with scales and exact residuals.
    F16(Half),
}

/// Binary16 rows (see the module doc).
#[derive(Clone, Debug)]
pub struct Half {
    dv: usize,
    /// `C x dv` binary16 bits.
    h: Vec<u16>,
    /// `C` power-of-two row scales.
    scale: Vec<f32>,
    /// Exact residuals of the sinks and the newest rows.
    res: Residuals,
}

impl Values {
    /// Empty storage for `cap` slots (`format`: 0 f32, 1 binary16).
    pub fn new(format: u32, cap: usize, dv: usize, sinks: usize) -> Result<Self> {
        let cap_dv = cap.checked_mul(dv).ok_or(Error::InvalidArg)?;
        Ok(if format == 0 {
            Values::F32(try_vec(cap_dv, 0.0)?, dv)
        } else {
            Values::F16(Half {
                dv,
                h: try_vec(cap_dv, 0)?,
                scale: try_vec(cap, 1.0)?,
                res: Residuals::new(cap, dv, sinks)?,
            })
        })
    }

    /// Bytes `new` allocates, plus the weighted sum's scratch
    /// (`scratch_len` f32).
    pub fn bytes_for(format: u32, cap: usize, dv: usize, sinks: usize) -> usize {
        if format == 0 {
            cap * dv * 4
        } else {
            let rows = Residuals::rows_for(cap, sinks);
            cap * dv * 2 + cap * 4 + rows * (dv * 4 + 4) + Self::scratch_len(format, dv) * 4
        }
    }

    /// f32 scratch of `weighted_sum`: scaled weights of `BLOCK (dv + 1)` rows.
    pub fn scratch_len(format: u32, dv: usize) -> usize {
        if format == 0 {
            0
        } else {
            BLOCK * (dv + 1)
        }
    }

    /// Bytes owned (capacities; the scratch lives with the caller).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Values::F32(v, _) => v.capacity() * 4,
            Values::F16(h) => h.h.capacity() * 2 + h.scale.capacity() * 4 + h.res.heap_bytes(),
        }
    }

    /// The format code (0 f32, 1 binary16).
    pub fn format(&self) -> u32 {
        match self {
            Values::F32(..) => 0,
            Values::F16(_) => 1,
        }
    }

    /// Stores `v` in `slot`, the newest token, at absolute position `p`.
    pub fn store(&mut self, slot: usize, p: u64, v: &[f32]) {
        match self {
            Values::F32(a, dv) => a[slot * *dv..(slot + 1) * *dv].copy_from_slice(v),
            Values::F16(h) => {
                let dv = h.dv;
                let hs = &mut h.h[slot * dv..(slot + 1) * dv];
                let scale = encode(v, hs);
                h.scale[slot] = scale;
                let hs = &h.h[slot * dv..(slot + 1) * dv];
                h.res
                    .store(slot, p, v, |c| scale * half::f16::from_bits(hs[c]).to_f32());
            }
        }
    }

    /// The value of `slot` (position `p`) into `out`: exact where a residual
    /// is live, else the binary16 row.
    pub fn get(&self, slot: usize, p: u64, out: &mut [f32]) {
        match self {
            Values::F32(a, dv) => out.copy_from_slice(&a[slot * dv..(slot + 1) * dv]),
            Values::F16(h) => {
                let dv = h.dv;
                let s = h.scale[slot];
                for (o, &b) in out.iter_mut().zip(&h.h[slot * dv..(slot + 1) * dv]) {
                    *o = s * half::f16::from_bits(b).to_f32();
                }
                h.res.add_into(slot, p, out);
            }
        }
    }

    /// `slot` (position `p`) leaves the exact set.
    pub fn evicted(&mut self, slot: usize, p: u64) {
        if let Values::F16(h) = self {
            h.res.evicted(slot, p);
        }
    }

    /// The row of slot `from` (position `p`) moves to slot `to`.
    pub fn moved(&mut self, from: usize, to: usize, p: u64) {
        match self {
            Values::F32(a, dv) => a.copy_within(from * *dv..(from + 1) * *dv, to * *dv),
            Values::F16(h) => {
                let dv = h.dv;
                h.h.copy_within(from * dv..(from + 1) * dv, to * dv);
                h.scale[to] = h.scale[from];
                h.res.moved(from, to, p);
            }
        }
    }

    /// `out[..dv] += sum_{i < m} w_i v_i` (unnormalised weights `w`, m =
    /// `w.len()`); `scratch` holds `scratch_len` f32.
    pub fn weighted_sum(&self, kern: &Kernels, w: &[f32], out: &mut [f32], scratch: &mut [f32]) {
        let (m, dv) = (w.len(), out.len());
        if m == 0 {
            return;
        }
        match self {
            Values::F32(a, _) => {
                let shape = Gemm {
                    m: 1,
                    n: dv,
                    k: m,
                    rsa: m,
                    csa: 1,
                    ldb: dv,
                    ldc: dv,
                };
                (kern.gemm)(&shape, w, &a[..m * dv], out);
            }
            Values::F16(h) => {
                // Weights 2^e_i w_i of up to `scratch.len()` rows per call.
                let chunk = scratch.len();
                for b in (0..m).step_by(chunk) {
                    let rows = chunk.min(m - b);
                    let wb = &mut scratch[..rows];
                    for ((o, &x), &s) in wb.iter_mut().zip(&w[b..b + rows]).zip(&h.scale[b..]) {
                        *o = x * s;
                    }
                    (kern.f16_rows)(wb, &h.h[b * dv..(b + rows) * dv], out);
                }
                for (slot, lo) in h.res.live(m) {
                    let x = w[slot];
                    out.iter_mut().zip(lo).for_each(|(o, &l)| *o += x * l);
                }
            }
        }
    }
}

/// Largest row scale a payload may hold (`2^28`: inputs reach `2^40`).
const MAX_SCALE_EXP: u32 = 127 + 28;

/// Serialized form (inside the hybrid's `EXCT` payload, format v4):
/// f32 rows `[C dv]`, or binary16 bits `u16 [C dv] | f32 scale [C] | f32
/// residual [(sinks + R) dv]`; the owner of each residual row is derived on
/// load from the slots' positions.
impl Values {
    /// Payload bytes of the value rows.
    pub fn payload_len(format: u32, cap: usize, dv: usize, sinks: usize) -> usize {
        if format == 0 {
            cap * dv * 4
        } else {
            cap * dv * 2 + cap * 4 + Residuals::rows_for(cap, sinks) * dv * 4
        }
    }

    /// Appends the payload through `put`.
    pub fn write_payload(&self, put: &mut dyn FnMut(&[u8])) {
        match self {
            Values::F32(a, _) => a.iter().for_each(|x| put(&x.to_le_bytes())),
            Values::F16(h) => {
                h.h.iter().for_each(|x| put(&x.to_le_bytes()));
                h.scale.iter().for_each(|x| put(&x.to_le_bytes()));
                h.res.lo.iter().for_each(|x| put(&x.to_le_bytes()));
            }
        }
    }

    /// Checks a payload of `payload_len` bytes: f32 values finite with
    /// magnitude `<= max`; binary16 bits finite, scales positive powers of
    /// two `<= 2^28`, residuals finite and `<= max`.
    pub fn check_payload(format: u32, cap: usize, dv: usize, p: &[u8], max: f32) -> Result<()> {
        let f32_at = |o: usize| f32::from_le_bytes(p[o..o + 4].try_into().unwrap());
        let ok = |x: f32| x.is_finite() && x.abs() <= max;
        let bad = Err(Error::Corrupt);
        if format == 0 {
            return if (0..cap * dv).all(|i| ok(f32_at(4 * i))) {
                Ok(())
            } else {
                bad
            };
        }
        let halves = (0..cap * dv).all(|i| {
            let b = u16::from_le_bytes([p[2 * i], p[2 * i + 1]]);
            b & 0x7C00 != 0x7C00
        });
        let off = cap * dv * 2;
        let scales = (0..cap).all(|i| {
            let b = f32_at(off + 4 * i).to_bits();
            let e = b >> 23;
            b & 0x807F_FFFF == 0 && (1..=MAX_SCALE_EXP).contains(&e)
        });
        let off = off + cap * 4;
        let res = (0..(p.len() - off) / 4).all(|i| ok(f32_at(off + 4 * i)));
        if halves && scales && res {
            Ok(())
        } else {
            bad
        }
    }

    /// Loads a checked payload; `pos(i)` is the absolute position of live
    /// slot `i < m`, `j` the tokens seen (residual owners: live sinks and
    /// live slots younger than `R`).
    pub fn load_payload(&mut self, p: &[u8], m: usize, j: u64, pos: impl Fn(usize) -> u64) {
        let f32_at = |o: usize| f32::from_le_bytes(p[o..o + 4].try_into().unwrap());
        match self {
            Values::F32(a, _) => {
                for (i, x) in a.iter_mut().enumerate() {
                    *x = f32_at(4 * i);
                }
            }
            Values::F16(h) => {
                for (i, x) in h.h.iter_mut().enumerate() {
                    *x = u16::from_le_bytes([p[2 * i], p[2 * i + 1]]);
                }
                let mut off = h.h.len() * 2;
                for x in h.scale.iter_mut().chain(h.res.lo.iter_mut()) {
                    *x = f32_at(off);
                    off += 4;
                }
                h.res.set_owners(m, j, pos);
            }
        }
    }
}
