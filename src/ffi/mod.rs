//! The C ABI: the only module with `extern "C"` and raw pointers.
//!
//! Every export runs inside [`panic::guard`]: it checks pointers, sizes and
//! modes, calls the safe API, and writes outputs only when the call
//! succeeds. Statuses are plain `int32_t` codes (`as_status`).
#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

pub mod alloc;
pub mod bank;
pub mod config;
pub mod handles;
pub mod level;
pub mod panic;
pub mod recovery;
pub mod serialize;
pub mod sketch;
pub mod status;
pub mod version;

pub use bank::*;
pub use config::*;
pub use handles::{as_bank, as_sketch};
pub use level::*;
pub use recovery::*;
pub use serialize::*;
pub use sketch::*;
pub use status::*;
pub use version::*;
