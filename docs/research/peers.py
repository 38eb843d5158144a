"""Reference peers at equal bytes per head (numpy).

All peers are causal: the output at row i only uses tokens 0..i, and a state that
would be held by a streaming cache after absorbing token i.

Byte accounting (f32 everywhere):
  StreamingLLM : C = B // ((d+dv)*4) tokens: 4 sinks + (C-4) most recent (incl. current).
  H2O          : C = B // ((d+dv+1)*4) tokens (+1 float: accumulated attention score);
                 recent = C//2, heavy = C - recent. Faithful to H2O: after each step the
                 token with lowest accumulated attention among non-recent tokens is evicted.
                 Peak cache size C (the current token included).
  Taylor-2     : t = binom(d+2,2) features, state M (t x dv) + z (t): t*(dv+1)*4 bytes.
                 Fixed size (545 KiB at d=dv=64): it does not fit 256/512 KiB; we report
                 its error anyway with its true size.
  Performer    : FAVOR+ positive orthogonal random features, m = B // ((dv+1)*4)
                 (state M (m x dv) + z (m)); the projection matrix is regenerated from a
                 seed and not counted.
"""
import math
import numpy as np


def streamingllm(Q, K, V, s, B, rows, sinks=4):
    n, d = Q.shape; dv = V.shape[1]
    C = B // ((d + dv) * 4)
    W = C - sinks
    out = np.zeros((len(rows), dv))
    for r, i in enumerate(rows):
        ix = np.r_[0:min(sinks, i + 1), max(sinks, i + 1 - W):i + 1]
        x = s * (K[ix].astype(np.float64) @ Q[i])
        w = np.exp(x - x.max())
        out[r] = w @ V[ix] / w.sum()
    return out


def h2o(Q, K, V, s, B, rows, meta_floats=1):
    """Faithful H2O: cache of C tokens, half recent window, half heavy hitters."""
    n, d = Q.shape; dv = V.shape[1]
    C = B // ((d + dv + meta_floats) * 4)
    recent = C // 2
    Kc = np.zeros((C, d), np.float32); Vc = np.zeros((C, dv), np.float32)
    pos = np.zeros(C, np.int64); acc = np.zeros(C, np.float64)
    m = 0
    want = np.zeros(n, bool); want[rows] = True
    out = {}
    for j in range(n):
        Kc[m] = K[j]; Vc[m] = V[j]; pos[m] = j; acc[m] = 0.0; m += 1
        x = s * (Kc[:m] @ Q[j]).astype(np.float64)
        w = np.exp(x - x.max()); w /= w.sum()
        acc[:m] += w
        if want[j]:
            out[j] = w @ Vc[:m]
        if m == C:
            cand = np.nonzero(pos[:m] <= j - recent)[0]     # not among the `recent` newest
            e = cand[np.argmin(acc[cand])]
            m -= 1                                           # swap-remove
            Kc[e] = Kc[m]; Vc[e] = Vc[m]; pos[e] = pos[m]; acc[e] = acc[m]
    return np.array([out[i] for i in rows])


def taylor2_bytes(d, dv):
    return math.comb(d + 2, 2) * (dv + 1) * 4


def taylor2(Q, K, V, s, B, rows):
    """Taylor-2 feature sketch over all tokens. The exact feature map makes
    <phi(q),phi(k)> = 1 + x + x^2/2, x = s q.k, so we evaluate the kernel directly
    (identical result to M = sum phi(k) v^T, z = sum phi(k))."""
    out = np.zeros((len(rows), V.shape[1]))
    Kd = K.astype(np.float64); Vd = V.astype(np.float64)
    for r, i in enumerate(rows):
        x = s * (Kd[:i + 1] @ Q[i])
        w = 1 + x + 0.5 * x * x
        out[r] = w @ Vd[:i + 1] / w.sum()
    return out


def _orf(m, d, rng):
    """Orthogonal random features (Performer): blocks of d orthogonal rows,
    row norms drawn from chi(d)."""
    blocks = []
    for _ in range((m + d - 1) // d):
        G = rng.standard_normal((d, d))
        Qm, _ = np.linalg.qr(G)
        blocks.append(Qm.T)
    W = np.concatenate(blocks)[:m]
    norms = np.linalg.norm(rng.standard_normal((m, d)), axis=1)
    return W * norms[:, None]


def performer(Q, K, V, s, B, rows, seed=0, chunk=1024):
    n, d = Q.shape; dv = V.shape[1]
    m = B // ((dv + 1) * 4)
    rng = np.random.default_rng(seed)
    W = _orf(m, d, rng)
    r4 = s ** 0.5
    Xq = Q[rows].astype(np.float64) * r4; Xk = K.astype(np.float64) * r4
    # log phi = W x - |x|^2/2 ; constants shared by all keys (or per query) cancel
    lq = Xq @ W.T - 0.5 * (Xq ** 2).sum(1, keepdims=True)
    lq -= lq.max(1, keepdims=True)
    lk_all = Xk @ W.T - 0.5 * (Xk ** 2).sum(1, keepdims=True)
    ck = lk_all.max()          # in streaming: a running max with rescaling of M, z
    A = np.zeros((len(rows), n))
    for f0 in range(0, m, chunk):
        pq = np.exp(lq[:, f0:f0 + chunk]).astype(np.float32)
        pk = np.exp(lk_all[:, f0:f0 + chunk] - ck).astype(np.float32)
        A += pq @ pk.T
    A *= (np.arange(n)[None, :] <= np.asarray(rows)[:, None])   # causal prefix
    return (A @ V.astype(np.float64)) / A.sum(1, keepdims=True)
