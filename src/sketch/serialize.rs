//! Serialized form of one head, and merging two heads.
//!
//! The byte layout (normative text: `docs/format.md`) is versioned,
//! self-describing, little-endian and CPU-independent:
//!
//! ```text
//!   header   magic "ATSKETCH" (8 B) | format version u32 | section count u32
//!   section  tag [u8; 4] | payload length u64 | payload          (repeated)
//!   trailer  CRC-32 (IEEE, `crc32fast`) u32 over every byte before it
//! ```
//!
//! Sections appear in the fixed order of [`Tag::required`] for the stored
//! config: `CONF` (the config) first, then one section per state part. The
//! core part `CORE` holds the counters and M, z exactly as stored (both f32
//! halves `s`, `d`), so a round trip is bit-exact and continues the stream
//! identically at every CPU level.
//!
//! Reading checks, in order: length, magic, CRC, version, then every section
//! header against the config-derived sizes *before* allocating, then every
//! value (finite, within the running bound, counters consistent). Any
//! failure is [`Error::Corrupt`] (an unknown newer version is
//! [`Error::Unsupported`]); nothing is read outside the buffer.
//!
//! Adding a state part (output sketch, retrieval sketch, exact tokens): give
//! it a [`Tag`], list it in [`Tag::required`] when its config enables it,
//! add its arms to `payload_len` / `write_section` / `check_section` /
//! `load_section`, and bump [`FORMAT_VERSION`] (older buffers stay readable:
//! their config has the part disabled).
//!
//! This file is a child module of `head` (declared there with `#[path]`) so it
//! reads the private fields of [`Sketch`] without widening them.

use super::Sketch;
use crate::config::{Config, Mode};
use crate::error::{Error, Result};
use crate::kernels::Level;
use crate::sketch::head::STATE_LIMIT;
use crate::sketch::state::FLUSH_INTERVAL;
use crate::sketch::Hybrid;
use core::sync::atomic::Ordering;

/// First 8 bytes of every serialized head.
pub const MAGIC: [u8; 8] = *b"ATSKETCH";
/// Version of the layout written by this build (readers accept `1..=FORMAT_VERSION`).
pub const FORMAT_VERSION: u32 = 7;
/// Bytes of the header (magic, version, section count).
pub const HEADER_LEN: usize = 16;
/// Bytes of one section header (tag, payload length).
pub const SECTION_HEADER_LEN: usize = 12;
/// Bytes of the CRC-32 trailer.
pub const TRAILER_LEN: usize = 4;
/// Bytes of the `CONF` payload (current version: `key_format` last).
pub const CONF_LEN: usize = 72;
/// Bytes of the `CONF` payload in version 4 (`value_format` last).
pub const CONF_LEN_V4: usize = 68;
/// Bytes of the `CONF` payload in versions 1 to 3.
pub const CONF_LEN_V3: usize = 64;

/// `CONF` bytes in format `version`.
fn conf_len(version: u32) -> usize {
    match version {
        ..=3 => CONF_LEN_V3,
        4 => CONF_LEN_V4,
        _ => CONF_LEN,
    }
}
/// Bytes of the fixed part of the `CORE` payload (before the arrays).
pub const CORE_FIXED_LEN: usize = 56;

/// Tag of a section: four ASCII bytes, stored as they read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// `CONF`: the config (always first).
    Config,
    /// `CORE`: counters, running bound, M and z halves.
    Core,
    /// `EXCT`: the hybrid state (exact tokens and the moment tail).
    Exact,
    /// `RECO`: the output sketch `Y = Phi T`.
    Reco,
    /// `RETR`: the retrieval sketch `Phi U2`.
    Retr,
    /// `PEND` (version 2): the raw tokens since the last flush.
    Pend,
}

impl Tag {
    /// The four bytes in the buffer.
    pub fn bytes(self) -> [u8; 4] {
        match self {
            Tag::Config => *b"CONF",
            Tag::Core => *b"CORE",
            Tag::Exact => *b"EXCT",
            Tag::Reco => *b"RECO",
            Tag::Retr => *b"RETR",
            Tag::Pend => *b"PEND",
        }
    }

