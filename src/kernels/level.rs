//! CPU levels: detected once, cappable per process (`ATTNSKETCH_CPU`) or per call.

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// A CPU feature level with its own kernel set. Ordered: a higher level
/// implies every lower one is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Level {
    /// Portable Rust (`wide` vectors at the width the build targets).
    Portable = 0,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: &'static [Level] = &[Level::Portable];

    /// Stable lower-case name (`"portable"`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
        }
    }

    /// Parses a name as accepted by `ATTNSKETCH_CPU`.
    pub fn from_name(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" | "scalar" => Some(Level::Portable),
            _ => None,
        }
    }

    /// Whether this machine can run the level.
    pub fn supported(self) -> bool {
        match self {
            Level::Portable => true,
        }
    }

    /// The best level of this machine, capped by `ATTNSKETCH_CPU` if set.
    /// Computed once per process.
    pub fn detect() -> Level {
        static DETECTED: OnceLock<Level> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let best = Level::ALL
                .iter()
                .rev()
                .copied()
                .find(|l| l.supported())
                .unwrap_or(Level::Portable);
            match std::env::var("ATTNSKETCH_CPU")
                .ok()
                .and_then(|s| Level::from_name(&s))
            {
                Some(cap) if cap < best => cap,
                _ => best,
            }
        })
    }

    /// The level if this machine supports it, else `Unsupported`.
    pub fn forced(self) -> Result<Level> {
        if self.supported() {
            Ok(self)
        } else {
            Err(Error::Unsupported)
        }
    }
}
