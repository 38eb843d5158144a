#!/usr/bin/env python3
"""Per-head check at equal bytes: real GQA groups of SmolLM2, each through the
library (one as_bank with the group's query heads over its kv head) and
through every peer at its best format (tools/peers.py), relative error of the
outputs against exact causal attention (f64) over rows n/2..n-1.

  python tools/head_eval.py --text FILE --n 8192 --groups 3:0,15:2 --budgets 128K,256K,512K,1M
  python tools/head_eval.py ... --peers window:kivi8,window:kivi4,window:q8_0,h2o:kivi8,window:f32

The q/k/v of the requested layers come from one exact forward, cached in
--cache (an .npz per text and n). Prints one line per (group, budget): each
method's error and ours / best peer.
"""
import argparse
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402
from e2e_ppl import parse_bytes, human  # noqa: E402

DEFAULT_PEERS = ["window:f32", "window:kivi8", "window:kivi4", "window:kivi2", "window:q8_0", "window:q4_0",
                 "h2o:f32", "h2o:kivi8", "h2o:kivi4"]


def capture(text, n, layers, cache_dir):
    """{layer: (q (n, nq, d), k (n, nkv, d), v)} from the exact forward, cached."""
    key = hashlib.sha256(f"{os.path.abspath(text)}|{n}|{sorted(layers)}".encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"qkv-{key}.npz")
    if os.path.exists(path):
        z = np.load(path)
        return {L: (z[f"q{L}"], z[f"k{L}"], z[f"v{L}"]) for L in layers}
    from smollm2 import SmolLM2
    M = SmolLM2()
    ids = M.tokenize(open(text, encoding="utf-8").read())[:n]
    if len(ids) < n:
        raise SystemExit(f"text too short: {len(ids)} tokens < {n}")
    got = {}

    def attn(L, q, k, v, s):
        if L in layers:
            got[L] = (q.copy(), k.copy(), v.copy())
        return M.exact_attention(q, k, v, s)
    M.forward(ids, attn)
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(path, **{f"{x}{L}": a for L, t in got.items() for x, a in zip("qkv", t)})
    return got


def exact64(q, k, v, scale, rows):
    """Exact causal attention of query rows `rows` (f64): q (n, G, d), k/v (n, d)."""
    out = np.empty((len(rows), q.shape[1], v.shape[1]))
    k64, v64 = k.astype(np.float64), v.astype(np.float64)
    for i, r in enumerate(rows):
        S = (q[r].astype(np.float64) @ k64[:r + 1].T) * scale
        S -= S.max(1, keepdims=True)
        P = np.exp(S)
        out[i] = (P @ v64[:r + 1]) / P.sum(1, keepdims=True)
    return out


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--text", required=True)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--groups", required=True, help="layer:kv_group list, e.g. 3:0,15:2")
    ap.add_argument("--budgets", default="128K,256K,512K,1M")
    ap.add_argument("--peers", default=",".join(DEFAULT_PEERS))
    ap.add_argument("--ours", default="ours",
                    help="research: ';'-separated variants of ours, e.g. 'ours;paged:hf=0.5,g=8' "
                         "(the first is compared with the peers)")
    ap.add_argument("--lib")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/attnsketch/qkv"))
    ap.add_argument("--stride", type=int, default=16, help="score every stride-th row of n/2..n-1")
    a = ap.parse_args()
    from aslib import AsLib
    lib = AsLib(a.lib)
    groups = [tuple(int(x) for x in s.split(":")) for s in a.groups.split(",") if s]
    budgets = [parse_bytes(b) for b in a.budgets.split(",")]
    plist = [p for p in a.peers.split(",") if p]
    cap = capture(a.text, a.n, {L for L, _ in groups}, a.cache)
    rows = np.arange(a.n // 2, a.n, a.stride)
    print(f"text {os.path.basename(a.text)}, n {a.n}, rows n/2..n step {a.stride}, lib {lib.version}")
    variants = [v for v in a.ours.split(";") if v]
    print("group  budget " + " ".join(f"{v[:16]:>16s}" for v in variants) + " "
          + " ".join(f"{p:>12s}" for p in plist) + "   best peer  ours/best")
    for L, g in groups:
        q, k, v = cap[L]
        nq, nkv, d = q.shape[1], k.shape[1], q.shape[2]
        G = nq // nkv
        qs = np.ascontiguousarray(q[:, g * G:(g + 1) * G])
        kk, vv = np.ascontiguousarray(k[:, g]), np.ascontiguousarray(v[:, g])
        scale = 1.0 / np.sqrt(d)
        ref = exact64(qs, kk, vv, scale, rows)
        for B in budgets:
            mine = []
            for var in variants:
                if var == "ours":
                    cfg = lib.config(d, scale=scale, budget=B)
                else:
                    kw = dict(x.split("=") for x in var.split(":", 1)[1].split(","))
                    cfg = lib.paged_config(d, B, float(kw.get("hf", 0.1)), int(kw.get("g", 8)), scale=scale)
                ours, _ = lib.bank_layer(cfg, qs, kk[:, None], vv[:, None])
                mine.append(rel(ours[rows], ref))
            e_ours = mine[0]
            errs = []
            for p in plist:
                kind, fmt = p.split(":")
                T = peers.tokens_for(fmt, B, d, h2o=kind == "h2o")
                o = (peers.window_group if kind == "window" else peers.h2o_group)(qs, kk, vv, scale, T, fmt)
                errs.append(rel(o[rows], ref))
            best = min(errs)
            flag = "" if e_ours <= best or (e_ours < 1e-3 and best < 1e-3) else "  LOSS"
            print(f"{L:2d}:{g}  {human(B):>8s} " + " ".join(f"{e:16.5f}" for e in mine) + " "
                  + " ".join(f"{e:12.5f}" for e in errs)
                  + f"   {best:9.5f}  {e_ours / best:6.2f}{flag}", flush=True)


if __name__ == "__main__":
    main()
