//! Recovery kernels against their references, the l2/l2 guarantee measured
//! over many seeds, and the failure modes of `recover_column` / `heavy_tokens`.

mod common;

use attnsketch::recovery::hash::{self, SeedStream, P61};
use attnsketch::recovery::{decode, kernels, reference as rref, Dyadic, Rank, Shape};
use attnsketch::{Config, Error, Mode, Sketch};
use common::Rng;

fn gauss(r: &mut Rng) -> f64 {
    // Irwin-Hall(12) - 6: close enough to N(0,1) for a tail.
    (0..12).map(|_| (r.uni() as f64 + 1.0) * 0.5).sum::<f64>() - 6.0
}

#[test]
fn hashes_match_reference_exactly() {
    let mut rng = Rng(7);
    let mut keys: Vec<u64> = vec![
        0,
        1,
        2,
        P61 - 1,
        P61,
        P61 + 1,
        u64::MAX,
        1 << 61,
        (1 << 62) - 1,
    ];
    keys.extend((0..997).map(|_| rng.next_u64()));
    keys.extend((0..300).map(|i| i as u64));
    for seed in 0..8u64 {
        let mut s = SeedStream::new(seed, 3);
        let h = s.bucket_hash();
        let sg = s.sign_hash();
        for b in [1u32, 7, 16, 96, 1 << 20] {
            // Every length remainder of a batch.
            for len in [0usize, 1, 3, 8, 17, keys.len()] {
                let mut out = vec![0u32; len];
                hash::buckets(&h, b, &keys[..len], &mut out);
                for (i, &o) in out.iter().enumerate() {
                    assert_eq!(o, rref::bucket(&h, keys[i], b), "key {}", keys[i]);
                    assert!(o < b);
                }
            }
        }
        let mut sgn = vec![0.0f32; keys.len()];
        hash::signs(&sg, &keys, &mut sgn);
        for (i, &v) in sgn.iter().enumerate() {
            assert_eq!(v, rref::sign(&sg, keys[i]));
        }
    }
}

#[test]
fn hashes_are_balanced() {
    // Not a proof of independence, but catches a broken hash: buckets near
    // uniform and signs near balanced over consecutive token indices.
    let mut s = SeedStream::new(42, 1);
    let h = s.bucket_hash();
    let sg = s.sign_hash();
    let n = 1 << 16;
    let keys: Vec<u64> = (0..n).collect();
    let mut b = vec![0u32; n as usize];
    hash::buckets(&h, 64, &keys, &mut b);
    let mut cnt = [0u32; 64];
    for &x in &b {
        cnt[x as usize] += 1;
    }
    let e = n as f64 / 64.0;
    let chi2: f64 = cnt.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
    assert!(chi2 < 140.0, "chi2 {chi2} over 63 dof");
    let mut sv = vec![0.0f32; n as usize];
    hash::signs(&sg, &keys, &mut sv);
    let sum: f64 = sv.iter().map(|&v| v as f64).sum();
    assert!(sum.abs() < 5.0 * (n as f64).sqrt(), "sign sum {sum}");
}

