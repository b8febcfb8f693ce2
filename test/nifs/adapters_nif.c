/*
 * zlib and zstd on beam_alloc through the ready-made hooks
 * (<beam_alloc/zlib.h>, <beam_alloc/zstd.h>): the NIFs of AdaptersNif.
 *
 * Every call runs on beam_allocator: leak-checked (a general purpose
 * instance in safe mode, so malloc-style blocks without a header) for the
 * *_checked NIFs, the raw allocator (16-byte headers) for the others, and
 * the fault-injection driver's allocator under check_all_allocation_failures.
 */
#include "nif_util.h"

#include <beam_alloc/zlib.h>
#include <beam_alloc/zstd.h>

/* The result of a (de)compression into out: its first n bytes as a binary
 * when it worked, else {error, why} (out released). */
static ERL_NIF_TERM output(ErlNifEnv *env, ErlNifBinary *out, size_t n,
                           bool worked, const char *why) {
    if (!worked) {
        enif_release_binary(out);
        return beam_make_error(env, why);
    }
    if (n < out->size)
        enif_realloc_binary(out, n);
    return enif_make_binary(env, out);
}

/* zlib's one-shot compress as :zlib.compress/1 does it: default level,
 * zlib header, 15-bit window, memLevel 8. */
static ERL_NIF_TERM compress_with(ErlNifEnv *env, ERL_NIF_TERM arg) {
    ErlNifBinary in, out;
    if (!enif_inspect_binary(env, arg, &in))
        return enif_make_badarg(env);
    beam_allocator_t a = beam_allocator; /* lives until deflateEnd */
    z_stream z;
    memset(&z, 0, sizeof z);
    beam_zlib_use(&z, &a);
    if (deflateInit(&z, Z_DEFAULT_COMPRESSION) != Z_OK)
        return beam_make_error(env, "enomem");
    uLong bound = deflateBound(&z, (uLong)in.size);
    if (!enif_alloc_binary(bound, &out)) {
        deflateEnd(&z);
        return beam_make_error(env, "enomem");
    }
    z.next_in = in.data;
    z.avail_in = (uInt)in.size;
    z.next_out = out.data;
    z.avail_out = (uInt)out.size;
    int rc = deflate(&z, Z_FINISH);
    size_t n = z.total_out;
    deflateEnd(&z);
    return output(env, &out, n, rc == Z_STREAM_END, "deflate");
}

static ERL_NIF_TERM uncompress_with(ErlNifEnv *env, ERL_NIF_TERM arg) {
    ErlNifBinary in, out;
    if (!enif_inspect_binary(env, arg, &in))
        return enif_make_badarg(env);
    beam_allocator_t a = beam_allocator;
    z_stream z;
    memset(&z, 0, sizeof z);
    beam_zlib_use(&z, &a);
    if (inflateInit(&z) != Z_OK)
        return beam_make_error(env, "enomem");
    size_t cap = in.size * 4 + 64;
    if (!enif_alloc_binary(cap, &out)) {
        inflateEnd(&z);
        return beam_make_error(env, "enomem");
    }
    z.next_in = in.data;
    z.avail_in = (uInt)in.size;
    int rc;
    for (;;) {
        z.next_out = out.data + z.total_out;
        z.avail_out = (uInt)(out.size - z.total_out);
        rc = inflate(&z, Z_NO_FLUSH);
        if (rc != Z_OK || z.avail_out != 0)
            break;
        if (!enif_realloc_binary(&out, out.size * 2)) {
            rc = Z_MEM_ERROR;
            break;
        }
    }
    size_t n = z.total_out;
    inflateEnd(&z);
    return output(env, &out, n, rc == Z_STREAM_END,
                  rc == Z_MEM_ERROR ? "enomem" : "inflate");
}

/* Each NIF comes with a leak-checked twin, name_checked: the same call
 * under leak_check. */
