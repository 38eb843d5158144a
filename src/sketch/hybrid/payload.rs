//! The serialized form of the hybrid state (section `EXCT` of
//! `docs/format.md`): write, check, load; version 2 still read.

use super::{ghost_len, shape, Keys, Slots, Values, MAX_INPUT, REBASE};
use crate::config::Config;
use crate::error::{Error, Result};

/// Serialized form of the hybrid state (section `EXCT`, see `docs/format.md`).
/// Format version 5:
///
/// ```text
/// u64 j (tokens seen) | u64 m (live slots) | u64 ng (live groups) | u64 window
/// f64 ew | f64 eh | u64 ghosts written (edge) | u64 ghosts written (heavy)
/// key rows (`Keys`: f32 [C d], or int16 rows, scales and residuals)
/// value rows (`Values`: f32 [C dv], or binary16 rows, scales and residuals)
/// f32 acc[C] | u64 pos[C] (absolute)
/// f64 g_n[G+1] | f32 mean_k[(G+1) d] | f32 var_k[(G+1) d] | f32 mean_v[(G+1) dv]
/// f32 ghost keys[2 GHOSTS d] (adaptive configs only: heavy_tokens > 0)
/// ```
///
/// Versions 3 and 4 (still read) are version 5 of a config with f32 keys
/// (version 3: and f32 values).
/// Version 2 (still read): 48 fixed bytes (no ghost counters), the same slot
/// arrays, then f64 sums `g_n, Sk, Sk2, Sv` and no ghosts; loading converts
/// the sums to means and variances and starts the controller afresh.
/// Whole arrays are stored (unused slots zero) so the size derives from the
/// config alone.
impl Slots {
    const FIXED_V2: usize = 48;
    const FIXED: usize = 64;

    /// Payload bytes for `cfg` (a valid hybrid config) in format `version`.
    pub fn payload_len(cfg: &Config, version: u32) -> usize {
        let (c, _, _, _, g) = shape(cfg);
        let (d, dv) = (cfg.head_dim as usize, cfg.value_dim as usize);
        let sinks = cfg.sink_tokens as usize;
        let keys = Keys::payload_len(cfg.key_format, c, d, sinks);
        let vals = Values::payload_len(cfg.value_format, c, dv, sinks);
        let slots = keys + vals + c * 4 + c * 8;
        if version < 3 {
            Self::FIXED_V2 + slots + (g + 1) * (1 + 2 * d + dv) * 8
        } else {
            Self::FIXED + slots + (g + 1) * 8 + (g + 1) * (2 * d + dv) * 4 + ghost_len(cfg) * 4
        }
    }

    /// Appends the payload (little-endian, current version) through `put`.
    pub fn write_payload(&self, put: &mut dyn FnMut(&[u8])) {
        for x in [self.j, self.m as u64, self.ng as u64, self.window as u64] {
            put(&x.to_le_bytes());
        }
        put(&self.ew.to_le_bytes());
        put(&self.eh.to_le_bytes());
        put(&self.gh_seen[0].to_le_bytes());
        put(&self.gh_seen[1].to_le_bytes());
        self.keys.write_payload(put);
        self.vals.write_payload(put);
        for x in self.acc.iter() {
            put(&x.to_le_bytes());
        }
        for (i, &p) in self.pos.iter().enumerate() {
            let abs = if i < self.m.min(self.sinks) {
                i as u64
            } else if i < self.m {
                self.base + p as u64
            } else {
                0
            };
            put(&abs.to_le_bytes());
        }
        for x in &self.g_n {
            put(&x.to_le_bytes());
        }
        for arr in [&self.g_mk, &self.g_vk, &self.g_mv, &self.gh_k] {
            for x in arr.iter() {
                put(&x.to_le_bytes());
            }
        }
    }

    /// Tokens seen, as stored in a payload of the right length.
    pub fn payload_tokens(p: &[u8]) -> u64 {
        u64::from_le_bytes(p[..8].try_into().unwrap_or([0xFF; 8]))
    }

