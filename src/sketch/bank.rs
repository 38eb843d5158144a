//! All heads of one layer with grouped-query attention: `n_q` query heads,
//! `n_kv` key/value states, query head `h` reads state `h / (n_q / n_kv)`.

use super::head::block::Rows;
use super::head::{Sketch, STATE_LIMIT};
use crate::config::{Config, Mode};
use crate::error::{try_vec, Error, Result};
use crate::kernels::Level;

mod serialize;
pub use serialize::{BANK_FORMAT_VERSION, BANK_MAGIC};

/// A layer of causal heads sharing key/value states in groups.
pub struct Bank {
    heads: Vec<Sketch>,
    n_q: usize,
    group: usize,
    /// Per kv head running bound, for validating a batch before committing.
    bounds: Vec<f64>,
    /// Worker threads of `push_tokens` (1: the calling thread only).
    threads: usize,
}

/// The bank's array layout (head-major inside token-major, see the module doc).
#[derive(Clone, Copy)]
struct Layout {
    d: usize,
    dv: usize,
    nq: usize,
    nkv: usize,
    g: usize,
}

impl Layout {
    /// The rows of kv head `hk` in the caller's `q`, `k`, `v`; outputs at
    /// `out[out_at + j out_tok + r dv]`.
    #[allow(clippy::too_many_arguments)]
    fn rows<'a>(
        self,
        hk: usize,
        q: &'a [f32],
        k: &'a [f32],
        v: &'a [f32],
        out: &'a mut [f32],
        out_at: usize,
        out_tok: usize,
    ) -> Rows<'a> {
        let Layout { d, dv, nq, nkv, g } = self;
        Rows {
            q,
            q_at: hk * g * d,
            q_tok: nq * d,
            k,
            k_at: hk * d,
            k_tok: nkv * d,
            v,
            v_at: hk * dv,
            v_tok: nkv * dv,
            out,
            out_at,
            out_tok,
            group: g,
        }
    }
}

/// Largest worker count [`Bank::set_threads`] accepts.
pub const MAX_THREADS: u32 = 256;

impl Bank {
    /// `n_q % n_kv == 0`, both non-zero; causal configs only.
    pub fn new(cfg: &Config, n_q: u32, n_kv: u32) -> Result<Self> {
        Self::with_level(cfg, n_q, n_kv, Level::detect())
    }

    /// [`new`](Self::new) at a given CPU level (`Unsupported` if the CPU
    /// lacks it).
    pub fn with_level(cfg: &Config, n_q: u32, n_kv: u32, level: Level) -> Result<Self> {
        Self::check_shape(n_q, n_kv)?;
        Self::check_config(cfg)?;
        let mut heads = Vec::new();
        heads
            .try_reserve_exact(n_kv as usize)
            .map_err(|_| Error::Alloc)?;
        let mut total: u64 = 0;
        for _ in 0..n_kv {
            let h = Sketch::with_level(cfg, level)?;
            // Stop before allocating the rest of a bank `assemble` refuses.
            total += h.state_bytes() as u64;
            if total > crate::config::MAX_STATE_BYTES * 4 {
                return Err(Error::InvalidArg);
            }
            heads.push(h);
        }
        Self::assemble(heads, n_q)
    }

    /// `n_q % n_kv == 0`, both non-zero, `n_q <= 65536`.
    fn check_shape(n_q: u32, n_kv: u32) -> Result<()> {
        if n_kv == 0 || n_q == 0 || !n_q.is_multiple_of(n_kv) || n_q > 65536 {
            return Err(Error::InvalidArg);
        }
        Ok(())
    }

    /// A valid causal config without output or key sketches.
    fn check_config(cfg: &Config) -> Result<()> {
        cfg.validate()?;
        // Output/key sketches are per query head and position; a bank's kv
        // states serve several query heads, so they are not offered here.
        if cfg.recovery_k > 0 || cfg.retrieval_k > 0 {
            return Err(Error::Unsupported);
        }
        if cfg.mode != Mode::Causal {
            return Err(Error::WrongMode);
        }
        Ok(())
    }

