//! The exact decode baseline at every level against an f64 softmax
//! reference: `|o - o_ref| <= 1e-5 max_j |v_j|_inf` (f32 sums over n terms
//! and an exp with relative error < 3e-7).
mod common;
use attnsketch::baseline::ExactDecoder;
use attnsketch::Level;
use common::*;

fn reference(q: &[f32], k: &[f32], v: &[f32], scale: f64, dv: usize) -> Vec<f64> {
    let d = q.len();
    let n = k.len() / d;
    let s: Vec<f64> = (0..n)
        .map(|j| {
            scale
                * (0..d)
                    .map(|c| q[c] as f64 * k[j * d + c] as f64)
                    .sum::<f64>()
        })
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
    let den: f64 = w.iter().sum();
    let mut o = vec![0.0; dv];
    for j in 0..n {
        for c in 0..dv {
            o[c] += w[j] * v[j * dv + c] as f64 / den;
        }
    }
    o
}

#[test]
fn exact_decode_matches_reference_every_level() {
    let mut rng = Rng(5);
    let mut ran = 0;
    for &lv in Level::ALL {
        let dec = match ExactDecoder::new(lv) {
            Ok(x) => x,
            Err(_) => {
                assert!(!lv.supported());
                eprintln!("{}: not supported, skipped", lv.name());
                continue;
            }
        };
        ran += 1;
        for &(d, dv) in &[
            (1usize, 1usize),
            (3, 5),
            (8, 8),
            (15, 17),
            (16, 16),
            (31, 33),
            (64, 64),
            (65, 130),
        ] {
            for &n in &[0usize, 1, 3, 4, 5, 63, 64, 65, 129, 700] {
                let q = rng.vec(d, 2.0);
                let k = rng.vec(n * d, 2.0);
                let v = rng.vec(n * dv, 1.0);
                let mut out = vec![f32::NAN; dv];
                dec.decode(&q, &k, &v, 1.0, &mut out).unwrap();
                if n == 0 {
                    assert!(out.iter().all(|&x| x == 0.0));
                    continue;
                }
                let want = reference(&q, &k, &v, 1.0, dv);
                for c in 0..dv {
                    assert!(
                        (out[c] as f64 - want[c]).abs() <= 1e-5,
                        "{lv:?} d={d} dv={dv} n={n} c={c}: {} vs {}",
                        out[c],
                        want[c]
                    );
                }
            }
        }
        // Growing scores: the running max must rescale earlier blocks.
        let (d, dv, n) = (4usize, 3usize, 300usize);
        let q = vec![1.0f32; d];
        let k: Vec<f32> = (0..n * d).map(|i| (i / d) as f32 * 0.05).collect();
        let v = rng.vec(n * dv, 1.0);
        let mut out = vec![0.0; dv];
        dec.decode(&q, &k, &v, 1.0, &mut out).unwrap();
        let want = reference(&q, &k, &v, 1.0, dv);
        for c in 0..dv {
            assert!(
                (out[c] as f64 - want[c]).abs() <= 1e-5,
                "{lv:?} growing: {} vs {}",
                out[c],
                want[c]
            );
        }
        assert!(dec.decode(&q, &k[..5], &v, 1.0, &mut out).is_err());
    }
    assert!(ran >= 1);
}
