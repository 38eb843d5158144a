//! Every kernel of every supported level against the portable kernels and
//! an f64 reference, for d and dv in 1..=130 (every lane remainder of 8 and
//! 16 lanes, and more than one 64/128-column block).
//!
//! Tolerances (u = 2^-24, the f32 unit roundoff):
//! - elementwise products, TwoSum, max_abs, conversions: bitwise equal to
//!   portable (same single rounding per element; TwoSum is exact);
//! - `d += a v`: `|err| <= 2u (|d| + |a v|)` (one FMA, or mul + add);
//! - sums over `n` terms (acc, den, mag): `|err| <= (n + 2) 2u sum |terms|`.
//!
//! Levels the CPU lacks are listed on stderr and skipped; `Kernels::for_level`
//! must refuse them (checked below), so a skip cannot hide a missing level.

mod common;
use attnsketch::kernels::{portable, Kernels};
use attnsketch::{reference, Config, FeatureMap, Level, Sketch};
use common::kernel_levels as levels;
use common::*;

const U: f64 = 1.0 / 16_777_216.0;

#[test]
fn detect_honours_env_cap() {
    let best = Level::best();
    assert!(best.supported());
    if let Some(cap) = std::env::var("ATTNSKETCH_CPU")
        .ok()
        .and_then(|s| Level::from_name(&s))
    {
        assert_eq!(Level::detect(), cap.min(best));
    } else {
        assert_eq!(Level::detect(), best);
    }
    eprintln!(
        "best level {}, detected {}",
        best.name(),
        Level::detect().name()
    );
}

#[test]
fn expand_and_weight_match_portable_bitwise() {
    let mut rng = Rng(11);
    for d in 1..=130usize {
        let g = if d <= 40 { 3 } else { 2 };
        let map = FeatureMap::new(d, g).unwrap();
        let x = rng.vec(d, 1.3);
        let mut want = vec![0.0f32; map.len()];
        portable::expand(&map, &x, &mut want);
        let w = rng.vec(map.len(), 2.0);
        let mut want_w = want.clone();
        portable::weight(&mut want_w, &w, 0.37);
        let ref64 = reference::phi_k(&to64(&x), g);
        for k in levels() {
            let mut out = vec![f32::NAN; map.len() + 3];
            (k.expand)(&map, &x, &mut out);
            assert_eq!(bits(&out[..map.len()]), bits(&want), "{:?} d={d}", k.level);
            assert!(out[map.len()..].iter().all(|v| v.is_nan()), "wrote past t");
            for (i, (&a, &b)) in out.iter().zip(&ref64).enumerate() {
                let tol = (g as f64 + 1.0) * U * b.abs() + 1e-30;
                assert!((a as f64 - b).abs() <= tol, "{:?} d={d} i={i}", k.level);
            }
            let mut ww = want.clone();
            (k.weight)(&mut ww, &w, 0.37);
            assert_eq!(bits(&ww), bits(&want_w), "{:?} weight d={d}", k.level);
        }
    }
}

fn check_acc(level: Level, what: &str, got: &[f32], want: &[f64], mag: &[f64], t: usize) {
    for (c, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        let tol = (t as f64 + 3.0) * 2.0 * U * m + 1e-35;
        assert!(
            (g as f64 - w).abs() <= tol,
            "{level:?} {what} dv={} c={c}: {g} vs {w} (tol {tol})",
            got.len()
        );
    }
}

/// `acc += sum_i phiq_i s_i` (the read of a push) against f64, every width
/// 1..=130 (all lane remainders and more than one column block), every level.
#[test]
fn query_s_matches_reference_all_widths() {
    let mut rng = Rng(22);
    for dv in 1..=130usize {
        for &t in &[1usize, 5, 33] {
            let s = rng.vec(t * dv, 4.0);
            let b = rng.vec(t, 1.0);
            let acc0 = rng.vec(dv, 0.5);
            let mut want = to64(&acc0);
            let mut mag: Vec<f64> = acc0.iter().map(|x| x.abs() as f64).collect();
            for i in 0..t {
                for c in 0..dv {
                    let x = b[i] as f64 * s[i * dv + c] as f64;
                    want[c] += x;
                    mag[c] += x.abs();
                }
            }
            let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
            all.extend(levels());
            let mut port = None;
            for k in all {
                let mut acc = acc0.clone();
                (k.query_s)(&s, &b, &mut acc);
                check_acc(k.level, "query_s", &acc, &want, &mag, t);
                match &port {
                    None => port = Some(acc.clone()),
                    Some(p) => check_acc(k.level, "vs portable", &acc, &to64(p), &mag, 2 * t),
                }
            }
        }
    }
}

/// `(den, mag)` of `query_zs` and `zd += phik` of `absorb_z` against f64 /
/// portable for every length 0..=300.
#[test]
fn z_kernels_match_reference_all_lengths() {
    let mut rng = Rng(33);
    for n in 0..=300usize {
        let zs = rng.vec(n, 50.0);
        let zd0 = rng.vec(n, 1e-2);
        let phik = rng.vec(n, 1.0);
        let phiq = rng.vec(n, 1.0);
        let (mut den_q, mut mag_q) = (0.0, 0.0);
        for i in 0..n {
            let tq = phiq[i] as f64 * zs[i] as f64;
            den_q += tq;
            mag_q += tq.abs();
        }
        let tol = (n as f64 + 3.0) * 2.0 * U * mag_q + 1e-35;
        let mut zd_p = zd0.clone();
        portable::absorb_z(&mut zd_p, &phik);
        let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
        all.extend(levels());
        for k in all {
            let mut zd2 = zd0.clone();
            (k.absorb_z)(&mut zd2, &phik);
            assert_eq!(bits(&zd2), bits(&zd_p), "{:?} n={n} absorb_z", k.level);
            let (den, mag) = (k.query_zs)(&zs, &phiq);
            assert!((den as f64 - den_q).abs() <= tol, "{:?} n={n} den", k.level);
            assert!((mag as f64 - mag_q).abs() <= tol, "{:?} n={n} mag", k.level);
        }
    }
}

#[test]
fn flush_is_exact_and_bitwise_portable() {
    let mut rng = Rng(44);
    for n in 0..=200usize {
        let s0: Vec<f32> = (0..n).map(|_| rng.uni() * 1e6).collect();
        let d0: Vec<f32> = (0..n).map(|_| rng.uni() * 3.0).collect();
        let (mut sp, mut dp) = (s0.clone(), d0.clone());
        portable::flush(&mut sp, &mut dp);
        for k in levels() {
            let (mut s, mut d) = (s0.clone(), d0.clone());
            (k.flush)(&mut s, &mut d);
            assert_eq!(bits(&s), bits(&sp), "{:?} n={n}", k.level);
            assert_eq!(bits(&d), bits(&dp), "{:?} n={n}", k.level);
            for i in 0..n {
                // Error-free: s' + d' == s + d exactly (f64 holds both sums).
                assert_eq!(s[i] as f64 + d[i] as f64, s0[i] as f64 + d0[i] as f64);
                assert_eq!(s[i], s0[i] + d0[i]);
            }
        }
    }
}

#[test]
fn max_abs_exact_with_specials_at_every_position() {
    let mut rng = Rng(55);
    for n in 0..=70usize {
        let base = rng.vec(n, 10.0);
        let want = base.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for k in levels() {
            assert_eq!(
                (k.max_abs)(&base).to_bits(),
                want.to_bits(),
                "{:?} n={n}",
                k.level
            );
            for pos in 0..n {
                for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1e30] {
                    let mut x = base.clone();
                    x[pos] = special;
                    let p = portable::max_abs(&x);
                    let g = (k.max_abs)(&x);
                    assert_eq!(
                        g.to_bits(),
                        p.to_bits(),
                        "{:?} n={n} pos={pos} {special}",
                        k.level
                    );
                    if !special.is_finite() {
                        assert_eq!(g, f32::INFINITY);
                    }
                }
            }
        }
    }
}

