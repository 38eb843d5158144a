"""Hybrid state: exact tokens (sinks + recent window + heavy hitters) + a tail that
absorbs every evicted token. Research version with switches; see FINDINGS.md for the
chosen configuration.

Exact part: C = S + W + H slots (peak, current token included), each token
(d+dv) floats + 1 float accumulated score.

Tail: G groups of evicted tokens. Group g keeps
   N_g (count), Sk_g = sum k (d), Sq_g = sum k*k (d, optional: var=True),
   Sv_g = sum v (dv), optionally Skv_g = sum k v^T (d*dv, cov=True).
A newly evicted token becomes a singleton group; while more than G groups exist,
the two groups with the smallest Ward cost  N_a N_b/(N_a+N_b) |mean_a - mean_b|^2
(key space) are merged (sums add).

Per query q (scale s), for each group:
   mu  = s q.mean_k
   var = s^2 sum_c q_c^2 (Sq/N - mean_k^2)_c   clamped to [0, var_max]
   weight (relative to common ref c): N exp(mu - c) * f(var),
        f(var) = 1 + var/2  (2nd-order expansion), or exp(var/2) (gaussian)
   value  : mean_v  (+ s q^T cov(k,v) / f(var) if cov)
c = max(max exact score, max_g mu_g + log f) so nothing overflows.
"""
import math
import numpy as np


class Cfg:
    def __init__(self, sinks=4, window=None, heavy=None, groups=1, var=True, cov=False,
                 var_max=2.0, fvar='taylor', score='acc', frac_window=0.5, tail_frac=None,
                 ema=None, merge='ward', adapt=False, adapt_pow=1, adapt_band_abs=None, adapt_init='half', adapt_alpha=1/256, adapt_band=16):
        self.__dict__.update(locals()); del self.__dict__['self']

    def __repr__(self):
        return ' '.join(f'{k}={v}' for k, v in self.__dict__.items())


def group_floats(d, dv, var, cov):
    return 1 + d + dv + (d if var else 0) + (d * dv if cov else 0)


