//! Shared by the example programs: reading heads in the `../shared/data`
//! format and a tiny deterministic RNG.
#![allow(dead_code)]

pub mod peers;
pub mod plot;

use std::path::{Path, PathBuf};

/// One attention head: Q, K, V and the exact causal output O, each n x d row-major.
pub struct Head {
    pub name: String,
    pub n: usize,
    pub d: usize,
    pub scale: f32,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub o: Vec<f32>,
}

fn read_f32(path: &Path) -> std::io::Result<Vec<f32>> {
    let b = std::fs::read(path)?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Every head (`*.json` with a `files` entry) of a directory, sorted by name.
pub fn read_heads(dir: &Path) -> Result<Vec<Head>, String> {
    let mut jsons: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    jsons.sort();
    let mut heads = Vec::new();
    for j in jsons {
        let text = std::fs::read_to_string(&j).map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", j.display()))?;
        let Some(files) = v.get("files") else {
            continue;
        };
        let n = v["n"].as_u64().ok_or("n")? as usize;
        let d = v["d"].as_u64().ok_or("d")? as usize;
        let scale = v["scale"].as_f64().ok_or("scale")? as f32;
        let get = |k: &str| -> Result<Vec<f32>, String> {
            let f = files[k].as_str().ok_or(format!("files.{k}"))?;
            let x = read_f32(&dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
            if x.len() != n * d {
                return Err(format!("{f}: {} floats, want {}", x.len(), n * d));
            }
            Ok(x)
        };
        heads.push(Head {
            name: j.file_stem().unwrap().to_string_lossy().into_owned(),
            n,
            d,
            scale,
            q: get("q")?,
            k: get("k")?,
            v: get("v")?,
            o: get("o")?,
        });
    }
    Ok(heads)
}

/// SplitMix64 (the crate's deterministic generator).
pub use attnsketch::rng::SplitMix64 as Rng;

/// Exact causal softmax attention output of query row `j` over keys 0..=j, in f64.
pub fn exact_row(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: usize,
    dv: usize,
    scale: f32,
    j: usize,
) -> Vec<f64> {
    let qj = &q[j * d..(j + 1) * d];
    let s: Vec<f64> = (0..=j)
        .map(|i| {
            qj.iter()
                .zip(&k[i * d..(i + 1) * d])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>()
                * scale as f64
        })
        .collect();
    let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut num = vec![0.0; dv];
    let mut den = 0.0;
    for (i, &x) in s.iter().enumerate() {
        let w = (x - mx).exp();
        den += w;
        for c in 0..dv {
            num[c] += w * v[i * dv + c] as f64;
        }
    }
    num.iter().map(|x| x / den).collect()
}

/// Exact decode of one query over an f32 KV cache (online softmax), the
/// per-token work an engine without a sketch does.
pub fn exact_decode_f32(q: &[f32], k: &[f32], v: &[f32], n: usize, scale: f32, out: &mut [f32]) {
    let d = q.len();
    let dv = out.len();
    let mut m = f32::NEG_INFINITY;
    let mut l = 0.0f32;
    out.fill(0.0);
    for i in 0..n {
        let s = q
            .iter()
            .zip(&k[i * d..(i + 1) * d])
            .map(|(a, b)| a * b)
            .sum::<f32>()
            * scale;
        if s > m {
            let c = (m - s).exp();
            l *= c;
            out.iter_mut().for_each(|o| *o *= c);
            m = s;
        }
        let w = (s - m).exp();
        l += w;
        for (o, &x) in out.iter_mut().zip(&v[i * dv..(i + 1) * dv]) {
            *o += w * x;
        }
    }
    out.iter_mut().for_each(|o| *o /= l);
}
