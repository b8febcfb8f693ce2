/*
 * The failing allocator: fault injection over any parent (Zig's
 * std.testing.FailingAllocator). A test runs its workload once per
 * fail_index, 0, 1, 2, ..., and so walks every allocation-failure path.
 *
 * The counters are exact: allocations - deallocations blocks and
 * allocated_bytes - freed_bytes bytes are live in the parent, which lets a
 * test prove that a failure path leaked nothing.
 */
#include "internal.h"

/* Attempts count even when they fail, so alloc_index >= fail_index says
 * "the failing point has been reached" for resize and remap as well. */
static void *failing_alloc(void *ctx, size_t len, size_t alignment,
                           uintptr_t ret) {
    beam_failing_t *f = ctx;
    size_t index = f->alloc_index++;
    if (index >= f->fail_index) {
        f->has_induced_failure = true;
        return NULL;
    }
    void *p = beam__parent_alloc(f->parent, len, alignment, ret);
    if (p == NULL)
        return NULL;
    f->allocations++;
    f->allocated_bytes += len;
    return p;
}

/* Growing is an allocation in disguise: it fails from the failing point
 * on. Shrinking only gives memory back and always goes through. */
static bool refuse_growth(beam_failing_t *f, size_t len, size_t new_len) {
    if (new_len > len && f->alloc_index >= f->fail_index) {
        f->has_induced_failure = true;
        return true;
    }
    return false;
}

static void count_resize(beam_failing_t *f, size_t len, size_t new_len) {
    if (new_len < len)
        f->freed_bytes += len - new_len;
    else
        f->allocated_bytes += new_len - len;
}

static bool failing_resize(void *ctx, void *mem, size_t len, size_t alignment,
                           size_t new_len, uintptr_t ret) {
    beam_failing_t *f = ctx;
    if (refuse_growth(f, len, new_len) ||
        !beam__parent_resize(f->parent, mem, len, alignment, new_len, ret))
        return false;
    count_resize(f, len, new_len);
    return true;
}

static void *failing_remap(void *ctx, void *mem, size_t len, size_t alignment,
                           size_t new_len, uintptr_t ret) {
    beam_failing_t *f = ctx;
    if (refuse_growth(f, len, new_len))
        return NULL;
    void *p = beam__parent_remap(f->parent, mem, len, alignment, new_len, ret);
    if (p != NULL)
        count_resize(f, len, new_len);
    return p;
}

static void failing_free(void *ctx, void *mem, size_t len, size_t alignment,
                         uintptr_t ret) {
    beam_failing_t *f = ctx;
    if (mem == NULL)
        return; /* NULL: the contract's no-op, also through the vtable */
    beam__parent_free(f->parent, mem, len, alignment, ret);
    f->deallocations++;
    f->freed_bytes += len;
}

const beam_allocator_vtable beam__failing_vtable = {
    failing_alloc, failing_resize, failing_remap, failing_free};

void beam_failing_init(beam_failing_t *f, beam_allocator_t parent,
                       size_t fail_index) {
    if (beam__null_instance(f, "beam_failing_init", BEAM__RET_ADDR()))
        return;
    f->parent = beam__parent_not_self(parent, f, &beam__failing_vtable,
                                      "beam_failing_init", "failing allocator",
                                      "parent");
    f->fail_index = fail_index;
    f->alloc_index = 0;
    f->allocations = 0;
    f->deallocations = 0;
    f->allocated_bytes = 0;
    f->freed_bytes = 0;
    f->has_induced_failure = false;
}

beam_allocator_t beam_failing_allocator(beam_failing_t *f) {
    if (beam__null_instance(f, "beam_failing_allocator", BEAM__RET_ADDR()))
        return BEAM__REFUSING_ALLOCATOR;
    beam_allocator_t a = {f, &beam__failing_vtable};
    return a;
}
