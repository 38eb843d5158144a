//! Serialization and merge: bit-exact round trips that continue the stream
//! identically at every CPU level, refusal of every truncation / bit flip /
//! trailing byte / inconsistent field, and merge == concatenation within the
//! streaming tolerance.
mod common;
use attnsketch::sketch::serialize::{
    CONF_LEN, CORE_FIXED_LEN, FORMAT_VERSION, HEADER_LEN, SECTION_HEADER_LEN,
};
use attnsketch::{Config, Error, Level, Mode, Sketch};
use common::*;

fn cfg(d: u32, dv: u32, g: u32, mode: Mode, seed: u64) -> Config {
    let mut c = Config::new(d);
    c.value_dim = dv;
    c.degree = g;
    c.mode = mode;
    c.seed = seed;
    c
}

/// Streams `n` random tokens (causal: push_token; non-causal: append_kv and
/// a push_query every 3rd token).
fn feed(h: &mut Sketch, rng: &mut Rng, n: usize) -> Vec<f32> {
    let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
    let mut outs = Vec::new();
    let mut o = vec![0.0f32; dv];
    for j in 0..n {
        let (q, k, v) = (rng.vec(d, 1.0), rng.vec(d, 1.0), rng.vec(dv, 2.0));
        match h.config().mode {
            Mode::Causal => h.push_token(&q, &k, &v, &mut o).unwrap(),
            Mode::NonCausal => {
                h.append_kv(&k, &v).unwrap();
                if j % 3 == 0 {
                    h.push_query(&q, &mut o).unwrap();
                }
            }
        }
        outs.extend_from_slice(&o);
    }
    outs
}

fn fix_crc(b: &mut [u8]) {
    let n = b.len() - 4;
    let c = crc32fast::hash(&b[..n]);
    b[n..].copy_from_slice(&c.to_le_bytes());
}

/// Offset of the CORE payload in a v1 buffer.
fn core_off() -> usize {
    HEADER_LEN + SECTION_HEADER_LEN + CONF_LEN + SECTION_HEADER_LEN
}

const CONFIGS: &[(u32, u32, u32, Mode)] = &[
    (1, 1, 0, Mode::Causal),
    (3, 5, 2, Mode::Causal),
    (4, 4, 2, Mode::NonCausal),
    (7, 3, 3, Mode::Causal),
    (16, 16, 2, Mode::NonCausal),
];

#[test]
fn round_trip_is_bit_exact_and_continues_identically_at_every_level() {
    let mut rng = Rng(61);
    for &(d, dv, g, mode) in CONFIGS {
        for &n in &[0usize, 1, 63, 64, 65, 200] {
            let c = cfg(d, dv, g, mode, 99);
            // Written at some level (rotating through the supported ones).
            let levels: Vec<Level> = Level::ALL
                .iter()
                .copied()
                .filter(|l| l.supported())
                .collect();
            let wl = levels[n % levels.len()];
            let mut a = Sketch::with_level(&c, wl).unwrap();
            feed(&mut a, &mut rng, n);
            let bytes = a.serialize().unwrap();
            assert_eq!(bytes.len(), a.serialized_len());
            assert_eq!(&bytes[..8], b"ATSKETCH");
            assert_eq!(
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
                FORMAT_VERSION
            );
            for &lvl in Level::ALL.iter().filter(|l| l.supported()) {
                let mut b = Sketch::deserialize_with_level(&bytes, lvl).unwrap();
                assert_eq!(b.level(), lvl);
                assert_eq!(b.serialize().unwrap(), bytes, "re-serialize differs");
                assert_eq!(b.token_count(), a.token_count());
                assert_eq!(b.query_count(), a.query_count());
                assert_eq!(b.fallbacks(), a.fallbacks());
                // Two loads at this level continue with the same tokens to
                // identical bits (kernels of different levels may round
                // differently, so each level is compared with itself).
                let mut a2 = Sketch::deserialize_with_level(&bytes, lvl).unwrap();
                let seed = rng.next_u64();
                let oa = feed(&mut a2, &mut Rng(seed), 100);
                let ob = feed(&mut b, &mut Rng(seed), 100);
                assert_eq!(bits(&oa), bits(&ob));
                assert_eq!(a2.serialize().unwrap(), b.serialize().unwrap());
            }
            // Continuing the original equals continuing a copy at its level.
            let mut b = Sketch::deserialize_with_level(&bytes, wl).unwrap();
            let seed = rng.next_u64();
            let oa = feed(&mut a, &mut Rng(seed), 70);
            let ob = feed(&mut b, &mut Rng(seed), 70);
            assert_eq!(bits(&oa), bits(&ob));
            assert_eq!(a.serialize().unwrap(), b.serialize().unwrap());
        }
    }
}

