/*
 * The general purpose allocator built with AddressSanitizer tells it which
 * bytes of its slabs are free: ASan cannot see inside a slab (one big
 * block of the backing's), so a NIF's read or write of a freed small
 * block went unseen. All of a freed block is poisoned, its first 16 bytes
 * too (its free-list link and tag, which the allocator alone reads and
 * writes, past ASan), until the block is handed out again, and nothing
 * the instance gives back to its backing stays poisoned. Without ASan
 * these pass trivially.
 */
#define _GNU_SOURCE /* MAP_ANONYMOUS */
#include "check.h"

#include <beam_alloc.h>

#if CHECK_ASAN
#include <pthread.h>
#include <sanitizer/asan_interface.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static beam_gpa_t fresh(unsigned flags, beam_allocator_t backing) {
    beam_gpa_t g;
    beam_gpa_init_ex(&g, backing, flags);
    return g;
}

/* The first poisoned byte of [p, p + len), or len. */
static size_t first_poisoned(const void *p, size_t len) {
    const char *bad = __asan_region_is_poisoned((void *)(uintptr_t)p, len);
    return bad == NULL ? len : (size_t)(bad - (const char *)p);
}

/* Every byte of [p, p + len) is poisoned. */
static bool all_poisoned(const void *p, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (!__asan_address_is_poisoned((const char *)p + i))
            return false;
    return true;
}

/* A freed small block is poisoned, all of it, and wholly addressable when
 * it comes back. */
static void check_freed_block_poisoned(unsigned flags) {
    beam_gpa_t g = fresh(flags, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    unsigned char *keep = beam_alloc_bytes(a, 64, 8);
    unsigned char *p = beam_alloc_bytes(a, 64, 8);
    CHECK(keep != NULL && p != NULL);
    CHECK(first_poisoned(p, 64) == 64);
    beam_free_bytes(a, p, 64, 8);
    CHECK(all_poisoned(p, 64));
    unsigned char *q = beam_alloc_bytes(a, 64, 8);
    CHECK(q == p); /* LIFO: the same block */
    CHECK(first_poisoned(q, 64) == 64);
    beam_free_bytes(a, q, 64, 8);
    beam_free_bytes(a, keep, 64, 8);
    CHECK(!beam_gpa_deinit(&g));
}

TEST(gpa_asan_freed_small_block_is_poisoned) {
    check_freed_block_poisoned(0);
}

TEST(gpa_asan_freed_small_block_is_poisoned_in_safe_mode) {
    check_freed_block_poisoned(BEAM_GPA_SAFE);
}

/* A NIF's read or write of a freed block's first 16 bytes (its first
 * field: the commonest use after free) is ASan's report. Made in a child,
 * which the report ends; the report comes back through shared memory. */
enum { REPORT_MAX = 4096 };
static char *asan_report;

static void keep_report(const char *report) {
    snprintf(asan_report, REPORT_MAX, "%s", report);
}

typedef struct freed_access {
    volatile unsigned char *p;
    size_t at;
    bool write;
} freed_access;

static int access_freed(void *arg) {
    const freed_access *x = (const freed_access *)arg;
    __asan_set_error_report_callback(keep_report);
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0)
        dup2(null, 2); /* the report, expected, stays out of the run's */
    if (x->write)
        x->p[x->at] = 1;
    else
        (void)x->p[x->at];
    return 0; /* unseen */
}