#define WITH_CHECKED_TWIN(name, call)                                          \
    BEAM_NIF(name) {                                                           \
        return call;                                                           \
    }                                                                          \
    BEAM_NIF(name##_checked, .leak_check = true) {                             \
        return call;                                                           \
    }

WITH_CHECKED_TWIN(zlib_compress, compress_with(env, argv[0]))
WITH_CHECKED_TWIN(zlib_uncompress, uncompress_with(env, argv[0]))

/* A stream never ended: the leak report must name zlib's function. */
BEAM_NIF(zlib_leak, .leak_check = true) {
    static beam_allocator_t a; /* outlives the call, as the stream does */
    a = beam_allocator;
    z_stream z;
    memset(&z, 0, sizeof z);
    beam_zlib_use(&z, &a);
    if (deflateInit(&z, Z_DEFAULT_COMPRESSION) != Z_OK)
        return beam_make_error(env, "enomem");
    return enif_make_atom(env, "ok");
}

static ERL_NIF_TERM zstd_compress_with(ErlNifEnv *env, ERL_NIF_TERM arg,
                                       ERL_NIF_TERM level_term) {
    ErlNifBinary in, out;
    int level;
    if (!enif_inspect_binary(env, arg, &in) ||
        !enif_get_int(env, level_term, &level))
        return enif_make_badarg(env);
    beam_allocator_t a = beam_allocator;
    ZSTD_CCtx *c = ZSTD_createCCtx_advanced(beam_zstd_mem(&a));
    if (c == NULL)
        return beam_make_error(env, "enomem");
    if (!enif_alloc_binary(ZSTD_compressBound(in.size), &out)) {
        ZSTD_freeCCtx(c);
        return beam_make_error(env, "enomem");
    }
    size_t n =
        ZSTD_compressCCtx(c, out.data, out.size, in.data, in.size, level);
    ZSTD_freeCCtx(c);
    return output(env, &out, n, !ZSTD_isError(n), "zstd");
}

static ERL_NIF_TERM zstd_decompress_with(ErlNifEnv *env, ERL_NIF_TERM arg) {
    ErlNifBinary in, out;
    if (!enif_inspect_binary(env, arg, &in))
        return enif_make_badarg(env);
    unsigned long long size = ZSTD_getFrameContentSize(in.data, in.size);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN)
        return enif_make_badarg(env);
    beam_allocator_t a = beam_allocator;
    ZSTD_DCtx *d = ZSTD_createDCtx_advanced(beam_zstd_mem(&a));
    if (d == NULL)
        return beam_make_error(env, "enomem");
    if (!enif_alloc_binary((size_t)size, &out)) {
        ZSTD_freeDCtx(d);
        return beam_make_error(env, "enomem");
    }
    size_t n = ZSTD_decompressDCtx(d, out.data, out.size, in.data, in.size);
    ZSTD_freeDCtx(d);
    return output(env, &out, n, !ZSTD_isError(n) && n == size, "zstd");
}

WITH_CHECKED_TWIN(zstd_compress, zstd_compress_with(env, argv[0], argv[1]))
WITH_CHECKED_TWIN(zstd_decompress, zstd_decompress_with(env, argv[0]))

/* A stream ended on the success path only: when the allocation after
 * deflateInit fails, zlib's blocks leak. check_all_allocation_failures
 * must name them by zlib's function and this NIF's line that called it. */
BEAM_NIF(zlib_end_forgotten) {
    beam_allocator_t a = beam_allocator;
    z_stream z;
    memset(&z, 0, sizeof z);
    beam_zlib_use(&z, &a);
    if (deflateInit(&z, Z_DEFAULT_COMPRESSION) != Z_OK)
        return beam_make_error(env, "enomem");
    char *scratch = beam_alloc(a, char, 64);
    if (scratch == NULL)
        return beam_make_error(env, "enomem"); /* deflateEnd forgotten */
    beam_free(a, scratch, 64);
    deflateEnd(&z);
    return enif_make_atom(env, "ok");
}

