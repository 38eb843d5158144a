// What the sketch cannot serve is refused, what it can is served: a check of the
// patched llama.cpp through its public API (run with ATTNSKETCH_* set).
// Usage: attnsketch-edits MODEL.gguf   -> one PASS/FAIL line per check; exit 1 on any FAIL.

#include "llama.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static int failures = 0;

static void expect(bool ok, const char * what) {
    std::printf("%s: %s\n", ok ? "PASS" : "FAIL", what);
    std::fflush(stdout);
    failures += ok ? 0 : 1;
}

// log lines from llama.cpp go to stderr; keep the refusals, drop the rest
static void log_cb(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR || std::strstr(text, "attnsketch")) {
        std::fputs(text, stderr);
    }
}

// decodes tokens [0, n) of toks at positions p0.., logits of the last one; returns llama_decode's status
static int decode(llama_context * ctx, const std::vector<llama_token> & toks, int p0, int n, std::vector<float> * logits) {
    llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; ++i) {
        b.token[i]     = toks[(p0 + i) % toks.size()];
        b.pos[i]       = p0 + i;
        b.n_seq_id[i]  = 1;
        b.seq_id[i][0] = 0;
        b.logits[i]    = i == n - 1;
    }
    b.n_tokens = n;
    const int rc = llama_decode(ctx, b);
    if (rc == 0 && logits) {
        const int nv = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));
        const float * l = llama_get_logits_ith(ctx, n - 1);
        logits->assign(l, l + nv);
    }
    llama_batch_free(b);
    return rc;
}

