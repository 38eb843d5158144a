#!/usr/bin/env python3
"""Research (docs/paged.md): end-to-end PPL of token formats alone (every token kept, no eviction).
Spec: K=<kfmt>,V=<vfmt>[,R=<resid>][,W=<window tokens>]
 kfmt/vfmt: f32 | kivi<b> (per channel over 32 tokens for K, per token over 32 ch for V)
            | tok<b>  (per token, asymmetric min/step over all d channels, f16 params)
            | ptok<b> (per-channel prescale by rms of the first 256 tokens' channel, then tok<b>)
            | htok<b> (Hadamard rotation, then per token asymmetric)
            | sym<b>  (per token symmetric absmax)
Usage: python docs/research/fmt_e2e.py TEXT CTX SPEC... (appends to $FMT_OUT, default fmt.jsonl)
 R: newest tokens kept exact (block-aligned residual, like KIVI's), default 32 (incomplete group)
"""
import math, os, sys, time, json
import numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import peers
from smollm2 import SmolLM2
import e2e_ppl

NEG = np.float32(-1e30)


def q_tok(x, b, g=None):
    n, d = x.shape
    g = g or d
    L = (1 << b) - 1
    y = x.reshape(n, d // g, g)
    lo, hi = y.min(2, keepdims=True), y.max(2, keepdims=True)
    lo = lo.astype(np.float16).astype(np.float32)
    st = ((hi - lo) / L).astype(np.float16).astype(np.float32)
    st = np.where(st > 0, st, 1.0)
    z = np.clip(np.round((y - lo) / st), 0, L)
    return (lo + z * st).reshape(n, d).astype(np.float32)


def q_sym(x, b):
    L = (1 << (b - 1)) - 1
    s = np.abs(x).max(1, keepdims=True) / L
    s = s.astype(np.float16).astype(np.float32)
    s = np.where(s > 0, s, 1.0)
    return (np.clip(np.round(x / s), -L, L) * s).astype(np.float32)


def fmt_apply(x, f, is_key):
    if f == "f32":
        return x
    if f == "f16":
        return x.astype(np.float16).astype(np.float32)
    if f.startswith("kivi"):
        b, _, g = f[4:].partition("g")
        return peers.kivi(x, int(b), is_key, g=int(g or 32))
    if f.startswith("ptok"):
        b = int(f[4:])
        c = np.sqrt((x[:256] ** 2).mean(0)) + 1e-6
        return q_tok(x / c, b) * c
    if f.startswith("htok"):
        b = int(f[4:])
        H = peers.hadamard(x.shape[1])
        return q_tok(x @ H, b) @ H.T
    if f.startswith("tok"):
        return q_tok(x, int(f[3:]))
    if f.startswith("sym"):
        return q_sym(x, int(f[3:]))
    raise ValueError(f)


def attn_group(q, k, v, scale, kf, vf, R, sinks=4, hi=None, block=256):
    """All tokens kept: sinks exact; the newest incomplete group of 32 exact;
    tokens newer than s0 - n_hi (per block of 256 queries) in the hi format
    (hi = (fmt, n_hi)), older ones in kf / vf."""
    n, G, d = q.shape
    kq, vq = fmt_apply(k, kf, True), fmt_apply(v, vf, False)
    kq[:sinks] = k[:sinks]; vq[:sinks] = v[:sinks]
    if hi:
        kh, vh = fmt_apply(k, hi[0], True), fmt_apply(v, hi[0], False)
        kh[:sinks] = k[:sinks]; vh[:sinks] = v[:sinks]
    sc = np.float32(scale)
    out = np.empty((n, G, v.shape[1]), np.float32)
    for s0 in range(0, n, block):
        e0 = min(n, s0 + block)
        qb = q[s0:e0].reshape(-1, d)
        r = np.repeat(np.arange(s0, e0), G)[:, None]
        b = max(0, s0 - hi[1]) if hi else s0
        parts = [(kq[:b], vq[:b])]
        if hi:
            parts.append((kh[b:s0], vh[b:s0]))
        Sp = [(qb @ kk.T) * sc for kk, _ in parts]
        cd = np.arange(s0, e0)[None, :]
        rm = (cd >= r - r % R) & (cd <= r)
        dq = (kh, vh) if hi else (kq, vq)
        Sd = np.where(rm, qb @ k[s0:e0].T, qb @ dq[0][s0:e0].T) * sc
        Sd[cd > r] = NEG
        mx = np.max([x.max(1, initial=NEG) for x in Sp + [Sd]], 0)[:, None]
        num = 0; den = 0
        for x, (_, vv) in zip(Sp, parts):
            P = np.exp(x - mx); num = num + P @ vv; den = den + P.sum(1)
        Pd = np.exp(Sd - mx)
        num = num + np.where(rm, 0, Pd) @ dq[1][s0:e0] + np.where(rm, Pd, 0) @ v[s0:e0]
        den = den + Pd.sum(1)
        out[s0:e0] = (num / den[:, None]).reshape(e0 - s0, G, -1)
    return out


def make(spec):
    kv = dict(p.split("=") for p in spec.split(","))
    kf, vf, R = kv.get("K", "f32"), kv.get("V", "f32"), int(kv.get("R", 32))
    hi = kv.get("HI")
    hi = (hi.split(":")[0], int(hi.split(":")[1])) if hi else None
    def fn(L, q, k, v, scale):
        n, nq, d = q.shape
        nkv = k.shape[1]; G = nq // nkv
        out = np.empty((n, nq, v.shape[2]), np.float32)
        for g in range(nkv):
            out[:, g * G:(g + 1) * G] = attn_group(np.ascontiguousarray(q[:, g * G:(g + 1) * G]),
                                                   np.ascontiguousarray(k[:, g]), np.ascontiguousarray(v[:, g]),
                                                   scale, kf, vf, R, hi=hi)
        return out
    return fn


if __name__ == "__main__":
    text, ctx = sys.argv[1], int(sys.argv[2])
    M = SmolLM2()
    ids = M.tokenize(open(text).read())[:ctx]
    for spec in sys.argv[3:]:
        t0 = time.time()
        h = M.forward(ids, make(spec))
        nll, top1 = M.nll(h, ids, ctx // 2, ctx - 1)
        print(f"{spec:30s} ppl {math.exp(nll):9.4f} nll {nll:.5f} {time.time()-t0:.0f}s", flush=True)
        with open(os.environ.get("FMT_OUT", "fmt.jsonl"), "a") as f:
            f.write(json.dumps(dict(text=os.path.basename(text), ctx=ctx, spec=spec, ppl=math.exp(nll))) + "\n")
