/*
 * A new version of a module loading its NIF library with no upgrade
 * callback given to BEAM_NIF_INIT (test/upgrade_test.exs): from another
 * file, the library is a fresh copy whose load callback must run (it
 * opens the resource type make/0 needs, and sets priv_data with load_info
 * set_priv); from the same file, the upgrade fails, as the load callback
 * would not run.
 */
#include <beam_alloc_nif.h>

static ErlNifResourceType *thing_type;
static ErlNifResourceType *box_type;
static int loads; /* load callbacks run in this copy */
static int priv_token;

/* A box: a block of the process-wide general purpose allocator (of the
 * raw allocator: raw_box/0), held by a resource with the allocator it
 * came from, as a NIF keeps a buffer in its resource. Its type is taken
 * over by each new version (TAKEOVER), so a box the old copy made
 * outlives that copy's module; its destructor, the new copy's, frees the
 * block through the allocator kept. */
typedef struct box {
    beam_allocator_t alloc;
    unsigned char *block;
    /* Freed through beam_general_purpose_allocator, the destructor's
     * copy's, not the one kept: what a NIF that keeps no allocator does
     * (gbox/0). */
    bool through_own;
    /* A malloc-style block (mgbox/1): beam_mfree'd, through the
     * destructor's copy's process-wide instance. */
    bool malloc_style;
    size_t bytes;
} box;
#define BOX_BYTES 3000
/* Above the slab sizes: a large block (lgbox/0). */
#define LARGE_BOX_BYTES 200000

