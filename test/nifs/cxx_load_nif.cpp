// Load, upgrade and unload callbacks that throw when load_info asks them
// to: BEAM_NIF_INIT catches what leaves them (an exception through the
// VM's C frames would end the VM), reports it and fails the load.
#include <beam_alloc_nif.h>

#include <stdexcept>

static bool throw_at_unload;
static int pool_size = -1; // load_info's pool_size, a setting of its own

// info is the atom, or a map with the atom as a key (next to beam_alloc's
// options).
static bool info_is(ErlNifEnv *env, ERL_NIF_TERM info, const char *atom) {
    ERL_NIF_TERM key = enif_make_atom(env, atom), value;
    return enif_is_identical(info, key) ||
           (enif_is_map(env, info) &&
            enif_get_map_value(env, info, key, &value));
}

static int load(ErlNifEnv *env, void **, ERL_NIF_TERM info) {
    if (info_is(env, info, "throw_load"))
        throw std::runtime_error("load boom");
    if (info_is(env, info, "throw_int"))
        throw 42;
    if (info_is(env, info, "throw_bad_alloc"))
        throw std::bad_alloc();
    throw_at_unload = info_is(env, info, "throw_unload");
    ERL_NIF_TERM size;
    if (!enif_is_map(env, info) ||
        !enif_get_map_value(env, info, enif_make_atom(env, "pool_size"),
                            &size) ||
        !enif_get_int(env, size, &pool_size))
        pool_size = -1;
    return 0;
}

static int upgrade(ErlNifEnv *env, void **priv, void **, ERL_NIF_TERM info) {
    if (info_is(env, info, "throw_upgrade"))
        throw std::runtime_error("upgrade boom");
    if (info_is(env, info, "fail_upgrade"))
        return 1;
    return load(env, priv, info);
}

static void unload(ErlNifEnv *, void *) {
    if (throw_at_unload)
        throw std::runtime_error("unload boom");
}

BEAM_NIF(ping) {
    return enif_make_atom(env, "pong");
}

// alloc_kind() -> raw | large | other: the call's beam_allocator, which
// load_info's options choose.
BEAM_NIF(alloc_kind) {
    const char *kind =
        beam_allocator.vtable == beam_raw_allocator.vtable     ? "raw"
        : beam_allocator.vtable == beam_large_allocator.vtable ? "large"
                                                               : "other";
    return enif_make_atom(env, kind);
}

// load_setting() -> the pool_size the load got, or -1.
BEAM_NIF(load_setting) {
    return enif_make_int(env, pool_size);
}

static ErlNifFunc funcs[] = {{"ping", 0, ping, 0},
                             {"alloc_kind", 0, alloc_kind, 0},
                             {"load_setting", 0, load_setting, 0}};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.CxxLoad, funcs, load, upgrade, unload)
