/* The failing (fault injection) allocator. */
#include "check.h"

#include <beam_alloc.h>

#include <string.h>

TEST(failing_counts_and_fails_from_fail_index_on) {
    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, 3);
    beam_allocator_t a = beam_failing_allocator(&f);
    void *p[3];
    for (size_t i = 0; i < 3; i++) {
        p[i] = beam_alloc_bytes(a, 10 * (i + 1), 8);
        CHECK(p[i] != NULL);
        memset(p[i], (int)i, 10 * (i + 1));
    }
    CHECK(f.alloc_index == 3 && f.allocations == 3);
    CHECK(f.allocated_bytes == 60 && !f.has_induced_failure);
    CHECK(beam_alloc_bytes(a, 1, 1) == NULL);
    CHECK(f.has_induced_failure);
    CHECK(beam_alloc_bytes(a, 1, 1) == NULL);
    CHECK(f.alloc_index == 5 && f.allocations == 3);
    CHECK(f.allocated_bytes == 60);
    /* Frees still pass through after the failing point. */
    for (size_t i = 0; i < 3; i++)
        beam_free_bytes(a, p[i], 10 * (i + 1), 8);
    CHECK(f.deallocations == 3 && f.freed_bytes == 60);
}

TEST(failing_index_zero_fails_the_first_allocation) {
    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, 0);
    beam_allocator_t a = beam_failing_allocator(&f);
    void *z = beam_alloc_bytes(a, 0, 8); /* zero-length: never asked */
    CHECK(z != NULL && !f.has_induced_failure && f.alloc_index == 0);
    CHECK(beam_alloc(a, int, 1) == NULL);
    CHECK(f.has_induced_failure && f.alloc_index == 1);
    CHECK(f.allocations == 0 && f.allocated_bytes == 0);
}

TEST(failing_parent_failure_is_not_an_induced_one) {
    unsigned char buf[16];
    beam_fixed_buffer_t fb;
    beam_fixed_buffer_init(&fb, buf, sizeof buf);
    beam_failing_t f;
    beam_failing_init(&f, beam_fixed_buffer_allocator(&fb), SIZE_MAX);
    beam_allocator_t a = beam_failing_allocator(&f);
    CHECK(beam_alloc_bytes(a, 32, 1) == NULL);
    CHECK(!f.has_induced_failure);
    CHECK(f.alloc_index == 1 && f.allocations == 0 && f.allocated_bytes == 0);
    CHECK(beam_alloc_bytes(a, 16, 1) == buf);
    CHECK(f.allocations == 1 && f.allocated_bytes == 16);
}

TEST(failing_resize_grows_until_the_failing_point) {
    _Alignas(8) unsigned char buf[256];
    beam_fixed_buffer_t fb;
    beam_fixed_buffer_init(&fb, buf, sizeof buf);
    beam_failing_t f;
    beam_failing_init(&f, beam_fixed_buffer_allocator(&fb), 2);
    beam_allocator_t a = beam_failing_allocator(&f);
    unsigned char *p = beam_alloc_bytes(a, 16, 8);
    CHECK(p != NULL);
    /* Before the failing point growth reaches the parent. */
    CHECK(beam_resize_bytes(a, p, 16, 8, 32));
    CHECK(f.allocated_bytes == 32 && fb.end_index == 32);
    CHECK(beam_remap_bytes(a, p, 32, 8, 48) == p);
    CHECK(f.allocated_bytes == 48 && fb.end_index == 48);
    CHECK(beam_resize_bytes(a, p, 48, 8, 40));
    CHECK(f.freed_bytes == 8 && fb.end_index == 40);
    CHECK(!f.has_induced_failure);

    /* Failing point reached (alloc_index == fail_index): growth fails even
     * though the parent could serve it; shrinking still passes. */
    unsigned char *q = beam_alloc_bytes(a, 8, 8);
    CHECK(q == buf + 40 && f.alloc_index == 2);
    memset(q, 0x3c, 8);
    CHECK(!beam_resize_bytes(a, q, 8, 8, 16));
    CHECK(f.has_induced_failure && fb.end_index == 48);
    CHECK(beam_remap_bytes(a, q, 8, 8, 16) == NULL);
    CHECK(fb.end_index == 48 && q[7] == 0x3c);
    CHECK(beam_remap_bytes(a, q, 8, 8, 4) == q);
    CHECK(fb.end_index == 44 && f.freed_bytes == 12);
    CHECK(f.allocated_bytes == 56);
    beam_free_bytes(a, q, 4, 8);
    beam_free_bytes(a, p, 40, 8);
    CHECK(f.deallocations == 2);
    CHECK(f.allocated_bytes == f.freed_bytes);
}

