//! One attention head: validation, then an all-or-nothing commit.
//!
//! Every public method first checks its inputs (shapes, finiteness, range)
//! and only then mutates, so a refused call leaves the state bit-for-bit as
//! it was. The per-token path allocates nothing: all scratch is sized at
//! creation.

use super::state::State;
use super::Hybrid;
use crate::config::{Config, Mode};
use crate::error::{try_vec, Error, Result};
use crate::kernels::{Kernels, Level};
use crate::poly::{FeatureMap, Polynomial};
use core::sync::atomic::{AtomicU64, Ordering};
use std::cell::RefCell;

// Serialization and merge (issue 6): a child module so it can read the
// private fields below without widening them.
#[path = "serialize.rs"]
pub mod serialize;
// Recovery and retrieval (`recover_column`, `heavy_tokens`): src/sketch/head/recover.rs.
mod recover;
// Batched pushes in block form (`push_tokens`, bank prefill): src/sketch/head/block.rs.
pub(crate) mod block;

/// Largest value any state element may reach (a running bound is kept and a
/// token that could push past it is refused with [`Error::Range`]).
pub const STATE_LIMIT: f64 = 1.2676506002282294e30; // 2^100
/// Largest `|phi_q|_1 * state bound` accepted for a query, so the f32
/// accumulations of the output can never overflow.
pub const OUT_LIMIT: f64 = 1.329227995784916e36; // 2^120
/// The normaliser `den = phi_q^T z` is trusted when
/// `den > NORM_REL * sum_i |phi_q,i z_i|`; below that (or `den <= 0`) the
/// output falls back to the plain mean of the values (see [`Sketch::fallbacks`]).
pub const NORM_REL: f32 = 1.0 / 65536.0;

/// Per-handle scratch, sized once.
#[derive(Clone, Debug)]
struct Scratch {
    phik: Vec<f32>,
    phiq: Vec<f32>,
    sq: Vec<f32>,
    acc: Vec<f32>,
    /// Converted half-precision inputs: q (d), k (d), v (dv).
    conv: Vec<f32>,
}

/// One attention head's sketch.
pub struct Sketch {
    cfg: Config,
    map: FeatureMap,
    poly: Polynomial,
    /// `c_l` of the handle's polynomial as f32 (query weights per degree).
    alphas: Vec<f32>,
    kern: &'static Kernels,
    state: State,
    tokens: u64,
    queries: u64,
    /// Upper bound of every `|M|`, `|z|` element: `sum_j max(1,|k_j|_inf)^g max(1,|v_j|_inf)`.
    bound: f64,
    scratch: Scratch,
    fallbacks: AtomicU64,
    /// Set while a commit runs; left set if a panic interrupted one.
    poisoned: bool,
    /// Exact tokens + moment tail (when sink/window/heavy tokens are configured).
    hybrid: Option<Box<Hybrid>>,
    /// Output sketch `Y = Phi T` and key sketch `Phi U2` (issue 3).
    rec: crate::recovery::Recorder,
}

impl Clone for Sketch {
    fn clone(&self) -> Self {
        Sketch {
            cfg: self.cfg.clone(),
            map: self.map.clone(),
            poly: self.poly.clone(),
            alphas: self.alphas.clone(),
            kern: self.kern,
            state: self.state.clone(),
            tokens: self.tokens,
            queries: self.queries,
            bound: self.bound,
            scratch: self.scratch.clone(),
            fallbacks: AtomicU64::new(self.fallbacks.load(Ordering::Relaxed)),
            poisoned: self.poisoned,
            hybrid: self.hybrid.clone(),
            rec: self.rec.clone(),
        }
    }
}

