/*
 * Resource-scoped allocators in a module that uses plain ERL_NIF_INIT and
 * raw NIFs: it opens the resource type itself with beam_resource_init.
 * Being another shared object, it has its own copy of beam_alloc and so
 * its own resource type: terms of BeamAlloc.Test.Resource are not its own,
 * and the other way round. Loaded by BeamAlloc.Test.ResourcePlain.
 */
#include "nif_util.h"

/* new() -> {:ok, res}: an arena resource over the raw allocator. */
static ERL_NIF_TERM new_nif(ErlNifEnv *env, int argc,
                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM term;
    if (!beam_resource_new(env, BEAM_RESOURCE_ARENA, beam_raw_allocator, 0,
                           &term))
        return beam_make_error(env, "enomem");
    return make_ok(env, term);
}

/* alloc(res, size) -> {:ok, live_blocks}; the block stays until release. */
static ERL_NIF_TERM alloc_nif(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    beam_resource_t *r;
    size_t len;
    if (!beam_resource_get(env, argv[0], &r) || !get_size(env, argv[1], &len))
        return enif_make_badarg(env);
    unsigned char *p =
        beam_alloc(beam_resource_allocator(r), unsigned char, len);
    if (p == NULL)
        return beam_make_error(env, beam_resource_is_released(r) ? "released"
                                                                 : "enomem");
    memset(p, 0x5A, len);
    return make_ok(
        env, enif_make_uint64(env, beam_resource_usage_of(r).live_blocks));
}

static ERL_NIF_TERM is_resource_nif(ErlNifEnv *env, int argc,
                                    const ERL_NIF_TERM argv[]) {
    (void)argc;
    beam_resource_t *r;
    return make_bool(env, beam_resource_get(env, argv[0], &r));
}

static ERL_NIF_TERM live_count_nif(ErlNifEnv *env, int argc,
                                   const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_uint64(env, beam_resource_live_count());
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)priv;
    (void)info;
    return beam_resource_init(env) ? 0 : 1;
}

static int upgrade(ErlNifEnv *env, void **priv, void **old, ERL_NIF_TERM info) {
    (void)priv;
    (void)old;
    (void)info;
    return beam_resource_init(env) ? 0 : 1;
}

static ErlNifFunc funcs[] = {
    {"new", 0, new_nif, 0},
    {"alloc", 2, alloc_nif, 0},
    {"is_resource", 1, is_resource_nif, 0},
    {"live_count", 0, live_count_nif, 0},
};

ERL_NIF_INIT(Elixir.BeamAlloc.Test.ResourcePlain, funcs, load, NULL, upgrade,
             NULL)
