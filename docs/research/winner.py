"""Clean reference of the chosen rule ("adaptive sinks+window+heavy + Ward moment tail").

Written to be ported to Rust line by line. It reproduces hybrid.run() with
Cfg(groups=32, adapt=True, adapt_pow=2, adapt_band_abs=32, adapt_init='max')
(see check at the bottom: `python winner.py` compares both on one head).

State for one head (f32 in Rust; the numpy reference keeps tail sums in f64):
  exact tokens  : C slots, each k (d), v (dv), acc (1 float)        -> C*(d+dv+1)*4 bytes
                  (+ position/age: implicit in Rust via ring buffer for the window;
                   heavy tokens never need it. The numpy keeps pos for convenience.)
  tail groups   : G = 32 groups, each N (1), Sk (d), Sk2 (d), Sv (dv) -> G*(1+2d+dv)*4 bytes
  controller    : W (int), Ew, Eh (2 floats)                         -> negligible (12 bytes)
  Ward costs    : recomputed on each merge (G^2 d flops); if cached it is (G+1)^2 floats
                  more, not included in the measured budgets.
Budget split for bytes B:
  G = 32; C = floor((B - G*(1+2d+dv)*4) / ((d+dv+1)*4)); S = 4 sinks;
  D = C - S dynamic slots; band = 32; Wmax = D - band; W starts at Wmax, H = D - W.
"""
import numpy as np

ALPHA = 1.0 / 256      # EMA rate of the split controller
VAR_MAX = 2.0          # clamp of the per-group score variance


