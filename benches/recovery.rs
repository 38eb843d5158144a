//! Decode time of `recover_column` at n = 2^14 and 2^20 recorded outputs
//! (it may grow by log factors, not with n), and the per-token recording
//! cost of the output sketch. Runs on the output sketch directly (dv = 16,
//! k = 8, eps = 0.5, default max_tokens 2^32), so the setup does not pay for
//! the attention state.
//!
//! Per CPU level (`BenchmarkId` parameter = level name, or `scalar` for the
//! pre-SIMD functions still in `recovery::{hash, kernels}`):
//! `recovery_kernels/<kernel>` at decode-sized inputs, `recover_column/
//! decode_<level>` and `record_output/<level>` end to end, and
//! `heavy_tokens/<level>` (key sketch, d = 16, g = 2: `project_dot` over
//! 2016 cells x 153 features, then the decode).

use attnsketch::kernels::Kernels;
use attnsketch::recovery::hash::{self, BucketHash, SeedStream, SignHash};
use attnsketch::recovery::{decode, kernels, output_shape, Dyadic, Rank};
use attnsketch::{Config, Level};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

fn levels() -> Vec<&'static Kernels> {
    Level::ALL
        .iter()
        .filter_map(|&l| Kernels::for_level(l).ok())
        .collect()
}

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
        let mut sk = sketch_of(n, dv);
        let cells = sk.shape().cells();
        for k in levels() {
            sk.set_kernels(k);
            g.bench_with_input(
                BenchmarkId::new(format!("decode_{}", k.level.name()), format!("2^{lg}")),
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
    }
    g.finish();
    let mut g = c.benchmark_group("record_output");
    g.sample_size(30);
    for k in levels() {
        let mut sk = sketch_of(1, dv);
        sk.set_kernels(k);
        let x = vec![0.25f32; dv];
        let mut j = 0u64;
        g.bench_function(BenchmarkId::new("dv16", k.level.name()), |b| {
            b.iter(|| {
                sk.record(j, black_box(&x));
                j += 1;
            })
        });
    }
    g.finish();
}

