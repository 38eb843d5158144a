//! SplitMix64 (Steele, Lea, Flood 2014): the one deterministic generator of
//! the crate. It derives the hash coefficients of the recovery sketches from
//! the seed (`recovery::hash::SeedStream`) and makes reproducible data for
//! tests, tools and examples. Not for cryptography.

/// SplitMix64 state; `SplitMix64(seed)` starts a stream.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// Next 64 bits: `x += golden gamma`, then the MurmurHash3 finaliser mix.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) on a 2^-24 grid (exact in f32).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Uniform in [-1, 1).
    pub fn uni(&mut self) -> f32 {
        self.unit() * 2.0 - 1.0
    }
    /// `n` values uniform in [-scale, scale).
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uni() * scale).collect()
    }
}
