#!/usr/bin/env python3
"""Plots docs/recovery_claim.csv (from `cargo run --release --example recovery_claim`)
into docs/recovery_claim.png: state bytes (flat) vs KV-cache bytes (linear), and the
recovery error relative to the best k-term error.

Needs matplotlib; without a system install:
    python3 -m venv .venv-plot && .venv-plot/bin/pip install matplotlib
    .venv-plot/bin/python scripts/plot_recovery.py
"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "docs/recovery_claim.csv")
dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "docs/recovery_claim.png")
rows = list(csv.DictReader(open(src)))
n = [int(r["n"]) for r in rows]
fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
a.loglog(n, [int(r["state_bytes"]) for r in rows], "o-", label="attnsketch state (incl. output sketch)")
a.loglog(n, [int(r["kv_bytes_f32"]) for r in rows], "s-", label="KV cache (f32 K and V)")
a.set_xscale("log", base=2)
a.set_xlabel("tokens n")
a.set_ylabel("bytes")
a.set_title("Memory: d=16, g=4, s=1/d, dv=16, k=8, eps=0.5")
a.grid(True, which="both", alpha=0.3)
a.legend()
b.semilogx(n, [float(r["ratio_to_best_k"]) for r in rows], "o-", label="||T - y|| / min_k ||T - y'||")
b.axhline(1.5, color="r", ls="--", label="bound 1 + eps1 = 1.5")
b.set_xscale("log", base=2)
b.set_ylim(0.9, 1.6)
b.set_xlabel("tokens n")
b.set_title("Recovery of output column 0 (k = 8)")
b.grid(True, which="both", alpha=0.3)
b.legend()
fig.tight_layout()
fig.savefig(dst, dpi=110)
print(dst)
