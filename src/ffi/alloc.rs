//! Boxing a handle without aborting: `Box::new` calls `handle_alloc_error`
//! (which aborts the host) when memory runs out; this returns `Alloc` instead.

use super::handles::Opaque;
use crate::error::Error;
use std::alloc::{alloc, Layout};

/// Moves `v` to the heap and gives it to C as an opaque pointer, or
/// `Err(Alloc)` (and drops `v`) if the allocation fails.
pub fn try_into_raw<C: Opaque>(v: C::Rust) -> Result<*mut C, Error> {
    let layout = Layout::new::<C::Rust>();
    if layout.size() == 0 {
        return Ok(super::handles::into_raw(Box::new(v)));
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc(layout) } as *mut C::Rust;
    if p.is_null() {
        return Err(Error::Alloc);
    }
    // SAFETY: `p` is fresh, aligned and sized for `C::Rust`; the pointer is
    // later freed by `handles::free` through `Box::from_raw` (global allocator,
    // same layout).
    unsafe { p.write(v) };
    Ok(p as *mut C)
}
