/* NaN, Inf, huge and denormal inputs through the C ABI: refused inputs give
   their status, write no output and leave the state bit-identical (compared
   through as_serialize); accepted ones give finite outputs. */
#include "attnsketch.h"
#include "check.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { D = 5, DV = 3 };

static uint8_t *snap(const as_sketch *h, size_t *len) {
    size_t need = 0, w = 0;
    CHECK_ST(as_serialize(h, NULL, 0, &need), AS_OK);
    uint8_t *b = malloc(need);
    CHECK_ST(as_serialize(h, b, need, &w), AS_OK);
    *len = need;
    return b;
}

static int same(const as_sketch *h, const uint8_t *ref, size_t len) {
    size_t l2;
    uint8_t *b = snap(h, &l2);
    int eq = l2 == len && memcmp(b, ref, len) == 0;
    free(b);
    return eq;
}

int main(void) {
    as_config c;
    as_sketch *h = NULL;
    CHECK_ST(as_config_init(&c, D), AS_OK);
    c.value_dim = DV;
    c.degree = 3;
    CHECK_ST(as_create(&c, &h), AS_OK);
    if (!h) return 1;
    float q[D], k[D], v[DV], o[DV];
    for (int j = 0; j < 100; j++) {
        for (int i = 0; i < D; i++) q[i] = rnd(), k[i] = rnd();
        for (int i = 0; i < DV; i++) v[i] = rnd();
        CHECK_ST(as_push_token(h, q, k, v, o), AS_OK);
    }
    size_t len;
    uint8_t *ref = snap(h, &len);
    const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    const float huge[] = {1e30f, -1e30f, FLT_MAX, -FLT_MAX, 1e13f};
    for (int which = 0; which < 3; which++) {
        for (size_t b = 0; b < sizeof bad / sizeof *bad + sizeof huge / sizeof *huge; b++) {
            int is_bad = b < sizeof bad / sizeof *bad;
            float val = is_bad ? bad[b] : huge[b - sizeof bad / sizeof *bad];
            float qq[D], kk[D], vv[DV], oo[DV];
            for (int i = 0; i < D; i++) qq[i] = 0.1f, kk[i] = 0.2f;
            for (int i = 0; i < DV; i++) vv[i] = 0.3f, oo[i] = 42.0f;
            if (which == 0) qq[1] = val;
            if (which == 1) for (int i = 0; i < D; i++) kk[i] = val;
            if (which == 2) for (int i = 0; i < DV; i++) vv[i] = val;
            as_status st = as_push_token(h, qq, kk, vv, oo);
            if (is_bad) {
                CHECK_ST(st, AS_ERR_NON_FINITE);
            } else if (which == 2) {
                /* a huge v is absorbed while the running bound stays below
                   the state limit (2^100), then refused */
                CHECK(st == AS_OK || st == AS_ERR_RANGE);
            } else {
                CHECK_ST(st, AS_ERR_RANGE);
            }
            if (st != AS_OK) {
                for (int i = 0; i < DV; i++) CHECK(oo[i] == 42.0f);
                CHECK(same(h, ref, len));
            } else {
                for (int i = 0; i < DV; i++) CHECK(isfinite(oo[i]));
                free(ref);
                ref = snap(h, &len);
            }
            for (int i = 0; i < DV; i++) oo[i] = 42.0f;
            st = as_query(h, qq, oo);
            if (which == 0) {
                CHECK_ST(st, is_bad ? AS_ERR_NON_FINITE : AS_ERR_RANGE);
                for (int i = 0; i < DV; i++) CHECK(oo[i] == 42.0f);
            }
        }
    }
    /* Denormals and tiny values are ordinary inputs: accepted, finite output. */
    const float tiny[] = {FLT_MIN, FLT_MIN / 8.0f, 1e-45f, -1e-40f, 0.0f, -0.0f};
    for (size_t t = 0; t < sizeof tiny / sizeof *tiny; t++) {
        for (int i = 0; i < D; i++) q[i] = tiny[t], k[i] = tiny[t];
        for (int i = 0; i < DV; i++) v[i] = tiny[t];
        CHECK_ST(as_push_token(h, q, k, v, o), AS_OK);
        for (int i = 0; i < DV; i++) CHECK(isfinite(o[i]));
        CHECK_ST(as_query(h, q, o), AS_OK);
        for (int i = 0; i < DV; i++) CHECK(isfinite(o[i]));
    }
    as_free(h);
    h = NULL;
    CHECK_ST(as_create(&c, &h), AS_OK);
    if (!h) return 1;
    /* Keys near the range limit on a fresh head: |k|^3 ~ 6e28 per token, so
       the first few tens are absorbed (finite outputs) and later ones refused
       with RANGE and no change. */
    int ok = 0, refused = 0;
    for (int j = 0; j < 200; j++) {
        for (int i = 0; i < D; i++) k[i] = 5e9f * rnd(), q[i] = 1e-3f * rnd();
        for (int i = 0; i < DV; i++) v[i] = rnd();
        size_t l0;
        uint8_t *before = snap(h, &l0);
        for (int i = 0; i < DV; i++) o[i] = 42.0f;
        as_status st = as_push_token(h, q, k, v, o);
        CHECK(st == AS_OK || st == AS_ERR_RANGE);
        ok += st == AS_OK;
        refused += st == AS_ERR_RANGE;
        if (st == AS_OK) {
            for (int i = 0; i < DV; i++) CHECK(isfinite(o[i]));
        } else {
            for (int i = 0; i < DV; i++) CHECK(o[i] == 42.0f);
            CHECK(same(h, before, l0));
        }
        free(before);
    }
    CHECK(ok > 0 && refused > 0);
    free(ref);
    as_free(h);
    if (g_failures) {
        fprintf(stderr, "extremes: %d failures\n", g_failures);
        return 1;
    }
    printf("extremes: ok\n");
    return 0;
}