static bool asan_reports(unsigned char *p, size_t at, bool write) {
    if (asan_report == NULL) {
        void *m = mmap(NULL, REPORT_MAX, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return false;
        asan_report = (char *)m;
    }
    asan_report[0] = '\0';
    freed_access x = {p, at, write};
    return check_in_child(access_freed, &x) != 0 &&
           strstr(asan_report, "use-after-poison") != NULL &&
           strstr(asan_report, write ? "WRITE of size 1" : "READ of size 1") !=
               NULL;
}

/* Bytes 0 and 8 of a freed block of size bytes, read and written. */
static void check_head_access_reported(size_t size) {
    beam_gpa_t g = fresh(0, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    unsigned char *keep = beam_alloc_bytes(a, size, 8);
    unsigned char *p = beam_alloc_bytes(a, size, 8);
    CHECK(keep != NULL && p != NULL);
    CHECK(!asan_reports(p, 0, false)); /* live: no report */
    beam_free_bytes(a, p, size, 8);
    CHECK(all_poisoned(p, size));
    CHECK(asan_reports(p, 0, false));
    CHECK(asan_reports(p, 0, true));
    CHECK(asan_reports(p, 8, false));
    CHECK(asan_reports(p, 8, true));
    beam_free_bytes(a, keep, size, 8);
    CHECK(!beam_gpa_deinit(&g));
}

TEST(gpa_asan_freed_block_head_access_is_reported) {
    check_head_access_reported(64);
}

TEST(gpa_asan_freed_16_byte_block_access_is_reported) {
    check_head_access_reported(16);
}

/* beam_malloc's block may be used up to beam_msize, its class size: all
 * of it addressable when the block comes back from the free list. */
TEST(gpa_asan_malloc_block_is_addressable_up_to_msize_when_reused) {
    beam_gpa_t g = fresh(0, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *keep = beam_malloc(a, 20);
    void *p = beam_malloc(a, 20);
    CHECK(keep != NULL && p != NULL);
    size_t m = beam_msize(a, p);
    CHECK(m > 20);
    beam_mfree(a, p);
    void *q = beam_malloc(a, 20);
    CHECK(q == p && beam_msize(a, q) == m);
    CHECK(first_poisoned(q, m) == m);
    beam_mfree(a, q);
    beam_mfree(a, keep);
    CHECK(!beam_gpa_deinit(&g));
}

/* A block freed by another thread: poisoned by that thread before it is
 * on the slab's remote list, whole again when its owner reuses it. */
static beam_allocator_t remote_a;

static void *free_remotely(void *p) {
    beam_free_bytes(remote_a, p, 64, 8);
    return NULL;
}

TEST(gpa_asan_block_freed_by_another_thread_is_poisoned) {
    beam_gpa_t g = fresh(0, beam_large_allocator);
    remote_a = beam_gpa_allocator(&g);
    enum { N = 8, MORE = 4000 };
    unsigned char *blocks[N];
    for (size_t i = 0; i < N; i++) {
        blocks[i] = beam_alloc_bytes(remote_a, 64, 8);
        CHECK(blocks[i] != NULL);
    }
    unsigned char *p = blocks[N / 2];
    pthread_t t;
    CHECK(pthread_create(&t, NULL, free_remotely, p) == 0);
    pthread_join(t, NULL);
    CHECK(all_poisoned(p, 64));
    /* The owner takes it back when its current slab runs dry. */
    static unsigned char *more[MORE];
    size_t n = 0;
    while (n < MORE && (n == 0 || more[n - 1] != p)) {
        more[n] = beam_alloc_bytes(remote_a, 64, 8);
        CHECK(more[n] != NULL && first_poisoned(more[n], 64) == 64);
        n++;
    }
    CHECK(more[n - 1] == p);
    for (size_t i = 0; i < n; i++)
        beam_free_bytes(remote_a, more[i], 64, 8);
    blocks[N / 2] = NULL;
    for (size_t i = 0; i < N; i++)
        if (blocks[i] != NULL)
            beam_free_bytes(remote_a, blocks[i], 64, 8);
    CHECK(!beam_gpa_deinit(&g));
}

/* A backing that counts the bytes still poisoned in what it gets back. */
static size_t poisoned_returns;

static void *watch_alloc(void *ctx, size_t len, size_t alignment,
                         uintptr_t ret) {
    (void)ctx;
    return beam_large_allocator.vtable->alloc(NULL, len, alignment, ret);
}

static bool watch_resize(void *ctx, void *mem, size_t len, size_t alignment,
                         size_t new_len, uintptr_t ret) {
    (void)ctx;
    return beam_large_allocator.vtable->resize(NULL, mem, len, alignment,
                                               new_len, ret);
}

static void *watch_remap(void *ctx, void *mem, size_t len, size_t alignment,
                         size_t new_len, uintptr_t ret) {
    (void)ctx;
    return beam_large_allocator.vtable->remap(NULL, mem, len, alignment,
                                              new_len, ret);
}

static void watch_free(void *ctx, void *mem, size_t len, size_t alignment,
                       uintptr_t ret) {
    (void)ctx;
    if (mem != NULL && first_poisoned(mem, len) != len)
        poisoned_returns++;
    beam_large_allocator.vtable->free(NULL, mem, len, alignment, ret);
}

static const beam_allocator_vtable watch_vtable = {watch_alloc, watch_resize,
                                                   watch_remap, watch_free};

/* The backing may be enif_alloc: memory given back poisoned would make
 * ERTS's next user of it (another NIF built with ASan) fail. Given back
 * with blocks still live (a leak) and with every block freed. */
static void check_backing_gets_no_poison(bool leak) {
    beam_allocator_t backing = {NULL, &watch_vtable};
    beam_gpa_t g = fresh(BEAM_GPA_QUIET_LEAKS, backing);
    beam_allocator_t a = beam_gpa_allocator(&g);
    enum { N = 4000 };
    static void *blocks[N];
    for (size_t i = 0; i < N; i++) {
        blocks[i] = beam_alloc_bytes(a, 48, 8);
        CHECK(blocks[i] != NULL);
    }
    for (size_t i = leak ? 1 : 0; i < N; i++)
        beam_free_bytes(a, blocks[i], 48, 8);
    poisoned_returns = 0;
    CHECK(beam_gpa_deinit(&g) == leak);
    CHECK(poisoned_returns == 0);
}

TEST(gpa_asan_backing_gets_no_poison_back) {
    check_backing_gets_no_poison(false);
}

TEST(gpa_asan_backing_gets_no_poison_back_with_a_leak) {
    check_backing_gets_no_poison(true);
}

/* A slab whose small blocks were all freed goes back to the pool, and
 * its memory becomes medium runs: addressable, each of them. */
TEST(gpa_asan_medium_runs_over_freed_small_slabs_are_addressable) {
    beam_gpa_t g = fresh(0, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    enum { N = 4000, M = 16, MEDIUM = 30000 };
    static void *blocks[N], *runs[M];
    for (size_t i = 0; i < N; i++) {
        blocks[i] = beam_alloc_bytes(a, 48, 8);
        CHECK(blocks[i] != NULL);
    }
    for (size_t i = 0; i < N; i++)
        beam_free_bytes(a, blocks[i], 48, 8);
    size_t bad = 0;
    for (size_t i = 0; i < M; i++) {
        runs[i] = beam_alloc_bytes(a, MEDIUM, 8);
        CHECK(runs[i] != NULL);
        bad += first_poisoned(runs[i], MEDIUM) != MEDIUM;
    }
    CHECK(bad == 0);
    for (size_t i = 0; i < M; i++)
        beam_free_bytes(a, runs[i], MEDIUM, 8);
    CHECK(!beam_gpa_deinit(&g));
}
#endif
