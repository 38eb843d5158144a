//! The constant-memory peers of the evaluation tool, each at a byte budget,
//! faithful to its paper. Each returns the outputs at the evaluation rows
//! (causal: row j sees tokens 0..=j) and the bytes its state really holds.
//!
//! - StreamingLLM (Xiao et al. 2023): 4 attention-sink tokens + the most
//!   recent window; `(4 + W)(d + dv) 4` bytes.
//! - H2O (Zhang et al. 2023): half heavy hitters, half recent window; every
//!   step adds the current query's softmax weights to each cached token's
//!   accumulated score and, when full, evicts the non-recent token with the
//!   lowest score; `C ((d + dv) 4 + 4)` bytes (the score is kept per token).
//! - Taylor-2 (Based, Arora et al. 2024, without its learned projection):
//!   `P(x) = 1 + x + x^2/2` features of all tokens, plain f32 state
//!   `binom(d'+2, 2)(dv + 1) 4` bytes; when the full d does not fit, q and k
//!   are first projected to the largest d' that fits by a seeded Gaussian
//!   (JL) map. Evaluated by its closed form `sum_i P(s q.k_i) v_i / sum_i P`,
//!   which equals the sketch's output up to f32 rounding.
//! - With `--rounded-peers`, StreamingLLM and H2O also run with the token
//!   formats our hybrid uses (int16 keys with a row scale, binary16 values):
//!   `(2 d + 4 + 2 dv)` bytes per token (+4 for H2O's score).
//! - Cache formats at equal bytes (the demo's peers; `eval --cache-peers`), all
//!   StreamingLLM's eviction (4 sinks + the most recent window), each token in
//!   the format a quantized KV cache would store:
//!   - `streaming_llm_f16`: binary16 keys and values (llama.cpp's default cache
//!     type), `2 (d + dv)` bytes per token;
//!   - `kivi8` (Liu et al. 2024, at 8 bits): keys quantized per channel over
//!     aligned groups of 32 tokens, values per token over groups of 32
//!     channels, asymmetric (min and step per group, both binary16), 256
//!     levels; the newest incomplete key group is kept unquantized (f32, as
//!     KIVI keeps a full-precision residual) but counted at the quantized
//!     size, a little in the peer's favour: `d + dv + 4 (d + dv) / 32` bytes
//!     per token (144 at d = dv = 64);
//!   - `q8_0`: llama.cpp's q8_0 cache type after the Walsh-Hadamard rotation
//!     llama.cpp applies to quantized caches (q, k, v rotated by the
//!     orthonormal H; scores unchanged, the output rotated back): blocks of 32
//!     with one binary16 scale `max|x| / 127`, `34 (d + dv) / 32` bytes per
//!     token (136).
//! - Performer FAVOR+ (Choromanski et al. 2021): m positive orthogonal random
//!   features `exp(w.x - |x|^2/2)/sqrt(m)`, `x = s^(1/2) q` or `s^(1/2) k`,
//!   `m (dv + 1) 4` bytes (W regenerated from a seed, not stored), streamed
//!   in f64 with a running log-offset so nothing under- or overflows.

use super::{Head, Rng};

/// Exact softmax attention of query row `j` over the token indices `idx`.
pub fn attend(h: &Head, j: usize, idx: impl Iterator<Item = usize>, out: &mut [f64]) {
    let d = h.d;
    let q = &h.q[j * d..(j + 1) * d];
    let s: Vec<(usize, f64)> = idx
        .map(|i| (i, dot(q, &h.k[i * d..(i + 1) * d]) as f64 * h.scale as f64))
        .collect();
    let mx = s.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
    out.fill(0.0);
    let mut den = 0.0;
    for &(i, x) in &s {
        let w = (x - mx).exp();
        den += w;
        for (o, &v) in out.iter_mut().zip(&h.v[i * d..(i + 1) * d]) {
            *o += w * v as f64;
        }
    }
    out.iter_mut().for_each(|o| *o /= den);
}

#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Output of a peer at the evaluation rows (row-major) and its state bytes.
pub struct PeerResult {
    pub out: Vec<f64>,
    pub bytes: usize,
}

pub fn streaming_llm(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    streaming_llm_at(h, (h.d + h.d) * 4, budget, rows)
}

