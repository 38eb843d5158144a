//! The recovery kernels of every supported level (`Kernels::rec_*`) against
//! the naive references in `recovery::reference` and the scalar kernels in
//! `recovery::kernels`, over lengths 0..=130 (every remainder of 4, 8 and 16
//! lanes).
//!
//! Expected agreement:
//! - bucket and sign hashes: equal to `reference::{bucket, sign}` (u128 `%`)
//!   for every key, including keys >= p = 2^61 - 1 up to `u64::MAX`;
//! - token slots: equal to the cells / signs of the references;
//! - `scatter_add`: bitwise the scalar kernel (one product, one add per
//!   element), and within `n_adds * 2^-24 * sum|terms|` of f64;
//! - `project_dot`: within `(w + 2) 2^-53 sum |y_i f_i|` of an accurate
//!   (Neumaier) f64 sum; the products are exact in f64;
//! - medians: bitwise `reference::median` (a full `total_cmp` sort), NaN
//!   (either sign), +-0 and +-inf included (a NaN median only has to be a
//!   NaN), and every group left sorted in `total_cmp` order, bitwise;
//! - top-k: the same index list as `reference::top_k` (ties to the lower
//!   index, NaN ranked as -inf).
//!
//! Levels the CPU lacks are reported on stderr and skipped; `for_level`
//! must refuse them (checked), so a skip cannot hide a missing level.

mod common;

use attnsketch::recovery::hash::{BucketHash, SeedStream, SignHash, P61};
use attnsketch::recovery::{decode, kernels, reference as rref, Dyadic, Rank, Shape};
use common::{kernel_levels as levels, Rng};

/// Keys: edge values around p and u64::MAX, then random ones (plain, near
/// p, near 2^64, small token indices), shuffled by construction.
fn keys(rng: &mut Rng, n: usize) -> Vec<u64> {
    let mut k = vec![
        0,
        1,
        2,
        P61 - 1,
        P61,
        P61 + 1,
        1 << 61,
        (1 << 62) - 1,
        1 << 63,
        2 * P61,
        2 * P61 + 1,
        u64::MAX,
        u64::MAX - 1,
        u64::MAX - P61,
    ];
    while k.len() < n {
        let r = rng.next_u64();
        k.push(match r % 5 {
            0 => r,
            1 => P61.wrapping_add(r % 64).wrapping_sub(32),
            2 => u64::MAX - (r >> 58),
            3 => r >> 40,
            _ => (r >> 3) | (1 << 61),
        });
    }
    k.truncate(n);
    k
}

/// Hash functions: seeded ones plus coefficients at the ends of `[0, p)`.
fn hashes() -> Vec<(BucketHash, SignHash)> {
    let mut v = vec![
        (BucketHash { a: 0, c: 0 }, SignHash { c: [0; 4] }),
        (
            BucketHash {
                a: P61 - 1,
                c: P61 - 1,
            },
            SignHash { c: [P61 - 1; 4] },
        ),
        (
            BucketHash { a: 1, c: P61 - 1 },
            SignHash {
                c: [1, 0, 0, P61 - 1],
            },
        ),
    ];
    for seed in 0..6u64 {
        let mut s = SeedStream::new(seed, 5);
        v.push((s.bucket_hash(), s.sign_hash()));
    }
    v
}

