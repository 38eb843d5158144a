//! The exact-token state of a hybrid head, in one of two layouts: the slot
//! hybrid (`hybrid::Slots`: any order of exact slots, f32 / int16 keys, f32 /
//! binary16 / int8 values) or the paged hybrid (`paged::Paged`: 4-bit
//! window pages and heavy slots, `AS_KEYS_U4` / `AS_VALUES_U4`). This file
//! only dispatches.

use super::hybrid::Slots;
use super::paged::Paged;
use crate::config::Config;
use crate::error::Result;
use crate::kernels::Kernels;

/// Exact tokens plus the moment tail of one head.
#[derive(Clone, Debug)]
pub enum Hybrid {
    /// Exact slots in any order (`key_format` 0/1, `value_format` 0..=2).
    Slots(Slots),
    /// 4-bit pages and heavy slots (`key_format` 2, `value_format` 3).
    Paged(Paged),
}

macro_rules! each {
    ($self:expr, $h:ident => $e:expr) => {
        match $self {
            Hybrid::Slots($h) => $e,
            Hybrid::Paged($h) => $e,
        }
    };
}

impl Hybrid {
    /// Whether a config asks for exact tokens.
    pub fn wanted(cfg: &Config) -> bool {
        Slots::wanted(cfg)
    }

    /// Checks the hybrid fields of a config.
    pub fn validate(cfg: &Config) -> Result<()> {
        if Paged::wanted(cfg) {
            Paged::validate(cfg)
        } else {
            Slots::validate(cfg)
        }
    }

    /// Bytes the state allocates for `cfg`.
    pub fn heap_bytes_for(cfg: &Config) -> usize {
        if Paged::wanted(cfg) {
            Paged::heap_bytes_for(cfg)
        } else {
            Slots::heap_bytes_for(cfg)
        }
    }

    /// Size of the state's value struct (for `state_bytes`).
    pub fn inline_bytes() -> usize {
        core::mem::size_of::<Self>()
    }

    /// An empty state.
    pub fn new(cfg: &Config) -> Result<Self> {
        Ok(if Paged::wanted(cfg) {
            Hybrid::Paged(Paged::new(cfg)?)
        } else {
            Hybrid::Slots(Slots::new(cfg)?)
        })
    }

    /// Bytes owned.
    pub fn heap_bytes(&self) -> usize {
        each!(self, h => h.heap_bytes())
    }

    /// Input check of this layout (`AS_ERR_RANGE` beyond what it stores).
    pub fn check_range(&self, x: &[f32]) -> Result<()> {
        match self {
            Hybrid::Slots(_) => Slots::check_range(x),
            Hybrid::Paged(_) => Paged::check_range(x),
        }
    }

    /// Caller scratch (f32, per thread) of recorded steps: `buf` below
    /// needs at least this many floats (0 for the slot layout, which owns
    /// its scratch).
    pub fn scratch_len(&self) -> usize {
        self.scratch_len_group(1)
    }

    /// [`scratch_len`](Self::scratch_len) for steps of `group` queries (the
    /// paged layout scores a group's queries together when it has this much;
    /// with less it takes them one at a time).
    pub fn scratch_len_group(&self, group: usize) -> usize {
        match self {
            Hybrid::Slots(_) => 0,
            Hybrid::Paged(h) => h.scratch_len_group(group),
        }
    }

    /// [`scratch_len_group`](Self::scratch_len_group) for prefill of
    /// `group` queries per token: the paged layout takes blocks of tokens
    /// at once (`Paged::step_block`) when it has this much.
    pub fn scratch_len_block(&self, group: usize) -> usize {
        match self {
            Hybrid::Slots(_) => 0,
            Hybrid::Paged(h) => h.scratch_len_block(group),
        }
    }

    /// Tokens of a full prefill block of `group` queries per token
    /// (`Paged::block_tokens`; 1: no block path, always for the slot
    /// layout).
    pub fn block_tokens(&self, group: usize) -> usize {
        match self {
            Hybrid::Slots(_) => 1,
            Hybrid::Paged(h) => h.block_tokens(group),
        }
    }

    /// Tokens the next prefill block takes of `left` (`Paged::block_len`;
    /// 1: token by token, always for the slot layout).
    pub fn block_len(&self, group: usize, left: usize, buf_len: usize) -> usize {
        match self {
            Hybrid::Slots(_) => 1,
            Hybrid::Paged(h) => h.block_len(group, left, buf_len),
        }
    }

