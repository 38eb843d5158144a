//! Runtime version calls (the header carries the matching macros).

use std::os::raw::c_char;

/// `"MAJOR.MINOR.PATCH"`, static, never NULL.
#[no_mangle]
pub extern "C" fn as_version_string() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// `MAJOR * 10000 + MINOR * 100 + PATCH`, as `ATTNSKETCH_VERSION_NUMBER`.
#[no_mangle]
pub extern "C" fn as_version_number() -> u32 {
    const fn parse(s: &str) -> u32 {
        let b = s.as_bytes();
        let mut i = 0;
        let mut v = 0u32;
        while i < b.len() {
            v = v * 10 + (b[i] - b'0') as u32;
            i += 1;
        }
        v
    }
    const N: u32 = parse(env!("CARGO_PKG_VERSION_MAJOR")) * 10000
        + parse(env!("CARGO_PKG_VERSION_MINOR")) * 100
        + parse(env!("CARGO_PKG_VERSION_PATCH"));
    N
}
