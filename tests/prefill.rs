//! Batched prefill (`push_tokens`, bank `push_tokens`) in block form against
//! single-token pushes and an f64 reference, at every CPU level the machine
//! has: the contract's shape (d = dv = 64, g = 2), odd shapes that hit every
//! tile remainder, blocks that straddle flush boundaries, GQA banks, and the
//! normaliser fallback inside a block.
//!
//! Tolerance: outputs agree with single pushes within `1e-5 max(1, |out|_max)`
//! (both are f32 sums of the same terms in another order, each within a few
//! ulps of the value times the condition `sum |terms| / |sum|`, which is 1 for
//! positive weights and small here).

mod common;
use attnsketch::{reference, Bank, Config, Level, Polynomial, Sketch};
use common::*;

fn levels() -> Vec<Level> {
    Level::ALL
        .iter()
        .copied()
        .filter(|l| l.supported())
        .collect()
}

fn cfg(d: u32, dv: u32, g: u32) -> Config {
    let mut c = Config::new(d);
    c.value_dim = dv;
    c.degree = g;
    c
}

fn close(a: &[f32], b: &[f32], what: &str) {
    let scale = a.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= 1e-5 * scale, "{what} [{i}]: {x} vs {y}");
    }
}

/// Per-token outputs of `n` tokens on a fresh handle.
fn per_token(
    h: &mut Sketch,
    n: usize,
    d: usize,
    dv: usize,
    q: &[f32],
    k: &[f32],
    v: &[f32],
) -> Vec<f32> {
    let mut out = vec![0.0f32; n * dv];
    for j in 0..n {
        h.push_token(
            &q[j * d..][..d],
            &k[j * d..][..d],
            &v[j * dv..][..dv],
            &mut out[j * dv..][..dv],
        )
        .unwrap();
    }
    out
}

#[test]
fn block_prefill_matches_single_pushes_every_level_and_shape() {
    let mut rng = Rng(5);
    // (d, dv, g, n, batch lengths)
    let shapes: &[(usize, usize, u32, usize, &[usize])] = &[
        (64, 64, 2, 300, &[300]),
        (64, 64, 2, 300, &[1, 62, 1, 64, 65, 107]),
        (7, 9, 3, 200, &[13, 50, 137]),
        (5, 17, 2, 130, &[2, 3, 125]),
        (3, 1, 4, 90, &[90]),
        (1, 33, 1, 70, &[70]),
    ];
    for &(d, dv, g, n, batches) in shapes {
        assert_eq!(batches.iter().sum::<usize>(), n);
        let c = cfg(d as u32, dv as u32, g);
        let amp = 1.2 / (d as f32).sqrt().sqrt();
        let (q, k, v) = (
            rng.vec(n * d, amp),
            rng.vec(n * d, amp),
            rng.vec(n * dv, 1.0),
        );
        for lv in levels() {
            let mut a = Sketch::with_level(&c, lv).unwrap();
            let want = per_token(&mut a, n, d, dv, &q, &k, &v);
            let mut b = Sketch::with_level(&c, lv).unwrap();
            let mut got = vec![0.0f32; n * dv];
            let mut j = 0;
            for &len in batches {
                b.push_tokens(
                    len,
                    &q[j * d..(j + len) * d],
                    &k[j * d..(j + len) * d],
                    &v[j * dv..(j + len) * dv],
                    &mut got[j * dv..(j + len) * dv],
                )
                .unwrap();
                j += len;
            }
            close(&want, &got, &format!("{lv:?} d={d} dv={dv} g={g}"));
            // And against the f64 polynomial reference.
            let p = Polynomial::taylor(g as usize);
            let r = reference::poly_attention_causal(
                &to64(&q),
                &to64(&k),
                &to64(&v),
                d,
                dv,
                p.coeffs(),
                c.scale as f64,
            );
            let e = reference::rel_err(&to64(&got), &r);
            assert!(e < 2e-5, "{lv:?} d={d} dv={dv} g={g}: rel err {e}");
            assert_eq!(a.fallbacks(), b.fallbacks());
            // Same state: the next single push agrees.
            let (mut oa, mut ob) = (vec![0.0f32; dv], vec![0.0f32; dv]);
            a.push_token(&q[..d], &k[..d], &v[..dv], &mut oa).unwrap();
            b.push_token(&q[..d], &k[..d], &v[..dv], &mut ob).unwrap();
            close(&oa, &ob, "next token");
        }
    }
}

/// Degree 1 (`P(x) = 1 + x`) with strongly negative scores: the normaliser
/// goes non-positive and the output falls back to the mean of the values
/// over tokens `0..=j`, inside a block exactly as token by token.
#[test]
fn block_fallback_equals_single_push_fallback() {
    let (d, dv, n) = (4usize, 3usize, 120usize);
    let mut c = cfg(d as u32, dv as u32, 1);
    c.scale = 1.0;
    let mut rng = Rng(8);
    let q: Vec<f32> = (0..n * d).map(|_| 2.0).collect();
    let k: Vec<f32> = (0..n * d)
        .map(|i| if i % 7 == 0 { 0.1 } else { -1.5 })
        .collect();
    let v = rng.vec(n * dv, 1.0);
    let mut a = Sketch::new(&c).unwrap();
    let want = per_token(&mut a, n, d, dv, &q, &k, &v);
    assert!(
        a.fallbacks() > 10,
        "the test needs fallbacks, got {}",
        a.fallbacks()
    );
    let mut b = Sketch::new(&c).unwrap();
    let mut got = vec![0.0f32; n * dv];
    b.push_tokens(n, &q, &k, &v, &mut got).unwrap();
    assert_eq!(a.fallbacks(), b.fallbacks());
    close(&want, &got, "fallback");
    // The fallback is the running mean of the values.
    let j = n - 1;
    for col in 0..dv {
        let mean = (0..=j).map(|i| v[i * dv + col] as f64).sum::<f64>() / (j + 1) as f64;
        assert!((got[j * dv + col] as f64 - mean).abs() < 1e-5);
    }
}

