/* Medium blocks of the general purpose allocator (above BEAM_GPA_SMALL_MAX,
 * up to 64 KiB): runs of 4 KiB pages in shared slabs (src/gpa_medium.c). */
#define _GNU_SOURCE /* nanosleep */
#include "check.h"

#include <beam_alloc.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpa_internal.h"

#define KIB 1024
#define SLAB (64 * KIB)
#define PAGE (4 * KIB)

/* A GPA over a failing allocator that never fails: f counts what reaches
 * the backing. */
typedef struct counted {
    beam_failing_t f;
    beam_gpa_t g;
    beam_allocator_t a;
} counted;

static void counted_init(counted *c, unsigned flags) {
    beam_failing_init(&c->f, beam_large_allocator, SIZE_MAX);
    beam_gpa_init_ex(&c->g, beam_failing_allocator(&c->f), flags);
    c->a = beam_gpa_allocator(&c->g);
}

/* The instance ends with nothing leaked, and every byte it took from the
 * backing went back. */
static bool counted_end_clean(counted *c) {
    return !beam_gpa_deinit(&c->g) && c->f.allocated_bytes == c->f.freed_bytes;
}

static bool same_slab(const void *p, const void *q) {
    return (uintptr_t)p / SLAB == (uintptr_t)q / SLAB;
}

TEST(gpa_medium_blocks_share_one_slab_whatever_their_sizes) {
    counted c;
    counted_init(&c, 0);
    /* 12 + 16 + 20 + 12 KiB: 3 + 4 + 5 + 3 pages, one slab between them
     * (a class per size would have taken four). */
    size_t lens[] = {9 * KIB, 13 * KIB, 17 * KIB, 8 * KIB + 1};
    char *p[4];
    for (int i = 0; i < 4; i++) {
        p[i] = beam_alloc_bytes(c.a, lens[i], 8);
        CHECK(p[i] != NULL && check_aligned(p[i], PAGE));
        memset(p[i], 'a' + i, lens[i]);
    }
    for (int i = 1; i < 4; i++)
        CHECK(same_slab(p[0], p[i]));
    for (int i = 0; i < 4; i++)
        CHECK(p[i][0] == 'a' + i && p[i][lens[i] - 1] == 'a' + i);
    beam_alloc_stats s;
    CHECK(beam_allocator_stats(c.a, &s));
    CHECK(s.live_blocks == 4 &&
          s.live_bytes == lens[0] + lens[1] + lens[2] + lens[3]);
    beam_gpa_usage u = beam_gpa_usage_of(&c.g);
    CHECK(u.live_blocks == 4);
    CHECK(u.live_bytes == (3 + 4 + 5 + 3) * PAGE); /* pages, like classes */
    for (int i = 0; i < 4; i++)
        beam_free_bytes(c.a, p[i], lens[i], 8);
    CHECK(beam_allocator_stats(c.a, &s));
    CHECK(s.live_blocks == 0 && s.live_bytes == 0);
    CHECK(!beam_gpa_detect_leaks(&c.g));
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 0);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_sizes_from_just_above_small_to_a_whole_slab) {
    counted c;
    counted_init(&c, 0);
    for (size_t len = 8 * KIB + 1; len <= SLAB; len += 997) {
        unsigned char *p = beam_alloc_bytes(c.a, len, 16);
        CHECK(p != NULL && check_aligned(p, PAGE));
        memset(p, 0x5a, len);
        unsigned char *q = beam_alloc_bytes(c.a, len, PAGE);
        CHECK(q != NULL && q != p && check_aligned(q, PAGE));
        memset(q, 0xa5, len);
        CHECK(p[len - 1] == 0x5a);
        beam_free_bytes(c.a, p, len, 16);
        beam_free_bytes(c.a, q, len, PAGE);
    }
    /* A whole slab, and alignments pages do not give: the large path. */
    void *w = beam_alloc_bytes(c.a, SLAB, 8);
    void *x = beam_alloc_bytes(c.a, 10 * KIB, 8 * KIB);
    CHECK(w != NULL && x != NULL && check_aligned(x, 8 * KIB));
    beam_free_bytes(c.a, w, SLAB, 8);
    beam_free_bytes(c.a, x, 10 * KIB, 8 * KIB);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 0);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_slab_goes_back_when_its_last_block_does) {
    counted c;
    counted_init(&c, 0);
    /* This thread's heap first: it is metadata from the backing too. */
    void *warm = beam_alloc_bytes(c.a, 16, 8);
    char *p = beam_alloc_bytes(c.a, 20 * KIB, 8);
    CHECK(warm != NULL && p != NULL);
    size_t backing = c.f.allocated_bytes;
    beam_free_bytes(c.a, p, 20 * KIB, 8);
    /* Back in the pool: a small class can take it now, and does, before
     * any new segment is asked for. */
    size_t n = 0;
    void *blocks[64];
    for (; n < 64; n++) {
        blocks[n] = beam_alloc_bytes(c.a, 2 * KIB, 8);
        CHECK(blocks[n] != NULL);
        if (same_slab(blocks[n], p))
            break;
    }
    CHECK(n < 64);
    /* (Metadata perhaps, a segment not: segments are 64 KiB and more.) */
    CHECK(c.f.allocated_bytes - backing < SLAB);
    for (size_t i = 0; i <= n; i++)
        beam_free_bytes(c.a, blocks[i], 2 * KIB, 8);
    beam_free_bytes(c.a, warm, 16, 8);
    beam_gpa_collect(&c.g);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_misuse_is_reported_and_ignored) {
    counted c;
    counted_init(&c, BEAM_GPA_QUIET_LEAKS);
    char *p = beam_alloc_bytes(c.a, 12 * KIB, 8);
    char *q = beam_alloc_bytes(c.a, 12 * KIB, 8);
    CHECK(p != NULL && q != NULL && same_slab(p, q));
    check_capture_reports();
    beam_free_bytes(c.a, p + PAGE, 12 * KIB, 8); /* inside: a page of p */
    bool inside = check_last_report_has("inside a block");
    beam_free_bytes(c.a, p + 16, 12 * KIB, 8); /* inside, not at a page */
    bool unaligned =
        check_last_report_has("inside a block") && check_report_count() == 2;
    beam_free_bytes(c.a, p, 12 * KIB, 8);
    beam_free_bytes(c.a, p, 12 * KIB, 8); /* twice */
    bool twice = check_last_report_has("double free");
    /* 30 KiB is 8 pages, q has 3: reported, and freed anyway. */
    beam_free_bytes(c.a, q, 30 * KIB, 8);
    bool wrong = check_last_report_has("wrong length");
    size_t reports = check_report_count();
    check_release_reports();
    CHECK(inside && unaligned && twice && wrong);
    CHECK(reports == 4);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 4);
    CHECK(beam_gpa_usage_of(&c.g).live_blocks == 0);
    CHECK(counted_end_clean(&c));
}

/* Found in review: the memory of a freed medium block soon belongs to a
 * class slab (and the other way round), at the same address. A second
 * free of the old block must not free the new one. */
