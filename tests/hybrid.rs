//! The hybrid state: exact while everything fits, never drops a token,
//! combines exact and tail on one scale, stays within its byte budget.
mod common;
use attnsketch::{reference, Config, Error, Mode, Sketch};
use common::*;

fn hybrid_cfg(d: u32, sinks: u32, window: u32, heavy: u32) -> Config {
    let mut c = Config::new(d);
    c.sink_tokens = sinks;
    c.window_tokens = window;
    c.heavy_tokens = heavy;
    c
}

#[test]
fn exact_while_everything_fits() {
    let mut rng = Rng(21);
    let (d, n) = (8usize, 100usize);
    let c = hybrid_cfg(d as u32, 4, 60, 60);
    let mut h = Sketch::new(&c).unwrap();
    let (q, k, v) = (
        rng.vec(n * d, 2.0),
        rng.vec(n * d, 2.0),
        rng.vec(n * d, 1.0),
    );
    let mut out = vec![0.0f32; n * d];
    h.push_tokens(n, &q, &k, &v, &mut out).unwrap();
    let want =
        reference::softmax_attention_causal(&to64(&q), &to64(&k), &to64(&v), d, d, c.scale as f64);
    let e = reference::rel_err(&to64(&out), &want);
    assert!(e < 1e-5, "rel err {e}");
    assert_eq!(h.hybrid().unwrap().tail_tokens(), 0);
}

#[test]
fn evicted_tokens_are_folded_not_dropped() {
    let mut rng = Rng(22);
    let (d, n) = (8usize, 500usize);
    let c = hybrid_cfg(d as u32, 2, 40, 40);
    let mut h = Sketch::new(&c).unwrap();
    let bytes = h.state_bytes();
    assert_eq!(bytes, Sketch::bytes_for(&c));
    let (q, k, v) = (
        rng.vec(n * d, 1.0),
        rng.vec(n * d, 1.0),
        rng.vec(n * d, 1.0),
    );
    let mut out = vec![0.0f32; n * d];
    h.push_tokens(n, &q, &k, &v, &mut out).unwrap();
    let hy = h.hybrid().unwrap();
    assert_eq!(hy.exact_len() as u64 + hy.tail_tokens(), n as u64);
    assert_eq!(h.state_bytes(), bytes);
    let want =
        reference::softmax_attention_causal(&to64(&q), &to64(&k), &to64(&v), d, d, c.scale as f64);
    let e = reference::rel_err(&to64(&out[n / 2 * d..]), &want[n / 2 * d..]);
    // Dropping instead of folding: sinks + the most recent 80 tokens (same slots).
    let mut drop = vec![0.0f64; n * d];
    for j in n / 2..n {
        let keep: Vec<usize> = (0..2).chain(j + 1 - 80..=j).collect();
        let s: Vec<f64> = keep
            .iter()
            .map(|&i| {
                (0..d)
                    .map(|c| q[j * d + c] as f64 * k[i * d + c] as f64)
                    .sum::<f64>()
                    * c.scale as f64
            })
            .collect();
        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
        let den: f64 = s.iter().map(|x| (x - mx).exp()).sum();
        for (w, &i) in s.iter().zip(&keep) {
            for cc in 0..d {
                drop[j * d + cc] += (w - mx).exp() / den * v[i * d + cc] as f64;
            }
        }
    }
    let e_drop = reference::rel_err(&drop[n / 2 * d..], &want[n / 2 * d..]);
    println!("rel err with 82 exact slots of 500 tokens: {e:.4} (dropping the rest: {e_drop:.4})");
    assert!(e < 0.5 * e_drop, "{e} vs {e_drop}");
}
