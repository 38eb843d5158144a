//! `Sketch::deserialize` / `as_deserialize` on arbitrary bytes. Odd first
//! byte: the rest gets a recomputed CRC, so mutations reach the section
//! parser and the value checks instead of stopping at the checksum.
//! Oracle: refusals are only CORRUPT / UNSUPPORTED; anything accepted in
//! the current format version re-serializes to the same bytes (an older
//! version re-serializes in the current one, which then round-trips), and
//! answers queries with finite outputs.
#![no_main]
use attnsketch::ffi::handles::as_sketch;
use attnsketch::ffi::*;
use attnsketch::Sketch;
use libfuzzer_sys::fuzz_target;

fn check(b: &[u8]) {
    match Sketch::deserialize(b) {
        Ok(h) => {
            let again = h.serialize().unwrap();
            let version = u32::from_le_bytes(b[8..12].try_into().unwrap());
            if version == attnsketch::sketch::serialize::FORMAT_VERSION {
                assert_eq!(again, b, "not canonical");
            } else {
                let h2 = Sketch::deserialize(&again).unwrap();
                assert_eq!(h2.serialize().unwrap(), again, "upgrade not canonical");
            }
            let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
            let mut out = vec![0.0f32; dv];
            for x in [0.0f32, 1.0, -3.0] {
                if h.query(&vec![x; d], &mut out).is_ok() {
                    assert!(out.iter().all(|v| v.is_finite()));
                }
            }
        }
        Err(e) => assert!(
            matches!(
                e,
                attnsketch::Error::Corrupt | attnsketch::Error::Unsupported
            ),
            "{e:?}"
        ),
    }
    // The C entry point agrees and writes *out only on success.
    let mut out: *mut as_sketch = core::ptr::null_mut();
    let p = if b.is_empty() {
        [0u8; 1].as_ptr()
    } else {
        b.as_ptr()
    };
    let st = unsafe { as_deserialize(p, b.len(), &mut out) };
    assert_ne!(st, AS_ERR_INTERNAL);
    assert_eq!(st == AS_OK, !out.is_null());
    unsafe { as_free(out) };
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() > 5 && data[0] & 1 == 1 {
        let mut b = data[1..].to_vec();
        let n = b.len() - 4;
        let c = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&c.to_le_bytes());
        check(&b);
    }
});