TEST(gpa_medium_second_free_after_reuse_by_a_class_frees_nothing) {
    counted c;
    counted_init(&c, BEAM_GPA_QUIET_LEAKS);
    char *p = beam_alloc_bytes(c.a, 10000, 8);
    CHECK(p != NULL);
    beam_free_bytes(c.a, p, 10000, 8); /* its slab goes back to the pool */
    enum { MAX = 200 };
    static char *q[MAX];
    int n = 0, at = -1;
    for (; n < MAX && at < 0; n++) {
        q[n] = beam_alloc_bytes(c.a, 4096, 8);
        CHECK(q[n] != NULL);
        memset(q[n], n & 0x7f, 4096);
        if (q[n] == p)
            at = n;
    }
    CHECK(at >= 0); /* a class slab took the memory */
    size_t live = beam_gpa_usage_of(&c.g).live_blocks;
    check_capture_reports();
    beam_free_bytes(c.a, p, 10000, 8); /* the stale second free */
    bool said = check_last_report_has("double free");
    check_release_reports();
    CHECK(said);
    CHECK(beam_gpa_usage_of(&c.g).live_blocks == live); /* q[at] lives */
    char *r = beam_alloc_bytes(c.a, 4096, 8);
    CHECK(r != NULL && r != p);
    beam_free_bytes(c.a, r, 4096, 8);
    for (int i = 0; i < n; i++) {
        CHECK(q[i][0] == (i & 0x7f) && q[i][4095] == (i & 0x7f));
        beam_free_bytes(c.a, q[i], 4096, 8);
    }
    CHECK(beam_gpa_usage_of(&c.g).live_blocks == 0);
    CHECK(counted_end_clean(&c));
}

/* The other way round: a small block freed, its memory now a medium
 * slab's, and its second free arriving. Which addresses coincide depends
 * on the pool; what matters is the rule, checked directly: a small length
 * on a medium slab frees nothing, and a length no class serves on a class
 * slab neither. */
TEST(gpa_medium_lengths_of_the_other_kind_free_nothing) {
    counted c;
    counted_init(&c, BEAM_GPA_QUIET_LEAKS);
    char *p = beam_alloc_bytes(c.a, 10000, 8);
    char *q = beam_alloc_bytes(c.a, 4096, 8);
    CHECK(p != NULL && q != NULL);
    memset(p, 3, 10000);
    memset(q, 4, 4096);
    check_capture_reports();
    beam_free_bytes(c.a, p, 4096, 8);
    bool small_on_medium = check_last_report_has("double free");
    beam_free_bytes(c.a, q, 10000, 8);
    bool medium_on_small = check_last_report_has("double free");
    size_t reports = check_report_count();
    check_release_reports();
    CHECK(small_on_medium && medium_on_small && reports == 2);
    CHECK(beam_gpa_usage_of(&c.g).live_blocks == 2);
    CHECK(p[0] == 3 && p[9999] == 3 && q[0] == 4 && q[4095] == 4);
    beam_free_bytes(c.a, p, 10000, 8);
    beam_free_bytes(c.a, q, 4096, 8);
    CHECK(beam_gpa_usage_of(&c.g).live_blocks == 0);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 2);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_wrong_length_free_keeps_the_stats_sane) {
    counted c;
    counted_init(&c, BEAM_GPA_QUIET_LEAKS);
    char *p = beam_alloc_bytes(c.a, 9000, 8); /* 3 pages */
    CHECK(p != NULL);
    check_capture_reports();
    beam_free_bytes(c.a, p, 60000, 8); /* 15 pages: reported, freed */
    check_release_reports();
    beam_alloc_stats s;
    CHECK(beam_allocator_stats(c.a, &s));
    /* Counted as the least a 3-page block can have had (8193 bytes): the
     * live bytes stay at or above what is really live (nothing). */
    CHECK(s.live_blocks == 0);
    CHECK(s.live_bytes < 4096);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 1);
    CHECK(!beam_gpa_deinit(&c.g));
}

/* The inline free finds a pointer's map entry by its bits 16-47 (the root
 * index masked): a pointer 2^48 above or below a medium block (the upper
 * half, wrapped) gets that block's entry, a medium slab of this instance.
 * Its way to the medium free is for pointers below the map's end only
 * (gpa_fast.h): without that test such a free reached the medium free
 * with an offset of 2^48 and more, whose debug check failed, and which
 * (shifting by it) called the pointer one inside a block. Each is a
 * foreign pointer, reported as such, none freed, through the helpers and
 * the vtable alike. */
TEST(gpa_medium_pointers_beyond_the_map_alias_no_block) {
    counted c;
    counted_init(&c, 0);
    char *p = beam_alloc_bytes(c.a, 9000, 8);
    char *q = beam_alloc_bytes(c.a, 20 * KIB, 8);
    CHECK(p != NULL && q != NULL && same_slab(p, q));
    const uintptr_t span = (uintptr_t)1 << 48;
    const uintptr_t at_p = (uintptr_t)p, at_q = (uintptr_t)q;
    char *aliases[] = {(char *)(at_p + span), (char *)(at_q + span),
                       (char *)(at_p - span), (char *)(at_q - 3 * span)};
    size_t lens[] = {9000, 20 * KIB, 9000, 20 * KIB};
    check_capture_reports();
    for (size_t i = 0; i < 4; i++) {
        beam_free_bytes(c.a, aliases[i], lens[i], 8);
        c.a.vtable->free(c.a.ctx, aliases[i], lens[i], 8, 0);
    }
    size_t said = check_report_count();
    bool foreign = check_report_contains("does not own") &&
                   !check_report_contains("inside a block") &&
                   !check_report_contains("double free");
    check_release_reports();
    CHECK(said == 8);
    CHECK(foreign);
    CHECK(beam_gpa_usage_of(&c.g).live_blocks == 2);
    beam_free_bytes(c.a, p, 9000, 8);
    beam_free_bytes(c.a, q, 20 * KIB, 8);
    CHECK(beam_gpa_usage_of(&c.g).live_blocks == 0);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_block_of_another_instance_is_not_taken) {
    counted c, d;
    counted_init(&c, BEAM_GPA_QUIET_LEAKS);
    counted_init(&d, 0);
    char *own = beam_alloc_bytes(c.a, 20 * KIB, 8); /* c is set up */
    char *p = beam_alloc_bytes(d.a, 20 * KIB, 8);
    CHECK(own != NULL && p != NULL);
    check_capture_reports();
    beam_free_bytes(c.a, p, 20 * KIB, 8);
    bool said = check_report_contains("another allocator instance");
    check_release_reports();
    CHECK(said);
    CHECK(beam_gpa_usage_of(&d.g).live_blocks == 1);
    beam_free_bytes(d.a, p, 20 * KIB, 8);
    beam_free_bytes(c.a, own, 20 * KIB, 8);
    CHECK(!beam_gpa_deinit(&d.g));
    CHECK(!beam_gpa_deinit(&c.g));
    CHECK(d.f.allocated_bytes == d.f.freed_bytes);
}

TEST(gpa_medium_deinit_and_collect_give_every_byte_back) {
    counted c;
    counted_init(&c, BEAM_GPA_QUIET_LEAKS);
    char *kept[40];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 40; i++) {
            kept[i] = beam_alloc_bytes(c.a, (size_t)(9 + i) * KIB, 8);
            CHECK(kept[i] != NULL);
        }
        for (int i = 0; i < 40; i++)
            beam_free_bytes(c.a, kept[i], (size_t)(9 + i) * KIB, 8);
    }
    /* Everything free: collect gives the segments back. */
    beam_gpa_collect(&c.g);
    CHECK(beam_gpa_usage_of(&c.g).backing_bytes < 256 * KIB);
    /* Live medium blocks at deinit: a leak, and still every byte back. */
    for (int i = 0; i < 10; i++)
        CHECK(beam_alloc_bytes(c.a, 30 * KIB, 8) != NULL);
    CHECK(beam_gpa_deinit(&c.g));
    CHECK(c.f.allocated_bytes == c.f.freed_bytes);
}

