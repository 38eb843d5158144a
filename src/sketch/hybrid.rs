//! Slot hybrid (`Slots`): exact tokens (attention sinks, a recent window, heavy
//! hitters) plus a clustered moment tail that absorbs every evicted token.
//! Nothing is dropped: a token leaving the exact set is folded into the tail.
//!
//! Exact part: `C = sinks + window + heavy` slots, each `k` (d), `v` (dv),
//! its accumulated attention `acc` and its position. Per token j:
//!
//! ```text
//! insert (k_j, v_j); x_i = s q_j.k_i for every exact slot i
//! tail group g (N_g, mean_k m_g (d), per-coordinate variance var_g (d), mean_v mv_g (dv)):
//!     mu_g  = s q.m_g                     V_g = clamp(s^2 sum_c q_c^2 var_g[c], 0, VAR_MAX)
//!     lw_g  = ln N_g + mu_g + ln(1 + V_g / 2)          (2nd-order expansion of E[e^x])
//! c = max(max_i x_i, max_g lw_g)                       (one common scale: nothing overflows)
//! o_j = (sum_i e^(x_i - c) v_i + sum_g e^(lw_g - c) mv_g) / (sum_i e^(x_i - c) + sum_g e^(lw_g - c))
//! acc_i = (1 - DECAY) acc_i + e^(x_i - c) / den       (H2O accumulated attention, decayed; tail mass included)
//! when the cache is full: adapt the window/heavy split, then evict the
//! non-sink token outside the window with the lowest acc into the tail.
//! ```
//!
//! Split controller (ghosts, after ARC's ghost lists): the keys of the last
//! `GHOSTS` tokens evicted right at the window edge (age < window + BAND)
//! and of the last `GHOSTS` older evicted tokens (heavy hitters that lost
//! their slot) are kept. Every full step measures the attention weight each
//! ghost would have had, `w = e^(x - c) / (den + e^(x - c))`, averages per
//! list, and keeps an EMA (rate `ALPHA`) of both: what a longer window would
//! have kept vs what more heavy slots would have kept. The window boundary
//! moves by `max(1, C / STEP_DIV)` slots toward the side whose evicted tokens are still
//! attended (per head: recency heads grow the window, retrieval heads the
//! heavy set). Only when both a window and a heavy set are configured.
//!
//! Tail: at most G groups; an evicted token becomes a singleton group and the
//! two groups of least Ward cost `N_a N_b / (N_a + N_b) |m_a - m_b|^2` (key
//! space) are merged (Chan et al.'s pairwise update of means and variances,
//! computed in f64, stored in f32: no sums that grow with the stream).
//!
//! Memory per exact slot: the key (`4 d` bytes f32, or `2 d + 4` int16 with
//! its scale: `keys`), the value (`4 dv` f32, or `2 dv + 4` binary16 with
//! its scale: `values`) plus 12 bytes (acc f32, position u32 relative to a
//! base, score scratch f32); the rounded formats add exact residuals for the
//! sinks and the `R` newest tokens (`residuals`).

use crate::config::Config;
use crate::error::{try_vec, Error, Result};
use crate::kernels::Kernels;

pub mod keys;
mod payload;
mod residuals;
pub mod values;

pub use keys::Keys;
pub use residuals::fresh_rows;
pub use values::Values;

