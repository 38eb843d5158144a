//! The paged hybrid (4-bit window pages, int8-key heavy slots, moment tail):
//! its attention against an f64 reference that stores tokens the same way,
//! conservation of tokens, fixed memory, GQA-aware eviction, serialization.
mod common;
use attnsketch::sketch::paged::{quant, MQ, PAGE};
use attnsketch::{reference, Bank, Config, Level, Sketch};
use common::*;

fn paged_cfg(d: u32, sinks: u32, window: u32, heavy: u32, groups: u32) -> Config {
    let mut c = Config::new(d);
    c.sink_tokens = sinks;
    c.window_tokens = window;
    c.heavy_tokens = heavy;
    c.tail_groups = groups;
    c.key_format = attnsketch::config::KEYS_U4;
    c.value_format = attnsketch::config::VALUES_U4;
    c
}

/// What the state stores for each token while everything fits: sinks exact,
/// the open page in binary16, closed pages 4-bit (keys per channel over the
/// page, values per token per 32 channels), of which the newest
/// `min(np, P - np)` are refined by their fine planes (P ring pages).
fn stored_tokens(
    k: &[f32],
    v: &[f32],
    d: usize,
    n: usize,
    sinks: usize,
    ring: usize,
) -> (Vec<f64>, Vec<f64>, usize) {
    let (mut ks, mut vs) = (to64(k), to64(v));
    let full_pages = (n - sinks) / PAGE;
    let fine_from = full_pages - full_pages.min(ring - full_pages);
    let f16 = |b: u16| half::f16::from_bits(b).to_f32();
    let h = |x: f32| half::f16::from_f32(x).to_f32() as f64;
    for p in 0..full_pages {
        let r0 = sinks + p * PAGE;
        let rows: Vec<f32> = (0..PAGE * d)
            .map(|i| half::f16::from_f32(k[r0 * d + i]).to_f32())
            .collect();
        let mut codes = vec![0u8; PAGE * d / 2];
        let (mut lo, mut st) = (vec![0u16; d], vec![0u16; d]);
        quant::encode_page_keys(&rows, d, &mut codes, &mut lo, &mut st);
        let fine = p >= fine_from;
        let mut kf = vec![0u8; PAGE * d / 2];
        quant::encode_page_keys_fine(&rows, d, &codes, &lo, &st, &mut kf);
        let mut row = vec![0.0f32; d];
        for t in 0..PAGE {
            quant::decode_page_key(&codes, t, &lo, &st, &mut row);
            for c in 0..d {
                let e = quant::get(&kf[t * d / 2..(t + 1) * d / 2], c);
                ks[(r0 + t) * d + c] = if fine {
                    quant::refine(row[c], f16(st[c]), e) as f64
                } else {
                    row[c] as f64
                };
            }
            let vr: Vec<f32> = (0..d)
                .map(|c| half::f16::from_f32(v[(r0 + t) * d + c]).to_f32())
                .collect();
            let vg = quant::value_group(d);
            let (mut vc, mut vl, mut vst) =
                (vec![0u8; d / 2], vec![0u16; d / vg], vec![0u16; d / vg]);
            quant::encode_row(&vr, vg, &mut vc, &mut vl, &mut vst);
            quant::decode_row(&vc, vg, &vl, &vst, &mut row);
            let mut vf = vec![0u8; d / 2];
            quant::encode_row_fine(&vr, vg, &vc, &vl, &vst, &mut vf);
            for c in 0..d {
                vs[(r0 + t) * d + c] = if fine {
                    quant::refine(row[c], f16(vst[c / vg]), quant::get(&vf, c)) as f64
                } else {
                    row[c] as f64
                };
            }
        }
    }
    for i in (sinks + full_pages * PAGE) * d..n * d {
        ks[i] = h(k[i]);
        vs[i] = h(v[i]);
    }
    (ks, vs, full_pages)
}