TEST(gpa_medium_leaks_are_listed_with_their_pages) {
    counted c;
    counted_init(&c, 0);
    char *p = beam_alloc_bytes(c.a, 10 * KIB, 8);
    CHECK(p != NULL);
    check_capture_reports();
    bool leaked = beam_gpa_detect_leaks(&c.g);
    bool named = check_report_contains("size class 12288");
    check_release_reports();
    CHECK(leaked && named);
    beam_free_bytes(c.a, p, 10 * KIB, 8);
    CHECK(!beam_gpa_detect_leaks(&c.g));
    CHECK(!beam_gpa_deinit(&c.g));
}

TEST(gpa_medium_resize_in_place_into_free_pages_only) {
    counted c;
    counted_init(&c, 0);
    char *p = beam_alloc_bytes(c.a, 9 * KIB, 8); /* pages 0-2 */
    char *q = beam_alloc_bytes(c.a, 9 * KIB, 8); /* pages 3-5 */
    CHECK(p != NULL && q == p + 3 * PAGE);
    memset(p, 7, 9 * KIB);
    /* Within its pages, then not past q. */
    CHECK(beam_resize_bytes(c.a, p, 9 * KIB, 8, 12 * KIB));
    CHECK(!beam_resize_bytes(c.a, p, 12 * KIB, 8, 12 * KIB + 1));
    /* q grows into the free pages after it, shrinks, and p can then not
     * shrink into the small classes (its free would look for a class). */
    CHECK(beam_resize_bytes(c.a, q, 9 * KIB, 8, 40 * KIB));
    CHECK(beam_resize_bytes(c.a, q, 40 * KIB, 8, 9 * KIB));
    CHECK(!beam_resize_bytes(c.a, p, 12 * KIB, 8, 4 * KIB));
    /* Past the slab: no. A wrong old length: no, and a misuse, said. */
    CHECK(!beam_resize_bytes(c.a, q, 9 * KIB, 8, SLAB + 1));
    check_capture_reports();
    bool wrong = !beam_resize_bytes(c.a, q, 30 * KIB, 8, 31 * KIB);
    bool said = check_report_count() == 1 &&
                check_last_report_has("resize with a wrong length");
    check_release_reports();
    CHECK(wrong && said);
    /* realloc moves what cannot grow in place, contents kept. */
    char *r = beam_realloc_bytes(c.a, p, 12 * KIB, 8, 60 * KIB);
    CHECK(r != NULL && r[0] == 7 && r[9 * KIB - 1] == 7);
    beam_alloc_stats s;
    CHECK(beam_allocator_stats(c.a, &s));
    CHECK(s.live_blocks == 2 && s.live_bytes == 60 * KIB + 9 * KIB);
    beam_free_bytes(c.a, r, 60 * KIB, 8);
    beam_free_bytes(c.a, q, 9 * KIB, 8);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 1);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_tracked_instances_keep_exact_records) {
    /* A tracked instance records each block: medium ones take the large
     * path, whose table has the exact length and site. */
    counted c;
    counted_init(&c, BEAM_GPA_TRACK_SITES);
    char *p = beam_alloc_bytes(c.a, 10 * KIB, 8);
    CHECK(p != NULL);
    CHECK(beam_gpa_usage_of(&c.g).live_bytes == 10 * KIB);
    beam_free_bytes(c.a, p, 10 * KIB, 8);
    CHECK(!beam_gpa_deinit(&c.g));
}

/* ---- threads ---------------------------------------------------------------
 * Blocks allocated on one thread and freed on another, and churn on all:
 * the masks are the lock's, so TSan has nothing to say and nothing is lost. */

enum { THREADS = 4, ROUNDS = 3000, KEPT = 32 };

typedef struct medium_arg {
    beam_allocator_t a;
    unsigned seed;
    _Atomic(char *) *handoff; /* blocks given to the next thread */
    _Atomic bool *bad;
} medium_arg;

static size_t medium_len(unsigned *seed) {
    *seed = *seed * 1103515245u + 12345u;
    return 8 * KIB + 1 + (*seed >> 8) % (SLAB - 8 * KIB);
}

static void *medium_worker(void *arg) {
    medium_arg *m = (medium_arg *)arg;
    char *kept[KEPT] = {0};
    size_t len[KEPT] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        int k = i % KEPT;
        if (kept[k] != NULL) {
            if (kept[k][0] != (char)k || kept[k][len[k] - 1] != (char)k)
                atomic_store(m->bad, true);
            beam_free_bytes(m->a, kept[k], len[k], 8);
        }
        len[k] = medium_len(&m->seed);
        kept[k] = beam_alloc_bytes(m->a, len[k], 8);
        if (kept[k] == NULL) {
            atomic_store(m->bad, true);
            break;
        }
        kept[k][0] = kept[k][len[k] - 1] = (char)k;
        /* Now and then a 16 KiB block goes to another thread, which frees
         * the one it finds there. */
        if (i % 7 == 0) {
            char *b = beam_alloc_bytes(m->a, 16 * KIB, 8);
            if (b == NULL) {
                atomic_store(m->bad, true);
                break;
            }
            char *old = atomic_exchange(&m->handoff[i % THREADS], b);
            if (old != NULL)
                beam_free_bytes(m->a, old, 16 * KIB, 8);
        }
    }
    for (int k = 0; k < KEPT; k++)
        if (kept[k] != NULL)
            beam_free_bytes(m->a, kept[k], len[k], 8);
    return NULL;
}