#[test]
fn every_truncation_bit_flip_and_trailing_byte_is_refused() {
    let mut rng = Rng(62);
    for &(d, dv, g, mode) in &CONFIGS[..3] {
        let mut a = Sketch::new(&cfg(d, dv, g, mode, 5)).unwrap();
        feed(&mut a, &mut rng, 77);
        let bytes = a.serialize().unwrap();
        for len in 0..bytes.len() {
            assert_eq!(
                Sketch::deserialize(&bytes[..len]).err(),
                Some(Error::Corrupt),
                "truncated to {len}"
            );
        }
        let mut b = bytes.clone();
        for i in 0..b.len() {
            for bit in 0..8 {
                b[i] ^= 1 << bit;
                assert_eq!(
                    Sketch::deserialize(&b).err(),
                    Some(Error::Corrupt),
                    "flip byte {i} bit {bit}"
                );
                b[i] ^= 1 << bit;
            }
        }
        let mut t = bytes.clone();
        t.push(0);
        assert_eq!(Sketch::deserialize(&t).err(), Some(Error::Corrupt));
        // Trailing bytes inside the checksummed body (CRC recomputed).
        let mut t = bytes[..bytes.len() - 4].to_vec();
        t.extend_from_slice(&[0; 8]);
        fix_crc(&mut t);
        assert_eq!(Sketch::deserialize(&t).err(), Some(Error::Corrupt));
    }
}

