/* The malloc-style calls (src/malloc.c): 16-byte alignment over every
 * allocator, sizes, overflow, failed grows, no header over the general
 * purpose allocator, misuse reported, caller addresses passed through. */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "check.h"
#include "flip_allocator.h"
#include "gpa_internal.h"
#include "gpa_slab_kind.h"
#include "internal.h"
#include "malloc_hdr.h"

#include <beam_alloc.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

static bool filled(const unsigned char *p, size_t n, unsigned char tag) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(tag + i))
            return false;
    return true;
}

static void fill(unsigned char *p, size_t n, unsigned char tag) {
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(tag + i);
}

/* malloc, write, grow, shrink, free: contents and alignment hold. */
static bool exercise(beam_allocator_t a) {
    static const size_t sizes[] = {0,    1,    7,    8,     15,    16,
                                   17,   24,   100,  1000,  1024,  1025,
                                   4096, 8192, 8193, 20000, 100000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        unsigned char *p = beam_malloc(a, n);
        if (p == NULL || !check_aligned(p, 16) || beam_msize(a, p) < n ||
            beam_msize(a, p) != beam_mgood_size(a, n))
            return false;
        fill(p, n, (unsigned char)i);
        size_t bigger = n * 3 + 5;
        unsigned char *q = beam_mrealloc(a, p, bigger);
        if (q == NULL || !check_aligned(q, 16) ||
            !filled(q, n, (unsigned char)i) || beam_msize(a, q) < bigger)
            return false;
        fill(q, bigger, 7);
        unsigned char *r = beam_mrealloc(a, q, n / 2);
        if (r == NULL || !check_aligned(r, 16) || !filled(r, n / 2, 7))
            return false;
        beam_mfree(a, r);
        unsigned char *z = beam_calloc(a, n + 1, 3);
        if (z == NULL || !check_aligned(z, 16))
            return false;
        for (size_t k = 0; k < (n + 1) * 3; k++)
            if (z[k] != 0)
                return false;
        beam_mfree(a, z);
    }
    beam_mfree(a, NULL); /* a no-op */
    return true;
}

static beam_gpa_t gpa_with(unsigned flags) {
    beam_gpa_t g;
    beam_gpa_init_ex(&g, beam_large_allocator, flags);
    return g;
}

TEST(malloc_aligns_16_over_the_raw_and_large_allocators) {
    CHECK(exercise(beam_raw_allocator));
    CHECK(exercise(beam_large_allocator));
}

TEST(malloc_over_general_purpose_allocators_in_every_mode) {
    unsigned modes[] = {0, BEAM_GPA_TRACK_SITES, BEAM_GPA_SAFE};
    for (size_t m = 0; m < 3; m++) {
        beam_gpa_t g = gpa_with(modes[m]);
        CHECK(exercise(beam_gpa_allocator(&g)));
        CHECK(!beam_gpa_deinit(&g));
    }
    CHECK(exercise(beam_general_purpose_allocator));
}

TEST(malloc_over_composed_allocators) {
    beam_arena_t arena;
    beam_arena_init(&arena, beam_raw_allocator);
    CHECK(exercise(beam_arena_allocator(&arena)));
    beam_arena_deinit(&arena);

    static _Alignas(16) unsigned char buf[1 << 20];
    beam_fixed_buffer_t fb;
    beam_fixed_buffer_init(&fb, buf + 8, sizeof buf - 8); /* 8 mod 16 */
    CHECK(exercise(beam_fixed_buffer_allocator(&fb)));

    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, SIZE_MAX);
    CHECK(exercise(beam_failing_allocator(&f)));
    CHECK(f.allocated_bytes == f.freed_bytes);
}

/* An instance over the raw allocator, directly or through allocators that
 * pass the alignment on to it, cannot have its large blocks aligned to 16:
 * it gets headers, as over an allocator it does not know. Through a failing
 * allocator or a second instance, blocks above 64 KiB came back NULL (found in
 * review). */
TEST(malloc_over_an_instance_backed_by_raw_through_wrappers) {
    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, SIZE_MAX);
    beam_gpa_t over_failing, over_raw, over_gpa;
    beam_gpa_init(&over_failing, beam_failing_allocator(&f));
    beam_gpa_init(&over_raw, beam_raw_allocator);
    beam_gpa_init(&over_gpa, beam_gpa_allocator(&over_raw));
    beam_gpa_t *all[] = {&over_failing, &over_raw, &over_gpa};
    for (size_t i = 0; i < 3; i++) {
        beam_allocator_t a = beam_gpa_allocator(all[i]);
        CHECK(exercise(a));
        void *big = beam_malloc(a, 1 << 20);
        CHECK(big != NULL && check_aligned(big, 16));
        beam_mfree(a, big);
    }
    CHECK(!beam_gpa_deinit(&over_gpa));
    CHECK(!beam_gpa_deinit(&over_raw));
    CHECK(!beam_gpa_deinit(&over_failing));
    CHECK(f.allocated_bytes == f.freed_bytes);

    /* Over an allocator it does not know (one of the user's), headers too:
     * nothing says it serves 16. */
    beam_gpa_t over_own;
    beam_gpa_init(&over_own, (beam_allocator_t){NULL, &flip_vtable});
    CHECK(exercise(beam_gpa_allocator(&over_own)));
    CHECK(!beam_gpa_deinit(&over_own));
}

