/*
 * NIFs that yield with enif_schedule_nif (to themselves, with other
 * arguments, to a dirty scheduler and back), raise with memory live, call
 * one another, and start threads: what beam_allocator and the options are
 * across them. Loaded by BeamAlloc.Test.Yield (test/support/yield.ex),
 * with load_info overrides.
 */
#include "nif_util.h"

#include <time.h>

static ERL_NIF_TERM thread_kind(ErlNifEnv *env) {
    switch (enif_thread_type()) {
    case ERL_NIF_THR_NORMAL_SCHEDULER:
        return enif_make_atom(env, "normal");
    case ERL_NIF_THR_DIRTY_CPU_SCHEDULER:
        return enif_make_atom(env, "dirty_cpu");
    case ERL_NIF_THR_DIRTY_IO_SCHEDULER:
        return enif_make_atom(env, "dirty_io");
    default:
        return enif_make_atom(env, "other");
    }
}

/* walk(N): a block from beam_allocator in the first slice, carried through
 * N continuations of itself with its state as three arguments (N, the
 * block, the kinds seen so far), freed through beam_allocator by the last:
 * the kinds of beam_allocator, first slice last. load_info gives walk
 * allocator: gpa. */
BEAM_NIF(walk) {
    unsigned n;
    if (!enif_get_uint(env, argv[0], &n))
        return enif_make_badarg(env);
    ERL_NIF_TERM kinds = argc == 3 ? argv[2] : enif_make_list(env, 0);
    kinds = enif_make_list_cell(env, kind_of(env, beam_allocator), kinds);
    ErlNifUInt64 addr = 0;
    if (argc == 1) {
        unsigned char *p = beam_alloc(beam_allocator, unsigned char, 48);
        if (p == NULL)
            return beam_make_error(env, "enomem");
        addr = (ErlNifUInt64)(uintptr_t)p;
    } else if (!enif_get_uint64(env, argv[1], &addr)) {
        return enif_make_badarg(env);
    }
    if (n == 0) {
        beam_free(beam_allocator, (unsigned char *)(uintptr_t)addr, 48);
        return kinds;
    }
    ERL_NIF_TERM next[3] = {enif_make_uint(env, n - 1),
                            enif_make_uint64(env, addr), kinds};
    return enif_schedule_nif(env, "walk", 0, walk, 3, next);
}

/* chain(N): leak_check; each of N+1 slices (the NIF rescheduling itself
 * with the same arity) allocates and frees a block: N+1 at the end. */
BEAM_NIF(chain, .leak_check = true) {
    unsigned n;
    if (!enif_get_uint(env, argv[0], &n))
        return enif_make_badarg(env);
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 64);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    memset(p, 1, 64);
    beam_free(beam_allocator, p, 64);
    if (n == 0)
        return enif_make_atom(env, "done");
    ERL_NIF_TERM next = enif_make_uint(env, n - 1);
    return enif_schedule_nif(env, "chain", 0, chain, 1, &next);
}

/* leak_later(N): leak_check, its C name another than its Erlang name;
 * the continuation (two arguments) leaks 8 bytes. */
BEAM_NIF(nif_leak_later, .leak_check = true) {
    if (argc == 1) {
        ERL_NIF_TERM next[2] = {argv[0], argv[0]};
        return enif_schedule_nif(env, "leak_later", 0, nif_leak_later, 2, next);
    }
    void *p = beam_alloc(beam_allocator, unsigned char, 8);
    (void)p;
    return enif_make_atom(env, "ok");
}

/* hop(Step): moves itself normal -> dirty CPU -> dirty IO -> normal,
 * carrying a block of beam_allocator (allocated in the first slice, freed
 * in the last): {thread kind, allocator kind} per slice, last first. */
