/*
 * A minimal C inference loop over attnsketch: one head, one as_push_token per
 * token, checked against exact softmax attention computed here in double.
 * Bounded-entry regime of the paper (d = 16, degree 4, scale 1/d), where the
 * polynomial sketch is accurate.
 *
 *   cc -Wall -Wextra -Werror -Iinclude c-examples/inference_loop.c \
 *      -Ltarget/release -lattnsketch -lm -Wl,-rpath,target/release
 *
 * Exits 1 if the relative error exceeds 1e-3 or any call fails.
 */
#include "attnsketch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { D = 16, N = 2048 };

static uint64_t rng = 0x243F6A8885A308D3ull;
static float uni(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

int main(void) {
    as_config cfg;
    as_status st = as_config_init(&cfg, D);
    if (st != AS_OK) { fprintf(stderr, "config: %s\n", as_status_string(st)); return 1; }
    cfg.degree = 4;
    cfg.scale = 1.0f / D;
    as_sketch *h = NULL;
    if ((st = as_create(&cfg, &h)) != AS_OK) { fprintf(stderr, "create: %s\n", as_status_string(st)); return 1; }

    static float Q[N][D], K[N][D], V[N][D], O[N][D];
    for (int j = 0; j < N; j++)
        for (int c = 0; c < D; c++) {
            Q[j][c] = 1.5f * uni();
            K[j][c] = 1.5f * uni();
            V[j][c] = uni() + 0.5f * K[j][c]; /* values depend on keys */
        }

    double err2 = 0, ref2 = 0;
    for (int j = 0; j < N; j++) {
        if ((st = as_push_token(h, Q[j], K[j], V[j], O[j])) != AS_OK) {
            fprintf(stderr, "push %d: %s\n", j, as_status_string(st));
            return 1;
        }
        if (j % 64 != 63) continue; /* exact check on every 64th token: O(N^2 / 64) */
        double mx = -INFINITY, s[N];
        for (int i = 0; i <= j; i++) {
            double x = 0;
            for (int c = 0; c < D; c++) x += (double)Q[j][c] * K[i][c];
            s[i] = x * cfg.scale;
            if (s[i] > mx) mx = s[i];
        }
        double den = 0, num[D] = {0};
        for (int i = 0; i <= j; i++) {
            double w = exp(s[i] - mx);
            den += w;
            for (int c = 0; c < D; c++) num[c] += w * V[i][c];
        }
        for (int c = 0; c < D; c++) {
            double e = O[j][c] - num[c] / den;
            err2 += e * e;
            ref2 += (num[c] / den) * (num[c] / den);
        }
    }
    double rel = sqrt(err2 / ref2);
    size_t bytes = as_state_bytes(h);
    size_t kv = (size_t)N * (D + D) * sizeof(float);
    printf("attnsketch %s: %llu tokens, relative error %.2e vs exact softmax\n", as_version_string(),
           (unsigned long long)as_token_count(h), rel);
    printf("state %zu bytes (fixed) vs KV cache %zu bytes at n = %d (grows by %zu bytes/token)\n", bytes, kv,
           N, (size_t)(D + D) * sizeof(float));
    as_free(h);
    return rel < 1e-3 ? 0 : 1;
}