#[test]
fn scatter_add_and_projections_match_reference() {
    let mut rng = Rng(3);
    for w in [1usize, 3, 4, 7, 8, 9, 16, 33] {
        let cells = 40;
        let y0: Vec<f32> = rng.vec(cells * w, 2.0);
        let slot: Vec<u32> = (0..21)
            .map(|_| (rng.next_u64() % cells as u64) as u32)
            .collect();
        let sign: Vec<f32> = (0..21)
            .map(|_| if rng.uni() < 0.0 { -1.0 } else { 1.0 })
            .collect();
        let x = rng.vec(w, 3.0);
        let mut y = y0.clone();
        kernels::scatter_add(&mut y, w, &slot, &sign, &x);
        let mut want: Vec<f64> = y0.iter().map(|&v| v as f64).collect();
        for (&c, &s) in slot.iter().zip(&sign) {
            for i in 0..w {
                want[c as usize * w + i] += s as f64 * x[i] as f64;
            }
        }
        for (a, b) in y.iter().zip(&want) {
            // At most 21 f32 adds of magnitude <= 8 each: 21 * 8 * 2^-23.
            assert!((*a as f64 - b).abs() < 21.0 * 8.0 * 1.2e-7, "{a} vs {b}");
        }
        let f = rng.vec(w, 1.0);
        let mut pd = vec![0.0; cells];
        kernels::project_dot(&y, w, &f, &mut pd);
        for c in 0..cells {
            let want: f64 = (0..w).map(|i| y[c * w + i] as f64 * f[i] as f64).sum();
            assert!((pd[c] - want).abs() <= 1e-12 * (1.0 + want.abs()));
        }
        let mut pc = vec![0.0; cells];
        kernels::project_column(&y, w, w - 1, &mut pc);
        for c in 0..cells {
            assert_eq!(pc[c], y[c * w + w - 1] as f64);
        }
    }
}

#[test]
fn median_and_top_k_match_reference() {
    let mut rng = Rng(11);
    for rows in [1usize, 2, 3, 5, 7, 8, 9] {
        let g = 13;
        let v: Vec<f64> = (0..rows * g).map(|_| rng.uni() as f64).collect();
        let mut w = v.clone();
        let mut out = vec![0.0; g];
        kernels::median_rows(&mut w, rows, &mut out);
        for i in 0..g {
            assert_eq!(out[i], rref::median(&v[i * rows..(i + 1) * rows]));
        }
    }
    for n in [0usize, 1, 5, 64, 1000] {
        // Ties included (values on a coarse grid).
        let s: Vec<f64> = (0..n).map(|_| (rng.uni() * 8.0).round() as f64).collect();
        for k in [0usize, 1, 3, 64, 2000] {
            assert_eq!(kernels::top_k(&s, k), rref::top_k(&s, k), "n {n} k {k}");
        }
    }
}

/// Builds a width-1 sketch of `x` and decodes it.
fn sketch_vec(x: &[f64], shape: Shape, seed: u64, k: usize) -> (Dyadic, Vec<(u64, f64)>) {
    let mut sk = Dyadic::new(shape, seed, 1).unwrap();
    for (j, &v) in x.iter().enumerate() {
        sk.record(j as u64, &[v as f32]);
    }
    let mut ys = vec![0.0; shape.cells()];
    kernels::project_column(sk.cells(), 1, 0, &mut ys);
    let got = decode(&sk, &ys, x.len() as u64, k, Rank::Magnitude);
    (sk, got)
}

#[test]
fn dyadic_level0_equals_dense_countsketch() {
    let cfg = {
        let mut c = Config::new(4);
        c.recovery_k = 4;
        c
    };
    let mut shape = attnsketch::recovery::output_shape(&cfg).unwrap();
    shape.width = 1;
    let mut rng = Rng(5);
    let x: Vec<f64> = (0..3000).map(|_| rng.uni() as f64).collect();
    let (sk, _) = sketch_vec(&x, shape, 9, 4);
    for l in [0usize, 1, 2] {
        for r in 0..shape.rows {
            let dense = rref::row_sketch(
                sk.bucket_hash(l, r),
                sk.sign_hash(r),
                4 * l as u32,
                shape.buckets_at(l) as u32,
                &x,
            );
            for (b, &want) in dense.iter().enumerate() {
                let got = sk.cells()[shape.cell(l, r, b as u32)] as f64;
                assert!(
                    (got - want).abs() < 1e-4,
                    "l {l} r {r} b {b}: {got} vs {want}"
                );
            }
        }
    }
}

