/*
 * The paper's decode through the shared library: non-causal outputs recorded
 * by as_push_query, then as_recover_column checked against the l2/l2 bound
 * ||T_col - y|| <= (1 + eps) min_{k-sparse y'} ||T_col - y'|| (+ a small
 * float allowance) on the outputs the program itself received, and
 * as_heavy_tokens finding a planted key. Exits non-zero on a failed check.
 */
#include "attnsketch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                       \
    do {                                                                               \
        if (!(c)) {                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c);     \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

enum { D = 16, NK = 512, NQ = 3000, K = 8 };

static uint64_t rng = 99;
static float uni(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

static int cmp_desc(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

int main(void) {
    as_config c;
    CHECK(as_config_init(&c, D) == AS_OK);
    c.degree = 4;
    c.scale = 1.0f / D;
    c.mode = AS_MODE_NONCAUSAL;
    c.recovery_k = K;
    c.recovery_eps = 0.5f;
    c.retrieval_k = K;
    c.seed = 7;
    as_sketch *h = NULL;
    CHECK(as_create(&c, &h) == AS_OK);

    static float k[NK][D], v[NK][D], q[D], out[NQ][D];
    const int planted = 137;
    for (int j = 0; j < NK; j++)
        for (int i = 0; i < D; i++) {
            k[j][i] = uni();
            v[j][i] = 0.1f * uni();
        }
    for (int i = 0; i < D; i++) {
        k[planted][i] = (i % 2) ? 2.0f : -2.0f;
        v[planted][i] = 3.0f;
    }
    for (int j = 0; j < NK; j++) CHECK(as_append_kv(h, k[j], v[j]) == AS_OK);

    uint64_t idx[K];
    float val[K];
    uint32_t found = 99;
    CHECK(as_recover_column(h, 0, K, idx, val, &found) == AS_OK && found == 0); /* nothing recorded */

    /* Queries: mostly random; every 100th aligned with the planted key (heavy output). */
    for (int t = 0; t < NQ; t++) {
        for (int i = 0; i < D; i++) q[i] = (t % 100 == 5) ? k[planted][i] : uni();
        CHECK(as_push_query(h, q, out[t]) == AS_OK);
    }

    /* Failure modes. */
    CHECK(as_recover_column(h, D, K, idx, val, &found) == AS_ERR_INVALID_ARG);
    CHECK(as_recover_column(h, 0, K + 1, idx, val, &found) == AS_ERR_INVALID_ARG);
    CHECK(as_recover_column(h, 0, K, NULL, val, &found) == AS_ERR_NULL);
    CHECK(as_recover_column(h, 0, 0, idx, val, &found) == AS_OK && found == 0);

    for (uint32_t col = 0; col < 3; col++) {
        CHECK(as_recover_column(h, col, K, idx, val, &found) == AS_OK);
        CHECK(found <= K);
        static double y[NQ], sq[NQ];
        memset(y, 0, sizeof y);
        double norm2 = 0;
        for (int t = 0; t < NQ; t++) {
            sq[t] = (double)out[t][col] * out[t][col];
            norm2 += sq[t];
        }
        for (uint32_t r = 0; r < found; r++) {
            CHECK(idx[r] < NQ);
            if (r > 0) CHECK(fabsf(val[r]) <= fabsf(val[r - 1]));
            y[idx[r]] = val[r];
        }
        double err2 = 0;
        for (int t = 0; t < NQ; t++) err2 += (out[t][col] - y[t]) * (out[t][col] - y[t]);
        qsort(sq, NQ, sizeof sq[0], cmp_desc);
        double best2 = 0;
        for (int t = K; t < NQ; t++) best2 += sq[t];
        double bound = 1.5 * sqrt(best2) + 1e-4 * sqrt(norm2);
        printf("column %u: ||T - y|| = %.4f, best %d-term error %.4f, bound %.4f\n", col, sqrt(err2), K,
               sqrt(best2), bound);
        CHECK(sqrt(err2) <= bound);
    }

    /* Retrieval: the planted key is the heaviest token of an aligned query. */
    float w[K];
    CHECK(as_heavy_tokens(h, k[planted], K + 1, idx, w, &found) == AS_ERR_INVALID_ARG);
    CHECK(as_heavy_tokens(h, k[planted], K, idx, w, &found) == AS_OK);
    CHECK(found >= 1 && found <= K);
    CHECK(idx[0] == (uint64_t)planted);
    for (uint32_t r = 1; r < found; r++) CHECK(w[r] <= w[r - 1]);
    printf("heavy tokens: top-1 = %llu (planted %d), weight %.3f\n", (unsigned long long)idx[0], planted, w[0]);

    /* A handle without the sketches. */
    as_sketch *plain = NULL;
    c.recovery_k = 0;
    c.retrieval_k = 0;
    CHECK(as_create(&c, &plain) == AS_OK);
    CHECK(as_recover_column(plain, 0, 1, idx, val, &found) == AS_ERR_WRONG_MODE);
    CHECK(as_heavy_tokens(plain, q, 1, idx, w, &found) == AS_ERR_WRONG_MODE);
    as_free(plain);
    as_free(h);
    printf("recovery: all checks passed\n");
    return 0;
}
