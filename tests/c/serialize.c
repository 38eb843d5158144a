/* Serialization and merge through the C ABI: size query, too-small buffers,
   a round trip that continues the stream bit for bit, refusal of every
   truncation, every single-bit flip and trailing bytes, and merging a split
   stream. Returns non-zero on any failure. */
#include "attnsketch.h"
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { D = 4, DV = 3, N1 = 70, N2 = 90 };

static float Q[N1 + N2][D], K[N1 + N2][D], V[N1 + N2][DV];

static as_sketch *make(uint64_t seed) {
    as_config c;
    as_sketch *h = NULL;
    CHECK_ST(as_config_init(&c, D), AS_OK);
    c.value_dim = DV;
    c.seed = seed;
    CHECK_ST(as_create(&c, &h), AS_OK);
    return h;
}

static void stream(as_sketch *h, int from, int to, float *outs) {
    for (int j = from; j < to; j++) {
        float o[DV];
        CHECK_ST(as_push_token(h, Q[j], K[j], V[j], o), AS_OK);
        if (outs) memcpy(outs + (size_t)(j - from) * DV, o, sizeof o);
    }
}

static uint8_t *ser(const as_sketch *h, size_t *len) {
    size_t need = 0;
    CHECK_ST(as_serialize(h, NULL, 0, &need), AS_OK);
    uint8_t *b = malloc(need);
    size_t w = 0;
    CHECK_ST(as_serialize(h, b, need, &w), AS_OK);
    CHECK(w == need);
    *len = need;
    return b;
}

/* Loaders with one shape: the status, and whether an output was written (then freed). */
typedef as_status (*loader)(const uint8_t *b, size_t n, int *wrote);
static as_status load_head(const uint8_t *b, size_t n, int *wrote) {
    as_sketch *x = NULL;
    as_status s = as_deserialize(b, n, &x);
    *wrote = x != NULL;
    as_free(x);
    return s;
}
static as_status load_bank(const uint8_t *b, size_t n, int *wrote) {
    as_bank *x = NULL;
    as_status s = as_bank_deserialize(b, n, &x);
    *wrote = x != NULL;
    as_bank_free(x);
    return s;
}

/* Every truncation, every bit flip, a trailing byte: CORRUPT, nothing written.
   Each candidate lives in its own exact-size heap block, so a read past it is
   an ASan / valgrind error. */
static void refuses_every_damage(const uint8_t *buf, size_t len, loader load) {
    int wrote = 0;
    for (size_t n = 0; n < len; n++) {
        uint8_t *t = malloc(n ? n : 1);
        memcpy(t, buf, n);
        CHECK_ST(load(t, n, &wrote), AS_ERR_CORRUPT);
        CHECK(!wrote);
        free(t);
    }
    uint8_t *f = malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(f, buf, len);
            f[i] ^= (uint8_t)(1u << bit);
            CHECK_ST(load(f, len, &wrote), AS_ERR_CORRUPT);
            CHECK(!wrote);
        }
    }
    memcpy(f, buf, len);
    f[len] = 0;
    CHECK_ST(load(f, len + 1, &wrote), AS_ERR_CORRUPT);
    CHECK(!wrote);
    free(f);
}