#[test]
fn conversions_bit_exact_vs_half() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let want16: Vec<u32> = all
        .iter()
        .map(|&h| half::f16::from_bits(h).to_f32().to_bits())
        .collect();
    let wantb: Vec<u32> = all
        .iter()
        .map(|&h| half::bf16::from_bits(h).to_f32().to_bits())
        .collect();
    let mut all_k: Vec<&Kernels> = vec![&portable::KERNELS];
    all_k.extend(levels());
    for k in all_k {
        let mut out = vec![0.0f32; all.len()];
        (k.f16_to_f32)(&all, &mut out);
        assert_eq!(bits(&out), want16, "{:?} f16", k.level);
        (k.bf16_to_f32)(&all, &mut out);
        assert_eq!(bits(&out), wantb, "{:?} bf16", k.level);
        // Every tail length and offset; nothing written past the end.
        for n in 0..=40usize {
            for off in 0..3usize {
                let src = &all[1000 + off * 7..1000 + off * 7 + n];
                let mut o = vec![-7.0f32; n + 5];
                (k.f16_to_f32)(src, &mut o[..n]);
                for i in 0..n {
                    assert_eq!(o[i].to_bits(), want16[src[i] as usize]);
                }
                assert!(o[n..].iter().all(|&x| x == -7.0));
                (k.bf16_to_f32)(src, &mut o[..n]);
                for i in 0..n {
                    assert_eq!(o[i].to_bits(), wantb[src[i] as usize]);
                }
                assert!(o[n..].iter().all(|&x| x == -7.0));
            }
        }
    }
}

/// A whole causal stream per level: against the f64 polynomial-attention
/// reference and against the portable handle.
#[test]
fn whole_sketch_per_level_matches_reference() {
    let mut rng = Rng(66);
    for &(d, dv, n) in &[
        (1usize, 1usize, 40usize),
        (7, 9, 70),
        (16, 17, 150),
        (33, 70, 40),
        (64, 64, 130),
    ] {
        let q = rng.vec(n * d, 1.0);
        let k = rng.vec(n * d, 1.0);
        let v = rng.vec(n * dv, 1.0);
        let cfg = Config {
            value_dim: dv as u32,
            ..Config::new(d as u32)
        };
        let coeffs = attnsketch::Polynomial::taylor(2).coeffs().to_vec();
        let want = reference::poly_attention_causal(
            &to64(&q),
            &to64(&k),
            &to64(&v),
            d,
            dv,
            &coeffs,
            cfg.scale as f64,
        );
        let mut port = Sketch::with_level(&cfg, Level::Portable).unwrap();
        let mut pout = vec![0.0f32; n * dv];
        port.push_tokens(n, &q, &k, &v, &mut pout).unwrap();
        for &lv in Level::ALL.iter().filter(|l| l.supported()) {
            let mut h = Sketch::with_level(&cfg, lv).unwrap();
            assert_eq!(h.level(), lv);
            let out = push_each(&mut h, &q[..n * d], &k[..n * d], &v[..n * dv], d, dv);
            let e = reference::rel_err(&to64(&out), &want);
            let ep = reference::rel_err(&to64(&out), &to64(&pout));
            assert!(e < 2e-5, "{lv:?} d={d} dv={dv}: rel err {e}");
            assert!(ep < 2e-5, "{lv:?} d={d} dv={dv}: vs portable {ep}");
        }
    }
}

/// Half-precision push equals the f32 push of the converted inputs, bitwise.
#[test]
fn half_push_equals_f32_push_of_converted_inputs() {
    let mut rng = Rng(77);
    let (d, dv, n) = (19usize, 21usize, 30usize);
    let cfg = Config {
        value_dim: dv as u32,
        ..Config::new(d as u32)
    };
    for &lv in Level::ALL.iter().filter(|l| l.supported()) {
        for bf in [false, true] {
            let enc = |x: f32| {
                if bf {
                    half::bf16::from_f32(x).to_bits()
                } else {
                    half::f16::from_f32(x).to_bits()
                }
            };
            let dec = |h: u16| {
                if bf {
                    half::bf16::from_bits(h).to_f32()
                } else {
                    half::f16::from_bits(h).to_f32()
                }
            };
            let mut a = Sketch::with_level(&cfg, lv).unwrap();
            let mut b = Sketch::with_level(&cfg, lv).unwrap();
            for _ in 0..n {
                let (q, k, v) = (rng.vec(d, 1.0), rng.vec(d, 1.0), rng.vec(dv, 1.0));
                let (hq, hk, hv): (Vec<u16>, Vec<u16>, Vec<u16>) = (
                    q.iter().map(|&x| enc(x)).collect(),
                    k.iter().map(|&x| enc(x)).collect(),
                    v.iter().map(|&x| enc(x)).collect(),
                );
                let (fq, fk, fv): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                    hq.iter().map(|&h| dec(h)).collect(),
                    hk.iter().map(|&h| dec(h)).collect(),
                    hv.iter().map(|&h| dec(h)).collect(),
                );
                let (mut o1, mut o2) = (vec![0.0; dv], vec![0.0; dv]);
                if bf {
                    a.push_token_bf16(&hq, &hk, &hv, &mut o1).unwrap();
                } else {
                    a.push_token_f16(&hq, &hk, &hv, &mut o1).unwrap();
                }
                b.push_token(&fq, &fk, &fv, &mut o2).unwrap();
                assert_eq!(bits(&o1), bits(&o2), "{lv:?} bf16={bf}");
            }
        }
    }
}

