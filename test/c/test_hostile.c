/*
 * Hostile sizes and alignments against every allocator: lengths near
 * SIZE_MAX and PTRDIFF_MAX, lengths where len + alignment wraps, count *
 * size overflow, huge and non-power-of-two alignments. Every such request
 * fails cleanly (NULL, or false for resize), a failed grow leaves the old
 * block as it was, and afterwards the allocator still serves normal
 * requests and gives everything back.
 *
 * Each test runs over the same subjects: raw, large, a fresh general
 * purpose instance, the process-wide one, an arena over raw, a fixed buffer
 * and a failing allocator over raw (that never injects a failure itself).
 */
#include "check.h"

#include <beam_alloc.h>

#include <stdio.h>
#include <string.h>

enum {
    S_RAW,
    S_LARGE,
    S_GPA,
    S_GPA_GLOBAL,
    S_ARENA,
    S_FIXED,
    S_FAILING,
    S_KINDS
};

static const char *const subject_names[S_KINDS] = {"raw",
                                                   "large",
                                                   "general purpose (fresh)",
                                                   "general purpose (global)",
                                                   "arena",
                                                   "fixed buffer",
                                                   "failing"};

typedef struct subject {
    int kind;
    beam_allocator_t a;
    size_t max_align; /* largest alignment a normal request may use */
    beam_gpa_t gpa;
    beam_gpa_usage global_before;
    beam_arena_t arena;
    beam_fixed_buffer_t fb;
    beam_failing_t failing;
} subject;

static _Alignas(4096) unsigned char fixed_space[256 << 10];

static void subject_open(subject *s, int kind) {
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->max_align = 4096;
    switch (kind) {
    case S_RAW:
        s->a = beam_raw_allocator;
        s->max_align = BEAM_MAX_ALIGN;
        break;
    case S_LARGE:
        s->a = beam_large_allocator;
        break;
    case S_GPA:
        beam_gpa_init(&s->gpa, beam_large_allocator);
        s->a = beam_gpa_allocator(&s->gpa);
        break;
    case S_GPA_GLOBAL:
        s->a = beam_general_purpose_allocator;
        s->global_before =
            beam_gpa_usage_of(&beam_general_purpose_allocator_instance);
        break;
    case S_ARENA:
        beam_arena_init(&s->arena, beam_raw_allocator);
        s->a = beam_arena_allocator(&s->arena);
        break;
    case S_FIXED:
        beam_fixed_buffer_init(&s->fb, fixed_space, sizeof fixed_space);
        s->a = beam_fixed_buffer_allocator(&s->fb);
        break;
    default:
        beam_failing_init(&s->failing, beam_raw_allocator, SIZE_MAX);
        s->a = beam_failing_allocator(&s->failing);
        s->max_align = BEAM_MAX_ALIGN;
        break;
    }
}

/* Everything the subject handed out came back (every test frees all it
 * took before closing). */
static bool subject_close(subject *s) {
    switch (s->kind) {
    case S_GPA: {
        beam_gpa_usage u = beam_gpa_usage_of(&s->gpa);
        bool leaked = beam_gpa_deinit(&s->gpa);
        return u.live_blocks == 0 && u.misuse_count == 0 && !leaked;
    }
    case S_GPA_GLOBAL: {
        beam_gpa_usage u =
            beam_gpa_usage_of(&beam_general_purpose_allocator_instance);
        return u.live_blocks == s->global_before.live_blocks &&
               u.misuse_count == s->global_before.misuse_count;
    }
    case S_ARENA:
        beam_arena_deinit(&s->arena);
        return true;
    case S_FIXED:
        return s->fb.end_index == 0;
    case S_FAILING:
        return s->failing.allocations == s->failing.deallocations &&
               s->failing.allocated_bytes == s->failing.freed_bytes &&
               !s->failing.has_induced_failure;
    default:
        return true;
    }
}

/* Inside a subject's run: report which subject failed, then leave it. */
#define HCHECK(cond)                                                           \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "  [%s]\n", subject_names[s->kind]);               \
            check_fail(__FILE__, __LINE__, #cond);                             \
            return false;                                                      \
        }                                                                      \
    } while (0)