/// The l2/l2 guarantee on planted vectors: k heavy entries (random signs,
/// magnitudes from 0.3x to 3x the tail norm) on a dense Gaussian tail, n
/// indices, over many seeds; at the documented sizes it must hold in >= 99%.
#[test]
fn l2_l2_guarantee_planted_vectors() {
    for (k, eps, n) in [(8u32, 0.5f32, 4096usize), (4, 0.25, 20000), (16, 1.0, 3000)] {
        let mut cfg = Config::new(4);
        cfg.recovery_k = k;
        cfg.recovery_eps = eps;
        let mut shape = attnsketch::recovery::output_shape(&cfg).unwrap();
        shape.width = 1;
        let trials = 200;
        let mut ok = 0;
        let mut worst = 0.0f64;
        for seed in 0..trials {
            let mut rng = Rng(1000 + seed);
            let mut x: Vec<f64> = (0..n).map(|_| gauss(&mut rng) * 0.01).collect();
            let tail = (n as f64).sqrt() * 0.01;
            for i in 0..k as usize {
                let j = (rng.next_u64() % n as u64) as usize;
                let mag = tail * (0.3 + 2.7 * i as f64 / k as f64);
                x[j] = if rng.uni() < 0.0 { -mag } else { mag };
            }
            let (_, got) = sketch_vec(&x, shape, seed * 7919 + 1, k as usize);
            assert!(got.len() <= k as usize);
            let err = rref::sparse_error(&x, &got);
            let best = rref::best_k_error(&x, k as usize);
            // eps2: f32 rounding of the sketch (relative 1e-5 of ||x||).
            let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
            let bound = (1.0 + eps as f64) * best + 1e-5 * norm;
            worst = worst.max(err / best);
            if err <= bound {
                ok += 1;
            }
        }
        eprintln!("k {k} eps {eps} n {n}: {ok}/{trials} within bound, worst ratio {worst:.3}");
        assert!(ok * 100 >= trials * 99, "k {k} eps {eps}: {ok}/{trials}");
    }
}

/// A non-causal head with planted heavy outputs: a few keys carry a large
/// value in column `col`, and some queries align with them.
fn planted_head(seed: u64, n: usize, k: usize) -> (Sketch, Vec<f64>, Vec<f64>, usize) {
    let (d, dv, col) = (8usize, 4usize, 2usize);
    let mut cfg = Config::new(d as u32);
    cfg.value_dim = dv as u32;
    cfg.degree = 2;
    cfg.mode = Mode::NonCausal;
    cfg.seed = seed;
    cfg.recovery_k = k as u32;
    let mut h = Sketch::new(&cfg).unwrap();
    let mut rng = Rng(seed);
    let mut keys = Vec::new();
    let mut vals = Vec::new();
    for _ in 0..n {
        let kj = rng.vec(d, 0.1);
        let vj = rng.vec(dv, 1.0);
        h.append_kv(&kj, &vj).unwrap();
        keys.push(kj);
        vals.push(vj);
    }
    let planted: Vec<usize> = (0..k)
        .map(|_| (rng.next_u64() % n as u64) as usize)
        .collect();
    for (i, &p) in planted.iter().enumerate() {
        // Planted key: a unit-ish direction, large value in `col`.
        let mut kp = vec![0.0f32; d];
        kp[i % d] = if i % 2 == 0 { 1.5 } else { -1.5 };
        keys[p] = kp;
        vals[p][col] = 40.0 * if rng.uni() < 0.0 { -1.0 } else { 1.0 };
    }
    // Rebuild the head with the planted tokens.
    let mut h2 = Sketch::new(&cfg).unwrap();
    for j in 0..n {
        h2.append_kv(&keys[j], &vals[j]).unwrap();
    }
    h = h2;
    let heavy_q: Vec<usize> = (0..k)
        .map(|_| (rng.next_u64() % n as u64) as usize)
        .collect();
    let mut rec = vec![0.0f64; n];
    let mut exact = vec![0.0f64; n];
    let k64: Vec<f64> = keys.iter().flatten().map(|&v| v as f64).collect();
    let v64: Vec<f64> = vals.iter().flatten().map(|&v| v as f64).collect();
    let mut o = vec![0.0f32; dv];
    for i in 0..n {
        let q = match heavy_q.iter().position(|&x| x == i) {
            Some(t) => keys[planted[t]].iter().map(|&v| v * 12.0).collect(),
            None => rng.vec(d, 0.5),
        };
        h.push_query(&q, &mut o).unwrap();
        rec[i] = o[col] as f64;
        let q64: Vec<f64> = q.iter().map(|&v| v as f64).collect();
        let ex = rref::softmax_attention(&q64, &k64, &v64, d, dv, cfg.scale as f64);
        exact[i] = ex[col];
    }
    (h, rec, exact, col)
}