TEST(malloc_over_a_parent_whose_blocks_change_residue_on_remap) {
    beam_allocator_t a = {NULL, &flip_vtable};
    CHECK(exercise(a));
    /* A grow that moves from 8 mod 16 to 0 mod 16 and back keeps every
     * byte (the header word must not land on the data before it moves). */
    for (int k = 0; k < 4; k++) {
        unsigned char *p = beam_malloc(a, 40);
        fill(p, 40, 9);
        for (size_t n = 41; n < 400; n += 37) {
            p = beam_mrealloc(a, p, n);
            CHECK(p != NULL && check_aligned(p, 16) && filled(p, 40, 9));
        }
        beam_mfree(a, p);
    }
}

TEST(malloc_over_the_general_purpose_allocator_has_no_header) {
    beam_gpa_t g = gpa_with(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    beam_alloc_stats s;
    void *p = beam_malloc(a, 20);
    CHECK(p != NULL && beam_msize(a, p) == 32); /* the 32-byte class */
    CHECK(beam_mgood_size(a, 20) == 32 && beam_mgood_size(a, 8000) == 8192);
    CHECK(beam_allocator_stats(a, &s) && s.live_bytes == 32 &&
          s.live_blocks == 1);
    /* A sized block of the class is the same block: 32 bytes, no more. */
    void *q = beam_alloc_bytes(a, 32, 16);
    CHECK(q != NULL && (char *)q - (char *)p == 32);
    beam_free_bytes(a, q, 32, 16);
    beam_mfree(a, p);
    void *big = beam_malloc(a, 100000);
    CHECK(big != NULL && beam_msize(a, big) == 100000);
    beam_mfree(a, big);
    CHECK(beam_allocator_stats(a, &s) && s.live_bytes == 0 &&
          s.live_blocks == 0);
    CHECK(!beam_gpa_deinit(&g));
}

TEST(malloc_header_over_other_allocators_is_16_bytes) {
    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, SIZE_MAX);
    beam_allocator_t a = beam_failing_allocator(&f);
    void *p = beam_malloc(a, 100);
    CHECK(p != NULL && beam_msize(a, p) == 112);
    CHECK(f.allocated_bytes == 112 + 16);
    beam_mfree(a, p);
    CHECK(f.freed_bytes == 128);
}

TEST(malloc_overflow_gives_null) {
    beam_gpa_t g = gpa_with(0);
    beam_allocator_t all[] = {beam_raw_allocator, beam_large_allocator,
                              beam_gpa_allocator(&g)};
    for (size_t i = 0; i < 3; i++) {
        beam_allocator_t a = all[i];
        CHECK(beam_malloc(a, SIZE_MAX) == NULL);
        CHECK(beam_malloc(a, SIZE_MAX - 15) == NULL);
        CHECK(beam_malloc(a, (size_t)PTRDIFF_MAX + 1) == NULL);
        CHECK(beam_calloc(a, SIZE_MAX / 2, 3) == NULL);
        CHECK(beam_calloc(a, (size_t)1 << 33, (size_t)1 << 33) == NULL);
        CHECK(beam_mgood_size(a, SIZE_MAX) == 0);
        void *p = beam_malloc(a, 10);
        CHECK(p != NULL);
        CHECK(beam_mrealloc(a, p, SIZE_MAX - 8) == NULL);
        CHECK(beam_msize(a, p) >= 10); /* still live */
        beam_mfree(a, p);
    }
    CHECK(!beam_gpa_deinit(&g));
}

TEST(malloc_failed_grow_leaves_the_block_intact) {
    /* Over the raw allocator (header) and a general purpose instance (no
     * header): the grow fails at the failing point, the block stays. */
    beam_gpa_t g = gpa_with(0);
    beam_allocator_t parents[] = {beam_raw_allocator, beam_gpa_allocator(&g)};
    for (size_t i = 0; i < 2; i++) {
        beam_failing_t f;
        beam_failing_init(&f, parents[i], 1);
        beam_allocator_t a = beam_failing_allocator(&f);
        unsigned char *p = beam_malloc(a, 40);
        CHECK(p != NULL);
        fill(p, 40, 3);
        CHECK(beam_mrealloc(a, p, 100000) == NULL);
        CHECK(f.has_induced_failure);
        CHECK(filled(p, 40, 3) && beam_msize(a, p) >= 40);
        beam_mfree(a, p);
        CHECK(f.allocated_bytes == f.freed_bytes);
    }
    CHECK(!beam_gpa_deinit(&g));
}

