/*
 * Diagnostics: the report hook under threads, misuse seen per thread, and
 * the frames kept of an allocation's stack. Names start with gpa_ so that
 * the ThreadSanitizer run (make c-test-tsan) takes them too.
 */
#define _POSIX_C_SOURCE 200809L /* pthread barriers */

#include "check.h"

#include "frames.h"
#include "internal.h"

#include <beam_alloc.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* --- The hook and its user pointer ---------------------------------------- */

typedef struct hook_ctx {
    _Atomic long calls, wrong_user, inside;
} hook_ctx;

static hook_ctx ctx_a, ctx_b;

/* A call of the hook that owns ctx, which must come with ctx as its user
 * pointer. */
static void count_call(hook_ctx *ctx, void *user) {
    atomic_fetch_add(&ctx->inside, 1);
    atomic_fetch_add(&ctx->calls, 1);
    if (user != ctx)
        atomic_fetch_add(&ctx->wrong_user, 1);
    atomic_fetch_sub(&ctx->inside, 1);
}

/* Each hook knows which user pointer it must get with it. */
static void hook_a(void *user, const char *line) {
    (void)line;
    count_call(&ctx_a, user);
}

static void hook_b(void *user, const char *line) {
    (void)line;
    count_call(&ctx_b, user);
}

TEST(gpa_report_hook_exchange_gives_back_the_hook_and_its_user) {
    beam_report_fn before_fn;
    void *before_user;
    beam_get_report_hook(&before_fn, &before_user);

    beam_set_report_hook(hook_a, &ctx_a);
    beam_report_fn old = NULL;
    void *old_user = NULL;
    beam_exchange_report_hook(hook_b, &ctx_b, &old, &old_user);
    CHECK(old == hook_a);
    CHECK(old_user == &ctx_a);

    beam_report_fn now;
    void *now_user;
    beam_get_report_hook(&now, &now_user);
    CHECK(now == hook_b);
    CHECK(now_user == &ctx_b);

    /* Put back exactly what was there. */
    beam_set_report_hook(old, old_user);
    beam_get_report_hook(&now, &now_user);
    CHECK(now == hook_a && now_user == &ctx_a);

    /* The default reads as NULL, NULL; setting NULL restores it. */
    beam_set_report_hook(NULL, &ctx_b);
    beam_get_report_hook(&now, &now_user);
    CHECK(now == NULL && now_user == NULL);
    CHECK(beam_set_report_hook(before_fn, before_user) == NULL);
}

/* Threads that misuse an instance of their own (each report goes through
 * the hook) until told to stop. */
static _Atomic bool stop_reporting;

static void *report_loop(void *arg) {
    (void)arg;
    beam_gpa_t gpa;
    beam_gpa_init_ex(&gpa, beam_large_allocator, BEAM_GPA_QUIET_LEAKS);
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    while (!atomic_load(&stop_reporting)) {
        void *p = beam_alloc_bytes(a, 32, 8);
        if (p == NULL)
            break;
        beam_free_bytes(a, p, 32, 8);
        beam_free_bytes(a, p, 32, 8); /* reported: double free */
        /* A gap for the swapping thread: reports hold the hook's lock for
         * reading, and glibc's rwlock lets new readers in ahead of a
         * waiting writer (under valgrind, which runs one thread at a time,
         * the swaps starved for minutes). */
        sched_yield();
    }
    beam_gpa_deinit(&gpa);
    return NULL;
}

