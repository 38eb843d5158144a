// A decoder loop as an inference engine writes it, with attnsketch banks in
// place of the KV cache (C++17, include/attnsketch.hpp).
//
// Model: L attention layers, each with H query heads and G key/value heads of
// dimension d (hidden size D = H d), random weights from a fixed seed:
//   x_t = E[token_t]                                   (embedding, D)
//   per layer: u = rmsnorm(x); q = Wq u, k = Wk u, v = Wv u;
//              rotary positions on q and k (pairs (i, i + d/2), base theta);
//              o = attention(q; k_0..t, v_0..t)         (GQA: head h reads kv h / (H/G));
//              x += Wo o
// No MLPs (they do not touch the cache) and no sampling: the token ids come
// from the seed, so both runs see the same stream ("teacher forcing").
//
// Runs the model twice:
//   sketch: one attnsketch::Bank per layer; the prompt of P tokens goes in with
//           one as_bank_push_tokens per layer, then N decode steps call
//           as_bank_push_token once per layer;
//   exact:  a KV cache (f32, per kv head) with online-softmax attention, same
//           inputs and the same prefill / decode structure.
// Reports tokens/s of both (whole engine and attention alone), the bytes of
// both after P + N tokens, the relative error of the sketch's last-layer
// attention outputs against the exact ones on identical inputs (the exact
// run's last-layer q, k, v replayed into a fresh bank), and the drift of the
// final hidden state between the two runs.
//
//   decoder_loop [--layers L] [--q-heads H] [--kv-heads G] [--dim d]
//                [--prompt P] [--decode N] [--budget BYTES[K|M]] [--degree g]
//                [--q-gain a] [--seed s] [--memory-table]
//
// --budget B: hybrid heads from as_config_for_budget (exact sinks, window and
// heavy hitters plus a moment tail, at most B bytes per kv head); without it a
// plain degree-g polynomial sketch (inaccurate on real, sharp heads: README).
// --memory-table: prints bank vs KV-cache bytes at n = 8K / 128K / 1M tokens
// for the given shape (the README table) and exits.
//
// c-tests-args: --layers 2 --q-heads 4 --kv-heads 2 --dim 16 --prompt 150 --decode 30 --budget 16K
#include "attnsketch.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Options {
    std::uint32_t layers = 4, q_heads = 9, kv_heads = 3, dim = 64, prompt = 512, decode = 256, degree = 2;
    std::size_t budget = 0; // bytes per kv head; 0: plain polynomial sketch
    float q_gain = 2.0f;    // scales Wq: larger gives sharper attention (1: scores s q.k ~ N(0, 1))
    std::uint64_t seed = 1;
    bool memory_table = false;
};