/// While every token fits (no page left the window), the state is exact
/// attention over the stored tokens: every CPU level within 1e-4 of the f64
/// reference over the same (rounded) keys and values (the 4-bit scores use
/// a 16-bit fixed-point query, `kernels::u4_fixed`: about 1e-4 of the
/// largest `q_c step_c` times the codes' sum per score, 3-6e-5 here). The last query sees
/// tokens stored 4-bit; its error against the unrounded reference is the
/// format's, which is reported, not asserted.
#[test]
fn exact_over_stored_tokens_while_everything_fits() {
    // d = dv = 32, 64, 96, 128, 256: 1, 2, 3, 4 and 8 value groups of 32
    // channels per row (every lane layout of `value_weights`).
    for d in [32usize, 64, 96, 128, 256] {
        exact_over_stored_tokens_at(d);
    }
}

fn exact_over_stored_tokens_at(d: usize) {
    // 5 live pages of 8 (the newest 3 refined) and of 12 (all refined).
    for ring in [8usize, 12] {
        exact_over_stored_tokens_in(d, ring);
    }
}

fn exact_over_stored_tokens_in(d: usize, ring: usize) {
    let (n, sinks) = (4 + 5 * PAGE + 7, 4usize);
    let c = paged_cfg(d as u32, sinks as u32, (ring * PAGE) as u32, 16, 8);
    let mut rng = Rng(31);
    let (q, k, v) = (
        rng.vec(n * d, 1.5),
        rng.vec(n * d, 1.5),
        rng.vec(n * d, 1.0),
    );
    for level in levels() {
        let mut h = Sketch::with_level(&c, level).unwrap();
        let _ = push_each(&mut h, &q, &k, &v, d, d);
        // The last query over the stored form of all tokens.
        let (ks, vs, pages) = stored_tokens(&k, &v, d, n, sinks, ring);
        assert_eq!(pages, 5);
        let j = n - 1;
        let mut o1 = vec![0.0f32; d];
        h.query(&q[j * d..(j + 1) * d], &mut o1).unwrap();
        let want1 = attend64(&q[j * d..(j + 1) * d], &ks, &vs, n, d, c.scale as f64);
        let e = reference::rel_err(&to64(&o1), &want1);
        assert!(e < 1e-4, "{level:?} d = {d}: rel err {e}");
        assert_eq!(h.hybrid().unwrap().tail_tokens(), 0);
        assert_eq!(h.hybrid().unwrap().exact_len(), n);
    }
}

/// While the ring fills, free page slots hold fine planes that refine the
/// newest pages to about 8 bits: with every page refined the output is
/// several times closer to exact attention than with 4-bit pages alone
/// (the stored form without planes, computed by the reference), and once
/// the ring is full no plane is left (the state equals 4-bit pages).
#[test]
fn fine_planes_refine_while_the_ring_fills() {
    let d = 64usize;
    let (n, sinks) = (4 + 5 * PAGE + 7, 4usize);
    let mut rng = Rng(77);
    let (q, k, v) = (
        rng.vec(n * d, 1.5),
        rng.vec(n * d, 1.5),
        rng.vec(n * d, 1.0),
    );
    let s = (d as f64).powf(-0.5);
    let j = n - 1;
    let qj = &q[j * d..(j + 1) * d];
    let exact = attend64(qj, &to64(&k), &to64(&v), n, d, s);
    let (k4, v4, _) = stored_tokens(&k, &v, d, n, sinks, 5);
    let coarse = reference::rel_err(&attend64(qj, &k4, &v4, n, d, s), &exact);
    let c = paged_cfg(d as u32, sinks as u32, 10 * PAGE as u32, 0, 4);
    let mut h = Sketch::new(&c).unwrap();
    let _ = push_each(&mut h, &q, &k, &v, d, d);
    let mut o = vec![0.0f32; d];
    h.query(qj, &mut o).unwrap();
    let fine = reference::rel_err(&to64(&o), &exact);
    assert!(fine < coarse / 4.0, "refined {fine} vs 4-bit {coarse}");
    // A ring of 5 pages is full: 4-bit only, within the fixed-point query's
    // rounding of that reference.
    let c5 = paged_cfg(d as u32, sinks as u32, 5 * PAGE as u32, 0, 4);
    let mut h5 = Sketch::new(&c5).unwrap();
    let _ = push_each(&mut h5, &q, &k, &v, d, d);
    h5.query(qj, &mut o).unwrap();
    let e5 = reference::rel_err(&to64(&o), &attend64(qj, &k4, &v4, n, d, s));
    assert!(e5 < 1e-4, "full ring: {e5}");
}

