/* Compiled by `make header-test` as C11 and as C++17, with gcc and clang,
 * strict: a NIF using every public macro must build warning-free. */
#include <beam_alloc_nif.h>

static beam_allocator_t pick(void) {
    return beam_large_allocator;
}

BEAM_NIF(plain) {
    uint16_t *xs = beam_alloc(beam_allocator, uint16_t, 4);
    if (xs == NULL)
        return beam_make_error(env, "enomem");
    xs = beam_realloc(beam_allocator, xs, 4, 8);
    ERL_NIF_TERM list = beam_make_uint_list(env, xs, 4, sizeof *xs);
    beam_free(beam_allocator, xs, 8);
    return list;
}

BEAM_NIF(checked, .leak_check = true) {
    double *d = beam_create(beam_allocator, double);
    beam_destroy(beam_allocator, d);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(custom, .leak_check = true, .allocator = pick) {
    void *p = beam_alloc_aligned(beam_allocator, char, 10, 4096);
    beam_free_aligned(beam_allocator, (char *)p, 10, 4096);
    return argc > 0 ? argv[0] : enif_make_atom(env, "ok");
}

BEAM_NIF(scoped) {
    ERL_NIF_TERM term;
    beam_resource_t *r = beam_resource_new(env, BEAM_RESOURCE_ARENA,
                                           beam_large_allocator, 0, &term);
    if (r == NULL || !beam_resource_get(env, term, &r) || !beam_resource_pin(r))
        return beam_make_error(env, "enomem");
    int *xs = beam_alloc(beam_resource_allocator(r), int, 4);
    beam_resource_unpin(r);
    beam_resource_usage u = beam_resource_usage_of(r);
    beam_resource_release(r);
    return xs != NULL && u.live_blocks == 1 ? term : enif_make_badarg(env);
}

BEAM_NIF(scratch, .scratch = true) {
    char *s = beam_alloc(beam_allocator, char, 64);
    return s != NULL ? enif_make_atom(env, "ok")
                     : beam_make_error(env, "enomem");
}

BEAM_NIF(everything, .leak_check = true, .allocator = pick, .scratch = true) {
    return enif_make_atom(env, "ok");
}

static ErlNifFunc funcs[] = {
    {"plain", 0, plain, 0},
    {"checked", 0, checked, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"custom", 1, custom, 0},
    {"scoped", 0, scoped, 0},
    {"scratch", 0, scratch, 0},
    {"everything", 0, everything, 0},
};

/* Callbacks of every kind: in C++ BEAM_NIF_INIT calls them through its
 * exception guards. */
static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)info;
    *priv = NULL;
    return 0;
}

static int upgrade(ErlNifEnv *env, void **priv, void **old,
                   ERL_NIF_TERM info) {
    (void)old;
    return load(env, priv, info);
}

static void unload(ErlNifEnv *env, void *priv) {
    (void)env;
    (void)priv;
}

BEAM_NIF_INIT(Elixir.HeaderTest, funcs, load, upgrade, unload)
