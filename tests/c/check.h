/* Tiny assertion helpers shared by the C tests: each failure prints its line
   and makes main return non-zero. */
#ifndef AS_TEST_CHECK_H
#define AS_TEST_CHECK_H
#include <stdio.h>

static int g_failures = 0;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                \
            g_failures++;                                                  \
        }                                                                  \
    } while (0)

#define CHECK_ST(call, want)                                                 \
    do {                                                                     \
        as_status st_ = (call);                                              \
        if (st_ != (want)) {                                                 \
            fprintf(stderr, "%s:%d: %s returned %d (%s), want %d\n", __FILE__, \
                    __LINE__, #call, (int)st_, as_status_string(st_), (int)(want)); \
            g_failures++;                                                    \
        }                                                                    \
    } while (0)

/* Deterministic uniform floats in [-1, 1). */
static unsigned long long g_rng = 0x9E3779B97F4A7C15ull;
static float rnd(void) {
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

#endif
