/* The process-wide memory barrier (src/os/barrier.h), on which a
 * collection's taking of idle threads' heaps rests: on Linux it must be
 * there (membarrier), or every collection would silently leave other
 * threads' slabs where they are; elsewhere it answers false. The
 * collections themselves are tested in test_gpa_locks.c and test_gpa.c. */
#define _GNU_SOURCE /* setenv, usleep */
#include "check.h"

#include <beam_alloc.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* A process's first collection registers the barrier (Linux: 8-11 ms in a
 * multithreaded process here, the kernel waiting for its threads). That
 * was done under the instance lock with the idle heaps revoked, so another
 * thread's call of the instance waited for the registration: 12-24 ms in a
 * node's first collect against 40 us otherwise (a hunt). Run in a fresh
 * process (this binary again, the child test below alone), where nothing
 * registered yet: the worker's longest call must be well under the
 * collect's own time (before: about all of it). */

static double barrier_now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

typedef struct first_collect {
    beam_gpa_t gpa;
    atomic_bool stop;
    double worst_us;
} first_collect;

static void *first_collect_worker(void *arg) {
    first_collect *fc = arg;
    beam_allocator_t a = beam_gpa_allocator(&fc->gpa);
    while (!atomic_load(&fc->stop)) {
        double t0 = barrier_now_us();
        void *p = beam_alloc_bytes(a, 64, 8);
        beam_free_bytes(a, p, 64, 8);
        double dt = barrier_now_us() - t0;
        if (dt > fc->worst_us)
            fc->worst_us = dt;
        /* Mostly outside a call: idle, as a scheduler between calls. */
        for (double t1 = barrier_now_us(); barrier_now_us() - t1 < 50;)
            ;
    }
    return NULL;
}

TEST(os_barrier_first_collect_child) {
    if (getenv("BEAM_ALLOC_FIRST_COLLECT_CHILD") == NULL)
        return; /* Only in the process the test below starts. */
    static first_collect fc;
    beam_gpa_init(&fc.gpa, beam_raw_allocator);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, first_collect_worker, &fc) == 0);
    usleep(50000);
    double t0 = barrier_now_us();
    beam_gpa_collect(&fc.gpa);
    double collect_us = barrier_now_us() - t0;
    usleep(20000);
    atomic_store(&fc.stop, true);
    pthread_join(th, NULL);
    (void)beam_gpa_deinit(&fc.gpa);
    printf("first collect %.0f us, worker's worst call %.0f us\n", collect_us,
           fc.worst_us);
    /* Without the registration to wait for, nothing to compare. */
    CHECK(collect_us < 2000 || fc.worst_us < collect_us / 2);
}

TEST(os_barrier_first_collect_does_not_hold_other_threads) {
    if (getenv("BEAM_ALLOC_FIRST_COLLECT_CHILD") != NULL)
        return;
    /* This binary's path (readlink: valgrind answers the client's, where
     * exec of /proc/self/exe would start valgrind's own tool). */
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0);
    self[n] = '\0';
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        setenv("BEAM_ALLOC_FIRST_COLLECT_CHILD", "1", 1);
        execl(self, "run_tests", "os_barrier_first_collect_child",
              (char *)NULL);
        _exit(127);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
