/*
 * A library with no load callback and raw NIFs only (test/upgrade_test.exs):
 * a new version of its module loading the same file just takes place, and
 * load_info options naming its plain functions fail the load. keep/0 keeps
 * the copy mapped for good, as a successful beam_sqlite3_use does (without
 * SQLite): true, or false when it cannot.
 */
#include <beam_alloc_nif.h>

static ERL_NIF_TERM ping(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_atom(env, "pong");
}

static ERL_NIF_TERM keep(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_atom(env, beam_internal_keep_mapped() ? "true" : "false");
}

static ErlNifFunc funcs[] = {{"ping", 0, ping, 0}, {"keep", 0, keep, 0}};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.UpgradePlain, funcs, NULL, NULL, NULL)