class HybridState:
    def __init__(self, d, dv, scale, budget_bytes, sinks=4, groups=32, band=32):
        self.d, self.dv, self.s = d, dv, scale
        self.G = groups
        gbytes = (1 + 2 * d + dv) * 4
        self.C = (budget_bytes - groups * gbytes) // ((d + dv + 1) * 4)
        self.S = sinks
        D = self.C - sinks
        self.band = band
        self.Wmax = D - band
        self.W = self.Wmax
        self.Ew = self.Eh = 0.0
        # exact cache (compact arrays; order irrelevant)
        self.K = np.zeros((self.C, d), np.float32); self.V = np.zeros((self.C, dv), np.float32)
        self.pos = np.zeros(self.C, np.int64); self.acc = np.zeros(self.C)
        self.m = 0
        # tail: one spare row for the newly evicted singleton
        self.gN = np.zeros(groups + 1); self.gK = np.zeros((groups + 1, d))
        self.gK2 = np.zeros((groups + 1, d)); self.gV = np.zeros((groups + 1, dv))
        self.ng = 0
        self.j = -1

    # ---- per token -------------------------------------------------------
    def step(self, q, k, v):
        """Absorb token (k, v) at position j, then answer its query q. Returns o_j."""
        self.j += 1; j = self.j; s = self.s
        m = self.m
        self.K[m] = k; self.V[m] = v; self.pos[m] = j; self.acc[m] = 0.0
        m += 1; self.m = m
        q = q.astype(np.float64)
        x = s * (self.K[:m] @ q.astype(np.float32)).astype(np.float64)   # exact scores
        c = x.max()
        num = np.zeros(self.dv); den = 0.0
        if self.ng:
            lw, vbar = self._tail_terms(q)
            c = max(c, lw.max())                 # common reference: nothing overflows
            wg = np.exp(lw - c)
            num += wg @ vbar; den += wg.sum()
        we = np.exp(x - c)
        num += we @ self.V[:m]; den += we.sum()
        o = num / den
        w = we / den                             # normalised weights incl. tail mass
        self.acc[:m] += w                        # H2O accumulated attention
        if m == self.C:
            self._adapt(w)
            self._evict()
        return o

    def _tail_terms(self, q):
        """log weight and mean value of each tail group for query q."""
        s = self.s; ng = self.ng
        N = self.gN[:ng]
        mk = self.gK[:ng] / N[:, None]
        vk = np.maximum(self.gK2[:ng] / N[:, None] - mk * mk, 0.0)   # diag variance >= 0
        mu = s * (mk @ q)                                            # mean score
        var = np.clip(s * s * (vk @ (q * q)), 0.0, VAR_MAX)          # score variance, clamped
        lw = np.log(N) + mu + np.log1p(0.5 * var)                    # log N e^mu (1 + var/2)
        return lw, self.gV[:ng] / N[:, None]

    def _adapt(self, w):
        """Move one slot between window and heavy set: compare the squared attention
        mass on the window's oldest `band` tokens with that on the `band` heavy tokens
        of lowest accumulated score (EMA over ~256 steps)."""
        m, j, S, W, band = self.m, self.j, self.S, self.W, self.band
        age = j - self.pos[:m]
        nons = self.pos[:m] >= S
        mw = w[nons & (age < W) & (age >= W - band)].sum()
        hv = np.nonzero(nons & (age >= W))[0]
        if len(hv) > band:
            hv = hv[np.argpartition(self.acc[hv], band)[:band]]
        mh = w[hv].sum()
        self.Ew += ALPHA * (mw * mw - self.Ew)
        self.Eh += ALPHA * (mh * mh - self.Eh)
        self.W = min(W + 1, self.Wmax) if self.Ew > self.Eh else max(W - 1, band)

    def _evict(self):
        """Evict the non-sink token outside the (next) window with lowest acc and fold it
        into the tail; merge the two closest tail groups (Ward) if more than G."""
        m, j = self.m, self.j
        cand = np.nonzero((self.pos[:m] >= self.S) & (self.pos[:m] <= j - self.W + 1))[0]
        e = cand[np.argmin(self.acc[cand])]
        ke = self.K[e].astype(np.float64); ve = self.V[e].astype(np.float64)
        g = self.ng
        self.gN[g] = 1; self.gK[g] = ke; self.gK2[g] = ke * ke; self.gV[g] = ve
        self.ng += 1
        if self.ng > self.G:
            self._merge_closest()
        m -= 1                                   # swap-remove slot e
        self.K[e] = self.K[m]; self.V[e] = self.V[m]; self.pos[e] = self.pos[m]; self.acc[e] = self.acc[m]
        self.m = m

    def _merge_closest(self):
        ng = self.ng
        N = self.gN[:ng]; mk = self.gK[:ng] / N[:, None]
        cost = ((mk[:, None, :] - mk[None, :, :]) ** 2).sum(-1) * (N[:, None] * N[None, :]) / (N[:, None] + N[None, :])
        np.fill_diagonal(cost, np.inf)
        a, b = np.unravel_index(np.argmin(cost), cost.shape)   # first minimum, row-major
        a, b = min(a, b), max(a, b)
        for arr in (self.gN, self.gK, self.gK2, self.gV):
            arr[a] += arr[b]
            arr[b] = arr[ng - 1]
        self.ng = ng - 1


def run(Q, K, V, s, B, rows):
    st = HybridState(Q.shape[1], V.shape[1], s, B)
    want = set(int(r) for r in rows); out = {}
    for j in range(len(Q)):
        o = st.step(Q[j], K[j], V[j])
        if j in want:
            out[j] = o
    return np.array([out[int(r)] for r in rows])


if __name__ == '__main__':
    import sys
    from common import load, query_rows, rel
    import hybrid
    D, name, B = sys.argv[1], sys.argv[2], int(sys.argv[3])
    Q, K, V, O, s = load(D, name); rows = query_rows(len(Q))
    a = run(Q, K, V, s, B, rows)
    b = hybrid.run(Q, K, V, s, B, rows, hybrid.Cfg(groups=32, adapt=True, adapt_pow=2, adapt_band_abs=32, adapt_init='max'))
    print('winner', rel(a, O[rows]), 'hybrid.run', rel(b, O[rows]), 'max diff', np.abs(a - b).max())
