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
    /// Stream-length hint of the output and key sketches: the number of
    /// tree levels is sized so decoding stays logarithmic up to this many
    /// token indices (more are still recorded; decode then costs
    /// `O(n / 16^(levels-1))`). 1..=2^60; default 2^32.
    pub max_tokens: u64,
}

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
            max_tokens: crate::recovery::DEFAULT_MAX_TOKENS,
        }
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
        let t = feature_count(self.head_dim, self.degree).ok_or(Error::InvalidArg)?;
        if t > MAX_FEATURES {
            return Err(Error::InvalidArg);
        }
        // Two f32 copies of M (t x dv) and z (t): see `sketch::state`.
        let bytes = t
            .checked_mul(self.value_dim as u64 + 1)
            .and_then(|x| x.checked_mul(8))
            .ok_or(Error::InvalidArg)?;
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
        // Output sketch (4 L R b dv) and key sketch (4 L R b t): see `recovery`.
        let rec = crate::recovery::sketch_bytes(self, t);
        if bytes.saturating_add(rec) > MAX_STATE_BYTES {
            return Err(Error::InvalidArg);
        }
        if self.sink_tokens > 0 || self.window_tokens > 0 || self.heavy_tokens > 0 {
            return Err(Error::Unsupported);
        }
        Ok(())
    }
}
