//! Reproduces the paper's claim in its bounded regime (d = 16, g = 4,
//! s = 1/d): for n = 2^10 .. 2^20 causal tokens, the handle's bytes stay flat
//! while the KV cache grows linearly, and the recovery error of an output
//! column (relative to the best k-term error) does not grow with n.
//!
//! Run: `cargo run --release --example recovery_claim [log2_max] [csv_path]`
//! (defaults 20 and `docs/recovery_claim.csv`); then
//! `scripts/plot_recovery.py` draws `docs/recovery_claim.png` from the CSV.

use attnsketch::recovery::reference as rref;
use attnsketch::{Config, Sketch};
use std::io::Write;
use std::time::Instant;

use attnsketch::rng::SplitMix64 as Rng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let max_log: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let csv = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "docs/recovery_claim.csv".into());
    let (d, dv, g, b_entry, k) = (16usize, 16usize, 4u32, 2.0f32, 8u32);
    let mut cfg = Config::new(d as u32);
    cfg.degree = g;
    cfg.scale = 1.0 / d as f32;
    cfg.recovery_k = k;
    cfg.recovery_eps = 0.5;
    let mut h = Sketch::new(&cfg).expect("config");
    let mut rng = Rng(2026);
    let n_max = 1usize << max_log;
    let col = 0usize;
    // The stream (kept only to compute exact outputs of sampled rows).
    let mut kk = Vec::with_capacity(n_max * d);
    let mut vv = Vec::with_capacity(n_max * dv);
    let mut qq = Vec::with_capacity(n_max * d);
    let mut o_col = Vec::with_capacity(n_max);
    let mut out_rows: Vec<f32> = Vec::with_capacity(n_max * dv);
    let batch = 1024;
    let mut out = vec![0.0f32; batch * dv];
    let mut f = std::fs::File::create(&csv).expect("csv");
    writeln!(
        f,
        "n,state_bytes,kv_bytes_f32,decode_us,ratio_to_best_k,topk_found,best_k_rel,poly_rel_err"
    )
    .unwrap();
    println!(
        "| n | state bytes | KV bytes (f32) | KV / state | decode (us) | err / best-k err | true top-{k} found | best-k err / norm | poly rel. err (32 rows) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut n = 0usize;
    let t0 = Instant::now();
    for lg in 10..=max_log {
        let target = 1usize << lg;
        while n < target {
            let m = batch.min(target - n);
            let q: Vec<f32> = (0..m * d).map(|_| rng.uni() * b_entry).collect();
            let kx: Vec<f32> = (0..m * d).map(|_| rng.uni() * b_entry).collect();
            let v: Vec<f32> = (0..m * dv).map(|_| rng.uni()).collect();
            h.push_tokens(m, &q, &kx, &v, &mut out[..m * dv])
                .expect("push");
            for j in 0..m {
                o_col.push(out[j * dv + col] as f64);
            }
            out_rows.extend_from_slice(&out[..m * dv]);
            qq.extend_from_slice(&q);
            kk.extend_from_slice(&kx);
            vv.extend_from_slice(&v);
            n += m;
        }
        let t = Instant::now();
        let y = h.recover_column(col as u32, k).expect("recover");
        let dec_us = t.elapsed().as_secs_f64() * 1e6;
        let y64: Vec<(u64, f64)> = y.iter().map(|&(i, v)| (i, v as f64)).collect();
        let err = rref::sparse_error(&o_col, &y64);
        let best = rref::best_k_error(&o_col, k as usize);
        let norm = o_col.iter().map(|v| v * v).sum::<f64>().sqrt();
        let mut mags: Vec<(f64, usize)> = o_col
            .iter()
            .enumerate()
            .map(|(i, v)| (v.abs(), i))
            .collect();
        mags.sort_by(|a, b| b.0.total_cmp(&a.0));
        let found = mags[..k as usize]
            .iter()
            .filter(|(_, i)| y.iter().any(|&(j, _)| j as usize == *i))
            .count();
        // Polynomial error on 32 sampled rows: exact causal softmax in f64.
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for s in 0..32 {
            let j = (rng.next_u64() % n as u64) as usize;
            let _ = s;
            let q64: Vec<f64> = qq[j * d..(j + 1) * d].iter().map(|&x| x as f64).collect();
            let k64: Vec<f64> = kk[..(j + 1) * d].iter().map(|&x| x as f64).collect();
            let v64: Vec<f64> = vv[..(j + 1) * dv].iter().map(|&x| x as f64).collect();
            let ex = rref::softmax_attention(&q64, &k64, &v64, d, dv, cfg.scale as f64);
            for c in 0..dv {
                let e = ex[c] - out_rows[j * dv + c] as f64;
                num += e * e;
                den += ex[c] * ex[c];
            }
        }
        let poly = (num / den).sqrt();
        let sb = h.state_bytes();
        let kv = n * (d + dv) * 4;
        println!(
            "| 2^{lg} | {sb} | {kv} | {:.2} | {dec_us:.0} | {:.4} | {found}/{k} | {:.4} | {poly:.2e} |",
            kv as f64 / sb as f64,
            err / best,
            best / norm
        );
        writeln!(
            f,
            "{n},{sb},{kv},{dec_us:.1},{:.6},{found},{:.6},{poly:.6e}",
            err / best,
            best / norm
        )
        .unwrap();
    }
    eprintln!("total {:.1} s", t0.elapsed().as_secs_f64());
}
