#include "llama-attnsketch.h"

#include "llama-batch.h"
#include "llama-graph.h"
#include "llama-hparams.h"
#include "llama-impl.h"
#include "llama-io.h"

#include "attnsketch.h"
#include "ggml.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>

// One sketched layer: n_kv banks of `group` query heads over one kv head each,
// so ggml's threads split the kv heads (thread ith pushes heads ith, ith+nth, ...)
// and no thread is ever spawned per call. Per kv head the math is that of one
// bank over all heads: a bank's kv heads are independent states.
struct llama_attnsketch_layer {
    int32_t  il      = 0;
    uint32_t n_head  = 0;
    uint32_t n_kv    = 0;
    uint32_t group   = 0;  // n_head / n_kv
    uint32_t d       = 0;
    uint32_t dv      = 0;
    as_config cfg    = {};
    size_t   kv_cache_bytes = 0;            // what the KV cache would take for this layer at n_ctx

    std::vector<as_bank *>  banks;          // [n_kv]
    std::vector<int64_t>    count;          // [n_kv] tokens each bank absorbed
    std::vector<as_status>  status;         // [n_kv] status of the last push

    ~llama_attnsketch_layer() { free_banks(); }

    void free_banks() {
        for (auto *& b : banks) {
            as_bank_free(b);
            b = nullptr;
        }
    }

    as_status create_banks() {
        free_banks();
        banks.assign(n_kv, nullptr);
        count.assign(n_kv, 0);
        status.assign(n_kv, AS_OK);
        for (uint32_t h = 0; h < n_kv; ++h) {
            const as_status s = as_bank_create(&cfg, group, 1, &banks[h]);
            if (s != AS_OK) {
                free_banks();
                return s;
            }
        }
        return AS_OK;
    }

    size_t state_bytes() const {
        size_t sum = 0;
        for (const auto * b : banks) {
            sum += as_bank_state_bytes(b);
        }
        return sum;
    }
};

// the documented refusal: what the fixed-size state cannot serve
static const char * k_refusal =
    "attnsketch: %s is not supported: the sketched layers keep a fixed-size state, not a per-token KV cache "
    "(supported: one sequence, appending at the next position, removing every token)%s";
static const char * k_blocked = "; decoding is refused until the memory is cleared";

//
// settings
//

static const char * env(const char * name) {
    const char * v = std::getenv(name);
    return v && *v ? v : nullptr;
}

// "262144", "256K", "256KiB", "1M", "1MiB" (powers of 1024)
static size_t parse_bytes(const char * name, const char * s) {
    char * end = nullptr;
    const double x = std::strtod(s, &end);
    std::string unit(end);
    for (auto & c : unit) {
        c = (char) std::tolower((unsigned char) c);
    }
    double mul = 1;
    if (unit == "" || unit == "b") {
        mul = 1;
    } else if (unit == "k" || unit == "kib" || unit == "kb") {
        mul = 1024;
    } else if (unit == "m" || unit == "mib" || unit == "mb") {
        mul = 1024.0 * 1024;
    } else {
        throw std::runtime_error(format("attnsketch: %s=%s: expected bytes such as 262144, 256K or 1M", name, s));
    }
    if (!(x > 0) || end == s) {
        throw std::runtime_error(format("attnsketch: %s=%s: expected a positive size", name, s));
    }
    return (size_t) std::llround(x * mul);
}

static uint32_t parse_u32(const char * name, const char * s) {
    char * end = nullptr;
    const long long x = std::strtoll(s, &end, 10);
    if (end == s || *end || x < 0 || x > (1ll << 30)) {
        throw std::runtime_error(format("attnsketch: %s=%s: expected a non-negative integer", name, s));
    }
    return (uint32_t) x;
}

// "0,3,5-7" -> layer flags
static std::vector<bool> parse_layers(const char * s, uint32_t n_layer) {
    std::vector<bool> on(n_layer, false);
    std::string str(s);
    size_t at = 0;
    while (at <= str.size()) {
        size_t comma = str.find(',', at);
        if (comma == std::string::npos) {
            comma = str.size();
        }
        const std::string item = str.substr(at, comma - at);
        int a = -1, b = -1;
        char extra = 0;
        if (std::sscanf(item.c_str(), "%d-%d%c", &a, &b, &extra) == 2 ||
            (std::sscanf(item.c_str(), "%d%c", &a, &extra) == 1 && (b = a) >= 0)) {
            if (a < 0 || b < a || b >= (int) n_layer) {
                throw std::runtime_error(format("attnsketch: ATTNSKETCH_LAYERS: '%s' is outside 0..%u", item.c_str(), n_layer - 1));
            }
            for (int i = a; i <= b; ++i) {
                on[i] = true;
            }
        } else {
            throw std::runtime_error(format("attnsketch: ATTNSKETCH_LAYERS=%s: expected 'full' or a list such as 0,3,5-7", s));
        }
        at = comma + 1;
    }
    return on;
}

