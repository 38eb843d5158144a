//! The paged hybrid (`key_format = AS_KEYS_U4`, `value_format = AS_VALUES_U4`):
//! every token the state can hold is kept at 4 bits, as KIVI stores a cache
//! (Liu et al. 2024), and what does not fit is chosen by attention, not age.
//!
//! ```text
//! sinks      the first S tokens, f32
//! open page  the newest < 32 tokens, binary16 (KIVI's full-precision residual)
//! window     a ring of P pages of 32 consecutive tokens: keys 4-bit per channel over
//!            the page (lo, step per channel), values 4-bit per token (lo, step per
//!            32 channels: `quant::value_group`); a closing open page becomes the
//!            newest page
//! heavy      H slots: int8 keys (row scale) and the token's 4-bit value row
//! tail       moment groups of every token that left (`tail`)
//! ```
//!
//! Per token j with queries `q_1..q_G` of its GQA group: insert into the open
//! page (or the sinks); each query scores every part on one scale
//! `c = max(max_i s q.k_i, max_g lw_g)`:
//!
//! ```text
//! page keys   q.k_t = sum_c q_c lo_c + sum_c (q_c step_c) code_tc     (Kernels::u4_row_dots,
//!             q step in 16-bit fixed point: kernels::u4_fixed)
//! values      sum_t w_t v_t = sum_t sum_g w_t lo_tg + sum_t (w_t step_tg) code_t  (Kernels::u4_rows)
//! o = (sum_i e^(s x_i - c) v_i + tail numerator) / (sum_i e^(s x_i - c) + tail denominator)
//! acc_i <- (1 - DECAY) acc_i + sum over the group of the normalised weights of token i
//! ```
//!
//! **Fine planes.** While the ring fills, its free page slots are memory
//! the state already owns: each holds the fine plane of one of the newest
//! `min(np, P - np)` pages (np live of P): per element a second nibble `e`
//! on the grid `step / 16` around the coarse code, `x ~ lo + step c +
//! (step / 16)(e - 8)`, within `step / 32` (about 8 bits). Scores add
//! `sum_c (q_c step_c / 16) e_tc - (1/2) sum_c q_c step_c`, values the rows
//! with group parameters `(-step / 2, step / 16)`, through the same kernels.
//! A page's plane is dropped (the oldest first) when its slot is needed, so
//! a state whose stream outgrows the ring is exactly the 4-bit one: the
//! planes use the budget's unused bytes, they never cost tokens.
//!
//! When the open page fills it is encoded into a window page; when the ring
//! is full its oldest page leaves first: each of its tokens takes a heavy
//! slot if its accumulated attention beats the lowest heavy slot's (that one
//! then goes to the tail), else it goes to the tail itself. Heavy hitters are
//! kept at the precision they had (their value codes are copied; keys are
//! re-encoded as int8 from the 4-bit key, which adds at most 1/254 of the
//! row's largest element).
//!
//! Memory (`heap_bytes_for`), with `gv = dv / value_group(dv)` value groups:
//! per window token `d/2 + 4d/32 + dv/2 + 4 gv` bytes of codes and
//! parameters, plus 4 for `acc` when H > 0 (80 + 4 at d = dv = 64); per
//! heavy slot `d + dv/2 + 4 gv + 16` (120); the open page `64 (d + dv)`
//! (8 KiB); sinks `4 S (d + dv)`; the tail `(G + 1)(16 + 4 (2d + dv)) + 8 dv`;
//! 8 per page for the plane tables.
//! The per-slot score scratch (4 bytes per slot) is the caller thread's; a
//! GQA group of G query heads scored together (`attend_multi`) takes G
//! times that plus `4 (G (2d + P + 64 + dv/32) + min(G, 8) P dv)` bytes
//! (`scratch_len_group`; about 100 KB at G = 3, d = 64 and 256 KiB). Prefill
//! in blocks (`step_block`: b tokens' `m = b G <= MQ` queries scored
//! together, b shortened so the m rows of scores stay within
//! `BLOCK_SCORES`, 1 MiB) takes the group path's scratch for m queries plus
//! `m (d + dv)` floats (`scratch_len_block`: 1.1 MB per thread at G = 3,
//! d = 64 and 256 KiB, 2.3 MB at 1 MiB); with less it goes token by token.

mod payload;
pub mod quant;
pub mod tail;

use crate::config::Config;
use crate::error::{try_vec, Error, Result};
use crate::kernels::Kernels;
use half::f16;
use quant::G as QG;
use tail::Tail;

/// Tokens per window page.
pub const PAGE: usize = 32;
/// Decay of the accumulated attention per query (as the slot hybrid's).
pub const DECAY: f32 = crate::sketch::hybrid::DECAY;
/// Most queries of a group scored together (`Paged::attend_multi`); larger
/// groups take them one at a time.
pub const MQ: usize = 64;

/// Score floats of a prefill block's queries at most (1 MiB per thread):
/// with larger rings blocks take fewer tokens (`block_tokens`).
pub const BLOCK_SCORES: usize = 1 << 18;

/// Queries per multi-query value call of `attend_multi` (their value
/// weights stay in cache; a block's queries go through in chunks of VQ).
const VQ: usize = 8;

/// Sizes of a paged config: `(sinks, pages, heavy, groups)`.
fn shape(cfg: &Config) -> (usize, usize, usize, usize) {
    let g = if cfg.tail_groups == 0 {
        crate::sketch::hybrid::DEFAULT_GROUPS
    } else {
        cfg.tail_groups as usize
    };
    (
        cfg.sink_tokens as usize,
        cfg.window_tokens as usize / PAGE,
        cfg.heavy_tokens as usize,
        g,
    )
}

/// The paged hybrid state of one head (see the module doc).
#[derive(Clone, Debug)]
pub struct Paged {
    d: usize,
    dv: usize,
    scale: f32,
    sinks: usize,
    sk: Vec<f32>,
    sv: Vec<f32>,
    /// Open page: binary16 rows.
    ok: Vec<u16>,
    ov: Vec<u16>,
    no: usize,
    /// Window ring: capacity, live pages, ring index of the oldest.
    pages: usize,
    np: usize,
    head: usize,
    kc: Vec<u8>,
    klo: Vec<u16>,
    kst: Vec<u16>,
    vc: Vec<u8>,
    vlo: Vec<u16>,
    vst: Vec<u16>,
    /// Accumulated attention of window tokens: ring page r at `r PAGE`, the
    /// open page at `pages PAGE`.
    wacc: Vec<f32>,
    /// Fine planes (see the module doc): per ring slot of a live page, 1 +
    /// the free ring slot holding its plane (0: none); per free ring slot,
    /// 1 + the ring slot of the page whose plane it holds (0: none).
    fine: Vec<u32>,
    hosted: Vec<u32>,
    /// Heavy slots.
    hcap: usize,
    nh: usize,
    hk: Vec<i8>,
    hs: Vec<f32>,
    hvc: Vec<u8>,
    hvlo: Vec<u16>,
    hvst: Vec<u16>,
    hacc: Vec<f32>,
    hpos: Vec<u64>,
    tail: Tail,
    /// Tokens seen.
    j: u64,
    // small scratch of recorded queries (the per-slot scores and a page
    // buffer are the caller's: `scratch_len`, per thread, not per handle)
    lw: Vec<f64>,
    num: Vec<f64>,
}

/// Scratch floats besides scores, group weights and the numerator: one
/// decoded page (`PAGE max(d, dv)`), every page's key parameters, scaled
/// query and bias (`3 P d`), and the value weights and parameters of the
/// window or the heavy rows (`3 max(32 P, H) dv / 32`).
fn fb_len(d: usize, dv: usize, pages: usize, heavy: usize) -> usize {
    PAGE * d.max(dv) + 3 * pages * d + 3 * (pages * PAGE).max(heavy) * (dv / QG)
    // per-32 weights + 2 x per-group params (<= dv / 32)
}

impl Paged {
    /// Whether a config asks for the paged layout.
    pub fn wanted(cfg: &Config) -> bool {
        cfg.key_format == crate::config::KEYS_U4
    }

