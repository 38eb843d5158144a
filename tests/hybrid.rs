//! The hybrid state: exact while everything fits, never drops a token,
//! combines exact and tail on one scale, stays within its byte budget.
mod common;
use attnsketch::{reference, Config, Error, Mode, Sketch};
use common::*;

fn hybrid_cfg(d: u32, sinks: u32, window: u32, heavy: u32) -> Config {
    let mut c = Config::new(d);
    c.sink_tokens = sinks;
    c.window_tokens = window;
    c.heavy_tokens = heavy;
    c
}

#[test]
fn exact_while_everything_fits() {
    let mut rng = Rng(21);
    let (d, n) = (8usize, 100usize);
    let c = hybrid_cfg(d as u32, 4, 60, 60);
    let mut h = Sketch::new(&c).unwrap();
    let (q, k, v) = (
        rng.vec(n * d, 2.0),
        rng.vec(n * d, 2.0),
        rng.vec(n * d, 1.0),
    );
    let mut out = vec![0.0f32; n * d];
    h.push_tokens(n, &q, &k, &v, &mut out).unwrap();
    let want =
        reference::softmax_attention_causal(&to64(&q), &to64(&k), &to64(&v), d, d, c.scale as f64);
    let e = reference::rel_err(&to64(&out), &want);
    assert!(e < 1e-5, "rel err {e}");
    assert_eq!(h.hybrid().unwrap().tail_tokens(), 0);
}

#[test]
fn evicted_tokens_are_folded_not_dropped() {
    let mut rng = Rng(22);
    let (d, n) = (8usize, 500usize);
    let c = hybrid_cfg(d as u32, 2, 40, 40);
    let mut h = Sketch::new(&c).unwrap();
    let bytes = h.state_bytes();
    assert_eq!(bytes, Sketch::bytes_for(&c));
    let (q, k, v) = (
        rng.vec(n * d, 1.0),
        rng.vec(n * d, 1.0),
        rng.vec(n * d, 1.0),
    );
    let mut out = vec![0.0f32; n * d];
    h.push_tokens(n, &q, &k, &v, &mut out).unwrap();
    let hy = h.hybrid().unwrap();
    assert_eq!(hy.exact_len() as u64 + hy.tail_tokens(), n as u64);
    assert_eq!(h.state_bytes(), bytes);
    let want =
        reference::softmax_attention_causal(&to64(&q), &to64(&k), &to64(&v), d, d, c.scale as f64);
    let e = reference::rel_err(&to64(&out[n / 2 * d..]), &want[n / 2 * d..]);
    // Dropping instead of folding: sinks + the most recent 80 tokens (same slots).
    let mut drop = vec![0.0f64; n * d];
    for j in n / 2..n {
        let keep: Vec<usize> = (0..2).chain(j + 1 - 80..=j).collect();
        let s: Vec<f64> = keep
            .iter()
            .map(|&i| {
                (0..d)
                    .map(|c| q[j * d + c] as f64 * k[i * d + c] as f64)
                    .sum::<f64>()
                    * c.scale as f64
            })
            .collect();
        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
        let den: f64 = s.iter().map(|x| (x - mx).exp()).sum();
        for (w, &i) in s.iter().zip(&keep) {
            for cc in 0..d {
                drop[j * d + cc] += (w - mx).exp() / den * v[i * d + cc] as f64;
            }
        }
    }
    let e_drop = reference::rel_err(&drop[n / 2 * d..], &want[n / 2 * d..]);
    println!("rel err with 82 exact slots of 500 tokens: {e:.4} (dropping the rest: {e_drop:.4})");
    assert!(e < 0.5 * e_drop, "{e} vs {e_drop}");
}

/// Presets store int8 values exactly when binary16 values would leave fewer
/// than `INT8_BELOW` exact slots (d = dv = 64: 256 KiB..1 MiB int8, 2 MiB
/// and 8 MiB binary16), and int8 then holds more slots.
#[test]
fn presets_pick_int8_values_below_the_slot_threshold() {
    // The slot hybrid's value choice: dims that are not multiples of 32
    // (d = 16, 48) get it with int16 keys; a caller whose struct ends at
    // `value_format` (no `key_format`) gets it with f32 keys at any dims.
    // Dims that are multiples of 32 with both fields get the paged formats.
    use attnsketch::config::INT8_BELOW;
    for &d in &[16u32, 48, 64, 128] {
        for &kib in &[128usize, 256, 512, 1024, 2048, 8192] {
            let bytes = kib * 1024;
            let mut full = Config::new(d);
            full.for_budget(bytes).unwrap();
            if d % 32 == 0 {
                assert_eq!(
                    (full.key_format, full.value_format),
                    (2, 3),
                    "d={d} {kib} KiB"
                );
                assert!(Sketch::bytes_for(&full) <= bytes);
            }
            for keys in [false, true] {
                if keys && d % 32 == 0 {
                    continue;
                }
                let mut c = Config::new(d);
                c.for_budget_with(bytes, keys, true).unwrap();
                let mut c16 = Config::new(d);
                c16.for_budget_formats(bytes, u32::from(keys), 1).unwrap();
                if c16.exact_slots() < INT8_BELOW {
                    assert_eq!(c.value_format, 2, "d={d} {kib} KiB keys {keys}");
                    assert!(c.exact_slots() > c16.exact_slots(), "d={d} {kib} KiB");
                    assert!(Sketch::bytes_for(&c) <= bytes);
                } else {
                    assert_eq!(c, c16, "d={d} {kib} KiB keys {keys}");
                }
                if keys {
                    assert_eq!(c, full, "d={d} {kib} KiB");
                }
            }
            // A caller who cannot see value_format gets f32 values.
            let mut old = Config::new(d);
            old.for_budget_with(bytes, true, false).unwrap();
            assert_eq!(old.value_format, 0);
        }
    }
    // Both branches of the threshold are reached (d = 16, int16 keys).
    let pick = |kib: usize| {
        let mut c = Config::new(16);
        c.for_budget(kib * 1024).unwrap();
        c.value_format
    };
    assert_eq!((pick(128), pick(8192)), (2, 1));
}

