/*
 * The raw allocator: the system backend (enif_alloc in NIFs) behind the
 * interface. It only promises BEAM_MAX_ALIGN (enif_alloc's observed
 * alignment), so anything above fails with NULL rather than handing out
 * misaligned memory. Also home of the thread-local beam_allocator, whose
 * initial value on every thread is this allocator.
 */
#include "internal.h"

static void *raw_alloc(void *ctx, size_t len, size_t alignment, uintptr_t ret) {
    (void)ctx;
    (void)ret;
    if (alignment > BEAM_MAX_ALIGN)
        return NULL;
    void *p = beam__sys_alloc(len);
    /* Belt and braces: should the backend ever hand out less than it
     * promises, fail the call instead of breaking the contract. */
    if (BEAM__UNLIKELY(p != NULL && ((uintptr_t)p & (alignment - 1)) != 0)) {
        beam__sys_free(p);
        return NULL;
    }
    return p;
}

/* The backend knows no capacity beyond len: only shrinking is in place. */
static bool raw_resize(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    (void)ctx;
    (void)mem;
    (void)alignment;
    (void)ret;
    return new_len <= len;
}

/* enif_realloc keeps the backend's alignment, which is all this allocator
 * serves; on failure it leaves the old block alone, as remap must. */
static void *raw_remap(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    (void)ctx;
    (void)len;
    (void)ret;
    if (alignment > BEAM_MAX_ALIGN)
        return NULL;
    return beam__sys_realloc(mem, new_len);
}

static void raw_free(void *ctx, void *mem, size_t len, size_t alignment,
                     uintptr_t ret) {
    (void)ctx;
    (void)len;
    (void)alignment;
    (void)ret;
    beam__sys_free(mem);
}

const beam_allocator_vtable beam__raw_vtable = {raw_alloc, raw_resize,
                                                raw_remap, raw_free};

const beam_allocator_t beam_raw_allocator = {NULL, &beam__raw_vtable};

BEAM_THREAD_LOCAL beam_allocator_t beam_allocator = {NULL, &beam__raw_vtable};