/// Fields changed with a valid checksum: still refused, before allocating.
#[test]
fn inconsistent_fields_with_valid_crc_are_refused() {
    let mut rng = Rng(63);
    let c = cfg(3, 2, 2, Mode::Causal, 7);
    let mut a = Sketch::new(&c).unwrap();
    feed(&mut a, &mut rng, 70);
    let good = a.serialize().unwrap();
    let co = core_off();
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        fix_crc(&mut b);
        Sketch::deserialize(&b).err()
    };
    let put32 =
        |b: &mut Vec<u8>, at: usize, x: u32| b[at..at + 4].copy_from_slice(&x.to_le_bytes());
    let put64 =
        |b: &mut Vec<u8>, at: usize, x: u64| b[at..at + 8].copy_from_slice(&x.to_le_bytes());
    // Versions: 0 corrupt, newer unsupported.
    assert_eq!(edit(&|b| put32(b, 8, 0)), Some(Error::Corrupt));
    assert_eq!(
        edit(&|b| put32(b, 8, FORMAT_VERSION + 1)),
        Some(Error::Unsupported)
    );
    // Section count, tags, lengths.
    assert_eq!(edit(&|b| put32(b, 12, 2)), Some(Error::Corrupt)); // PEND missing in v2
    assert_eq!(edit(&|b| put32(b, 12, 4)), Some(Error::Corrupt));
    assert_eq!(edit(&|b| put32(b, 12, u32::MAX)), Some(Error::Corrupt));
    assert_eq!(edit(&|b| b[16] = b'X'), Some(Error::Corrupt));
    assert_eq!(edit(&|b| put64(b, 20, u64::MAX)), Some(Error::Corrupt));
    assert_eq!(edit(&|b| put64(b, co - 8, u64::MAX)), Some(Error::Corrupt));
    assert_eq!(edit(&|b| put64(b, co - 8, 1 << 40)), Some(Error::Corrupt));
    // Config: a huge head (would need GiBs) is refused without allocating;
    // bad mode; zero dims; NaN scale.
    let cf = HEADER_LEN + SECTION_HEADER_LEN;
    assert_eq!(edit(&|b| put32(b, cf, 4096)), Some(Error::Corrupt));
    assert_eq!(edit(&|b| put32(b, cf + 8, 16)), Some(Error::Corrupt));
    assert_eq!(edit(&|b| put32(b, cf + 16, 7)), Some(Error::Corrupt));
    assert_eq!(edit(&|b| put32(b, cf, 0)), Some(Error::Corrupt));
    assert_eq!(
        edit(&|b| put32(b, cf + 12, f32::NAN.to_bits())),
        Some(Error::Corrupt)
    );
    // An output sketch claimed without its `RECO` section: corrupt.
    assert_eq!(edit(&|b| put32(b, cf + 28, 4)), Some(Error::Corrupt));
    // Exact tokens (hybrid) claimed without their `EXCT` section: corrupt.
    assert_eq!(edit(&|b| put32(b, cf + 44, 8)), Some(Error::Corrupt));
    // Core counters and values.
    assert_eq!(edit(&|b| put32(b, co + 32, 64)), Some(Error::Corrupt)); // since_flush
    assert_eq!(edit(&|b| put32(b, co + 36, 1)), Some(Error::Corrupt)); // reserved
    assert_eq!(edit(&|b| put64(b, co + 8, 1)), Some(Error::Corrupt)); // causal queries
    assert_eq!(
        edit(&|b| put64(b, co + 24, f64::NAN.to_bits())),
        Some(Error::Corrupt)
    );
    assert_eq!(
        edit(&|b| put64(b, co + 24, 1.0f64.to_bits())),
        Some(Error::Corrupt)
    ); // bound < tokens
    assert_eq!(
        edit(&|b| put64(b, co + 24, 1e40f64.to_bits())),
        Some(Error::Corrupt)
    );
    assert_eq!(edit(&|b| put64(b, co, 0)), Some(Error::Corrupt)); // empty but non-zero
    assert_eq!(edit(&|b| put64(b, co, 1000)), Some(Error::Corrupt)); // z_0 != tokens
    assert_eq!(edit(&|b| put64(b, co + 40, 11)), Some(Error::Corrupt)); // t
    assert_eq!(edit(&|b| put64(b, co + 48, 3)), Some(Error::Corrupt)); // dv
    let arr = co + CORE_FIXED_LEN;
    assert_eq!(
        edit(&|b| put32(b, arr + 4, f32::NAN.to_bits())),
        Some(Error::Corrupt)
    );
    assert_eq!(
        edit(&|b| put32(b, arr + 4, f32::INFINITY.to_bits())),
        Some(Error::Corrupt)
    );
    assert_eq!(
        edit(&|b| put32(b, arr + 4, 1e30f32.to_bits())),
        Some(Error::Corrupt)
    );
    // Pending tokens (`PEND`; 70 tokens fed: 6 pending, all staged).
    let (t, dv, d) = (10usize, 2usize, 3usize);
    let pend = arr + 8 * (t * dv + t) + SECTION_HEADER_LEN;
    assert_eq!(&good[pend - 12..pend - 8], b"PEND");
    assert_eq!(edit(&|b| put32(b, pend, 7)), Some(Error::Corrupt)); // applied > since_flush
    assert_eq!(edit(&|b| put32(b, pend + 4, 1)), Some(Error::Corrupt)); // reserved
    let key = |j: usize, a: usize| pend + 8 + 4 * (j * d + a);
    assert_eq!(
        edit(&|b| put32(b, key(2, 1), f32::NAN.to_bits())),
        Some(Error::Corrupt)
    );
    assert_eq!(
        edit(&|b| put32(b, key(6, 0), 1.0f32.to_bits())),
        Some(Error::Corrupt)
    ); // a row past since_flush must be zero
    assert_eq!(
        edit(&|b| put32(b, key(7, 2), (-0.0f32).to_bits())),
        Some(Error::Corrupt)
    ); // +0.0 bitwise: -0.0 would load and re-serialize as +0.0 (fuzz)
    let val = |j: usize, c: usize| pend + 8 + 4 * (64 * d + j * dv + c);
    assert_eq!(
        edit(&|b| put32(b, val(63, 1), 0.5f32.to_bits())),
        Some(Error::Corrupt)
    );
    assert_eq!(
        edit(&|b| put32(b, val(0, 0), 1e30f32.to_bits())),
        Some(Error::Corrupt)
    );
    // The untouched buffer still loads.
    assert!(Sketch::deserialize(&good).is_ok());
}