/// Clamp of the per-group score variance in the expansion (only keeps
/// `ln(1 + V/2)` finite: the term grows logarithmically). Measured on 14 + 10
/// heads x 4 budgets (ours / best peer, geometric mean): clamp 1 0.551 /
/// 0.531, 2 0.525 / 0.506, 4 0.507 / 0.490, 8 0.497 / 0.476, 16 and more
/// 0.495 / 0.472 (a plateau). The Gaussian closure `e^(V/2)` instead of
/// `1 + V/2` failed on sharp heads (0.758 / 0.826 at clamp 8).
pub const VAR_MAX: f64 = 64.0;
/// EMA rate of the split controller.
pub const ALPHA: f64 = 1.0 / 256.0;
/// The split controller moves the window by `max(1, C / STEP_DIV)` slots per
/// query, so a full swing of the split takes ~`STEP_DIV` queries at every
/// capacity. One slot per query took ~5000 queries at 2 MiB (C = 5103):
/// on L18H8 the window was still shrinking when the 8192-token stream
/// ended (0.260 vs H2O's 0.131). Measured (given | dpkg | vim heads,
/// geometric mean of ours / best peer): 1 slot 0.231 | 0.334 | 0.243;
/// C/256 0.254 | 0.335 | 0.252; C/512 0.253 | 0.337 | 0.242; C/1024
/// 0.227 | 0.327 | 0.239; C/2048 0.226 | 0.338 | 0.244.
pub const STEP_DIV: usize = 1024;
/// Decay of the accumulated attention per query:
/// `acc_i <- (1 - DECAY) acc_i + w_i`, the controller's timescale. H2O's plain sum keeps tokens that were
/// attended long ago (often while they were recent) over tokens attended
/// now; with the decay the heavy set follows current attention. Measured on
/// 14 heads x 4 budgets (eval, two texts): geometric mean of ours / best peer
/// 0.772 -> 0.594, cells worse than the best peer 16 -> 11 of 56; decays
/// from 1/1000 to 1/100 all gave 0.59-0.64. Re-checked under the ghost
/// controller (14 heads | 10 held-out): 0 0.756 | 0.775, 1/4096 0.671 |
/// 0.703, 1/1000 0.581 | 0.587, 1/256 0.525 | 0.506, 1/64 0.531 | 0.498.
pub const DECAY: f32 = 1.0 / 256.0;
/// Tokens at the window/heavy boundary: the heavy set keeps at least `BAND`
/// slots, and a token evicted less than `BAND` steps after leaving the
/// window counts as a window-edge ghost.
pub const BAND: usize = 32;
/// Ghost keys per list (window-edge victims, heavy victims). Measured with
/// 8, 16 and 32 per list on 14 heads x 4 budgets: geometric mean of ours /
/// best peer 0.572 / 0.569 / 0.557 (noise level); 8 costs the least bytes.
pub const GHOSTS: usize = 8;
/// Largest input magnitude accepted in hybrid mode (keeps scores and second
/// moments finite in f32/f64): `2^40`.
pub const MAX_INPUT: f32 = 1_099_511_627_776.0;
/// Positions are stored as `u32` offsets from `base`; when the newest offset
/// reaches `2^31`, `base` moves by `REBASE` and older offsets saturate at 0
/// (ages stay exact below `2^30`, far beyond any window).
const REBASE: u64 = 1 << 30;

/// Exact tokens plus the moment tail of one head.
#[derive(Clone, Debug)]
pub struct Slots {
    d: usize,
    dv: usize,
    scale: f32,
    /// Sinks live in slots `0..sinks` (eviction never moves them).
    sinks: usize,
    cap: usize,
    /// Current window length (moves in `[w_min, w_max]`).
    window: usize,
    w_min: usize,
    w_max: usize,
    adaptive: bool,
    /// EMAs of the mean ghost weight: window-edge victims, heavy victims.
    ew: f64,
    eh: f64,
    /// Live slots `0..m` (sinks first, the rest in any order).
    m: usize,
    keys: Keys,
    vals: Values,
    acc: Vec<f32>,
    /// Position of each slot minus `base` (saturating).
    pos: Vec<u32>,
    base: u64,
    /// Tail groups, `G + 1` rows (one spare for the new singleton).
    groups: usize,
    ng: usize,
    g_n: Vec<f64>,
    g_mk: Vec<f32>,
    g_vk: Vec<f32>,
    g_mv: Vec<f32>,
    /// Ghost keys: `[0, GHOSTS)` window-edge victims, `[GHOSTS, 2 GHOSTS)`
    /// heavy victims (rings; empty when not adaptive).
    gh_k: Vec<f32>,
    /// Victims written to each ring so far.
    gh_seen: [u64; 2],
    /// Tokens seen.
    j: u64,
    // scratch of recorded queries
    x: Vec<f32>,
    lw: Vec<f64>,
    num: Vec<f64>,
    vb: Vec<f32>,
}

