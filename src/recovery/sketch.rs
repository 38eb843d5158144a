//! The dyadic CountSketch `Y = Phi X` over token indices, with its
//! identification levels.
//!
//! Level `l` (0..levels) sketches the vector of nodes `p = j >> (4 l)`
//! (a 16-ary tree over the token index): row `r` of level `l` adds
//! `s_r(j) x_j` into bucket `h_{l,r}(j >> 4l)`. Level 0 is the classic
//! CountSketch of `x`; a bucket of level `l >= 1` holds the randomly signed
//! sum of the node's entries, whose square estimates the node's energy
//! `sum_{j in node} x_j^2` (AMS, 4-wise signs). Each entry `x_j` is a row
//! vector of `width` columns (dv for outputs, t for key features), so
//!
//! ```text
//!   y[l][r][bucket][0..width] += s_r(j) * x_j           (levels * rows adds of `width` floats per token)
//! ```
//!
//! Level 0 (the estimation level) has `buckets0` buckets per row, the
//! identification levels `buckets`.
//!
//! Bytes: `4 * rows * (buckets0 + (levels - 1) * buckets) * width` (+ the
//! hash coefficients).

use super::hash::{BucketHash, SeedStream, SignHash};
use crate::error::{try_vec, Error, Result};
use crate::kernels::Kernels;

/// log2 of the tree's fanout.
pub const FANOUT_BITS: u32 = 4;
/// Children of a node.
pub const FANOUT: u64 = 1 << FANOUT_BITS;

/// Dimensions of one dyadic sketch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Tree levels stored (level 0 = tokens).
    pub levels: usize,
    /// Hash rows per level (odd: the median of level 0).
    pub rows: usize,
    /// Buckets per row of the identification levels (`l >= 1`).
    pub buckets: usize,
    /// Buckets per row of level 0 (the estimation level).
    pub buckets0: usize,
    /// Candidates kept per level while descending.
    pub beam: usize,
    /// Floats per bucket.
    pub width: usize,
}

impl Shape {
    /// `rows * (buckets0 + (levels - 1) * buckets)`: the number of cells.
    pub fn cells(&self) -> usize {
        self.rows * (self.buckets0 + (self.levels - 1) * self.buckets)
    }
    /// Buckets per row of level `l`.
    #[inline(always)]
    pub fn buckets_at(&self, l: usize) -> usize {
        if l == 0 {
            self.buckets0
        } else {
            self.buckets
        }
    }
    /// Bytes of the bucket array.
    pub fn bytes(&self) -> u64 {
        self.cells() as u64 * self.width as u64 * 4
    }
    /// Cell index of `(level, row, bucket)`.
    #[inline(always)]
    pub fn cell(&self, l: usize, r: usize, b: u32) -> usize {
        if l == 0 {
            r * self.buckets0 + b as usize
        } else {
            self.rows * self.buckets0 + ((l - 1) * self.rows + r) * self.buckets + b as usize
        }
    }
}

/// The kernel table a sketch records and decodes with (Debug shows the level).
#[derive(Clone, Copy)]
struct KernRef(&'static Kernels);

impl core::fmt::Debug for KernRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Kernels({})", self.0.level.name())
    }
}

/// A dyadic CountSketch with its hash functions and per-token scratch.
#[derive(Clone, Debug)]
pub struct Dyadic {
    shape: Shape,
    /// `h_{l,r}`, index `l * rows + r`.
    bucket: Vec<BucketHash>,
    /// `s_r`, shared by all levels (each level is analysed on its own).
    sign: Vec<SignHash>,
    /// `cells x width`, row-major.
    y: Vec<f32>,
    /// Scratch of one token: cell of each `(l, r)` and its sign.
    slot: Vec<u32>,
    slot_sign: Vec<f32>,
    /// Indices recorded: one past the largest index seen.
    n: u64,
    /// Hashing, bucket update and decode kernels (the owning handle's level).
    kern: KernRef,
}

