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

/* Makes the first use ready (Linux: the registration, once per process),
 * so that beam__process_barrier only issues the barrier. The registration
 * takes 8-11 ms in a multithreaded process here (the kernel waits for its
 * threads), and its first use was under an instance lock with the idle
 * heaps revoked: every other thread's first call of that instance waited
 * for it (a hunt: a call took 12-24 ms during a node's first collect,
 * against 40 us otherwise). Call it before taking a lock. */
BEAM__HIDDEN void beam__process_barrier_prepare(void);

/* true once beam__process_barrier_prepare (or a barrier) has run and
 * found the barrier available; false before, or without one. A load: it
 * never registers, so any path may call it. */
BEAM__HIDDEN bool beam__process_barrier_ready(void);

#endif
