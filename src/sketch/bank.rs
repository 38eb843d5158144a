//! All heads of one layer with grouped-query attention: `n_q` query heads,
//! `n_kv` key/value states, query head `h` reads state `h / (n_q / n_kv)`.

use super::head::block::Rows;
use super::head::{Sketch, STATE_LIMIT};
use crate::config::{Config, Mode};
use crate::error::{try_vec, Error, Result};

/// A layer of causal heads sharing key/value states in groups.
pub struct Bank {
    heads: Vec<Sketch>,
    n_q: usize,
    group: usize,
    /// Per kv head running bound, for validating a batch before committing.
    bounds: Vec<f64>,
}

impl Bank {
    /// `n_q % n_kv == 0`, both non-zero; causal configs only.
    pub fn new(cfg: &Config, n_q: u32, n_kv: u32) -> Result<Self> {
        if n_kv == 0 || n_q == 0 || n_q % n_kv != 0 || n_q > 65536 {
            return Err(Error::InvalidArg);
        }
        cfg.validate()?;
        // Output/key sketches are per query head and position; a bank's kv
        // states serve several query heads, so they are not offered here.
        if cfg.recovery_k > 0 || cfg.retrieval_k > 0 {
            return Err(Error::Unsupported);
        }
        if cfg.mode != Mode::Causal {
            return Err(Error::WrongMode);
        }
        let mut heads = Vec::new();
        heads
            .try_reserve_exact(n_kv as usize)
            .map_err(|_| Error::Alloc)?;
        let mut total: u64 = 0;
        for _ in 0..n_kv {
            let h = Sketch::new(cfg)?;
            total += h.state_bytes() as u64;
            if total > crate::config::MAX_STATE_BYTES * 4 {
                return Err(Error::InvalidArg);
            }
            heads.push(h);
        }
        Ok(Bank {
            heads,
            n_q: n_q as usize,
            group: (n_q / n_kv) as usize,
            bounds: try_vec(n_kv as usize, 0.0)?,
        })
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
        if let Some(h) = self.heads.first() {
            h.reserve_block_scratch(g)?;
        }
        for (hk, head) in self.heads.iter_mut().enumerate() {
            let mut rows = Rows {
                q,
                q_at: hk * g * d,
                q_tok: nq * d,
                k,
                k_at: hk * d,
                k_tok: nkv * d,
                v,
                v_at: hk * dv,
                v_tok: nkv * dv,
                out: &mut *out,
                out_at: hk * g * dv,
                out_tok: nq * dv,
                group: g,
            };
            head.commit_rows(&mut rows, n);
        }
        Ok(())
    }
}
