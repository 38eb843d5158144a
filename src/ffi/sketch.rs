//! Exports of one head (`as_sketch`).

use super::config::{as_config, read_config};
use super::handles::{self, as_sketch, get_mut, get_ref, input, out_ptr, output, span};
use super::panic::{guard, guard_value};
use super::status::as_status;
use crate::config::MAX_DIM;
use crate::error::Error;
use crate::poly::Polynomial;
use crate::sketch::Sketch;

/// Output of one row, computed into a stack buffer and copied out only on
/// success (so `out` may alias an input).
fn with_row(
    dv: usize,
    out: *mut f32,
    f: impl FnOnce(&mut [f32]) -> Result<(), Error>,
) -> Result<(), Error> {
    let out = out_ptr(out)?;
    let mut buf = [0.0f32; MAX_DIM as usize];
    let row = &mut buf[..dv];
    f(row)?;
    // SAFETY: `out` is non-null and aligned; the caller provides dv floats.
    // `copy` (memmove) allows `out` to overlap the inputs, which are no longer read.
    unsafe { core::ptr::copy(row.as_ptr(), out, dv) };
    Ok(())
}

/// Creates a head from `cfg`. On success `*out` receives the handle; on
/// failure `*out` is not written.
#[no_mangle]
pub unsafe extern "C" fn as_create(cfg: *const as_config, out: *mut *mut as_sketch) -> as_status {
    guard(|| {
        // SAFETY: the caller passes a config of struct_size bytes.
        let c = unsafe { read_config(cfg) }?;
        let out = out_ptr(out)?;
        let h = Sketch::new(&c)?;
        let p = super::alloc::try_into_raw::<as_sketch>(h)?;
        // SAFETY: `out` is non-null and aligned.
        unsafe { out.write(p) };
        Ok(())
    })
}

/// Frees a head; NULL is fine.
#[no_mangle]
pub unsafe extern "C" fn as_free(h: *mut as_sketch) {
    // SAFETY: NULL or a live handle, by the contract.
    guard_value((), || unsafe { handles::free(h) });
}

/// Causal: absorb (k, v) as token j (tokens count from 0 in push order),
/// then write the approximate attention output of q over tokens 0..j into
/// out[value_dim].
#[no_mangle]
pub unsafe extern "C" fn as_push_token(
    h: *mut as_sketch,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
) -> as_status {
    guard(|| {
        // SAFETY: pointers per the contract; shapes from the handle's config.
        let h = unsafe { get_mut(h) }?;
        let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
        let (q, k, v) = unsafe { (input(q, d)?, input(k, d)?, input(v, dv)?) };
        with_row(dv, out, |row| h.push_token(q, k, v, row))
    })
}

/// Same as `n` calls of `as_push_token` on rows stored row-major
/// (`n x head_dim`, `n x value_dim`). Every token is checked before any is
/// absorbed. `out` (`n x value_dim`) must not overlap the inputs.
#[no_mangle]
pub unsafe extern "C" fn as_push_tokens(
    h: *mut as_sketch,
    n: usize,
    q: *const f32,
    k: *const f32,
    v: *const f32,
    out: *mut f32,
) -> as_status {
    guard(|| {
        let h = unsafe { get_mut(h) }?;
        let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
        let nd = n.checked_mul(d).ok_or(Error::InvalidArg)?;
        let ndv = n.checked_mul(dv).ok_or(Error::InvalidArg)?;
        // SAFETY: pointers per the contract, sized n x d and n x dv.
        let (q, k, v) = unsafe { (input(q, nd)?, input(k, nd)?, input(v, ndv)?) };
        let out = unsafe { output(out, ndv, &[span(q), span(k), span(v)])? };
        h.push_tokens(n, q, k, v, out)
    })
}

/// Non-causal: absorb (k, v).
#[no_mangle]
pub unsafe extern "C" fn as_append_kv(
    h: *mut as_sketch,
    k: *const f32,
    v: *const f32,
) -> as_status {
    guard(|| {
        let h = unsafe { get_mut(h) }?;
        let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
        // SAFETY: pointers per the contract.
        let (k, v) = unsafe { (input(k, d)?, input(v, dv)?) };
        h.append_kv(k, v)
    })
}