TEST(malloc_misuse_over_a_header_allocator_is_reported_and_ignored) {
    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, SIZE_MAX);
    beam_allocator_t a = beam_failing_allocator(&f);
    check_capture_reports();
    /* Each is counted as a misuse, as a sized call's (leak_check and the
     * fault-injection check see it), the beam_msize query included. */
    unsigned long misuse = beam__misuse.count;
    /* A sized block is not a malloc-style one. */
    void *sized = beam_alloc_bytes(a, 64, 8);
    CHECK(sized != NULL);
    memset(sized, 0, 64);
    beam_mfree(a, (char *)sized + 16);
    CHECK(check_report_count() == 1);
    CHECK(check_report_contains("beam_mfree"));
    CHECK(check_report_contains("not a live block"));
    CHECK(beam__misuse.count == misuse + 1);
    CHECK(beam_msize(a, (char *)sized + 16) == 0);
    CHECK(beam__misuse.count == misuse + 2);
    CHECK(beam_mrealloc(a, (char *)sized + 16, 10) == NULL);
    CHECK(check_report_count() == 3);
    CHECK(beam__misuse.count == misuse + 3);
    beam_free_bytes(a, sized, 64, 8);
    /* A double free is named as one while the parent leaves the memory
     * alone (a fixed buffer does, for all but its last block), and nothing
     * reaches the parent. (Over malloc the second free would read freed
     * memory: reported too, but no test under ASan and valgrind.) */
    static _Alignas(16) unsigned char buf[4096];
    beam_fixed_buffer_t fb;
    beam_fixed_buffer_init(&fb, buf, sizeof buf);
    beam_failing_t ff;
    beam_failing_init(&ff, beam_fixed_buffer_allocator(&fb), SIZE_MAX);
    beam_allocator_t b = beam_failing_allocator(&ff);
    void *p = beam_malloc(b, 48);
    void *last = beam_malloc(b, 16);
    beam_mfree(b, p);
    CHECK(ff.deallocations == 1);
    beam_mfree(b, p);
    CHECK(check_report_count() == 4);
    CHECK(check_report_contains("double free"));
    CHECK(beam__misuse.count == misuse + 4);
    CHECK(ff.deallocations == 1); /* nothing reached the parent */
    /* A query or a realloc of it is a use after free, not a double free
     * (found by a bug hunt: both said "double free"). */
    CHECK(beam_msize(b, p) == 0);
    CHECK(check_report_count() == 5);
    CHECK(check_last_report_has("beam_msize of") &&
          check_last_report_has("ignored: use after free"));
    CHECK(beam_mrealloc(b, p, 64) == NULL);
    CHECK(check_report_count() == 6);
    CHECK(check_last_report_has("beam_mrealloc of") &&
          check_last_report_has("ignored: use after free"));
    CHECK(beam__misuse.count == misuse + 6); /* the query's, the realloc's */
    beam_mfree(b, last);
    /* A misaligned pointer is rejected without being read. */
    beam_mfree(a, (void *)(uintptr_t)0x1008);
    CHECK(check_report_count() == 7);
    /* So is one in the first page: the zero-length sentinel of a sized
     * allocation at alignment 16 (0x10) is one (it read address 0x8). */
    void *zero = beam_alloc_bytes(beam_raw_allocator, 0, 16);
    CHECK(beam_msize(beam_raw_allocator, zero) == 0);
    beam_mfree(beam_raw_allocator, zero);
    CHECK(beam_mrealloc(beam_raw_allocator, zero, 32) == NULL);
    CHECK(check_report_count() == 10);
    CHECK(beam__misuse.count == misuse + 10);
    check_release_reports();
}

TEST(malloc_mixing_over_the_general_purpose_allocator_is_defined) {
    beam_gpa_t g = gpa_with(BEAM_GPA_TRACK_SITES);
    beam_allocator_t a = beam_gpa_allocator(&g);
    check_capture_reports();
    /* A sized block freed malloc-style: the instance knows its size. */
    void *s = beam_alloc_bytes(a, 24, 8);
    CHECK(beam_msize(a, s) == 24);
    beam_mfree(a, s);
    /* A malloc-style block freed sized, as (p, msize, 16). */
    void *m = beam_malloc(a, 50);
    beam_free_bytes(a, m, beam_msize(a, m), 16);
    CHECK(check_report_count() == 0);
    /* With a wrong length: the instance's own misuse report. */
    m = beam_malloc(a, 50);
    beam_free_bytes(a, m, 40, 16);
    CHECK(check_report_contains("wrong length"));
    /* Double and foreign frees, through mfree: reported by the instance. */
    void *d = beam_malloc(a, 10);
    beam_mfree(a, d);
    beam_mfree(a, d);
    CHECK(check_report_contains("double free"));
    static char stranger[32];
    beam_mfree(a, stranger);
    CHECK(check_report_contains("does not own"));
    CHECK(beam_msize(a, stranger) == 0);
    /* A realloc of it: not a block of the instance, a misuse. */
    unsigned long misuse = beam__misuse.count;
    CHECK(beam_mrealloc(a, stranger, 64) == NULL);
    CHECK(beam__misuse.count == misuse + 1);
    check_release_reports();
    CHECK(beam_gpa_usage_of(&g).misuse_count == 3);
    CHECK(!beam_gpa_deinit(&g));
}

/* A pointer beam_mfree cannot free is named by the instance's own report,
 * which has no length to print: none is made up (it printed "length 16,
 * alignment 16" for every block). */