    /// Checks a payload of exactly `payload_len(cfg, version)` bytes: counts
    /// in range, the window within its bounds, every value finite and within
    /// the hybrid input range, positions older than `j` with the sinks first
    /// (slot i < sinks holds position i), no live position below the load
    /// base, unused slots at position 0, group counts whole and >= 1,
    /// variances >= 0, and every token accounted for: `m + sum_g N_g = j`.
    pub fn check_payload(cfg: &Config, p: &[u8], version: u32) -> Result<()> {
        let (c, _, w_min, w_max, g) = shape(cfg);
        let (d, dv) = (cfg.head_dim as usize, cfg.value_dim as usize);
        if p.len() != Self::payload_len(cfg, version) {
            return Err(Error::Corrupt);
        }
        let u = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().unwrap());
        let (j, m, ng, w) = (u(0), u(1), u(2), u(3));
        let (ew, eh) = (f64::from_bits(u(4)), f64::from_bits(u(5)));
        if m > c as u64 || ng > g as u64 || w < w_min as u64 || w > w_max as u64 || m > j {
            return Err(Error::Corrupt);
        }
        if !(ew.is_finite() && ew >= 0.0 && eh.is_finite() && eh >= 0.0) {
            return Err(Error::Corrupt);
        }
        let mut off = if version < 3 {
            Self::FIXED_V2
        } else {
            Self::FIXED
        };
        let f32_at = |o: usize| f32::from_le_bytes(p[o..o + 4].try_into().unwrap());
        let f64_at = |o: usize| f64::from_le_bytes(p[o..o + 8].try_into().unwrap());
        let in_range = |x: f64| x.is_finite() && x.abs() <= MAX_INPUT as f64;
        let klen = Keys::payload_len(cfg.key_format, c, d, cfg.sink_tokens as usize);
        Keys::check_payload(cfg.key_format, c, d, &p[off..off + klen], MAX_INPUT)?;
        off += klen;
        let vlen = Values::payload_len(cfg.value_format, c, dv, cfg.sink_tokens as usize);
        Values::check_payload(cfg.value_format, c, dv, &p[off..off + vlen], MAX_INPUT)?;
        off += vlen;
        for i in 0..c {
            let x = f32_at(off + 4 * i);
            if !(x.is_finite() && x >= 0.0) {
                return Err(Error::Corrupt);
            }
        }
        off += 4 * c;
        let sinks = cfg.sink_tokens as u64;
        // The base `load_payload` derives: positions below it would load
        // clamped to it (as the running state clamps them), so a canonical
        // buffer has none; unused slots are written as 0 (since version 3).
        let base = (j / REBASE).saturating_sub(1) * REBASE;
        for i in 0..c {
            let pos = u64::from_le_bytes(p[off + 8 * i..off + 8 * i + 8].try_into().unwrap());
            let ok = if i as u64 >= m {
                pos == 0 || version < 3 // version 2 left stale positions there
            } else if (i as u64) < sinks {
                pos == i as u64
            } else {
                pos >= sinks && pos >= base && pos < j
            };
            if !ok {
                return Err(Error::Corrupt);
            }
        }
        off += 8 * c;
        let mut total = 0.0f64;
        let n_off = off;
        for i in 0..g + 1 {
            let x = f64_at(off + 8 * i);
            let live = (i as u64) < ng;
            if !(x.is_finite() && x.fract() == 0.0 && if live { x >= 1.0 } else { x >= 0.0 }) {
                return Err(Error::Corrupt);
            }
            if live {
                total += x;
            }
        }
        if total + m as f64 != j as f64 {
            return Err(Error::Corrupt);
        }
        off += 8 * (g + 1);
        let rows = [(d, false), (d, true), (dv, false)];
        if version < 3 {
            // Sums: their means must lie in the input range (second moments
            // in its square), so the conversion stays finite in f32.
            for &(w, sq) in &rows {
                for i in 0..(g + 1) * w {
                    let x = f64_at(off + 8 * i) / f64_at(n_off + 8 * (i / w)).max(1.0);
                    let ok = if sq {
                        x >= 0.0 && x.sqrt() <= MAX_INPUT as f64
                    } else {
                        in_range(x)
                    };
                    if !ok {
                        return Err(Error::Corrupt);
                    }
                }
                off += 8 * (g + 1) * w;
            }
        } else {
            for &(w, sq) in &rows {
                for i in 0..(g + 1) * w {
                    let x = f32_at(off + 4 * i) as f64;
                    let ok = if sq {
                        x >= 0.0 && x.is_finite() && x.sqrt() <= MAX_INPUT as f64
                    } else {
                        in_range(x)
                    };
                    if !ok {
                        return Err(Error::Corrupt);
                    }
                }
                off += 4 * (g + 1) * w;
            }
            for i in 0..ghost_len(cfg) {
                if !in_range(f32_at(off + 4 * i) as f64) {
                    return Err(Error::Corrupt);
                }
            }
        }
        Ok(())
    }

    /// Loads a checked payload of format `version` into a fresh state of
    /// the same config.
    pub fn load_payload(&mut self, p: &[u8], version: u32) {
        let (d, dv) = (self.d, self.dv);
        let u = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().unwrap());
        self.j = u(0);
        self.m = u(1) as usize;
        self.ng = u(2) as usize;
        self.window = u(3) as usize;
        let mut off = if version < 3 {
            // The v2 controller's EMAs measured something else: start afresh.
            (self.ew, self.eh, self.gh_seen) = (0.0, 0.0, [0; 2]);
            Self::FIXED_V2
        } else {
            (self.ew, self.eh) = (f64::from_bits(u(4)), f64::from_bits(u(5)));
            self.gh_seen = [u(6), u(7)];
            Self::FIXED
        };
        let f32_at = |o: usize| f32::from_le_bytes(p[o..o + 4].try_into().unwrap());
        let f64_at = |o: usize| f64::from_le_bytes(p[o..o + 8].try_into().unwrap());
        let c = self.cap;
        let keys_at = off;
        off += Keys::payload_len(self.keys.format(), c, d, self.sinks);
        let vals_at = off;
        off += Values::payload_len(self.vals.format(), c, dv, self.sinks);
        for x in self.acc.iter_mut() {
            *x = f32_at(off);
            off += 4;
        }
        // Positions relative to a base with j - base < 2 REBASE.
        self.base = (self.j / REBASE).saturating_sub(1) * REBASE;
        let pos_at = off;
        for x in self.pos.iter_mut() {
            *x = u64::from_le_bytes(p[off..off + 8].try_into().unwrap()).saturating_sub(self.base)
                as u32;
            off += 8;
        }
        let abs = |i: usize| {
            u64::from_le_bytes(p[pos_at + 8 * i..pos_at + 8 * i + 8].try_into().unwrap())
        };
        self.keys
            .load_payload(&p[keys_at..vals_at], self.m, self.j, abs);
        self.vals
            .load_payload(&p[vals_at..pos_at - 4 * c], self.m, self.j, abs);
        for x in self.g_n.iter_mut() {
            *x = f64_at(off);
            off += 8;
        }
        if version < 3 {
            let g1 = self.g_n.len();
            let (sk, sk2, sv) = (off, off + 8 * g1 * d, off + 16 * g1 * d);
            for g in 0..g1 {
                let inv = if self.g_n[g] > 0.0 {
                    1.0 / self.g_n[g]
                } else {
                    0.0
                };
                for cc in 0..d {
                    let mk = f64_at(sk + 8 * (g * d + cc)) * inv;
                    let m2 = f64_at(sk2 + 8 * (g * d + cc)) * inv;
                    self.g_mk[g * d + cc] = mk as f32;
                    self.g_vk[g * d + cc] = (m2 - mk * mk).max(0.0) as f32;
                }
                for cc in 0..dv {
                    self.g_mv[g * dv + cc] = (f64_at(sv + 8 * (g * dv + cc)) * inv) as f32;
                }
            }
        } else {
            for arr in [
                &mut self.g_mk,
                &mut self.g_vk,
                &mut self.g_mv,
                &mut self.gh_k,
            ] {
                for x in arr.iter_mut() {
                    *x = f32_at(off);
                    off += 4;
                }
            }
        }
    }
}
