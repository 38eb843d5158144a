//! Batched prefill against per-token pushes, banks against separate handles,
//! and the block products against this machine's peak FMA throughput, all
//! measured side by side in one run (medians of interleaved rounds).
//!
//! `cargo run --release --example prefill_cost [tokens] [rounds]`
//!
//! Flops of the block form per token (d = dv = 64, g = 2, t = 2145):
//! `2 t dv` (queries, Phi_q S) + `2 t dv` (update, Phi_k^T V) + `3 t` (z)
//! + about `C (d + dv)` for the intra-block scores.
use attnsketch::{Bank, Config, Level, Sketch};
use std::time::Instant;

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(|a, b| a.partial_cmp(b).unwrap());
    x[x.len() / 2]
}

fn data(n: usize, w: usize, seed: u64, amp: f32) -> Vec<f32> {
    let mut r = attnsketch::rng::SplitMix64(seed);
    r.vec(n * w, amp)
}

/// Peak f32 FMA throughput of one core (flops/s): 12 independent
/// accumulator chains of 8-lane FMAs, long enough to hide the latency.
fn peak_fma_flops() -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected.
        return unsafe { peak_avx2() };
    }
    0.0
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn peak_avx2() -> f64 {
    use core::arch::x86_64::*;
    const ITERS: usize = 20_000_000;
    let a = _mm256_set1_ps(core::hint::black_box(0.999_999));
    let b = _mm256_set1_ps(core::hint::black_box(1e-7));
    let mut acc = [_mm256_set1_ps(1.0); 12];
    let t = Instant::now();
    for _ in 0..ITERS {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let dt = t.elapsed().as_secs_f64();
    let mut s = _mm256_setzero_ps();
    for x in acc {
        s = _mm256_add_ps(s, x);
    }
    core::hint::black_box(s);
    (ITERS * 12 * 8 * 2) as f64 / dt
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(2048);
    let rounds: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let (d, dv) = (64usize, 64usize);
    let cfg = Config::new(d as u32);
    let t = attnsketch::poly::feature_count(d as u32, 2).unwrap() as f64;
    let (q, k, v) = (data(n, d, 1, 0.3), data(n, d, 2, 0.3), data(n, dv, 3, 1.0));
    if a.get(3).map(String::as_str) == Some("single-only") {
        let mut out = vec![0.0f32; n * dv];
        for _ in 0..rounds {
            let mut h = Sketch::new(&cfg).unwrap();
            for j in 0..n {
                h.push_token(
                    &q[j * d..][..d],
                    &k[j * d..][..d],
                    &v[j * dv..][..dv],
                    &mut out[j * dv..][..dv],
                )
                .unwrap();
            }
        }
        println!("{}", out[0]);
        return;
    }
    if a.get(3).map(String::as_str) == Some("batch-only") {
        // For profilers: only the batched path.
        let mut out = vec![0.0f32; n * dv];
        for _ in 0..rounds {
            let mut h = Sketch::new(&cfg).unwrap();
            h.push_tokens(n, &q, &k, &v, &mut out).unwrap();
        }
        println!("{}", out[0]);
        return;
    }
    let (nq, nkv) = (9usize, 3usize);
    if a.get(3).map(String::as_str) == Some("bank-only") {
        let (bq, bk, bv) = (
            data(n, nq * d, 4, 0.3),
            data(n, nkv * d, 5, 0.3),
            data(n, nkv * dv, 6, 1.0),
        );
        let mut bout = vec![0.0f32; n * nq * dv];
        for _ in 0..rounds {
            let mut b = Bank::new(&cfg, nq as u32, nkv as u32).unwrap();
            b.push_tokens(n, &bq, &bk, &bv, &mut bout).unwrap();
        }
        println!("{}", bout[0]);
        return;
    }
    let nb = n / 4; // bank runs: fewer tokens, 9 query heads
    let (bq, bk, bv) = (
        data(nb, nq * d, 4, 0.3),
        data(nb, nkv * d, 5, 0.3),
        data(nb, nkv * dv, 6, 1.0),
    );
    println!(
        "prefill_cost: level {}, d = dv = {d}, g = 2, t = {t}, {n} tokens, {rounds} rounds (medians)",
        Level::detect().name()
    );

    let (mut single, mut batch, mut peak) = (vec![], vec![], vec![]);
    let (mut bank_b, mut sep_b, mut bank_1, mut sep_1) = (vec![], vec![], vec![], vec![]);
    let mut bank_t2 = vec![];
    let mut out = vec![0.0f32; n * dv];
    let mut bout = vec![0.0f32; nb * nq * dv];
    for _ in 0..rounds {
        let mut h = Sketch::new(&cfg).unwrap();
        let t0 = Instant::now();
        for j in 0..n {
            h.push_token(
                &q[j * d..][..d],
                &k[j * d..][..d],
                &v[j * dv..][..dv],
                &mut out[j * dv..][..dv],
            )
            .unwrap();
        }
        single.push(n as f64 / t0.elapsed().as_secs_f64());

        let mut h = Sketch::new(&cfg).unwrap();
        let t0 = Instant::now();
        h.push_tokens(n, &q, &k, &v, &mut out).unwrap();
        batch.push(n as f64 / t0.elapsed().as_secs_f64());

        peak.push(peak_fma_flops());

        // Bank (9 q heads over 3 kv states) vs 9 separate handles, batched.
        let mut b = Bank::new(&cfg, nq as u32, nkv as u32).unwrap();
        let t0 = Instant::now();
        b.push_tokens(nb, &bq, &bk, &bv, &mut bout).unwrap();
        bank_b.push(nb as f64 / t0.elapsed().as_secs_f64());
        let mut hs: Vec<Sketch> = (0..nq).map(|_| Sketch::new(&cfg).unwrap()).collect();
        let (mut qh, mut kh, mut vh) = (
            vec![0.0f32; nb * d],
            vec![0.0f32; nb * d],
            vec![0.0f32; nb * dv],
        );
        let mut oh = vec![0.0f32; nb * dv];
        let mut el = 0.0;
        for (hq, h) in hs.iter_mut().enumerate() {
            let hk = hq / (nq / nkv);
            for j in 0..nb {
                qh[j * d..][..d].copy_from_slice(&bq[(j * nq + hq) * d..][..d]);
                kh[j * d..][..d].copy_from_slice(&bk[(j * nkv + hk) * d..][..d]);
                vh[j * dv..][..dv].copy_from_slice(&bv[(j * nkv + hk) * dv..][..dv]);
            }
            let t0 = Instant::now();
            h.push_tokens(nb, &qh, &kh, &vh, &mut oh).unwrap();
            el += t0.elapsed().as_secs_f64();
        }
        sep_b.push(nb as f64 / el);

        // The same bank prefill on 2 worker threads.
        let mut b2 = Bank::new(&cfg, nq as u32, nkv as u32).unwrap();
        b2.set_threads(2).unwrap();
        let t0 = Instant::now();
        b2.push_tokens(nb, &bq, &bk, &bv, &mut bout).unwrap();
        bank_t2.push(nb as f64 / t0.elapsed().as_secs_f64());

        // Decode-time: one token per call, bank vs separate handles.
        let m = 64usize;
        let t0 = Instant::now();
        for j in 0..m {
            b.push_token(
                &bq[j * nq * d..][..nq * d],
                &bk[j * nkv * d..][..nkv * d],
                &bv[j * nkv * dv..][..nkv * dv],
                &mut bout[..nq * dv],
            )
            .unwrap();
        }
        bank_1.push(m as f64 / t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        for j in 0..m {
            for (hq, h) in hs.iter_mut().enumerate() {
                let hk = hq / (nq / nkv);
                h.push_token(
                    &bq[(j * nq + hq) * d..][..d],
                    &bk[(j * nkv + hk) * d..][..d],
                    &bv[(j * nkv + hk) * dv..][..dv],
                    &mut oh[..dv],
                )
                .unwrap();
            }
        }
        sep_1.push(m as f64 / t0.elapsed().as_secs_f64());
    }
    // The two block products alone, at their shapes in the prefill.
    let kern = attnsketch::kernels::Kernels::detect();
    let ti = t as usize;
    let phi = data(64, ti, 7, 0.5);
    let sm = data(ti, dv, 8, 0.5);
    let vv = data(64, dv, 9, 0.5);
    let mut acc = vec![0.0f32; 64 * dv];
    let mut dm = vec![0.0f32; ti * dv];
    let (mut gq, mut gu) = (vec![], vec![]);
    for _ in 0..rounds {
        let sh = attnsketch::kernels::Gemm {
            m: 64,
            n: dv,
            k: ti,
            rsa: ti,
            csa: 1,
            ldb: dv,
            ldc: dv,
        };
        let t0 = Instant::now();
        for _ in 0..20 {
            (kern.gemm)(&sh, &phi, &sm, &mut acc);
        }
        gq.push(20.0 * 2.0 * 64.0 * t * dv as f64 / t0.elapsed().as_secs_f64());
        let sh = attnsketch::kernels::Gemm {
            m: ti,
            n: dv,
            k: 64,
            rsa: 1,
            csa: ti,
            ldb: dv,
            ldc: dv,
        };
        let t0 = Instant::now();
        for _ in 0..20 {
            (kern.gemm)(&sh, &phi, &vv, &mut dm);
        }
        gu.push(20.0 * 2.0 * 64.0 * t * dv as f64 / t0.elapsed().as_secs_f64());
    }
    println!(
        "gemm alone: queries (64 x {ti}) x ({ti} x {dv}) {:.1} GFLOP/s, update ({ti} x 64) x (64 x {dv}) {:.1} GFLOP/s",
        median(gq) / 1e9,
        median(gu) / 1e9
    );
    let (s, b, p) = (median(single), median(batch), median(peak));
    let flops = 4.0 * t * dv as f64 + 3.0 * t + 64.0 * (d + dv) as f64;
    println!("per-token push_token:     {:>9.0} tokens/s", s);
    println!(
        "batched push_tokens:      {:>9.0} tokens/s   ({:.2}x per-token)",
        b,
        b / s
    );
    println!(
        "block form flops/token:   {:>9.0}  -> {:.1} GFLOP/s; peak FMA (1 core, 12 chains) {:.1} GFLOP/s: {:.0}% of peak",
        flops,
        b * flops / 1e9,
        p / 1e9,
        100.0 * b * flops / p
    );
    let (bb, sb, b1, s1) = (median(bank_b), median(sep_b), median(bank_1), median(sep_1));
    println!("bank 9q/3kv push_tokens:  {:>9.0} tokens/s (all heads)  vs 9 separate handles {:>9.0}  ({:.2}x)", bb, sb, bb / sb);
    let t2 = median(bank_t2);
    println!("bank push_tokens 2 threads: {:>7.0} tokens/s (all heads)  vs 1 thread {:>9.0}  ({:.2}x on {} cores)", t2, bb, t2 / bb, std::thread::available_parallelism().map_or(1, |n| n.get()));
    println!("bank 9q/3kv push_token:   {:>9.0} tokens/s (all heads)  vs 9 separate handles {:>9.0}  ({:.2}x)", b1, s1, b1 / s1);
}