TEST(malloc_misuse_over_the_general_purpose_allocator_gives_no_length) {
    for (unsigned mode = 0; mode < 3; mode++) {
        beam_gpa_t g = gpa_with(mode == 0   ? 0
                                : mode == 1 ? BEAM_GPA_TRACK_SITES
                                            : BEAM_GPA_SAFE);
        beam_allocator_t a = beam_gpa_allocator(&g);
        /* Small, medium (untracked) and large blocks. */
        size_t lens[] = {100, 20000, 200000};
        for (size_t i = 0; i < 3; i++) {
            void *p = beam_malloc(a, lens[i]);
            CHECK(p != NULL);
            beam_mfree(a, p);
            check_capture_reports();
            beam_mfree(a, p);
            CHECK(check_said_once("double free") &&
                  check_last_report_has("(beam_mfree: no length)") &&
                  !check_report_contains("length 16"));
            check_release_reports();
        }
        CHECK(beam_gpa_usage_of(&g).misuse_count == 3);
        CHECK(!beam_gpa_deinit(&g));
    }
}

/* beam_mfree and beam_msize over an untracked instance find a small block
 * by one lookup (gpa_msize.c small_entry): in sub-slabs (an instance's
 * first blocks) and in whole slabs (after a class graduates), the sizes
 * and the live bytes are the class sizes, exact; a pointer inside a block
 * and a second free are still reported, not freed. */
TEST(malloc_over_an_untracked_instance_counts_and_checks_every_free) {
    beam_gpa_t g = gpa_with(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    enum { N = 3000 };
    static void *p[N];
    size_t live = 0;
    for (size_t i = 0; i < N; i++) {
        p[i] = beam_malloc(a, 1 + i * 7919 % 1024);
        CHECK(p[i] != NULL);
        size_t n = beam_msize(a, p[i]);
        CHECK(n == beam_mgood_size(a, 1 + i * 7919 % 1024));
        live += n;
    }
    CHECK(beam_gpa_usage_of(&g).live_bytes == live);
    check_capture_reports();
    beam_mfree(a, (char *)p[5] + 16);
    CHECK(check_report_contains("inside a block"));
    beam_mfree(a, p[7]);
    beam_mfree(a, p[7]);
    CHECK(check_report_contains("double free"));
    check_release_reports();
    for (size_t i = 0; i < N; i++)
        if (i != 7)
            beam_mfree(a, p[i]);
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_bytes == 0 && u.live_blocks == 0 && u.misuse_count == 2);
    CHECK(!beam_gpa_deinit(&g));
}

/* beam_malloc, beam_msize and beam_mfree on an instance over the large
 * allocator go to it directly, not through its vtable: every kind of
 * block (small, medium, large) still counts its class size, msize
 * answers what mgood_size promised, and a size query or free of a block
 * no longer live is reported as before. */
TEST(malloc_on_an_instance_counts_every_kind_of_block_directly) {
    static const size_t sizes[] = {0,    1,     100,   1024,  8192,
                                   8193, 20000, 65536, 65537, 300000};
    enum { N = sizeof sizes / sizeof *sizes };
    beam_gpa_t g = gpa_with(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *p[N];
    size_t live = 0;
    for (size_t i = 0; i < N; i++) {
        p[i] = beam_malloc(a, sizes[i]);
        CHECK(p[i] != NULL && check_aligned(p[i], 16));
        CHECK(beam_msize(a, p[i]) == beam_mgood_size(a, sizes[i]));
        live += beam_msize(a, p[i]);
    }
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_bytes == live && u.live_blocks == N);
    for (size_t i = 0; i < N; i++)
        beam_mfree(a, p[i]);
    u = beam_gpa_usage_of(&g);
    CHECK(u.live_bytes == 0 && u.live_blocks == 0 && u.misuse_count == 0);
    check_capture_reports();
    CHECK(beam_msize(a, p[N - 1]) == 0); /* a large block, given back */
    CHECK(check_said_once("beam_msize of") &&
          check_report_contains("not a live block of this general purpose"));
    beam_mfree(a, p[N - 1]);
    CHECK(check_report_count() == 2);
    check_release_reports();
    /* (The instance counts the free's misuse, a query's is the caller's.) */
    CHECK(beam_gpa_usage_of(&g).misuse_count == 1);
    CHECK(!beam_gpa_deinit(&g));
}

/* The same checks on blocks of whole class slabs, where beam_mfree's one
 * lookup (beam__gpa_mfree's) decides: the blocks above may sit in
 * sub-slabs, which take the careful path (found in review). Classes
 * graduate to whole slabs once their thread freed enough of them. */
static void graduate(beam_allocator_t a) {
    for (size_t n = 1; n <= BEAM_GPA_SMALL_MAX; n += 16)
        for (int i = 0; i < GPA_CLASS_BUSY_FREES + 16; i++)
            beam_mfree(a, beam_malloc(a, n));
}

TEST(mfree_of_whole_slab_blocks_checks_what_the_sized_free_checks) {
    beam_gpa_t g = gpa_with(0), h = gpa_with(0);
    beam_allocator_t a = beam_gpa_allocator(&g), b = beam_gpa_allocator(&h);
    graduate(a);
    graduate(b);
    void *p = beam_malloc(a, 100), *q = beam_malloc(a, 100);
    void *r = beam_malloc(b, 100);
    CHECK(in_whole_slab(p) && in_whole_slab(q) && in_whole_slab(r));
    check_capture_reports();
    beam_mfree(a, (char *)p + 16);
    CHECK(check_said_once("inside a block"));
    beam_mfree(a, r); /* another instance's */
    CHECK(check_report_count() == 2);
    /* Above the map's reach: its masked entry is p's slab. */
    beam_mfree(a, (void *)((uintptr_t)p + ((uintptr_t)1 << 48)));
    CHECK(check_report_count() == 3);
    CHECK(beam_gpa_usage_of(&g).live_blocks == 2);
    CHECK(beam_gpa_usage_of(&h).live_blocks == 1);
    beam_mfree(a, q);
    beam_mfree(a, q);
    CHECK(check_report_count() == 4 && check_report_contains("double free"));
    check_release_reports();
    beam_mfree(a, p);
    beam_mfree(b, r);
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_bytes == 0 && u.live_blocks == 0 && u.misuse_count == 4);
    CHECK(!beam_gpa_deinit(&g));
    CHECK(!beam_gpa_deinit(&h));
}