    /// The bank of these key/value heads (one config, checked) and `n_q`
    /// query heads; refuses states over 4 x `MAX_STATE_BYTES` in total.
    fn assemble(heads: Vec<Sketch>, n_q: u32) -> Result<Self> {
        let total: u64 = heads.iter().map(|h| h.state_bytes() as u64).sum();
        if total > crate::config::MAX_STATE_BYTES * 4 {
            return Err(Error::InvalidArg);
        }
        let n_kv = heads.len();
        Ok(Bank {
            heads,
            n_q: n_q as usize,
            group: n_q as usize / n_kv,
            bounds: try_vec(n_kv, 0.0)?,
            threads: 1,
        })
    }

    /// Worker threads for [`push_tokens`](Self::push_tokens) with `n > 1`
    /// (default 1: everything on the calling thread). Key/value heads are
    /// split between the workers; each worker writes its heads' outputs to
    /// its own buffer, copied into `out` after all have finished, so the
    /// outputs are bit-identical for every thread count. `1..=MAX_THREADS`.
    pub fn set_threads(&mut self, n: u32) -> Result<()> {
        if n == 0 || n > MAX_THREADS {
            return Err(Error::InvalidArg);
        }
        self.threads = n as usize;
        Ok(())
    }

    /// Worker threads of `push_tokens`.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Number of query heads.
    pub fn query_heads(&self) -> usize {
        self.n_q
    }
    /// Number of key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.heads.len()
    }
    /// The sketch of key/value head `i`.
    pub fn head(&self, i: usize) -> Option<&Sketch> {
        self.heads.get(i)
    }
    /// Every byte the bank owns.
    pub fn state_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.heads.iter().map(|h| h.state_bytes()).sum::<usize>()
            + self.bounds.capacity() * 8
    }

    fn dims(&self) -> (usize, usize) {
        let c = self.heads[0].config();
        (c.head_dim as usize, c.value_dim as usize)
    }

    /// One token for every head: `q` is `n_q x d`, `k` is `n_kv x d`, `v` is
    /// `n_kv x dv`, `out` is `n_q x dv` (head-major).
    pub fn push_token(&mut self, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) -> Result<()> {
        self.push_tokens(1, q, k, v, out)
    }

    /// `n` tokens, token-major around the head-major layout of `push_token`.
    /// Everything is checked before anything is absorbed.
    pub fn push_tokens(
        &mut self,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let (d, dv) = self.dims();
        let (nq, nkv, g) = (self.n_q, self.heads.len(), self.group);
        let len = |per: usize| n.checked_mul(per).ok_or(Error::InvalidArg);
        if q.len() != len(nq * d)?
            || k.len() != len(nkv * d)?
            || v.len() != len(nkv * dv)?
            || out.len() != len(nq * dv)?
        {
            return Err(Error::InvalidArg);
        }
        for (b, h) in self.bounds.iter_mut().zip(&self.heads) {
            *b = h.bound();
        }
        for j in 0..n {
            for (hk, head) in self.heads.iter().enumerate() {
                let kv0 = j * nkv + hk;
                let incr =
                    head.kv_incr(&k[kv0 * d..(kv0 + 1) * d], &v[kv0 * dv..(kv0 + 1) * dv])?;
                self.bounds[hk] += incr;
                if !(self.bounds[hk] <= STATE_LIMIT) {
                    return Err(Error::Range);
                }
                for hq in hk * g..(hk + 1) * g {
                    let q0 = j * nq + hq;
                    head.check_q(&q[q0 * d..(q0 + 1) * d], head.polynomial(), self.bounds[hk])?;
                }
            }
        }
        let workers = self.threads.min(nkv);
        if workers > 1 && n > 1 {
            return self.push_tokens_parallel(workers, n, q, k, v, out);
        }
        if let Some(h) = self.heads.first() {
            h.reserve_block_scratch(g, n)?;
        }
        for (hk, head) in self.heads.iter_mut().enumerate() {
            let lay = Layout { d, dv, nq, nkv, g };
            let mut rows = lay.rows(hk, q, k, v, &mut *out, hk * g * dv, nq * dv);
            head.commit_rows(&mut rows, n);
        }
        Ok(())
    }

    /// `push_tokens` on `workers` scoped threads (inputs already checked).
    /// Every buffer is allocated before any head changes, so an allocation
    /// failure still leaves the bank untouched; a worker that cannot be
    /// spawned runs on the calling thread.
    fn push_tokens_parallel(
        &mut self,
        workers: usize,
        n: usize,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        let (d, dv) = self.dims();
        let (nq, nkv, g) = (self.n_q, self.heads.len(), self.group);
        let per = nkv.div_ceil(workers);
        // A paged head's prefill blocks want more scratch than its single
        // steps need; with less it prefills token by token.
        let need = self.heads[0].block_scratch_len(g, 1)?;
        let want = self.heads[0].block_scratch_len(g, n)?;
        let head_out = n.checked_mul(g * dv).ok_or(Error::InvalidArg)?;
        // One output buffer per kv head (n x group x dv) and one scratch per worker.
        let mut outs: Vec<Vec<f32>> = Vec::new();
        outs.try_reserve_exact(nkv).map_err(|_| Error::Alloc)?;
        for _ in 0..nkv {
            outs.push(try_vec(head_out, 0.0f32)?);
        }
        let mut scr: Vec<Vec<f32>> = Vec::new();
        scr.try_reserve_exact(workers).map_err(|_| Error::Alloc)?;
        for _ in 0..workers {
            scr.push(match try_vec(want, 0.0f32) {
                Ok(b) => b,
                Err(_) => try_vec(need, 0.0f32)?,
            });
        }
        let job =
            |first: usize, heads: &mut [Sketch], outs: &mut [Vec<f32>], buf: &mut Vec<f32>| {
                for (i, (head, o)) in heads.iter_mut().zip(outs.iter_mut()).enumerate() {
                    let hk = first + i;
                    let lay = Layout { d, dv, nq, nkv, g };
                    let mut rows = lay.rows(hk, q, k, v, o, 0, g * dv);
                    head.commit_rows_with(&mut rows, n, buf);
                }
            };
        // Heads in chunks of `per` are the tasks; the calling thread and up
        // to `workers - 1` spawned threads claim them by an atomic counter,
        // so a thread that cannot be spawned only means fewer workers. Each
        // task sits behind its own mutex, locked once by the thread that
        // claimed its index, so never contended. (A shared queue mutex was;
        // once in CI, ThreadSanitizer reported a race on the queue's Vec
        // under that mutex: std is not instrumented, and the contended path
        // of its mutex acquires inside std, out of TSan's sight.)
        let tasks: Vec<_> = self
            .heads
            .chunks_mut(per)
            .zip(outs.chunks_mut(per))
            .enumerate()
            .map(|(w, (h, o))| std::sync::Mutex::new(Some((w * per, h, o))))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let run = |buf: &mut Vec<f32>| loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(slot) = tasks.get(i) else { break };
            let task = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some((first, heads, o)) = task {
                job(first, heads, o, buf);
            }
        };
        let (mine, rest) = scr.split_at_mut(1);
        let panicked = std::thread::scope(|s| {
            let handles: Vec<_> = rest
                .iter_mut()
                .filter_map(|buf| {
                    std::thread::Builder::new()
                        .name("attnsketch-prefill".into())
                        .spawn_scoped(s, || run(buf))
                        .ok()
                })
                .collect();
            run(&mut mine[0]);
            handles
                .into_iter()
                .fold(false, |bad, h| bad | h.join().is_err())
        });
        if panicked {
            return Err(Error::Internal);
        }
        for (hk, o) in outs.iter().enumerate() {
            for j in 0..n {
                let dst = (j * nq + hk * g) * dv;
                out[dst..dst + g * dv].copy_from_slice(&o[j * g * dv..(j + 1) * g * dv]);
            }
        }
        Ok(())
    }
}
