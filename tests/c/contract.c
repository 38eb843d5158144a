/*
 * Black-box checks of the C ABI contract (docs/c-api-contract.md) through the
 * shared library: refusals change nothing, twins are bit-identical, batched
 * and per-token pushes agree, memory does not grow, bad configs are refused.
 * Exits non-zero on the first failed check.
 */
#include "attnsketch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                            \
        }                                                                       \
    } while (0)
#define OK(call) CHECK((call) == AS_OK)

enum { D = 16, DV = 12, N = 300 };

static uint64_t rng = 42;
static float uni(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}
static void fill(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = uni();
}

static as_sketch *make(int degree, as_mode mode) {
    as_config c;
    OK(as_config_init(&c, D));
    c.value_dim = DV;
    c.degree = (uint32_t)degree;
    c.mode = mode;
    as_sketch *h = NULL;
    OK(as_create(&c, &h));
    CHECK(h != NULL);
    return h;
}

static void test_config_refusals(void) {
    as_config c;
    CHECK(as_config_init(NULL, 8) == AS_ERR_NULL);
    memset(&c, 0xAB, sizeof c);
    as_config before = c;
    CHECK(as_config_init(&c, 0) == AS_ERR_INVALID_ARG);
    CHECK(memcmp(&c, &before, sizeof c) == 0); /* nothing written */
    OK(as_config_init(&c, 64));
    CHECK(c.struct_size == sizeof(as_config));
    CHECK(c.head_dim == 64 && c.value_dim == 64 && c.degree == 2);
    CHECK(fabsf(c.scale - 0.125f) < 1e-7f);
    CHECK(c.mode == AS_MODE_CAUSAL && c.seed == 0 && c.recovery_k == 0);

    as_sketch *h = (as_sketch *)0x1; /* must stay untouched on failure */
    as_config bad = c;
    bad.head_dim = 0;
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad = c;
    bad.value_dim = 0;
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad = c;
    bad.degree = 9; /* binom(73, 9): absurd state */
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad = c;
    bad.scale = NAN;
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad.scale = -1.0f;
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad.scale = 0.0f;
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad = c;
    bad.struct_size = 8; /* smaller than the fields read */
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad = c;
    bad.mode = (as_mode)7;
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad = c;
    bad.value_format = 3; /* no such format */
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad.value_format = AS_VALUES_F16; /* binary16 values need exact tokens */
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad.value_format = AS_VALUES_I8; /* so do int8 values */
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad = c;
    bad.key_format = 2; /* no such format */
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad.key_format = AS_KEYS_I16; /* int16 keys need exact tokens */
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    CHECK(h == (as_sketch *)0x1);
    CHECK(as_create(NULL, &h) == AS_ERR_NULL);
    CHECK(as_create(&c, NULL) == AS_ERR_NULL);
    CHECK(h == (as_sketch *)0x1);
}

/* Refused calls change nothing: a twin that never saw them stays bit-identical. */
static void test_refusals_change_nothing(void) {
    as_sketch *a = make(2, AS_MODE_CAUSAL), *b = make(2, AS_MODE_CAUSAL);
    float q[D], k[D], v[DV], oa[DV], ob[DV];
    for (int j = 0; j < 100; j++) {
        fill(q, D), fill(k, D), fill(v, DV);
        OK(as_push_token(a, q, k, v, oa));
        OK(as_push_token(b, q, k, v, ob));
    }
    size_t bytes = as_state_bytes(a);
    float sentinel[DV];
    for (int i = 0; i < DV; i++) sentinel[i] = oa[i] = 123.0f;
    float bad[D];
    fill(q, D), fill(k, D), fill(v, DV);
    memcpy(bad, k, sizeof bad);
    bad[3] = NAN;
    CHECK(as_push_token(a, q, bad, v, oa) == AS_ERR_NON_FINITE);
    bad[3] = INFINITY;
    CHECK(as_push_token(a, bad, k, v, oa) == AS_ERR_NON_FINITE);
    float badv[DV];
    memcpy(badv, v, sizeof badv);
    badv[DV - 1] = -INFINITY;
    CHECK(as_push_token(a, q, k, badv, oa) == AS_ERR_NON_FINITE);
    CHECK(as_push_token(a, NULL, k, v, oa) == AS_ERR_NULL);
    CHECK(as_push_token(a, q, NULL, v, oa) == AS_ERR_NULL);
    CHECK(as_push_token(a, q, k, NULL, oa) == AS_ERR_NULL);
    CHECK(as_push_token(a, q, k, v, NULL) == AS_ERR_NULL);
    CHECK(as_push_token(NULL, q, k, v, oa) == AS_ERR_NULL);
    CHECK(as_append_kv(a, k, v) == AS_ERR_WRONG_MODE);
    CHECK(as_push_query(a, q, oa) == AS_ERR_WRONG_MODE);
    float huge[D];
    for (int i = 0; i < D; i++) huge[i] = 1e30f; /* features overflow f32 */
    CHECK(as_push_token(a, q, huge, v, oa) == AS_ERR_RANGE);
    /* Batch with one bad token at the end: nothing absorbed. */
    float Q[4 * D], K[4 * D], V[4 * DV], O[4 * DV];
    fill(Q, 4 * D), fill(K, 4 * D), fill(V, 4 * DV);
    V[4 * DV - 1] = NAN;
    CHECK(as_push_tokens(a, 4, Q, K, V, O) == AS_ERR_NON_FINITE);
    CHECK(memcmp(oa, sentinel, sizeof oa) == 0); /* no output written */
    CHECK(as_token_count(a) == 100);
    CHECK(as_state_bytes(a) == bytes);
    /* The same next tokens give bit-identical outputs on both. */
    for (int j = 0; j < 50; j++) {
        fill(q, D), fill(k, D), fill(v, DV);
        OK(as_push_token(a, q, k, v, oa));
        OK(as_push_token(b, q, k, v, ob));
        CHECK(memcmp(oa, ob, sizeof oa) == 0);
    }
    as_free(a);
    as_free(b);
}