/// A version-1 buffer (no `PEND`: the pending tokens' increments were in
/// the block accumulator `d`) still loads: its `d` moves into `s` and the
/// stream continues within float rounding of the original.
#[test]
fn version_1_buffers_stay_readable() {
    let mut rng = Rng(64);
    let c = cfg(3, 2, 2, Mode::Causal, 7);
    let mut a = Sketch::new(&c).unwrap();
    // 72 tokens: 8 pending, all applied to d (dv = 2: one stage row), none staged:
    // exactly the state a version-1 writer would have had.
    feed(&mut a, &mut rng, 72);
    assert_eq!((a.state().since_flush(), a.state().staged_count()), (8, 0));
    let v2 = a.serialize().unwrap();
    let co = core_off();
    let pend_hdr = co + CORE_FIXED_LEN + 8 * (10 * 2 + 10);
    assert_eq!(&v2[pend_hdr..pend_hdr + 4], b"PEND");
    let plen = u64::from_le_bytes(v2[pend_hdr + 4..pend_hdr + 12].try_into().unwrap()) as usize;
    let mut v1 = v2[..pend_hdr].to_vec();
    v1.extend_from_slice(&v2[pend_hdr + 12 + plen..v2.len() - 4]);
    // Versions 1-3 have no `value_format` and `key_format` at the end of CONF.
    let conf_end = HEADER_LEN + SECTION_HEADER_LEN + CONF_LEN;
    v1.drain(conf_end - 8..conf_end);
    v1[HEADER_LEN + 4..HEADER_LEN + 12].copy_from_slice(&((CONF_LEN - 8) as u64).to_le_bytes());
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    v1[12..16].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32fast::hash(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    let mut b = Sketch::deserialize(&v1).unwrap();
    assert_eq!(b.token_count(), 72);
    assert_eq!(b.state().since_flush(), 0);
    let (ma, mb) = (a.state().m_f64(), b.state().m_f64());
    for (x, y) in ma.iter().zip(&mb) {
        assert!((x - y).abs() <= 1e-6 * (1.0 + x.abs()), "{x} vs {y}");
    }
    let mut r2 = Rng(5);
    let oa = feed(&mut a, &mut r2.clone(), 100);
    let ob = feed(&mut b, &mut r2, 100);
    for (x, y) in oa.iter().zip(&ob) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
    }
    // A version-1 count with a PEND section is corrupt.
    let mut bad = v2[..v2.len() - 4].to_vec();
    bad[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32fast::hash(&bad);
    bad.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(Sketch::deserialize(&bad).err(), Some(Error::Corrupt));
}

/// Streams `n` tokens of one fixed sequence into `h` from token `from`.
fn stream(h: &mut Sketch, seed: u64, from: usize, n: usize) {
    let (d, dv) = (h.config().head_dim as usize, h.config().value_dim as usize);
    let mut rng = Rng(seed);
    let mut o = vec![0.0f32; dv];
    for j in 0..from + n {
        let (q, k, v) = (rng.vec(d, 1.0), rng.vec(d, 1.0), rng.vec(dv, 2.0));
        if j < from {
            continue;
        }
        match h.config().mode {
            Mode::Causal => h.push_token(&q, &k, &v, &mut o).unwrap(),
            Mode::NonCausal => h.append_kv(&k, &v).unwrap(),
        }
    }
}

/// Largest `|a - b| / scale` of two states, `scale = max |b|` per array.
fn state_diff(a: &Sketch, b: &Sketch) -> f64 {
    let rel = |x: &[f64], y: &[f64]| {
        let s = y.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
        x.iter()
            .zip(y)
            .fold(0.0f64, |m, (p, q)| m.max((p - q).abs() / s))
    };
    rel(&a.state().m_f64(), &b.state().m_f64()).max(rel(&a.state().z_f64(), &b.state().z_f64()))
}

#[test]
fn merge_equals_concatenation() {
    for &(d, dv, g, mode) in CONFIGS {
        let c = cfg(d, dv, g, mode, 3);
        for &(n1, n2) in &[
            (0usize, 10usize),
            (10, 0),
            (63, 1),
            (64, 64),
            (100, 157),
            (1000, 999),
        ] {
            let seed = 1000 + n1 as u64;
            let mut whole = Sketch::new(&c).unwrap();
            stream(&mut whole, seed, 0, n1 + n2);
            let mut a = Sketch::new(&c).unwrap();
            stream(&mut a, seed, 0, n1);
            let mut b = Sketch::new(&c).unwrap();
            stream(&mut b, seed, n1, n2);
            a.merge(&b).unwrap();
            assert_eq!(a.token_count(), (n1 + n2) as u64);
            let err = state_diff(&a, &whole);
            // Stated tolerance: 1e-6 of the largest state element.
            assert!(err <= 1e-6, "{d} {dv} {g} {mode:?} {n1}+{n2}: {err:e}");
            // Queries agree too (same tolerance scaled by the normaliser).
            let q = Rng(seed).vec(d as usize, 1.0);
            let (mut oa, mut ow) = (vec![0.0f32; dv as usize], vec![0.0f32; dv as usize]);
            a.query(&q, &mut oa).unwrap();
            whole.query(&q, &mut ow).unwrap();
            for (x, y) in oa.iter().zip(&ow) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
            }
            // The merged head keeps streaming and serializing.
            stream(&mut a, 7, 0, 10);
            let s = a.serialize().unwrap();
            assert!(Sketch::deserialize(&s).is_ok());
        }
    }
}