#[test]
fn budget_presets_stay_within_budget() {
    for &d in &[16u32, 64, 128] {
        for &kib in &[48usize, 64, 256, 512, 1024, 2048, 8192] {
            let mut c = Config::new(d);
            let r = c.for_budget(kib * 1024);
            if r.is_err() {
                assert_eq!(r, Err(Error::InvalidArg));
                assert!(kib <= 64, "d={d}: {kib} KiB refused");
                continue;
            }
            let h = Sketch::new(&c).unwrap();
            assert!(
                h.state_bytes() <= kib * 1024,
                "d={d} {kib} KiB: {} bytes",
                h.state_bytes()
            );
            assert_eq!(h.state_bytes(), Sketch::bytes_for(&c));
            if kib >= 256 {
                // Most of a larger budget goes to exact tokens.
                let tok = (2 * d as usize) * 4;
                let cap = h.hybrid().unwrap().capacity();
                assert!(
                    cap * tok > kib * 1024 * 3 / 4,
                    "d={d} {kib} KiB: {cap} slots"
                );
            }
        }
    }
    // Too small for exact tokens: degree 0, whose output is the running mean
    // of the values (never the degree-1 sketch, whose weights 1 + s q.k go
    // negative on large scores).
    // The smallest budget that works gets the plain sketch.
    let mut c = Config::new(16);
    let bytes = (64..65536)
        .step_by(64)
        .find(|&b| Config::new(16).for_budget(b).is_ok())
        .unwrap();
    c.for_budget(bytes).unwrap();
    assert!(
        c.sink_tokens == 0 && c.window_tokens == 0 && c.degree == 0,
        "{c:?}"
    );
    let mut h = Sketch::new(&c).unwrap();
    let mut rng = common::Rng(4);
    let (mut sum, mut o) = (vec![0.0f64; 16], vec![0.0f32; 16]);
    for j in 0..300 {
        let (q, k, v) = (rng.vec(16, 30.0), rng.vec(16, 30.0), rng.vec(16, 1.0));
        h.push_token(&q, &k, &v, &mut o).unwrap();
        for (s, &x) in sum.iter_mut().zip(&v) {
            *s += x as f64;
        }
        for (x, s) in o.iter().zip(&sum) {
            assert!((*x as f64 - s / (j + 1) as f64).abs() < 1e-5, "token {j}");
        }
    }
    let mut c = Config::new(64);
    assert_eq!(c.for_budget(1000), Err(Error::InvalidArg));
    assert_eq!(c, Config::new(64), "a refused preset changes nothing");
}

#[test]
fn batched_equals_per_token_and_query_is_read_only() {
    let mut rng = Rng(23);
    let (d, n) = (8usize, 300usize);
    let c = hybrid_cfg(d as u32, 4, 40, 40);
    let mut a = Sketch::new(&c).unwrap();
    let mut b = Sketch::new(&c).unwrap();
    let (q, k, v) = (
        rng.vec(n * d, 1.5),
        rng.vec(n * d, 1.5),
        rng.vec(n * d, 1.0),
    );
    let mut oa = vec![0.0f32; n * d];
    let mut ob = vec![0.0f32; n * d];
    for j in 0..n {
        a.push_token(
            &q[j * d..][..d],
            &k[j * d..][..d],
            &v[j * d..][..d],
            &mut oa[j * d..][..d],
        )
        .unwrap();
        // Until the first eviction, the read-only query of the same q sees the same state: same bits.
        if j + 1 < 84 {
            let mut o2 = vec![0.0f32; d];
            a.query(&q[j * d..][..d], &mut o2).unwrap();
            assert_eq!(bits(&o2), bits(&oa[j * d..][..d]));
        }
    }
    b.push_tokens(n, &q, &k, &v, &mut ob).unwrap();
    assert_eq!(bits(&oa), bits(&ob));
}

#[test]
fn refusals_change_nothing_in_hybrid_mode() {
    let mut rng = Rng(24);
    let d = 8usize;
    let c = hybrid_cfg(d as u32, 2, 20, 20);
    let mut a = Sketch::new(&c).unwrap();
    let mut b = Sketch::new(&c).unwrap();
    let mut o = vec![0.0f32; d];
    for _ in 0..100 {
        let (q, k, v) = (rng.vec(d, 1.0), rng.vec(d, 1.0), rng.vec(d, 1.0));
        a.push_token(&q, &k, &v, &mut o).unwrap();
        b.push_token(&q, &k, &v, &mut o).unwrap();
    }
    let (q, k, v) = (rng.vec(d, 1.0), rng.vec(d, 1.0), rng.vec(d, 1.0));
    let mut big = k.clone();
    big[0] = 3e12; // above 2^40
    assert_eq!(a.push_token(&q, &big, &v, &mut o), Err(Error::Range));
    let mut nan = q.clone();
    nan[1] = f32::NAN;
    assert_eq!(a.push_token(&nan, &k, &v, &mut o), Err(Error::NonFinite));
    assert_eq!(a.append_kv(&k, &v), Err(Error::WrongMode));
    let (mut oa, mut ob) = (vec![0.0f32; d], vec![0.0f32; d]);
    for _ in 0..50 {
        let (q, k, v) = (rng.vec(d, 1.0), rng.vec(d, 1.0), rng.vec(d, 1.0));
        a.push_token(&q, &k, &v, &mut oa).unwrap();
        b.push_token(&q, &k, &v, &mut ob).unwrap();
        assert_eq!(bits(&oa), bits(&ob));
    }
}