/* A medium block freed twice, once its slab is back in the pool: a double
 * free, most likely, and counted as one (raise_on_misuse named it a
 * foreign pointer). */
TEST(gpa_medium_double_free_into_an_emptied_slab_says_so) {
    beam_gpa_t g = gpa_with(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *p = beam_alloc_bytes(a, 20000, 16);
    CHECK(p != NULL);
    beam_free_bytes(a, p, 20000, 16);
    check_capture_reports();
    unsigned long outer = check_watch_misuse();
    beam_free_bytes(a, p, 20000, 16);
    CHECK(check_said_once("double free, or a free of a pointer into unused "
                          "memory") &&
          check_last_report_has("(length 20000, alignment 16)"));
    CHECK(strcmp(check_misuse_kind(), BEAM__KIND_DOUBLE_FREE) == 0);
    check_release_reports();
    check_unwatch_misuse(outer);
    CHECK(!beam_gpa_deinit(&g));
}

/* Records the ret_addr each call passes down. */
static uintptr_t last_ret;
static void *ret_alloc(void *ctx, size_t len, size_t alignment, uintptr_t r) {
    (void)ctx;
    last_ret = r;
    return beam_raw_allocator.vtable->alloc(NULL, len, alignment, r);
}
static bool ret_resize(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t r) {
    (void)ctx;
    last_ret = r;
    return beam_raw_allocator.vtable->resize(NULL, mem, len, alignment, new_len,
                                             r);
}
static void *ret_remap(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t r) {
    (void)ctx;
    last_ret = r;
    return beam_raw_allocator.vtable->remap(NULL, mem, len, alignment, new_len,
                                            r);
}
static void ret_free(void *ctx, void *mem, size_t len, size_t alignment,
                     uintptr_t r) {
    (void)ctx;
    last_ret = r;
    beam_raw_allocator.vtable->free(NULL, mem, len, alignment, r);
}
static const beam_allocator_vtable ret_vtable = {ret_alloc, ret_resize,
                                                 ret_remap, ret_free};

TEST(malloc_at_passes_the_callers_address_down) {
    beam_allocator_t a = {NULL, &ret_vtable};
    void *p = beam_malloc_at(a, 10, 0x1234);
    CHECK(p != NULL && last_ret == 0x1234);
    p = beam_mrealloc_at(a, p, 5000, 0x2345);
    CHECK(p != NULL && last_ret == 0x2345);
    beam_mfree_at(a, p, 0x3456);
    CHECK(last_ret == 0x3456);
    p = beam_calloc_at(a, 3, 4, 0x4567);
    CHECK(p != NULL && last_ret == 0x4567);
    beam_mfree(a, p);
    /* Without _at: the caller of beam_malloc, somewhere in this function. */
    p = beam_malloc(a, 10);
    CHECK(last_ret != 0 && last_ret != 0x4567);
    beam_mfree(a, p);
    p = beam_alloc_bytes_at(a, 24, 8, 0x5678);
    CHECK(p != NULL && last_ret == 0x5678);
    p = beam_realloc_bytes_at(a, p, 24, 8, 4000, 0x6789);
    CHECK(p != NULL && last_ret == 0x6789);
    beam_free_bytes_at(a, p, 4000, 8, 0x789a);
    CHECK(last_ret == 0x789a);
    /* A size query's report names the given caller too (SQLite's xSize
     * hook passes its own caller; a site is named by its call instruction,
     * the byte before the return address). */
    static _Alignas(16) char not_a_block[64];
    check_capture_reports();
    CHECK(beam_msize_at(a, not_a_block + 16, 0x89ab) == 0);
    CHECK(check_said_once("beam_msize") &&
          check_last_report_has("called from 0x89aa"));
    check_release_reports();
}

TEST(named_stats_register_list_and_forget) {
    beam_gpa_t g = gpa_with(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    CHECK(!beam_stats_register("raw", a));
    CHECK(!beam_stats_register("Upper", a));
    CHECK(!beam_stats_register("has space", a));
    CHECK(!beam_stats_register("", a));
    beam_arena_t arena;
    beam_arena_init(&arena, beam_raw_allocator);
    CHECK(!beam_stats_register("arena", beam_arena_allocator(&arena)));
    CHECK(beam_stats_register("my_sqlite", a));
    void *p = beam_malloc(a, 100);
    char name[BEAM_STATS_NAME_MAX + 1];
    beam_alloc_stats s;
    size_t backing = 0;
    CHECK(beam_stats_named(0, name, &s, &backing));
    CHECK(strcmp(name, "my_sqlite") == 0);
    CHECK(s.live_blocks == 1 && s.live_bytes == 112 && backing > 0);
    CHECK(!beam_stats_named(1, name, &s, &backing));
    /* Out parameters not wanted: NULL (a memset of NULL before). */
    CHECK(beam_stats_named(0, NULL, NULL, NULL));
    CHECK(beam_allocator_stats(a, NULL));
    CHECK(!beam_allocator_stats(beam_arena_allocator(&arena), NULL));
    CHECK(beam_stats_register("my_sqlite", beam_raw_allocator)); /* replaced */
    CHECK(beam_stats_named(0, name, &s, &backing) && backing == 0);
    CHECK(beam_stats_unregister("my_sqlite"));
    CHECK(!beam_stats_unregister("my_sqlite"));
    CHECK(!beam_stats_named(0, name, &s, &backing));
    beam_mfree(a, p);
    CHECK(!beam_gpa_deinit(&g));
}

/* beam_msize reads no block memory: another thread may be writing the
 * block it asks about (its own live block), and reading the free tag
 * there was a data race (the TSan run, which takes tests named gpa_*,
 * reported it). */
static char *volatile msize_block;
static atomic_int msize_stop;

static void *msize_writer(void *arg) {
    (void)arg;
    for (long i = 0; i < 20000; i++)
        ((volatile long *)msize_block)[1] = i;
    atomic_store(&msize_stop, 1);
    return NULL;
}

TEST(gpa_msize_reads_no_block_memory) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    msize_block = beam_malloc(a, 64);
    CHECK(msize_block != NULL);
    atomic_store(&msize_stop, 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, msize_writer, NULL) == 0);
    size_t wrong = 0;
    while (!atomic_load(&msize_stop))
        wrong += beam_msize(a, msize_block) != 64;
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(wrong == 0);
    beam_mfree(a, msize_block);
    CHECK(!beam_gpa_deinit(&g));
}