TEST(gpa_report_hook_swapped_while_threads_report) {
    beam_report_fn before_fn;
    void *before_user;
    beam_get_report_hook(&before_fn, &before_user);
    atomic_store(&ctx_a.calls, 0);
    atomic_store(&ctx_b.calls, 0);
    atomic_store(&ctx_a.wrong_user, 0);
    atomic_store(&ctx_b.wrong_user, 0);
    atomic_store(&stop_reporting, false);

    beam_set_report_hook(hook_a, &ctx_a);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, report_loop, NULL) == 0);
    bool quiet_after_swap = true;
    /* Swap until both hooks have served reports (bounded, not timed): each
     * swap once the hook in place has served a report since it was put
     * there. (Swapping at every turn, valgrind, which runs one thread at a
     * time, could give every report to the same hook, and the loop then
     * ran its whole bound: 13 minutes and more.) */
    bool on_b = false;
    long served = 0; /* calls of the hook in place when it was put there */
    for (long i = 0; i < 50000000 && (atomic_load(&ctx_a.calls) < 50 ||
                                      atomic_load(&ctx_b.calls) < 50);
         i++) {
        if (atomic_load(on_b ? &ctx_b.calls : &ctx_a.calls) == served) {
            /* Let the reporting threads run. */
            if (i % 64 == 63)
                sched_yield();
            continue;
        }
        beam_report_fn old;
        void *old_user;
        bool to_b = !on_b;
        served = atomic_load(to_b ? &ctx_b.calls : &ctx_a.calls);
        beam_exchange_report_hook(to_b ? hook_b : hook_a,
                                  to_b ? (void *)&ctx_b : (void *)&ctx_a, &old,
                                  &old_user);
        on_b = to_b;
        /* The hook just replaced was given back with its own pointer, and
         * nobody is inside it any more. */
        if (old != (to_b ? hook_a : hook_b) ||
            old_user != (to_b ? (void *)&ctx_a : (void *)&ctx_b))
            quiet_after_swap = false;
        if (atomic_load(to_b ? &ctx_a.inside : &ctx_b.inside) != 0)
            quiet_after_swap = false;
    }
    atomic_store(&stop_reporting, true);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    beam_set_report_hook(before_fn, before_user);

    CHECK(quiet_after_swap);
    CHECK(atomic_load(&ctx_a.wrong_user) == 0);
    CHECK(atomic_load(&ctx_b.wrong_user) == 0);
    CHECK(atomic_load(&ctx_a.calls) >= 50 && atomic_load(&ctx_b.calls) >= 50);
}

/* --- Misuse seen by the thread -------------------------------------------- */

TEST(gpa_misuse_is_counted_for_the_thread_with_its_kind) {
    check_capture_reports();
    beam__misuse_record *m = &beam__misuse;
    unsigned long before = m->count;
    unsigned long outer_watch = m->watch_from;
    m->watch_from = before;

    beam_gpa_t gpa;
    beam_gpa_init_ex(&gpa, beam_large_allocator, BEAM_GPA_SAFE);
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    /* Through an instance that has not allocated yet: still a misuse. */
    int on_stack;
    beam_free_bytes(a, &on_stack, sizeof on_stack, 4);
    CHECK(m->count == before + 1);
    CHECK(strcmp(m->kind, "free of a pointer the allocator does not own") == 0);
    CHECK(strstr(beam__misuse_line(), "free of a pointer it does not own "
                                      "(the instance has no memory") != NULL);
    /* A resize or remap there too, each said once, in its own words (a
     * resize was refused without a word). */
    CHECK(!beam_resize_bytes(a, &on_stack, sizeof on_stack, 4, 2));
    CHECK(beam_remap_bytes(a, &on_stack, sizeof on_stack, 4, 8) == NULL);
    CHECK(m->count == before + 3);
    CHECK(check_report_count() == 3);
    CHECK(check_last_report_has("remap or realloc of a pointer it does not "
                                "own (the instance has no memory"));
    before += 2;

    /* Only the first misuse of the watch is kept. */
    void *p = beam_alloc_bytes(a, 24, 8);
    CHECK(p != NULL);
    beam_free_bytes(a, p, 24, 8);
    beam_free_bytes(a, p, 24, 8);
    CHECK(m->count == before + 2);
    CHECK(strcmp(m->kind, "free of a pointer the allocator does not own") == 0);

    /* A write after free that no allocation reuses: found by the check. */
    unsigned char *q = beam_alloc(a, unsigned char, 64);
    CHECK(q != NULL);
    beam_free(a, q, 64);
    check_freed_poke(q, 40, 1);
    CHECK(beam__gpa_check_freed(&gpa) == 1);
    CHECK(m->count == before + 3);
    CHECK(check_report_contains("write after free"));
    beam_gpa_deinit(&gpa);
    m->watch_from = outer_watch;
    check_release_reports();
}

/* A large block written after its free, found by the end-of-call check:
 * named by its own length and alignment, not its backing's ("length
 * 20016" for a block of 20000; bug hunt). */