#[test]
fn noncausal_hybrid() {
    let mut rng = Rng(25);
    let (d, n) = (8usize, 50usize);
    let mut c = hybrid_cfg(d as u32, 2, 100, 0);
    c.mode = Mode::NonCausal;
    let mut h = Sketch::new(&c).unwrap();
    let (k, v) = (rng.vec(n * d, 1.0), rng.vec(n * d, 1.0));
    for j in 0..n {
        h.append_kv(&k[j * d..][..d], &v[j * d..][..d]).unwrap();
    }
    let q = rng.vec(d, 1.0);
    let (mut o1, mut o2) = (vec![0.0f32; d], vec![0.0f32; d]);
    h.query(&q, &mut o1).unwrap();
    h.push_query(&q, &mut o2).unwrap();
    assert_eq!(bits(&o1), bits(&o2));
    assert_eq!(h.query_count(), 1);
    // Everything fits: exact softmax over all keys.
    let qq: Vec<f32> = (0..n).flat_map(|_| q.clone()).collect();
    let want =
        reference::softmax_attention_causal(&to64(&qq), &to64(&k), &to64(&v), d, d, c.scale as f64);
    assert!(reference::rel_err(&to64(&o1), &want[(n - 1) * d..]) < 1e-5);
    // The window must hold the current token.
    let mut bad = hybrid_cfg(8, 4, 0, 10);
    assert_eq!(Sketch::new(&bad).err(), Some(Error::InvalidArg));
    bad.window_tokens = 1;
    assert!(Sketch::new(&bad).is_ok());
}

#[test]
fn bytes_for_matches_state_bytes_for_every_part() {
    let mut cfgs = Vec::new();
    for (d, dv, g) in [(4u32, 4u32, 2u32), (16, 8, 4), (7, 3, 3)] {
        let mut c = Config::new(d);
        c.value_dim = dv;
        c.degree = g;
        cfgs.push(c.clone());
        let mut r = c.clone();
        r.recovery_k = 8;
        r.retrieval_k = 4;
        r.max_tokens = 1 << 16;
        cfgs.push(r);
        let mut h = c.clone();
        h.degree = 16; // ignored by hybrid heads (degree-0 inside)
        h.window_tokens = 30;
        h.heavy_tokens = 10;
        h.sink_tokens = 3;
        cfgs.push(h.clone());
        for (kf, vf) in [(1, 0), (0, 1), (1, 1), (0, 2), (1, 2)] {
            let mut r = h.clone();
            (r.key_format, r.value_format) = (kf, vf);
            cfgs.push(r);
        }
    }
    for c in cfgs {
        let s = Sketch::new(&c).unwrap();
        assert_eq!(s.state_bytes(), Sketch::bytes_for(&c), "{c:?}");
    }
}

/// A random sign vector (entries +-1).
fn signs(rng: &mut Rng, d: usize) -> Vec<f32> {
    (0..d)
        .map(|_| if rng.next_u64() & 1 == 0 { 1.0 } else { -1.0 })
        .collect()
}

/// The ghost controller moves the window toward the side whose evicted
/// tokens are still attended. Phase 1, a retrieval head: 60 "fact" tokens
/// come first, then filler; every query asks for one fact, so facts pushed
/// out of the (initially 32) heavy slots are attended as ghosts and the
/// window must shrink to make room for them. Phase 2, a lag head: every
/// query attends the token 80 steps back, which a window shorter than 80
/// evicts at its edge, so the window must grow back past 80. Both phases
/// end with the attended token held exactly (output ~ its value).
#[test]
fn ghost_controller_follows_where_evicted_tokens_are_attended() {
    let d = 16usize;
    let mut rng = Rng(31);
    let c = hybrid_cfg(d as u32, 4, 118, 32);
    let mut h = Sketch::new(&c).unwrap();
    let (w_min, w_max) = h.hybrid().unwrap().window_bounds();
    assert_eq!((w_min, w_max, h.hybrid().unwrap().window()), (32, 118, 118));
    let err = retrieval_phase(&mut h, &mut rng, d, 3000, 500);
    let w1 = h.hybrid().unwrap().window();
    assert!(w1 <= 40, "retrieval phase: window {w1} (bounds 32..118)");
    assert!(err < 0.05, "facts not held: mean rel err {err}");
    let mut out = vec![0.0f32; d];

    let mut keys: Vec<Vec<f32>> = Vec::new();
    let mut vals: Vec<Vec<f32>> = Vec::new();
    let mut err_sum = 0.0f64;
    for j in 0..3000usize {
        keys.push(signs(&mut rng, d));
        vals.push(rng.vec(d, 1.0));
        let lag = keys.len().saturating_sub(81);
        let q: Vec<f32> = keys[lag].iter().map(|x| 6.0 * x).collect();
        h.push_token(&q, &keys[j], &vals[j], &mut out).unwrap();
        if j >= 2500 {
            err_sum += rel(&out, &vals[lag]);
        }
    }
    let w2 = h.hybrid().unwrap().window();
    assert!(w2 >= 80, "lag phase: window {w2} (bounds 32..118)");
    assert!(
        err_sum / 500.0 < 0.05,
        "lagged token not held: {}",
        err_sum / 500.0
    );
}