TEST(gpa_medium_blocks_across_threads) {
    /* Over the large allocator, which is thread-safe (the failing one
     * counts without atomics): its stats show that everything went back. */
    beam_alloc_stats before;
    CHECK(beam_allocator_stats(beam_large_allocator, &before));
    struct {
        beam_gpa_t g;
        beam_allocator_t a;
    } c;
    beam_gpa_init(&c.g, beam_large_allocator);
    c.a = beam_gpa_allocator(&c.g);
    _Atomic(char *) handoff[THREADS];
    _Atomic bool bad = false;
    for (int i = 0; i < THREADS; i++)
        atomic_init(&handoff[i], NULL);
    pthread_t t[THREADS];
    medium_arg args[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i] = (medium_arg){c.a, 17u * (unsigned)i + 1, handoff, &bad};
        CHECK(pthread_create(&t[i], NULL, medium_worker, &args[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        char *b = atomic_load(&handoff[i]);
        if (b != NULL)
            beam_free_bytes(c.a, b, 16 * KIB, 8);
    }
    CHECK(!atomic_load(&bad));
    CHECK(!beam_gpa_detect_leaks(&c.g));
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 0);
    beam_alloc_stats s;
    CHECK(beam_allocator_stats(c.a, &s));
    CHECK(s.live_blocks == 0 && s.live_bytes == 0);
    CHECK(!beam_gpa_deinit(&c.g));
    beam_alloc_stats after;
    CHECK(beam_allocator_stats(beam_large_allocator, &after));
    CHECK(after.live_bytes == before.live_bytes);
}

/* Medium lengths go from the helpers (and the vtable) straight to the
 * medium slabs, past the class search, and their frees straight to the
 * medium free: the same blocks, checks and counts by every way in,
 * including a first call that finds no state yet, alignments above what
 * that way serves, and frees that must not take it. */
TEST(gpa_medium_blocks_by_every_way_in) {
    counted c;
    counted_init(&c, 0);
    /* The instance's first call: a medium block, before it has a state. */
    char *first = beam_alloc_bytes(c.a, 20 * KIB, 8);
    CHECK(first != NULL && check_aligned(first, PAGE));
    /* Through the vtable, as the C++ adapter and other allocators call. */
    char *v = c.a.vtable->alloc(c.a.ctx, 9 * KIB, 16, 0);
    CHECK(v != NULL && same_slab(first, v));
    /* An alignment above 16 takes the general path to the same slabs. */
    char *big_al = beam_alloc_bytes(c.a, 10 * KIB, 4096);
    CHECK(big_al != NULL && check_aligned(big_al, 4096) &&
          same_slab(first, big_al));
    beam_alloc_stats s;
    CHECK(beam_allocator_stats(c.a, &s));
    CHECK(s.live_blocks == 3 && s.live_bytes == 39 * KIB);
    /* A free inside a block is reported and frees nothing; one with a
     * length of another page count is reported and frees the block (the
     * medium rule), counted as the least it can have been asked for. */
    beam_free_bytes(c.a, first + PAGE, 16 * KIB, 8);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 1);
    CHECK(beam_allocator_stats(c.a, &s));
    CHECK(s.live_blocks == 3);
    char *w = beam_alloc_bytes(c.a, 12 * KIB, 8);
    CHECK(w != NULL);
    beam_free_bytes(c.a, w, 32 * KIB, 8);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 2);
    CHECK(beam_allocator_stats(c.a, &s));
    /* (12 KiB's 3 pages freed as 8 KiB + 1: the stats keep 4 KiB - 1
     * the caller's wrong length cannot tell apart from live.) */
    CHECK(s.live_blocks == 3 && s.live_bytes == 43 * KIB - 1);
    /* Correct frees, by the vtable and by the helpers at either alignment;
     * then a second free, reported. */
    c.a.vtable->free(c.a.ctx, v, 9 * KIB, 16, 0);
    beam_free_bytes(c.a, big_al, 10 * KIB, 4096);
    beam_free_bytes(c.a, first, 20 * KIB, 8);
    beam_free_bytes(c.a, first, 20 * KIB, 8);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 3);
    CHECK(beam_allocator_stats(c.a, &s));
    CHECK(s.live_blocks == 0 && s.live_bytes == 4 * KIB - 1);
    CHECK(beam_gpa_usage_of(&c.g).live_blocks == 0);
    CHECK(!beam_gpa_detect_leaks(&c.g));
    CHECK(counted_end_clean(&c));
}

/* A free through an instance with no state, of a pointer whose medium
 * slab is being unmapped by its owner: the entry's where is still medium,
 * its owner already gone (entry_unmap clears them in that order, and a
 * free reads them in that order). Reported as a pointer the instance does
 * not own, as before the medium free had its shorter way; it must not
 * reach the medium free with no state (review of 624abae). The race is
 * made by hand: the owner is cleared, then put back. */
TEST(gpa_medium_free_of_an_entry_being_unmapped_by_a_stateless_instance) {
    counted c, none;
    counted_init(&c, 0);
    counted_init(&none, 0); /* never used: no state */
    char *p = beam_alloc_bytes(c.a, 20 * KIB, 8);
    CHECK(p != NULL);
    gpa_slab *e = beam__gpa_map_slot(p);
    CHECK(e != NULL && gpa_where(e) == WHERE_MEDIUM);
    gpa_state *owner = beam__atomic_load_acquire(&e->st);
    beam__atomic_store_release(&e->st, NULL);
    check_capture_reports();
    beam_free_bytes(none.a, p, 20 * KIB, 8);
    bool said = check_report_count() == 1;
    check_release_reports();
    beam__atomic_store_release(&e->st, owner);
    CHECK(said);
    CHECK(beam_gpa_usage_of(&c.g).live_blocks == 1);
    beam_free_bytes(c.a, p, 20 * KIB, 8);
    CHECK(counted_end_clean(&c));
    CHECK(counted_end_clean(&none));
}

/* ---- the cache of freed blocks (gpa_medium.c) --------------------------- */

/* Enough live medium blocks that the cache's share of them holds a block
 * of 12 KiB: 64 x 12 KiB live is 768 KiB, a share of 48 KiB (1/16). */
#define CACHE_LIVE 64

static void cache_fill(counted *c, char **live) {
    for (int i = 0; i < CACHE_LIVE; i++) {
        live[i] = beam_alloc_bytes(c->a, 12 * KIB, 8);
        CHECK(live[i] != NULL);
    }
}

static void cache_drain(counted *c, char **live) {
    for (int i = 0; i < CACHE_LIVE; i++)
        if (live[i] != NULL)
            beam_free_bytes(c->a, live[i], 12 * KIB, 8);
}

/* Free live[k], which the cache keeps (its only block). */
static void cache_one(counted *c, char **live, int k) {
    beam_free_bytes(c->a, live[k], 12 * KIB, 8);
    live[k] = NULL;
    CHECK(beam__gpa_state_of(&c->g)->medium_cache_bytes == 12 * KIB);
}

TEST(gpa_medium_freed_block_is_kept_for_the_next_of_its_pages) {
    counted c;
    counted_init(&c, 0);
    char *live[CACHE_LIVE];
    cache_fill(&c, live);
    gpa_state *st = beam__gpa_state_of(&c.g);
    char *p = live[10];
    cache_one(&c, live, 10);
    /* Another page count does not take it; 3 pages do, at once. */
    char *other = beam_alloc_bytes(c.a, 20 * KIB, 8);
    CHECK(other != NULL && other != p);
    char *q = beam_alloc_bytes(c.a, 9 * KIB, 8);
    CHECK(q == p && st->medium_cache_bytes == 0);
    memset(q, 'q', 9 * KIB);
    beam_gpa_usage u = beam_gpa_usage_of(&c.g);
    CHECK(u.live_blocks == CACHE_LIVE + 1 && u.misuse_count == 0);
    beam_free_bytes(c.a, q, 9 * KIB, 8);
    beam_free_bytes(c.a, other, 20 * KIB, 8);
    cache_drain(&c, live);
    /* Nothing live: nothing cached, every slab back in the pool. */
    CHECK(st->medium_cache_bytes == 0 && st->medium_live == 0);
    CHECK(!beam_gpa_detect_leaks(&c.g));
    CHECK(counted_end_clean(&c));
}

/* A cached block is freed for every check: a second free is a double
 * free that caches nothing twice, and it is no block to realloc, to ask
 * the size of, or to report as a leak. */