TEST(gpa_write_after_free_into_a_large_block_names_its_own_length) {
    beam_gpa_t gpa;
    beam_gpa_init_ex(&gpa, beam_large_allocator, BEAM_GPA_SAFE);
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    check_capture_reports();
    unsigned char *big = beam_alloc_bytes(a, 20000, 16);
    CHECK(big != NULL);
    beam_free_bytes(a, big, 20000, 16);
    big[100] = 1;
    CHECK(beam__gpa_check_freed(&gpa) == 1);
    CHECK(check_report_contains("byte 100 of the freed block changed; found "
                                "at the end of the call"));
    CHECK(check_report_contains("(a freed block of length 20000, alignment "
                                "16)"));
    CHECK(!check_report_contains("length 20016"));
    beam_gpa_deinit(&gpa);
    check_release_reports();
}

/* A write after free into the first 16 bytes of a freed block (its link
 * and tag, which hold no fill) that no allocation reuses: found by the
 * end-of-call check too, for blocks of 8 bytes (all link and tag) as of
 * 64, each write at its byte; a block freed and left alone is clean. */
TEST(gpa_check_freed_sees_writes_into_the_link_and_tag) {
    check_capture_reports();
    for (size_t len = 8; len <= 64; len *= 8) {
        for (size_t at = 0; at < 16; at += 5) {
            beam_gpa_t gpa;
            beam_gpa_init_ex(&gpa, beam_large_allocator,
                             BEAM_GPA_SAFE | BEAM_GPA_QUIET_LEAKS);
            beam_allocator_t a = beam_gpa_allocator(&gpa);
            unsigned char *keep = beam_alloc(a, unsigned char, len);
            unsigned char *q = beam_alloc(a, unsigned char, len);
            unsigned char *clean = beam_alloc(a, unsigned char, len);
            CHECK(keep != NULL && q != NULL && clean != NULL);
            beam_free(a, clean, len);
            beam_free(a, q, len);
            CHECK(beam__gpa_check_freed(&gpa) == 0);
            check_freed_poke(q, at, check_freed_peek(q, at) ^ 0x5a);
            size_t before = check_report_count();
            CHECK(beam__gpa_check_freed(&gpa) == 1);
            CHECK(check_report_count() == before + 1);
            char want[96];
            if (at < 8)
                snprintf(want, sizeof want,
                         "write after free (bytes 0-7 of "
                         "the freed block, its free-list "
                         "link, changed");
            else
                snprintf(want, sizeof want, "write after free (byte %zu of",
                         at);
            CHECK(check_last_report_has(want));
            /* The freed block's length is gone: its class is named, not
             * given as a length (it was, as "length 80, alignment 8" for
             * 64 bytes in safe mode, which adds a canary). */
            CHECK(check_last_report_has("(a freed block of size class ") &&
                  !check_last_report_has("length"));
            beam_free(a, keep, len);
            beam_gpa_deinit(&gpa);
        }
    }
    check_release_reports();
}

/* A write into a freed block's tag is that block's report alone: the
 * freed block whose link leads to it is not blamed too (it was: two
 * reports, the first naming the innocent block; found in review). */
TEST(gpa_check_freed_blames_only_the_block_written) {
    check_capture_reports();
    beam_gpa_t gpa;
    beam_gpa_init_ex(&gpa, beam_large_allocator,
                     BEAM_GPA_SAFE | BEAM_GPA_QUIET_LEAKS);
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    unsigned char *first = beam_alloc(a, unsigned char, 24);
    unsigned char *second = beam_alloc(a, unsigned char, 24);
    CHECK(first != NULL && second != NULL);
    beam_free(a, first, 24);
    beam_free(a, second, 24); /* its link leads to first */
    CHECK(check_freed_peek_word(second, 0) == (uintptr_t)first);
    check_freed_poke(first, 12, check_freed_peek(first, 12) ^ 1);
    size_t before = check_report_count();
    CHECK(beam__gpa_check_freed(&gpa) == 1);
    CHECK(check_report_count() == before + 1);
    char want[64];
    snprintf(want, sizeof want, "%p", (void *)first);
    CHECK(check_last_report_has(want));
    CHECK(check_last_report_has("byte 12 of"));
    beam_gpa_deinit(&gpa);
    check_release_reports();
}

