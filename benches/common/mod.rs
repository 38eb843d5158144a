//! Shared by the side-by-side bench binaries (`levels`, `hybrid`): a
//! deterministic generator, timed cases run in interleaved rounds, medians,
//! and the exact-decode case they compare against.

use attnsketch::baseline::ExactDecoder;
use attnsketch::Level;
use std::hint::black_box;
use std::time::Instant;

/// `(smoke, rounds)` from the arguments: `cargo bench` passes `--bench`
/// (21 rounds; `quick`: 5); `cargo test --all-targets` passes nothing, and
/// then a one-round smoke run keeps the test suite fast.
pub fn rounds(args: &[String]) -> (bool, usize) {
    let quick = args.iter().any(|a| a == "quick");
    let smoke = !quick && !args.iter().any(|a| a == "--bench");
    (
        smoke,
        if smoke {
            1
        } else if quick {
            5
        } else {
            21
        },
    )
}

/// The CPU levels this machine supports.
pub fn levels() -> Vec<Level> {
    Level::ALL
        .iter()
        .copied()
        .filter(|l| l.supported())
        .collect()
}

/// LCG; `next` is uniform in [-1, 1).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, s: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * s).collect()
    }
}

/// One timed case: `run(n)` makes `n` calls.
pub struct Case {
    pub name: String,
    /// Bytes the case moves per call (for GB/s), 0 if not meaningful.
    #[allow(dead_code)] // read by `levels` only
    pub bytes: f64,
    pub calls: usize,
    pub run: Box<dyn FnMut(usize)>,
    pub samples: Vec<f64>,
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Warm-up, then `rounds` interleaved rounds (every case once per round),
/// so ratios between cases are measured side by side on a noisy machine.
/// Returns the median seconds per call of each case, by name.
pub fn run_rounds(cases: &mut [Case], rounds: usize) -> std::collections::HashMap<String, f64> {
    for c in cases.iter_mut() {
        (c.run)(c.calls);
    }
    for _ in 0..rounds {
        for c in cases.iter_mut() {
            let t0 = Instant::now();
            (c.run)(c.calls);
            c.samples.push(t0.elapsed().as_secs_f64() / c.calls as f64);
        }
    }
    cases
        .iter_mut()
        .map(|c| (c.name.clone(), median(&mut c.samples)))
        .collect()
}

/// Exact decoding of one query over the first `n` cached tokens (`d`, `dv`
/// from the slices), the level's online softmax.
pub fn decode_case(
    level: Level,
    n: usize,
    d: usize,
    dv: usize,
    k: &std::rc::Rc<Vec<f32>>,
    v: &std::rc::Rc<Vec<f32>>,
) -> Case {
    let dec = ExactDecoder::new(level).unwrap();
    let q = Rng(9).vec(d, 1.0);
    let (k, v) = (k.clone(), v.clone());
    let mut out = vec![0.0f32; dv];
    let scale = 1.0 / (d as f32).sqrt();
    Case {
        name: format!("exact n={n} {}", level.name()),
        bytes: (4 * n * (d + dv)) as f64,
        calls: (65536 * 4 / n).clamp(1, 256),
        run: Box::new(move |c| {
            for _ in 0..c {
                dec.decode(&q, &k[..n * d], &v[..n * dv], scale, &mut out)
                    .unwrap();
                black_box(&out);
            }
        }),
        samples: vec![],
    }
}
