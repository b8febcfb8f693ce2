/* Stats of the raw, large and general purpose allocators. Raw and large
 * counters are process-wide, so these tests compare before and after. */
#define _GNU_SOURCE /* pthread barriers */
#include "check.h"

#include <beam_alloc.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static beam_alloc_stats stats_of(beam_allocator_t a) {
    beam_alloc_stats s;
    bool ok = beam_allocator_stats(a, &s);
    (void)ok;
    return s;
}

TEST(stats_raw_counts_allocations_frees_resizes_and_failures) {
    beam_allocator_t a = beam_raw_allocator;
    beam_alloc_stats before = stats_of(a);
    char *x = beam_alloc_bytes(a, 100, 8);
    char *y = beam_alloc_bytes(a, 200, 8);
    CHECK(x != NULL && y != NULL);
    CHECK(beam_alloc_bytes(a, 10, 16) == NULL); /* refused: a failure */
    beam_alloc_stats mid = stats_of(a);
    CHECK(mid.live_bytes - before.live_bytes == 300);
    CHECK(mid.live_blocks - before.live_blocks == 2);
    CHECK(mid.allocations - before.allocations == 2);
    CHECK(mid.failed - before.failed == 1);
    CHECK(mid.peak_bytes >= mid.live_bytes);
    CHECK(beam_resize_bytes(a, y, 200, 8, 50));
    y = beam_realloc_bytes(a, y, 50, 8, 5000);
    CHECK(y != NULL);
    CHECK(stats_of(a).live_bytes - before.live_bytes == 5100);
    beam_free_bytes(a, x, 100, 8);
    beam_free_bytes(a, y, 5000, 8);
    beam_alloc_stats after = stats_of(a);
    CHECK(after.live_bytes == before.live_bytes);
    CHECK(after.live_blocks == before.live_blocks);
    CHECK(after.frees - before.frees >= 2);
}

/* A length near SIZE_MAX through the vtable (the helpers refuse it before
 * asking): the backend fails it, and nothing but the failure is counted.
 * Asked with live bytes a little above this thread's last publication
 * (the read publishes them), bytes + len wrapped to just below them, a
 * count not due: the raw allocator counted it before the backend's call
 * and took back the length's low 32 bits, 4 GiB off the live bytes. */
TEST(stats_raw_vtable_length_near_size_max_counts_only_a_failure) {
    beam_allocator_t a = beam_raw_allocator;
    beam_alloc_stats before = stats_of(a);
    void *x = beam_alloc_bytes(a, 64, 8);
    CHECK(x != NULL);
    CHECK(a.vtable->alloc(a.ctx, SIZE_MAX, 8, 0) == NULL);
    CHECK(a.vtable->alloc(a.ctx, SIZE_MAX - 10, 8, 0) == NULL);
    beam_alloc_stats s = stats_of(a);
    beam_free_bytes(a, x, 64, 8);
    CHECK(s.live_bytes - before.live_bytes == 64);
    CHECK(s.allocations - before.allocations == 1);
    CHECK(s.failed - before.failed == 2);
    CHECK(s.peak_bytes < before.peak_bytes + ((size_t)1 << 20));
}

/* The child of the test below: its address space limited to what it has
 * and a little more, 64-byte raw blocks until one fails. 0: counted right;
 * 2: none failed; 3: no limit could be set (or it was ignored). */
static int raw_small_failure_child(void *arg) {
    (void)arg;
    beam_allocator_t a = beam_raw_allocator;
    beam_free_bytes(a, beam_alloc_bytes(a, 64, 8), 64, 8); /* listed */
    beam_alloc_stats before = stats_of(a);
    unsigned long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL || fscanf(f, "%lu", &pages) != 1)
        return 3;
    fclose(f);
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = pages * (unsigned long)sysconf(_SC_PAGESIZE) + (1u << 20);
    rlim_t want = rl.rlim_cur;
    /* (Read back: qemu-user accepts a limit on the address space and
     * ignores it, which its own reservations need.) */
    if (setrlimit(RLIMIT_AS, &rl) != 0 || getrlimit(RLIMIT_AS, &rl) != 0 ||
        rl.rlim_cur != want)
        return 3;
    uint64_t n = 0;
    while (n < ((uint64_t)1 << 24) && beam_alloc_bytes(a, 64, 8) != NULL)
        n++;
    if (n == (uint64_t)1 << 24)
        return 2;
    beam_alloc_stats after = stats_of(a);
    bool ok = after.allocations - before.allocations == n &&
              after.live_bytes - before.live_bytes == 64 * n &&
              after.live_blocks - before.live_blocks == n &&
              after.failed - before.failed == 1;
    return ok ? 0 : 1;
}