/* Each refused resize, remap or realloc is counted with the resize kind
 * (leak_check raises with it), whichever allocator refuses: a GPA's
 * realloc and remap of a freed block, the same through a failing
 * allocator, and the large allocator's block at another alignment. (The
 * GPA's messages began "remap or realloc" and fell to the kind "misuse".) */
TEST(refused_resizes_and_reallocs_have_the_resize_kind) {
    check_capture_reports();
    beam__misuse_record *m = &beam__misuse;
    unsigned long outer_watch = m->watch_from;
    beam_gpa_t gpa;
    beam_gpa_init(&gpa, beam_large_allocator);
    beam_failing_t f;
    beam_failing_init(&f, beam_gpa_allocator(&gpa), SIZE_MAX);
    beam_allocator_t through[2] = {beam_gpa_allocator(&gpa),
                                   beam_failing_allocator(&f)};
    for (int i = 0; i < 2; i++) {
        beam_allocator_t a = through[i];
        void *keep = beam_alloc_bytes(a, 20000, 16);
        void *p = beam_alloc_bytes(a, 20000, 16);
        CHECK(keep != NULL && p != NULL);
        beam_free_bytes(a, p, 20000, 16);
        m->watch_from = m->count;
        CHECK(beam_realloc_bytes(a, p, 20000, 16, 90000) == NULL);
        CHECK(m->count == m->watch_from + 1);
        CHECK(strcmp(m->kind, BEAM__KIND_RESIZE) == 0);
        m->watch_from = m->count;
        CHECK(beam_remap_bytes(a, p, 20000, 16, 90000) == NULL);
        CHECK(m->count == m->watch_from + 1);
        CHECK(strcmp(m->kind, BEAM__KIND_RESIZE) == 0);
        beam_free_bytes(a, keep, 20000, 16);
    }
    char *b = beam_alloc_bytes(beam_large_allocator, 64, 8);
    CHECK(b != NULL);
    size_t odd = (uintptr_t)b % 4096 != 0 ? 0 : 8;
    m->watch_from = m->count;
    CHECK(!beam_resize_bytes(beam_large_allocator, b + odd, 32, 4096, 16));
    CHECK(strcmp(m->kind, BEAM__KIND_RESIZE) == 0);
    m->watch_from = m->count;
    beam_free_bytes(beam_large_allocator, b + odd, 32, 4096);
    CHECK(strcmp(m->kind, "free with a wrong length or alignment") == 0);
    beam_free_bytes(beam_large_allocator, b, 64, 8);
    m->watch_from = outer_watch;
    CHECK(!beam_gpa_deinit(&gpa));
    check_release_reports();
}

/* --- Frames --------------------------------------------------------------- */

static BEAM__NOINLINE size_t capture_inner(uintptr_t *out, size_t n) {
    size_t got = beam__stack_above(BEAM__RET_ADDR(), out, n);
    __asm__ volatile("" ::: "memory"); /* no tail call */
    return got;
}

static BEAM__NOINLINE size_t capture_middle(uintptr_t *out, size_t n) {
    size_t got = capture_inner(out, n);
    __asm__ volatile("" ::: "memory");
    return got;
}

static BEAM__NOINLINE size_t capture_outer(uintptr_t *out, size_t n) {
    size_t got = capture_middle(out, n);
    __asm__ volatile("" ::: "memory");
    return got;
}

/* Is pc a return address inside fn (within its first bytes)? */
static bool returns_into(uintptr_t pc, size_t (*fn)(uintptr_t *, size_t)) {
    uintptr_t start = (uintptr_t)fn;
    return pc > start && pc < start + 256;
}

TEST(gpa_frames_are_the_callers_innermost_first) {
    uintptr_t pcs[BEAM__MAX_FRAMES];
    size_t n = capture_outer(pcs, 3);
    CHECK(n == 3);
    CHECK(returns_into(pcs[0], capture_middle));
    CHECK(returns_into(pcs[1], capture_outer));
    /* Asking for one frame gives the call site alone. */
    CHECK(capture_outer(pcs, 1) == 1);
    CHECK(returns_into(pcs[0], capture_middle));
}

