//! The C ABI from Rust: pointer checks, aliasing, refusals that write
//! nothing and change nothing, status strings, config reading.
mod common;
use attnsketch::ffi::*;
use attnsketch::Sketch;
use common::*;
use std::ffi::CStr;
use std::ptr::{null, null_mut};

fn make(d: u32, dv: u32, mode: as_mode) -> *mut as_sketch {
    let mut c = unsafe { std::mem::zeroed::<as_config>() };
    assert_eq!(unsafe { as_config_init(&mut c, d) }, AS_OK);
    c.value_dim = dv;
    c.mode = mode;
    let mut h = null_mut();
    assert_eq!(unsafe { as_create(&c, &mut h) }, AS_OK);
    h
}

/// The state behind a handle (test-only knowledge: the handle is a boxed Sketch).
fn state(h: *const as_sketch) -> (Vec<u64>, Vec<u64>, u64) {
    let s = unsafe { &*(h as *const Sketch) };
    (
        s.state().m_f64().iter().map(|x| x.to_bits()).collect(),
        s.state().z_f64().iter().map(|x| x.to_bits()).collect(),
        s.token_count(),
    )
}

#[test]
fn status_strings() {
    for s in -3..20 {
        let p = as_status_string(s);
        assert!(!p.is_null());
        let t = unsafe { CStr::from_ptr(p) }.to_str().unwrap();
        assert!(!t.is_empty());
        if (0..=AS_ERR_RANGE).contains(&s) {
            assert_ne!(t, "unknown status", "{s}");
        } else {
            assert_eq!(t, "unknown status");
        }
    }
    assert_eq!(
        unsafe { CStr::from_ptr(as_status_string(i32::MIN)) }
            .to_str()
            .unwrap(),
        "unknown status"
    );
}

#[test]
fn null_pointers_everywhere() {
    let h = make(4, 4, as_mode::AS_MODE_CAUSAL);
    let x = [0.1f32; 4];
    let mut o = [0.0f32; 4];
    unsafe {
        assert_eq!(
            as_push_token(
                null_mut(),
                x.as_ptr(),
                x.as_ptr(),
                x.as_ptr(),
                o.as_mut_ptr()
            ),
            AS_ERR_NULL
        );
        assert_eq!(
            as_push_tokens(h, 1, null(), x.as_ptr(), x.as_ptr(), o.as_mut_ptr()),
            AS_ERR_NULL
        );
        assert_eq!(
            as_push_tokens(h, 1, x.as_ptr(), x.as_ptr(), x.as_ptr(), null_mut()),
            AS_ERR_NULL
        );
        assert_eq!(
            as_append_kv(null_mut(), x.as_ptr(), x.as_ptr()),
            AS_ERR_NULL
        );
        assert_eq!(
            as_push_query(null_mut(), x.as_ptr(), o.as_mut_ptr()),
            AS_ERR_NULL
        );
        assert_eq!(as_query(null(), x.as_ptr(), o.as_mut_ptr()), AS_ERR_NULL);
        assert_eq!(as_query(h, null(), o.as_mut_ptr()), AS_ERR_NULL);
        assert_eq!(as_query(h, x.as_ptr(), null_mut()), AS_ERR_NULL);
        assert_eq!(
            as_push_token_f16(h, null(), null(), null(), o.as_mut_ptr()),
            AS_ERR_NULL
        );
        assert_eq!(
            as_push_token_bf16(null_mut(), null(), null(), null(), o.as_mut_ptr()),
            AS_ERR_NULL
        );
        assert_eq!(
            as_bank_push_token(
                null_mut(),
                x.as_ptr(),
                x.as_ptr(),
                x.as_ptr(),
                o.as_mut_ptr()
            ),
            AS_ERR_NULL
        );
        assert_eq!(as_bank_create(null(), 1, 1, &mut null_mut()), AS_ERR_NULL);
        assert_eq!(as_token_count(null()), 0);
        assert_eq!(as_state_bytes(null()), 0);
        assert_eq!(as_bank_state_bytes(null()), 0);
        assert_eq!(as_token_count(h), 0);
        as_free(h);
    }
}