#[test]
fn merge_of_many_pieces_and_after_round_trip() {
    let c = cfg(4, 3, 2, Mode::Causal, 11);
    let mut whole = Sketch::new(&c).unwrap();
    stream(&mut whole, 5, 0, 1000);
    let mut acc = Sketch::new(&c).unwrap();
    let mut from = 0;
    for piece in [1usize, 50, 64, 200, 385, 300] {
        let mut p = Sketch::new(&c).unwrap();
        stream(&mut p, 5, from, piece);
        let p = Sketch::deserialize(&p.serialize().unwrap()).unwrap();
        acc.merge(&p).unwrap();
        from += piece;
    }
    assert_eq!(from, 1000);
    assert!(state_diff(&acc, &whole) <= 1e-6);
}

#[test]
fn merge_refusals_change_nothing() {
    let c = cfg(3, 2, 2, Mode::Causal, 1);
    let mut a = Sketch::new(&c).unwrap();
    stream(&mut a, 1, 0, 30);
    let before = a.serialize().unwrap();
    let mut others = Vec::new();
    let mut c2 = c.clone();
    c2.seed = 2;
    others.push(c2);
    let mut c2 = c.clone();
    c2.scale *= 1.0001;
    others.push(c2);
    let mut c2 = c.clone();
    c2.degree = 3;
    others.push(c2);
    let mut c2 = c.clone();
    c2.mode = Mode::NonCausal;
    others.push(c2);
    let mut c2 = c.clone();
    c2.value_dim = 3;
    others.push(c2);
    for oc in others {
        let mut b = Sketch::new(&oc).unwrap();
        stream(&mut b, 9, 0, 5);
        assert_eq!(a.merge(&b), Err(Error::InvalidArg), "{oc:?}");
        assert_eq!(a.serialize().unwrap(), before);
    }
    // A merge that would pass the state limit: Range, nothing changed.
    let mut big = Sketch::new(&c).unwrap();
    let mut o = [0.0f32; 2];
    let v = [1.0f32; 2];
    let q = [1e-30f32; 3];
    // |k| = 1e14 at degree 2 adds 1e28 to the bound: ~126 tokens reach the
    // 2^100 limit, so this head merged with its twin would pass it.
    let k = [1.0e14f32; 3];
    let mut n = 0;
    while n < 1000 && big.push_token(&q, &k, &v, &mut o).is_ok() {
        n += 1;
    }
    assert!(n > 60 && n < 1000, "{n}");
    let before_big = big.serialize().unwrap();
    let twin = Sketch::deserialize(&before_big).unwrap();
    assert_eq!(big.merge(&twin), Err(Error::Range));
    assert_eq!(big.serialize().unwrap(), before_big);
}