/// `C += A B` for both A layouts (row-major, as the batched queries use it,
/// and transposed, as the batched state update uses it), every row remainder
/// of the 6-row tile, every column remainder of 8 and 16, and inner
/// dimensions across the 256-element slice. Tolerance: the sum over k terms
/// is within `(k + 2) 2u sum_p |a_ip b_pj|` of the f64 value, plus the final
/// addition to C (`2u |c|`).
#[test]
fn gemm_matches_reference_all_shapes() {
    use attnsketch::kernels::Gemm;
    let mut rng = Rng(91);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    let mut cases = Vec::new();
    for m in 1..=13usize {
        for n in [1usize, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 130] {
            cases.push((m, n, 1 + (m * 7 + n) % 40));
        }
    }
    cases.extend([
        (64, 64, 2145),
        (6, 16, 256),
        (6, 16, 257),
        (7, 65, 600),
        (2145, 64, 64),
    ]);
    for &(m, n, k) in &cases {
        for trans in [false, true] {
            let (rsa, csa) = if trans { (1, m + 3) } else { (k + 2, 1) };
            let a = rng.vec((m - 1) * rsa + (k - 1) * csa + 1, 1.0);
            let ldb = n + (k % 3);
            let b = rng.vec((k - 1) * ldb + n, 2.0);
            let ldc = n + 1;
            let c0 = rng.vec((m - 1) * ldc + n, 3.0);
            let g = Gemm {
                m,
                n,
                k,
                rsa,
                csa,
                ldb,
                ldc,
            };
            for kern in &all {
                let mut c = c0.clone();
                (kern.gemm)(&g, &a, &b, &mut c);
                for i in 0..m {
                    for j in 0..n {
                        let (mut want, mut mag) = (0.0f64, 0.0f64);
                        for p in 0..k {
                            let x = a[i * rsa + p * csa] as f64 * b[p * ldb + j] as f64;
                            want += x;
                            mag += x.abs();
                        }
                        let cw = c0[i * ldc + j] as f64;
                        let tol = (k as f64 + 2.0) * 2.0 * U * mag + 2.0 * U * (cw + want).abs();
                        let got = c[i * ldc + j] as f64;
                        assert!(
                            (got - (cw + want)).abs() <= tol,
                            "{:?} m={m} n={n} k={k} trans={trans} ({i},{j}): {got} vs {}",
                            kern.level,
                            cw + want
                        );
                    }
                    // padding columns of C untouched
                    for j in n..ldc {
                        if i * ldc + j < c.len() {
                            assert_eq!(c[i * ldc + j].to_bits(), c0[i * ldc + j].to_bits());
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_refuses_short_slices() {
    use attnsketch::kernels::Gemm;
    let g = Gemm {
        m: 3,
        n: 4,
        k: 5,
        rsa: 5,
        csa: 1,
        ldb: 4,
        ldc: 4,
    };
    assert!(g.fits(15, 20, 12));
    assert!(!g.fits(14, 20, 12));
    assert!(!g.fits(15, 19, 12));
    assert!(!g.fits(15, 20, 11));
    let all: Vec<&Kernels> = std::iter::once(&portable::KERNELS)
        .chain(levels())
        .collect();
    for kern in all {
        let r = std::panic::catch_unwind(|| {
            let mut c = vec![0.0f32; 11];
            (kern.gemm)(&g, &[0.0; 15], &[0.0; 20], &mut c);
        });
        assert!(r.is_err(), "{:?} accepted a short C", kern.level);
    }
}

/// `f16_rows` (the hybrid's binary16 value sum) at every level against an
/// f64 reference: every column count 1..=140 (all lane and block remainders
/// of 8-, 16-lane and 64/128-column blocks), row counts 0..=5 and long
/// sums; `out` is accumulated into, so it starts non-zero. Tolerance: per
/// column `(m + 2) 2^-23 (|out0| + sum_i |w_i h_ij|)`, the f32 summation bound.
#[test]
fn f16_rows_matches_reference() {
    let mut rng = Rng(77);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    let mut cases: Vec<(usize, usize)> = Vec::new();
    for dv in 1..=140usize {
        cases.push((dv % 6, dv));
    }
    cases.extend([(300, 64), (1040, 64), (257, 129), (33, 200)]);
    for &(m, dv) in &cases {
        let w = rng.vec(m, 1.0);
        let hv: Vec<u16> = rng
            .vec(m * dv + 3, 4.0)
            .iter()
            .map(|&x| half::f16::from_f32(x).to_bits())
            .collect();
        let out0 = rng.vec(dv, 2.0);
        for k in &all {
            let mut out = out0.clone();
            (k.f16_rows)(&w, &hv[..m * dv], &mut out);
            for j in 0..dv {
                let (mut r, mut mag) = (out0[j] as f64, out0[j].abs() as f64);
                for i in 0..m {
                    let x = w[i] as f64 * half::f16::from_bits(hv[i * dv + j]).to_f64();
                    r += x;
                    mag += x.abs();
                }
                let tol = (m as f64 + 2.0) * 2f64.powi(-23) * mag;
                assert!(
                    (out[j] as f64 - r).abs() <= tol,
                    "{:?} m {m} dv {dv} col {j}: {} vs {r}",
                    k.level,
                    out[j]
                );
            }
        }
    }
    // A short h is refused (a panic, caught at the C boundary), not read past.
    for k in &all {
        let r = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 8];
            (k.f16_rows)(&[1.0, 1.0], &[0u16; 15], &mut out);
        });
        assert!(r.is_err(), "{:?}", k.level);
    }
}

/// `i8_rows` (the hybrid's int8 value sum) at every level against an f64
/// reference: column counts 1..=17, 31, 33, 63..=65, 127..=129 and 200
/// (every lane remainder of 8 and 16 lanes, one to three 64/128-column
/// blocks) times row counts 0, 1, 2, 3, 5, 16, 33; values over the whole
/// int8 range (-128 and 127 always present, 127 as the slice's last byte);
/// `out` is accumulated into, so it starts non-zero. Tolerance: per column
/// `(m + 2) 2^-23 (|out0| + sum_i |w_i a_ij|)`, the f32 summation bound (as
/// `f16_rows`). `a` is passed exactly `m dv` long (the last row's tail ends
/// the slice) and again with 16 more bytes: the results must be bitwise
/// equal. With dyadic weights and integer `out0` every sum is exact in f32,
/// so every level must give the f64 result exactly.
#[test]
fn i8_rows_matches_reference() {
    let mut rng = Rng(79);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    let dvs: Vec<usize> = (1..=17)
        .chain([31, 33, 63, 64, 65, 127, 128, 129, 200])
        .collect();
    for &dv in &dvs {
        for m in [0usize, 1, 2, 3, 5, 16, 33] {
            let mut a: Vec<i8> = (0..m * dv + 16)
                .map(|_| (rng.next_u64() >> 56) as u8 as i8)
                .collect();
            if m > 0 {
                a[0] = -128;
                a[m * dv - 1] = 127;
            }
            let w = rng.vec(m, 1.0);
            let out0 = rng.vec(dv, 2.0);
            // Dyadic weights, integer out0: |sums| < 2^15, exact in f32.
            let wx: Vec<f32> = (0..m)
                .map(|_| (rng.next_u64() % 9) as f32 * 0.5 - 2.0)
                .collect();
            let ox: Vec<f32> = (0..dv)
                .map(|_| (rng.next_u64() % 201) as f32 - 100.0)
                .collect();
            for k in &all {
                let mut out = out0.clone();
                (k.i8_rows)(&w, &a[..m * dv], &mut out);
                let mut long = out0.clone();
                (k.i8_rows)(&w, &a, &mut long);
                assert_eq!(bits(&out), bits(&long), "{:?} m {m} dv {dv}", k.level);
                let mut exact = ox.clone();
                (k.i8_rows)(&wx, &a[..m * dv], &mut exact);
                for j in 0..dv {
                    let (mut r, mut mag) = (out0[j] as f64, out0[j].abs() as f64);
                    let mut rx = ox[j] as f64;
                    for i in 0..m {
                        let x = w[i] as f64 * a[i * dv + j] as f64;
                        r += x;
                        mag += x.abs();
                        rx += wx[i] as f64 * a[i * dv + j] as f64;
                    }
                    let tol = (m as f64 + 2.0) * 2f64.powi(-23) * mag;
                    assert!(
                        (out[j] as f64 - r).abs() <= tol,
                        "{:?} m {m} dv {dv} col {j}: {} vs {r}",
                        k.level,
                        out[j]
                    );
                    assert_eq!(
                        exact[j] as f64, rx,
                        "{:?} exact m {m} dv {dv} col {j}",
                        k.level
                    );
                }
            }
        }
    }
    // A short a is refused (a panic, caught at the C boundary), not read past.
    for k in &all {
        let r = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 8];
            (k.i8_rows)(&[1.0, 1.0], &[0i8; 15], &mut out);
        });
        assert!(r.is_err(), "{:?}", k.level);
    }
}

/// `i8_rows` reads nothing past `a`: `a` is placed to end exactly at a
/// `PROT_NONE` page, so a read past it (a tail vector loaded whole on the
/// last row) faults and kills the test. Every column count of
/// `i8_rows_matches_reference` times 1, 2, 3 and 33 rows; results checked
/// bitwise against the same call on an ordinary copy of `a`.
#[cfg(target_os = "linux")]
#[test]
fn i8_rows_reads_nothing_past_a() {
    const PAGE: usize = 1 << 16; // >= the page size, a multiple of it
                                 // SAFETY: a fresh anonymous private mapping of two PAGE-sized runs, the
                                 // second made inaccessible; unmapped at the end; nothing else aliases it.
    unsafe {
        let base = libc::mmap(
            core::ptr::null_mut(),
            2 * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(base, libc::MAP_FAILED);
        let guard = (base as *mut u8).add(PAGE);
        assert_eq!(libc::mprotect(guard.cast(), PAGE, libc::PROT_NONE), 0);
        let mut rng = Rng(80);
        let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
        all.extend(levels());
        for dv in (1..=17usize).chain([31, 33, 63, 64, 65, 127, 128, 129, 200]) {
            for m in [1usize, 2, 3, 33] {
                let n = m * dv;
                let src: Vec<i8> = (0..n).map(|_| (rng.next_u64() >> 56) as u8 as i8).collect();
                let at = guard.sub(n) as *mut i8;
                core::ptr::copy_nonoverlapping(src.as_ptr(), at, n);
                let a = core::slice::from_raw_parts(at as *const i8, n);
                let w = rng.vec(m, 1.0);
                let out0 = rng.vec(dv, 2.0);
                for k in &all {
                    let (mut got, mut want) = (out0.clone(), out0.clone());
                    (k.i8_rows)(&w, a, &mut got);
                    (k.i8_rows)(&w, &src, &mut want);
                    assert_eq!(bits(&got), bits(&want), "{:?} m {m} dv {dv}", k.level);
                }
            }
        }
        assert_eq!(libc::munmap(base, 2 * PAGE), 0);
    }
}

/// `row_dots` (the hybrid's exact scores) and `row_dists` (its Ward merge)
/// at every level against f64:
/// every d in 1..=70 (all 8- and 16-lane remainders, one and two FMA
/// chains), row counts 0..=5, and the 1 MiB preset's shape (2497 x 64).
/// Tolerance per row: `(d + 2) 2^-23 sum_c |a_c q_c|`; the returned max is
/// exactly the max of the written scores.
#[test]
fn row_dots_matches_reference() {
    let mut rng = Rng(78);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    let mut cases: Vec<(usize, usize)> = (1..=70usize).map(|d| (d % 6, d)).collect();
    cases.extend([(2497, 64), (33, 128), (7, 129)]);
    for &(rows, d) in &cases {
        let a = rng.vec(rows * d + 5, 3.0);
        let q = rng.vec(d, 2.0);
        for k in &all {
            let mut out = vec![f32::NAN; rows + 1];
            let mx = (k.row_dots)(&a[..rows * d], &q, &mut out[..rows]);
            assert!(out[rows].is_nan(), "{:?}: wrote past out", k.level);
            let mut want_max = f32::NEG_INFINITY;
            for i in 0..rows {
                let (mut r, mut mag) = (0.0f64, 0.0f64);
                for c in 0..d {
                    let x = a[i * d + c] as f64 * q[c] as f64;
                    r += x;
                    mag += x.abs();
                }
                let tol = (d as f64 + 2.0) * 2f64.powi(-23) * mag;
                assert!(
                    (out[i] as f64 - r).abs() <= tol,
                    "{:?} rows {rows} d {d} row {i}: {} vs {r}",
                    k.level,
                    out[i]
                );
                want_max = want_max.max(out[i]);
            }
            assert_eq!(mx.to_bits(), want_max.to_bits(), "{:?} max", k.level);
            // row_dists: |a_i - q|^2, tolerance (d + 2) 2^-23 |a_i - q|^2
            // (the differences are exact to within one rounding each).
            let mut dist = vec![f32::NAN; rows + 1];
            (k.row_dists)(&a[..rows * d], &q, &mut dist[..rows]);
            assert!(dist[rows].is_nan(), "{:?}: wrote past out", k.level);
            for i in 0..rows {
                let r: f64 = (0..d)
                    .map(|c| (a[i * d + c] as f64 - q[c] as f64).powi(2))
                    .sum();
                let tol = (d as f64 + 4.0) * 2f64.powi(-23) * r;
                assert!(
                    (dist[i] as f64 - r).abs() <= tol,
                    "{:?} rows {rows} d {d} row {i}: dist {} vs {r}",
                    k.level,
                    dist[i]
                );
            }
        }
    }
}

/// Random int16 keys over the full range, both extremes included.
fn i16_keys(rng: &mut Rng, n: usize) -> Vec<i16> {
    (0..n)
        .map(|j| match j % 23 {
            5 => i16::MIN,
            11 => i16::MAX,
            _ => rng.next_u64() as u16 as i16,
        })
        .collect()
}

/// `i16_row_dots` (the hybrid's int16 key scores) at every level against
/// `sum_c f64(a_c) f64(q_c) f64(s)`: every d in 1..=70 (all 8- and 16-lane
/// remainders, one and two FMA chains) plus 128, 256, 511, row counts 0, 1,
/// 2, 3, 5, 17, 33 (whole and partial 4-row passes), keys over the full
/// int16 range, scales 1e-6..1e3, q in [-4, 4). Tolerance per row:
/// `1e-5 s sum_c |a_c q_c| + 1e-30`. The i16 -> f32 conversion is exact, and
/// each operation rounds by at most 2^-24 relative; every level sums a row
/// as >= 8 lane chains of <= ceil(d / 8) products (one FMA, or a multiply
/// and an add, each), then <= 4 lane-reduction adds, <= 7 remainder adds
/// (portable) and the scale multiply: at most d / 8 + 14 roundings along
/// any path, (511 / 8 + 14) 2^-24 = 4.7e-6 < 1e-5 for every d here. The
/// returned max equals the max of the written scores exactly (-inf for no
/// rows) and nothing is written past `out`.
#[test]
fn i16_row_dots_matches_reference() {
    let mut rng = Rng(80);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    let ds: Vec<usize> = (1..=70usize).chain([128, 256, 511]).collect();
    for &d in &ds {
        for &rows in &[0usize, 1, 2, 3, 5, 17, 33] {
            let a = i16_keys(&mut rng, rows * d);
            let scale: Vec<f32> = (0..rows)
                .map(|_| 10f32.powf(rng.unit() * 9.0 - 6.0))
                .collect();
            let q = rng.vec(d, 4.0);
            for k in &all {
                let mut out = vec![f32::NAN; rows + 1];
                let mx = (k.i16_row_dots)(&a, &scale, &q, &mut out[..rows]);
                assert!(out[rows].is_nan(), "{:?}: wrote past out", k.level);
                let mut want_max = f32::NEG_INFINITY;
                for i in 0..rows {
                    let (mut r, mut mag) = (0.0f64, 0.0f64);
                    for c in 0..d {
                        let x = a[i * d + c] as f64 * q[c] as f64;
                        r += x * scale[i] as f64;
                        mag += x.abs();
                    }
                    let tol = 1e-5 * scale[i] as f64 * mag + 1e-30;
                    assert!(
                        (out[i] as f64 - r).abs() <= tol,
                        "{:?} rows {rows} d {d} row {i}: {} vs {r} (tol {tol})",
                        k.level,
                        out[i]
                    );
                    want_max = want_max.max(out[i]);
                }
                assert_eq!(mx, want_max, "{:?} rows {rows} d {d}: max", k.level);
                if rows == 0 {
                    assert_eq!(mx, f32::NEG_INFINITY, "{:?} d {d}", k.level);
                }
            }
        }
    }
}

/// A kernel that ignores `scale` or drops the last column fails here: each
/// row's only nonzero key is its last coordinate (or its first), the scales
/// are distinct powers of two, so every score is exact:
/// `out[i] = s_i a[i d + c] q[c]`. Also the d = 0 edge (all scores 0), and
/// short `a` / `scale` are refused (a panic), not read past.
#[test]
fn i16_row_dots_uses_scale_and_tail() {
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    for d in 1..=70usize {
        for rows in 0..=9usize {
            for last in [true, false] {
                let col = if last { d - 1 } else { 0 };
                let mut a = vec![0i16; rows * d];
                let scale: Vec<f32> = (0..rows).map(|i| 2f32.powi(i as i32 - 4)).collect();
                for i in 0..rows {
                    a[i * d + col] = [i16::MIN, i16::MAX, -3, 1000][i % 4];
                }
                let q: Vec<f32> = (0..d).map(|c| 0.25 + c as f32).collect();
                for k in &all {
                    let mut out = vec![f32::NAN; rows];
                    let mx = (k.i16_row_dots)(&a, &scale, &q, &mut out);
                    let mut want_max = f32::NEG_INFINITY;
                    for i in 0..rows {
                        let want = scale[i] * (a[i * d + col] as f32 * q[col]);
                        assert_eq!(
                            out[i], want,
                            "{:?} d {d} rows {rows} row {i} last {last}",
                            k.level
                        );
                        want_max = want_max.max(want);
                    }
                    assert_eq!(mx, want_max, "{:?} d {d} rows {rows}", k.level);
                }
            }
        }
    }
    for k in &all {
        let mut out = vec![f32::NAN; 6];
        let mx = (k.i16_row_dots)(&[], &[1.0; 6], &[], &mut out);
        assert_eq!(mx, 0.0, "{:?} d 0", k.level);
        assert!(out.iter().all(|&x| x == 0.0), "{:?} d 0", k.level);
        let short_a = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 3];
            (k.i16_row_dots)(&[1i16; 11], &[1.0; 3], &[1.0; 4], &mut out);
        });
        assert!(short_a.is_err(), "{:?} accepted a short a", k.level);
        let short_scale = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 3];
            (k.i16_row_dots)(&[1i16; 12], &[1.0; 2], &[1.0; 4], &mut out);
        });
        assert!(short_scale.is_err(), "{:?} accepted a short scale", k.level);
    }
}