// SplitMix64 with uniform and normal draws.
struct Rng {
    std::uint64_t s;
    std::uint64_t next() {
        std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }
    float normal() { // Box-Muller
        const double u = 1.0 - uniform(), v = uniform();
        return float(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
    }
};

// Weights stored input-major (W^T, in x out) so y = W x is a sum of axpys
// over contiguous rows: vectorizes without reassociating a reduction.
struct Linear {
    std::uint32_t in = 0, out = 0;
    std::vector<float> wt;
    Linear(std::uint32_t in_, std::uint32_t out_, float gain, Rng &rng) : in(in_), out(out_), wt(std::size_t(in_) * out_) {
        const float sd = gain / std::sqrt(float(in_));
        for (auto &w : wt) w = sd * rng.normal();
    }
    void apply(const float *x, float *y) const {
        std::fill(y, y + out, 0.0f);
        for (std::uint32_t c = 0; c < in; c++) {
            const float xc = x[c];
            const float *w = wt.data() + std::size_t(c) * out;
            for (std::uint32_t r = 0; r < out; r++) y[r] += xc * w[r];
        }
    }
};

struct Layer {
    Linear wq, wk, wv, wo;
    Layer(const Options &o, Rng &rng)
        : wq(o.q_heads * o.dim, o.q_heads * o.dim, o.q_gain, rng), wk(o.q_heads * o.dim, o.kv_heads * o.dim, 1.0f, rng),
          wv(o.q_heads * o.dim, o.kv_heads * o.dim, 1.0f, rng), wo(o.q_heads * o.dim, o.q_heads * o.dim, 1.0f, rng) {}
};

struct Model {
    Options o;
    std::uint32_t hidden, vocab = 1024;
    std::vector<float> embed;
    std::vector<Layer> layers;
    std::vector<float> inv_freq; // theta^(-2i/d), i < d/2
    explicit Model(const Options &opt) : o(opt), hidden(opt.q_heads * opt.dim) {
        Rng rng{opt.seed};
        embed.resize(std::size_t(vocab) * hidden);
        for (auto &e : embed) e = rng.normal();
        for (std::uint32_t l = 0; l < o.layers; l++) layers.emplace_back(o, rng);
        for (std::uint32_t i = 0; i < o.dim / 2; i++)
            inv_freq.push_back(float(std::pow(10000.0, -2.0 * i / double(o.dim))));
    }
    static void rmsnorm(const float *x, float *y, std::uint32_t n) {
        double ss = 0;
        for (std::uint32_t i = 0; i < n; i++) ss += double(x[i]) * x[i];
        const float r = float(1.0 / std::sqrt(ss / n + 1e-6));
        for (std::uint32_t i = 0; i < n; i++) y[i] = x[i] * r;
    }
    // Rotary positions on `heads` rows of d: pairs (i, i + d/2) turn by pos * inv_freq[i].
    void rope(float *x, std::uint32_t heads, std::uint64_t pos) const {
        const std::uint32_t d = o.dim, half = d / 2;
        for (std::uint32_t i = 0; i < half; i++) {
            const double a = double(pos) * inv_freq[i];
            const float c = float(std::cos(a)), s = float(std::sin(a));
            for (std::uint32_t h = 0; h < heads; h++) {
                float *r = x + std::size_t(h) * d;
                const float x0 = r[i], x1 = r[i + half];
                r[i] = x0 * c - x1 * s;
                r[i + half] = x0 * s + x1 * c;
            }
        }
    }
    // q, k, v of one token at position pos from its hidden state x.
    void project(const Layer &ly, const float *x, std::uint64_t pos, float *q, float *k, float *v,
                 std::vector<float> &tmp) const {
        rmsnorm(x, tmp.data(), hidden);
        ly.wq.apply(tmp.data(), q);
        ly.wk.apply(tmp.data(), k);
        ly.wv.apply(tmp.data(), v);
        rope(q, o.q_heads, pos);
        rope(k, o.kv_heads, pos);
    }
};

// The engine's view of attention: a prompt of n tokens, then one token at a time.
struct Attention {
    virtual ~Attention() = default;
    virtual void prefill(std::uint32_t layer, const std::vector<float> &q, const std::vector<float> &k,
                         const std::vector<float> &v, std::vector<float> &out) = 0;
    virtual void step(std::uint32_t layer, const std::vector<float> &q, const std::vector<float> &k,
                      const std::vector<float> &v, std::vector<float> &out) = 0;
    virtual std::size_t bytes() const = 0;
};

struct SketchAttention final : Attention {
    std::vector<attnsketch::Bank> banks;
    SketchAttention(const as_config &cfg, const Options &o) {
        for (std::uint32_t l = 0; l < o.layers; l++) banks.emplace_back(cfg, o.q_heads, o.kv_heads);
    }
    void prefill(std::uint32_t l, const std::vector<float> &q, const std::vector<float> &k, const std::vector<float> &v,
                 std::vector<float> &out) override {
        banks[l].push_tokens(q, k, v, out); // one as_bank_push_tokens per layer
    }
    void step(std::uint32_t l, const std::vector<float> &q, const std::vector<float> &k, const std::vector<float> &v,
              std::vector<float> &out) override {
        banks[l].push_token(q, k, v, out);
    }
    std::size_t bytes() const override {
        std::size_t b = 0;
        for (const auto &bank : banks) b += bank.state_bytes();
        return b;
    }
};

// Exact attention over an f32 KV cache. Keys are stored transposed per kv
// head (d x capacity) so a block of scores is d axpys over contiguous
// tokens; values token-major. Softmax is online, one rescale per block of 64.
struct ExactAttention final : Attention {
    static constexpr std::uint32_t block = 64;
    Options o;
    std::size_t cap;
    float scale;
    std::vector<std::size_t> len;               // tokens per layer
    std::vector<std::vector<float>> kt, vals;   // [layer] -> [kv][d][cap], [kv][cap][d]
    std::vector<float> scores, acc;
    float max_score = -INFINITY; // largest s q.k seen: how sharp the heads are
    ExactAttention(const Options &opt, std::size_t capacity)
        : o(opt), cap(capacity), scale(1.0f / std::sqrt(float(opt.dim))), len(opt.layers, 0), kt(opt.layers),
          vals(opt.layers), scores(block), acc(opt.dim) {
        for (std::uint32_t l = 0; l < o.layers; l++) {
            kt[l].assign(std::size_t(o.kv_heads) * o.dim * cap, 0.0f);
            vals[l].assign(std::size_t(o.kv_heads) * cap * o.dim, 0.0f);
        }
    }
    void append(std::uint32_t l, const float *k, const float *v) {
        const std::size_t j = len[l]++, d = o.dim;
        if (j >= cap) throw std::runtime_error("KV cache full");
        for (std::uint32_t g = 0; g < o.kv_heads; g++) {
            float *kg = kt[l].data() + g * d * cap;
            for (std::size_t c = 0; c < d; c++) kg[c * cap + j] = k[g * d + c];
            std::memcpy(vals[l].data() + (g * cap + j) * d, v + g * d, d * sizeof(float));
        }
    }
    // out (H x d) for the query rows q (H x d) over the layer's cached tokens.
    void attend(std::uint32_t l, const float *q, float *out) {
        const std::size_t n = len[l], d = o.dim, group = o.q_heads / o.kv_heads;
        for (std::uint32_t h = 0; h < o.q_heads; h++) {
            const std::size_t g = h / group;
            const float *kg = kt[l].data() + g * d * cap, *vg = vals[l].data() + g * cap * d, *qh = q + h * d;
            float m = -INFINITY, den = 0.0f;
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (std::size_t j0 = 0; j0 < n; j0 += block) {
                const std::size_t nb = std::min<std::size_t>(block, n - j0);
                std::fill(scores.begin(), scores.begin() + nb, 0.0f);
                for (std::size_t c = 0; c < d; c++) {
                    const float qc = qh[c] * scale;
                    const float *kc = kg + c * cap + j0;
                    for (std::size_t i = 0; i < nb; i++) scores[i] += qc * kc[i];
                }
                const float mb = *std::max_element(scores.begin(), scores.begin() + nb);
                max_score = std::max(max_score, mb);
                if (mb > m) { // rescale what was summed under the old maximum
                    const float r = std::exp(m - mb);
                    den *= r;
                    for (auto &a : acc) a *= r;
                    m = mb;
                }
                for (std::size_t i = 0; i < nb; i++) {
                    const float p = std::exp(scores[i] - m);
                    den += p;
                    const float *vr = vg + (j0 + i) * d;
                    for (std::size_t c = 0; c < d; c++) acc[c] += p * vr[c];
                }
            }
            for (std::size_t c = 0; c < d; c++) out[h * d + c] = acc[c] / den;
        }
    }
    void prefill(std::uint32_t l, const std::vector<float> &q, const std::vector<float> &k, const std::vector<float> &v,
                 std::vector<float> &out) override {
        const std::size_t rq = std::size_t(o.q_heads) * o.dim, rk = std::size_t(o.kv_heads) * o.dim;
        const std::size_t n = q.size() / rq;
        for (std::size_t t = 0; t < n; t++) { // causal: token t sees 0..t
            append(l, k.data() + t * rk, v.data() + t * rk);
            attend(l, q.data() + t * rq, out.data() + t * rq);
        }
    }
    void step(std::uint32_t l, const std::vector<float> &q, const std::vector<float> &k, const std::vector<float> &v,
              std::vector<float> &out) override {
        append(l, k.data(), v.data());
        attend(l, q.data(), out.data());
    }
    // Bytes of the keys and values held (what a KV cache of this length needs).
    std::size_t bytes() const override {
        std::size_t b = 0;
        for (std::size_t n : len) b += n * o.kv_heads * 2 * o.dim * sizeof(float);
        return b;
    }
};

using Clock = std::chrono::steady_clock;
double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct RunResult {
    double prefill_s = 0, decode_s = 0, attn_prefill_s = 0, attn_decode_s = 0;
    std::size_t bytes = 0;
    std::vector<float> final_hidden;
    // Last layer's q, k, v, out of every token (filled when capture is on).
    std::vector<float> q, k, v, out;
};

RunResult run(const Model &m, Attention &att, const std::vector<std::uint32_t> &tokens, bool capture) {
    const Options &o = m.o;
    const std::size_t D = m.hidden, rq = std::size_t(o.q_heads) * o.dim, rk = std::size_t(o.kv_heads) * o.dim;
    const std::size_t P = o.prompt, N = o.decode;
    RunResult r;
    std::vector<float> tmp(D), proj(D);
    auto keep = [&](const float *q, const float *k, const float *v, const float *out, std::size_t n) {
        r.q.insert(r.q.end(), q, q + n * rq);
        r.k.insert(r.k.end(), k, k + n * rk);
        r.v.insert(r.v.end(), v, v + n * rk);
        r.out.insert(r.out.end(), out, out + n * rq);
    };

    // Prefill: the whole prompt through each layer in turn.
    auto t0 = Clock::now();
    std::vector<float> x(P * D), q(P * rq), k(P * rk), v(P * rk), out(P * rq);
    for (std::size_t t = 0; t < P; t++) std::memcpy(&x[t * D], &m.embed[tokens[t] * D], D * sizeof(float));
    for (std::uint32_t l = 0; l < o.layers; l++) {
        for (std::size_t t = 0; t < P; t++)
            m.project(m.layers[l], &x[t * D], t, &q[t * rq], &k[t * rk], &v[t * rk], tmp);
        const auto a0 = Clock::now();
        att.prefill(l, q, k, v, out);
        r.attn_prefill_s += seconds(Clock::now() - a0);
        if (capture && l + 1 == o.layers) keep(q.data(), k.data(), v.data(), out.data(), P);
        for (std::size_t t = 0; t < P; t++) {
            m.layers[l].wo.apply(&out[t * rq], proj.data());
            for (std::size_t i = 0; i < D; i++) x[t * D + i] += proj[i];
        }
    }
    r.prefill_s = seconds(Clock::now() - t0);

    // Decode: one token at a time through every layer.
    t0 = Clock::now();
    std::vector<float> xt(D), q1(rq), k1(rk), v1(rk), o1(rq);
    if (N == 0) xt.assign(x.end() - std::ptrdiff_t(D), x.end());
    for (std::size_t i = 0; i < N; i++) {
        const std::size_t pos = P + i;
        std::memcpy(xt.data(), &m.embed[tokens[pos] * D], D * sizeof(float));
        for (std::uint32_t l = 0; l < o.layers; l++) {
            m.project(m.layers[l], xt.data(), pos, q1.data(), k1.data(), v1.data(), tmp);
            const auto a0 = Clock::now();
            att.step(l, q1, k1, v1, o1);
            r.attn_decode_s += seconds(Clock::now() - a0);
            if (capture && l + 1 == o.layers) keep(q1.data(), k1.data(), v1.data(), o1.data(), 1);
            m.layers[l].wo.apply(o1.data(), proj.data());
            for (std::size_t j = 0; j < D; j++) xt[j] += proj[j];
        }
    }
    r.decode_s = seconds(Clock::now() - t0);
    r.bytes = att.bytes();
    r.final_hidden = xt;
    return r;
}

double rel_err(const float *a, const float *b, std::size_t n) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < n; i++) {
        num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        den += double(b[i]) * b[i];
    }
    return std::sqrt(num / std::max(den, 1e-300));
}

