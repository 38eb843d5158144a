//! The README's speed and memory figures, measured here and now:
//!
//! - speed: microseconds per decoded token of one head, the hybrid's
//!   `as_push_token` once its exact slots are full (flat in the length)
//!   against exact decoding over an f32 KV cache of n tokens
//!   (`attnsketch::baseline::ExactDecoder`, the same CPU level); medians of
//!   interleaved rounds, so the ratios come from one run;
//! - memory: `as_state_bytes` of the presets against a KV cache of n tokens
//!   in f32 and binary16 (`n (d + dv) 4` and `n (d + dv) 2` bytes).
//!
//! Tokens are the rows of the fixture's head L15H8 (d = dv = 64), repeated.
//!
//! ```text
//! cargo run --release --example speed_memory [-- --out docs]   # writes speed.png, memory.png, speed_memory.txt
//! ```

mod common;

use attnsketch::ffi::*;
use common::plot::{write_png_captioned, Panel, Series};
use common::{fixture_dir, read_heads, Head};
use std::fmt::Write as _;
use std::time::Instant;

const BUDGETS_KIB: [usize; 3] = [128, 256, 1024];
const LENGTHS: [usize; 9] = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072];

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

/// A hybrid head from the preset of `bytes`, filled past its exact capacity.
fn full_hybrid(h: &Head, bytes: usize) -> (*mut as_sketch, usize) {
    unsafe {
        let mut cfg = std::mem::zeroed::<as_config>();
        assert_eq!(as_config_init(&mut cfg, h.d as u32), AS_OK);
        cfg.scale = h.scale;
        assert_eq!(as_config_for_budget(&mut cfg, bytes), AS_OK);
        let mut s = std::ptr::null_mut();
        assert_eq!(as_create(&cfg, &mut s), AS_OK);
        let c = (cfg.sink_tokens + cfg.window_tokens + cfg.heavy_tokens) as usize;
        let mut out = vec![0.0f32; h.d];
        for j in 0..c + 512 {
            push(h, s, j, &mut out);
        }
        (s, c)
    }
}