/// Hybrid heads (exact tokens): the `EXCT` section round-trips bit-exactly
/// and the stream continues identically; every single-byte corruption is
/// refused; merge has no rule (WRONG_MODE), nothing changed.
#[test]
fn hybrid_heads_round_trip_and_refuse_merge() {
    // f32 rows; binary16 or int8 values and/or int16 keys (cap 138: 2
    // exact residual rows).
    for (format, keys, window, n) in [
        (0u32, 0u32, 8u32, 60usize),
        (1, 0, 130, 200),
        (0, 1, 130, 200),
        (1, 1, 130, 200),
        (2, 0, 130, 200),
        (2, 1, 130, 200),
    ] {
        let mut c = cfg(4, 4, 2, Mode::Causal, 1);
        c.sink_tokens = 2;
        c.window_tokens = window;
        c.heavy_tokens = 6;
        c.tail_groups = 3;
        c.value_format = format;
        c.key_format = keys;
        let Ok(mut h) = Sketch::new(&c) else {
            panic!("hybrid config refused")
        };
        stream(&mut h, 3, 0, n);
        let buf = h.serialize().unwrap();
        let mut back = Sketch::deserialize(&buf).unwrap();
        assert_eq!(back.serialize().unwrap(), buf);
        assert!(back.hybrid().unwrap().tail_tokens() > 0);
        // Both continue identically.
        let mut a = h.clone();
        stream(&mut a, 4, n, 40);
        stream(&mut back, 4, n, 40);
        assert_eq!(a.serialize().unwrap(), back.serialize().unwrap());
        // Every byte flipped: refused (CRC or checks), never accepted.
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x5A;
            let e = Sketch::deserialize(&b).err();
            assert!(
                matches!(e, Some(Error::Corrupt) | Some(Error::Unsupported)),
                "format {format} byte {i}: {e:?}"
            );
        }
        if format == 1 {
            // With a valid CRC: an infinite binary16 value, a row scale that
            // is not a power of two, an infinite residual.
            let at = buf.windows(4).position(|w| w == b"EXCT").unwrap() + 12 + 64;
            let cap = 2 + 130 + 6;
            let halves = at + cap * 4 * 4;
            let scales = halves + cap * 4 * 2;
            let res = scales + cap * 4;
            for (off, bytes) in [
                (halves, 0x7C00u16.to_le_bytes().to_vec()),
                (scales, 3.0f32.to_le_bytes().to_vec()),
                (res, f32::INFINITY.to_le_bytes().to_vec()),
            ] {
                let mut b = buf.clone();
                b[off..off + bytes.len()].copy_from_slice(&bytes);
                fix_crc(&mut b);
                assert_eq!(
                    Sketch::deserialize(&b).err(),
                    Some(Error::Corrupt),
                    "at {off}"
                );
            }
        }
    }
    let mut c = cfg(4, 4, 2, Mode::Causal, 1);
    c.sink_tokens = 2;
    c.window_tokens = 8;
    c.heavy_tokens = 6;
    c.tail_groups = 3;
    let mut h = Sketch::new(&c).unwrap();
    stream(&mut h, 3, 0, 60);
    let twin = h.clone();
    let before = h.serialize().unwrap();
    assert_eq!(h.merge(&twin), Err(Error::WrongMode));
    assert_eq!(h.serialize().unwrap(), before);
    let mut plain = Sketch::new(&cfg(4, 4, 2, Mode::Causal, 1)).unwrap();
    assert_eq!(plain.merge(&twin), Err(Error::InvalidArg)); // configs differ
    assert_eq!(plain.token_count(), 0);
}