static void test_batched_equals_per_token(void) {
    as_sketch *a = make(3, AS_MODE_CAUSAL), *b = make(3, AS_MODE_CAUSAL);
    static float Q[N * D], K[N * D], V[N * DV], OA[N * DV], OB[N * DV];
    fill(Q, N * D), fill(K, N * D), fill(V, N * DV);
    for (int j = 0; j < N; j++) OK(as_push_token(a, Q + j * D, K + j * D, V + j * DV, OA + j * DV));
    OK(as_push_tokens(b, 100, Q, K, V, OB));
    OK(as_push_tokens(b, N - 100, Q + 100 * D, K + 100 * D, V + 100 * DV, OB + 100 * DV));
    /* Block form sums in another order: equal within 1e-5 of each output's scale. */
    for (int j = 0; j < N; j++) {
        float scale = 0.f, diff = 0.f;
        for (int c = 0; c < DV; c++) {
            float x = fabsf(OA[j * DV + c]), e = fabsf(OA[j * DV + c] - OB[j * DV + c]);
            scale = x > scale ? x : scale;
            diff = e > diff ? e : diff;
        }
        CHECK(diff <= 1e-5f * (scale > 1.f ? scale : 1.f));
    }
    CHECK(as_token_count(b) == N);
    /* Both handles hold the same state: the next token agrees too. */
    float q1[D], k1[D], v1[DV], o1[DV], o2[DV];
    fill(q1, D), fill(k1, D), fill(v1, DV);
    OK(as_push_token(a, q1, k1, v1, o1));
    OK(as_push_token(b, q1, k1, v1, o2));
    for (int c = 0; c < DV; c++) CHECK(fabsf(o1[c] - o2[c]) <= 1e-5f * (1.f + fabsf(o1[c])));
    as_free(a);
    as_free(b);
}

static void test_memory_flat_and_noncausal(void) {
    as_sketch *h = make(2, AS_MODE_NONCAUSAL);
    size_t b0 = as_state_bytes(h);
    CHECK(b0 > 0);
    float q[D], k[D], v[DV], o[DV], o2[DV];
    for (int j = 0; j < 5000; j++) {
        fill(k, D), fill(v, DV);
        OK(as_append_kv(h, k, v));
    }
    CHECK(as_state_bytes(h) == b0);
    CHECK(as_token_count(h) == 5000);
    fill(q, D);
    OK(as_query(h, q, o));
    OK(as_push_query(h, q, o2));
    CHECK(memcmp(o, o2, sizeof o) == 0);
    CHECK(as_push_token(h, q, k, v, o) == AS_ERR_WRONG_MODE);
    for (int i = 0; i < DV; i++) CHECK(isfinite(o[i]));
    as_free(h);
}

static void test_misc(void) {
    as_free(NULL);
    as_bank_free(NULL);
    CHECK(as_token_count(NULL) == 0);
    CHECK(as_state_bytes(NULL) == 0);
    CHECK(strcmp(as_status_string(AS_OK), "ok") == 0);
    CHECK(as_status_string(12345) != NULL && strlen(as_status_string(-7)) > 0);
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", ATTNSKETCH_VERSION_MAJOR, ATTNSKETCH_VERSION_MINOR,
             ATTNSKETCH_VERSION_PATCH);
    CHECK(strcmp(as_version_string(), want) == 0);
    CHECK(strcmp(ATTNSKETCH_VERSION_STRING, want) == 0);
}

/* Budget presets: the paged 4-bit formats for a caller that has both
   format fields (d = 64), f32 values for one whose struct_size predates
   value_format (the field is then neither read nor written), int8 values
   and f32 keys for one whose struct ends at value_format; all stay within
   the budget, and the smaller formats buy more exact tokens. */