#[test]
fn hashes_equal_reference_exactly() {
    let mut rng = Rng(21);
    let ks = keys(&mut rng, 130 + 64);
    for k in levels() {
        for (h, s) in hashes() {
            for b in [1u32, 2, 7, 16, 96, 1 << 20, u32::MAX] {
                for len in 0..=130usize {
                    let off = len % 64;
                    let src = &ks[off..off + len];
                    // One slot longer than the keys: must stay untouched.
                    let mut out = vec![u32::MAX; len + 1];
                    (k.rec_buckets)(&h, b, src, &mut out);
                    for (i, &x) in src.iter().enumerate() {
                        assert_eq!(
                            out[i],
                            rref::bucket(&h, x, b),
                            "{:?} b={b} key={x}",
                            k.level
                        );
                        assert!(out[i] < b);
                    }
                    assert_eq!(out[len], u32::MAX, "{:?} wrote past the keys", k.level);
                }
            }
            for len in 0..=130usize {
                let off = (3 * len) % 64;
                let src = &ks[off..off + len];
                let mut out = vec![7.0f32; len + 1];
                (k.rec_signs)(&s, src, &mut out);
                for (i, &x) in src.iter().enumerate() {
                    assert_eq!(
                        out[i].to_bits(),
                        rref::sign(&s, x).to_bits(),
                        "{:?} key={x}",
                        k.level
                    );
                }
                assert_eq!(out[len], 7.0, "{:?} wrote past the keys", k.level);
                // A shorter output bounds the batch.
                let mut short = vec![0.0f32; len / 2];
                (k.rec_signs)(&s, src, &mut short);
                assert!(short.iter().zip(&out).all(|(a, b)| a == b));
            }
        }
    }
}

#[test]
fn token_slots_equal_reference() {
    let mut rng = Rng(5);
    let js = keys(&mut rng, 60);
    for k in levels() {
        for rows in 1..=11usize {
            for levels_ in [1usize, 2, 5, 9, 17] {
                let shape = Shape {
                    levels: levels_,
                    rows,
                    buckets: 16 + rows,
                    buckets0: 3 * (16 + rows) + 1,
                    beam: 16,
                    width: 1,
                };
                let mut s = SeedStream::new(rows as u64 * 31 + levels_ as u64, 9);
                let bucket: Vec<BucketHash> =
                    (0..levels_ * rows).map(|_| s.bucket_hash()).collect();
                let sign: Vec<SignHash> = (0..rows).map(|_| s.sign_hash()).collect();
                let lr = levels_ * rows;
                for &j in &js {
                    let mut slot = vec![u32::MAX; lr + 1];
                    let mut sg = vec![9.0f32; lr + 1];
                    (k.rec_token_slots)(&bucket, &sign, &shape, j, &mut slot[..lr], &mut sg[..lr]);
                    for l in 0..levels_ {
                        let key = if l * 4 >= 64 { 0 } else { j >> (4 * l) };
                        let b = shape.buckets_at(l) as u32;
                        for (r, sr) in sign.iter().enumerate() {
                            let i = l * rows + r;
                            let want = shape.cell(l, r, rref::bucket(&bucket[i], key, b));
                            assert_eq!(
                                slot[i] as usize, want,
                                "{:?} rows={rows} l={l} j={j}",
                                k.level
                            );
                            assert_eq!(sg[i], rref::sign(sr, j), "{:?} sign r={r}", k.level);
                        }
                    }
                    assert_eq!((slot[lr], sg[lr]), (u32::MAX, 9.0));
                    // Same as the scalar kernel.
                    let (mut s2, mut g2) = (vec![0u32; lr], vec![0.0f32; lr]);
                    kernels::token_slots(&bucket, &sign, &shape, j, &mut s2, &mut g2);
                    assert_eq!(&slot[..lr], &s2[..]);
                    assert_eq!(&sg[..lr], &g2[..]);
                }
            }
        }
    }
}

