//! Streams the real heads of `../shared/data` through the library. The
//! pass bar is agreement with an independent f64 polynomial-attention
//! reference on real data (the implementation is right); the error against
//! exact softmax is printed as a figure for the README (the method's limit).
//! Set ATTNSKETCH_DATA to use another directory; CI sets
//! ATTNSKETCH_REQUIRE_DATA=1 so a missing directory fails instead of skipping.

use attnsketch::{Config, Polynomial, Sketch};
use std::path::PathBuf;

fn read(path: &PathBuf) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn real_heads_match_polynomial_reference() {
    let dir = std::env::var_os("ATTNSKETCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if !dir.join("L00H1.json").exists() {
        assert!(
            std::env::var_os("ATTNSKETCH_REQUIRE_DATA").is_none(),
            "no real heads in {}",
            dir.display()
        );
        eprintln!("skipping: no real heads in {}", dir.display());
        return;
    }
    for name in ["L00H1", "L07H4", "L15H8", "L26H6"] {
        let (d, n) = (64usize, 8192usize);
        let q = read(&dir.join(format!("{name}_q.f32")));
        let k = read(&dir.join(format!("{name}_k.f32")));
        let v = read(&dir.join(format!("{name}_v.f32")));
        let o = read(&dir.join(format!("{name}_o.f32")));
        assert_eq!(q.len(), n * d);
        let c = Config::new(64);
        let mut h = Sketch::new(&c).unwrap();
        let mut out = vec![0.0f32; n * d];
        h.push_tokens(n, &q, &k, &v, &mut out).unwrap();
        assert!(out.iter().all(|x| x.is_finite()));
        let p = Polynomial::taylor(2);
        let (mut e_ref, mut n_ref, mut e_soft, mut n_soft) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for j in (n / 2..n).step_by(n / 64) {
            let mut num = vec![0.0f64; d];
            let mut den = 0.0f64;
            for i in 0..=j {
                let x: f64 = (0..d)
                    .map(|c| q[j * d + c] as f64 * k[i * d + c] as f64)
                    .sum::<f64>()
                    * 0.125;
                let w = p.eval(x);
                den += w;
                for cc in 0..d {
                    num[cc] += w * v[i * d + cc] as f64;
                }
            }
            for cc in 0..d {
                let (got, want, exact) =
                    (out[j * d + cc] as f64, num[cc] / den, o[j * d + cc] as f64);
                e_ref += (got - want).powi(2);
                n_ref += want * want;
                e_soft += (got - exact).powi(2);
                n_soft += exact * exact;
            }
        }
        let (r_ref, r_soft) = ((e_ref / n_ref).sqrt(), (e_soft / n_soft).sqrt());
        println!("{name}: vs f64 Taylor-2 reference {r_ref:.2e}; vs exact softmax {r_soft:.3} (fallbacks {})", h.fallbacks());
        assert!(
            r_ref < 1e-4,
            "{name}: implementation differs from its f64 reference by {r_ref}"
        );
    }
}
