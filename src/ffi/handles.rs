//! Opaque handle types and the typed pointer helpers every export uses.

use crate::error::Error;
use crate::sketch::{Bank, Sketch};

/// Opaque handle of one attention head.
pub struct as_sketch {
    _private: [u8; 0],
}

/// Opaque handle of one layer of heads (grouped-query attention).
pub struct as_bank {
    _private: [u8; 0],
}

/// A C-side opaque type and the Rust value behind it.
pub trait Opaque {
    /// The Rust type a pointer to `Self` really points to.
    type Rust;
}
impl Opaque for as_sketch {
    type Rust = Sketch;
}
impl Opaque for as_bank {
    type Rust = Bank;
}

/// Gives a boxed value to C.
pub fn into_raw<C: Opaque>(v: Box<C::Rust>) -> *mut C {
    Box::into_raw(v) as *mut C
}

/// Shared view of a handle; `Null` if NULL.
///
/// # Safety
/// `p` is NULL or came from [`into_raw`] and was not freed.
pub unsafe fn get_ref<'a, C: Opaque>(p: *const C) -> Result<&'a C::Rust, Error> {
    // SAFETY: by the contract of the caller.
    unsafe { (p as *const C::Rust).as_ref() }.ok_or(Error::Null)
}

/// Exclusive view of a handle; `Null` if NULL.
///
/// # Safety
/// As [`get_ref`], and no other reference to the handle is live.
pub unsafe fn get_mut<'a, C: Opaque>(p: *mut C) -> Result<&'a mut C::Rust, Error> {
    // SAFETY: by the contract of the caller.
    unsafe { (p as *mut C::Rust).as_mut() }.ok_or(Error::Null)
}

/// Frees a handle; NULL is ignored.
///
/// # Safety
/// `p` is NULL or came from [`into_raw`] and was not freed.
pub unsafe fn free<C: Opaque>(p: *mut C) {
    if !p.is_null() {
        // SAFETY: by the contract of the caller.
        drop(unsafe { Box::from_raw(p as *mut C::Rust) });
    }
}

/// A caller array of `n` elements: `Null` if NULL, `InvalidArg` if
/// misaligned or too large to address.
///
/// # Safety
/// `p` is NULL or points to `n` readable elements.
pub unsafe fn input<'a, T>(p: *const T, n: usize) -> Result<&'a [T], Error> {
    check_ptr(p, n)?;
    // SAFETY: non-null, aligned, size checked; readable by the caller's contract.
    Ok(unsafe { core::slice::from_raw_parts(p, n) })
}

/// A caller output array of `n` elements that must not overlap any of
/// `inputs` (byte ranges); overlapping outputs are refused with `InvalidArg`.
///
/// # Safety
/// `p` is NULL or points to `n` writable elements, not otherwise borrowed.
pub unsafe fn output<'a, T>(
    p: *mut T,
    n: usize,
    inputs: &[(*const u8, usize)],
) -> Result<&'a mut [T], Error> {
    check_ptr(p as *const T, n)?;
    let bytes = n * core::mem::size_of::<T>();
    let (a0, a1) = (p as usize, p as usize + bytes);
    for &(q, len) in inputs {
        let (b0, b1) = (q as usize, q as usize + len);
        if a0 < b1 && b0 < a1 {
            return Err(Error::InvalidArg);
        }
    }
    // SAFETY: non-null, aligned, size checked, disjoint from the inputs.
    Ok(unsafe { core::slice::from_raw_parts_mut(p, n) })
}

/// A non-NULL, aligned pointer for a single output written later.
pub fn out_ptr<T>(p: *mut T) -> Result<*mut T, Error> {
    check_ptr(p as *const T, 1)?;
    Ok(p)
}

fn check_ptr<T>(p: *const T, n: usize) -> Result<(), Error> {
    if p.is_null() {
        return Err(Error::Null);
    }
    if !(p as usize).is_multiple_of(core::mem::align_of::<T>()) {
        return Err(Error::InvalidArg);
    }
    match n.checked_mul(core::mem::size_of::<T>()) {
        Some(b) if b <= isize::MAX as usize && (p as usize).checked_add(b).is_some() => Ok(()),
        _ => Err(Error::InvalidArg),
    }
}

/// Byte range of a slice, for overlap checks.
pub fn span<T>(s: &[T]) -> (*const u8, usize) {
    (s.as_ptr() as *const u8, core::mem::size_of_val(s))
}