/* A small allocation the backend refuses: the raw allocator counts it
 * before calling the backend (nothing then lives across the call), so it
 * must take the count back, the bytes and the allocation both. A small
 * malloc fails only once the address space is used up: a child process,
 * limited. Not under the sanitizers (ASan, TSan) or valgrind, whose own
 * reservations and malloc the limit would break first. */
TEST(stats_raw_takes_back_a_small_allocation_the_backend_refused) {
    if (CHECK_ASAN || CHECK_TSAN || check_under_valgrind())
        return;
    /* (watched: a lock another thread held at the fork, no hang) */
    int st = check_in_child(raw_small_failure_child, NULL);
    CHECK(st >= 0); /* forked, exited */
    if (st == 3)
        return; /* no limit to be had here: nothing to test */
    CHECK(st == 0);
}

/* A thread's first raw counts: made before it is listed (its marks are
 * BEAM__MARK_UNLISTED, so the first count publishes, which lists it). A
 * free first, then an allocation; read while it lives and after it
 * exits. */
typedef struct first_counts {
    pthread_barrier_t bar;
    void *given, *made;
} first_counts;

static void *raw_free_then_alloc(void *arg) {
    first_counts *f = arg;
    beam_free_bytes(beam_raw_allocator, f->given, 100, 8);
    pthread_barrier_wait(&f->bar); /* 1: read */
    pthread_barrier_wait(&f->bar); /* 2 */
    f->made = beam_alloc_bytes(beam_raw_allocator, 300, 8);
    pthread_barrier_wait(&f->bar); /* 3: read */
    pthread_barrier_wait(&f->bar); /* 4 */
    return NULL;
}

static void *raw_alloc_first(void *arg) {
    first_counts *f = arg;
    f->made = beam_alloc_bytes(beam_raw_allocator, 200, 8);
    pthread_barrier_wait(&f->bar); /* 1: read */
    pthread_barrier_wait(&f->bar); /* 2 */
    return NULL;
}

TEST(stats_raw_counts_a_new_threads_first_free_and_alloc) {
    beam_allocator_t a = beam_raw_allocator;
    beam_alloc_stats before = stats_of(a), s;
    first_counts f = {.given = beam_alloc_bytes(a, 100, 8)};
    CHECK(f.given != NULL);
    pthread_barrier_init(&f.bar, NULL, 2);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, raw_free_then_alloc, &f) == 0);
    pthread_barrier_wait(&f.bar); /* 1 */
    s = stats_of(a);
    bool freed = s.frees - before.frees == 1 &&
                 s.live_blocks == before.live_blocks &&
                 s.live_bytes == before.live_bytes;
    pthread_barrier_wait(&f.bar); /* 2 */
    pthread_barrier_wait(&f.bar); /* 3 */
    s = stats_of(a);
    bool made = s.allocations - before.allocations == 2 &&
                s.live_blocks - before.live_blocks == 1 &&
                s.live_bytes - before.live_bytes == 300;
    pthread_barrier_wait(&f.bar); /* 4 */
    pthread_join(t, NULL);
    beam_alloc_stats gone = stats_of(a); /* retired with its thread */
    beam_free_bytes(a, f.made, 300, 8);
    CHECK(pthread_create(&t, NULL, raw_alloc_first, &f) == 0);
    pthread_barrier_wait(&f.bar); /* 1 */
    beam_alloc_stats second = stats_of(a);
    pthread_barrier_wait(&f.bar); /* 2 */
    pthread_join(t, NULL);
    pthread_barrier_destroy(&f.bar);
    beam_free_bytes(a, f.made, 200, 8);
    CHECK(freed);
    CHECK(made);
    CHECK(gone.live_bytes - before.live_bytes == 300);
    CHECK(second.allocations - before.allocations == 3);
    CHECK(second.live_bytes - before.live_bytes == 200);
    s = stats_of(a);
    CHECK(s.live_bytes == before.live_bytes);
    CHECK(s.live_blocks == before.live_blocks);
    /* An unlisted mark published as a count would have made it absurd. */
    CHECK(s.peak_bytes < before.peak_bytes + ((size_t)1 << 20));
}