/// `exp_shift` (the hybrid's exact weights) at every level against f64
/// `exp` of the same f32 argument `t = (x - xmax) s`: lengths 0..=40 and
/// 1000 (every lane remainder), arguments from 0 down to -110 and -inf (a
/// huge scale), so results lie in [0, 1] and are never NaN. Tolerance:
/// `4 2^-23` relative above the smallest normal's argument (-87.33),
/// 2^-126 absolute below it; the sum within `(n + 2) 2^-23` of the f64 sum.
#[test]
fn exp_shift_matches_reference() {
    let mut rng = Rng(79);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    let mut cases: Vec<(usize, f32)> = (0..=40usize).map(|n| (n, 1.0)).collect();
    cases.extend([(1000, 1.0), (1000, 0.125), (37, 3.0e37), (20, 1.0e-30)]);
    for &(n, s) in &cases {
        let xmax = 7.5f32;
        // Scores spread so that t covers [-110, 0]; the first is the max.
        let x: Vec<f32> = (0..n)
            .map(|i| {
                if i == 0 {
                    xmax
                } else {
                    xmax - (rng.unit() * 110.0) / s.min(1.0)
                }
            })
            .collect();
        for k in &all {
            let mut y = x.clone();
            let sum = (k.exp_shift)(&mut y, s, xmax);
            let mut want_sum = 0.0f64;
            for i in 0..n {
                let t = (x[i] - xmax) * s;
                let want = (t as f64).exp();
                want_sum += y[i] as f64;
                assert!(
                    (0.0..=1.0).contains(&y[i]),
                    "{:?} n {n} s {s} i {i}: {}",
                    k.level,
                    y[i]
                );
                let tol = if t >= -87.33 {
                    4.0 * 2f64.powi(-23) * want
                } else {
                    2f64.powi(-126)
                };
                assert!(
                    (y[i] as f64 - want).abs() <= tol,
                    "{:?} n {n} s {s} t {t}: {} vs {want}",
                    k.level,
                    y[i]
                );
            }
            assert!(
                (sum - want_sum).abs() <= (n as f64 + 2.0) * 2f64.powi(-23) * want_sum.max(1e-300),
                "{:?} n {n}: sum {sum} vs {want_sum}",
                k.level
            );
        }
    }
}

