//! A bank's serialized form (`Bank::serialize_into` / `Bank::deserialize`,
//! `as_bank_serialize` / `as_bank_deserialize`): round trips that continue
//! the stream bit for bit at every CPU level (paged, slot-hybrid and
//! polynomial banks), canonical bytes, and refusal of every truncation,
//! every bit flip, trailing bytes and crafted fields with a valid CRC.
mod common;
use attnsketch::sketch::BANK_FORMAT_VERSION;
use attnsketch::{Bank, Config, Error, Level};
use common::*;

const NQ: u32 = 6;
const NKV: u32 = 2;

/// The three kinds of state a bank can hold, d = 32.
fn configs() -> Vec<(&'static str, Config)> {
    let mut paged = Config::new(32);
    paged.sink_tokens = 4;
    paged.window_tokens = 96;
    paged.heavy_tokens = 8;
    paged.tail_groups = 2;
    paged.key_format = attnsketch::config::KEYS_U4;
    paged.value_format = attnsketch::config::VALUES_U4;
    let mut slots = Config::new(32);
    slots.sink_tokens = 4;
    slots.window_tokens = 40;
    slots.heavy_tokens = 8;
    slots.tail_groups = 2;
    let poly = Config::new(32);
    vec![
        ("paged", paged),
        ("slot hybrid", slots),
        ("polynomial", poly),
    ]
}

fn push(b: &mut Bank, rng: &mut Rng, n: usize, per_call: usize) -> Vec<f32> {
    let d = 32usize;
    let (nq, nkv) = (NQ as usize, NKV as usize);
    let mut outs = Vec::new();
    let mut left = n;
    while left > 0 {
        let m = per_call.min(left);
        let (q, k, v) = (
            rng.vec(m * nq * d, 1.0),
            rng.vec(m * nkv * d, 1.0),
            rng.vec(m * nkv * d, 1.0),
        );
        let mut o = vec![0.0f32; m * nq * d];
        b.push_tokens(m, &q, &k, &v, &mut o).unwrap();
        outs.extend_from_slice(&o);
        left -= m;
    }
    outs
}

fn ser(b: &Bank) -> Vec<u8> {
    let mut buf = vec![0u8; b.serialized_len()];
    assert_eq!(b.serialize_into(&mut buf).unwrap(), buf.len());
    buf
}

/// Rewrites the trailing CRC so that a crafted field reaches the checks.
fn recrc(buf: &mut [u8]) {
    let n = buf.len() - 4;
    let c = crc32_ieee(&buf[..n]);
    buf[n..].copy_from_slice(&c.to_le_bytes());
}