static uint32_t parse_keys(const std::string & s) {
    if (s == "f32") return AS_KEYS_F32;
    if (s == "i16") return AS_KEYS_I16;
    if (s == "u4")  return AS_KEYS_U4;
    throw std::runtime_error("attnsketch: ATTNSKETCH_FORMAT: keys must be f32, i16 or u4");
}

static uint32_t parse_values(const std::string & s) {
    if (s == "f32") return AS_VALUES_F32;
    if (s == "f16") return AS_VALUES_F16;
    if (s == "i8")  return AS_VALUES_I8;
    if (s == "u4")  return AS_VALUES_U4;
    throw std::runtime_error("attnsketch: ATTNSKETCH_FORMAT: values must be f32, f16, i8 or u4");
}

static const char * keys_name(uint32_t f) {
    return f == AS_KEYS_U4 ? "u4" : f == AS_KEYS_I16 ? "i16" : "f32";
}
static const char * values_name(uint32_t f) {
    return f == AS_VALUES_U4 ? "u4" : f == AS_VALUES_F16 ? "f16" : f == AS_VALUES_I8 ? "i8" : "f32";
}
// the paged hybrid (4-bit pages of 32 tokens) or the slot hybrid
static const char * layout_name(const as_config & c) { return c.key_format == AS_KEYS_U4 ? "paged" : "slots"; }

static void check(as_status s, const char * what) {
    if (s != AS_OK) {
        throw std::runtime_error(format("attnsketch: %s failed: %s", what, as_status_string(s)));
    }
}

// bytes of one kv head's bank (group query heads) with this config, 0 if invalid
static size_t bank_bytes(const as_config & cfg, uint32_t group) {
    as_bank * b = nullptr;
    if (as_bank_create(&cfg, group, 1, &b) != AS_OK) {
        return 0;
    }
    const size_t n = as_bank_state_bytes(b);
    as_bank_free(b);
    return n;
}

