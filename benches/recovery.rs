//! Decode time of `recover_column` at n = 2^14 and 2^20 recorded outputs
//! (it may grow by log factors, not with n), and the per-token recording
//! cost of the output sketch. Runs on the output sketch directly (dv = 16,
//! k = 8, eps = 0.5, default max_tokens 2^32), so the setup does not pay for
//! the attention state.

use attnsketch::recovery::{decode, kernels, output_shape, Dyadic, Rank};
use attnsketch::Config;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;

fn sketch_of(n: u64, dv: usize) -> Dyadic {
    let mut cfg = Config::new(dv as u32);
    cfg.recovery_k = 8;
    let shape = output_shape(&cfg).unwrap();
    let mut sk = Dyadic::new(shape, 1, 1).unwrap();
    let mut x = vec![0.0f32; dv];
    let mut s = 1u64;
    for j in 0..n {
        for v in x.iter_mut() {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) / ((j + 1) as f32).sqrt();
        }
        sk.record(j, &x);
    }
    sk
}

fn bench(c: &mut Criterion) {
    let dv = 16;
    let mut g = c.benchmark_group("recover_column");
    g.sample_size(30);
    for lg in [14u32, 20] {
        let n = 1u64 << lg;
        let sk = sketch_of(n, dv);
        let cells = sk.shape().cells();
        g.bench_with_input(
            BenchmarkId::new("decode", format!("2^{lg}")),
            &n,
            |b, &n| {
                b.iter(|| {
                    let mut ys = vec![0.0f64; cells];
                    kernels::project_column(sk.cells(), dv, 0, &mut ys);
                    black_box(decode(&sk, &ys, n, 8, Rank::Magnitude))
                })
            },
        );
    }
    g.finish();
    let mut sk = sketch_of(1, dv);
    let x = vec![0.25f32; dv];
    let mut j = 0u64;
    c.bench_function("record_output/dv16", |b| {
        b.iter(|| {
            sk.record(j, black_box(&x));
            j += 1;
        })
    });
}

/// `push_token` in the bounded regime (d = dv = 16, g = 4) without and with
/// the output sketch (k = 8, eps = 0.5) and with the key sketch (k_r = 8,
/// max_tokens 2^20), measured side by side.
fn push_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("push_token_d16_g4");
    g.sample_size(30);
    for (name, rk, kk) in [
        ("plain", 0u32, 0u32),
        ("output_sketch", 8, 0),
        ("key_sketch", 0, 8),
    ] {
        let mut cfg = Config::new(16);
        cfg.degree = 4;
        cfg.scale = 1.0 / 16.0;
        cfg.recovery_k = rk;
        cfg.retrieval_k = kk;
        cfg.max_tokens = 1 << 20;
        let mut h = attnsketch::Sketch::new(&cfg).unwrap();
        let q: Vec<f32> = (0..16).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..16).map(|i| (i as f32 * 0.71).cos()).collect();
        let mut out = vec![0.0f32; 16];
        g.bench_function(name, |b| {
            b.iter(|| {
                h.push_token(black_box(&q), black_box(&k), &k, &mut out)
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, push_cost);
criterion_main!(benches);
