/*
 * fork() while other threads hold or hammer the library's locks: the child
 * has one thread, the forking one, so a lock another thread held at the
 * fork would stay held in it for good, and the child's next call that
 * takes it would hang (src/fork.c takes them all around a fork). Each
 * child allocates and frees through the general purpose, large and raw
 * allocators and exits 0; the parent waits for it with a timeout and
 * kills it on a hang (check_in_child). Names start with gpa_ so that the TSan
 * run takes them too.
 */
#define _GNU_SOURCE
#include "check.h"
#include "gpa_internal.h"

#include <beam_alloc.h>

#include <stdio.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

/* AddressSanitizer before LLVM 17 takes no lock of its own allocator
 * around a fork: a child forked while another thread was in malloc hung
 * in ASan's LargeMmapAllocator (clang 14, seen here), not in ours. The
 * hammering test then has nothing to say; the held-lock one still runs. */
#if CHECK_ASAN
#define FORK_SANITIZER_HANGS 1
#endif
/* ThreadSanitizer's allocator likewise (clang 14): a child hung in about
 * two runs in three, spinning in its LargeMmapAllocator's lock under
 * malloc, from the raw allocator (seen with gdb here). */
#if CHECK_TSAN
#define FORK_SANITIZER_HANGS 1
#endif
#define FORK_ROUNDS 200

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One block of len through a, written and freed; false when refused. */
static bool round_trip(beam_allocator_t a, size_t len) {
    unsigned char *p = (unsigned char *)beam_alloc_bytes(a, len, 8);
    if (p == NULL)
        return false;
    p[0] = p[len - 1] = 0x5a;
    beam_free_bytes(a, p, len, 8);
    return true;
}

/* What a child does: small, medium and large blocks of gpa and of the
 * process-wide instance, the large and raw allocators, beam_malloc; a
 * new instance (the registry) made and torn down. */
static int child_work(void *arg) {
    beam_gpa_t *gpa = (beam_gpa_t *)arg;
    static const size_t lens[] = {24, 900, 20000, 300000, 2 << 20};
    beam_allocator_t all[] = {beam_gpa_allocator(gpa),
                              beam_general_purpose_allocator,
                              beam_large_allocator, beam_raw_allocator};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
            if (!round_trip(all[i], lens[k]))
                return 1;
    void *m = beam_malloc(beam_general_purpose_allocator, 100);
    beam_mfree(beam_general_purpose_allocator, m);
    beam_gpa_t fresh;
    beam_gpa_init(&fresh, beam_raw_allocator);
    bool ok = m != NULL && round_trip(beam_gpa_allocator(&fresh), 20000);
    return !beam_gpa_deinit(&fresh) && ok ? 0 : 1;
}

/* Forks; the child runs child_work. Its exit status, -1: it did not
 * exit (hung, say). */
static int fork_and_check(beam_gpa_t *gpa) {
    int status = check_in_child(child_work, gpa);
    if (status != 0)
        fprintf(stderr, "fork: child failed (status %d)\n", status);
    return status;
}

/* ---- a lock held across the fork ------------------------------------- */

/* One lock a thread, as the library holds them (gpa_internal.h, rule 1). */
typedef struct holder {
    beam__lock *lock;
    check_phase phase;
    pthread_t thread;
} holder;

/* Takes the lock, says so, keeps it a while, drops it. */
static void *hold_main(void *arg) {
    holder *h = (holder *)arg;
    beam__lock_take(h->lock);
    check_phase_set(&h->phase, 1);
    sleep_ms(200);
    beam__lock_drop(h->lock);
    return NULL;
}

static void hold_start(holder *h, beam_gpa_t *gpa) {
    h->lock = &beam__gpa_state_of(gpa)->lock;
    check_phase_init(&h->phase);
    pthread_create(&h->thread, NULL, hold_main, h);
    check_phase_wait(&h->phase, 1);
}

TEST(gpa_fork_while_another_thread_holds_instance_locks_child_runs) {
    beam_gpa_t gpa;
    beam_gpa_init(&gpa, beam_raw_allocator);
    /* Both instances made (they are made at their first block). */
    CHECK(round_trip(beam_gpa_allocator(&gpa), 64));
    CHECK(round_trip(beam_general_purpose_allocator, 64));
    holder h[2];
    hold_start(&h[0], &gpa);
    hold_start(&h[1], &beam_general_purpose_allocator_instance);
    int status = fork_and_check(&gpa);
    pthread_join(h[0].thread, NULL);
    pthread_join(h[1].thread, NULL);
    CHECK(!beam_gpa_deinit(&gpa));
    CHECK(status == 0);
}

/* ---- locks hammered across forks -------------------------------------- */

typedef struct hammer {
    atomic_bool stop;
    beam_gpa_t *gpa;
} hammer;

/* Short-lived threads (the stats list, the thread-exit hook), instances
 * made and torn down (the registry), large blocks (their instance's
 * table, the address sets' stripes), medium ones (the instance lock). */
static void *short_thread(void *arg) {
    (void)round_trip(beam_gpa_allocator((beam_gpa_t *)arg), 48);
    return NULL;
}

static void *hammer_main(void *arg) {
    hammer *hm = (hammer *)arg;
    while (!atomic_load(&hm->stop)) {
        beam_gpa_t g;
        beam_gpa_init(&g, beam_gpa_allocator(hm->gpa));
        (void)round_trip(beam_gpa_allocator(&g), 20000);
        (void)round_trip(beam_gpa_allocator(hm->gpa), 300000);
        (void)round_trip(beam_large_allocator, 70000);
        (void)beam_gpa_deinit(&g);
        pthread_t t;
        if (pthread_create(&t, NULL, short_thread, hm->gpa) == 0)
            pthread_join(t, NULL);
    }
    return NULL;
}