def split_budget(B, d, dv, cfg):
    """Return (S, W, H, G) for a byte budget."""
    tok = (d + dv + 1) * 4
    gb = group_floats(d, dv, cfg.var, cfg.cov) * 4
    G = cfg.groups
    if cfg.tail_frac is not None:             # groups as a fraction of the budget
        G = max(1, int(cfg.tail_frac * B // gb))
    rest = B - G * gb
    C = rest // tok
    S = cfg.sinks
    dyn = C - S
    W = int(round(dyn * cfg.frac_window)) if cfg.window is None else cfg.window
    H = dyn - W
    return S, W, H, G


def run(Q, K, V, s, B, rows, cfg):
    n, d = Q.shape; dv = V.shape[1]
    S, W, H, G = split_budget(B, d, dv, cfg)
    C = S + W + H
    Kc = np.zeros((C, d), np.float32); Vc = np.zeros((C, dv), np.float32)
    pos = np.zeros(C, np.int64); acc = np.zeros(C, np.float64)
    m = 0
    # tail groups (G+1 rows: one spare for the new singleton before a merge)
    gN = np.zeros(G + 1); gK = np.zeros((G + 1, d)); gQ = np.zeros((G + 1, d))
    gV = np.zeros((G + 1, dv)); gKV = np.zeros((G + 1, d, dv)) if cfg.cov else None
    ng = 0
    Dm = np.full((G + 1, G + 1), np.inf)   # Ward costs between groups (derivable cache)
    want = np.zeros(n, bool); want[rows] = True
    out = {}
    adapt = cfg.adapt; band = cfg.adapt_band_abs if cfg.adapt_band_abs else max(8, (W + H) // cfg.adapt_band); Wmax = W + H - band
    Ew = Eh = 0.0; Wtrace = []
    if adapt and cfg.adapt_init == 'max':      # start as StreamingLLM, move toward heavy
        W, H = Wmax, W + H - Wmax
    Qd = Q.astype(np.float64)
    for j in range(n):
        Kc[m] = K[j]; Vc[m] = V[j]; pos[m] = j; acc[m] = 0.0; m += 1
        q = Qd[j]
        x = s * (Kc[:m] @ Q[j]).astype(np.float64)
        c = x.max()
        if ng:
            N = gN[:ng]; mk = gK[:ng] / N[:, None]
            mu = s * (mk @ q)
            if cfg.var:
                vk = np.maximum(gQ[:ng] / N[:, None] - mk * mk, 0)
                var = np.clip(s * s * (vk @ (q * q)), 0, cfg.var_max)
            else:
                var = np.zeros(ng)
            lf = np.log1p(var / 2) if cfg.fvar == 'taylor' else var / 2
            lw = np.log(N) + mu + lf
            c = max(c, lw.max())
            we = np.exp(x - c); wg = np.exp(lw - c)
            num = we @ Vc[:m] + wg @ (gV[:ng] / N[:, None])
            if cfg.cov:
                # cov term: N e^{mu-c} s q^T (Skv/N - mk mv^T)
                mv = gV[:ng] / N[:, None]
                ckv = gKV[:ng] / N[:, None, None] - mk[:, :, None] * mv[:, None, :]
                cx = s * np.einsum('c,gcv->gv', q, ckv)
                num += np.exp(mu + np.log(N) - c) @ cx
            den = we.sum() + wg.sum()
        else:
            we = np.exp(x - c)
            num = we @ Vc[:m]; den = we.sum()
        w = we / den
        if cfg.score == 'vacc':
            # value-aware utility: how much the output moves if the token were dropped
            w = w * np.linalg.norm(Vc[:m] - (num / den).astype(np.float32), axis=1)
            acc[:m] += w
        if cfg.score == 'acc':
            acc[:m] += w
        elif cfg.score == 'ema':
            acc[:m] = acc[:m] * cfg.ema + w
        if want[j]:
            out[j] = num / den
        if adapt and m == C:
            # marginal mass of the window's oldest band vs the heavy set's weakest band
            age = j - pos[:m]
            inwin = (pos[:m] >= S) & (age < W)
            mw = w[inwin & (age >= W - band)].sum()
            hv = np.nonzero((pos[:m] >= S) & (age >= W))[0]
            if len(hv) > band:
                hv = hv[np.argpartition(acc[hv], band)[:band]]
            mh = w[hv].sum()
            if cfg.adapt == 'prop':      # total mass on window vs on heavy set
                mw = w[inwin].sum(); mh = w[(pos[:m] >= S) & (age >= W)].sum()
            mw = mw ** cfg.adapt_pow; mh = mh ** cfg.adapt_pow
            Ew += cfg.adapt_alpha * (mw - Ew); Eh += cfg.adapt_alpha * (mh - Eh)
            if cfg.adapt == 'prop':
                tgt = (W + H) * Ew / max(Ew + Eh, 1e-30)
                W = min(W + 1, Wmax) if tgt > W else max(W - 1, band)
            else:
                W = min(W + 1, Wmax) if Ew > Eh else max(W - 1, band)
            Wtrace.append(W)
        if m == C:
            cand = np.nonzero((pos[:m] >= S) & (pos[:m] <= j - W + 1))[0]
            if cfg.score == 'mean':
                sc = acc[cand] / (j + 1 - pos[cand])
            else:
                sc = acc[cand]
            e = cand[np.argmin(sc)]
            if G == 0:                       # pure eviction (no tail): drop
                m -= 1
                Kc[e] = Kc[m]; Vc[e] = Vc[m]; pos[e] = pos[m]; acc[e] = acc[m]
                continue
            # fold into tail as a singleton group
            ke = Kc[e].astype(np.float64); ve = Vc[e].astype(np.float64)
            gN[ng] = 1; gK[ng] = ke; gQ[ng] = ke * ke; gV[ng] = ve
            if cfg.cov:
                gKV[ng] = np.outer(ke, ve)
            ng += 1
            if cfg.merge == 'ward':
                _ward_row(Dm, gN, gK, ng - 1, ng)
            if ng > G:
                ng = _merge(gN, gK, gQ, gV, gKV, ng, cfg.merge, Dm)
            m -= 1
            Kc[e] = Kc[m]; Vc[e] = Vc[m]; pos[e] = pos[m]; acc[e] = acc[m]
    run.Wtrace = Wtrace
    return np.array([out[i] for i in rows])


def _ward_row(Dm, gN, gK, g, ng):
    """Ward cost of merging group g with every other live group."""
    N = gN[:ng]; mk = gK[:ng] / N[:, None]
    c = ((mk - mk[g]) ** 2).sum(1) * N * N[g] / (N + N[g])
    c[g] = np.inf
    Dm[g, :ng] = c; Dm[:ng, g] = c


def _merge(gN, gK, gQ, gV, gKV, ng, how, Dm=None):
    N = gN[:ng]; mk = gK[:ng] / N[:, None]
    if how == 'ward':
        sub = Dm[:ng, :ng]
        a, b = np.unravel_index(np.argmin(sub), sub.shape)
    elif how == 'newest':     # merge the singleton into its nearest group
        b = ng - 1
        dd = ((mk[:b] - mk[b]) ** 2).sum(-1) * N[:b] / (N[:b] + 1)
        a = int(np.argmin(dd))
    else:
        raise ValueError(how)
    a, b = min(a, b), max(a, b)
    gN[a] += gN[b]; gK[a] += gK[b]; gQ[a] += gQ[b]; gV[a] += gV[b]
    if gKV is not None:
        gKV[a] += gKV[b]
    last = ng - 1
    if b != last:
        gN[b] = gN[last]; gK[b] = gK[last]; gQ[b] = gQ[last]; gV[b] = gV[last]
        if gKV is not None:
            gKV[b] = gKV[last]
        if Dm is not None:
            Dm[b, :] = Dm[last, :]; Dm[:, b] = Dm[:, last]; Dm[b, b] = np.inf
    if Dm is not None:
        Dm[last, :] = np.inf; Dm[:, last] = np.inf
        if how == 'ward':
            _ward_row(Dm, gN, gK, a, ng - 1)
        else:
            _ward_row(Dm, gN, gK, a, ng - 1)
    return ng - 1