/// Deterministic f64 values in [-1, 1).
fn vals(n: usize, seed: u64) -> Vec<f64> {
    let mut s = SeedStream::new(seed, 0);
    (0..n)
        .map(|_| (s.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0)
        .collect()
}

/// Each recovery kernel per level at the sizes one decode level sees
/// (2048 candidates = 2 beams x 16 children at k = 8, eps = 0.5; 9 rows)
/// and one recorded token (8 levels x 9 rows, dv = 16).
fn rec_kernels(c: &mut Criterion) {
    let m = 2048usize;
    let rows = 9usize;
    let mut ss = SeedStream::new(3, 1);
    let h: BucketHash = ss.bucket_hash();
    let sg: SignHash = ss.sign_hash();
    let keys: Vec<u64> = (0..m as u64).map(|i| i * 7 + 12345).collect();
    let mut bk = vec![0u32; m];
    let mut sv = vec![0.0f32; m];
    let mut cfg = Config::new(16);
    cfg.recovery_k = 8;
    let shape = output_shape(&cfg).unwrap();
    let lr = shape.levels * shape.rows;
    let bucket: Vec<BucketHash> = (0..lr).map(|_| ss.bucket_hash()).collect();
    let sign: Vec<SignHash> = (0..shape.rows).map(|_| ss.sign_hash()).collect();
    let (mut slot, mut slot_sign) = (vec![0u32; lr], vec![0.0f32; lr]);
    let cells = shape.cells();
    let mut y = vec![0.0f32; cells * 16];
    let x: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.7).collect();
    let (dcells, dw) = (2016usize, 153usize);
    let yd: Vec<f32> = vals(dcells * dw, 4).iter().map(|&v| v as f32).collect();
    let fd: Vec<f32> = vals(dw, 5).iter().map(|&v| v as f32).collect();
    let mut pd = vec![0.0f64; dcells];
    let med_in = vals(m * rows, 6);
    let mut med_out = vec![0.0f64; m];
    let score = vals(m, 7);

    let mut g = c.benchmark_group("recovery_kernels");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    // Scalar baselines: the pre-SIMD functions.
    g.throughput(Throughput::Elements(m as u64));
    g.bench_function(BenchmarkId::new("buckets", "scalar"), |b| {
        b.iter(|| hash::buckets(&h, 64, black_box(&keys), &mut bk))
    });
    g.bench_function(BenchmarkId::new("signs", "scalar"), |b| {
        b.iter(|| hash::signs(&sg, black_box(&keys), &mut sv))
    });
    g.throughput(Throughput::Elements(lr as u64));
    let mut j = 1u64 << 30;
    g.bench_function(BenchmarkId::new("token_slots", "scalar"), |b| {
        b.iter(|| {
            j += 1;
            kernels::token_slots(
                &bucket,
                &sign,
                &shape,
                black_box(j),
                &mut slot,
                &mut slot_sign,
            )
        })
    });
    kernels::token_slots(&bucket, &sign, &shape, 777, &mut slot, &mut slot_sign);
    g.throughput(Throughput::Elements((lr * 16) as u64));
    g.bench_function(BenchmarkId::new("scatter_add", "scalar"), |b| {
        b.iter(|| kernels::scatter_add(&mut y, 16, &slot, &slot_sign, black_box(&x)))
    });
    g.throughput(Throughput::Elements((dcells * dw) as u64));
    g.bench_function(BenchmarkId::new("project_dot", "scalar"), |b| {
        b.iter(|| kernels::project_dot(&yd, dw, black_box(&fd), &mut pd))
    });
    g.throughput(Throughput::Elements(m as u64));
    // The scalar median works on interleaved groups: same values, transposed.
    let med_inter: Vec<f64> = (0..m * rows)
        .map(|q| med_in[(q % rows) * m + q / rows])
        .collect();
    g.bench_function(BenchmarkId::new("median9", "scalar"), |b| {
        b.iter_batched_ref(
            || med_inter.clone(),
            |v| kernels::median_rows(v, rows, &mut med_out),
            BatchSize::SmallInput,
        )
    });
    for kk in [8usize, 64] {
        g.bench_function(BenchmarkId::new(format!("top_k{kk}"), "scalar"), |b| {
            b.iter(|| black_box(kernels::top_k(black_box(&score), kk)))
        });
    }
    for k in levels() {
        let name = k.level.name();
        g.throughput(Throughput::Elements(m as u64));
        g.bench_function(BenchmarkId::new("buckets", name), |b| {
            b.iter(|| (k.rec_buckets)(&h, 64, black_box(&keys), &mut bk))
        });
        g.bench_function(BenchmarkId::new("signs", name), |b| {
            b.iter(|| (k.rec_signs)(&sg, black_box(&keys), &mut sv))
        });
        g.throughput(Throughput::Elements(lr as u64));
        g.bench_function(BenchmarkId::new("token_slots", name), |b| {
            b.iter(|| {
                j += 1;
                (k.rec_token_slots)(
                    &bucket,
                    &sign,
                    &shape,
                    black_box(j),
                    &mut slot,
                    &mut slot_sign,
                )
            })
        });
        (k.rec_token_slots)(&bucket, &sign, &shape, 777, &mut slot, &mut slot_sign);
        g.throughput(Throughput::Elements((lr * 16) as u64));
        g.bench_function(BenchmarkId::new("scatter_add", name), |b| {
            b.iter(|| (k.rec_scatter_add)(&mut y, 16, &slot, &slot_sign, black_box(&x)))
        });
        g.throughput(Throughput::Elements((dcells * dw) as u64));
        g.bench_function(BenchmarkId::new("project_dot", name), |b| {
            b.iter(|| (k.rec_project_dot)(&yd, dw, black_box(&fd), &mut pd))
        });
        g.throughput(Throughput::Elements(m as u64));
        g.bench_function(BenchmarkId::new("median9", name), |b| {
            b.iter_batched_ref(
                || med_in.clone(),
                |v| (k.rec_median)(v, rows, &mut med_out),
                BatchSize::SmallInput,
            )
        });
        for kk in [8usize, 64] {
            g.bench_function(BenchmarkId::new(format!("top_k{kk}"), name), |b| {
                b.iter(|| black_box((k.rec_top_k)(black_box(&score), kk)))
            });
        }
    }
    g.finish();
}

/// `heavy_tokens` per level: key sketch (d = 16, g = 2, k_r = 8, default
/// max_tokens: 2016 cells x 153 features), 4096 tokens absorbed.
fn heavy(c: &mut Criterion) {
    let mut g = c.benchmark_group("heavy_tokens");
    g.sample_size(30);
    for k in levels() {
        let mut cfg = Config::new(16);
        cfg.degree = 2;
        cfg.scale = 1.0 / 16.0;
        cfg.retrieval_k = 8;
        let mut h = attnsketch::Sketch::with_level(&cfg, k.level).unwrap();
        let mut out = vec![0.0f32; 16];
        let mut s = SeedStream::new(9, 9);
        let mut vecf = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| ((s.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5)
                .collect()
        };
        for _ in 0..4096 {
            let (q, kk, v) = (vecf(16), vecf(16), vecf(16));
            h.push_token(&q, &kk, &v, &mut out).unwrap();
        }
        let q = vecf(16);
        g.bench_function(BenchmarkId::new("d16_g2_n4096", k.level.name()), |b| {
            b.iter(|| black_box(h.heavy_tokens(black_box(&q), 8)))
        });
    }
    g.finish();
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

criterion_group!(benches, bench, rec_kernels, heavy, push_cost);
criterion_main!(benches);
