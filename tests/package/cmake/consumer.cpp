// An outside C++17 program against an installed attnsketch through CMake's
// find_package(attnsketch) (scripts/package-test.sh builds it against the
// shared and the static target). A SmolLM2-shaped layer (9 query heads over
// 3 kv heads, d = 64) of hybrid heads: prefill, then decode, via the RAII
// wrappers of attnsketch.hpp and the raw bank API. Exits non-zero on failure.
#include <attnsketch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

int main() {
    const std::uint32_t d = 64, nq = 9, nkv = 3, prompt = 96, steps = 32;
    int failures = 0;
    auto check = [&failures](bool ok, const char *what) {
        if (!ok) {
            std::fprintf(stderr, "check failed: %s\n", what);
            failures++;
        }
    };
    check(std::strcmp(attnsketch::version_string(), ATTNSKETCH_VERSION_STRING) == 0, "version");
    try {
        const as_config cfg = attnsketch::budget_config(attnsketch::default_config(d), 64 * 1024);
        attnsketch::Bank bank(cfg, nq, nkv);
        const std::size_t bytes0 = bank.state_bytes();
        check(bytes0 > 0 && as_bank_state_bytes(bank.get()) == bytes0, "state bytes");

        std::uint64_t s = 3;
        auto uni = [&s]() {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            return float(double(s >> 40) / 16777216.0) * 2.0f - 1.0f;
        };
        const std::size_t rq = std::size_t(nq) * d, rk = std::size_t(nkv) * d;
        std::vector<float> q(prompt * rq), k(prompt * rk), v(prompt * rk), out(prompt * rq);
        for (auto *x : {&q, &k, &v})
            for (auto &e : *x) e = uni();
        bank.push_tokens(q, k, v, out); // as_bank_push_tokens: the prompt
        std::vector<float> q1(rq), k1(rk), v1(rk), o1(rq);
        for (std::uint32_t t = 0; t < steps; t++) { // as_bank_push_token: decode
            for (auto *x : {&q1, &k1, &v1})
                for (auto &e : *x) e = uni();
            bank.push_token(q1, k1, v1, o1);
            for (float e : o1) check(std::isfinite(e), "finite decode output");
        }
        for (float e : out) check(std::isfinite(e), "finite prefill output");
        check(bank.state_bytes() == bytes0, "fixed memory");
        try {
            bank.push_token(k1, k1, v1, o1); // q of the wrong size
            check(false, "size mismatch throws");
        } catch (const attnsketch::error &e) {
            check(e.status() == AS_ERR_INVALID_ARG, "size mismatch status");
        }
        std::printf("consumer.cpp: attnsketch %s, hybrid bank (%u sinks, %u window, %u heavy) of %u q / %u kv heads: "
                    "%zu bytes after %u tokens\n",
                    attnsketch::version_string(), cfg.sink_tokens, cfg.window_tokens, cfg.heavy_tokens, nq, nkv, bytes0,
                    prompt + steps);
    } catch (const attnsketch::error &e) {
        std::fprintf(stderr, "attnsketch::error: %s\n", e.what());
        return 1;
    }
    return failures ? 1 : 0;
}
