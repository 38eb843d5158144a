#!/usr/bin/env python3
"""Tables (markdown) and plots (PNG) from bench.sh's quality.tsv and speed.tsv.

Usage: plot.py RESULTS_DIR   -> RESULTS_DIR/tables.md, quality-<model>.png, speed-<model>.png
The newest line of each (model, text, context, config) or (model, config, test, depth,
threads) is used. Perplexity change is ppl / ppl(exact) - 1 on the same text and context.
"""
import csv
import os
import sys
from collections import OrderedDict


def read(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def newest(rows, key):
    out = OrderedDict()
    for r in rows:
        out[tuple(r[k] for k in key)] = r
    return list(out.values())


def kib(b):
    b = float(b)
    return f"{b / 1024:.0f} KiB" if b < 1024 * 1024 else f"{b / 1048576:.2f} MiB"


def budget_of(cfg):
    v = cfg.split(":")[1]
    mul = {"K": 1024, "M": 1048576}.get(v[-1], 1)
    return float(v.rstrip("KM")) * mul


def quality(rows, out, md):
    rows = newest(rows, ("model", "text", "ctx", "config"))
    groups = OrderedDict()
    for r in rows:
        groups.setdefault((r["model"], r["ctx"]), OrderedDict()).setdefault(r["text"], []).append(r)
    for (model, ctx), texts in groups.items():
        md.append(f"\n### Quality: {model}, context {ctx}\n")
        md.append("| config | bytes per kv head | attention memory | " +
                  " | ".join(f"PPL {t} | Δ {t}" for t in texts) + " |")
        md.append("|---|---|---|" + "---|---|" * len(texts))
        configs = OrderedDict()
        for t, rs in texts.items():
            for r in rs:
                configs.setdefault(r["config"], {})[t] = r
        # earlier presets' rows (attnsketch-*) after the current ones
        def order(kv):
            name = kv[0].split(":")[0]
            rank = {"exact": 0, "q8_0": 1, "q4_0": 2, "attnsketch": 3, "sllm": 4}.get(name, 5)
            return (rank, name, float(next(iter(kv[1].values()))["bytes_per_kv_head"]))
        configs = OrderedDict(sorted(configs.items(), key=order))
        exact = {t: next((float(r["ppl"]) for r in rs if r["config"] == "exact"), None) for t, rs in texts.items()}
        for cfg, by_text in configs.items():
            any_r = next(iter(by_text.values()))
            cells = []
            for t in texts:
                r = by_text.get(t)
                if r is None:
                    cells += ["", ""]
                    continue
                p = float(r["ppl"])
                d = f"{100 * (p / exact[t] - 1):+.2f}%" if exact[t] else ""
                cells += [f"{p:.4f}", d]
            md.append(f"| {cfg} | {kib(any_r['bytes_per_kv_head'])} | {kib(any_r['attn_bytes'])} | " + " | ".join(cells) + " |")
        loads = sorted({r["load"] for rs in texts.values() for r in rs})
        dates = sorted({r["date"][:10] for rs in texts.values() for r in rs})
        md.append(f"\n({', '.join(dates)}; {texts[next(iter(texts))][0]['machine']}; chunks {texts[next(iter(texts))][0]['chunks']}; "
                  "exact = f16 cache, flash attention on; q8_0/q4_0 = llama.cpp's quantized caches (with its Hadamard "
                  "rotation), flash attention on; attnsketch:B = as_config_for_budget(B) per kv head (the paged preset: 4 sinks, "
                  "the longest window of 4-bit pages with 32-channel value groups and fine planes, 1 tail group, no heavy "
                  "slots; commit after 928263d; at 256K-1M the same config as sllm:B, whose runs they are); "
                  "sllm:B = the library as StreamingLLM at the same bytes: 4 sinks + recent window of whole pages, the "
                  "preset's 4-bit formats, no heavy slots, 1 tail group; earlier presets: attnsketch-h = 10% int8-key heavy "
                  "slots when the window would hold 2048 tokens, 1 tail group (928263d); attnsketch-g8 = heavy slots at "
                  "every budget, 8 tail groups (548e974); attnsketch-vg64 = 64-channel value groups, no fine planes "
                  "(2dd02b3))\n")
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            continue
        fig, axes = plt.subplots(1, len(texts), figsize=(5.5 * len(texts), 4), squeeze=False)
        for ax, (t, rs) in zip(axes[0], texts.items()):
            if not exact[t]:
                continue
            for kind, style, label in (("attnsketch", "o-", "attnsketch"), ("sllm", "s--", "library as StreamingLLM"),
                                       ("attnsketch-vg64", "x:", "attnsketch, older preset (vg64)")):
                pts = sorted((float(r["bytes_per_kv_head"]) / 1024, 100 * (float(r["ppl"]) / exact[t] - 1))
                             for r in rs if r["config"].startswith(kind + ":"))
                if pts:
                    ax.plot(*zip(*pts), style, label=label, **({"color": "gray"} if "vg64" in kind else {}))
            for r in rs:
                if r["config"] in ("q8_0", "q4_0", "exact"):
                    x, y = float(r["bytes_per_kv_head"]) / 1024, 100 * (float(r["ppl"]) / exact[t] - 1)
                    ax.plot([x], [y], "k^" if r["config"] != "exact" else "k*", ms=8)
                    ax.annotate(r["config"] + (" (f16)" if r["config"] == "exact" else ""), (x, y),
                                textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("symlog", linthresh=1)
            ax.axhline(0, color="gray", lw=0.5)
            ax.set_xlabel("attention memory per kv head (KiB)")
            ax.set_ylabel("perplexity change vs exact (%)")
            ax.set_title(f"{model}, {t}, context {ctx}")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"quality-{model}-{ctx}.png"), dpi=110)
        plt.close(fig)