// ---- Compact token formats: 4-bit code rows (`u4_row_dots`, `u4_rows`)
// and int8 key rows (`i8_row_dots`), against `reference::{u4_row_dots,
// u4_rows, i8_row_dots}` (f64).

/// Random code bytes with fixed patterns mixed in so that codes 0 and 15
/// occur in both nibbles (`0x00`, `0xff`, `0x0f`, `0xf0`).
fn u4_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n)
        .map(|j| match j % 19 {
            3 => 0x00,
            7 => 0xff,
            11 => 0x0f,
            13 => 0xf0,
            _ => rng.next_u64() as u8,
        })
        .collect()
}

/// Uniform in `[-s, s)` with every 9th value zero.
fn with_zeros(rng: &mut Rng, n: usize, s: f32) -> Vec<f32> {
    let mut x = rng.vec(n, s);
    x.iter_mut().step_by(9).for_each(|v| *v = 0.0);
    x
}

/// Integers in `[-r, r]` (as f32) times `step`: dyadic data whose sums stay
/// exact in f32 when small enough.
fn dyadic(rng: &mut Rng, n: usize, r: u64, step: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((rng.next_u64() % (2 * r + 1)) as f32 - r as f32) * step)
        .collect()
}

/// Row widths of the 4-bit tests: one to four groups (every 8-lane vector
/// of a group, one and two `u4_rows` passes of 64 columns and a partial
/// one), 256 and 512.
const U4_WIDTHS: [usize; 8] = [32, 64, 96, 128, 160, 192, 256, 512];

/// `u4_row_dots` (scores of 4-bit key rows) at every level against f64
/// and the fixed-point model (`reference::u4_row_dots_fixed`): d in
/// [`U4_WIDTHS`] (and 4096, the largest) times rows 0..=33 (whole and
/// partial 8-row reductions) and 100, 1031; codes 0..=15 (both extremes in
/// both nibbles); q in [-4, 4) with zeros, scaled by 1e-20 and 1e20, all
/// zeros, and a query with one large channel. Every level gives the model's
/// bits (exact integer sums: a wrong nibble, channel order, rounding or
/// scale fails). Against f64 the error is at most the fixed point's bound
/// `2^e / 2 sum_c code_c + 2^-24 |score|` with `2^e <= max |q| 2^-13`.
/// Second, with integer q in [-64, 64] (exact in 16 bits) every level must
/// give the f64 result exactly. Nothing is written past `out`; a short
/// `a`, a d that is not a multiple of 32 and d above 4096 are refused (a
/// panic).
#[test]
fn u4_row_dots_matches_reference() {
    let mut rng = Rng(90);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    for &d in U4_WIDTHS.iter().chain(&[4096]) {
        let rows_list: Vec<usize> = if d == 4096 {
            vec![0, 1, 9, 17]
        } else {
            (0..=33usize).chain([100, 1031]).collect()
        };
        for rows in rows_list {
            let a = u4_bytes(&mut rng, rows * d / 2);
            let base = with_zeros(&mut rng, d, 4.0);
            let mut spike = base.clone();
            spike[d / 3] = 3.0e4;
            let queries = [
                base.clone(),
                base.iter().map(|x| x * 1e-20).collect(),
                base.iter().map(|x| x * 1e20).collect(),
                vec![0.0; d],
                spike,
            ];
            for q in &queries {
                let qabs: Vec<f32> = q.iter().map(|x| x.abs()).collect();
                let qm = qabs.iter().fold(0.0f64, |m, &x| m.max(x as f64));
                let want = reference::u4_row_dots(&a, q, rows);
                let fixed = reference::u4_row_dots_fixed(&a, q, rows);
                let codes = reference::u4_row_dots(&a, &vec![1.0; d], rows);
                for k in &all {
                    let mut out = vec![f32::NAN; rows + 1];
                    (k.u4_row_dots)(&a, q, &mut out[..rows]);
                    assert!(out[rows].is_nan(), "{:?}: wrote past out", k.level);
                    assert_eq!(
                        bits(&out[..rows]),
                        bits(&fixed),
                        "{:?} d {d} rows {rows}: not the fixed-point result",
                        k.level
                    );
                    for i in 0..rows {
                        let tol = qm * 2f64.powi(-14) * codes[i] + U * want[i].abs();
                        assert!(
                            (out[i] as f64 - want[i]).abs() <= tol,
                            "{:?} d {d} rows {rows} row {i}: {} vs {} (tol {tol})",
                            k.level,
                            out[i],
                            want[i]
                        );
                    }
                }
            }
            let qx = dyadic(&mut rng, d, 64, 1.0);
            let want_x = reference::u4_row_dots(&a, &qx, rows);
            for k in &all {
                let mut out = vec![f32::NAN; rows];
                (k.u4_row_dots)(&a, &qx, &mut out);
                for i in 0..rows {
                    assert_eq!(
                        out[i] as f64, want_x[i],
                        "{:?} exact d {d} rows {rows} row {i}",
                        k.level
                    );
                }
            }
        }
    }
    for k in &all {
        let mut out = vec![f32::NAN; 3];
        (k.u4_row_dots)(&[], &[], &mut out);
        assert!(out.iter().all(|&x| x == 0.0), "{:?} d 0", k.level);
        let short = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 3];
            (k.u4_row_dots)(&[0u8; 3 * 32 - 1], &[1.0; 64], &mut out);
        });
        assert!(short.is_err(), "{:?} accepted a short a", k.level);
        let big = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 1];
            (k.u4_row_dots)(&vec![0u8; 4128 / 2], &vec![1.0; 4128], &mut out);
        });
        assert!(big.is_err(), "{:?} accepted d = 4128", k.level);
        let odd = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 1];
            (k.u4_row_dots)(&[0u8; 64], &[1.0; 48], &mut out);
        });
        assert!(odd.is_err(), "{:?} accepted d = 48", k.level);
    }
}

