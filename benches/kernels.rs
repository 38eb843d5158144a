//! criterion benches per kernel and per CPU level (d = dv = 64, g = 2),
//! the push per level, the exact decode baseline per level, the hybrid's
//! score and value row passes per level, and the compact token formats
//! (4-bit and int8 rows) next to them at d = 64 and 256.
//!
//! `kernels count <case> <level> <d> <calls>` (for callgrind) makes
//! `calls` calls of one `compact` case over 4096 rows and exits; the
//! difference of two counts divided by the difference of calls is the
//! cost of one call. `kernels interleave [rounds]` times every `compact`
//! case in interleaved rounds (medians, ratios to portable side by side).
//! `kernels multi [rounds]` does the same for the multi-query 4-bit kernels
//! (m single calls against one multi call, 32 * 96 rows, (d, m) = (64, 3),
//! (64, 4), (256, 4)); `kernels count-multi <case> <level> <d> <m> <calls>`
//! is its callgrind counterpart.
use attnsketch::baseline::ExactDecoder;
use attnsketch::kernels::Kernels;
use attnsketch::{Config, FeatureMap, Level, Sketch};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

const D: usize = 64;
const DV: usize = 64;

fn vecf(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32
                - 0.5
        })
        .collect()
}

fn levels() -> Vec<&'static Kernels> {
    Level::ALL
        .iter()
        .filter_map(|&l| Kernels::for_level(l).ok())
        .collect()
}

fn kernels(c: &mut Criterion) {
    let map = FeatureMap::new(D, 2).unwrap();
    let t = map.len();
    let x = vecf(D, 1);
    let s = vecf(t * DV, 2);
    let mut dm = vecf(t * DV, 3);
    let phik = vecf(t, 4);
    let phiq = vecf(t, 5);
    let mut acc = vec![0.0f32; DV];
    let mut out = vec![0.0f32; t];
    let zs = vecf(t, 7);
    let mut zd = vecf(t, 8);
    let halfs: Vec<u16> = (0..4096u32).map(|i| (i * 7) as u16 & 0x3bff).collect();
    let mut conv = vec![0.0f32; halfs.len()];

    let mut g = c.benchmark_group("kernel");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    for k in levels() {
        let name = k.level.name();
        g.throughput(Throughput::Bytes((4 * t) as u64));
        g.bench_function(BenchmarkId::new("expand", name), |b| {
            b.iter(|| (k.expand)(&map, black_box(&x), &mut out))
        });
        g.throughput(Throughput::Bytes((4 * t * DV) as u64));
        g.bench_function(BenchmarkId::new("query_s", name), |b| {
            b.iter(|| (k.query_s)(&s, &phiq, &mut acc))
        });
        // The stage product of the per-token path: d += Phi^T V over 16 tokens.
        let stage = vecf(16 * t, 11);
        let vs = vecf(16 * DV, 12);
        g.throughput(Throughput::Elements((2 * 16 * t * DV) as u64));
        g.bench_function(BenchmarkId::new("gemm_stage16_flops", name), |b| {
            let sh = attnsketch::kernels::Gemm {
                m: t,
                n: DV,
                k: 16,
                rsa: 1,
                csa: t,
                ldb: DV,
                ldc: DV,
            };
            b.iter(|| (k.gemm)(&sh, &stage, black_box(&vs), &mut dm))
        });
        g.throughput(Throughput::Bytes((8 * t * DV) as u64));
        g.bench_function(BenchmarkId::new("flush", name), |b| {
            let mut s2 = s.clone();
            b.iter(|| (k.flush)(&mut s2, &mut dm))
        });
        g.throughput(Throughput::Bytes((8 * t) as u64));
        g.bench_function(BenchmarkId::new("query_zs", name), |b| {
            b.iter(|| (k.query_zs)(&zs, black_box(&phiq)))
        });
        g.throughput(Throughput::Bytes((12 * t) as u64));
        g.bench_function(BenchmarkId::new("absorb_z", name), |b| {
            b.iter(|| (k.absorb_z)(&mut zd, black_box(&phik)))
        });
        g.throughput(Throughput::Bytes((4 * t * DV) as u64));
        g.bench_function(BenchmarkId::new("max_abs", name), |b| {
            b.iter(|| (k.max_abs)(black_box(&s)))
        });
        g.throughput(Throughput::Elements(halfs.len() as u64));
        g.bench_function(BenchmarkId::new("f16_to_f32", name), |b| {
            b.iter(|| (k.f16_to_f32)(black_box(&halfs), &mut conv))
        });
        g.bench_function(BenchmarkId::new("bf16_to_f32", name), |b| {
            b.iter(|| (k.bf16_to_f32)(black_box(&halfs), &mut conv))
        });
    }
    g.finish();
}

