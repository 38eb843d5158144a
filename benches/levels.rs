//! Side-by-side figures of one build (harness = false; see benches/levels.sh,
//! which builds it per `-C target-cpu` and runs the builds in turn).
//!
//! Every case is timed in interleaved rounds in the same process and the
//! median per case is reported, so the ratios are side by side even on a
//! shared machine. d = dv = 64, g = 2 (t = 2145) unless stated.
//!
//! Usage: `levels --bench [quick]` (what `cargo bench` passes; without
//! `--bench`, as under `cargo test --all-targets`, a one-round smoke run), or
//! `levels count <level> <tokens>` (pushes that many tokens and exits: run it
//! under callgrind twice to get instructions per token as the difference).

mod common;

use attnsketch::{Config, Level, Sketch};
use common::{decode_case, run_rounds, Case, Rng};
use std::hint::black_box;

const D: usize = 64;
const DV: usize = 64;
/// Distinct tokens cycled through by the push cases.
const TOK: usize = 64;

fn push_case(level: Level, kind: &'static str, calls: usize) -> Case {
    let cfg = Config::new(D as u32);
    let mut h = Sketch::with_level(&cfg, level).unwrap();
    let t = h.feature_map().len();
    let mut rng = Rng(7);
    let q = rng.vec(TOK * D, 1.0);
    let k = rng.vec(TOK * D, 1.0);
    let v = rng.vec(TOK * DV, 1.0);
    let hq: Vec<u16> = q.iter().map(|&x| enc(kind, x)).collect();
    let hk: Vec<u16> = k.iter().map(|&x| enc(kind, x)).collect();
    let hv: Vec<u16> = v.iter().map(|&x| enc(kind, x)).collect();
    let mut out = vec![0.0f32; DV];
    let mut j = 0usize;
    Case {
        name: format!("push_{kind} {}", level.name()),
        // Per token, amortized (sketch::state): read s and zs (4 t (dv + 1));
        // every 16 tokens read + write d (8 t dv / 16); every 64 the TwoSum
        // flush reads + writes s and d (16 t dv / 64); the stage row is
        // written and read once (8 t).
        bytes: (4 * t * DV + 4 * t + t * DV / 2 + t * DV / 4 + 8 * t) as f64,
        calls,
        run: Box::new(move |n| {
            for _ in 0..n {
                let (a, b) = (j * D, j * DV);
                let r = match kind {
                    "f32" => h.push_token(&q[a..a + D], &k[a..a + D], &v[b..b + DV], &mut out),
                    "f16" => {
                        h.push_token_f16(&hq[a..a + D], &hk[a..a + D], &hv[b..b + DV], &mut out)
                    }
                    _ => h.push_token_bf16(&hq[a..a + D], &hk[a..a + D], &hv[b..b + DV], &mut out),
                };
                r.unwrap();
                black_box(&out);
                j = (j + 1) % TOK;
            }
        }),
        samples: vec![],
    }
}

/// Push round-robin over `h` heads (`h` x 1.1 MB of state, more than the
/// last-level cache), so every push streams its state from DRAM: the
/// per-head cost in a model with many heads and layers.
fn cold_case(level: Level, h: usize) -> Case {
    let cfg = Config::new(D as u32);
    let mut heads: Vec<Sketch> = (0..h)
        .map(|_| Sketch::with_level(&cfg, level).unwrap())
        .collect();
    let t = heads[0].feature_map().len();
    let mut rng = Rng(8);
    let (q, k, v) = (rng.vec(D, 1.0), rng.vec(D, 1.0), rng.vec(DV, 1.0));
    let mut out = vec![0.0f32; DV];
    let mut j = 0usize;
    Case {
        name: format!("push_cold {}", level.name()),
        bytes: (4 * t * DV + 4 * t + t * DV / 2 + t * DV / 4 + 8 * t) as f64,
        calls: h,
        run: Box::new(move |n| {
            for _ in 0..n {
                heads[j].push_token(&q, &k, &v, &mut out).unwrap();
                black_box(&out);
                j = (j + 1) % heads.len();
            }
        }),
        samples: vec![],
    }
}

fn enc(kind: &str, x: f32) -> u16 {
    if kind == "bf16" {
        half::bf16::from_f32(x).to_bits()
    } else {
        half::f16::from_f32(x).to_bits()
    }
}