    /// Sections a head with config `cfg` writes (current version), in order.
    pub fn required(cfg: &Config) -> &'static [Tag] {
        Self::required_in(cfg, FORMAT_VERSION)
    }

    /// Sections of a head with config `cfg` in format `version`. Version 1
    /// has no `PEND` (its block accumulator held the pending tokens).
    pub fn required_in(cfg: &Config, version: u32) -> &'static [Tag] {
        use Tag::*;
        // Hybrid heads have no output or retrieval sketch (refused by
        // validate) and never use the polynomial state's pending list.
        let v1 = version < 2;
        match (
            Hybrid::wanted(cfg),
            cfg.recovery_k > 0,
            cfg.retrieval_k > 0,
            v1,
        ) {
            (true, ..) => &[Config, Core, Exact],
            (false, false, false, true) => &[Config, Core],
            (false, true, false, true) => &[Config, Core, Reco],
            (false, false, true, true) => &[Config, Core, Retr],
            (false, true, true, true) => &[Config, Core, Reco, Retr],
            (false, false, false, false) => &[Config, Core, Pend],
            (false, true, false, false) => &[Config, Core, Pend, Reco],
            (false, false, true, false) => &[Config, Core, Pend, Retr],
            (false, true, true, false) => &[Config, Core, Pend, Reco, Retr],
        }
    }
}

/// Appends little-endian values to a byte slice of exactly the right length.
struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    fn u32(&mut self, x: u32) {
        self.bytes(&x.to_le_bytes());
    }
    fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }
    fn f32s(&mut self, xs: &[f32]) {
        for &x in xs {
            self.u32(x.to_bits());
        }
    }
}

/// Bounds-checked little-endian reads; running off the end is `Corrupt`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Corrupt)?;
        let s = self.buf.get(self.pos..end).ok_or(Error::Corrupt)?;
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn f32(&mut self) -> Result<f32> {
        self.u32().map(f32::from_bits)
    }
}

