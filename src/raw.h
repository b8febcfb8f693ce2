/*
 * The raw allocator's alloc and free, inline: raw.c's vtable functions and
 * the calling helpers of core.c (which skip the vtable for it, as for a
 * general purpose allocator) share them. Its whole cost over the system
 * allocator is then this thread's counters.
 */
#ifndef BEAM_ALLOC_RAW_H
#define BEAM_ALLOC_RAW_H

#include "internal.h"

/* Failed, or misaligned (raw.c). */
BEAM__HIDDEN BEAM__NOINLINE void *beam__raw_alloc_failed(void *p);

static inline beam__counters *beam__raw_counters(void) {
    return beam__thread_counters(BEAM__RAW);
}

/* len and alignment as the vtable gets them: checked by the helpers. */
static inline __attribute__((always_inline)) void *
beam__raw_alloc(size_t len, size_t alignment) {
    void *p = alignment <= BEAM_MAX_ALIGN ? beam__sys_alloc(len) : NULL;
    if (BEAM__UNLIKELY(p == NULL || ((uintptr_t)p & (alignment - 1)) != 0))
        return beam__raw_alloc_failed(p);
    beam__count_alloc(beam__raw_counters(), &beam__kind_peak[BEAM__RAW], len);
    return p;
}

/* Counted first, so that the backend's free is a tail call: the helper
 * then needs no frame to keep mem across a call. */
static inline __attribute__((always_inline)) void beam__raw_free(void *mem,
                                                                 size_t len) {
    beam__count_free(beam__raw_counters(), &beam__kind_peak[BEAM__RAW], len);
    beam__sys_free(mem);
}

/* The alignments the raw allocator serves, 1 to BEAM_MAX_ALIGN, as a bit
 * set: "a power of two it can serve" in one test, as the helpers' inline
 * raw paths need it. */
#define BEAM__RAW_ALIGNS ((1u << 1) | (1u << 2) | (1u << 4) | (1u << 8))
_Static_assert(BEAM_MAX_ALIGN == 8, "BEAM__RAW_ALIGNS lists 1 to 8");

static inline bool beam__raw_alignment(size_t alignment) {
    return alignment <= BEAM_MAX_ALIGN && ((BEAM__RAW_ALIGNS >> alignment) & 1);
}

#endif
