//! Property tests of the contract's invariants over many random cases:
//! 1. a refused call changes nothing (serialized state bit-identical, output
//!    untouched) and an accepted one writes only finite outputs, under random
//!    call sequences with NaN / Inf / huge / denormal values and bad shapes;
//! 2. merge behaves like concatenation (random configs, random k-way splits);
//! 3. round trips of random (also extreme but accepted) states are bit-exact.
mod common;
use attnsketch::{Config, Error, Mode, Sketch};
use common::Rng;

/// A float from a mix of ordinary, tiny, huge and non-finite values.
fn wild(r: &mut Rng) -> f32 {
    match r.next_u64() % 16 {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => -1e30,
        3 => f32::MAX,
        4 => 1e-40,
        5 => f32::MIN_POSITIVE,
        6 => 1e9 * r.uni(),
        7 => 1e4 * r.uni(),
        _ => r.uni(),
    }
}

/// Mostly ordinary values, sometimes one wild element.
fn vec(r: &mut Rng, n: usize) -> Vec<f32> {
    let mut v = r.vec(n, 1.0);
    if n > 0 && r.next_u64().is_multiple_of(4) {
        let i = (r.next_u64() % n as u64) as usize;
        v[i] = wild(r);
    }
    if r.next_u64().is_multiple_of(32) {
        v.pop(); // wrong shape
    }
    v
}

fn random_cfg(r: &mut Rng) -> Config {
    let mut c = Config::new(1 + (r.next_u64() % 6) as u32);
    c.value_dim = 1 + (r.next_u64() % 6) as u32;
    c.degree = (r.next_u64() % 4) as u32;
    c.seed = r.next_u64() % 3;
    c.mode = if r.next_u64().is_multiple_of(2) {
        Mode::Causal
    } else {
        Mode::NonCausal
    };
    c
}

#[test]
fn refused_calls_change_nothing_and_accepted_outputs_are_finite() {
    let mut r = Rng(0xC0FFEE);
    let (mut refused, mut accepted) = (0u32, 0u32);
    for _case in 0..300 {
        let c = random_cfg(&mut r);
        let (d, dv) = (c.head_dim as usize, c.value_dim as usize);
        let mut h = Sketch::new(&c).unwrap();
        for _ in 0..40 {
            let before = h.serialize().unwrap();
            let mut out = vec![7.25f32; dv];
            let op = r.next_u64() % 6;
            let res = match op {
                0 => h.push_token(&vec(&mut r, d), &vec(&mut r, d), &vec(&mut r, dv), &mut out),
                1 => {
                    let n = (r.next_u64() % 4) as usize;
                    let mut q = vec(&mut r, n * d);
                    q.resize(n * d, 0.5);
                    let k: Vec<f32> = (0..n * d)
                        .map(|_| {
                            if r.next_u64().is_multiple_of(50) {
                                wild(&mut r)
                            } else {
                                r.uni()
                            }
                        })
                        .collect();
                    let v = r.vec(n * dv, 2.0);
                    let mut o = vec![7.25f32; n * dv];
                    let res = h.push_tokens(n, &q, &k, &v, &mut o);
                    if res.is_err() {
                        assert!(o.iter().all(|&x| x == 7.25));
                    } else {
                        assert!(o.iter().all(|x| x.is_finite()));
                    }
                    res
                }
                2 => h.append_kv(&vec(&mut r, d), &vec(&mut r, dv)),
                3 => h.push_query(&vec(&mut r, d), &mut out),
                4 => {
                    let raw: Vec<u16> = (0..2 * d + dv).map(|_| r.next_u64() as u16).collect();
                    h.push_token_f16(&raw[..d], &raw[d..2 * d], &raw[2 * d..], &mut out)
                }
                _ => h.query(&vec(&mut r, d), &mut out),
            };
            match res {
                Ok(()) => {
                    accepted += 1;
                    if op != 1 && op != 2 {
                        assert!(out.iter().all(|x| x.is_finite()), "op {op}: {out:?}");
                    }
                }
                Err(e) => {
                    refused += 1;
                    assert_ne!(e, Error::Internal);
                    assert!(out.iter().all(|&x| x == 7.25), "op {op} wrote on {e:?}");
                    assert_eq!(
                        h.serialize().unwrap(),
                        before,
                        "op {op} {e:?} changed the state"
                    );
                }
            }
        }
    }
    // Both branches were exercised many times.
    assert!(
        refused > 1000 && accepted > 1000,
        "{refused} refused, {accepted} accepted"
    );
}

