//! Arbitrary sequences of contract calls on up to three handles, with
//! arbitrary floats (NaN, Inf, huge, denormal, raw bits), sizes and NULLs.
//! Oracle after every call: no AS_ERR_INTERNAL (a caught panic); a refused
//! call leaves the handle's serialized bytes unchanged and its output
//! untouched; a successful call writes only finite outputs.
#![no_main]
use attnsketch::ffi::handles::as_sketch;
use attnsketch::ffi::*;
use libfuzzer_sys::fuzz_target;
use std::ptr::{null, null_mut};

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn f32(&mut self) -> f32 {
        const SPECIAL: [f32; 16] = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            1e-45,
            65504.0,
            1e10,
            -1e19,
            3.5,
        ];
        match self.u8() {
            b @ 0..=15 => SPECIAL[b as usize],
            16..=31 => f32::from_bits(self.u32()),
            b => (b as f32 - 144.0) / 32.0,
        }
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

#[derive(Clone, Copy)]
struct Slot {
    h: *mut as_sketch,
    d: usize,
    dv: usize,
}

/// The serialized state, or None for heads the format cannot hold yet
/// (hybrid heads serialize with their `EXCT` section).
fn snapshot(h: *const as_sketch) -> Option<Vec<u8>> {
    let mut n = 0usize;
    match unsafe { as_serialize(h, null_mut(), 0, &mut n) } {
        AS_ERR_UNSUPPORTED => return None,
        st => assert_eq!(st, AS_OK),
    }
    let mut b = vec![0u8; n];
    let mut w = 0usize;
    assert_eq!(unsafe { as_serialize(h, b.as_mut_ptr(), n, &mut w) }, AS_OK);
    assert_eq!(w, n);
    Some(b)
}

/// The serialized bytes without the fallback counter and the CRC.
fn mask(mut b: Vec<u8>) -> Vec<u8> {
    use attnsketch::sketch::serialize::{CONF_LEN, HEADER_LEN, SECTION_HEADER_LEN};
    let fb = HEADER_LEN + 2 * SECTION_HEADER_LEN + CONF_LEN + 16;
    b[fb..fb + 8].fill(0);
    let n = b.len();
    b[n - 4..].fill(0);
    b
}