/* After beam_gpa_deinit, the malloc-style calls on a block of the
 * instance are reported, as the sized free is, and read nothing: they read
 * the header word before it, in memory deinit had given back (a 1 MiB
 * block's was unmapped: a crash). */
TEST(malloc_calls_after_deinit_are_reported_not_followed) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *small = beam_malloc(a, 100);
    void *big = beam_malloc(a, 1 << 20);
    CHECK(small != NULL && big != NULL);
    CHECK(beam_gpa_deinit(&g)); /* both leak */
    check_capture_reports();
    beam_mfree(a, big);
    CHECK(check_report_count() == 1);
    CHECK(beam_msize(a, big) == 0);
    CHECK(beam_mrealloc(a, small, 200) == NULL);
    beam_mfree(a, small);
    CHECK(check_report_count() == 4);
    CHECK(beam_malloc(a, 10) == NULL);
    check_release_reports();
}

/* The malloc-style calls over a zero-initialised allocator crashed; they
 * fail instead (NULL, 0), and a free or size of a block is reported and
 * ignored, as for any block not of this allocator. */
TEST(malloc_over_a_zero_initialised_allocator_fails) {
    beam_allocator_t z = {0};
    void *p = beam_malloc(beam_raw_allocator, 32);
    CHECK(p != NULL);
    check_capture_reports();
    CHECK(beam_malloc(z, 10) == NULL);
    CHECK(beam_calloc(z, 2, 10) == NULL);
    CHECK(beam_mrealloc(z, NULL, 10) == NULL);
    CHECK(beam_mrealloc(z, p, 64) == NULL);
    beam_mfree(z, NULL);
    CHECK(check_report_count() == 0);
    beam_mfree(z, p);
    CHECK(beam_msize(z, p) == 0);
    CHECK(check_report_count() == 2);
    CHECK(check_last_report_has("zero-initialised"));
    check_release_reports();
    CHECK(beam_msize(beam_raw_allocator, p) >= 32); /* still live */
    beam_mfree(beam_raw_allocator, p);
}

/* The same over the refusing allocator an instance's getter gives for
 * NULL: it read the header before the pointer, and a stray pointer there
 * faulted (bug hunt). No blocks: the calls fail, a free or size is
 * reported and ignored, nothing read. */
TEST(malloc_over_the_refusing_allocator_reads_nothing) {
    check_capture_reports();
    beam_allocator_t r = beam_gpa_allocator(NULL);
    CHECK(check_report_count() == 1); /* the NULL instance */
    /* Unmapped (the first page): reading a header there faults. */
    void *stray = (void *)(uintptr_t)4096;
    CHECK(beam_malloc(r, 10) == NULL);
    CHECK(beam_msize(r, stray) == 0);
    CHECK(check_last_report_has("refuses every call"));
    beam_mfree(r, stray);
    CHECK(beam_mrealloc(r, stray, 64) == NULL);
    CHECK(check_report_count() == 3);
    check_release_reports();
}

/* A fixed buffer's header blocks lie inside it: a pointer that could have
 * no header word there is reported without the word before it being read.
 * A sized block at the buffer's start, with an unmapped page before the
 * buffer, faulted in beam_msize, beam_mfree and beam_mrealloc, directly
 * and through a failing allocator (found in a bug hunt). */
