/*
 * .scratch = true: beam_allocator is an arena over the NIF's allocator for
 * the call, given back in one step when the body returns. Loaded by
 * BeamAlloc.Test.Scratch (test/support/scratch.ex).
 */
#include "nif_util.h"

#include <stdatomic.h>

/* --- A counting allocator: the arena's parent in some NIFs, so the tests
 * can see that every chunk went back. Over the raw allocator; the counters
 * are global (the tests of this module run one at a time). */

static _Atomic long counted_live_blocks;
static _Atomic long counted_live_bytes;
static _Atomic long counted_allocs;

static void *counting_alloc(void *ctx, size_t len, size_t alignment,
                            uintptr_t ret) {
    (void)ctx;
    void *p = beam_raw_allocator.vtable->alloc(NULL, len, alignment, ret);
    if (p != NULL) {
        counted_live_blocks++;
        counted_live_bytes += (long)len;
        counted_allocs++;
    }
    return p;
}

static bool counting_resize(void *ctx, void *mem, size_t len, size_t alignment,
                            size_t new_len, uintptr_t ret) {
    (void)ctx;
    bool ok = beam_raw_allocator.vtable->resize(NULL, mem, len, alignment,
                                                new_len, ret);
    if (ok)
        counted_live_bytes += (long)new_len - (long)len;
    return ok;
}

static void *counting_remap(void *ctx, void *mem, size_t len, size_t alignment,
                            size_t new_len, uintptr_t ret) {
    (void)ctx;
    void *p = beam_raw_allocator.vtable->remap(NULL, mem, len, alignment,
                                               new_len, ret);
    if (p != NULL)
        counted_live_bytes += (long)new_len - (long)len;
    return p;
}

static void counting_free(void *ctx, void *mem, size_t len, size_t alignment,
                          uintptr_t ret) {
    (void)ctx;
    beam_raw_allocator.vtable->free(NULL, mem, len, alignment, ret);
    counted_live_blocks--;
    counted_live_bytes -= (long)len;
}

static const beam_allocator_vtable counting_vtable = {
    counting_alloc, counting_resize, counting_remap, counting_free};

static beam_allocator_t counting_allocator(void) {
    return (beam_allocator_t){NULL, &counting_vtable};
}

/* counted(): {live_blocks, live_bytes, allocs} of the counting allocator
 * (a raw NIF: it allocates nothing). */
static ERL_NIF_TERM counted(ErlNifEnv *env, int argc,
                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_tuple3(env, enif_make_long(env, counted_live_blocks),
                            enif_make_long(env, counted_live_bytes),
                            enif_make_long(env, counted_allocs));
}

/* The vtable every arena uses, to recognise one. */
static const beam_allocator_vtable *arena_vtable(void) {
    beam_arena_t probe;
    beam_arena_init(&probe, beam_raw_allocator);
    return beam_arena_allocator(&probe).vtable;
}

static bool is_arena(beam_allocator_t a) {
    return a.vtable == arena_vtable();
}

/* --- The NIFs ---------------------------------------------------------- */

/* list(n): [0, 1, ..., n - 1] built in scratch memory; two temporary
 * buffers on the way that are never freed. */
BEAM_NIF(list, .scratch = true) {
    size_t n;
    if (!get_size(env, argv[0], &n) || n > 1000000)
        return enif_make_badarg(env);
    uint32_t *xs = beam_alloc(beam_allocator, uint32_t, n);
    char *temp = beam_alloc(beam_allocator, char, 100);
    if (xs == NULL || temp == NULL)
        return beam_make_error(env, "enomem");
    for (size_t i = 0; i < n; i++)
        xs[i] = (uint32_t)i;
    return beam_make_uint_list(env, xs, n, sizeof *xs);
}

BEAM_NIF(list_dirty, .scratch = true) {
    size_t n;
    if (!get_size(env, argv[0], &n) || n > 1000000)
        return enif_make_badarg(env);
    uint64_t *xs = beam_alloc(beam_allocator, uint64_t, n);
    if (xs == NULL)
        return beam_make_error(env, "enomem");
    for (size_t i = 0; i < n; i++)
        xs[i] = i;
    return beam_make_uint_list(env, xs, n, sizeof *xs);
}

/* What beam_allocator is in a scratch NIF: an arena over the raw
 * allocator. */
BEAM_NIF(allocator_kind, .scratch = true) {
    if (!is_arena(beam_allocator))
        return enif_make_atom(env, "not_an_arena");
    beam_arena_t *arena = beam_allocator.ctx;
    return enif_make_atom(env, same_allocator(arena->parent, beam_raw_allocator)
                                   ? "arena_over_raw"
                                   : "arena_over_other");
}

/* counted_churn(n): n blocks of 1..n KiB through a scratch arena over the
 * counting allocator; reports what the arena held from it during the call
 * ({blocks, bytes}); the test checks that all of it went back after. */