// The head config of a layer of dimension d / dv from the environment:
//   ATTNSKETCH_BUDGET  bytes per kv head -> as_config_for_budget (ATTNSKETCH_POLICY=sllm: the same
//                      formats, 4 sinks and the largest recent window (whole pages when paged) whose
//                      bank fits the bytes of the hybrid's bank (at least the budget), no heavy
//                      slots, one tail group: the smallest tail the library accepts)
//   ATTNSKETCH_SINKS / _WINDOW / _HEAVY / _TAIL  explicit exact slots and tail groups instead
//   ATTNSKETCH_FORMAT  auto | f32 (with BUDGET); f32 | KEYS/VALUES such as i16/f16, u4/u4 (explicit slots)
static as_config config_from_env(uint32_t d, uint32_t dv, uint32_t group) {
    as_config cfg;
    check(as_config_init(&cfg, d), "as_config_init");
    cfg.value_dim = dv;

    const char * budget = env("ATTNSKETCH_BUDGET");
    const char * fmt    = env("ATTNSKETCH_FORMAT");
    const char * policy = env("ATTNSKETCH_POLICY");
    const std::string f = fmt ? fmt : "auto";
    const std::string p = policy ? policy : "hybrid";
    if (p != "hybrid" && p != "sllm") {
        throw std::runtime_error("attnsketch: ATTNSKETCH_POLICY must be hybrid or sllm");
    }
    const bool explicit_slots = env("ATTNSKETCH_SINKS") || env("ATTNSKETCH_WINDOW") || env("ATTNSKETCH_HEAVY") || env("ATTNSKETCH_TAIL");

    if (budget) {
        if (explicit_slots) {
            throw std::runtime_error("attnsketch: give either ATTNSKETCH_BUDGET or ATTNSKETCH_SINKS/WINDOW/HEAVY/TAIL, not both");
        }
        const size_t bytes = parse_bytes("ATTNSKETCH_BUDGET", budget);
        if (f == "f32") {
            // a caller whose as_config ends before value_format gets f32 keys and values (documented)
            cfg.struct_size = (uint32_t) offsetof(as_config, value_format);
            const as_status s = as_config_for_budget(&cfg, bytes);
            cfg.struct_size = sizeof(as_config);
            check(s, format("as_config_for_budget(%zu bytes, f32 formats)", bytes).c_str());
        } else if (f == "auto") {
            check(as_config_for_budget(&cfg, bytes), format("as_config_for_budget(%zu bytes)", bytes).c_str());
        } else {
            throw std::runtime_error("attnsketch: with ATTNSKETCH_BUDGET, ATTNSKETCH_FORMAT must be auto or f32");
        }
        if (p == "sllm") {
            // StreamingLLM-shaped: 4 sinks + the newest W tokens (fixed split), the formats the preset chose;
            // the library always folds evicted tokens into a tail, here the smallest one (1 group; 0 would
            // mean the default). The bytes: those of the hybrid's bank, never less than the budget.
            const size_t limit = std::max(bytes, bank_bytes(cfg, group));
            as_config c = cfg;
            c.sink_tokens  = 4;
            c.heavy_tokens = 0;
            c.tail_groups  = 1;
            c.degree       = 2;
            const uint32_t step = c.key_format == AS_KEYS_U4 ? 32 : 1;  // the paged window: whole pages
            // every format spends at least 4 bits per key and value channel of a window token
            uint32_t lo = 1, hi = (uint32_t) std::min<size_t>(limit / ((d + dv) / 2) / step + 1, 1u << 20);
            c.window_tokens = lo * step;
            if (bank_bytes(c, group) == 0 || bank_bytes(c, group) > limit) {
                throw std::runtime_error("attnsketch: ATTNSKETCH_BUDGET too small for ATTNSKETCH_POLICY=sllm");
            }
            while (lo < hi) {
                const uint32_t mid = lo + (hi - lo + 1) / 2;
                c.window_tokens = mid * step;
                const size_t n = bank_bytes(c, group);
                if (n != 0 && n <= limit) {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            c.window_tokens = lo * step;
            cfg = c;
        }
    } else {
        if (p == "sllm") {
            throw std::runtime_error("attnsketch: ATTNSKETCH_POLICY=sllm needs ATTNSKETCH_BUDGET");
        }
        const char * s = env("ATTNSKETCH_SINKS");
        const char * w = env("ATTNSKETCH_WINDOW");
        const char * h = env("ATTNSKETCH_HEAVY");
        const char * t = env("ATTNSKETCH_TAIL");
        cfg.sink_tokens   = s ? parse_u32("ATTNSKETCH_SINKS", s)  : 0;
        cfg.window_tokens = w ? parse_u32("ATTNSKETCH_WINDOW", w) : 0;
        cfg.heavy_tokens  = h ? parse_u32("ATTNSKETCH_HEAVY", h)  : 0;
        cfg.tail_groups   = t ? parse_u32("ATTNSKETCH_TAIL", t)   : 0;
        if (cfg.window_tokens == 0) {
            throw std::runtime_error("attnsketch: ATTNSKETCH_WINDOW must be at least 1 (the newest token)");
        }
        if (f != "auto" && f != "f32") {
            const size_t slash = f.find('/');
            if (slash == std::string::npos) {
                throw std::runtime_error("attnsketch: ATTNSKETCH_FORMAT must be auto, f32 or KEYS/VALUES such as i16/f16");
            }
            cfg.key_format   = parse_keys(f.substr(0, slash));
            cfg.value_format = parse_values(f.substr(slash + 1));
        }
    }
    return cfg;
}

static std::string mib(size_t bytes) {
    if (bytes < 1024 * 1024) {
        return format("%.1f KiB", bytes / 1024.0);
    }
    return format("%.2f MiB", bytes / (1024.0 * 1024.0));
}

//
// llama_attnsketch
//

std::shared_ptr<llama_attnsketch> llama_attnsketch::from_env(
        const llama_hparams & hparams, const char * arch, uint32_t n_ctx, uint32_t n_seq_max,
        bool causal, ggml_type type_k, ggml_type type_v) {
    if (!env("ATTNSKETCH_BUDGET") && !env("ATTNSKETCH_WINDOW") && !env("ATTNSKETCH_SINKS") &&
        !env("ATTNSKETCH_HEAVY")) {
        return nullptr;
    }
    // architectures whose graphs were checked to route every attention through
    // build_attn with a KV cache (plain or iSWA) and plain softmax attention
    const std::string a = arch ? arch : "";
    if (a != "llama" && a != "gemma3") {
        throw std::runtime_error(format("attnsketch: architecture '%s' is not supported (llama, gemma3)", a.c_str()));
    }
    if (n_seq_max > 1) {
        throw std::runtime_error(format(k_refusal,
            format("n_seq_max = %u (several sequences; llama-perplexity: pass -b no larger than -c; "
                   "llama-server/batched: -np 1)", n_seq_max).c_str(), ""));
    }
    if (!causal) {
        throw std::runtime_error("attnsketch: non-causal attention is not supported");
    }
    if (hparams.attn_soft_cap || hparams.f_max_alibi_bias != 0.0f) {
        throw std::runtime_error("attnsketch: attention logit soft-capping and ALiBi are not supported");
    }

    const uint32_t n_layer = hparams.n_layer();
    std::vector<bool> on(n_layer, false);
    const char * ls = env("ATTNSKETCH_LAYERS");
    if (!ls || std::string(ls) == "full") {
        for (uint32_t il = 0; il < n_layer; ++il) {
            on[il] = hparams.has_kv(il) && !hparams.is_swa(il);
        }
    } else {
        on = parse_layers(ls, n_layer);
        for (uint32_t il = 0; il < n_layer; ++il) {
            if (on[il] && (!hparams.has_kv(il) || hparams.is_swa(il))) {
                throw std::runtime_error(format("attnsketch: layer %u is a sliding-window layer (or has no KV): "
                                                "only full-attention layers can be sketched", il));
            }
        }
    }

    std::shared_ptr<llama_attnsketch> res(new llama_attnsketch());
    res->n_ctx = n_ctx;
    res->layers.resize(hparams.n_layer_all);

    size_t total = 0, total_kv = 0;
    int n_on = 0;
    std::string list;
    for (uint32_t il = 0; il < n_layer; ++il) {
        if (!on[il]) {
            continue;
        }
        auto L = std::make_unique<llama_attnsketch_layer>();
        L->il     = il;
        L->n_head = hparams.n_head(il);
        L->n_kv   = hparams.n_head_kv(il);
        L->d      = hparams.n_embd_head_k(il);
        L->dv     = hparams.n_embd_head_v(il);
        if (L->n_kv == 0 || L->n_head % L->n_kv != 0) {
            throw std::runtime_error(format("attnsketch: layer %u: %u query heads over %u kv heads", il, L->n_head, L->n_kv));
        }
        L->group = L->n_head / L->n_kv;
        // layers of the same shape get the same config (the sllm search creates banks: do it once)
        const llama_attnsketch_layer * same = nullptr;
        for (const auto & P : res->layers) {
            if (P && P->d == L->d && P->dv == L->dv && P->group == L->group) {
                same = P.get();
            }
        }
        L->cfg   = same ? same->cfg : config_from_env(L->d, L->dv, L->group);
        check(L->create_banks(), "as_bank_create");
        L->kv_cache_bytes = (size_t) n_ctx * (ggml_row_size(type_k, hparams.n_embd_k_gqa(il)) +
                                              ggml_row_size(type_v, hparams.n_embd_v_gqa(il)));
        total    += L->state_bytes();
        total_kv += L->kv_cache_bytes;
        if (n_on == 0 || std::getenv("ATTNSKETCH_VERBOSE")) {
            const as_config & c = L->cfg;
            LLAMA_LOG_INFO("attnsketch: layer %2u: %u q / %u kv heads, d = %u; per kv head: %u sinks, window %u, heavy %u, "
                           "tail %u groups, keys %s, values %s, %s, %s (budget %s)\n",
                    il, L->n_head, L->n_kv, L->d, c.sink_tokens, c.window_tokens, c.heavy_tokens,
                    c.tail_groups, keys_name(c.key_format), values_name(c.value_format), layout_name(c),
                    mib(L->state_bytes() / L->n_kv).c_str(),
                    env("ATTNSKETCH_BUDGET") ? env("ATTNSKETCH_BUDGET") : "explicit");
        }
        ++n_on;
        res->layers[il] = std::move(L);
    }
    if (n_on == 0) {
        throw std::runtime_error("attnsketch: no layer to sketch");
    }
    for (uint32_t il = 0; il < n_layer; ++il) {
        if (on[il] && (il == 0 || !on[il - 1])) {
            uint32_t end = il;
            while (end + 1 < n_layer && on[end + 1]) {
                ++end;
            }
            list += (list.empty() ? "" : ",") + std::to_string(il) + (end > il ? "-" + std::to_string(end) : "");
        }
    }
    LLAMA_LOG_INFO("attnsketch: %d of %u layers sketched (%s), libattnsketch %s (%s kernels)\n",
            n_on, n_layer, list.c_str(), as_version_string(), as_cpu_level_name());
    LLAMA_LOG_INFO("attnsketch: state %s in total; the KV cache of these layers would take %s at n_ctx = %u (K %s, V %s)\n",
            mib(total).c_str(), mib(total_kv).c_str(), n_ctx, ggml_type_name(type_k), ggml_type_name(type_v));
    return res;
}

llama_attnsketch::~llama_attnsketch() = default;

bool llama_attnsketch::sketched(int32_t il) const {
    return il >= 0 && il < (int32_t) layers.size() && layers[il] != nullptr;
}

std::function<bool(int32_t)> llama_attnsketch::kv_filter(std::function<bool(int32_t)> prev) const {
    std::vector<bool> on(layers.size());
    for (size_t il = 0; il < layers.size(); ++il) {
        on[il] = layers[il] != nullptr;
    }
    return [prev, on](int32_t il) {
        if (prev && !prev(il)) {
            return false;
        }
        return !(il >= 0 && il < (int32_t) on.size() && on[il]);
    };
}

//
// the custom op
//

// rows [h0, h0 + nh) of every token of t ([ne0, heads, n]) as one dense block:
// t's own memory when it is laid out that way, else a copy into buf
static const float * rows_of(const ggml_tensor * t, int64_t h0, int64_t nh, int64_t n, std::vector<float> & buf) {
    const int64_t ne0 = t->ne[0];
    const char * base = (const char *) t->data + h0 * t->nb[1];
    const size_t row = ne0 * sizeof(float);
    if (t->nb[0] == sizeof(float) && t->nb[1] == row && (n == 1 || t->nb[2] == nh * row)) {
        return (const float *) base;
    }
    buf.resize(n * nh * ne0);
    for (int64_t j = 0; j < n; ++j) {
        for (int64_t h = 0; h < nh; ++h) {
            std::memcpy(buf.data() + (j * nh + h) * ne0, base + j * t->nb[2] + h * t->nb[1], row);
        }
    }
    return buf.data();
}

static void attnsketch_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    auto * L = (llama_attnsketch_layer *) userdata;
    const ggml_tensor * q = dst->src[0];
    const ggml_tensor * k = dst->src[1];
    const ggml_tensor * v = dst->src[2];
    const int64_t n = q->ne[2];
    const int64_t g = L->group;
    thread_local std::vector<float> bq, bk, bv, bo;

    for (int64_t hk = ith; hk < (int64_t) L->n_kv; hk += nth) {
        const float * qp = rows_of(q, hk * g, g, n, bq);
        const float * kp = rows_of(k, hk, 1, n, bk);
        const float * vp = rows_of(v, hk, 1, n, bv);
        // dst is contiguous [dv, n_head, n]: dense for this kv head when n == 1 or there is one kv head
        const bool direct = n == 1 || L->n_kv == 1;
        float * op = (float *) dst->data + hk * g * L->dv;
        if (!direct) {
            bo.resize(n * g * L->dv);
            op = bo.data();
        }
        const as_status s = as_bank_push_tokens(L->banks[hk], (size_t) n, qp, kp, vp, op);
        L->status[hk] = s;
        if (s != AS_OK) {
            continue;
        }
        L->count[hk] += n;
        if (!direct) {
            for (int64_t j = 0; j < n; ++j) {
                std::memcpy((float *) dst->data + (j * L->n_head + hk * g) * L->dv, bo.data() + j * g * L->dv,
                            g * L->dv * sizeof(float));
            }
        }
    }
}

ggml_tensor * llama_attnsketch::build(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v,
        float kq_scale, int32_t il) {
    GGML_ASSERT(sketched(il));
    auto & L = *layers[il];
    if (L.cfg.scale != kq_scale) {
        // the model's kq_scale is known when the graph is first built (at context creation)
        if (n_past > 0) {
            throw std::runtime_error(format("attnsketch: layer %d: kq_scale changed after tokens were absorbed", il));
        }
        L.cfg.scale = kq_scale;
        check(L.create_banks(), "as_bank_create");
    }
    GGML_ASSERT(q->ne[0] == L.d && q->ne[1] == L.n_head);
    GGML_ASSERT(k->ne[0] == L.d && k->ne[1] == L.n_kv && v->ne[0] == L.dv && v->ne[1] == L.n_kv);
    GGML_ASSERT(k->ne[2] == q->ne[2] && v->ne[2] == q->ne[2] && q->ne[3] == 1);
    if (q->type != GGML_TYPE_F32) { q = ggml_cast(ctx, q, GGML_TYPE_F32); }
    if (k->type != GGML_TYPE_F32) { k = ggml_cast(ctx, k, GGML_TYPE_F32); }
    if (v->type != GGML_TYPE_F32) { v = ggml_cast(ctx, v, GGML_TYPE_F32); }
    ggml_tensor * args[3] = { q, k, v };
    ggml_tensor * out = ggml_custom_4d(ctx, GGML_TYPE_F32, L.dv, L.n_head, q->ne[2], 1, args, 3,
                                       attnsketch_op, (int) L.n_kv, &L);
    ggml_format_name(out, "attnsketch-%d", il);
    return ggml_reshape_2d(ctx, out, L.dv * L.n_head, q->ne[2]);
}

//
// ubatches
//

bool llama_attnsketch::begin_ubatch(const llama_ubatch & ub) {
    if (broken) {
        LLAMA_LOG_ERROR("attnsketch: decoding refused: a memory edit was refused (or a push failed) since the "
                        "memory was last cleared\n");
        return false;
    }
    for (uint32_t i = 0; i < ub.n_tokens; ++i) {
        if (ub.n_seq_id[i] != 1 || ub.seq_id[i][0] != 0) {
            LLAMA_LOG_ERROR(k_refusal, "a token of a sequence other than 0", "\n");
            return false;
        }
        if (ub.pos[i] != n_past + (llama_pos) i) {
            LLAMA_LOG_ERROR(k_refusal, format("decoding at position %d where the sketch holds %lld tokens",
                                              ub.pos[i] - (llama_pos) i, (long long) n_past).c_str(), "\n");
            return false;
        }
    }
    return true;
}

bool llama_attnsketch::end_ubatch(const llama_ubatch & ub, bool computed) {
    bool all = true, any = false;
    for (auto & L : layers) {
        if (!L) {
            continue;
        }
        for (uint32_t h = 0; h < L->n_kv; ++h) {
            if (L->count[h] == n_past + ub.n_tokens) {
                any = true;
            } else {
                all = false;
                if (L->status[h] != AS_OK) {
                    LLAMA_LOG_ERROR("attnsketch: layer %d kv head %u: as_bank_push_tokens: %s\n",
                                    L->il, h, as_status_string(L->status[h]));
                }
            }
        }
    }
    if (all) {
        n_past += ub.n_tokens;
        return computed;
    }
    if (any) {
        broken = true;
        LLAMA_LOG_ERROR("attnsketch: the ubatch was absorbed by some layers only; decoding is refused until the memory is cleared\n");
    }
    return false;
}

//
// memory operations
//

bool llama_attnsketch::refuse(const std::string & what) {
    LLAMA_LOG_ERROR(k_refusal, what.c_str(), k_blocked);
    LLAMA_LOG_ERROR("\n");
    broken = true;
    return false;
}

bool llama_attnsketch::reset_banks() {
    for (auto & L : layers) {
        if (L) {
            check(L->create_banks(), "as_bank_create");
        }
    }
    n_past = 0;
    broken = false;
    return true;
}

void llama_attnsketch::clear() {
    reset_banks();
}

// [p0, p1) with the llama.cpp conventions: p0 < 0 -> 0, p1 < 0 -> infinity
static void normalize(llama_pos & p0, llama_pos & p1) {
    if (p0 < 0) {
        p0 = 0;
    }
    if (p1 < 0) {
        p1 = std::numeric_limits<llama_pos>::max();
    }
}

bool llama_attnsketch::seq_rm(llama_seq_id seq_id, llama_pos p0, llama_pos p1) {
    normalize(p0, p1);
    if (seq_id > 0 || p0 >= n_past || p1 <= p0) {
        return true; // nothing of sequence 0 is removed
    }
    if (p0 == 0 && p1 >= n_past) {
        return reset_banks(); // everything: a clear
    }
    return refuse(format("removing positions [%d, %d) of %lld (seq_rm)", p0, p1, (long long) n_past));
}

bool llama_attnsketch::seq_cp(llama_seq_id, llama_seq_id, llama_pos, llama_pos) {
    return refuse("copying a sequence (seq_cp)");
}

bool llama_attnsketch::seq_keep(llama_seq_id seq_id) {
    if (seq_id == 0 || n_past == 0) {
        return true;
    }
    return reset_banks(); // sequence 0 is removed entirely
}

bool llama_attnsketch::seq_add(llama_seq_id seq_id, llama_pos p0, llama_pos p1, llama_pos shift) {
    normalize(p0, p1);
    if (seq_id > 0 || shift == 0 || p0 >= n_past || p1 <= p0) {
        return true;
    }
    return refuse("shifting positions (seq_add, context shift)");
}

bool llama_attnsketch::seq_div(llama_seq_id seq_id, llama_pos p0, llama_pos p1, int d) {
    normalize(p0, p1);
    if (seq_id > 0 || d == 1 || p0 >= n_past || p1 <= p0) {
        return true;
    }
    return refuse("dividing positions (seq_div, self-extend)");
}

//
// session save/load
//
// After the KV cache's own data: "ASLS", version, the token count, then per sketched layer its
// index, kv heads and config, and per kv head the bank's as_bank_serialize bytes (which carry
// their own checksum). The state is fixed-size, so a bank's length is known from the config.

static const uint32_t k_state_magic   = 0x534c5341; // "ASLS"
static const uint32_t k_state_version = 1;

// the settings a saved state must match (the config fields that shape the state)
static bool same_config(const as_config & a, const as_config & b) {
    return a.head_dim == b.head_dim && a.value_dim == b.value_dim && a.degree == b.degree &&
           a.scale == b.scale && a.mode == b.mode && a.seed == b.seed && a.sink_tokens == b.sink_tokens &&
           a.window_tokens == b.window_tokens && a.heavy_tokens == b.heavy_tokens &&
           a.tail_groups == b.tail_groups && a.key_format == b.key_format && a.value_format == b.value_format;
}

static size_t serialized_len(const as_bank * b) {
    size_t need = 0;
    check(as_bank_serialize(b, nullptr, 0, &need), "as_bank_serialize");
    return need;
}

void llama_attnsketch::check_state_seq(llama_seq_id seq_id, const char * what) const {
    if (seq_id > 0) {
        throw std::runtime_error(format(k_refusal,
            format("%s the memory state of a sequence other than 0", what).c_str(), ""));
    }
    if (broken && std::strcmp(what, "saving") == 0) {
        throw std::runtime_error("attnsketch: saving the memory state after a refused edit or a failed push "
                                 "is refused (the sketched layers no longer match the cache); clear the memory first");
    }
}

void llama_attnsketch::state_write(llama_io_write_i & io) const {
    uint32_t n_layers = 0;
    for (const auto & L : layers) {
        n_layers += L ? 1 : 0;
    }
    const int64_t n = n_past;
    io.write(&k_state_magic, sizeof(k_state_magic));
    io.write(&k_state_version, sizeof(k_state_version));
    io.write(&n, sizeof(n));
    io.write(&n_layers, sizeof(n_layers));
    std::vector<uint8_t> buf;
    for (const auto & L : layers) {
        if (!L) {
            continue;
        }
        const uint32_t cfg_size = sizeof(as_config);
        io.write(&L->il, sizeof(L->il));
        io.write(&L->n_kv, sizeof(L->n_kv));
        io.write(&cfg_size, sizeof(cfg_size));
        io.write(&L->cfg, sizeof(as_config));
        for (const auto * b : L->banks) {
            const uint64_t len = serialized_len(b);
            buf.resize(len);
            size_t w = 0;
            check(as_bank_serialize(b, buf.data(), buf.size(), &w), "as_bank_serialize");
            io.write(&len, sizeof(len));
            io.write(buf.data(), len);
        }
    }
}

void llama_attnsketch::state_read(llama_io_read_i & io, int64_t cache_tokens) {
    // the banks read so far; freed unless all were read and checked
    std::vector<std::vector<as_bank *>> fresh(layers.size());
    auto free_fresh = [&]() {
        for (auto & v : fresh) {
            for (auto * b : v) {
                as_bank_free(b);
            }
            v.clear();
        }
    };
    // the KV cache has already taken the saved cells: until this succeeds nothing matches
    broken = true;
    try {
        const auto fail = [](const std::string & why) {
            throw std::runtime_error("attnsketch: cannot load the memory state: " + why);
        };
        uint32_t magic = 0, version = 0, n_layers = 0, want = 0;
        int64_t n = 0;
        io.read(&magic, sizeof(magic));
        if (magic != k_state_magic) {
            fail("it has no attnsketch section (saved without attnsketch?)");
        }
        io.read(&version, sizeof(version));
        if (version != k_state_version) {
            fail(format("section version %u, this build reads %u", version, k_state_version));
        }
        io.read(&n, sizeof(n));
        io.read(&n_layers, sizeof(n_layers));
        for (const auto & L : layers) {
            want += L ? 1 : 0;
        }
        if (n_layers != want) {
            fail(format("it has %u sketched layers, these settings sketch %u", n_layers, want));
        }
        for (auto & L : layers) {
            if (!L) {
                continue;
            }
            int32_t il = 0;
            uint32_t n_kv = 0, cfg_size = 0;
            as_config cfg = {};
            io.read(&il, sizeof(il));
            io.read(&n_kv, sizeof(n_kv));
            io.read(&cfg_size, sizeof(cfg_size));
            if (il != L->il || n_kv != L->n_kv || cfg_size != sizeof(as_config)) {
                fail(format("layer %d: saved with another layout (layer %d, %u kv heads)", L->il, il, n_kv));
            }
            io.read(&cfg, sizeof(cfg));
            if (!same_config(cfg, L->cfg)) {
                fail(format("layer %d: saved with other attnsketch settings (window %u, sinks %u, heavy %u; "
                            "these settings: window %u, sinks %u, heavy %u)", L->il, cfg.window_tokens,
                            cfg.sink_tokens, cfg.heavy_tokens, L->cfg.window_tokens, L->cfg.sink_tokens,
                            L->cfg.heavy_tokens));
            }
            std::vector<uint8_t> buf;
            for (uint32_t h = 0; h < n_kv; ++h) {
                uint64_t len = 0;
                io.read(&len, sizeof(len));
                if (len != serialized_len(L->banks[h])) {
                    fail(format("layer %d kv head %u: %llu bytes where these settings hold %zu", L->il, h,
                                (unsigned long long) len, serialized_len(L->banks[h])));
                }
                buf.resize(len);
                io.read(buf.data(), len);
                as_bank * b = nullptr;
                const as_status st = as_bank_deserialize(buf.data(), buf.size(), &b);
                if (st != AS_OK) {
                    fail(format("layer %d kv head %u: %s", L->il, h, as_status_string(st)));
                }
                fresh[L->il].push_back(b);
            }
        }
        if (n != cache_tokens) {
            fail(format("it holds %lld tokens, the KV cache's cells %lld", (long long) n, (long long) cache_tokens));
        }
    } catch (const std::exception & e) {
        free_fresh();
        LLAMA_LOG_ERROR("%s; decoding is refused until the memory is cleared\n", e.what());
        throw;
    } catch (...) {
        free_fresh();
        throw;
    }
    int64_t n = 0;
    for (auto & L : layers) {
        if (L) {
            L->free_banks();
            L->banks = std::move(fresh[L->il]);
            L->count.assign(L->n_kv, cache_tokens);
            L->status.assign(L->n_kv, AS_OK);
            n = cache_tokens;
        }
    }
    n_past = n;
    broken = false;
    LLAMA_LOG_INFO("attnsketch: loaded the memory state of %lld tokens\n", (long long) n_past);
}

//
// the graph hook (a member of llm_graph_context, declared in llama-graph.h)
//

ggml_tensor * llm_graph_context::build_attn_sketch(
        ggml_tensor * wo,
        ggml_tensor * wo_b,
        ggml_tensor * wo_s,
        ggml_tensor * q_cur,
        ggml_tensor * k_cur,
        ggml_tensor * v_cur,
        ggml_tensor * kq_b,
        ggml_tensor * sinks,
        ggml_tensor * v_mla,
              float   kq_scale,
                int   il) const {
    if (kq_b || sinks || v_mla || !k_cur || !v_cur) {
        throw std::runtime_error(format("attnsketch: layer %d: attention bias, attention sinks, MLA or shared K/V "
                                        "are not supported", il));
    }

    // as upstream: keep these nodes together in the graph
    ggml_build_forward_expand(gf, q_cur);
    ggml_build_forward_expand(gf, v_cur);
    ggml_build_forward_expand(gf, k_cur);

    ggml_tensor * cur = attnsketch->build(ctx0, q_cur, k_cur, v_cur, kq_scale, il);
    cb(cur, "kqv_out", il);

    if (wo) {
        cur = build_lora_mm(wo, cur, wo_s);
    }
    if (wo_b) {
        cur = ggml_add(ctx0, cur, wo_b);
    }
    return cur;
}
