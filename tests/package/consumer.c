/*
 * An outside C program against an installed attnsketch, built by
 * scripts/package-test.sh with `pkg-config --cflags --libs attnsketch`
 * (shared) and with the static library. Streams a prompt and decode steps
 * through one SmolLM2-shaped layer (9 query heads over 3 kv heads, d = 64)
 * with the bank API; exits non-zero when a status, output or size is wrong.
 */
#include <attnsketch.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { D = 64, NQ = 9, NKV = 3, PROMPT = 64, STEPS = 16 };

static int failures = 0;
#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
            failures++;                                                       \
        }                                                                     \
    } while (0)
#define OK(call)                                                              \
    do {                                                                      \
        as_status st_ = (call);                                               \
        if (st_ != AS_OK) {                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, as_status_string(st_)); \
            failures++;                                                       \
        }                                                                     \
    } while (0)

static unsigned long long rng = 5;
static float uni(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 40) / 16777216.0) * 2.0f - 1.0f;
}
static float *filled(size_t n) {
    float *x = malloc(n * sizeof *x);
    if (!x) exit(1);
    for (size_t i = 0; i < n; i++) x[i] = uni();
    return x;
}
static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

int main(void) {
    CHECK(strcmp(as_version_string(), ATTNSKETCH_VERSION_STRING) == 0);
    CHECK(as_version_number() == ATTNSKETCH_VERSION_NUMBER);

    as_config cfg;
    OK(as_config_init(&cfg, D));
    as_bank *batch = NULL, *single = NULL, *bad = NULL;
    OK(as_bank_create(&cfg, NQ, NKV, &batch));
    OK(as_bank_create(&cfg, NQ, NKV, &single));
    CHECK(as_bank_create(&cfg, NQ, 2, &bad) == AS_ERR_INVALID_ARG && bad == NULL);
    if (!batch || !single) return 1;
    const size_t bytes0 = as_bank_state_bytes(batch);
    CHECK(bytes0 > 0 && bytes0 == as_bank_state_bytes(single));

    const size_t n = PROMPT + STEPS, rq = NQ * D, rk = NKV * D;
    float *q = filled(n * rq), *k = filled(n * rk), *v = filled(n * rk);
    float *out_b = calloc(n * rq, sizeof(float)), *out_s = calloc(n * rq, sizeof(float));
    if (!out_b || !out_s) return 1;
    /* Prefill in one call, then decode one token at a time. */
    OK(as_bank_push_tokens(batch, PROMPT, q, k, v, out_b));
    for (size_t t = PROMPT; t < n; t++)
        OK(as_bank_push_token(batch, q + t * rq, k + t * rk, v + t * rk, out_b + t * rq));
    /* The same stream token by token: the block-form prefill sums the same
       terms in another order, so equal within 1e-5 of the output scale. */
    for (size_t t = 0; t < n; t++)
        OK(as_bank_push_token(single, q + t * rq, k + t * rk, v + t * rk, out_s + t * rq));
    CHECK(all_finite(out_b, n * rq));
    for (size_t i = 0; i < n * rq; i++) {
        float a = out_b[i], b = out_s[i], m = fabsf(b) > 1.f ? fabsf(b) : 1.f;
        if (!(fabsf(a - b) <= 1e-5f * m)) {
            CHECK(fabsf(a - b) <= 1e-5f * m);
            break;
        }
    }
    CHECK(as_bank_state_bytes(batch) == bytes0);
    CHECK(as_bank_push_token(NULL, q, k, v, out_b) == AS_ERR_NULL);
    q[3] = NAN;
    CHECK(as_bank_push_token(batch, q, k, v, out_b) == AS_ERR_NON_FINITE);

    printf("consumer.c: attnsketch %s, %s kernels, bank of %d q / %d kv heads (d = %d): %zu bytes, %zu tokens\n",
           as_version_string(), as_cpu_level_name(), NQ, NKV, D, bytes0, n);
    as_bank_free(batch);
    as_bank_free(single);
    as_bank_free(NULL);
    free(q), free(k), free(v), free(out_b), free(out_s);
    return failures ? 1 : 0;
}