#[test]
fn scatter_add_bitwise_scalar_and_close_to_f64() {
    let mut rng = Rng(8);
    for w in 1..=130usize {
        let cells = 11;
        let y0 = rng.vec(cells * w, 2.0);
        let nslot = 1 + w % 23;
        let slot: Vec<u32> = (0..nslot)
            .map(|_| (rng.next_u64() % cells as u64) as u32)
            .collect();
        // Signs +-1 (the sketch) and a few general factors (bitwise too).
        let sign: Vec<f32> = (0..nslot)
            .map(|i| match i % 5 {
                4 => rng.uni() * 3.0,
                _ if rng.uni() < 0.0 => -1.0,
                _ => 1.0,
            })
            .collect();
        let x = rng.vec(w + 3, 3.0);
        let mut want = y0.clone();
        kernels::scatter_add(&mut want, w, &slot, &sign, &x[..w]);
        let mut exact: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
        let mut mag: Vec<f64> = y0.iter().map(|&v| v.abs() as f64).collect();
        for (&c, &s) in slot.iter().zip(&sign) {
            for i in 0..w {
                exact[c as usize * w + i] += s as f64 * x[i] as f64;
                mag[c as usize * w + i] += (s as f64 * x[i] as f64).abs();
            }
        }
        for k in levels() {
            let mut y = y0.clone();
            (k.rec_scatter_add)(&mut y, w, &slot, &sign, &x);
            assert_eq!(common::bits(&y), common::bits(&want), "{:?} w={w}", k.level);
            for (j, &g) in y.iter().enumerate() {
                let tol = 2.0 * (nslot as f64 + 1.0) * 2f64.powi(-24) * mag[j] + 1e-30;
                assert!(
                    (g as f64 - exact[j]).abs() <= tol,
                    "{:?} w={w} j={j}",
                    k.level
                );
            }
        }
    }
}

/// Neumaier-compensated sum (accurate to ~1 ulp for these sizes).
fn accurate_sum(t: &[f64]) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for &x in t {
        let u = s + x;
        c += if s.abs() >= x.abs() {
            (s - u) + x
        } else {
            (x - u) + s
        };
        s = u;
    }
    s + c
}

#[test]
fn project_dot_within_bound() {
    let mut rng = Rng(13);
    for w in 1..=130usize {
        let cells = 9;
        let mut y = rng.vec(cells * w, 4.0);
        // Magnitudes spread over many binades so summation order matters.
        for (i, v) in y.iter_mut().enumerate() {
            *v *= (1u32 << (i % 17)) as f32;
        }
        let f = rng.vec(w + 2, 1.0);
        for k in levels() {
            let mut out = vec![f64::NAN; cells + 1];
            (k.rec_project_dot)(&y, w, &f, &mut out[..cells]);
            assert!(out[cells].is_nan(), "wrote past out");
            for c in 0..cells {
                let terms: Vec<f64> = (0..w).map(|i| y[c * w + i] as f64 * f[i] as f64).collect();
                let want = accurate_sum(&terms);
                let abs: f64 = terms.iter().map(|t| t.abs()).sum();
                let tol = (w as f64 + 2.0) * 2f64.powi(-53) * abs + 1e-300;
                assert!(
                    (out[c] - want).abs() <= tol,
                    "{:?} w={w} c={c}: {} vs {want}",
                    k.level,
                    out[c]
                );
            }
        }
    }
}

/// Group values: random, with ties, +-0, +-inf and NaNs of both signs
/// (with payloads) mixed in when `special`.
fn group_values(rng: &mut Rng, n: usize, special: bool) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            if special && r.is_multiple_of(7) {
                match (r >> 8) % 7 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => f64::INFINITY,
                    3 => f64::NEG_INFINITY,
                    4 => f64::from_bits(0x7ff8_0000_0000_0000 | (r >> 20)),
                    5 => f64::from_bits(0xfff0_0000_0000_0001 | (r >> 24)),
                    _ => f64::MIN_POSITIVE / 4.0,
                }
            } else if r.is_multiple_of(3) {
                ((r >> 20) % 5) as f64 - 2.0
            } else {
                rng.uni() as f64 * 1e3
            }
        })
        .collect()
}

