//! The safe state machine against the f64 polynomial-attention reference,
//! and its rules: batching, modes, read-only queries, the normaliser,
//! refusals that change nothing, determinism and fixed memory.
mod common;
use attnsketch::{reference, Config, Error, Mode, Polynomial, Sketch};
use common::*;

fn cfg(d: u32, dv: u32, g: u32, mode: Mode) -> Config {
    let mut c = Config::new(d);
    c.value_dim = dv;
    c.degree = g;
    c.mode = mode;
    c
}

fn state_bits(h: &Sketch) -> (Vec<u64>, Vec<u64>, u64) {
    let m = h.state().m_f64().iter().map(|x| x.to_bits()).collect();
    let z = h.state().z_f64().iter().map(|x| x.to_bits()).collect();
    (m, z, h.token_count())
}

#[test]
fn causal_matches_reference() {
    let mut rng = Rng(11);
    for &(d, dv, g) in &[
        (1u32, 1u32, 0u32),
        (2, 3, 1),
        (3, 5, 2),
        (7, 9, 2),
        (16, 16, 3),
        (16, 8, 4),
        (13, 17, 2),
    ] {
        let c = cfg(d, dv, g, Mode::Causal);
        let mut h = Sketch::new(&c).unwrap();
        let n = 150; // crosses two flush boundaries (64)
        let (q, k, v) = (
            rng.vec(n * d as usize, 1.0),
            rng.vec(n * d as usize, 1.0),
            rng.vec(n * dv as usize, 2.0),
        );
        let mut out = vec![0.0f32; n * dv as usize];
        for j in 0..n {
            let (du, dvu) = (d as usize, dv as usize);
            h.push_token(
                &q[j * du..][..du],
                &k[j * du..][..du],
                &v[j * dvu..][..dvu],
                &mut out[j * dvu..][..dvu],
            )
            .unwrap();
        }
        let want = reference::poly_attention_causal(
            &to64(&q),
            &to64(&k),
            &to64(&v),
            d as usize,
            dv as usize,
            Polynomial::taylor(g as usize).coeffs(),
            c.scale as f64,
        );
        let e = reference::rel_err(&to64(&out), &want);
        assert!(e < 2e-5, "d={d} dv={dv} g={g}: rel err {e}");
        assert_eq!(h.token_count(), n as u64);
        assert_eq!(h.fallbacks(), 0);
    }
}

#[test]
fn batched_matches_per_token_within_rounding() {
    let mut rng = Rng(12);
    let (d, dv, n) = (8usize, 5usize, 200usize);
    let c = cfg(d as u32, dv as u32, 2, Mode::Causal);
    let (q, k, v) = (
        rng.vec(n * d, 1.0),
        rng.vec(n * d, 1.0),
        rng.vec(n * dv, 1.0),
    );
    let mut a = Sketch::new(&c).unwrap();
    let mut b = Sketch::new(&c).unwrap();
    let mut oa = vec![0.0f32; n * dv];
    let mut ob = vec![0.0f32; n * dv];
    for j in 0..n {
        a.push_token(
            &q[j * d..][..d],
            &k[j * d..][..d],
            &v[j * dv..][..dv],
            &mut oa[j * dv..][..dv],
        )
        .unwrap();
    }
    // Uneven batches.
    let mut j = 0;
    for len in [1usize, 7, 64, 0, 100, 28] {
        b.push_tokens(
            len,
            &q[j * d..(j + len) * d],
            &k[j * d..(j + len) * d],
            &v[j * dv..(j + len) * dv],
            &mut ob[j * dv..(j + len) * dv],
        )
        .unwrap();
        j += len;
    }
    assert_eq!(j, n);
    // Block form (matrix products) vs the fused single-token pass: the same
    // sums in another order. Outputs within 1e-5 of their scale, state within
    // 1e-6 of max |M| (f64 value of the compensated halves).
    let scale = oa.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    for (i, (x, y)) in oa.iter().zip(&ob).enumerate() {
        assert!((x - y).abs() <= 1e-5 * scale, "out[{i}]: {x} vs {y}");
    }
    let (ma, mb) = (a.state().m_f64(), b.state().m_f64());
    let mmax = ma.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    for (x, y) in ma.iter().zip(&mb) {
        assert!((x - y).abs() <= 1e-6 * mmax, "M {x} vs {y}");
    }
    let (za, zb) = (a.state().z_f64(), b.state().z_f64());
    for (x, y) in za.iter().zip(&zb) {
        assert!((x - y).abs() <= 1e-6 * (1.0 + x.abs()), "z {x} vs {y}");
    }
    assert_eq!(a.token_count(), b.token_count());
    // Not bit-identical by accident: the block path really ran (summation
    // order differs somewhere in 200 tokens x dv outputs).
    assert_ne!(bits(&oa), bits(&ob), "push_tokens took the per-token path");
}

