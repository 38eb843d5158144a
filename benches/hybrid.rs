//! Hybrid decode speed next to exact decoding, one build, one run
//! (harness = false).
//!
//! Per CPU level and budget (`Config::for_budget`, d = dv = 64): a causal
//! hybrid head filled past its capacity (every push then scores C exact
//! slots and G tail groups, evicts one token and merges two groups) is timed
//! per `push_token` with three row formats: the preset's (`preset`: int16
//! keys, int8 values up to 1 MiB and binary16 values above), int16 keys and
//! binary16 values (`i16f16`), and f32 keys and values (`f32`); exact
//! decoding (`ExactDecoder`, the level's online softmax over n cached
//! tokens) is timed in the same interleaved rounds. Reported: medians, the
//! preset / i16f16 / f32 time ratios, and exact(n) / push(preset) per n
//! with the smallest n from which the hybrid push is faster.
//!
//! Usage: `hybrid --bench [quick]` (what `cargo bench --bench hybrid`
//! passes); without `--bench` (as under `cargo test --all-targets`) a
//! one-round smoke run at 256 KiB.

mod common;

use attnsketch::{Config, Level, Mode, Sketch};
use common::{decode_case, run_rounds, Case, Rng};
use std::hint::black_box;
use std::rc::Rc;

const D: usize = 64;
const DV: usize = 64;
/// Distinct tokens the pushes cycle through.
const TOK: usize = 4096;

/// Pre-drawn tokens: q, k uniform in [-2, 2] (scores s q.k with s = 1/8 have
/// a spread of ~1.5), v uniform in [-1, 1].
struct Stream {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Row formats timed: name, (key_format, value_format) or `None` for the
/// preset's own choice.
const FORMATS: [(&str, Option<(u32, u32)>); 3] = [
    ("preset", None),
    ("i16f16", Some((1, 1))),
    ("f32", Some((0, 0))),
];

/// The case, its exact slots and its value format.
fn hybrid_case(level: Level, kib: usize, format: usize, s: &Rc<Stream>) -> (Case, usize, u32) {
    let (fmt, formats) = FORMATS[format];
    let mut cfg = Config::new(D as u32);
    cfg.mode = Mode::Causal;
    match formats {
        None => cfg.for_budget(kib * 1024).unwrap(),
        Some((kf, vf)) => cfg.for_budget_formats(kib * 1024, kf, vf).unwrap(),
    }
    let mut h = Sketch::with_level(&cfg, level).unwrap();
    let cap = (cfg.sink_tokens + cfg.window_tokens + cfg.heavy_tokens) as usize;
    let s = s.clone();
    let mut out = vec![0.0f32; DV];
    let mut j = 0usize;
    let mut push = move |n: usize, h: &mut Sketch| {
        for _ in 0..n {
            let (a, b) = ((j % TOK) * D, (j % TOK) * DV);
            h.push_token(&s.q[a..a + D], &s.k[a..a + D], &s.v[b..b + DV], &mut out)
                .unwrap();
            black_box(&out);
            j += 1;
        }
    };
    // Past capacity: the steady state evicts and merges on every push.
    push(cap + 256, &mut h);
    (
        Case {
            name: format!("hybrid {kib} KiB {fmt} {}", level.name()),
            bytes: 0.0,
            calls: 64,
            run: Box::new(move |n| push(n, &mut h)),
            samples: vec![],
        },
        cap,
        cfg.value_format,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (smoke, rounds) = common::rounds(&args);
    let levels = common::levels();
    let all_budgets = [256usize, 512, 1024, 2048];
    let budgets = if smoke {
        &all_budgets[..1]
    } else {
        &all_budgets[..]
    };
    let all_ns = [1024usize, 2048, 4096, 8192, 16384, 32768, 65536];
    let ns = if smoke { &all_ns[..1] } else { &all_ns[..] };
    println!(
        "# attnsketch hybrid bench: d = dv = {D}, causal, as_config_for_budget; best level {}; rounds {rounds} (median)",
        Level::best().name()
    );
    let mut rng = Rng(5);
    let stream = Rc::new(Stream {
        q: rng.vec(TOK * D, 2.0),
        k: rng.vec(TOK * D, 2.0),
        v: rng.vec(TOK * DV, 1.0),
    });
    let mut cases = Vec::new();
    let mut caps = Vec::new();
    for &lv in &levels {
        for &kib in budgets {
            for f in 0..FORMATS.len() {
                let (c, cap, vf) = hybrid_case(lv, kib, f, &stream);
                caps.push((kib, f, cap, vf));
                cases.push(c);
            }
        }
    }
    let nmax = *ns.last().unwrap();
    let kc = Rc::new(rng.vec(nmax * D, 1.0));
    let vc = Rc::new(rng.vec(nmax * DV, 1.0));
    for &lv in &levels {
        for &n in ns {
            cases.push(decode_case(lv, n, D, DV, &kc, &vc));
        }
    }
    let med = run_rounds(&mut cases, rounds);
    println!("{:<32} {:>10} {:>12}", "case", "us/call", "calls/s");
    for c in &cases {
        let m = med[&c.name];
        println!("{:<32} {:>10.2} {:>12.0}", c.name, m * 1e6, 1.0 / m);
    }
    let get = |k: &str| med[k];
    println!("\n# ratios (same run); C = exact slots");
    for &lv in &levels {
        for &kib in budgets {
            let t = |f: usize| get(&format!("hybrid {kib} KiB {} {}", FORMATS[f].0, lv.name()));
            let (pre, f16, f32t) = (t(0), t(1), t(2));
            let cap = |f| caps.iter().find(|c| c.0 == kib && c.1 == f).unwrap().2;
            let vf = caps.iter().find(|c| c.0 == kib && c.1 == 0).unwrap().3;
            let vname = ["f32", "binary16", "int8", "4-bit paged"][vf as usize];
            let mut line = String::new();
            let mut cross = None;
            for &n in ns {
                let r = get(&format!("exact n={n} {}", lv.name())) / pre;
                if r >= 1.0 && cross.is_none() {
                    cross = Some(n);
                }
                if r < 1.0 {
                    cross = None;
                }
                line += &format!(" {n}:{r:.2}");
            }
            println!(
                "{:<7} {kib:>4} KiB: C {} (preset, {} values) / {} (i16f16) / {} (f32); preset/f32 time {:.2}, i16f16/f32 {:.2}; exact(n)/push(preset){line}; push faster from n = {}",
                lv.name(),
                cap(0),
                vname,
                cap(1),
                cap(2),
                pre / f32t,
                f16 / f32t,
                cross.map(|n| n.to_string()).unwrap_or("-".into())
            );
        }
    }
}
