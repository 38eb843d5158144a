# numpy probe (not part of the suite): output error floors of rounded token
# formats on real heads. Exact causal attention over 8192 tokens with the
# rounded keys/values, the 4 sinks and the 64 newest tokens exact, rows
# n/2..n step 64, relative Frobenius error against unrounded attention.
#   formats:  int16 keys + binary16 / int8 / int4 values, int8 keys + binary16 values
#   prescale: int8 values row-scaled vs divided first by the channel rms of
#             the first 256 tokens (the idea for outlier value channels)
# Usage: python3 rounding_floor.py formats|prescale DATA_DIR...
# (needs numpy: "$(bash tools/venv.sh)" scripts/probes/rounding_floor.py formats
#  ~/.cache/attnsketch/data/given ...; sets from scripts/data.sh; docs/hybrid.md).
import glob, os, sys
import numpy as np


def load(d, h, n=8192, dim=64):
    f = lambda x: np.fromfile(f"{d}/{h}_{x}.f32", dtype=np.float32).reshape(n, dim)
    return f('q'), f('k'), f('v')


def rq(x, bits, ch=1.0):
    """Row-scaled symmetric rounding to `bits` (after dividing by `ch`)."""
    u = x / ch
    qm = 2 ** (bits - 1) - 1
    s = np.abs(u).max(axis=1, keepdims=True) / qm
    s[s == 0] = 1
    return (np.round(u / s) * s * ch).astype(np.float32)


def f16(x):
    return x.astype(np.float16).astype(np.float32)


def softmax_out(qj, kx, vx, scale):
    s = scale * (kx @ qj)
    w = np.exp(s - s.max())
    return (w / w.sum()) @ vx


def err(q, k, v, kq, vq, rows, exact_new=64, sinks=4, scale=0.125):
    num = den = 0.0
    for j in rows:
        kk, vv = kq[:j + 1].copy(), vq[:j + 1].copy()
        lo = max(0, j + 1 - exact_new)
        for a, b in ((kk, k), (vv, v)):
            a[:sinks] = b[:sinks]
            a[lo:j + 1] = b[lo:j + 1]
        o = softmax_out(q[j], kk, vv, scale)
        o0 = softmax_out(q[j], k[:j + 1], v[:j + 1], scale)
        num += ((o - o0) ** 2).sum()
        den += (o0 ** 2).sum()
    return np.sqrt(num / den)


mode, dirs = sys.argv[1], sys.argv[2:]
rows = list(range(4096, 8192, 64))
for d in dirs:
    for jf in sorted(glob.glob(d + "/L*H*.json")):
        h = os.path.basename(jf)[:-5]
        q, k, v = load(d, h)
        if mode == "formats":
            k16 = rq(k, 16)
            r = [err(q, k, v, k16, f16(v), rows), err(q, k, v, k16, rq(v, 8), rows),
                 err(q, k, v, k16, rq(v, 4), rows), err(q, k, v, rq(k, 8), f16(v), rows)]
            print(h, "i16k+f16v i16k+i8v i16k+i4v i8k+f16v:", " ".join(f"{x:.2e}" for x in r), flush=True)
        else:
            ch = np.sqrt((v[:256] ** 2).mean(0)) + 1e-6
            print(h, f"int8 values: row {err(q, k, v, k, rq(v, 8), rows):.2e}"
                     f"  channel-prescaled {err(q, k, v, k, rq(v, 8, ch), rows):.2e}", flush=True)