thread_local! {
    /// Scratch of read-only queries (`&self`, may run on many threads at once).
    static QUERY_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Scratch of read-only queries in hybrid mode.
    /// (scores f32, group weights and numerator f64).
    static HYBRID_SCRATCH: RefCell<(Vec<f32>, Vec<f64>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Grows a scratch vector to at least `n` elements (`Alloc` on failure).
fn grow<T: Copy + Default>(buf: &mut Vec<T>, n: usize) -> Result<()> {
    if buf.len() < n {
        buf.try_reserve_exact(n - buf.len())
            .map_err(|_| Error::Alloc)?;
        buf.resize(n, T::default());
    }
    Ok(())
}

impl Sketch {
    /// A new head at the detected CPU level.
    pub fn new(cfg: &Config) -> Result<Self> {
        Self::with_level(cfg, Level::detect())
    }

    /// A new head at a given CPU level (`Unsupported` if the CPU lacks it).
    pub fn with_level(cfg: &Config, level: Level) -> Result<Self> {
        cfg.validate()?;
        let kern = Kernels::for_level(level)?;
        let hybrid = if Hybrid::wanted(cfg) {
            Some(Box::new(Hybrid::new(cfg)?))
        } else {
            None
        };
        // In hybrid mode the tail is the moment groups; the polynomial state is degree 0.
        let g = if hybrid.is_some() {
            0
        } else {
            cfg.degree as usize
        };
        let (d, dv) = (cfg.head_dim as usize, cfg.value_dim as usize);
        let map = FeatureMap::new(d, g)?;
        let t = map.len();
        let poly = Polynomial::try_taylor(g)?;
        let mut alphas = try_vec(g + 1, 0.0f32)?;
        poly.alphas(g, &mut alphas);
        Ok(Sketch {
            cfg: cfg.clone(),
            state: State::new(t, d, dv, hybrid.is_none())?,
            scratch: Scratch {
                phik: try_vec(t, 0.0)?,
                phiq: try_vec(t, 0.0)?,
                sq: try_vec(d, 0.0)?,
                acc: try_vec(dv, 0.0)?,
                conv: try_vec(2 * d + dv, 0.0)?,
            },
            map,
            poly,
            alphas,
            kern,
            tokens: 0,
            queries: 0,
            bound: 0.0,
            fallbacks: AtomicU64::new(0),
            poisoned: false,
            hybrid,
            rec: crate::recovery::Recorder::with_kernels(cfg, t, kern)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The CPU level of this handle's kernels.
    pub fn level(&self) -> Level {
        self.kern.level
    }
    /// The feature map.
    pub fn feature_map(&self) -> &FeatureMap {
        &self.map
    }
    /// The hybrid state, when exact tokens are configured.
    pub fn hybrid(&self) -> Option<&Hybrid> {
        self.hybrid.as_deref()
    }
    /// The compensated state (M, z).
    pub fn state(&self) -> &super::state::State {
        &self.state
    }
    /// Tokens absorbed (`as_token_count`).
    pub fn token_count(&self) -> u64 {
        self.tokens
    }
    /// Queries recorded by `push_query` (non-causal output indices used).
    pub fn query_count(&self) -> u64 {
        self.queries
    }
    /// Outputs that fell back to the mean of the values because the
    /// normaliser was not trustworthy (`den <= NORM_REL * mag`, or not finite).
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }
    /// Every byte the handle owns: the struct and all its arrays. Fixed at
    /// creation; it does not change with the number of tokens.
    pub fn state_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + self
                .hybrid
                .as_ref()
                .map_or(0, |h| core::mem::size_of::<Hybrid>() + h.heap_bytes())
            + self.map.heap_bytes()
            + self.alphas.capacity() * 4
            + self.poly.coeffs().len() * 8
            + self.state.heap_bytes()
            + self.rec.heap_bytes()
            + (self.scratch.phik.capacity()
                + self.scratch.phiq.capacity()
                + self.scratch.sq.capacity()
                + self.scratch.acc.capacity()
                + self.scratch.conv.capacity())
                * 4
    }

    /// `state_bytes` of a handle created from `cfg` (valid configs), without creating it.
    pub fn bytes_for(cfg: &Config) -> usize {
        let hybrid = Hybrid::wanted(cfg);
        let (d, dv) = (cfg.head_dim as usize, cfg.value_dim as usize);
        let g = if hybrid { 0 } else { cfg.degree as usize };
        let t = crate::poly::feature_count(cfg.head_dim, g as u32).unwrap_or(u64::MAX) as usize;
        core::mem::size_of::<Self>()
            + if hybrid { core::mem::size_of::<Hybrid>() + Hybrid::heap_bytes_for(cfg) } else { 0 }
            + FeatureMap::heap_bytes_for(d, g, t)
            + (g + 1) * 4 // alphas
            + (g + 1) * 8 // polynomial coefficients
            + State::heap_bytes_for(t, d, dv, !hybrid) // M, z, pending tokens
            + (2 * t + d + dv + 2 * d + dv) * 4 // scratch
            + crate::recovery::Recorder::heap_bytes_for(cfg, t)
    }

    fn dims(&self) -> (usize, usize) {
        (self.cfg.head_dim as usize, self.cfg.value_dim as usize)
    }

    fn live(&self) -> Result<()> {
        if self.poisoned {
            Err(Error::Internal)
        } else {
            Ok(())
        }
    }

    /// Shape and finiteness of one (k, v) pair; returns its bound increment
    /// `max(1, |k|_inf)^g max(1, |v|_inf)` (no limit check).
    pub(crate) fn kv_incr(&self, k: &[f32], v: &[f32]) -> Result<f64> {
        let (d, dv) = self.dims();
        if k.len() != d || v.len() != dv {
            return Err(Error::InvalidArg);
        }
        let km = (self.kern.max_abs)(k);
        let vm = (self.kern.max_abs)(v);
        if !km.is_finite() || !vm.is_finite() {
            return Err(Error::NonFinite);
        }
        if let Some(h) = self.hybrid.as_deref() {
            h.check_range(k)?;
            h.check_range(v)?;
        }
        Ok((km as f64).max(1.0).powi(self.map.degree() as i32) * (vm as f64).max(1.0))
    }

    /// [`kv_incr`](Self::kv_incr) plus the state limit, given a bound.
    pub(crate) fn check_kv(&self, k: &[f32], v: &[f32], bound: f64) -> Result<f64> {
        let incr = self.kv_incr(k, v)?;
        if !(bound + incr <= STATE_LIMIT) {
            return Err(Error::Range);
        }
        Ok(incr)
    }

    /// Current state bound.
    pub(crate) fn bound(&self) -> f64 {
        self.bound
    }

    /// Checks one query against a state bound.
    pub(crate) fn check_q(&self, q: &[f32], poly: &Polynomial, bound: f64) -> Result<()> {
        let d = self.cfg.head_dim as usize;
        if q.len() != d {
            return Err(Error::InvalidArg);
        }
        let mut l1 = 0.0f64;
        for &x in q {
            if !x.is_finite() {
                return Err(Error::NonFinite);
            }
            l1 += x.abs() as f64;
        }
        if let Some(h) = self.hybrid.as_deref() {
            h.check_range(q)?;
        }
        let b = poly.query_l1_bound(self.cfg.scale, l1, self.map.degree());
        if !(b <= OUT_LIMIT && b * bound.max(1.0) <= OUT_LIMIT) {
            return Err(Error::Range);
        }
        Ok(())
    }

    /// `phi_q(q)_a = c_|a| mult_a (s q)^a`. Expanding `s q` (not `q`) keeps
    /// every intermediate below the bound checked in `check_q`.
    fn query_features(
        kern: &Kernels,
        map: &FeatureMap,
        alphas: &[f32],
        scale: f32,
        q: &[f32],
        sq: &mut [f32],
        phiq: &mut [f32],
    ) {
        for (o, &x) in sq.iter_mut().zip(q) {
            *o = scale * x;
        }
        (kern.expand)(map, sq, phiq);
        for (l, &a) in alphas.iter().enumerate().take(map.degree() + 1) {
            let r = map.block(l);
            (kern.weight)(&mut phiq[r.clone()], &map.mult()[r], a);
        }
    }

    /// `out = acc / den` when the normaliser is trustworthy (`den > 0`,
    /// `den > NORM_REL mag`, all finite); false (out unspecified) otherwise.
    fn divide(acc: &[f32], den: f32, mag: f32, out: &mut [f32]) -> bool {
        let ok = den.is_finite() && mag.is_finite() && den > 0.0 && den > NORM_REL * mag;
        if !ok {
            return false;
        }
        let inv = 1.0 / den;
        let mut finite = true;
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = a * inv;
            finite &= o.is_finite();
        }
        finite
    }

    /// `out = acc / den`, or the mean of the values if `den` is not trustworthy.
    fn normalise(&self, acc: &[f32], den: f32, mag: f32, out: &mut [f32]) {
        if Self::divide(acc, den, mag, out) {
            return;
        }
        if self.tokens == 0 {
            out.fill(0.0);
            return;
        }
        // Degree-0 row: M_0 = sum v, z_0 = n: the uniform-attention output.
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.state.mean_value(out);
    }

    /// Absorbs (k, v) and answers q (inputs already checked): q reads s and
    /// the pending tokens, k joins the pending list (`sketch::state`). Hybrid
    /// heads also take the queries of a whole GQA group (`q`: g x d, `out`:
    /// g x dv; `Hybrid::step_group`).
    pub(crate) fn commit_token(
        &mut self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        incr: f64,
        out: &mut [f32],
        buf: &mut [f32],
    ) {
        self.poisoned = true;
        if let Some(h) = self.hybrid.as_mut() {
            h.insert(self.kern, k, v, buf);
            h.step_group(self.kern, q, out, buf);
            self.tokens += 1;
            self.bound += incr;
            self.poisoned = false;
            return;
        }
        let kern = self.kern;
        let sc = &mut self.scratch;
        let st = &mut self.state;
        let r = st.staged();
        (kern.expand)(&self.map, k, st.next_stage_row());
        st.add_raw(k, v);
        Self::query_features(
            kern,
            &self.map,
            &self.alphas,
            self.cfg.scale,
            q,
            &mut sc.sq,
            &mut sc.phiq,
        );
        sc.acc.fill(0.0);
        (kern.query_s)(&st.s, &sc.phiq, &mut sc.acc);
        let (mut den, mut mag) = (kern.query_zs)(&st.zs, &sc.phiq);
        let upto = st.since_flush as usize;
        st.pending_part(
            kern,
            &sc.sq,
            &self.alphas,
            upto,
            &mut sc.acc,
            &mut den,
            &mut mag,
        );
        self.tokens += 1;
        self.bound += incr;
        let acc = core::mem::take(&mut self.scratch.acc);
        self.normalise(&acc, den, mag, out);
        self.scratch.acc = acc;
        let j = self.tokens - 1;
        self.rec.record_key(j, self.state.stage_row(r));
        self.rec.record_output(j, out);
        self.state.after_token(kern);
        self.poisoned = false;
    }

    /// Causal: absorb `(k, v)` as token j, then write the output of `q` over
    /// tokens `0..=j` into `out` (length dv).
    pub fn push_token(&mut self, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) -> Result<()> {
        self.live()?;
        if self.cfg.mode != Mode::Causal {
            return Err(Error::WrongMode);
        }
        if out.len() != self.cfg.value_dim as usize {
            return Err(Error::InvalidArg);
        }
        let incr = self.check_kv(k, v, self.bound)?;
        self.check_q(q, &self.poly, self.bound + incr)?;
        self.reserve_block_scratch(1, 1)?;
        Self::with_scratch(|buf| self.commit_token(q, k, v, incr, out, buf));
        Ok(())
    }

    /// Causal, `n` tokens stored row-major (`n x d`, `n x dv`): the same
    /// outputs and state as `n` calls of [`push_token`](Self::push_token),
    /// computed in blocks of up to 64 tokens by matrix products (see
    /// `head/block.rs`), so equal up to float rounding (hybrid heads:
    /// bit-identical; the paged layout scores blocks of tokens inside its
    /// open page together, `Paged::step_block`, the slot layout runs token
    /// by token). All tokens are checked before any is absorbed.
    pub fn push_tokens(
        &mut self,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        self.live()?;
        if self.cfg.mode != Mode::Causal {
            return Err(Error::WrongMode);
        }
        let (d, dv) = self.dims();
        let nd = n.checked_mul(d).ok_or(Error::InvalidArg)?;
        let ndv = n.checked_mul(dv).ok_or(Error::InvalidArg)?;
        if q.len() != nd || k.len() != nd || v.len() != ndv || out.len() != ndv {
            return Err(Error::InvalidArg);
        }
        let mut bound = self.bound;
        for j in 0..n {
            let incr = self.check_kv(&k[j * d..(j + 1) * d], &v[j * dv..(j + 1) * dv], bound)?;
            bound += incr;
            self.check_q(&q[j * d..(j + 1) * d], &self.poly, bound)?;
        }
        self.reserve_block_scratch(1, n)?;
        let mut rows = block::Rows {
            q,
            q_at: 0,
            q_tok: d,
            k,
            k_at: 0,
            k_tok: d,
            v,
            v_at: 0,
            v_tok: dv,
            out,
            out_at: 0,
            out_tok: dv,
            group: 1,
        };
        self.commit_rows(&mut rows, n);
        Ok(())
    }

    /// Non-causal: absorb `(k, v)`.
    pub fn append_kv(&mut self, k: &[f32], v: &[f32]) -> Result<()> {
        self.live()?;
        if self.cfg.mode != Mode::NonCausal {
            return Err(Error::WrongMode);
        }
        let incr = self.check_kv(k, v, self.bound)?;
        if self.hybrid.is_some() {
            self.reserve_block_scratch(1, 1)?;
        }
        self.poisoned = true;
        if let Some(h) = self.hybrid.as_mut() {
            let kern = self.kern;
            Self::with_scratch(|buf| h.insert(kern, k, v, buf));
            self.tokens += 1;
            self.bound += incr;
            self.poisoned = false;
            return Ok(());
        }
        let kern = self.kern;
        let st = &mut self.state;
        let r = st.staged();
        (kern.expand)(&self.map, k, st.next_stage_row());
        st.add_raw(k, v);
        self.rec.record_key(self.tokens, self.state.stage_row(r));
        self.tokens += 1;
        self.bound += incr;
        self.state.after_token(kern);
        self.poisoned = false;
        Ok(())
    }

    /// Non-causal: answer `q` over every token absorbed so far and record it
    /// as the next output index.
    pub fn push_query(&mut self, q: &[f32], out: &mut [f32]) -> Result<()> {
        self.live()?;
        if self.cfg.mode != Mode::NonCausal {
            return Err(Error::WrongMode);
        }
        if self.hybrid.is_some() {
            if out.len() != self.cfg.value_dim as usize {
                return Err(Error::InvalidArg);
            }
            self.check_q(q, &self.poly, self.bound)?;
            self.reserve_block_scratch(1, 1)?;
            if let Some(h) = self.hybrid.as_mut() {
                let kern = self.kern;
                Self::with_scratch(|buf| h.push_query(kern, q, out, buf));
            }
        } else {
            self.query(q, out)?;
        }
        self.rec.record_output(self.queries, out);
        self.queries += 1;
        Ok(())
    }

    /// Read-only: the output of `q` over the current state; records nothing.
    /// An empty state gives zeros.
    pub fn query(&self, q: &[f32], out: &mut [f32]) -> Result<()> {
        self.query_impl(q, &self.poly, &self.alphas, out)
    }

    /// The handle's polynomial P.
    pub fn polynomial(&self) -> &Polynomial {
        &self.poly
    }

    /// Read-only query with a caller-chosen polynomial `P` (degree <= g): the
    /// key-side state is a sufficient statistic for every such `P`.
    pub fn query_with(&self, q: &[f32], poly: &Polynomial, out: &mut [f32]) -> Result<()> {
        if self.hybrid.is_some() {
            return Err(Error::WrongMode);
        }
        let g = self.map.degree();
        if poly.degree() > g {
            return Err(Error::InvalidArg);
        }
        let mut alphas = [0.0f32; crate::config::MAX_DEGREE as usize + 1];
        poly.alphas(g, &mut alphas[..g + 1]);
        self.query_impl(q, poly, &alphas[..g + 1], out)
    }

    fn query_impl(
        &self,
        q: &[f32],
        poly: &Polynomial,
        alphas: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        self.live()?;
        let (_, dv) = self.dims();
        if out.len() != dv {
            return Err(Error::InvalidArg);
        }
        self.check_q(q, poly, self.bound)?;
        if let Some(h) = self.hybrid.as_deref() {
            return HYBRID_SCRATCH.with(|cell| {
                let (xs, buf) = &mut *cell.borrow_mut();
                let (c, g, dv, nvb) = h.scratch_sizes();
                grow(xs, c + nvb)?;
                grow(buf, g + dv)?;
                let (lw, num) = buf.split_at_mut(g);
                let (x, vb) = xs.split_at_mut(c);
                h.attend(self.kern, q, out, x, lw, &mut num[..dv], &mut vb[..nvb]);
                Ok(())
            });
        }
        let t = self.map.len();
        QUERY_SCRATCH.with(|cell| {
            let mut buf = cell.borrow_mut();
            let d = self.cfg.head_dim as usize;
            let need = t + dv + d;
            if buf.len() < need {
                let extra = need - buf.len();
                buf.try_reserve_exact(extra).map_err(|_| Error::Alloc)?;
                buf.resize(need, 0.0);
            }
            let (phiq, rest) = buf.split_at_mut(t);
            let (acc, rest) = rest.split_at_mut(dv);
            let sq = &mut rest[..d];
            Self::query_features(self.kern, &self.map, alphas, self.cfg.scale, q, sq, phiq);
            acc.fill(0.0);
            let st = &self.state;
            (self.kern.query_s)(&st.s, phiq, acc);
            let (mut den, mut mag) = (self.kern.query_zs)(&st.zs, phiq);
            let upto = st.since_flush as usize;
            st.pending_part(self.kern, sq, alphas, upto, acc, &mut den, &mut mag);
            self.normalise(acc, den, mag, out);
            Ok(())
        })
    }

    /// [`push_token`](Self::push_token) with IEEE binary16 inputs.
    pub fn push_token_f16(
        &mut self,
        q: &[u16],
        k: &[u16],
        v: &[u16],
        out: &mut [f32],
    ) -> Result<()> {
        self.push_token_half(q, k, v, out, self.kern.f16_to_f32)
    }

    /// [`push_token`](Self::push_token) with bfloat16 inputs.
    pub fn push_token_bf16(
        &mut self,
        q: &[u16],
        k: &[u16],
        v: &[u16],
        out: &mut [f32],
    ) -> Result<()> {
        self.push_token_half(q, k, v, out, self.kern.bf16_to_f32)
    }

    /// Converts q, k, v into the handle's scratch with the level's `cvt`
    /// kernel (exact), then pushes them as f32.
    fn push_token_half(
        &mut self,
        q: &[u16],
        k: &[u16],
        v: &[u16],
        out: &mut [f32],
        cvt: fn(&[u16], &mut [f32]),
    ) -> Result<()> {
        let (d, dv) = self.dims();
        if q.len() != d || k.len() != d || v.len() != dv {
            return Err(Error::InvalidArg);
        }
        let mut conv = core::mem::take(&mut self.scratch.conv);
        let (cq, rest) = conv.split_at_mut(d);
        let (ck, cv) = rest.split_at_mut(d);
        cvt(q, cq);
        cvt(k, ck);
        cvt(v, cv);
        let r = self.push_token(cq, ck, cv, out);
        self.scratch.conv = conv;
        r
    }
}