BEAM_NIF(counted_churn, .scratch = true, .allocator = counting_allocator) {
    size_t n;
    if (!get_size(env, argv[0], &n) || n == 0 || n > 1000)
        return enif_make_badarg(env);
    beam_arena_t *arena = beam_allocator.ctx;
    if (!is_arena(beam_allocator) || arena->parent.vtable != &counting_vtable)
        return enif_make_atom(env, "not_an_arena_over_counting");
    for (size_t i = 1; i <= n; i++) {
        unsigned char *p = beam_alloc(beam_allocator, unsigned char, i * 1024);
        if (p == NULL)
            return beam_make_error(env, "enomem");
        memset(p, 0x5A, i * 1024);
    }
    return enif_make_tuple2(env, enif_make_long(env, counted_live_blocks),
                            enif_make_long(env, counted_live_bytes));
}

/* aligned(alignment): one 100-byte block at a large alignment, which the
 * arena pads inside its chunk (the raw parent serves only 8). */
BEAM_NIF(aligned, .scratch = true) {
    size_t alignment;
    if (!get_alignment(env, argv[0], &alignment))
        return enif_make_badarg(env);
    void *p = beam_alloc_bytes(beam_allocator, 100, alignment);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    memset(p, 1, 100);
    return make_ok(env, make_address(env, p));
}

/* Freeing the newest block gives it back; the next allocation reuses it. */
BEAM_NIF(free_newest, .scratch = true) {
    unsigned char *a = beam_alloc(beam_allocator, unsigned char, 64);
    if (a == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_allocator, a, 64);
    unsigned char *b = beam_alloc(beam_allocator, unsigned char, 64);
    return make_bool(env, a == b);
}

/* With leak_check: the arena's parent is the checking instance; blocks of
 * the arena are never leaks... */
BEAM_NIF(checked, .scratch = true, .leak_check = true) {
    for (int i = 0; i < 10; i++)
        if (beam_alloc(beam_allocator, uint64_t, 500) == NULL)
            return beam_make_error(env, "enomem");
    beam_arena_t *arena = beam_allocator.ctx;
    bool over_fresh_gpa =
        is_arena(beam_allocator) &&
        !same_allocator(arena->parent, beam_raw_allocator) &&
        !same_allocator(arena->parent, beam_general_purpose_allocator);
    return make_bool(env, over_fresh_gpa);
}

/* ...but a block taken from the instance beside the arena is. */
BEAM_NIF(checked_escape, .scratch = true, .leak_check = true) {
    beam_arena_t *arena = beam_allocator.ctx;
    uint64_t *kept = beam_create(arena->parent, uint64_t);
    if (kept != NULL)
        *kept = 1;
    return enif_make_atom(env, "ok");
}

/* The bytes of data in the arena's first chunk: 4096 less its header (four
 * words: arena.c). A write there is the byte just past the chunk. */
#define FIRST_CHUNK_DATA (4096 - 4 * sizeof(size_t))

/* overrun(): the chunk's one block (1 byte) written FIRST_CHUNK_DATA bytes
 * on, past the chunk; the checking instance finds it when the arena gives
 * the chunk back at the call's end. */
BEAM_NIF(overrun, .scratch = true, .leak_check = true) {
    volatile unsigned char *p = beam_alloc(beam_allocator, unsigned char, 1);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    p[FIRST_CHUNK_DATA] = 0xEE;
    return enif_make_atom(env, "ok");
}

/* overrun_second(): the same through the second of two blocks (100 bytes,
 * then 16 at offset 100, both at alignment 1): byte 3964 of it. */
BEAM_NIF(overrun_second, .scratch = true, .leak_check = true) {
    unsigned char *a = beam_alloc(beam_allocator, unsigned char, 100);
    volatile unsigned char *b = beam_alloc(beam_allocator, unsigned char, 16);
    if (a == NULL || b == NULL)
        return beam_make_error(env, "enomem");
    b[FIRST_CHUNK_DATA - 100] = 0xEE;
    return enif_make_atom(env, "ok");
}

/* A raw NIF allocating through whatever beam_allocator holds: after a
 * scratch call it must not be the finished call's arena. */
static ERL_NIF_TERM raw_uses_allocator(ErlNifEnv *env, int argc,
                                       const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    if (is_arena(beam_allocator))
        return enif_make_atom(env, "dangling_arena");
    uint64_t *p = beam_alloc(beam_allocator, uint64_t, 8);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_allocator, p, 8);
    return enif_make_atom(env, "ok");
}

static ErlNifFunc funcs[] = {
    {"list", 1, list, 0},
    {"list_dirty", 1, list_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"allocator_kind", 0, allocator_kind, 0},
    {"counted_churn", 1, counted_churn, 0},
    {"counted", 0, counted, 0},
    {"aligned", 1, aligned, 0},
    {"free_newest", 0, free_newest, 0},
    {"checked", 0, checked, 0},
    {"checked_escape", 0, checked_escape, 0},
    {"overrun", 0, overrun, 0},
    {"overrun_second", 0, overrun_second, 0},
    {"raw_uses_allocator", 0, raw_uses_allocator, 0},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Scratch, funcs, load_capturing_reports,
              NULL, NULL)
