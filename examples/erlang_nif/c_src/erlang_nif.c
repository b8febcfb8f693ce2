/*
 * The NIFs of the Erlang module erlang_nif, built with beam_alloc: every
 * BEAM_NIF gets beam_allocator set on entry (enif_alloc by default).
 */
#include <beam_alloc_nif.h>

/* "1,22,333" -> {ok, [1, 22, 333]}: the numbers go into an array that grows
 * by doubling, each growth a request that can fail. */
BEAM_NIF(parse_ints) {
    ErlNifBinary text;
    if (!enif_inspect_binary(env, argv[0], &text))
        return enif_make_badarg(env);
    size_t len = 0, cap = 2;
    long *xs = beam_alloc(beam_allocator, long, cap);
    if (xs == NULL)
        return beam_make_error(env, "enomem");
    const unsigned char *p = text.data, *end = text.data + text.size;
    while (p < end) {
        if (*p < '0' || *p > '9') {
            beam_free(beam_allocator, xs, cap);
            return beam_make_error(env, "syntax");
        }
        long v = 0;
        while (p < end && *p >= '0' && *p <= '9' && v < 100000000)
            v = v * 10 + (*p++ - '0');
        if (len == cap) {
            long *grown = beam_realloc(beam_allocator, xs, cap, 2 * cap);
            if (grown == NULL) {
                beam_free(beam_allocator, xs, cap);
                return beam_make_error(env, "enomem");
            }
            xs = grown;
            cap *= 2;
        }
        xs[len++] = v;
        if (p < end && *p == ',')
            p++;
    }
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = len; i-- > 0;)
        list = enif_make_list_cell(env, enif_make_long(env, xs[i]), list);
    beam_free(beam_allocator, xs, cap);
    return enif_make_tuple2(env, enif_make_atom(env, "ok"), list);
}

/* Leak-checked through load_info (see erlang_nif.erl): raises
 * {memory_leak, <<"memory leak detected in function erlang_nif:leaky/0">>}. */
BEAM_NIF(leaky) {
    unsigned char *forgotten = beam_alloc(beam_allocator, unsigned char, 32);
    if (forgotten != NULL)
        forgotten[0] = 1;
    return enif_make_atom(env, "ok");
}

/* The process-wide general purpose allocator as this NIF's
 * beam_allocator (.allocator takes a function). */
static beam_allocator_t gpa(void) {
    return beam_general_purpose_allocator;
}

/* Frees a block twice, on purpose: the allocator reports it (with the
 * beam_alloc application started, the report's site is this file's line,
 * and beam_alloc:take_reports/0 returns it) and the call goes on. */
BEAM_NIF(free_twice, .allocator = gpa) {
    char *p = beam_alloc(beam_allocator, char, 24);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_allocator, p, 24);
    beam_free(beam_allocator, p, 24);
    return enif_make_atom(env, "ok");
}

/* A block held across calls, from beam_raw_allocator: beam_alloc:stats/1
 * sees it. */
static ErlNifMutex *kept_lock;
static void *kept;
static size_t kept_len;

static void swap_kept(void *block, size_t len) {
    enif_mutex_lock(kept_lock);
    void *old = kept;
    size_t old_len = kept_len;
    kept = block;
    kept_len = len;
    enif_mutex_unlock(kept_lock);
    if (old != NULL)
        beam_free_bytes(beam_raw_allocator, old, old_len, 8);
}

BEAM_NIF(keep) {
    ErlNifUInt64 n;
    if (!enif_get_uint64(env, argv[0], &n) || n == 0 || n > (1u << 30))
        return enif_make_badarg(env);
    void *block = beam_alloc_bytes(beam_raw_allocator, (size_t)n, 8);
    if (block == NULL)
        return beam_make_error(env, "enomem");
    swap_kept(block, (size_t)n);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(drop) {
    swap_kept(NULL, 0);
    return enif_make_atom(env, "ok");
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    kept_lock = enif_mutex_create("erlang_nif_kept");
    return kept_lock == NULL;
}

/* A new version of erlang_nif from the same file shares this copy's
 * statics, the lock among them: `rebar3 do eunit --cover, ct --cover`
 * cover-compiles the module again in the VM that runs eunit's version
 * (BEAM_NIF_INIT refuses such an upgrade without this callback; cover then
 * failed, and rebar3 hung writing its data). A new file is a fresh copy:
 * its load makes the lock. */
static int upgrade(ErlNifEnv *env, void **priv, void **old_priv,
                   ERL_NIF_TERM info) {
    (void)old_priv;
    return kept_lock == NULL ? load(env, priv, info) : 0;
}

static ErlNifFunc funcs[] = {
    {"parse_ints", 1, parse_ints, 0},
    {"leaky", 0, leaky, 0},
    {"keep", 1, keep, 0},
    {"drop", 0, drop, 0},
    {"free_twice", 0, free_twice, 0},
};

BEAM_NIF_INIT(erlang_nif, funcs, load, upgrade, NULL)