    /// Checks a paged config: both formats 4-bit, d and dv multiples of 32,
    /// a window of whole pages.
    pub fn validate(cfg: &Config) -> Result<()> {
        if cfg.value_format != crate::config::VALUES_U4
            || !(cfg.head_dim as usize).is_multiple_of(QG)
            || !(cfg.value_dim as usize).is_multiple_of(QG)
            || !(cfg.window_tokens as usize).is_multiple_of(PAGE)
            || cfg.tail_groups > 4096
            || cfg.sink_tokens as u64 + cfg.window_tokens as u64 + cfg.heavy_tokens as u64 > 1 << 26
        {
            return Err(Error::InvalidArg);
        }
        Ok(())
    }

    /// Bytes `new` allocates for `cfg`.
    pub fn heap_bytes_for(cfg: &Config) -> usize {
        let (s, p, h, g) = shape(cfg);
        let (d, dv) = (cfg.head_dim as usize, cfg.value_dim as usize);
        let gv = dv / quant::value_group(dv);
        s * (d + dv) * 4
            + PAGE * (d + dv) * 2
            + p * (PAGE * d / 2 + 4 * d + PAGE * dv / 2 + PAGE * gv * 4)
            + if h > 0 { (p * PAGE + PAGE) * 4 } else { 0 }
            + p * 8
            + h * (d + 4 + dv / 2 + gv * 4 + 4 + 8)
            + Tail::bytes_for(g, d, dv)
            + (g + 1) * 8
            + dv * 8
    }

    /// Caller scratch (f32) of a recorded step: scores of every slot and a
    /// page buffer (`4 (S + 32 P + 32 + H) + 4 fb` bytes per thread).
    pub fn scratch_len(&self) -> usize {
        self.capacity() + fb_len(self.d, self.dv, self.pages, self.hcap)
    }

    /// Caller scratch (f32) of a recorded step of `g` queries: with `g > 1`
    /// (up to [`MQ`]) the group is scored together ([`Paged::attend_multi`]):
    /// the scores of every query, the page buffer and the group's scaled
    /// queries, page biases, page scores, value weights and value biases.
    pub fn scratch_len_group(&self, g: usize) -> usize {
        if g <= 1 || g > MQ {
            return self.scratch_len();
        }
        g * self.capacity() + fb_len(self.d, self.dv, self.pages, self.hcap) + self.multi_len(g)
    }

    /// Floats of the group path's own scratch (see `scratch_len_group`):
    /// value weights for at most [`VQ`] queries at a time.
    fn multi_len(&self, g: usize) -> usize {
        let (p, d, dv) = (self.pages, self.d, self.dv);
        g * (2 * d + p + 2 * PAGE + dv / quant::value_group(dv)) + g.min(VQ) * p * PAGE * (dv / QG)
    }

    /// An empty state.
    pub fn new(cfg: &Config) -> Result<Self> {
        let (s, p, h, g) = shape(cfg);
        let (d, dv) = (cfg.head_dim as usize, cfg.value_dim as usize);
        let gv = dv / quant::value_group(dv);
        Ok(Paged {
            d,
            dv,
            scale: cfg.scale,
            sinks: s,
            sk: try_vec(s * d, 0.0)?,
            sv: try_vec(s * dv, 0.0)?,
            ok: try_vec(PAGE * d, 0)?,
            ov: try_vec(PAGE * dv, 0)?,
            no: 0,
            pages: p,
            np: 0,
            head: 0,
            kc: try_vec(p * PAGE * d / 2, 0)?,
            klo: try_vec(p * d, 0)?,
            kst: try_vec(p * d, 0)?,
            vc: try_vec(p * PAGE * dv / 2, 0)?,
            vlo: try_vec(p * PAGE * gv, 0)?,
            vst: try_vec(p * PAGE * gv, 0)?,
            wacc: try_vec(if h > 0 { p * PAGE + PAGE } else { 0 }, 0.0)?,
            fine: try_vec(p, 0)?,
            hosted: try_vec(p, 0)?,
            hcap: h,
            nh: 0,
            hk: try_vec(h * d, 0)?,
            hs: try_vec(h, 0.0)?,
            hvc: try_vec(h * dv / 2, 0)?,
            hvlo: try_vec(h * gv, 0)?,
            hvst: try_vec(h * gv, 0)?,
            hacc: try_vec(h, 0.0)?,
            hpos: try_vec(h, 0)?,
            tail: Tail::new(g, d, dv)?,
            j: 0,
            lw: try_vec(g + 1, 0.0)?,
            num: try_vec(dv, 0.0)?,
        })
    }

    /// Bytes owned (the vectors' capacities).
    pub fn heap_bytes(&self) -> usize {
        (self.sk.capacity() + self.sv.capacity() + self.hs.capacity() + self.hacc.capacity()) * 4
            + (self.ok.capacity() + self.ov.capacity()) * 2
            + self.kc.capacity()
            + self.vc.capacity()
            + self.hvc.capacity()
            + self.hk.capacity()
            + (self.klo.capacity()
                + self.kst.capacity()
                + self.vlo.capacity()
                + self.vst.capacity())
                * 2
            + (self.hvlo.capacity() + self.hvst.capacity()) * 2
            + self.wacc.capacity() * 4
            + (self.fine.capacity() + self.hosted.capacity()) * 4
            + self.hpos.capacity() * 8
            + self.tail.heap_bytes()
            + (self.lw.capacity() + self.num.capacity()) * 8
    }

    /// Input check: every magnitude at most `quant::U4_MAX_INPUT` (binary16
    /// parameters and the open page's binary16 rows must hold it).
    pub fn check_range(x: &[f32]) -> Result<()> {
        if x.iter().all(|v| v.abs() <= quant::U4_MAX_INPUT) {
            Ok(())
        } else {
            Err(Error::Range)
        }
    }

    /// Live exact tokens (sinks, window, open page, heavy).
    pub fn exact_len(&self) -> usize {
        self.sinks.min(self.j as usize) + self.np * PAGE + self.no + self.nh
    }
    /// Capacity in tokens (sinks, window pages, the open page, heavy slots).
    pub fn capacity(&self) -> usize {
        self.sinks + self.pages * PAGE + PAGE + self.hcap
    }
    /// Window length in tokens (pages and the open page).
    pub fn window(&self) -> usize {
        self.pages * PAGE + PAGE
    }
    /// Tokens folded into the tail.
    pub fn tail_tokens(&self) -> u64 {
        self.tail.tokens()
    }
    /// Live heavy slots.
    pub fn heavy_len(&self) -> usize {
        self.nh
    }

    fn ns(&self) -> usize {
        self.sinks.min(self.j as usize)
    }

    /// Ring index of the i-th live page (0 = oldest).
    fn ring(&self, i: usize) -> usize {
        (self.head + i) % self.pages.max(1)
    }

    /// Position of the first token of live page i (0 = oldest).
    fn page_pos(&self, i: usize) -> u64 {
        self.j - (self.no + (self.np - i) * PAGE) as u64
    }

    /// The key the state holds for the token at position `p`, decoded (as
    /// scores see it), if the token is exact (inspection; allocates).
    pub fn key_of_position(&self, p: u64) -> Option<Vec<f32>> {
        let d = self.d;
        let mut k = vec![0.0f32; d];
        if p >= self.j {
            return None;
        }
        if (p as usize) < self.ns() {
            k.copy_from_slice(&self.sk[p as usize * d..(p as usize + 1) * d]);
            return Some(k);
        }
        let open0 = self.j - self.no as u64;
        if p >= open0 {
            let r = (p - open0) as usize;
            for (o, &h) in k.iter_mut().zip(&self.ok[r * d..(r + 1) * d]) {
                *o = f16::from_bits(h).to_f32();
            }
            return Some(k);
        }
        for i in 0..self.np {
            let p0 = self.page_pos(i);
            if p >= p0 && p < p0 + PAGE as u64 {
                let r = self.ring(i);
                let t = (p - p0) as usize;
                quant::decode_page_key(
                    &self.kc[r * PAGE * d / 2..(r + 1) * PAGE * d / 2],
                    t,
                    &self.klo[r * d..(r + 1) * d],
                    &self.kst[r * d..(r + 1) * d],
                    &mut k,
                );
                if let Some(h) = self.plane(r) {
                    let row = &self.kc[(h * PAGE + t) * d / 2..(h * PAGE + t + 1) * d / 2];
                    for (c, o) in k.iter_mut().enumerate() {
                        let st = f16::from_bits(self.kst[r * d + c]).to_f32();
                        *o = quant::refine(*o, st, quant::get(row, c));
                    }
                }
                return Some(k);
            }
        }
        let h = (0..self.nh).find(|&h| self.hpos[h] == p)?;
        let s = self.hs[h];
        for (o, &n) in k.iter_mut().zip(&self.hk[h * d..(h + 1) * d]) {
            *o = s * n as f32;
        }
        Some(k)
    }