TEST(gpa_medium_cached_block_is_freed_for_every_check) {
    counted c;
    counted_init(&c, BEAM_GPA_QUIET_LEAKS);
    char *live[CACHE_LIVE];
    cache_fill(&c, live);
    gpa_state *st = beam__gpa_state_of(&c.g);
    char *p = live[3];
    cache_one(&c, live, 3);
    check_capture_reports();
    beam_free_bytes(c.a, p, 12 * KIB, 8);
    bool twice = check_last_report_has("double free");
    void *moved = beam_realloc_bytes(c.a, p, 12 * KIB, 8, 40 * KIB);
    bool refused = moved == NULL && check_report_count() == 2;
    bool resized = beam_resize_bytes(c.a, p, 12 * KIB, 8, 10 * KIB);
    /* To a length no medium block has, small or past a slab: the same. */
    bool to_small = beam_resize_bytes(c.a, p, 12 * KIB, 8, 100);
    bool to_large = beam_resize_bytes(c.a, p, 12 * KIB, 8, 100 * KIB);
    size_t reports = check_report_count();
    check_release_reports();
    CHECK(twice && refused && !resized && !to_small && !to_large);
    /* The resize of a block that is not live is a misuse like the free
     * and the realloc (a small block's always was; a medium one's went
     * unreported, and a same-length resize of it then passed for live),
     * whatever the new length. */
    CHECK(reports == 5);
    CHECK(st->medium_cache_bytes == 12 * KIB);
    beam_gpa_usage u = beam_gpa_usage_of(&c.g);
    CHECK(u.live_blocks == CACHE_LIVE - 1 && u.misuse_count == 5);
    /* Handed out once, not twice. */
    char *q = beam_alloc_bytes(c.a, 12 * KIB, 8);
    char *r = beam_alloc_bytes(c.a, 12 * KIB, 8);
    CHECK(q == p && r != NULL && r != p);
    beam_free_bytes(c.a, q, 12 * KIB, 8);
    beam_free_bytes(c.a, r, 12 * KIB, 8);
    cache_drain(&c, live);
    CHECK(!beam_gpa_detect_leaks(&c.g));
    CHECK(counted_end_clean(&c));
}

/* What the cache holds stays within twice its share of the live medium
 * bytes after every call, whatever the lengths; it is empty when nothing
 * is live, and beam_gpa_collect empties it. */
TEST(gpa_medium_cache_stays_within_its_share) {
    counted c;
    counted_init(&c, 0);
    enum { N = 300 };
    static char *p[N];
    static size_t len[N];
    unsigned seed = 7;
    gpa_state *st = NULL;
    bool within = true;
    size_t most = 0;
    for (int round = 0; round < 4000; round++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % N);
        if (p[k] != NULL) {
            beam_free_bytes(c.a, p[k], len[k], 8);
            p[k] = NULL;
        } else {
            len[k] = 8 * KIB + 1 + (seed >> 12) % (56 * KIB);
            p[k] = beam_alloc_bytes(c.a, len[k], 8);
            CHECK(p[k] != NULL);
        }
        st = beam__gpa_state_of(&c.g);
        within &= st->medium_cache_bytes <=
                  2 * (st->medium_live / GPA_MEDIUM_CACHE_SHARE);
        if (st->medium_cache_bytes > most)
            most = st->medium_cache_bytes;
    }
    CHECK(within && most > 0);
    /* Falling live bytes: the cache follows them down. */
    for (int k = 0; k < N; k++) {
        if (p[k] == NULL)
            continue;
        beam_free_bytes(c.a, p[k], len[k], 8);
        p[k] = NULL;
        within &= st->medium_cache_bytes <=
                  2 * (st->medium_live / GPA_MEDIUM_CACHE_SHARE);
    }
    CHECK(within);
    CHECK(st->medium_cache_bytes == 0 && st->medium_live == 0);
    /* And beam_gpa_collect empties it. */
    for (int k = 0; k < N; k++) {
        len[k] = 8 * KIB + 1 + (size_t)k * 97 % (56 * KIB);
        p[k] = beam_alloc_bytes(c.a, len[k], 8);
        CHECK(p[k] != NULL);
    }
    for (int k = 0; k < N; k += 2) {
        beam_free_bytes(c.a, p[k], len[k], 8);
        p[k] = NULL;
    }
    CHECK(st->medium_cache_bytes > 0);
    beam_gpa_collect(&c.g);
    CHECK(st->medium_cache_bytes == 0);
    for (int k = 0; k < N; k++)
        if (p[k] != NULL)
            beam_free_bytes(c.a, p[k], len[k], 8);
    CHECK(st->medium_cache_bytes == 0 && st->medium_live == 0);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 0);
    CHECK(counted_end_clean(&c));
}

/* A block shrunk in place lowers the live bytes too: the cache follows. */
TEST(gpa_medium_cache_follows_blocks_shrunk_in_place) {
    counted c;
    counted_init(&c, 0);
    char *big[7];
    for (int i = 0; i < 7; i++) {
        big[i] = beam_alloc_bytes(c.a, 64 * KIB, 8);
        CHECK(big[i] != NULL);
    }
    char *p = beam_alloc_bytes(c.a, 12 * KIB, 8);
    CHECK(p != NULL);
    beam_free_bytes(c.a, p, 12 * KIB, 8);
    gpa_state *st = beam__gpa_state_of(&c.g);
    /* 448 KiB live: its share holds the 12 KiB block. */
    size_t live = 448 * KIB;
    CHECK(12 * KIB <= live / GPA_MEDIUM_CACHE_SHARE);
    CHECK(st->medium_cache_bytes == 12 * KIB);
    /* Each shrink takes 52 KiB off. The block stays while twice the share
     * holds it, and goes back at the first shrink after which it does not
     * (one comes before the last: 84 KiB live in the end). */
    size_t expect = 12 * KIB;
    int kept = 0;
    for (int i = 0; i < 7; i++) {
        CHECK(beam_resize_bytes(c.a, big[i], 64 * KIB, 8, 12 * KIB));
        live -= 52 * KIB;
        if (expect > 2 * (live / GPA_MEDIUM_CACHE_SHARE))
            expect = 0;
        kept += expect != 0;
        CHECK(st->medium_cache_bytes == expect);
    }
    CHECK(kept > 0 && expect == 0);
    for (int i = 0; i < 7; i++)
        beam_free_bytes(c.a, big[i], 12 * KIB, 8);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 0);
    CHECK(counted_end_clean(&c));
}

/* Out of memory, an allocation gives the cached blocks back to their slabs
 * and tries again: a slab whose only block is cached serves it. */
TEST(gpa_medium_allocation_out_of_memory_empties_the_cache_first) {
    counted c;
    counted_init(&c, 0);
    enum { FULL = 40, MORE = 64 };
    char *full[FULL + MORE];
    for (int i = 0; i < FULL; i++) {
        full[i] = beam_alloc_bytes(c.a, 64 * KIB, 8);
        CHECK(full[i] != NULL);
    }
    /* Alone in a slab of its own (the others are full), then cached. */
    char *p = beam_alloc_bytes(c.a, 12 * KIB, 8);
    CHECK(p != NULL);
    for (int i = 0; i < FULL; i++)
        CHECK(!same_slab(p, full[i]));
    beam_free_bytes(c.a, p, 12 * KIB, 8);
    gpa_state *st = beam__gpa_state_of(&c.g);
    CHECK(st->medium_cache_bytes == 12 * KIB);
    /* The backing fails from now on: whole slabs come from the pool until
     * it is empty, then from the cached block's slab, then none. */
    c.f.fail_index = c.f.alloc_index;
    int n = FULL;
    bool reused = false;
    while (n < FULL + MORE) {
        char *q = beam_alloc_bytes(c.a, 64 * KIB, 8);
        if (q == NULL)
            break;
        reused |= same_slab(q, p);
        full[n++] = q;
    }
    CHECK(n < FULL + MORE && reused && st->medium_cache_bytes == 0);
    for (int i = 0; i < n; i++)
        beam_free_bytes(c.a, full[i], 64 * KIB, 8);
    CHECK(beam_gpa_usage_of(&c.g).misuse_count == 0);
    CHECK(counted_end_clean(&c));
}