TEST(failing_remap_passes_through_and_counts_bytes) {
    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, SIZE_MAX);
    beam_allocator_t a = beam_failing_allocator(&f);
    unsigned char *p = beam_alloc_bytes(a, 10, 8);
    CHECK(p != NULL);
    memset(p, 0x11, 10);
    unsigned char *q = beam_remap_bytes(a, p, 10, 8, 5000);
    CHECK(q != NULL && q[0] == 0x11 && q[9] == 0x11);
    CHECK(f.allocated_bytes == 5000 && f.allocations == 1);
    q = beam_realloc_bytes(a, q, 5000, 8, 100);
    CHECK(q != NULL && q[9] == 0x11);
    CHECK(f.freed_bytes == 4900);
    beam_free_bytes(a, q, 100, 8);
    CHECK(f.deallocations == 1 && f.freed_bytes == f.allocated_bytes);
}

/* The loop fault injection is for: every fail_index of a workload that
 * cleans up after itself must end with nothing live in the parent. */
TEST(failing_loop_over_every_fail_index_leaks_nothing) {
    for (size_t fail = 0; fail < 12; fail++) {
        beam_failing_t f;
        beam_failing_init(&f, beam_raw_allocator, fail);
        beam_allocator_t a = beam_failing_allocator(&f);
        int *blocks[10] = {0};
        size_t n = 0;
        for (; n < 10; n++) {
            blocks[n] = beam_alloc(a, int, n + 1);
            if (blocks[n] == NULL)
                break;
            blocks[n][n] = (int)n;
        }
        CHECK(n == (fail < 10 ? fail : 10));
        CHECK(f.has_induced_failure == (fail < 10));
        while (n-- > 0) {
            CHECK(blocks[n][n] == (int)n);
            beam_free(a, blocks[n], n + 1);
        }
        CHECK(f.allocations == f.deallocations);
        CHECK(f.allocated_bytes == f.freed_bytes);
    }
}

/* A realloc that must move a block copies len bytes out of it. Over a
 * general purpose allocator the failing allocator's remap reaches the
 * GPA's checks, which refuse a freed block with a report: the realloc then
 * stops there, with nothing read, allocated or freed (it used to copy the
 * freed block, and a freed 2 MiB block is unmapped). */
TEST(failing_realloc_of_a_freed_gpa_block_reads_nothing) {
    static const size_t lens[] = {48, 20000, (size_t)2 << 20};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        beam_gpa_t g;
        beam_gpa_init(&g, beam_large_allocator);
        beam_failing_t f;
        beam_failing_init(&f, beam_gpa_allocator(&g), SIZE_MAX);
        beam_allocator_t a = beam_failing_allocator(&f);
        size_t len = lens[i];
        void *keep = beam_alloc_bytes(a, len, 16); /* the slab stays */
        void *p = beam_alloc_bytes(a, len, 16);
        CHECK(keep != NULL && p != NULL);
        beam_free_bytes(a, p, len, 16);
        check_capture_reports();
        CHECK(beam_realloc_bytes(a, p, len, 16, 3 * len) == NULL);
        CHECK(check_report_count() == 1);
        check_release_reports();
        CHECK(f.allocations == 2 && f.deallocations == 1);
        CHECK(beam_gpa_usage_of(&g).live_blocks == 1);
        beam_free_bytes(a, keep, len, 16);
        CHECK(!beam_gpa_deinit(&g));
    }
}

/* A zeroed failing allocator never initialised fails from allocation 0
 * on (fail_index 0), and a shrink it would pass on finds no parent to
 * crash in. (Over a zero-initialised parent: test_core.c.) */
TEST(failing_zeroed_never_initialised_refuses) {
    static beam_failing_t zeroed;
    static _Alignas(16) char foreign[64];
    beam_allocator_t za = beam_failing_allocator(&zeroed);
    CHECK(beam_alloc_bytes(za, 10, 8) == NULL);
    CHECK(!beam_resize_bytes(za, foreign + 16, 32, 8, 16));
    CHECK(beam_remap_bytes(za, foreign + 16, 32, 8, 16) == NULL);
}
