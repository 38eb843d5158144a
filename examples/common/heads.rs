//! Real attention heads on disk, shared by the examples and
//! `tests/real_heads.rs` (which includes this file by path):
//!
//! - the repository's fixture `tests/fixtures/smollm2-2048` (4 heads x 2048
//!   tokens, binary16 q, k, v; no stored output: [`exact_outputs`] computes it
//!   in f64 from the stored rows);
//! - the evaluation sets `scripts/data.sh` builds into the cache
//!   (`~/.cache/attnsketch/data/<set>`: float32 q, k, v and the exact output o
//!   of 8192 tokens; format in `tools/README.md`).
#![allow(dead_code)]

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

/// The fixture in the repository.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2-2048")
}

/// The cache of the tools and data sets: `$ATTNSKETCH_CACHE`, else
/// `$XDG_CACHE_HOME/attnsketch`, else `~/.cache/attnsketch` (as `scripts/data.sh`).
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("ATTNSKETCH_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("attnsketch")))
        .or_else(|| var("HOME").map(|p| p.join(".cache/attnsketch")))
        .unwrap_or_else(|| PathBuf::from(".cache/attnsketch"))
}

/// Folder of the evaluation set `name` (given, dpkg, vim, licences); for
/// `given`, `$ATTNSKETCH_DATA` overrides it.
pub fn set_dir(name: &str) -> PathBuf {
    match std::env::var_os("ATTNSKETCH_DATA").filter(|v| !v.is_empty()) {
        Some(d) if name == "given" => PathBuf::from(d),
        _ => cache_dir().join("data").join(name),
    }
}

/// Whether a set folder holds a finished set (`scripts/data.sh` writes
/// `complete` last; a folder from elsewhere counts if it has headers).
pub fn set_ready(dir: &Path) -> bool {
    dir.join("complete").exists() || dir.join("index.json").exists()
}

/// The evaluation sets `scripts/data.sh` builds.
pub const SETS: [&str; 4] = ["given", "dpkg", "vim", "licences"];

/// One line saying how to get set `name`.
pub fn how_to_get(name: &str) -> String {
    if !SETS.contains(&name) {
        return format!("unknown set '{name}' (sets: {})", SETS.join(", "));
    }
    format!(
        "the '{name}' set is not in {}: build it with `bash scripts/data.sh {name}` \
         (~3-8 min on 2 cores, from Debian texts and PyPI)",
        set_dir(name).display()
    )
}

fn read_f32(path: &Path) -> std::io::Result<Vec<f32>> {
    let b = std::fs::read(path)?;
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn read_f16(path: &Path) -> std::io::Result<Vec<f32>> {
    let b = std::fs::read(path)?;
    Ok(b.chunks_exact(2)
        .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
        .collect())
}

/// Every head (`*.json` with a `files` entry) of a directory, sorted by name.
/// `dtype: "binary16"` headers name `.f16` files and may omit `o`; then the
/// exact output is computed here ([`exact_outputs`]).
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
        let f16 = v.get("dtype").and_then(|t| t.as_str()) == Some("binary16");
        let get = |k: &str| -> Result<Vec<f32>, String> {
            let f = files[k].as_str().ok_or(format!("files.{k}"))?;
            let p = dir.join(f);
            let x =
                if f16 { read_f16(&p) } else { read_f32(&p) }.map_err(|e| format!("{f}: {e}"))?;
            if x.len() != n * d {
                return Err(format!("{f}: {} values, want {}", x.len(), n * d));
            }
            Ok(x)
        };
        let (q, k, vv) = (get("q")?, get("k")?, get("v")?);
        let o = if files.get("o").is_some() {
            get("o")?
        } else {
            exact_outputs(&q, &k, &vv, n, d, scale)
        };
        heads.push(Head {
            name: j.file_stem().unwrap().to_string_lossy().into_owned(),
            n,
            d,
            scale,
            q,
            k,
            v: vv,
            o,
        });
    }
    Ok(heads)
}

/// Exact causal attention `o_j = softmax(s q_j K[0..=j]^T) V[0..=j]` of every
/// row, in f64 from the f32 rows, stored f32 (what the sets' `_o` files hold).
pub fn exact_outputs(q: &[f32], k: &[f32], v: &[f32], n: usize, d: usize, scale: f32) -> Vec<f32> {
    let mut o = vec![0.0f32; n * d];
    let mut s = vec![0.0f64; n];
    let mut num = vec![0.0f64; d];
    for j in 0..n {
        let qj = &q[j * d..(j + 1) * d];
        let mut mx = f64::NEG_INFINITY;
        for (i, si) in s[..=j].iter_mut().enumerate() {
            let x: f64 = qj
                .iter()
                .zip(&k[i * d..(i + 1) * d])
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            *si = x * scale as f64;
            mx = mx.max(*si);
        }
        num.fill(0.0);
        let mut den = 0.0;
        for (i, &si) in s[..=j].iter().enumerate() {
            let w = (si - mx).exp();
            den += w;
            for (a, &b) in num.iter_mut().zip(&v[i * d..(i + 1) * d]) {
                *a += w * b as f64;
            }
        }
        for (out, a) in o[j * d..(j + 1) * d].iter_mut().zip(&num) {
            *out = (a / den) as f32;
        }
    }
    o
}