/* Run body over every subject: each gets a fresh one, closed afterwards. */
#define FOR_EVERY_SUBJECT(body)                                                \
    for (int kind = 0; kind < S_KINDS; kind++) {                               \
        subject subj;                                                          \
        subject_open(&subj, kind);                                             \
        bool ran = body(&subj);                                                \
        bool closed = subject_close(&subj);                                    \
        CHECK(ran);                                                            \
        if (!closed)                                                           \
            fprintf(stderr, "  [%s]\n", subject_names[kind]);                  \
        CHECK(closed);                                                         \
    }

/* A test that is check over every subject. */
#define HOSTILE_TEST(name, check)                                              \
    TEST(name) {                                                               \
        FOR_EVERY_SUBJECT(check);                                              \
    }

static void fill(unsigned char *p, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)(seed + i * 7u);
}

static bool intact(const unsigned char *p, size_t len, unsigned seed) {
    for (size_t i = 0; i < len; i++)
        if (p[i] != (unsigned char)(seed + i * 7u))
            return false;
    return true;
}

/* The allocator still serves a normal request: allocate, write, grow,
 * check, free, at every alignment up to what it serves. */
static bool serves_normally(subject *s) {
    for (size_t align = 1; align <= s->max_align; align <<= 1) {
        unsigned char *p = beam_alloc_bytes(s->a, 64, align);
        HCHECK(p != NULL);
        HCHECK(check_aligned(p, align));
        fill(p, 64, 5);
        unsigned char *q = beam_realloc_bytes(s->a, p, 64, align, 300);
        HCHECK(q != NULL);
        HCHECK(check_aligned(q, align));
        HCHECK(intact(q, 64, 5));
        beam_free_bytes(s->a, q, 300, align);
    }
    return true;
}

static const size_t some_aligns[] = {1, 2, 8, 16, 64, 4096, 65536};
#define N_SOME_ALIGNS (sizeof some_aligns / sizeof some_aligns[0])

/* Lengths no allocator can serve, given the alignment. Some are above
 * PTRDIFF_MAX (refused by the helpers), some just under it (they reach the
 * allocators, whose own arithmetic must not wrap). */
static size_t hostile_len(size_t k, size_t align) {
    switch (k) {
    case 0:
        return SIZE_MAX;
    case 1:
        return SIZE_MAX - align + 1;
    case 2:
        return align >= 2 ? SIZE_MAX - align + 2 : SIZE_MAX - 1;
    case 3:
        return (size_t)PTRDIFF_MAX + 1;
    case 4:
        return (size_t)PTRDIFF_MAX;
    case 5:
        return (size_t)PTRDIFF_MAX - align;
    case 6:
        return (size_t)PTRDIFF_MAX - align + 1;
    case 7:
        return (size_t)PTRDIFF_MAX - align + 2;
    case 8:
        return (size_t)PTRDIFF_MAX - 4096;
    case 9:
        return (size_t)1 << 62;
    case 10:
        return SIZE_MAX / 2 + 2;
    default:
        return (size_t)1 << 56;
    }
}
#define N_HOSTILE_LENS 12

/* ---- sizes ---------------------------------------------------------------
 */

static bool near_size_max(subject *s) {
    for (size_t i = 0; i < 64; i++)
        for (size_t k = 0; k < N_SOME_ALIGNS; k++)
            HCHECK(beam_alloc_bytes(s->a, SIZE_MAX - i, some_aligns[k]) ==
                   NULL);
    return serves_normally(s);
}

HOSTILE_TEST(hostile_sizes_near_size_max_fail, near_size_max)

static bool around_ptrdiff_max(subject *s) {
    for (size_t k = 0; k < N_SOME_ALIGNS; k++) {
        size_t align = some_aligns[k];
        HCHECK(beam_alloc_bytes(s->a, (size_t)PTRDIFF_MAX + 1, align) == NULL);
        HCHECK(beam_alloc_bytes(s->a, (size_t)PTRDIFF_MAX + 2, align) == NULL);
        /* These reach the allocator itself. */
        HCHECK(beam_alloc_bytes(s->a, (size_t)PTRDIFF_MAX, align) == NULL);
        HCHECK(beam_alloc_bytes(s->a, (size_t)PTRDIFF_MAX - 1, align) == NULL);
        HCHECK(beam_alloc_bytes(s->a, (size_t)PTRDIFF_MAX - 64, align) == NULL);
        HCHECK(beam_alloc_bytes(s->a, (size_t)PTRDIFF_MAX / 2 + 1, align) ==
               NULL);
    }
    return serves_normally(s);
}

