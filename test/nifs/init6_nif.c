/*
 * BEAM_NIF_INIT given ERL_NIF_INIT's own six arguments (RELOAD included),
 * as a NIF that only renamed its ERL_NIF_INIT line has it: it loads, runs
 * its load callback, and its BEAM_NIF functions are wrapped (leak_check).
 */
#include <beam_alloc_nif.h>

static int loads;

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    loads++;
    return 0;
}

BEAM_NIF(loads_seen) {
    return enif_make_int(env, loads);
}

BEAM_NIF(leaks, .leak_check = true) {
    return beam_create(beam_allocator, uint64_t) != NULL
               ? enif_make_atom(env, "ok")
               : beam_make_error(env, "enomem");
}

static ErlNifFunc funcs[] = {
    {"loads_seen", 0, loads_seen, 0},
    {"leaks", 0, leaks, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Init6, funcs, load, NULL, NULL, NULL)