impl Dyadic {
    /// An all-zero sketch; hash functions drawn from `(seed, domain)`;
    /// kernels of [`Kernels::detect`] (see [`Dyadic::set_kernels`]).
    pub fn new(shape: Shape, seed: u64, domain: u64) -> Result<Self> {
        if shape.levels == 0
            || shape.rows == 0
            || shape.buckets == 0
            || shape.buckets0 == 0
            || shape.width == 0
        {
            return Err(Error::InvalidArg);
        }
        if shape.cells() > u32::MAX as usize {
            return Err(Error::InvalidArg);
        }
        let len = shape
            .cells()
            .checked_mul(shape.width)
            .ok_or(Error::InvalidArg)?;
        let mut rng = SeedStream::new(seed, domain);
        let sign = (0..shape.rows).map(|_| rng.sign_hash()).collect();
        let bucket = (0..shape.levels * shape.rows)
            .map(|_| rng.bucket_hash())
            .collect();
        Ok(Dyadic {
            shape,
            bucket,
            sign,
            y: try_vec(len, 0.0)?,
            slot: try_vec(shape.levels * shape.rows, 0)?,
            slot_sign: try_vec(shape.levels * shape.rows, 0.0)?,
            n: 0,
            kern: KernRef(Kernels::detect()),
        })
    }

    /// Records and decodes with `kern` from now on (every level gives the
    /// same cells up to float rounding of the sums, and the same hashes).
    pub fn set_kernels(&mut self, kern: &'static Kernels) {
        self.kern = KernRef(kern);
    }

    /// The kernel table in use.
    pub fn kernels(&self) -> &'static Kernels {
        self.kern.0
    }

    /// The dimensions.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// Restores values and count saved from a sketch of the same shape and
    /// seed (lengths checked by the caller).
    pub fn load(&mut self, n: u64, values: impl Iterator<Item = f32>) {
        for (o, x) in self.y.iter_mut().zip(values) {
            *o = x;
        }
        self.n = n;
    }
    /// One past the largest recorded index.
    pub fn len(&self) -> u64 {
        self.n
    }
    /// No index recorded yet.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    /// The bucket function of `(level, row)`.
    pub fn bucket_hash(&self, l: usize, r: usize) -> &BucketHash {
        &self.bucket[l * self.shape.rows + r]
    }
    /// The sign function of row `r`.
    pub fn sign_hash(&self, r: usize) -> &SignHash {
        &self.sign[r]
    }
    /// The raw cells (`cells x width`).
    pub fn cells(&self) -> &[f32] {
        &self.y
    }
    /// Bytes `new(shape, ..)` allocates (what `heap_bytes` reports).
    pub fn heap_bytes_for(shape: &Shape) -> usize {
        let lr = shape.levels * shape.rows;
        shape.cells() * shape.width * 4
            + lr * 8
            + lr * core::mem::size_of::<BucketHash>()
            + shape.rows * core::mem::size_of::<SignHash>()
    }

    /// Heap bytes owned.
    pub fn heap_bytes(&self) -> usize {
        self.y.capacity() * 4
            + self.slot.capacity() * 4
            + self.slot_sign.capacity() * 4
            + self.bucket.capacity() * core::mem::size_of::<BucketHash>()
            + self.sign.capacity() * core::mem::size_of::<SignHash>()
    }

    /// `Y += Phi[:, j] x^T`: adds `s_r(j) x` to the bucket of `j >> 4l` in
    /// every `(level, row)`. `x.len() == width` (checked by the caller).
    /// Allocates nothing.
    pub fn record(&mut self, j: u64, x: &[f32]) {
        debug_assert_eq!(x.len(), self.shape.width);
        let k = self.kern.0;
        (k.rec_token_slots)(
            &self.bucket,
            &self.sign,
            &self.shape,
            j,
            &mut self.slot,
            &mut self.slot_sign,
        );
        (k.rec_scatter_add)(
            &mut self.y,
            self.shape.width,
            &self.slot,
            &self.slot_sign,
            x,
        );
        self.n = self.n.max(j + 1);
    }
}
