//! `as_config` as C sees it, and its conversion to the safe [`Config`].

use super::panic::guard;
use super::status::as_status;
use crate::config::{Config, Mode};
use crate::error::Error;
use core::ptr::{addr_of, addr_of_mut};

/// Attention mode of a handle.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum as_mode {
    /// `as_push_token`: absorb token j, then answer q_j over tokens 0..=j.
    AS_MODE_CAUSAL = 0,
    /// `as_append_kv` first, then `as_push_query` over everything absorbed.
    AS_MODE_NONCAUSAL = 1,
}

/// Configuration of one head. Fill it with `as_config_init`, then change
/// fields. New fields are only ever added at the end; `struct_size` tells the
/// library which ones the caller knows.
#[repr(C)]
pub struct as_config {
    /// sizeof(as_config) as the caller compiled it.
    pub struct_size: u32,
    /// d (q and k length), 1..=4096.
    pub head_dim: u32,
    /// dv (v and output length), 1..=4096.
    pub value_dim: u32,
    /// g, polynomial degree; t = binom(d+g, g) features.
    pub degree: u32,
    /// s in exp(s q.k); finite and > 0. Default 1/sqrt(head_dim).
    pub scale: f32,
    /// AS_MODE_CAUSAL or AS_MODE_NONCAUSAL.
    pub mode: as_mode,
    /// All hashing and sketch randomness derives from it.
    pub seed: u64,
    /// 0: no output sketch; else sparsity k of recovery.
    pub recovery_k: u32,
    /// eps1 of the l2/l2 guarantee (default 0.5).
    pub recovery_eps: f32,
    /// 0: off; else keep the key-side sketch that finds the k heaviest past tokens of a query.
    pub retrieval_k: u32,
    /// First tokens kept exactly (default 0).
    pub sink_tokens: u32,
    /// Most recent tokens kept exactly (default 0).
    pub window_tokens: u32,
    /// Exact slots for heavy-hitter tokens (default 0).
    pub heavy_tokens: u32,
    /* Fields added by the library (read only when struct_size covers them). */
    /// Hybrid mode: groups of the clustered moment tail that absorbs evicted
    /// tokens (0: default 32).
    pub tail_groups: u32,
    /// Stream-length hint for the output/key sketches (their tree depth);
    /// 0 or absent (older struct_size) means the default 2^32; at most 2^60.
    /// Longer streams still work, with a decode that is no longer logarithmic.
    pub max_tokens: u64,
    /// Hybrid mode: how exact tokens' values are stored: `AS_VALUES_F32`
    /// (0, default; also when absent), `AS_VALUES_F16` (binary16 rows with
    /// a power-of-two scale each, exact for the sinks and the newest tokens:
    /// 132 instead of 256 bytes per value at dv = 64; relative output error
    /// from the rounding ~1e-5, measured on real heads) or `AS_VALUES_I8`
    /// (int8 rows with an f32 scale each, `max|v| / 127`, the same exact
    /// residuals: 68 bytes per value at dv = 64; rounding error 1e-4..7e-3).
    /// `AS_VALUES_U4` (3) selects the paged hybrid together with
    /// `AS_KEYS_U4`. Presets choose the paged formats when the dims allow.
    pub value_format: u32,
    /// The padding after `value_format` made explicit (callers whose struct
    /// ends at `value_format` have 4 undefined bytes here): ignored, write 0.
    pub reserved0: u32,
    /// Hybrid mode: how exact tokens' keys are stored: `AS_KEYS_F32` (0,
    /// default; also when absent) or `AS_KEYS_I16` (int16 rows with an f32
    /// scale each, `max|k| / 32767`, exact for the sinks and the newest
    /// tokens: 132 instead of 256 bytes per key at d = 64; relative output
    /// error from the rounding 2e-6..3e-5, measured on real heads), or
    /// `AS_KEYS_U4` (2, with `AS_VALUES_U4`: the paged hybrid, 4-bit
    /// tokens). Presets choose `AS_KEYS_U4` when the dims allow, else int16.
    pub key_format: u32,
}

/// `key_format`: f32 keys.
pub const AS_KEYS_F32: u32 = 0;
/// `key_format`: int16 keys with a row scale and exact residuals for sinks
/// and the newest tokens.
pub const AS_KEYS_I16: u32 = 1;

