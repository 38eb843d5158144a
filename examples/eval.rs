//! Accuracy at equal memory: streams every head of an evaluation set
//! (`scripts/data.sh`; format in `tools/README.md`) causally and prints, per head and byte budget, the
//! relative Frobenius error of the outputs against the stored exact `_o`, for
//! attnsketch (through the C ABI) and for each peer (see `common/peers.rs`).
//! Summaries per budget (median, worst) and over all cells (geometric mean,
//! cells where a peer is better). Also writes a PNG plot of error vs bytes
//! per head.
//!
//! ```text
//! cargo run --release --example eval -- [--set given|dpkg|vim|licences | --data DIR]
//!     [--budgets 256,512,1024,2048] [--png docs/eval.png] [--step 16]
//!     [--rounded-peers] [--cache-peers]
//! ```
//! The default set is `given` in the cache (`bash scripts/data.sh given`
//! builds it); `--data tests/fixtures/smollm2-2048` runs on the fixture.
//! `--rounded-peers` adds StreamingLLM and H2O storing tokens in the formats
//! our hybrid uses (int16 keys, binary16 values; `peers::rounded`).
//! `--cache-peers` adds the quantized caches of the demo (StreamingLLM in
//! binary16, KIVI-8, q8_0 after the Hadamard rotation).
//! Rows: the second half of the stream, every `step`-th (default 16: 256 rows
//! of an 8192-token head). Budgets are KiB per head.

mod common;

use common::peers::{self, PeerResult};
use common::plot::{write_png_captioned, Panel, Series};
use common::{how_to_get, read_heads, set_dir, set_ready, Head};
use std::path::PathBuf;

type Method = fn(&Head, usize, &[usize]) -> Option<PeerResult>;

/// The methods, ours last (the best peer is the best of the others).
fn methods(rounded_peers: bool, cache_peers: bool) -> Vec<(&'static str, Method)> {
    let mut m = vec![
        ("StreamingLLM", peers::streaming_llm as Method),
        ("H2O", peers::h2o as Method),
        ("Taylor-2", peers::taylor2 as Method),
        ("Performer", peers::performer as Method),
    ];
    if rounded_peers {
        m.push(("SLLM-i16", peers::streaming_llm_i16 as Method));
        m.push(("H2O-i16", peers::h2o_i16 as Method));
    }
    if cache_peers {
        m.push(("SLLM-f16", peers::streaming_llm_f16 as Method));
        m.push(("KIVI-8", peers::kivi8 as Method));
        m.push(("KIVI-4", peers::kivi4 as Method));
        m.push(("q8_0", peers::q8_0 as Method));
    }
    m.push(("attnsketch", peers::attnsketch as Method));
    m
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let n: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let d: f64 = b.iter().map(|y| y * y).sum();
    (n / d).sqrt()
}

