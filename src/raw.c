/*
 * The raw allocator: the system backend (enif_alloc in NIFs) behind the
 * interface. It only promises BEAM_MAX_ALIGN (enif_alloc's observed
 * alignment), so anything above fails with NULL rather than handing out
 * misaligned memory. Also home of the thread-local beam_allocator, whose
 * initial value on every thread is this allocator.
 */
#include "raw.h"

/* Belt and braces: should the backend ever hand out less alignment than it
 * promises, fail the call instead of breaking the contract. */
void *beam__raw_alloc_failed(void *p) {
    if (p != NULL)
        beam__sys_free(p);
    beam__atomic_bump(&beam__raw_counters()->failed, 1);
    return NULL;
}

static void *raw_alloc(void *ctx, size_t len, size_t alignment, uintptr_t ret) {
    (void)ctx;
    (void)ret;
    return beam__raw_alloc(len, alignment);
}

/* The backend knows no capacity beyond len: only shrinking is in place. */
static bool raw_resize(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    (void)ctx;
    (void)mem;
    (void)alignment;
    (void)ret;
    if (new_len > len)
        return false;
    beam__count_resize(beam__raw_counters(), &beam__kind_peak[BEAM__RAW], len,
                       new_len);
    return true;
}

/* enif_realloc keeps the backend's alignment, which is all this allocator
 * serves; on failure it leaves the old block alone, as remap must. */
static void *raw_remap(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    (void)ctx;
    (void)ret;
    if (alignment > BEAM_MAX_ALIGN)
        return NULL;
    void *p = beam__sys_realloc(mem, new_len);
    if (p != NULL)
        beam__count_resize(beam__raw_counters(), &beam__kind_peak[BEAM__RAW],
                           len, new_len);
    return p;
}

static void raw_free(void *ctx, void *mem, size_t len, size_t alignment,
                     uintptr_t ret) {
    (void)ctx;
    (void)alignment;
    (void)ret;
    beam__raw_free(mem, len);
}

const beam_allocator_vtable beam__raw_vtable = {raw_alloc, raw_resize,
                                                raw_remap, raw_free};

const beam_allocator_t beam_raw_allocator = {NULL, &beam__raw_vtable};

BEAM_THREAD_LOCAL beam_allocator_t beam_allocator = {NULL, &beam__raw_vtable};
