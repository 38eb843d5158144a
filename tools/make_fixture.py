#!/usr/bin/env python3
"""Write the compact real-data fixture the tests and the demo use.

Reads heads written by extract_attention.py (float32 Q, K, V of n tokens) and
writes the first --n tokens of each, rounded to IEEE binary16, with a small
JSON header per head:

  LxxHy.json          n, d, layer, head, kv_head, scale, dtype "binary16",
                      files {q, k, v}, and the provenance of the source set
  LxxHy_{q,k,v}.f16   binary16 little-endian, row-major (n, d), row i = token i

No exact output is stored: readers compute softmax(scale Q K^T, causal) V in
float64 from the stored (rounded) rows, so it is the exact attention of what
the files hold. The model is causal, so the first n tokens of an 8192-token
extraction are what an n-token extraction of the same text gives.

  python tools/make_fixture.py SRC_DIR OUT_DIR [--n 2048] [--heads L00H1,...]
"""
import argparse
import hashlib
import json
import os

import numpy as np


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--heads", default="L00H1,L07H4,L15H8,L26H6")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    index = json.load(open(os.path.join(a.src, "index.json")))
    tokens = np.fromfile(os.path.join(a.src, "tokens.i32"), "<i4")
    if len(tokens) < a.n:
        raise SystemExit(f"{a.src}: {len(tokens)} tokens < --n {a.n}")
    prov = {
        "model": index["model"]["name"],
        "package": index["model"]["package"],
        "gguf_sha256": index["model"]["gguf_sha256"],
        "text_files": index["text"]["files"],
        "text_joined_with": index["text"]["joined_with"],
        "tokens": f"the first {a.n} of the source set's {len(tokens)} tokens",
        "tokens_sha256": hashlib.sha256(tokens[:a.n].astype("<i4").tobytes()).hexdigest(),
        "source_set_tokens_sha256": sha256(os.path.join(a.src, "tokens.i32")),
        "made_by": "tools/make_fixture.py from an extract_attention.py set (scripts/data.sh fixture)",
    }
    for name in a.heads.split(","):
        h = json.load(open(os.path.join(a.src, name + ".json")))
        n, d = h["n"], h["d"]
        files = {}
        for key in "qkv":
            x = np.fromfile(os.path.join(a.src, h["files"][key]), "<f4").reshape(n, d)[: a.n]
            y = x.astype("<f2")
            if not np.isfinite(y).all():
                raise SystemExit(f"{name}_{key}: not finite in binary16")
            fn = f"{name}_{key}.f16"
            y.tofile(os.path.join(a.out, fn))
            files[key] = fn
        hdr = {
            "n": a.n, "d": d, "layer": h["layer"], "head": h["head"], "kv_head": h["kv_head"],
            "scale": h["scale"], "causal": True, "q_k_post_rotary": True,
            "dtype": "binary16", "layout": "little-endian, row-major (n, d), row i = token position i",
            "files": files,
            "exact_output": "not stored: softmax(scale Q K^T, causal) V of the stored rows, in float64",
            "source_stats_8192": {k: h["stats"][k] for k in (
                "max_abs_qk_scaled_causal", "entropy_nats_mean", "top1pct_mass_mean", "mass_on_token0_mean")},
            "provenance": prov,
        }
        with open(os.path.join(a.out, name + ".json"), "w") as f:
            json.dump(hdr, f, indent=1)
        print(f"{name}: {a.n} x {d} binary16 q, k, v")


if __name__ == "__main__":
    main()