/// Sizes of a hybrid config: `(capacity C, window, w_min, w_max, groups)`.
fn shape(cfg: &Config) -> (usize, usize, usize, usize, usize) {
    let (s, w, h) = (
        cfg.sink_tokens as usize,
        cfg.window_tokens as usize,
        cfg.heavy_tokens as usize,
    );
    let dynamic = w + h;
    let (w_min, w_max) = if h > 0 {
        (
            BAND.min(w).max(1),
            dynamic.saturating_sub(BAND.min(h)).max(w),
        )
    } else {
        (w, w)
    };
    let g = if cfg.tail_groups == 0 {
        DEFAULT_GROUPS
    } else {
        cfg.tail_groups as usize
    };
    (s + dynamic, w, w_min, w_max, g)
}

/// Ghost key floats of a config: `2 GHOSTS d` when adaptive, else 0.
fn ghost_len(cfg: &Config) -> usize {
    if cfg.heavy_tokens > 0 {
        2 * GHOSTS * cfg.head_dim as usize
    } else {
        0
    }
}

/// Weight a token of score `x` would have if added to an attention of
/// scale `c` and denominator `den`: `e^(x - c) / (den + e^(x - c))`, in
/// `[0, 1]` for any `x` (no overflow).
#[inline]
fn ghost_weight(x: f64, c: f64, den: f64) -> f64 {
    let t = x - c;
    if t > 0.0 {
        1.0 / (1.0 + den * (-t).exp())
    } else {
        let e = t.exp();
        e / (den + e)
    }
}

/// Tail groups when `tail_groups` is 0.
pub const DEFAULT_GROUPS: usize = 32;

impl Slots {
    /// Whether a config asks for the hybrid state.
    pub fn wanted(cfg: &Config) -> bool {
        cfg.sink_tokens > 0 || cfg.window_tokens > 0 || cfg.heavy_tokens > 0
    }

    /// Checks the hybrid fields: the window holds at least the current token.
    pub fn validate(cfg: &Config) -> Result<()> {
        if cfg.window_tokens == 0 {
            return Err(Error::InvalidArg);
        }
        let (c, ..) = shape(cfg);
        if c > (1 << 26) || cfg.tail_groups > 4096 {
            return Err(Error::InvalidArg);
        }
        Ok(())
    }

    /// Bytes the hybrid state allocates for `cfg` (exactly what `new` reserves).
    pub fn heap_bytes_for(cfg: &Config) -> usize {
        let (c, _, _, _, g) = shape(cfg);
        let (d, dv, s) = (
            cfg.head_dim as usize,
            cfg.value_dim as usize,
            cfg.sink_tokens as usize,
        );
        Keys::bytes_for(cfg.key_format, c, d, s) // keys (f32, or int16 with scales and residuals)
            + c * 4 + c * 4 // acc, pos
            + Values::bytes_for(cfg.value_format, c, dv, s) // values (and their scratch)
            + (g + 1) * 8 + (g + 1) * (2 * d + dv) * 4 // tail groups
            + ghost_len(cfg) * 4
            + c * 4 + (g + 1) * 8 + dv * 8 // scratch: scores, group weights, numerator
    }

    /// An empty hybrid state.
    pub fn new(cfg: &Config) -> Result<Self> {
        let (c, w, w_min, w_max, g) = shape(cfg);
        let (d, dv) = (cfg.head_dim as usize, cfg.value_dim as usize);
        Ok(Slots {
            d,
            dv,
            scale: cfg.scale,
            sinks: cfg.sink_tokens as usize,
            cap: c,
            window: if cfg.heavy_tokens > 0 { w_max } else { w },
            w_min,
            w_max,
            adaptive: cfg.heavy_tokens > 0,
            ew: 0.0,
            eh: 0.0,
            m: 0,
            keys: Keys::new(cfg.key_format, c, d, cfg.sink_tokens as usize)?,
            vals: Values::new(cfg.value_format, c, dv, cfg.sink_tokens as usize)?,
            acc: try_vec(c, 0.0)?,
            pos: try_vec(c, 0)?,
            base: 0,
            groups: g,
            ng: 0,
            g_n: try_vec(g + 1, 0.0)?,
            g_mk: try_vec((g + 1) * d, 0.0)?,
            g_vk: try_vec((g + 1) * d, 0.0)?,
            g_mv: try_vec((g + 1) * dv, 0.0)?,
            gh_k: try_vec(ghost_len(cfg), 0.0)?,
            gh_seen: [0; 2],
            j: 0,
            x: try_vec(c, 0.0)?,
            lw: try_vec(g + 1, 0.0)?,
            num: try_vec(dv, 0.0)?,
            vb: try_vec(Values::scratch_len(cfg.value_format, dv), 0.0)?,
        })
    }