BEAM_NIF(hop) {
    unsigned step;
    if (!enif_get_uint(env, argv[0], &step))
        return enif_make_badarg(env);
    ERL_NIF_TERM seen = argc == 3 ? argv[2] : enif_make_list(env, 0);
    seen = enif_make_list_cell(
        env,
        enif_make_tuple2(env, thread_kind(env), kind_of(env, beam_allocator)),
        seen);
    ErlNifUInt64 addr = 0;
    if (step == 0) {
        void *p = beam_alloc(beam_allocator, unsigned char, 40);
        if (p == NULL)
            return beam_make_error(env, "enomem");
        addr = (ErlNifUInt64)(uintptr_t)p;
    } else if (argc != 3 || !enif_get_uint64(env, argv[1], &addr)) {
        return enif_make_badarg(env);
    }
    if (step == 3) {
        beam_free(beam_allocator, (unsigned char *)(uintptr_t)addr, 40);
        return seen;
    }
    static const int flags[] = {ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                ERL_NIF_DIRTY_JOB_IO_BOUND, 0};
    ERL_NIF_TERM next[3] = {enif_make_uint(env, step + 1),
                            enif_make_uint64(env, addr), seen};
    return enif_schedule_nif(env, "hop", flags[step], hop, 3, next);
}

/* raise_live(): leak_check, a block live when it raises badarg. */
BEAM_NIF(raise_live, .leak_check = true) {
    void *p = beam_alloc(beam_allocator, unsigned char, 24);
    (void)p;
    return enif_make_badarg(env);
}

/* raise_freed(): leak_check, the block freed before badarg. */
BEAM_NIF(raise_freed, .leak_check = true) {
    void *p = beam_alloc(beam_allocator, unsigned char, 24);
    beam_free(beam_allocator, (unsigned char *)p, 24);
    return enif_make_badarg(env);
}

/* inner_scratch(): the arena over raw: allocates and returns its kind. */
BEAM_NIF(inner_scratch, .scratch = true) {
    void *p = beam_alloc(beam_allocator, unsigned char, 100);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    return kind_of(env, beam_allocator);
}

/* nested(): leak_check, allocates, calls inner_scratch's C function,
 * frees: {its kind before, the inner's kind, its kind after the inner
 * returned}. */
BEAM_NIF(nested, .leak_check = true) {
    beam_allocator_t before = beam_allocator;
    void *p = beam_alloc(beam_allocator, unsigned char, 16);
    ERL_NIF_TERM inner = inner_scratch(env, 0, argv);
    bool same = same_allocator(before, beam_allocator);
    beam_free(beam_allocator, (unsigned char *)p, 16);
    return enif_make_tuple2(env, inner, make_bool(env, same));
}

/* A thread's beam_allocator, and what the thread gets allocating. */
static void *thread_body(void *arg) {
    beam_allocator_t *out = arg;
    *out = beam_allocator;
    return NULL;
}

/* thread_allocator(): .allocator's gpa NIF: {its kind, an enif thread's
 * beam_allocator kind}. */
static beam_allocator_t pick_gpa(void) {
    return beam_general_purpose_allocator;
}
BEAM_NIF(thread_allocator, .allocator = pick_gpa) {
    beam_allocator_t seen = {NULL, NULL};
    ErlNifTid tid;
    static char name[] = "beam_alloc_test_thread";
    if (enif_thread_create(name, &tid, thread_body, &seen, NULL) != 0)
        return beam_make_error(env, "thread");
    enif_thread_join(tid, NULL);
    return enif_make_tuple2(env, kind_of(env, beam_allocator),
                            kind_of(env, seen));
}

/* --- load, upgrade, unload allocating through beam_allocator ------------ */

static beam_allocator_t load_allocator;
static void *load_block;

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    load_allocator = beam_allocator;
    load_block = beam_alloc(beam_allocator, unsigned char, 32);
    return capture_reports() != 0 || load_block == NULL;
}

static void unload(ErlNifEnv *env, void *priv) {
    (void)env;
    (void)priv;
    beam_free(beam_allocator, (unsigned char *)load_block, 32);
}

/* load_kind(): beam_allocator's kind in the load callback. */
static ERL_NIF_TERM load_kind(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return kind_of(env, load_allocator);
}

/* --- Resources across slices ------------------------------------------- */

/* res_walk(N): leak_check; the first slice makes an arena resource over
 * beam_allocator and allocates from it in every slice, the last releases
 * it: the live blocks of the resource at the end. */