/// `key_format` of the paged hybrid (with `AS_VALUES_U4`; head and value
/// dims multiples of 32, `window_tokens` a multiple of 32): the window's keys
/// 4-bit per channel in pages of 32 tokens (KIVI-style `lo + step * code`,
/// binary16 `lo`/`step` per channel and page), heavy hitters' keys int8 with
/// a row scale; the newest < 32 tokens binary16, sinks f32. Inputs up to
/// 16384 in magnitude (`AS_ERR_RANGE` beyond).
pub const AS_KEYS_U4: u32 = 2;

/// `value_format`: f32 values.
pub const AS_VALUES_F32: u32 = 0;
/// `value_format`: binary16 values with exact residuals for sinks and the
/// newest tokens.
pub const AS_VALUES_F16: u32 = 1;
/// `value_format`: int8 values with a row scale and exact residuals for
/// sinks and the newest tokens.
pub const AS_VALUES_I8: u32 = 2;
/// `value_format` of the paged hybrid (with `AS_KEYS_U4`): values 4-bit per
/// token, binary16 `lo`/`step` per 32 channels (heavy hitters too); the
/// newest <= 32 tokens binary16, sinks f32.
pub const AS_VALUES_U4: u32 = 3;

/// Bytes of the fields every caller must provide (up to `heavy_tokens`).
pub const CONFIG_BASE_SIZE: usize = core::mem::offset_of!(as_config, heavy_tokens) + 4;

/// Fills defaults for a head of dimension `head_dim`: value_dim = head_dim,
/// degree = 2, scale = 1/sqrt(head_dim), causal, seed 0, no output sketch,
/// no exact tokens. Writes all `sizeof(as_config)` bytes of this version.
#[no_mangle]
pub unsafe extern "C" fn as_config_init(cfg: *mut as_config, head_dim: u32) -> as_status {
    guard(|| {
        if cfg.is_null() {
            return Err(Error::Null);
        }
        if !(cfg as usize).is_multiple_of(core::mem::align_of::<as_config>()) {
            return Err(Error::InvalidArg);
        }
        if head_dim == 0 || head_dim > crate::config::MAX_DIM {
            return Err(Error::InvalidArg);
        }
        let c = Config::new(head_dim);
        // SAFETY: non-null, aligned; the caller provides sizeof(as_config) bytes.
        unsafe { cfg.write(to_c(&c)) };
        Ok(())
    })
}

/// Fills `cfg` with the most accurate configuration the library knows whose
/// `as_state_bytes` is at most `bytes`, for the caller's `head_dim`,
/// `value_dim`, `scale` and `mode` (call `as_config_init` first). Today,
/// when both dims are multiples of 32 and the caller's struct has
/// `key_format`: the paged hybrid (`AS_KEYS_U4`/`AS_VALUES_U4`): 4 f32
/// sinks, about 10% of the bytes in int8-key heavy-hitter slots, an 8-group
/// moment tail that absorbs every evicted token, and the longest window of
/// whole 32-token pages of 4-bit tokens that fits (docs/paged.md).
/// Otherwise the slot hybrid: a 32-group tail, int16 keys (`AS_KEYS_I16`)
/// and binary16 values (`AS_VALUES_F16`), or int8 values (`AS_VALUES_I8`)
/// when binary16 ones would leave fewer than 4096 exact tokens; keys or
/// values are f32 when the caller's `struct_size` predates their field.
/// Budgets too small for that get fewer tail groups, then the plain
/// degree-0 sketch (uniform attention: the running mean of the values);
/// below that `AS_ERR_INVALID_ARG`.
/// Writes `cfg` only on success.
#[no_mangle]
pub unsafe extern "C" fn as_config_for_budget(cfg: *mut as_config, bytes: usize) -> as_status {
    guard(|| {
        // SAFETY: a config of struct_size bytes, per the contract.
        let mut c = unsafe { read_config(cfg) }?;
        // SAFETY: read_config checked non-null, alignment and the base size.
        let size = unsafe { addr_of!((*cfg).struct_size).read() } as usize;
        let has_format = size >= core::mem::offset_of!(as_config, value_format) + 4;
        let has_keys = size >= core::mem::offset_of!(as_config, key_format) + 4;
        c.for_budget_with(bytes, has_keys, has_format)?;
        // SAFETY: read_config checked non-null and alignment; only fields the
        // caller's struct_size covers are written.
        unsafe {
            addr_of_mut!((*cfg).degree).write(c.degree);
            addr_of_mut!((*cfg).sink_tokens).write(c.sink_tokens);
            addr_of_mut!((*cfg).window_tokens).write(c.window_tokens);
            addr_of_mut!((*cfg).heavy_tokens).write(c.heavy_tokens);
            if size >= core::mem::offset_of!(as_config, tail_groups) + 4 {
                addr_of_mut!((*cfg).tail_groups).write(c.tail_groups);
            }
            if has_format {
                addr_of_mut!((*cfg).value_format).write(c.value_format);
            }
            if has_keys {
                addr_of_mut!((*cfg).key_format).write(c.key_format);
            }
        }
        Ok(())
    })
}