/// `u4_rows` (the weighted sum of 4-bit value rows, one weight per row and
/// 32-column group) at every level against f64: dv in [`U4_WIDTHS`] times
/// rows 0..=33 and 100, 1031; weights in [-1, 1) with zeros; `out` is
/// accumulated into, so it starts non-zero. Tolerance per column: `(m + 2)
/// 2^-23 (|out0| + sum_i |w_i code_ic|)`, the f32 bound of a sum over the
/// rows in order (as `f16_rows`). With dyadic weights (multiples of 1/2 in
/// [-2, 2]) and integer `out0` every sum is exact in f32, so every level
/// must give the f64 result exactly. A `w` one longer than `m G` (a NaN
/// extra weight, when G > 1) must be ignored: `m = w.len() / G` whole rows. Short `a`
/// and a dv that is not a multiple of 32 are refused (a panic).
#[test]
fn u4_rows_matches_reference() {
    let mut rng = Rng(91);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    for &dv in &U4_WIDTHS {
        let g = dv / 32;
        for m in (0..=33usize).chain([100, 1031]) {
            let a = u4_bytes(&mut rng, m * dv / 2);
            // One extra weight (not a whole row) when G > 1.
            let extra = usize::from(g > 1);
            let mut w = with_zeros(&mut rng, m * g + extra, 1.0);
            if extra == 1 {
                w[m * g] = f32::NAN;
            }
            let out0 = rng.vec(dv, 2.0);
            let wabs: Vec<f32> = w[..m * g].iter().map(|x| x.abs()).collect();
            let oabs: Vec<f32> = out0.iter().map(|x| x.abs()).collect();
            let wx = dyadic(&mut rng, m * g, 4, 0.5);
            let ox = dyadic(&mut rng, dv, 100, 1.0);
            let want = reference::u4_rows(&w[..m * g], &a, &out0);
            let mag = reference::u4_rows(&wabs, &a, &oabs);
            let want_x = reference::u4_rows(&wx, &a, &ox);
            for k in &all {
                let mut out = out0.clone();
                (k.u4_rows)(&w, &a, &mut out);
                for c in 0..dv {
                    let tol = (m as f64 + 2.0) * 2.0 * U * mag[c];
                    assert!(
                        (out[c] as f64 - want[c]).abs() <= tol,
                        "{:?} dv {dv} m {m} col {c}: {} vs {} (tol {tol})",
                        k.level,
                        out[c],
                        want[c]
                    );
                }
                let mut exact = ox.clone();
                (k.u4_rows)(&wx, &a, &mut exact);
                for c in 0..dv {
                    assert_eq!(
                        exact[c] as f64, want_x[c],
                        "{:?} exact dv {dv} m {m} col {c}",
                        k.level
                    );
                }
            }
        }
    }
    for k in &all {
        let mut none: Vec<f32> = vec![];
        (k.u4_rows)(&[1.0, 2.0], &[], &mut none);
        let short = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 64];
            (k.u4_rows)(&[1.0; 6], &[0u8; 3 * 32 - 1], &mut out);
        });
        assert!(short.is_err(), "{:?} accepted a short a", k.level);
        let odd = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 48];
            (k.u4_rows)(&[1.0; 2], &[0u8; 64], &mut out);
        });
        assert!(odd.is_err(), "{:?} accepted dv = 48", k.level);
    }
}

/// Row widths of the multi-query 4-bit tests.
const U4M_WIDTHS: [usize; 5] = [32, 64, 96, 128, 256];
/// Row counts of the multi-query 4-bit tests: every remainder of a 4-row
/// pass and of 8 and 16 lanes (0..=33), and 65, 100.
fn u4m_rows() -> impl Iterator<Item = usize> {
    (0..=33usize).chain([65, 100])
}
/// Query / weight-set counts of the multi-query 4-bit tests: whole and
/// partial register blocks (4 at AVX2, 8 portable) and several blocks.
const U4M_SETS: [usize; 7] = [1, 2, 3, 4, 5, 8, 17];

/// `u4_row_dots_multi` (m queries against the same 4-bit key rows) at every
/// level: d in [`U4M_WIDTHS`], n in 0..=33, 65, 100, m in [`U4M_SETS`] (and
/// m = 128, a prefill block, at d = 64); codes 0..=15 in both nibbles, q in
/// [-4, 4) with zeros. Every result is the fixed-point model's
/// (`reference::u4_row_dots_fixed` per query) and equals the single kernel's
/// on the same query bitwise; with integer q in [-64, 64] every level must
/// give the f64 result exactly. Nothing is written past `out`.
#[test]
fn u4_row_dots_multi_matches_reference() {
    let mut rng = Rng(94);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    let mut shapes = Vec::new();
    for &d in &U4M_WIDTHS {
        for n in u4m_rows() {
            for &m in &U4M_SETS {
                shapes.push((d, n, m));
            }
        }
    }
    shapes.extend([(64, 32, 128), (64, 33, 128)]);
    for (d, n, m) in shapes {
        let a = u4_bytes(&mut rng, n * d / 2);
        let q = with_zeros(&mut rng, m * d, 4.0);
        let qx = dyadic(&mut rng, m * d, 64, 1.0);
        let fixed: Vec<f32> = q
            .chunks_exact(d)
            .flat_map(|qi| reference::u4_row_dots_fixed(&a, qi, n))
            .collect();
        let want_x = reference::u4_row_dots_multi(&a, &qx, d, n);
        for k in &all {
            let lv = k.level;
            let mut out = vec![f32::NAN; m * n + 1];
            (k.u4_row_dots_multi)(&a, &q, d, &mut out[..m * n]);
            assert!(out[m * n].is_nan(), "{lv:?}: wrote past out");
            assert_eq!(
                bits(&out[..m * n]),
                bits(&fixed),
                "{lv:?} d {d} n {n} m {m}: not the fixed-point result"
            );
            let mut single = vec![f32::NAN; m * n];
            for i in 0..m {
                (k.u4_row_dots)(&a, &q[i * d..(i + 1) * d], &mut single[i * n..(i + 1) * n]);
            }
            assert_eq!(
                bits(&out[..m * n]),
                bits(&single),
                "{lv:?} d {d} n {n} m {m}: multi != m x single"
            );
            (k.u4_row_dots_multi)(&a, &qx, d, &mut out[..m * n]);
            for r in 0..m * n {
                assert_eq!(
                    out[r] as f64, want_x[r],
                    "{lv:?} exact d {d} n {n} m {m} r {r}"
                );
            }
        }
    }
    for k in &all {
        // m = 0 does nothing.
        (k.u4_row_dots_multi)(&[], &[], 32, &mut []);
        let bad: [(usize, usize, usize, usize); 6] = [
            (64, 64, 0, 2),        // d = 0
            (2064, 4128, 4128, 1), // d above 4096
            (64, 96, 48, 2),       // d not a multiple of 32
            (64, 96, 64, 1),       // q.len() not a multiple of d
            (64, 128, 64, 3),      // out.len() not a multiple of m = 2
            (63, 128, 64, 4),      // a shorter than n d / 2 (n = 2)
        ];
        for (al, ql, d, ol) in bad {
            let r = std::panic::catch_unwind(|| {
                let mut out = vec![0.0f32; ol];
                (k.u4_row_dots_multi)(&vec![0u8; al], &vec![1.0; ql], d, &mut out);
            });
            assert!(
                r.is_err(),
                "{:?} accepted a {al} q {ql} d {d} out {ol}",
                k.level
            );
        }
    }
}