int main(void) {
    for (int j = 0; j < N1 + N2; j++) {
        for (int i = 0; i < D; i++) Q[j][i] = rnd(), K[j][i] = rnd();
        for (int i = 0; i < DV; i++) V[j][i] = 2.0f * rnd();
    }
    as_sketch *a = make(7);
    stream(a, 0, N1, NULL);

    /* Size query, too small (nothing written), NULLs. */
    size_t need = 0, w = 0;
    CHECK_ST(as_serialize(a, NULL, 0, &need), AS_OK);
    CHECK(need > 0);
    uint8_t *small = malloc(need);
    memset(small, 0xA5, need);
    CHECK_ST(as_serialize(a, small, need - 1, &w), AS_ERR_BUFFER_TOO_SMALL);
    CHECK(w == need);
    for (size_t i = 0; i < need; i++) CHECK(small[i] == 0xA5);
    free(small);
    CHECK_ST(as_serialize(NULL, NULL, 0, &w), AS_ERR_NULL);
    CHECK_ST(as_serialize(a, NULL, 0, NULL), AS_ERR_NULL);

    size_t len = 0;
    uint8_t *buf = ser(a, &len);

    /* Round trip continues identically. */
    as_sketch *b = NULL;
    CHECK_ST(as_deserialize(buf, len, &b), AS_OK);
    CHECK(b != NULL);
    if (!b) return 1;
    CHECK(as_token_count(b) == N1);
    float *oa = malloc(sizeof(float) * N2 * DV), *ob = malloc(sizeof(float) * N2 * DV);
    stream(a, N1, N1 + N2, oa);
    stream(b, N1, N1 + N2, ob);
    CHECK(memcmp(oa, ob, sizeof(float) * N2 * DV) == 0);
    size_t la, lb;
    uint8_t *sa = ser(a, &la), *sb = ser(b, &lb);
    CHECK(la == lb && memcmp(sa, sb, la) == 0);
    free(sa);
    free(sb);
    as_free(b);

    refuses_every_damage(buf, len, load_head);
    as_sketch *x = NULL;
    CHECK_ST(as_deserialize(NULL, 10, &x), AS_ERR_NULL);
    CHECK_ST(as_deserialize(buf, len, NULL), AS_ERR_NULL);
    free(buf);

    /* Merge a split stream: whole vs first-half + second-half. */
    as_sketch *whole = make(3), *h1 = make(3), *h2 = make(3), *other = make(4);
    stream(whole, 0, N1 + N2, NULL);
    stream(h1, 0, N1, NULL);
    stream(h2, N1, N1 + N2, NULL);
    CHECK_ST(as_merge(h1, h1), AS_ERR_INVALID_ARG);
    CHECK_ST(as_merge(NULL, h2), AS_ERR_NULL);
    CHECK_ST(as_merge(h1, NULL), AS_ERR_NULL);
    CHECK_ST(as_merge(h1, other), AS_ERR_INVALID_ARG); /* different seed */
    CHECK(as_token_count(h1) == N1);
    CHECK_ST(as_merge(h1, h2), AS_OK);
    CHECK(as_token_count(h1) == N1 + N2);
    for (int j = 0; j < 20; j++) {
        float o1[DV], o2[DV];
        CHECK_ST(as_query(h1, Q[j], o1), AS_OK);
        CHECK_ST(as_query(whole, Q[j], o2), AS_OK);
        for (int i = 0; i < DV; i++) CHECK(fabsf(o1[i] - o2[i]) <= 1e-4f * (1.0f + fabsf(o2[i])));
    }
    as_free(whole);
    as_free(h1);
    as_free(h2);
    as_free(other);
    as_free(a);
    free(oa);
    free(ob);
    /* A bank (3 query heads over 1 kv head, the 16 KiB preset at d = 32): size query, too
       small, a round trip that continues bit for bit, every damage refused. */
    size_t blen = 0;
    {
        enum { BD = 32, BQ = 3, BN = 60 };
        as_config bc;
        CHECK_ST(as_config_init(&bc, BD), AS_OK);
        CHECK_ST(as_config_for_budget(&bc, 16 * 1024), AS_OK);
        as_bank *ba = NULL, *bb = NULL;
        CHECK_ST(as_bank_create(&bc, BQ, 1, &ba), AS_OK);
        static float bq[BN + 1][BQ * BD], bk[BN + 1][BD], bv[BN + 1][BD], bo[2][BQ * BD];
        for (int j = 0; j <= BN; j++) {
            for (int i = 0; i < BQ * BD; i++) bq[j][i] = rnd();
            for (int i = 0; i < BD; i++) bk[j][i] = rnd(), bv[j][i] = rnd();
        }
        for (int j = 0; j < BN; j++) CHECK_ST(as_bank_push_token(ba, bq[j], bk[j], bv[j], bo[0]), AS_OK);
        CHECK_ST(as_bank_serialize(ba, NULL, 0, &blen), AS_OK);
        uint8_t *bbuf = malloc(blen);
        memset(bbuf, 0xA5, blen);
        w = 0;
        CHECK_ST(as_bank_serialize(ba, bbuf, blen - 1, &w), AS_ERR_BUFFER_TOO_SMALL);
        CHECK(w == blen && bbuf[0] == 0xA5 && bbuf[blen - 1] == 0xA5);
        CHECK_ST(as_bank_serialize(ba, bbuf, blen, &w), AS_OK);
        CHECK(w == blen);
        CHECK_ST(as_bank_deserialize(bbuf, blen, &bb), AS_OK);
        CHECK(bb != NULL);
        if (!bb) return 1;
        CHECK_ST(as_bank_push_token(ba, bq[BN], bk[BN], bv[BN], bo[0]), AS_OK);
        CHECK_ST(as_bank_push_token(bb, bq[BN], bk[BN], bv[BN], bo[1]), AS_OK);
        CHECK(memcmp(bo[0], bo[1], sizeof bo[0]) == 0);
        refuses_every_damage(bbuf, blen, load_bank);
        free(bbuf);
        as_bank_free(ba);
        as_bank_free(bb);
    }

    if (g_failures) {
        fprintf(stderr, "serialize: %d failures\n", g_failures);
        return 1;
    }
    printf("serialize: ok (%zu-byte buffer, %zu truncations, %zu bit flips refused; bank: %zu bytes, "
           "every truncation and bit flip refused)\n", len, len, len * 8, blen);
    return 0;
}
