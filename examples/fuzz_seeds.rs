//! Writes seed inputs for the `deserialize` fuzz target: serialized heads of
//! small configs in both modes, empty and after a few tokens, and hybrid
//! heads past capacity in every key/value format.
//! Usage: `cargo run --release --example fuzz_seeds -- fuzz/corpus/deserialize`
#![allow(clippy::explicit_counter_loop)]
use attnsketch::{Config, Mode, Sketch};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus/deserialize".into());
    std::fs::create_dir_all(&dir).unwrap();
    let mut i = 0;
    let plain = [
        (1u32, 1u32, 0u32, Mode::Causal, 0usize),
        (2, 1, 1, Mode::Causal, 3),
        (2, 2, 2, Mode::NonCausal, 5),
        (3, 2, 2, Mode::Causal, 70),
        (1, 3, 3, Mode::NonCausal, 1),
    ]
    .map(|x| (x, None));
    // Hybrid: 1 sink, window 6, 2 heavy, 2 tail groups; (key, value) format.
    let hybrid = [(0u32, 0u32), (1, 1), (0, 2), (1, 2)]
        .map(|f| ((3u32, 2u32, 2u32, Mode::Causal, 20usize), Some(f)));
    for &((d, dv, g, mode, n), formats) in plain.iter().chain(&hybrid) {
        let mut c = Config::new(d);
        c.value_dim = dv;
        c.degree = g;
        c.mode = mode;
        if let Some((kf, vf)) = formats {
            (
                c.sink_tokens,
                c.window_tokens,
                c.heavy_tokens,
                c.tail_groups,
            ) = (1, 6, 2, 2);
            (c.key_format, c.value_format) = (kf, vf);
        }
        let mut h = Sketch::new(&c).unwrap();
        let mut o = vec![0.0f32; dv as usize];
        for j in 0..n {
            let x: Vec<f32> = (0..d.max(dv))
                .map(|i| ((i as usize + j) % 7) as f32 / 7.0 - 0.4)
                .collect();
            match mode {
                Mode::Causal => h
                    .push_token(
                        &x[..d as usize],
                        &x[..d as usize],
                        &x[..dv as usize],
                        &mut o,
                    )
                    .unwrap(),
                Mode::NonCausal => {
                    h.append_kv(&x[..d as usize], &x[..dv as usize]).unwrap();
                    h.push_query(&x[..d as usize], &mut o).unwrap();
                }
            }
        }
        let b = h.serialize().unwrap();
        std::fs::write(format!("{dir}/seed{i}"), &b).unwrap();
        // The same with a leading odd byte: the target's CRC-fixing view.
        let mut b2 = vec![1u8];
        b2.extend_from_slice(&b);
        std::fs::write(format!("{dir}/seed{i}_fix"), &b2).unwrap();
        i += 1;
    }
}
