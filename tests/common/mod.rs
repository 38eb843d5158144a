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
