//! Value rows of the exact slots: plain f32, binary16 (`value_format` 1) or
//! int8 (`value_format` 2).
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
//!
//! Int8 rows: `v ~ s n` with `s = max_c |v_c| / 127` (f32) and `n_c =
//! round(v_c / s)` in `[-127, 127]`, so every element is within `s / 2`;
//! the same residuals and the same sum with `Kernels::i8_rows`. A value costs
//! `dv + 4` bytes instead of `2 dv + 4`. Measured in numpy (as above, int16
//! keys, sinks and 64 newest rows exact, 14 heads of two texts): 8e-5..6.9e-3
//! relative error, largest on heads with an outlier value channel (L00H1: one
//! channel 10x the median's rms), so presets use it only at small budgets.

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
    /// Int8 rows with scales and exact residuals.
    I8(Bytes),
}

/// Int8 rows (see the module doc).
#[derive(Clone, Debug)]
pub struct Bytes {
    dv: usize,
    /// `C x dv` int8 rows.
    n: Vec<i8>,
    /// `C` row scales `s >= 0`.
    scale: Vec<f32>,
    /// Exact residuals of the sinks and the newest rows.
    res: Residuals,
}

/// Largest int8 magnitude used (symmetric range).
const QMAX8: f32 = 127.0;

/// `(s, n)` of one row into `n`; returns `s`.
fn encode_i8(v: &[f32], n: &mut [i8]) -> f32 {
    let amax = v.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    if amax == 0.0 {
        n.fill(0);
        return 0.0;
    }
    let s = amax / QMAX8;
    let inv = 1.0 / s;
    for (o, &x) in n.iter_mut().zip(v) {
        *o = (x * inv).round().clamp(-QMAX8, QMAX8) as i8;
    }
    s
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
    /// Empty storage for `cap` slots (`format`: 0 f32, 1 binary16, 2 int8).
    pub fn new(format: u32, cap: usize, dv: usize, sinks: usize) -> Result<Self> {
        let cap_dv = cap.checked_mul(dv).ok_or(Error::InvalidArg)?;
        Ok(match format {
            0 => Values::F32(try_vec(cap_dv, 0.0)?, dv),
            1 => Values::F16(Half {
                dv,
                h: try_vec(cap_dv, 0)?,
                scale: try_vec(cap, 1.0)?,
                res: Residuals::new(cap, dv, sinks)?,
            }),
            _ => Values::I8(Bytes {
                dv,
                n: try_vec(cap_dv, 0)?,
                scale: try_vec(cap, 0.0)?,
                res: Residuals::new(cap, dv, sinks)?,
            }),
        })
    }

    /// Bytes per element of the rounded rows (f32 has none).
    fn elem_bytes(format: u32) -> usize {
        if format == 2 {
            1
        } else {
            2
        }
    }

    /// Bytes `new` allocates, plus the weighted sum's scratch
    /// (`scratch_len` f32).
    pub fn bytes_for(format: u32, cap: usize, dv: usize, sinks: usize) -> usize {
        if format == 0 {
            cap * dv * 4
        } else {
            let rows = Residuals::rows_for(cap, sinks);
            cap * dv * Self::elem_bytes(format)
                + cap * 4
                + rows * (dv * 4 + 4)
                + Self::scratch_len(format, dv) * 4
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
            Values::I8(b) => b.n.capacity() + b.scale.capacity() * 4 + b.res.heap_bytes(),
        }
    }

    /// The format code (0 f32, 1 binary16, 2 int8).
    pub fn format(&self) -> u32 {
        match self {
            Values::F32(..) => 0,
            Values::F16(_) => 1,
            Values::I8(_) => 2,
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
            Values::I8(b) => {
                let dv = b.dv;
                let s = encode_i8(v, &mut b.n[slot * dv..(slot + 1) * dv]);
                b.scale[slot] = s;
                let n = &b.n[slot * dv..(slot + 1) * dv];
                b.res.store(slot, p, v, |c| s * n[c] as f32);
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
            Values::I8(b) => {
                let (dv, s) = (b.dv, b.scale[slot]);
                for (o, &x) in out.iter_mut().zip(&b.n[slot * dv..(slot + 1) * dv]) {
                    *o = s * x as f32;
                }
                b.res.add_into(slot, p, out);
            }
        }
    }

    /// `slot` (position `p`) leaves the exact set.
    pub fn evicted(&mut self, slot: usize, p: u64) {
        match self {
            Values::F32(..) => {}
            Values::F16(h) => h.res.evicted(slot, p),
            Values::I8(b) => b.res.evicted(slot, p),
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
            Values::I8(b) => {
                let dv = b.dv;
                b.n.copy_within(from * dv..(from + 1) * dv, to * dv);
                b.scale[to] = b.scale[from];
                b.res.moved(from, to, p);
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
                scaled_blocks(w, &h.scale, scratch, |wb, b| {
                    (kern.f16_rows)(wb, &h.h[b * dv..(b + wb.len()) * dv], out)
                });
                h.res.add_weighted(m, w, out);
            }
            Values::I8(n) => {
                scaled_blocks(w, &n.scale, scratch, |wb, b| {
                    (kern.i8_rows)(wb, &n.n[b * dv..(b + wb.len()) * dv], out)
                });
                n.res.add_weighted(m, w, out);
            }
        }
    }
}

/// Calls `f(w_b s_b, b)` for blocks of up to `scratch.len()` rows starting
/// at `b`: the weights times the row scales, in `scratch`.
fn scaled_blocks(w: &[f32], scale: &[f32], scratch: &mut [f32], mut f: impl FnMut(&[f32], usize)) {
    let (m, chunk) = (w.len(), scratch.len());
    for b in (0..m).step_by(chunk) {
        let rows = chunk.min(m - b);
        let wb = &mut scratch[..rows];
        for ((o, &x), &s) in wb.iter_mut().zip(&w[b..b + rows]).zip(&scale[b..]) {
            *o = x * s;
        }
        f(wb, b);
    }
}

/// Largest row scale a payload may hold (`2^28`: inputs reach `2^40`).
const MAX_SCALE_EXP: u32 = 127 + 28;

/// Serialized form (inside the hybrid's `EXCT` payload, format v4): f32
/// rows `[C dv]`; binary16 bits `u16 [C dv] | f32 scale [C] | f32 residual
/// [(sinks + R) dv]`; int8 (v5, `value_format` 2) `i8 [C dv] | f32 scale
/// [C] | f32 residual [(sinks + R) dv]`. The owner of each residual row is
/// derived on load from the slots' positions.
impl Values {
    /// Payload bytes of the value rows.
    pub fn payload_len(format: u32, cap: usize, dv: usize, sinks: usize) -> usize {
        if format == 0 {
            cap * dv * 4
        } else {
            cap * dv * Self::elem_bytes(format) + cap * 4 + Residuals::rows_for(cap, sinks) * dv * 4
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
            Values::I8(b) => {
                b.n.iter().for_each(|x| put(&x.to_le_bytes()));
                b.scale.iter().for_each(|x| put(&x.to_le_bytes()));
                b.res.lo.iter().for_each(|x| put(&x.to_le_bytes()));
            }
        }
    }

    /// Checks a payload of `payload_len` bytes: f32 values finite with
    /// magnitude `<= max`; binary16 bits finite, scales positive powers of
    /// two `<= 2^28`; int8 rows in `[-127, 127]`, scales finite in `[0, max /
    /// 127]`; residuals finite and `<= max`.
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
        let (rows, off) = if format == 2 {
            let rows = p[..cap * dv].iter().all(|&b| b as i8 != i8::MIN);
            (rows, cap * dv)
        } else {
            let halves = (0..cap * dv).all(|i| {
                let b = u16::from_le_bytes([p[2 * i], p[2 * i + 1]]);
                b & 0x7C00 != 0x7C00
            });
            (halves, cap * dv * 2)
        };
        let smax = max / QMAX8;
        let scales = (0..cap).all(|i| {
            let x = f32_at(off + 4 * i);
            if format == 2 {
                return x.is_finite() && (0.0..=smax).contains(&x);
            }
            let b = x.to_bits();
            let e = b >> 23;
            b & 0x807F_FFFF == 0 && (1..=MAX_SCALE_EXP).contains(&e)
        });
        let off = off + cap * 4;
        let res = (0..(p.len() - off) / 4).all(|i| ok(f32_at(off + 4 * i)));
        if rows && scales && res {
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
            Values::I8(b) => {
                for (x, &byte) in b.n.iter_mut().zip(p) {
                    *x = byte as i8;
                }
                let mut off = b.n.len();
                for x in b.scale.iter_mut().chain(b.res.lo.iter_mut()) {
                    *x = f32_at(off);
                    off += 4;
                }
                b.res.set_owners(m, j, pos);
            }
        }
    }
}