/* A length too large for any medium block, whatever its low bits, is a
 * wrong length: reported, and the block freed (found in review: the pages
 * of 2^44 + 12 KiB once wrapped to the block's 3). */
TEST(gpa_medium_free_with_an_absurd_length_is_a_wrong_length) {
    counted c;
    counted_init(&c, BEAM_GPA_QUIET_LEAKS);
    char *p = beam_alloc_bytes(c.a, 12 * KIB, 8);
    CHECK(p != NULL);
    check_capture_reports();
    beam_free_bytes(c.a, p, ((size_t)1 << 44) + 12 * KIB, 8);
    bool wrong = check_last_report_has("wrong length");
    check_release_reports();
    CHECK(wrong);
    beam_gpa_usage u = beam_gpa_usage_of(&c.g);
    CHECK(u.misuse_count == 1 && u.live_blocks == 0);
    CHECK(counted_end_clean(&c));
}

/* Blocks that do not come off a slab's free list (medium runs, large
 * blocks) are handed out untagged too: pages that held freed small blocks
 * keep their tags, and a medium block at a page start carried its own in
 * its second word, which a realloc copied into a small block; once the
 * data reached a small block at that address again, its correct free was
 * refused as a double free and the block lost (found by a bug hunt). */
TEST(gpa_medium_and_large_blocks_are_handed_out_untagged) {
    counted c;
    counted_init(&c, 0);
    enum { SMALL = SLAB / 16 };
    static void *small[SMALL];
    size_t handed = 0, tagged = 0;
    for (int round = 0; round < 8; round++) {
        for (size_t i = 0; i < SMALL; i++)
            CHECK((small[i] = beam_alloc_bytes(c.a, 16, 8)) != NULL);
        for (size_t i = 0; i < SMALL; i++)
            beam_free_bytes(c.a, small[i], 16, 8);
        beam_gpa_collect(&c.g);
        const gpa_state *st = beam__gpa_state_of(&c.g);
        for (int k = 0; k < 16; k++) {
            size_t lens[] = {9 * KIB, 60 * KIB, 100 * KIB};
            void **b[3];
            for (int j = 0; j < 3; j++) {
                CHECK((b[j] = beam_alloc_bytes(c.a, lens[j], 8)) != NULL);
                handed++;
                tagged += (uintptr_t)b[j][1] == beam__gpa_tag(st, b[j]);
            }
            for (int j = 0; j < 3; j++)
                beam_free_bytes(c.a, b[j], lens[j], 8);
        }
    }
    CHECK(handed == 8 * 16 * 3 && tagged == 0);
    CHECK(counted_end_clean(&c));
}

/* Slabs whose blocks other threads freed wait, wholly free, on the
 * instance's reclaim stack until a lock holder parks them; none may be
 * left there while the instance takes a segment from its backing. A thread
 * fills RECLAIM_SLABS slabs of 256-byte blocks and leaves, this one frees
 * them all (each slab goes on the reclaim stack at its first eighth, its
 * remaining frees wait in its thread_free), then allocates as many slabs'
 * worth again: medium blocks of a whole slab, or blocks of another small
 * class, with or without RECLAIM_ON_TOP slabs of 128-byte blocks a quarter
 * freed pushed on the stack after (a small refill parks 32 of the stack's
 * slabs: with these on top, it finds no free one). The backing may grow by
 * a segment's rounding (a quarter of what the instance holds: idle
 * segments go back as the stack is parked, and new ones come) and no more.
 * Before, the medium blocks took a segment for every slab, the freed ones
 * still on the stack: 9.1 MiB more, where now 1.2-1.7 (found in review:
 * 2,200 blocks of 32 KiB, 68 MiB). Small blocks did not grow it (their
 * refills park the stack 32 at a time); they are checked alike. */
#define RECLAIM_SLABS 128
#define RECLAIM_BLOCKS (RECLAIM_SLABS * SLAB / 256)
#define RECLAIM_ON_TOP 40
#define RECLAIM_TOP_BLOCKS (RECLAIM_ON_TOP * SLAB / 128)
static void *reclaim_blocks[RECLAIM_BLOCKS];
static void *reclaim_top[RECLAIM_TOP_BLOCKS];

static void *reclaim_fill(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    for (size_t i = 0; i < RECLAIM_BLOCKS; i++)
        reclaim_blocks[i] = beam_alloc_bytes(a, 256, 8);
    for (size_t i = 0; i < RECLAIM_TOP_BLOCKS; i++)
        reclaim_top[i] = beam_alloc_bytes(a, 128, 8);
    return NULL;
}

/* The reclaim stack as above, then RECLAIM_SLABS slabs' worth of blocks of
 * len; the backing grows by no more than a few slabs. */
static void reclaim_check(size_t len, bool on_top) {
    counted c;
    counted_init(&c, 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, reclaim_fill, &c.a) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    for (size_t i = 0; i < RECLAIM_BLOCKS; i++) {
        CHECK(reclaim_blocks[i] != NULL);
        beam_free_bytes(c.a, reclaim_blocks[i], 256, 8);
    }
    for (size_t i = 0; i < RECLAIM_TOP_BLOCKS; i++) {
        CHECK(reclaim_top[i] != NULL);
        if (on_top && i % 4 == 0) {
            beam_free_bytes(c.a, reclaim_top[i], 128, 8);
            reclaim_top[i] = NULL;
        }
    }
    size_t held = c.f.allocated_bytes - c.f.freed_bytes;
    size_t n = RECLAIM_SLABS * (SLAB / len);
    void **blocks = malloc(n * sizeof *blocks);
    CHECK(blocks != NULL);
    for (size_t i = 0; i < n; i++)
        CHECK((blocks[i] = beam_alloc_bytes(c.a, len, 8)) != NULL);
    ptrdiff_t grown = (ptrdiff_t)(c.f.allocated_bytes - c.f.freed_bytes - held);
    CHECK(grown <= (ptrdiff_t)(held / 4 + 2 * SLAB));
    for (size_t i = 0; i < n; i++)
        beam_free_bytes(c.a, blocks[i], len, 8);
    free(blocks);
    for (size_t i = 0; i < RECLAIM_TOP_BLOCKS; i++)
        if (reclaim_top[i] != NULL)
            beam_free_bytes(c.a, reclaim_top[i], 128, 8);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_blocks_take_freed_slabs_before_a_new_segment) {
    reclaim_check(SLAB, false);
    reclaim_check(SLAB, true);
}

TEST(gpa_small_blocks_take_freed_slabs_before_a_new_segment) {
    reclaim_check(1024, false);
    reclaim_check(1024, true);
}

/* Medium blocks' live bytes are published at every call, exactly (under
 * the instance lock: peak.locked_part, beam__count_locked): three blocks
 * of 20 KiB allocated and freed leave a peak of 60 KiB. Published in steps
 * of 64 KiB, as other counters are, the rise was never published and the
 * peak stayed 0. */