/// The controller's speed scales with capacity (`max(1, C / 1024)` slots
/// per query): at C = 4132 the retrieval head of the test above must get its
/// window from 4096 below 2048 within 1200 queries after the state is full,
/// which one slot per query (at most 1200 slots) cannot do; the facts are
/// then held exactly.
#[test]
fn controller_speed_scales_with_capacity() {
    let d = 16usize;
    let mut rng = Rng(47);
    let c = hybrid_cfg(d as u32, 4, 4096, 32);
    let mut h = Sketch::new(&c).unwrap();
    assert_eq!(h.hybrid().unwrap().window(), 4096);
    let err = retrieval_phase(&mut h, &mut rng, d, 4132 + 1200, 200);
    let w = h.hybrid().unwrap().window();
    assert!(w <= 2048, "window {w} after 1200 full steps (from 4096)");
    assert!(err < 0.05, "facts not held: mean rel err {err}");
}

/// A retrieval head: 60 "fact" tokens (sign keys, random values) at
/// positions 4..64, filler after; each of `n` queries asks for a random
/// fact (query = 4 x its key). Returns the mean relative error of the
/// outputs vs the asked fact's value over the last `tail` queries.
fn retrieval_phase(h: &mut Sketch, rng: &mut Rng, d: usize, n: usize, tail: usize) -> f64 {
    let mut out = vec![0.0f32; d];
    let facts: Vec<(Vec<f32>, Vec<f32>)> =
        (0..60).map(|_| (signs(rng, d), rng.vec(d, 1.0))).collect();
    let mut err_sum = 0.0f64;
    for j in 0..n {
        let (k, v) = if (4..64).contains(&j) {
            facts[j - 4].clone()
        } else {
            (rng.vec(d, 0.1), rng.vec(d, 1.0))
        };
        let r = (rng.next_u64() % 60) as usize;
        let q: Vec<f32> = facts[r].0.iter().map(|x| 4.0 * x).collect();
        h.push_token(&q, &k, &v, &mut out).unwrap();
        if j >= n - tail {
            err_sum += rel(&out, &facts[r].1);
        }
    }
    err_sum / tail as f64
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let n: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let m: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (n / m).sqrt()
}

/// The hybrid attention at every CPU level the machine has (its value sum
/// runs on the level's gemm, its weights on a vector exp): exact while
/// everything fits, against the f64 reference, for value widths that hit
/// every gemm column remainder and exact-slot counts 1..=90 (every exp lane
/// remainder); with evictions, every level within f32 rounding of the
/// portable one.
#[test]
fn every_level_matches_the_reference() {
    let levels: Vec<attnsketch::Level> = attnsketch::Level::ALL
        .iter()
        .copied()
        .filter(|l| l.supported())
        .collect();
    for dv in [1usize, 7, 13, 16, 37] {
        let (d, n) = (8usize, 90usize);
        let mut rng = Rng(40 + dv as u64);
        let (q, k) = (rng.vec(n * d, 2.0), rng.vec(n * d, 2.0));
        let v = rng.vec(n * dv, 1.0);
        let want = reference::softmax_attention_causal(
            &to64(&q),
            &to64(&k),
            &to64(&v),
            d,
            dv,
            (1.0 / (d as f64).sqrt()) as f32 as f64,
        );
        let mut first: Option<Vec<f32>> = None;
        for &l in &levels {
            let mut c = hybrid_cfg(d as u32, 2, 60, 40);
            c.value_dim = dv as u32;
            let mut h = Sketch::with_level(&c, l).unwrap();
            let mut out = vec![0.0f32; n * dv];
            for j in 0..n {
                let (qj, kj) = (&q[j * d..(j + 1) * d], &k[j * d..(j + 1) * d]);
                let vj = &v[j * dv..(j + 1) * dv];
                h.push_token(qj, kj, vj, &mut out[j * dv..(j + 1) * dv])
                    .unwrap();
            }
            let e = reference::rel_err(&to64(&out), &want);
            assert!(e < 1e-5, "{l:?} dv {dv}: rel err {e}");
            // Evictions from here on: compare the levels with each other.
            let mut more = vec![0.0f32; 200 * dv];
            let mut r2 = Rng(7);
            for j in 0..200 {
                let (qj, kj, vj) = (r2.vec(d, 2.0), r2.vec(d, 2.0), r2.vec(dv, 1.0));
                h.push_token(&qj, &kj, &vj, &mut more[j * dv..(j + 1) * dv])
                    .unwrap();
            }
            match &first {
                None => first = Some(more),
                Some(f) => {
                    let e = reference::rel_err(&to64(&more), &to64(f));
                    assert!(e < 1e-4, "{l:?} dv {dv}: vs first level {e}");
                }
            }
        }
    }
}

