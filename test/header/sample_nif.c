/* Compiled by `make header-test` as C11 and as C++17, with gcc and clang,
 * strict: a NIF using every public macro and inline function, and the
 * adapter headers' hooks, must build warning-free, also under the warnings
 * strict projects turn into errors (HEADER_PEDANTIC_C and
 * HEADER_PEDANTIC_CXX in the Makefile: -Wold-style-cast,
 * -Wzero-as-null-pointer-constant, -Wcast-qual, -Wconversion,
 * -Wbad-function-cast, ...), and under clang's -Weverything (less the
 * warnings HEADER_EVERYTHING turns off) with C from C11 to C2x and C++17
 * and C++20, with and without exceptions and RTTI. The file itself is
 * clean in both languages (no NULL, no casts), so that
 * any warning is the headers'. */
#include <beam_alloc/hooks.h>
#include <beam_alloc/sqlite3.h>
#include <beam_alloc/zlib.h>
#include <beam_alloc/zstd.h>
#include <beam_alloc_nif.h>
#ifdef __cplusplus
#include <beam_alloc.hpp>

#include <vector>
#endif

static beam_allocator_t pick(void) {
    return beam_large_allocator;
}

BEAM_NIF(plain) {
    uint16_t *xs = beam_alloc(beam_allocator, uint16_t, 4);
    if (!xs)
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
    char *p = beam_alloc_aligned(beam_allocator, char, 10, 4096);
    beam_free_aligned(beam_allocator, p, 10, 4096);
    return argc > 0 ? argv[0] : enif_make_atom(env, "ok");
}

BEAM_NIF(scoped) {
    ERL_NIF_TERM term;
    beam_resource_t *r = beam_resource_new(env, BEAM_RESOURCE_ARENA,
                                           beam_large_allocator, 0, &term);
    if (!r || !beam_resource_get(env, term, &r) || !beam_resource_pin(r))
        return beam_make_error(env, "enomem");
    int *xs = beam_alloc(beam_resource_allocator(r), int, 4);
    beam_resource_unpin(r);
    beam_resource_usage u = beam_resource_usage_of(r);
    beam_resource_release(r);
    return xs && u.live_blocks == 1 ? term : enif_make_badarg(env);
}

BEAM_NIF(scratch, .scratch = true) {
    char *s = beam_alloc(beam_allocator, char, 64);
    return s ? enif_make_atom(env, "ok") : beam_make_error(env, "enomem");
}

BEAM_NIF(everything, .leak_check = true, .allocator = pick, .scratch = true) {
    return enif_make_atom(env, "ok");
}

/* A continuation of its own on a dirty scheduler, under a dirty name too:
 * enif_schedule_nif is beam_alloc_nif.h's macro (beam_nif_schedule). */
BEAM_NIF(moves) {
    if (argc == 0) {
        ERL_NIF_TERM next = enif_make_atom(env, "ok");
        return enif_schedule_nif(env, "moves", ERL_NIF_DIRTY_JOB_CPU_BOUND,
                                 moves, 1, &next);
    }
    return argv[0];
}

/* Instances, their options and the return-address forms. */
BEAM_NIF(instances) {
    beam_gpa_t gpa;
    unsigned frames = 4; /* a variable: its type is the macro's own */
    beam_gpa_init_ex(&gpa, beam_raw_allocator,
                     BEAM_GPA_TRACK_SITES | BEAM_GPA_FRAMES(frames));
    uintptr_t ret = BEAM_RET_ADDR();
    void *p = beam_alloc_bytes_at(beam_gpa_allocator(&gpa), 24, 8, ret);
    beam_free_bytes_at(beam_gpa_allocator(&gpa), p, 24, 8, ret);
    bool leaked = beam_gpa_deinit(&gpa);
    beam_arena_t arena;
    beam_arena_init(&arena, beam_raw_allocator);
    bool kept = beam_arena_reset(&arena);
    bool freed = beam_arena_reset(&arena, BEAM_ARENA_FREE_ALL);
    beam_arena_deinit(&arena);
    return enif_make_atom(env, !leaked && kept && freed ? "ok" : "error");
}

/* The adapter headers: their hooks compile in the user's code. */
BEAM_MALLOC_HOOKS(sample, beam_general_purpose_allocator);
/* A library that takes malloc and free only (cJSON): the rest unused, no
 * -Wunused-function (clang warns of static inline ones in the main file). */
BEAM_MALLOC_HOOKS(two_only, beam_general_purpose_allocator);
/* OpenSSL's shape, with the caller's file and line. */
BEAM_MALLOC_HOOKS_FILE_LINE(sample_fl, beam_general_purpose_allocator);

BEAM_NIF(adapters) {
    z_stream strm;
    beam_zlib_use(&strm, &beam_allocator);
    ZSTD_customMem mem = beam_zstd_mem(&beam_allocator);
    beam_sqlite3_use(beam_allocator);
    char *s = sample_strdup("x");
    void *grown = sample_realloc(s, 4);
    sample_free(grown ? grown : s);
    sample_free(sample_calloc(2, 8));
    sample_free(sample_malloc(1));
    two_only_free(two_only_malloc(1));
    beam_hook_free(&beam_allocator, beam_hook_malloc(&beam_allocator, 8));
    void *fl = sample_fl_malloc(1, __FILE__, __LINE__);
    void *fl_grown = sample_fl_realloc(fl, 8, __FILE__, __LINE__);
    sample_fl_free(fl_grown ? fl_grown : fl, __FILE__, __LINE__);
    beam_hook_free_ctx_last(beam_hook_malloc_ctx_last(8, &beam_allocator),
                            &beam_allocator);
    void *lua = beam_lua_alloc(&beam_allocator, BEAM_INTERNAL_NULL, 4, 8);
    beam_lua_alloc(&beam_allocator, lua, 8, 0);
    return enif_make_atom(env, mem.customAlloc ? "ok" : "error");
}

#ifdef __cplusplus
BEAM_NIF(containers) {
    std::vector<long, beam::allocator<long>> v;
    for (long i = 0; i < 10; i++)
        v.push_back(i * i);
    beam::memory_resource r;
    std::pmr::vector<long> w{&r};
    w.assign(v.begin(), v.end());
    return enif_make_long(env, w.back());
}
#endif

static ErlNifFunc funcs[] = {
    {"plain", 0, plain, 0},
    {"checked", 0, checked, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"custom", 1, custom, 0},
    {"scoped", 0, scoped, 0},
    {"scratch", 0, scratch, 0},
    {"everything", 0, everything, 0},
    {"moves", 0, moves, 0},
    {"moves_dirty", 0, moves, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"instances", 0, instances, 0},
    {"adapters", 0, adapters, 0},
#ifdef __cplusplus
    {"containers", 0, containers, 0},
#endif
};

/* Callbacks of every kind: in C++ BEAM_NIF_INIT calls them through its
 * exception guards. */
static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)info;
    (void)priv;
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