/// Softmax attention of one query over n stored rows, f64.
fn attend64(q: &[f32], k: &[f64], v: &[f64], n: usize, d: usize, s: f64) -> Vec<f64> {
    let sc: Vec<f64> = (0..n)
        .map(|i| s * (0..d).map(|c| q[c] as f64 * k[i * d + c]).sum::<f64>())
        .collect();
    let mx = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
    let z: f64 = w.iter().sum();
    (0..d)
        .map(|c| (0..n).map(|i| w[i] * v[i * d + c]).sum::<f64>() / z)
        .collect()
}

fn levels() -> Vec<Level> {
    [Level::Portable, Level::Avx2, Level::Avx512]
        .into_iter()
        .filter(|l| attnsketch::kernels::Kernels::for_level(*l).is_ok())
        .collect()
}

/// Every token is a sink, in the window, a heavy slot or in the tail; the
/// memory is fixed; outputs stay finite and close to exact attention on a
/// long stream with a small state.
#[test]
fn tokens_are_conserved_and_memory_fixed() {
    let (d, n) = (32usize, 3000usize);
    let c = paged_cfg(d as u32, 4, 4 * PAGE as u32, 40, 8);
    let mut h = Sketch::new(&c).unwrap();
    let bytes = h.state_bytes();
    assert_eq!(bytes, Sketch::bytes_for(&c));
    let mut rng = Rng(9);
    let (q, k, v) = (
        rng.vec(n * d, 1.0),
        rng.vec(n * d, 1.0),
        rng.vec(n * d, 1.0),
    );
    let mut out = vec![0.0f32; n * d];
    h.push_tokens(n, &q, &k, &v, &mut out).unwrap();
    let hy = h.hybrid().unwrap();
    assert_eq!(hy.exact_len() as u64 + hy.tail_tokens(), n as u64);
    assert!(hy.tail_tokens() > 0);
    assert_eq!(h.state_bytes(), bytes);
    assert!(out.iter().all(|x| x.is_finite()));
    let want =
        reference::softmax_attention_causal(&to64(&q), &to64(&k), &to64(&v), d, d, c.scale as f64);
    let e = reference::rel_err(&to64(&out[n / 2 * d..]), &want[n / 2 * d..]);
    assert!(e < 0.5, "rel err {e}");
}

/// GQA: only the second query head attends the marker tokens; they keep
/// heavy slots long after they left the window.
#[test]
fn heavy_slots_keep_what_a_later_query_head_attends() {
    let d = 32usize;
    let mut c = paged_cfg(d as u32, 1, 2 * PAGE as u32, 8, 4);
    c.scale = 0.5;
    let mut bank = Bank::new(&c, 2, 1).unwrap();
    let mut rng = Rng(5);
    let markers = [400usize, 500, 600];
    let n = 1200;
    let mut out = vec![0.0f32; 2 * d];
    for j in 0..n {
        let mut k = rng.vec(d, 0.5);
        k[0] = 0.0;
        if markers.contains(&j) {
            k = vec![0.0; d];
            k[0] = 4.0;
        }
        let v = rng.vec(d, 1.0);
        let mut q = vec![0.0f32; 2 * d];
        q[1..d].copy_from_slice(&rng.vec(d - 1, 0.5));
        q[d] = 3.0;
        bank.push_token(&q, &k, &v, &mut out).unwrap();
    }
    let hy = bank.head(0).unwrap().hybrid().unwrap();
    for &p in &markers {
        let k = hy
            .key_of_position(p as u64)
            .unwrap_or_else(|| panic!("marker {p} left"));
        assert!((k[0] - 4.0).abs() < 0.2, "marker {p}: {}", k[0]);
    }
}

/// Serialization round trip: the loaded state continues bit-identically;
/// flipped or truncated buffers are refused.
#[test]
fn serialize_round_trip_continues_identically() {
    // A full ring; a filling ring with every page refined (6 of 16 pages
    // live) and with the newest refined (12 of 16), planes moving after.
    for (pages, at) in [(3usize, 500usize), (16, 200), (16, 400)] {
        round_trip_at(pages, at);
    }
}