TEST(malloc_over_a_fixed_buffer_reads_no_word_before_it) {
    size_t page = 4096;
    unsigned char *map = mmap(NULL, 3 * page, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED)
        return;
    /* An unmapped page either side of the buffer. */
    CHECK(mprotect(map, page, PROT_NONE) == 0 &&
          mprotect(map + 2 * page, page, PROT_NONE) == 0);
    beam_fixed_buffer_t fb;
    beam_fixed_buffer_init(&fb, map + page, page);
    beam_failing_t f;
    beam_failing_init(&f, beam_fixed_buffer_allocator(&fb), SIZE_MAX);
    beam_allocator_t all[] = {beam_fixed_buffer_allocator(&fb),
                              beam_failing_allocator(&f)};
    check_capture_reports();
    for (size_t i = 0; i < 2; i++) {
        beam_fixed_buffer_reset(&fb);
        void *sized = beam_alloc_bytes(all[i], 32, 16);
        CHECK(sized == map + page);
        CHECK(beam_msize(all[i], sized) == 0);
        CHECK(check_last_report_has("beam_msize of"));
        CHECK(beam_mrealloc(all[i], sized, 64) == NULL);
        CHECK(check_last_report_has("beam_mrealloc of"));
        beam_mfree(all[i], sized);
        CHECK(check_last_report_has("beam_mfree of"));
        /* Past the buffer's end (in the unmapped page): the same. */
        CHECK(beam_msize(all[i], map + 2 * page + 16) == 0);
        CHECK(check_report_count() == 4 * (i + 1));
        /* The buffer's own malloc-style blocks are untouched by it. */
        void *p = beam_malloc(all[i], 100);
        CHECK(p != NULL && beam_msize(all[i], p) >= 100);
        beam_mfree(all[i], p);
    }
    check_release_reports();
    CHECK(f.allocated_bytes == f.freed_bytes + 32);
    munmap(map, 3 * page);
}

/* Pages that start a mapping: one after an unmapped page and one after a
 * PROT_NONE page (a thread stack's guard, say). */
typedef struct foreign_pages {
    unsigned char *map;
    void *after_unmapped, *after_guard;
} foreign_pages;

static bool foreign_pages_make(foreign_pages *f) {
    size_t page = 4096;
    f->map = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (f->map == MAP_FAILED)
        return false;
    f->after_unmapped = f->map + page;
    f->after_guard = f->map + 3 * page;
    return munmap(f->map, page) == 0 &&
           mprotect(f->map + 2 * page, page, PROT_NONE) == 0;
}

/* The three calls on p over a: each reported and ignored, as section 8
 * says (an instance with no state yet says so its own way). */
static bool refused_all(beam_allocator_t a, void *p) {
    size_t before = check_report_count();
    bool ok = beam_msize(a, p) == 0 && check_report_count() == before + 1;
    ok = ok && beam_mrealloc(a, p, 64) == NULL &&
         check_report_count() == before + 2;
    beam_mfree(a, p);
    return ok && check_report_count() == before + 3;
}

/* Over every allocator with headers, the word before a foreign pointer
 * at the start of a mapping lies on the page before it: beam_msize,
 * beam_mfree and beam_mrealloc read it and faulted (SIGSEGV) where
 * section 8 promises a report, over the raw and large allocators, an
 * arena, a failing allocator, an instance over the raw allocator and one
 * of the user's (found in a bug hunt). */
TEST(malloc_calls_read_no_word_before_a_foreign_mapping) {
    foreign_pages f;
    CHECK(foreign_pages_make(&f));
    if (f.map == MAP_FAILED)
        return;
    beam_arena_t arena;
    beam_arena_init(&arena, beam_raw_allocator);
    beam_failing_t failing;
    beam_failing_init(&failing, beam_raw_allocator, SIZE_MAX);
    beam_gpa_t over_raw;
    beam_gpa_init(&over_raw, beam_raw_allocator);
    beam_allocator_t all[] = {beam_raw_allocator,
                              beam_large_allocator,
                              beam_arena_allocator(&arena),
                              beam_failing_allocator(&failing),
                              beam_gpa_allocator(&over_raw),
                              {NULL, &flip_vtable}};
    check_capture_reports();
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        CHECK(refused_all(all[i], f.after_unmapped));
        CHECK(refused_all(all[i], f.after_guard));
        CHECK(exercise(all[i])); /* its own blocks still work */
    }
    check_release_reports();
    /* A block of ours at a page's start: its header is probed, and read. */
    static _Alignas(4096) unsigned char buf[2 * 4096];
    beam_fixed_buffer_t fb;
    beam_fixed_buffer_init(&fb, buf, sizeof buf);
    beam_allocator_t b = beam_fixed_buffer_allocator(&fb);
    CHECK(beam_alloc_bytes(b, 4096 - 16, 16) == buf);
    void *at_page = beam_malloc(b, 100);
    CHECK(at_page == buf + 4096);
    CHECK(beam_msize(b, at_page) == 112);
    at_page = beam_mrealloc(b, at_page, 200);
    CHECK(at_page == buf + 4096 && beam_msize(b, at_page) == 208);
    beam_mfree(b, at_page);
    CHECK(failing.allocated_bytes == failing.freed_bytes);
    beam_gpa_deinit(&over_raw);
    beam_arena_deinit(&arena);
    munmap(f.map + 4096, 3 * 4096);
}

