/*
 * What BEAM_NIF's glue costs a tiny NIF per call (make bench-nif-call):
 * the same bodies as plain erl_nif functions (p_*, which the VM calls
 * directly) and as BEAM_NIFs (b_*), in one library, on a normal and a
 * dirty CPU scheduler; one 32-byte allocation and free through
 * enif_alloc, beam_allocator (raw by default, .allocator = gpa) and the
 * general purpose allocator called from a plain function. Driven by
 * bench_nif_call.exs.
 */
#include <beam_alloc_nif.h>

#include <stdint.h>
#include <string.h>

/* FNV-1a over a small binary: a NIF that does a little work. */
static ERL_NIF_TERM hash_of(ErlNifEnv *env, ERL_NIF_TERM bin) {
    ErlNifBinary b;
    if (!enif_inspect_binary(env, bin, &b))
        return enif_make_badarg(env);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < b.size; i++)
        h = (h ^ b.data[i]) * 1099511628211ull;
    return enif_make_uint64(env, h);
}

/* Writes the block from the argument, so that no allocation is dropped. */
static ERL_NIF_TERM use_block(ErlNifEnv *env, unsigned char *p,
                              ERL_NIF_TERM arg) {
    ErlNifUInt64 v = 0;
    (void)enif_get_uint64(env, arg, &v);
    memset(p, (int)v, 32);
    __asm__ volatile("" : : "r"(p) : "memory");
    return arg;
}

static beam_allocator_t gpa(void) {
    return beam_general_purpose_allocator;
}

static ERL_NIF_TERM p_noop(ErlNifEnv *env, int argc,
                           const ERL_NIF_TERM argv[]) {
    (void)env, (void)argc;
    return argv[0];
}
BEAM_NIF(b_noop) {
    return argv[0];
}

static ERL_NIF_TERM p_hash(ErlNifEnv *env, int argc,
                           const ERL_NIF_TERM argv[]) {
    (void)argc;
    return hash_of(env, argv[0]);
}
BEAM_NIF(b_hash) {
    return hash_of(env, argv[0]);
}

/* One 32-byte block from enif_alloc, as a plain NIF takes it. */
static ERL_NIF_TERM enif_use_free(ErlNifEnv *env, ERL_NIF_TERM arg) {
    unsigned char *p = enif_alloc(32);
    if (p == NULL)
        return enif_make_badarg(env);
    ERL_NIF_TERM r = use_block(env, p, arg);
    enif_free(p);
    return r;
}
static ERL_NIF_TERM p_enif(ErlNifEnv *env, int argc,
                           const ERL_NIF_TERM argv[]) {
    (void)argc;
    return enif_use_free(env, argv[0]);
}
BEAM_NIF(b_enif) {
    return enif_use_free(env, argv[0]);
}

/* beam_allocator read once: each read in the NIF's own code is an access
 * to a thread-local variable of a dlopen'ed library. */
static ERL_NIF_TERM alloc_use_free(ErlNifEnv *env, beam_allocator_t a,
                                   ERL_NIF_TERM arg) {
    unsigned char *p = beam_alloc(a, unsigned char, 32);
    if (p == NULL)
        return enif_make_badarg(env);
    ERL_NIF_TERM r = use_block(env, p, arg);
    beam_free(a, p, 32);
    return r;
}
/* The path of a NIF with options (and of every call while a fault driver
 * is loaded): its allocator stack set up and checked after the body. */
BEAM_NIF(b_opts, .raise_on_misuse = true) {
    return argv[0];
}
BEAM_NIF(b_raw) {
    return alloc_use_free(env, beam_allocator, argv[0]);
}
BEAM_NIF(b_gpa, .allocator = gpa) {
    return alloc_use_free(env, beam_allocator, argv[0]);
}
static ERL_NIF_TERM p_gpa(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    return alloc_use_free(env, beam_general_purpose_allocator, argv[0]);
}

#define DIRTY ERL_NIF_DIRTY_JOB_CPU_BOUND
static ErlNifFunc funcs[] = {
    {"p_noop", 1, p_noop, 0},      {"b_noop", 1, b_noop, 0},
    {"p_hash", 1, p_hash, 0},      {"b_hash", 1, b_hash, 0},
    {"p_enif", 1, p_enif, 0},      {"b_enif", 1, b_enif, 0},
    {"b_raw", 1, b_raw, 0},        {"b_gpa", 1, b_gpa, 0},
    {"p_gpa", 1, p_gpa, 0},        {"b_opts", 1, b_opts, 0},
    {"dp_noop", 1, p_noop, DIRTY}, {"db_noop", 1, b_noop, DIRTY},
    {"dp_enif", 1, p_enif, DIRTY}, {"db_enif", 1, b_enif, DIRTY},
    {"db_raw", 1, b_raw, DIRTY},   {"db_gpa", 1, b_gpa, DIRTY},
    {"dp_gpa", 1, p_gpa, DIRTY},
};
BEAM_NIF_INIT(Elixir.NifCallBench, funcs, NULL, NULL, NULL)