    /// Absorbs token `(k, v)` as the next position (`buf`: `scratch_len`).
    pub fn insert(&mut self, kern: &Kernels, k: &[f32], v: &[f32], buf: &mut [f32]) {
        if self.no == PAGE {
            // Only reachable without a query since the last insert (non-causal).
            self.close_page(kern, &mut buf[self.capacity()..]);
        }
        let (d, dv) = (self.d, self.dv);
        let j = self.j as usize;
        if j < self.sinks {
            self.sk[j * d..(j + 1) * d].copy_from_slice(k);
            self.sv[j * dv..(j + 1) * dv].copy_from_slice(v);
        } else {
            let o = self.no;
            for (h, &x) in self.ok[o * d..(o + 1) * d].iter_mut().zip(k) {
                *h = f16::from_f32(x).to_bits();
            }
            for (h, &x) in self.ov[o * dv..(o + 1) * dv].iter_mut().zip(v) {
                *h = f16::from_f32(x).to_bits();
            }
            if self.hcap > 0 {
                self.wacc[self.pages * PAGE + o] = 0.0;
            }
            self.no += 1;
        }
        self.j += 1;
    }

    /// Scratch sizes of a read-only query: `(scores, G + 1, dv, page buffer)`.
    pub fn scratch_sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.capacity(),
            self.lw.len(),
            self.dv,
            fb_len(self.d, self.dv, self.pages, self.hcap),
        )
    }

    /// Attention of `q` over the state into `out` (read-only). Leaves the
    /// normalised weights in `x` in the order sinks, pages (oldest first),
    /// open page, heavy slots; returns `(c, den)`.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        kern: &Kernels,
        q: &[f32],
        out: &mut [f32],
        x: &mut [f32],
        lw: &mut [f64],
        num: &mut [f64],
        fb: &mut [f32],
    ) -> (f64, f64) {
        let (d, dv) = (self.d, self.dv);
        let gv = dv / quant::value_group(dv);
        let ns = self.ns();
        let (po, oo) = (ns, ns + self.np * PAGE);
        let ho = oo + self.no;
        let total = ho + self.nh;
        let (dec, rest) = fb.split_at_mut(PAGE * d.max(dv));
        let (pk, pv) = rest.split_at_mut(3 * self.pages * d);
        // Scores q.k (unscaled, f32).
        let mut xmax = f32::NEG_INFINITY;
        if ns > 0 {
            xmax = xmax.max((kern.row_dots)(&self.sk[..ns * d], q, &mut x[..ns]));
        }
        if self.np > 0 {
            // Every live page's (lo, step) at once (two ring segments, oldest
            // first); per page q.k_t = q.lo + (q * step).code_t.
            let np = self.np;
            let (lo, rest) = pk.split_at_mut(np * d);
            let (qs, bias) = rest.split_at_mut(np * d);
            for (a, b) in self.segments() {
                let (r0, r1) = (a * d, b * d);
                let at = self.logical(a) * d;
                (kern.f16_to_f32)(&self.klo[r0..r1], &mut lo[at..at + r1 - r0]);
                (kern.f16_to_f32)(&self.kst[r0..r1], &mut qs[at..at + r1 - r0]);
            }
            (kern.row_dots)(lo, q, &mut bias[..np]);
            for row in qs.chunks_exact_mut(d) {
                for (o, &a) in row.iter_mut().zip(q) {
                    *o *= a;
                }
            }
            for i in 0..np {
                let r = self.ring(i);
                let xs = &mut x[po + i * PAGE..po + (i + 1) * PAGE];
                let codes = &self.kc[r * PAGE * d / 2..(r + 1) * PAGE * d / 2];
                let qi = &qs[i * d..(i + 1) * d];
                (kern.u4_row_dots)(codes, qi, xs);
                if let Some(h) = self.plane(r) {
                    let (q16, t) = dec.split_at_mut(d);
                    self.fine_scores(kern, h, qi, q16, &mut t[..PAGE], xs);
                }
                // 8 running maxima (vectorizes; PAGE is a multiple of 8).
                let mut m = [f32::NEG_INFINITY; 8];
                for c in xs.chunks_exact_mut(8) {
                    for (v, mi) in c.iter_mut().zip(m.iter_mut()) {
                        *v += bias[i];
                        *mi = if *v > *mi { *v } else { *mi };
                    }
                }
                xmax = m.iter().fold(xmax, |a, &b| a.max(b));
            }
        }
        let ok = self.open_keys(kern, self.no, dec);
        xmax = xmax.max(self.open_heavy_scores(kern, q, ok, &mut x[oo..total]));
        let s = self.scale as f64;
        let top = if total > 0 {
            s * xmax as f64
        } else {
            f64::NEG_INFINITY
        };
        let c = top.max(self.tail.log_weights(q, s, lw));
        if total == 0 && self.tail.is_empty() {
            out.fill(0.0);
            return (0.0, 1.0);
        }
        num.fill(0.0);
        let mut den = self.tail.accumulate(lw, c, num);
        out.fill(0.0);
        let f = (top - c).exp();
        if total > 0 {
            den += f * (kern.exp_shift)(&mut x[..total], self.scale, xmax);
            // Sinks: f32 rows.
            for t in 0..ns {
                let w = x[t];
                for (o, &vv) in out.iter_mut().zip(&self.sv[t * dv..(t + 1) * dv]) {
                    *o += w * vv;
                }
            }
            // Pages: 4-bit value rows, one call per ring segment.
            for (a, b) in self.segments() {
                let (r0, r1) = (a * PAGE, b * PAGE);
                let w = &x[po + self.logical(a) * PAGE..][..r1 - r0];
                let (lo, st) = (&self.vlo[r0 * gv..r1 * gv], &self.vst[r0 * gv..r1 * gv]);
                Self::u4_values(
                    kern,
                    dv,
                    w,
                    &self.vc[r0 * dv / 2..r1 * dv / 2],
                    lo,
                    st,
                    pv,
                    out,
                );
                for r in a..b {
                    let w = &x[po + self.logical(r) * PAGE..][..PAGE];
                    self.fine_values(kern, r, w, pv, out);
                }
            }
            self.open_heavy_values(kern, &x[oo..total], pv, out);
        }
        let inv = 1.0 / den;
        for (o, &n) in out.iter_mut().zip(num.iter()) {
            *o = ((f * *o as f64 + n) * inv) as f32;
        }
        let wf = (f * inv) as f32;
        x[..total].iter_mut().for_each(|w| *w *= wf);
        (c, den)
    }

    /// [`attend`](Self::attend) for the `g = qs.len() / d` queries at once
    /// (`1 <= g <= MQ`), with the same results: each page's key codes are
    /// read once for all of them (`Kernels::u4_row_dots_multi`) and each
    /// ring segment's value codes once (`Kernels::u4_rows_multi`);
    /// everything else runs per query as in `attend`, in the same order
    /// (the tail's numerator is recomputed at the end rather than kept per
    /// query). The queries are `opens.len()` tokens' groups of `g /
    /// opens.len()` (token-major); the queries of token `b` see the first
    /// `opens[b] <= no` rows of the open page, so a causal block of tokens
    /// in the open page is scored as each token alone would be (one token:
    /// `opens = [no]`; every `opens[b] > 0`, or the state has nothing else
    /// to attend). Query `i`'s weights are left in `xs[i C..(i + 1) C]`,
    /// `C` the capacity, in `attend`'s order for its open rows; `fb` holds
    /// `fb_len + multi_len(g)` floats.
    #[allow(clippy::too_many_arguments)]
    fn attend_multi(
        &self,
        kern: &Kernels,
        qs: &[f32],
        opens: &[usize],
        outs: &mut [f32],
        xs: &mut [f32],
        lw: &mut [f64],
        num: &mut [f64],
        fb: &mut [f32],
    ) {
        let (d, dv) = (self.d, self.dv);
        let g = qs.len() / d;
        let per = g / opens.len();
        debug_assert!(per * opens.len() == g && opens.iter().all(|&o| o <= self.no));
        let cap = self.capacity();
        let gv = dv / quant::value_group(dv);
        let g32 = dv / QG;
        let ns = self.ns();
        let np = self.np;
        let (po, oo) = (ns, ns + np * PAGE);
        // Query i's open rows and live slots.
        let no = |i: usize| opens[i / per];
        let total = |i: usize| oo + no(i) + self.nh;
        let nomax = opens.iter().copied().max().unwrap_or(0);
        let (fb, ex) = fb.split_at_mut(fb_len(d, dv, self.pages, self.hcap));
        let (dec, rest) = fb.split_at_mut(PAGE * d.max(dv));
        let (pk, pv) = rest.split_at_mut(3 * self.pages * d);
        let (qm, ex) = ex.split_at_mut(g * d);
        let (bm, ex) = ex.split_at_mut(g * self.pages);
        let (sc, ex) = ex.split_at_mut(g * PAGE);
        let (fq, ex) = ex.split_at_mut(g * d);
        let (ft, ex) = ex.split_at_mut(g * PAGE);
        let (wm, ex) = ex.split_at_mut(g.min(VQ) * self.pages * PAGE * g32);
        let bv = &mut ex[..g * gv];
        let s = self.scale as f64;
        let mut xmax = [f32::NEG_INFINITY; MQ];
        // Page scores of every query: per page q.k_t = q.lo + (q * step).code_t.
        if np > 0 {
            let (lo, rest) = pk.split_at_mut(np * d);
            let st = &mut rest[..np * d];
            for (a, b) in self.segments() {
                let (r0, r1) = (a * d, b * d);
                let at = self.logical(a) * d;
                (kern.f16_to_f32)(&self.klo[r0..r1], &mut lo[at..at + r1 - r0]);
                (kern.f16_to_f32)(&self.kst[r0..r1], &mut st[at..at + r1 - r0]);
            }
            for (i, q) in qs.chunks_exact(d).enumerate() {
                (kern.row_dots)(lo, q, &mut bm[i * np..(i + 1) * np]);
            }
            for p in 0..np {
                // The queries scaled by this page's steps, q * step.
                for (row, q) in qm.chunks_exact_mut(d).zip(qs.chunks_exact(d)) {
                    for ((o, &a), &b) in row.iter_mut().zip(q).zip(&st[p * d..(p + 1) * d]) {
                        *o = b * a;
                    }
                }
                let r = self.ring(p);
                let codes = &self.kc[r * PAGE * d / 2..(r + 1) * PAGE * d / 2];
                (kern.u4_row_dots_multi)(codes, qm, d, &mut sc[..g * PAGE]);
                if let Some(h) = self.plane(r) {
                    self.fine_scores(kern, h, qm, fq, ft, &mut sc[..g * PAGE]);
                }
                for i in 0..g {
                    let x = &mut xs[i * cap + po + p * PAGE..i * cap + po + (p + 1) * PAGE];
                    x.copy_from_slice(&sc[i * PAGE..(i + 1) * PAGE]);
                    let b = bm[i * np + p];
                    // 8 running maxima (as `attend`).
                    let mut m = [f32::NEG_INFINITY; 8];
                    for c in x.chunks_exact_mut(8) {
                        for (v, mi) in c.iter_mut().zip(m.iter_mut()) {
                            *v += b;
                            *mi = if *v > *mi { *v } else { *mi };
                        }
                    }
                    xmax[i] = m.iter().fold(xmax[i], |a, &b| a.max(b));
                }
            }
        }
        let any = oo + nomax + self.nh > 0;
        if !any && self.tail.is_empty() {
            outs.fill(0.0);
            return;
        }
        debug_assert!(!self.tail.is_empty() || (0..g).all(|i| total(i) > 0));
        // The open page's keys, decoded once for every query.
        let ok = self.open_keys(kern, nomax, dec);
        // Per query: the other scores, the scale, the weights, the sinks.
        let (mut cs, mut dens, mut fs) = ([0.0f64; MQ], [0.0f64; MQ], [0.0f64; MQ]);
        for (i, (q, out)) in qs
            .chunks_exact(d)
            .zip(outs.chunks_exact_mut(dv))
            .enumerate()
        {
            let x = &mut xs[i * cap..(i + 1) * cap];
            let (no, total) = (no(i), total(i));
            // Sinks first, as in `attend` (max is order-independent here:
            // every score is folded by the same `f32::max`).
            let mut xm = f32::NEG_INFINITY;
            if ns > 0 {
                xm = xm.max((kern.row_dots)(&self.sk[..ns * d], q, &mut x[..ns]));
            }
            xm = xm.max(xmax[i]);
            xm = xm.max(self.open_heavy_scores(kern, q, &ok[..no * d], &mut x[oo..total]));
            let top = if total > 0 {
                s * xm as f64
            } else {
                f64::NEG_INFINITY
            };
            let c = top.max(self.tail.log_weights(q, s, lw));
            num.fill(0.0);
            let mut den = self.tail.accumulate(lw, c, num);
            out.fill(0.0);
            let f = (top - c).exp();
            if total > 0 {
                den += f * (kern.exp_shift)(&mut x[..total], self.scale, xm);
                for t in 0..ns {
                    let w = x[t];
                    for (o, &vv) in out.iter_mut().zip(&self.sv[t * dv..(t + 1) * dv]) {
                        *o += w * vv;
                    }
                }
            }
            (cs[i], dens[i], fs[i]) = (c, den, f);
        }
        if any {
            // Pages: 4-bit value rows, one multi call per ring segment.
            for (a, b) in self.segments() {
                let (r0, r1) = (a * PAGE, b * PAGE);
                let n = r1 - r0;
                let (lf, rest) = pv.split_at_mut(n * gv);
                let sf = &mut rest[..n * gv];
                (kern.f16_to_f32)(&self.vlo[r0 * gv..r1 * gv], lf);
                (kern.f16_to_f32)(&self.vst[r0 * gv..r1 * gv], sf);
                let at = po + self.logical(a) * PAGE;
                self.values_multi(
                    kern,
                    xs,
                    at,
                    lf,
                    sf,
                    &self.vc[r0 * dv / 2..r1 * dv / 2],
                    wm,
                    bv,
                    outs,
                );
                // The fine planes of the segment's pages, page by page.
                for r in a..b {
                    if let Some(h) = self.plane(r) {
                        let (lf, rest) = pv.split_at_mut(PAGE * gv);
                        let sf = &mut rest[..PAGE * gv];
                        self.fine_params(kern, r, lf, sf);
                        let codes = &self.vc[h * PAGE * dv / 2..(h + 1) * PAGE * dv / 2];
                        let at = po + self.logical(r) * PAGE;
                        self.values_multi(kern, xs, at, lf, sf, codes, wm, bv, outs);
                    }
                }
            }
        }
        // Per query: the open page, the heavy rows, the tail, normalisation.
        for (i, (q, out)) in qs
            .chunks_exact(d)
            .zip(outs.chunks_exact_mut(dv))
            .enumerate()
        {
            let x = &mut xs[i * cap..(i + 1) * cap];
            let total = total(i);
            if total > 0 {
                self.open_heavy_values(kern, &x[oo..total], pv, out);
            }
            let (c, den, f) = (cs[i], dens[i], fs[i]);
            self.tail.log_weights(q, s, lw);
            num.fill(0.0);
            self.tail.accumulate(lw, c, num);
            let inv = 1.0 / den;
            for (o, &n) in out.iter_mut().zip(num.iter()) {
                *o = ((f * *o as f64 + n) * inv) as f32;
            }
            let wf = (f * inv) as f32;
            x[..total].iter_mut().for_each(|w| *w *= wf);
        }
    }

    /// Adds page r's fine-plane term to the 32 scores of each of the `g =
    /// qs.len() / d` scaled queries `qs = q * step` (`xs`: `g` rows of 32;
    /// `h`: the plane's slot; `q16`, `t`: scratch of `g d` and `g 32`
    /// floats): `+ sum_c (qs_c / 16)(e_tc - 8)`. The plane's codes are read
    /// once for all queries (`u4_row_dots_multi`, bitwise equal to single
    /// calls).
    fn fine_scores(
        &self,
        kern: &Kernels,
        h: usize,
        qs: &[f32],
        q16: &mut [f32],
        t: &mut [f32],
        xs: &mut [f32],
    ) {
        let d = self.d;
        let g = qs.len() / d;
        let mut offs = [0.0f32; MQ];
        for ((row, q), off) in q16[..g * d]
            .chunks_exact_mut(d)
            .zip(qs.chunks_exact(d))
            .zip(offs.iter_mut())
        {
            for (o, &a) in row.iter_mut().zip(q) {
                *o = a * (1.0 / 16.0);
                *off += *o;
            }
        }
        let fine = &self.kc[h * PAGE * d / 2..(h + 1) * PAGE * d / 2];
        (kern.u4_row_dots_multi)(fine, &q16[..g * d], d, &mut t[..g * PAGE]);
        for ((x, t), off) in xs[..g * PAGE]
            .chunks_exact_mut(PAGE)
            .zip(t.chunks_exact(PAGE))
            .zip(offs)
        {
            for (v, &f) in x.iter_mut().zip(t) {
                *v += f - 8.0 * off;
            }
        }
    }

    /// Page r's fine-plane group parameters as f32 (`lf`, `sf`: `32 gv`):
    /// `(-step / 2, step / 16)` of its rows' value groups.
    fn fine_params(&self, kern: &Kernels, r: usize, lf: &mut [f32], sf: &mut [f32]) {
        let gv = self.dv / quant::value_group(self.dv);
        let (t0, t1) = (r * PAGE * gv, (r + 1) * PAGE * gv);
        (kern.f16_to_f32)(&self.vlo[t0..t1], lf);
        (kern.f16_to_f32)(&self.vst[t0..t1], sf);
        for (l, s) in lf.iter_mut().zip(sf.iter_mut()) {
            *l = -0.5 * *s;
            *s *= 1.0 / 16.0;
        }
    }

    /// `out += ` the fine-plane term of page r's values for weights `w` (32),
    /// if the page has a plane.
    fn fine_values(&self, kern: &Kernels, r: usize, w: &[f32], pv: &mut [f32], out: &mut [f32]) {
        if let Some(h) = self.plane(r) {
            let (dv, gv) = (self.dv, self.dv / quant::value_group(self.dv));
            let codes = &self.vc[h * PAGE * dv / 2..(h + 1) * PAGE * dv / 2];
            let (wv, rest) = pv.split_at_mut(PAGE * dv / QG);
            let (lf, rest) = rest.split_at_mut(PAGE * gv);
            let sf = &mut rest[..PAGE * gv];
            self.fine_params(kern, r, lf, sf);
            Self::u4_values_f32(kern, dv, w, codes, lf, sf, wv, out);
        }
    }

    /// `outs[i] += sum_t w_it v_t` for the `g = outs.len() / dv` queries
    /// over `n = lf.len() / gv` 4-bit value rows `codes` with f32 group
    /// parameters `lf`, `sf`; query i's weights are `xs[i C + at..][..n]`
    /// (`C` the capacity). VQ queries per `u4_rows_multi` call, so their
    /// kernel weights (`wm`: `min(g, VQ) n dv / 32`) stay in cache; each
    /// query's arithmetic is [`u4_values`](Self::u4_values)'s, bitwise.
    #[allow(clippy::too_many_arguments)]
    fn values_multi(
        &self,
        kern: &Kernels,
        xs: &[f32],
        at: usize,
        lf: &[f32],
        sf: &[f32],
        codes: &[u8],
        wm: &mut [f32],
        bv: &mut [f32],
        outs: &mut [f32],
    ) {
        let (dv, cap) = (self.dv, self.capacity());
        let (gv, g32) = (dv / quant::value_group(dv), dv / QG);
        let (g, n) = (outs.len() / dv, lf.len() / gv);
        for c0 in (0..g).step_by(VQ) {
            let c1 = (c0 + VQ).min(g);
            for i in c0..c1 {
                Self::value_weights(
                    dv,
                    &xs[i * cap + at..i * cap + at + n],
                    lf,
                    sf,
                    &mut wm[(i - c0) * n * g32..(i - c0 + 1) * n * g32],
                    &mut bv[i * gv..(i + 1) * gv],
                );
            }
            (kern.u4_rows_multi)(
                &wm[..(c1 - c0) * n * g32],
                codes,
                dv,
                &mut outs[c0 * dv..c1 * dv],
            );
            for i in c0..c1 {
                Self::add_value_bias(
                    dv,
                    &bv[i * gv..(i + 1) * gv],
                    &mut outs[i * dv..(i + 1) * dv],
                );
            }
        }
    }

    /// The first `no` open rows' keys, decoded (f16 -> f32) into `dec`.
    fn open_keys<'a>(&self, kern: &Kernels, no: usize, dec: &'a mut [f32]) -> &'a [f32] {
        let n = no * self.d;
        (kern.f16_to_f32)(&self.ok[..n], &mut dec[..n]);
        &dec[..n]
    }

    /// Scores `q.k` of the first `no` open rows (decoded keys `ok`, `no x d`,
    /// from [`open_keys`](Self::open_keys)) and the heavy slots into `x`
    /// (`no + nh`, in that order); returns their max (-inf if none).
    fn open_heavy_scores(&self, kern: &Kernels, q: &[f32], ok: &[f32], x: &mut [f32]) -> f32 {
        let (d, no, nh) = (self.d, ok.len() / self.d, self.nh);
        let mut m = f32::NEG_INFINITY;
        if no > 0 {
            m = m.max((kern.row_dots)(ok, q, &mut x[..no]));
        }
        if nh > 0 {
            m = m.max((kern.i8_row_dots)(
                &self.hk[..nh * d],
                &self.hs,
                q,
                &mut x[no..no + nh],
            ));
        }
        m
    }

    /// `out += ` the first `no` open rows' and the heavy slots' values for
    /// their weights `w` (`no + nh`, in that order).
    fn open_heavy_values(&self, kern: &Kernels, w: &[f32], pv: &mut [f32], out: &mut [f32]) {
        let (dv, nh) = (self.dv, self.nh);
        let (no, gv) = (w.len() - nh, dv / quant::value_group(dv));
        if no > 0 {
            (kern.f16_rows)(&w[..no], &self.ov[..no * dv], out);
        }
        if nh > 0 {
            let (c, lo, st) = (
                &self.hvc[..nh * dv / 2],
                &self.hvlo[..nh * gv],
                &self.hvst[..nh * gv],
            );
            Self::u4_values(kern, dv, &w[no..no + nh], c, lo, st, pv, out);
        }
    }

    /// The live pages as ring-index ranges `[a, b)` in logical order (at
    /// most two: from the oldest to the ring's end, then from its start).
    fn segments(&self) -> impl Iterator<Item = (usize, usize)> {
        let (h, np, p) = (self.head, self.np, self.pages);
        let first = (h, (h + np).min(p));
        let second = (0, (h + np).saturating_sub(p));
        [first, second].into_iter().filter(|&(a, b)| b > a)
    }

    /// Logical index (0 = oldest) of the live page at ring index r.
    fn logical(&self, r: usize) -> usize {
        (r + self.pages - self.head) % self.pages.max(1)
    }

    /// `out += sum_t w_t v_t` over n 4-bit value rows (see the module doc):
    /// weights `w` (n), `codes` (n dv / 2 bytes), `lo`/`st` (n x dv / vg
    /// groups); `pv` scratch of `3 n dv / 32` floats. The kernel takes one
    /// weight per 32 channels: a 64-channel group's weight goes to both.
    #[allow(clippy::too_many_arguments)]
    fn u4_values(
        kern: &Kernels,
        dv: usize,
        w: &[f32],
        codes: &[u8],
        lo: &[u16],
        st: &[u16],
        pv: &mut [f32],
        out: &mut [f32],
    ) {
        let n = w.len();
        let (vg, g32) = (quant::value_group(dv), dv / QG);
        let gv = dv / vg;
        let (wv, rest) = pv[..3 * n * g32].split_at_mut(n * g32);
        let (lf, sf) = rest.split_at_mut(n * g32);
        (kern.f16_to_f32)(&lo[..n * gv], &mut lf[..n * gv]);
        (kern.f16_to_f32)(&st[..n * gv], &mut sf[..n * gv]);
        Self::u4_values_f32(kern, dv, w, codes, &lf[..n * gv], &sf[..n * gv], wv, out);
    }

    /// [`u4_values`](Self::u4_values) with the group parameters as f32
    /// (`lf`, `sf`: `n gv`) and the kernel's weights in `wv` (`n dv / 32`).
    #[allow(clippy::too_many_arguments)]
    fn u4_values_f32(
        kern: &Kernels,
        dv: usize,
        w: &[f32],
        codes: &[u8],
        lf: &[f32],
        sf: &[f32],
        wv: &mut [f32],
        out: &mut [f32],
    ) {
        let gv = dv / quant::value_group(dv);
        let mut bias = [0.0f32; 128];
        Self::value_weights(dv, w, lf, sf, wv, &mut bias[..gv]);
        (kern.u4_rows)(wv, codes, out);
        Self::add_value_bias(dv, &bias[..gv], out);
    }

    /// One weight set of [`Paged::u4_values`]: the kernel's weights `wv`
    /// (`n dv / 32`: `w_t step_tg` for each of the 32-channel parts of
    /// group g) and the groups' biases `bias[g] = sum_t w_t lo_tg` (`lf`,
    /// `sf`: the rows' parameters as f32, `n gv`).
    fn value_weights(
        dv: usize,
        w: &[f32],
        lf: &[f32],
        sf: &[f32],
        wv: &mut [f32],
        bias: &mut [f32],
    ) {
        let n = w.len();
        let (vg, g32) = (quant::value_group(dv), dv / QG);
        let gv = dv / vg;
        let per = vg / QG;
        bias.fill(0.0);
        if per == 1 {
            // 32-channel groups (every dv today): `wv = w_t sf_tc` and `bias_c
            // = sum_t w_t lf_tc`, in lanes of 8 floats.
            match gv {
                1 => Self::weights_g32::<1>(w, lf, sf, wv, bias),
                2 => Self::weights_g32::<2>(w, lf, sf, wv, bias),
                4 => Self::weights_g32::<4>(w, lf, sf, wv, bias),
                8 => Self::weights_g32::<8>(w, lf, sf, wv, bias),
                _ => {
                    for (((row, &wt), sr), lr) in wv[..n * gv]
                        .chunks_exact_mut(gv)
                        .zip(w)
                        .zip(sf.chunks_exact(gv))
                        .zip(lf.chunks_exact(gv))
                    {
                        for (((o, &st), b), &l) in
                            row.iter_mut().zip(sr).zip(bias.iter_mut()).zip(lr)
                        {
                            *o = wt * st;
                            *b += wt * l;
                        }
                    }
                }
            }
            return;
        }
        for (((row, &wt), sr), lr) in wv[..n * g32]
            .chunks_exact_mut(g32)
            .zip(w)
            .zip(sf.chunks_exact(gv))
            .zip(lf.chunks_exact(gv))
        {
            for ((chunk, &st), (b, &l)) in row
                .chunks_exact_mut(per)
                .zip(sr)
                .zip(bias.iter_mut().zip(lr))
            {
                chunk.fill(wt * st);
                *b += wt * l;
            }
        }
    }

    /// [`value_weights`](Self::value_weights) for 32-channel groups, `GV`
    /// (1, 2, 4 or 8) per row: 8 lanes hold `8 / GV` rows, lane i group
    /// `i % GV`; 8 partial sums of the biases, folded by group at the end.
    fn weights_g32<const GV: usize>(
        w: &[f32],
        lf: &[f32],
        sf: &[f32],
        wv: &mut [f32],
        bias: &mut [f32],
    ) {
        let r = 8 / GV;
        let n = w.len();
        let full = n / r * r;
        let mut acc = [0.0f32; 8];
        for (((o, s), l), wr) in wv[..full * GV]
            .chunks_exact_mut(8)
            .zip(sf[..full * GV].chunks_exact(8))
            .zip(lf[..full * GV].chunks_exact(8))
            .zip(w[..full].chunks_exact(r))
        {
            for i in 0..8 {
                let we = wr[i / GV];
                o[i] = we * s[i];
                acc[i] += we * l[i];
            }
        }
        for t in full..n {
            for c in 0..GV {
                wv[t * GV + c] = w[t] * sf[t * GV + c];
                acc[c] += w[t] * lf[t * GV + c];
            }
        }
        for (i, &a) in acc.iter().enumerate() {
            bias[i % GV] += a;
        }
    }

    /// `out[c] += bias[c / vg]` (the value groups' biases).
    fn add_value_bias(dv: usize, bias: &[f32], out: &mut [f32]) {
        let vg = quant::value_group(dv);
        for (g, &b) in bias.iter().enumerate() {
            for o in &mut out[g * vg..(g + 1) * vg] {
                *o += b;
            }
        }
    }

    /// Recorded attention of the `g = qs.len() / d` query heads of a group:
    /// accumulated attention (kept only when heavy slots compete for it)
    /// decays once, then gets every head's normalised weights.
    fn attend_group(&mut self, kern: &Kernels, qs: &[f32], outs: &mut [f32], buf: &mut [f32]) {
        let (d, dv) = (self.d, self.dv);
        let (g, cap) = (qs.len() / d, self.capacity());
        let together = g > 1 && g <= MQ && buf.len() >= self.scratch_len_group(g);
        let (mut lw, mut num) = (
            core::mem::take(&mut self.lw),
            core::mem::take(&mut self.num),
        );
        let no = self.no;
        if together {
            let (xs, fb) = buf.split_at_mut(g * cap);
            self.attend_multi(kern, qs, &[no], outs, xs, &mut lw, &mut num, fb);
            self.track(no, xs);
            (self.lw, self.num) = (lw, num);
            return;
        }
        // The decay first (attend reads no accumulator), each head's weights
        // as it is scored.
        self.track(no, &[]);
        let (x, fb) = buf.split_at_mut(cap);
        for (q, out) in qs.chunks_exact(d).zip(outs.chunks_exact_mut(dv)) {
            self.attend(kern, q, out, x, &mut lw, &mut num, fb);
            if self.hcap > 0 {
                self.each_acc(no, |a, w| *a += w, x);
            }
        }
        (self.lw, self.num) = (lw, num);
    }

    /// One token's update of the accumulated attention (kept only when
    /// heavy slots compete for it): `acc = (1 - DECAY) acc + sum_i w_i`
    /// over its queries' weights `xs` (`i`-th in `xs[i C..(i + 1) C]`,
    /// `attend`'s order for `no` open rows; empty: the decay alone).
    fn track(&mut self, no: usize, xs: &[f32]) {
        if self.hcap == 0 {
            return;
        }
        let keep = 1.0 - DECAY;
        self.each_acc(no, |a, _| *a *= keep, &[]);
        for x in xs.chunks_exact(self.capacity()) {
            self.each_acc(no, |a, w| *a += w, x);
        }
    }

    /// `f(acc, weight)` for every accumulator of the window (live pages, the
    /// first `no` open rows) and the heavy slots, with the weights `x` in
    /// `attend`'s order for `no` open rows (sinks first, which have none);
    /// `x` empty gives weight 0.
    fn each_acc(&mut self, no: usize, f: impl Fn(&mut f32, f32), x: &[f32]) {
        let ns = self.ns();
        let w = |i: usize| x.get(i).copied().unwrap_or(0.0);
        for i in 0..self.np {
            let r = self.ring(i);
            for (t, a) in self.wacc[r * PAGE..(r + 1) * PAGE].iter_mut().enumerate() {
                f(a, w(ns + i * PAGE + t));
            }
        }
        let (oo, pg) = (ns + self.np * PAGE, self.pages * PAGE);
        for (t, a) in self.wacc[pg..pg + no].iter_mut().enumerate() {
            f(a, w(oo + t));
        }
        let ho = oo + no;
        for (t, a) in self.hacc[..self.nh].iter_mut().enumerate() {
            f(a, w(ho + t));
        }
    }

    /// Causal step after `insert` for the query heads of a group (`qs`: g x
    /// d, `outs`: g x dv); then the open page closes when full.
    pub fn step_group(&mut self, kern: &Kernels, qs: &[f32], outs: &mut [f32], buf: &mut [f32]) {
        self.attend_group(kern, qs, outs, buf);
        if self.no == PAGE {
            let c = self.capacity();
            self.close_page(kern, &mut buf[c..]);
        }
    }

    /// Tokens of one prefill block ([`step_block`](Self::step_block)) for
    /// groups of `g` queries: as many as [`MQ`] queries hold, at most a
    /// page, and few enough that their scores (`b g C` floats, `C` the
    /// capacity) stay within [`BLOCK_SCORES`] (1: no block path).
    pub fn block_tokens(&self, g: usize) -> usize {
        if g == 0 || g > MQ {
            return 1;
        }
        let b = (MQ / g).min(PAGE).min(BLOCK_SCORES / (g * self.capacity()));
        if b < 2 {
            1
        } else {
            b
        }
    }

    /// Caller scratch (f32) of a prefill in blocks of up to
    /// [`block_tokens`](Self::block_tokens)`(g)` tokens: the group path's
    /// ([`scratch_len_group`](Self::scratch_len_group)) for all `m = b g`
    /// of their queries plus `m (d + dv)` for the block's queries and
    /// outputs, which the caller gathers ahead of it (without blocks, one
    /// group's scratch).
    pub fn scratch_len_block(&self, g: usize) -> usize {
        let m = self.block_tokens(g) * g;
        if m <= g {
            return self.scratch_len_group(g);
        }
        self.scratch_len_group(m) + m * (self.d + self.dv)
    }

    /// How many of the next `left` tokens (groups of `g` queries) the next
    /// [`step_block`](Self::step_block) can take with a scratch of
    /// `buf_len` floats: they must all land in the open page (past the
    /// sinks, not beyond the page's end), `b g <= MQ`; 1 means token by
    /// token (`insert`, `step_group`).
    pub fn block_len(&self, g: usize, left: usize, buf_len: usize) -> usize {
        let b = self.block_tokens(g).min(left).min(PAGE - self.no.min(PAGE));
        if b < 2 || self.j < self.sinks as u64 || buf_len < self.scratch_len_group(b * g) {
            return 1;
        }
        b
    }

    /// Causal steps of the last `b` inserted tokens together (prefill),
    /// bitwise as `b` rounds of `insert` and `step_group`: every token since
    /// the last step is in the open page (`b <= no`, past the sinks; see
    /// [`block_len`](Self::block_len)), `qs` holds their groups' queries
    /// token-major (`b g x d`, `b g <= MQ`), `outs` gets `b g x dv`. Between
    /// two page closes only the open page and the accumulated attention
    /// change, so the `b g` queries are scored at once
    /// ([`attend_multi`](Self::attend_multi): each 4-bit page read once per
    /// block), token `t`'s queries seeing the open rows up to its own; then
    /// the accumulators take each token's update in order (rows inserted
    /// after token `t` have 0, which the decay keeps). The page closes when
    /// full. `buf`: [`scratch_len_group`](Self::scratch_len_group)`(b g)`.
    pub fn step_block(
        &mut self,
        kern: &Kernels,
        b: usize,
        qs: &[f32],
        outs: &mut [f32],
        buf: &mut [f32],
    ) {
        let (d, cap) = (self.d, self.capacity());
        let m = qs.len() / d;
        assert!(
            b >= 1 && b <= self.no && m.is_multiple_of(b) && m <= MQ,
            "step_block: block shape"
        );
        assert!(
            self.j - b as u64 >= self.sinks as u64,
            "step_block: a sink in the block"
        );
        let g = m / b;
        let mut opens = [0usize; MQ];
        for (t, o) in opens[..b].iter_mut().enumerate() {
            *o = self.no - b + 1 + t;
        }
        let (mut lw, mut num) = (
            core::mem::take(&mut self.lw),
            core::mem::take(&mut self.num),
        );
        let (xs, fb) = buf.split_at_mut(m * cap);
        self.attend_multi(kern, qs, &opens[..b], outs, xs, &mut lw, &mut num, fb);
        (self.lw, self.num) = (lw, num);
        for (t, &no) in opens[..b].iter().enumerate() {
            self.track(no, &xs[t * g * cap..(t + 1) * g * cap]);
        }
        if self.no == PAGE {
            self.close_page(kern, &mut buf[cap..]);
        }
    }

    /// Non-causal recorded query.
    pub fn push_query(&mut self, kern: &Kernels, q: &[f32], out: &mut [f32], buf: &mut [f32]) {
        self.attend_group(kern, q, out, buf);
    }

    /// Encodes the full open page into the window ring (the oldest page
    /// leaving first when the ring is full; with no ring the open page's
    /// tokens leave directly).
    fn close_page(&mut self, kern: &Kernels, fb: &mut [f32]) {
        let (d, dv) = (self.d, self.dv);
        let (vg, gv) = (quant::value_group(dv), dv / quant::value_group(dv));
        if self.pages == 0 {
            let p0 = self.j - PAGE as u64;
            for t in 0..PAGE {
                let (k, rest) = fb.split_at_mut(d);
                for (o, &h) in k.iter_mut().zip(&self.ok[t * d..(t + 1) * d]) {
                    *o = f16::from_bits(h).to_f32();
                }
                let v = &mut rest[..dv];
                for (o, &h) in v.iter_mut().zip(&self.ov[t * dv..(t + 1) * dv]) {
                    *o = f16::from_bits(h).to_f32();
                }
                let (mut c, mut lo, mut st) = ([0u8; 2048], [0u16; 128], [0u16; 128]);
                quant::encode_row(v, vg, &mut c[..dv / 2], &mut lo[..gv], &mut st[..gv]);
                // The open page's accumulators (no ring).
                let acc = self.wacc.get(t).copied().unwrap_or(0.0);
                self.leave(
                    kern,
                    k,
                    &c[..dv / 2],
                    &lo[..gv],
                    &st[..gv],
                    acc,
                    p0 + t as u64,
                );
            }
            self.clear_open();
            return;
        }
        if self.np == self.pages {
            self.retire_oldest(kern, fb);
        }
        let r = (self.head + self.np) % self.pages;
        let host = self.arrange_planes(r);
        let dec = &mut fb[..PAGE * d.max(dv)];
        (kern.f16_to_f32)(&self.ok[..PAGE * d], &mut dec[..PAGE * d]);
        let kb = PAGE * d / 2;
        quant::encode_page_keys(
            &dec[..PAGE * d],
            d,
            &mut self.kc[r * kb..(r + 1) * kb],
            &mut self.klo[r * d..(r + 1) * d],
            &mut self.kst[r * d..(r + 1) * d],
        );
        if let Some(h) = host {
            let (lo, hi) = self.kc.split_at_mut(r.max(h) * kb);
            let (coarse, fine) = if r < h {
                (&lo[r * kb..(r + 1) * kb], &mut hi[..kb])
            } else {
                (&hi[..kb], &mut lo[h * kb..(h + 1) * kb])
            };
            quant::encode_page_keys_fine(
                &dec[..PAGE * d],
                d,
                coarse,
                &self.klo[r * d..(r + 1) * d],
                &self.kst[r * d..(r + 1) * d],
                fine,
            );
        }
        (kern.f16_to_f32)(&self.ov[..PAGE * dv], &mut dec[..PAGE * dv]);
        for t in 0..PAGE {
            let row = r * PAGE + t;
            let v = &dec[t * dv..(t + 1) * dv];
            quant::encode_row(
                v,
                vg,
                &mut self.vc[row * dv / 2..(row + 1) * dv / 2],
                &mut self.vlo[row * gv..(row + 1) * gv],
                &mut self.vst[row * gv..(row + 1) * gv],
            );
            if let Some(h) = host {
                let frow = h * PAGE + t;
                let (lo, hi) = self.vc.split_at_mut(row.max(frow) * dv / 2);
                let (coarse, fine) = if row < frow {
                    (&lo[row * dv / 2..(row + 1) * dv / 2], &mut hi[..dv / 2])
                } else {
                    (&hi[..dv / 2], &mut lo[frow * dv / 2..(frow + 1) * dv / 2])
                };
                quant::encode_row_fine(
                    v,
                    vg,
                    coarse,
                    &self.vlo[row * gv..(row + 1) * gv],
                    &self.vst[row * gv..(row + 1) * gv],
                    fine,
                );
            }
        }
        let pages = self.pages;
        if self.hcap > 0 {
            self.wacc
                .copy_within(pages * PAGE..pages * PAGE + PAGE, r * PAGE);
        }
        self.np += 1;
        self.clear_open();
    }

    /// The ring slot holding the fine plane of the live page at ring slot r.
    fn plane(&self, r: usize) -> Option<usize> {
        match self.fine[r] {
            0 => None,
            h => Some(h as usize - 1),
        }
    }

    /// Before a new page takes the free ring slot `r`: the planes move so
    /// that the newest `min(np + 1, P - np - 1)` pages, the new one
    /// included, have one, each in a free slot; returns the new page's
    /// (dropped planes' slots are zeroed; at most one plane is copied).
    fn arrange_planes(&mut self, r: usize) -> Option<usize> {
        let (p, np1) = (self.pages, self.np + 1);
        let want = np1.min(p - np1);
        let (kb, vb) = (PAGE * self.d / 2, PAGE * self.dv / 2);
        let displaced = self.hosted[r].checked_sub(1).map(|x| x as usize);
        self.hosted[r] = 0;
        self.fine[r] = 0;
        for i in 0..(np1 - want).min(self.np) {
            let x = self.ring(i);
            if let Some(h) = self.plane(x) {
                self.fine[x] = 0;
                self.hosted[h] = 0;
                self.kc[h * kb..(h + 1) * kb].fill(0);
                self.vc[h * vb..(h + 1) * vb].fill(0);
            }
        }
        let head = self.head;
        let mut free = (np1..p).map(|i| (head + i) % p);
        if let Some(x) = displaced.filter(|&x| self.fine[x] != 0) {
            let s = free.find(|&s| self.hosted[s] == 0)?;
            self.kc.copy_within(r * kb..(r + 1) * kb, s * kb);
            self.vc.copy_within(r * vb..(r + 1) * vb, s * vb);
            self.fine[x] = s as u32 + 1;
            self.hosted[s] = x as u32 + 1;
        }
        if want == 0 {
            return None;
        }
        let s = free.find(|&s| self.hosted[s] == 0)?;
        self.fine[r] = s as u32 + 1;
        self.hosted[s] = r as u32 + 1;
        Some(s)
    }

    /// Empties the open page (zeroed: one encoding per state).
    fn clear_open(&mut self) {
        self.ok.fill(0);
        self.ov.fill(0);
        let pages = self.pages;
        if self.hcap > 0 {
            self.wacc[pages * PAGE..].fill(0.0);
        }
        self.no = 0;
    }

    /// The oldest window page leaves: each token to a heavy slot or the tail.
    fn retire_oldest(&mut self, kern: &Kernels, fb: &mut [f32]) {
        let (d, dv) = (self.d, self.dv);
        let gv = dv / quant::value_group(dv);
        let r = self.head;
        let p0 = self.page_pos(0);
        let (k, _) = fb.split_at_mut(d);
        for t in 0..PAGE {
            quant::decode_page_key(
                &self.kc[r * PAGE * d / 2..(r + 1) * PAGE * d / 2],
                t,
                &self.klo[r * d..(r + 1) * d],
                &self.kst[r * d..(r + 1) * d],
                k,
            );
            let row = r * PAGE + t;
            let (mut c, mut lo, mut st) = ([0u8; 2048], [0u16; 128], [0u16; 128]);
            c[..dv / 2].copy_from_slice(&self.vc[row * dv / 2..(row + 1) * dv / 2]);
            lo[..gv].copy_from_slice(&self.vlo[row * gv..(row + 1) * gv]);
            st[..gv].copy_from_slice(&self.vst[row * gv..(row + 1) * gv]);
            let acc = self.wacc.get(row).copied().unwrap_or(0.0);
            self.leave(
                kern,
                k,
                &c[..dv / 2],
                &lo[..gv],
                &st[..gv],
                acc,
                p0 + t as u64,
            );
        }
        self.head = (self.head + 1) % self.pages;
        self.np -= 1;
    }

    /// A token leaving the window (key `k`, 4-bit value row): a heavy slot
    /// if one is free or its accumulated attention beats the lowest heavy
    /// slot's (which goes to the tail), else the tail.
    #[allow(clippy::too_many_arguments)]
    fn leave(
        &mut self,
        kern: &Kernels,
        k: &[f32],
        vc: &[u8],
        vlo: &[u16],
        vst: &[u16],
        acc: f32,
        p: u64,
    ) {
        let (d, dv) = (self.d, self.dv);
        let (vg, gv) = (quant::value_group(dv), dv / quant::value_group(dv));
        let mut v = [0.0f32; 4096];
        let slot = if self.nh < self.hcap {
            self.nh += 1;
            Some(self.nh - 1)
        } else if self.hcap > 0 {
            let (mut e, mut lo) = (0usize, f32::INFINITY);
            for (h, &a) in self.hacc[..self.nh].iter().enumerate() {
                if a < lo {
                    (e, lo) = (h, a);
                }
            }
            if acc > lo {
                // Slot e's token goes to the tail.
                let mut ke = [0.0f32; 4096];
                let s = self.hs[e];
                for (o, &n) in ke[..d].iter_mut().zip(&self.hk[e * d..(e + 1) * d]) {
                    *o = s * n as f32;
                }
                quant::decode_row(
                    &self.hvc[e * dv / 2..(e + 1) * dv / 2],
                    vg,
                    &self.hvlo[e * gv..(e + 1) * gv],
                    &self.hvst[e * gv..(e + 1) * gv],
                    &mut v[..dv],
                );
                self.tail.add(kern, &ke[..d], &v[..dv]);
                Some(e)
            } else {
                None
            }
        } else {
            None
        };
        match slot {
            Some(h) => {
                self.hs[h] = quant::encode_i8(k, &mut self.hk[h * d..(h + 1) * d]);
                self.hvc[h * dv / 2..(h + 1) * dv / 2].copy_from_slice(vc);
                self.hvlo[h * gv..(h + 1) * gv].copy_from_slice(vlo);
                self.hvst[h * gv..(h + 1) * gv].copy_from_slice(vst);
                self.hacc[h] = acc;
                self.hpos[h] = p;
            }
            None => {
                quant::decode_row(vc, vg, vlo, vst, &mut v[..dv]);
                self.tail.add(kern, k, &v[..dv]);
            }
        }
    }
}