static void box_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    box *b = obj;
    if (b->malloc_style)
        beam_mfree(beam_general_purpose_allocator, b->block);
    else
        beam_free_bytes(b->through_own ? beam_general_purpose_allocator
                                       : b->alloc,
                        b->block, b->bytes, 8);
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    /* TAKEOVER too: a fresh copy loads while the old version's type lives. */
    thing_type =
        enif_open_resource_type(env, NULL, "thing", NULL,
                                ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (thing_type == NULL)
        return 1;
    box_type =
        enif_open_resource_type(env, NULL, "box", box_dtor,
                                ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (box_type == NULL)
        return 1;
    if (enif_is_identical(info, enif_make_atom(env, "set_priv")))
        *priv = &priv_token;
    loads++;
    return 0;
}

/* make(): a resource of the type the load callback opened, or
 * {error, no_type} when it never ran in this copy. */
static ERL_NIF_TERM make(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    if (thing_type == NULL)
        return beam_make_error(env, "no_type");
    void *r = enif_alloc_resource(thing_type, 8);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    ERL_NIF_TERM term = enif_make_resource(env, r);
    enif_release_resource(r);
    return enif_make_tuple2(env, enif_make_atom(env, "ok"), term);
}

/* loads(): how many load callbacks ran in this copy of the library. */
static ERL_NIF_TERM loads_nif(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_int(env, loads);
}

/* priv(): set when this version's priv_data is the load callback's. */
static ERL_NIF_TERM priv_nif(ErlNifEnv *env, int argc,
                             const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_atom(env,
                          enif_priv_data(env) == &priv_token ? "set" : "none");
}

/* hold(): a resource of beam_alloc's (its type has a destructor: the VM
 * keeps this copy mapped while one is alive, the module purged or not). */
static ERL_NIF_TERM hold(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM term;
    if (!beam_resource_new(env, BEAM_RESOURCE_ARENA, beam_large_allocator, 0,
                           &term))
        return beam_make_error(env, "enomem");
    return term;
}

/* churn(): small blocks of the process-wide general purpose allocator,
 * allocated and freed, and one of 5000 bytes kept (freed at the next
 * churn): beam_alloc:stats/1 and collect/1 must reach this copy. */
static void *churn_kept;
static ERL_NIF_TERM churn(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    beam_allocator_t a = beam_general_purpose_allocator;
    void *blocks[400];
    for (size_t i = 0; i < 400; i++)
        blocks[i] = beam_alloc_bytes(a, 1 + 7 * i, 8);
    for (size_t i = 0; i < 400; i++)
        if (blocks[i] != NULL)
            beam_free_bytes(a, blocks[i], 1 + 7 * i, 8);
    if (churn_kept != NULL)
        beam_free_bytes(a, churn_kept, 5000, 8);
    churn_kept = beam_alloc_bytes(a, 5000, 8);
    return enif_make_atom(env, churn_kept != NULL ? "ok" : "enomem");
}

/* A box whose block holds i * 7 at byte i, from alloc (malloc_style:
 * with beam_malloc): {ok, Box}. */
static ERL_NIF_TERM make_box_as(ErlNifEnv *env, beam_allocator_t alloc,
                                bool through_own, bool malloc_style,
                                size_t bytes) {
    box *b = enif_alloc_resource(box_type, sizeof *b);
    if (b == NULL)
        return beam_make_error(env, "enomem");
    b->alloc = alloc;
    b->through_own = through_own;
    b->malloc_style = malloc_style;
    b->bytes = bytes;
    b->block = malloc_style ? beam_malloc(alloc, bytes)
                            : beam_alloc_bytes(alloc, bytes, 8);
    if (b->block == NULL) {
        b->alloc = beam_raw_allocator; /* (a NULL free: nothing) */
        enif_release_resource(b);
        return beam_make_error(env, "enomem");
    }
    for (size_t i = 0; i < bytes; i++)
        b->block[i] = (unsigned char)(i * 7);
    ERL_NIF_TERM term = enif_make_resource(env, b);
    enif_release_resource(b);
    return enif_make_tuple2(env, enif_make_atom(env, "ok"), term);
}

static ERL_NIF_TERM make_box(ErlNifEnv *env, beam_allocator_t alloc,
                             bool through_own, size_t bytes) {
    return make_box_as(env, alloc, through_own, false, bytes);
}

/* box(): a box of the process-wide general purpose allocator. */
static ERL_NIF_TERM box_nif(ErlNifEnv *env, int argc,
                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return make_box(env, beam_general_purpose_allocator, false, BOX_BYTES);
}

/* gbox(): a box of the process-wide general purpose allocator that its
 * destructor frees through its own copy's. */
static ERL_NIF_TERM gbox(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return make_box(env, beam_general_purpose_allocator, true, BOX_BYTES);
}

/* lgbox(): gbox/0's, with a large block. */
static ERL_NIF_TERM lgbox(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return make_box(env, beam_general_purpose_allocator, true, LARGE_BOX_BYTES);
}

/* raw_box(): a box of the raw allocator (enif_alloc), the allocator a
 * BEAM_NIF without options runs with. */
static ERL_NIF_TERM raw_box(ErlNifEnv *env, int argc,
                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return make_box(env, beam_raw_allocator, false, BOX_BYTES);
}

/* peek(Box): ok while its block holds what make_box wrote, else corrupt. */
static ERL_NIF_TERM peek(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    box *b;
    if (!enif_get_resource(env, argv[0], box_type, (void **)&b))
        return enif_make_badarg(env);
    for (size_t i = 0; i < b->bytes; i++)
        if (b->block[i] != (unsigned char)(i * 7))
            return enif_make_atom(env, "corrupt");
    return enif_make_atom(env, "ok");
}

/* wrong_free(Box), a leak_check call: frees the box's block through this
 * copy's process-wide instance with a wrong length, which is a misuse the
 * call raises with (API.md), whichever copy's allocators hold the block;
 * ok when it does not raise. */
BEAM_NIF(wrong_free, .leak_check = true) {
    (void)argc;
    box *b;
    if (!enif_get_resource(env, argv[0], box_type, (void **)&b))
        return enif_make_badarg(env);
    beam_free_bytes(beam_general_purpose_allocator, b->block, 1, 8);
    b->block = NULL; /* (the destructor's free: a NULL free, nothing) */
    return enif_make_atom(env, "ok");
}

/* The box b's block grown to p (NULL: the grow failed), of new_bytes: the
 * new bytes filled as make_box fills them (peek/1 then checks the whole
 * block); ok, or {error, null}, the box as it was. */
static ERL_NIF_TERM grown(ErlNifEnv *env, box *b, unsigned char *p,
                          size_t new_bytes) {
    if (p == NULL)
        return beam_make_error(env, "null");
    for (size_t i = b->bytes; i < new_bytes; i++)
        p[i] = (unsigned char)(i * 7);
    b->block = p;
    b->bytes = new_bytes;
    return enif_make_atom(env, "ok");
}

/* grow(Box, NewBytes, Given), a leak_check call: the box's block grown
 * to NewBytes with beam_realloc_bytes through this copy's process-wide
 * instance, Given its length (the box's, or a wrong one), as grown says.
 * After an upgrade, a box the old copy made holds a block the new copy's
 * instance does not: it must move into the new copy, as a NIF's growing
 * buffer in a resource does (misuse raises). */
BEAM_NIF(grow, .leak_check = true) {
    (void)argc;
    box *b;
    unsigned long new_bytes, given;
    if (!enif_get_resource(env, argv[0], box_type, (void **)&b) ||
        !enif_get_ulong(env, argv[1], &new_bytes) ||
        !enif_get_ulong(env, argv[2], &given) || new_bytes < b->bytes)
        return enif_make_badarg(env);
    return grown(env, b,
                 beam_realloc_bytes(beam_general_purpose_allocator, b->block,
                                    given, 8, new_bytes),
                 new_bytes);
}

/* msize(Box), a leak_check call: beam_msize of the box's block through
 * this copy's process-wide instance (0: not a block of it). */
BEAM_NIF(msize, .leak_check = true) {
    (void)argc;
    box *b;
    if (!enif_get_resource(env, argv[0], box_type, (void **)&b))
        return enif_make_badarg(env);
    return enif_make_uint64(
        env, beam_msize(beam_general_purpose_allocator, b->block));
}

/* mgbox(Bytes): gbox/0's with a malloc-style block (beam_malloc) of Bytes,
 * beam_mfree'd by the destructor's copy. */
static ERL_NIF_TERM mgbox(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
    (void)argc;
    unsigned long bytes;
    if (!enif_get_ulong(env, argv[0], &bytes) || bytes == 0)
        return enif_make_badarg(env);
    return make_box_as(env, beam_general_purpose_allocator, true, true, bytes);
}

/* mgrow(Box, NewBytes), a leak_check call: an mgbox/1's block grown with
 * beam_mrealloc through this copy's process-wide instance, as grow/3. */
BEAM_NIF(mgrow, .leak_check = true) {
    (void)argc;
    box *b;
    unsigned long new_bytes;
    if (!enif_get_resource(env, argv[0], box_type, (void **)&b) ||
        !enif_get_ulong(env, argv[1], &new_bytes) || !b->malloc_style ||
        new_bytes < b->bytes)
        return enif_make_badarg(env);
    return grown(
        env, b,
        beam_mrealloc(beam_general_purpose_allocator, b->block, new_bytes),
        new_bytes);
}

/* double_mfree(Box), a leak_check call: beam_mfree of an mgbox/1's block
 * through this copy's process-wide instance, twice (the second a double
 * free, which the call raises with); ok when it does not raise. */
BEAM_NIF(double_mfree, .leak_check = true) {
    (void)argc;
    box *b;
    if (!enif_get_resource(env, argv[0], box_type, (void **)&b) ||
        !b->malloc_style)
        return enif_make_badarg(env);
    void *block = b->block;
    b->block = NULL; /* (the destructor's free: a NULL free, nothing) */
    beam_mfree(beam_general_purpose_allocator, block);
    beam_mfree(beam_general_purpose_allocator, block);
    return enif_make_atom(env, "ok");
}

/* own_live(): this copy's process-wide instance's live blocks (stats/1
 * sums every copy's). */
static ERL_NIF_TERM own_live(ErlNifEnv *env, int argc,
                             const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    beam_alloc_stats st;
    beam_allocator_stats(beam_general_purpose_allocator, &st);
    return enif_make_uint64(env, st.live_blocks);
}

/* counted(): three blocks of the call's allocator, freed: ok, or {error,
 * enomem} (what check_all_allocation_failures counts and fails, in the
 * copy that a call runs). */
BEAM_NIF(counted) {
    (void)argv;
    for (size_t i = 0; i < 3; i++) {
        unsigned char *p = beam_alloc(beam_allocator, unsigned char, 24);
        if (p == NULL)
            return beam_make_error(env, "enomem");
        beam_free(beam_allocator, p, 24);
    }
    return enif_make_atom(env, "ok");
}

/* The static churn keeps goes with the module instance's copy: what a NIF
 * with state in statics does. (Left live, a copy that a newer version of
 * the module replaced would be kept, with its allocators: glue.c,
 * kept_for_newer_version.) */
static void unload(ErlNifEnv *env, void *priv) {
    (void)env;
    (void)priv;
    if (churn_kept != NULL)
        beam_free_bytes(beam_general_purpose_allocator, churn_kept, 5000, 8);
    churn_kept = NULL;
}

static ErlNifFunc funcs[] = {
    {"make", 0, make, 0},
    {"hold", 0, hold, 0},
    {"churn", 0, churn, 0},
    {"loads", 0, loads_nif, 0},
    {"priv", 0, priv_nif, 0},
    {"box", 0, box_nif, 0},
    {"peek", 1, peek, 0},
    {"raw_box", 0, raw_box, 0},
    {"gbox", 0, gbox, 0},
    {"wrong_free", 1, wrong_free, 0},
    {"lgbox", 0, lgbox, 0},
    {"grow", 3, grow, 0},
    {"msize", 1, msize, 0},
    {"own_live", 0, own_live, 0},
    {"mgbox", 1, mgbox, 0},
    {"mgrow", 2, mgrow, 0},
    {"double_mfree", 1, double_mfree, 0},
    {"counted", 0, counted, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Upgrade, funcs, load, NULL, unload)