/// NULL instead of `p` when the next selector bit says so (1 in 16).
fn maybe_null<T>(inp: &mut In, p: *const T) -> *const T {
    if inp.u8() % 16 == 0 {
        null()
    } else {
        p
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = In(data);
    let mut slots: [Option<Slot>; 3] = [None; 3];
    for _ in 0..64 {
        if inp.0.is_empty() {
            break;
        }
        let op = inp.u8() % 12;
        let si = (inp.u8() % 3) as usize;
        if op == 0 {
            // Create: small dims, any degree <= 3, mode, and sometimes an odd field.
            let mut c = core::mem::MaybeUninit::<as_config>::uninit();
            let d = 1 + (inp.u8() % 8) as u32;
            assert_eq!(unsafe { as_config_init(c.as_mut_ptr(), d) }, AS_OK);
            let mut c = unsafe { c.assume_init() };
            c.value_dim = 1 + (inp.u8() % 8) as u32;
            c.degree = (inp.u8() % 4) as u32;
            c.seed = (inp.u8() % 2) as u64;
            if inp.u8() % 2 == 1 {
                c.mode = as_mode::AS_MODE_NONCAUSAL;
            }
            match inp.u8() % 8 {
                0 => c.scale = inp.f32(),
                1 => c.recovery_k = 1,
                2 => c.struct_size = inp.u8() as u32,
                3 => {
                    // Hybrid: exact sink / window / heavy tokens.
                    c.sink_tokens = (inp.u8() % 4) as u32;
                    c.window_tokens = (inp.u8() % 12) as u32;
                    c.heavy_tokens = (inp.u8() % 4) as u32;
                    // Key / value formats, invalid ones (3, 4) included.
                    c.key_format = (inp.u8() % 3) as u32;
                    c.value_format = (inp.u8() % 4) as u32;
                }
                _ => {}
            }
            let mut h = null_mut();
            let cp = maybe_null(&mut inp, &c as *const as_config);
            let st = unsafe { as_create(cp, &mut h) };
            assert_ne!(st, AS_ERR_INTERNAL);
            assert_eq!(st == AS_OK, !h.is_null());
            if st == AS_OK {
                if let Some(old) = slots[si].take() {
                    unsafe { as_free(old.h) };
                }
                slots[si] = Some(Slot {
                    h,
                    d: c.head_dim as usize,
                    dv: c.value_dim as usize,
                });
            }
            continue;
        }
        let Some(s) = slots[si] else { continue };
        let (d, dv) = (s.d, s.dv);
        let before = snapshot(s.h);
        let mut out = vec![7.25f32; 4 * dv.max(1)];
        let mut mutates = true;
        let st = unsafe {
            match op {
                1 => {
                    as_free(s.h);
                    slots[si] = None;
                    continue;
                }
                2 => {
                    let (q, k, v) = (inp.f32s(d), inp.f32s(d), inp.f32s(dv));
                    let (q, k, v) = (
                        maybe_null(&mut inp, q.as_ptr()),
                        maybe_null(&mut inp, k.as_ptr()),
                        maybe_null(&mut inp, v.as_ptr()),
                    );
                    as_push_token(s.h, q, k, v, out.as_mut_ptr())
                }
                3 => {
                    let n = (inp.u8() % 5) as usize;
                    let (q, k, v) = (inp.f32s(n * d), inp.f32s(n * d), inp.f32s(n * dv));
                    let big = inp.u8() % 8 == 0;
                    let n2 = if big { usize::MAX / 2 } else { n };
                    let mut o = vec![7.25f32; n * dv];
                    let st =
                        as_push_tokens(s.h, n2, q.as_ptr(), k.as_ptr(), v.as_ptr(), o.as_mut_ptr());
                    if st == AS_OK {
                        assert!(o.iter().all(|x| x.is_finite()));
                    } else {
                        assert!(o.iter().all(|&x| x == 7.25));
                    }
                    st
                }
                4 => {
                    let (k, v) = (inp.f32s(d), inp.f32s(dv));
                    let k = maybe_null(&mut inp, k.as_ptr());
                    as_append_kv(s.h, k, v.as_ptr())
                }
                5 => {
                    let q = inp.f32s(d);
                    as_push_query(s.h, maybe_null(&mut inp, q.as_ptr()), out.as_mut_ptr())
                }
                6 => {
                    mutates = false;
                    let q = inp.f32s(d);
                    as_query(s.h, maybe_null(&mut inp, q.as_ptr()), out.as_mut_ptr())
                }
                7 => {
                    let raw: Vec<u16> = (0..2 * d + dv).map(|_| inp.u32() as u16).collect();
                    let (q, rest) = raw.split_at(d);
                    let (k, v) = rest.split_at(d);
                    if inp.u8() % 2 == 0 {
                        as_push_token_f16(s.h, q.as_ptr(), k.as_ptr(), v.as_ptr(), out.as_mut_ptr())
                    } else {
                        as_push_token_bf16(
                            s.h,
                            q.as_ptr(),
                            k.as_ptr(),
                            v.as_ptr(),
                            out.as_mut_ptr(),
                        )
                    }
                }
                8 => {
                    // Round trip (maybe corrupted) into another slot.
                    mutates = false;
                    let Some(mut b) = before.clone() else {
                        continue;
                    };
                    let flip = inp.u8();
                    if flip % 4 == 0 && !b.is_empty() {
                        let at = inp.u32() as usize % b.len();
                        b[at] ^= 1 << (flip % 8);
                    }
                    let mut h2 = null_mut();
                    let st = as_deserialize(b.as_ptr(), b.len(), &mut h2);
                    if st == AS_OK {
                        assert_eq!(snapshot(h2), Some(b));
                        let ti = (si + 1) % 3;
                        if let Some(old) = slots[ti].take() {
                            as_free(old.h);
                        }
                        slots[ti] = Some(Slot { h: h2, d, dv });
                    } else {
                        assert!(h2.is_null());
                        assert!(st == AS_ERR_CORRUPT || st == AS_ERR_UNSUPPORTED, "{st}");
                    }
                    st
                }
                9 => {
                    let ti = (inp.u8() % 3) as usize;
                    let src = slots[ti].map(|t| t.h as *const as_sketch).unwrap_or(null());
                    as_merge(s.h, src)
                }
                10 => {
                    mutates = false;
                    let _ = as_status_string(inp.u32() as i32);
                    let _ = as_token_count(null());
                    let _ = as_state_bytes(s.h);
                    let mut w = 0usize;
                    let cap = inp.u8() as usize;
                    let mut b = vec![0xA5u8; cap];
                    let st = as_serialize(s.h, b.as_mut_ptr(), cap, &mut w);
                    if let Some(before) = &before {
                        assert_eq!(w, before.len());
                    }
                    if st == AS_OK {
                        assert_eq!(&b[..w], &before.as_ref().unwrap()[..]);
                    } else if before.is_none() {
                        assert_eq!(st, AS_ERR_UNSUPPORTED);
                        assert!(b.iter().all(|&x| x == 0xA5));
                    } else {
                        assert_eq!(st, AS_ERR_BUFFER_TOO_SMALL);
                        assert!(b.iter().all(|&x| x == 0xA5));
                    }
                    st
                }
                _ => {
                    mutates = false;
                    let q = inp.f32s(d);
                    let nc = (inp.u8() % 6) as usize;
                    let c: Vec<f64> = (0..nc).map(|_| inp.f32() as f64).collect();
                    let cp = if c.is_empty() {
                        [0.0f64].as_ptr()
                    } else {
                        c.as_ptr()
                    };
                    as_query_poly(s.h, q.as_ptr(), cp, nc as u32, out.as_mut_ptr())
                }
            }
        };
        assert_ne!(st, AS_ERR_INTERNAL, "op {op}");
        if st == AS_OK {
            assert!(
                out[..dv].iter().all(|x| x.is_finite()),
                "op {op}: {:?}",
                &out[..dv]
            );
        } else {
            assert!(
                out.iter().all(|&x| x == 7.25),
                "op {op} wrote output on error"
            );
        }
        if st != AS_OK {
            assert_eq!(
                snapshot(s.h),
                before,
                "op {op} status {st} changed the state"
            );
        } else if !mutates {
            // A read-only call records nothing; only the diagnostic fallback
            // counter (`as_fallback_count`) may count its output.
            assert_eq!(
                snapshot(s.h).map(mask),
                before.clone().map(mask),
                "op {op} changed the state"
            );
        }
    }
    for s in slots.into_iter().flatten() {
        unsafe { as_free(s.h) };
    }
});