std::string human(double bytes) {
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024.0 && u < 4) bytes /= 1024.0, u++;
    char buf[32];
    std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, unit[u]);
    return buf;
}

as_config head_config(const Options &o, std::size_t budget) {
    as_config cfg = attnsketch::default_config(o.dim);
    cfg.degree = o.degree;
    return budget ? attnsketch::budget_config(cfg, budget) : cfg;
}

void memory_table(const Options &o) {
    const double kv_per_token = double(o.layers) * o.kv_heads * 2 * o.dim * sizeof(float);
    struct Row {
        std::string name;
        std::size_t budget;
    };
    std::vector<Row> rows = {{"plain g=" + std::to_string(o.degree), 0},
                             {"hybrid 1 MiB/kv head", 1u << 20},
                             {"hybrid 256 KiB/kv head", 256u << 10}};
    if (o.budget && o.budget != (1u << 20) && o.budget != (256u << 10))
        rows.push_back({"hybrid " + human(double(o.budget)) + "/kv head", o.budget});
    std::printf("memory: %u layers x %u q heads x %u kv heads, d = %u (one bank measured, times %u layers)\n\n",
                o.layers, o.q_heads, o.kv_heads, o.dim, o.layers);
    std::printf("| n tokens | KV cache (f32) |");
    for (const auto &r : rows) std::printf(" %s |", r.name.c_str());
    std::printf("\n|---|---|");
    for (std::size_t i = 0; i < rows.size(); i++) std::printf("---|");
    std::printf("\n");
    std::vector<double> bank_bytes;
    for (const auto &r : rows) {
        attnsketch::Bank b(head_config(o, r.budget), o.q_heads, o.kv_heads);
        bank_bytes.push_back(double(b.state_bytes()) * o.layers);
    }
    for (const double n : {8192.0, 131072.0, 1048576.0}) {
        const double kv = n * kv_per_token;
        if (n < 1048576.0) std::printf("| %.0fK | %s |", n / 1024, human(kv).c_str());
        else std::printf("| %.0fM | %s |", n / 1048576, human(kv).c_str());
        for (const double b : bank_bytes)
            std::printf(kv / b < 100 ? " %s (%.1fx smaller) |" : " %s (%.0fx smaller) |", human(b).c_str(), kv / b);
        std::printf("\n");
    }
    std::printf("\nfixed for any n; the KV cache matches each bank at n =");
    for (std::size_t i = 0; i < rows.size(); i++)
        std::printf(" %.0f (%s)%s", bank_bytes[i] / kv_per_token, rows[i].name.c_str(), i + 1 < rows.size() ? "," : "\n");
}