struct Cell {
    err: Option<f64>,
    bytes: usize,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut data = None::<PathBuf>;
    let mut set = String::from("given");
    let mut cache_peers = false;
    let mut budgets: Vec<usize> = vec![256, 512, 1024, 2048];
    let mut png = String::from("docs/eval.png");
    let mut step = 16usize;
    let mut rounded_peers = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = Some(PathBuf::from(args.next().expect("--data DIR"))),
            "--set" => set = args.next().expect("--set NAME"),
            "--cache-peers" => cache_peers = true,
            "--budgets" => {
                budgets = args
                    .next()
                    .expect("--budgets")
                    .split(',')
                    .map(|x| x.parse().expect("KiB"))
                    .collect()
            }
            "--png" => png = args.next().expect("--png FILE"),
            "--rounded-peers" => rounded_peers = true,
            "--step" => step = args.next().and_then(|x| x.parse().ok()).expect("--step N"),
            x => {
                eprintln!("unknown argument {x}");
                std::process::exit(2);
            }
        }
    }
    let data = data.unwrap_or_else(|| {
        let dir = set_dir(&set);
        if !set_ready(&dir) {
            eprintln!("{}", how_to_get(&set));
            std::process::exit(1);
        }
        dir
    });
    let heads = read_heads(&data).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let ms = methods(rounded_peers, cache_peers);
    let stamp = common::stamp();
    println!(
        "{} | {} heads from {}\n",
        stamp,
        heads.len(),
        data.display()
    );
    // results[head][budget][method]
    let results: Vec<Vec<Vec<Cell>>> = std::thread::scope(|s| {
        let jobs: Vec<_> = heads
            .iter()
            .map(|h| {
                let (budgets, ms) = (&budgets, &ms);
                s.spawn(move || {
                    let rows: Vec<usize> = (h.n / 2..h.n).step_by(step).collect();
                    let want: Vec<f64> = rows
                        .iter()
                        .flat_map(|&j| h.o[j * h.d..(j + 1) * h.d].iter().map(|&x| x as f64))
                        .collect();
                    budgets
                        .iter()
                        .map(|&kib| {
                            ms.iter()
                                .map(|(_, m)| match m(h, kib * 1024, &rows) {
                                    Some(r) => Cell {
                                        err: Some(rel(&r.out, &want)),
                                        bytes: r.bytes,
                                    },
                                    None => Cell {
                                        err: None,
                                        bytes: 0,
                                    },
                                })
                                .collect()
                        })
                        .collect()
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });

    println!("relative Frobenius error vs exact causal attention (rows n/2..n step {step}); budget per head\n");
    print!("{:<8} {:>8}", "head", "budget");
    for (n, _) in &ms {
        print!(" {:>13}", n);
    }
    println!(" {:>13}", "best peer");
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); budgets.len()];
    for (h, per_budget) in heads.iter().zip(&results) {
        for (bi, (kib, cells)) in budgets.iter().zip(per_budget).enumerate() {
            print!("{:<8} {:>5} KiB", h.name, kib);
            for c in cells {
                match c.err {
                    Some(e) => print!(" {:>13.4}", e),
                    None => print!(" {:>13}", "-"),
                }
            }
            let n = cells.len();
            let best = cells[..n - 1]
                .iter()
                .filter_map(|c| c.err)
                .fold(f64::INFINITY, f64::min);
            match cells[n - 1].err {
                Some(e) => {
                    println!(" {:>13.4}   ours/best {:.2}", best, e / best);
                    ratios[bi].push(e / best);
                }
                None => println!(" {:>13.4}", best),
            }
        }
    }
    println!("\nattnsketch error / best peer error, per budget over the heads:");
    for (kib, r) in budgets.iter().zip(ratios.iter_mut()) {
        if r.is_empty() {
            continue;
        }
        r.sort_by(|a, b| a.total_cmp(b));
        let med = if r.len() % 2 == 1 {
            r[r.len() / 2]
        } else {
            0.5 * (r[r.len() / 2 - 1] + r[r.len() / 2])
        };
        println!(
            "  {kib:>5} KiB: median {med:.2}, worst {:.2}, heads where ours is better {}/{}",
            r[r.len() - 1],
            r.iter().filter(|&&x| x <= 1.0).count(),
            r.len()
        );
    }
    // Over every head x budget cell: the geometric mean of the ratio (one
    // number that neither a single bad cell nor the best cells dominate)
    // and the cells where a peer is better.
    let all: Vec<f64> = ratios.iter().flatten().copied().collect();
    if !all.is_empty() {
        let geo = (all.iter().map(|r| r.ln()).sum::<f64>() / all.len() as f64).exp();
        println!(
            "  all cells: geometric mean {geo:.3}, cells where a peer is better {}/{}",
            all.iter().filter(|&&x| x > 1.0).count(),
            all.len()
        );
    }
    println!("\nbytes actually used (first head):");
    for (kib, cells) in budgets.iter().zip(&results[0]) {
        print!("  {kib:>5} KiB:");
        for ((n, _), c) in ms.iter().zip(cells) {
            print!(" {n} {}", c.bytes);
        }
        println!();
    }

    let panels: Vec<Panel> = heads
        .iter()
        .zip(&results)
        .map(|(h, per_budget)| Panel {
            title: h.name.clone(),
            series: ms
                .iter()
                .enumerate()
                .map(|(mi, (n, _))| Series {
                    name: n.to_string(),
                    points: per_budget
                        .iter()
                        .filter_map(|cells| {
                            cells[mi].err.map(|e| (cells[mi].bytes as f64 / 1024.0, e))
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    if let Some(dir) = std::path::Path::new(&png).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let caption = format!(
        "attnsketch {} vs peers at equal bytes, {} | measured {}",
        attnsketch::VERSION,
        data.file_name()
            .map_or(String::new(), |f| f.to_string_lossy().into_owned()),
        stamp
    );
    match write_png_captioned(
        &png,
        &caption,
        &panels,
        "state bytes per head (KiB)",
        "relative error",
    ) {
        Ok(()) => println!("\nplot: {png}"),
        Err(e) => eprintln!("plot failed: {e}"),
    }
}
