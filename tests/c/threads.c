/* The thread rules of the contract, from C with pthreads (run under
   ThreadSanitizer and helgrind by scripts/c-tests.sh):
   1. many threads, each with its own handle, created concurrently (the
      first calls race on the process-wide CPU-level detection);
   2. many concurrent as_query calls on one const handle;
   3. a handle created on one thread, used on another, freed on a third;
   4. a bank whose prefill runs on its own worker threads
      (as_bank_set_threads), against the same bank on one thread.
   Every result must equal, bit for bit, the same work done on one thread. */
#include "attnsketch.h"
#include "check.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { D = 8, DV = 8, N = 300, T = 8, NQ = 64 };

static float Q[N][D], K[N][D], V[N][DV];

/* Streams tokens off..off+N (mod N) into a new head; returns the last output. */
static void own_handle_work(int off, float *last) {
    as_config c;
    as_sketch *h = NULL;
    as_config_init(&c, D);
    c.value_dim = DV;
    c.seed = (uint64_t)off;
    if (as_create(&c, &h) != AS_OK) {
        memset(last, 0xFF, sizeof(float) * DV);
        return;
    }
    for (int j = 0; j < N; j++) {
        int r = (j + off) % N;
        if (as_push_token(h, Q[r], K[r], V[r], last) != AS_OK) {
            memset(last, 0xFF, sizeof(float) * DV);
            break;
        }
    }
    (void)as_status_string(AS_ERR_RANGE);
    as_free(h);
}

struct own_arg {
    int off;
    float last[DV];
};
static void *own_thread(void *p) {
    struct own_arg *a = p;
    own_handle_work(a->off, a->last);
    return NULL;
}

struct query_arg {
    const as_sketch *h;
    int first;
    float out[NQ][DV];
    as_status st[NQ];
};
static void *query_thread(void *p) {
    struct query_arg *a = p;
    for (int rep = 0; rep < 4; rep++)
        for (int i = 0; i < NQ; i++) {
            int r = (a->first + i) % N;
            a->st[i] = as_query(a->h, Q[r], a->out[i]);
        }
    return NULL;
}

struct move_arg {
    as_sketch *h;
    float out[DV];
    as_status st;
};
static void *move_use(void *p) {
    struct move_arg *a = p;
    a->st = AS_OK;
    for (int j = 0; j < 50 && a->st == AS_OK; j++) a->st = as_push_token(a->h, Q[j], K[j], V[j], a->out);
    return NULL;
}
static void *move_free(void *p) {
    as_free((as_sketch *)p);
    return NULL;
}

int main(void) {
    for (int j = 0; j < N; j++) {
        for (int i = 0; i < D; i++) Q[j][i] = rnd(), K[j][i] = rnd();
        for (int i = 0; i < DV; i++) V[j][i] = rnd();
    }
    /* 1. Own handles, started before any other library call. */
    pthread_t th[T];
    static struct own_arg own[T];
    for (int t = 0; t < T; t++) {
        own[t].off = 37 * t;
        CHECK(pthread_create(&th[t], NULL, own_thread, &own[t]) == 0);
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++) {
        float ref[DV];
        own_handle_work(37 * t, ref);
        CHECK(memcmp(ref, own[t].last, sizeof ref) == 0);
    }

    /* 2. Concurrent queries on one handle. */
    as_config c;
    as_sketch *h = NULL;
    CHECK_ST(as_config_init(&c, D), AS_OK);
    c.value_dim = DV;
    CHECK_ST(as_create(&c, &h), AS_OK);
    if (!h) return 1;
    float o[DV];
    for (int j = 0; j < N; j++) CHECK_ST(as_push_token(h, Q[j], K[j], V[j], o), AS_OK);
    static struct query_arg qa[T];
    for (int t = 0; t < T; t++) {
        qa[t].h = h;
        qa[t].first = 11 * t;
        CHECK(pthread_create(&th[t], NULL, query_thread, &qa[t]) == 0);
    }
    for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < NQ; i++) {
            float ref[DV];
            CHECK_ST(qa[t].st[i], AS_OK);
            CHECK_ST(as_query(h, Q[(11 * t + i) % N], ref), AS_OK);
            CHECK(memcmp(ref, qa[t].out[i], sizeof ref) == 0);
        }
    as_free(h);

    /* 3. A handle moves between threads (one at a time). */
    static struct move_arg ma;
    CHECK_ST(as_create(&c, &ma.h), AS_OK);
    CHECK(pthread_create(&th[0], NULL, move_use, &ma) == 0);
    pthread_join(th[0], NULL);
    CHECK_ST(ma.st, AS_OK);
    CHECK(as_token_count(ma.h) == 50);
    CHECK(pthread_create(&th[1], NULL, move_free, ma.h) == 0);
    pthread_join(th[1], NULL);

    /* 4. Bank prefill on worker threads: 6 q heads over 3 kv states.
       (Skipped under helgrind, which cannot see Rust std's futex-based
       synchronisation; TSan checks it.) */
    if (!getenv("ATTNSKETCH_TEST_NO_WORKERS")) {
        enum { NQH = 6, NKV = 3, NT = 100 };
        static float BQ[NT * NQH * D], BK[NT * NKV * D], BV[NT * NKV * DV];
        static float O1[NT * NQH * DV], O3[NT * NQH * DV];
        for (int i = 0; i < NT * NQH * D; i++) BQ[i] = rnd();
        for (int i = 0; i < NT * NKV * D; i++) BK[i] = rnd();
        for (int i = 0; i < NT * NKV * DV; i++) BV[i] = rnd();
        as_bank *b1 = NULL, *b3 = NULL;
        CHECK_ST(as_bank_create(&c, NQH, NKV, &b1), AS_OK);
        CHECK_ST(as_bank_create(&c, NQH, NKV, &b3), AS_OK);
        CHECK_ST(as_bank_set_threads(b3, 3), AS_OK);
        CHECK_ST(as_bank_set_threads(b3, 0), AS_ERR_INVALID_ARG);
        CHECK_ST(as_bank_set_threads(NULL, 2), AS_ERR_NULL);
        CHECK_ST(as_bank_push_tokens(b1, NT, BQ, BK, BV, O1), AS_OK);
        CHECK_ST(as_bank_push_tokens(b3, NT, BQ, BK, BV, O3), AS_OK);
        CHECK(memcmp(O1, O3, sizeof O1) == 0);
        CHECK(as_bank_state_bytes(b1) == as_bank_state_bytes(b3));
        as_bank_free(b1);
        as_bank_free(b3);
    }

    if (g_failures) {
        fprintf(stderr, "threads: %d failures\n", g_failures);
        return 1;
    }
    printf("threads: ok (%d own-handle threads, %d concurrent queries)\n", T, T * NQ * 4);
    return 0;
}