HOSTILE_TEST(hostile_sizes_around_ptrdiff_max_fail, around_ptrdiff_max)

/* len + alignment - 1 wraps to 0 (or to PTRDIFF_MAX + 1): the classic
 * rounding overflow. */
static bool wrap_with_alignment(subject *s) {
    for (unsigned k = 1; k <= 30; k++) {
        size_t align = (size_t)1 << k;
        HCHECK(beam_alloc_bytes(s->a, SIZE_MAX - align + 2, align) == NULL);
        HCHECK(beam_alloc_bytes(s->a, SIZE_MAX - align + 1, align) == NULL);
        HCHECK(beam_alloc_bytes(s->a, (size_t)PTRDIFF_MAX - align + 2, align) ==
               NULL);
        HCHECK(beam_alloc_bytes(s->a, (size_t)PTRDIFF_MAX - align + 1, align) ==
               NULL);
    }
    return serves_normally(s);
}

HOSTILE_TEST(hostile_size_max_minus_alignment_plus_two_fails,
             wrap_with_alignment)

struct page {
    unsigned char bytes[4096];
};

static bool count_times_size(subject *s) {
    HCHECK(beam_alloc(s->a, uint64_t, SIZE_MAX / 4) == NULL);
    HCHECK(beam_alloc(s->a, uint64_t, SIZE_MAX / 8 + 1) == NULL);
    HCHECK(beam_alloc(s->a, uint64_t, SIZE_MAX) == NULL);
    HCHECK(beam_alloc_aligned(s->a, uint64_t, SIZE_MAX / 4, 64) == NULL);
    HCHECK(beam_alloc_aligned(s->a, uint64_t, SIZE_MAX / 4, 8) == NULL);
    HCHECK(beam_alloc_aligned(s->a, uint32_t, SIZE_MAX / 2, 4096) == NULL);
    HCHECK(beam_alloc_array(s->a, SIZE_MAX, SIZE_MAX, 1) == NULL);
    HCHECK(beam_alloc_array(s->a, 2, SIZE_MAX / 2 + 1, 8) == NULL);
    HCHECK(beam_alloc_array(s->a, SIZE_MAX / 3 + 1, 3, 1) == NULL);
    /* No overflow, but above PTRDIFF_MAX. */
    HCHECK(beam_alloc(s->a, uint64_t, SIZE_MAX / 8) == NULL);
    HCHECK(beam_alloc(s->a, struct page, (size_t)PTRDIFF_MAX / 4096 + 1) ==
           NULL);
    /* Just under: reaches the allocator. */
    HCHECK(beam_alloc(s->a, struct page, (size_t)PTRDIFF_MAX / 4096) == NULL);
    /* A bad alignment fails even for a normal count. */
    HCHECK(beam_alloc_aligned(s->a, uint64_t, 4, 3) == NULL);
    HCHECK(beam_alloc_aligned(s->a, uint64_t, 4, 24) == NULL);
    HCHECK(beam_alloc_aligned(s->a, uint64_t, 4, 0) == NULL);

    /* A typed grow that overflows leaves the array as it was. */
    uint64_t *p = beam_alloc(s->a, uint64_t, 4);
    HCHECK(p != NULL);
    for (int i = 0; i < 4; i++)
        p[i] = 0x1111111111111111u * (uint64_t)(i + 1);
    HCHECK(beam_realloc(s->a, p, 4, SIZE_MAX / 4) == NULL);
    HCHECK(beam_realloc(s->a, p, 4, SIZE_MAX / 8) == NULL);
    HCHECK(beam_realloc(s->a, p, 4, SIZE_MAX) == NULL);
    for (int i = 0; i < 4; i++)
        HCHECK(p[i] == 0x1111111111111111u * (uint64_t)(i + 1));
    beam_free(s->a, p, 4);
    return serves_normally(s);
}

HOSTILE_TEST(hostile_count_times_size_overflow_fails, count_times_size)

/* ---- alignments ----------------------------------------------------------
 */

