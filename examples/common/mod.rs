//! Shared by the example programs: real heads (`heads`: the fixture and the
//! cached evaluation sets), the peers, plots, exact references and a tiny
//! deterministic RNG.
#![allow(dead_code)]
#![allow(unused_imports)]

pub mod heads;
pub mod peers;
pub mod plot;

pub use heads::{
    cache_dir, exact_outputs, fixture_dir, how_to_get, read_heads, set_dir, set_ready, Head,
};

/// SplitMix64 (the crate's deterministic generator).
pub use attnsketch::rng::SplitMix64 as Rng;

/// Exact causal softmax attention output of query row `j` over keys 0..=j, in f64.
pub fn exact_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    dv: usize,
    scale: f32,
    j: usize,
) -> Vec<f64> {
    let qj = &q[j * d..(j + 1) * d];
    let s: Vec<f64> = (0..=j)
        .map(|i| {
            qj.iter()
                .zip(&k[i * d..(i + 1) * d])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
                * scale as f64
        })
        .collect();
    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut num = vec![0.0; dv];
    let mut den = 0.0;
    for (i, &x) in s.iter().enumerate() {
        let w = (x - mx).exp();
        den += w;
        for c in 0..dv {
            num[c] += w * v[i * dv + c] as f64;
        }
    }
    num.iter().map(|x| x / den).collect()
}

/// Exact decode of one query over an f32 KV cache (online softmax), the
/// per-token work an engine without a sketch does.
pub fn exact_decode_f32(q: &[f32], k: &[f32], v: &[f32], n: usize, scale: f32, out: &mut [f32]) {
    let d = q.len();
    let dv = out.len();
    let mut m = f32::NEG_INFINITY;
    let mut l = 0.0f32;
    out.fill(0.0);
    for i in 0..n {
        let s = q
            .iter()
            .zip(&k[i * d..(i + 1) * d])
            .map(|(a, b)| a * b)
            .sum::<f32>()
            * scale;
        if s > m {
            let c = (m - s).exp();
            l *= c;
            out.iter_mut().for_each(|o| *o *= c);
            m = s;
        }
        let w = (s - m).exp();
        l += w;
        for (o, &x) in out.iter_mut().zip(&v[i * dv..(i + 1) * dv]) {
            *o += w * x;
        }
    }
    out.iter_mut().for_each(|o| *o /= l);
}

/// "YYYY-MM-DD, <CPU model> (<n> logical CPUs), <kernel level> kernels, load
/// <1-min load average>": when and where a figure was measured (printed with
/// results, drawn on plots).
pub fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = (secs / 86400) as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(
            || std::env::consts::ARCH.to_string(),
            |m| m.trim().to_string(),
        );
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The 1-minute load average: how busy the (often shared) machine was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(|x| format!(", load {x}")))
        .unwrap_or_default();
    format!(
        "{year:04}-{month:02}-{day:02}, {model} ({cpus} logical CPUs), {} kernels{load}",
        attnsketch::Level::detect().name()
    )
}
