/*
 * Stress and soak: mixed operations over the raw, large and process-wide
 * general purpose allocators, from normal schedulers, dirty schedulers and
 * enif_thread_create threads at once. Blocks are swapped through a shared
 * table, so most die on another thread than the one that made them. Every
 * block carries a header saying how to free it and a pattern that whoever
 * frees it checks. Loaded by BeamAlloc.Test.Soak (test/support/soak.ex).
 */
#include "nif_util.h"

#include <stdatomic.h>

#define EXCHANGE 4096
#define MINE 32
#define PATTERN_END 64

typedef struct hdr {
    uint32_t kind;  /* 0 raw, 1 large, 2 general purpose */
    uint32_t align; /* as allocated */
    uint64_t len;
    uint64_t check; /* address ^ len, scrambled: the pattern's seed */
} hdr;

static _Atomic(hdr *) exchange[EXCHANGE];
static _Atomic uint64_t corrupt, failed;

static beam_allocator_t allocator_of(uint32_t kind) {
    return kind == 0   ? beam_raw_allocator
           : kind == 1 ? beam_large_allocator
                       : beam_general_purpose_allocator;
}

static void stamp(hdr *h) {
    h->check = ((uint64_t)(uintptr_t)h ^ h->len) * 0x9E3779B97F4A7C15ull;
    unsigned char *b = (unsigned char *)h;
    size_t end = h->len - 1 < PATTERN_END ? h->len - 1 : PATTERN_END;
    for (size_t i = sizeof *h; i < end; i++)
        b[i] = (unsigned char)(h->check >> (i % 8 * 8));
    b[h->len - 1] = (unsigned char)h->check;
}

static bool hdr_intact(const hdr *h) {
    if (h->check != ((uint64_t)(uintptr_t)h ^ h->len) * 0x9E3779B97F4A7C15ull)
        return false;
    const unsigned char *b = (const unsigned char *)h;
    size_t end = h->len - 1 < PATTERN_END ? h->len - 1 : PATTERN_END;
    for (size_t i = sizeof *h; i < end; i++)
        if (b[i] != (unsigned char)(h->check >> (i % 8 * 8)))
            return false;
    return b[h->len - 1] == (unsigned char)h->check;
}

static hdr *make(uint64_t *seed) {
    uint64_t r = next_random(seed);
    uint32_t kind = (uint32_t)(r % 3);
    size_t len = 32 + (size_t)((r >> 8) % (r % 16 == 0 ? 20000 : 600));
    size_t align = kind == 0   ? 8
                   : kind == 1 ? (size_t)8 << ((r >> 40) % 10)
                               : (size_t)8 << ((r >> 44) % 5);
    hdr *h = beam_alloc_bytes(allocator_of(kind), len, align);
    if (h == NULL) {
        atomic_fetch_add(&failed, 1);
        return NULL;
    }
    if (((uintptr_t)h & (align - 1)) != 0)
        atomic_fetch_add(&corrupt, 1);
    h->kind = kind;
    h->align = (uint32_t)align;
    h->len = len;
    stamp(h);
    return h;
}

static void drop(hdr *h) {
    if (h == NULL)
        return;
    if (!hdr_intact(h))
        atomic_fetch_add(&corrupt, 1);
    beam_free_bytes(allocator_of(h->kind), h, h->len, h->align);
}

static hdr *regrow(hdr *h, uint64_t *seed) {
    size_t new_len = 32 + (size_t)(next_random(seed) % 3000);
    if (!hdr_intact(h))
        atomic_fetch_add(&corrupt, 1);
    hdr *n =
        beam_realloc_bytes(allocator_of(h->kind), h, h->len, h->align, new_len);
    if (n == NULL) { /* the old block is intact and still ours */
        atomic_fetch_add(&failed, 1);
        return h;
    }
    n->len = new_len;
    stamp(n);
    return n;
}

static void run_ops(uint64_t n, uint64_t seed) {
    hdr *mine[MINE] = {0};
    seed = seed * 2654435761u + 1;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t r = next_random(&seed);
        size_t k = (size_t)(r >> 24) % MINE;
        _Atomic(hdr *) *slot = &exchange[(r >> 32) % EXCHANGE];
        switch (r % 8) {
        case 0:
        case 1:
        case 2:
        case 3:
            drop(mine[k]);
            mine[k] = make(&seed);
            break;
        case 4:
        case 5:
            drop(atomic_exchange(slot, make(&seed)));
            break;
        case 6:
            if (mine[k] != NULL)
                mine[k] = regrow(mine[k], &seed);
            break;
        default:
            drop(atomic_exchange(slot, NULL));
            break;
        }
    }
    for (size_t k = 0; k < MINE; k++)
        drop(mine[k]);
}

