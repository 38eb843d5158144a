//! Exports of serialization and merge (format: `docs/format.md`).

use super::alloc::try_into_raw;
use super::handles::{as_sketch, get_mut, get_ref, input, out_ptr};
use super::panic::guard;
use super::status::as_status;
use crate::error::Error;
use crate::sketch::Sketch;

/// Serializes a head. With `buf == NULL` stores the needed size in
/// `*written` and returns `AS_OK`. With `cap` smaller than that size returns
/// `AS_ERR_BUFFER_TOO_SMALL`, stores the size in `*written` and writes
/// nothing into `buf`. On success writes the bytes and their count.
/// Every head serializes (hybrid heads with their exact tokens and tail);
/// a poisoned head gives `AS_ERR_INTERNAL`, `*written` not written.
#[no_mangle]
pub unsafe extern "C" fn as_serialize(
    h: *const as_sketch,
    buf: *mut u8,
    cap: usize,
    written: *mut usize,
) -> as_status {
    guard(|| {
        // SAFETY: NULL or a live handle, by the contract.
        let h = unsafe { get_ref(h) }?;
        let written = out_ptr(written)?;
        // A poisoned head says so before any size.
        h.check_serializable()?;
        // SAFETY: forwarded contract.
        unsafe {
            write_sized(h.serialized_len(), buf, cap, written, |b| {
                h.serialize_into(b)
            })
        }
    })
}

/// The size-query protocol of `as_serialize` / `as_bank_serialize`: with
/// `buf == NULL` stores `need` in `*written`; with `cap < need` stores it
/// and returns `BufferTooSmall`, writing nothing into `buf`; else `write`
/// fills `buf[..need]` and its count goes to `*written`.
///
/// # Safety
/// `buf` is NULL or has `cap` writable bytes; `written` is a checked
/// output pointer.
pub(super) unsafe fn write_sized(
    need: usize,
    buf: *mut u8,
    cap: usize,
    written: *mut usize,
    write: impl FnOnce(&mut [u8]) -> crate::error::Result<usize>,
) -> crate::error::Result<()> {
    if buf.is_null() || cap < need {
        // SAFETY: non-null and aligned (checked by the caller's `out_ptr`).
        unsafe { written.write(need) };
        return if buf.is_null() {
            Ok(())
        } else {
            Err(Error::BufferTooSmall)
        };
    }
    // SAFETY: the caller provides `cap >= need` writable bytes at `buf`.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, need) };
    let n = write(out)?;
    // SAFETY: non-null and aligned.
    unsafe { written.write(n) };
    Ok(())
}

/// A new head from `len` serialized bytes. Refuses a truncated, altered,
/// trailing-bytes or inconsistent buffer with `AS_ERR_CORRUPT`, a newer
/// format version with `AS_ERR_UNSUPPORTED`; on failure `*out` is not written.
#[no_mangle]
pub unsafe extern "C" fn as_deserialize(
    buf: *const u8,
    len: usize,
    out: *mut *mut as_sketch,
) -> as_status {
    guard(|| {
        // SAFETY: the caller provides `len` readable bytes at `buf`.
        let bytes = unsafe { input(buf, len)? };
        let out = out_ptr(out)?;
        let h = Sketch::deserialize(bytes)?;
        let p = try_into_raw::<as_sketch>(h)?;
        // SAFETY: non-null and aligned.
        unsafe { out.write(p) };
        Ok(())
    })
}

/// `dst` absorbs `src`, as if `src`'s tokens had followed `dst`'s. Same
/// config and seed required (`AS_ERR_INVALID_ARG`), `dst == src` refused
/// (`AS_ERR_INVALID_ARG`); on failure `dst` is unchanged.
#[no_mangle]
pub unsafe extern "C" fn as_merge(dst: *mut as_sketch, src: *const as_sketch) -> as_status {
    guard(|| {
        if dst.is_null() || src.is_null() {
            return Err(Error::Null);
        }
        if std::ptr::eq(dst, src) {
            return Err(Error::InvalidArg);
        }
        // SAFETY: two distinct live handles; `dst` used by this thread only.
        let src = unsafe { get_ref(src) }?;
        let dst = unsafe { get_mut(dst) }?;
        dst.merge(src)
    })
}
