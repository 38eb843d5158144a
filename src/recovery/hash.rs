//! Seeded hashing of token indices for the CountSketch `Phi`.
//!
//! Arithmetic is in the prime field `Z_p`, `p = 2^61 - 1` (Mersenne), keys
//! `x < p` (token indices and their dyadic prefixes):
//!
//! ```text
//!   bucket:  h(x) = ((a x + c) mod p) * b >> 61          a, c uniform in Z_p  -> 2-wise independent
//!   sign:    s(x) = 1 - 2 (((c3 x^3 + c2 x^2 + c1 x + c0) mod p) & 1)           -> 4-wise independent
//! ```
//!
//! Pairwise independence of the buckets is what CountSketch's collision
//! bound needs; 4-wise independent signs give `E[est] = x_j` and the variance
//! bound `Var <= ||x_tail||^2 / b` of one row (and the F2 estimate of a node at
//! the identification levels). The range reduction `* b >> 61` and the parity
//! bit are uniform up to `b / p < 2^-40` and `1 / p`.
//!
//! The per-key functions are `#[inline(always)]`; the batched ones
//! ([`buckets`], [`signs`]) loop over plain slices so a SIMD level can replace
//! them one for one (u64 lanes, 32x32 partial products).

/// The Mersenne prime `2^61 - 1`.
pub const P61: u64 = (1u64 << 61) - 1;

/// `a * b mod p` for `a, b <= p`; result in `[0, p)`.
#[inline(always)]
pub fn mulmod(a: u64, b: u64) -> u64 {
    let prod = (a as u128) * (b as u128);
    let lo = (prod as u64) & P61;
    let hi = (prod >> 61) as u64;
    reduce(lo + hi)
}

/// `x mod p` for `x < 2^62`.
#[inline(always)]
pub fn reduce(x: u64) -> u64 {
    let y = (x & P61) + (x >> 61);
    if y >= P61 {
        y - P61
    } else {
        y
    }
}

/// A key as a field element (token indices are far below `p`; larger keys
/// wrap, which only matters past 2^61 tokens).
#[inline(always)]
pub fn key(x: u64) -> u64 {
    reduce((x & P61) + (x >> 61))
}

/// One bucket function `h(x) = ((a x + c) mod p) * b >> 61`.
///
/// `repr(C)` (`[a, c]`): the SIMD kernels load the coefficients of several
/// functions with strided gathers. Coefficients must lie in `[0, p)` (as
/// [`SeedStream`] draws them): every implementation relies on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct BucketHash {
    /// Multiplier, uniform in `Z_p`.
    pub a: u64,
    /// Offset, uniform in `Z_p`.
    pub c: u64,
}

impl BucketHash {
    /// Bucket of key `x` among `b` buckets.
    #[inline(always)]
    pub fn bucket(&self, x: u64, b: u32) -> u32 {
        let h = reduce(mulmod(self.a, key(x)) + self.c);
        ((h as u128 * b as u128) >> 61) as u32
    }
}

/// One sign function: a degree-3 polynomial over `Z_p`, parity bit.
/// `repr(C)` (`[c0, c1, c2, c3]`), coefficients in `[0, p)`, as [`BucketHash`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SignHash {
    /// `c0, c1, c2, c3`, uniform in `Z_p`.
    pub c: [u64; 4],
}

impl SignHash {
    /// `+1.0` or `-1.0` for key `x` (Horner in `Z_p`).
    #[inline(always)]
    pub fn sign(&self, x: u64) -> f32 {
        let x = key(x);
        let mut h = self.c[3];
        h = reduce(mulmod(h, x) + self.c[2]);
        h = reduce(mulmod(h, x) + self.c[1]);
        h = reduce(mulmod(h, x) + self.c[0]);
        1.0 - 2.0 * ((h & 1) as f32)
    }
}

/// Batched buckets: `out[i] = h(keys[i])` (a kernel: one hash, many keys).
pub fn buckets(h: &BucketHash, b: u32, keys: &[u64], out: &mut [u32]) {
    for (o, &x) in out.iter_mut().zip(keys) {
        *o = h.bucket(x, b);
    }
}

/// Batched signs: `out[i] = s(keys[i])`.
pub fn signs(s: &SignHash, keys: &[u64], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(keys) {
        *o = s.sign(x);
    }
}

/// SplitMix64 stream that derives every coefficient from the seed.
#[derive(Clone, Debug)]
pub struct SeedStream(u64);

impl SeedStream {
    /// A stream for `seed` in domain `domain` (output sketch, key sketch, ...).
    pub fn new(seed: u64, domain: u64) -> Self {
        let mut s = SeedStream(seed ^ domain.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        s.next_u64();
        s
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut g = crate::rng::SplitMix64(self.0);
        let x = g.next_u64();
        self.0 = g.0;
        x
    }

    /// Uniform element of `Z_p` (rejection sampling on 61 bits).
    pub fn field(&mut self) -> u64 {
        loop {
            let x = self.next_u64() >> 3;
            if x < P61 {
                return x;
            }
        }
    }

    /// A fresh bucket function.
    pub fn bucket_hash(&mut self) -> BucketHash {
        BucketHash {
            a: self.field(),
            c: self.field(),
        }
    }

    /// A fresh sign function.
    pub fn sign_hash(&mut self) -> SignHash {
        SignHash {
            c: [self.field(), self.field(), self.field(), self.field()],
        }
    }
}