#[test]
fn l2_l2_guarantee_through_the_head() {
    let (n, k, eps) = (1024usize, 8usize, 0.5f64);
    let trials = 100u64;
    let (mut ok_rec, mut ok_exact) = (0, 0);
    let (mut worst, mut poly_rel) = (0.0f64, 0.0f64);
    for seed in 0..trials {
        let (h, rec, exact, col) = planted_head(seed + 1, n, k);
        let got: Vec<(u64, f64)> = h
            .recover_column(col as u32, k as u32)
            .unwrap()
            .into_iter()
            .map(|(i, v)| (i, v as f64))
            .collect();
        // Heavy outputs really were planted: the top k carry most energy.
        let e2: f64 = rec.iter().map(|v| v * v).sum();
        let best = rref::best_k_error(&rec, k);
        assert!(
            best * best < 0.8 * e2,
            "planting failed: {}",
            best * best / e2
        );
        // (a) against the recorded outputs O (what the sketch saw).
        let norm = e2.sqrt();
        if rref::sparse_error(&rec, &got) <= (1.0 + eps) * best + 1e-5 * norm {
            ok_rec += 1;
        }
        worst = worst.max(rref::sparse_error(&rec, &got) / best);
        poly_rel += (exact
            .iter()
            .zip(&rec)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            / exact.iter().map(|a| a * a).sum::<f64>())
        .sqrt()
            / trials as f64;
        // (b) against exact softmax T: eps2 = (2 + eps) ||T - O|| + f32 slack.
        let poly_err = exact
            .iter()
            .zip(&rec)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        let best_t = rref::best_k_error(&exact, k);
        if rref::sparse_error(&exact, &got)
            <= (1.0 + eps) * best_t + (2.0 + eps) * poly_err + 1e-5 * norm
        {
            ok_exact += 1;
        }
    }
    eprintln!(
        "head: {ok_rec}/{trials} vs recorded (worst ratio {worst:.3}), {ok_exact}/{trials} vs exact \
         softmax (mean relative polynomial error of the column {poly_rel:.3})"
    );
    assert!(ok_rec * 100 >= trials * 99);
    assert!(ok_exact * 100 >= trials * 99);
}

fn small_cfg(recovery_k: u32, retrieval_k: u32, mode: Mode) -> Config {
    let mut c = Config::new(4);
    c.value_dim = 3;
    c.mode = mode;
    c.recovery_k = recovery_k;
    c.retrieval_k = retrieval_k;
    c
}

