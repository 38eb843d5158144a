"""What users would do instead of attnsketch, at their best, in numpy: the
peers of the end-to-end and per-head comparisons.

Every peer keeps 4 sinks plus tokens in one of these token formats (bytes per
token at head dim d, keys + values):

  f32          8 d                       (StreamingLLM / H2O as published)
  kivi8/4/2    d (b + 1) / 4             KIVI (Liu et al. 2024): keys per channel over
                                         groups of 32 tokens, values per token over groups
                                         of 32 channels, min and step as two binary16 per
                                         group; the newest incomplete group of 32 tokens
                                         stays exact (KIVI's full-precision residual; not
                                         charged, in the peer's favour)
  q8_0 / q4_0  2 d 34/32, 2 d 18/32      llama.cpp's cache blocks of 32 (f16 scale), after
                                         the Walsh-Hadamard rotation llama.cpp applies to a
                                         quantized cache (head dim % 64 == 0)

H2O also keeps one f32 accumulated score per token (charged: +4 bytes).
A budget B bytes per kv head buys `tokens_for(fmt, B, d, h2o)` tokens.
"""
import math

import numpy as np

NEG = np.float32(-1e30)
GROUP = 32
SINKS = 4


def token_bytes(fmt, d):
    """Bytes one token (key + value) takes in `fmt` at head dim d."""
    if fmt == "f32":
        return 8 * d
    if fmt == "f16":
        return 4 * d
    if fmt.startswith("kivi"):
        b = int(fmt[4:])
        return d * (b + 1) // 4
    if fmt == "q8_0":
        return 2 * d * 34 // 32
    if fmt == "q4_0":
        return 2 * d * 18 // 32
    raise ValueError(f"unknown token format {fmt}")


def tokens_for(fmt, budget, d, h2o=False):
    """Tokens (sinks included) a budget of `budget` bytes per kv head holds."""
    return budget // (token_bytes(fmt, d) + (4 if h2o else 0))


# ---------------------------------------------------------------- formats

