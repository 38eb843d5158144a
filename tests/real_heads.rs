//! Real attention heads through the library: the repository's fixture
//! (`tests/fixtures/smollm2-2048`, always) and the cached "given" set
//! (`bash scripts/data.sh given`, 8192 tokens; skipped with one line when it
//! is missing, required when ATTNSKETCH_REQUIRE_DATA is set, as
//! `scripts/test.sh` and CI do; ATTNSKETCH_DATA=DIR points at another copy).
//!
//! Pass bars are agreement with independent f64 references on real data
//! (the implementation is right); the error against exact softmax is only
//! printed (the method's limit, measured by the eval tool).

#[path = "../examples/common/heads.rs"]
mod heads;

use attnsketch::{Config, Polynomial, Sketch};
use heads::{fixture_dir, how_to_get, read_heads, set_dir, set_ready, Head};

fn rel(e: f64, n: f64) -> f64 {
    (e / n).sqrt()
}

/// The plain degree-2 sketch over every token against the f64 Taylor-2
/// attention `sum_i P(s q.k_i) v_i / sum_i P(s q.k_i)` on 64 rows of the
/// second half.
fn check_polynomial(h: &Head) {
    let (n, d) = (h.n, h.d);
    let mut c = Config::new(d as u32);
    c.scale = h.scale;
    let mut sk = Sketch::new(&c).unwrap();
    let mut out = vec![0.0f32; n * d];
    sk.push_tokens(n, &h.q, &h.k, &h.v, &mut out).unwrap();
    assert!(out.iter().all(|x| x.is_finite()));
    let p = Polynomial::taylor(2);
    let (mut e_ref, mut n_ref, mut e_soft, mut n_soft) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for j in (n / 2..n).step_by(n / 128) {
        let mut num = vec![0.0f64; d];
        let mut den = 0.0f64;
        for i in 0..=j {
            let x: f64 = (0..d)
                .map(|c| h.q[j * d + c] as f64 * h.k[i * d + c] as f64)
                .sum::<f64>()
                * h.scale as f64;
            let w = p.eval(x);
            den += w;
            for (a, &b) in num.iter_mut().zip(&h.v[i * d..(i + 1) * d]) {
                *a += w * b as f64;
            }
        }
        for cc in 0..d {
            let (got, want, exact) = (
                out[j * d + cc] as f64,
                num[cc] / den,
                h.o[j * d + cc] as f64,
            );
            e_ref += (got - want).powi(2);
            n_ref += want * want;
            e_soft += (got - exact).powi(2);
            n_soft += exact * exact;
        }
    }
    let (r_ref, r_soft) = (rel(e_ref, n_ref), rel(e_soft, n_soft));
    println!(
        "{} (n = {n}): vs f64 Taylor-2 reference {r_ref:.2e}; vs exact softmax {r_soft:.3} (fallbacks {})",
        h.name,
        sk.fallbacks()
    );
    assert!(
        r_ref < 1e-4,
        "{}: implementation differs from its f64 reference by {r_ref}",
        h.name
    );
}

fn fixture() -> Vec<Head> {
    let heads = read_heads(&fixture_dir()).expect("the fixture is part of the repository");
    assert_eq!(heads.len(), 4, "fixture heads");
    for h in &heads {
        assert_eq!((h.n, h.d), (2048, 64), "{}", h.name);
    }
    heads
}

/// The given set, or None (one line on stderr) when it is not built and not required.
fn given() -> Option<Vec<Head>> {
    let dir = set_dir("given");
    if !set_ready(&dir) {
        assert!(
            std::env::var_os("ATTNSKETCH_REQUIRE_DATA").is_none_or(|v| v.is_empty()),
            "ATTNSKETCH_REQUIRE_DATA is set and {}",
            how_to_get("given")
        );
        eprintln!("skipping: {}", how_to_get("given"));
        return None;
    }
    let heads = read_heads(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert_eq!(heads.len(), 4, "heads in {}", dir.display());
    Some(heads)
}

#[test]
fn fixture_matches_polynomial_reference() {
    for h in &fixture() {
        check_polynomial(h);
    }
}

/// With every token of the stream in an exact f32 slot (the preset with f32
/// keys and values at a budget above the stream), the hybrid must be exact
/// softmax attention up to f32 rounding on real heads, scores up to 37.
#[test]
fn fixture_hybrid_holding_every_token_is_exact() {
    for h in &fixture() {
        let mut c = Config::new(h.d as u32);
        c.scale = h.scale;
        c.for_budget_formats(3 << 20, 0, 0).unwrap();
        assert!(c.exact_slots() as usize >= h.n, "{} slots", c.exact_slots());
        let mut sk = Sketch::new(&c).unwrap();
        let mut out = vec![0.0f32; h.n * h.d];
        sk.push_tokens(h.n, &h.q, &h.k, &h.v, &mut out).unwrap();
        let (mut e, mut nn) = (0.0f64, 0.0f64);
        for (a, b) in out.iter().zip(&h.o) {
            e += (*a as f64 - *b as f64).powi(2);
            nn += (*b as f64).powi(2);
        }
        let r = rel(e, nn);
        println!(
            "{}: hybrid holding all {} tokens vs exact {r:.2e}",
            h.name, h.n
        );
        assert!(r < 1e-5, "{}: {r}", h.name);
    }
}

#[test]
fn given_set_matches_polynomial_reference() {
    if let Some(heads) = given() {
        for h in &heads {
            assert_eq!((h.n, h.d), (8192, 64), "{}", h.name);
            check_polynomial(h);
        }
    }
}

/// The fixture is the given set's first 2048 rows rounded to binary16 (its
/// provenance, `scripts/data.sh fixture`): each value within one binary16
/// step of the set's (a rebuilt set differs from the one the fixture was cut
/// from by ~1e-6 relative, which may move a rounding by one step).
#[test]
fn fixture_is_the_rounded_prefix_of_the_given_set() {
    let Some(full) = given() else {
        return;
    };
    for (f, g) in fixture().iter().zip(&full) {
        assert_eq!(f.name, g.name);
        for (a, b) in [(&f.q, &g.q), (&f.k, &g.k), (&f.v, &g.v)] {
            for (i, (&x, &y)) in a.iter().zip(&b[..f.n * f.d]).enumerate() {
                let tol = y.abs() * (1.0 / 1024.0) + 1.0 / (1u32 << 24) as f32;
                assert!(
                    (x - y).abs() <= tol,
                    "{} element {i}: fixture {x} vs set {y}",
                    f.name
                );
            }
        }
    }
}
