//! CPU level exports: which kernels run, and caps per process or handle.
//!
//! Levels are plain `uint32_t` codes (`as_cpu_level`), so an unknown value
//! from C is a refused argument, never undefined behaviour.

use super::config::{as_config, read_config};
use super::handles::{self, as_sketch, get_ref, out_ptr};
use super::panic::{guard, guard_value};
use super::status::as_status;
use crate::error::Error;
use crate::kernels::Level;
use crate::sketch::Sketch;
use std::os::raw::c_char;

/// A CPU kernel level: `AS_CPU_PORTABLE`, `AS_CPU_AVX2` or `AS_CPU_AVX512`.
pub type as_cpu_level = u32;
/// Portable kernels (any CPU).
pub const AS_CPU_PORTABLE: as_cpu_level = 0;
/// AVX2 + FMA + F16C kernels (x86-64-v3).
pub const AS_CPU_AVX2: as_cpu_level = 1;
/// AVX-512 F/VL/BW kernels (x86-64-v4).
pub const AS_CPU_AVX512: as_cpu_level = 2;

fn level(v: as_cpu_level) -> Result<Level, Error> {
    Level::from_u32(v).ok_or(Error::InvalidArg)
}

/// Name of the level new handles get (`"portable"`, `"avx2"`, `"avx512"`):
/// the best this CPU supports, capped by `ATTNSKETCH_CPU` or
/// `as_set_cpu_level`. Static, never NULL.
#[no_mangle]
pub extern "C" fn as_cpu_level_name() -> *const c_char {
    guard_value(c"portable".as_ptr(), || {
        Level::detect().c_name().as_ptr() as *const c_char
    })
}

/// The level new handles get (as `as_cpu_level_name`).
#[no_mangle]
pub extern "C" fn as_active_cpu_level() -> as_cpu_level {
    guard_value(AS_CPU_PORTABLE, || Level::detect() as as_cpu_level)
}

/// 1 if this CPU can run `level`, else 0 (also 0 for unknown values).
#[no_mangle]
pub extern "C" fn as_cpu_level_supported(level: as_cpu_level) -> u32 {
    guard_value(0, || {
        Level::from_u32(level).is_some_and(|l| l.supported()) as u32
    })
}

/// Caps the level of handles created from now on, for the whole process
/// (replaces `ATTNSKETCH_CPU`; thread-safe). Existing handles keep theirs.
/// `AS_ERR_UNSUPPORTED` if the CPU lacks `level`, `AS_ERR_INVALID_ARG` for an
/// unknown value; then nothing changes.
#[no_mangle]
pub extern "C" fn as_set_cpu_level(level: as_cpu_level) -> as_status {
    guard(|| Level::set_process_cap(self::level(level)?))
}

/// `as_create` with the kernels of `level` for this handle only (ignoring
/// the process cap). `AS_ERR_UNSUPPORTED` if the CPU lacks `level`,
/// `AS_ERR_INVALID_ARG` for an unknown value; `*out` is written only on success.
#[no_mangle]
pub unsafe extern "C" fn as_create_at_level(
    cfg: *const as_config,
    level: as_cpu_level,
    out: *mut *mut as_sketch,
) -> as_status {
    guard(|| {
        // SAFETY: the caller passes a config of struct_size bytes.
        let c = unsafe { read_config(cfg) }?;
        let out = out_ptr(out)?;
        let lv = self::level(level)?;
        let h = Sketch::with_level(&c, lv)?;
        // SAFETY: `out` is non-null and aligned.
        unsafe { out.write(handles::into_raw(Box::new(h))) };
        Ok(())
    })
}

/// Name of the level of a handle's kernels; NULL for a NULL handle.
#[no_mangle]
pub unsafe extern "C" fn as_sketch_level_name(h: *const as_sketch) -> *const c_char {
    guard_value(core::ptr::null(), || {
        // SAFETY: NULL or a live handle, by the contract.
        match unsafe { get_ref(h) } {
            Ok(h) => h.level().c_name().as_ptr() as *const c_char,
            Err(_) => core::ptr::null(),
        }
    })
}