/// CRC-32 (IEEE, reflected, 0xEDB88320), bitwise: independent of the crate's.
fn crc32_ieee(b: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in b {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Serialize mid-stream, load at every level, continue both: the outputs
/// and the re-serialized bytes are identical.
#[test]
fn round_trip_continues_bit_for_bit_at_every_level() {
    for (name, cfg) in configs() {
        for &level in Level::ALL.iter().filter(|l| l.supported()) {
            let mut a = Bank::with_level(&cfg, NQ, NKV, level).unwrap();
            let mut rng = Rng(11);
            // 173 tokens in pushes of 37: pages close, retire, heavy slots fill.
            push(&mut a, &mut rng, 173, 37);
            let buf = ser(&a);
            let mut b = Bank::deserialize_with_level(&buf, level).unwrap();
            assert_eq!((b.query_heads(), b.kv_heads()), (NQ as usize, NKV as usize));
            assert_eq!(ser(&b), buf, "{name} {level:?}: not canonical");
            let (mut ra, mut rb) = (Rng(99), Rng(99));
            let oa = push(&mut a, &mut ra, 150, 13);
            let ob = push(&mut b, &mut rb, 150, 13);
            assert_eq!(bits(&oa), bits(&ob), "{name} {level:?}");
            assert_eq!(ser(&a), ser(&b), "{name} {level:?}");
        }
    }
}

/// Every truncation, every bit flip and a trailing byte: `Corrupt`.
#[test]
fn every_truncation_and_bit_flip_is_refused() {
    let (_, cfg) = configs().remove(0);
    let mut a = Bank::new(&cfg, NQ, NKV).unwrap();
    push(&mut a, &mut Rng(5), 130, 20);
    let buf = ser(&a);
    for n in 0..buf.len() {
        assert_eq!(
            Bank::deserialize(&buf[..n]).err(),
            Some(Error::Corrupt),
            "length {n}"
        );
    }
    let mut f = buf.clone();
    for i in 0..buf.len() {
        for bit in 0..8 {
            f[i] ^= 1 << bit;
            assert_eq!(
                Bank::deserialize(&f).err(),
                Some(Error::Corrupt),
                "byte {i} bit {bit}"
            );
            f[i] ^= 1 << bit;
        }
    }
    let mut t = buf.clone();
    t.push(0);
    assert_eq!(Bank::deserialize(&t).err(), Some(Error::Corrupt));
    assert!(Bank::deserialize(&buf).is_ok());
}

/// Crafted fields with a valid CRC reach the checks and are refused.
#[test]
fn crafted_fields_are_refused() {
    let (_, cfg) = configs().remove(0);
    let mut a = Bank::new(&cfg, NQ, NKV).unwrap();
    push(&mut a, &mut Rng(6), 70, 7);
    let buf = ser(&a);
    let craft = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = buf.clone();
        f(&mut b);
        recrc(&mut b);
        Bank::deserialize(&b).err()
    };
    let put = |b: &mut Vec<u8>, at: usize, x: u32| b[at..at + 4].copy_from_slice(&x.to_le_bytes());
    // The independent CRC agrees with the writer's.
    assert_eq!(craft(&|_| {}), None);
    assert_eq!(craft(&|b| b[0] = b'X'), Some(Error::Corrupt));
    assert_eq!(craft(&|b| put(b, 4, 0)), Some(Error::Corrupt));
    assert_eq!(
        craft(&|b| put(b, 4, BANK_FORMAT_VERSION + 1)),
        Some(Error::Unsupported)
    );
    assert_eq!(craft(&|b| put(b, 8, 5)), Some(Error::Corrupt)); // n_q % n_kv
    assert_eq!(craft(&|b| put(b, 8, 0)), Some(Error::Corrupt));
    assert_eq!(craft(&|b| put(b, 12, 0)), Some(Error::Corrupt));
    assert_eq!(craft(&|b| put(b, 12, 1)), Some(Error::Corrupt)); // bytes left over
    assert_eq!(craft(&|b| put(b, 12, 3)), Some(Error::Corrupt)); // 6 % 3 == 0: a head short
    assert_eq!(craft(&|b| put(b, 12, u32::MAX)), Some(Error::Corrupt));
    assert_eq!(craft(&|b| put(b, 8, 65538 * 2)), Some(Error::Corrupt)); // n_q > 65536
                                                                        // A head length past the end, and one byte short of the head.
    assert_eq!(
        craft(&|b| b[16..24].copy_from_slice(&u64::MAX.to_le_bytes())),
        Some(Error::Corrupt)
    );
    let l0 = u64::from_le_bytes(buf[16..24].try_into().unwrap());
    assert_eq!(
        craft(&|b| b[16..24].copy_from_slice(&(l0 - 1).to_le_bytes())),
        Some(Error::Corrupt)
    );
    // Heads of two configs in one bank.
    let mut other_cfg = cfg.clone();
    other_cfg.window_tokens = 64;
    let o = Bank::new(&other_cfg, 3, 1).unwrap();
    let ob = ser(&o);
    let ol = u64::from_le_bytes(ob[16..24].try_into().unwrap()) as usize;
    let mut mixed = buf[..24 + l0 as usize].to_vec();
    mixed.extend_from_slice(&ob[16..24 + ol]);
    mixed.extend_from_slice(&[0; 4]);
    recrc(&mut mixed);
    assert_eq!(Bank::deserialize(&mixed).err(), Some(Error::Corrupt));
    // The same splice with two heads of the same config loads.
    let b1 = Bank::new(&cfg, 3, 1).unwrap();
    let bb = ser(&b1);
    let mut same = buf[..24 + l0 as usize].to_vec();
    same.extend_from_slice(&bb[16..bb.len() - 4]);
    same.extend_from_slice(&[0; 4]);
    recrc(&mut same);
    assert!(Bank::deserialize(&same).is_ok());
}

/// The C entry points: size query, too small a buffer (nothing written),
/// NULLs, a round trip, and a corrupt buffer leaving `*out` unwritten.
#[test]
fn c_entry_points() {
    use attnsketch::ffi::*;
    unsafe {
        let mut c = core::mem::zeroed::<as_config>();
        assert_eq!(as_config_init(&mut c, 64), AS_OK);
        assert_eq!(as_config_for_budget(&mut c, 64 * 1024), AS_OK);
        let mut b = core::ptr::null_mut();
        assert_eq!(as_bank_create(&c, 9, 3, &mut b), AS_OK);
        let mut rng = Rng(3);
        let n = 50usize;
        let (q, k, v) = (
            rng.vec(n * 9 * 64, 1.0),
            rng.vec(n * 3 * 64, 1.0),
            rng.vec(n * 3 * 64, 1.0),
        );
        let mut o = vec![0.0f32; n * 9 * 64];
        let st = as_bank_push_tokens(b, n, q.as_ptr(), k.as_ptr(), v.as_ptr(), o.as_mut_ptr());
        assert_eq!(st, AS_OK);
        let mut need = 0usize;
        assert_eq!(
            as_bank_serialize(b, core::ptr::null_mut(), 0, &mut need),
            AS_OK
        );
        let mut small = vec![0xA5u8; need];
        let mut w = 0usize;
        let st = as_bank_serialize(b, small.as_mut_ptr(), need - 1, &mut w);
        assert_eq!((st, w), (AS_ERR_BUFFER_TOO_SMALL, need));
        assert!(small.iter().all(|&x| x == 0xA5));
        assert_eq!(
            as_bank_serialize(core::ptr::null(), core::ptr::null_mut(), 0, &mut w),
            AS_ERR_NULL
        );
        assert_eq!(
            as_bank_serialize(b, core::ptr::null_mut(), 0, core::ptr::null_mut()),
            AS_ERR_NULL
        );
        let mut buf = vec![0u8; need];
        assert_eq!(as_bank_serialize(b, buf.as_mut_ptr(), need, &mut w), AS_OK);
        assert_eq!(w, need);
        let mut l = core::ptr::null_mut();
        assert_eq!(as_bank_deserialize(buf.as_ptr(), need, &mut l), AS_OK);
        assert_eq!(as_bank_state_bytes(l), as_bank_state_bytes(b));
        let (q, k, v) = (
            rng.vec(9 * 64, 1.0),
            rng.vec(3 * 64, 1.0),
            rng.vec(3 * 64, 1.0),
        );
        let (mut o1, mut o2) = (vec![0.0f32; 9 * 64], vec![0.0f32; 9 * 64]);
        assert_eq!(
            as_bank_push_token(b, q.as_ptr(), k.as_ptr(), v.as_ptr(), o1.as_mut_ptr()),
            AS_OK
        );
        assert_eq!(
            as_bank_push_token(l, q.as_ptr(), k.as_ptr(), v.as_ptr(), o2.as_mut_ptr()),
            AS_OK
        );
        assert_eq!(bits(&o1), bits(&o2));
        buf[need / 2] ^= 4;
        let mut x = core::ptr::null_mut();
        assert_eq!(
            as_bank_deserialize(buf.as_ptr(), need, &mut x),
            AS_ERR_CORRUPT
        );
        assert!(x.is_null());
        assert_eq!(
            as_bank_deserialize(core::ptr::null(), 8, &mut x),
            AS_ERR_NULL
        );
        as_bank_free(b);
        as_bank_free(l);
    }
}