#[test]
fn bank_prefill_matches_single_handles() {
    let (d, dv, nq, nkv, n) = (64usize, 64usize, 9usize, 3usize, 150usize);
    let c = cfg(d as u32, dv as u32, 2);
    let mut rng = Rng(31);
    let amp = 0.4;
    let (q, k, v) = (
        rng.vec(n * nq * d, amp),
        rng.vec(n * nkv * d, amp),
        rng.vec(n * nkv * dv, 1.0),
    );
    // The bank and the singles use the detected level (scripts/test-levels.sh
    // runs this file under every level cap).
    {
        let mut bank = Bank::new(&c, nq as u32, nkv as u32).unwrap();
        let mut out = vec![0.0f32; n * nq * dv];
        bank.push_tokens(
            40,
            &q[..40 * nq * d],
            &k[..40 * nkv * d],
            &v[..40 * nkv * dv],
            &mut out[..40 * nq * dv],
        )
        .unwrap();
        bank.push_tokens(
            n - 40,
            &q[40 * nq * d..],
            &k[40 * nkv * d..],
            &v[40 * nkv * dv..],
            &mut out[40 * nq * dv..],
        )
        .unwrap();
        let g = nq / nkv;
        let mut singles: Vec<Sketch> = (0..nq).map(|_| Sketch::new(&c).unwrap()).collect();
        let mut want = vec![0.0f32; n * nq * dv];
        for j in 0..n {
            for (hq, s) in singles.iter_mut().enumerate() {
                let hk = hq / g;
                let (qo, ko, vo) = ((j * nq + hq) * d, (j * nkv + hk) * d, (j * nkv + hk) * dv);
                s.push_token(
                    &q[qo..qo + d],
                    &k[ko..ko + d],
                    &v[vo..vo + dv],
                    &mut want[(j * nq + hq) * dv..][..dv],
                )
                .unwrap();
            }
        }
        close(&want, &out, "bank vs singles");
    }
}

/// Worker threads split the kv heads; outputs and states are bit-identical
/// for every thread count, including more threads than heads.
#[test]
fn bank_threads_give_identical_results() {
    let (d, dv, nq, nkv, n) = (16usize, 8usize, 8usize, 4usize, 200usize);
    let c = cfg(d as u32, dv as u32, 2);
    let mut rng = Rng(77);
    let (q, k, v) = (
        rng.vec(n * nq * d, 0.6),
        rng.vec(n * nkv * d, 0.6),
        rng.vec(n * nkv * dv, 1.0),
    );
    let run = |threads: u32| {
        let mut b = Bank::new(&c, nq as u32, nkv as u32).unwrap();
        b.set_threads(threads).unwrap();
        let mut out = vec![0.0f32; n * nq * dv];
        b.push_tokens(
            77,
            &q[..77 * nq * d],
            &k[..77 * nkv * d],
            &v[..77 * nkv * dv],
            &mut out[..77 * nq * dv],
        )
        .unwrap();
        b.push_tokens(
            n - 77,
            &q[77 * nq * d..],
            &k[77 * nkv * d..],
            &v[77 * nkv * dv..],
            &mut out[77 * nq * dv..],
        )
        .unwrap();
        let states: Vec<Vec<u64>> = (0..nkv)
            .map(|h| {
                b.head(h)
                    .unwrap()
                    .state()
                    .m_f64()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            })
            .collect();
        (bits(&out), states)
    };
    let one = run(1);
    for t in [2, 3, 4, 9] {
        assert_eq!(run(t), one, "{t} threads");
    }
    let mut b = Bank::new(&c, nq as u32, nkv as u32).unwrap();
    assert_eq!(b.set_threads(0), Err(attnsketch::Error::InvalidArg));
    assert_eq!(b.set_threads(257), Err(attnsketch::Error::InvalidArg));
    assert_eq!(b.threads(), 1);
    // A refused batch with threads on changes nothing.
    b.set_threads(2).unwrap();
    let mut bad = v[..4 * nkv * dv].to_vec();
    bad[3 * nkv * dv + 1] = f32::INFINITY;
    let mut o = vec![7.0f32; 4 * nq * dv];
    assert_eq!(
        b.push_tokens(4, &q[..4 * nq * d], &k[..4 * nkv * d], &bad, &mut o),
        Err(attnsketch::Error::NonFinite)
    );
    assert!(o.iter().all(|&x| x == 7.0));
    assert_eq!(b.head(0).unwrap().token_count(), 0);
}
