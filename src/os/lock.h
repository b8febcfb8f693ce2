/*
 * The lock of a general purpose allocator instance (gpa_lock in
 * gpa_internal.h): a leaf, held for a few dozen instructions at a time,
 * taken twice by every medium block's alloc and free and by every refill
 * of a small class.
 *
 * On Linux it is a futex word: taking and dropping it is one atomic
 * instruction each when nobody waits. glibc's pthread_mutex cost about 75
 * instructions for the pair (2.36, callgrind), a quarter of a medium
 * block's alloc and free. A thread that finds it held sleeps in the
 * kernel, as on a mutex: no spinning, so a scheduler of the VM waiting
 * for it gives its core away.
 *
 * Elsewhere, and under ThreadSanitizer (which knows pthread's locks, not
 * this one), it is a pthread mutex. The interface is the same: init,
 * destroy, take, drop.
 */
#ifndef BEAM_ALLOC_OS_LOCK_H
#define BEAM_ALLOC_OS_LOCK_H

#include "../internal.h"

#include <pthread.h>

#if defined(__linux__) && !defined(BEAM__TSAN)
#include <sys/syscall.h>
#ifdef SYS_futex /* (not on 32-bit ports with only the time64 call) */
#define BEAM__LOCK_FUTEX 1
#endif
#endif

#ifdef BEAM__LOCK_FUTEX

/* 0: free; 1: held; 2: held, and a thread may be asleep on it. */
typedef struct beam__lock {
    _Atomic uint32_t word;
} beam__lock;

/* Out of line (os/lock.c): the held case, which sleeps until the lock is
 * ours (seen: the word the failed take read); the wake of a sleeper. */
BEAM__HIDDEN void beam__lock_wait(beam__lock *l, uint32_t seen);
BEAM__HIDDEN void beam__lock_wake(beam__lock *l);

static inline void beam__lock_init(beam__lock *l) {
    beam__atomic_init(&l->word, 0);
}

static inline void beam__lock_destroy(beam__lock *l) {
    (void)l;
}

static BEAM__ALWAYS_INLINE void beam__lock_take(beam__lock *l) {
    uint32_t seen = 0;
    if (BEAM__UNLIKELY(!beam__atomic_cas_acquire(&l->word, &seen, 1)))
        beam__lock_wait(l, seen);
}

/* Whoever took it with sleepers in mind (2) wakes one: it takes the lock
 * as 2 again, so the last sleeper's release still wakes any later one. */
static BEAM__ALWAYS_INLINE void beam__lock_drop(beam__lock *l) {
    if (BEAM__UNLIKELY(beam__atomic_exchange_release(&l->word, 0) == 2))
        beam__lock_wake(l);
}

#else

typedef struct beam__lock {
    pthread_mutex_t m;
} beam__lock;

static inline void beam__lock_init(beam__lock *l) {
    pthread_mutex_init(&l->m, NULL);
}

static inline void beam__lock_destroy(beam__lock *l) {
    pthread_mutex_destroy(&l->m);
}

static inline void beam__lock_take(beam__lock *l) {
    pthread_mutex_lock(&l->m);
}

static inline void beam__lock_drop(beam__lock *l) {
    pthread_mutex_unlock(&l->m);
}

#endif

/* A lock's part in a fork (fork.c), as beam__fork_mutex's for a pthread
 * mutex: taken before it, dropped after. */
static inline void beam__fork_lock(beam__lock *l, beam__fork_phase phase) {
    if (phase == BEAM__FORK_PREPARE)
        beam__lock_take(l);
    else
        beam__lock_drop(l);
}

#endif
