//! Per-token cost of the recovery sketches, for callgrind instruction counts:
//! `valgrind --tool=callgrind target/release/examples/push_cost {plain|output|keys} 2000`.
use attnsketch::{Config, Sketch};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let which = a.get(1).map(String::as_str).unwrap_or("plain");
    let n: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let mut cfg = Config::new(16);
    cfg.degree = 4;
    cfg.scale = 1.0 / 16.0;
    cfg.max_tokens = 1 << 20;
    match which {
        "output" => cfg.recovery_k = 8,
        "keys" => cfg.retrieval_k = 8,
        _ => {}
    }
    let mut h = Sketch::new(&cfg).unwrap();
    let mut out = vec![0.0f32; 16];
    for j in 0..n {
        let q: Vec<f32> = (0..16).map(|i| ((i + j) as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..16).map(|i| ((i * j) as f32 * 0.71).cos()).collect();
        h.push_token(&q, &k, &k, &mut out).unwrap();
    }
    println!("{}", out[0]);
}