def speed(rows, out, md):
    rows = newest(rows, ("model", "config", "test", "depth", "threads"))
    models = OrderedDict()
    for r in rows:
        models.setdefault(r["model"], []).append(r)
    for model, rs in models.items():
        configs = list(OrderedDict.fromkeys(r["config"] for r in rs))
        md.append(f"\n### Speed: {model} (tokens/s; ratio to exact at the same depth and threads)\n")
        md.append("| test | depth | threads | " + " | ".join(configs) + " | load |")
        md.append("|---|---|---|" + "---|" * len(configs) + "---|")
        keys = sorted({(r["test"], int(r["depth"]), int(r["threads"])) for r in rs},
                      key=lambda k: (not k[0].startswith("tg"), k[2], len(k[0]), k[0], k[1]))
        by = {(r["config"], r["test"], int(r["depth"]), int(r["threads"])): r for r in rs}
        for k in keys:
            ex = by.get(("exact",) + k)
            cells, loads = [], []
            for c in configs:
                r = by.get((c,) + k)
                if r is None:
                    cells.append("")
                    continue
                v = float(r["tokens_per_s"])
                loads += [r["load_before"], r["load_after"]]
                ratio = f" ({v / float(ex['tokens_per_s']):.2f}x)" if ex and c != "exact" else ""
                cells.append(f"{v:.1f} ± {float(r['stddev']):.1f}{ratio}")
            test = {"tg": "tg32", "pp": "pp512"}.get(k[0], k[0])  # older rows: tg / pp
            md.append(f"| {test} | {k[1]} | {k[2]} | " + " | ".join(cells) + f" | {min(loads)}-{max(loads)} |")
        md.append(f"\n({rs[0]['date'][:10]}; {rs[0]['machine']}; llama-bench; load = 1-minute load average "
                  "before/after each run on this shared machine)\n")
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            continue
        threads = sorted({int(r["threads"]) for r in rs if r["test"].startswith("tg")})
        fig, axes = plt.subplots(1, max(1, len(threads)), figsize=(5.5 * max(1, len(threads)), 4), squeeze=False)
        for ax, th in zip(axes[0], threads):
            for c in configs:
                pts = sorted((int(r["depth"]), float(r["tokens_per_s"])) for r in rs
                             if r["config"] == c and r["test"].startswith("tg") and int(r["threads"]) == th)
                if pts:
                    ax.plot(*zip(*pts), "o-", label=c)
            ax.set_xlabel("depth (tokens in the context)")
            ax.set_ylabel("decode tokens/s")
            ax.set_title(f"{model}, {th} thread{'s' if th > 1 else ''}")
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"speed-{model}.png"), dpi=110)
        plt.close(fig)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    md = ["# llama.cpp integration: benchmark tables (generated by bench/plot.py)"]
    quality(read(os.path.join(out, "quality.tsv")), out, md)
    speed(read(os.path.join(out, "speed.tsv")), out, md)
    with open(os.path.join(out, "tables.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
