/* The process-wide memory barrier (src/os/barrier.h), on which a
 * collection's taking of idle threads' heaps rests: on Linux it must be
 * there (membarrier), or every collection would silently leave other
 * threads' slabs where they are; elsewhere it answers false. The
 * collections themselves are tested in test_gpa_locks.c and test_gpa.c. */
#include "check.h"

#include <errno.h>
#include <pthread.h>

#include "os/barrier.h"

static void *barrier_from_a_thread(void *arg) {
    (void)arg;
    return beam__process_barrier() ? (void *)1 : NULL;
}

TEST(os_process_barrier_answers_the_same_from_every_thread) {
#ifdef BEAM__HAVE_MEMBARRIER
    /* First use registers; later uses only issue it. */
    CHECK(beam__process_barrier());
    CHECK(beam__process_barrier());
#endif
    errno = EDOM;
    (void)beam__process_barrier();
    CHECK(errno == EDOM);
    pthread_t th;
    void *answer = NULL;
    CHECK(pthread_create(&th, NULL, barrier_from_a_thread, NULL) == 0);
    CHECK(pthread_join(th, &answer) == 0);
    CHECK((answer != NULL) == beam__process_barrier());
}