fn feed(h: &mut Sketch, toks: &[(Vec<f32>, Vec<f32>, Vec<f32>)]) {
    let mut o = vec![0.0f32; h.config().value_dim as usize];
    for (q, k, v) in toks {
        match h.config().mode {
            Mode::Causal => h.push_token(q, k, v, &mut o).unwrap(),
            Mode::NonCausal => h.append_kv(k, v).unwrap(),
        }
    }
}

#[test]
fn merge_behaves_like_concatenation() {
    let mut r = Rng(77);
    for _case in 0..120 {
        let c = random_cfg(&mut r);
        let (d, dv) = (c.head_dim as usize, c.value_dim as usize);
        let n = (r.next_u64() % 400) as usize;
        let scale = [1.0f32, 0.1, 3.0][(r.next_u64() % 3) as usize];
        let toks: Vec<_> = (0..n)
            .map(|_| (r.vec(d, 1.0), r.vec(d, scale), r.vec(dv, 2.0)))
            .collect();
        let mut whole = Sketch::new(&c).unwrap();
        feed(&mut whole, &toks);
        // Random k-way split, merged left to right.
        let mut cuts: Vec<usize> = (0..(r.next_u64() % 5))
            .map(|_| (r.next_u64() % (n as u64 + 1)) as usize)
            .collect();
        cuts.push(0);
        cuts.push(n);
        cuts.sort();
        let mut acc = Sketch::new(&c).unwrap();
        for w in cuts.windows(2) {
            let mut p = Sketch::new(&c).unwrap();
            feed(&mut p, &toks[w[0]..w[1]]);
            acc.merge(&p).unwrap();
        }
        assert_eq!(acc.token_count(), n as u64);
        // Tolerance: 1e-6 of the sum of |increments| per element (the
        // streaming error bound), checked elementwise.
        let mut mabs = vec![0.0f64; whole.state().m_f64().len()];
        let mut zabs = vec![0.0f64; whole.state().z_f64().len()];
        let probe = attnsketch::FeatureMap::new(d, c.degree as usize).unwrap();
        let mut phi = vec![0.0f32; probe.len()];
        for (_, k, v) in &toks {
            attnsketch::kernels::portable::expand(&probe, k, &mut phi);
            for (a, &p) in phi.iter().enumerate() {
                zabs[a] += (p as f64).abs();
                for (cc, &vv) in v.iter().enumerate() {
                    mabs[a * dv + cc] += (p as f64 * vv as f64).abs();
                }
            }
        }
        let check = |x: Vec<f64>, y: Vec<f64>, s: &[f64]| {
            for ((a, b), w) in x.iter().zip(&y).zip(s) {
                assert!(
                    (a - b).abs() <= 1e-6 * w + 1e-30,
                    "{a} vs {b} (scale {w}) {c:?}"
                );
            }
        };
        check(acc.state().m_f64(), whole.state().m_f64(), &mabs);
        check(acc.state().z_f64(), whole.state().z_f64(), &zabs);
    }
}

#[test]
fn round_trips_of_random_states_are_bit_exact() {
    let mut r = Rng(5150);
    for _case in 0..200 {
        let c = random_cfg(&mut r);
        let (d, dv) = (c.head_dim as usize, c.value_dim as usize);
        let mut h = Sketch::new(&c).unwrap();
        let n = (r.next_u64() % 150) as usize;
        let mut o = vec![0.0f32; dv];
        for _ in 0..n {
            // Large keys sometimes: accepted until the range limit, then refused.
            let ks = if r.next_u64().is_multiple_of(8) {
                1e6
            } else {
                1.0
            };
            let (q, k, v) = (r.vec(d, 1.0), r.vec(d, ks), r.vec(dv, 1.0));
            let _ = match c.mode {
                Mode::Causal => h.push_token(&q, &k, &v, &mut o),
                Mode::NonCausal => h.append_kv(&k, &v).and_then(|_| h.push_query(&q, &mut o)),
            };
        }
        let b = h.serialize().unwrap();
        let h2 = Sketch::deserialize(&b).unwrap();
        assert_eq!(h2.serialize().unwrap(), b);
    }
}