/// Output and retrieval sketches (`RECO`, `RETR`) round-trip bit-exactly,
/// decode the same after the trip, refuse a wrong recorded count, and make
/// merge refuse with WRONG_MODE.
#[test]
fn recovery_sketches_round_trip() {
    for mode in [Mode::Causal, Mode::NonCausal] {
        let mut c = cfg(4, 4, 2, mode, 9);
        c.recovery_k = 4;
        c.retrieval_k = 4;
        c.max_tokens = 1 << 12;
        let mut h = Sketch::new(&c).unwrap();
        stream(&mut h, 5, 0, 50);
        if mode == Mode::NonCausal {
            let mut o = vec![0.0f32; 4];
            for i in 0..7 {
                h.push_query(&[0.1 * i as f32, 0.2, -0.3, 0.4], &mut o)
                    .unwrap();
            }
        }
        let buf = h.serialize().unwrap();
        let back = Sketch::deserialize(&buf).unwrap();
        assert_eq!(back.serialize().unwrap(), buf);
        let mut a = h.clone();
        let mut b = back;
        stream(&mut a, 6, 50, 30);
        stream(&mut b, 6, 50, 30);
        assert_eq!(a.serialize().unwrap(), b.serialize().unwrap());
        for i in (0..buf.len()).step_by(7) {
            let mut x = buf.clone();
            x[i] ^= 0x21;
            assert!(Sketch::deserialize(&x).is_err(), "{mode:?} byte {i}");
        }
        let twin = h.clone();
        assert_eq!(h.merge(&twin), Err(Error::WrongMode));
    }
}

/// Loads an older-format hybrid fixture and checks it: its version and
/// token count, read-only answers equal to the ones the writing build gave
/// (8 queries x dv 4, from an LCG uniform in [-1.5, 1.5) seeded 5) within
/// `1e-5` relative, a re-serialization in the current format that
/// round-trips bit-exactly, and a refusal of the buffer with one byte changed.
fn check_fixture(buf: &[u8], answers: &[u8], version: u32, tokens: u64, value_format: u32) {
    assert_eq!(u32::from_le_bytes(buf[8..12].try_into().unwrap()), version);
    let want: Vec<f32> = answers
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let h = Sketch::deserialize(buf).unwrap();
    assert_eq!(h.token_count(), tokens);
    assert_eq!(h.config().value_format, value_format);
    assert_eq!(h.config().key_format, 0);
    let hy = h.hybrid().unwrap();
    assert_eq!(hy.tail_tokens() + hy.exact_len() as u64, tokens);
    assert!(hy.tail_tokens() > 0);
    let mut s = 5u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut o = [0.0f32; 4];
    for w in want.chunks_exact(4) {
        let q: Vec<f32> = (0..4).map(|_| 1.5 * next()).collect();
        h.query(&q, &mut o).unwrap();
        for (a, b) in o.iter().zip(w) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{o:?} vs {w:?}");
        }
    }
    let now = h.serialize().unwrap();
    assert_eq!(
        u32::from_le_bytes(now[8..12].try_into().unwrap()),
        FORMAT_VERSION
    );
    assert_eq!(Sketch::deserialize(&now).unwrap().serialize().unwrap(), now);
    let mut bad = buf.to_vec();
    bad[100] ^= 0x5A;
    assert_eq!(Sketch::deserialize(&bad).err(), Some(Error::Corrupt));
}