fn push_and_exact(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    let (q, k, v) = (vecf(64 * D, 11), vecf(64 * D, 12), vecf(64 * DV, 13));
    for &lv in Level::ALL.iter().filter(|l| l.supported()) {
        let mut h = Sketch::with_level(&Config::new(D as u32), lv).unwrap();
        let mut out = vec![0.0f32; DV];
        let mut j = 0;
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("push_token", lv.name()), |b| {
            b.iter(|| {
                h.push_token(
                    &q[j * D..(j + 1) * D],
                    &k[j * D..(j + 1) * D],
                    &v[j * DV..(j + 1) * DV],
                    &mut out,
                )
                .unwrap();
                j = (j + 1) % 64;
            })
        });
        let dec = ExactDecoder::new(lv).unwrap();
        for &n in &[1024usize, 8192, 65536] {
            let (kc, vc) = (vecf(n * D, 14), vecf(n * DV, 15));
            g.throughput(Throughput::Bytes((4 * n * (D + DV)) as u64));
            g.bench_function(BenchmarkId::new(format!("exact_n{n}"), lv.name()), |b| {
                b.iter(|| {
                    dec.decode(black_box(&q[..D]), &kc, &vc, 0.125, &mut out)
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

/// The hybrid's score pass over C = 2048 exact keys (d = 64): f32 rows
/// (`row_dots`) vs int16 rows with a row scale (`i16_row_dots`), per level.
fn score_rows(c: &mut Criterion) {
    const C: usize = 2048;
    let mut g = c.benchmark_group("score_rows");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .throughput(Throughput::Elements(C as u64));
    let a = vecf(C * D, 21);
    let a16: Vec<i16> = a.iter().map(|&x| (x * 65000.0) as i16).collect();
    let scale = vec![1.0 / 65000.0; C];
    let q = vecf(D, 22);
    let mut out = vec![0.0f32; C];
    for k in levels() {
        g.bench_function(BenchmarkId::new("f32", k.level.name()), |b| {
            b.iter(|| (k.row_dots)(black_box(&a), &q, &mut out))
        });
        g.bench_function(BenchmarkId::new("i16", k.level.name()), |b| {
            b.iter(|| (k.i16_row_dots)(black_box(&a16), &scale, &q, &mut out))
        });
    }
    g.finish();
}

/// The hybrid's value sum over C = 2048 rows (dv = 64): binary16 rows
/// (`f16_rows`) vs int8 rows (`i8_rows`), per level.
fn value_rows(c: &mut Criterion) {
    const C: usize = 2048;
    let mut g = c.benchmark_group("value_rows");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .throughput(Throughput::Elements(C as u64));
    let v = vecf(C * DV, 31);
    let h: Vec<u16> = v
        .iter()
        .map(|&x| half::f16::from_f32(x).to_bits())
        .collect();
    let a8: Vec<i8> = v.iter().map(|&x| (x * 254.0) as i8).collect();
    let w = vecf(C, 32);
    let mut out = vec![0.0f32; DV];
    for k in levels() {
        g.bench_function(BenchmarkId::new("f16", k.level.name()), |b| {
            b.iter(|| (k.f16_rows)(&w, black_box(&h), &mut out))
        });
        g.bench_function(BenchmarkId::new("i8", k.level.name()), |b| {
            b.iter(|| (k.i8_rows)(&w, black_box(&a8), &mut out))
        });
    }
    g.finish();
}

/// Rows of the `compact` cases.
const ROWS: usize = 4096;

/// Inputs of the `compact` cases at width `d`: the same values as f32,
/// int16, int8, binary16 and 4-bit codes (`d / 2` bytes per row), a
/// query, row scales and weights (one per row; `G = d / 32` per row for
/// `u4_rows`).
struct Compact {
    d: usize,
    f32: Vec<f32>,
    i16: Vec<i16>,
    i8: Vec<i8>,
    f16: Vec<u16>,
    u4: Vec<u8>,
    q: Vec<f32>,
    scale: Vec<f32>,
    w: Vec<f32>,
    wg: Vec<f32>,
}

impl Compact {
    fn new(d: usize) -> Compact {
        let f = vecf(ROWS * d, 41);
        Compact {
            d,
            i16: f.iter().map(|&x| (x * 65000.0) as i16).collect(),
            i8: f.iter().map(|&x| (x * 254.0) as i8).collect(),
            f16: f
                .iter()
                .map(|&x| half::f16::from_f32(x).to_bits())
                .collect(),
            u4: vecf(ROWS * d / 2, 42)
                .iter()
                .map(|&x| ((x + 0.5) * 256.0) as u8)
                .collect(),
            f32: f,
            q: vecf(d, 43),
            scale: vec![1.0 / 254.0; ROWS],
            w: vecf(ROWS, 44),
            wg: vecf(ROWS * d / 32, 45),
        }
    }

    /// One call of case `name` (`out`: ROWS scores or `d` sums).
    fn run(&self, name: &str, k: &Kernels, out: &mut [f32]) {
        let c = self;
        match name {
            "row_dots_f32" => {
                black_box((k.row_dots)(black_box(&c.f32), &c.q, out));
            }
            "i16_row_dots" => {
                black_box((k.i16_row_dots)(black_box(&c.i16), &c.scale, &c.q, out));
            }
            "i8_row_dots" => {
                black_box((k.i8_row_dots)(black_box(&c.i8), &c.scale, &c.q, out));
            }
            "u4_row_dots" => (k.u4_row_dots)(black_box(&c.u4), &c.q, out),
            "f16_rows" => (k.f16_rows)(&c.w, black_box(&c.f16), &mut out[..c.d]),
            "i8_rows" => (k.i8_rows)(&c.w, black_box(&c.i8), &mut out[..c.d]),
            "u4_rows" => (k.u4_rows)(&c.wg, black_box(&c.u4), &mut out[..c.d]),
            _ => panic!("unknown case {name}"),
        }
    }
}

/// The `compact` cases: scores (`*_row_dots`) and value sums (`*_rows`).
const COMPACT: [&str; 7] = [
    "row_dots_f32",
    "i16_row_dots",
    "i8_row_dots",
    "u4_row_dots",
    "f16_rows",
    "i8_rows",
    "u4_rows",
];

/// The compact token formats over 4096 rows at d = 64 and 256, per level,
/// next to the f32 / int16 scores and binary16 / int8 value sums on the
/// same rows (`compact/<case>_d<d>/<level>`).
fn compact(c: &mut Criterion) {
    let mut g = c.benchmark_group("compact");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .throughput(Throughput::Elements(ROWS as u64));
    for d in [64usize, 256] {
        let data = Compact::new(d);
        let mut out = vec![0.0f32; ROWS];
        for name in COMPACT {
            for k in levels() {
                let id = BenchmarkId::new(format!("{name}_d{d}"), k.level.name());
                g.bench_function(id, |b| b.iter(|| data.run(name, k, &mut out)));
            }
        }
    }
    g.finish();
}

/// `count <case> <level> <d> <calls>`: `calls` calls of one compact case.
fn count(args: &[String]) {
    let usage = "count <case> <level> <d> <calls>";
    let [name, level, d, calls] = args else {
        panic!("{usage}")
    };
    let level = Level::from_name(level).expect(usage);
    let k = Kernels::for_level(level).expect("level not supported here");
    let data = Compact::new(d.parse().expect(usage));
    let mut out = vec![0.0f32; ROWS];
    for _ in 0..calls.parse::<usize>().expect(usage) {
        data.run(name, k, &mut out);
    }
    black_box(&out);
}

/// `interleave [rounds]`: every compact case at every level and width in
/// interleaved rounds (each case timed once per round for ~0.5 ms, so load
/// changes hit all cases alike); prints the median (and min) us per call
/// and each level's ratio of medians to portable, measured side by side.
fn interleave(args: &[String]) {
    let rounds: usize = args.first().map_or(31, |r| r.parse().expect("rounds"));
    let ks = levels();
    let mut cases = Vec::new();
    for d in [64usize, 256] {
        let data = std::rc::Rc::new(Compact::new(d));
        for name in COMPACT {
            for &k in &ks {
                cases.push((d, name, k, data.clone(), Vec::new()));
            }
        }
    }
    let mut out = vec![0.0f32; ROWS];
    // Calls per sample: about 0.5 ms each (from the fastest of 3 warm-up
    // calls), so that few samples contain a preemption on a shared machine.
    let calls: Vec<usize> = cases
        .iter()
        .map(|(_, name, k, data, _)| {
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t0 = std::time::Instant::now();
                data.run(name, k, &mut out);
                best = best.min(t0.elapsed().as_secs_f64());
            }
            ((5e-4 / best) as usize).clamp(1, 1000)
        })
        .collect();
    for _ in 0..rounds {
        for ((_, name, k, data, samples), &n) in cases.iter_mut().zip(&calls) {
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                data.run(name, k, &mut out);
            }
            samples.push(t0.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    let mut rows: Vec<(usize, &str, Level, f64, f64)> = Vec::new();
    for (d, name, k, _, samples) in cases.iter_mut() {
        samples.sort_by(f64::total_cmp);
        rows.push((*d, name, k.level, samples[samples.len() / 2], samples[0]));
    }
    println!("{rounds} interleaved rounds of ~0.5 ms per case, {ROWS} rows; us/call median (min)");
    for &(d, name, level, t, tmin) in &rows {
        let base = rows
            .iter()
            .find(|r| r.0 == d && r.1 == name && r.2 == Level::Portable)
            .map_or(f64::NAN, |r| r.3);
        println!(
            "{name:>13} d {d:>3} {:>8} {t:>9.2} ({tmin:>8.2}) us  {:>6.2}x portable",
            level.name(),
            base / t
        );
    }
}

/// Rows of the multi-query cases: a 96-page window (`n = 32 * 96`).
const MROWS: usize = 32 * 96;

/// The multi-query cases: `(d, m)` of a GQA group (SmolLM2 G = 3, Gemma 3
/// G = 4) at d = 64 and Gemma 3's global d = 256.
const MULTI: [(usize, usize); 3] = [(64, 3), (64, 4), (256, 4)];

/// Inputs of one multi-query case: `MROWS` 4-bit rows of `d / 2` bytes, `m`
/// queries (`m x d`), `m` weight sets (`m x MROWS G`), `m x max(d, MROWS)`
/// outputs.
struct Multi {
    d: usize,
    m: usize,
    u4: Vec<u8>,
    q: Vec<f32>,
    w: Vec<f32>,
    out: Vec<f32>,
}

impl Multi {
    fn new(d: usize, m: usize) -> Multi {
        Multi {
            d,
            m,
            u4: vecf(MROWS * d / 2, 46)
                .iter()
                .map(|&x| ((x + 0.5) * 256.0) as u8)
                .collect(),
            q: vecf(m * d, 47),
            w: vecf(m * MROWS * d / 32, 48),
            out: vec![0.0; m * MROWS.max(d)],
        }
    }

    /// One call of `case`: `dots_single` (m `u4_row_dots` calls),
    /// `dots_multi` (one `u4_row_dots_multi`), `rows_single`, `rows_multi`.
    fn run(&mut self, case: &str, k: &Kernels) {
        let (d, m, n) = (self.d, self.m, MROWS);
        let wn = n * d / 32;
        let a = black_box(&self.u4[..]);
        match case {
            "dots_single" => {
                for i in 0..m {
                    (k.u4_row_dots)(
                        a,
                        &self.q[i * d..(i + 1) * d],
                        &mut self.out[i * n..(i + 1) * n],
                    );
                }
            }
            "dots_multi" => (k.u4_row_dots_multi)(a, &self.q, d, &mut self.out[..m * n]),
            "rows_single" => {
                for i in 0..m {
                    (k.u4_rows)(
                        &self.w[i * wn..(i + 1) * wn],
                        a,
                        &mut self.out[i * d..(i + 1) * d],
                    );
                }
            }
            "rows_multi" => (k.u4_rows_multi)(&self.w, a, d, &mut self.out[..m * d]),
            _ => panic!("unknown multi case {case}"),
        }
        black_box(&self.out);
    }
}

const MULTI_CASES: [&str; 4] = ["dots_single", "dots_multi", "rows_single", "rows_multi"];

/// m single-query 4-bit calls against one multi-query call over the same
/// `32 * 96` rows, per level (`u4_multi/<case>_d<d>_m<m>/<level>`).
fn u4_multi(c: &mut Criterion) {
    let mut g = c.benchmark_group("u4_multi");
    g.warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .throughput(Throughput::Elements(MROWS as u64));
    for (d, m) in MULTI {
        let mut data = Multi::new(d, m);
        for case in MULTI_CASES {
            for k in levels() {
                let id = BenchmarkId::new(format!("{case}_d{d}_m{m}"), k.level.name());
                g.bench_function(id, |b| b.iter(|| data.run(case, k)));
            }
        }
    }
    g.finish();
}

/// `multi [rounds]`: the multi-query cases in interleaved rounds (~0.5 ms
/// each); prints the median (and min) us per call and, per level, the
/// ratio of the m single calls' median to the multi call's.
fn multi(args: &[String]) {
    let rounds: usize = args.first().map_or(31, |r| r.parse().expect("rounds"));
    let mut cases = Vec::new();
    for (d, m) in MULTI {
        for k in levels() {
            for case in MULTI_CASES {
                cases.push((Multi::new(d, m), case, k, Vec::new()));
            }
        }
    }
    let calls: Vec<usize> = cases
        .iter_mut()
        .map(|(data, case, k, _)| {
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t0 = std::time::Instant::now();
                data.run(case, k);
                best = best.min(t0.elapsed().as_secs_f64());
            }
            ((5e-4 / best) as usize).clamp(1, 1000)
        })
        .collect();
    for _ in 0..rounds {
        for ((data, case, k, samples), &n) in cases.iter_mut().zip(&calls) {
            let t0 = std::time::Instant::now();
            for _ in 0..n {
                data.run(case, k);
            }
            samples.push(t0.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
    }
    println!("{rounds} interleaved rounds, {MROWS} rows; us/call median (min)");
    let med = |s: &mut Vec<f64>| {
        s.sort_by(f64::total_cmp);
        (s[s.len() / 2], s[0])
    };
    let mut rows = Vec::new();
    for (data, case, k, samples) in cases.iter_mut() {
        let (t, tmin) = med(samples);
        rows.push((data.d, data.m, *case, k.level, t, tmin));
    }
    for &(d, m, case, level, t, tmin) in &rows {
        let ratio = if case.ends_with("_multi") {
            let single = case.replace("_multi", "_single");
            rows.iter()
                .find(|r| r.0 == d && r.1 == m && r.2 == single && r.3 == level)
                .map_or(String::new(), |r| {
                    format!("  {:.2}x faster than m singles", r.4 / t)
                })
        } else {
            String::new()
        };
        println!(
            "{case:>12} d {d:>3} m {m} {:>8} {t:>9.2} ({tmin:>8.2}) us{ratio}",
            level.name()
        );
    }
}

/// `count-multi <case> <level> <d> <m> <calls>`: `calls` calls of one
/// multi-query case (for callgrind).
fn count_multi(args: &[String]) {
    let usage = "count-multi <case> <level> <d> <m> <calls>";
    let [case, level, d, m, calls] = args else {
        panic!("{usage}")
    };
    let level = Level::from_name(level).expect(usage);
    let k = Kernels::for_level(level).expect("level not supported here");
    let mut data = Multi::new(d.parse().expect(usage), m.parse().expect(usage));
    for _ in 0..calls.parse::<usize>().expect(usage) {
        data.run(case, k);
    }
}

criterion_group!(
    benches,
    kernels,
    push_and_exact,
    score_rows,
    value_rows,
    compact,
    u4_multi
);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rest_after = |p: usize| -> Vec<String> {
        args[p + 1..]
            .iter()
            .filter(|a| !a.starts_with("--"))
            .cloned()
            .collect()
    };
    if let Some(p) = args.iter().position(|a| a == "count-multi") {
        return count_multi(&rest_after(p));
    }
    if let Some(p) = args.iter().position(|a| a == "multi") {
        return multi(&rest_after(p));
    }
    if let Some(p) = args.iter().position(|a| a == "count") {
        // `cargo bench` appends `--bench`: flags are not case arguments.
        let rest: Vec<String> = args[p + 1..]
            .iter()
            .filter(|a| !a.starts_with("--"))
            .cloned()
            .collect();
        return count(&rest);
    }
    if let Some(p) = args.iter().position(|a| a == "interleave") {
        let rest: Vec<String> = args[p + 1..]
            .iter()
            .filter(|a| !a.starts_with("--"))
            .cloned()
            .collect();
        return interleave(&rest);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