TEST(gpa_medium_blocks_reach_the_peak_exactly) {
    counted c;
    counted_init(&c, 0);
    void *p[3];
    for (int i = 0; i < 3; i++)
        CHECK((p[i] = beam_alloc_bytes(c.a, 20 * KIB, 8)) != NULL);
    for (int i = 0; i < 3; i++)
        beam_free_bytes(c.a, p[i], 20 * KIB, 8);
    beam_alloc_stats s;
    CHECK(beam_allocator_stats(c.a, &s));
    CHECK(s.live_bytes == 0 && s.peak_bytes == 3 * 20 * KIB);
    CHECK(counted_end_clean(&c));
}

/* The cache holds up to a sixteenth of the live medium bytes: of 64 blocks
 * of 12 KiB, three freed are all kept (36 KiB within 1/16 of the 732 KiB
 * then live), the fourth is not (48 KiB over 45). With a 24th, under
 * churn of 1-64 KiB, a fifth of the frees missed the cache and a fifth of
 * the allocations searched the slabs: standalone paired churn 1-64 KiB
 * 1.52x mimalloc, 1.29x with a 16th. */
TEST(gpa_medium_cache_holds_a_sixteenth_of_the_live_bytes) {
    counted c;
    counted_init(&c, 0);
    char *live[CACHE_LIVE];
    cache_fill(&c, live);
    const gpa_state *st = beam__gpa_state_of(&c.g);
    for (int i = 0; i < 4; i++) {
        beam_free_bytes(c.a, live[i], 12 * KIB, 8);
        live[i] = NULL;
    }
    CHECK(st->medium_cache_bytes == 3 * 12 * KIB);
    cache_drain(&c, live);
    CHECK(st->medium_cache_bytes == 0);
    CHECK(counted_end_clean(&c));
}

/* The allocation that would grow the instance parks the reclaim stack only
 * until a slab is in the pool, not the whole stack: each wholly free slab
 * parked may give its segment back to the backing (an munmap, with
 * segments of up to 63 slabs), all within the one call. A thread fills
 * RECLAIM_SLABS slabs of 256 B and leaves, this one frees them all (every
 * slab wholly free on the stack), then takes the pool's slabs with medium
 * blocks until it is empty; the next medium block's call gives back no
 * more than a segment's worth. Parking the whole stack, it gave back
 * nearly all of them (a 500 MiB stack: one allocation of 89 ms, most of it
 * munmap; found in review), where the old code kept them all. */
TEST(gpa_medium_block_parks_the_reclaim_stack_only_until_a_slab_is_free) {
    counted c;
    counted_init(&c, 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, reclaim_fill, &c.a) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    for (size_t i = 0; i < RECLAIM_BLOCKS; i++)
        beam_free_bytes(c.a, reclaim_blocks[i], 256, 8);
    const gpa_state *st = beam__gpa_state_of(&c.g);
    void *taken[RECLAIM_SLABS];
    size_t n = 0;
    while (st->pool_count != 0 && n < RECLAIM_SLABS)
        CHECK((taken[n++] = beam_alloc_bytes(c.a, SLAB, 8)) != NULL);
    CHECK(st->pool_count == 0 && n < RECLAIM_SLABS);
    size_t held = c.f.allocated_bytes - c.f.freed_bytes;
    size_t allocated = c.f.allocated_bytes, freed = c.f.freed_bytes;
    void *p = beam_alloc_bytes(c.a, SLAB, 8);
    CHECK(p != NULL);
    CHECK(c.f.allocated_bytes == allocated); /* a freed slab served it */
    CHECK(c.f.freed_bytes - freed <= held / 4 + 2 * SLAB);
    beam_free_bytes(c.a, p, SLAB, 8);
    for (size_t i = 0; i < n; i++)
        beam_free_bytes(c.a, taken[i], SLAB, 8);
    for (size_t i = 0; i < RECLAIM_TOP_BLOCKS; i++)
        beam_free_bytes(c.a, reclaim_top[i], 128, 8);
    CHECK(counted_end_clean(&c));
}

/* ---- what an instance that shrinks and grows again keeps (gpa_slab.c
 * keep_slabs) ----------------------------------------------------------- */

/* The most slabs the instance has held at once, read after every
 * allocation of the rounds below (the test's one thread: no lock needed). */
static size_t thrash_peak_slabs;

static void *thrash_alloc(counted *c, size_t n) {
    void *p = beam_alloc_bytes(c->a, n, 8);
    size_t slabs = beam__gpa_state_of(&c->g)->slabs;
    thrash_peak_slabs = slabs > thrash_peak_slabs ? slabs : thrash_peak_slabs;
    return p;
}

static uint64_t thrash_next(uint64_t *rng) {
    *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return *rng;
}

/* One round of the bench's medium churn (paired.c churn_1k_64k, smaller):
 * live blocks of lo bytes to 64 KiB filled, churned ops times (each free
 * followed by an allocation of another size) and freed whole. What the
 * instance keeps never exceeds what it held at once (keep_slabs: a demand,
 * slabs it had in use, is never more than it held; a new high, what it
 * holds): checked after every round. *held: the bytes it held before the
 * frees. */
#define THRASH_LIVE 300
#define THRASH_OPS 6000
#define MEDIUM_LO (8 * KIB + 1)
static void thrash_round(counted *c, size_t lo, size_t live, size_t ops,
                         uint64_t *rng, size_t *held) {
    static void *p[THRASH_LIVE];
    static size_t n[THRASH_LIVE];
    for (size_t i = 0; i < live; i++) {
        n[i] = lo + (size_t)((thrash_next(rng) >> 33) % (SLAB - lo));
        CHECK((p[i] = thrash_alloc(c, n[i])) != NULL);
    }
    for (size_t i = 0; i < ops; i++) {
        uint64_t r = thrash_next(rng);
        size_t k = (size_t)(r >> 33) % live;
        beam_free_bytes(c->a, p[k], n[k], 8);
        n[k] = lo + (size_t)((r >> 13) % (SLAB - lo));
        CHECK((p[k] = thrash_alloc(c, n[k])) != NULL);
    }
    *held = beam_gpa_usage_of(&c->g).backing_bytes;
    for (size_t i = 0; i < live; i++)
        beam_free_bytes(c->a, p[i], n[i], 8);
    const gpa_state *st = beam__gpa_state_of(&c->g);
    CHECK(st->keep_slabs <= thrash_peak_slabs);
}

/* body, under a keeping window of ten minutes (a slow run, under Valgrind,
 * must not see one end where the test does not end it), the library's
 * restored after, whether body's checks passed or not. */
static void in_long_window(void (*body)(void)) {
    uint32_t window = beam__gpa_keep_window_ms;
    beam__gpa_keep_window_ms = 600000;
    body();
    beam__gpa_keep_window_ms = window;
}

/* A keeping window of 20 ms (in_long_window restores the library's), and
 * more than that passes: the next slab releases end it. */
static void short_window_passes(void) {
    beam__gpa_keep_window_ms = 20;
    nanosleep(&(struct timespec){0, 30 * 1000 * 1000}, NULL);
}

/* Rounds of the medium churn: the churn scatters free pages over the
 * slabs, so it needs more slabs than the fill; the last frees of a round
 * gave those segments back, and the next round's churn took them again
 * from its backing, fresh memory, a page fault a page: some 2,000 faults a
 * repetition of the bench, 15% of the GPA's time there (found counting
 * segments given back and taken during churn_1k_64k). Once the instance
 * has grown again after giving segments back, it keeps what it needed:
 * from the third round on nothing goes back, and what comes from the
 * backing is only a new high; collect still gives everything back. */
