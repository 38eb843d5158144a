//! The main demo: the job the library is for. Real attention heads are
//! streamed token by token through the C ABI (`as_push_token`) into a hybrid
//! head sized by `as_config_for_budget`; it prints the error against exact
//! attention next to StreamingLLM and two 8-bit caches holding the same bytes,
//! the memory against a KV cache, and the speed against exact decoding.
//!
//! ```text
//! cargo run --release --example demo                      # the fixture's 4 heads (2048 tokens)
//! cargo run --release --example demo -- --set given       # 8192 tokens (bash scripts/data.sh given)
//! cargo run --release --example demo -- --data DIR [--head L15H8] [--budget-kib KIB]
//! cargo run --release --example demo -- --bounded [--n N] [--degree G]   # the paper's regime
//! ```
//!
//! The budget defaults to a quarter of a binary16 KV cache of the whole
//! stream (128 KiB per head at 2048 tokens, d = dv = 64). Errors: relative
//! Frobenius norm over every row of the second half of the stream against
//! exact softmax attention (f64). The peers (`common/peers.rs`) get their
//! best formats: StreamingLLM in binary16, KIVI at 8 bits, llama.cpp's q8_0
//! after its Hadamard rotation; all keep 4 sinks and the newest tokens.
//!
//! `--bounded` is the paper's bounded-entry regime on synthetic data: d = dv
//! = 16, degree 4, s = 1/d, entries of q and k in [-1.5, 1.5], values
//! correlated with keys, the plain polynomial sketch over every token.
#![allow(clippy::needless_range_loop)]

mod common;

use attnsketch::ffi::*;
use common::peers::{self, PeerResult};
use common::{exact_row, fixture_dir, how_to_get, read_heads, set_dir, set_ready, Head, Rng};
use std::ffi::CStr;
use std::io::{IsTerminal, Write};
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

