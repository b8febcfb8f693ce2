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
    if (rc != Z_STREAM_END) {
        enif_release_binary(&out);
        return beam_make_error(env, "deflate");
    }
    enif_realloc_binary(&out, n);
    return enif_make_binary(env, &out);
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
    if (rc != Z_STREAM_END) {
        enif_release_binary(&out);
        return beam_make_error(env, rc == Z_MEM_ERROR ? "enomem" : "inflate");
    }
    enif_realloc_binary(&out, n);
    return enif_make_binary(env, &out);
}

BEAM_NIF(zlib_compress) {
    return compress_with(env, argv[0]);
}
BEAM_NIF(zlib_compress_checked, .leak_check = true) {
    return compress_with(env, argv[0]);
}
BEAM_NIF(zlib_uncompress) {
    return uncompress_with(env, argv[0]);
}
BEAM_NIF(zlib_uncompress_checked, .leak_check = true) {
    return uncompress_with(env, argv[0]);
}

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
    if (ZSTD_isError(n)) {
        enif_release_binary(&out);
        return beam_make_error(env, "zstd");
    }
    enif_realloc_binary(&out, n);
    return enif_make_binary(env, &out);
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
    if (ZSTD_isError(n) || n != size) {
        enif_release_binary(&out);
        return beam_make_error(env, "zstd");
    }
    return enif_make_binary(env, &out);
}

BEAM_NIF(zstd_compress) {
    return zstd_compress_with(env, argv[0], argv[1]);
}
BEAM_NIF(zstd_compress_checked, .leak_check = true) {
    return zstd_compress_with(env, argv[0], argv[1]);
}
BEAM_NIF(zstd_decompress) {
    return zstd_decompress_with(env, argv[0]);
}
BEAM_NIF(zstd_decompress_checked, .leak_check = true) {
    return zstd_decompress_with(env, argv[0]);
}

static ErlNifFunc funcs[] = {
    {"zlib_compress", 1, zlib_compress, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"zlib_compress_checked", 1, zlib_compress_checked,
     ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"zlib_uncompress", 1, zlib_uncompress, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"zlib_uncompress_checked", 1, zlib_uncompress_checked,
     ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"zlib_leak", 0, zlib_leak, 0},
    {"zstd_compress", 2, zstd_compress, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"zstd_compress_checked", 2, zstd_compress_checked,
     ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"zstd_decompress", 1, zstd_decompress, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"zstd_decompress_checked", 1, zstd_decompress_checked,
     ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(Elixir.AdaptersNif, funcs, load_capturing_reports, NULL, NULL)