static void churn_rounds(void) {
    counted c;
    counted_init(&c, 0);
    thrash_peak_slabs = 0;
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    size_t taken[6] = {0}, given[6] = {0}, peak = 0;
    for (int round = 0; round < 6; round++) {
        size_t before = c.f.allocated_bytes, gone = c.f.freed_bytes;
        size_t held;
        thrash_round(&c, KIB, THRASH_LIVE, THRASH_OPS, &rng, &held);
        peak = held > peak ? held : peak;
        taken[round] = c.f.allocated_bytes - before;
        given[round] = c.f.freed_bytes - gone;
    }
    /* (Before: 5.9 MB given back and taken again each round, of 16.7
     * held.) */
    size_t later = 0;
    for (int round = 2; round < 6; round++) {
        CHECK(given[round] == 0);
        later += taken[round];
    }
    CHECK(later <= peak / 4 + SLAB);
    beam_gpa_collect(&c.g);
    CHECK(beam_gpa_usage_of(&c.g).backing_bytes < 256 * KIB);
    CHECK(beam__gpa_state_of(&c.g)->keep_slabs == 0);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_churn_rounds_take_no_segment_again) {
    in_long_window(churn_rounds);
}

/* Medium churn rounds of eight seeds (medium blocks only: whole slabs, so
 * where the backing puts the segments changes nothing and each seed runs
 * the same every time): once the instance keeps, no round gives a segment
 * back. A growth that came after a give-back kept only the most slabs in
 * use, not what the instance then held, so the next rounds' churn (its
 * in-use high creeping up) gave segments back and took them again: seed 8
 * gave 2.4 MB back in its third round. Found as churn_rounds failing one
 * run in 20 to 40 (its small blocks' sub-slabs sit where the backing put
 * the segments). */
static void keeping_rounds(void) {
    for (uint64_t seed = 1; seed <= 8; seed++) {
        counted c;
        counted_init(&c, 0);
        thrash_peak_slabs = 0;
        uint64_t rng = seed * 0x9E3779B97F4A7C15ULL;
        for (int round = 0; round < 8; round++) {
            const gpa_state *st = beam__gpa_state_of(&c.g);
            bool keeping = st != NULL && st->keep_slabs != 0;
            size_t gone = c.f.freed_bytes, held;
            thrash_round(&c, MEDIUM_LO, THRASH_LIVE, THRASH_OPS, &rng, &held);
            CHECK(!keeping || c.f.freed_bytes == gone);
        }
        CHECK(counted_end_clean(&c));
    }
}

TEST(gpa_medium_churn_rounds_keep_each_new_high) {
    in_long_window(keeping_rounds);
}

/* The same rounds, then a live set a tenth of it: what the big rounds
 * needed stays while the window lasts, and goes back once it has passed
 * (the window the live set shrank in still saw the big rounds, so two
 * windows): the instance keeps what it needed recently, not its peak
 * (a first take, never landed, kept it until a collect, which an instance
 * nobody collects never sees). Medium blocks only: a heap's current slab of
 * each small class, empty or not, holds its segment whatever is kept. A
 * 20 ms window here, not the library's second. */
static void shrink_rounds(void) {
    counted c;
    counted_init(&c, 0);
    thrash_peak_slabs = 0;
    uint64_t rng = 0x2545F4914F6CDD1DULL;
    size_t held;
    thrash_round(&c, MEDIUM_LO, THRASH_LIVE, THRASH_OPS, &rng, &held);
    const gpa_state *st = beam__gpa_state_of(&c.g); /* (made lazily) */
    CHECK(st->keep_slabs == 0);
    size_t unkept = beam_gpa_usage_of(&c.g).backing_bytes;
    for (int round = 1; round < 4; round++)
        thrash_round(&c, MEDIUM_LO, THRASH_LIVE, THRASH_OPS, &rng, &held);
    size_t kept = beam_gpa_usage_of(&c.g).backing_bytes;
    uint32_t keep = st->keep_slabs;
    CHECK(keep > 0 && kept > unkept);
    /* Within the window: kept. */
    size_t gone = c.f.freed_bytes;
    for (int round = 0; round < 3; round++)
        thrash_round(&c, MEDIUM_LO, THRASH_LIVE / 10, THRASH_OPS / 10, &rng,
                     &held);
    CHECK(c.f.freed_bytes == gone && st->keep_slabs == keep);
    /* Past it: given back. */
    for (int round = 0; round < 3; round++) {
        short_window_passes();
        thrash_round(&c, MEDIUM_LO, THRASH_LIVE / 10, THRASH_OPS / 10, &rng,
                     &held);
    }
    CHECK(st->keep_slabs < keep / 4);
    /* Down to what the small rounds need, but for the segment that holds
     * it (a segment goes whole or not at all). */
    CHECK(st->slabs < st->keep_slabs + GPA_MAX_SEGMENT_SLABS);
    CHECK(beam_gpa_usage_of(&c.g).backing_bytes < kept / 4);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_churn_that_shrinks_gives_back_what_it_kept) {
    in_long_window(shrink_rounds);
}

/* An instance that kept 64 MiB and then needs one slab: once what it keeps
 * is lowered (two 20 ms windows), the segments beyond go back a few at a
 * call, as a drain gives them back without keeping (a release's own
 * segment, and the one its slack chunk joins), not all in the call that
 * happens to end the window: that call gave back 64 MiB at once, and 256
 * MiB took 19-70 ms in munmap here, in one free of one block (found in
 * review). Bytes given back a call, not time: the same on any machine. */
static void *bulk_p[1024];

static void keep_shed_rounds(void) {
    counted c;
    counted_init(&c, 0);
    size_t n = sizeof bulk_p / sizeof bulk_p[0];
    for (int round = 0; round < 2; round++) { /* the second keeps */
        for (size_t i = 0; i < n; i++)
            CHECK((bulk_p[i] = beam_alloc_bytes(c.a, SLAB - PAGE, 8)) != NULL);
        for (size_t i = 0; i < n; i++)
            beam_free_bytes(c.a, bulk_p[i], SLAB - PAGE, 8);
    }
    const gpa_state *st = beam__gpa_state_of(&c.g);
    CHECK(st->keep_slabs >= n);
    size_t most = 0;
    for (int window = 0; window < 3; window++) {
        short_window_passes();
        for (int i = 0; i < 100; i++) {
            void *p = beam_alloc_bytes(c.a, SLAB - PAGE, 8);
            CHECK(p != NULL);
            size_t gone = c.f.freed_bytes;
            beam_free_bytes(c.a, p, SLAB - PAGE, 8);
            most =
                c.f.freed_bytes - gone > most ? c.f.freed_bytes - gone : most;
        }
    }
    /* Two segments of GPA_MAX_SEGMENT_SLABS slabs and their slack, and
     * their metadata. */
    CHECK(most <= 2 * (GPA_MAX_SEGMENT_SLABS + 2) * SLAB);
    /* And all of it went, in the end. */
    CHECK(beam_gpa_usage_of(&c.g).backing_bytes < 8 * 1024 * KIB);
    CHECK(counted_end_clean(&c));
}

TEST(gpa_medium_kept_segments_go_back_a_few_at_a_call) {
    in_long_window(keep_shed_rounds);
}