#[test]
fn misaligned_and_overlapping_pointers() {
    let h = make(4, 4, as_mode::AS_MODE_CAUSAL);
    let mut buf = [0u32; 64];
    let base = buf.as_mut_ptr() as *mut u8;
    let mis = unsafe { base.add(1) } as *const f32;
    let x = [0.1f32; 8];
    let mut o = [0.0f32; 8];
    unsafe {
        assert_eq!(
            as_push_token(h, mis, x.as_ptr(), x.as_ptr(), o.as_mut_ptr()),
            AS_ERR_INVALID_ARG
        );
        assert_eq!(
            as_push_token(h, x.as_ptr(), x.as_ptr(), x.as_ptr(), mis as *mut f32),
            AS_ERR_INVALID_ARG
        );
        assert_eq!(as_token_count(h), 0);
        // push_tokens: out overlapping an input is refused...
        let mut qk = [0.2f32; 8];
        let p = qk.as_mut_ptr();
        assert_eq!(
            as_push_tokens(h, 1, p, x.as_ptr(), x.as_ptr(), p),
            AS_ERR_INVALID_ARG
        );
        assert_eq!(as_token_count(h), 0);
        // ...while the single-token call computes first, then copies, so out may alias q.
        let mut q = [0.3f32, -0.1, 0.2, 0.4];
        let mut want = [0.0f32; 4];
        let g = make(4, 4, as_mode::AS_MODE_CAUSAL);
        assert_eq!(
            as_push_token(
                g,
                q.as_ptr(),
                x.as_ptr(),
                x[..4].as_ptr(),
                want.as_mut_ptr()
            ),
            AS_OK
        );
        assert_eq!(
            as_push_token(h, q.as_ptr(), x.as_ptr(), x[..4].as_ptr(), q.as_mut_ptr()),
            AS_OK
        );
        assert_eq!(bits(&q), bits(&want));
        // Huge n is refused before any pointer is read.
        assert_eq!(
            as_push_tokens(
                h,
                usize::MAX / 2,
                x.as_ptr(),
                x.as_ptr(),
                x.as_ptr(),
                o.as_mut_ptr()
            ),
            AS_ERR_INVALID_ARG
        );
        as_free(g);
        as_free(h);
    }
    let _ = buf;
}

#[test]
fn refused_calls_write_nothing_and_change_nothing() {
    let mut rng = Rng(3);
    let h = make(8, 6, as_mode::AS_MODE_CAUSAL);
    let mut o = vec![0.0f32; 6];
    for _ in 0..80 {
        let (q, k, v) = (rng.vec(8, 1.0), rng.vec(8, 1.0), rng.vec(6, 1.0));
        assert_eq!(
            unsafe { as_push_token(h, q.as_ptr(), k.as_ptr(), v.as_ptr(), o.as_mut_ptr()) },
            AS_OK
        );
    }
    let before = state(h);
    let mut sentinel = vec![-5.0f32; 6];
    let (q, k, v) = (rng.vec(8, 1.0), rng.vec(8, 1.0), rng.vec(6, 1.0));
    let mut nan = k.clone();
    nan[7] = f32::NAN;
    unsafe {
        assert_eq!(
            as_push_token(
                h,
                q.as_ptr(),
                nan.as_ptr(),
                v.as_ptr(),
                sentinel.as_mut_ptr()
            ),
            AS_ERR_NON_FINITE
        );
        assert_eq!(as_append_kv(h, k.as_ptr(), v.as_ptr()), AS_ERR_WRONG_MODE);
        assert_eq!(
            as_push_query(h, q.as_ptr(), sentinel.as_mut_ptr()),
            AS_ERR_WRONG_MODE
        );
        // Half-precision NaN (0x7E00) and Inf (0x7C00) in f16, NaN (0x7FC0) in bf16.
        let hq = [0x3C00u16; 8];
        let mut hk = [0x3C00u16; 8];
        let hv = [0x3C00u16; 6];
        hk[0] = 0x7E00;
        assert_eq!(
            as_push_token_f16(
                h,
                hq.as_ptr(),
                hk.as_ptr(),
                hv.as_ptr(),
                sentinel.as_mut_ptr()
            ),
            AS_ERR_NON_FINITE
        );
        hk[0] = 0x7C00;
        assert_eq!(
            as_push_token_f16(
                h,
                hq.as_ptr(),
                hk.as_ptr(),
                hv.as_ptr(),
                sentinel.as_mut_ptr()
            ),
            AS_ERR_NON_FINITE
        );
        hk[0] = 0x7FC0;
        assert_eq!(
            as_push_token_bf16(
                h,
                hq.as_ptr(),
                hk.as_ptr(),
                hv.as_ptr(),
                sentinel.as_mut_ptr()
            ),
            AS_ERR_NON_FINITE
        );
    }
    assert_eq!(sentinel, vec![-5.0; 6]);
    assert_eq!(state(h), before);
    unsafe { as_free(h) };
}

