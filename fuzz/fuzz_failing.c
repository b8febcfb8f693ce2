/*
 * Fuzz the failing allocator over raw, large and a general purpose
 * instance (first byte: which; second: the failing index, 255 for never).
 *
 * Before the failing point the parent's contract holds; from it on every
 * allocation and every grow fails while shrinks and frees still go
 * through. The counters are exact: allocations - deallocations is the
 * number of live blocks and allocated_bytes - freed_bytes their length, at
 * every step; has_induced_failure is set once an attempt failed.
 */
#include "driver.h"

enum { P_RAW, P_LARGE, P_GPA, P_KINDS };

typedef struct {
    beam_failing_t f;
    beam_gpa_t gpa;
    int parent;
} failing_user;

static bool failing_now(const failing_user *u) {
    return u->f.alloc_index >= u->f.fail_index;
}

static int parent_alloc(const failing_user *u, size_t align) {
    if (u->parent == P_RAW && align > BEAM_MAX_ALIGN)
        return FZ_MUST_FAIL;
    return FZ_MUST_WORK;
}

static int expect_alloc(fz_target *t, size_t len, size_t align, void **where) {
    failing_user *u = t->user;
    (void)len;
    (void)where;
    if (failing_now(u))
        return FZ_MUST_FAIL;
    return parent_alloc(u, align);
}

static int expect_change(fz_target *t, fz_change kind, const fz_block *b,
                         size_t new_len, void **where) {
    failing_user *u = t->user;
    bool grow = new_len > b->len;
    (void)where;
    if (grow && failing_now(u))
        return FZ_MUST_FAIL;
    if (u->parent == P_GPA)
        return kind == FZ_REALLOC && !failing_now(u) ? FZ_MUST_WORK : FZ_MAY;
    if (kind == FZ_RESIZE) {
        if (!grow)
            return FZ_MUST_WORK;
        return u->parent == P_RAW || b->align <= BEAM_MAX_ALIGN ? FZ_MUST_FAIL
                                                                : FZ_MAY;
    }
    return FZ_MUST_WORK; /* raw and large remap always can */
}

static void check(fz_target *t, const fz_model *m, bool full) {
    failing_user *u = t->user;
    (void)full;
    FZ_ASSERT(u->f.allocations - u->f.deallocations == fz_live_count(m));
    FZ_ASSERT(u->f.allocated_bytes - u->f.freed_bytes == m->live_bytes);
    if (u->f.alloc_index > u->f.fail_index)
        FZ_ASSERT(u->f.has_induced_failure);
    if (u->f.has_induced_failure)
        FZ_ASSERT(u->f.alloc_index >= u->f.fail_index);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static failing_user u;
    fz_reader r = {data, size};
    memset(&u, 0, sizeof u);
    u.parent = fz_u8(&r) % P_KINDS;
    uint8_t k = fz_u8(&r);
    beam_allocator_t parent;
    switch (u.parent) {
    case P_RAW:
        parent = beam_raw_allocator;
        break;
    case P_LARGE:
        parent = beam_large_allocator;
        break;
    default:
        beam_gpa_init(&u.gpa, beam_large_allocator);
        parent = beam_gpa_allocator(&u.gpa);
        break;
    }
    beam_failing_init(&u.f, parent, k == 255 ? SIZE_MAX : k % 64);
    fz_target t = {.a = beam_failing_allocator(&u.f),
                   .user = &u,
                   .expect_alloc = expect_alloc,
                   .expect_change = expect_change,
                   .check = check};
    fz_run(&t, &r);
    FZ_ASSERT(u.f.allocations == u.f.deallocations);
    FZ_ASSERT(u.f.allocated_bytes == u.f.freed_bytes);
    if (u.parent == P_GPA) {
        FZ_ASSERT(beam_gpa_usage_of(&u.gpa).misuse_count == 0);
        FZ_ASSERT(!beam_gpa_deinit(&u.gpa));
    }
    return 0;
}