/// f32 values of a little-endian byte run (length a multiple of 4).
fn f32s(b: &[u8]) -> impl Iterator<Item = f32> + '_ {
    b.chunks_exact(4)
        .map(|c| f32::from_bits(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
}

/// `(t, dv)` of a validated config.
fn shape(cfg: &Config) -> Result<(usize, usize)> {
    // Hybrid heads keep a degree-0 polynomial state (t = 1).
    let t = if Hybrid::wanted(cfg) {
        1
    } else {
        usize::try_from(cfg.features()).map_err(|_| Error::Corrupt)?
    };
    Ok((t, cfg.value_dim as usize))
}

/// Payload bytes of `tag` for config `cfg` (sizes derive from the config only).
fn payload_len(tag: Tag, cfg: &Config, version: u32) -> Result<usize> {
    Ok(match tag {
        Tag::Config => conf_len(version),
        Tag::Core => {
            let (t, dv) = shape(cfg)?;
            // 2 t dv + 2 t floats; bounded by MAX_STATE_BYTES for a valid config.
            t.checked_mul(dv)
                .and_then(|n| n.checked_add(t))
                .and_then(|n| n.checked_mul(8))
                .and_then(|n| n.checked_add(CORE_FIXED_LEN))
                .ok_or(Error::Corrupt)?
        }
        Tag::Exact => Hybrid::payload_len(cfg, version),
        Tag::Pend => {
            let (d, dv) = (cfg.head_dim as usize, cfg.value_dim as usize);
            8 + 4 * FLUSH_INTERVAL as usize * (d + dv)
        }
        Tag::Reco | Tag::Retr => {
            let (t, _) = shape(cfg)?;
            let sh = if tag == Tag::Reco {
                crate::recovery::output_shape(cfg)
            } else {
                crate::recovery::key_shape(cfg, t)
            };
            let sh = sh.ok_or(Error::Corrupt)?;
            sh.cells()
                .checked_mul(sh.width)
                .and_then(|n| n.checked_mul(4))
                .and_then(|n| n.checked_add(8))
                .ok_or(Error::Corrupt)?
        }
    })
}

fn write_config(c: &Config, w: &mut Writer) {
    w.u32(c.head_dim);
    w.u32(c.value_dim);
    w.u32(c.degree);
    w.u32(c.scale.to_bits());
    w.u32(match c.mode {
        Mode::Causal => 0,
        Mode::NonCausal => 1,
    });
    w.u64(c.seed);
    w.u32(c.recovery_k);
    w.u32(c.recovery_eps.to_bits());
    w.u32(c.retrieval_k);
    w.u32(c.sink_tokens);
    w.u32(c.window_tokens);
    w.u32(c.heavy_tokens);
    w.u32(c.tail_groups);
    w.u64(c.max_tokens);
    w.u32(c.value_format);
    w.u32(c.key_format);
}

fn read_config(r: &mut Reader, version: u32) -> Result<Config> {
    let head_dim = r.u32()?;
    let value_dim = r.u32()?;
    let degree = r.u32()?;
    let scale = r.f32()?;
    let mode = match r.u32()? {
        0 => Mode::Causal,
        1 => Mode::NonCausal,
        _ => return Err(Error::Corrupt),
    };
    Ok(Config {
        head_dim,
        value_dim,
        degree,
        scale,
        mode,
        seed: r.u64()?,
        recovery_k: r.u32()?,
        recovery_eps: r.f32()?,
        retrieval_k: r.u32()?,
        sink_tokens: r.u32()?,
        window_tokens: r.u32()?,
        heavy_tokens: r.u32()?,
        tail_groups: r.u32()?,
        max_tokens: r.u64()?,
        value_format: if version < 4 { 0 } else { r.u32()? },
        key_format: if version < 5 { 0 } else { r.u32()? },
    })
}

/// The counters of the `CORE` section.
struct Counters {
    tokens: u64,
    queries: u64,
    fallbacks: u64,
    bound: f64,
    since_flush: u32,
}

impl Sketch {
    /// Bytes [`serialize_into`](Self::serialize_into) writes.
    pub fn serialized_len(&self) -> usize {
        let mut n = HEADER_LEN + TRAILER_LEN;
        for &tag in Tag::required(&self.cfg) {
            // A live handle's config is valid, so the size is representable.
            n += SECTION_HEADER_LEN + payload_len(tag, &self.cfg, FORMAT_VERSION).unwrap_or(0);
        }
        n
    }

    /// `Ok` if this head has a serialized form: it is live (every config has
    /// one; hybrid heads write their exact tokens in `EXCT`).
    pub fn check_serializable(&self) -> Result<()> {
        self.live()
    }

    /// Writes the serialized head into `buf[..serialized_len()]` and returns
    /// that length. `BufferTooSmall` (nothing written) if `buf` is shorter.
    pub fn serialize_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.check_serializable()?;
        let n = self.serialized_len();
        if buf.len() < n {
            return Err(Error::BufferTooSmall);
        }
        let tags = Tag::required(&self.cfg);
        let mut w = Writer {
            buf: &mut buf[..n],
            pos: 0,
        };
        w.bytes(&MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(tags.len() as u32);
        for &tag in tags {
            w.bytes(&tag.bytes());
            w.u64(payload_len(tag, &self.cfg, FORMAT_VERSION)? as u64);
            let start = w.pos;
            self.write_section(tag, &mut w);
            debug_assert_eq!(w.pos - start, payload_len(tag, &self.cfg, FORMAT_VERSION)?);
        }
        let crc = crc32fast::hash(&w.buf[..w.pos]);
        w.u32(crc);
        debug_assert_eq!(w.pos, n);
        Ok(n)
    }

    /// The serialized head in a new vector (`Alloc` if it cannot be reserved).
    pub fn serialize(&self) -> Result<Vec<u8>> {
        self.check_serializable()?;
        let mut v = Vec::new();
        v.try_reserve_exact(self.serialized_len())
            .map_err(|_| Error::Alloc)?;
        v.resize(self.serialized_len(), 0);
        self.serialize_into(&mut v)?;
        Ok(v)
    }

    fn write_section(&self, tag: Tag, w: &mut Writer) {
        match tag {
            Tag::Config => write_config(&self.cfg, w),
            Tag::Core => {
                let (t, dv) = (self.map.len(), self.cfg.value_dim as usize);
                w.u64(self.tokens);
                w.u64(self.queries);
                w.u64(self.fallbacks.load(Ordering::Relaxed));
                w.u64(self.bound.to_bits());
                w.u32(self.state.since_flush);
                w.u32(0);
                w.u64(t as u64);
                w.u64(dv as u64);
                w.f32s(&self.state.s);
                w.f32s(&self.state.d);
                w.f32s(&self.state.zs);
                w.f32s(&self.state.zd);
            }
            Tag::Exact => {
                if let Some(h) = self.hybrid.as_deref() {
                    h.write_payload(&mut |b| w.bytes(b));
                }
            }
            Tag::Pend => {
                let st = &self.state;
                let (d, dv, fi) = (
                    self.cfg.head_dim as usize,
                    self.cfg.value_dim as usize,
                    FLUSH_INTERVAL as usize,
                );
                // Rows past since_flush hold stale tokens: written as zeros.
                let used = st.since_flush as usize;
                w.u32(st.applied);
                w.u32(0);
                for j in 0..fi {
                    for a in 0..d {
                        w.f32s(&[if j < used { st.pkt[a * fi + j] } else { 0.0 }]);
                    }
                }
                w.f32s(&st.pv[..used * dv]);
                for _ in used * dv..fi * dv {
                    w.f32s(&[0.0]);
                }
            }
            Tag::Reco | Tag::Retr => {
                let sk = if tag == Tag::Reco {
                    self.rec.out.as_ref()
                } else {
                    self.rec.keys.as_ref()
                };
                if let Some(sk) = sk {
                    w.u64(sk.len());
                    w.f32s(sk.cells());
                }
            }
        }
    }

    /// A head from its serialized form, at the detected CPU level.
    pub fn deserialize(buf: &[u8]) -> Result<Sketch> {
        Self::deserialize_with_level(buf, Level::detect())
    }

    /// A head from its serialized form, running the kernels of `level`.
    pub fn deserialize_with_level(buf: &[u8], level: Level) -> Result<Sketch> {
        if buf.len() < HEADER_LEN + SECTION_HEADER_LEN + CONF_LEN_V3 + TRAILER_LEN {
            return Err(Error::Corrupt);
        }
        let body_len = buf.len() - TRAILER_LEN;
        let mut r = Reader { buf, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(Error::Corrupt);
        }
        let stored_crc = u32::from_le_bytes([
            buf[body_len],
            buf[body_len + 1],
            buf[body_len + 2],
            buf[body_len + 3],
        ]);
        if crc32fast::hash(&buf[..body_len]) != stored_crc {
            return Err(Error::Corrupt);
        }
        let version = r.u32()?;
        if version == 0 {
            return Err(Error::Corrupt);
        }
        if version > FORMAT_VERSION {
            return Err(Error::Unsupported);
        }
        let count = r.u32()?;
        // Everything after this point reads only the body (not the CRC).
        let mut r = Reader {
            buf: &buf[..body_len],
            pos: r.pos,
        };

        // CONF: first, fixed size.
        let (tag, len) = section_header(&mut r)?;
        if tag != Tag::Config.bytes() || len != conf_len(version) as u64 {
            return Err(Error::Corrupt);
        }
        let cfg = read_config(
            &mut Reader {
                buf: r.take(conf_len(version))?,
                pos: 0,
            },
            version,
        )?;
        match cfg.validate() {
            Ok(()) => {}
            Err(Error::Unsupported) => return Err(Error::Unsupported),
            Err(_) => return Err(Error::Corrupt),
        }
        // The paged layout (4-bit formats) exists from version 6 on.
        if version < 6 && cfg.key_format == crate::config::KEYS_U4 {
            return Err(Error::Corrupt);
        }

        // Every other section: expected tag and exact config-derived size,
        // all checked before anything is allocated.
        let tags = Tag::required_in(&cfg, version);
        if count as usize != tags.len() {
            return Err(Error::Corrupt);
        }
        let mut payloads: [&[u8]; 8] = [&[]; 8];
        for (i, &want) in tags.iter().enumerate().skip(1) {
            let (tag, len) = section_header(&mut r)?;
            let need = payload_len(want, &cfg, version)?;
            if tag != want.bytes() || len != need as u64 {
                return Err(Error::Corrupt);
            }
            let p = r.take(need)?;
            check_section(want, &cfg, p, version)?;
            payloads[i] = p;
        }
        if r.pos != body_len {
            return Err(Error::Corrupt); // trailing bytes
        }
        // Cross-section: a sketch has recorded exactly the head's outputs
        // (causal: tokens; non-causal: queries) or keys (tokens).
        let core = core_counters(payloads[1]);
        for (i, &tag) in tags.iter().enumerate() {
            let want = match (tag, cfg.mode) {
                (Tag::Reco, Mode::Causal) | (Tag::Retr, _) => core.tokens,
                (Tag::Reco, Mode::NonCausal) => core.queries,
                _ => continue,
            };
            if u64::from_le_bytes(payloads[i][..8].try_into().unwrap_or([0xFF; 8])) != want {
                return Err(Error::Corrupt);
            }
        }
        // Cross-section: the hybrid has seen exactly the head's tokens.
        if Hybrid::wanted(&cfg)
            && Hybrid::payload_tokens(payloads[2]) != core_counters(payloads[1]).tokens
        {
            return Err(Error::Corrupt);
        }

        // Cross-section: the pending tokens agree with CORE's counters, and
        // z_0 (the degree-0 feature is 1 per token) counts every token.
        let pend = tags
            .iter()
            .position(|&t| t == Tag::Pend)
            .map(|i| payloads[i]);
        let staged = match pend {
            Some(p) => check_pending(&cfg, &core, p)?,
            None => 0,
        };
        check_z0(&cfg, &core, payloads[1], staged)?;

        let mut h = Sketch::with_level(&cfg, level)?;
        for (i, &tag) in tags.iter().enumerate().skip(1) {
            h.load_section(tag, payloads[i], version);
        }
        if version < 2 && !Hybrid::wanted(&cfg) {
            // Version 1 kept the pending tokens' increments in d, not raw:
            // move them into s (TwoSum) and start with an empty pending list.
            let st = &mut h.state;
            st.applied = st.since_flush;
            st.flush(h.kern);
        }
        Ok(h)
    }

    /// Copies a checked section into a fresh head of the same config.
    fn load_section(&mut self, tag: Tag, p: &[u8], version: u32) {
        match tag {
            Tag::Config => {}
            Tag::Exact => {
                if let Some(h) = self.hybrid.as_deref_mut() {
                    h.load_payload(p, version);
                }
            }
            Tag::Pend => {
                let (d, dv, fi) = (
                    self.cfg.head_dim as usize,
                    self.cfg.value_dim as usize,
                    FLUSH_INTERVAL as usize,
                );
                let t = self.map.len();
                let st = &mut self.state;
                st.applied = u32::from_le_bytes(p[..4].try_into().unwrap_or([0; 4]));
                let mut vals = f32s(&p[8..]);
                for j in 0..fi {
                    for a in 0..d {
                        st.pkt[a * fi + j] = vals.next().unwrap_or(0.0);
                    }
                }
                for x in st.pv[..fi * dv].iter_mut() {
                    *x = vals.next().unwrap_or(0.0);
                }
                // The stage rows are phi_k of the staged keys (deterministic,
                // bitwise equal at every level).
                let mut k = [0.0f32; crate::config::MAX_DIM as usize];
                for r in 0..st.staged() {
                    let j = st.applied as usize + r;
                    for (a, x) in k[..d].iter_mut().enumerate() {
                        *x = st.pkt[a * fi + j];
                    }
                    (self.kern.expand)(&self.map, &k[..d], &mut st.stage[r * t..(r + 1) * t]);
                }
            }
            Tag::Reco | Tag::Retr => {
                let sk = if tag == Tag::Reco {
                    self.rec.out.as_mut()
                } else {
                    self.rec.keys.as_mut()
                };
                if let Some(sk) = sk {
                    let n = u64::from_le_bytes(p[..8].try_into().unwrap_or([0; 8]));
                    sk.load(n, f32s(&p[8..]));
                }
            }
            Tag::Core => {
                let c = core_counters(p);
                let (t, dv) = (self.map.len(), self.cfg.value_dim as usize);
                let arrays = &p[CORE_FIXED_LEN..];
                let (ms, rest) = arrays.split_at(4 * t * dv);
                let (md, rest) = rest.split_at(4 * t * dv);
                let (zs, zd) = rest.split_at(4 * t);
                for (dst, src) in [
                    (&mut self.state.s, ms),
                    (&mut self.state.d, md),
                    (&mut self.state.zs, zs),
                    (&mut self.state.zd, zd),
                ] {
                    for (o, x) in dst.iter_mut().zip(f32s(src)) {
                        *o = x;
                    }
                }
                self.tokens = c.tokens;
                self.queries = c.queries;
                self.fallbacks.store(c.fallbacks, Ordering::Relaxed);
                self.bound = c.bound;
                self.state.since_flush = c.since_flush;
            }
        }
    }

    /// `self` absorbs `src` as if `src`'s tokens had followed its own.
    ///
    /// `M = M_self + M_src`, `z = z_self + z_src`: the totals are added by an
    /// error-free TwoSum, the block accumulators with one f32 rounding of
    /// `d_self + d_src + e`, then everything is flushed. The merged state is
    /// within the streaming tolerance of the concatenated stream (it differs
    /// only in where block boundaries fell). Counters and bounds add.
    /// Refused: different config or seed (`InvalidArg`), a bound past
    /// [`STATE_LIMIT`](crate::sketch::STATE_LIMIT) (`Range`).
    pub fn merge(&mut self, src: &Sketch) -> Result<()> {
        self.live()?;
        src.live()?;
        if self.cfg != src.cfg
            || self.cfg.scale.to_bits() != src.cfg.scale.to_bits()
            || self.cfg.recovery_eps.to_bits() != src.cfg.recovery_eps.to_bits()
        {
            return Err(Error::InvalidArg);
        }
        // Exact-token (hybrid) heads: no merge rule yet. Position-indexed
        // parts (output / retrieval sketches) refuse here too once they exist.
        if self.hybrid.is_some() || src.hybrid.is_some() {
            return Err(Error::WrongMode);
        }
        // Position-indexed sketches (output, retrieval): no merge rule.
        if self.cfg.recovery_k > 0 || self.cfg.retrieval_k > 0 {
            return Err(Error::WrongMode);
        }
        let tokens = self.tokens.checked_add(src.tokens).ok_or(Error::Range)?;
        let queries = self.queries.checked_add(src.queries).ok_or(Error::Range)?;
        let bound = self.bound + src.bound;
        if !(bound <= STATE_LIMIT) {
            return Err(Error::Range);
        }
        self.poisoned = true;
        let kern = self.kern;
        let st = &mut self.state;
        // Pending tokens of self go into its totals first; src's applied
        // pending tokens are in its d, its staged ones are added here.
        st.flush(kern);
        let ss = &src.state;
        merge_halves(&mut st.s, &mut st.d, &ss.s, &ss.d);
        merge_halves(&mut st.zs, &mut st.zd, &ss.zs, &ss.zd);
        st.absorb_staged_of(kern, ss);
        st.flush(kern);
        self.tokens = tokens;
        self.queries = queries;
        self.bound = bound;
        let fb = src.fallbacks.load(Ordering::Relaxed);
        let mine = self.fallbacks.load(Ordering::Relaxed);
        self.fallbacks
            .store(mine.saturating_add(fb), Ordering::Relaxed);
        self.poisoned = false;
        Ok(())
    }
}

/// `(s, d) += (s2, d2)`: `(s, e) = TwoSum(s, s2)` exactly, `d = d + d2 + e`.
fn merge_halves(s: &mut [f32], d: &mut [f32], s2: &[f32], d2: &[f32]) {
    for (((a, da), &b), &db) in s.iter_mut().zip(d.iter_mut()).zip(s2).zip(d2) {
        let sum = *a + b;
        let bb = sum - *a;
        let e = (*a - (sum - bb)) + (b - bb);
        *a = sum;
        *da = (*da + db) + e;
    }
}

fn section_header(r: &mut Reader) -> Result<([u8; 4], u64)> {
    let t = r.take(4)?;
    let tag = [t[0], t[1], t[2], t[3]];
    Ok((tag, r.u64()?))
}

/// The counters at the start of a `CORE` payload (length already checked).
fn core_counters(p: &[u8]) -> Counters {
    let mut r = Reader { buf: p, pos: 0 };
    // The payload is at least CORE_FIXED_LEN long, so these reads succeed.
    let mut next = || r.u64().unwrap_or(0);
    let tokens = next();
    let queries = next();
    let fallbacks = next();
    let bound = f64::from_bits(next());
    let since = next();
    Counters {
        tokens,
        queries,
        fallbacks,
        bound,
        since_flush: since as u32,
    }
}

/// Value checks of a section whose length matched its config-derived size.
fn check_section(tag: Tag, cfg: &Config, p: &[u8], version: u32) -> Result<()> {
    match tag {
        Tag::Config => Ok(()),
        Tag::Core => check_core(cfg, p),
        Tag::Exact => Hybrid::check_payload(cfg, p, version),
        Tag::Pend => Ok(()), // checked with CORE's counters: check_pending
        Tag::Reco | Tag::Retr => {
            if f32s(&p[8..]).all(|x| x.is_finite()) {
                Ok(())
            } else {
                Err(Error::Corrupt)
            }
        }
    }
}

/// `CORE` consistency: shape fields equal the config's; counters possible
/// (`since_flush < 64`, reserved word 0, causal heads record no queries,
/// an empty head is all zero); the bound finite, `>= tokens` (every token
/// adds at least 1) and `<= STATE_LIMIT`; every array element finite with
/// `|x| <= 2 bound`; and `z_0 = s_0 + d_0` equal to the token count (the
/// degree-0 feature is 1 for every token).
fn check_core(cfg: &Config, p: &[u8]) -> Result<()> {
    let (t, dv) = shape(cfg)?;
    let c = core_counters(p);
    let mut r = Reader { buf: p, pos: 36 };
    let reserved = r.u32()?;
    let (st, sdv) = (r.u64()?, r.u64()?);
    if reserved != 0 || st != t as u64 || sdv != dv as u64 {
        return Err(Error::Corrupt);
    }
    if c.since_flush >= FLUSH_INTERVAL {
        return Err(Error::Corrupt);
    }
    if cfg.mode == Mode::Causal && c.queries != 0 {
        return Err(Error::Corrupt);
    }
    let n = c.tokens as f64;
    if !(c.bound.is_finite() && c.bound <= STATE_LIMIT && c.bound >= n * (1.0 - 1e-9)) {
        return Err(Error::Corrupt);
    }
    if c.tokens == 0 && (c.bound != 0.0 || c.since_flush != 0 || c.fallbacks != 0) {
        return Err(Error::Corrupt);
    }
    let lim = (2.0 * c.bound) as f32;
    let arrays = &p[CORE_FIXED_LEN..];
    for x in f32s(arrays) {
        if !(x.is_finite() && x.abs() <= lim) {
            return Err(Error::Corrupt);
        }
    }
    Ok(())
}

/// `z_0 = zs_0 + zd_0` plus the staged tokens equals the token count
/// (hybrid heads never feed their degree-0 state: it stays zero).
fn check_z0(cfg: &Config, c: &Counters, p: &[u8], staged: u64) -> Result<()> {
    let (t, dv) = shape(cfg)?;
    let n = c.tokens as f64;
    let z = &p[CORE_FIXED_LEN + 8 * t * dv..];
    let zs0 = f32s(z).next().unwrap_or(f32::NAN) as f64;
    let zd0 = f32s(&z[4 * t..]).next().unwrap_or(f32::NAN) as f64;
    let want_z0 = if Hybrid::wanted(cfg) {
        0.0
    } else {
        n - staged as f64
    };
    if !((zs0 + zd0 - want_z0).abs() <= 1e-6 * n + 0.5) {
        return Err(Error::Corrupt);
    }
    Ok(())
}

/// `PEND` against `CORE`: reserved word 0, `applied <= since_flush`, the
/// first `since_flush` keys and values finite and within the running bound,
/// the unused rows +0.0 (bitwise, so the buffer stays canonical). Returns the staged count `since_flush - applied`.
fn check_pending(cfg: &Config, c: &Counters, p: &[u8]) -> Result<u64> {
    let (d, dv, fi) = (
        cfg.head_dim as usize,
        cfg.value_dim as usize,
        FLUSH_INTERVAL as usize,
    );
    let mut r = Reader { buf: p, pos: 0 };
    let (applied, reserved) = (r.u32()?, r.u32()?);
    if reserved != 0 || applied > c.since_flush || c.since_flush as u64 > c.tokens {
        return Err(Error::Corrupt);
    }
    let used = c.since_flush as usize;
    let lim = c.bound as f32;
    // |k_a| <= max(1, |k|_inf)^g <= bound for g >= 1; degree 0 ignores keys.
    let klim = if cfg.degree == 0 { f32::MAX } else { lim };
    let keys = &p[8..8 + 4 * fi * d];
    let vals = &p[8 + 4 * fi * d..];
    for (rows, w, b) in [(keys, d, klim), (vals, dv, lim)] {
        for (i, x) in f32s(rows).enumerate() {
            let ok = if i / w < used {
                x.is_finite() && x.abs() <= b.max(1.0)
            } else {
                x.to_bits() == 0 // +0.0 exactly: the writer's (not -0.0)
            };
            if !ok {
                return Err(Error::Corrupt);
            }
        }
    }
    Ok((c.since_flush - applied) as u64)
}