def kivi(x, bits, per_channel, g=GROUP):
    """KIVI-style asymmetric rounding (dequantized copy, float32): per channel
    over groups of g tokens (keys) or per token over groups of g channels
    (values); min and step stored as binary16."""
    L = (1 << bits) - 1
    y = x.astype(np.float32)
    n, d = y.shape
    if per_channel:
        pad = (-n) % g
        b = np.concatenate([y, np.repeat(y[-1:], pad, 0)]) if pad else y
        b = b.reshape(-1, g, d)
        lo, hi = b.min(1, keepdims=True), b.max(1, keepdims=True)
    else:
        b = y.reshape(n, d // g, g)
        lo, hi = b.min(2, keepdims=True), b.max(2, keepdims=True)
    lo16 = lo.astype(np.float16).astype(np.float32)
    st = ((hi - lo16) / L).astype(np.float16).astype(np.float32)
    st = np.where(st > 0, st, np.float32(1.0))
    qz = np.clip(np.round((b - lo16) / st), 0, L)
    out = (lo16 + qz * st).astype(np.float32)
    return out.reshape(-1, d)[:n] if per_channel else out.reshape(n, d)


def ggml_block(x, fmt):
    """llama.cpp's q8_0 / q4_0 round trip over rows of x, blocks of 32."""
    n, d = x.shape
    b = x.astype(np.float32).reshape(n, d // 32, 32)
    if fmt == "q8_0":
        amax = np.abs(b).max(2, keepdims=True)
        s = amax / 127
        q = np.round(np.divide(b, s, out=np.zeros_like(b), where=s > 0))
        y = q * s.astype(np.float16).astype(np.float32)
    else:  # q4_0: the signed value of largest magnitude maps to -8
        i = np.abs(b).argmax(2)[..., None]
        m = np.take_along_axis(b, i, 2)
        dd = m / -8
        inv = np.divide(1.0, dd, out=np.zeros_like(dd), where=dd != 0)
        q = np.minimum(15, np.floor(b * inv + 8.5))
        y = (q - 8) * dd.astype(np.float16).astype(np.float32)
    return y.reshape(n, d).astype(np.float32)


def hadamard(d):
    """Orthonormal Walsh-Hadamard matrix (d a power of two)."""
    H = np.ones((1, 1))
    while H.shape[0] < d:
        H = np.block([[H, H], [H, -H]])
    return (H / math.sqrt(d)).astype(np.float32)


def stored(k, v, fmt):
    """(keys, values, rotation) as the cache holds them; rotation H or None."""
    if fmt == "f32":
        return k, v, None
    if fmt == "f16":
        return (k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32), None)
    if fmt.startswith("kivi"):
        b = int(fmt[4:])
        return kivi(k, b, True), kivi(v, b, False), None
    if fmt in ("q8_0", "q4_0"):
        d = k.shape[1]
        H = hadamard(d) if d % 64 == 0 else None
        kr, vr = (k, v) if H is None else (k @ H, v @ H)
        return ggml_block(kr, fmt), ggml_block(vr, fmt), H
    raise ValueError(fmt)


# ---------------------------------------------------------------- window (StreamingLLM)

def window_group(q, k, v, scale, W, fmt, sinks=SINKS, block=256, store=None):
    """StreamingLLM over one GQA group: q (n, G, d), k and v (n, d). Each
    query j sees the `sinks` first tokens and the newest W - sinks tokens (itself
    included), stored in `fmt`; KIVI formats keep the newest incomplete group
    of 32 tokens (positions j - j % 32 .. j) exact. Returns (n, G, dv).
    (Research: `store(k, v) -> (kq, vq)` replaces the format, with the KIVI
    residual.)"""
    n, G, d = q.shape
    win = W - sinks
    if store is not None:
        kq, vq = store(k, v)
        H, resid = None, True
    else:
        kq, vq, H = stored(k, v, fmt)
        resid = fmt.startswith("kivi")
    if H is not None:
        q = q @ H
    out = np.empty((n, G, v.shape[1]), np.float32)
    sc = np.float32(scale)
    for s0 in range(0, n, block):  # block % GROUP == 0: residuals stay inside the diagonal block
        e0 = min(n, s0 + block)
        lo = max(0, s0 - win + 1)
        ns = min(sinks, lo)
        qb = q[s0:e0].reshape(-1, d)
        r = np.repeat(np.arange(s0, e0), G)[:, None]
        Ss = (qb @ kq[:ns].T) * sc
        So = (qb @ kq[lo:s0].T) * sc
        Sd = (qb @ kq[s0:e0].T) * sc
        co, cd = np.arange(lo, s0)[None, :], np.arange(s0, e0)[None, :]
        So[~(co > r - win)] = NEG
        Sd[~((cd <= r) & ((cd < sinks) | (cd > r - win)))] = NEG
        if resid:
            rm = (cd >= r - r % GROUP) & (cd <= r)
            Sd = np.where(rm, (qb @ k[s0:e0].T) * sc, Sd)
        mx = np.maximum(Sd.max(1), np.maximum(So.max(1, initial=NEG), Ss.max(1, initial=NEG)))[:, None]
        Ps, Po, Pd = np.exp(Ss - mx), np.exp(So - mx), np.exp(Sd - mx)
        den = Ps.sum(1) + Po.sum(1) + Pd.sum(1)
        if resid:
            num = Ps @ vq[:ns] + Po @ vq[lo:s0] + np.where(rm, 0, Pd) @ vq[s0:e0] + np.where(rm, Pd, 0) @ v[s0:e0]
        else:
            num = Ps @ vq[:ns] + Po @ vq[lo:s0] + Pd @ vq[s0:e0]
        out[s0:e0] = (num / den[:, None]).reshape(e0 - s0, G, -1)
    if H is not None:
        out = out @ H.T
    return out


# ---------------------------------------------------------------- H2O

def h2o_group(q, k, v, scale, B, fmt, sinks=SINKS):
    """H2O over a GQA group (Zhang et al. 2023, grouped as in the reference
    probe): q (n, G, d), k and v (n, d). The cache holds B tokens: the sinks,
    the B/2 newest and heavy hitters by attention accumulated over every query
    head of the group; when full, the non-sink, non-recent token of least
    accumulated attention leaves. Tokens stored in `fmt` (KIVI: the newest
    incomplete group exact). Returns (n, G, dv)."""
    n, G, d = q.shape
    dv = v.shape[1]
    kq, vq, H = stored(k, v, fmt)
    if H is not None:
        q = q @ H
    resid = fmt.startswith("kivi")
    cap = B + 1
    Ks = np.zeros((cap, d), np.float32)
    Vs = np.zeros((cap, dv), np.float32)
    pos = np.full(cap, -1, np.int64)
    acc = np.zeros(cap, np.float64)
    m = 0
    recent = B // 2
    out = np.empty((n, G, dv), np.float32)
    sc = np.float32(scale)
    for j in range(n):
        if resid and j % GROUP == 0 and j > 0:
            # the group that just completed is now stored rounded
            old = (pos[:m] >= j - GROUP) & (pos[:m] < j)
            Ks[:m][old] = kq[pos[:m][old]]
            Vs[:m][old] = vq[pos[:m][old]]
        Ks[m] = k[j] if resid else kq[j]
        Vs[m] = v[j] if resid else vq[j]
        pos[m] = j
        acc[m] = 0.0
        m += 1
        S = (q[j] @ Ks[:m].T) * sc
        S -= S.max(1, keepdims=True)
        P = np.exp(S)
        P /= P.sum(1, keepdims=True)
        out[j] = P @ Vs[:m]
        acc[:m] += P.sum(0)
        if m > B:
            cand = (pos[:m] >= sinks) & (pos[:m] <= j - recent)
            if cand.any():
                ci = np.flatnonzero(cand)
                e = ci[np.argmin(acc[ci])]
            else:
                e = int(np.argmin(np.where(pos[:m] >= sinks, pos[:m], n + 1)))
            last = m - 1
            Ks[e], Vs[e], pos[e], acc[e] = Ks[last], Vs[last], pos[last], acc[last]
            m = last
    if H is not None:
        out = out @ H.T
    return out


def layer(kind, q, k, v, scale, budget, fmt):
    """A peer over one layer: q (n, nq, d), k and v (n, nkv, d); kind
    'window' or 'h2o'; `budget` bytes per kv head."""
    n, nq, d = q.shape
    nkv = k.shape[1]
    G = nq // nkv
    out = np.empty((n, nq, v.shape[2]), np.float32)
    T = tokens_for(fmt, budget, d, h2o=(kind == "h2o"))
    for g in range(nkv):
        qs = np.ascontiguousarray(q[:, g * G:(g + 1) * G])
        kk, vv = np.ascontiguousarray(k[:, g]), np.ascontiguousarray(v[:, g])
        if kind == "window":
            out[:, g * G:(g + 1) * G] = window_group(qs, kk, vv, scale, T, fmt)
        else:
            out[:, g * G:(g + 1) * G] = h2o_group(qs, kk, vv, scale, T, fmt)
    return out