TEST(stats_large_counts_its_own_blocks_only) {
    beam_alloc_stats raw0 = stats_of(beam_raw_allocator);
    beam_alloc_stats large0 = stats_of(beam_large_allocator);
    void *p = beam_alloc_bytes(beam_large_allocator, 100, 4096);
    void *q = beam_alloc_bytes(beam_large_allocator, 50, 8);
    CHECK(p != NULL && q != NULL);
    beam_alloc_stats large1 = stats_of(beam_large_allocator);
    CHECK(large1.live_bytes - large0.live_bytes == 150);
    CHECK(large1.live_blocks - large0.live_blocks == 2);
    CHECK(stats_of(beam_raw_allocator).live_blocks == raw0.live_blocks);
    beam_free_bytes(beam_large_allocator, p, 100, 4096);
    beam_free_bytes(beam_large_allocator, q, 50, 8);
    CHECK(stats_of(beam_large_allocator).live_bytes == large0.live_bytes);
}

TEST(stats_peak_follows_the_high_water_mark) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    enum { N = 3000 };
    static void *ps[N];
    for (int i = 0; i < N; i++)
        CHECK((ps[i] = beam_alloc_bytes(a, 100, 8)));
    for (int i = 0; i < N; i++)
        beam_free_bytes(a, ps[i], 100, 8);
    beam_alloc_stats s = stats_of(a);
    CHECK(s.live_bytes == 0 && s.live_blocks == 0);
    CHECK(s.peak_bytes >= (size_t)N * 100 - 64 * 1024);
    CHECK(s.peak_bytes <= (size_t)N * 100);
    CHECK(s.allocations == N && s.frees == N);
    CHECK(!beam_gpa_deinit(&g));
}

static beam_gpa_t shared;
static void *free_them(void *arg) {
    void **ps = arg;
    for (int i = 0; i < 500; i++)
        beam_free_bytes(beam_gpa_allocator(&shared), ps[i], 48, 8);
    return NULL;
}

static void *alloc_some(void *arg) {
    void **ps = arg;
    for (int i = 0; i < 500; i++)
        ps[i] = beam_alloc_bytes(beam_gpa_allocator(&shared), 48, 8);
    return NULL;
}

TEST(stats_gpa_counts_remote_frees_large_blocks_and_exited_threads) {
    beam_gpa_init(&shared, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&shared);
    static void *ps[500], *qs[500];
    for (int i = 0; i < 500; i++)
        CHECK((ps[i] = beam_alloc_bytes(a, 48, 8)));
    void *big = beam_alloc_bytes(a, 100000, 64);
    CHECK(big != NULL);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, free_them, ps) == 0);
    pthread_join(t, NULL);
    CHECK(pthread_create(&t, NULL, alloc_some, qs) == 0);
    pthread_join(t, NULL); /* its heap is retired with its counters */
    beam_alloc_stats s = stats_of(a);
    CHECK(s.live_blocks == 501);
    CHECK(s.live_bytes == 100000 + 500 * 48);
    CHECK(s.allocations == 1001);
    CHECK(s.frees == 500);
    for (int i = 0; i < 500; i++)
        beam_free_bytes(a, qs[i], 48, 8);
    beam_free_bytes(a, big, 100000, 64);
    s = stats_of(a);
    CHECK(s.live_blocks == 0 && s.live_bytes == 0);
    CHECK(beam_gpa_usage_of(&shared).live_blocks == 0); /* agrees with scan */
    CHECK(!beam_gpa_deinit(&shared));
}

/* Another thread's rise not yet published: the peak a reader gets still
 * covers the live total it gets with it, and later reads keep it. */
typedef struct small_holder {
    beam_gpa_t *gpa;
    pthread_barrier_t bar;
} small_holder;

