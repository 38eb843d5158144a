//! The SmolLM2-shaped layer bank the `bank_*` examples time: 9 query heads
//! over 3 kv heads, d = 64, the budget preset, one thread.
use attnsketch::{Bank, Config};

/// Query heads, kv heads, head dim.
pub const SHAPE: (usize, usize, usize) = (9, 3, 64);

/// A fresh bank at `kib` KiB per kv head (`as_config_for_budget`), 1
/// thread, and its config.
pub fn bank(kib: usize) -> (Bank, Config) {
    let (nq, nkv, d) = SHAPE;
    let mut cfg = Config::new(d as u32);
    cfg.for_budget(kib << 10).unwrap();
    let mut b = Bank::new(&cfg, nq as u32, nkv as u32).unwrap();
    b.set_threads(1).unwrap();
    (b, cfg)
}

/// Deterministic rows of token `j`: `h` heads of width `w`,
/// `sin((7 i + 13 j) f) (1 + (i mod w) / w)`.
pub fn tok(j: usize, h: usize, w: usize, f: f32) -> Vec<f32> {
    (0..h * w)
        .map(|i| ((i * 7 + j * 13) as f32 * f).sin() * (1.0 + (i % w) as f32 / w as f32))
        .collect()
}
