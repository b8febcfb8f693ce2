/* The fixed buffer allocator. */
#include "check.h"

#include <beam_alloc.h>

#include <string.h>

/* Over-aligned so that padding in the tests below is deterministic. */
static _Alignas(512) unsigned char buf[256];

static beam_allocator_t fresh(beam_fixed_buffer_t *fb) {
    memset(buf, 0, sizeof buf);
    beam_fixed_buffer_init(fb, buf, sizeof buf);
    return beam_fixed_buffer_allocator(fb);
}

TEST(fixed_buffer_bumps_with_alignment_padding) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    unsigned char *p = beam_alloc_bytes(a, 10, 1);
    CHECK(p == buf && fb.end_index == 10);
    unsigned char *q = beam_alloc_bytes(a, 4, 8);
    CHECK(q == buf + 16 && fb.end_index == 20);
    unsigned char *r = beam_alloc_bytes(a, 1, 64);
    CHECK(r == buf + 64 && fb.end_index == 65);
    memset(p, 1, 10);
    memset(q, 2, 4);
    *r = 3;
    CHECK(p[9] == 1 && q[0] == 2 && q[3] == 2 && buf[64] == 3);
}

TEST(fixed_buffer_fails_when_full_and_fits_exactly) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    CHECK(beam_alloc_bytes(a, 257, 1) == NULL);
    CHECK(fb.end_index == 0);
    unsigned char *p = beam_alloc_bytes(a, 200, 1);
    CHECK(p == buf);
    CHECK(beam_alloc_bytes(a, 57, 1) == NULL);
    /* 56 bytes fit, but not after 16-alignment has padded them. */
    CHECK(beam_alloc_bytes(a, 56, 16) == NULL);
    unsigned char *q = beam_alloc_bytes(a, 56, 8);
    CHECK(q == buf + 200 && fb.end_index == 256);
    CHECK(beam_alloc_bytes(a, 1, 1) == NULL);
    CHECK(fb.end_index == 256);
}

TEST(fixed_buffer_huge_sizes_and_alignments_fail_without_overflow) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    CHECK(beam_alloc_bytes(a, 1, 1) == buf);
    CHECK(beam_alloc_bytes(a, 1, 512) == NULL);
    CHECK(beam_alloc_bytes(a, 1, (size_t)1 << 40) == NULL);
    CHECK(beam_alloc_bytes(a, 1, (size_t)1 << (sizeof(size_t) * 8 - 1)) ==
          NULL);
    for (size_t i = 0; i < 16; i++)
        CHECK(beam_alloc_bytes(a, SIZE_MAX - i, 1) == NULL);
    /* Straight at the vtable, past the helpers' PTRDIFF_MAX check. */
    CHECK(a.vtable->alloc(a.ctx, SIZE_MAX, 1, 0) == NULL);
    CHECK(a.vtable->alloc(a.ctx, SIZE_MAX - 3, 4, 0) == NULL);
    CHECK(!a.vtable->resize(a.ctx, buf, 1, 1, SIZE_MAX, 0));
    CHECK(fb.end_index == 1);
    CHECK(beam_alloc_bytes(a, 255, 1) == buf + 1);
}

TEST(fixed_buffer_last_block_grows_shrinks_and_frees) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    unsigned char *first = beam_alloc_bytes(a, 16, 1);
    unsigned char *last = beam_alloc_bytes(a, 16, 1);
    CHECK(first == buf && last == buf + 16);
    CHECK(beam_resize_bytes(a, last, 16, 1, 100));
    CHECK(fb.end_index == 116);
    CHECK(beam_resize_bytes(a, last, 100, 1, 8));
    CHECK(fb.end_index == 24);
    CHECK(!beam_resize_bytes(a, last, 8, 1, 241));
    CHECK(beam_remap_bytes(a, last, 8, 1, 240) == last);
    CHECK(fb.end_index == 256);
    CHECK(beam_remap_bytes(a, last, 240, 1, 241) == NULL);
    /* Not the last: may shrink, gives nothing back, cannot grow. */
    CHECK(!beam_resize_bytes(a, first, 16, 1, 17));
    CHECK(beam_resize_bytes(a, first, 16, 1, 4));
    CHECK(fb.end_index == 256);
    beam_free_bytes(a, first, 4, 1);
    CHECK(fb.end_index == 256);
    beam_free_bytes(a, last, 240, 1);
    CHECK(fb.end_index == 16);
    CHECK(beam_alloc_bytes(a, 8, 1) == buf + 16);
}

