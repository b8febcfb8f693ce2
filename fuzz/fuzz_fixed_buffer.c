/*
 * Fuzz the fixed buffer allocator against an exact model of it: a mirror
 * of end_index, from which the harness predicts whether every call
 * succeeds and where each block lands (the padding comes from the address,
 * so the buffer is placed at a fuzzed offset from a 64 KiB boundary and
 * has a fuzzed length, sometimes none at all). Every call the driver makes
 * is a correct one, bad alignments aside: nothing else may be reported (a
 * live block, freed out of order or moved by realloc, is never taken for
 * a foreign pointer).
 */
#include "driver.h"

#define FB_SPACE ((size_t)1 << 20)

static _Alignas(65536) unsigned char fb_space[FB_SPACE + 65536];

typedef struct {
    beam_fixed_buffer_t fb;
    unsigned char *base;
    size_t cap;
    size_t end; /* the model's end_index */
} fb_user;

/* Bump the model: where a block of len at align goes, or NULL. */
static void *model_bump(fb_user *u, size_t len, size_t align) {
    size_t avail = u->cap - u->end;
    if (avail == 0)
        return NULL;
    uintptr_t at = (uintptr_t)u->base + u->end;
    size_t pad = (size_t)(-at & (uintptr_t)(align - 1));
    if (pad > avail || len > avail - pad)
        return NULL;
    u->end += pad + len;
    return u->base + (u->end - len);
}

static size_t reports;

static void count_report(void *user, const char *line) {
    (void)user;
    (void)line;
    reports++;
}

static int expect_alloc(fz_target *t, size_t len, size_t align, void **where) {
    *where = model_bump(t->user, len, align);
    return *where != NULL ? FZ_MUST_WORK : FZ_MUST_FAIL;
}

static bool is_last(const fb_user *u, const fz_block *b) {
    return b->ptr + b->len == u->base + u->end;
}

/* In place: any block shrinks; only the newest grows (into free space). */
static bool model_in_place(fb_user *u, const fz_block *b, size_t new_len) {
    if (!is_last(u, b))
        return new_len <= b->len;
    if (new_len <= b->len) {
        u->end -= b->len - new_len;
        return true;
    }
    if (new_len - b->len > u->cap - u->end)
        return false;
    u->end += new_len - b->len;
    return true;
}

static int expect_change(fz_target *t, fz_change kind, const fz_block *b,
                         size_t new_len, void **where) {
    fb_user *u = t->user;
    if (model_in_place(u, b, new_len)) {
        *where = b->ptr;
        return FZ_MUST_WORK;
    }
    if (kind != FZ_REALLOC)
        return FZ_MUST_FAIL;
    /* Allocate, copy, free: the old block is no longer the newest, so its
     * free gives nothing back. */
    *where = model_bump(u, new_len, b->align);
    return *where != NULL ? FZ_MUST_WORK : FZ_MUST_FAIL;
}

static void on_free(fz_target *t, const fz_block *b) {
    fb_user *u = t->user;
    if (is_last(u, b))
        u->end -= b->len;
}

static void reset(fz_target *t, fz_reader *r) {
    fb_user *u = t->user;
    (void)r;
    beam_fixed_buffer_reset(&u->fb);
    u->end = 0;
}

static void check(fz_target *t, const fz_model *m, bool full) {
    fb_user *u = t->user;
    FZ_ASSERT(u->fb.end_index == u->end);
    FZ_ASSERT(reports == fz_bad_align_calls);
    FZ_ASSERT(u->fb.len == u->cap);
    FZ_ASSERT(u->fb.buffer == u->base || u->cap == 0);
    if (!full)
        return;
    for (size_t i = 0; i < m->n; i++) {
        const fz_block *b = &m->b[i];
        if (b->len == 0)
            continue;
        FZ_ASSERT(b->ptr >= u->base);
        FZ_ASSERT(b->ptr + b->len <= u->base + u->end);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static fb_user u;
    fz_reader r = {data, size};
    uint8_t mode = fz_u8(&r);
    size_t offset = fz_u16(&r) % 65536;
    size_t len;
    switch (mode % 8) {
    case 0:
        len = 0;
        break;
    case 1:
        len = fz_u8(&r);
        break;
    case 2:
    case 3:
        len = fz_u16(&r);
        break;
    default:
        len = fz_u32(&r) % (FB_SPACE + 1);
        break;
    }
    memset(&u, 0, sizeof u);
    reports = 0;
    fz_bad_align_calls = 0;
    beam_set_report_hook(count_report, NULL);
    u.base = (mode & 0xf0) == 0xf0 ? NULL : fb_space + offset;
    u.cap = u.base != NULL ? len : 0;
    /* (No buffer given bytes is said in a report: test_fixed_buffer.c.) */
    beam_fixed_buffer_init(&u.fb, u.base, u.cap);
    fz_target t = {.a = beam_fixed_buffer_allocator(&u.fb),
                   .user = &u,
                   .expect_alloc = expect_alloc,
                   .expect_change = expect_change,
                   .on_free = on_free,
                   .reset = reset,
                   .check = check};
    fz_run(&t, &r);
    FZ_ASSERT(reports == fz_bad_align_calls);
    beam_set_report_hook(NULL, NULL);
    return 0;
}