/// StreamingLLM storing each token in `per` bytes (`h` holds the stored,
/// possibly rounded, tokens).
fn streaming_llm_at(h: &Head, per: usize, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    let cap = budget / per;
    if cap <= 4 {
        return None;
    }
    let w = cap - 4;
    let mut out = vec![0.0; rows.len() * h.d];
    for (r, &j) in rows.iter().enumerate() {
        let lo = (j + 1).saturating_sub(w).max(4.min(j + 1));
        let idx = (0..4.min(j + 1)).chain(lo..=j);
        attend(h, j, idx, &mut out[r * h.d..(r + 1) * h.d]);
    }
    Some(PeerResult {
        out,
        bytes: cap * per,
    })
}

pub fn h2o(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    h2o_at(h, (h.d + h.d) * 4 + 4, budget, rows)
}

/// H2O storing each token and its score in `per` bytes.
fn h2o_at(h: &Head, per: usize, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    let d = h.d;
    let cap = budget / per;
    if cap < 4 {
        return None;
    }
    let recent = cap / 2;
    let mut cache: Vec<usize> = Vec::with_capacity(cap + 1);
    let mut score: Vec<f32> = Vec::with_capacity(cap + 1);
    let mut out = vec![0.0; rows.len() * d];
    let mut next_row = 0;
    let mut w = vec![0.0f32; cap + 1];
    for j in 0..h.n {
        cache.push(j);
        score.push(0.0);
        let q = &h.q[j * d..(j + 1) * d];
        let mut mx = f32::NEG_INFINITY;
        for (c, &i) in cache.iter().enumerate() {
            w[c] = dot(q, &h.k[i * d..(i + 1) * d]) * h.scale;
            mx = mx.max(w[c]);
        }
        let mut den = 0.0f32;
        for x in w[..cache.len()].iter_mut() {
            *x = (*x - mx).exp();
            den += *x;
        }
        for (s, x) in score.iter_mut().zip(&w[..cache.len()]) {
            *s += x / den;
        }
        if next_row < rows.len() && rows[next_row] == j {
            let o = &mut out[next_row * d..(next_row + 1) * d];
            o.fill(0.0);
            for (c, &i) in cache.iter().enumerate() {
                for (oo, &v) in o.iter_mut().zip(&h.v[i * d..(i + 1) * d]) {
                    *oo += (w[c] / den) as f64 * v as f64;
                }
            }
            next_row += 1;
        }
        if cache.len() > cap {
            // Evict the lowest accumulated score among the non-recent tokens.
            let limit = (j + 1).saturating_sub(recent);
            let mut best = usize::MAX;
            for (c, &i) in cache.iter().enumerate() {
                if i < limit && (best == usize::MAX || score[c] < score[best]) {
                    best = c;
                }
            }
            cache.remove(best);
            score.remove(best);
        }
    }
    Some(PeerResult {
        out,
        bytes: cap * per,
    })
}

/// The head with its keys and values as our hybrid stores them by default
/// (`AS_KEYS_I16`, `AS_VALUES_F16`): each key `s n` with int16 `n` and an f32
/// row scale `s = max|k| / 32767`, each value element rounded to binary16.
/// `2 d + 4 + 2 dv` bytes per token, against `4 (d + dv)` for f32.
fn rounded(h: &Head) -> Head {
    let d = h.d;
    let mut k = h.k.clone();
    for row in k.chunks_exact_mut(d) {
        let amax = row.iter().fold(0.0f32, |a, &x| a.max(x.abs()));
        if amax > 0.0 {
            let s = amax / 32767.0;
            row.iter_mut().for_each(|x| *x = (*x / s).round() * s);
        }
    }
    let v =
        h.v.iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect();
    Head {
        name: h.name.clone(),
        n: h.n,
        d,
        scale: h.scale,
        q: h.q.clone(),
        k,
        v,
        o: Vec::new(),
    }
}

/// StreamingLLM with int16 keys and binary16 values (`rounded`): 1.94x the
/// tokens of `streaming_llm` at d = dv = 64.
pub fn streaming_llm_i16(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    streaming_llm_at(&rounded(h), 4 * h.d + 4, budget, rows)
}

/// H2O with int16 keys and binary16 values (`rounded`), f32 scores.
pub fn h2o_i16(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    h2o_at(&rounded(h), 4 * h.d + 8, budget, rows)
}