#[test]
fn noncausal_matches_reference_and_query_is_read_only() {
    let mut rng = Rng(13);
    let (d, dv, n) = (6usize, 4usize, 130usize);
    let c = cfg(d as u32, dv as u32, 3, Mode::NonCausal);
    let mut h = Sketch::new(&c).unwrap();
    let (k, v) = (rng.vec(n * d, 1.0), rng.vec(n * dv, 1.0));
    for j in 0..n {
        h.append_kv(&k[j * d..][..d], &v[j * dv..][..dv]).unwrap();
    }
    let coeffs = Polynomial::taylor(3);
    for _ in 0..5 {
        let q = rng.vec(d, 1.0);
        let before = state_bits(&h);
        let mut o1 = vec![0.0f32; dv];
        let mut o2 = vec![0.0f32; dv];
        h.query(&q, &mut o1).unwrap();
        assert_eq!(state_bits(&h), before, "query must not change the state");
        assert_eq!(h.query_count(), h.query_count());
        let qc = h.query_count();
        h.push_query(&q, &mut o2).unwrap();
        assert_eq!(h.query_count(), qc + 1);
        assert_eq!(bits(&o1), bits(&o2));
        // Reference: every key sees the query.
        let mut num = vec![0.0f64; dv];
        let mut den = 0.0f64;
        for j in 0..n {
            let x: f64 = (0..d)
                .map(|c| q[c] as f64 * k[j * d + c] as f64)
                .sum::<f64>()
                * c.scale as f64;
            let w = coeffs.eval(x);
            den += w;
            for cc in 0..dv {
                num[cc] += w * v[j * dv + cc] as f64;
            }
        }
        let want: Vec<f64> = num.iter().map(|x| x / den).collect();
        assert!(reference::rel_err(&to64(&o1), &want) < 1e-5);
    }
}

#[test]
fn mode_misuse_is_refused_without_change() {
    let mut c = cfg(4, 4, 2, Mode::Causal);
    let mut h = Sketch::new(&c).unwrap();
    let x = [0.5f32; 4];
    let mut o = [7.0f32; 4];
    assert_eq!(h.append_kv(&x, &x), Err(Error::WrongMode));
    assert_eq!(h.push_query(&x, &mut o), Err(Error::WrongMode));
    assert_eq!(o, [7.0; 4]);
    assert_eq!(h.token_count(), 0);
    c.mode = Mode::NonCausal;
    let mut h = Sketch::new(&c).unwrap();
    assert_eq!(h.push_token(&x, &x, &x, &mut o), Err(Error::WrongMode));
    assert_eq!(h.push_tokens(1, &x, &x, &x, &mut o), Err(Error::WrongMode));
    assert_eq!(o, [7.0; 4]);
    assert_eq!(h.token_count(), 0);
}