/* --- A stream kept in a resource, across a hot upgrade ---------------------
 * stream_new(zlib | zstd): a deflate stream or a zstd compression context
 * on this copy's process-wide instance, in a resource of type "stream".
 * Every copy's load opens the type with ERL_NIF_RT_TAKEOVER: a copy loaded
 * from another file takes the old copy's streams over, and its destructor
 * frees them, through the hooks of the copy that made them.
 * streams_freed(): how many streams this copy's destructor freed. (Here,
 * not at the top: the tests name lines above.) */

#include <stdatomic.h>

typedef struct {
    beam_allocator_t a; /* lives as long as the stream */
    bool zstd;
    bool made;
    z_stream z;
    ZSTD_CCtx *c;
} stream_t;

static ErlNifResourceType *stream_type;
static atomic_uint streams_freed_count;

static void stream_dtor(ErlNifEnv *env, void *obj) {
    stream_t *s = (stream_t *)obj;
    (void)env;
    if (s->zstd)
        ZSTD_freeCCtx(s->c);
    else if (s->made)
        deflateEnd(&s->z);
    atomic_fetch_add(&streams_freed_count, 1);
}

BEAM_NIF(stream_new) {
    stream_t *s = (stream_t *)enif_alloc_resource(stream_type, sizeof *s);
    if (s == NULL)
        return beam_make_error(env, "enomem");
    memset(s, 0, sizeof *s);
    s->a = beam_general_purpose_allocator;
    s->zstd = enif_is_identical(argv[0], enif_make_atom(env, "zstd"));
    if (s->zstd) {
        s->c = ZSTD_createCCtx_advanced(beam_zstd_mem(&s->a));
        s->made = s->c != NULL;
    } else {
        beam_zlib_use(&s->z, &s->a);
        s->made = deflateInit(&s->z, Z_DEFAULT_COMPRESSION) == Z_OK;
    }
    ERL_NIF_TERM term = enif_make_resource(env, s);
    enif_release_resource(s);
    return s->made ? term : beam_make_error(env, "enomem");
}

BEAM_NIF(streams_freed) {
    return enif_make_uint(env, atomic_load(&streams_freed_count));
}

/* load_info report_to_stderr: reports go to stderr, not captured (a test
 * in a VM of its own reads the old copy's after its purge there). */
static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    stream_type = enif_open_resource_type(
        env, NULL, "stream", stream_dtor,
        (ErlNifResourceFlags)(ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER), NULL);
    if (stream_type == NULL)
        return 1;
    if (enif_is_identical(info, enif_make_atom(env, "report_to_stderr")))
        return 0;
    return load_capturing_reports(env, priv, info);
}

/* A NIF and its twin in the table, both on a dirty CPU scheduler. */
/* clang-format off */
#define DIRTY_WITH_TWIN(name, arity)                                           \
    {#name, arity, name, ERL_NIF_DIRTY_JOB_CPU_BOUND},                         \
    {#name "_checked", arity, name##_checked, ERL_NIF_DIRTY_JOB_CPU_BOUND}

static ErlNifFunc funcs[] = {
    DIRTY_WITH_TWIN(zlib_compress, 1),
    DIRTY_WITH_TWIN(zlib_uncompress, 1),
    {"zlib_leak", 0, zlib_leak, 0},
    {"zlib_end_forgotten", 0, zlib_end_forgotten, 0},
    DIRTY_WITH_TWIN(zstd_compress, 2),
    DIRTY_WITH_TWIN(zstd_decompress, 1),
    {"stream_new", 1, stream_new, 0},
    {"streams_freed", 0, streams_freed, 0},
    {"take_reports", 0, take_reports, 0},
};
/* clang-format on */

BEAM_NIF_INIT(Elixir.AdaptersNif, funcs, load, NULL, NULL)
