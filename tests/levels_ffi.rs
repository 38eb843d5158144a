//! The C calls of CPU levels. Its own test binary: `as_set_cpu_level`
//! changes a process-wide cap.
use attnsketch::ffi::handles::as_sketch;
use attnsketch::ffi::*;
use attnsketch::Level;
use std::ffi::CStr;
use std::ptr;

fn name(p: *const std::os::raw::c_char) -> String {
    assert!(!p.is_null());
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string()
}

fn cfg(d: u32) -> as_config {
    let mut c = std::mem::MaybeUninit::<as_config>::uninit();
    assert_eq!(unsafe { as_config_init(c.as_mut_ptr(), d) }, AS_OK);
    unsafe { c.assume_init() }
}

#[test]
fn levels_through_the_c_abi() {
    let c = cfg(8);
    // Per-handle level: every level is either created at that level or refused
    // with AS_ERR_UNSUPPORTED, as the CPU says; *out untouched on refusal.
    for (code, lv) in [
        (AS_CPU_PORTABLE, Level::Portable),
        (AS_CPU_AVX2, Level::Avx2),
        (AS_CPU_AVX512, Level::Avx512),
    ] {
        let mut h: *mut as_sketch = ptr::null_mut();
        let st = unsafe { as_create_at_level(&c, code, &mut h) };
        assert_eq!(as_cpu_level_supported(code), lv.supported() as u32);
        if lv.supported() {
            assert_eq!(st, AS_OK);
            assert_eq!(name(unsafe { as_sketch_level_name(h) }), lv.name());
            let x = [0.25f32; 8];
            let mut out = [0.0f32; 8];
            assert_eq!(
                unsafe { as_push_token(h, x.as_ptr(), x.as_ptr(), x.as_ptr(), out.as_mut_ptr()) },
                AS_OK
            );
            assert!(out.iter().all(|&o| (o - 0.25).abs() < 1e-6), "{out:?}");
            unsafe { as_free(h) };
        } else {
            assert_eq!(st, AS_ERR_UNSUPPORTED);
            assert!(h.is_null());
            assert_eq!(as_set_cpu_level(code), AS_ERR_UNSUPPORTED);
        }
    }
    let mut h: *mut as_sketch = ptr::null_mut();
    assert_eq!(
        unsafe { as_create_at_level(&c, 99, &mut h) },
        AS_ERR_INVALID_ARG
    );
    assert_eq!(as_set_cpu_level(99), AS_ERR_INVALID_ARG);
    assert_eq!(as_cpu_level_supported(99), 0);
    assert!(unsafe { as_sketch_level_name(ptr::null()) }.is_null());

    // Process cap: new handles follow it, old ones keep their level.
    let best = Level::best();
    assert_eq!(name(as_cpu_level_name()), Level::detect().name());
    let mut old: *mut as_sketch = ptr::null_mut();
    assert_eq!(unsafe { as_create(&c, &mut old) }, AS_OK);
    let old_name = name(unsafe { as_sketch_level_name(old) });
    assert_eq!(as_set_cpu_level(AS_CPU_PORTABLE), AS_OK);
    assert_eq!(name(as_cpu_level_name()), "portable");
    assert_eq!(as_active_cpu_level(), AS_CPU_PORTABLE);
    let mut new: *mut as_sketch = ptr::null_mut();
    assert_eq!(unsafe { as_create(&c, &mut new) }, AS_OK);
    assert_eq!(name(unsafe { as_sketch_level_name(new) }), "portable");
    assert_eq!(name(unsafe { as_sketch_level_name(old) }), old_name);
    // Raising the cap back to the best level.
    assert_eq!(as_set_cpu_level(best as u32), AS_OK);
    assert_eq!(name(as_cpu_level_name()), best.name());
    unsafe {
        as_free(old);
        as_free(new);
    }
}
