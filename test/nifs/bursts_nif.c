/*
 * NIFs for test/bursts_test.exs (module BeamAlloc.Test.Bursts): the same
 * burst of blocks allocated and freed again and again through each path an
 * adopter uses (.allocator gpa on normal and dirty schedulers, a named
 * instance, beam_malloc/beam_mrealloc/beam_mfree as the C library hooks
 * call them, threads of enif_thread_create that exit holding their heaps),
 * so that the test can see what the instances hold after each.
 */
#include "nif_util.h"

#include <stdlib.h>
#include <string.h>

static beam_allocator_t gpa(void) {
    return beam_general_purpose_allocator;
}
static beam_gpa_t named;

static bool burst(beam_allocator_t a, size_t count, size_t len) {
    void **p = beam_alloc(beam_raw_allocator, void *, count);
    if (p == NULL)
        return false;
    bool ok = true;
    for (size_t i = 0; i < count; i++) {
        p[i] = beam_alloc_bytes(a, len, 8);
        if (p[i] == NULL) {
            ok = false;
            count = i;
            break;
        }
        memset(p[i], 1, len < 64 ? len : 64);
    }
    for (size_t i = 0; i < count; i++)
        beam_free_bytes(a, p[i], len, 8);
    beam_free(beam_raw_allocator, p, count);
    return ok;
}

static ERL_NIF_TERM burst_impl(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    size_t count, len;
    if (!get_size(env, argv[0], &count) || !get_size(env, argv[1], &len) ||
        len == 0)
        return enif_make_badarg(env);
    return make_bool(env, burst(beam_allocator, count, len));
}
BEAM_NIF(gpa_burst, .allocator = gpa) {
    return burst_impl(env, argv);
}
BEAM_NIF(gpa_burst_dirty, .allocator = gpa) {
    return burst_impl(env, argv);
}
BEAM_NIF(named_burst) {
    size_t count, len;
    if (!get_size(env, argv[0], &count) || !get_size(env, argv[1], &len) ||
        len == 0)
        return enif_make_badarg(env);
    return make_bool(env, burst(beam_gpa_allocator(&named), count, len));
}

/* Threads that allocate, free half, keep half for the caller, and exit. */
typedef struct {
    size_t count, len;
    void **kept;
} work_t;
/* Frees every other block and leaves the rest for the thread that joins it
 * (a cross-thread free of blocks whose heap is gone). */
static void *worker(void *arg) {
    work_t *w = arg;
    void **tmp = enif_alloc(w->count * sizeof(void *));
    if (tmp == NULL)
        return NULL;
    for (size_t i = 0; i < w->count; i++) {
        tmp[i] = beam_alloc_bytes(beam_general_purpose_allocator, w->len, 8);
        memset(tmp[i], 3, w->len < 64 ? w->len : 64);
    }
    for (size_t i = 0; i < w->count; i++) {
        if (i % 2)
            w->kept[i / 2] = tmp[i];
        else
            beam_free_bytes(beam_general_purpose_allocator, tmp[i], w->len, 8);
    }
    enif_free(tmp);
    return NULL;
}
BEAM_NIF(threads_burst) {
    size_t n, count, len;
    if (!get_size(env, argv[0], &n) || !get_size(env, argv[1], &count) ||
        !get_size(env, argv[2], &len) || n > 64 || len == 0)
        return enif_make_badarg(env);
    ErlNifTid tid[64];
    work_t w[64];
    for (size_t t = 0; t < n; t++) {
        w[t] =
            (work_t){count, len, enif_alloc((count / 2 + 1) * sizeof(void *))};
        memset(w[t].kept, 0, (count / 2 + 1) * sizeof(void *));
        if (enif_thread_create("bursts", &tid[t], worker, &w[t], NULL) != 0)
            abort();
    }
    for (size_t t = 0; t < n; t++) {
        enif_thread_join(tid[t], NULL);
        for (size_t i = 0; i < count / 2 && w[t].kept[i] != NULL; i++)
            beam_free_bytes(beam_general_purpose_allocator, w[t].kept[i], len,
                            8);
        enif_free(w[t].kept);
    }
    return enif_make_atom(env, "ok");
}

/* zlib/sqlite-style: malloc, grow by mrealloc, mfree. */
BEAM_NIF(malloc_burst, .allocator = gpa) {
    size_t count, len;
    if (!get_size(env, argv[0], &count) || !get_size(env, argv[1], &len) ||
        len == 0)
        return enif_make_badarg(env);
    void **p = enif_alloc(count * sizeof(void *));
    for (size_t i = 0; i < count; i++) {
        p[i] = beam_malloc(beam_allocator, len / 2 + 1);
        p[i] = beam_mrealloc(beam_allocator, p[i], len);
        memset(p[i], 4, len < 64 ? len : 64);
    }
    for (size_t i = 0; i < count; i++)
        beam_mfree(beam_allocator, p[i]);
    enif_free(p);
    return enif_make_atom(env, "ok");
}

static ERL_NIF_TERM usage_term(ErlNifEnv *env, beam_gpa_t *g) {
    beam_gpa_usage u = beam_gpa_usage_of(g);
    static const char *const names[] = {"live_blocks", "live_bytes",
                                        "backing_bytes"};
    uint64_t values[] = {u.live_blocks, u.live_bytes, u.backing_bytes};
    return make_uint_map(env, 3, names, values);
}
BEAM_NIF(usage) {
    return usage_term(env, &beam_general_purpose_allocator_instance);
}
BEAM_NIF(named_usage) {
    return usage_term(env, &named);
}
BEAM_NIF(collect) {
    beam_gpa_collect(&beam_general_purpose_allocator_instance);
    beam_gpa_collect(&named);
    return enif_make_atom(env, "ok");
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    beam_gpa_init(&named, beam_large_allocator);
    return beam_stats_register("named", beam_gpa_allocator(&named)) ? 0 : 1;
}

static ErlNifFunc funcs[] = {
    {"gpa_burst", 2, gpa_burst, 0},
    {"gpa_burst_dirty", 2, gpa_burst_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"named_burst", 2, named_burst, 0},
    {"threads_burst", 3, threads_burst, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"malloc_burst", 2, malloc_burst, 0},
    {"usage", 0, usage, 0},
    {"named_usage", 0, named_usage, 0},
    {"collect", 0, collect, ERL_NIF_DIRTY_JOB_CPU_BOUND},
};
BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Bursts, funcs, load, NULL, NULL)
