/*
 * <beam_alloc/zstd.h>: zstd's memory on a beam_alloc allocator.
 * Header-only: beam_alloc never links zstd; link -lzstd yourself.
 *
 *     beam_allocator_t a = beam_allocator;      // must outlive the context
 *     ZSTD_CCtx *c = ZSTD_createCCtx_advanced(beam_zstd_mem(&a));
 *
 * Reports (leaks, misuse) name zstd's calling function, not these hooks.
 *
 * A context kept in a resource can outlive the copy of the NIF library
 * whose hooks it has: a hot upgrade to a library from another file takes
 * the resource type over (ERL_NIF_RT_TAKEOVER), the old version's purge
 * unloads the old copy, and the new copy's ZSTD_freeCCtx called the old
 * copy's unmapped customFree (the VM died: SIGSEGV). So the allocation
 * hook, at its first call, keeps its copy of the NIF library mapped until
 * the VM exits (beam_internal_keep_mapped; later calls cost one load),
 * and that copy's last unload tears none of its allocators down (its
 * process-wide instance, beam_general_purpose_allocator, stays with what
 * it holds). The cost, once per copy whose hooks served a context:
 * its mapping and its process-wide instance; a copy whose hooks never ran
 * is unloaded as before. A copy loaded again from the same file is the
 * kept one, its statics as they were: set an instance of its own up once.
 * Its code too: a module loaded again from that file rebuilt since runs
 * the old copy until the node restarts (a purge first does not unmap it).
 * Outside the VM (the standalone library in a shared object a program
 * dlopens) the same holds: once the hooks ran, dlclose leaves it mapped.
 */
#ifndef BEAM_ALLOC_ZSTD_H
#define BEAM_ALLOC_ZSTD_H

#include <beam_alloc/hooks.h>
#ifndef ZSTD_STATIC_LINKING_ONLY
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_customMem and the _advanced calls */
#endif
#include <zstd.h>

#ifdef __cplusplus
extern "C" {
#endif

/* zstd's hooks are the context-pointer pair of <beam_alloc/hooks.h>: the
 * allocation keeps this copy mapped (the context may be freed after this
 * copy's unload: see above). The older names stay. */
#define BEAM_ZSTD_HOOK BEAM_INTERNAL_HOOK
#define beam_zstd_alloc_hook beam_hook_malloc
#define beam_zstd_free_hook beam_hook_free

/** A ZSTD_customMem over *a, for ZSTD_createCCtx_advanced,
 * ZSTD_createDCtx_advanced and friends; *a must stay valid until the
 * context is freed. */
static inline ZSTD_customMem beam_zstd_mem(const beam_allocator_t *a) {
    ZSTD_customMem mem = {beam_hook_malloc, beam_hook_free,
                          BEAM_INTERNAL_UNCONST(a)};
    return mem;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BEAM_ALLOC_ZSTD_H */
