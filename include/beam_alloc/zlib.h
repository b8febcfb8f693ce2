/*
 * <beam_alloc/zlib.h>: zlib's memory on a beam_alloc allocator.
 * Header-only: beam_alloc never links zlib; link -lz yourself.
 *
 *     z_stream strm = {0};
 *     beam_allocator_t a = beam_allocator;      // must outlive the stream
 *     beam_zlib_use(&strm, &a);
 *     deflateInit(&strm, Z_DEFAULT_COMPRESSION);
 *
 * Reports (leaks, misuse) name zlib's calling function
 * (deflateInit2_ in libz.so.1), not these hooks.
 *
 * A stream kept in a resource can outlive the copy of the NIF library
 * whose hooks it has: a hot upgrade to a library from another file takes
 * the resource type over (ERL_NIF_RT_TAKEOVER), the old version's purge
 * unloads the old copy, and the new copy's deflateEnd called the old
 * copy's unmapped zfree (the VM died: SIGSEGV). So the allocation hook,
 * at its first call, keeps its copy of the NIF library mapped until the
 * VM exits (beam_internal_keep_mapped; later calls cost one load),
 * and that copy's last unload tears none of its allocators down (its
 * process-wide instance, beam_general_purpose_allocator, stays with what
 * it holds). The cost, once per copy whose hooks served a stream: its
 * mapping and its process-wide instance; a copy whose hooks never ran is
 * unloaded as before. A copy loaded again from the same file is the kept
 * one, its statics as they were: set an instance of its own up once. Its
 * code too: a module loaded again from that file rebuilt since runs the
 * old copy until the node restarts (a purge first does not unmap it).
 * Outside the VM (the standalone library in a shared object a program
 * dlopens) the same holds: once the hooks ran, dlclose leaves it mapped.
 */
#ifndef BEAM_ALLOC_ZLIB_H
#define BEAM_ALLOC_ZLIB_H

#include <beam_alloc.h>
#include <zlib.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BEAM_ZLIB_HOOK BEAM_INTERNAL_HOOK

BEAM_ZLIB_HOOK voidpf beam_zlib_alloc_hook(voidpf opaque, uInt items,
                                           uInt size) {
    size_t n;
    /* The stream may be freed after this copy's unload: see above. */
    beam_internal_keep_mapped_once();
    if (beam_mul_overflow(items, size, &n))
        return BEAM_INTERNAL_NULL;
    return beam_malloc_at(beam_internal_allocator_at(opaque), n,
                          BEAM_RET_ADDR());
}

BEAM_ZLIB_HOOK void beam_zlib_free_hook(voidpf opaque, voidpf address) {
    beam_mfree_at(beam_internal_allocator_at(opaque), address, BEAM_RET_ADDR());
}

/** Sets strm's zalloc, zfree and opaque (before deflateInit/inflateInit):
 * the stream's memory comes from *a, which must stay valid until
 * deflateEnd/inflateEnd. */
static inline void beam_zlib_use(z_stream *strm, const beam_allocator_t *a) {
    strm->zalloc = beam_zlib_alloc_hook;
    strm->zfree = beam_zlib_free_hook;
    strm->opaque = BEAM_INTERNAL_UNCONST(a);
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BEAM_ALLOC_ZLIB_H */