/* Over an allocator that knows its blocks, a header word that passes the
 * check but names a parent block the allocator does not hold is not
 * believed: beam_msize answered its size (here 1 TiB), beam_mrealloc
 * copied up to it, beam_mfree handed the parent what it named (found in
 * a bug hunt). Over a fixed buffer, an arena (both within their handed-out
 * bytes and in a page of nobody's) and an instance over the raw allocator,
 * directly and through a failing allocator. (The forged words are
 * malloc.c's own, beam__hdr_word: what garbage before a foreign pointer
 * is once in 65536.) */
TEST(malloc_calls_believe_no_forged_header) {
    static _Alignas(16) unsigned char buf[4096];
    beam_fixed_buffer_t fb;
    beam_fixed_buffer_init(&fb, buf, sizeof buf);
    beam_arena_t arena;
    beam_arena_init(&arena, beam_raw_allocator);
    beam_gpa_t over_raw;
    beam_gpa_init_ex(&over_raw, beam_raw_allocator, BEAM_GPA_TRACK_SITES);
    beam_failing_t failing;
    beam_failing_init(&failing, beam_arena_allocator(&arena), SIZE_MAX);
    beam_allocator_t all[] = {
        beam_fixed_buffer_allocator(&fb), beam_arena_allocator(&arena),
        beam_gpa_allocator(&over_raw), beam_failing_allocator(&failing)};
    static _Alignas(16) uint64_t nobody[8];
    check_capture_reports();
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        /* A sized block of the allocator, a forged header inside it. */
        uint64_t *sized = beam_alloc_bytes(all[i], 64, 16);
        CHECK(sized != NULL);
        void *p = sized + 2;
        sized[1] = beam__hdr_word(p, (uint64_t)1 << 40, 16);
        CHECK(refused_all(all[i], p));
        /* A live-looking size past the block: refused too. */
        sized[1] = beam__hdr_word(p, 4096, 16);
        CHECK(refused_all(all[i], p));
        beam_free_bytes(all[i], sized, 64, 16);
        nobody[1] = beam__hdr_word(&nobody[2], 32, 16);
        CHECK(refused_all(all[i], &nobody[2]));
        /* Its own blocks still pass. */
        size_t said = check_report_count();
        void *own = beam_malloc(all[i], 100);
        CHECK(own != NULL && beam_msize(all[i], own) >= 100);
        own = beam_mrealloc(all[i], own, 300);
        CHECK(own != NULL && beam_msize(all[i], own) >= 300);
        beam_mfree(all[i], own);
        CHECK(check_report_count() == said);
    }
    check_release_reports();
    CHECK(failing.allocated_bytes == failing.freed_bytes);
    beam_gpa_deinit(&over_raw);
    beam_arena_deinit(&arena);
}

/* The large allocator's own header (blocks above 8-byte alignment) lies
 * before its blocks too: a sized free, resize or realloc at an alignment
 * of 32 or a page of a foreign pointer at the start of a mapping read it
 * off the page before and faulted (a C++ allocator's over-aligned type
 * reaches it through beam_free_bytes_at), where the allocator reports and
 * refuses. */
TEST(large_allocator_reads_no_header_before_a_foreign_mapping) {
    foreign_pages f;
    CHECK(foreign_pages_make(&f));
    if (f.map == MAP_FAILED)
        return;
    beam_allocator_t a = beam_large_allocator;
    void *foreign[] = {f.after_unmapped, f.after_guard};
    size_t aligns[] = {32, 4096};
    check_capture_reports();
    for (size_t i = 0; i < 4; i++) {
        void *p = foreign[i % 2];
        size_t align = aligns[i / 2], said = check_report_count();
        beam_free_bytes(a, p, 64, align);
        CHECK(check_report_count() == said + 1);
        CHECK(!beam_resize_bytes(a, p, 64, align, 128));
        CHECK(beam_realloc_bytes(a, p, 64, align, 128) == NULL);
        CHECK(check_report_count() == said + 3);
    }
    /* Its own blocks that start a page (noted) still pass, moved or not. */
    size_t said = check_report_count();
    for (size_t shift = 12; shift <= 16; shift++) {
        size_t align = (size_t)1 << shift;
        void *own = beam_alloc_bytes(a, 100, align);
        CHECK(own != NULL && check_aligned(own, align));
        /* In place or not, as the backing has room (valgrind's malloc
         * keeps none past a block): never a report. */
        size_t len = beam_resize_bytes(a, own, 100, align, 200) ? 200 : 100;
        CHECK(check_report_count() == said);
        own = beam_realloc_bytes(a, own, len, align, 3 * align);
        CHECK(own != NULL && check_aligned(own, align));
        /* A free refused (a wrong length) leaves it noted and live. */
        beam_free_bytes(a, own, 5 * align, align);
        CHECK(check_report_count() == ++said);
        CHECK(beam__set_holds(BEAM__SET_LARGE_PAGE_STARTS, own));
        beam_free_bytes(a, own, 3 * align, align);
        CHECK(!beam__set_holds(BEAM__SET_LARGE_PAGE_STARTS, own));
    }
    CHECK(check_report_count() == said);
    check_release_reports();
    munmap(f.map + 4096, 3 * 4096);
}