/// Any finite positive scale with inputs up to the hybrid range gives finite
/// outputs (scores are kept unscaled in f32 and scaled in f64 or inside the
/// exponent: a fuzz input with a huge scale once produced NaN). With scale
/// 1e30 the attention is hard: the output is the value of the best key.
#[test]
fn huge_scales_stay_finite() {
    let d = 4usize;
    for scale in [1e30f32, 3.0e38, 1e-30] {
        let mut c = hybrid_cfg(d as u32, 1, 6, 4);
        c.scale = scale;
        c.tail_groups = 2;
        let mut h = Sketch::new(&c).unwrap();
        let mut rng = Rng(9);
        let mut out = vec![0.0f32; d];
        for j in 0..60 {
            let (q, k, v) = (rng.vec(d, 1e9), rng.vec(d, 1e9), rng.vec(d, 1e9));
            h.push_token(&q, &k, &v, &mut out).unwrap();
            assert!(
                out.iter().all(|x| x.is_finite()),
                "scale {scale} token {j}: {out:?}"
            );
            let mut o2 = vec![0.0f32; 2 * d];
            let (q2, k2, v2) = (
                rng.vec(2 * d, 1e9),
                rng.vec(2 * d, 1e9),
                rng.vec(2 * d, 1e9),
            );
            h.push_tokens(2, &q2, &k2, &v2, &mut o2).unwrap();
            assert!(
                o2.iter().all(|x| x.is_finite()),
                "scale {scale} batch {j}: {o2:?}"
            );
            h.query(&q, &mut out).unwrap();
            assert!(out.iter().all(|x| x.is_finite()));
        }
    }
}

/// Binary16 storage of value `v` as the module doc states it (independent
/// of the library's code): scale `2^e` with `max |v| / 2^e` in `[2^13,
/// 2^14)`, each element rounded to nearest binary16 after the division.
fn binary16_row(v: &[f32]) -> Vec<f32> {
    let amax = v.iter().fold(0.0f64, |a, &x| a.max(x.abs() as f64));
    if amax == 0.0 {
        return v.to_vec();
    }
    let mut e = -126i32;
    while amax / 2f64.powi(e) >= 16384.0 {
        e += 1;
    }
    let s = 2f32.powi(e);
    v.iter()
        .map(|&x| s * half::f16::from_f32(x / s).to_f32())
        .collect()
}

/// Binary16 values at every CPU level against an f64 reference that uses
/// exact values for the sinks and the `R` newest tokens and binary16 rows
/// for the rest (R = clamp(C / 64, 1, 64) = 4 here): within 1e-5 relative,
/// for value widths that hit every gemm column remainder and 1..=150 slots
/// (several conversion blocks and their remainders).
#[test]
fn binary16_values_every_level_matches_the_reference() {
    use attnsketch::sketch::hybrid::fresh_rows;
    let (d, n, sinks) = (8usize, 150usize, 2usize);
    let mut c0 = hybrid_cfg(d as u32, sinks as u32, 200, 56);
    c0.value_format = 1;
    let r = fresh_rows(2 + 200 + 56);
    assert_eq!(r, 4);
    for dv in [1usize, 7, 13, 16, 37] {
        let mut rng = Rng(70 + dv as u64);
        let (q, k) = (rng.vec(n * d, 2.0), rng.vec(n * d, 2.0));
        // Values with full f32 mantissas, rows of different magnitude (huge
        // ranges: the next test; here sums would cancel in f32).
        let mut v = rng.vec(n * dv, 1.0);
        for (i, row) in v.chunks_exact_mut(dv).enumerate() {
            let m = [1e-3f32, 0.5, 1.0, 3.0][i % 4];
            row.iter_mut().for_each(|x| *x *= m);
        }
        let rounded: Vec<f32> = v.chunks_exact(dv).flat_map(binary16_row).collect();
        let s = (1.0 / (d as f64).sqrt()) as f32 as f64;
        let mut want = vec![0.0f64; n * dv];
        for j in 0..n {
            let x: Vec<f64> = (0..=j)
                .map(|i| {
                    s * (0..d)
                        .map(|c| q[j * d + c] as f64 * k[i * d + c] as f64)
                        .sum::<f64>()
                })
                .collect();
            let w = softmax64(&x);
            for i in 0..=j {
                let exact = i < sinks || j - i < r;
                let row = if exact { &v } else { &rounded };
                for c in 0..dv {
                    want[j * dv + c] += w[i] * row[i * dv + c] as f64;
                }
            }
        }
        for l in attnsketch::Level::ALL
            .iter()
            .copied()
            .filter(|l| l.supported())
        {
            let mut c = c0.clone();
            c.value_dim = dv as u32;
            let mut h = Sketch::with_level(&c, l).unwrap();
            let out = push_each(&mut h, &q[..n * d], &k[..n * d], &v[..n * dv], d, dv);
            for j in 0..n {
                let e = reference::rel_err(
                    &to64(&out[j * dv..(j + 1) * dv]),
                    &want[j * dv..(j + 1) * dv],
                );
                assert!(e < 1e-5, "{l:?} dv {dv} token {j}: rel err {e}");
            }
        }
    }
}

