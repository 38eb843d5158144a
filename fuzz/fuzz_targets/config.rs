//! `as_create` on arbitrary `as_config` bytes (any struct_size, mode, scale
//! bits, sizes). Oracle: the status equals the safe `Config::validate`
//! verdict; a created head starts empty, has a fixed size under the cap and
//! takes a token.
#![no_main]
use attnsketch::config::MAX_STATE_BYTES;
use attnsketch::ffi::handles::as_sketch;
use attnsketch::ffi::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An aligned as_config-sized (or larger) buffer holding the input.
    let mut raw = [0u64; 16];
    let bytes: &mut [u8] =
        unsafe { core::slice::from_raw_parts_mut(raw.as_mut_ptr() as *mut u8, 128) };
    let n = data.len().min(128);
    bytes[..n].copy_from_slice(&data[..n]);
    // Keep struct_size within the buffer we really provide.
    let ss = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) % 129;
    bytes[..4].copy_from_slice(&ss.to_le_bytes());
    let cfg = raw.as_ptr() as *const as_config;
    let verdict = unsafe { read_config(cfg) }.and_then(|c| c.validate().map(|_| c));
    if let Ok(c) = &verdict {
        // What the head will own (hybrid heads keep a degree-0 polynomial
        // state, so `degree` alone does not size them).
        let need = attnsketch::Sketch::bytes_for(c) as u64;
        assert!(need <= MAX_STATE_BYTES, "{need}");
        if need > (16 << 20) {
            return; // valid but too big to create at fuzzing speed
        }
    }
    let mut h: *mut as_sketch = core::ptr::null_mut();
    let st = unsafe { as_create(cfg, &mut h) };
    match verdict {
        Err(e) => {
            assert_eq!(st, e as i32);
            assert!(h.is_null());
        }
        Ok(c) => {
            assert_eq!(st, AS_OK);
            assert!(!h.is_null());
            unsafe {
                assert_eq!(as_token_count(h), 0);
                let bytes = as_state_bytes(h);
                assert_eq!(bytes, attnsketch::Sketch::bytes_for(&c));
                let (d, dv) = (c.head_dim as usize, c.value_dim as usize);
                let x = vec![0.5f32; d.max(dv)];
                let mut out = vec![0.0f32; dv];
                let s = if c.mode == attnsketch::Mode::Causal {
                    as_push_token(h, x.as_ptr(), x.as_ptr(), x.as_ptr(), out.as_mut_ptr())
                } else {
                    as_append_kv(h, x.as_ptr(), x.as_ptr())
                };
                assert!(s == AS_OK || s == AS_ERR_RANGE, "{s}");
                assert_eq!(as_state_bytes(h), bytes);
                as_free(h);
            }
        }
    }
});
