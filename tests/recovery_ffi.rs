//! `as_recover_column` and `as_heavy_tokens` through the C ABI: statuses,
//! outputs written only on success, and a planted recovery.

mod common;

use attnsketch::ffi::handles::as_sketch;
use attnsketch::ffi::*;
use common::Rng;
use core::ptr::{null, null_mut};

fn make(recovery_k: u32, retrieval_k: u32) -> *mut as_sketch {
    let mut cfg = core::mem::MaybeUninit::<as_config>::uninit();
    unsafe {
        assert_eq!(as_config_init(cfg.as_mut_ptr(), 4), AS_OK);
        let mut cfg = cfg.assume_init();
        cfg.value_dim = 2;
        cfg.recovery_k = recovery_k;
        cfg.retrieval_k = retrieval_k;
        let mut h = null_mut();
        assert_eq!(as_create(&cfg, &mut h), AS_OK);
        h
    }
}

#[test]
fn statuses_and_untouched_outputs() {
    unsafe {
        let h = make(4, 4);
        let mut idx = [u64::MAX; 8];
        let mut val = [f32::NAN; 8];
        let mut found = 77u32;
        let q = [0.3f32; 4];
        // Nothing recorded: OK, found = 0.
        assert_eq!(
            as_recover_column(h, 0, 4, idx.as_mut_ptr(), val.as_mut_ptr(), &mut found),
            AS_OK
        );
        assert_eq!(found, 0);
        found = 77;
        assert_eq!(
            as_heavy_tokens(
                h,
                q.as_ptr(),
                4,
                idx.as_mut_ptr(),
                val.as_mut_ptr(),
                &mut found
            ),
            AS_OK
        );
        assert_eq!(found, 0);
        let mut rng = Rng(9);
        let mut out = [0.0f32; 2];
        for _ in 0..50 {
            let (a, b, c) = (rng.vec(4, 1.0), rng.vec(4, 1.0), rng.vec(2, 1.0));
            assert_eq!(
                as_push_token(h, a.as_ptr(), b.as_ptr(), c.as_ptr(), out.as_mut_ptr()),
                AS_OK
            );
        }
        // Refusals write nothing.
        found = 77;
        let cases: [(u32, u32, as_status); 2] =
            [(0, 5, AS_ERR_INVALID_ARG), (2, 1, AS_ERR_INVALID_ARG)];
        for (col, k, st) in cases {
            assert_eq!(
                as_recover_column(h, col, k, idx.as_mut_ptr(), val.as_mut_ptr(), &mut found),
                st
            );
            assert_eq!(found, 77);
            assert_eq!(idx[0], u64::MAX);
        }
        assert_eq!(
            as_heavy_tokens(
                h,
                q.as_ptr(),
                5,
                idx.as_mut_ptr(),
                val.as_mut_ptr(),
                &mut found
            ),
            AS_ERR_INVALID_ARG
        );
        let bad = [f32::NAN; 4];
        assert_eq!(
            as_heavy_tokens(
                h,
                bad.as_ptr(),
                1,
                idx.as_mut_ptr(),
                val.as_mut_ptr(),
                &mut found
            ),
            AS_ERR_NON_FINITE
        );
        assert_eq!(
            as_recover_column(null(), 0, 1, idx.as_mut_ptr(), val.as_mut_ptr(), &mut found),
            AS_ERR_NULL
        );
        assert_eq!(
            as_recover_column(h, 0, 1, null_mut(), val.as_mut_ptr(), &mut found),
            AS_ERR_NULL
        );
        assert_eq!(
            as_recover_column(h, 0, 1, idx.as_mut_ptr(), val.as_mut_ptr(), null_mut()),
            AS_ERR_NULL
        );
        assert_eq!(
            as_heavy_tokens(h, null(), 1, idx.as_mut_ptr(), val.as_mut_ptr(), &mut found),
            AS_ERR_NULL
        );
        assert_eq!(found, 77);
        // k = 0: OK, nothing.
        assert_eq!(
            as_recover_column(h, 1, 0, idx.as_mut_ptr(), val.as_mut_ptr(), &mut found),
            AS_OK
        );
        assert_eq!(found, 0);
        // Success writes found pairs, largest |value| first.
        assert_eq!(
            as_recover_column(h, 1, 4, idx.as_mut_ptr(), val.as_mut_ptr(), &mut found),
            AS_OK
        );
        assert!((1..=4).contains(&found));
        for i in 1..found as usize {
            assert!(val[i - 1].abs() >= val[i].abs());
            assert!(idx[i] < 50);
        }
        assert_eq!(
            as_heavy_tokens(
                h,
                q.as_ptr(),
                4,
                idx.as_mut_ptr(),
                val.as_mut_ptr(),
                &mut found
            ),
            AS_OK
        );
        assert!(found <= 4);
        as_free(h);
        // Handles without the sketches: AS_ERR_WRONG_MODE.
        let h = make(0, 0);
        found = 77;
        assert_eq!(
            as_recover_column(h, 0, 1, idx.as_mut_ptr(), val.as_mut_ptr(), &mut found),
            AS_ERR_WRONG_MODE
        );
        assert_eq!(
            as_heavy_tokens(
                h,
                q.as_ptr(),
                1,
                idx.as_mut_ptr(),
                val.as_mut_ptr(),
                &mut found
            ),
            AS_ERR_WRONG_MODE
        );
        assert_eq!(found, 77);
        // State bytes include the sketches and stay flat.
        let plain = as_state_bytes(h);
        as_free(h);
        let h = make(4, 4);
        let with = as_state_bytes(h);
        assert!(with > plain);
        as_free(h);
    }
}

#[test]
fn old_struct_size_gets_default_max_tokens() {
    unsafe {
        let mut cfg = core::mem::MaybeUninit::<as_config>::uninit();
        assert_eq!(as_config_init(cfg.as_mut_ptr(), 4), AS_OK);
        let mut cfg = cfg.assume_init();
        assert_eq!(cfg.max_tokens, 1u64 << 32);
        cfg.recovery_k = 2;
        cfg.max_tokens = 0; // 0 = default
        let mut h = null_mut();
        assert_eq!(as_create(&cfg, &mut h), AS_OK);
        let a = as_state_bytes(h);
        as_free(h);
        cfg.struct_size = CONFIG_BASE_SIZE as u32; // a caller without the field
        cfg.max_tokens = 16; // not read
        assert_eq!(as_create(&cfg, &mut h), AS_OK);
        assert_eq!(as_state_bytes(h), a);
        as_free(h);
        cfg.struct_size = core::mem::size_of::<as_config>() as u32;
        cfg.max_tokens = 1 << 12; // fewer levels
        assert_eq!(as_create(&cfg, &mut h), AS_OK);
        assert!(as_state_bytes(h) < a);
        as_free(h);
        cfg.max_tokens = u64::MAX;
        assert_eq!(as_create(&cfg, &mut h), AS_ERR_INVALID_ARG);
    }
}