/// Binary16 values: a query that sees only one token returns that token's
/// value exactly (to f32 rounding) for a sink and for the newest token, and
/// its binary16 rounding for an older exact token; the rounding is real
/// (differs from the value) and within 2^-11 relative. Values of 1e11 and
/// 1e-20 keep their relative precision (row scales).
#[test]
fn binary16_values_are_exact_for_sinks_and_the_newest_tokens() {
    let (d, n) = (16usize, 200usize);
    let mut c = hybrid_cfg(d as u32, 2, 300, 0);
    c.value_format = 1;
    let mut h = Sketch::new(&c).unwrap();
    let mut rng = Rng(5);
    let mut vs = Vec::new();
    let mut out = vec![0.0f32; d];
    let unit = |c: usize| {
        let mut k = vec![0.0f32; d];
        k[c] = 8.0;
        k
    };
    for j in 0..n {
        // Only three tokens have a key: a sink, an old one and the newest.
        let k = match j {
            0 => unit(2),
            100 => unit(1),
            199 => unit(0),
            _ => vec![0.0; d],
        };
        let mag = match j {
            0 => 1e-20,
            100 => 1e11,
            _ => 1.0,
        };
        let v: Vec<f32> = rng
            .vec(d, 1.0)
            .iter()
            .map(|x| (1.0 + x * 1e-3) * mag)
            .collect();
        h.push_token(&rng.vec(d, 0.1), &k, &v, &mut out).unwrap();
        vs.push(v);
    }
    // Score 0.25 * 100 * 8 = 200 for the target, 0 for the rest.
    let mut q = vec![0.0f32; d];
    for (axis, tok, exact) in [(2usize, 0usize, true), (0, 199, true), (1, 100, false)] {
        q.fill(0.0);
        q[axis] = 100.0;
        h.query(&q, &mut out).unwrap();
        let v = &vs[tok];
        let rel = |a: &[f32], b: &[f32]| {
            let n: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let dd: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
            (n / dd).sqrt()
        };
        let e = rel(&out, v);
        if exact {
            assert!(e < 1e-6, "token {tok}: rel err {e}");
        } else {
            let e16 = rel(&out, &binary16_row(v));
            assert!(e16 < 1e-6, "token {tok}: vs binary16 rounding {e16}");
            assert!(e > 1e-6 && e < 1.0 / 2048.0, "token {tok}: rounding {e}");
        }
    }
}

/// `k` rounded as int16 keys store it: `s = max|k| / 32767` (f32),
/// `n = round(k / s)`, stored `s n` (f64, as the kernel scales the sum).
fn int16_row(k: &[f32]) -> Vec<f64> {
    symmetric_row(k, 32767.0)
}

/// `s round(x / s)` with `s = max|x| / qmax` (f32 arithmetic, as stored).
fn symmetric_row(k: &[f32], qmax: f32) -> Vec<f64> {
    let amax = k.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
    if amax == 0.0 {
        return vec![0.0; k.len()];
    }
    let s = amax / qmax;
    let inv = 1.0 / s;
    k.iter()
        .map(|&x| s as f64 * (x * inv).round().clamp(-qmax, qmax) as f64)
        .collect()
}

/// Causal softmax attention in f64: query row `j < n` (width `d`) over
/// tokens `i <= j` with scale `s`, where `key(i, j, c)` / `val(i, j, c)` is
/// element `c` of token i's key / value as query j sees it (exact or
/// rounded). Returns `n x dv`.
#[allow(clippy::too_many_arguments)]
fn causal_attention64(
    q: &[f32],
    n: usize,
    d: usize,
    dv: usize,
    s: f64,
    key: impl Fn(usize, usize, usize) -> f64,
    val: impl Fn(usize, usize, usize) -> f64,
) -> Vec<f64> {
    let mut want = vec![0.0f64; n * dv];
    for j in 0..n {
        let x: Vec<f64> = (0..=j)
            .map(|i| {
                s * (0..d)
                    .map(|c| q[j * d + c] as f64 * key(i, j, c))
                    .sum::<f64>()
            })
            .collect();
        for (i, wi) in softmax64(&x).into_iter().enumerate() {
            for c in 0..dv {
                want[j * dv + c] += wi * val(i, j, c);
            }
        }
    }
    want
}