static BEAM__NOINLINE void *alloc_from_helper(beam_allocator_t a) {
    void *p = beam_alloc_bytes(a, 40, 8);
    __asm__ volatile("" ::: "memory");
    return p;
}

TEST(gpa_tracked_frames_reach_leak_reports_and_are_stored_once) {
    check_capture_reports();
    beam_gpa_t gpa;
    beam_gpa_init_ex(&gpa, beam_large_allocator,
                     BEAM_GPA_TRACK_SITES | BEAM_GPA_FRAMES(4));
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    void *p = alloc_from_helper(a);
    void *q = alloc_from_helper(a);
    CHECK(p != NULL && q != NULL);
    CHECK(beam_gpa_detect_leaks(&gpa));
    /* Each leak names the helper's call and, after " <- ", its callers. */
    CHECK(check_report_count() == 2);
    CHECK(check_last_report_has("allocated from "));
    CHECK(check_last_report_has(" <- "));
    beam_free_bytes(a, p, 40, 8);
    beam_free_bytes(a, q, 40, 8);
    CHECK(!beam_gpa_deinit(&gpa));

    /* The same stack twice is one depot entry: the same site. */
    uintptr_t s1 = 0, s2 = 0;
    for (int i = 0; i < 2; i++) {
        uintptr_t s = beam__trace_capture(BEAM__RET_ADDR(), 4);
        if (i == 0)
            s1 = s;
        else
            s2 = s;
    }
    CHECK(s1 == s2);
    check_release_reports();
}

/* A trace whose walk went on through another library's frames to this
 * module's (frames.c) holds a gap marker, which reads as frames left out,
 * never as an address, and is stored and found like any trace. */
TEST(gpa_frames_gap_reads_as_the_frames_skipped) {
    uintptr_t pcs[3] = {(uintptr_t)&capture_outer + 8, BEAM__FRAMES_GAP,
                        (uintptr_t)&capture_middle + 8};
    char text[1024];
    beam__describe_frames(pcs, 3, text, sizeof text);
    CHECK(strstr(text, " <- ... (frames skipped) <- ") != NULL);
    uintptr_t site = beam__trace_intern(pcs, 3);
    CHECK(site == beam__trace_intern(pcs, 3));
    beam__describe_site(site, text, sizeof text);
    CHECK(strstr(text, " <- ... (frames skipped) <- ") != NULL);
}

/* A site's text cut to its buffer loses library frames before the gap,
 * never the gap and the frame after it: that frame (the NIF's line) is
 * what the walk went on for, and those dropped go into the gap.
 * (A 600-byte site of 16 SQLite frames lost both.) */
TEST(gpa_frames_gap_and_own_frame_survive_a_short_buffer) {
    uintptr_t pcs[BEAM__MAX_FRAMES];
    for (size_t i = 0; i < BEAM__MAX_FRAMES - 2; i++)
        pcs[i] = (uintptr_t)&capture_outer + 8;
    pcs[BEAM__MAX_FRAMES - 2] = BEAM__FRAMES_GAP;
    pcs[BEAM__MAX_FRAMES - 1] = (uintptr_t)&capture_middle + 8;
    char own[512], one[512], text[200];
    beam__describe_addr(pcs[BEAM__MAX_FRAMES - 1], own, sizeof own);
    beam__describe_addr(pcs[0], one, sizeof one);
    beam__describe_frames(pcs, BEAM__MAX_FRAMES, text, sizeof text);
    size_t len = strlen(text), own_len = strlen(own);
    CHECK(len > own_len && strcmp(text + len - own_len, own) == 0);
    /* As many library frames as fit, then the gap. */
    size_t head = 0;
    for (const char *s = text; (s = strstr(s, one)) != NULL; s++)
        head++;
    CHECK(head >= 1 && head < BEAM__MAX_FRAMES - 2);
    CHECK(strstr(text, " <- ... (frames skipped) <- ") != NULL);
}

/* test/nifs/foreign/deep.c, a module of its own (the Makefile links it):
 * calls alloc depth levels deep, without frame pointers. */
typedef void *(*deep_alloc_fn)(void *opaque, size_t n);
void *deep_alloc(deep_alloc_fn alloc, void *opaque, size_t n, int depth);

