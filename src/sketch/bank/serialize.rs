//! A bank's serialized form (`as_bank_serialize` / `as_bank_deserialize`,
//! `docs/format.md`, "Bank container"): the query and key/value head counts
//! and each key/value head's own serialized form, under one CRC-32.
//!
//! ```text
//! "ASBK"  u32 version (1)  u32 n_q  u32 n_kv
//! n_kv x (u64 len, len bytes: the head's as_serialize form)
//! u32 CRC-32 (IEEE) of every byte before it
//! ```

use super::Bank;
use crate::error::{Error, Result};
use crate::kernels::Level;
use crate::sketch::Sketch;

/// First bytes of a serialized bank.
pub const BANK_MAGIC: [u8; 4] = *b"ASBK";
/// Version of the bank container this build writes (and the newest it reads).
pub const BANK_FORMAT_VERSION: u32 = 1;
/// Magic, version, n_q, n_kv.
const HEADER: usize = 16;

impl Bank {
    /// Bytes [`serialize_into`](Self::serialize_into) writes.
    pub fn serialized_len(&self) -> usize {
        HEADER
            + 4
            + self
                .heads
                .iter()
                .map(|h| 8 + h.serialized_len())
                .sum::<usize>()
    }

    /// `Ok` if every head has a serialized form (none is poisoned).
    pub fn check_serializable(&self) -> Result<()> {
        self.heads.iter().try_for_each(|h| h.check_serializable())
    }

    /// Writes the bank into `buf[..serialized_len()]` and returns that
    /// length; `BufferTooSmall` (nothing written) if `buf` is shorter.
    pub fn serialize_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.check_serializable()?;
        let n = self.serialized_len();
        if buf.len() < n {
            return Err(Error::BufferTooSmall);
        }
        let buf = &mut buf[..n];
        buf[..4].copy_from_slice(&BANK_MAGIC);
        buf[4..8].copy_from_slice(&BANK_FORMAT_VERSION.to_le_bytes());
        buf[8..12].copy_from_slice(&(self.n_q as u32).to_le_bytes());
        buf[12..16].copy_from_slice(&(self.heads.len() as u32).to_le_bytes());
        let mut at = HEADER;
        for h in &self.heads {
            let len = h.serialized_len();
            buf[at..at + 8].copy_from_slice(&(len as u64).to_le_bytes());
            at += 8;
            at += h.serialize_into(&mut buf[at..at + len])?;
        }
        let crc = crc32fast::hash(&buf[..at]);
        buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(at + 4, n);
        Ok(n)
    }

    /// A bank from its serialized form at the detected CPU level.
    pub fn deserialize(buf: &[u8]) -> Result<Bank> {
        Self::deserialize_with_level(buf, Level::detect())
    }

    /// A bank from its serialized form, running the kernels of `level`.
    /// Refuses (`Corrupt`) a truncated, altered or trailing-bytes buffer,
    /// head counts a bank cannot have, or heads whose configs differ;
    /// `Unsupported` for a newer container version. Worker threads start
    /// at 1 (they are a runtime setting, not state).
    pub fn deserialize_with_level(buf: &[u8], level: Level) -> Result<Bank> {
        if buf.len() < HEADER + 4 || buf[..4] != BANK_MAGIC {
            return Err(Error::Corrupt);
        }
        let u32_at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().unwrap());
        let body = buf.len() - 4;
        if crc32fast::hash(&buf[..body]) != u32_at(body) {
            return Err(Error::Corrupt);
        }
        match u32_at(4) {
            0 => return Err(Error::Corrupt),
            v if v > BANK_FORMAT_VERSION => return Err(Error::Unsupported),
            _ => {}
        }
        let (n_q, n_kv) = (u32_at(8), u32_at(12));
        Self::check_shape(n_q, n_kv).map_err(|_| Error::Corrupt)?;
        // Each head takes at least 8 bytes: a count beyond that is corrupt
        // (before anything is reserved for it).
        if n_kv as usize > (body - HEADER) / 8 {
            return Err(Error::Corrupt);
        }
        let mut heads: Vec<Sketch> = Vec::new();
        heads
            .try_reserve_exact(n_kv as usize)
            .map_err(|_| Error::Alloc)?;
        let mut at = HEADER;
        for _ in 0..n_kv {
            if body - at < 8 {
                return Err(Error::Corrupt);
            }
            let len = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
            at += 8;
            if len > (body - at) as u64 {
                return Err(Error::Corrupt);
            }
            let len = len as usize;
            let h = Sketch::deserialize_with_level(&buf[at..at + len], level)?;
            if heads.first().is_some_and(|h0| h0.config() != h.config()) {
                return Err(Error::Corrupt);
            }
            heads.push(h);
            at += len;
        }
        if at != body {
            return Err(Error::Corrupt);
        }
        Self::check_config(heads[0].config()).map_err(|e| match e {
            Error::Alloc => Error::Alloc,
            _ => Error::Corrupt,
        })?;
        Self::assemble(heads, n_q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::error::try_vec;

    #[test]
    fn empty_bank_round_trips() {
        let mut cfg = Config::new(64);
        cfg.for_budget_paged(64 * 1024).unwrap();
        let b = Bank::new(&cfg, 6, 2).unwrap();
        let mut buf = try_vec(b.serialized_len(), 0u8).unwrap();
        assert_eq!(b.serialize_into(&mut buf).unwrap(), buf.len());
        let c = Bank::deserialize(&buf).unwrap();
        assert_eq!((c.query_heads(), c.kv_heads()), (6, 2));
        let mut again = try_vec(c.serialized_len(), 0u8).unwrap();
        c.serialize_into(&mut again).unwrap();
        assert_eq!(buf, again);
    }
}
