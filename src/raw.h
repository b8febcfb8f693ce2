/*
 * The raw allocator's alloc and free (raw.c): what its vtable runs, and
 * what the calling helpers of core.c call directly once they have checked
 * a call (skipping the vtable, as for a general purpose allocator). Its
 * whole cost over the system allocator is then this thread's counters.
 */
#ifndef BEAM_ALLOC_RAW_H
#define BEAM_ALLOC_RAW_H

#include "internal.h"

/* len as the helpers check it (at most BEAM__MAX_LEN: a longer one can
 * pass for a count below a step), for an alignment the raw allocator serves
 * (beam__raw_alignment: its callers have tested it). Out of line: called
 * by a tail call, the helpers' GPA paths keep their small frames. */
BEAM__HIDDEN void *beam__raw_alloc(size_t len);
BEAM__HIDDEN void beam__raw_free(void *mem, size_t len);

/* The alignments the raw allocator serves, as the helpers' inline raw
 * paths test them. */
static inline bool beam__raw_alignment(size_t alignment) {
    return beam__is_pow2_at_most(alignment, BEAM_MAX_ALIGN);
}

#endif