fn size(b: usize) -> String {
    if b >= 1 << 30 {
        format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
    } else if b >= 1 << 20 {
        format!("{:.2} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.0} KiB", b as f64 / 1024.0)
    }
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

struct Handle(*mut as_sketch);
impl Drop for Handle {
    fn drop(&mut self) {
        unsafe { as_free(self.0) }
    }
}

/// The preset of `bytes` for a head of dims d = dv and scale s.
fn budget_config(d: usize, scale: f32, bytes: usize) -> as_config {
    unsafe {
        let mut cfg = std::mem::zeroed::<as_config>();
        check(as_config_init(&mut cfg, d as u32), "as_config_init");
        cfg.scale = scale;
        check(
            as_config_for_budget(&mut cfg, bytes),
            "as_config_for_budget",
        );
        cfg
    }
}

fn create(cfg: &as_config) -> Handle {
    let mut h = std::ptr::null_mut();
    check(unsafe { as_create(cfg, &mut h) }, "as_create");
    Handle(h)
}

/// Progress on stderr for runs longer than a second: one line rewritten 4
/// times a second on a terminal, else a plain line every 5 seconds.
struct Progress {
    t0: Instant,
    last: f64,
    shown: bool,
    tty: bool,
}
impl Progress {
    fn new() -> Self {
        Progress {
            t0: Instant::now(),
            last: 0.0,
            shown: false,
            tty: std::io::stderr().is_terminal(),
        }
    }
    fn tick(&mut self, what: &str, done: usize, total: usize) {
        let t = self.t0.elapsed().as_secs_f64();
        let every = if self.tty { 0.25 } else { 5.0 };
        if done > 0 && t > 1.0 && t - self.last > every {
            self.last = t;
            if self.tty {
                self.shown = true;
                eprint!("\r  {what}: {done}/{total} tokens ({t:.0} s)   ");
                let _ = std::io::stderr().flush();
            } else {
                eprintln!("  {what}: {done}/{total} tokens ({t:.0} s)");
            }
        }
    }
    fn done(&mut self) {
        if self.shown {
            eprint!("\r{:60}\r", "");
            self.shown = false;
        }
    }
}

/// Streams a head token by token through `as_push_token`; returns the
/// outputs, the state bytes and the median seconds per push once the exact
/// slots are full (the steady state of a long decode).
fn stream(h: &Head, cfg: &as_config, prog: &mut Progress) -> (Vec<f32>, usize, f64) {
    let (n, d) = (h.n, h.d);
    let sk = create(cfg);
    let full = (cfg.sink_tokens + cfg.window_tokens + cfg.heavy_tokens) as usize;
    let mut out = vec![0.0f32; n * d];
    let mut times = Vec::with_capacity(n);
    for j in 0..n {
        let t0 = Instant::now();
        let st = unsafe {
            as_push_token(
                sk.0,
                h.q[j * d..].as_ptr(),
                h.k[j * d..].as_ptr(),
                h.v[j * d..].as_ptr(),
                out[j * d..].as_mut_ptr(),
            )
        };
        let t = t0.elapsed().as_secs_f64();
        check(st, "as_push_token");
        if j >= full {
            times.push(t);
        }
        if j % 256 == 0 {
            prog.tick(&h.name, j, n);
        }
    }
    if times.is_empty() {
        times.push(0.0);
    }
    (out, unsafe { as_state_bytes(sk.0) }, median(times))
}

/// Median seconds of one exact decode over n cached f32 tokens (the head's
/// rows repeated up to n), on the library's SIMD baseline at the same CPU level.
fn time_exact(h: &Head, n: usize) -> f64 {
    let d = h.d;
    let k: Vec<f32> = h.k.iter().copied().cycle().take(n * d).collect();
    let v: Vec<f32> = h.v.iter().copied().cycle().take(n * d).collect();
    let dec = attnsketch::baseline::ExactDecoder::detect();
    let mut out = vec![0.0f32; d];
    let reps = (40_000_000 / (n * 2 * d)).clamp(5, 400);
    let t: Vec<f64> = (0..reps)
        .map(|r| {
            let j = h.n - 1 - r % 64;
            let t0 = Instant::now();
            dec.decode(&h.q[j * d..(j + 1) * d], &k, &v, h.scale, &mut out)
                .expect("exact decode");
            std::hint::black_box(&out);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    median(t)
}

type Peer = fn(&Head, usize, &[usize]) -> Option<PeerResult>;

fn real(dir: PathBuf, budget_kib: Option<usize>, only: Option<String>) {
    let mut heads = read_heads(&dir).unwrap_or_else(|e| {
        eprintln!("reading {}: {e}", dir.display());
        std::process::exit(1)
    });
    if let Some(name) = &only {
        heads.retain(|h| &h.name == name);
    }
    if heads.is_empty() {
        eprintln!("no heads in {}", dir.display());
        std::process::exit(1);
    }
    let (n, d) = (heads[0].n, heads[0].d);
    let kv16 = n * 2 * d * 2;
    let budget = budget_kib.map_or(kv16 / 4, |k| k * 1024);
    let cfg = budget_config(d, heads[0].scale, budget);
    let slots = (cfg.sink_tokens + cfg.window_tokens + cfg.heavy_tokens) as usize;
    let fmt = |k: u32, v: u32| {
        let kf = match k {
            0 => "f32".to_string(),
            1 => "int16".to_string(),
            2 => "4-bit paged".to_string(),
            x => format!("key_format {x}"),
        };
        let vf = match v {
            0 => "f32".to_string(),
            1 => "binary16".to_string(),
            2 => "int8".to_string(),
            3 => "4-bit".to_string(),
            x => format!("value_format {x}"),
        };
        format!("{kf} keys, {vf} values")
    };
    println!("attnsketch {} | {}", attnsketch::VERSION, common::stamp());
    let from = if dir == fixture_dir() {
        "the repository's fixture tests/fixtures/smollm2-2048 (SmolLM2-135M)".to_string()
    } else {
        dir.display().to_string()
    };
    println!(
        "{} real head(s) of {} tokens, d = {d}, from {from}",
        heads.len(),
        n
    );
    println!(
        "budget {} per head (as_config_for_budget): {} sinks + {} window/heavy slots ({}), {} tail groups",
        size(budget),
        cfg.sink_tokens,
        slots - cfg.sink_tokens as usize,
        fmt(cfg.key_format, cfg.value_format),
        cfg.tail_groups
    );
    let rows: Vec<usize> = (n / 2..n).collect();
    let ps: [(&str, Peer, usize); 4] = [
        ("StreamingLLM", peers::streaming_llm_f16, 4 * d),
        ("KIVI-8", peers::kivi8, 2 * d + d / 4),
        ("KIVI-4", peers::kivi4, d + d / 4),
        ("q8_0", peers::q8_0, 34 * 2 * d / 32),
    ];
    println!(
        "peers at the same bytes: StreamingLLM 4 sinks + {} newest tokens (binary16, {} B/token); \
         KIVI-8 4 + {} ({} B/token); KIVI-4 4 + {} ({} B/token); q8_0 4 + {} ({} B/token)",
        budget / ps[0].2 - 4,
        ps[0].2,
        budget / ps[1].2 - 4,
        ps[1].2,
        budget / ps[2].2 - 4,
        ps[2].2,
        budget / ps[3].2 - 4,
        ps[3].2
    );
    println!(
        "\nerror vs exact attention (relative, rows {}..{}; lower is better)",
        n / 2,
        n - 1
    );
    println!(
        "{:<8} {:>10} {:>12} {:>13} {:>9} {:>9} {:>9}",
        "head", "max score", "attnsketch", "StreamingLLM", "KIVI-8", "KIVI-4", "q8_0"
    );
    let mut prog = Progress::new();
    let mut push_t = Vec::new();
    let mut state = 0;
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); 5];
    for h in &heads {
        let (out, bytes, t) = stream(h, &cfg, &mut prog);
        push_t.push(t);
        state = bytes;
        let want: Vec<f64> = rows
            .iter()
            .flat_map(|&j| h.o[j * d..(j + 1) * d].iter().map(|&x| x as f64))
            .collect();
        let got: Vec<f64> = rows
            .iter()
            .flat_map(|&j| out[j * d..(j + 1) * d].iter().map(|&x| x as f64))
            .collect();
        let mut errs = vec![rel(&got, &want)];
        for (_, p, _) in &ps {
            errs.push(p(h, budget, &rows).map_or(f64::NAN, |r| rel(&r.out, &want)));
        }
        let mut maxs = 0.0f64;
        for j in 0..n {
            if j % 256 == 0 {
                prog.tick(&h.name, j, n);
            }
            for i in 0..=j {
                let s = peers::dot(&h.q[j * d..(j + 1) * d], &h.k[i * d..(i + 1) * d]);
                maxs = maxs.max((s * h.scale).abs() as f64);
            }
        }
        prog.done();
        println!(
            "{:<8} {:>10.1} {:>12.4} {:>13.4} {:>9.4} {:>9.4} {:>9.4}",
            h.name, maxs, errs[0], errs[1], errs[2], errs[3], errs[4]
        );
        for (c, e) in cols.iter_mut().zip(errs) {
            c.push(e);
        }
    }
    if heads.len() > 1 {
        let m: Vec<f64> = cols.into_iter().map(median).collect();
        println!(
            "{:<8} {:>10} {:>12.4} {:>13.4} {:>9.4} {:>9.4} {:>9.4}",
            "median", "", m[0], m[1], m[2], m[3], m[4]
        );
    }
    prog.done();
    println!("(max score: largest |s q.k| of the stream; the paper's bounded regime has O(1))");

    println!(
        "\nmemory per kv head: attnsketch holds {} whatever the length; a KV cache grows",
        size(state)
    );
    println!(
        "{:>10} {:>14} {:>14} {:>12}",
        "tokens", "KV cache f32", "KV cache f16", "attnsketch"
    );
    for m in [n, 32 << 10, 128 << 10, 1 << 20] {
        let kv = m * 2 * d * 4;
        println!(
            "{:>10} {:>14} {:>14} {:>12}   ({:.0}x smaller than f16)",
            m,
            size(kv),
            size(kv / 2),
            size(state),
            (kv / 2) as f64 / state as f64
        );
    }

    let push = median(push_t);
    println!("\nspeed, one core, one token per call (decode):");
    println!(
        "  as_push_token with this budget: {:.1} us/token ({:.0}k tokens/s), flat in the length",
        push * 1e6,
        1e-3 / push
    );
    print!("  exact decode over an f32 KV cache (attnsketch::baseline, same CPU level):");
    let h0 = &heads[0];
    for m in [n, 8 << 10, 32 << 10, 128 << 10] {
        let t = time_exact(h0, m);
        print!(
            "\n    n = {m:>6}: {:>8.1} us/token ({:.2}x the push)",
            t * 1e6,
            t / push
        );
    }
    println!(
        "\n\nMore: `cargo run --release --example eval` compares more peers and budgets \
         on the 8192-token sets (scripts/data.sh)."
    );
}

fn bounded(n: usize, degree: u32) {
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
    let h = unsafe {
        let mut cfg = std::mem::zeroed::<as_config>();
        check(as_config_init(&mut cfg, d as u32), "as_config_init");
        cfg.value_dim = dv as u32;
        cfg.degree = degree;
        cfg.scale = scale;
        create(&cfg)
    };
    println!(
        "attnsketch {} | bounded-entry regime (the paper's): d = dv = {d}, degree {degree}, s = 1/d, n = {n}",
        attnsketch::VERSION
    );
    println!("kernels: {}", attnsketch::Level::detect().name());
    let mut out = vec![0.0f32; n * dv];
    let mut prog = Progress::new();
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
        if j % 1024 == 0 {
            prog.tick("bounded", j, n);
        }
    }
    prog.done();
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
            size(bytes),
            size(kv),
            kv as f64 / bytes as f64
        );
    }
    let hd = Head {
        name: "bounded".into(),
        n,
        d,
        scale,
        q,
        k,
        v,
        o: Vec::new(),
    };
    let ex = time_exact(&hd, n);
    println!("\nspeed (one core):");
    println!(
        "  as_push_token            {:>10.0} tokens/s ({:.2} us/token)",
        1.0 / push_s,
        push_s * 1e6
    );
    println!("  exact decode at n = {n:<6} {:>10.0} tokens/s ({:.2} us/token, SIMD f32 online softmax, attnsketch::baseline)", 1.0 / ex, ex * 1e6);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut n, mut degree, mut data, mut budget, mut head) =
        (16384usize, 4u32, None::<PathBuf>, None, None);
    let mut bounded_mode = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bounded" => bounded_mode = true,
            "--n" => n = args.next().and_then(|x| x.parse().ok()).expect("--n N"),
            "--degree" => {
                degree = args
                    .next()
                    .and_then(|x| x.parse().ok())
                    .expect("--degree G")
            }
            "--data" => data = Some(PathBuf::from(args.next().expect("--data DIR"))),
            "--set" => {
                let s = args.next().expect("--set NAME");
                let dir = set_dir(&s);
                if !set_ready(&dir) {
                    eprintln!("{}", how_to_get(&s));
                    std::process::exit(1);
                }
                data = Some(dir)
            }
            "--head" => head = Some(args.next().expect("--head NAME")),
            "--budget-kib" => {
                budget = Some(
                    args.next()
                        .and_then(|x| x.parse().ok())
                        .expect("--budget-kib KIB"),
                )
            }
            "-h" | "--help" => {
                println!(
                    "usage: demo [--set NAME | --data DIR] [--head NAME] [--budget-kib KIB]\n       \
                     demo --bounded [--n N] [--degree G]"
                );
                return;
            }
            x => {
                eprintln!("unknown argument {x} (--help)");
                std::process::exit(2);
            }
        }
    }
    if bounded_mode {
        bounded(n.max(256), degree);
    } else {
        real(data.unwrap_or_else(fixture_dir), budget, head);
    }
}
