/*
 * Fuzz the raw and the large allocator (and beam_allocator, the raw one on
 * a thread no NIF has touched). First byte: which.
 *
 * Their contracts are exact, so the expectations are too: the raw
 * allocator serves every sane length at alignments up to BEAM_MAX_ALIGN and
 * none above, shrinks in place and never grows in place; the large one
 * serves every sane length at every alignment and always shrinks in place.
 * Both may move on remap, and then must succeed.
 */
#include "driver.h"

typedef struct {
    bool raw; /* else large */
} large_user;

static int expect_alloc(fz_target *t, size_t len, size_t align, void **where) {
    large_user *u = t->user;
    (void)where;
    (void)len;
    if (u->raw && align > BEAM_MAX_ALIGN)
        return FZ_MUST_FAIL;
    return FZ_MUST_WORK;
}

static int expect_change(fz_target *t, fz_change kind, const fz_block *b,
                         size_t new_len, void **where) {
    large_user *u = t->user;
    (void)where;
    if (kind != FZ_RESIZE)
        return FZ_MUST_WORK;
    if (new_len < b->len)
        return FZ_MUST_WORK;
    if (u->raw || b->align <= BEAM_MAX_ALIGN)
        return FZ_MUST_FAIL;
    return FZ_MAY; /* within the alignment slack */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_reader r = {data, size};
    uint8_t mode = fz_u8(&r) % 3;
    large_user u = {mode != 1};
    fz_target t = {.a = mode == 0   ? beam_raw_allocator
                        : mode == 1 ? beam_large_allocator
                                    : beam_allocator,
                   .user = &u,
                   .expect_alloc = expect_alloc,
                   .expect_change = expect_change};
    fz_run(&t, &r);
    return 0;
}