fn round_trip_at(pages: usize, at: usize) {
    let d = 64usize;
    let c = paged_cfg(d as u32, 4, (pages * PAGE) as u32, 20, 6);
    let mut rng = Rng(12);
    let n = at + 200;
    let (q, k, v) = (
        rng.vec(n * d, 1.0),
        rng.vec(n * d, 1.0),
        rng.vec(n * d, 1.0),
    );
    let mut a = Sketch::new(&c).unwrap();
    let mut out = vec![0.0f32; n * d];
    a.push_tokens(
        at,
        &q[..at * d],
        &k[..at * d],
        &v[..at * d],
        &mut out[..at * d],
    )
    .unwrap();
    let buf = a.serialize().unwrap();
    let mut b = Sketch::deserialize(&buf).unwrap();
    assert_eq!(b.serialize().unwrap(), buf);
    let (mut oa, mut ob) = (vec![0.0f32; 200 * d], vec![0.0f32; 200 * d]);
    a.push_tokens(200, &q[at * d..], &k[at * d..], &v[at * d..], &mut oa)
        .unwrap();
    b.push_tokens(200, &q[at * d..], &k[at * d..], &v[at * d..], &mut ob)
        .unwrap();
    assert_eq!(bits(&oa), bits(&ob));
    assert!(Sketch::deserialize(&buf[..buf.len() - 1]).is_err());
    let mut bad = buf.clone();
    let at = bad.len() / 2;
    bad[at] ^= 1;
    assert!(Sketch::deserialize(&bad).is_err());
}

/// Configs: the 4-bit formats come together, dims multiples of 32, whole
/// pages; inputs beyond the binary16 range are refused and change nothing.
#[test]
fn configs_and_ranges_are_checked() {
    let mut c = paged_cfg(64, 4, 64, 8, 4);
    assert!(Sketch::new(&c).is_ok());
    c.value_format = 2;
    assert!(Sketch::new(&c).is_err());
    let mut c = paged_cfg(48, 4, 64, 8, 4);
    assert!(Sketch::new(&c).is_err());
    c.head_dim = 64;
    c.value_dim = 64;
    c.window_tokens = 40;
    assert!(Sketch::new(&c).is_err());
    let c = paged_cfg(32, 2, 64, 8, 4);
    let mut h = Sketch::new(&c).unwrap();
    let mut k = vec![0.5f32; 32];
    let (q, v) = (vec![0.1f32; 32], vec![0.2f32; 32]);
    let mut out = vec![0.0f32; 32];
    h.push_token(&q, &k, &v, &mut out).unwrap();
    let before = h.serialize().unwrap();
    k[3] = 1e5;
    assert_eq!(
        h.push_token(&q, &k, &v, &mut out),
        Err(attnsketch::Error::Range)
    );
    assert_eq!(h.serialize().unwrap(), before);
}