#[test]
fn refusals_leave_state_bit_identical() {
    let mut rng = Rng(14);
    let (d, dv) = (5usize, 3usize);
    let mut h = Sketch::new(&cfg(d as u32, dv as u32, 3, Mode::Causal)).unwrap();
    let mut o = vec![0.0f32; dv];
    for _ in 0..70 {
        h.push_token(
            &rng.vec(d, 1.0),
            &rng.vec(d, 1.0),
            &rng.vec(dv, 1.0),
            &mut o,
        )
        .unwrap();
    }
    let before = state_bits(&h);
    let good = rng.vec(d, 1.0);
    let goodv = rng.vec(dv, 1.0);
    let mut bad = good.clone();
    for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        bad[2] = poison;
        let mut o2 = vec![9.0f32; dv];
        assert_eq!(
            h.push_token(&bad, &good, &goodv, &mut o2),
            Err(Error::NonFinite)
        );
        assert_eq!(
            h.push_token(&good, &bad, &goodv, &mut o2),
            Err(Error::NonFinite)
        );
        let mut badv = goodv.clone();
        badv[0] = poison;
        assert_eq!(
            h.push_token(&good, &good, &badv, &mut o2),
            Err(Error::NonFinite)
        );
        assert_eq!(o2, vec![9.0; dv]);
        assert_eq!(state_bits(&h), before);
    }
    // Features that would overflow f32: |k| = 1e13 at degree 3 gives 1e39.
    let huge = vec![1e13f32; d];
    assert_eq!(
        h.push_token(&good, &huge, &goodv, &mut o),
        Err(Error::Range)
    );
    assert_eq!(
        h.push_token(&huge, &good, &goodv, &mut o),
        Err(Error::Range)
    );
    assert_eq!(state_bits(&h), before);
    // A batch whose last token is bad absorbs nothing.
    let n = 4;
    let mut q = rng.vec(n * d, 1.0);
    let k = rng.vec(n * d, 1.0);
    let v = rng.vec(n * dv, 1.0);
    q[(n - 1) * d] = f32::NAN;
    let mut ob = vec![3.0f32; n * dv];
    assert_eq!(h.push_tokens(n, &q, &k, &v, &mut ob), Err(Error::NonFinite));
    assert_eq!(ob, vec![3.0; n * dv]);
    assert_eq!(state_bits(&h), before);
    // Wrong shapes.
    assert_eq!(
        h.push_token(&good[..d - 1], &good, &goodv, &mut o),
        Err(Error::InvalidArg)
    );
    assert_eq!(
        h.push_tokens(2, &q[..d], &k[..2 * d], &v[..2 * dv], &mut ob[..2 * dv]),
        Err(Error::InvalidArg)
    );
    assert_eq!(state_bits(&h), before);
}

#[test]
fn degenerate_normaliser_falls_back_to_mean() {
    // Degree 1: P(x) = 1 + x is negative for x < -1. All keys aligned against q.
    let (d, dv) = (2usize, 2usize);
    let mut c = cfg(d as u32, dv as u32, 1, Mode::NonCausal);
    c.scale = 1.0;
    let mut h = Sketch::new(&c).unwrap();
    h.append_kv(&[3.0, 0.0], &[1.0, 2.0]).unwrap();
    h.append_kv(&[3.0, 0.0], &[3.0, 6.0]).unwrap();
    let mut o = [0.0f32; 2];
    h.query(&[-1.0, 0.0], &mut o).unwrap(); // den = 2 * (1 - 3) = -4
    assert_eq!(h.fallbacks(), 1);
    assert_eq!(o, [2.0, 4.0]); // mean of v
                               // Cancellation to ~0: P = 1 + x with x = -1 exactly.
    h.query(&[-1.0 / 3.0, 0.0], &mut o).unwrap();
    assert!(o.iter().all(|x| x.is_finite()));
    assert_eq!(h.fallbacks(), 2);
    // A healthy query does not count.
    h.query(&[0.1, 0.0], &mut o).unwrap();
    assert_eq!(h.fallbacks(), 2);
    // Empty state: zeros, not a fallback.
    let e = Sketch::new(&c).unwrap();
    e.query(&[1.0, 1.0], &mut o).unwrap();
    assert_eq!(o, [0.0, 0.0]);
    assert_eq!(e.fallbacks(), 0);
}

#[test]
fn twins_are_bit_identical_and_memory_is_flat() {
    let mut rng = Rng(15);
    let (d, dv) = (16usize, 16usize);
    let c = cfg(16, 16, 2, Mode::Causal);
    let mut a = Sketch::new(&c).unwrap();
    let mut b = Sketch::new(&c).unwrap();
    let bytes0 = a.state_bytes();
    let mut oa = vec![0.0f32; dv];
    let mut ob = vec![0.0f32; dv];
    for _ in 0..500 {
        let (q, k, v) = (rng.vec(d, 1.0), rng.vec(d, 1.0), rng.vec(dv, 1.0));
        a.push_token(&q, &k, &v, &mut oa).unwrap();
        b.push_token(&q, &k, &v, &mut ob).unwrap();
        assert_eq!(bits(&oa), bits(&ob));
    }
    assert_eq!(a.state_bytes(), bytes0);
    let t = 153; // binom(18, 2)
    assert!(
        bytes0 >= t * (dv + 1) * 8,
        "state must hold the compensated M and z"
    );
}

