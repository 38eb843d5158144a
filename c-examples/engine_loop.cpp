// The header from C++: a GQA layer (as_bank) in a decode loop, RAII-owned.
// Built and run by `cargo test` (tests/c_programs.rs) with -Wall -Wextra -Werror.
#include "attnsketch.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

struct BankDeleter {
    void operator()(as_bank *b) const { as_bank_free(b); }
};

int main() {
    const uint32_t d = 32, n_q = 8, n_kv = 2, steps = 512;
    as_config cfg;
    if (as_config_init(&cfg, d) != AS_OK) return 1;
    as_bank *raw = nullptr;
    as_status st = as_bank_create(&cfg, n_q, n_kv, &raw);
    if (st != AS_OK) {
        std::fprintf(stderr, "bank: %s\n", as_status_string(st));
        return 1;
    }
    std::unique_ptr<as_bank, BankDeleter> bank(raw);
    std::vector<float> q(n_q * d), k(n_kv * d), v(n_kv * d), out(n_q * d);
    uint64_t s = 7;
    auto uni = [&s]() {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return float((s >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
    };
    const size_t bytes0 = as_bank_state_bytes(bank.get());
    for (uint32_t t = 0; t < steps; t++) {
        for (auto &x : q) x = 0.5f * uni();
        for (auto &x : k) x = 0.5f * uni();
        for (auto &x : v) x = uni();
        if ((st = as_bank_push_token(bank.get(), q.data(), k.data(), v.data(), out.data())) != AS_OK) {
            std::fprintf(stderr, "push: %s\n", as_status_string(st));
            return 1;
        }
        for (float x : out)
            if (!std::isfinite(x)) return 1;
    }
    if (as_bank_state_bytes(bank.get()) != bytes0) return 1;
    std::printf("C++ bank: %u query heads over %u kv states, %u tokens, %zu state bytes (fixed)\n", n_q, n_kv,
                steps, bytes0);
    return 0;
}
