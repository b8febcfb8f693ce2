/*
 * The raw allocator's alloc and free (raw.c): what its vtable runs, and
 * what the calling helpers of core.c call directly once they have checked
 * a call (skipping the vtable, as for a general purpose allocator). Its
 * whole cost over the system allocator is then this thread's counters.
 */
#ifndef BEAM_ALLOC_RAW_H
#define BEAM_ALLOC_RAW_H

#include "internal.h"

/* len and alignment as the helpers check them; an alignment above
 * BEAM_MAX_ALIGN fails (NULL, counted). Out of line: called by a tail
 * call, the helpers' GPA paths keep their small frames. */
BEAM__HIDDEN void *beam__raw_alloc(size_t len, size_t alignment);
BEAM__HIDDEN void beam__raw_free(void *mem, size_t len);

/* The alignments the raw allocator serves, 1 to BEAM_MAX_ALIGN, as a bit
 * set: "a power of two it can serve" in one test, as the helpers' inline
 * raw paths need it. */
#define BEAM__RAW_ALIGNS ((1u << 1) | (1u << 2) | (1u << 4) | (1u << 8))
_Static_assert(BEAM_MAX_ALIGN == 8, "BEAM__RAW_ALIGNS lists 1 to 8");

static inline bool beam__raw_alignment(size_t alignment) {
    return alignment <= BEAM_MAX_ALIGN && ((BEAM__RAW_ALIGNS >> alignment) & 1);
}

#endif
