#!/usr/bin/env python3
"""README rows from an eval table (docs/eval*.txt, written by
`cargo run --release --example eval`).

    python3 scripts/eval-tables.py full docs/eval.txt           # one row per head x budget, all peers
    python3 scripts/eval-tables.py compact docs/eval-extra.txt  # one row per head: ours vs best peer (ratio)

Prints the markdown rows, a blank line, then the eval's summary lines
(per-budget medians and the all-cells geometric mean).
"""
import re
import sys


def parse(path):
    """(head, budget KiB, [StreamingLLM, H2O, Taylor-2, Performer, ours, best peer], ratio) rows and summary lines."""
    rows, summary = [], []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) >= 11 and re.match(r"L\d+H\d+", p[0]) and p[2] == "KiB":
                rows.append((p[0], int(p[1]), [float(x) for x in p[3:9]], float(p[-1])))
            s = line.strip()
            if re.match(r"\d+ KiB: median", s) or s.startswith("all cells"):
                summary.append(s)
    return rows, summary


def full(path):
    rows, summary = parse(path)
    out = [
        f"| {h} | {b} KiB | {v[0]:.4f} | {v[1]:.4f} | {v[2]:.4f} | {v[3]:.4f} | **{v[4]:.4f}** | {r:.2f} |"
        for h, b, v, r in rows
    ]
    return out, summary


def compact(path):
    rows, summary = parse(path)
    heads = {}
    for h, _, v, r in rows:
        heads.setdefault(h, []).append(f"{v[4]:.4f} vs {v[5]:.4f} ({r:.2f})")
    return [f"| {h} | " + " | ".join(c) + " |" for h, c in heads.items()], summary


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("full", "compact"):
        sys.exit(__doc__)
    rows, summary = (full if sys.argv[1] == "full" else compact)(sys.argv[2])
    print("\n".join(rows))
    print()
    print("\n".join(summary))
