// A sketched layer whose exact slots hold every token computes exact attention:
// the attention output of the first sketched layer (graph node "kqv_out-IL", before the
// output projection) equals llama.cpp's own attention with an f32 KV cache and flash
// attention off, for a prefill in several ubatches and for single-token decodes.
// The layers before IL are not sketched, so both runs give IL the same inputs.
// (Whole-model outputs cannot be compared this tightly: the CPU matmuls quantize their
// activations to 8 bits, so rounding-level differences flip some of those roundings.)
//
// Usage: attnsketch-exact MODEL.gguf LAYER [TOL]   (sets ATTNSKETCH_* itself; TOL default 1e-5)

#include "ggml-backend.h"
#include "llama.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

struct capture {
    std::string name;
    std::vector<float> data;
};

static bool eval_cb(ggml_tensor * t, bool ask, void * ud) {
    auto * c = (capture *) ud;
    if (ask) {
        return c->name == t->name;
    }
    if (c->name == t->name && t->type == GGML_TYPE_F32) {
        const size_t n = ggml_nelements(t);
        const size_t at = c->data.size();
        c->data.resize(at + n);
        ggml_backend_tensor_get(t, c->data.data() + at, 0, n * sizeof(float));
    }
    return true;
}

static void quiet(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR || std::strstr(text, "attnsketch")) {
        std::fputs(text, stderr);
    }
}

// prefill 64 tokens in ubatches of 16, then decode 8 tokens one by one; the captured outputs
static std::vector<float> run(llama_model * model, const std::vector<llama_token> & toks, int il, bool sketch) {
    if (sketch) {
        setenv("ATTNSKETCH_BUDGET", "2M", 1);
        setenv("ATTNSKETCH_FORMAT", "f32", 1);
        setenv("ATTNSKETCH_LAYERS", std::to_string(il).c_str(), 1);
    } else {
        unsetenv("ATTNSKETCH_BUDGET");
        unsetenv("ATTNSKETCH_FORMAT");
        unsetenv("ATTNSKETCH_LAYERS");
    }
    capture cap;
    cap.name = "kqv_out-" + std::to_string(il);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 256;
    cp.n_batch = 64;
    cp.n_ubatch = 16;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.cb_eval = eval_cb;
    cp.cb_eval_user_data = &cap;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        std::fprintf(stderr, "cannot create a context (sketch %d)\n", sketch);
        std::exit(2);
    }
    const int n_pre = 64, n_dec = 8;
    llama_batch b = llama_batch_init(n_pre, 0, 1);
    for (int i = 0; i < n_pre + n_dec; ++i) {
        const int n = i < n_pre ? n_pre : 1;
        if (i >= n_pre || i == 0) {
            for (int j = 0; j < n; ++j) {
                b.token[j] = toks[(i + j) % toks.size()];
                b.pos[j] = i + j;
                b.n_seq_id[j] = 1;
                b.seq_id[j][0] = 0;
                b.logits[j] = j == n - 1;
            }
            b.n_tokens = n;
            if (llama_decode(ctx, b) != 0) {
                std::fprintf(stderr, "decode failed (sketch %d)\n", sketch);
                std::exit(2);
            }
        }
    }
    llama_batch_free(b);
    llama_free(ctx);
    return cap.data;
}

int main(int argc, char ** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s MODEL.gguf LAYER [TOL]\n", argv[0]);
        return 2;
    }
    const int il = std::atoi(argv[2]);
    const double tol = argc > 3 ? std::atof(argv[3]) : 1e-5;
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        return 2;
    }
    std::vector<llama_token> toks(128);
    const std::string text =
        "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
        "it was the season of Darkness, it was the spring of hope, it was the winter of despair.";
    const int n = llama_tokenize(llama_model_get_vocab(model), text.c_str(), (int) text.size(), toks.data(),
                                 (int) toks.size(), true, false);
    toks.resize(n > 0 ? n : 1);

    const std::vector<float> ref = run(model, toks, il, false);
    const std::vector<float> got = run(model, toks, il, true);
    double scale = 0, err = 0;
    for (float x : ref) {
        scale = std::fmax(scale, std::fabs(x));
    }
    const bool same_size = !ref.empty() && ref.size() == got.size();
    for (size_t i = 0; same_size && i < ref.size(); ++i) {
        err = std::fmax(err, std::fabs((double) got[i] - ref[i]));
    }
    const bool ok = same_size && err <= tol * scale;
    std::printf("%s: layer %d attention output, 64-token prefill in 4 ubatches + 8 decodes (%zu values): "
                "max |sketch - llama.cpp| = %.3g x max|out| (tolerance %.0e)\n",
                ok ? "PASS" : "FAIL", il, ref.size(), scale > 0 ? err / scale : NAN, tol);
    llama_model_free(model);
    return ok ? 0 : 1;
}
