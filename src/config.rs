//! The safe configuration of one head and its validation rules.

use crate::error::{Error, Result};
use crate::poly::feature_count;

/// Causal decoding or the paper's ordered non-causal form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `push_token`: absorb token j, then answer q_j over tokens 0..=j.
    Causal,
    /// `append_kv` first, then `push_query` over everything absorbed so far.
    NonCausal,
}

/// Largest head or value dimension accepted.
pub const MAX_DIM: u32 = 4096;
/// Largest polynomial degree accepted (the feature count is also capped).
pub const MAX_DEGREE: u32 = 16;
/// Largest feature count `t = binom(d + g, g)` accepted.
pub const MAX_FEATURES: u64 = 1 << 24;
/// Largest state a handle may own, in bytes (1 GiB). Larger configs are refused
/// up front with `AS_ERR_INVALID_ARG`.
pub const MAX_STATE_BYTES: u64 = 1 << 30;

/// Configuration of one attention head (the safe twin of `as_config`).
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// d: length of q and k.
    pub head_dim: u32,
    /// dv: length of v and of the output.
    pub value_dim: u32,
    /// g: degree of the polynomial P ~ exp.
    pub degree: u32,
    /// s in exp(s q.k).
    pub scale: f32,
    /// Causal or non-causal.
    pub mode: Mode,
    /// Seed of all hashing and sketch randomness.
    pub seed: u64,
    /// 0: no output sketch; else sparsity k of recovery.
    pub recovery_k: u32,
    /// eps1 of the l2/l2 recovery guarantee.
    pub recovery_eps: f32,
    /// 0: off; else size of the heavy-token retrieval sketch.
    pub retrieval_k: u32,
    /// First tokens kept exactly.
    pub sink_tokens: u32,
    /// Most recent tokens kept exactly.
    pub window_tokens: u32,
    /// Exact slots for heavy-hitter tokens.
    pub heavy_tokens: u32,
    /// Hybrid mode: groups of the clustered moment tail (0: default 32).
    pub tail_groups: u32,
    /// Stream-length hint of the output and key sketches: the number of
    /// tree levels is sized so decoding stays logarithmic up to this many
    /// token indices (more are still recorded; decode then costs
    /// `O(n / 16^(levels-1))`). 1..=2^60; default 2^32.
    pub max_tokens: u64,
    /// Hybrid mode: storage of the exact tokens' values, 0 f32, 1 binary16
    /// rows, 2 int8 rows with a row scale; the rounded ones with exact
    /// residuals for sinks and the newest tokens (see
    /// `sketch::hybrid::values`).
    pub value_format: u32,
    /// Hybrid mode: storage of the exact tokens' keys, 0 f32, 1 int16 rows
    /// with a row scale and exact residuals for sinks and the newest tokens
    /// (see `sketch::hybrid::keys`).
    pub key_format: u32,
}

/// `key_format` of the paged hybrid: window keys 4-bit per channel in pages
/// of 32 tokens, heavy keys int8 (`sketch::paged`). Needs [`VALUES_U4`].
pub const KEYS_U4: u32 = 2;
/// `value_format` of the paged hybrid: values 4-bit per token with a binary16
/// `(lo, step)` per 32 channels. Needs [`KEYS_U4`].
pub const VALUES_U4: u32 = 3;

/// Tail groups of the paged preset (one: more groups cost window tokens and
/// did not pay; docs/paged.md).
pub const PAGED_GROUPS: u32 = 1;

/// Presets store values as int8 (`value_format` 2) when binary16 values
/// would leave fewer exact slots than this. Measured (eval tool, 24 heads of
/// three texts, 8192-token streams, d = dv = 64): int8 values lowered the
/// geometric mean of ours / best peer at 256 KiB..1 MiB (binary16 capacity
/// 780..3549: 0.387 -> 0.305, 0.273 -> 0.168, 0.100 -> 0.075) and raised it
/// at 1.25, 1.5 and 2 MiB (capacity ~4450..7331: 0.067 -> 0.075, 0.037 ->
/// 0.104, 0.007 -> 0.191), where the error nears int8's rounding floor.
pub const INT8_BELOW: u32 = 4096;

impl Config {
    /// Defaults for a head of dimension `head_dim` (as `as_config_init`):
    /// dv = d, g = 2, s = 1/sqrt(d), causal, seed 0, no output sketch.
    pub fn new(head_dim: u32) -> Self {
        Config {
            head_dim,
            value_dim: head_dim,
            degree: 2,
            scale: if head_dim > 0 {
                1.0 / (head_dim as f32).sqrt()
            } else {
                1.0
            },
            mode: Mode::Causal,
            seed: 0,
            recovery_k: 0,
            recovery_eps: 0.5,
            retrieval_k: 0,
            sink_tokens: 0,
            window_tokens: 0,
            heavy_tokens: 0,
            tail_groups: 0,
            max_tokens: crate::recovery::DEFAULT_MAX_TOKENS,
            value_format: 0,
            key_format: 0,
        }
    }