TEST(fixed_buffer_free_rolls_back_to_block_start_not_padding) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    CHECK(beam_alloc_bytes(a, 3, 1) == buf);
    unsigned char *p = beam_alloc_bytes(a, 8, 32);
    CHECK(p == buf + 32 && fb.end_index == 40);
    beam_free_bytes(a, p, 8, 32);
    CHECK(fb.end_index == 32);
    CHECK(beam_alloc_bytes(a, 8, 32) == buf + 32);
}

TEST(fixed_buffer_realloc_moves_a_non_last_block) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    uint32_t *p = beam_alloc(a, uint32_t, 4);
    uint32_t *pin = beam_alloc(a, uint32_t, 1);
    CHECK(p != NULL && pin != NULL);
    for (uint32_t i = 0; i < 4; i++)
        p[i] = i * 100;
    uint32_t *q = beam_realloc(a, p, 4, 8);
    CHECK(q != NULL && q != p && check_aligned(q, 4));
    CHECK(q[0] == 0 && q[3] == 300);
    /* The growth of the (now last) block stays in place. */
    CHECK(beam_realloc(a, q, 8, 16) == q);
    CHECK(q[3] == 300);
}

TEST(fixed_buffer_reset_and_empty_buffer) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    CHECK(beam_alloc_bytes(a, 200, 1) != NULL);
    beam_fixed_buffer_reset(&fb);
    CHECK(fb.end_index == 0);
    CHECK(beam_alloc_bytes(a, 256, 1) == buf);

    beam_fixed_buffer_t none;
    beam_fixed_buffer_init(&none, NULL, 0);
    beam_allocator_t n = beam_fixed_buffer_allocator(&none);
    CHECK(beam_alloc_bytes(n, 1, 1) == NULL);
    void *z = beam_alloc_bytes(n, 0, 1);
    CHECK(z != NULL);
    beam_free_bytes(n, z, 0, 1);
    CHECK(none.end_index == 0);
}

/* A length the buffer cannot have is cut and said: past PTRDIFF_MAX, past
 * the end of the address space (a buffer near the top handed out a block
 * that wrapped to address 0, without a word), or bytes with no buffer. */
TEST(fixed_buffer_init_cuts_and_says_impossible_lengths) {
    beam_fixed_buffer_t fb;
    check_capture_reports();
    beam_fixed_buffer_init(&fb, (void *)(UINTPTR_MAX - 63), 4096);
    CHECK(fb.len == 63 && check_said_once("end of memory"));
    beam_allocator_t a = beam_fixed_buffer_allocator(&fb);
    CHECK(beam_alloc_bytes(a, 64, 1) == NULL);
    beam_fixed_buffer_init(&fb, buf, SIZE_MAX);
    CHECK(fb.len == (size_t)PTRDIFF_MAX && check_report_count() == 2);
    beam_fixed_buffer_init(&fb, NULL, 100);
    CHECK(fb.len == 0 && check_report_count() == 3 &&
          check_report_contains("no buffer"));
    beam_fixed_buffer_init(&fb, buf, sizeof buf);
    beam_fixed_buffer_init(&fb, NULL, 0);
    CHECK(check_report_count() == 3);
    check_release_reports();
}

/* Two fixed buffers side by side in one array: a block of the first that
 * ends where the second's used part ends (here: at the second's start,
 * while it is empty, and at its end_index later) is not the second's. Its
 * free and resize through the second change nothing: before, they gave
 * back bytes the second never handed out, end_index wrapped, and the next
 * allocation landed in the first buffer's block. (Each is reported too:
 * see fixed_buffer_refuses_and_reports_foreign_pointers.) */
TEST(fixed_buffer_ignores_a_neighbours_block) {
    static _Alignas(64) unsigned char two[2048];
    beam_fixed_buffer_t fa, fb;
    beam_fixed_buffer_init(&fa, two, 1024);
    beam_fixed_buffer_init(&fb, two + 1024, 1024);
    beam_allocator_t a = beam_fixed_buffer_allocator(&fa);
    beam_allocator_t b = beam_fixed_buffer_allocator(&fb);
    unsigned char *p = beam_alloc_bytes(a, 1024, 1);
    CHECK(p == two);
    memset(p, 'A', 1024);

    /* (Each refused with a report: not b's.) */
    check_capture_reports();
    beam_free_bytes(b, p + 960, 64, 1);
    CHECK(fb.end_index == 0);
    CHECK(!beam_resize_bytes(b, p + 1000, 24, 1, 30));
    CHECK(!beam_resize_bytes(b, p + 1000, 24, 1, 8));
    CHECK(fb.end_index == 0);
    CHECK(check_report_count() == 3);
    unsigned char *q = beam_alloc_bytes(b, 32, 1);
    CHECK(q == two + 1024);
    memset(q, 'B', 32);
    CHECK(p[960] == 'A' && p[1023] == 'A');

    /* A length longer than what b handed out, ending at its end_index. */
    beam_free_bytes(b, q - 8, 40, 1);
    CHECK(fb.end_index == 32 && check_report_count() == 4);
    beam_free_bytes(b, q, 32, 1);
    CHECK(fb.end_index == 0 && check_report_count() == 4);
    check_release_reports();
}