#[test]
fn custom_polynomial_queries() {
    let mut rng = Rng(16);
    let (d, dv, n) = (4usize, 3usize, 40usize);
    let mut c = cfg(d as u32, dv as u32, 3, Mode::NonCausal);
    c.scale = 0.5;
    let mut h = Sketch::new(&c).unwrap();
    let (k, v) = (rng.vec(n * d, 1.0), rng.vec(n * dv, 1.0));
    for j in 0..n {
        h.append_kv(&k[j * d..][..d], &v[j * dv..][..dv]).unwrap();
    }
    let p = Polynomial::from_coeffs(&[2.0, 0.5, 0.25]).unwrap();
    let q = rng.vec(d, 1.0);
    let mut o = vec![0.0f32; dv];
    h.query_with(&q, &p, &mut o).unwrap();
    let (mut num, mut den) = (vec![0.0f64; dv], 0.0f64);
    for j in 0..n {
        let x: f64 = (0..d)
            .map(|c| q[c] as f64 * k[j * d + c] as f64)
            .sum::<f64>()
            * 0.5;
        let w = p.eval(x);
        den += w;
        for cc in 0..dv {
            num[cc] += w * v[j * dv + cc] as f64;
        }
    }
    let want: Vec<f64> = num.iter().map(|x| x / den).collect();
    assert!(reference::rel_err(&to64(&o), &want) < 1e-5);
    let too_high = Polynomial::taylor(4);
    assert_eq!(h.query_with(&q, &too_high, &mut o), Err(Error::InvalidArg));
}

#[test]
fn config_validation() {
    let ok = Config::new(64);
    assert!(ok.validate().is_ok());
    let mut c = ok.clone();
    c.head_dim = 0;
    assert_eq!(c.validate(), Err(Error::InvalidArg));
    let mut c = ok.clone();
    c.value_dim = 0;
    assert_eq!(c.validate(), Err(Error::InvalidArg));
    let mut c = ok.clone();
    c.degree = 6; // binom(70, 6) = 131M features: absurd
    assert_eq!(c.validate(), Err(Error::InvalidArg));
    for s in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let mut c = ok.clone();
        c.scale = s;
        assert_eq!(c.validate(), Err(Error::InvalidArg));
    }
    let mut c = ok.clone();
    c.degree = 3; // 47905 x 65 x 8 = 25 MB: fine
    assert!(c.validate().is_ok());
}

#[test]
fn bank_equals_one_sketch_per_kv_head() {
    use attnsketch::Bank;
    let mut rng = Rng(17);
    let (d, dv, nq, nkv, n) = (8usize, 6usize, 6usize, 2usize, 90usize);
    let c = cfg(d as u32, dv as u32, 2, Mode::Causal);
    let mut bank = Bank::new(&c, nq as u32, nkv as u32).unwrap();
    let mut singles: Vec<Sketch> = (0..nq).map(|_| Sketch::new(&c).unwrap()).collect();
    let (q, k, v) = (
        rng.vec(n * nq * d, 1.0),
        rng.vec(n * nkv * d, 1.0),
        rng.vec(n * nkv * dv, 1.0),
    );
    let mut out = vec![0.0f32; n * nq * dv];
    bank.push_tokens(n, &q, &k, &v, &mut out).unwrap();
    let g = nq / nkv;
    for j in 0..n {
        for hq in 0..nq {
            let hk = hq / g;
            let mut o = vec![0.0f32; dv];
            let qo = (j * nq + hq) * d;
            let ko = (j * nkv + hk) * d;
            let vo = (j * nkv + hk) * dv;
            singles[hq]
                .push_token(&q[qo..qo + d], &k[ko..ko + d], &v[vo..vo + dv], &mut o)
                .unwrap();
            let got = &out[(j * nq + hq) * dv..][..dv];
            let e = reference::rel_err(&to64(got), &to64(&o));
            assert!(e < 1e-6, "token {j} head {hq}: {e}");
        }
    }
    assert!(bank.state_bytes() >= nkv * singles[0].state_bytes());
    // Refusals: bad shapes, NaN anywhere -> nothing absorbed.
    let mut bad_k = k[..nkv * d].to_vec();
    bad_k[nkv * d - 1] = f32::NAN;
    let mut o = vec![1.5f32; nq * dv];
    assert_eq!(
        bank.push_token(&q[..nq * d], &bad_k, &v[..nkv * dv], &mut o),
        Err(Error::NonFinite)
    );
    assert_eq!(o, vec![1.5f32; nq * dv]);
    assert_eq!(bank.head(0).unwrap().token_count(), n as u64);
    assert_eq!(Bank::new(&c, 5, 2).err(), Some(Error::InvalidArg));
    let mut nc = c.clone();
    nc.mode = Mode::NonCausal;
    assert_eq!(Bank::new(&nc, 4, 2).err(), Some(Error::WrongMode));
}