/// A format-6 paged head (written by commit 6d970b0, before fine planes:
/// d = dv = 32, sinks 2, window 8 pages, heavy 4, 3 tail groups, 150 causal
/// tokens of an LCG seeded 3, see `docs/format.md`) still loads, answers as
/// that build did (within 2e-4: its scores were f32 sums, now the 4-bit
/// scores use a fixed-point query, `kernels::u4_fixed`), re-serializes as the current format, and goes on (its
/// next pages get planes).
#[test]
fn paged_format_6_still_loads() {
    let buf = include_bytes!("data/paged_v6.bin");
    let want: Vec<f32> = include_bytes!("data/paged_v6_queries.f32")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(u32::from_le_bytes(buf[8..12].try_into().unwrap()), 6);
    let mut h = Sketch::deserialize(buf).unwrap();
    assert_eq!(h.token_count(), 150);
    let d = 32usize;
    let mut s2 = 5u64;
    let mut o = vec![0.0f32; d];
    for w in want.chunks_exact(d) {
        let q: Vec<f32> = (0..d)
            .map(|_| {
                s2 = s2
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                1.5 * (((s2 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
            })
            .collect();
        h.query(&q, &mut o).unwrap();
        for (a, b) in o.iter().zip(w) {
            assert!((a - b).abs() <= 2e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
    let now = h.serialize().unwrap();
    assert_eq!(u32::from_le_bytes(now[8..12].try_into().unwrap()), 7);
    assert_eq!(Sketch::deserialize(&now).unwrap().serialize().unwrap(), now);
    let mut rng = Rng(9);
    let (q, k, v) = (
        rng.vec(64 * d, 1.5),
        rng.vec(64 * d, 1.5),
        rng.vec(64 * d, 1.0),
    );
    let mut out = vec![0.0f32; 64 * d];
    h.push_tokens(64, &q, &k, &v, &mut out).unwrap();
    assert!(out.iter().all(|x| x.is_finite()));
    let again = h.serialize().unwrap();
    assert_eq!(
        Sketch::deserialize(&again).unwrap().serialize().unwrap(),
        again
    );
}

/// The group path (`u4_row_dots_multi` per page, `u4_rows_multi` per ring
/// segment: the queries of a GQA group read each 4-bit page once) gives the
/// same outputs as the queries one at a time (a scratch too small for the
/// group path), bitwise, at every level: G = 3 and 4, d = 64 (one value
/// group per row) and 128 (two), with sinks, a wrapping ring, heavy slots
/// and the tail, over enough tokens that pages retire and heavy slots
/// change hands.
#[test]
fn group_path_equals_one_query_at_a_time() {
    use attnsketch::sketch::paged::Paged;
    for k in kernel_levels() {
        // A ring of 3 pages (fine planes only at the start) and of 16 (the
        // newest pages refined by fine planes throughout).
        for (d, g, w) in [
            (64usize, 3usize, 96u32),
            (64, 4, 96),
            (128, 3, 96),
            (64, 3, 512),
        ] {
            let cfg = paged_cfg(d as u32, 4, w, 24, 4);
            let (mut one, mut grp) = (Paged::new(&cfg).unwrap(), Paged::new(&cfg).unwrap());
            let mut b1 = vec![0.0f32; one.scratch_len()];
            let mut bg = vec![0.0f32; grp.scratch_len_group(g)];
            assert!(bg.len() > b1.len());
            let mut rng = Rng(700 + d as u64 + g as u64);
            let (mut o1, mut og) = (vec![0.0f32; g * d], vec![0.0f32; g * d]);
            for j in 0..400 {
                let kv = rng.vec(d, 1.0);
                let vv = rng.vec(d, 1.0);
                let qs = rng.vec(g * d, 1.0);
                one.insert(k, &kv, &vv, &mut b1);
                grp.insert(k, &kv, &vv, &mut bg);
                one.step_group(k, &qs, &mut o1, &mut b1);
                grp.step_group(k, &qs, &mut og, &mut bg);
                assert_eq!(bits(&o1), bits(&og), "{:?} d {d} g {g} token {j}", k.level);
            }
            if w == 96 {
                assert!(grp.tail_tokens() > 0 && grp.heavy_len() > 0);
            }
        }
    }
}

/// Prefill in blocks (`push_tokens` with n > 1: the queries of up to a
/// page of tokens scored together, each page read once per block, with a
/// causal mask inside the open page) gives the same outputs and the same
/// state as the tokens one call each, bitwise, at every level: G = 1, 3, 4
/// (banks of two kv heads, and a single head for G = 1), d = 64 and 128,
/// a ring of 3 pages (pages retire, heavy slots change hands), of 32
/// (fine planes throughout) and of 256 (blocks shortened by
/// `BLOCK_SCORES`), pushes of 1, 7, 31, 33 and 100 tokens that
/// do not align with pages, and a bank on two worker threads.
#[test]
fn block_prefill_equals_token_by_token() {
    let sizes = [1usize, 7, 31, 33, 100];
    let n = 520usize;
    for k in kernel_levels() {
        let level = k.level;
        for (d, g, w) in [
            (64usize, 1usize, 96u32),
            (64, 3, 96),
            (64, 4, 96),
            (128, 1, 96),
            (128, 3, 96),
            (128, 4, 96),
            (64, 3, 1024),
            (128, 1, 1024),
            (128, 4, 1024),
            (64, 4, 8192),
        ] {
            let cfg = paged_cfg(d as u32, 4, w, 24, 4);
            let nkv = 2usize;
            let nq = g * nkv;
            let mut rng = Rng(900 + d as u64 + g as u64 + w as u64);
            let (q, kk, v) = (
                rng.vec(n * nq * d, 1.0),
                rng.vec(n * nkv * d, 1.0),
                rng.vec(n * nkv * d, 1.0),
            );
            let what = format!("{level:?} d {d} g {g} ring {}", w as usize / PAGE);
            // Token by token.
            let mut one = Bank::with_level(&cfg, nq as u32, nkv as u32, level).unwrap();
            let mut o1 = vec![0.0f32; n * nq * d];
            for j in 0..n {
                one.push_token(
                    &q[j * nq * d..(j + 1) * nq * d],
                    &kk[j * nkv * d..(j + 1) * nkv * d],
                    &v[j * nkv * d..(j + 1) * nkv * d],
                    &mut o1[j * nq * d..(j + 1) * nq * d],
                )
                .unwrap();
            }
            for threads in [1u32, 2] {
                let mut blk = Bank::with_level(&cfg, nq as u32, nkv as u32, level).unwrap();
                blk.set_threads(threads).unwrap();
                let mut ob = vec![0.0f32; n * nq * d];
                let (mut j, mut s) = (0usize, 0usize);
                while j < n {
                    let c = sizes[s % sizes.len()].min(n - j);
                    blk.push_tokens(
                        c,
                        &q[j * nq * d..(j + c) * nq * d],
                        &kk[j * nkv * d..(j + c) * nkv * d],
                        &v[j * nkv * d..(j + c) * nkv * d],
                        &mut ob[j * nq * d..(j + c) * nq * d],
                    )
                    .unwrap();
                    (j, s) = (j + c, s + 1);
                }
                for (t, (a, b)) in o1
                    .chunks_exact(nq * d)
                    .zip(ob.chunks_exact(nq * d))
                    .enumerate()
                {
                    assert_eq!(bits(a), bits(b), "{what} threads {threads}: token {t}");
                }
                for h in 0..nkv {
                    let (a, b) = (one.head(h).unwrap(), blk.head(h).unwrap());
                    assert!(
                        a.serialize().unwrap() == b.serialize().unwrap(),
                        "{what} threads {threads}: state of kv head {h}"
                    );
                }
            }
            let hy = one.head(0).unwrap().hybrid().unwrap();
            let attnsketch::sketch::Hybrid::Paged(p) = hy else {
                panic!("{what}: not paged");
            };
            if w == 96 {
                assert!(hy.tail_tokens() > 0 && p.heavy_len() > 0, "{what}");
            }
            // The largest ring's blocks are shortened to bound their scores.
            let full = (MQ / g).min(PAGE);
            let b = p.block_tokens(g);
            assert!(
                if w == 8192 {
                    1 < b && b < full
                } else {
                    b == full
                },
                "{what}: {b}"
            );
            if g == 1 {
                // A single head's push_tokens takes the same block path.
                let kv0 = |x: &[f32]| -> Vec<f32> {
                    x.chunks_exact(nkv * d)
                        .flat_map(|r| r[..d].to_vec())
                        .collect()
                };
                let (q0, k0, v0) = (kv0(&q), kv0(&kk), kv0(&v));
                let mut h1 = Sketch::with_level(&cfg, level).unwrap();
                let mut hb = Sketch::with_level(&cfg, level).unwrap();
                let s1 = push_each(&mut h1, &q0, &k0, &v0, d, d);
                let mut sb = vec![0.0f32; n * d];
                let (mut j, mut s) = (0usize, 0usize);
                while j < n {
                    let c = sizes[(s + 2) % sizes.len()].min(n - j);
                    let r = j * d..(j + c) * d;
                    hb.push_tokens(
                        c,
                        &q0[r.clone()],
                        &k0[r.clone()],
                        &v0[r.clone()],
                        &mut sb[r],
                    )
                    .unwrap();
                    (j, s) = (j + c, s + 1);
                }
                assert_eq!(bits(&s1), bits(&sb), "{what}: single head");
                assert!(
                    h1.serialize().unwrap() == hb.serialize().unwrap(),
                    "{what}: single head state"
                );
            }
        }
    }
}
