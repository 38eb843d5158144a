"""Shared helpers: loading heads, query rows, metric, byte budgets.

Conventions used everywhere in /work/research5:
  * budgets are bytes per head; a token kept exactly in f32 costs (d+dv)*4 bytes.
  * query rows: every 16th row of the second half of the stream,
    rows = n//2, n//2+16, ..., n-16  (256 rows for n=8192, 128 for n=4096).
  * metric: relative Frobenius error ||O_hat - O||_F / ||O||_F over those rows,
    O the stored exact causal output `_o` (f64-computed, stored f32).
"""
import json
import numpy as np

BUDGETS = [256 * 1024, 512 * 1024, 1024 * 1024, 2048 * 1024]
BUDGET_NAMES = ['256K', '512K', '1M', '2M']


def load(D, name):
    h = json.load(open(f'{D}/{name}.json'))
    n, d = h['n'], h['d']
    Q, K, V, O = (np.fromfile(f'{D}/' + h['files'][x], '<f4').reshape(n, d) for x in 'qkvo')
    return Q, K, V, O, float(h['scale'])


def query_rows(n, step=16):
    return np.arange(n // 2, n, step)


def rel(A, B):
    A = np.asarray(A, np.float64); B = np.asarray(B, np.float64)
    return float(np.linalg.norm(A - B) / np.linalg.norm(B))
