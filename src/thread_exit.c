/*
 * One thread-exit hook for the whole library: a pthread key whose destructor
 * runs the per-thread cleanups (the general purpose allocator abandons the
 * thread's heaps, then the stats fold the thread's counters). A thread arms
 * it once, when it first has something to clean up.
 *
 * Re-arming: another key's destructor may still allocate after ours ran; the
 * cleanups then arm again and POSIX runs the destructors another round.
 */
#include "internal.h"

#include <pthread.h>
#include <string.h>

static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static bool exit_key_ok;
static BEAM_THREAD_LOCAL bool armed;
static BEAM_THREAD_LOCAL beam__thread_cold *cold;

beam__thread_cold *beam__cold(void) {
    if (BEAM__LIKELY(cold != NULL))
        return cold;
    beam__thread_cold *c = (beam__thread_cold *)beam__sys_alloc(sizeof *c);
    if (c == NULL)
        return NULL;
    memset(c, 0, sizeof *c);
    beam__thread_exit_arm();
    cold = c;
    return c;
}

static void on_thread_exit(void *unused) {
    (void)unused;
    armed = false;
    beam__gpa_thread_exit();   /* may free through the large allocator... */
    beam__stats_thread_exit(); /* ...so its counters are folded after */
    /* Last: the cleanups above may report misuse into it. */
    beam__misuse.line = NULL;
    beam__sys_free(cold);
    cold = NULL;
}

static void make_exit_key(void) {
    exit_key_ok = pthread_key_create(&exit_key, on_thread_exit) == 0;
}

/* A NIF library can be unloaded while threads live on: the key's destructor
 * must not outlive the code it points to. */
__attribute__((destructor)) static void drop_exit_key(void) {
    if (exit_key_ok)
        pthread_key_delete(exit_key);
}

void beam__thread_exit_arm(void) {
    if (armed)
        return;
    pthread_once(&key_once, make_exit_key);
    if (exit_key_ok)
        pthread_setspecific(exit_key, (void *)1);
    armed = true;
}
