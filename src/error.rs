//! The error type of the safe API; each variant maps to one `as_status` code.

use core::fmt;

/// Why a call was refused. A refused call changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Error {
    /// A required pointer was NULL (C ABI only).
    Null = 1,
    /// A size, index or config value is out of range.
    InvalidArg = 2,
    /// An input held NaN or Inf.
    NonFinite = 3,
    /// The call is not valid in this handle's mode.
    WrongMode = 4,
    /// A serialized buffer failed its checks.
    Corrupt = 5,
    /// The output buffer is too small.
    BufferTooSmall = 6,
    /// Memory could not be allocated.
    Alloc = 7,
    /// Not available in this build, on this CPU, or for this config.
    Unsupported = 8,
    /// A bug (a caught panic).
    Internal = 9,
    /// Finite input whose features or state would overflow f32.
    Range = 10,
}

impl Error {
    /// The status text (also returned by `as_status_string`).
    pub fn as_str(self) -> &'static str {
        match self {
            Error::Null => "a required pointer was NULL",
            Error::InvalidArg => "a size, index or config value is out of range",
            Error::NonFinite => "an input held NaN or Inf; the state is unchanged",
            Error::WrongMode => "call not valid in this handle's mode",
            Error::Corrupt => "a serialized buffer failed its checks",
            Error::BufferTooSmall => "the output buffer is too small",
            Error::Alloc => "memory allocation failed",
            Error::Unsupported => "not supported (CPU level, build or configuration)",
            Error::Internal => "internal error (a bug; a panic was caught)",
            Error::Range => {
                "finite input whose features or state would overflow f32; the state is unchanged"
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

/// Result of the safe API.
pub type Result<T> = core::result::Result<T, Error>;

/// Reserve exactly `n` elements, mapping allocation failure to [`Error::Alloc`].
pub(crate) fn try_vec<T: Clone>(n: usize, fill: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::Alloc)?;
    v.resize(n, fill);
    Ok(v)
}
