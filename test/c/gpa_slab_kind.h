/*
 * Which kind of slab a general purpose allocator's block lies in, for
 * tests that need a block of one kind: a sub-slab (an instance's first
 * blocks, "Small first slabs" in src/gpa_internal.h) or a whole slab
 * (after its class graduates). One static copy per including file.
 */
#ifndef BEAM_ALLOC_TEST_GPA_SLAB_KIND_H
#define BEAM_ALLOC_TEST_GPA_SLAB_KIND_H

#include "gpa_internal.h"

static inline bool in_sub_slab(const void *p) {
    gpa_slab *s = beam__gpa_slab_of(p);
    return s != NULL && gpa_is_sub(s);
}

static inline bool in_whole_slab(const void *p) {
    gpa_slab *s = beam__gpa_slab_of(p);
    return s != NULL && !gpa_is_sub(s) &&
           ((uintptr_t)s->base & (GPA_SLAB_SIZE - 1)) == 0;
}

#endif