/// The C struct of a safe config.
pub fn to_c(c: &Config) -> as_config {
    as_config {
        struct_size: core::mem::size_of::<as_config>() as u32,
        head_dim: c.head_dim,
        value_dim: c.value_dim,
        degree: c.degree,
        scale: c.scale,
        mode: match c.mode {
            Mode::Causal => as_mode::AS_MODE_CAUSAL,
            Mode::NonCausal => as_mode::AS_MODE_NONCAUSAL,
        },
        seed: c.seed,
        recovery_k: c.recovery_k,
        recovery_eps: c.recovery_eps,
        retrieval_k: c.retrieval_k,
        sink_tokens: c.sink_tokens,
        window_tokens: c.window_tokens,
        heavy_tokens: c.heavy_tokens,
        tail_groups: c.tail_groups,
        max_tokens: c.max_tokens,
        value_format: c.value_format,
        reserved0: 0,
        key_format: c.key_format,
    }
}

/// Reads a caller's config field by field (never as a typed `as_config`, so
/// an out-of-range `mode` is a refused value, not undefined behaviour).
///
/// # Safety
/// `cfg` is NULL or points to at least `struct_size` readable bytes.
pub unsafe fn read_config(cfg: *const as_config) -> Result<Config, Error> {
    if cfg.is_null() {
        return Err(Error::Null);
    }
    if !(cfg as usize).is_multiple_of(core::mem::align_of::<as_config>()) {
        return Err(Error::InvalidArg);
    }
    // SAFETY: every read below lies within the CONFIG_BASE_SIZE bytes that
    // struct_size (checked first) says the caller provides; later fields are
    // read only when struct_size covers them.
    unsafe {
        let size = addr_of!((*cfg).struct_size).read() as usize;
        if size < CONFIG_BASE_SIZE {
            return Err(Error::InvalidArg);
        }
        let mode = match (addr_of!((*cfg).mode) as *const u32).read() {
            0 => Mode::Causal,
            1 => Mode::NonCausal,
            _ => return Err(Error::InvalidArg),
        };
        Ok(Config {
            head_dim: addr_of!((*cfg).head_dim).read(),
            value_dim: addr_of!((*cfg).value_dim).read(),
            degree: addr_of!((*cfg).degree).read(),
            scale: addr_of!((*cfg).scale).read(),
            mode,
            seed: addr_of!((*cfg).seed).read(),
            recovery_k: addr_of!((*cfg).recovery_k).read(),
            recovery_eps: addr_of!((*cfg).recovery_eps).read(),
            retrieval_k: addr_of!((*cfg).retrieval_k).read(),
            sink_tokens: addr_of!((*cfg).sink_tokens).read(),
            window_tokens: addr_of!((*cfg).window_tokens).read(),
            heavy_tokens: addr_of!((*cfg).heavy_tokens).read(),
            tail_groups: if size >= core::mem::offset_of!(as_config, tail_groups) + 4 {
                addr_of!((*cfg).tail_groups).read()
            } else {
                0
            },
            max_tokens: match size >= core::mem::offset_of!(as_config, max_tokens) + 8 {
                true => match addr_of!((*cfg).max_tokens).read() {
                    0 => crate::recovery::DEFAULT_MAX_TOKENS,
                    m => m,
                },
                false => crate::recovery::DEFAULT_MAX_TOKENS,
            },
            value_format: if size >= core::mem::offset_of!(as_config, value_format) + 4 {
                addr_of!((*cfg).value_format).read()
            } else {
                0
            },
            key_format: if size >= core::mem::offset_of!(as_config, key_format) + 4 {
                addr_of!((*cfg).key_format).read()
            } else {
                0
            },
        })
    }
}

// The contract's field order and sizes (C layout on LP64 and ILP32).
const _: () = assert!(core::mem::offset_of!(as_config, seed) == 24);
const _: () = assert!(CONFIG_BASE_SIZE == 56);
// `key_format` lies past the end of every older struct (80 bytes on LP64).
const _: () = assert!(core::mem::offset_of!(as_config, key_format) >= 80);