#[test]
fn half_precision_matches_f32_of_the_same_values() {
    let mut rng = Rng(4);
    let h = |_: ()| make(8, 8, as_mode::AS_MODE_CAUSAL);
    let (a, b, c, e) = (h(()), h(()), h(()), h(()));
    for _ in 0..100 {
        let x: Vec<f32> = rng.vec(24, 2.0);
        let h16: Vec<u16> = x
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect();
        let b16: Vec<u16> = x
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect();
        let x16: Vec<f32> = h16
            .iter()
            .map(|&v| half::f16::from_bits(v).to_f32())
            .collect();
        let xb16: Vec<f32> = b16
            .iter()
            .map(|&v| half::bf16::from_bits(v).to_f32())
            .collect();
        let (mut o1, mut o2, mut o3, mut o4) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
        unsafe {
            assert_eq!(
                as_push_token_f16(
                    a,
                    h16.as_ptr(),
                    h16[8..].as_ptr(),
                    h16[16..].as_ptr(),
                    o1.as_mut_ptr()
                ),
                AS_OK
            );
            assert_eq!(
                as_push_token(
                    b,
                    x16.as_ptr(),
                    x16[8..].as_ptr(),
                    x16[16..].as_ptr(),
                    o2.as_mut_ptr()
                ),
                AS_OK
            );
            assert_eq!(
                as_push_token_bf16(
                    c,
                    b16.as_ptr(),
                    b16[8..].as_ptr(),
                    b16[16..].as_ptr(),
                    o3.as_mut_ptr()
                ),
                AS_OK
            );
            assert_eq!(
                as_push_token(
                    e,
                    xb16.as_ptr(),
                    xb16[8..].as_ptr(),
                    xb16[16..].as_ptr(),
                    o4.as_mut_ptr()
                ),
                AS_OK
            );
        }
        assert_eq!(bits(&o1), bits(&o2));
        assert_eq!(bits(&o3), bits(&o4));
    }
    unsafe {
        for p in [a, b, c, e] {
            as_free(p);
        }
    }
}

#[test]
fn config_struct_size_rules() {
    let mut c = unsafe { std::mem::zeroed::<as_config>() };
    unsafe { as_config_init(&mut c, 8) };
    let mut h = null_mut();
    // A caller compiled against a newer header (bigger struct) is accepted.
    #[repr(C)]
    struct Bigger {
        base: as_config,
        extra: [u32; 4],
    }
    let mut big = Bigger {
        base: unsafe { std::ptr::read(&c) },
        extra: [0; 4],
    };
    big.base.struct_size = std::mem::size_of::<Bigger>() as u32;
    assert_eq!(unsafe { as_create(&big.base, &mut h) }, AS_OK);
    unsafe { as_free(h) };
    let _ = &big.extra;
    // Smaller than the contract's fields: refused.
    c.struct_size = 52;
    let mut h2 = 0x10 as *mut as_sketch;
    assert_eq!(unsafe { as_create(&c, &mut h2) }, AS_ERR_INVALID_ARG);
    assert_eq!(h2 as usize, 0x10);
}

#[test]
fn later_issue_features_are_refused_not_faked() {
    let mut c = unsafe { std::mem::zeroed::<as_config>() };
    unsafe { as_config_init(&mut c, 8) };
    let h = make(8, 8, as_mode::AS_MODE_CAUSAL);
    let mut found = 77u32;
    let (mut idx, mut val) = ([0u64; 4], [0f32; 4]);
    let mut written = 0usize;
    unsafe {
        let st = as_recover_column(h, 0, 1, idx.as_mut_ptr(), val.as_mut_ptr(), &mut found);
        assert!(st == AS_ERR_UNSUPPORTED || st == AS_ERR_WRONG_MODE);
        assert_eq!(found, 77);
        let st = as_serialize(h, null_mut(), 0, &mut written);
        assert!(st == AS_ERR_UNSUPPORTED || st == AS_OK);
        assert_eq!(as_merge(h, h), AS_ERR_INVALID_ARG);
        as_free(h);
    }
}
