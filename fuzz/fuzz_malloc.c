/*
 * Fuzz the malloc-style calls (beam_malloc, beam_calloc, beam_mrealloc,
 * beam_mfree, beam_msize, beam_mgood_size) against a model, over every
 * kind of parent: the raw and large allocators (16-byte headers over 8-byte
 * alignment), general purpose instances untracked and in safe mode (no
 * header: sizes from the slab or the large table), one over the raw
 * allocator (headers again), an arena, and failing allocators over raw and
 * over an instance (failed grows must leave the block as it was).
 *
 * Set-up bytes: the parent, then a failing index. Then opcodes:
 *   malloc(size), calloc(count, size), mrealloc(block, new size),
 *   mfree(block), check (every block's bytes and msize).
 * Each block of the model holds the driver's pattern over its requested
 * size; every answer is checked: 16-byte alignment, msize >= size and
 * equal to mgood_size(size), calloc's zeroes, contents kept by mrealloc up
 * to the smaller size, NULL for sizes nothing can serve (and, then, the old
 * block untouched). At the end every block is freed and the parent must
 * hold nothing.
 */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wunused-function" /* driver's fz_run */
#endif
#include "driver.h"

/* flip_vtable: blocks off and on 16-byte boundaries by turns. */
#include "../test/c/flip_allocator.h"

enum {
    P_RAW,
    P_LARGE,
    P_GPA,
    P_GPA_SAFE,
    P_GPA_RAW,
    P_ARENA,
    P_FAIL_RAW,
    P_FAIL_GPA,
    P_FLIP,
    P_KINDS
};

typedef struct {
    int kind;
    beam_allocator_t a;
    beam_gpa_t gpa;
    beam_arena_t arena;
    beam_failing_t failing;
    bool may_fail; /* failing parents: any allocation may be refused */
    beam_alloc_stats raw_before;
} fm_target;

static void fm_setup(fm_target *t, fz_reader *r) {
    memset(t, 0, sizeof *t);
    t->kind = fz_u8(r) % P_KINDS;
    size_t fail_index = fz_u8(r);
    beam_allocator_stats(beam_raw_allocator, &t->raw_before);
    switch (t->kind) {
    case P_RAW:
        t->a = beam_raw_allocator;
        break;
    case P_LARGE:
        t->a = beam_large_allocator;
        break;
    case P_GPA:
    case P_GPA_SAFE:
    case P_FAIL_GPA:
        beam_gpa_init_ex(&t->gpa, beam_large_allocator,
                         t->kind == P_GPA_SAFE ? BEAM_GPA_SAFE : 0);
        t->a = beam_gpa_allocator(&t->gpa);
        break;
    case P_GPA_RAW:
        beam_gpa_init(&t->gpa, beam_raw_allocator);
        t->a = beam_gpa_allocator(&t->gpa);
        break;
    case P_FLIP:
        t->a = (beam_allocator_t){NULL, &flip_vtable};
        break;
    default:
        beam_arena_init(&t->arena, beam_raw_allocator);
        t->a = beam_arena_allocator(&t->arena);
        break;
    }
    if (t->kind == P_FAIL_RAW || t->kind == P_FAIL_GPA) {
        beam_failing_init(&t->failing,
                          t->kind == P_FAIL_RAW ? beam_raw_allocator : t->a,
                          fail_index);
        t->a = beam_failing_allocator(&t->failing);
        t->may_fail = true;
    }
}

static void fm_teardown(fm_target *t) {
    if (t->kind == P_FAIL_RAW || t->kind == P_FAIL_GPA)
        FZ_ASSERT(t->failing.allocated_bytes == t->failing.freed_bytes);
    if (t->kind == P_GPA || t->kind == P_GPA_SAFE || t->kind == P_GPA_RAW ||
        t->kind == P_FAIL_GPA) {
        FZ_ASSERT(beam_gpa_usage_of(&t->gpa).live_blocks == 0);
        FZ_ASSERT(!beam_gpa_deinit(&t->gpa));
    }
    if (t->kind == P_ARENA)
        beam_arena_deinit(&t->arena);
    beam_alloc_stats now;
    beam_allocator_stats(beam_raw_allocator, &now);
    FZ_ASSERT(now.live_blocks == t->raw_before.live_blocks);
}

/* What a new block of n bytes must look like. */
static void fm_check_block(fm_target *t, const void *p, size_t n) {
    FZ_ASSERT(fz_aligned(p, 16));
    size_t usable = beam_msize(t->a, p);
    FZ_ASSERT(usable >= n && usable == beam_mgood_size(t->a, n));
}