std::size_t parse_bytes(const char *s) {
    char *end = nullptr;
    const double x = std::strtod(s, &end);
    double mul = 1;
    if (*end == 'K' || *end == 'k') mul = 1024;
    if (*end == 'M' || *end == 'm') mul = 1024.0 * 1024;
    if (*end == 'G' || *end == 'g') mul = 1024.0 * 1024 * 1024;
    return std::size_t(x * mul);
}

bool parse(int argc, char **argv, Options &o) {
    for (int i = 1; i < argc; i++) {
        const std::string a = argv[i];
        if (a == "--memory-table") {
            o.memory_table = true;
            continue;
        }
        if (i + 1 >= argc) return false;
        const char *val = argv[++i];
        const auto u32 = [&]() { return std::uint32_t(std::strtoul(val, nullptr, 10)); };
        if (a == "--layers") o.layers = u32();
        else if (a == "--q-heads") o.q_heads = u32();
        else if (a == "--kv-heads") o.kv_heads = u32();
        else if (a == "--dim") o.dim = u32();
        else if (a == "--prompt") o.prompt = u32();
        else if (a == "--decode") o.decode = u32();
        else if (a == "--degree") o.degree = u32();
        else if (a == "--budget") o.budget = parse_bytes(val);
        else if (a == "--q-gain") o.q_gain = std::strtof(val, nullptr);
        else if (a == "--seed") o.seed = std::strtoull(val, nullptr, 10);
        else return false;
    }
    return o.layers > 0 && o.kv_heads > 0 && o.q_heads % o.kv_heads == 0 && o.dim >= 2 && o.dim % 2 == 0 &&
           o.prompt + o.decode > 0;
}

} // namespace