static void *hold_small_blocks(void *arg) {
    small_holder *h = arg;
    beam_allocator_t a = beam_gpa_allocator(h->gpa);
    void *b[10];
    for (int i = 0; i < 10; i++)
        b[i] = beam_alloc_bytes(a, 100, 8);
    pthread_barrier_wait(&h->bar); /* 1: allocated */
    pthread_barrier_wait(&h->bar); /* 2: read */
    for (int i = 0; i < 10; i++)
        beam_free_bytes(a, b[i], 100, 8);
    return NULL;
}

TEST(stats_peak_is_never_below_a_read_live_total) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_raw_allocator);
    small_holder h = {.gpa = &g};
    pthread_barrier_init(&h.bar, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, hold_small_blocks, &h);
    pthread_barrier_wait(&h.bar);
    beam_alloc_stats s;
    CHECK(beam_allocator_stats(beam_gpa_allocator(&g), &s));
    pthread_barrier_wait(&h.bar);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&h.bar);
    CHECK(s.live_bytes == 1000);
    CHECK(s.peak_bytes >= s.live_bytes);
    /* and, the blocks freed, it does not fall back */
    CHECK(beam_allocator_stats(beam_gpa_allocator(&g), &s));
    CHECK(s.live_bytes == 0 && s.peak_bytes >= 1000);
    CHECK(!beam_gpa_deinit(&g));
}

/* Falls are published a cushion below the live bytes (churn's small falls
 * then publish nothing); a heap retired with its thread publishes exactly:
 * the cushions of exited threads must not stay in the published total, or
 * the peak would drift low by one for every thread gone. */
#define CUSHION_THREADS 16
#define CUSHION_BLOCKS 100

static void *alloc_free_half(void *arg) {
    beam_gpa_t *g = arg;
    beam_allocator_t a = beam_gpa_allocator(g);
    void **kept = beam_alloc_bytes(a, sizeof(void *) * CUSHION_BLOCKS / 2, 8);
    void *b[CUSHION_BLOCKS];
    for (int i = 0; i < CUSHION_BLOCKS; i++)
        b[i] = beam_alloc_bytes(a, 1000, 8);
    for (int i = 0; i < CUSHION_BLOCKS / 2; i++)
        beam_free_bytes(a, b[i], 1000, 8); /* falls below the last rise */
    for (int i = 0; i < CUSHION_BLOCKS / 2; i++)
        kept[i] = b[CUSHION_BLOCKS / 2 + i];
    return kept;
}

TEST(stats_peak_keeps_exited_threads_exact) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_raw_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void **kept[CUSHION_THREADS];
    for (int t = 0; t < CUSHION_THREADS; t++) {
        pthread_t th;
        CHECK(pthread_create(&th, NULL, alloc_free_half, &g) == 0);
        pthread_join(th, (void **)&kept[t]); /* its heap retires */
        CHECK(kept[t] != NULL);
    }
    static void *mine[600];
    for (int i = 0; i < 600; i++)
        CHECK((mine[i] = beam_alloc_bytes(a, 1000, 8)) != NULL);
    for (int i = 0; i < 600; i++)
        beam_free_bytes(a, mine[i], 1000, 8);
    beam_alloc_stats s = stats_of(a);
    size_t kept_bytes = (size_t)CUSHION_THREADS *
                        (CUSHION_BLOCKS / 2 * 1000 + sizeof(void *) * 50);
    size_t true_peak = kept_bytes + 600 * 1000;
    CHECK(s.live_bytes == kept_bytes);
    /* Low by at most the reader's lag (a slab's allocations and 16 KiB),
     * never high: everything ran one thread at a time. */
    CHECK(s.peak_bytes + 64 * 1024 + 16 * 1024 >= true_peak);
    CHECK(s.peak_bytes <= true_peak);
    for (int t = 0; t < CUSHION_THREADS; t++) {
        for (int i = 0; i < CUSHION_BLOCKS / 2; i++)
            beam_free_bytes(a, kept[t][i], 1000, 8);
        beam_free_bytes(a, kept[t], sizeof(void *) * CUSHION_BLOCKS / 2, 8);
    }
    CHECK(stats_of(a).live_bytes == 0);
    CHECK(!beam_gpa_deinit(&g));
}