BEAM_NIF(res_walk, .leak_check = true) {
    unsigned n;
    beam_resource_t *r;
    ERL_NIF_TERM term;
    if (!enif_get_uint(env, argv[0], &n))
        return enif_make_badarg(env);
    if (argc == 1) {
        r = beam_resource_new(env, BEAM_RESOURCE_ARENA, beam_allocator, 0,
                              &term);
        if (r == NULL)
            return beam_make_error(env, "enomem");
    } else {
        term = argv[1];
        if (!beam_resource_get(env, term, &r))
            return enif_make_badarg(env);
    }
    void *p = beam_alloc(beam_resource_allocator(r), unsigned char, 100);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    if (n == 0) {
        size_t live = beam_resource_usage_of(r).live_blocks;
        beam_resource_release(r);
        return enif_make_uint64(env, live);
    }
    ERL_NIF_TERM next[2] = {enif_make_uint(env, n - 1), term};
    return enif_schedule_nif(env, "res_walk", 0, res_walk, 2, next);
}

/* A move of a NIF's own to a dirty CPU scheduler (enif_schedule_nif of its
 * C function under its name), for the twins below: true in the slice that
 * moved. */
static bool moved_dirty(ErlNifEnv *env, const char *name, beam_nif_body_fn self,
                        int argc, const ERL_NIF_TERM argv[],
                        ERL_NIF_TERM *result) {
    if (enif_thread_type() != ERL_NIF_THR_NORMAL_SCHEDULER)
        return false;
    *result = enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_CPU_BOUND, self,
                                argc, argv);
    return true;
}

/* twin_leak(): leak_check, listed under a normal and a dirty name (one C
 * function; twin_leak_dirty/0): called by its normal name it moves itself
 * to a dirty scheduler, as a NIF that finds its work long does, and leaks
 * there. The leak is twin_leak/0's: the continuation was scheduled as it
 * (the glue named it by the dirty twin, by the scheduler it ran on). */
BEAM_NIF(twin_leak, .leak_check = true) {
    ERL_NIF_TERM moved;
    if (moved_dirty(env, "twin_leak", twin_leak, argc, argv, &moved))
        return moved;
    void *p = beam_alloc(beam_allocator, unsigned char, 8);
    (void)p;
    return enif_make_atom(env, "ok");
}

/* twin_kind(): the same move, listed under a dirty name too
 * (twin_kind_dirty/0); load_info gives twin_kind scratch, its dirty name
 * nothing. {thread kind, allocator kind, beam_nif_function_name()} of the
 * slice that answers. */
BEAM_NIF(twin_kind) {
    ERL_NIF_TERM moved;
    if (moved_dirty(env, "twin_kind", twin_kind, argc, argv, &moved))
        return moved;
    const char *name = beam_nif_function_name();
    return enif_make_tuple3(
        env, thread_kind(env), kind_of(env, beam_allocator),
        enif_make_string(env, name != NULL ? name : "", ERL_NIF_LATIN1));
}

/* twin_badarg(x): the same move, listed under a dirty name too
 * (twin_badarg_dirty/1); the continuation raises badarg, as a NIF that
 * finds its argument wrong does, after sleeping x milliseconds when x is
 * a non-negative integer (for process_info to see it running). */
BEAM_NIF(twin_badarg) {
    ERL_NIF_TERM moved;
    if (moved_dirty(env, "twin_badarg", twin_badarg, argc, argv, &moved))
        return moved;
    unsigned ms;
    if (argc == 1 && enif_get_uint(env, argv[0], &ms)) {
        struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
        nanosleep(&t, NULL);
    }
    return enif_make_badarg(env);
}

static ErlNifFunc funcs[] = {
    {"walk", 1, walk, 0},
    {"chain", 1, chain, 0},
    {"leak_later", 1, nif_leak_later, 0},
    {"hop", 1, hop, 0},
    {"raise_live", 0, raise_live, 0},
    {"raise_freed", 0, raise_freed, 0},
    {"nested", 0, nested, 0},
    {"thread_allocator", 0, thread_allocator, 0},
    {"load_kind", 0, load_kind, 0},
    {"res_walk", 1, res_walk, 0},
    {"take_reports", 0, take_reports, 0},
    {"twin_leak", 0, twin_leak, 0},
    {"twin_leak_dirty", 0, twin_leak, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"twin_kind", 0, twin_kind, 0},
    {"twin_kind_dirty", 0, twin_kind, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"twin_badarg", 1, twin_badarg, 0},
    {"twin_badarg_dirty", 1, twin_badarg, ERL_NIF_DIRTY_JOB_CPU_BOUND},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Yield, funcs, load, NULL, unload)