int main(int argc, char ** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MODEL.gguf (with ATTNSKETCH_* set)\n", argv[0]);
        return 2;
    }
    llama_log_set(log_cb, nullptr);
    llama_backend_init();

    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        std::fprintf(stderr, "cannot load %s\n", argv[1]);
        return 2;
    }
    std::vector<llama_token> toks(64);
    {
        const std::string text = "The quick brown fox jumps over the lazy dog. A stitch in time saves nine. "
                                 "All that glitters is not gold; fortune favours the bold, and so on and so forth.";
        const int n = llama_tokenize(llama_model_get_vocab(model), text.c_str(), (int) text.size(), toks.data(),
                                     (int) toks.size(), true, false);
        toks.resize(n > 0 ? n : 1);
    }

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx     = 256;
    cp.n_batch   = 64;
    cp.n_ubatch  = 64;
    cp.n_threads = cp.n_threads_batch = 2;

    {
        llama_context_params c2 = cp;
        c2.n_seq_max = 2;
        llama_context * ctx2 = llama_init_from_model(model, c2);
        expect(ctx2 == nullptr, "a context with n_seq_max = 2 is refused");
        llama_free(ctx2);
    }

    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        std::fprintf(stderr, "cannot create the context\n");
        return 2;
    }
    llama_memory_t mem = llama_get_memory(ctx);
    std::vector<float> a, b;

    expect(!llama_memory_can_shift(mem), "llama_memory_can_shift is false (context shift is disabled)");

    expect(decode(ctx, toks, 0, 16, &a) == 0, "prefill of 16 tokens");
    expect(decode(ctx, toks, 16, 1, nullptr) == 0, "decode at position 16");
    expect(llama_memory_seq_rm(mem, 0, 17, -1), "seq_rm of nothing (positions past the end) is accepted");
    expect(llama_memory_seq_pos_max(mem, 0) == 16, "seq_pos_max is 16");
    expect(decode(ctx, toks, 17, 1, nullptr) == 0, "decode continues at position 17");
    expect(decode(ctx, toks, 30, 1, nullptr) != 0, "decode at position 30 (a gap) fails");
    expect(decode(ctx, toks, 18, 1, nullptr) == 0, "... and the state still continues at position 18");

    // session save/load: the banks' state is saved with the context and continues bit for bit
    {
        const size_t sz = llama_state_get_size(ctx);
        std::vector<uint8_t> st(sz);
        expect(sz > 0 && llama_state_get_data(ctx, st.data(), st.size()) == sz, "saving the context state at 19 tokens");
        std::vector<float> c1, c2;
        expect(decode(ctx, toks, 19, 1, &c1) == 0, "decode at position 19 after the save");
        llama_context * ctx3 = llama_init_from_model(model, cp);
        expect(ctx3 && llama_state_set_data(ctx3, st.data(), st.size()) == st.size(), "loading it into a new context");
        expect(decode(ctx3, toks, 19, 1, &c2) == 0 && c1 == c2,
               "... which decodes position 19 with the same logits bit for bit");
        // a bit inside the last bank's bytes (after its "ASBK" magic; the SWA cache of Gemma 3 follows them)
        std::vector<uint8_t> bad = st;
        size_t at = 0;
        for (size_t i = 0; i + 4 <= bad.size(); ++i) {
            at = std::memcmp(&bad[i], "ASBK", 4) == 0 ? i : at;
        }
        expect(at > 0, "the saved state holds the banks' serialized forms");
        bad[at + 40] ^= 1;
        expect(llama_state_set_data(ctx3, bad.data(), bad.size()) == 0, "a state with a flipped bit is refused");
        expect(decode(ctx3, toks, 20, 1, nullptr) != 0, "... and decoding is refused after it");
        llama_memory_clear(llama_get_memory(ctx3), true);
        expect(decode(ctx3, toks, 0, 8, nullptr) == 0, "... until the memory is cleared");
        llama_free(ctx3);

        // other settings: the same state is refused by a context with another budget
        const char * was = std::getenv("ATTNSKETCH_BUDGET");
        const std::string keep = was ? was : "";
        setenv("ATTNSKETCH_BUDGET", keep == "128K" ? "64K" : "128K", 1);
        llama_context * ctx4 = llama_init_from_model(model, cp);
        if (was) {
            setenv("ATTNSKETCH_BUDGET", keep.c_str(), 1);
        } else {
            unsetenv("ATTNSKETCH_BUDGET");
        }
        expect(ctx4 && llama_state_set_data(ctx4, st.data(), st.size()) == 0,
               "a state saved with another budget is refused");
        llama_free(ctx4);
    }
    {
        // the sequence state of sequence 0, restored into the same context
        const size_t sz = llama_state_seq_get_size(ctx, 0);
        std::vector<uint8_t> st(sz);
        expect(sz > 0 && llama_state_seq_get_data(ctx, st.data(), st.size(), 0) == sz,
               "saving the state of sequence 0 at 20 tokens");
        std::vector<float> c1, c2;
        expect(decode(ctx, toks, 20, 3, &c1) == 0, "decode positions 20-22");
        expect(llama_state_seq_set_data(ctx, st.data(), st.size(), 0) == sz, "restoring sequence 0");
        expect(decode(ctx, toks, 20, 3, &c2) == 0 && c1 == c2, "... continues at 20 with the same logits bit for bit");
        expect(llama_state_seq_get_size(ctx, 1) == 0, "saving sequence 1 is refused (size 0)");
        expect(decode(ctx, toks, 23, 1, nullptr) == 0, "a refused save leaves decoding working");
    }

    llama_memory_seq_keep(mem, 0);
    expect(decode(ctx, toks, 24, 1, nullptr) == 0, "seq_keep(0) is accepted (nothing removed)");

    expect(!llama_memory_seq_rm(mem, 0, 4, 8), "seq_rm of positions [4, 8) is refused");
    expect(decode(ctx, toks, 25, 1, nullptr) != 0, "decode after the refused seq_rm fails");

    llama_memory_clear(mem, true);
    expect(decode(ctx, toks, 0, 16, &b) == 0, "after llama_memory_clear, prefill from position 0 works");
    expect(a == b, "... and gives the logits of the first prefill bit for bit");

    llama_memory_seq_add(mem, 0, 8, -1, -2);
    expect(decode(ctx, toks, 14, 1, nullptr) != 0 && decode(ctx, toks, 16, 1, nullptr) != 0,
           "decode after a refused seq_add (shift) fails");

    expect(llama_memory_seq_rm(mem, -1, -1, -1), "seq_rm of every position (a clear) is accepted");
    expect(decode(ctx, toks, 0, 16, &b) == 0 && a == b, "... and prefill from 0 gives the same logits");

    llama_memory_seq_div(mem, 0, 0, 8, 2);
    expect(decode(ctx, toks, 16, 1, nullptr) != 0, "decode after a refused seq_div fails");

    llama_memory_clear(mem, true);
    expect(decode(ctx, toks, 0, 16, nullptr) == 0, "clear, prefill");
    llama_memory_seq_cp(mem, 0, 1, 0, 8);
    expect(decode(ctx, toks, 16, 1, nullptr) != 0, "decode after a refused seq_cp fails");

    llama_memory_clear(mem, true);
    expect(decode(ctx, toks, 0, 16, nullptr) == 0 && llama_memory_seq_rm(mem, 0, 0, -1) &&
           decode(ctx, toks, 0, 8, nullptr) == 0, "seq_rm(0, 0, -1) removes everything; prefill from 0 works");
    llama_memory_seq_keep(mem, 1);
    expect(decode(ctx, toks, 0, 8, nullptr) == 0, "seq_keep(1) removes sequence 0 entirely; prefill from 0 works");

    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    std::printf("%s: %d failed\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