/* The hook the library calls: the site of its allocation, at 4 frames. */
static BEAM__NOINLINE void *capture_from_library(void *opaque, size_t n) {
    (void)n;
    *(uintptr_t *)opaque = beam__trace_capture(BEAM__RET_ADDR(), 4);
    __asm__ volatile("" ::: "memory");
    return opaque;
}

/* One call of this module's into the library (the NIF's line). */
static BEAM__NOINLINE uintptr_t site_through_library(int depth) {
    uintptr_t site = 0;
    deep_alloc(capture_from_library, &site, 8, depth);
    __asm__ volatile("" ::: "memory");
    return site;
}

/* A recursive library (a parser) reaches one allocation of its own from
 * one call of the NIF's at many depths: one trace, whatever the depth,
 * or the depot (12,288 entries, frames.c) fills with copies of one site and
 * later sites fall back to a single frame (5 sites made 64 traces over
 * depths 1 to 80 while the gap held the count of frames left out). */
TEST(gpa_frames_one_site_at_two_library_depths_is_one_trace) {
    uintptr_t sites[2] = {site_through_library(10), site_through_library(30)};
    CHECK(sites[0] == sites[1]);
#if defined(__linux__) /* (the unwinder's walk, to this module's frame) */
    const uintptr_t *pcs;
    size_t n = beam__site_frames(&sites[0], &pcs);
    CHECK(n == 4 && beam__frames_gap(pcs[2]));
#endif
}

/* The misuse line lives in the thread's cold block (internal.h), made on
 * the thread's first misuse and given back when the thread exits (ASan
 * and valgrind would see it left behind). */
/* One misuse on this thread (a free of a pointer the GPA does not own):
 * counted once, and its line kept. */
static bool misuse_once_and_keep_the_line(void) {
    beam__misuse_record *m = &beam__misuse;
    m->watch_from = m->count;
    int on_stack;
    beam_free_bytes(beam_general_purpose_allocator, &on_stack, sizeof on_stack,
                    4);
    const char *line = beam__misuse_line();
    return m->count == m->watch_from + 1 && line != NULL &&
           strstr(line, "does not own") != NULL;
}

static void *misuse_on_a_new_thread(void *arg) {
    *(bool *)arg = misuse_once_and_keep_the_line();
    return NULL;
}

TEST(misuse_line_is_kept_per_thread_and_given_back_at_exit) {
    check_capture_reports();
    bool ok = false;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, misuse_on_a_new_thread, &ok) == 0);
    pthread_join(t, NULL);
    CHECK(ok);
    check_release_reports();
}

/* A library unloaded while its threads live on gives their cold blocks
 * back (beam__cold_release_all); a thread that runs the library again
 * later gets a new one, and its exit gives that back. */
#define COLD_THREADS 4
static pthread_barrier_t cold_taken, cold_released, cold_retaken, cold_counted;

static void *cold_user(void *arg) {
    (void)arg;
    bool ok = beam__cold() != NULL;
    pthread_barrier_wait(&cold_taken);
    pthread_barrier_wait(&cold_released);
    beam__thread_cold *again = beam__cold();
    ok = ok && again != NULL;
    memset(again->misuse_line, 'x', sizeof again->misuse_line);
    pthread_barrier_wait(&cold_retaken);
    pthread_barrier_wait(&cold_counted);
    return ok ? arg : NULL;
}

TEST(gpa_cold_blocks_of_live_threads_go_back_at_unload) {
    pthread_barrier_init(&cold_taken, NULL, COLD_THREADS + 1);
    pthread_barrier_init(&cold_released, NULL, COLD_THREADS + 1);
    pthread_barrier_init(&cold_retaken, NULL, COLD_THREADS + 1);
    pthread_barrier_init(&cold_counted, NULL, COLD_THREADS + 1);
    pthread_t t[COLD_THREADS];
    int arg[COLD_THREADS];
    for (int i = 0; i < COLD_THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, cold_user, &arg[i]) == 0);
    pthread_barrier_wait(&cold_taken);
    CHECK(beam__cold_count() >= COLD_THREADS);
    beam__cold_release_all();
    CHECK(beam__cold_count() == 0);
    pthread_barrier_wait(&cold_released);
    pthread_barrier_wait(&cold_retaken);
    CHECK(beam__cold_count() == COLD_THREADS);
    pthread_barrier_wait(&cold_counted);
    for (int i = 0; i < COLD_THREADS; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        CHECK(r == &arg[i]);
    }
    CHECK(beam__cold_count() == 0);
    /* This thread's own, given back above, is made anew on demand. */
    CHECK(beam__cold() != NULL);
    CHECK(beam__cold_count() == 1);
    pthread_barrier_destroy(&cold_taken);
    pthread_barrier_destroy(&cold_released);
    pthread_barrier_destroy(&cold_retaken);
    pthread_barrier_destroy(&cold_counted);
}

