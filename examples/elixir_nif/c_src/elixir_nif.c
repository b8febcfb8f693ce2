/*
 * The NIFs of ElixirNif, built with beam_alloc: every BEAM_NIF gets
 * beam_allocator set on entry (enif_alloc by default), which the tests fail
 * allocation by allocation with BeamAlloc.Testing.
 */
#include <beam_alloc_nif.h>

#include <string.h>
#include <zlib.h>

#include "checksum.h"

static ERL_NIF_TERM ok_tuple(ErlNifEnv *env, ERL_NIF_TERM value) {
    return enif_make_tuple2(env, enif_make_atom(env, "ok"), value);
}

/* zlib declares a function named compress: the NIF's C name is
 * nif_compress, and the table below names it compress for Erlang. */
BEAM_NIF(nif_compress) {
    ErlNifBinary in;
    if (!enif_inspect_binary(env, argv[0], &in))
        return enif_make_badarg(env);
    uLong bound = compressBound((uLong)in.size);
    Bytef *out = beam_alloc(beam_allocator, Bytef, bound);
    if (out == NULL)
        return beam_make_error(env, "enomem");
    uLongf out_len = bound;
    int rc = compress2(out, &out_len, in.data, (uLong)in.size,
                       Z_DEFAULT_COMPRESSION);
    ERL_NIF_TERM result;
    if (rc == Z_OK) {
        unsigned char *bytes = enif_make_new_binary(env, out_len, &result);
        memcpy(bytes, out, out_len);
        result = ok_tuple(env, result);
    } else {
        result = beam_make_error(env, "zlib");
    }
    beam_free(beam_allocator, out, bound);
    return result;
}

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
    return ok_tuple(env, list);
}

BEAM_NIF(checksum) {
    ErlNifBinary in;
    if (!enif_inspect_binary(env, argv[0], &in))
        return enif_make_badarg(env);
    return enif_make_uint(env, example_adler32(in.data, in.size));
}

/* Leak-checked from Elixir (use BeamAlloc.Nif, nifs: [leaky: [leak_check:
 * true]]): the call raises RuntimeError. */
BEAM_NIF(leaky) {
    unsigned char *forgotten = beam_alloc(beam_allocator, unsigned char, 32);
    if (forgotten != NULL)
        forgotten[0] = 1;
    return enif_make_atom(env, "ok");
}

/* A block held across calls, from beam_raw_allocator: BeamAlloc.stats/1
 * sees it. */
static ErlNifMutex *kept_lock;
static void *kept;
static size_t kept_len;

BEAM_NIF(keep) {
    ErlNifUInt64 n;
    if (!enif_get_uint64(env, argv[0], &n) || n == 0 || n > (1u << 30))
        return enif_make_badarg(env);
    void *block = beam_alloc_bytes(beam_raw_allocator, (size_t)n, 8);
    if (block == NULL)
        return beam_make_error(env, "enomem");
    enif_mutex_lock(kept_lock);
    void *old = kept;
    size_t old_len = kept_len;
    kept = block;
    kept_len = (size_t)n;
    enif_mutex_unlock(kept_lock);
    if (old != NULL)
        beam_free_bytes(beam_raw_allocator, old, old_len, 8);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(drop) {
    enif_mutex_lock(kept_lock);
    void *old = kept;
    size_t old_len = kept_len;
    kept = NULL;
    kept_len = 0;
    enif_mutex_unlock(kept_lock);
    if (old != NULL)
        beam_free_bytes(beam_raw_allocator, old, old_len, 8);
    return enif_make_atom(env, "ok");
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    kept_lock = enif_mutex_create("elixir_nif_kept");
    return kept_lock == NULL;
}

/* A new version of ElixirNif from the same file shares this copy's
 * statics, the lock among them: `mix test --cover` loads one right after
 * the compiler loaded the first (BEAM_NIF_INIT refuses such an upgrade
 * without this callback, and the report then misses the module). A new
 * file is a fresh copy: its load makes the lock. */
static int upgrade(ErlNifEnv *env, void **priv, void **old_priv,
                   ERL_NIF_TERM info) {
    (void)old_priv;
    return kept_lock == NULL ? load(env, priv, info) : 0;
}

static ErlNifFunc funcs[] = {
    {"compress", 1, nif_compress, 0},
    {"parse_ints", 1, parse_ints, 0},
    {"checksum", 1, checksum, 0},
    {"leaky", 0, leaky, 0},
    {"keep", 1, keep, 0},
    {"drop", 0, drop, 0},
};

BEAM_NIF_INIT(Elixir.ElixirNif, funcs, load, upgrade, NULL)