#[test]
fn median_equals_reference_bitwise() {
    let mut rng = Rng(17);
    for rows in 1..=20usize {
        let ms: Vec<usize> = if rows <= 9 {
            (0..=130).collect()
        } else {
            vec![0, 1, 3, 4, 7, 8, 15, 16, 17, 33, 130]
        };
        for m in ms {
            for special in [false, true] {
                let v = group_values(&mut rng, rows * m, special);
                for k in levels() {
                    let mut w = v.clone();
                    let mut out = vec![7.5f64; m + 1];
                    (k.rec_median)(&mut w, rows, &mut out[..m]);
                    assert_eq!(out[m], 7.5, "wrote past out");
                    for i in 0..m {
                        let mut g: Vec<f64> = (0..rows).map(|r| v[r * m + i]).collect();
                        let want = rref::median(&g);
                        if want.is_nan() {
                            assert!(out[i].is_nan(), "{:?} rows={rows} m={m} i={i}", k.level);
                        } else {
                            assert_eq!(
                                out[i].to_bits(),
                                want.to_bits(),
                                "{:?} rows={rows} m={m} i={i}",
                                k.level
                            );
                        }
                        g.sort_by(|a, b| a.total_cmp(b));
                        for r in 0..rows {
                            assert_eq!(
                                w[r * m + i].to_bits(),
                                g[r].to_bits(),
                                "{:?} sorted rows={rows} i={i}",
                                k.level
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn median_networks_sort_every_zero_one_input() {
    // 0-1 principle: a comparator network that sorts all 2^rows inputs of
    // zeros and ones sorts every input. One group per pattern.
    for rows in 1..=14usize {
        let m = 1usize << rows;
        let v: Vec<f64> = (0..rows * m)
            .map(|q| ((q % m) >> (q / m) & 1) as f64)
            .collect();
        for k in levels() {
            let mut w = v.clone();
            let mut out = vec![0.0; m];
            (k.rec_median)(&mut w, rows, &mut out);
            for i in 0..m {
                let ones = (i as u32).count_ones() as usize;
                for r in 0..rows {
                    let want = if r >= rows - ones { 1.0 } else { 0.0 };
                    assert_eq!(
                        w[r * m + i],
                        want,
                        "{:?} rows={rows} pattern={i:b}",
                        k.level
                    );
                }
            }
        }
    }
}

#[test]
fn median_matches_scalar_interleaved_kernel() {
    // Same medians as the interleaved scalar `median_rows` on NaN-free data.
    let mut rng = Rng(19);
    for rows in [5usize, 7, 8, 9] {
        let m = 101;
        let planar = group_values(&mut rng, rows * m, false);
        let mut inter: Vec<f64> = (0..rows * m)
            .map(|j| planar[(j % rows) * m + j / rows])
            .collect();
        let mut want = vec![0.0; m];
        kernels::median_rows(&mut inter, rows, &mut want);
        for k in levels() {
            let mut w = planar.clone();
            let mut out = vec![0.0; m];
            (k.rec_median)(&mut w, rows, &mut out);
            assert_eq!(out, want, "{:?} rows={rows}", k.level);
        }
    }
}

/// Score patterns for top-k: random, coarse ties, specials, sorted both
/// ways (ascending makes every element enter the heap), constant.
fn scores(rng: &mut Rng, n: usize, pattern: usize) -> Vec<f64> {
    match pattern {
        0 => (0..n).map(|_| rng.uni() as f64).collect(),
        1 => (0..n).map(|_| (rng.uni() * 4.0).round() as f64).collect(),
        2 => group_values(rng, n, true),
        3 => (0..n).map(|i| i as f64 * 0.5).collect(),
        4 => (0..n).map(|i| -(i as f64)).collect(),
        _ => vec![1.25; n],
    }
}

#[test]
fn top_k_equals_reference() {
    let mut rng = Rng(23);
    let mut sizes: Vec<usize> = (0..=130).collect();
    sizes.extend([255, 1000, 2048, 5003]);
    for &n in &sizes {
        for pattern in 0..6 {
            let s = scores(&mut rng, n, pattern);
            let mut ks = vec![
                0usize,
                1,
                2,
                3,
                7,
                8,
                9,
                64,
                n / 8,
                n / 2,
                n.saturating_sub(1),
                n,
                n + 5,
            ];
            ks.dedup();
            for &kk in &ks {
                let want = rref::top_k(&s, kk);
                assert_eq!(
                    kernels::top_k(&s, kk),
                    want,
                    "scalar n={n} k={kk} p={pattern}"
                );
                for k in levels() {
                    assert_eq!(
                        (k.rec_top_k)(&s, kk),
                        want,
                        "{:?} n={n} k={kk} p={pattern}",
                        k.level
                    );
                }
            }
        }
    }
}

#[test]
fn top_k_signed_zero_and_nan_thresholds() {
    // The k-th best is -0.0 and a later +0.0 must still enter (total order
    // puts +0 above -0 although they compare equal); NaNs rank as -inf and
    // tie with -inf by index.
    for n in [64usize, 65, 100, 257] {
        for pos in [8usize, 9, 15, 16, 17, 40, n - 1] {
            let mut s = vec![-1.0f64; n];
            s[..8].fill(-0.0);
            s[pos] = 0.0;
            let want = rref::top_k(&s, 8);
            assert_eq!(want[0], pos);
            let mut t = vec![f64::NAN; n];
            t[3] = f64::NEG_INFINITY;
            t[pos] = f64::NEG_INFINITY;
            t[n / 2] = -f64::NAN;
            for k in levels() {
                assert_eq!((k.rec_top_k)(&s, 8), want, "{:?} n={n} pos={pos}", k.level);
                for kk in [1usize, 4, 8] {
                    assert_eq!(
                        (k.rec_top_k)(&t, kk),
                        rref::top_k(&t, kk),
                        "{:?} nan n={n}",
                        k.level
                    );
                }
            }
        }
    }
}

/// A sketch recorded and decoded at every level: cells bitwise equal (the
/// hashes and the scatter are exact), hence identical decodes.
#[test]
fn dyadic_record_and_decode_identical_across_levels() {
    let mut cfg = attnsketch::Config::new(5);
    cfg.recovery_k = 4;
    cfg.max_tokens = 1 << 20;
    let shape = attnsketch::recovery::output_shape(&cfg).unwrap();
    let n = 3000u64;
    let mut rng = Rng(29);
    let xs: Vec<Vec<f32>> = (0..n)
        .map(|j| {
            let mut x = rng.vec(5, 0.05);
            if j % 397 == 11 {
                x[0] += 4.0 + (j as f32) * 1e-3;
            }
            x
        })
        .collect();
    let mut results = Vec::new();
    for k in levels() {
        let mut sk = Dyadic::new(shape, 77, 1).unwrap();
        sk.set_kernels(k);
        assert_eq!(sk.kernels().level, k.level);
        for (j, x) in xs.iter().enumerate() {
            sk.record(j as u64, x);
        }
        let mut ys = vec![0.0; shape.cells()];
        kernels::project_column(sk.cells(), 5, 0, &mut ys);
        let got = decode(&sk, &ys, n, 8, Rank::Magnitude);
        let heavy: Vec<u64> = (0..n).filter(|j| j % 397 == 11).collect();
        for h in &heavy {
            assert!(
                got.iter().any(|(i, _)| i == h),
                "{:?} missed heavy {h}",
                k.level
            );
        }
        let f: Vec<f32> = (0..5).map(|i| 0.3 - 0.1 * i as f32).collect();
        let mut yd = vec![0.0; shape.cells()];
        (k.rec_project_dot)(sk.cells(), 5, &f, &mut yd);
        let got_dot = decode(&sk, &yd, n, 8, Rank::Positive);
        results.push((k.level, common::bits(sk.cells()), got, got_dot.len()));
    }
    let (l0, cells0, dec0, _) = &results[0];
    for (l, cells, dec, _) in &results[1..] {
        assert!(cells == cells0, "{l:?} cells differ from {l0:?}");
        assert_eq!(dec, dec0, "{l:?} decode differs from {l0:?}");
    }
}