#[test]
fn failure_modes() {
    let mut h = Sketch::new(&small_cfg(4, 4, Mode::Causal)).unwrap();
    // Nothing recorded: success, empty.
    assert_eq!(h.recover_column(0, 4), Ok(vec![]));
    assert_eq!(h.heavy_tokens(&[0.1; 4], 4), Ok(vec![]));
    let mut rng = Rng(1);
    let mut o = [0.0f32; 3];
    for _ in 0..2 {
        h.push_token(&rng.vec(4, 1.0), &rng.vec(4, 1.0), &rng.vec(3, 1.0), &mut o)
            .unwrap();
    }
    // k = 0: success, empty.
    assert_eq!(h.recover_column(0, 0), Ok(vec![]));
    assert_eq!(h.heavy_tokens(&[0.1; 4], 0), Ok(vec![]));
    // k > recorded tokens: at most the recorded ones.
    let r = h.recover_column(1, 4).unwrap();
    assert!(!r.is_empty() && r.len() <= 2 && r.iter().all(|&(i, _)| i < 2));
    let r = h.heavy_tokens(&[0.1; 4], 4).unwrap();
    assert!(r.len() <= 2 && r.iter().all(|&(i, _)| i < 2));
    // k > configured k, column out of range, bad query.
    assert_eq!(h.recover_column(0, 5), Err(Error::InvalidArg));
    assert_eq!(h.recover_column(3, 1), Err(Error::InvalidArg));
    assert_eq!(h.heavy_tokens(&[0.1; 4], 5), Err(Error::InvalidArg));
    assert_eq!(h.heavy_tokens(&[0.1; 3], 1), Err(Error::InvalidArg));
    assert_eq!(h.heavy_tokens(&[f32::NAN; 4], 1), Err(Error::NonFinite));
    // Handles without the sketches.
    let h0 = Sketch::new(&small_cfg(0, 0, Mode::Causal)).unwrap();
    assert_eq!(h0.recover_column(0, 1), Err(Error::WrongMode));
    assert_eq!(h0.heavy_tokens(&[0.1; 4], 1), Err(Error::WrongMode));
    // Config limits.
    let mut c = small_cfg(4, 0, Mode::Causal);
    c.recovery_eps = 0.0;
    assert_eq!(c.validate(), Err(Error::InvalidArg));
    c.recovery_eps = 1e-9; // absurd bucket count: refused by the size cap
    assert_eq!(c.validate(), Err(Error::InvalidArg));
    let mut c = small_cfg(4, 0, Mode::Causal);
    c.max_tokens = 0;
    assert_eq!(c.validate(), Err(Error::InvalidArg));
    // A bank does not offer them.
    assert_eq!(
        attnsketch::Bank::new(&small_cfg(4, 0, Mode::Causal), 2, 1).err(),
        Some(Error::Unsupported)
    );
}

#[test]
fn recording_is_consistent_across_paths_and_memory_is_flat() {
    let cfg = small_cfg(4, 4, Mode::Causal);
    let mut a = Sketch::new(&cfg).unwrap();
    let mut b = Sketch::new(&cfg).unwrap();
    let bytes = a.state_bytes();
    let plain = Sketch::new(&small_cfg(0, 0, Mode::Causal))
        .unwrap()
        .state_bytes();
    let (o, kk) = (
        attnsketch::recovery::output_shape(&cfg).unwrap(),
        attnsketch::recovery::key_shape(&cfg, 15).unwrap(),
    );
    assert!(bytes as u64 >= plain as u64 + o.bytes() + kk.bytes());
    let mut rng = Rng(2);
    let n = 300;
    let (q, k, v) = (
        rng.vec(n * 4, 1.0),
        rng.vec(n * 4, 1.0),
        rng.vec(n * 3, 1.0),
    );
    let mut out = vec![0.0f32; n * 3];
    b.push_tokens(n, &q, &k, &v, &mut out).unwrap();
    let mut o = [0.0f32; 3];
    for j in 0..n {
        a.push_token(
            &q[j * 4..j * 4 + 4],
            &k[j * 4..j * 4 + 4],
            &v[j * 3..j * 3 + 3],
            &mut o,
        )
        .unwrap();
        let _ = a.query(&q[..4], &mut o); // records nothing
    }
    let ca = a.recorder().out.as_ref().unwrap().cells().to_vec();
    let cb = b.recorder().out.as_ref().unwrap().cells().to_vec();
    // Outputs of the block path differ from single pushes by rounding only.
    let scale = ca.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    for (x, y) in ca.iter().zip(&cb) {
        assert!((x - y).abs() <= 1e-5 * scale, "{x} vs {y}");
    }
    // Key features are the same numbers on both paths.
    let ka = a.recorder().keys.as_ref().map(|s| common::bits(s.cells()));
    let kb = b.recorder().keys.as_ref().map(|s| common::bits(s.cells()));
    assert_eq!(ka, kb);
    let (ra, rb) = (
        a.recover_column(1, 4).unwrap(),
        b.recover_column(1, 4).unwrap(),
    );
    assert_eq!(ra.len(), rb.len());
    for ((ia, va), (ib, vb)) in ra.iter().zip(&rb) {
        assert_eq!(ia, ib);
        assert!((va - vb).abs() <= 1e-4 * (1.0 + va.abs()));
    }
    assert_eq!(a.state_bytes(), bytes);
    // A refused push changes nothing in the sketches.
    let before = common::bits(a.recorder().out.as_ref().unwrap().cells());
    assert!(a
        .push_token(&[f32::NAN; 4], &[0.0; 4], &[0.0; 3], &mut o)
        .is_err());
    assert_eq!(
        before,
        common::bits(a.recorder().out.as_ref().unwrap().cells())
    );
}

