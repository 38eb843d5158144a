#!/usr/bin/env python3
"""End-to-end perplexity with the attention of a real model replaced: the
project's yardstick for accuracy at equal bytes.

A numpy forward of SmolLM2-135M (every layer) or Gemma 3 270M (its global
layers; the sliding-window layers stay exact, as llama.cpp's SWA cache keeps
them) where each full-attention layer's attention goes through a method:

  exact                 causal softmax, float32
  ours@B                libattnsketch by ctypes: one as_bank per layer (n_head query
                        heads over n_kv states), as_config_for_budget(B bytes per kv
                        head), all tokens by as_bank_push_tokens (causal: equal to
                        decoding one by one)
  window:FMT@B          StreamingLLM: 4 sinks + the newest tokens that B holds in FMT
  h2o:FMT@B             H2O: 4 sinks, B/2 newest, heavy hitters by attention summed over
                        the GQA group; B holds them in FMT (+4 bytes a token for the score)
  FMT: f32, f16, kivi8, kivi4, kivi2, q8_0, q4_0 (tools/peers.py: bytes, best-format notes)
  B: bytes per kv head, with K/M suffixes (256K = 262144)

Scoring follows llama-perplexity: the token stream is cut into chunks of --ctx
tokens (the first token of each chunk replaced by BOS when the model adds one),
and the logits of positions ctx/2 .. ctx-2 predict the next tokens; PPL =
exp(mean NLL) over all scored tokens of --chunks chunks.

  python tools/e2e_ppl.py --model smollm2 --text FILE --ctx 8192 exact ours@256K window:kivi4@256K
  python tools/e2e_ppl.py --table results.jsonl --plot e2e.png    # table (markdown) + plot

Every run appends one JSON line per method to --out (default e2e-results.jsonl).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402


def parse_bytes(s):
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


def human(b):
    return f"{b >> 20} MiB" if b % (1 << 20) == 0 else f"{b >> 10} KiB"


def load_model(name, path=None, llama_numerics=False):
    if name == "smollm2":
        from smollm2 import SmolLM2
        return SmolLM2(path)
    if name == "gemma3":
        from gemma3 import Gemma3
        return Gemma3(path, llama_numerics=llama_numerics)
    raise SystemExit(f"unknown model {name}")


def read_text(paths):
    """The text llama-perplexity scores for `-f FILE` (files joined with a
    blank line): one trailing newline dropped, backslash escapes processed."""
    from gemma3 import llama_cli_text
    parts = []
    for p in paths:
        with open(p, encoding="utf-8", newline="") as f:
            parts.append(f.read())
    return llama_cli_text("\n\n".join(parts))


def chunks_of(M, ids, ctx, n_chunks):
    """Chunks as llama-perplexity forms them (BOS prepended to the stream and
    to every chunk when the model adds one)."""
    if M.bos_id is not None:
        ids = [M.bos_id] + list(ids)
    have = len(ids) // ctx
    if have < n_chunks:
        raise SystemExit(f"text too short: {len(ids)} tokens give {have} chunks of {ctx} < {n_chunks}")
    out = []
    for c in range(n_chunks):
        ch = list(ids[c * ctx:(c + 1) * ctx])
        if M.bos_id is not None:
            ch[0] = M.bos_id
        out.append(ch)
    return out


class Method:
    """One attention replacement: `__call__(L, q, k, v, scale)` for a layer,
    `bytes` = state bytes per kv head (largest over layers)."""

    def __init__(self, spec, lib):
        self.spec = spec
        self.state_bytes = 0
        if spec == "exact":
            self.kind, self.fmt, self.budget = "exact", None, None
            return
        head, _, b = spec.partition("@")
        self.budget = parse_bytes(b) if b else None
        kind, _, fmt = head.partition(":")
        self.kind, self.fmt = kind, fmt or None
        if kind in ("ours", "paged"):
            if lib is None:
                raise SystemExit("ours@B needs the library (--lib or target/release/libattnsketch.so)")
            self.lib = lib
        elif kind in ("window", "h2o"):
            peers.token_bytes(self.fmt, 64)  # validates the format name
        else:
            raise SystemExit(f"unknown method {spec}")

    def __call__(self, L, q, k, v, scale):
        n, nq, d = q.shape
        nkv = k.shape[1]
        if self.kind == "exact":
            return None
        if self.kind in ("ours", "paged"):
            if self.kind == "paged":  # research: paged:hf=0.1,g=8@B
                kw = dict(x.split("=") for x in (self.fmt or "").split(",") if x)
                cfg = self.lib.paged_config(d, self.budget, float(kw.get("hf", 0.1)), int(kw.get("g", 8)),
                                            scale=scale)
            else:
                cfg = self.lib.config(d, scale=scale, budget=self.budget)
            out, sb = self.lib.bank_layer(cfg, q, k, v)
            self.state_bytes = max(self.state_bytes, sb // nkv)
            self.config = cfg.fields()
            return out
        T = peers.tokens_for(self.fmt, self.budget, d, h2o=self.kind == "h2o")
        self.state_bytes = T * (peers.token_bytes(self.fmt, d) + (4 if self.kind == "h2o" else 0))
        return peers.layer(self.kind, q, k, v, scale, self.budget, self.fmt)


def run(M, chunks, method, cache):
    """Mean NLL and top-1 accuracy over the scored positions of every chunk."""
    tot, acc, cnt = 0.0, 0.0, 0
    def attn(L, q, k, v, s):
        o = method(L, q, k, v, s)
        if o is None:  # exact: the model's own attention (SmolLM2 and Gemma 3 name it differently)
            return M.exact_attention(q, k, v, s) if hasattr(M, "exact_attention") else M.attention(q, k, v, s)
        return o
    for ci, ch in enumerate(chunks):
        ctx = len(ch)
        first = ctx // 2
        h = M.forward(ch, attn, cache.setdefault(ci, {}))
        nll, top1 = M.nll(h, ch, first, ctx - 1)
        m = ctx - 1 - first
        tot += nll * m
        acc += top1 * m
        cnt += m
    return tot / cnt, acc / cnt


def table(rows, plot=None):
    """Markdown table per (model, text, ctx): PPL and change vs exact per
    method and budget; optional PNG plot of the change vs budget."""
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], r["text"], r["ctx"], r["chunks"]), []).append(r)
    lines = []
    for key, rs in groups.items():
        ex = [r for r in rs if r["method"] == "exact"]
        base = ex[-1]["ppl"] if ex else None
        lines.append(f"\n{key[0]}, {key[1]}, ctx {key[2]} x {key[3]} chunk(s); exact PPL "
                     + (f"{base:.4f}" if base else "not run"))
        budgets = sorted({r["budget"] for r in rs if r["budget"]})
        methods = sorted({r["method"].split("@")[0] for r in rs if r["budget"]},
                         key=lambda m: (m != "ours", m))
        lines.append("| method | " + " | ".join(human(b) for b in budgets) + " |")
        lines.append("|---|" + "---|" * len(budgets))
        best = {}
        for m in methods:
            cells = []
            for b in budgets:
                hit = [r for r in rs if r["method"] == f"{m}@{b}" or
                       (r["method"].split("@")[0] == m and r["budget"] == b)]
                if not hit:
                    cells.append("")
                    continue
                p = hit[-1]["ppl"]
                if m != "ours" and not m.startswith("paged:"):
                    if b not in best or p < best[b][0]:
                        best[b] = (p, m)
                cells.append(f"{p:.3f}" + (f" ({100 * (p / base - 1):+.1f}%)" if base else ""))
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        if base and best:
            ours = {r["budget"]: r["ppl"] for r in rs if r["method"].split("@")[0] == "ours"}
            lines.append("| best peer | " + " | ".join(
                f"{best[b][1]}" if b in best else "" for b in budgets) + " |")
            lines.append("| ours' increase / best peer's | " + " | ".join(
                f"{(ours[b] / base - 1) / (best[b][0] / base - 1):.2f}"
                if b in best and b in ours and best[b][0] > base else "" for b in budgets) + " |")
    print("\n".join(lines))
    if plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.5), squeeze=False)
        for ax, (key, rs) in zip(axes[0], groups.items()):
            ex = [r for r in rs if r["method"] == "exact"]
            base = ex[-1]["ppl"] if ex else None
            if not base:
                continue
            ms = {r["method"].split("@")[0] for r in rs if r["budget"]}
            shown = {m for m in ms if not m.startswith("paged:")}  # research variants: table only
            if "ours" not in shown and "paged:vg=64" in ms:
                shown.add("paged:vg=64")  # a model only run with the earlier preset
            for m in sorted(shown):
                pts = sorted((r["budget"], 100 * (r["ppl"] / base - 1)) for r in rs
                             if r["budget"] and r["method"].split("@")[0] == m)
                xs, ys = zip(*pts)
                ax.plot([x / 1024 for x in xs], ys, "o-" if m == "ours" else ".--", label=m,
                        lw=2.5 if m == "ours" else 1)
            ax.set_xscale("log", base=2)
            ax.set_yscale("symlog", linthresh=1)
            ys_all = [100 * (r["ppl"] / base - 1) for r in rs if r["budget"]]
            ax.set_ylim(min(0.0, min(ys_all)) - 0.05, max(ys_all) * 1.3)
            ticks = [t for t in (-1, 0, 0.5, 1, 2, 5, 10, 20, 50, 100, 200)
                     if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks])
            ax.set_xlabel("bytes per kv head (KiB)")
            ax.set_ylabel("perplexity change vs exact (%)")
            ax.set_title(f"{key[0]}, {key[1]}, {key[2]} tokens")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot, dpi=110)
        print(f"wrote {plot}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", choices=["smollm2", "gemma3"])
    ap.add_argument("--gguf", help="model file (default: from the installed PyPI package)")
    ap.add_argument("--text", help="UTF-8 text file(s), comma-separated, joined with blank lines")
    ap.add_argument("--ctx", type=int, default=8192, help="tokens per chunk (llama-perplexity -c)")
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--lib", help="libattnsketch.so (default target/release)")
    ap.add_argument("--llama-numerics", action="store_true",
                    help="Gemma 3: round like llama.cpp's CPU backend (8-bit matmul inputs, binary16 q/k/v)")
    ap.add_argument("--out", default="e2e-results.jsonl")
    ap.add_argument("--table", help="print the table of results file(s) (comma-separated) instead of running")
    ap.add_argument("--plot", help="with --table: write a PNG plot")
    ap.add_argument("methods", nargs="*")
    a = ap.parse_args()
    if a.table:
        rows = []
        for path in a.table.split(","):
            with open(path) as f:
                rows += [json.loads(line) for line in f if line.strip()]
        table(rows, a.plot)
        return
    if not a.text or not a.methods:
        ap.error("--text and at least one method are needed")
    lib = None
    if any(m.startswith(("ours", "paged")) for m in a.methods):
        from aslib import AsLib
        lib = AsLib(a.lib)
    methods = [Method(m, lib) for m in a.methods]
    M = load_model(a.model, a.gguf, a.llama_numerics)
    paths = [p for p in a.text.split(",") if p]
    ids = M.tokenize(read_text(paths))
    chunks = chunks_of(M, ids, a.ctx, a.chunks)
    cache = {}
    tname = ",".join(os.path.basename(p) for p in paths)
    for meth in methods:
        t0 = time.time()
        nll, top1 = run(M, chunks, meth, cache)
        row = dict(model=a.model, text=tname, ctx=a.ctx, chunks=a.chunks, method=meth.spec,
                   budget=meth.budget, ppl=math.exp(nll), nll=nll, top1=top1,
                   state_bytes_per_kv_head=meth.state_bytes, seconds=round(time.time() - t0, 1),
                   date=time.strftime("%Y-%m-%d"), lib=getattr(lib, "version", None))
        if getattr(meth, "config", None):
            row["config"] = meth.config
        print(f"{meth.spec:22s} ppl {row['ppl']:9.4f}  nll {nll:.5f}  top1 {top1:.4f}  "
              f"state/kv head {meth.state_bytes / 1024:8.1f} KiB  {row['seconds']:6.1f} s", flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
