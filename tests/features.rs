//! Feature expansion against the f64 reference, and the kernel identity
//! `<phi_q(q), phi_k(k)> = P(s q.k)`.
#![allow(clippy::needless_range_loop)]
mod common;
use attnsketch::kernels::Kernels;
use attnsketch::{reference, FeatureMap, Level, Polynomial};
use common::*;

#[test]
fn monomials_match_reference_order() {
    let mut rng = Rng(1);
    for &d in &[1usize, 2, 3, 7, 16] {
        for g in 0..=3usize {
            let map = FeatureMap::new(d, g).unwrap();
            let x = rng.vec(d, 1.5);
            let want = reference::phi_k(&to64(&x), g);
            assert_eq!(want.len(), map.len());
            let mult_ref: Vec<f64> = reference::monomials(d, g)
                .iter()
                .map(|m| reference::multinomial(m))
                .collect();
            for &level in Level::ALL.iter().filter(|l| l.supported()) {
                let k = Kernels::for_level(level).unwrap();
                let mut out = vec![0.0f32; map.len()];
                (k.expand)(&map, &x, &mut out);
                for (i, (&a, &b)) in out.iter().zip(&want).enumerate() {
                    // Each monomial is a product of <= g roundings: |rel err| <= g * 2^-24.
                    assert!(
                        (a as f64 - b).abs() <= (g as f64 + 1.0) * 6e-8 * b.abs() + 1e-30,
                        "{level:?} d={d} g={g} i={i}: {a} vs {b}"
                    );
                }
                for (&m, &r) in map.mult().iter().zip(&mult_ref) {
                    assert_eq!(m as f64, r);
                }
            }
        }
    }
}

/// `<phi_q(q), phi_k(k)> = P(s q.k)` for d in {1,2,3,7,16,64}, g in 0..=4.
#[test]
fn kernel_identity() {
    let mut rng = Rng(7);
    for &d in &[1usize, 2, 3, 7, 16, 64] {
        for g in 0..=4usize {
            let map = FeatureMap::new(d, g).unwrap();
            let k = Kernels::detect();
            let s = 1.0 / (d as f32).sqrt();
            // Taylor and an arbitrary polynomial with negative coefficients.
            let arb: Vec<f64> = (0..=g).map(|l| 0.3 - 0.25 * l as f64).collect();
            for poly in [
                Polynomial::taylor(g),
                Polynomial::from_coeffs(&arb).unwrap(),
            ] {
                for _ in 0..3 {
                    let q = rng.vec(d, 1.0);
                    let kk = rng.vec(d, 1.0);
                    let mut pk = vec![0.0f32; map.len()];
                    let mut pq = vec![0.0f32; map.len()];
                    (k.expand)(&map, &kk, &mut pk);
                    let sq: Vec<f32> = q.iter().map(|&x| x * s).collect();
                    (k.expand)(&map, &sq, &mut pq);
                    let mut alphas = vec![0.0f32; g + 1];
                    poly.alphas(g, &mut alphas);
                    for l in 0..=g {
                        let r = map.block(l);
                        (k.weight)(&mut pq[r.clone()], &map.mult()[r], alphas[l]);
                    }
                    let got: f64 = pq.iter().zip(&pk).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let mag: f64 = pq
                        .iter()
                        .zip(&pk)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let x: f64 = q
                        .iter()
                        .zip(&kk)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        * s as f64;
                    let want = poly.eval(x);
                    assert!(
                        (got - want).abs() <= 1e-6 * mag.max(1.0),
                        "d={d} g={g}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