    /// Bytes owned (the vectors' capacities).
    pub fn heap_bytes(&self) -> usize {
        self.vals.heap_bytes()
            + self.keys.heap_bytes()
            + (self.vb.capacity()
                + self.acc.capacity()
                + self.pos.capacity()
                + self.g_mk.capacity()
                + self.g_vk.capacity()
                + self.g_mv.capacity()
                + self.gh_k.capacity()
                + self.x.capacity())
                * 4
            + (self.g_n.capacity() + self.lw.capacity() + self.num.capacity()) * 8
    }

    /// Exact slots in use.
    pub fn exact_len(&self) -> usize {
        self.m
    }
    /// Exact capacity C.
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Current window length.
    pub fn window(&self) -> usize {
        self.window
    }
    /// Bounds of the window length `[w_min, w_max]`.
    pub fn window_bounds(&self) -> (usize, usize) {
        (self.w_min, self.w_max)
    }
    /// Tokens folded into the tail.
    pub fn tail_tokens(&self) -> u64 {
        self.g_n[..self.ng].iter().sum::<f64>() as u64
    }

    /// The key the exact set holds for the token at absolute position `p`
    /// (as scores see it: exact, or its int16 rounding), if that token is
    /// live (inspection; allocates).
    pub fn key_of_position(&self, p: u64) -> Option<Vec<f32>> {
        let i = (0..self.m).find(|&i| self.abs_pos(i) == p)?;
        let mut k = vec![0.0; self.d];
        self.keys.get(i, p, &mut k);
        Some(k)
    }

    /// Input check of hybrid mode: every magnitude `<= MAX_INPUT`.
    pub fn check_range(x: &[f32]) -> Result<()> {
        if x.iter().all(|v| v.abs() <= MAX_INPUT) {
            Ok(())
        } else {
            Err(Error::Range)
        }
    }

    /// Absorbs token (k, v) as the next position (non-causal append, or the
    /// first half of a causal step). Evicts when the cache was full.
    pub fn insert(&mut self, kern: &Kernels, k: &[f32], v: &[f32]) {
        if self.m == self.cap {
            // Only reachable without a query since the last insert (non-causal):
            // make room by the same rule, without adapting.
            self.evict(kern);
        }
        if self.j - self.base >= 2 * REBASE {
            self.base += REBASE;
            for p in self.pos[..self.m].iter_mut() {
                *p = p.saturating_sub(REBASE as u32);
            }
        }
        let m = self.m;
        self.keys.store(m, self.j, k);
        self.vals.store(m, self.j, v);
        self.acc[m] = 0.0;
        self.pos[m] = (self.j - self.base) as u32;
        self.m += 1;
        self.j += 1;
    }

