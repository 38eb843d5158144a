//! # attnsketch
//!
//! Constant-memory streaming attention. One attention head reads a stream of
//! tokens `(q_j, k_j, v_j)` once and keeps a fixed-size state instead of a
//! growing KV cache:
//!
//! ```text
//!   phi_k(k)_a = k^a                                   (all monomials |a| <= g)
//!   phi_q(q)_a = c_|a| s^|a| multinomial(|a|; a) q^a   <phi_q(q), phi_k(k)> = P(s q.k)
//!   M = sum_j phi_k(k_j) v_j^T   (t x dv)      z = sum_j phi_k(k_j)   (t)
//!   o = phi_q(q)^T M / phi_q(q)^T z            ~ softmax(s q K^T) V
//! ```
//!
//! with `t = binom(d + g, g)` and `P` a degree-`g` polynomial approximation of
//! `exp` (Taylor by default). Memory is `t (dv + 1)` floats whatever the stream
//! length.
//!
//! The crate has two faces:
//! - the safe Rust API ([`Sketch`], [`Config`]), usable from an `rlib` without
//!   `unsafe`;
//! - the C ABI in [`ffi`] (`libattnsketch.so`, header `include/attnsketch.h`),
//!   a thin validating layer over the safe API.

#![deny(unsafe_op_in_unsafe_fn)]
// `!(x <= limit)` is deliberate: it is also true for NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]
// Index loops over several parallel arrays read better than zipped iterators.
#![allow(clippy::needless_range_loop)]

pub mod baseline;
pub mod config;
#[doc(hidden)]
pub mod drift;
pub mod error;
pub mod ffi;
pub mod kernels;
pub mod poly;
pub mod recovery;
pub mod rng;
pub mod sketch;

#[doc(hidden)]
pub mod reference;

pub use config::{Config, Mode};
pub use error::Error;
pub use kernels::Level;
pub use poly::{FeatureMap, Polynomial};
pub use sketch::{Bank, Sketch};

/// The crate version, `MAJOR.MINOR.PATCH` (same as `as_version_string()`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
