//! The paper's decode (sections 3-4): the CountSketch output sketch
//! `Y = Phi T`, k-sparse recovery of a column of `T` with a sublinear
//! (tree) decode, and heavy-token retrieval from the key-side sketch
//! `Phi U2`.
//!
//! Sizes (all fixed at creation; `n_max` = the `max_tokens` hint, default 2^32):
//!
//! ```text
//!   output sketch (recovery_k = k > 0, eps = recovery_eps):
//!     buckets b = ceil(4 k / eps)          rows R = 7          beam B = b
//!     levels  L = 1 + min { l : ceil(n_max / 16^l) <= B }
//!     bytes     = 4 L R b dv
//!   key sketch (retrieval_k = k_r > 0):
//!     buckets b = max(16, 4 k_r)           rows R = 5          beam B = 2 b
//!     levels as above,  bytes = 4 L R b t
//! ```
//!
//! See `docs/recovery.md` for the analysis behind these constants and the
//! measured guarantee.

pub mod decode;
pub mod hash;
pub mod kernels;
#[doc(hidden)]
pub mod reference;
pub mod sketch;

pub use decode::{decode, Rank};
pub use sketch::{Dyadic, Shape, FANOUT, FANOUT_BITS};

use crate::config::Config;
use crate::error::Result;
use crate::kernels::Kernels;

/// Default `max_tokens` hint: 2^32 token indices.
pub const DEFAULT_MAX_TOKENS: u64 = 1 << 32;
/// Largest `max_tokens` hint (hashing works in `Z_p`, `p = 2^61 - 1`).
pub const MAX_MAX_TOKENS: u64 = 1 << 60;
/// Largest `recovery_k` / `retrieval_k`.
pub const MAX_K: u32 = 1 << 16;
/// Rows of the output sketch.
pub const OUTPUT_ROWS: usize = 9;
/// Buckets per `k / eps` of the output sketch's identification levels.
pub const OUTPUT_BUCKETS_PER_K_EPS: f64 = 4.0;
/// Level 0 of the output sketch has this many times more buckets.
pub const OUTPUT_LEVEL0_FACTOR: usize = 4;
/// Rows of the key sketch.
pub const KEY_ROWS: usize = 7;
/// Buckets per `k` of the key sketch's identification levels.
pub const KEY_BUCKETS_PER_K: usize = 4;
/// Level 0 of the key sketch has this many times more buckets.
pub const KEY_LEVEL0_FACTOR: usize = 2;
/// Seed domains (so the two sketches hash independently).
const DOMAIN_OUTPUT: u64 = 1;
const DOMAIN_KEYS: u64 = 2;

/// Levels needed so the top stored level has at most `beam` nodes at `n_max`.
pub fn levels_for(n_max: u64, beam: usize) -> usize {
    1 + decode::top_level(n_max, 64, beam)
}

/// Shape of the output sketch for `cfg` (`None` if `recovery_k == 0`).
pub fn output_shape(cfg: &Config) -> Option<Shape> {
    if cfg.recovery_k == 0 {
        return None;
    }
    let b = (OUTPUT_BUCKETS_PER_K_EPS * cfg.recovery_k as f64 / cfg.recovery_eps as f64).ceil();
    let b = if b.is_finite() && b < (1u64 << 31) as f64 {
        (b as usize).max(16)
    } else {
        usize::MAX >> 8
    };
    Some(Shape {
        levels: levels_for(cfg.max_tokens, b),
        rows: OUTPUT_ROWS,
        buckets: b,
        buckets0: OUTPUT_LEVEL0_FACTOR * b,
        beam: b,
        width: cfg.value_dim as usize,
    })
}

/// Shape of the key sketch for `cfg` and `t` features (`None` if `retrieval_k == 0`).
pub fn key_shape(cfg: &Config, t: usize) -> Option<Shape> {
    if cfg.retrieval_k == 0 {
        return None;
    }
    let b = (KEY_BUCKETS_PER_K * cfg.retrieval_k as usize).max(16);
    Some(Shape {
        levels: levels_for(cfg.max_tokens, 2 * b),
        rows: KEY_ROWS,
        buckets: b,
        buckets0: KEY_LEVEL0_FACTOR * b,
        beam: 2 * b,
        width: t,
    })
}

/// Bytes both sketches will own for `cfg` (for the size cap in validation).
pub fn sketch_bytes(cfg: &Config, t: u64) -> u64 {
    let o = output_shape(cfg).map_or(0, |s| s.bytes());
    let k = key_shape(cfg, t as usize).map_or(0, |s| s.bytes());
    o.saturating_add(k)
}

/// The recording side kept by a head: output sketch and key sketch.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    /// `Y = Phi T` (width dv), when `recovery_k > 0`.
    pub out: Option<Dyadic>,
    /// `Phi U2` (width t), when `retrieval_k > 0`.
    pub keys: Option<Dyadic>,
}

impl Recorder {
    /// The sketches `cfg` asks for (`t` = feature count), with the kernels
    /// of [`Kernels::detect`].
    pub fn new(cfg: &Config, t: usize) -> Result<Self> {
        Self::with_kernels(cfg, t, Kernels::detect())
    }

    /// As [`Recorder::new`], recording and decoding with `kern` (a handle
    /// passes its own level's table).
    pub fn with_kernels(cfg: &Config, t: usize, kern: &'static Kernels) -> Result<Self> {
        let make = |s: Shape, domain| {
            let mut d = Dyadic::new(s, cfg.seed, domain)?;
            d.set_kernels(kern);
            Ok::<_, crate::error::Error>(d)
        };
        Ok(Recorder {
            out: output_shape(cfg)
                .map(|s| make(s, DOMAIN_OUTPUT))
                .transpose()?,
            keys: key_shape(cfg, t)
                .map(|s| make(s, DOMAIN_KEYS))
                .transpose()?,
        })
    }

    /// Records output `o` as index `i` (no-op without an output sketch).
    #[inline]
    pub fn record_output(&mut self, i: u64, o: &[f32]) {
        if let Some(s) = &mut self.out {
            s.record(i, o);
        }
    }

    /// Records key features `phik` as token `j` (no-op without a key sketch).
    #[inline]
    pub fn record_key(&mut self, j: u64, phik: &[f32]) {
        if let Some(s) = &mut self.keys {
            s.record(j, phik);
        }
    }

    /// Heap bytes `new(cfg, t)` allocates.
    pub fn heap_bytes_for(cfg: &Config, t: usize) -> usize {
        output_shape(cfg).map_or(0, |s| Dyadic::heap_bytes_for(&s))
            + key_shape(cfg, t).map_or(0, |s| Dyadic::heap_bytes_for(&s))
    }

    /// Heap bytes of both sketches.
    pub fn heap_bytes(&self) -> usize {
        self.out.as_ref().map_or(0, |s| s.heap_bytes())
            + self.keys.as_ref().map_or(0, |s| s.heap_bytes())
    }

    /// Whether any position-indexed sketch is kept (such handles refuse merge).
    pub fn position_indexed(&self) -> bool {
        self.out.is_some() || self.keys.is_some()
    }
}
