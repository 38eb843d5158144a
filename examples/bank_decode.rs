//! Decode cost of one SmolLM2-shaped layer bank (9 query heads over 3 kv
//! heads, d = 64) with the budget preset, once its window is full: for
//! callgrind instruction counts or perf profiles of the per-token path.
//! `cargo run --release --example bank_decode -- [budget KiB] [prefill] [decode] [layers]`
//! (`layers` banks, each token pushed through all of them as a model's
//! layers do: their states together exceed the caches as in an engine).
mod bank_shape;
use attnsketch::Bank;
use std::time::Instant;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let kib: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let pre: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(8192);
    let n: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(512);
    let layers: usize = a.get(4).and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    let (nq, nkv, d) = bank_shape::SHAPE;
    let (b0, cfg) = bank_shape::bank(kib);
    let mut banks: Vec<Bank> = (1..layers).map(|_| bank_shape::bank(kib).0).collect();
    banks.push(b0);
    let tok = bank_shape::tok;
    let mut out = vec![0.0f32; nq * d];
    let mut run = |from: usize, to: usize, banks: &mut [Bank]| {
        for j in from..to {
            let (q, k, v) = (
                tok(j, nq, d, 0.37),
                tok(j, nkv, d, 0.71),
                tok(j, nkv, d, 0.29),
            );
            for b in banks.iter_mut() {
                b.push_token(&q, &k, &v, &mut out).unwrap();
            }
        }
    };
    run(0, pre, &mut banks);
    let t = Instant::now();
    run(pre, pre + n, &mut banks);
    let us = t.elapsed().as_secs_f64() * 1e6 / (n * layers) as f64;
    println!(
        "{kib} KiB per kv head ({} window, {} heavy), {layers} layer(s): {us:.1} us per token and layer for {nkv} kv heads x {} queries ({:.1} per kv head)",
        cfg.window_tokens,
        cfg.heavy_tokens,
        nq / nkv,
        us / nkv as f64
    );
}