static bool huge_alignments(subject *s) {
    for (unsigned k = 0; k <= 62; k++) {
        size_t align = (size_t)1 << k;
        for (size_t h = 0; h < N_HOSTILE_LENS; h++)
            HCHECK(beam_alloc_bytes(s->a, hostile_len(h, align), align) ==
                   NULL);
        /* Beyond any address space (even with memory overcommitted),
         * whatever the length. */
        if (k >= 52) {
            HCHECK(beam_alloc_bytes(s->a, 1, align) == NULL);
            HCHECK(beam_alloc_bytes(s->a, 4096, align) == NULL);
        }
    }
    return serves_normally(s);
}

HOSTILE_TEST(
    hostile_alignments_up_to_2_pow_30_and_beyond_with_hostile_sizes_fail,
    huge_alignments)

static const size_t bad_aligns[] = {
    0,       3, 5, 6, 12, 24, 48, 100, 257, 4097, 65535, (size_t)PTRDIFF_MAX,
    SIZE_MAX};
#define N_BAD_ALIGNS (sizeof bad_aligns / sizeof bad_aligns[0])

static bool non_power_of_two_alignments(subject *s) {
    static const size_t lens[] = {0, 1, 8, 64, 4096, 100000};
    for (size_t k = 0; k < N_BAD_ALIGNS; k++) {
        size_t align = bad_aligns[k];
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
            HCHECK(beam_alloc_bytes(s->a, lens[i], align) == NULL);
        for (size_t h = 0; h < N_HOSTILE_LENS; h++)
            HCHECK(beam_alloc_bytes(s->a, hostile_len(h, 8), align) == NULL);
        HCHECK(beam_alloc_array(s->a, 4, 8, align) == NULL);
    }
    /* A live block asked about with a bad alignment: refused, unchanged. */
    unsigned char *p = beam_alloc_bytes(s->a, 48, 8);
    HCHECK(p != NULL);
    fill(p, 48, 9);
    for (size_t k = 0; k < N_BAD_ALIGNS; k++) {
        HCHECK(!beam_resize_bytes(s->a, p, 48, bad_aligns[k], 16));
        HCHECK(!beam_resize_bytes(s->a, p, 48, bad_aligns[k], 96));
        HCHECK(beam_remap_bytes(s->a, p, 48, bad_aligns[k], 96) == NULL);
        HCHECK(beam_realloc_bytes(s->a, p, 48, bad_aligns[k], 96) == NULL);
        HCHECK(beam_realloc_bytes(s->a, p, 48, bad_aligns[k], 16) == NULL);
        HCHECK(intact(p, 48, 9));
    }
    beam_free_bytes(s->a, p, 48, 8);
    return serves_normally(s);
}

HOSTILE_TEST(hostile_non_power_of_two_alignments_fail,
             non_power_of_two_alignments)

/* ---- failed grows -----------------------------------------------------------
 */

/* Grow p (len bytes at align, filled with seed) to every hostile length
 * through realloc, remap and resize: each fails and p stays intact. */
static bool grows_fail(subject *s, unsigned char *p, size_t len, size_t align,
                       unsigned seed) {
    for (size_t h = 0; h < N_HOSTILE_LENS; h++) {
        size_t new_len = hostile_len(h, align);
        HCHECK(beam_realloc_bytes(s->a, p, len, align, new_len) == NULL);
        HCHECK(intact(p, len, seed));
        HCHECK(beam_remap_bytes(s->a, p, len, align, new_len) == NULL);
        HCHECK(intact(p, len, seed));
        HCHECK(!beam_resize_bytes(s->a, p, len, align, new_len));
        HCHECK(intact(p, len, seed));
    }
    for (size_t i = 0; i < 64; i++) {
        HCHECK(beam_realloc_bytes(s->a, p, len, align, SIZE_MAX - i) == NULL);
        HCHECK(!beam_resize_bytes(s->a, p, len, align, SIZE_MAX - i));
    }
    HCHECK(beam_realloc_array(s->a, p, len, SIZE_MAX / 2, 4, align) == NULL);
    HCHECK(beam_realloc_array(s->a, p, len, 2, SIZE_MAX / 2 + 1, align) ==
           NULL);
    HCHECK(intact(p, len, seed));
    return true;
}