fn push(h: &Head, s: *mut as_sketch, j: usize, out: &mut [f32]) {
    let (r, d) = (j % h.n, h.d);
    let st = unsafe {
        as_push_token(
            s,
            h.q[r * d..].as_ptr(),
            h.k[r * d..].as_ptr(),
            h.v[r * d..].as_ptr(),
            out.as_mut_ptr(),
        )
    };
    assert_eq!(st, AS_OK);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut out_dir = String::from("docs");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out_dir = args.next().expect("--out DIR"),
            x => {
                eprintln!("unknown argument {x}");
                std::process::exit(2);
            }
        }
    }
    let heads = read_heads(&fixture_dir()).expect("fixture");
    let h = heads.iter().find(|h| h.name == "L15H8").expect("L15H8");
    let d = h.d;
    let stamp = common::stamp();
    let dec = attnsketch::baseline::ExactDecoder::detect();
    let nmax = *LENGTHS.last().unwrap();
    let kc: Vec<f32> = h.k.iter().copied().cycle().take(nmax * d).collect();
    let vc: Vec<f32> = h.v.iter().copied().cycle().take(nmax * d).collect();
    let hy: Vec<(*mut as_sketch, usize)> = BUDGETS_KIB
        .iter()
        .map(|&b| full_hybrid(h, b * 1024))
        .collect();
    let bytes: Vec<usize> = hy
        .iter()
        .map(|&(s, _)| unsafe { as_state_bytes(s) })
        .collect();
    let rounds = 9;
    let mut t_exact = vec![Vec::new(); LENGTHS.len()];
    let mut t_push = vec![Vec::new(); hy.len()];
    let mut out = vec![0.0f32; d];
    let mut j = 100_000;
    for round in 0..rounds {
        eprint!("\rround {}/{rounds}", round + 1);
        for (i, &n) in LENGTHS.iter().enumerate() {
            let reps = (8_000_000 / (n * 2 * d)).clamp(3, 200);
            let mut t = Vec::new();
            for r in 0..reps {
                let qr = (round * 31 + r) % h.n;
                let t0 = Instant::now();
                dec.decode(
                    &h.q[qr * d..(qr + 1) * d],
                    &kc[..n * d],
                    &vc[..n * d],
                    h.scale,
                    &mut out,
                )
                .unwrap();
                std::hint::black_box(&out);
                t.push(t0.elapsed().as_secs_f64());
            }
            t_exact[i].push(median(t));
        }
        for (b, &(s, _)) in hy.iter().enumerate() {
            let mut t = Vec::new();
            for _ in 0..256 {
                let t0 = Instant::now();
                push(h, s, j, &mut out);
                t.push(t0.elapsed().as_secs_f64());
                j += 1;
            }
            t_push[b].push(median(t));
        }
    }
    eprintln!();
    let ex: Vec<f64> = t_exact.into_iter().map(median).collect();
    let pu: Vec<f64> = t_push.into_iter().map(median).collect();
    for &(s, _) in &hy {
        unsafe { as_free(s) };
    }

    let mut txt = String::new();
    writeln!(
        txt,
        "attnsketch {} speed and memory, one head, d = dv = {d}; measured {stamp}",
        attnsketch::VERSION
    )
    .unwrap();
    writeln!(txt, "(examples/speed_memory.rs; tokens: fixture head L15H8 repeated; medians of {rounds} interleaved rounds)\n").unwrap();
    writeln!(
        txt,
        "us per decoded token (exact: SIMD online softmax over an f32 KV cache of n tokens)"
    )
    .unwrap();
    write!(txt, "{:>8} {:>10}", "n", "exact").unwrap();
    for b in BUDGETS_KIB {
        write!(txt, " {:>18}", format!("hybrid {b} KiB")).unwrap();
    }
    writeln!(txt).unwrap();
    for (i, &n) in LENGTHS.iter().enumerate() {
        write!(txt, "{n:>8} {:>10.2}", ex[i] * 1e6).unwrap();
        for p in &pu {
            write!(txt, " {:>7.2} ({:>7.2}x)", p * 1e6, ex[i] / p).unwrap();
        }
        writeln!(txt).unwrap();
    }
    writeln!(
        txt,
        "(hybrid: as_push_token past capacity, the same at every n; (x): exact time / push time)\n"
    )
    .unwrap();
    writeln!(txt, "bytes per head").unwrap();
    for (b, (&kib, &(_, c))) in BUDGETS_KIB.iter().zip(&hy).enumerate() {
        writeln!(
            txt,
            "  hybrid preset {kib} KiB: as_state_bytes {} ({c} exact slots): the binary16 KV cache of {} tokens",
            bytes[b],
            bytes[b] / (2 * d * 2)
        )
        .unwrap();
    }
    writeln!(
        txt,
        "  KV cache: {} bytes per token in f32, {} in binary16",
        2 * d * 4,
        2 * d * 2
    )
    .unwrap();
    print!("{txt}");

    let _ = std::fs::create_dir_all(&out_dir);
    let txt_path = format!("{out_dir}/speed_memory.txt");
    std::fs::write(&txt_path, &txt).expect("write txt");
    let caption = format!("one head, d = 64; measured {stamp}");
    let mut speed = vec![Series {
        name: "exact decode (f32 KV cache)".into(),
        points: LENGTHS
            .iter()
            .zip(&ex)
            .map(|(&n, &t)| (n as f64, t * 1e6))
            .collect(),
    }];
    for (kib, &p) in BUDGETS_KIB.iter().zip(&pu) {
        speed.push(Series {
            name: format!("attnsketch {kib} KiB"),
            points: LENGTHS.iter().map(|&n| (n as f64, p * 1e6)).collect(),
        });
    }
    let lens: Vec<usize> = (9..=20).map(|e| 1usize << e).collect();
    let mut mem = vec![
        Series {
            name: "KV cache f32".into(),
            points: lens
                .iter()
                .map(|&n| (n as f64, (n * 2 * d * 4) as f64 / 1024.0))
                .collect(),
        },
        Series {
            name: "KV cache binary16".into(),
            points: lens
                .iter()
                .map(|&n| (n as f64, (n * 2 * d * 2) as f64 / 1024.0))
                .collect(),
        },
    ];
    for (kib, &b) in BUDGETS_KIB.iter().zip(&bytes) {
        mem.push(Series {
            name: format!("attnsketch {kib} KiB"),
            points: lens
                .iter()
                .map(|&n| (n as f64, b as f64 / 1024.0))
                .collect(),
        });
    }
    for (file, title, series, ylabel) in [
        (
            "speed.png",
            "time per decoded token",
            speed,
            "microseconds per token",
        ),
        ("memory.png", "memory per head", mem, "KiB per head"),
    ] {
        let path = format!("{out_dir}/{file}");
        let panel = Panel {
            title: title.into(),
            series,
        };
        match write_png_captioned(&path, &caption, &[panel], "tokens in context", ylabel) {
            Ok(()) => println!("plot: {path}"),
            Err(e) => eprintln!("plot {path} failed: {e}"),
        }
    }
    println!("table: {txt_path}");
}
