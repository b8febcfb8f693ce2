/*
 * Fuzz the general purpose allocator. First byte:
 *   bit 0     misuse mode: also free twice, with a wrong length or
 *             alignment, foreign pointers, interior pointers, blocks of
 *             another instance, the zero-length sentinel; each must be
 *             reported exactly once (misuse_count and the report hook) and
 *             never crash; blocks freed with a wrong length or alignment
 *             are freed anyway. Frees the calling helpers refuse (an
 *             impossible length or alignment, count * size overflow) are
 *             reported once and leave the block live.
 *   bit 1     BEAM_GPA_TRACK_SITES (exact lengths: live_bytes is exact)
 *   bits 2-3  backing: large, raw, failing over large (next byte: the
 *             failing index), or the process-wide instance
 *   bit 4     with the process-wide instance: deinit and init it again at
 *             the end
 *   bit 5     BEAM_GPA_SAFE (canaries, fill patterns; implies tracking)
 *   bit 6     beam_gpa_collect before every full check: heaps stripped,
 *             sub-slabs released, segments given back, heaps small again
 * A fresh instance serves each class's first blocks from sub-slabs (pages
 * of mixed chunks: a segment's slack, lent pool slabs) and later ones from
 * whole slabs, so inputs exercise both and the moves between them; on the
 * process-wide instance, used input after input, the classes freed often
 * graduate (whole slabs only) once they have been freed enough.
 * Outside misuse mode nothing may be reported but the requests for an
 * alignment that is not a power of two. beam_gpa_usage_of must agree
 * with the model (live blocks, bytes, misuse) at every check. At the end
 * every block is freed, nothing is live, and deinit reports no leak; over
 * the failing backing, everything the instance took was given back, with
 * the lengths it was taken with.
 */
#include "driver.h"

enum { B_LARGE, B_RAW, B_FAILING, B_GLOBAL };

typedef struct {
    beam_gpa_t own;
    beam_gpa_t *g;
    beam_gpa_t other; /* blocks of another instance, in misuse mode */
    bool other_used;
    beam_failing_t failing;
    int backing;
    bool track;
    bool safe;
    bool collect;    /* mode bit 6 */
    size_t misuse;   /* misuse the instance must have counted */
    size_t reported; /* reports the harness caused on purpose */
    /* Blocks that may have shrunk in place from a medium or large block to
     * a small length: they stay where they were (a large block in the
     * table, freed anyway whatever the length), so a small block's rule
     * for wrong lengths does not apply to them. */
    void *shrunk[64];
    unsigned shrunk_n;
} gpa_user;

static size_t reports;

static void count_report(void *user, const char *line) {
    (void)user;
    (void)line;
    reports++;
}

/* A small block (a class exists for it), else one the backing serves. Safe
 * mode puts a canary byte after each small block. */
static bool is_small(const gpa_user *u, size_t len, size_t align) {
    return len + u->safe <= BEAM_GPA_SMALL_MAX && align <= BEAM_GPA_SMALL_MAX;
}

/* A medium block of an untracked instance: a run of 4 KiB pages in one of
 * its 64 KiB slabs, checked at free by its page count, like a class. */
#define MEDIUM_MAX 65536
#define PAGE 4096
static bool is_medium(const gpa_user *u, size_t len, size_t align) {
    return !u->track && !is_small(u, len, align) && len <= MEDIUM_MAX &&
           align <= PAGE;
}

static int expect_alloc(fz_target *t, size_t len, size_t align, void **where) {
    gpa_user *u = t->user;
    (void)where;
    if (u->backing == B_FAILING)
        return FZ_MAY;
    if (is_small(u, len, align) || is_medium(u, len, align) ||
        u->backing != B_RAW)
        return FZ_MUST_WORK;
    return align <= BEAM_MAX_ALIGN ? FZ_MUST_WORK : FZ_MUST_FAIL;
}

static bool shrunk(const gpa_user *u, const void *p) {
    for (unsigned k = 0; k < u->shrunk_n; k++)
        if (u->shrunk[k] == p)
            return true;
    return false;
}

static int expect_change(fz_target *t, fz_change kind, const fz_block *b,
                         size_t new_len, void **where) {
    void *unused;
    (void)where;
    gpa_user *u = t->user;
    if (!is_small(u, b->len, b->align) && is_small(u, new_len, b->align) &&
        !shrunk(u, b->ptr) &&
        u->shrunk_n < sizeof u->shrunk / sizeof u->shrunk[0])
        u->shrunk[u->shrunk_n++] = b->ptr;
    if (kind != FZ_REALLOC)
        return FZ_MAY;
    /* Whatever an allocation of new_len must do, realloc must too. */
    return expect_alloc(t, new_len, b->align, &unused) == FZ_MUST_WORK
               ? FZ_MUST_WORK
               : FZ_MAY;
}

