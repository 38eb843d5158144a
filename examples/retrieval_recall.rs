//! Recall@k of heavy-token retrieval (`Sketch::heavy_tokens`) against the
//! true softmax top-k.
//!
//! 1. Synthetic planted data in the bounded regime (d = 16, g = 4, s = 1/d,
//!    entries in [-2, 2]): `k` keys equal to the query are planted among n.
//! 2. The real heads of the cached "given" set (`bash scripts/data.sh given`;
//!    d = 64, 8192 tokens, s = 1/8), causal: after absorbing token i,
//!    retrieve for q_i over tokens 0..=i.
//!
//! Run: `cargo run --release --example retrieval_recall [data_dir] [degree]`.

#[path = "common/heads.rs"]
mod heads;

use attnsketch::recovery::reference as rref;
use attnsketch::{Config, Polynomial, Sketch};
use std::time::Instant;

use attnsketch::rng::SplitMix64 as Rng;

fn top(w: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..w.len()).collect();
    idx.sort_by(|&a, &b| w[b].total_cmp(&w[a]));
    idx.truncate(k);
    idx
}

fn recall(got: &[usize], truth: &[usize]) -> f64 {
    truth.iter().filter(|t| got.contains(t)).count() as f64 / truth.len() as f64
}

fn read_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn synthetic(bnd: f32) {
    let (d, g, k) = (16usize, 4u32, 8usize);
    println!("## synthetic, bounded regime (d = 16, g = 4, s = 1/16, entries in [-{bnd}, {bnd}], {k} planted keys = q)\n");
    println!("| n | recall@{k} (sketch vs softmax) | recall@{k} (exact poly vs softmax) | state bytes | key-sketch bytes | KV bytes (f32) |");
    println!("|---|---|---|---|---|---|");
    for lg in [10u32, 12, 14, 16] {
        let n = 1usize << lg;
        let trials = 8;
        let (mut r_sk, mut r_poly) = (0.0, 0.0);
        let mut bytes = (0, 0);
        for trial in 0..trials {
            let mut rng = Rng(77 + trial as u64 * 1000 + lg as u64);
            let mut cfg = Config::new(d as u32);
            cfg.degree = g;
            cfg.scale = 1.0 / d as f32;
            cfg.mode = attnsketch::Mode::NonCausal;
            cfg.retrieval_k = k as u32;
            cfg.max_tokens = 1 << 20;
            cfg.seed = trial as u64;
            let mut h = Sketch::new(&cfg).unwrap();
            let q: Vec<f32> = (0..d)
                .map(|_| if rng.uni() < 0.0 { -bnd } else { bnd })
                .collect();
            let planted: Vec<usize> = (0..k)
                .map(|_| (rng.next_u64() % n as u64) as usize)
                .collect();
            let mut keys = Vec::with_capacity(n * d);
            for j in 0..n {
                let kj: Vec<f32> = if planted.contains(&j) {
                    q.clone()
                } else {
                    (0..d).map(|_| rng.uni() * bnd).collect()
                };
                h.append_kv(&kj, &[0.0; 16]).unwrap();
                keys.extend(kj.iter().map(|&x| x as f64));
            }
            let q64: Vec<f64> = q.iter().map(|&x| x as f64).collect();
            let w = rref::softmax_weights(&q64, &keys, d, cfg.scale as f64);
            let truth = top(&w, k);
            let p = Polynomial::taylor(g as usize);
            let pw: Vec<f64> = (0..n)
                .map(|j| {
                    let x: f64 =
                        (0..d).map(|c| q64[c] * keys[j * d + c]).sum::<f64>() * cfg.scale as f64;
                    p.eval(x)
                })
                .collect();
            let got: Vec<usize> = h
                .heavy_tokens(&q, k as u32)
                .unwrap()
                .iter()
                .map(|&(j, _)| j as usize)
                .collect();
            r_sk += recall(&got, &truth) / trials as f64;
            r_poly += recall(&top(&pw, k), &truth) / trials as f64;
            let kb = h.recorder().keys.as_ref().unwrap().heap_bytes();
            bytes = (h.state_bytes(), kb);
        }
        println!(
            "| 2^{lg} | {r_sk:.3} | {r_poly:.3} | {} | {} | {} |",
            bytes.0,
            bytes.1,
            n * (d + 16) * 4
        );
    }
}

