//! CPU levels: detected once, cappable per process (`ATTNSKETCH_CPU` or
//! [`Level::set_process_cap`]) and per handle (`Sketch::with_level`).
//!
//! The active level of new handles is
//! `min(best supported, process cap)`, where the process cap is the last
//! value given to [`Level::set_process_cap`] or, before any such call, the
//! `ATTNSKETCH_CPU` environment variable (`portable`, `avx2`, `avx512`).

use crate::error::{Error, Result};
use core::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// A CPU feature level with its own kernel set. Ordered: a higher level
/// implies every lower one is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Level {
    /// Portable Rust (`wide` vectors at the width the build targets).
    Portable = 0,
    /// AVX2 + FMA + F16C (x86-64-v3 class), 256-bit vectors.
    Avx2 = 1,
    /// AVX-512 F/VL/BW (x86-64-v4 class), 512-bit vectors with lane masks.
    Avx512 = 2,
}

/// Process cap: `NO_CAP` until set; else a `Level as u32`.
static PROCESS_CAP: AtomicU32 = AtomicU32::new(NO_CAP);
const NO_CAP: u32 = u32::MAX;

impl Level {
    /// Every level, lowest first.
    pub const ALL: &'static [Level] = &[Level::Portable, Level::Avx2, Level::Avx512];

    /// Stable lower-case name (`"portable"`, `"avx2"`, `"avx512"`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The same name NUL-terminated (for the C ABI).
    pub fn c_name(self) -> &'static [u8] {
        match self {
            Level::Portable => b"portable\0",
            Level::Avx2 => b"avx2\0",
            Level::Avx512 => b"avx512\0",
        }
    }

    /// Parses a name as accepted by `ATTNSKETCH_CPU`.
    pub fn from_name(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "portable" | "scalar" => Some(Level::Portable),
            "avx2" => Some(Level::Avx2),
            "avx512" => Some(Level::Avx512),
            _ => None,
        }
    }

    /// The level with discriminant `v`.
    pub fn from_u32(v: u32) -> Option<Level> {
        Level::ALL.get(v as usize).copied()
    }

    /// Whether this machine can run the level (cached after the first call).
    pub fn supported(self) -> bool {
        self <= Level::best()
    }

    /// The best level this machine supports, ignoring every cap. Computed once.
    pub fn best() -> Level {
        static BEST: OnceLock<Level> = OnceLock::new();
        *BEST.get_or_init(probe)
    }

    /// The level of new handles: [`best`](Self::best) capped by the process
    /// cap (see the module doc). Cheap: two atomic loads after the first call.
    pub fn detect() -> Level {
        let best = Level::best();
        let cap = match PROCESS_CAP.load(Ordering::Acquire) {
            NO_CAP => env_cap(),
            v => Level::from_u32(v),
        };
        match cap {
            Some(c) if c < best => c,
            _ => best,
        }
    }

    /// Caps the level of handles created from now on, for the whole process
    /// (replaces `ATTNSKETCH_CPU`). `Unsupported` if the CPU lacks `cap`;
    /// then nothing changes. Existing handles keep their level.
    pub fn set_process_cap(cap: Level) -> Result<()> {
        cap.forced()?;
        PROCESS_CAP.store(cap as u32, Ordering::Release);
        Ok(())
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

/// `ATTNSKETCH_CPU`, read once (an unknown name is ignored).
fn env_cap() -> Option<Level> {
    static ENV: OnceLock<Option<Level>> = OnceLock::new();
    *ENV.get_or_init(|| {
        std::env::var("ATTNSKETCH_CPU")
            .ok()
            .and_then(|s| Level::from_name(&s))
    })
}

#[cfg(target_arch = "x86_64")]
fn probe() -> Level {
    use std::arch::is_x86_feature_detected as has;
    let avx2 = has!("avx2") && has!("fma") && has!("f16c");
    let avx512 = avx2 && has!("avx512f") && has!("avx512vl") && has!("avx512bw");
    if avx512 {
        Level::Avx512
    } else if avx2 {
        Level::Avx2
    } else {
        Level::Portable
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn probe() -> Level {
    Level::Portable
}

/// Probes the CPU and reads `ATTNSKETCH_CPU` when the library is loaded, on
/// the loading thread, before any caller thread can exist. The `OnceLock`s
/// are race-free anyway; doing the first initialisation here also keeps
/// race detectors that cannot see inside std's precompiled `Once` (TSan with
/// an uninstrumented std, helgrind) from reporting it.
#[cfg(all(target_os = "linux", not(test)))]
#[used]
#[link_section = ".init_array"]
static PROBE_AT_LOAD: extern "C" fn() = probe_at_load;

#[cfg(all(target_os = "linux", not(test)))]
extern "C" fn probe_at_load() {
    // A panic must not unwind out of a loader callback.
    let _ = std::panic::catch_unwind(|| {
        let _ = Level::best();
        let _ = env_cap();
    });
}
