/*
 * The futex lock's slow paths (os/lock.h): sleeping on a held lock, and
 * waking a sleeper. Linux only; elsewhere the lock is a pthread mutex and
 * this file is empty.
 */
#define _GNU_SOURCE /* syscall() */

#include "lock.h"

#ifdef BEAM__LOCK_FUTEX

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The word is 2 from here on while the lock is held: whoever drops it
 * then wakes us. The kernel returns at once when the word is no longer 2
 * (dropped meanwhile) and may wake us spuriously: either way we try to
 * take it again, as 2, since others may still sleep. */
void beam__lock_wait(beam__lock *l, uint32_t seen) {
    if (seen != 2)
        seen = beam__atomic_exchange_acquire(&l->word, 2);
    while (seen != 0) {
        int saved = errno; /* the caller's, not ours to change */
        syscall(SYS_futex, &l->word, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
        errno = saved;
        seen = beam__atomic_exchange_acquire(&l->word, 2);
    }
}

void beam__lock_wake(beam__lock *l) {
    int saved = errno;
    syscall(SYS_futex, &l->word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    errno = saved;
}

#else

/* ISO C wants a translation unit to declare something. */
typedef int beam__lock_pthread_only;

#endif
