/*
 * Call stacks for reports (frames.c): a few return addresses captured on an
 * allocation path, kept once each in a process-wide depot.
 *
 * A site is one uintptr_t, as the allocators already store it: either a
 * plain return address (tracked mode, one frame) or, with BEAM__SITE_TRACE
 * set, a pointer to a depot entry holding up to BEAM__MAX_FRAMES addresses.
 * The depot deduplicates: a program has few distinct allocation stacks, so
 * a block costs no more than its one site word, and an entry is never freed
 * (a site stays readable for as long as the process runs).
 */
#ifndef BEAM_ALLOC_FRAMES_H
#define BEAM_ALLOC_FRAMES_H

#include "internal.h"

/* Deepest stack kept (BEAM_GPA_FRAMES(n) is capped to it). */
#define BEAM__MAX_FRAMES 16
/* Safe mode's depth when the flags name none. */
#define BEAM__SAFE_FRAMES 6

/* User-space code addresses never have the top bit set (x86-64 and
 * AArch64 both keep user space in the lower half). */
#define BEAM__SITE_TRACE ((uintptr_t)1 << (sizeof(uintptr_t) * 8 - 1))

/* In a trace, in place of a return address: frames left out between the
 * one before and the one after it, where a walk through another library's
 * code went on to the first frame of this module's (frames.c). Not a code
 * address (the top bit): printed as BEAM__FRAMES_GAP_TEXT. It holds no
 * count of them: a recursive library (a parser) reaches one call site of
 * its own at many depths, and a count made a depot entry per depth. */
#define BEAM__FRAMES_GAP BEAM__SITE_TRACE
#define BEAM__FRAMES_GAP_TEXT "... (frames skipped)"
static inline bool beam__frames_gap(uintptr_t pc) {
    return pc == BEAM__FRAMES_GAP;
}

typedef struct beam__trace {
    uint32_t hash;
    uint32_t n;
    uintptr_t pc[]; /* return addresses, innermost first; pc[0] is ret; a
                       BEAM__FRAMES_GAP before the last, at most */
} beam__trace;

/* The stack depth instance flags ask for: BEAM_GPA_FRAMES(n), else
 * BEAM__SAFE_FRAMES in safe mode, else 1. */
static inline unsigned beam__frames_depth(unsigned flags) {
    unsigned n = (flags >> BEAM__GPA_FRAMES_SHIFT) & BEAM__GPA_FRAMES_MASK;
    if (n == 0)
        n = (flags & BEAM_GPA_SAFE) ? BEAM__SAFE_FRAMES : 1;
    return n > BEAM__MAX_FRAMES ? BEAM__MAX_FRAMES : n;
}

/* A site for an allocation whose caller returns to ret: ret itself, or a
 * tagged depot entry with the callers above it (depth > 1). Falls back to
 * ret when the stack cannot be walked or the depot is full. Call it from
 * the allocation path itself: it walks up from its own frame to ret. */
BEAM__HIDDEN uintptr_t beam__trace_capture(uintptr_t ret, unsigned depth);

static inline uintptr_t beam__site(unsigned flags, uintptr_t ret) {
    if (BEAM__LIKELY(
            (flags & (BEAM_GPA_SAFE |
                      (BEAM__GPA_FRAMES_MASK << BEAM__GPA_FRAMES_SHIFT))) == 0))
        return ret;
    unsigned depth = beam__frames_depth(flags);
    return depth > 1 ? beam__trace_capture(ret, depth) : ret;
}

/* The frames of a site: *pcs points at them; returns how many (0 for a
 * zero site). */
static inline size_t beam__site_frames(const uintptr_t *site,
                                       const uintptr_t **pcs) {
    if (*site == 0)
        return 0;
    if (*site & BEAM__SITE_TRACE) {
        const beam__trace *t = (const beam__trace *)(*site & ~BEAM__SITE_TRACE);
        *pcs = t->pc;
        return t->n;
    }
    *pcs = site;
    return 1;
}

/* Where walks stop on this thread (0: at the top of the stack): the NIF
 * glue sets it to its own frame around a NIF body, so that stacks end at
 * the body instead of running on through the glue into the VM. */
BEAM__HIDDEN extern BEAM_THREAD_LOCAL uintptr_t beam__frames_stop;

/* The callers of the running code above ret, innermost first: out[0] = ret,
 * then up to n - 1 more. For reports (no depot). */
BEAM__HIDDEN size_t beam__stack_above(uintptr_t ret, uintptr_t *out, size_t n);

/* A site for frames pc[0..n) (innermost first, as beam__stack_above gives
 * them): a tagged depot entry, or pc[0] alone when n is 1 or the depot is
 * full (0 when n is 0). For callers that choose the frames themselves. */
BEAM__HIDDEN uintptr_t beam__trace_intern(const uintptr_t *pc, size_t n);

/* A site's frames, innermost first, into out: n at most; how many (0 for
 * a zero site). */
BEAM__HIDDEN size_t beam__site_copy(uintptr_t site, uintptr_t *out, size_t n);

/* "a <- b <- c": each frame as beam__describe_addr writes it. */
BEAM__HIDDEN const char *beam__describe_site(uintptr_t site, char *buf,
                                             size_t n);
BEAM__HIDDEN const char *
beam__describe_frames(const uintptr_t *pcs, size_t count, char *buf, size_t n);

#endif