/// A format-2 hybrid head (written by the 2026-12-01 build, before the
/// tail moved to f32 means/variances and the ghost controller) still loads
/// (answers within f32 rounding of the sum -> mean conversion). Config: d =
/// dv = 4, sinks 2, window 8, heavy 6, 3 tail groups, 60 causal tokens.
#[test]
fn hybrid_format_2_still_loads() {
    check_fixture(
        include_bytes!("data/hybrid_v2.bin"),
        include_bytes!("data/hybrid_v2_queries.f32"),
        2,
        60,
        0,
    );
}

/// A format-3 hybrid head (f32 values, before `value_format`; written by
/// the session-3 build: the v2 fixture loaded, 20 more tokens from an LCG
/// seeded 11) still loads, answers as that build did, and re-serializes as
/// the current format with f32 values.
#[test]
fn hybrid_format_3_still_loads() {
    check_fixture(
        include_bytes!("data/hybrid_v3.bin"),
        include_bytes!("data/hybrid_v3_queries.f32"),
        3,
        80,
        0,
    );
}

/// A format-4 hybrid head with binary16 values (before `key_format`;
/// written by the session-5 build, commit 730c303: d = dv = 4, sinks 2,
/// window 130, heavy 6, 3 tail groups, 200 causal tokens of `Rng(3)` as in
/// `stream`) still loads with f32 keys, answers as that build did, and
/// re-serializes as the current format.
#[test]
fn hybrid_format_4_still_loads() {
    check_fixture(
        include_bytes!("data/hybrid_v4.bin"),
        include_bytes!("data/hybrid_v4_queries.f32"),
        4,
        200,
        1,
    );
}

/// A hybrid buffer is canonical: an unused slot's position must be 0 (the
/// writer's), else the load would drop it and re-serialize other bytes
/// (found by the `deserialize` fuzz target once hybrid seeds were added).
/// Every byte of every unused slot's position is checked, CRC recomputed.
#[test]
fn hybrid_unused_slot_positions_must_be_zero() {
    let mut c = cfg(3, 2, 2, Mode::Causal, 1);
    (
        c.sink_tokens,
        c.window_tokens,
        c.heavy_tokens,
        c.tail_groups,
    ) = (1, 6, 2, 2);
    let mut h = Sketch::new(&c).unwrap();
    stream(&mut h, 5, 0, 5); // 5 of 9 slots live
    let buf = h.serialize().unwrap();
    let (cap, d, dv) = (9usize, 3usize, 2usize);
    let exct = buf.windows(4).position(|w| w == b"EXCT").unwrap() + 12;
    assert_eq!(
        u64::from_le_bytes(buf[exct + 8..exct + 16].try_into().unwrap()),
        5
    );
    let pos_at = exct + 64 + cap * d * 4 + cap * dv * 4 + cap * 4;
    for slot in 0..cap {
        let v = u64::from_le_bytes(
            buf[pos_at + 8 * slot..pos_at + 8 * slot + 8]
                .try_into()
                .unwrap(),
        );
        assert_eq!(v, if slot < 5 { slot as u64 } else { 0 }, "slot {slot}");
    }
    for slot in 5..cap {
        for byte in 0..8 {
            let mut bad = buf.clone();
            bad[pos_at + 8 * slot + byte] = 1;
            fix_crc(&mut bad);
            assert_eq!(
                Sketch::deserialize(&bad).err(),
                Some(attnsketch::Error::Corrupt),
                "slot {slot} byte {byte}"
            );
        }
    }
}