/* A thread that outlives a release without running the library again
 * exits with a stale block: its exit must not free it a second time (the
 * sanitizer and valgrind runs would see it). And a misuse line kept before
 * a release is not reached through the old block afterwards. */
static pthread_barrier_t stale_taken, stale_released;

static void *stale_holder(void *arg) {
    *(bool *)arg = misuse_once_and_keep_the_line();
    pthread_barrier_wait(&stale_taken);
    pthread_barrier_wait(&stale_released);
    return NULL;
}

TEST(gpa_cold_block_released_under_a_live_thread_is_not_freed_again) {
    check_capture_reports();
    pthread_barrier_init(&stale_taken, NULL, 2);
    pthread_barrier_init(&stale_released, NULL, 2);
    bool ok = false;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, stale_holder, &ok) == 0);
    pthread_barrier_wait(&stale_taken);
    beam__cold_release_all();
    pthread_barrier_wait(&stale_released);
    pthread_join(t, NULL);
    CHECK(ok);
    CHECK(beam__cold_count() == 0);
    /* This thread's line, asked after the release, is a new empty one. */
    const char *line = beam__misuse_line();
    CHECK(line != NULL && line[0] == '\0');
    CHECK(beam__cold_count() == 1);
    pthread_barrier_destroy(&stale_taken);
    pthread_barrier_destroy(&stale_released);
    check_release_reports();
}

/* An arena over a safe instance, its first chunk (4096 bytes, its data
 * from byte 32) written one byte past through the second of two blocks
 * (100 bytes, then 16 at byte 100 of the data): byte 3964 of that one. */
static void overrun_first_chunk(beam_gpa_t *gpa, beam_arena_t *arena) {
    beam_gpa_init_ex(gpa, beam_large_allocator, BEAM_GPA_SAFE);
    beam_arena_init(arena, beam_gpa_allocator(gpa));
    beam_allocator_t a = beam_arena_allocator(arena);
    unsigned char *first = beam_alloc(a, unsigned char, 100);
    unsigned char *b = beam_alloc(a, unsigned char, 16);
    if (first == NULL || b == NULL)
        return;
    b[4096 - 4 * sizeof(size_t) - 100] = 0xEE;
}

static void found_at_test_call(const beam__call_end *end, char *buf, size_t n) {
    snprintf(buf, n, "found when the NIF call %s returned",
             (const char *)end->call);
}

/* The glue's deinit of a scratch call's arena: the report names the chunk
 * as one, the block of the NIF's the write went through, and the call
 * (it said "length 4096" and "called from" the glue's frames). */
TEST(arena_chunk_written_past_at_a_call_end_names_its_block_and_the_call) {
    beam_gpa_t gpa;
    beam_arena_t arena;
    check_capture_reports();
    overrun_first_chunk(&gpa, &arena);
    beam__call_end end = {
        found_at_test_call, "demo:overrun/0", NULL, 0, 0, 0, NULL};
    beam__call_end_for_tests = &end;
    beam__arena_deinit_noting(&arena, &end);
    beam__call_end_for_tests = NULL;
    CHECK(end.chunk == NULL);
    CHECK(check_said_once(
        "(a chunk of 4096 bytes of the call's scratch arena, not a block of "
        "the NIF's: the write was at byte 3964 of "));
    CHECK(check_report_contains(", the last block allocated from it (16 "
                                "bytes)), found when the NIF call "
                                "demo:overrun/0 returned; the chunk was "
                                "taken by an allocation from "));
    CHECK(!check_report_contains("called from"));
    beam_gpa_deinit(&gpa);
    check_release_reports();
}

