/*
 * Fuzz the arena over each kind of parent: large, raw, a fixed buffer, a
 * general purpose allocator instance and a failing allocator (first byte:
 * which). Blocks come from bump chunks, so AddressSanitizer sees only the
 * chunks: the pattern checks are what catch overlapping blocks.
 *
 * Over an unbounded parent every sane request must succeed; remap never
 * moves; any block shrinks in place; after a reset nothing is in use. At the
 * end the arena must have given every chunk back: the GPA parent has no
 * live block and saw no misuse (chunk lengths match), the failing parent's
 * counters balance, and nothing was reported but the requests for an
 * alignment that is not a power of two (fz_bad_align_calls).
 */
#include "driver.h"

#define FB_SPACE ((size_t)1 << 20)

static _Alignas(64) unsigned char fb_space[FB_SPACE];

enum { P_LARGE, P_RAW, P_FIXED, P_GPA, P_FAILING, P_KINDS };

typedef struct {
    beam_arena_t arena;
    int parent;
    beam_fixed_buffer_t fb;
    beam_gpa_t gpa;
    beam_failing_t failing;
} arena_user;

static size_t reports;

static void count_report(void *user, const char *line) {
    (void)user;
    (void)line;
    reports++;
}

static bool unbounded(const arena_user *u) {
    return u->parent != P_FIXED && u->parent != P_FAILING;
}

static int expect_alloc(fz_target *t, size_t len, size_t align, void **where) {
    (void)len;
    (void)align;
    (void)where;
    return unbounded(t->user) ? FZ_MUST_WORK : FZ_MAY;
}

static int expect_change(fz_target *t, fz_change kind, const fz_block *b,
                         size_t new_len, void **where) {
    if (new_len < b->len) {
        *where = b->ptr;
        return FZ_MUST_WORK;
    }
    if (kind != FZ_REALLOC) {
        *where = b->ptr; /* the arena never moves a block itself */
        return FZ_MAY;
    }
    return unbounded(t->user) ? FZ_MUST_WORK : FZ_MAY;
}

static void reset(fz_target *t, fz_reader *r) {
    arena_user *u = t->user;
    uint8_t how = fz_u8(r) % 3;
    bool ok;
    if (how == 0)
        ok = beam_arena_reset(&u->arena);
    else if (how == 1)
        ok = beam_arena_reset(&u->arena, BEAM_ARENA_FREE_ALL);
    else
        ok = beam_arena_reset(&u->arena, BEAM_ARENA_RETAIN_CAPACITY);
    if (how == 1 || unbounded(u))
        FZ_ASSERT(ok);
    FZ_ASSERT(beam_arena_used(&u->arena) == 0);
}

static size_t footprint(fz_target *t) {
    arena_user *u = t->user;
    return beam_arena_used(&u->arena);
}

static void check(fz_target *t, const fz_model *m, bool full) {
    arena_user *u = t->user;
    (void)full;
    FZ_ASSERT(beam_arena_used(&u->arena) >= m->live_bytes);
    FZ_ASSERT(reports == fz_bad_align_calls);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static arena_user u;
    fz_reader r = {data, size};
    memset(&u, 0, sizeof u);
    reports = 0;
    fz_bad_align_calls = 0;
    beam_set_report_hook(count_report, NULL);
    uint8_t mode = fz_u8(&r);
    u.parent = mode % P_KINDS;
    beam_allocator_t parent;
    switch (u.parent) {
    case P_LARGE:
        parent = beam_large_allocator;
        break;
    case P_RAW:
        parent = beam_raw_allocator;
        break;
    case P_FIXED: {
        size_t offset = fz_u8(&r) % 64;
        size_t len = fz_u32(&r) % (FB_SPACE - 64);
        beam_fixed_buffer_init(&u.fb, fb_space + offset, len);
        parent = beam_fixed_buffer_allocator(&u.fb);
        break;
    }
    case P_GPA:
        beam_gpa_init_ex(&u.gpa, beam_large_allocator,
                         mode & 0x80 ? BEAM_GPA_TRACK_SITES : 0);
        parent = beam_gpa_allocator(&u.gpa);
        break;
    default: {
        uint8_t k = fz_u8(&r);
        beam_failing_init(&u.failing, beam_raw_allocator,
                          k == 255 ? SIZE_MAX : k % 24);
        parent = beam_failing_allocator(&u.failing);
        break;
    }
    }
    beam_arena_init(&u.arena, parent);
    fz_target t = {.a = beam_arena_allocator(&u.arena),
                   .user = &u,
                   .expect_alloc = expect_alloc,
                   .expect_change = expect_change,
                   .reset = reset,
                   .footprint = footprint,
                   .check = check};
    fz_run(&t, &r);

    beam_arena_deinit(&u.arena);
    FZ_ASSERT(beam_arena_used(&u.arena) == 0);
    switch (u.parent) {
    case P_FIXED:
        FZ_ASSERT(u.fb.end_index <= u.fb.len);
        break;
    case P_GPA: {
        beam_gpa_usage g = beam_gpa_usage_of(&u.gpa);
        FZ_ASSERT(g.live_blocks == 0);
        FZ_ASSERT(g.misuse_count == 0);
        FZ_ASSERT(!beam_gpa_deinit(&u.gpa));
        break;
    }
    case P_FAILING:
        FZ_ASSERT(u.failing.allocations == u.failing.deallocations);
        FZ_ASSERT(u.failing.allocated_bytes == u.failing.freed_bytes);
        break;
    default:
        break;
    }
    FZ_ASSERT(reports == fz_bad_align_calls);
    beam_set_report_hook(NULL, NULL);
    return 0;
}
