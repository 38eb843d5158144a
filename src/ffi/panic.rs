//! The panic boundary: no unwind crosses into C.

use super::status::{as_status, AS_ERR_INTERNAL, AS_OK};
use crate::error::Error;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, mapping `Ok` to `AS_OK`, `Err(e)` to its code and a panic to
/// `AS_ERR_INTERNAL`.
#[inline]
pub fn guard(f: impl FnOnce() -> Result<(), Error>) -> as_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => AS_OK,
        Ok(Err(e)) => e.into(),
        Err(_) => AS_ERR_INTERNAL,
    }
}

/// Like [`guard`] for exports that return a value: `fallback` on panic.
#[inline]
pub fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}
