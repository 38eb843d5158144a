//! Recovery of output columns and heavy-token retrieval on a [`Sketch`]
//! (a child of `head` so it can read the state without widening its API).

use super::Sketch;
use crate::config::Mode;
use crate::error::{Error, Result};
use crate::recovery::{decode, kernels, Rank};

impl Sketch {
    /// Outputs recorded in the output sketch: tokens (causal) or
    /// `push_query` calls (non-causal).
    pub fn recorded_outputs(&self) -> u64 {
        match self.cfg.mode {
            Mode::Causal => self.tokens,
            Mode::NonCausal => self.queries,
        }
    }

    /// The recording side (output sketch `Y = Phi T`, key sketch `Phi U2`).
    pub fn recorder(&self) -> &crate::recovery::Recorder {
        &self.rec
    }

    /// k-sparse approximation of column `col` of `T` (the recorded outputs):
    /// up to `k` `(output index, value)` pairs, largest `|value|` first.
    ///
    /// Errors, in this order: `WrongMode` without an output sketch
    /// (`recovery_k == 0`); `InvalidArg` for `col >= dv` or
    /// `k > recovery_k`. `k == 0` or no recorded output gives an empty result.
    pub fn recover_column(&self, col: u32, k: u32) -> Result<Vec<(u64, f32)>> {
        self.live()?;
        let sk = self.rec.out.as_ref().ok_or(Error::WrongMode)?;
        if col >= self.cfg.value_dim || k > self.cfg.recovery_k {
            return Err(Error::InvalidArg);
        }
        let n = self.recorded_outputs();
        if k == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let sh = sk.shape();
        let mut ys = Vec::new();
        ys.try_reserve_exact(sh.cells()).map_err(|_| Error::Alloc)?;
        ys.resize(sh.cells(), 0.0);
        kernels::project_column(sk.cells(), sh.width, col as usize, &mut ys);
        Ok(decode(sk, &ys, n, k as usize, Rank::Magnitude)
            .into_iter()
            .map(|(i, v)| (i, v as f32))
            .collect())
    }

    /// The up-to-`k` past tokens with the largest attention weight for `q`,
    /// heaviest first: `(token index, weight)` with
    /// `weight = P^(s q.k_j) / sum_i P(s q.k_i)`, the sketch's estimate of the
    /// polynomial kernel weight normalised by the exact denominator
    /// `phi_q(q)^T z`. The sketch is read with the weights centred on their
    /// mean (`w_j - den/n`), and only tokens estimated above the mean are
    /// reported.
    ///
    /// Errors: `WrongMode` without a key sketch (`retrieval_k == 0`);
    /// `InvalidArg`/`NonFinite`/`Range` for a bad `q` (as `query`);
    /// `InvalidArg` for `k > retrieval_k`; `Range` when the denominator is
    /// not trustworthy (`den <= NORM_REL * sum |phi_q,i z_i|`).
    pub fn heavy_tokens(&self, q: &[f32], k: u32) -> Result<Vec<(u64, f32)>> {
        self.live()?;
        let sk = self.rec.keys.as_ref().ok_or(Error::WrongMode)?;
        self.check_q(q, &self.poly, self.bound)?;
        if k > self.cfg.retrieval_k {
            return Err(Error::InvalidArg);
        }
        let n = self.tokens;
        if k == 0 || n == 0 {
            return Ok(Vec::new());
        }
        let t = self.map.len();
        let d = self.cfg.head_dim as usize;
        let sh = sk.shape();
        let mut phiq = crate::error::try_vec(t, 0.0f32)?;
        let mut sq = crate::error::try_vec(d, 0.0f32)?;
        Self::query_features(
            self.kern,
            &self.map,
            &self.alphas,
            self.cfg.scale,
            q,
            &mut sq,
            &mut phiq,
        );
        let st = &self.state;
        let (mut den, mut mag) = (self.kern.query_zs)(&st.zs, &phiq);
        let mut scratch = crate::error::try_vec(self.cfg.value_dim as usize, 0.0f32)?;
        let upto = st.since_flush as usize;
        st.pending_part(
            self.kern,
            &sq,
            &self.alphas,
            upto,
            &mut scratch,
            &mut den,
            &mut mag,
        );
        if !(den.is_finite() && mag.is_finite() && den > 0.0 && den > super::NORM_REL * mag) {
            return Err(Error::Range);
        }
        // Centre the weights: feature 0 is the constant monomial (phi_k = 1),
        // so lowering phi_q[0] by the mean weight mu = den / n sketches
        // w_j - mu. Same ranking, but the l2 tail the heavy tokens must stand
        // out of shrinks from sum w_j^2 to sum (w_j - mu)^2.
        let mu = den as f64 / n as f64;
        phiq[0] -= mu as f32;
        let mut ys = crate::error::try_vec(sh.cells(), 0.0f64)?;
        (sk.kernels().rec_project_dot)(sk.cells(), sh.width, &phiq, &mut ys);
        let inv = 1.0 / den as f64;
        Ok(decode(sk, &ys, n, k as usize, Rank::Positive)
            .into_iter()
            .map(|(j, w)| (j, ((w + mu) * inv) as f32))
            .collect())
    }
}