static bool failed_grow_keeps_block(subject *s) {
    static const size_t lens[] = {104, 20000};
    for (size_t align = 1; align <= s->max_align; align <<= 3) {
        for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
            size_t len = lens[i];
            /* The newest block (arena, fixed buffer: the one that could
             * grow in place), then an older one. */
            unsigned char *p = beam_alloc_bytes(s->a, len, align);
            HCHECK(p != NULL);
            fill(p, len, 3);
            if (!grows_fail(s, p, len, align, 3))
                return false;
            unsigned char *q = beam_alloc_bytes(s->a, 32, 8);
            HCHECK(q != NULL);
            fill(q, 32, 4);
            if (!grows_fail(s, p, len, align, 3))
                return false;
            HCHECK(intact(q, 32, 4));
            /* Still serves, while both are live. */
            unsigned char *r = beam_alloc_bytes(s->a, 200, 8);
            HCHECK(r != NULL);
            fill(r, 200, 6);
            HCHECK(intact(p, len, 3) && intact(q, 32, 4) && intact(r, 200, 6));
            /* And everything is freeable (newest first: a fixed buffer
             * then gets it all back). */
            beam_free_bytes(s->a, r, 200, 8);
            beam_free_bytes(s->a, q, 32, 8);
            beam_free_bytes(s->a, p, len, align);
        }
    }
    return serves_normally(s);
}

HOSTILE_TEST(hostile_failed_grow_leaves_the_block_intact_and_freeable,
             failed_grow_keeps_block)

/* The zero-length sentinel cannot be grown to a hostile length either. */
static bool zero_length_grows(subject *s) {
    void *z = beam_alloc_bytes(s->a, 0, 16);
    HCHECK(z != NULL && check_aligned(z, 16));
    for (size_t h = 0; h < N_HOSTILE_LENS; h++) {
        size_t new_len = hostile_len(h, 16);
        HCHECK(beam_realloc_bytes(s->a, z, 0, 16, new_len) == NULL);
        HCHECK(beam_remap_bytes(s->a, z, 0, 16, new_len) == NULL);
        HCHECK(!beam_resize_bytes(s->a, z, 0, 16, new_len));
    }
    beam_free_bytes(s->a, z, 0, 16);
    return serves_normally(s);
}

HOSTILE_TEST(hostile_zero_length_block_grown_to_hostile_lengths_fails,
             zero_length_grows)

/* A realloc given a wrong old length, far longer than the block (the
 * block not the newest, so a bump allocator cannot take it for its top):
 * refused with a report and nothing copied, over every allocator that can
 * tell (found in an audit of the public calls: an arena copied the wrong
 * length out of its chunk, a segfault). The raw allocator and wrappers
 * over it keep nothing and hand the block to realloc(3), which copies
 * what the block has (README: they catch no wrong length), so at an
 * alignment above theirs each subject that serves it is asked. */
static bool wrong_old_length_realloc(subject *s) {
    if (s->max_align < 16)
        return true;
    unsigned char *p = beam_alloc_bytes(s->a, 96, 16);
    unsigned char *newest = beam_alloc_bytes(s->a, 96, 16);
    HCHECK(p != NULL && newest != NULL);
    fill(p, 96, 3);
    unsigned long outer = check_watch_misuse();
    check_capture_reports();
    void *q = beam_realloc_bytes(s->a, p, 1u << 20, 16, 2u << 20);
    size_t reports = check_report_count();
    unsigned long seen = check_misuse_seen();
    check_release_reports();
    check_unwatch_misuse(outer);
    HCHECK(q == NULL && reports == 1 && seen == 1);
    HCHECK(intact(p, 96, 3));
    beam_free_bytes(s->a, newest, 96, 16);
    beam_free_bytes(s->a, p, 96, 16);
    return serves_normally(s);
}

/* (Not HOSTILE_TEST: the misuse is the point, and subject_close checks
 * that a general purpose instance saw none.) */
TEST(hostile_realloc_with_a_wrong_old_length_is_refused_unread) {
    for (int kind = 0; kind < S_KINDS; kind++) {
        subject subj;
        subject_open(&subj, kind);
        bool ran = wrong_old_length_realloc(&subj);
        if (kind == S_GPA) {
            beam_gpa_usage u = beam_gpa_usage_of(&subj.gpa);
            CHECK(u.live_blocks == 0 && u.misuse_count == 1);
            CHECK(!beam_gpa_deinit(&subj.gpa));
        } else if (kind != S_GPA_GLOBAL) {
            CHECK(subject_close(&subj));
        }
        CHECK(ran);
    }
}
