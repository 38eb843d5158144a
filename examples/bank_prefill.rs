//! Prefill cost of one SmolLM2-shaped layer bank (9 query heads over 3 kv
//! heads, d = 64) with the budget preset: `tokens` tokens through
//! `push_tokens` in calls of `batch` tokens (as an engine's ubatches), or
//! through `push_token` one at a time (`each`); for callgrind instruction
//! counts and wall times of the prefill path. Prints the time and a hash
//! of every output bit (equal hashes: equal outputs); with `DUMP=file` the
//! outputs too (f32, little-endian), to compare two builds.
//! `cargo run --release --example bank_prefill -- [budget KiB] [tokens] [batch] [each]`
mod bank_shape;
use std::time::Instant;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let kib: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let n: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(2600);
    let batch: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(512);
    let each = a.get(4).is_some_and(|s| s == "each");
    let (nq, nkv, d) = bank_shape::SHAPE;
    let (mut b, cfg) = bank_shape::bank(kib);
    let tok = bank_shape::tok;
    let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
    for j in 0..n {
        q.extend(tok(j, nq, d, 0.37));
        k.extend(tok(j, nkv, d, 0.71));
        v.extend(tok(j, nkv, d, 0.29));
    }
    let mut out = vec![0.0f32; n * nq * d];
    let t = Instant::now();
    let mut j = 0;
    while j < n {
        let c = if each { 1 } else { batch.min(n - j) };
        b.push_tokens(
            c,
            &q[j * nq * d..(j + c) * nq * d],
            &k[j * nkv * d..(j + c) * nkv * d],
            &v[j * nkv * d..(j + c) * nkv * d],
            &mut out[j * nq * d..(j + c) * nq * d],
        )
        .unwrap();
        j += c;
    }
    let s = t.elapsed().as_secs_f64();
    if let Ok(p) = std::env::var("DUMP") {
        let bytes: Vec<u8> = out.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(p, bytes).unwrap();
    }
    let hash = out.iter().fold(0xcbf29ce484222325u64, |h, x| {
        (h ^ x.to_bits() as u64).wrapping_mul(0x100000001b3)
    });
    println!(
        "{kib} KiB per kv head ({} window, {} heavy): {n} tokens in calls of {}: {:.1} ms, {:.1} us per token (outputs {hash:016x})",
        cfg.window_tokens,
        cfg.heavy_tokens,
        if each { 1 } else { batch },
        s * 1e3,
        s * 1e6 / n as f64
    );
}