static void check(fz_target *t, const fz_model *m, bool full) {
    gpa_user *u = t->user;
    FZ_ASSERT(reports == u->reported + fz_bad_align_calls);
    if (!full)
        return;
    if (u->collect)
        beam_gpa_collect(u->g);
    beam_gpa_usage g = beam_gpa_usage_of(u->g);
    FZ_ASSERT(g.live_blocks == fz_live_count(m));
    if (u->track)
        FZ_ASSERT(g.live_bytes == m->live_bytes);
    else
        FZ_ASSERT(g.live_bytes >= m->live_bytes);
    FZ_ASSERT(g.misuse_count == u->misuse);
}

/* ---- misuse ---------------------------------------------------------------
 */

static _Alignas(4096) unsigned char foreign[8192];

static bool pick_live(const fz_model *m, fz_reader *r, size_t *at) {
    if (m->n == 0)
        return false;
    size_t start = fz_u8(r) % m->n;
    for (size_t k = 0; k < m->n; k++) {
        size_t i = (start + k) % m->n;
        if (m->b[i].len != 0) {
            *at = i;
            return true;
        }
    }
    return false;
}

static void misuse(fz_target *t, fz_model *m, fz_reader *r) {
    gpa_user *u = t->user;
    size_t i;
    uint8_t kind = fz_u8(r) % 9;
    switch (kind) {
    case 0: { /* free twice, straight after the first free */
        if (!pick_live(m, r, &i))
            return;
        fz_block b = m->b[i];
        fz_free_at(t, m, i);
        beam_free_bytes(t->a, b.ptr, b.len, b.align);
        break;
    }
    case 1: { /* a wrong length: another class, or any other when exact */
        if (!pick_live(m, r, &i) || shrunk(u, m->b[i].ptr))
            return; /* (a shrunk block's rule depends on where it is) */
        fz_block b = m->b[i];
        fz_verify(&b);
        /* (Medium: four pages more or fewer, still medium.) */
        size_t wrong =
            is_medium(u, b.len, b.align)
                ? (b.len > MEDIUM_MAX / 2 ? b.len - 4 * PAGE : b.len + 4 * PAGE)
            : u->track || !is_small(u, b.len, b.align)
                ? b.len + 1 + fz_u8(r)
                : (size_t)BEAM_GPA_SMALL_MAX + 1 + fz_u8(r);
        beam_free_bytes(t->a, b.ptr, wrong, b.align);
        /* Freed anyway, except a small block of an untracked instance
         * given a length no class serves: that is taken for the second
         * free of a bigger block whose memory the slab now is, and left. */
        if (u->track || !is_small(u, b.len, b.align))
            fz_remove(m, i);
        break;
    }
    case 2: { /* a wrong alignment */
        if (!pick_live(m, r, &i))
            return;
        fz_block b = m->b[i];
        fz_verify(&b);
        size_t wrong = is_medium(u, b.len, b.align)
                           ? (size_t)PAGE << (1 + fz_u8(r) % 3)
                       : u->track || !is_small(u, b.len, b.align)
                           ? b.align << (1 + fz_u8(r) % 3)
                           : (size_t)BEAM_GPA_SMALL_MAX << (1 + fz_u8(r) % 3);
        beam_free_bytes(t->a, b.ptr, b.len, wrong);
        fz_remove(m, i);
        break;
    }
    case 3: { /* memory the allocator never saw */
        size_t off = (size_t)(fz_u8(r) % 64) * 16;
        beam_free_bytes(t->a, foreign + off, (size_t)fz_u8(r) + 1, 16);
        break;
    }
    case 4: { /* a pointer inside a live block; the block stays intact */
        if (!pick_live(m, r, &i) || m->b[i].len < 2)
            return;
        fz_block *b = &m->b[i];
        size_t off = 1 + fz_u16(r) % (b->len - 1);
        beam_free_bytes(t->a, b->ptr + off, b->len - off, 1);
        fz_verify(b);
        break;
    }
    case 5: { /* a block of another instance */
        if (!u->other_used) {
            beam_gpa_init(&u->other, beam_large_allocator);
            u->other_used = true;
        }
        beam_allocator_t o = beam_gpa_allocator(&u->other);
        size_t len =
            fz_u8(r) & 1 ? (size_t)fz_u8(r) + 1 : (size_t)fz_u16(r) % 20000 + 1;
        void *q = beam_alloc_bytes(o, len, 8);
        FZ_ASSERT(q != NULL);
        beam_free_bytes(t->a, q, len, 8);
        beam_free_bytes(o, q, len, 8);
        break;
    }
    case 6: { /* the zero-length sentinel, freed with a length */
        size_t align = (size_t)1 << (fz_u8(r) % 13);
        beam_free_bytes(t->a, (void *)(uintptr_t)(0 - (uintptr_t)align),
                        (size_t)fz_u8(r) + 1, align);
        /* Refused by the helpers (as in case 8): the sentinel is in the
         * upper half, where no block is. */
        u->reported++;
        FZ_ASSERT(reports == u->reported + fz_bad_align_calls);
        FZ_ASSERT(beam_gpa_usage_of(u->g).misuse_count == u->misuse);
        return;
    }
    case 8: { /* refused by the helpers before the instance sees it */
        if (!pick_live(m, r, &i))
            return;
        fz_block *b = &m->b[i];
        uint8_t how = fz_u8(r) % 3;
        if (how == 0)
            beam_free_bytes(t->a, b->ptr, b->len, 3 * b->align);
        else if (how == 1)
            beam_free_bytes(t->a, b->ptr, (size_t)PTRDIFF_MAX + 1 + b->len,
                            b->align);
        else
            beam_free_array(t->a, b->ptr, SIZE_MAX / 2 + 1, 2 + b->len,
                            b->align);
        fz_verify(b); /* still live, untouched */
        u->reported++;
        FZ_ASSERT(reports == u->reported + fz_bad_align_calls);
        FZ_ASSERT(beam_gpa_usage_of(u->g).misuse_count == u->misuse);
        return;
    }
    default: { /* a block of the raw allocator */
        size_t len = (size_t)fz_u16(r) % 20000 + 1;
        void *q = beam_alloc_bytes(beam_raw_allocator, len, 8);
        FZ_ASSERT(q != NULL);
        beam_free_bytes(t->a, q, len, 8);
        beam_free_bytes(beam_raw_allocator, q, len, 8);
        break;
    }
    }
    u->misuse++;
    u->reported++;
    FZ_ASSERT(reports == u->reported + fz_bad_align_calls);
    FZ_ASSERT(beam_gpa_usage_of(u->g).misuse_count == u->misuse);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static gpa_user u;
    fz_reader r = {data, size};
    memset(&u, 0, sizeof u);
    reports = 0;
    fz_bad_align_calls = 0;
    beam_set_report_hook(count_report, NULL);
    uint8_t mode = fz_u8(&r);
    bool misuse_mode = mode & 1;
    u.track = (mode & 0x22) != 0;
    u.safe = (mode & 0x20) != 0;
    u.collect = (mode & 0x40) != 0;
    u.backing = (mode >> 2) & 3;
    if (misuse_mode && (u.backing == B_FAILING || u.backing == B_GLOBAL))
        u.backing = B_LARGE; /* misuse needs an instance that has memory */
    unsigned flags = (mode & 2 ? BEAM_GPA_TRACK_SITES : 0) |
                     (mode & 0x20 ? BEAM_GPA_SAFE : 0);
    switch (u.backing) {
    case B_LARGE:
        beam_gpa_init_ex(&u.own, beam_large_allocator, flags);
        break;
    case B_RAW:
        beam_gpa_init_ex(&u.own, beam_raw_allocator, flags);
        break;
    case B_FAILING: {
        uint8_t k = fz_u8(&r);
        beam_failing_init(&u.failing, beam_large_allocator,
                          k == 255 ? SIZE_MAX : k % 48);
        beam_gpa_init_ex(&u.own, beam_failing_allocator(&u.failing), flags);
        break;
    }
    default:
        u.track = u.safe = false;
        break;
    }
    u.g = u.backing == B_GLOBAL ? &beam_general_purpose_allocator_instance
                                : &u.own;
    fz_target t = {.a = u.backing == B_GLOBAL ? beam_general_purpose_allocator
                                              : beam_gpa_allocator(u.g),
                   .user = &u,
                   .expect_alloc = expect_alloc,
                   .expect_change = expect_change,
                   .check = check};
    if (misuse_mode) {
        /* Reports need an instance with memory: make it exist. */
        void *p = beam_alloc_bytes(t.a, 8, 8);
        FZ_ASSERT(p != NULL);
        beam_free_bytes(t.a, p, 8, 8);
        t.extra = misuse;
    }
    /* The process-wide instance starts each input empty. */
    check(&t, &(fz_model){.n = 0}, true);
    fz_run(&t, &r);

    beam_gpa_usage g = beam_gpa_usage_of(u.g);
    FZ_ASSERT(g.live_blocks == 0);
    FZ_ASSERT(g.misuse_count == u.misuse);
    if (u.backing != B_GLOBAL || (mode & 0x10)) {
        FZ_ASSERT(!beam_gpa_deinit(u.g));
        if (u.backing == B_GLOBAL)
            beam_gpa_init(u.g, beam_large_allocator);
    } else {
        FZ_ASSERT(!beam_gpa_detect_leaks(u.g));
    }
    if (u.backing == B_FAILING) {
        FZ_ASSERT(u.failing.allocations == u.failing.deallocations);
        FZ_ASSERT(u.failing.allocated_bytes == u.failing.freed_bytes);
    }
    if (u.other_used) {
        beam_gpa_usage o = beam_gpa_usage_of(&u.other);
        FZ_ASSERT(o.live_blocks == 0 && o.misuse_count == 0);
        FZ_ASSERT(!beam_gpa_deinit(&u.other));
    }
    FZ_ASSERT(reports == u.reported + fz_bad_align_calls);
    beam_set_report_hook(NULL, NULL);
    return 0;
}
