//! The main demo: streams tokens through the C ABI (`as_push_token`) and
//! prints accuracy, memory and speed.
//!
//! ```text
//! cargo run --release --example demo                        # bounded regime (synthetic)
//! cargo run --release --example demo -- --data ../shared/data   # real heads
//! options: --n N  --degree G  --data DIR
//! ```
//!
//! Synthetic mode is the paper's bounded-entry regime: d = dv = 16, degree 4,
//! s = 1/d, entries of q and k in [-1.5, 1.5], values correlated with keys.
#![allow(clippy::needless_range_loop)]

mod common;

use attnsketch::ffi::*;
use common::{exact_row, read_heads, Rng};
use std::ffi::CStr;
use std::path::PathBuf;
use std::time::Instant;

fn check(st: as_status, what: &str) {
    if st != AS_OK {
        let msg = unsafe { CStr::from_ptr(as_status_string(st)) }.to_string_lossy();
        eprintln!("{what}: {msg}");
        std::process::exit(1);
    }
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let n: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let d: f64 = b.iter().map(|y| y * y).sum();
    (n / d).sqrt()
}

fn mib(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

struct Handle(*mut as_sketch);
impl Handle {
    fn new(d: u32, dv: u32, degree: u32, scale: f32) -> Handle {
        let mut cfg = unsafe { std::mem::zeroed::<as_config>() };
        check(unsafe { as_config_init(&mut cfg, d) }, "as_config_init");
        cfg.value_dim = dv;
        cfg.degree = degree;
        cfg.scale = scale;
        let mut h = std::ptr::null_mut();
        check(unsafe { as_create(&cfg, &mut h) }, "as_create");
        Handle(h)
    }
}
impl Drop for Handle {
    fn drop(&mut self) {
        unsafe { as_free(self.0) }
    }
}

/// Median seconds per exact decode at cache length n.
fn time_exact(q: &[f32], k: &[f32], v: &[f32], d: usize, dv: usize, n: usize, scale: f32) -> f64 {
    let mut out = vec![0.0f32; dv];
    // The library's SIMD baseline at the same CPU level as the sketch.
    let dec = attnsketch::baseline::ExactDecoder::detect();
    let reps = (2_000_000 / (n * (d + dv))).clamp(3, 200);
    let mut t = Vec::new();
    for r in 0..reps {
        let j = r % 16;
        let t0 = Instant::now();
        dec.decode(
            &q[j * d..(j + 1) * d],
            &k[..n * d],
            &v[..n * dv],
            scale,
            &mut out,
        )
        .expect("exact decode");
        t.push(t0.elapsed().as_secs_f64());
        std::hint::black_box(&out);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t[t.len() / 2]
}

fn synthetic(n: usize, degree: u32) {
    let (d, dv) = (16usize, 16usize);
    let scale = 1.0 / d as f32;
    let mut rng = Rng(2024);
    let mut q = vec![0.0f32; n * d];
    let mut k = vec![0.0f32; n * d];
    let mut v = vec![0.0f32; n * dv];
    for j in 0..n {
        for c in 0..d {
            q[j * d + c] = 1.5 * rng.uni();
            k[j * d + c] = 1.5 * rng.uni();
        }
        for c in 0..dv {
            v[j * dv + c] = rng.uni() + 0.5 * k[j * d + c % d];
        }
    }
    let h = Handle::new(d as u32, dv as u32, degree, scale);
    println!(
        "attnsketch {} | bounded-entry regime: d = dv = {d}, degree {degree}, s = 1/d, n = {n}",
        attnsketch::VERSION
    );
    println!("kernels: {}", attnsketch::Level::detect().name());
    let mut out = vec![0.0f32; n * dv];
    let t0 = Instant::now();
    for j in 0..n {
        let st = unsafe {
            as_push_token(
                h.0,
                q[j * d..].as_ptr(),
                k[j * d..].as_ptr(),
                v[j * dv..].as_ptr(),
                out[j * dv..].as_mut_ptr(),
            )
        };
        check(st, "as_push_token");
    }
    let push_s = t0.elapsed().as_secs_f64() / n as f64;

    // Accuracy on 256 rows spread over the stream.
    let rows: Vec<usize> = (1..=256).map(|i| i * n / 256 - 1).collect();
    let (mut got, mut want, mut unif) = (Vec::new(), Vec::new(), Vec::new());
    for &j in &rows {
        want.extend(exact_row(&q, &k, &v, d, dv, scale, j));
        got.extend(out[j * dv..(j + 1) * dv].iter().map(|&x| x as f64));
        for c in 0..dv {
            unif.push((0..=j).map(|i| v[i * dv + c] as f64).sum::<f64>() / (j + 1) as f64);
        }
    }
    let bytes = unsafe { as_state_bytes(h.0) };
    println!("\naccuracy (256 rows vs exact softmax, f64):");
    println!("  relative error            {:.2e}", rel(&got, &want));
    println!(
        "  uniform-attention baseline {:.2e}   (what ignoring q would give)",
        rel(&unif, &want)
    );
    println!("  normaliser fallbacks      {}", unsafe {
        as_fallback_count(h.0)
    });
    println!(
        "\nmemory (state is fixed; a KV cache grows by {} bytes/token):",
        (d + dv) * 4
    );
    for &m in &[1024usize, 4096, 16384, 65536, 1 << 20] {
        let kv = m * (d + dv) * 4;
        println!(
            "  n = {m:>8}: state {:>10}   KV cache {:>10}   ratio {:>7.2}x",
            mib(bytes),
            mib(kv),
            kv as f64 / bytes as f64
        );
    }
    let ex = time_exact(&q, &k, &v, d, dv, n, scale);
    println!("\nspeed (one core):");
    println!(
        "  as_push_token            {:>10.0} tokens/s ({:.2} us/token)",
        1.0 / push_s,
        push_s * 1e6
    );
    println!("  exact decode at n = {n:<6} {:>10.0} tokens/s ({:.2} us/token, SIMD f32 online softmax, attnsketch::baseline)", 1.0 / ex, ex * 1e6);
}

/// Streams one head through a handle (as_push_tokens in chunks); returns
/// the outputs, the state bytes and tokens per second.
fn stream_head(hd: &common::Head, h: &Handle) -> (Vec<f32>, usize, f64) {
    let (n, d) = (hd.n, hd.d);
    let mut out = vec![0.0f32; n * d];
    let t0 = Instant::now();
    let mut j = 0;
    while j < n {
        let m = 256.min(n - j);
        let st = unsafe {
            as_push_tokens(
                h.0,
                m,
                hd.q[j * d..].as_ptr(),
                hd.k[j * d..].as_ptr(),
                hd.v[j * d..].as_ptr(),
                out[j * d..].as_mut_ptr(),
            )
        };
        check(st, "as_push_tokens");
        j += m;
    }
    let tps = n as f64 / t0.elapsed().as_secs_f64();
    (out, unsafe { as_state_bytes(h.0) }, tps)
}

fn real(dir: PathBuf, degree: u32, budget_kib: usize) {
    let heads = read_heads(&dir).unwrap_or_else(|e| {
        eprintln!("reading {}: {e}", dir.display());
        std::process::exit(1)
    });
    if heads.is_empty() {
        eprintln!("no heads in {}", dir.display());
        std::process::exit(1);
    }
    println!(
        "attnsketch {} | real heads from {}",
        attnsketch::VERSION,
        dir.display()
    );
    println!("kernels: {}", attnsketch::Level::detect().name());
    println!("relative Frobenius error vs the stored exact output, rows n/2..n step 16");
    println!("  sketch: the paper's degree-{degree} polynomial sketch over all tokens");
    println!("  hybrid: as_config_for_budget({budget_kib} KiB): sinks + adaptive window/heavy + moment tail\n");
    println!(
        "{:<8} {:>6} {:>9} {:>9} {:>11} {:>9} {:>11} {:>11} {:>10}",
        "head", "n", "uniform", "sketch", "(bytes)", "hybrid", "(bytes)", "KV cache", "hybrid t/s"
    );
    for hd in heads {
        let (n, d) = (hd.n, hd.d);
        let plain = Handle::new(d as u32, d as u32, degree, hd.scale);
        let (out, bytes, _) = stream_head(&hd, &plain);
        let hybrid = unsafe {
            let mut cfg = std::mem::zeroed::<as_config>();
            check(as_config_init(&mut cfg, d as u32), "as_config_init");
            cfg.scale = hd.scale;
            check(
                as_config_for_budget(&mut cfg, budget_kib * 1024),
                "as_config_for_budget",
            );
            let mut h = std::ptr::null_mut();
            check(as_create(&cfg, &mut h), "as_create");
            Handle(h)
        };
        let (hout, hbytes, tps) = stream_head(&hd, &hybrid);
        let (mut got, mut hgot, mut want, mut unif) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut sum = vec![0.0f64; d];
        for j in 0..n {
            for c in 0..d {
                sum[c] += hd.v[j * d + c] as f64;
            }
            if j >= n / 2 && (j - n / 2) % 16 == 0 {
                got.extend(out[j * d..(j + 1) * d].iter().map(|&x| x as f64));
                hgot.extend(hout[j * d..(j + 1) * d].iter().map(|&x| x as f64));
                want.extend(hd.o[j * d..(j + 1) * d].iter().map(|&x| x as f64));
                unif.extend(sum.iter().map(|s| s / (j + 1) as f64));
            }
        }
        println!(
            "{:<8} {:>6} {:>9.4} {:>9.4} {:>11} {:>9.4} {:>11} {:>11} {:>10.0}",
            hd.name,
            n,
            rel(&unif, &want),
            rel(&got, &want),
            mib(bytes),
            rel(&hgot, &want),
            mib(hbytes),
            mib(n * 2 * d * 4),
            tps
        );
    }
    println!("\nThe plain polynomial sketch is far from exact on real heads (scores reach");
    println!("10..50, the paper's bounded regime has O(1)); the hybrid is the configuration");
    println!("to use there. `cargo run --release --example eval` compares it with peers.");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut n, mut degree, mut data, mut budget) = (16384usize, None, None, 1024usize);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--n" => n = args.next().and_then(|x| x.parse().ok()).expect("--n N"),
            "--degree" => {
                degree = Some(
                    args.next()
                        .and_then(|x| x.parse().ok())
                        .expect("--degree G"),
                )
            }
            "--data" => data = Some(PathBuf::from(args.next().expect("--data DIR"))),
            "--budget-kib" => {
                budget = args
                    .next()
                    .and_then(|x| x.parse().ok())
                    .expect("--budget-kib KIB")
            }
            "-h" | "--help" => {
                println!("usage: demo [--n N] [--degree G] [--data DIR [--budget-kib KIB]]");
                return;
            }
            x => {
                eprintln!("unknown argument {x}");
                std::process::exit(2);
            }
        }
    }
    match data {
        Some(dir) => real(dir, degree.unwrap_or(2), budget),
        None => synthetic(n.max(256), degree.unwrap_or(4)),
    }
}
