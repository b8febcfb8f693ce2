/* The process-wide memory barrier (barrier.h). */
#define _GNU_SOURCE /* syscall() */
#include "barrier.h"

#ifdef BEAM__HAVE_MEMBARRIER

#include <errno.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <unistd.h>

static pthread_once_t barrier_once = PTHREAD_ONCE_INIT;
static bool barrier_ok;
static _Atomic bool barrier_ready; /* barrier_ok, for other threads */

/* Registration is once per process; a kernel without the command (or a
 * seccomp filter) refuses it, and the barrier is then never attempted. */
static void barrier_init(void) {
    barrier_ok = syscall(SYS_membarrier,
                         MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    beam__atomic_store_relaxed(&barrier_ready, barrier_ok);
}

bool beam__process_barrier_ready(void) {
    return beam__atomic_load_relaxed(&barrier_ready);
}

void beam__process_barrier_prepare(void) {
    int saved = errno;
    pthread_once(&barrier_once, barrier_init);
    errno = saved;
}

/* errno is the caller's (beam_gpa_collect is public): a refusal must not
 * change it. */
bool beam__process_barrier(void) {
    int saved = errno;
    pthread_once(&barrier_once, barrier_init);
    bool ok =
        barrier_ok &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
    errno = saved;
    return ok;
}

#else

void beam__process_barrier_prepare(void) {}

bool beam__process_barrier_ready(void) {
    return false;
}

bool beam__process_barrier(void) {
    return false;
}

#endif