/* The same with its last block freed: where that started is not known,
 * and the write is given from the chunk's data. */
TEST(arena_chunk_written_past_at_a_call_end_its_last_block_freed) {
    beam_gpa_t gpa;
    beam_arena_t arena;
    check_capture_reports();
    overrun_first_chunk(&gpa, &arena);
    beam_allocator_t a = beam_arena_allocator(&arena);
    unsigned char *c = beam_alloc(a, unsigned char, 8);
    CHECK(c != NULL);
    beam_free(a, c, 8);
    beam__call_end end = {
        found_at_test_call, "demo:overrun/0", NULL, 0, 0, 0, NULL};
    beam__call_end_for_tests = &end;
    beam__arena_deinit_noting(&arena, &end);
    beam__call_end_for_tests = NULL;
    CHECK(check_said_once("not a block of the NIF's: the write was at byte "
                          "4064 of its data, "));
    CHECK(check_report_contains(" (its last block was freed)), found when "));
    beam_gpa_deinit(&gpa);
    check_release_reports();
}

/* The user's own deinit of the same arena: the free of the chunk is the
 * user's call, and the report names its caller as before. */
TEST(arena_chunk_written_past_at_a_users_deinit_names_the_caller) {
    beam_gpa_t gpa;
    beam_arena_t arena;
    check_capture_reports();
    overrun_first_chunk(&gpa, &arena);
    beam_arena_deinit(&arena);
    CHECK(check_said_once("(length 4096, alignment 8), called from "));
    CHECK(check_report_contains("; the block was allocated from "));
    beam_gpa_deinit(&gpa);
    check_release_reports();
}

/* A write after free found by the leak check's look at the freed blocks,
 * at a NIF call's end: the report names the call as a scratch chunk's does
 * (it said "found at the end of the call", and left the reader to work out
 * which), for a small block as for a large one. */
TEST(gpa_write_after_free_found_at_a_call_end_names_the_call) {
    beam_gpa_t gpa;
    beam_gpa_init_ex(&gpa, beam_large_allocator, BEAM_GPA_SAFE);
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    check_capture_reports();
    unsigned char *small = beam_alloc(a, unsigned char, 64);
    unsigned char *big = beam_alloc_bytes(a, 20000, 16);
    CHECK(small != NULL && big != NULL);
    beam_free(a, small, 64);
    beam_free_bytes(a, big, 20000, 16);
    check_freed_poke(small, 40, 1);
    big[100] = 1;
    beam__call_end end = {
        found_at_test_call, "demo:stale/0", NULL, 0, 0, 0, NULL};
    beam__call_end_for_tests = &end;
    CHECK(beam__gpa_check_freed(&gpa) == 2);
    beam__call_end_for_tests = NULL;
    CHECK(check_report_contains("(byte 40 of the freed block changed; found "
                                "when the NIF call demo:stale/0 returned)"));
    CHECK(check_report_contains("(byte 100 of the freed block changed; found "
                                "when the NIF call demo:stale/0 returned)"));
    CHECK(!check_report_contains("at the end of the call"));
    CHECK(!check_report_contains("called from"));
    beam_gpa_deinit(&gpa);
    check_release_reports();
}

/* A chunk of another arena than a scratch call's (a resource's, given
 * back at its teardown): the report says whose, from the end. */
TEST(arena_chunk_written_past_says_whose_arena_it_is) {
    beam_gpa_t gpa;
    beam_arena_t arena;
    check_capture_reports();
    overrun_first_chunk(&gpa, &arena);
    beam__call_end end = {found_at_test_call,    "resource 0x1", NULL, 0, 0, 0,
                          "the resource's arena"};
    beam__call_end_for_tests = &end;
    beam__arena_deinit_noting(&arena, &end);
    beam__call_end_for_tests = NULL;
    CHECK(check_said_once("(a chunk of 4096 bytes of the resource's arena, "
                          "not a block of the NIF's: the write was at byte "
                          "3964 of "));
    CHECK(!check_report_contains("scratch"));
    beam_gpa_deinit(&gpa);
    check_release_reports();
}