fn real(dir: &std::path::Path, g: u32) {
    let k = 8usize;
    println!("\n## real heads (SmolLM2-135M, d = 64, n = 8192, s = 1/8, degree {g}, causal, 64 query positions in [1024, 8192))\n");
    println!("| head | recall@{k} sketch vs softmax | recall@{k} exact poly vs softmax | recall@{k} sketch vs exact poly | softmax mass of retrieved / of true top-{k} | key-sketch bytes | decode ms |");
    println!("|---|---|---|---|---|---|---|");
    for head in ["L00H1", "L07H4", "L15H8", "L26H6"] {
        let q = read_f32(&dir.join(format!("{head}_q.f32")));
        let kk = read_f32(&dir.join(format!("{head}_k.f32")));
        let v = read_f32(&dir.join(format!("{head}_v.f32")));
        let d = 64usize;
        let n = q.len() / d;
        let mut cfg = Config::new(d as u32);
        cfg.degree = g;
        cfg.scale = 0.125;
        cfg.retrieval_k = k as u32;
        cfg.max_tokens = 8192;
        let mut h = Sketch::new(&cfg).unwrap();
        let positions: Vec<usize> = (0..64).map(|i| 1024 + i * (n - 1024) / 64 + 7).collect();
        let mut out = vec![0.0f32; d];
        let (mut r_sk, mut r_poly, mut r_sp, mut mass) = (0.0, 0.0, 0.0, 0.0);
        let mut dec = 0.0;
        let p = Polynomial::taylor(g as usize);
        let k64: Vec<f64> = kk.iter().map(|&x| x as f64).collect();
        let mut pi = 0;
        for i in 0..n {
            let r = i * d..(i + 1) * d;
            h.push_token(&q[r.clone()], &kk[r.clone()], &v[r.clone()], &mut out)
                .unwrap();
            if pi < positions.len() && positions[pi] == i {
                pi += 1;
                let t = Instant::now();
                let got: Vec<usize> = match h.heavy_tokens(&q[r.clone()], k as u32) {
                    Ok(x) => x.iter().map(|&(j, _)| j as usize).collect(),
                    Err(_) => Vec::new(),
                };
                dec += t.elapsed().as_secs_f64() * 1e3 / 64.0;
                let q64: Vec<f64> = q[r].iter().map(|&x| x as f64).collect();
                let w = rref::softmax_weights(&q64, &k64[..(i + 1) * d], d, 0.125);
                let truth = top(&w, k);
                let pw: Vec<f64> = (0..=i)
                    .map(|j| p.eval((0..d).map(|c| q64[c] * k64[j * d + c]).sum::<f64>() * 0.125))
                    .collect();
                let ptop = top(&pw, k);
                r_sk += recall(&got, &truth) / 64.0;
                r_poly += recall(&ptop, &truth) / 64.0;
                r_sp += recall(&got, &ptop) / 64.0;
                let m_got: f64 = got.iter().map(|&j| w[j]).sum();
                let m_true: f64 = truth.iter().map(|&j| w[j]).sum();
                mass += m_got / m_true / 64.0;
            }
        }
        let kb = h.recorder().keys.as_ref().unwrap().heap_bytes();
        println!("| {head} | {r_sk:.3} | {r_poly:.3} | {r_sp:.3} | {mass:.3} | {kb} | {dec:.2} |");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| heads::set_dir("given"));
    let g: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    synthetic(2.0);
    synthetic(3.0);
    if dir.join("L00H1_q.f32").exists() {
        real(&dir, g);
    } else {
        println!(
            "\n(no real heads at {}: {})",
            dir.display(),
            heads::how_to_get("given")
        );
    }
}
