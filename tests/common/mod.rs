//! Shared test helpers: a small deterministic RNG and data generators.
#![allow(dead_code)]

/// SplitMix64 (the crate's deterministic generator).
pub use attnsketch::rng::SplitMix64 as Rng;

pub fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Kernel tables of every level this CPU supports. A level it lacks must be
/// refused with `Unsupported` (asserted here, so a skip cannot hide a
/// missing level); skipped levels are listed on stderr.
pub fn kernel_levels() -> Vec<&'static attnsketch::kernels::Kernels> {
    use attnsketch::kernels::Kernels;
    use attnsketch::Level;
    let mut v = Vec::new();
    for &l in Level::ALL {
        match Kernels::for_level(l) {
            Ok(k) => {
                assert!(l.supported());
                assert_eq!(k.level, l);
                v.push(k);
            }
            Err(e) => {
                assert!(!l.supported(), "{l:?} supported but refused");
                assert_eq!(e, attnsketch::Error::Unsupported);
                eprintln!("level {} not supported on this CPU: skipped", l.name());
            }
        }
    }
    v
}

/// Every token `j < n` through `push_token` (causal), row by row; the
/// outputs, `n x dv`.
pub fn push_each(
    h: &mut attnsketch::Sketch,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    dv: usize,
) -> Vec<f32> {
    let n = q.len() / d;
    let mut out = vec![0.0f32; n * dv];
    for j in 0..n {
        h.push_token(
            &q[j * d..(j + 1) * d],
            &k[j * d..(j + 1) * d],
            &v[j * dv..(j + 1) * dv],
            &mut out[j * dv..(j + 1) * dv],
        )
        .unwrap();
    }
    out
}

/// `softmax(x)` in f64 (shifted by the max).
pub fn softmax64(x: &[f64]) -> Vec<f64> {
    let xm = x.iter().cloned().fold(f64::MIN, f64::max);
    let w: Vec<f64> = x.iter().map(|&t| (t - xm).exp()).collect();
    let den: f64 = w.iter().sum();
    w.into_iter().map(|t| t / den).collect()
}