/// `u4_rows_multi` (m weight sets over the same 4-bit value rows) at every
/// level against f64: dv in [`U4M_WIDTHS`], n in 0..=33, 65, 100, m in
/// [`U4M_SETS`]; weights in [-1, 1) with zeros, `out` non-zero. Tolerance
/// per column as `u4_rows` (`(n + 2) 2^-23 (|out0| + sum_t |w_t
/// code_tc|)`); dyadic weights and integer `out0` must be exact. Every
/// column must equal the single kernel's on the same set bitwise.
#[test]
fn u4_rows_multi_matches_reference() {
    let mut rng = Rng(95);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    for &dv in &U4M_WIDTHS {
        let g = dv / 32;
        for n in u4m_rows() {
            for &m in &U4M_SETS {
                let a = u4_bytes(&mut rng, n * dv / 2);
                let w = with_zeros(&mut rng, m * n * g, 1.0);
                let out0 = rng.vec(m * dv, 2.0);
                let wabs: Vec<f32> = w.iter().map(|x| x.abs()).collect();
                let oabs: Vec<f32> = out0.iter().map(|x| x.abs()).collect();
                let wx = dyadic(&mut rng, m * n * g, 4, 0.5);
                let ox = dyadic(&mut rng, m * dv, 100, 1.0);
                let want = reference::u4_rows_multi(&w, &a, dv, &out0);
                let mag = reference::u4_rows_multi(&wabs, &a, dv, &oabs);
                let want_x = reference::u4_rows_multi(&wx, &a, dv, &ox);
                for k in &all {
                    let lv = k.level;
                    let mut out = out0.clone();
                    (k.u4_rows_multi)(&w, &a, dv, &mut out);
                    for r in 0..m * dv {
                        let tol = (n as f64 + 2.0) * 2.0 * U * mag[r];
                        assert!(
                            (out[r] as f64 - want[r]).abs() <= tol,
                            "{lv:?} dv {dv} n {n} m {m} set {} col {}: {} vs {} (tol {tol})",
                            r / dv,
                            r % dv,
                            out[r],
                            want[r]
                        );
                    }
                    let mut single = out0.clone();
                    for i in 0..m {
                        let wi = &w[i * n * g..(i + 1) * n * g];
                        (k.u4_rows)(wi, &a, &mut single[i * dv..(i + 1) * dv]);
                    }
                    assert_eq!(
                        bits(&out),
                        bits(&single),
                        "{lv:?} dv {dv} n {n} m {m}: multi != m x single"
                    );
                    let mut exact = ox.clone();
                    (k.u4_rows_multi)(&wx, &a, dv, &mut exact);
                    for r in 0..m * dv {
                        assert_eq!(
                            exact[r] as f64, want_x[r],
                            "{lv:?} exact dv {dv} n {n} m {m} r {r}"
                        );
                    }
                }
            }
        }
    }
    for k in &all {
        // m = 0 does nothing.
        (k.u4_rows_multi)(&[1.0], &[], 64, &mut []);
        let bad: [(usize, usize, usize, usize); 5] = [
            (4, 64, 0, 64),   // dv = 0
            (4, 64, 48, 96),  // dv not a multiple of 32
            (4, 64, 64, 96),  // out.len() not a multiple of dv
            (5, 64, 64, 128), // w.len() not a multiple of m G = 4
            (8, 63, 64, 128), // a shorter than n dv / 2 (n = 2)
        ];
        for (wl, al, dv, ol) in bad {
            let r = std::panic::catch_unwind(|| {
                let mut out = vec![0.0f32; ol];
                (k.u4_rows_multi)(&vec![1.0; wl], &vec![0u8; al], dv, &mut out);
            });
            assert!(
                r.is_err(),
                "{:?} accepted w {wl} a {al} dv {dv} out {ol}",
                k.level
            );
        }
    }
}

/// Random int8 keys over the full range, both extremes included.
fn i8_keys(rng: &mut Rng, n: usize) -> Vec<i8> {
    (0..n)
        .map(|j| match j % 23 {
            5 => i8::MIN,
            11 => i8::MAX,
            _ => rng.next_u64() as u8 as i8,
        })
        .collect()
}

