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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::status::AS_ERR_NON_FINITE;

    #[test]
    fn panics_become_internal_errors() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        assert_eq!(guard(|| panic!("boom")), AS_ERR_INTERNAL);
        assert_eq!(guard_value(7u32, || panic!("boom")), 7);
        std::panic::set_hook(prev);
        assert_eq!(guard(|| Err(Error::NonFinite)), AS_ERR_NON_FINITE);
        assert_eq!(guard(|| Ok(())), AS_OK);
    }
}