    /// Chooses degree, sinks, window, heavy slots and tail groups for a byte
    /// budget (keeping dims, scale, mode, seed): the largest hybrid whose
    /// `Sketch::state_bytes` is at most `bytes`. See `as_config_for_budget`.
    pub fn for_budget(&mut self, bytes: usize) -> Result<()> {
        self.for_budget_with(bytes, true, true)
    }

    /// `for_budget`, with int16 keys only when `i16_keys` and rounded values
    /// only when `small_values` (a C caller whose `as_config` predates
    /// `key_format` or `value_format` gets f32 there). Rounded values are
    /// binary16, or int8 when the binary16 preset would hold fewer than
    /// [`INT8_BELOW`] exact tokens.
    pub fn for_budget_with(
        &mut self,
        bytes: usize,
        i16_keys: bool,
        small_values: bool,
    ) -> Result<()> {
        if i16_keys && small_values {
            let mut c = self.clone();
            if c.for_budget_paged(bytes).is_ok() {
                *self = c;
                return Ok(());
            }
        }
        let kf = u32::from(i16_keys);
        let mut c = self.clone();
        c.for_budget_formats(bytes, kf, u32::from(small_values))?;
        if small_values && c.exact_slots() < INT8_BELOW {
            let mut c8 = self.clone();
            if c8.for_budget_formats(bytes, kf, 2).is_ok() && c8.value_format == 2 {
                c = c8;
            }
        }
        *self = c;
        Ok(())
    }

    /// The paged preset (`sketch::paged`, 4-bit tokens): 4 sinks, a
    /// [`PAGED_GROUPS`]-group tail, no heavy slots (measured: at 10% of the
    /// bytes they won no budget reliably end to end; docs/paged.md) and the
    /// longest whole-page window that fits. `InvalidArg` when the dims are
    /// not multiples of 32 or nothing fits.
    pub fn for_budget_paged(&mut self, bytes: usize) -> Result<()> {
        use crate::sketch::{paged::PAGE, Sketch};
        let (d, dv) = (self.head_dim as usize, self.value_dim as usize);
        if !d.is_multiple_of(32) || !dv.is_multiple_of(32) {
            return Err(Error::InvalidArg);
        }
        let mut c = self.clone();
        c.recovery_k = 0;
        c.retrieval_k = 0;
        c.key_format = KEYS_U4;
        c.value_format = VALUES_U4;
        c.degree = 2;
        c.sink_tokens = 4;
        c.tail_groups = PAGED_GROUPS;
        c.heavy_tokens = 0;
        let fits = |c: &Config| c.validate().is_ok() && Sketch::bytes_for(c) <= bytes;
        let set = |c: &mut Config, pages: u32| c.window_tokens = pages * PAGE as u32;
        let hi = (bytes / (PAGE * (d + dv) / 2).max(1) + 1) as u32;
        largest_fitting(&mut c, 0, hi, set, fits).ok_or(Error::InvalidArg)?;
        *self = c;
        Ok(())
    }

    /// Exact slots of a hybrid config (`sinks + window + heavy`).
    pub fn exact_slots(&self) -> u32 {
        self.sink_tokens + self.window_tokens + self.heavy_tokens
    }

    /// `for_budget` with the given key and value formats (f32 when the
    /// budget only fits the degree-0 sketch).
    pub fn for_budget_formats(
        &mut self,
        bytes: usize,
        key_format: u32,
        value_format: u32,
    ) -> Result<()> {
        use crate::sketch::{hybrid, Sketch};
        let mut c = self.clone();
        c.recovery_k = 0;
        c.retrieval_k = 0;
        c.value_format = value_format;
        c.key_format = key_format;
        let fits = |c: &Config| c.validate().is_ok() && Sketch::bytes_for(c) <= bytes;
        let (d, dv) = (self.head_dim as usize, self.value_dim as usize);
        for groups in [hybrid::DEFAULT_GROUPS as u32, 16, 8, 4, 1] {
            // The tail takes at most ~1/8 of the budget; the rest goes to exact tokens.
            let tail = (groups as usize + 1) * (8 + (2 * d + dv) * 4);
            if groups > 1 && tail * 8 > bytes {
                continue;
            }
            c.tail_groups = groups;
            c.sink_tokens = 4;
            // Dynamic slots D: window D - BAND (its maximum), heavy BAND.
            let band = hybrid::BAND as u32;
            let set = |c: &mut Config, dynamic: u32| {
                c.window_tokens = dynamic - band;
                c.heavy_tokens = band;
            };
            if largest_fitting(&mut c, 2 * band, 1 << 24, set, fits).is_none() {
                continue;
            }
            c.degree = 2;
            *self = c;
            return Ok(());
        }
        // No room for exact tokens: the plain degree-0 sketch, i.e. uniform
        // attention over every token (the running mean of the values). Not
        // degree 1: its weights 1 + s q.k go negative on real scores and the
        // outputs can be far worse than the mean.
        c.sink_tokens = 0;
        c.window_tokens = 0;
        c.heavy_tokens = 0;
        c.tail_groups = 0;
        c.degree = 0;
        c.value_format = 0;
        c.key_format = 0;
        if fits(&c) {
            *self = c;
            return Ok(());
        }
        Err(Error::InvalidArg)
    }