/* A wrong length that makes an older block end where the newest ends (found
 * by a hostile review: the bump rolled back over the newest, live block,
 * and the next allocation overwrote it) is refused with a report. Once the
 * newest is given back, LIFO frees roll back as before. */
static size_t end_index_of(const void *fb) {
    return ((const beam_fixed_buffer_t *)fb)->end_index;
}

TEST(fixed_buffer_wrong_length_never_rolls_back_over_a_live_block) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    check_bump_wrong_length(a, end_index_of, &fb);
}

/* The newest block given back with a shorter length than its own: a
 * wrong length, refused with a report (an audit of the public calls: its
 * free was ignored without a word, the bytes kept until a reset). */
TEST(fixed_buffer_newest_block_with_a_short_length_is_reported) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    check_bump_newest_length(a, end_index_of, &fb, 64);
}

/* And with a longer length: it was reported as a pointer of elsewhere
 * ("not a live block of this fixed buffer"), while the arena said wrong
 * length; a reader looked for a foreign pointer. */
TEST(fixed_buffer_newest_block_with_a_long_length_is_a_wrong_length) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    check_bump_newest_length(a, end_index_of, &fb, 128);
}

/* A pointer outside the bytes the buffer handed out (a stack array,
 * another buffer's block, one freed already past end_index) is not the
 * buffer's: its free, resize, remap or realloc is refused and reported
 * as a misuse, as the general purpose allocator's are (Zig's allocator
 * asserts that it owns the slice). Before, a free was ignored without a
 * word, a shrink answered true, and a realloc copied from the foreign
 * pointer into a new block and "freed" it (a hostile-input review). */
TEST(fixed_buffer_refuses_and_reports_foreign_pointers) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    unsigned char *p = beam_alloc_bytes(a, 64, 8);
    CHECK(p != NULL);
    long stack_block[16];
    unsigned long outer = check_watch_misuse();
    check_capture_reports();

    beam_free_bytes(a, stack_block, sizeof stack_block, 8);
    CHECK(check_said_once("not a live block of this fixed buffer"));
    CHECK(check_misuse_seen() == 1);
    CHECK(strcmp(check_misuse_kind(),
                 "free of a pointer the allocator does not own") == 0);
    CHECK(!beam_resize_bytes(a, stack_block, sizeof stack_block, 8, 8));
    CHECK(beam_remap_bytes(a, stack_block, sizeof stack_block, 8, 8) == NULL);
    CHECK(beam_realloc_bytes(a, stack_block, sizeof stack_block, 8, 256) ==
          NULL);
    CHECK(check_misuse_seen() == 4 && check_report_count() == 4);
    CHECK(fb.end_index == 64);

    /* Freed already: past end_index, no longer the buffer's. */
    beam_free_bytes(a, p, 64, 8);
    CHECK(fb.end_index == 0 && check_report_count() == 4);
    beam_free_bytes(a, p, 64, 8);
    CHECK(check_report_count() == 5 && check_misuse_seen() == 5);
    CHECK(fb.end_index == 0);
    check_release_reports();
    check_unwatch_misuse(outer);
}

/* An older block given with a length that runs past end_index is outside
 * the bytes handed out too, and refused as a foreign pointer is; where it
 * starts is not known (a bump allocator keeps only its newest), so the
 * report names a wrong length among the causes, as the arena's does: it
 * named another allocator's block and one freed already alone, and a
 * reader looked for a pointer of elsewhere. */
TEST(fixed_buffer_older_block_past_the_end_names_a_wrong_length) {
    beam_fixed_buffer_t fb;
    beam_allocator_t a = fresh(&fb);
    unsigned char *x = beam_alloc_bytes(a, 96, 16);
    unsigned char *y = beam_alloc_bytes(a, 96, 16);
    CHECK(x != NULL && y == x + 96);
    unsigned long outer = check_watch_misuse();
    check_capture_reports();
    beam_free_bytes(a, x, 200, 16);
    CHECK(check_said_once("not a live block of this fixed buffer"));
    CHECK(check_report_contains("a wrong length"));
    CHECK(!beam_resize_bytes(a, x, 200, 16, 32));
    CHECK(check_report_count() == 2 && check_last_report_has("a wrong length"));
    CHECK(fb.end_index == 192);
    check_release_reports();
    check_unwatch_misuse(outer);
}