/// memcpy of `bytes / 2` bytes from one buffer into another: the same
/// footprint as the sketch's s + d, `bytes` moved (read + write).
fn memcpy_case(state_bytes: usize) -> Case {
    let half = state_bytes / 2;
    let src = vec![1u8; half];
    let mut dst = vec![0u8; half];
    Case {
        name: format!("memcpy {} KiB", half / 1024),
        bytes: (2 * half) as f64,
        calls: 64,
        run: Box::new(move |n| {
            for _ in 0..n {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            }
        }),
        samples: vec![],
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(|s| s.as_str()) == Some("count") {
        let lv = Level::from_name(&args[2]).expect("level");
        let n: usize = args[3].parse().unwrap();
        let mut c = push_case(lv, "f32", 1);
        (c.run)(n);
        return;
    }
    let (smoke, rounds) = common::rounds(&args);
    let levels = common::levels();
    let t = attnsketch::FeatureMap::new(D, 2).unwrap().len();
    println!(
        "# attnsketch levels bench: d = dv = {D}, g = 2, t = {t}; best level {}; rounds {rounds} (median)",
        Level::best().name()
    );
    let mut cases = Vec::new();
    for &lv in &levels {
        for kind in ["f32", "f16", "bf16"] {
            cases.push(push_case(lv, kind, 64));
        }
    }
    cases.push(cold_case(Level::detect(), if smoke { 2 } else { 48 }));
    cases.push(memcpy_case(8 * t * DV));
    let all_ns = [512usize, 1024, 1536, 2048, 4096, 8192, 16384, 32768, 65536];
    let ns = if smoke { &all_ns[..1] } else { &all_ns[..] };
    let nmax = *ns.last().unwrap();
    let mut rng = Rng(3);
    let kc = std::rc::Rc::new(rng.vec(nmax * D, 1.0));
    let vc = std::rc::Rc::new(rng.vec(nmax * DV, 1.0));
    for &lv in &levels {
        for &n in ns {
            cases.push(decode_case(lv, n, D, DV, &kc, &vc));
        }
    }
    let med = run_rounds(&mut cases, rounds);
    println!(
        "{:<28} {:>12} {:>10} {:>12}",
        "case", "us/call", "GB/s", "min us/call"
    );
    for c in cases.iter_mut() {
        let m = med[&c.name];
        let lo = c.samples[0]; // sorted by the median
        let gbs = if c.bytes > 0.0 {
            c.bytes / m / 1e9
        } else {
            0.0
        };
        println!(
            "{:<28} {:>12.3} {:>10.2} {:>12.3}",
            c.name,
            m * 1e6,
            gbs,
            lo * 1e6
        );
    }
    let get = |k: &str| med[k];
    println!("\n# ratios (same run)");
    let port = get("push_f32 portable");
    let memcpy_name = format!("memcpy {} KiB", 8 * t * DV / 2 / 1024);
    let memcpy_bw = (8 * t * DV) as f64 / get(&memcpy_name);
    for &lv in &levels {
        let p = get(&format!("push_f32 {}", lv.name()));
        let bw = (4 * t * DV + 4 * t + t * DV / 2 + t * DV / 4 + 8 * t) as f64 / p;
        println!(
            "{:<8} push speedup vs portable {:>5.2}x | push {:>6.2} GB/s = {:>5.1}% of memcpy {:>6.2} GB/s | f16/f32 {:>5.3} bf16/f32 {:>5.3}",
            lv.name(),
            port / p,
            bw / 1e9,
            100.0 * bw / memcpy_bw,
            memcpy_bw / 1e9,
            get(&format!("push_f16 {}", lv.name())) / p,
            get(&format!("push_bf16 {}", lv.name())) / p,
        );
        let mut cross = None;
        let mut line = String::new();
        for &n in ns {
            let r = get(&format!("exact n={n} {}", lv.name())) / p;
            if r >= 1.0 && cross.is_none() {
                cross = Some(n);
            }
            if r < 1.0 {
                cross = None;
            }
            line += &format!(" n={n}:{r:.2}");
        }
        println!("{:<8} exact/push time ratio:{line}", lv.name());
        if lv == Level::detect() && !smoke {
            let cold = get(&format!("push_cold {}", lv.name()));
            println!(
                "{:<8} cold push (48 heads round-robin) {:.1} us: exact n=65536 / cold push = {:.1}",
                lv.name(),
                cold * 1e6,
                get(&format!("exact n=65536 {}", lv.name())) / cold
            );
        }
        println!(
            "{:<8} push beats exact from n = {} on (of the sizes above)",
            lv.name(),
            cross.map(|n| n.to_string()).unwrap_or("-".into())
        );
    }
}