    /// Feature count t = binom(d + g, g).
    pub fn features(&self) -> u64 {
        feature_count(self.head_dim, self.degree).unwrap_or(u64::MAX)
    }

    /// Checks every field. `InvalidArg` for values out of range, `Unsupported`
    /// for parts this build does not provide.
    pub fn validate(&self) -> Result<()> {
        if self.head_dim == 0 || self.head_dim > MAX_DIM {
            return Err(Error::InvalidArg);
        }
        if self.value_dim == 0 || self.value_dim > MAX_DIM {
            return Err(Error::InvalidArg);
        }
        if self.degree > MAX_DEGREE {
            return Err(Error::InvalidArg);
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidArg);
        }
        let hybrid = crate::sketch::Hybrid::wanted(self);
        if self.value_format > VALUES_U4 || (self.value_format >= 1 && !hybrid) {
            return Err(Error::InvalidArg);
        }
        if self.key_format > KEYS_U4 || (self.key_format >= 1 && !hybrid) {
            return Err(Error::InvalidArg);
        }
        // The 4-bit formats come together (the paged layout) or not at all.
        if (self.key_format == KEYS_U4) != (self.value_format == VALUES_U4) {
            return Err(Error::InvalidArg);
        }
        if hybrid {
            crate::sketch::Hybrid::validate(self)?;
        }
        // In hybrid mode the polynomial state is not used (degree 0 inside).
        let g = if hybrid { 0 } else { self.degree };
        let t = feature_count(self.head_dim, g).ok_or(Error::InvalidArg)?;
        if t > MAX_FEATURES {
            return Err(Error::InvalidArg);
        }
        // Two f32 copies of M (t x dv) and z (t): see `sketch::state`.
        let mut bytes = t
            .checked_mul(self.value_dim as u64 + 1)
            .and_then(|x| x.checked_mul(8))
            .ok_or(Error::InvalidArg)?;
        if hybrid {
            bytes += crate::sketch::Hybrid::heap_bytes_for(self) as u64;
        }
        if bytes > MAX_STATE_BYTES {
            return Err(Error::InvalidArg);
        }
        if self.recovery_k > 0 && !(self.recovery_eps.is_finite() && self.recovery_eps > 0.0) {
            return Err(Error::InvalidArg);
        }
        if self.recovery_k > crate::recovery::MAX_K || self.retrieval_k > crate::recovery::MAX_K {
            return Err(Error::InvalidArg);
        }
        if self.max_tokens == 0 || self.max_tokens > crate::recovery::MAX_MAX_TOKENS {
            return Err(Error::InvalidArg);
        }
        // The output/key sketches record the polynomial path's outputs and
        // features; the hybrid state does not offer them (yet).
        if hybrid && (self.recovery_k > 0 || self.retrieval_k > 0) {
            return Err(Error::Unsupported);
        }
        // Output sketch and key sketch bytes: see `recovery`.
        let rec = crate::recovery::sketch_bytes(self, t);
        if bytes.saturating_add(rec) > MAX_STATE_BYTES {
            return Err(Error::InvalidArg);
        }
        // The cap covers everything the handle owns (tables and scratch too).
        if crate::sketch::Sketch::bytes_for(self) as u64 > MAX_STATE_BYTES {
            return Err(Error::InvalidArg);
        }
        Ok(())
    }
}

/// Sets `c` by `set(c, n)` for the largest `n` in `lo..=hi` with `fits(c)`
/// (which must be monotone: true up to some n, false beyond) by bisection;
/// `None`, with `c` set at `lo`, when even `lo` does not fit.
fn largest_fitting(
    c: &mut Config,
    mut lo: u32,
    mut hi: u32,
    set: impl Fn(&mut Config, u32),
    fits: impl Fn(&Config) -> bool,
) -> Option<u32> {
    set(c, lo);
    if !fits(c) {
        return None;
    }
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        set(c, mid);
        if fits(c) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    set(c, lo);
    Some(lo)
}
