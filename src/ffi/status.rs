//! `as_status`: an `int32_t` with named codes, and its text.

use crate::error::Error;
use std::os::raw::c_char;

/// Status of every call: `AS_OK` (0) or a non-zero error code.
pub type as_status = i32;

/// Success.
pub const AS_OK: as_status = 0;
/// A required pointer was NULL.
pub const AS_ERR_NULL: as_status = 1;
/// A size, index or config value is out of range.
pub const AS_ERR_INVALID_ARG: as_status = 2;
/// An input held NaN or Inf; the state is unchanged.
pub const AS_ERR_NON_FINITE: as_status = 3;
/// Call not valid in this handle's mode.
pub const AS_ERR_WRONG_MODE: as_status = 4;
/// A serialized buffer failed its checks.
pub const AS_ERR_CORRUPT: as_status = 5;
/// The output buffer is too small (the needed size is reported).
pub const AS_ERR_BUFFER_TOO_SMALL: as_status = 6;
/// Memory allocation failed.
pub const AS_ERR_ALLOC: as_status = 7;
/// Not available: a CPU level the machine lacks, or a feature of this build/config.
pub const AS_ERR_UNSUPPORTED: as_status = 8;
/// A bug: a Rust panic was caught; the handle refuses further calls.
pub const AS_ERR_INTERNAL: as_status = 9;
/// Finite input whose features or state would overflow f32; the state is unchanged.
pub const AS_ERR_RANGE: as_status = 10;

impl From<Error> for as_status {
    fn from(e: Error) -> as_status {
        e as i32
    }
}

/// Static NUL-terminated text of a status. Any integer is accepted; an
/// unknown value gives "unknown status". Never NULL.
#[no_mangle]
pub extern "C" fn as_status_string(s: as_status) -> *const c_char {
    let t: &'static [u8] = match s {
        AS_OK => b"ok\0",
        AS_ERR_NULL => b"a required pointer was NULL\0",
        AS_ERR_INVALID_ARG => b"a size, index or config value is out of range\0",
        AS_ERR_NON_FINITE => b"an input held NaN or Inf; the state is unchanged\0",
        AS_ERR_WRONG_MODE => b"call not valid in this handle's mode\0",
        AS_ERR_CORRUPT => b"a serialized buffer failed its checks\0",
        AS_ERR_BUFFER_TOO_SMALL => b"the output buffer is too small\0",
        AS_ERR_ALLOC => b"memory allocation failed\0",
        AS_ERR_UNSUPPORTED => b"not supported (CPU level, build or configuration)\0",
        AS_ERR_INTERNAL => b"internal error (a bug; a panic was caught)\0",
        AS_ERR_RANGE => {
            b"finite input whose features or state would overflow f32; the state is unchanged\0"
        }
        _ => b"unknown status\0",
    };
    t.as_ptr() as *const c_char
}
