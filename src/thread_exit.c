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

/* Cold blocks: each thread's, and all of them on one list, so that an
 * unloaded library does not leave those of the threads that outlive it
 * behind (their thread-locals go with the library; the blocks would not).
 * The generation tells a thread that its block was given back meanwhile.
 * cold_lock is a leaf: nothing is called while it is held. */
static pthread_mutex_t cold_lock = PTHREAD_MUTEX_INITIALIZER;
static beam__thread_cold *cold_all;
static _Atomic unsigned cold_gen;
static BEAM_THREAD_LOCAL beam__thread_cold *cold;
static BEAM_THREAD_LOCAL unsigned cold_mine_gen;

beam__thread_cold *beam__cold(void) {
    if (BEAM__LIKELY(cold != NULL &&
                     cold_mine_gen == beam__atomic_load_acquire(&cold_gen)))
        return cold;
    beam__thread_cold *c = (beam__thread_cold *)beam__sys_alloc(sizeof *c);
    if (c == NULL)
        return NULL;
    memset(c, 0, sizeof *c);
    beam__thread_exit_arm();
    pthread_mutex_lock(&cold_lock);
    c->next = cold_all;
    if (cold_all != NULL)
        cold_all->prev = c;
    cold_all = c;
    /* Under the lock: a release since the load above has made a new list,
     * which c is on, so c is of the new generation. */
    cold_mine_gen = beam__atomic_load_relaxed(&cold_gen);
    pthread_mutex_unlock(&cold_lock);
    cold = c;
    return c;
}

/* This thread's block, if it still has one, off the list and given back. */
static void cold_release_mine(void) {
    beam__thread_cold *c = cold;
    cold = NULL;
    if (c == NULL)
        return;
    pthread_mutex_lock(&cold_lock);
    bool listed = cold_mine_gen == beam__atomic_load_relaxed(&cold_gen);
    if (listed) {
        if (c->prev != NULL)
            c->prev->next = c->next;
        else
            cold_all = c->next;
        if (c->next != NULL)
            c->next->prev = c->prev;
    }
    pthread_mutex_unlock(&cold_lock);
    if (listed)
        beam__sys_free(c);
}

void beam__cold_release_all(void) {
    pthread_mutex_lock(&cold_lock);
    beam__thread_cold *c = cold_all;
    cold_all = NULL;
    beam__atomic_add_relaxed(&cold_gen, 1);
    pthread_mutex_unlock(&cold_lock);
    while (c != NULL) {
        beam__thread_cold *next = c->next;
        beam__sys_free(c);
        c = next;
    }
}

size_t beam__cold_count(void) {
    size_t n = 0;
    pthread_mutex_lock(&cold_lock);
    for (const beam__thread_cold *c = cold_all; c != NULL; c = c->next)
        n++;
    pthread_mutex_unlock(&cold_lock);
    return n;
}

void beam__cold_fork(beam__fork_phase phase) {
    beam__fork_mutex(&cold_lock, phase);
}

static void on_thread_exit(void *unused) {
    (void)unused;
    armed = false;
    beam__gpa_thread_exit();   /* may free through the large allocator... */
    beam__stats_thread_exit(); /* ...so its counters are folded after */
    /* Last: the cleanups above may report misuse into it. */
    cold_release_mine();
}

/* Once per process, at the first thread's first use of the library. */
static void make_exit_key(void) {
    beam__fork_guard();
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
