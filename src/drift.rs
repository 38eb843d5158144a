//! Accumulation drift of the compensated state against an f64 reference
//! (shared by the long-stream test and the `drift` example).

use crate::{Config, Mode, Sketch};

/// Result of a drift run.
#[derive(Clone, Copy, Debug)]
pub struct Drift {
    /// `||M - M_ref||_F / ||M_ref||_F` over M and z together.
    pub rel_frobenius: f64,
    /// `max_e |M_e - M_ref,e| / sum_j |increment_j,e|`.
    pub rel_max_elem: f64,
    /// Same two figures for a plain f32 running sum (what the scheme avoids).
    pub naive_rel_frobenius: f64,
}

/// Streams `n` tokens of dimension `d` (values `dv = d`, degree 2) with
/// entries in `[0.5, 1.5)` (positive, so sums grow like n and plain f32
/// sums stagnate) through a non-causal sketch, and compares its state with
/// an f64 accumulation of the same features.
pub fn measure(n: u64, d: usize, seed: u64) -> Drift {
    let mut c = Config::new(d as u32);
    c.mode = Mode::NonCausal;
    let mut h = Sketch::new(&c).expect("config");
    let t = h.feature_map().len();
    let mut m_ref = vec![0.0f64; t * (d + 1)];
    let mut abs_ref = vec![0.0f64; t * (d + 1)];
    let mut naive = vec![0.0f32; t * (d + 1)];
    let mut phik = vec![0.0f32; t];
    let (mut k, mut v) = (vec![0.0f32; d], vec![0.0f32; d]);
    let mut rng = crate::rng::SplitMix64(seed);
    let mut next = || 0.5 + rng.unit();
    let kern = crate::kernels::Kernels::for_level(h.level()).expect("level");
    for _ in 0..n {
        k.iter_mut().for_each(|x| *x = next());
        v.iter_mut().for_each(|x| *x = next());
        h.append_kv(&k, &v).expect("finite input");
        (kern.expand)(h.feature_map(), &k, &mut phik);
        for (i, &p) in phik.iter().enumerate() {
            let row = i * (d + 1);
            for c in 0..=d {
                let x = if c < d { v[c] } else { 1.0 };
                let inc = p as f64 * x as f64;
                m_ref[row + c] += inc;
                abs_ref[row + c] += inc.abs();
                naive[row + c] += p * x;
            }
        }
    }
    let (m, z) = (h.state().m_f64(), h.state().z_f64());
    let (mut e2, mut r2, mut n2, mut mx) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for i in 0..t {
        for c in 0..=d {
            let got = if c < d { m[i * d + c] } else { z[i] };
            let r = m_ref[i * (d + 1) + c];
            e2 += (got - r) * (got - r);
            r2 += r * r;
            n2 += (naive[i * (d + 1) + c] as f64 - r).powi(2);
            mx = mx.max((got - r).abs() / abs_ref[i * (d + 1) + c].max(f64::MIN_POSITIVE));
        }
    }
    Drift {
        rel_frobenius: (e2 / r2).sqrt(),
        rel_max_elem: mx,
        naive_rel_frobenius: (n2 / r2).sqrt(),
    }
}