/// Int8 values (`value_format` 2) at every CPU level against an f64
/// reference with exact values for the sinks and the `R` newest tokens and
/// the int8 rounding `s round(v / s)`, `s = max|v| / 127`, for the rest
/// (R = 4 here): within 1e-5 relative per output row (norms below 0.1 per
/// column count as 0.1), for value dims that
/// hit every lane remainder of `i8_rows` (8 and 16 lanes, 64- and
/// 128-column blocks), with f32 and int16 keys. The rounding is real: the
/// reference with exact values differs by more than 1e-4.
#[test]
fn int8_values_every_level_match_the_reference() {
    use attnsketch::sketch::hybrid::fresh_rows;
    let (n, sinks, d) = (150usize, 2usize, 6usize);
    let r = fresh_rows(2 + 200 + 56);
    assert_eq!(r, 4);
    for dv in [1usize, 5, 8, 15, 16, 17, 33, 64, 70, 130] {
        let mut rng = Rng(90 + dv as u64);
        let (q, k, v) = (
            rng.vec(n * d, 1.0),
            rng.vec(n * d, 1.0),
            rng.vec(n * dv, 1.0),
        );
        let rounded: Vec<f64> = v
            .chunks_exact(dv)
            .flat_map(|r| symmetric_row(r, 127.0))
            .collect();
        for kf in [0u32, 1] {
            let keys: Vec<f64> = if kf == 0 {
                to64(&k)
            } else {
                k.chunks_exact(d).flat_map(int16_row).collect()
            };
            let s = (1.0 / (d as f64).sqrt()) as f32 as f64;
            let attention = |exact_values: bool| {
                let exact = |i: usize, j: usize| i < sinks || j - i < r;
                causal_attention64(
                    &q,
                    n,
                    d,
                    dv,
                    s,
                    |i, j, c| {
                        if exact(i, j) {
                            k[i * d + c] as f64
                        } else {
                            keys[i * d + c]
                        }
                    },
                    |i, j, c| {
                        if exact_values || exact(i, j) {
                            v[i * dv + c] as f64
                        } else {
                            rounded[i * dv + c]
                        }
                    },
                )
            };
            let (want, all_exact) = (attention(false), attention(true));
            let moved = reference::rel_err(&want, &all_exact);
            // (A one-element row is exact: v / s = +-127.)
            assert!(
                dv == 1 || moved > 1e-4,
                "dv {dv}: the rounding moves outputs by only {moved}"
            );
            let mut c0 = hybrid_cfg(d as u32, sinks as u32, 200, 56);
            (c0.value_dim, c0.key_format, c0.value_format) = (dv as u32, kf, 2);
            for l in attnsketch::Level::ALL
                .iter()
                .copied()
                .filter(|l| l.supported())
            {
                let mut h = Sketch::with_level(&c0, l).unwrap();
                let out = push_each(&mut h, &q[..n * d], &k[..n * d], &v[..n * dv], d, dv);
                for j in 0..n {
                    // Relative to the row, or to 0.1 per column where the
                    // weighted mean of values in [-1, 1] cancels (dv = 1).
                    let row = j * dv..(j + 1) * dv;
                    let diff: f64 = out[row.clone()]
                        .iter()
                        .zip(&want[row.clone()])
                        .map(|(&o, &w)| (o as f64 - w).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    let norm = want[row].iter().map(|w| w * w).sum::<f64>().sqrt();
                    let e = diff / norm.max(0.1 * (dv as f64).sqrt());
                    assert!(e < 1e-5, "{l:?} dv {dv} keys {kf} token {j}: rel err {e}");
                }
            }
        }
    }
}

/// Int16 keys at every CPU level against an f64 reference that uses exact
/// keys for the sinks and the `R` newest tokens and the int16 rounding for
/// the rest (R = 4 here): within 1e-5 relative per output row (f32 scores up to ~70), for head
/// dims that hit every lane remainder of `i16_row_dots`, with f32 and with
/// binary16 values. The rounding is real: the reference with every key
/// exact differs by more than the tolerance.
#[test]
fn int16_keys_every_level_matches_the_reference() {
    use attnsketch::sketch::hybrid::fresh_rows;
    let (n, sinks, dv) = (150usize, 2usize, 5usize);
    let r = fresh_rows(2 + 200 + 56);
    assert_eq!(r, 4);
    for d in [1usize, 3, 8, 15, 16, 17, 33, 64, 70] {
        let mut rng = Rng(170 + d as u64);
        // Large scores (sharp weights) make the key rounding visible.
        let (q, k, v) = (
            rng.vec(n * d, 3.0),
            rng.vec(n * d, 3.0),
            rng.vec(n * dv, 1.0),
        );
        let rounded: Vec<f64> = k.chunks_exact(d).flat_map(int16_row).collect();
        let s = (1.0 / (d as f64).sqrt()) as f32 as f64;
        let attention = |exact_keys: bool| {
            causal_attention64(
                &q,
                n,
                d,
                dv,
                s,
                |i, j, c| {
                    if exact_keys || i < sinks || j - i < r {
                        k[i * d + c] as f64
                    } else {
                        rounded[i * d + c]
                    }
                },
                |i, _, c| v[i * dv + c] as f64,
            )
        };
        let (want, all_exact) = (attention(false), attention(true));
        let mut moved = 0.0f64;
        for j in 0..n {
            let row = j * dv..(j + 1) * dv;
            moved = moved.max(reference::rel_err(&want[row.clone()], &all_exact[row]));
        }
        if d >= 8 {
            assert!(
                moved > 1e-5,
                "d {d}: the rounding moves outputs by only {moved}"
            );
        }
        for vf in [0u32, 1] {
            let mut c0 = hybrid_cfg(d as u32, sinks as u32, 200, 56);
            (c0.value_dim, c0.key_format, c0.value_format) = (dv as u32, 1, vf);
            for l in attnsketch::Level::ALL
                .iter()
                .copied()
                .filter(|l| l.supported())
            {
                let mut h = Sketch::with_level(&c0, l).unwrap();
                let out = push_each(&mut h, &q[..n * d], &k[..n * d], &v[..n * dv], d, dv);
                // Binary16 values (not rounded in the reference) add their
                // own rounding, 2^-12 relative per element (more where
                // the weighted sum cancels).
                let tol = if vf == 0 { 1e-5 } else { 2e-3 };
                for j in 0..n {
                    let row = j * dv..(j + 1) * dv;
                    let e = reference::rel_err(&to64(&out[row.clone()]), &want[row]);
                    assert!(e < tol, "{l:?} d {d} values {vf} token {j}: rel err {e}");
                }
            }
        }
    }
}

/// Int16 keys: a token's key is exact while it is a sink or among the `R`
/// newest, and its int16 rounding once older (`key_of_position`: the key
/// scores see); keys of 1e-20, 1 and 1e11 keep half of 2^-15 of their row
/// maximum (row scales).
#[test]
fn int16_keys_are_exact_for_sinks_and_the_newest_tokens() {
    let d = 6usize;
    for mag in [1e-20f32, 1.0, 1e11] {
        let mut c = hybrid_cfg(d as u32, 1, 300, 0);
        c.key_format = 1;
        let mut h = Sketch::new(&c).unwrap();
        let mut rng = Rng(9);
        let mut keys = Vec::new();
        let mut out = vec![0.0f32; d];
        for _ in 0..40 {
            let k: Vec<f32> = rng.vec(d, 1.0).iter().map(|x| x * mag).collect();
            h.push_token(&rng.vec(d, 0.1), &k, &rng.vec(d, 1.0), &mut out)
                .unwrap();
            keys.push(k);
        }
        let hy = h.hybrid().unwrap();
        // R = 4 newest and sink 0 exact; tokens 1..36 rounded.
        for (tok, exact) in [
            (0usize, true),
            (39, true),
            (36, true),
            (35, false),
            (10, false),
        ] {
            let got = hy.key_of_position(tok as u64).unwrap();
            let want = &keys[tok];
            let amax = want.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
            let err = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            if exact {
                assert_eq!(&got[..], &want[..], "mag {mag} token {tok}");
            } else {
                assert!(err > 0.0, "mag {mag} token {tok}: not rounded");
                assert!(
                    err <= amax / 32767.0 * 0.5001,
                    "mag {mag} token {tok}: err {err} of {amax}"
                );
            }
        }
    }
}

/// Int16 keys, a huge query: the rounded score of a sink (a row with a
/// residual) exceeds its exact score by ~1e5, so a softmax shifted by that
/// bound underflows every weight (0 / 0). The shift must be the exact
/// maximum: one token answers its value, two tokens a finite mix (found by
/// the `calls` fuzz target: d 8, dv 1, 3 sinks, window 8, binary16 values).
#[test]
fn int16_keys_huge_queries_keep_a_finite_softmax() {
    let mut c = hybrid_cfg(8, 3, 8, 0);
    (c.value_dim, c.degree, c.key_format, c.value_format) = (1, 0, 1, 1);
    let mut h = Sketch::new(&c).unwrap();
    let k = [
        3.28125f32, 3.46875, -1.21875, 0.1875, 0.1875, -0.0, -1.0625, -1.0625,
    ];
    let q0 = [0.1875f32, 0.1875, 0.1875, 0.1875, 0.0, -0.0, -0.0, 3.0625];
    let mut out = [0.0f32];
    h.push_token(&q0, &k, &[-1.0625], &mut out).unwrap();
    let q = [
        0.0f32,
        0.0,
        -0.0,
        -0.0,
        0.84375,
        -1.0625,
        0.84375,
        -6960241700.0,
    ];
    h.query(&q, &mut out).unwrap();
    assert_eq!(out[0], -1.0625, "one token: its value");
    let k2 = [1.0f32, -2.0, 0.5, 0.25, -0.75, 1.5, 2.0, -1.0];
    h.push_token(&q0, &k2, &[2.5], &mut out).unwrap();
    for qq in [q, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.9e9], [1e11; 8]] {
        h.query(&qq, &mut out).unwrap();
        assert!(
            out[0].is_finite() && (-1.0625..=2.5).contains(&out[0]),
            "{qq:?}: {out:?}"
        );
    }
}