static bool fm_sane(size_t n) {
    return n <= FZ_SANE_MAX;
}

/* A request that must fail or may fail: hostile sizes must. */
static void fm_add(fm_target *t, fz_model *m, void *p, size_t n) {
    if (!fm_sane(n)) {
        FZ_ASSERT(p == NULL);
        return;
    }
    if (p == NULL) {
        FZ_ASSERT(t->may_fail);
        return;
    }
    fm_check_block(t, p, n);
    fz_add(m, p, n, 16, 0);
}

static bool fm_room(const fz_model *m, size_t n) {
    return m->n < FZ_MAX_BLOCKS &&
           (!fm_sane(n) || n <= FZ_BUDGET - m->live_bytes);
}

static void fm_malloc(fm_target *t, fz_model *m, fz_reader *r) {
    size_t n = fz_size(r);
    if (fm_room(m, n))
        fm_add(t, m, beam_malloc(t->a, n), n);
}

static void fm_calloc(fm_target *t, fz_model *m, fz_reader *r) {
    size_t count = fz_u8(r) & 7 ? (size_t)fz_u8(r) + 1 : fz_hostile(r);
    size_t size = fz_size(r);
    size_t n;
    if (beam_mul_overflow(count, size, &n)) {
        FZ_ASSERT(beam_calloc(t->a, count, size) == NULL);
        return;
    }
    /* Between the bands the machine, not the contract, would answer. */
    if (!fm_room(m, n) || (n > FZ_SANE_MAX && n < FZ_HUGE_MIN))
        return;
    unsigned char *p = beam_calloc(t->a, count, size);
    if (p != NULL && fm_sane(n))
        for (size_t i = 0; i < n; i++)
            FZ_ASSERT(p[i] == 0);
    fm_add(t, m, p, n);
}

static void fm_mrealloc(fm_target *t, fz_model *m, fz_reader *r) {
    size_t i;
    if (!fz_pick(m, r, &i))
        return;
    fz_block *b = &m->b[i];
    size_t n = fz_new_len(r, b->len);
    if ((fm_sane(n) && n > b->len && n - b->len > FZ_BUDGET - m->live_bytes) ||
        (n > FZ_SANE_MAX && n < FZ_HUGE_MIN))
        return;
    fz_verify(b);
    unsigned char *p = beam_mrealloc(t->a, b->ptr, n);
    if (p == NULL) {
        FZ_ASSERT(t->may_fail || !fm_sane(n));
        fz_verify(b); /* a failed grow leaves the block as it was */
        FZ_ASSERT(beam_msize(t->a, b->ptr) >= b->len);
        return;
    }
    FZ_ASSERT(fm_sane(n));
    fm_check_block(t, p, n);
    b->ptr = p;
    fz_verify_prefix(b, b->len < n ? b->len : n);
    m->live_bytes = m->live_bytes - b->len + n;
    if (n > b->len) {
        size_t old = b->len;
        b->len = n;
        fz_fill(b, old, n);
    }
    b->len = n;
}

static void fm_mfree(fm_target *t, fz_model *m, fz_reader *r) {
    size_t i;
    if (!fz_pick(m, r, &i))
        return;
    fz_verify(&m->b[i]);
    beam_mfree(t->a, m->b[i].ptr);
    fz_remove(m, i);
}

static void fm_check(fm_target *t, fz_model *m) {
    for (size_t i = 0; i < m->n; i++) {
        fz_verify(&m->b[i]);
        FZ_ASSERT(beam_msize(t->a, m->b[i].ptr) >= m->b[i].len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_reader r = {data, size};
    fm_target t;
    fm_setup(&t, &r);
    static fz_model m;
    memset(&m, 0, sizeof m);
    for (int ops = 0; r.n > 0 && ops < FZ_MAX_OPS; ops++) {
        /* Weighted: malloc 3 in 8, realloc 2, calloc, free, check 1 each. */
        static void (*const op[])(fm_target *, fz_model *, fz_reader *) = {
            fm_malloc,   fm_malloc,   fm_malloc, fm_calloc,
            fm_mrealloc, fm_mrealloc, fm_mfree};
        size_t k = fz_u8(&r) % 8;
        if (k < sizeof op / sizeof op[0])
            op[k](&t, &m, &r);
        else
            fm_check(&t, &m);
    }
    while (m.n > 0) {
        fz_verify(&m.b[0]);
        beam_mfree(t.a, m.b[0].ptr);
        fz_remove(&m, 0);
    }
    fm_teardown(&t);
    return 0;
}