    /// Attention of `q` over the exact tokens and the tail into `out`
    /// (read-only: records nothing); leaves the normalised exact weights in
    /// `x[..m]` and returns the common scale and denominator `(c, den)`.
    /// Caller scratch: `x` (C), `lw` (G + 1), `num` (dv), `vb` (value
    /// blocks); see `scratch_sizes`.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        kern: &Kernels,
        q: &[f32],
        out: &mut [f32],
        x: &mut [f32],
        lw: &mut [f64],
        num: &mut [f64],
        vb: &mut [f32],
    ) -> (f64, f64) {
        let (d, dv, m) = (self.d, self.dv, self.m);
        let s = self.scale as f64;
        // Exact scores are kept unscaled (q.k_i, f32: no overflow for any
        // finite scale; the level's `row_dots` or `i16_row_dots`); their
        // largest scaled value enters c in f64.
        let xmax = self.keys.dots(kern, q, &mut x[..m]);
        let top = if m > 0 {
            s * xmax as f64
        } else {
            f64::NEG_INFINITY
        };
        let mut c = top;
        for g in 0..self.ng {
            let (mk, vk) = (
                &self.g_mk[g * d..(g + 1) * d],
                &self.g_vk[g * d..(g + 1) * d],
            );
            let (mut mu, mut var) = (0.0f64, 0.0f64);
            for ((&a, &b), &qf) in mk.iter().zip(vk).zip(q) {
                let qc = qf as f64;
                mu += qc * a as f64;
                var += qc * qc * b as f64;
            }
            let var = (s * s * var).clamp(0.0, VAR_MAX);
            lw[g] = self.g_n[g].ln() + s * mu + (0.5 * var).ln_1p();
            c = c.max(lw[g]);
        }
        if m == 0 && self.ng == 0 {
            out.fill(0.0);
            return (0.0, 1.0);
        }
        // Tail groups in f64 (G terms); exact slots in f32: e^(s (x_i -
        // xmax)) <= 1 by the level's vector exp (`exp_shift`), scaled by
        // f = e^(s xmax - c) <= 1, values summed into `out` by the level's
        // `f16_rows` or gemm (1 x m times m x dv, see `values`); both parts
        // meet in f64.
        num.fill(0.0);
        let mut den = 0.0f64;
        for g in 0..self.ng {
            let w = (lw[g] - c).exp();
            den += w;
            for (o, &mv) in num.iter_mut().zip(&self.g_mv[g * dv..(g + 1) * dv]) {
                *o += w * mv as f64;
            }
        }
        let f = (top - c).exp();
        out.fill(0.0);
        if m > 0 {
            den += f * (kern.exp_shift)(&mut x[..m], self.scale, xmax);
            self.vals.weighted_sum(kern, &x[..m], out, vb);
        }
        let inv = 1.0 / den;
        for (o, &n) in out.iter_mut().zip(num.iter()) {
            *o = ((f * *o as f64 + n) * inv) as f32;
        }
        let wf = (f * inv) as f32;
        x[..m].iter_mut().for_each(|w| *w *= wf);
        (c, den)
    }

    /// Scratch sizes of a read-only query: `(C, G + 1, dv, value blocks)`
    /// (`x` and the value blocks are f32, the other two f64).
    pub fn scratch_sizes(&self) -> (usize, usize, usize, usize) {
        (self.cap, self.groups + 1, self.dv, self.vb.len())
    }

    /// Attention that records, for the `g = qs.len() / d` query heads of a
    /// GQA group sharing this state (`qs`: g x d, `outs`: g x dv): each reads
    /// the same state; the accumulated attention decays once and gets the
    /// sum of the group's normalised weights (H2O's score over the group), so
    /// a token any head of the group attends counts. Returns the mean ghost
    /// weights of the group (see `adapt`) when `ghosts`, else zeros.
    fn attend_group(
        &mut self,
        kern: &Kernels,
        qs: &[f32],
        outs: &mut [f32],
        ghosts: bool,
    ) -> [f64; 2] {
        let (d, dv) = (self.d, self.dv);
        let (mut x, mut lw, mut num, mut vb) = (
            core::mem::take(&mut self.x),
            core::mem::take(&mut self.lw),
            core::mem::take(&mut self.num),
            core::mem::take(&mut self.vb),
        );
        let keep = 1.0 - DECAY;
        self.acc[..self.m].iter_mut().for_each(|a| *a *= keep);
        let mut mean = [0.0f64; 2];
        let g = qs.len() / d;
        for (q, out) in qs.chunks_exact(d).zip(outs.chunks_exact_mut(dv)) {
            let (c, den) = self.attend(kern, q, out, &mut x, &mut lw, &mut num, &mut vb);
            for (a, &w) in self.acc[..self.m].iter_mut().zip(&x[..self.m]) {
                *a += w;
            }
            if ghosts {
                let gm = self.ghost_means(kern, q, c, den);
                mean[0] += gm[0] / g as f64;
                mean[1] += gm[1] / g as f64;
            }
        }
        (self.x, self.lw, self.num, self.vb) = (x, lw, num, vb);
        mean
    }

    /// Causal step after `insert`: answer `q`, update the accumulated
    /// attention, adapt the split and evict when full.
    pub fn step_query(&mut self, kern: &Kernels, q: &[f32], out: &mut [f32]) {
        self.step_group(kern, q, out);
    }

    /// Causal step after `insert` for the query heads of a GQA group (`qs`:
    /// g x d, `outs`: g x dv, g >= 1): every head answers over the same
    /// state, eviction and the window/heavy controller see all of them
    /// (`attend_group`); then adapt and evict when full.
    pub fn step_group(&mut self, kern: &Kernels, qs: &[f32], outs: &mut [f32]) {
        let full = self.m == self.cap;
        let mean = self.attend_group(kern, qs, outs, full && self.adaptive);
        if full {
            if self.adaptive {
                self.adapt(mean);
            }
            self.evict(kern);
        }
    }

    /// Non-causal recorded query: attention plus the accumulated-score update.
    pub fn push_query(&mut self, kern: &Kernels, q: &[f32], out: &mut [f32]) {
        self.attend_group(kern, q, out, false);
    }

    /// Absolute position of slot i.
    fn abs_pos(&self, i: usize) -> u64 {
        self.base + self.pos[i] as u64
    }

    /// Age of slot i relative to the newest token.
    fn age(&self, i: usize) -> u64 {
        (self.j - 1) - self.abs_pos(i)
    }

    /// Mean weight `q` would give each ghost list's keys (window-edge
    /// victims, heavy victims): `w = e^(x - c) / (den + e^(x - c))`.
    fn ghost_means(&self, kern: &Kernels, q: &[f32], c: f64, den: f64) -> [f64; 2] {
        let d = self.d;
        let mut mean = [0.0f64; 2];
        let mut x = [0.0f32; GHOSTS];
        for (r, m) in mean.iter_mut().enumerate() {
            let live = self.gh_seen[r].min(GHOSTS as u64) as usize;
            if live == 0 {
                continue;
            }
            let ring = &self.gh_k[r * GHOSTS * d..(r * GHOSTS + live) * d];
            (kern.row_dots)(ring, q, &mut x[..live]);
            let sum: f64 = x[..live]
                .iter()
                .map(|&g| ghost_weight(self.scale as f64 * g as f64, c, den))
                .sum();
            *m = sum / live as f64;
        }
        mean
    }

    /// Ghost controller step: EMAs of the mean ghost weights (over the
    /// group's query heads), then the window moves toward the larger.
    fn adapt(&mut self, mean: [f64; 2]) {
        self.ew += ALPHA * (mean[0] - self.ew);
        self.eh += ALPHA * (mean[1] - self.eh);
        let step = (self.cap / STEP_DIV).max(1);
        if self.ew > self.eh {
            self.window = (self.window + step).min(self.w_max);
        } else if self.ew < self.eh {
            self.window = self.window.saturating_sub(step).max(self.w_min);
        }
    }

    /// Folds the non-sink token outside the next window with the lowest
    /// accumulated attention into the tail (its key also becomes a ghost).
    fn evict(&mut self, kern: &Kernels) {
        let (d, dv, m) = (self.d, self.dv, self.m);
        // Outside the next window: age >= window - 1 (position <= j - W + 1).
        let w = self.window as u64;
        let mut best = usize::MAX;
        for i in self.sinks.min(m)..m {
            if self.age(i) + 1 < w {
                continue;
            }
            if best == usize::MAX || self.acc[i] < self.acc[best] {
                best = i;
            }
        }
        if best == usize::MAX {
            // Only sinks and window tokens: the oldest non-sink goes.
            best = (self.sinks.min(m)..m)
                .max_by_key(|&i| self.age(i))
                .unwrap_or(0);
        }
        let g = self.ng;
        let pb = self.abs_pos(best);
        self.keys.get(best, pb, &mut self.g_mk[g * d..(g + 1) * d]);
        if self.adaptive {
            let r = usize::from(self.age(best) + 1 >= w + BAND as u64);
            let slot = r * GHOSTS + (self.gh_seen[r] % GHOSTS as u64) as usize;
            self.gh_k[slot * d..(slot + 1) * d].copy_from_slice(&self.g_mk[g * d..(g + 1) * d]);
            self.gh_seen[r] += 1;
        }
        self.g_n[g] = 1.0;
        self.g_vk[g * d..(g + 1) * d].fill(0.0);
        self.vals
            .get(best, pb, &mut self.g_mv[g * dv..(g + 1) * dv]);
        self.keys.evicted(best, pb);
        self.vals.evicted(best, pb);
        self.ng += 1;
        if self.ng > self.groups {
            self.merge_closest(kern);
        }
        let last = m - 1;
        if best != last {
            self.keys.moved(last, best, self.abs_pos(last));
            self.vals.moved(last, best, self.abs_pos(last));
            self.acc[best] = self.acc[last];
            self.pos[best] = self.pos[last];
        }
        self.m = last;
    }

    /// Merges the two groups of least Ward cost (see the module doc):
    /// `n = n_a + n_b`, `f = n_a / n`, `m = f m_a + (1 - f) m_b`,
    /// `var = f var_a + (1 - f) var_b + f (1 - f) (m_a - m_b)^2`.
    fn merge_closest(&mut self, kern: &Kernels) {
        let (d, dv, ng) = (self.d, self.dv, self.ng);
        let (mut ba, mut bb, mut bc) = (0usize, 1usize, f64::INFINITY);
        // |m_a - m_b|^2 for b > a by the level's `row_dists`, in chunks.
        let mut dist = [0.0f32; 64];
        for a in 0..ng {
            let ka = &self.g_mk[a * d..(a + 1) * d];
            let mut b0 = a + 1;
            while b0 < ng {
                let nb_ = (ng - b0).min(dist.len());
                (kern.row_dists)(&self.g_mk[b0 * d..(b0 + nb_) * d], ka, &mut dist[..nb_]);
                for (i, &dd) in dist[..nb_].iter().enumerate() {
                    let b = b0 + i;
                    let (na, nb) = (self.g_n[a], self.g_n[b]);
                    let cost = dd as f64 * na * nb / (na + nb);
                    if cost < bc {
                        (ba, bb, bc) = (a, b, cost);
                    }
                }
                b0 += nb_;
            }
        }
        let (na, nb) = (self.g_n[ba], self.g_n[bb]);
        let f = na / (na + nb);
        let h = 1.0 - f;
        for cc in 0..d {
            let (ia, ib) = (ba * d + cc, bb * d + cc);
            let (ma, mb) = (self.g_mk[ia] as f64, self.g_mk[ib] as f64);
            let (va, vb) = (self.g_vk[ia] as f64, self.g_vk[ib] as f64);
            self.g_mk[ia] = (f * ma + h * mb) as f32;
            self.g_vk[ia] = (f * va + h * vb + f * h * (ma - mb) * (ma - mb)) as f32;
        }
        for cc in 0..dv {
            let (ia, ib) = (ba * dv + cc, bb * dv + cc);
            self.g_mv[ia] = (f * self.g_mv[ia] as f64 + h * self.g_mv[ib] as f64) as f32;
        }
        self.g_n[ba] = na + nb;
        // The last group moves into bb's row.
        let last = ng - 1;
        self.g_n[bb] = self.g_n[last];
        for (arr, w) in [
            (&mut self.g_mk, d),
            (&mut self.g_vk, d),
            (&mut self.g_mv, dv),
        ] {
            arr.copy_within(last * w..(last + 1) * w, bb * w);
        }
        self.ng = last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions past `2^31` tokens: the base moves, ages stay exact (a
    /// 2^31-token stream is too long for a test, so the counter starts there).
    #[test]
    fn ages_survive_the_position_rebase() {
        let mut cfg = Config::new(4);
        cfg.sink_tokens = 2;
        cfg.window_tokens = 6;
        cfg.heavy_tokens = 4;
        let mut h = Slots::new(&cfg).unwrap();
        let start = 2 * REBASE - 5;
        h.j = start;
        let mut out = [0.0f32; 4];
        for t in 0..40u64 {
            let k = [t as f32 * 0.01, 0.0, 0.0, 1.0];
            h.insert(
                crate::kernels::Kernels::for_level(crate::Level::Portable).unwrap(),
                &k,
                &k,
            );
            h.step_query(
                crate::kernels::Kernels::for_level(crate::Level::Portable).unwrap(),
                &[0.0, 0.0, 0.0, 1.0],
                &mut out,
            );
        }
        assert_eq!(h.base, REBASE);
        // Sinks stay in slots 0..2 with their true ages; every other slot is
        // within the last 40 tokens and ages are distinct.
        let newest = start + 39;
        for i in 0..h.m {
            let abs = h.base + h.pos[i] as u64;
            if i < 2 {
                assert_eq!(abs, start + i as u64);
            } else {
                assert!(abs > start + 1 && abs <= newest, "slot {i}: {abs}");
            }
            assert_eq!(h.age(i), newest - abs);
        }
        // The window's tokens (the newest `window - 1`) are all present.
        for a in 0..h.window as u64 - 1 {
            assert!((0..h.m).any(|i| h.age(i) == a), "age {a} missing");
        }
    }
}
