//! Exports of a layer of heads (`as_bank`).

use super::config::{as_config, read_config};
use super::handles::{self, as_bank, get_mut, get_ref, input, out_ptr, output, span};
use super::panic::{guard, guard_value};
use super::status::as_status;
use crate::error::Error;
use crate::sketch::Bank;

/// A layer with grouped-query attention: `n_q_heads` query heads share
/// `n_kv_heads` key/value states (`n_q_heads % n_kv_heads == 0`). Causal only.
#[no_mangle]
pub unsafe extern "C" fn as_bank_create(
    cfg: *const as_config,
    n_q_heads: u32,
    n_kv_heads: u32,
    out: *mut *mut as_bank,
) -> as_status {
    guard(|| {
        // SAFETY: the caller passes a config of struct_size bytes.
        let c = unsafe { read_config(cfg) }?;
        let out = out_ptr(out)?;
        let b = Bank::new(&c, n_q_heads, n_kv_heads)?;
        // SAFETY: non-null and aligned.
        let p = super::alloc::try_into_raw::<as_bank>(b)?;
        unsafe { out.write(p) };
        Ok(())
    })
}

/// Frees a bank; NULL is fine.
#[no_mangle]
pub unsafe extern "C" fn as_bank_free(b: *mut as_bank) {
    // SAFETY: NULL or a live bank, by the contract.
    guard_value((), || unsafe { handles::free(b) });
}

/// One token for all heads (head-major arrays).
#[no_mangle]
pub unsafe extern "C" fn as_bank_push_token(
    b: *mut as_bank,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
) -> as_status {
    // SAFETY: forwarded contract.
    unsafe { as_bank_push_tokens(b, 1, q, k, v, out) }
}

/// `n` tokens for all heads (token-major around head-major). Everything is
/// checked before anything is absorbed; `out` must not overlap the inputs.
#[no_mangle]
pub unsafe extern "C" fn as_bank_push_tokens(
    b: *mut as_bank,
    n: usize,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
) -> as_status {
    guard(|| {
        let b = unsafe { get_mut(b) }?;
        let h = b.head(0).ok_or(Error::Internal)?;
        let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
        let (nq, nkv) = (b.query_heads(), b.kv_heads());
        let sz = |per: usize| n.checked_mul(per).ok_or(Error::InvalidArg);
        let (lq, lk, lv, lo) = (sz(nq * d)?, sz(nkv * d)?, sz(nkv * dv)?, sz(nq * dv)?);
        // SAFETY: pointers per the contract, sized from the bank's shape.
        let (q, k, v) = unsafe { (input(q, lq)?, input(k, lk)?, input(v, lv)?) };
        let out = unsafe { output(out, lo, &[span(q), span(k), span(v)])? };
        b.push_tokens(n, q, k, v, out)
    })
}

/// Every byte the bank owns; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn as_bank_state_bytes(b: *const as_bank) -> usize {
    guard_value(0, || {
        unsafe { get_ref(b) }.map(|b| b.state_bytes()).unwrap_or(0)
    })
}

/// Experimental: worker threads for `as_bank_push_tokens` with `n > 1`
/// (default 1, no threads are ever created). With `n_threads > 1` each call
/// spreads the key/value heads over up to that many threads (scoped: all have
/// finished when it returns; the calling thread is one of them) and needs an
/// extra `n x n_q_heads x value_dim` floats for their outputs. Outputs are
/// bit-identical for every thread count. `1..=256`, else `AS_ERR_INVALID_ARG`.
#[no_mangle]
pub unsafe extern "C" fn as_bank_set_threads(b: *mut as_bank, n_threads: u32) -> as_status {
    guard(|| {
        let b = unsafe { get_mut(b) }?;
        b.set_threads(n_threads)
    })
}

/// Serializes a bank (`docs/format.md`, "Bank container": each key/value
/// head's `as_serialize` form under one checksum). With `buf == NULL`
/// stores the needed size in `*written` and returns `AS_OK`. With `cap`
/// smaller than that size returns `AS_ERR_BUFFER_TOO_SMALL`, stores the size
/// in `*written` and writes nothing into `buf`. On success writes the bytes
/// and their count. A poisoned head gives `AS_ERR_INTERNAL`, `*written` not
/// written. The worker-thread setting is not part of the state.
#[no_mangle]
pub unsafe extern "C" fn as_bank_serialize(
    b: *const as_bank,
    buf: *mut u8,
    cap: usize,
    written: *mut usize,
) -> as_status {
    guard(|| {
        // SAFETY: NULL or a live bank, by the contract.
        let b = unsafe { get_ref(b) }?;
        let written = out_ptr(written)?;
        b.check_serializable()?;
        // SAFETY: forwarded contract.
        unsafe {
            super::serialize::write_sized(b.serialized_len(), buf, cap, written, |o| {
                b.serialize_into(o)
            })
        }
    })
}

/// A new bank from `len` bytes of `as_bank_serialize`, at the detected CPU
/// level, with one worker thread. Refuses a truncated, altered,
/// trailing-bytes or inconsistent buffer (head counts, heads of different
/// configs) with `AS_ERR_CORRUPT`, a newer container or head format with
/// `AS_ERR_UNSUPPORTED`; on failure `*out` is not written. The loaded bank
/// continues the stream bit for bit as the one that wrote it.
#[no_mangle]
pub unsafe extern "C" fn as_bank_deserialize(
    buf: *const u8,
    len: usize,
    out: *mut *mut as_bank,
) -> as_status {
    guard(|| {
        // SAFETY: the caller provides `len` readable bytes at `buf`.
        let bytes = unsafe { input(buf, len)? };
        let out = out_ptr(out)?;
        let b = Bank::deserialize(bytes)?;
        let p = super::alloc::try_into_raw::<as_bank>(b)?;
        // SAFETY: non-null and aligned.
        unsafe { out.write(p) };
        Ok(())
    })
}
