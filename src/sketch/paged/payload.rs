//! The serialized form of the paged hybrid (section `EXCT` of
//! `docs/format.md` for `key_format` 2, format version 6):
//!
//! ```text
//! u64 j | u64 open rows | u64 live pages | u64 oldest page's ring index | u64 heavy slots
//! f32 sink keys [S d] | f32 sink values [S dv]
//! u16 open keys [32 d] | u16 open values [32 dv]                (binary16)
//! u8 key codes [P 32 d/2] | u16 key lo [P d] | u16 key step [P d]
//! u8 value codes [P 32 dv/2] | u16 value lo [P 32 gv] | u16 value step [...]
//! f32 window acc [P 32 + 32]   (only when H > 0)
//! i8 heavy keys [H d] | f32 heavy scales [H] | u8 heavy value codes [H dv/2]
//! u16 heavy value lo [H gv] | u16 heavy value step [H gv] | f32 heavy acc [H] | u64 heavy pos [H]
//! u32 fine planes [P]     (version >= 7: per live page 1 + the free ring slot
//!                          holding its fine plane, else 0)
//! tail (`tail::Tail::write`)
//! ```
//!
//! (`gv = dv / quant::value_group(dv)`: one group per 32 channels.) Whole arrays are stored; what is not live must be zero (canonical), so
//! the size derives from the config alone and one state has one encoding.

use super::{quant, shape, tail::Tail, Paged, PAGE};
use crate::config::Config;
use crate::error::{Error, Result};
use half::f16;

/// Fixed header bytes.
const FIXED: usize = 40;

/// Byte ranges of the payload's arrays, in order.
struct Layout {
    parts: [(usize, usize); 19],
}

impl Layout {
    fn new(cfg: &Config, version: u32) -> Self {
        let (s, p, h, _) = shape(cfg);
        let (d, dv) = (cfg.head_dim as usize, cfg.value_dim as usize);
        let gv = dv / quant::value_group(dv);
        let sizes = [
            s * d * 4,
            s * dv * 4,
            PAGE * d * 2,
            PAGE * dv * 2,
            p * PAGE * d / 2,
            p * d * 2,
            p * d * 2,
            p * PAGE * dv / 2,
            p * PAGE * gv * 2,
            p * PAGE * gv * 2,
            if h > 0 { (p * PAGE + PAGE) * 4 } else { 0 },
            h * d,
            h * 4,
            h * dv / 2,
            h * gv * 2,
            h * gv * 2,
            h * 4,
            h * 8,
            if version >= 7 { p * 4 } else { 0 },
        ];
        let mut parts = [(0, 0); 19];
        let mut at = FIXED;
        for (i, &n) in sizes.iter().enumerate() {
            parts[i] = (at, at + n);
            at += n;
        }
        Layout { parts }
    }
    fn end(&self) -> usize {
        self.parts[18].1
    }
}

fn u16s(b: &[u8]) -> impl Iterator<Item = u16> + '_ {
    b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]))
}
fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
}

impl Paged {
    /// Payload bytes for a paged config.
    pub fn payload_len(cfg: &Config, version: u32) -> usize {
        let (_, _, _, g) = shape(cfg);
        Layout::new(cfg, version).end()
            + Tail::payload_len(g, cfg.head_dim as usize, cfg.value_dim as usize)
    }

    /// Appends the payload (little-endian).
    pub fn write_payload(&self, put: &mut dyn FnMut(&[u8])) {
        for x in [
            self.j,
            self.no as u64,
            self.np as u64,
            self.head as u64,
            self.nh as u64,
        ] {
            put(&x.to_le_bytes());
        }
        for a in [&self.sk, &self.sv] {
            a.iter().for_each(|x| put(&x.to_le_bytes()));
        }
        for a in [&self.ok, &self.ov] {
            a.iter().for_each(|x| put(&x.to_le_bytes()));
        }
        put(&self.kc);
        for a in [&self.klo, &self.kst] {
            a.iter().for_each(|x| put(&x.to_le_bytes()));
        }
        put(&self.vc);
        for a in [&self.vlo, &self.vst] {
            a.iter().for_each(|x| put(&x.to_le_bytes()));
        }
        self.wacc.iter().for_each(|x| put(&x.to_le_bytes()));
        self.hk.iter().for_each(|&x| put(&[x as u8]));
        self.hs.iter().for_each(|x| put(&x.to_le_bytes()));
        put(&self.hvc);
        for a in [&self.hvlo, &self.hvst] {
            a.iter().for_each(|x| put(&x.to_le_bytes()));
        }
        self.hacc.iter().for_each(|x| put(&x.to_le_bytes()));
        self.hpos.iter().for_each(|x| put(&x.to_le_bytes()));
        self.fine.iter().for_each(|x| put(&x.to_le_bytes()));
        self.tail.write(put);
    }