/// Non-causal: the output of q over every token absorbed so far; the i-th
/// call (from 0) is output index i of the output sketch.
#[no_mangle]
pub unsafe extern "C" fn as_push_query(
    h: *mut as_sketch,
    q: *const f32,
    out: *mut f32,
) -> as_status {
    guard(|| {
        let h = unsafe { get_mut(h) }?;
        let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
        // SAFETY: pointer per the contract.
        let q = unsafe { input(q, d)? };
        with_row(dv, out, |row| h.push_query(q, row))
    })
}

/// Read-only query of the current state; records nothing. May run
/// concurrently with other `as_query` calls on the same handle. An empty
/// state gives zeros.
#[no_mangle]
pub unsafe extern "C" fn as_query(h: *const as_sketch, q: *const f32, out: *mut f32) -> as_status {
    guard(|| {
        let h = unsafe { get_ref(h) }?;
        let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
        // SAFETY: pointer per the contract.
        let q = unsafe { input(q, d)? };
        with_row(dv, out, |row| h.query(q, row))
    })
}

/// Experimental: read-only query with a caller polynomial
/// `P(x) = sum_l coeffs[l] x^l` of degree `n_coeffs - 1 <= degree`.
#[no_mangle]
pub unsafe extern "C" fn as_query_poly(
    h: *const as_sketch,
    q: *const f32,
    coeffs: *const f64,
    n_coeffs: u32,
    out: *mut f32,
) -> as_status {
    guard(|| {
        let h = unsafe { get_ref(h) }?;
        let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
        // SAFETY: pointers per the contract.
        let (q, c) = unsafe { (input(q, d)?, input(coeffs, n_coeffs as usize)?) };
        let poly = Polynomial::from_coeffs(c)?;
        with_row(dv, out, |row| h.query_with(q, &poly, row))
    })
}

/// `as_push_token` with IEEE binary16 inputs (bit patterns); output f32.
#[no_mangle]
pub unsafe extern "C" fn as_push_token_f16(
    h: *mut as_sketch,
    q: *const u16,
    k: *const u16,
    v: *const u16,
    out: *mut f32,
) -> as_status {
    guard(|| {
        let h = unsafe { get_mut(h) }?;
        let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
        // SAFETY: pointers per the contract.
        let (q, k, v) = unsafe { (input(q, d)?, input(k, d)?, input(v, dv)?) };
        with_row(dv, out, |row| h.push_token_f16(q, k, v, row))
    })
}

/// `as_push_token` with bfloat16 inputs (bit patterns); output f32.
#[no_mangle]
pub unsafe extern "C" fn as_push_token_bf16(
    h: *mut as_sketch,
    q: *const u16,
    k: *const u16,
    v: *const u16,
    out: *mut f32,
) -> as_status {
    guard(|| {
        let h = unsafe { get_mut(h) }?;
        let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
        // SAFETY: pointers per the contract.
        let (q, k, v) = unsafe { (input(q, d)?, input(k, d)?, input(v, dv)?) };
        with_row(dv, out, |row| h.push_token_bf16(q, k, v, row))
    })
}

/// Tokens absorbed; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn as_token_count(h: *const as_sketch) -> u64 {
    guard_value(0, || {
        unsafe { get_ref(h) }.map(|h| h.token_count()).unwrap_or(0)
    })
}

/// Every byte the handle owns (fixed at creation); 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn as_state_bytes(h: *const as_sketch) -> usize {
    guard_value(0, || {
        unsafe { get_ref(h) }.map(|h| h.state_bytes()).unwrap_or(0)
    })
}

/// Experimental: outputs that fell back to the plain mean of the values
/// because the normaliser `phi_q^T z` was not positive enough to trust; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn as_fallback_count(h: *const as_sketch) -> u64 {
    guard_value(0, || {
        unsafe { get_ref(h) }.map(|h| h.fallbacks()).unwrap_or(0)
    })
}

/// Experimental: the feature count t = binom(d+g, g) of the handle; 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn as_feature_count(h: *const as_sketch) -> u64 {
    guard_value(0, || {
        unsafe { get_ref(h) }
            .map(|h| h.feature_map().len() as u64)
            .unwrap_or(0)
    })
}