static void test_budget_value_format(void) {
    size_t budget = 1u << 20;
    as_config c;
    OK(as_config_init(&c, 64));
    OK(as_config_for_budget(&c, budget));
    CHECK(c.value_format == AS_VALUES_U4);
    CHECK(c.key_format == AS_KEYS_U4);
    CHECK(c.window_tokens % 32 == 0 && c.window_tokens > 0);
    CHECK(c.sink_tokens + c.window_tokens + c.heavy_tokens >= 8192);
    as_sketch *h = NULL;
    OK(as_create(&c, &h));
    CHECK(as_state_bytes(h) <= budget);
    as_free(h);

    as_config big;
    OK(as_config_init(&big, 64));
    OK(as_config_for_budget(&big, 2 * budget));
    CHECK(big.value_format == AS_VALUES_U4 && big.key_format == AS_KEYS_U4);
    CHECK(big.window_tokens > c.window_tokens * 3 / 2);
    OK(as_create(&big, &h));
    CHECK(as_state_bytes(h) <= 2 * budget);
    as_free(h);

    as_config old;
    OK(as_config_init(&old, 64));
    old.struct_size = (uint32_t)offsetof(as_config, value_format);
    old.value_format = 77; /* beyond struct_size: must stay untouched */
    OK(as_config_for_budget(&old, budget));
    CHECK(old.value_format == 77);
    OK(as_create(&old, &h));
    CHECK(as_state_bytes(h) <= budget);
    as_free(h);
    CHECK(c.window_tokens + c.heavy_tokens > (old.window_tokens + old.heavy_tokens) * 5 / 4);

    /* A caller whose struct ends at value_format (the 4 padding bytes after
       it hold garbage): int8 values, f32 keys, key_format untouched. */
    as_config mid;
    OK(as_config_init(&mid, 64));
    mid.struct_size = (uint32_t)offsetof(as_config, reserved0);
    mid.key_format = 55;
    mid.reserved0 = 0xdeadbeefu;
    OK(as_config_for_budget(&mid, budget));
    CHECK(mid.value_format == AS_VALUES_I8);
    CHECK(mid.key_format == 55);
    OK(as_create(&mid, &h));
    CHECK(as_state_bytes(h) <= budget);
    as_free(h);
    /* int16 keys buy more exact tokens again. */
    CHECK(c.window_tokens + c.heavy_tokens > (mid.window_tokens + mid.heavy_tokens) * 5 / 4);
}

/* The paged formats: both or neither, dims and window in whole 32s; an
   input beyond the 4-bit range is refused with AS_ERR_RANGE and changes
   nothing (the serialized state is byte-identical). */
static void test_paged_contract(void) {
    as_config c;
    OK(as_config_init(&c, 64));
    OK(as_config_for_budget(&c, 64u << 10));
    CHECK(c.key_format == AS_KEYS_U4 && c.value_format == AS_VALUES_U4);
    as_sketch *h = (as_sketch *)0x1;
    as_config bad = c;
    bad.value_format = AS_VALUES_F16;
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    bad = c;
    bad.window_tokens += 1;
    CHECK(as_create(&bad, &h) == AS_ERR_INVALID_ARG);
    as_config odd;
    OK(as_config_init(&odd, 48));
    odd.key_format = AS_KEYS_U4;
    odd.value_format = AS_VALUES_U4;
    odd.sink_tokens = 4;
    odd.window_tokens = 64;
    CHECK(as_create(&odd, &h) == AS_ERR_INVALID_ARG);
    CHECK(h == (as_sketch *)0x1);

    OK(as_create(&c, &h));
    float q[64], k[64], v[64], out[64];
    for (int t = 0; t < 100; t++) {
        fill(q, 64), fill(k, 64), fill(v, 64);
        OK(as_push_token(h, q, k, v, out));
    }
    size_t n = 0;
    OK(as_serialize(h, NULL, 0, &n));
    unsigned char *a = malloc(n), *b = malloc(n);
    CHECK(a && b);
    OK(as_serialize(h, a, n, &n));
    k[5] = 20000.0f;
    CHECK(as_push_token(h, q, k, v, out) == AS_ERR_RANGE);
    k[5] = 0.5f;
    v[63] = -1e6f;
    CHECK(as_push_token(h, q, k, v, out) == AS_ERR_RANGE);
    size_t n2 = 0;
    OK(as_serialize(h, b, n, &n2));
    CHECK(n2 == n && memcmp(a, b, n) == 0);
    CHECK(as_token_count(h) == 100);
    free(a), free(b);
    as_free(h);
}

int main(void) {
    test_config_refusals();
    test_refusals_change_nothing();
    test_batched_equals_per_token();
    test_memory_flat_and_noncausal();
    test_misc();
    test_budget_value_format();
    test_paged_contract();
    printf("contract: all checks passed\n");
    return 0;
}