    /// Causal steps of the last `b` inserted tokens (`Paged::step_block`;
    /// only where [`block_len`](Self::block_len) allowed `b`).
    pub fn step_block(
        &mut self,
        kern: &Kernels,
        b: usize,
        qs: &[f32],
        outs: &mut [f32],
        buf: &mut [f32],
    ) {
        match self {
            Hybrid::Slots(_) => unreachable!("step_block: slot layout"),
            Hybrid::Paged(h) => h.step_block(kern, b, qs, outs, buf),
        }
    }

    /// Absorbs token `(k, v)`.
    pub fn insert(&mut self, kern: &Kernels, k: &[f32], v: &[f32], buf: &mut [f32]) {
        match self {
            Hybrid::Slots(h) => h.insert(kern, k, v),
            Hybrid::Paged(h) => h.insert(kern, k, v, buf),
        }
    }

    /// Causal step after `insert` for a GQA group's queries.
    pub fn step_group(&mut self, kern: &Kernels, qs: &[f32], outs: &mut [f32], buf: &mut [f32]) {
        match self {
            Hybrid::Slots(h) => h.step_group(kern, qs, outs),
            Hybrid::Paged(h) => h.step_group(kern, qs, outs, buf),
        }
    }

    /// Non-causal recorded query.
    pub fn push_query(&mut self, kern: &Kernels, q: &[f32], out: &mut [f32], buf: &mut [f32]) {
        match self {
            Hybrid::Slots(h) => h.push_query(kern, q, out),
            Hybrid::Paged(h) => h.push_query(kern, q, out, buf),
        }
    }

    /// Read-only attention (caller scratch of `scratch_sizes`).
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        kern: &Kernels,
        q: &[f32],
        out: &mut [f32],
        x: &mut [f32],
        lw: &mut [f64],
        num: &mut [f64],
        buf: &mut [f32],
    ) -> (f64, f64) {
        each!(self, h => h.attend(kern, q, out, x, lw, num, buf))
    }

    /// Scratch sizes of a read-only query: `(scores, G + 1, dv, buffer)`.
    pub fn scratch_sizes(&self) -> (usize, usize, usize, usize) {
        each!(self, h => h.scratch_sizes())
    }

    /// Exact tokens held.
    pub fn exact_len(&self) -> usize {
        each!(self, h => h.exact_len())
    }

    /// Exact capacity in tokens.
    pub fn capacity(&self) -> usize {
        each!(self, h => h.capacity())
    }

    /// Current window length in tokens.
    pub fn window(&self) -> usize {
        each!(self, h => h.window())
    }

    /// Bounds of the window length (fixed for the paged layout).
    pub fn window_bounds(&self) -> (usize, usize) {
        match self {
            Hybrid::Slots(h) => h.window_bounds(),
            Hybrid::Paged(h) => (h.window(), h.window()),
        }
    }

    /// Tokens folded into the tail.
    pub fn tail_tokens(&self) -> u64 {
        each!(self, h => h.tail_tokens())
    }

    /// The key held for the token at position `p`, if exact (inspection).
    pub fn key_of_position(&self, p: u64) -> Option<Vec<f32>> {
        each!(self, h => h.key_of_position(p))
    }

    /// Payload bytes of `cfg` in format `version`.
    pub fn payload_len(cfg: &Config, version: u32) -> usize {
        if Paged::wanted(cfg) {
            Paged::payload_len(cfg, version)
        } else {
            Slots::payload_len(cfg, version)
        }
    }

    /// Tokens a payload says the state has seen (its first u64).
    pub fn payload_tokens(p: &[u8]) -> u64 {
        Slots::payload_tokens(p)
    }

    /// Checks a payload against `cfg` without loading it.
    pub fn check_payload(cfg: &Config, p: &[u8], version: u32) -> Result<()> {
        if Paged::wanted(cfg) {
            Paged::check_payload(cfg, p, version)
        } else {
            Slots::check_payload(cfg, p, version)
        }
    }

    /// Appends the payload.
    pub fn write_payload(&self, put: &mut dyn FnMut(&[u8])) {
        each!(self, h => h.write_payload(put))
    }

    /// Loads a checked payload.
    pub fn load_payload(&mut self, p: &[u8], version: u32) {
        match self {
            Hybrid::Slots(h) => h.load_payload(p, version),
            Hybrid::Paged(h) => h.load_payload(p, version),
        }
    }
}
