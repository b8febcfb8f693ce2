/*
 * A memory barrier on every thread of the process at once: what lets a
 * collector take the heap of a thread that is idle without that thread's
 * help (gpa_heap.c, "Taking a heap from an idle thread" in gpa_internal.h).
 * The owner then pays plain stores and a load per call, the collector the
 * barrier.
 *
 * On Linux it is membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), registered
 * on first use. Elsewhere, or when the kernel refuses it (before 4.14, or
 * filtered by a seccomp policy), there is none: callers fall back to
 * collecting only what the calling thread owns.
 */
#ifndef BEAM_ALLOC_OS_BARRIER_H
#define BEAM_ALLOC_OS_BARRIER_H

#include "../internal.h"

#if defined(__linux__)
#include <sys/syscall.h>
#ifdef SYS_membarrier
#define BEAM__HAVE_MEMBARRIER 1
#endif
#endif

/* true: every thread of the process has passed a full memory barrier
 * between the call and its return. false: no such barrier here (nothing
 * was done). Any thread; it takes none of the allocator's locks, so it may
 * be called under an instance lock. errno is left as it was. */
BEAM__HIDDEN bool beam__process_barrier(void);

#endif
