//! Numerics at scale: streams N causal tokens (default 10^8) through one head
//! at small d and reports the relative drift of its state (M, z) from an f64
//! reference (compensated f64 sums of the exact f64 features).
//!
//! Usage: `cargo run --release --example drift_causal -- [N] [d] [g]`
//! (d = dv; defaults 100000000 4 2). CI runs the 10^6 version in
//! `tests/drift.rs`.
//!
//! Drift measures, per array X in {M, z}:
//!   normwise    max_i |X_i - X_ref,i| / max_i |X_ref,i|
//!   conditioned max_i |X_i - X_ref,i| / sum_j |increment_j,i|
use attnsketch::{Config, FeatureMap, Sketch};

/// Result of one run.
#[derive(Debug)]
pub struct Drift {
    pub tokens: u64,
    pub normwise_m: f64,
    pub normwise_z: f64,
    pub conditioned: f64,
    pub nonfinite_outputs: u64,
}

use attnsketch::rng::SplitMix64 as Rng;

/// Neumaier-compensated f64 accumulator.
#[derive(Clone, Copy, Default)]
struct Acc {
    s: f64,
    c: f64,
}
impl Acc {
    #[inline]
    fn add(&mut self, x: f64) {
        let t = self.s + x;
        if self.s.abs() >= x.abs() {
            self.c += (self.s - t) + x;
        } else {
            self.c += (x - t) + self.s;
        }
        self.s = t;
    }
    fn get(&self) -> f64 {
        self.s + self.c
    }
}

/// Streams `n` tokens of dimension `d` (= dv) at degree `g` and measures drift.
pub fn run(n: u64, d: usize, g: u32) -> Drift {
    let mut c = Config::new(d as u32);
    c.degree = g;
    let mut h = Sketch::new(&c).unwrap();
    let map = FeatureMap::new(d, g as usize).unwrap();
    let t = map.len();
    let mut copies = Vec::new();
    map.for_each_copy(|i, src, dst, len| copies.push((i, src, dst, len)));
    let (mut mref, mut zref) = (vec![Acc::default(); t * d], vec![Acc::default(); t]);
    let (mut mabs, mut zabs) = (vec![0.0f64; t * d], vec![0.0f64; t]);
    let mut phi = vec![0.0f64; t];
    let mut rng = Rng(12345);
    const B: usize = 4096;
    let (mut q, mut k, mut v, mut out) = (
        vec![0.0f32; B * d],
        vec![0.0f32; B * d],
        vec![0.0f32; B * d],
        vec![0.0f32; B * d],
    );
    let mut done = 0u64;
    let mut nonfinite = 0u64;
    while done < n {
        let b = (n - done).min(B as u64) as usize;
        for x in q[..b * d]
            .iter_mut()
            .chain(k[..b * d].iter_mut())
            .chain(v[..b * d].iter_mut())
        {
            *x = rng.uni();
        }
        h.push_tokens(b, &q[..b * d], &k[..b * d], &v[..b * d], &mut out[..b * d])
            .unwrap();
        nonfinite += out[..b * d].iter().filter(|x| !x.is_finite()).count() as u64;
        for j in 0..b {
            let (kj, vj) = (&k[j * d..(j + 1) * d], &v[j * d..(j + 1) * d]);
            phi[0] = 1.0;
            for &(i, src, dst, len) in &copies {
                let xi = kj[i] as f64;
                for o in 0..len {
                    phi[dst + o] = xi * phi[src + o];
                }
            }
            for a in 0..t {
                zref[a].add(phi[a]);
                zabs[a] += phi[a].abs();
                for c in 0..d {
                    let inc = phi[a] * vj[c] as f64;
                    mref[a * d + c].add(inc);
                    mabs[a * d + c] += inc.abs();
                }
            }
        }
        done += b as u64;
    }
    let (m, z) = (h.state().m_f64(), h.state().z_f64());
    let norm = |x: &[f64], r: &[Acc]| {
        let scale = r.iter().fold(0.0f64, |s, a| s.max(a.get().abs()));
        x.iter()
            .zip(r)
            .fold(0.0f64, |e, (p, a)| e.max((p - a.get()).abs()))
            / scale
    };
    let cond = |x: &[f64], r: &[Acc], s: &[f64]| {
        x.iter().zip(r).zip(s).fold(0.0f64, |e, ((p, a), &w)| {
            e.max((p - a.get()).abs() / w.max(1e-300))
        })
    };
    Drift {
        tokens: h.token_count(),
        normwise_m: norm(&m, &mref),
        normwise_z: norm(&z, &zref),
        conditioned: cond(&m, &mref, &mabs).max(cond(&z, &zref, &zabs)),
        nonfinite_outputs: nonfinite,
    }
}

#[allow(dead_code)]
fn main() {
    let mut a = std::env::args().skip(1);
    let n: u64 = a.next().and_then(|s| s.parse().ok()).unwrap_or(100_000_000);
    let d: usize = a.next().and_then(|s| s.parse().ok()).unwrap_or(4);
    let g: u32 = a.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let t0 = std::time::Instant::now();
    let r = run(n, d, g);
    println!(
        "tokens={} d=dv={d} g={g}: normwise drift M {:.3e}, z {:.3e}; conditioned {:.3e}; non-finite outputs {} ({:.1} s)",
        r.tokens,
        r.normwise_m,
        r.normwise_z,
        r.conditioned,
        r.nonfinite_outputs,
        t0.elapsed().as_secs_f64()
    );
}