TEST(stats_gpa_counts_failures) {
    beam_failing_t f;
    beam_failing_init(&f, beam_large_allocator, 1);
    beam_gpa_t g;
    beam_gpa_init(&g, beam_failing_allocator(&f));
    beam_allocator_t a = beam_gpa_allocator(&g);
    /* allocation 0 makes the state; every later backing request fails */
    CHECK(beam_alloc_bytes(a, 32, 8) == NULL);
    CHECK(beam_alloc_bytes(a, 50000, 8) == NULL);
    beam_alloc_stats s = stats_of(a);
    CHECK(s.failed == 2);
    CHECK(s.allocations == 0);
    CHECK(!beam_gpa_deinit(&g));
}

/* From a bug hunt: a backing that refuses even the instance's state (a
 * failing allocator at index 0, an exhausted parent) left nowhere to count
 * the failures: every allocation answered NULL and the stats said failed 0
 * (small, medium, large and malloc-style alike). */
TEST(stats_gpa_counts_failures_before_any_state) {
    beam_failing_t f;
    beam_failing_init(&f, beam_large_allocator, 0);
    beam_gpa_t g;
    beam_gpa_init(&g, beam_failing_allocator(&f));
    beam_allocator_t a = beam_gpa_allocator(&g);
    CHECK(beam_alloc_bytes(a, 32, 8) == NULL);
    CHECK(beam_alloc_bytes(a, 20000, 8) == NULL);
    CHECK(beam_alloc_bytes(a, 200000, 8) == NULL);
    CHECK(beam_malloc(a, 10) == NULL);
    beam_alloc_stats s = stats_of(a);
    CHECK(s.failed == 4);
    CHECK(s.allocations == 0 && s.live_blocks == 0 && s.live_bytes == 0);
    /* The parent recovers: the state is made, the count carries on. */
    f.fail_index = SIZE_MAX;
    void *p = beam_alloc_bytes(a, 32, 8);
    CHECK(p != NULL);
    s = stats_of(a);
    CHECK(s.failed == 4 && s.allocations == 1);
    beam_free_bytes(a, p, 32, 8);
    CHECK(!beam_gpa_deinit(&g));
    /* A new init starts from 0. */
    beam_failing_init(&f, beam_large_allocator, 0);
    beam_gpa_init(&g, beam_failing_allocator(&f));
    CHECK(stats_of(a).failed == 0);
    CHECK(!beam_gpa_deinit(&g));
}

TEST(stats_gpa_live_bytes_stay_sane_after_wrong_lengths_and_mfree) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *keep = beam_alloc_bytes(a, 100, 8);
    void *p = beam_alloc_bytes(a, 40, 8);
    CHECK(keep != NULL && p != NULL);
    check_capture_reports();
    /* Too long (80: another class) and too short (8): freed anyway,
     * counted as the least its class serves (33) and as given. */
    beam_free_bytes(a, p, 80, 8);
    p = beam_alloc_bytes(a, 40, 8);
    CHECK(p != NULL);
    beam_free_bytes(a, p, 8, 8);
    check_release_reports();
    beam_alloc_stats s = stats_of(a);
    CHECK(s.live_blocks == 1);
    CHECK(s.live_bytes >= 100 && s.live_bytes <= 100 + 7 + 32);
    CHECK(s.peak_bytes >= s.live_bytes);
    beam_free_bytes(a, keep, 100, 8);
    CHECK(stats_of(a).live_bytes <= 7 + 32);
    CHECK(!beam_gpa_deinit(&g));

    /* beam_mfree of a sized block counts its size class, more than its
     * length: a read then gives 0 live bytes, not 2^64 less the drift. */
    beam_gpa_init(&g, beam_large_allocator);
    p = beam_alloc_bytes(a, 33, 16);
    CHECK(p != NULL);
    beam_mfree(a, p);
    s = stats_of(a);
    CHECK(s.live_bytes == 0);
    CHECK(s.live_blocks == 0);
    CHECK(s.peak_bytes >= 33);
    CHECK(!beam_gpa_deinit(&g));
}

TEST(stats_other_allocators_have_none) {
    beam_arena_t arena;
    beam_arena_init(&arena, beam_raw_allocator);
    beam_alloc_stats s;
    s.live_bytes = 7;
    CHECK(!beam_allocator_stats(beam_arena_allocator(&arena), &s));
    CHECK(s.live_bytes == 0);
    beam_arena_deinit(&arena);
}