int main(int argc, char **argv) {
    Options o;
    if (!parse(argc, argv, o)) {
        std::fprintf(stderr,
                     "usage: decoder_loop [--layers L] [--q-heads H] [--kv-heads G] [--dim d (even)] [--prompt P]\n"
                     "       [--decode N] [--budget BYTES[K|M]] [--degree g] [--q-gain a] [--seed s] [--memory-table]\n"
                     "(H a multiple of G, P + N > 0)\n");
        return 2;
    }
    try {
        if (o.memory_table) {
            memory_table(o);
            return 0;
        }
        const Model model(o);
        const as_config cfg = head_config(o, o.budget);
        Rng rng{o.seed ^ 0x5EED};
        std::vector<std::uint32_t> tokens(std::size_t(o.prompt) + o.decode);
        for (auto &t : tokens) t = std::uint32_t(rng.next() % model.vocab);

        std::printf("decoder_loop: %u layers x (%u q, %u kv) heads, d = %u, prompt %u + decode %u tokens, %s kernels\n",
                    o.layers, o.q_heads, o.kv_heads, o.dim, o.prompt, o.decode, attnsketch::cpu_level_name());
        if (o.budget && cfg.sink_tokens + cfg.window_tokens + cfg.heavy_tokens > 0)
            std::printf("heads: hybrid, budget %s per kv head: %u sinks, %u window, %u heavy, %u tail groups\n",
                        human(double(o.budget)).c_str(), cfg.sink_tokens, cfg.window_tokens, cfg.heavy_tokens,
                        cfg.tail_groups);
        else
            std::printf("heads: plain polynomial sketch, degree %u (%s)\n", cfg.degree,
                        o.budget ? "the budget is too small for the hybrid" : "try --budget 1M for the hybrid");

        SketchAttention sk(cfg, o);
        const std::size_t bank_bytes0 = sk.bytes();
        const RunResult rs = run(model, sk, tokens, false);
        ExactAttention ex(o, tokens.size());
        const RunResult re = run(model, ex, tokens, true);
        if (sk.bytes() != bank_bytes0) throw std::runtime_error("bank memory changed");

        // Identical inputs: replay the exact run's last-layer q, k, v into a fresh bank.
        const std::size_t rq = std::size_t(o.q_heads) * o.dim, rk = std::size_t(o.kv_heads) * o.dim;
        const std::size_t P = o.prompt, n = tokens.size();
        attnsketch::Bank replay(cfg, o.q_heads, o.kv_heads);
        std::vector<float> out(n * rq);
        if (P > 0)
            replay.push_tokens({re.q.data(), P * rq}, {re.k.data(), P * rk}, {re.v.data(), P * rk}, {out.data(), P * rq});
        for (std::size_t t = P; t < n; t++)
            replay.push_token({re.q.data() + t * rq, rq}, {re.k.data() + t * rk, rk}, {re.v.data() + t * rk, rk},
                              {out.data() + t * rq, rq});
        for (float x : out)
            if (!std::isfinite(x)) throw std::runtime_error("non-finite sketch output");
        // Uniform attention (the mean of the values so far) for scale.
        std::vector<float> uni(n * rq), vsum(rk, 0.0f);
        const std::size_t group = o.q_heads / o.kv_heads;
        for (std::size_t t = 0; t < n; t++) {
            for (std::size_t i = 0; i < rk; i++) vsum[i] += re.v[t * rk + i];
            for (std::size_t h = 0; h < o.q_heads; h++)
                for (std::size_t c = 0; c < o.dim; c++)
                    uni[t * rq + h * o.dim + c] = vsum[(h / group) * o.dim + c] / float(t + 1);
        }
        const double err_all = rel_err(out.data(), re.out.data(), n * rq);
        const double err_dec = n > P ? rel_err(out.data() + P * rq, re.out.data() + P * rq, (n - P) * rq) : 0.0;
        const double err_uni = rel_err(uni.data(), re.out.data(), n * rq);
        const double drift = rel_err(rs.final_hidden.data(), re.final_hidden.data(), model.hidden);

        auto rate = [](double tokens_, double s) { return s > 0 ? tokens_ / s : 0.0; };
        std::printf("\n%-22s %14s %14s %14s %14s\n", "", "prefill tok/s", "decode tok/s", "attn prefill", "attn decode");
        for (const auto *r : {&rs, &re})
            std::printf("%-22s %14.0f %14.1f %12.3f s %12.3f s\n", r == &rs ? "attnsketch bank" : "exact KV cache",
                        rate(o.prompt, r->prefill_s), rate(o.decode, r->decode_s), r->attn_prefill_s, r->attn_decode_s);
        const double kv_per_token = double(o.layers) * o.kv_heads * 2 * o.dim * sizeof(float);
        std::printf("\nmemory after %zu tokens: banks %s (fixed), KV cache %s (grows %s per token; equal at n = %.0f)\n",
                    n, human(double(rs.bytes)).c_str(), human(double(re.bytes)).c_str(), human(kv_per_token).c_str(),
                    double(rs.bytes) / kv_per_token);
        std::printf("last layer, same inputs: relative error %.4f (decode tokens %.4f); uniform attention %.4f\n",
                    err_all, err_dec, err_uni);
        std::printf("largest score s q.k (all layers): %.1f (--q-gain %.2g; real SmolLM2 heads: 10 to 50)\n",
                    double(ex.max_score), double(o.q_gain));
        std::printf("final hidden state, sketch run vs exact run: relative difference %.4f\n", drift);
        if (!std::isfinite(err_all) || !std::isfinite(drift)) return 1;
    } catch (const attnsketch::error &e) {
        std::fprintf(stderr, "attnsketch error: %s (status %d)\n", e.what(), int(e.status()));
        return 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
