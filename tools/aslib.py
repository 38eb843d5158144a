"""libattnsketch through ctypes: configs and banks for the Python tools.

    lib = AsLib("target/release/libattnsketch.so")
    cfg = lib.config(head_dim=64, budget=262144)          # as_config_for_budget
    cfg = lib.config(head_dim=64, sink_tokens=4, window_tokens=8192, heavy_tokens=0,
                     key_format=0, value_format=0)          # explicit
    out, state_bytes = lib.bank_layer(cfg, q, k, v)        # one as_bank, all tokens by
                                                           # as_bank_push_tokens
"""
import ctypes
import os

import numpy as np


class Config(ctypes.Structure):
    """`as_config` as include/attnsketch.h lays it out."""
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("head_dim", ctypes.c_uint32),
        ("value_dim", ctypes.c_uint32),
        ("degree", ctypes.c_uint32),
        ("scale", ctypes.c_float),
        ("mode", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        ("recovery_k", ctypes.c_uint32),
        ("recovery_eps", ctypes.c_float),
        ("retrieval_k", ctypes.c_uint32),
        ("sink_tokens", ctypes.c_uint32),
        ("window_tokens", ctypes.c_uint32),
        ("heavy_tokens", ctypes.c_uint32),
        ("tail_groups", ctypes.c_uint32),
        ("max_tokens", ctypes.c_uint64),
        ("value_format", ctypes.c_uint32),
        ("reserved0", ctypes.c_uint32),
        ("key_format", ctypes.c_uint32),
    ]

    def fields(self):
        return {n: getattr(self, n) for n, _ in self._fields_}


def default_lib():
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "..", "target", "release", "libattnsketch.so")


class AsLib:
    def __init__(self, path=None):
        path = path or default_lib()
        if not os.path.exists(path):
            raise SystemExit(f"{path} not found: run `cargo build --release` first (or pass --lib)")
        so = ctypes.CDLL(path)
        P = ctypes.c_void_p
        so.as_config_init.argtypes = [ctypes.POINTER(Config), ctypes.c_uint32]
        so.as_config_for_budget.argtypes = [ctypes.POINTER(Config), ctypes.c_size_t]
        so.as_bank_create.argtypes = [ctypes.POINTER(Config), ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(P)]
        so.as_bank_push_tokens.argtypes = [P, ctypes.c_size_t, P, P, P, P]
        so.as_bank_free.argtypes = [P]
        so.as_bank_state_bytes.argtypes = [P]
        so.as_bank_state_bytes.restype = ctypes.c_size_t
        so.as_status_string.argtypes = [ctypes.c_int]
        so.as_status_string.restype = ctypes.c_char_p
        so.as_version_string.restype = ctypes.c_char_p
        so.as_create.argtypes = [ctypes.POINTER(Config), ctypes.POINTER(P)]
        so.as_free.argtypes = [P]
        so.as_state_bytes.argtypes = [P]
        so.as_state_bytes.restype = ctypes.c_size_t
        self.so = so
        self.version = so.as_version_string().decode()

    def check(self, st, what):
        if st != 0:
            raise RuntimeError(f"{what}: {self.so.as_status_string(st).decode()}")

    def config(self, head_dim, scale=None, budget=None, **fields):
        """`as_config_init(head_dim)`, then `as_config_for_budget(budget)` when
        given, then the explicit fields."""
        cfg = Config()
        cfg.struct_size = ctypes.sizeof(Config)
        self.check(self.so.as_config_init(ctypes.byref(cfg), head_dim), "as_config_init")
        if scale is not None:
            cfg.scale = scale
        if budget is not None:
            self.check(self.so.as_config_for_budget(ctypes.byref(cfg), budget), f"as_config_for_budget({budget})")
        for k, v in fields.items():
            setattr(cfg, k, v)
        return cfg

    def state_bytes(self, cfg):
        """`as_state_bytes` of a fresh handle of `cfg` (None when refused)."""
        h = ctypes.c_void_p()
        if self.so.as_create(ctypes.byref(cfg), ctypes.byref(h)) != 0:
            return None
        try:
            return self.so.as_state_bytes(h)
        finally:
            self.so.as_free(h)

    def paged_config(self, head_dim, budget, heavy_frac=0.1, groups=8, sinks=4, scale=None):
        """Research: the paged layout (4-bit pages + int8-key heavy slots) at
        `budget` bytes, heavy slots taking ~heavy_frac of it, the largest
        whole-page window that fits."""
        cfg = self.config(head_dim, scale=scale, sink_tokens=sinks, tail_groups=groups,
                          key_format=2, value_format=3)
        vg = 32  # sketch::paged::quant::value_group
        per_heavy = head_dim + 4 + head_dim // 2 + 4 * (head_dim // vg) + 4 + 8 + 4
        cfg.heavy_tokens = int(heavy_frac * budget / per_heavy)
        lo, hi = 0, budget // 32
        while lo < hi:
            mid = (lo + hi + 1) // 2
            cfg.window_tokens = mid * 32
            b = self.state_bytes(cfg)
            if b is not None and b <= budget:
                lo = mid
            else:
                hi = mid - 1
        cfg.window_tokens = lo * 32
        return cfg

    def bank_layer(self, cfg, q, k, v, scale=None):
        """One layer through a fresh bank: q (n, nq, d), k and v (n, nkv, d)
        -> (outputs (n, nq, dv), as_bank_state_bytes)."""
        n, nq, d = q.shape
        nkv = k.shape[1]
        if scale is not None:
            cfg.scale = scale
        b = ctypes.c_void_p()
        self.check(self.so.as_bank_create(ctypes.byref(cfg), nq, nkv, ctypes.byref(b)), "as_bank_create")
        try:
            q = np.ascontiguousarray(q, np.float32)
            k = np.ascontiguousarray(k, np.float32)
            v = np.ascontiguousarray(v, np.float32)
            out = np.empty((n, nq, v.shape[2]), np.float32)
            st = self.so.as_bank_push_tokens(b, n, q.ctypes.data, k.ctypes.data, v.ctypes.data, out.ctypes.data)
            self.check(st, "as_bank_push_tokens")
            return out, self.so.as_bank_state_bytes(b)
        finally:
            self.so.as_bank_free(b)
