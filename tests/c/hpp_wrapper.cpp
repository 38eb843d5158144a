// Checks of include/attnsketch.hpp through the shared library: statuses become
// attnsketch::error with the right code and text, wrong sizes throw before the
// library is called and change nothing, batched = per-token bitwise, moved-from
// handles throw instead of crashing, serialization round-trips with the dims
// read back from the buffer. Exits non-zero when a check fails.
#include "attnsketch.hpp"

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

static int failures = 0;
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

// Runs f, which must throw attnsketch::error with status `want`.
template <class F>
static void expect_error(F &&f, as_status want, int line) {
    try {
        f();
        std::fprintf(stderr, "line %d: no exception, want status %d\n", line, int(want));
        failures++;
    } catch (const attnsketch::error &e) {
        if (e.status() != want || std::strcmp(e.status_string(), as_status_string(want)) != 0 ||
            std::string(e.what()).find(as_status_string(want)) == std::string::npos) {
            std::fprintf(stderr, "line %d: status %d (%s), want %d\n", line, int(e.status()), e.what(), int(want));
            failures++;
        }
    }
}
#define EXPECT_ERROR(expr, want) expect_error([&] { expr; }, want, __LINE__)

static std::uint64_t rng = 11;
static float uni() {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return float(double(rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static std::vector<float> random_vec(std::size_t n) {
    std::vector<float> x(n);
    for (auto &e : x) e = uni();
    return x;
}

static void sketch_checks() {
    const std::uint32_t d = 8, dv = 6, n = 40;
    as_config cfg = attnsketch::default_config(d);
    cfg.value_dim = dv;
    attnsketch::Sketch a(cfg), b(cfg);
    CHECK(a.head_dim() == d && a.value_dim() == dv);
    CHECK(a.state_bytes() > 0 && a.feature_count() == 45); // binom(8 + 2, 2)
    const auto q = random_vec(n * d), k = random_vec(n * d), v = random_vec(n * dv);
    std::vector<float> out_a(n * dv), out_b(n * dv);
    for (std::uint32_t t = 0; t < n; t++)
        a.push_token(attnsketch::array_view<const float>(q.data() + t * d, d), {k.data() + t * d, d},
                     {v.data() + t * dv, dv}, {out_a.data() + t * dv, dv});
    b.push_tokens(q, k, v, out_b);
    CHECK(std::memcmp(out_a.data(), out_b.data(), out_a.size() * sizeof(float)) == 0);
    CHECK(a.token_count() == n && b.token_count() == n);

    // Wrong sizes: refused by the wrapper, nothing absorbed, out untouched.
    std::vector<float> row(d, 0.25f), vrow(dv, 0.5f), out(dv, -7.0f), longer(d + 1, 0.0f);
    EXPECT_ERROR(a.push_token(longer, row, vrow, out), AS_ERR_INVALID_ARG);
    EXPECT_ERROR(a.push_token(row, row, row, out), AS_ERR_INVALID_ARG); // v has d != dv
    EXPECT_ERROR(b.push_tokens(longer, row, vrow, out), AS_ERR_INVALID_ARG);
    CHECK(a.token_count() == n && out[0] == -7.0f);

    // Library refusals: NaN -> AS_ERR_NON_FINITE, state untouched.
    row[3] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_ERROR(a.push_token(row, row, vrow, out), AS_ERR_NON_FINITE);
    CHECK(a.token_count() == n && out[0] == -7.0f);
    EXPECT_ERROR(a.append_kv(row, vrow), AS_ERR_WRONG_MODE); // causal head
    row[3] = 0.25f;

    // Containers of every kind: std::array, C array.
    std::array<float, d> qa{};
    float out_c[dv];
    for (auto &e : qa) e = uni();
    a.query(qa, out_c);
    for (float x : out_c) CHECK(std::isfinite(x));

    // Serialization round trip: dims from the buffer, identical continuation.
    const std::vector<std::uint8_t> bytes = a.serialize();
    attnsketch::Sketch c = attnsketch::Sketch::deserialize(bytes);
    CHECK(c.head_dim() == d && c.value_dim() == dv && c.token_count() == n);
    std::vector<float> o1(dv), o2(dv);
    a.push_token(row, row, vrow, o1);
    c.push_token(row, row, vrow, o2);
    CHECK(std::memcmp(o1.data(), o2.data(), dv * sizeof(float)) == 0);
    std::vector<std::uint8_t> bad = bytes;
    bad[bad.size() / 2] ^= 1;
    EXPECT_ERROR(attnsketch::Sketch::deserialize(bad), AS_ERR_CORRUPT);

    // Merge: equal config and seed required; dst == src refused.
    attnsketch::Sketch m(cfg);
    m.merge(b);
    CHECK(m.token_count() == n);
    EXPECT_ERROR(m.merge(m), AS_ERR_INVALID_ARG);

    // Moved-from: NULL inside, calls throw AS_ERR_NULL, queries answer 0.
    attnsketch::Sketch moved = std::move(a);
    CHECK(moved.token_count() == n + 1);
    EXPECT_ERROR(a.push_token(row, row, vrow, out), AS_ERR_NULL); // NOLINT(bugprone-use-after-move)
    CHECK(a.state_bytes() == 0 && a.get() == nullptr && a.level_name() == nullptr);

    // release(): ownership back to C.
    as_sketch *raw = moved.release();
    CHECK(raw != nullptr && moved.get() == nullptr);
    attnsketch::Sketch adopted(attnsketch::sketch_ptr(raw), d, dv);
    CHECK(adopted.token_count() == n + 1);

    // Non-causal head.
    as_config nc = cfg;
    nc.mode = AS_MODE_NONCAUSAL;
    attnsketch::Sketch h(nc);
    h.append_kv(row, vrow);
    h.push_query(row, out);
    CHECK(std::fabs(out[0] - 0.5f) < 1e-5f); // one token: its value
    EXPECT_ERROR(h.push_token(row, row, vrow, out), AS_ERR_WRONG_MODE);
}

static void bank_checks() {
    const std::uint32_t d = 16, nq = 6, nkv = 2, n = 33;
    const as_config cfg = attnsketch::default_config(d);
    attnsketch::Bank prefill(cfg, nq, nkv), step(cfg, nq, nkv);
    CHECK(prefill.q_heads() == nq && prefill.kv_heads() == nkv && prefill.head_dim() == d);
    const std::size_t bytes0 = prefill.state_bytes();
    CHECK(bytes0 > 0);
    const auto q = random_vec(n * nq * d), k = random_vec(n * nkv * d), v = random_vec(n * nkv * d);
    std::vector<float> out_p(n * nq * d), out_s(n * nq * d);
    prefill.push_tokens(q, k, v, out_p);
    for (std::uint32_t t = 0; t < n; t++)
        step.push_token(attnsketch::array_view<const float>(q.data() + t * nq * d, nq * d),
                        {k.data() + t * nkv * d, nkv * d}, {v.data() + t * nkv * d, nkv * d},
                        {out_s.data() + t * nq * d, nq * d});
    CHECK(std::memcmp(out_p.data(), out_s.data(), out_p.size() * sizeof(float)) == 0);
    CHECK(prefill.state_bytes() == bytes0);
    for (float x : out_p) CHECK(std::isfinite(x));

    std::vector<float> one_q(nq * d), one_kv(nkv * d), one_out(nq * d);
    EXPECT_ERROR(prefill.push_token(one_kv, one_kv, one_kv, one_out), AS_ERR_INVALID_ARG);
    EXPECT_ERROR(prefill.push_tokens(q, k, one_kv, out_p), AS_ERR_INVALID_ARG);
    EXPECT_ERROR(attnsketch::Bank(cfg, 5, 2), AS_ERR_INVALID_ARG); // 5 % 2 != 0
    // The inputs alias the output: refused by the library, nothing absorbed.
    std::vector<float> both(nq * d);
    EXPECT_ERROR(prefill.push_tokens(both, {both.data(), nkv * d}, {both.data(), nkv * d}, both),
                 AS_ERR_INVALID_ARG);

    // A hybrid bank from a budget.
    const as_config hy = attnsketch::budget_config(attnsketch::default_config(d), 64 * 1024);
    CHECK(hy.window_tokens > 0);
    attnsketch::Bank hb(hy, nq, nkv);
    hb.push_tokens(q, k, v, out_p);
    for (float x : out_p) CHECK(std::isfinite(x));
    EXPECT_ERROR(attnsketch::budget_config(attnsketch::default_config(d), 16), AS_ERR_INVALID_ARG);
    EXPECT_ERROR(attnsketch::default_config(0), AS_ERR_INVALID_ARG);

    attnsketch::Bank moved = std::move(hb);
    EXPECT_ERROR(hb.push_token(one_q, one_kv, one_kv, one_out), AS_ERR_NULL); // NOLINT(bugprone-use-after-move)
    CHECK(hb.state_bytes() == 0 && moved.state_bytes() > 0);
}

int main() {
    CHECK(std::strcmp(attnsketch::version_string(), ATTNSKETCH_VERSION_STRING) == 0);
    CHECK(attnsketch::cpu_level_name() != nullptr);
    try {
        sketch_checks();
        bank_checks();
    } catch (const attnsketch::error &e) {
        std::fprintf(stderr, "unexpected attnsketch::error: %s (status %d)\n", e.what(), int(e.status()));
        return 1;
    }
    if (failures) {
        std::fprintf(stderr, "hpp_wrapper: %d checks failed\n", failures);
        return 1;
    }
    std::printf("hpp_wrapper: all checks passed\n");
    return 0;
}