/// `i8_row_dots` (scores of int8 heavy-hitter keys) at every level against
/// f64 `s_i sum_c a_ic q_c`: d in 1..=70 (all 8- and 16-lane remainders,
/// one and two FMA chains) plus 128, 256, 511, rows 0..=9, 17, 33, 100;
/// keys over the full int8 range, scales 1e-6..1e3, q in [-4, 4) with
/// zeros. Tolerance per row: `(d / 8 + 14) 2^-24 s sum_c |a_c q_c| +
/// 1e-30`: the int8 -> f32 conversion is exact, and every level sums a row
/// as >= 8 lane chains of <= ceil(d / 8) products (one FMA, or a multiply
/// and an add), then <= 4 lane-reduction adds, <= 7 remainder adds
/// (portable) and the scale multiply. The returned max equals the max of
/// the written scores exactly (-inf for no rows) and nothing is written
/// past `out`. Then rows with one nonzero key in the first or last column
/// and distinct power-of-two scales, whose scores are exact (a kernel
/// dropping the tail or the scale fails), the d = 0 edge (scores 0), and
/// short `a` / `scale` refused (a panic).
#[test]
fn i8_row_dots_matches_reference() {
    let mut rng = Rng(92);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    for d in (1..=70usize).chain([128, 256, 511]) {
        for rows in (0..=9usize).chain([17, 33, 100]) {
            let a = i8_keys(&mut rng, rows * d);
            let scale: Vec<f32> = (0..rows)
                .map(|_| 10f32.powf(rng.unit() * 9.0 - 6.0))
                .collect();
            let q = with_zeros(&mut rng, d, 4.0);
            let want = reference::i8_row_dots(&a, &scale, &q);
            for k in &all {
                let mut out = vec![f32::NAN; rows + 1];
                let mx = (k.i8_row_dots)(&a, &scale, &q, &mut out[..rows]);
                assert!(out[rows].is_nan(), "{:?}: wrote past out", k.level);
                let mut want_max = f32::NEG_INFINITY;
                for i in 0..rows {
                    let mag: f64 = (0..d)
                        .map(|c| (a[i * d + c] as f64 * q[c] as f64).abs())
                        .sum();
                    let tol = (d as f64 / 8.0 + 14.0) * U * scale[i] as f64 * mag + 1e-30;
                    assert!(
                        (out[i] as f64 - want[i]).abs() <= tol,
                        "{:?} rows {rows} d {d} row {i}: {} vs {} (tol {tol})",
                        k.level,
                        out[i],
                        want[i]
                    );
                    want_max = want_max.max(out[i]);
                }
                assert_eq!(mx, want_max, "{:?} rows {rows} d {d}: max", k.level);
            }
        }
    }
    for d in 1..=40usize {
        for rows in 0..=9usize {
            for col in [0, d - 1] {
                let mut a = vec![0i8; rows * d];
                let scale: Vec<f32> = (0..rows).map(|i| 2f32.powi(i as i32 - 4)).collect();
                for i in 0..rows {
                    a[i * d + col] = [i8::MIN, i8::MAX, -3, 100][i % 4];
                }
                let q: Vec<f32> = (0..d).map(|c| 0.25 + c as f32).collect();
                for k in &all {
                    let mut out = vec![f32::NAN; rows];
                    let mx = (k.i8_row_dots)(&a, &scale, &q, &mut out);
                    let mut want_max = f32::NEG_INFINITY;
                    for i in 0..rows {
                        let want = scale[i] * (a[i * d + col] as f32 * q[col]);
                        assert_eq!(out[i], want, "{:?} d {d} rows {rows} col {col}", k.level);
                        want_max = want_max.max(want);
                    }
                    assert_eq!(mx, want_max, "{:?} d {d} rows {rows}", k.level);
                }
            }
        }
    }
    for k in &all {
        let mut out = vec![f32::NAN; 6];
        let mx = (k.i8_row_dots)(&[], &[1.0; 6], &[], &mut out);
        assert_eq!(mx, 0.0, "{:?} d 0", k.level);
        assert!(out.iter().all(|&x| x == 0.0), "{:?} d 0", k.level);
        assert_eq!(
            (k.i8_row_dots)(&[], &[], &[1.0; 5], &mut []),
            f32::NEG_INFINITY,
            "{:?} no rows",
            k.level
        );
        let short_a = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 3];
            (k.i8_row_dots)(&[1i8; 11], &[1.0; 3], &[1.0; 4], &mut out);
        });
        assert!(short_a.is_err(), "{:?} accepted a short a", k.level);
        let short_scale = std::panic::catch_unwind(|| {
            let mut out = vec![0.0f32; 3];
            (k.i8_row_dots)(&[1i8; 12], &[1.0; 2], &[1.0; 4], &mut out);
        });
        assert!(short_scale.is_err(), "{:?} accepted a short scale", k.level);
    }
}

/// An anonymous mapping whose second half is `PROT_NONE`: data placed to
/// end at the boundary makes any read past its end fault (and kill the test).
#[cfg(target_os = "linux")]
struct Guarded {
    base: *mut libc::c_void,
}

#[cfg(target_os = "linux")]
impl Guarded {
    /// Bytes before the guard (>= the page size, a multiple of it).
    const PAGE: usize = 1 << 16;

    fn new() -> Guarded {
        // SAFETY: a fresh anonymous private mapping of two PAGE-sized runs,
        // the second made inaccessible; unmapped on drop.
        unsafe {
            let base = libc::mmap(
                core::ptr::null_mut(),
                2 * Self::PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(base, libc::MAP_FAILED);
            let guard = (base as *mut u8).add(Self::PAGE);
            assert_eq!(libc::mprotect(guard.cast(), Self::PAGE, libc::PROT_NONE), 0);
            Guarded { base }
        }
    }

    /// A copy of `src` ending exactly at the guard.
    fn place<T: Copy>(&mut self, src: &[T]) -> &[T] {
        let n = std::mem::size_of_val(src);
        assert!(n <= Self::PAGE);
        // SAFETY: the n bytes before the guard lie inside the writable half;
        // the guard is page-aligned and n a multiple of size_of::<T>() (1 or
        // 4 here), so the copy is aligned for T; `&mut self` ends earlier borrows.
        unsafe {
            let at = (self.base as *mut u8).add(Self::PAGE - n) as *mut T;
            core::ptr::copy_nonoverlapping(src.as_ptr(), at, src.len());
            core::slice::from_raw_parts(at, src.len())
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no slice into it outlives self.
        assert_eq!(unsafe { libc::munmap(self.base, 2 * Self::PAGE) }, 0);
    }
}

/// The compact-format kernels read nothing past their rows: `a` is passed
/// exactly as long as the rows need and placed to end at a `PROT_NONE` page,
/// so a read past it (a tail vector loaded whole on the last row, a group
/// read past the last byte) faults. `u4_row_dots` / `u4_rows` (and their
/// multi-query forms at m = 1, 3, 5) at every width of the 4-bit tests, `i8_row_dots` at every int8 tail length and 128, 129,
/// 200, times 1..=5 and 33 rows; results checked bitwise against the same
/// call on an ordinary copy of `a`.
#[cfg(target_os = "linux")]
#[test]
fn compact_kernels_read_nothing_past_a() {
    let mut g = Guarded::new();
    let mut rng = Rng(93);
    let mut all: Vec<&Kernels> = vec![&portable::KERNELS];
    all.extend(levels());
    for rows in [1usize, 2, 3, 4, 5, 33] {
        for &d in &U4_WIDTHS {
            let src = u4_bytes(&mut rng, rows * d / 2);
            let q = rng.vec(d, 1.0);
            let w = rng.vec(rows * d / 32, 1.0);
            let out0 = rng.vec(d, 1.0);
            let a = g.place(&src);
            for k in &all {
                let (mut got, mut want) = (vec![0.0f32; rows], vec![0.0f32; rows]);
                (k.u4_row_dots)(a, &q, &mut got);
                (k.u4_row_dots)(&src, &q, &mut want);
                assert_eq!(bits(&got), bits(&want), "{:?} d {d} rows {rows}", k.level);
                let (mut got, mut want) = (out0.clone(), out0.clone());
                (k.u4_rows)(&w, a, &mut got);
                (k.u4_rows)(&w, &src, &mut want);
                assert_eq!(bits(&got), bits(&want), "{:?} dv {d} rows {rows}", k.level);
                for m in [1usize, 3, 5] {
                    let qm = rng.vec(m * d, 1.0);
                    let (mut got, mut want) = (vec![0.0f32; m * rows], vec![0.0f32; m * rows]);
                    (k.u4_row_dots_multi)(a, &qm, d, &mut got);
                    (k.u4_row_dots_multi)(&src, &qm, d, &mut want);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{:?} multi d {d} rows {rows}",
                        k.level
                    );
                    let wm = rng.vec(m * rows * d / 32, 1.0);
                    let om = rng.vec(m * d, 1.0);
                    let (mut got, mut want) = (om.clone(), om);
                    (k.u4_rows_multi)(&wm, a, d, &mut got);
                    (k.u4_rows_multi)(&wm, &src, d, &mut want);
                    assert_eq!(
                        bits(&got),
                        bits(&want),
                        "{:?} multi dv {d} rows {rows}",
                        k.level
                    );
                }
            }
        }
        for d in (1..=17usize).chain([31, 33, 63, 64, 65, 128, 129, 200]) {
            let src = i8_keys(&mut rng, rows * d);
            let scale = rng.vec(rows, 1.0);
            let q = rng.vec(d, 1.0);
            let a = g.place(&src);
            for k in &all {
                let (mut got, mut want) = (vec![0.0f32; rows], vec![0.0f32; rows]);
                let mg = (k.i8_row_dots)(a, &scale, &q, &mut got);
                let mw = (k.i8_row_dots)(&src, &scale, &q, &mut want);
                assert_eq!(bits(&got), bits(&want), "{:?} d {d} rows {rows}", k.level);
                assert_eq!(
                    mg.to_bits(),
                    mw.to_bits(),
                    "{:?} d {d} rows {rows}",
                    k.level
                );
            }
        }
    }
}