/// `x` rounded to binary16 and back.
fn f16r(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// StreamingLLM with binary16 keys and values.
pub fn streaming_llm_f16(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    let r = Head {
        name: h.name.clone(),
        n: h.n,
        d: h.d,
        scale: h.scale,
        q: h.q.clone(),
        k: h.k.iter().map(|&x| f16r(x)).collect(),
        v: h.v.iter().map(|&x| f16r(x)).collect(),
        o: Vec::new(),
    };
    streaming_llm_at(&r, 2 * (h.d + h.d), budget, rows)
}

/// KIVI-style asymmetric round trip of `x` at `bits` bits (binary16 min and
/// step, levels 0..=2^bits - 1).
fn asym(x: &mut [f32], bits: u32) {
    let top = ((1u32 << bits) - 1) as f32;
    let lo = x.iter().fold(f32::INFINITY, |a, &b| a.min(b));
    let hi = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let (lo, step) = (f16r(lo), f16r((hi - lo) / top));
    for e in x.iter_mut() {
        *e = if step > 0.0 {
            lo + ((*e - lo) / step).round().clamp(0.0, top) * step
        } else {
            lo
        };
    }
}

/// KIVI at 8 bits (see the module doc): 4 sinks + the newest window.
pub fn kivi8(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    kivi(h, budget, rows, 8)
}

/// KIVI at 4 bits, as `kivi8` with 16 levels: `(d + dv) / 2 + 4 (d + dv) /
/// 32` bytes per token (80 at d = dv = 64). End to end the strongest peer
/// we know at equal bytes (docs/results.md).
pub fn kivi4(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    kivi(h, budget, rows, 4)
}

/// KIVI at `bits` bits: 4 sinks + the newest window.
fn kivi(h: &Head, budget: usize, rows: &[usize], bits: u32) -> Option<PeerResult> {
    const G: usize = 32;
    let d = h.d;
    let per = (2 * d * bits as usize) / 8 + 4 * (2 * d) / G;
    let cap = budget / per;
    if cap <= 4 {
        return None;
    }
    let w = cap - 4;
    // Keys: per channel over each complete group of 32 tokens.
    let mut kq = h.k.clone();
    let mut col = vec![0.0f32; G];
    for g in 0..h.n / G {
        for c in 0..d {
            for (t, x) in col.iter_mut().enumerate() {
                *x = h.k[(g * G + t) * d + c];
            }
            asym(&mut col, bits);
            for (t, &x) in col.iter().enumerate() {
                kq[(g * G + t) * d + c] = x;
            }
        }
    }
    // Values: per token over groups of 32 channels.
    let mut vq = h.v.clone();
    for row in vq.chunks_exact_mut(d) {
        for grp in row.chunks_mut(G) {
            asym(grp, bits);
        }
    }
    let mut out = vec![0.0; rows.len() * d];
    for (r, &j) in rows.iter().enumerate() {
        // Tokens of the group holding j stay unquantized until it is complete.
        let done = if j % G == G - 1 { j + 1 } else { j - j % G };
        let lo = (j + 1).saturating_sub(w).max(4.min(j + 1));
        let idx: Vec<usize> = (0..4.min(j + 1)).chain(lo..=j).collect();
        let qj = &h.q[j * d..(j + 1) * d];
        let s: Vec<f64> = idx
            .iter()
            .map(|&i| {
                let k = if i < done { &kq } else { &h.k };
                dot(qj, &k[i * d..(i + 1) * d]) as f64 * h.scale as f64
            })
            .collect();
        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let o = &mut out[r * d..(r + 1) * d];
        let mut den = 0.0;
        for (&i, &x) in idx.iter().zip(&s) {
            let wgt = (x - mx).exp();
            den += wgt;
            for (a, &b) in o.iter_mut().zip(&vq[i * d..(i + 1) * d]) {
                *a += wgt * b as f64;
            }
        }
        o.iter_mut().for_each(|a| *a /= den);
    }
    Some(PeerResult {
        out,
        bytes: cap * per,
    })
}

/// Orthonormal Walsh-Hadamard matrix of order d (a power of two), row-major.
fn hadamard(d: usize) -> Vec<f32> {
    let s = 1.0 / (d as f32).sqrt();
    (0..d * d)
        .map(|e| {
            let (r, c) = (e / d, e % d);
            if (r & c).count_ones() % 2 == 0 {
                s
            } else {
                -s
            }
        })
        .collect()
}

/// Rows of `x` (n x d) times the symmetric `hm`.
fn rotate(x: &[f32], hm: &[f32], d: usize) -> Vec<f32> {
    x.chunks_exact(d)
        .flat_map(|r| {
            (0..d)
                .map(|c| dot(r, &hm[c * d..(c + 1) * d]))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// llama.cpp's q8_0 round trip of a row: blocks of 32, scale max|x| / 127
/// stored binary16, `round(x / scale)`.
fn q8_0_row(x: &mut [f32]) {
    for b in x.chunks_mut(32) {
        let amax = b.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        let dsc = amax / 127.0;
        let id = if dsc > 0.0 { 1.0 / dsc } else { 0.0 };
        let d16 = f16r(dsc);
        for v in b.iter_mut() {
            *v = (*v * id).round() * d16;
        }
    }
}

/// q8_0 cache after the Hadamard rotation (see the module doc).
pub fn q8_0(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    let d = h.d;
    if !d.is_power_of_two() || !d.is_multiple_of(32) {
        return None;
    }
    let hm = hadamard(d);
    let mut k = rotate(&h.k, &hm, d);
    let mut v = rotate(&h.v, &hm, d);
    k.chunks_exact_mut(d).for_each(q8_0_row);
    v.chunks_exact_mut(d).for_each(q8_0_row);
    let r = Head {
        name: h.name.clone(),
        n: h.n,
        d,
        scale: h.scale,
        q: rotate(&h.q, &hm, d),
        k,
        v,
        o: Vec::new(),
    };
    let mut res = streaming_llm_at(&r, 34 * (2 * d) / 32, budget, rows)?;
    let mut o = vec![0.0f64; d];
    for row in res.out.chunks_exact_mut(d) {
        for (c, oc) in o.iter_mut().enumerate() {
            *oc = (0..d).map(|e| row[e] * hm[e * d + c] as f64).sum();
        }
        row.copy_from_slice(&o);
    }
    Some(res)
}

pub fn taylor2(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    let (d, dv) = (h.d, h.d);
    let size = |dp: usize| (dp + 2) * (dp + 1) / 2 * (dv + 1) * 4;
    let dp = (1..=d).rev().find(|&dp| size(dp) <= budget)?;
    // Seeded Gaussian projection (identity when the full d fits).
    let proj: Option<Vec<f32>> = (dp < d).then(|| {
        let mut rng = Rng(0x7A7);
        (0..dp * d)
            .map(|_| gauss(&mut rng) / (dp as f32).sqrt())
            .collect()
    });
    let project = |x: &[f32]| -> Vec<f32> {
        match &proj {
            None => x.to_vec(),
            Some(p) => (0..dp).map(|r| dot(&p[r * d..(r + 1) * d], x)).collect(),
        }
    };
    let kp: Vec<Vec<f32>> = (0..h.n)
        .map(|i| project(&h.k[i * d..(i + 1) * d]))
        .collect();
    let mut out = vec![0.0; rows.len() * dv];
    for (r, &j) in rows.iter().enumerate() {
        let qp = project(&h.q[j * d..(j + 1) * d]);
        let (mut num, mut den) = (vec![0.0f64; dv], 0.0f64);
        for (i, k) in kp.iter().enumerate().take(j + 1) {
            let x = dot(&qp, k) as f64 * h.scale as f64;
            let w = 1.0 + x + 0.5 * x * x;
            den += w;
            for (o, &v) in num.iter_mut().zip(&h.v[i * dv..(i + 1) * dv]) {
                *o += w * v as f64;
            }
        }
        for c in 0..dv {
            out[r * dv + c] = num[c] / den;
        }
    }
    Some(PeerResult {
        out,
        bytes: size(dp),
    })
}

fn gauss(rng: &mut Rng) -> f32 {
    // Box-Muller on two uniforms in (0, 1].
    let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Orthogonal random features: blocks of d orthonormal rows (Gram-Schmidt
/// of Gaussians), each row scaled by the norm of an independent Gaussian d-vector.
fn orthogonal_features(m: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut w = vec![0.0f32; m * d];
    for b in (0..m).step_by(d) {
        let rows = d.min(m - b);
        let mut blk: Vec<Vec<f64>> = Vec::new();
        while blk.len() < rows {
            let mut g: Vec<f64> = (0..d).map(|_| gauss(&mut rng) as f64).collect();
            for e in &blk {
                let p: f64 = g.iter().zip(e).map(|(a, b)| a * b).sum();
                g.iter_mut().zip(e).for_each(|(a, b)| *a -= p * b);
            }
            let nrm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            if nrm > 1e-6 {
                blk.push(g.iter().map(|x| x / nrm).collect());
            }
        }
        for (r, e) in blk.iter().enumerate() {
            let chi = (0..d)
                .map(|_| (gauss(&mut rng) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            for c in 0..d {
                w[(b + r) * d + c] = (e[c] * chi) as f32;
            }
        }
    }
    w
}

pub fn performer(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    let (d, dv) = (h.d, h.d);
    let m = budget / ((dv + 1) * 4);
    if m == 0 {
        return None;
    }
    let w = orthogonal_features(m, d, 0xFA70);
    let rs = h.scale.sqrt();
    let mut mm = vec![0.0f64; m * dv];
    let mut z = vec![0.0f64; m];
    let mut off = f64::NEG_INFINITY; // state = exp(off) * (mm, z)
    let mut e = vec![0.0f64; m];
    let mut x = vec![0.0f32; d];
    let mut out = vec![0.0; rows.len() * dv];
    let mut next_row = 0;
    for j in 0..h.n {
        x.iter_mut()
            .zip(&h.k[j * d..(j + 1) * d])
            .for_each(|(a, &b)| *a = b * rs);
        let half = dot(&x, &x) as f64 / 2.0;
        let mut mx = f64::NEG_INFINITY;
        for i in 0..m {
            e[i] = dot(&w[i * d..(i + 1) * d], &x) as f64 - half;
            mx = mx.max(e[i]);
        }
        if mx > off {
            let c = (off - mx).exp();
            mm.iter_mut().for_each(|a| *a *= c);
            z.iter_mut().for_each(|a| *a *= c);
            off = mx;
        }
        let v = &h.v[j * dv..(j + 1) * dv];
        for i in 0..m {
            let p = (e[i] - off).exp();
            z[i] += p;
            for (a, &b) in mm[i * dv..(i + 1) * dv].iter_mut().zip(v) {
                *a += p * b as f64;
            }
        }
        if next_row < rows.len() && rows[next_row] == j {
            x.iter_mut()
                .zip(&h.q[j * d..(j + 1) * d])
                .for_each(|(a, &b)| *a = b * rs);
            let mut mq = f64::NEG_INFINITY;
            for i in 0..m {
                e[i] = dot(&w[i * d..(i + 1) * d], &x) as f64;
                mq = mq.max(e[i]);
            }
            let (mut num, mut den) = (vec![0.0f64; dv], 0.0f64);
            for i in 0..m {
                let p = (e[i] - mq).exp();
                den += p * z[i];
                for (o, &a) in num.iter_mut().zip(&mm[i * dv..(i + 1) * dv]) {
                    *o += p * a;
                }
            }
            for c in 0..dv {
                out[next_row * dv + c] = num[c] / den;
            }
            next_row += 1;
        }
    }
    Some(PeerResult {
        out,
        bytes: m * (dv + 1) * 4,
    })
}

/// attnsketch itself, through the C ABI: `as_config_for_budget`, then every
/// token through `as_push_tokens`; bytes are `as_state_bytes`.
pub fn attnsketch(h: &Head, budget: usize, rows: &[usize]) -> Option<PeerResult> {
    use attnsketch::ffi::*;
    let (d, dv) = (h.d, h.d);
    unsafe {
        let mut cfg = std::mem::zeroed::<as_config>();
        if as_config_init(&mut cfg, d as u32) != AS_OK {
            return None;
        }
        cfg.value_dim = dv as u32;
        cfg.scale = h.scale;
        if as_config_for_budget(&mut cfg, budget) != AS_OK {
            return None;
        }
        let mut s = std::ptr::null_mut();
        if as_create(&cfg, &mut s) != AS_OK {
            return None;
        }
        let mut all = vec![0.0f32; h.n * dv];
        let chunk = 512;
        let mut j = 0;
        while j < h.n {
            let m = chunk.min(h.n - j);
            let st = as_push_tokens(
                s,
                m,
                h.q[j * d..].as_ptr(),
                h.k[j * d..].as_ptr(),
                h.v[j * dv..].as_ptr(),
                all[j * dv..].as_mut_ptr(),
            );
            assert_eq!(st, AS_OK);
            j += m;
        }
        let bytes = as_state_bytes(s);
        as_free(s);
        let out = rows
            .iter()
            .flat_map(|&r| all[r * dv..(r + 1) * dv].iter().map(|&x| x as f64))
            .collect();
        Some(PeerResult { out, bytes })
    }
}