/// GQA: eviction sees every query head of a group. Only the second query
/// head attends the marker tokens (keys along axis 0); the first never does.
/// With the accumulated attention summed over the group the markers keep
/// heavy slots long after they left the window; driven by the first head
/// alone (as before) they were evicted.
#[test]
fn bank_keeps_tokens_only_a_later_query_head_attends() {
    let d = 4usize;
    let mut c = hybrid_cfg(d as u32, 1, 8, 8);
    c.scale = 0.5;
    let mut bank = attnsketch::Bank::new(&c, 2, 1).unwrap();
    let mut rng = Rng(5);
    // Late enough that the decayed scores of the first tokens have faded.
    let markers = [400usize, 500, 600];
    let n = 1000;
    let mut out = vec![0.0f32; 2 * d];
    for j in 0..n {
        let mut k = rng.vec(d, 0.5);
        k[0] = 0.0;
        if markers.contains(&j) {
            k = vec![4.0, 0.0, 0.0, 0.0];
        }
        let v = rng.vec(d, 1.0);
        let mut q = vec![0.0f32; 2 * d];
        q[1..d].copy_from_slice(&rng.vec(d - 1, 0.5)); // head 0: never axis 0
        q[d] = 3.0; // head 1: the markers
        bank.push_token(&q, &k, &v, &mut out).unwrap();
    }
    let hy = bank.head(0).unwrap().hybrid().unwrap();
    for &p in &markers {
        let live: Vec<u64> = (0..n as u64)
            .filter(|&x| hy.key_of_position(x).is_some())
            .collect();
        assert!(
            hy.key_of_position(p as u64).is_some(),
            "marker {p} was evicted; live {live:?}"
        );
    }
}

#[test]
fn paged_preset_is_the_longest_window_with_one_tail_group() {
    // The preset: no heavy slots, PAGED_GROUPS tail groups, and no whole
    // page more would fit.
    use attnsketch::config::PAGED_GROUPS;
    for &d in &[64u32, 128, 256] {
        for &kib in &[64usize, 128, 256, 512, 1024, 2048] {
            let bytes = kib * 1024;
            let mut c = Config::new(d);
            c.for_budget(bytes).unwrap();
            assert_eq!((c.key_format, c.value_format), (2, 3), "d={d} {kib} KiB");
            assert_eq!(c.tail_groups, PAGED_GROUPS, "d={d} {kib} KiB");
            assert_eq!(c.heavy_tokens, 0, "d={d} {kib} KiB");
            assert!(Sketch::bytes_for(&c) <= bytes);
            let mut more = c.clone();
            more.window_tokens += 32;
            assert!(
                Sketch::bytes_for(&more) > bytes,
                "d={d} {kib} KiB: a page more fits"
            );
        }
    }
}