TEST(gpa_fork_while_threads_hammer_the_locks_child_never_hangs) {
#ifdef FORK_SANITIZER_HANGS
    return;
#endif
    /* Under valgrind a child forked while a hammering thread held a block
     * it had just allocated and not yet linked (heap_create's metadata,
     * before its lock) has that block unreferenced, which valgrind's leak
     * check at the child's exit counts as definitely lost and fails
     * (--error-exitcode): fork's nature, not a leak of ours, once in many
     * make test runs under load. Valgrind runs one thread at a time, so
     * the hang this test looks for is the normal build's to find. */
    if (check_under_valgrind())
        return;
    beam_gpa_t gpa;
    beam_gpa_init(&gpa, beam_raw_allocator);
    hammer hm = {false, &gpa};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, hammer_main, &hm);
    int bad = 0;
    for (int r = 0; r < FORK_ROUNDS && bad == 0; r++) {
        bad = fork_and_check(&gpa);
        sleep_ms(2);
    }
    atomic_store(&hm.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(!beam_gpa_deinit(&gpa));
    CHECK(bad == 0);
}

/* ---- the report hook in the child ------------------------------------- */

static void count_line(void *user, const char *line) {
    (void)line;
    (*(int *)user)++;
}

/* The child installs a hook, reports through it and puts the default back:
 * the hook's rwlock, which the fork handler held as a writer, is free in
 * it. (glibc's pthread_rwlock_unlock tells a writer's unlock by the
 * thread id, which a child has a new one of: an unlock there was taken
 * for a reader's and left the lock write-held, and the child hung at its
 * first report.) */
static int child_reports(void *arg) {
    (void)arg;
    int lines = 0;
    beam_set_report_hook(count_line, &lines);
    beam__report_line("fork: a line from the child");
    beam_set_report_hook(NULL, NULL);
    return lines == 1 ? 0 : 1;
}

TEST(gpa_fork_child_reports_and_sets_the_report_hook) {
    beam_gpa_t gpa;
    beam_gpa_init(&gpa, beam_raw_allocator);
    CHECK(round_trip(beam_gpa_allocator(&gpa), 64)); /* handlers in place */
    int status = check_in_child(child_reports, NULL);
    CHECK(!beam_gpa_deinit(&gpa));
    CHECK(status == 0);
}

/* ---- a fork while a report is inside the hook ------------------------- */

/* A hook may take locks and call the library (header, section 7). These
 * scenarios run in a child of their own (check_in_child): a deadlock
 * hangs that child, not the test run. Each makes an instance first
 * (handlers in place). */
static int exits_at_once(void *arg) {
    (void)arg;
    return 0;
}

static check_phase hook_phase;

/* Inside the hook (a report holds its lock as a reader): says so, lets
 * the other thread fork, then reads the named stats, whose lock the fork
 * handler takes before the report hook's. */
static void hook_reads_named_stats(void *user, const char *line) {
    (void)user;
    (void)line;
    check_phase_set(&hook_phase, 1);
    sleep_ms(200);
    beam_alloc_stats s;
    (void)beam_stats_named(0, NULL, &s, NULL);
}

static void *report_main(void *arg) {
    (void)arg;
    beam__report_line("fork: a report while another thread forks");
    return NULL;
}

static int fork_while_hook_reads_named_stats(void *arg) {
    (void)arg;
    beam_gpa_t gpa;
    beam_gpa_init(&gpa, beam_raw_allocator);
    if (!round_trip(beam_gpa_allocator(&gpa), 64) ||
        !beam_stats_register("fork_test", beam_gpa_allocator(&gpa)))
        return 2;
    check_phase_init(&hook_phase);
    beam_set_report_hook(hook_reads_named_stats, NULL);
    pthread_t t;
    pthread_create(&t, NULL, report_main, NULL);
    check_phase_wait(&hook_phase, 1);
    int bad = check_in_child(exits_at_once, NULL);
    pthread_join(t, NULL);
    return bad;
}

TEST(gpa_fork_while_the_report_hook_reads_named_stats_no_deadlock) {
    CHECK(check_in_child(fork_while_hook_reads_named_stats, NULL) == 0);
}

/* A hook that forks (to run a reporter, say). In the child the hook
 * returns, as the parent's does, and the child reports again through it
 * (counted, no second fork) and sets the hook: the lock its one thread
 * held for reading at the fork is held again there, and free after. */
static bool in_hook_child;
static int hook_child_status = -1;

static void hook_forks(void *user, const char *line) {
    (void)line;
    if (in_hook_child) {
        (*(int *)user)++;
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        in_hook_child = true;
        return;
    }
    hook_child_status = pid < 0 ? -1 : check_wait_child(pid);
}

static int fork_inside_the_hook(void *arg) {
    (void)arg;
    beam_gpa_t gpa;
    beam_gpa_init(&gpa, beam_raw_allocator);
    if (!round_trip(beam_gpa_allocator(&gpa), 64))
        return 2;
    int lines = 0;
    beam_set_report_hook(hook_forks, &lines);
    beam__report_line("fork: a hook that forks");
    if (in_hook_child) {
        beam__report_line("fork: the hook's child reports");
        beam_set_report_hook(NULL, NULL);
        _exit(lines == 1 ? 0 : 1);
    }
    beam_set_report_hook(NULL, NULL);
    return hook_child_status;
}

TEST(gpa_fork_inside_the_report_hook_no_deadlock) {
    CHECK(check_in_child(fork_inside_the_hook, NULL) == 0);
}