    /// Checks a payload against `cfg` (length checked by the caller):
    /// counters consistent (every token seen is a sink, in a live page, the
    /// open page, a heavy slot or the tail), finite parameters in range,
    /// unused parts zero.
    pub fn check_payload(cfg: &Config, p: &[u8], version: u32) -> Result<()> {
        let mut st = Paged::new(cfg)?;
        if p.len() != Self::payload_len(cfg, version) || !st.read(cfg, p, version) {
            return Err(Error::Corrupt);
        }
        Ok(())
    }

    /// Loads a payload [`check_payload`](Self::check_payload) accepted.
    pub fn load_payload(&mut self, p: &[u8], version: u32) {
        let cfg = self.cfg_shape();
        let ok = self.read(&cfg, p, version);
        debug_assert!(ok);
    }

    /// A config with this state's shape (for the layout).
    fn cfg_shape(&self) -> Config {
        let mut c = Config::new(self.d as u32);
        c.value_dim = self.dv as u32;
        c.sink_tokens = self.sinks as u32;
        c.window_tokens = (self.pages * PAGE) as u32;
        c.heavy_tokens = self.hcap as u32;
        c.tail_groups = self.tail.groups() as u32;
        c
    }

    /// Reads and checks a payload into this (fresh) state; `false` when it
    /// is not a canonical state of `cfg`.
    fn read(&mut self, cfg: &Config, p: &[u8], version: u32) -> bool {
        let lay = Layout::new(cfg, version);
        let (d, dv) = (self.d, self.dv);
        let gv = dv / quant::value_group(dv);
        let u = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().unwrap());
        let (j, no, np, head, nh) = (u(0), u(1), u(2), u(3), u(4));
        let (s, pages, hcap) = (self.sinks as u64, self.pages as u64, self.hcap as u64);
        let ns = s.min(j);
        if no > PAGE as u64
            || np > pages
            || head >= pages.max(1)
            || nh > hcap
            || (j < s && (no | np | nh) != 0)
            || j < ns + np * PAGE as u64 + no + nh
        {
            return false;
        }
        let part = |i: usize| &p[lay.parts[i].0..lay.parts[i].1];
        let lim = quant::U4_MAX_INPUT;
        // Sinks: finite, in range, zero past the live ones.
        for (a, w, out) in [(part(0), d, &mut self.sk), (part(1), dv, &mut self.sv)] {
            for (i, (o, x)) in out.iter_mut().zip(f32s(a)).enumerate() {
                let live = ((i / w) as u64) < ns;
                if !(if live {
                    x.abs() <= lim
                } else {
                    x.to_bits() == 0
                }) {
                    return false;
                }
                *o = x;
            }
        }
        // Open rows: finite binary16 in range, zero past `no`.
        for (a, w, out) in [(part(2), d, &mut self.ok), (part(3), dv, &mut self.ov)] {
            for (i, (o, h)) in out.iter_mut().zip(u16s(a)).enumerate() {
                let live = ((i / w) as u64) < no;
                let x = f16::from_bits(h).to_f32();
                if !(if live { x.abs() <= lim } else { h == 0 }) {
                    return false;
                }
                *o = h;
            }
        }
        // Pages: live ring entries have finite parameters with step >= 0,
        // the rest is zero.
        let pgs = self.pages.max(1);
        let live_page = move |r: usize| ((r + pgs - head as usize) % pgs) < np as usize;
        self.kc.copy_from_slice(part(4));
        self.vc.copy_from_slice(part(7));
        let params = |a: &[u8], per: usize, out: &mut Vec<u16>, step: bool| -> bool {
            for (i, (o, h)) in out.iter_mut().zip(u16s(a)).enumerate() {
                let x = f16::from_bits(h).to_f32();
                let ok = if live_page(i / per) {
                    x.is_finite() && x.abs() <= 4.0 * lim && (!step || x >= 0.0)
                } else {
                    h == 0
                };
                if !ok {
                    return false;
                }
                *o = h;
            }
            true
        };
        if !(params(part(5), d, &mut self.klo, false)
            && params(part(6), d, &mut self.kst, true)
            && params(part(8), PAGE * gv, &mut self.vlo, false)
            && params(part(9), PAGE * gv, &mut self.vst, true))
        {
            return false;
        }
        // Fine planes: a live page's plane sits in a free slot no other
        // page uses; free slots' entries are zero.
        self.fine.fill(0);
        self.hosted.fill(0);
        for (r, c) in part(18).chunks_exact(4).enumerate() {
            let f = u32::from_le_bytes(c.try_into().unwrap());
            if f == 0 {
                continue;
            }
            let h = f as usize - 1;
            if !live_page(r) || h >= self.pages || live_page(h) || self.hosted[h] != 0 {
                return false;
            }
            self.fine[r] = f;
            self.hosted[h] = r as u32 + 1;
        }
        for r in 0..self.pages {
            if !live_page(r)
                && self.hosted[r] == 0
                && (self.kc[r * PAGE * d / 2..(r + 1) * PAGE * d / 2]
                    .iter()
                    .any(|&b| b != 0)
                    || self.vc[r * PAGE * dv / 2..(r + 1) * PAGE * dv / 2]
                        .iter()
                        .any(|&b| b != 0))
            {
                return false;
            }
        }
        // Accumulated attention: finite, >= 0; zero where nothing is live.
        let pg = self.pages;
        for (i, (o, x)) in self.wacc.iter_mut().zip(f32s(part(10))).enumerate() {
            let live = if i >= pg * PAGE {
                ((i - pg * PAGE) as u64) < no
            } else {
                live_page(i / PAGE)
            };
            if !(if live {
                x.is_finite() && x >= 0.0
            } else {
                x.to_bits() == 0
            }) {
                return false;
            }
            *o = x;
        }
        // Heavy slots.
        for (i, (o, &b)) in self.hk.iter_mut().zip(part(11)).enumerate() {
            if (i / d) as u64 >= nh && b != 0 {
                return false;
            }
            *o = b as i8;
        }
        let hs_ok = |i: usize, x: f32, nonneg: bool| {
            if (i as u64) < nh {
                x.is_finite() && (!nonneg || x >= 0.0) && x <= lim
            } else {
                x.to_bits() == 0
            }
        };
        for (i, (o, x)) in self.hs.iter_mut().zip(f32s(part(12))).enumerate() {
            if !hs_ok(i, x, true) {
                return false;
            }
            *o = x;
        }
        for (i, (o, &b)) in self.hvc.iter_mut().zip(part(13)).enumerate() {
            if (i / (dv / 2)) as u64 >= nh && b != 0 {
                return false;
            }
            *o = b;
        }
        for (a, out, step) in [
            (part(14), &mut self.hvlo, false),
            (part(15), &mut self.hvst, true),
        ] {
            for (i, (o, h)) in out.iter_mut().zip(u16s(a)).enumerate() {
                let x = f16::from_bits(h).to_f32();
                let ok = if ((i / gv) as u64) < nh {
                    x.is_finite() && x.abs() <= 4.0 * lim && (!step || x >= 0.0)
                } else {
                    h == 0
                };
                if !ok {
                    return false;
                }
                *o = h;
            }
        }
        for (i, (o, x)) in self.hacc.iter_mut().zip(f32s(part(16))).enumerate() {
            let ok = if (i as u64) < nh {
                x.is_finite() && x >= 0.0
            } else {
                x.to_bits() == 0
            };
            if !ok {
                return false;
            }
            *o = x;
        }
        for (i, (o, c)) in self
            .hpos
            .iter_mut()
            .zip(part(17).chunks_exact(8))
            .enumerate()
        {
            let x = u64::from_le_bytes(c.try_into().unwrap());
            let ok = if (i as u64) < nh {
                x >= s && x < j
            } else {
                x == 0
            };
            if !ok {
                return false;
            }
            *o = x;
        }
        if !self.tail.read(&p[lay.end()..]) {
            return false;
        }
        // Every token that left the window is a heavy slot or in the tail.
        let left = j - ns - np * PAGE as u64 - no;
        if left != nh + self.tail.tokens() {
            return false;
        }
        (self.j, self.no, self.np, self.head, self.nh) =
            (j, no as usize, np as usize, head as usize, nh as usize);
        true
    }
}