static bool get_ops(ErlNifEnv *env, const ERL_NIF_TERM argv[], uint64_t *n,
                    uint64_t *seed) {
    ErlNifUInt64 a, b;
    if (!enif_get_uint64(env, argv[0], &a) || a > 10000000 ||
        !enif_get_uint64(env, argv[1], &b))
        return false;
    *n = a;
    *seed = b;
    return true;
}

/* ops(n, seed): n operations on this scheduler (normal or dirty). */
static ERL_NIF_TERM ops(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    uint64_t n, seed;
    if (!get_ops(env, argv, &n, &seed))
        return enif_make_badarg(env);
    run_ops(n, seed);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(ops_normal) {
    return ops(env, argv);
}
BEAM_NIF(ops_dirty) {
    return ops(env, argv);
}

typedef struct job {
    uint64_t n, seed;
} job;

static void *thread_main(void *arg) {
    job *j = arg;
    run_ops(j->n, j->seed);
    return NULL;
}

/* thread_ops(n, seed): the same on a thread of our own, joined before the
 * call returns (its heap is abandoned when it exits). */
BEAM_NIF(thread_ops) {
    job j;
    if (!get_ops(env, argv, &j.n, &j.seed))
        return enif_make_badarg(env);
    ErlNifTid tid;
    if (enif_thread_create("beam_alloc_soak", &tid, thread_main, &j, NULL) != 0)
        return beam_make_error(env, "thread");
    enif_thread_join(tid, NULL);
    return enif_make_atom(env, "ok");
}

/* drain(): free whatever is left in the shared table. */
BEAM_NIF(drain) {
    for (size_t i = 0; i < EXCHANGE; i++)
        drop(atomic_exchange(&exchange[i], NULL));
    return enif_make_atom(env, "ok");
}

/* counters(): %{corrupt: n, failed: n} */
BEAM_NIF(counters) {
    static const char *const names[] = {"corrupt", "failed"};
    uint64_t values[] = {atomic_load(&corrupt), atomic_load(&failed)};
    return make_uint_map(env, 2, names, values);
}

static ERL_NIF_TERM stats_map(ErlNifEnv *env, beam_allocator_t a) {
    static const char *const names[] = {"live_blocks", "live_bytes",
                                        "allocations"};
    beam_alloc_stats s;
    beam_allocator_stats(a, &s);
    uint64_t values[] = {s.live_blocks, s.live_bytes, s.allocations};
    return make_uint_map(env, 3, names, values);
}

/* stats(): %{raw: %{...}, large: %{...}, gpa: %{...}} for this library. */
BEAM_NIF(stats) {
    static const char *const names[] = {"raw", "large", "gpa"};
    ERL_NIF_TERM values[] = {stats_map(env, beam_raw_allocator),
                             stats_map(env, beam_large_allocator),
                             stats_map(env, beam_general_purpose_allocator)};
    return make_map(env, 3, names, values);
}

/* collect(): beam_gpa_collect on this thread (normal, dirty CPU, dirty IO
 * variants, so that a test can reach every scheduler's heap). */
BEAM_NIF(collect) {
    beam_gpa_collect(&beam_general_purpose_allocator_instance);
    return enif_make_atom(env, "ok");
}

/* gpa_backing_bytes(): what the process-wide instance holds of the large
 * allocator (its slabs' segments and large blocks). */
BEAM_NIF(gpa_backing_bytes) {
    return enif_make_uint64(
        env, beam_gpa_usage_of(&beam_general_purpose_allocator_instance)
                 .backing_bytes);
}

BEAM_NIF(gpa_misuse) {
    return enif_make_uint64(
        env, beam_gpa_usage_of(&beam_general_purpose_allocator_instance)
                 .misuse_count);
}

static ErlNifFunc funcs[] = {
    {"ops", 2, ops_normal, 0},
    {"ops_dirty", 2, ops_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"thread_ops", 2, thread_ops, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"drain", 0, drain, 0},
    {"counters", 0, counters, 0},
    {"stats", 0, stats, 0},
    {"gpa_misuse", 0, gpa_misuse, 0},
    {"gpa_backing_bytes", 0, gpa_backing_bytes, 0},
    {"collect", 0, collect, 0},
    {"collect_dirty_cpu", 0, collect, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"collect_dirty_io", 0, collect, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Soak, funcs, load_capturing_reports, NULL,
              NULL)