/// Retrieval on planted bounded-regime data (d = 16, g = 4, s = 1/d, entries
/// in [-2, 2], n = 4096): 8 keys equal to the query are the true softmax
/// top-8; mean recall@8 over trials must be >= 0.9.
#[test]
fn retrieval_recall_planted_bounded_regime() {
    let (d, n, k) = (16usize, 4096usize, 8usize);
    let trials = 6;
    let mut recall = 0.0;
    for trial in 0..trials {
        let mut rng = Rng(500 + trial);
        let mut cfg = Config::new(d as u32);
        cfg.degree = 4;
        cfg.scale = 1.0 / d as f32;
        cfg.value_dim = 1;
        cfg.mode = Mode::NonCausal;
        cfg.retrieval_k = k as u32;
        cfg.max_tokens = 1 << 16;
        cfg.seed = trial;
        let mut h = Sketch::new(&cfg).unwrap();
        let q: Vec<f32> = (0..d)
            .map(|_| if rng.uni() < 0.0 { -2.0 } else { 2.0 })
            .collect();
        let mut planted = Vec::new();
        while planted.len() < k {
            let j = (rng.next_u64() % n as u64) as usize;
            if !planted.contains(&j) {
                planted.push(j);
            }
        }
        let mut keys = Vec::new();
        for j in 0..n {
            let kj = if planted.contains(&j) {
                q.clone()
            } else {
                rng.vec(d, 2.0)
            };
            h.append_kv(&kj, &[0.0]).unwrap();
            keys.extend(kj.iter().map(|&x| x as f64));
        }
        let q64: Vec<f64> = q.iter().map(|&x| x as f64).collect();
        let w = rref::softmax_weights(&q64, &keys, d, cfg.scale as f64);
        // The planted keys are the true top-k.
        let truth = rref::top_k(&w, k);
        let mut tp = truth.clone();
        tp.sort();
        let mut pl = planted.clone();
        pl.sort();
        assert_eq!(tp, pl);
        let got = h.heavy_tokens(&q, k as u32).unwrap();
        assert!(got.len() <= k);
        for pair in got.windows(2) {
            assert!(pair[0].1 >= pair[1].1, "heaviest first");
        }
        let hit = truth
            .iter()
            .filter(|&&t| got.iter().any(|&(j, _)| j as usize == t))
            .count();
        recall += hit as f64 / k as f64 / trials as f64;
        // Reported weights approximate attention weights of the planted keys.
        for &(j, wt) in &got {
            if planted.contains(&(j as usize)) {
                assert!((wt as f64 - w[j as usize]).abs() < 0.5 * w[j as usize] + 1e-3);
            }
        }
    }
    eprintln!("retrieval recall@8 = {recall:.3}");
    assert!(recall >= 0.9, "recall {recall}");
}
