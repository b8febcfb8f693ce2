/* The GPA's instance lock (src/os/lock.h): a futex word on Linux, a
 * pthread mutex under TSan and elsewhere. Mutual exclusion, and no lost
 * wake-up, under contention from more threads than cores, and errno left
 * alone on every way through. A lost wake-up would hang: an alarm turns
 * that into a failure (the process dies of SIGALRM). The tests' names
 * start with gpa_ so that the TSan run (make c-test-tsan) takes them too. */
#include "check.h"

#include <errno.h>
#include <sched.h>
#include <unistd.h>

#include "os/lock.h"

#define LOCK_THREADS 6
#define LOCK_ROUNDS 40000

static struct {
    beam__lock lock;
    /* Plain on purpose: only the lock orders these (TSan checks it in its
     * build, where the lock is a mutex it knows). */
    long counter;
    int inside;
    bool overlap;
} shared;

/* Returns non-NULL when errno changed across a take or a drop. */
static void *lock_worker(void *arg) {
    (void)arg;
    void *errno_moved = NULL;
    errno = EDOM;
    for (int i = 0; i < LOCK_ROUNDS; i++) {
        beam__lock_take(&shared.lock);
        if (shared.inside++ != 0)
            shared.overlap = true;
        shared.counter++;
        /* Now and then hold it across a yield, so others find it held
         * and sleep on it: the wait and wake paths run too. */
        if ((i & 255) == 0)
            sched_yield();
        shared.inside--;
        beam__lock_drop(&shared.lock);
        if (errno != EDOM)
            errno_moved = &shared;
    }
    return errno_moved;
}

TEST(gpa_lock_excludes_and_wakes_every_waiter) {
    beam__lock_init(&shared.lock);
    shared.counter = 0;
    shared.inside = 0;
    shared.overlap = false;
    pthread_t th[LOCK_THREADS];
    alarm(120); /* a second or less when it works, under TSan included */
    for (int i = 0; i < LOCK_THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, lock_worker, NULL) == 0);
    bool errno_moved = false;
    for (int i = 0; i < LOCK_THREADS; i++) {
        void *moved;
        CHECK(pthread_join(th[i], &moved) == 0);
        errno_moved |= moved != NULL;
    }
    alarm(0);
    CHECK(!shared.overlap);
    CHECK(!errno_moved);
    CHECK(shared.counter == (long)LOCK_THREADS * LOCK_ROUNDS);
    beam__lock_destroy(&shared.lock);
}

/* Uncontended too, errno stays as it was: the malloc-style calls promise
 * errno only on failure (the contended ways are checked above). */
TEST(gpa_lock_leaves_errno_alone) {
    beam__lock_init(&shared.lock);
    errno = EDOM;
    beam__lock_take(&shared.lock);
    beam__lock_drop(&shared.lock);
    CHECK(errno == EDOM);
    beam__lock_destroy(&shared.lock);
}
