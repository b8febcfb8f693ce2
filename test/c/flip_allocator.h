/*
 * An allocator that hands out blocks 8 bytes off a 16-byte boundary and on
 * the boundary, by turns, and always moves on remap to the other kind: what
 * enif_alloc may do, which malloc (always 16-aligned here) never shows. The
 * raw block's address sits in the word before each block.
 *
 * Shared by test/c/test_malloc.c and fuzz/fuzz_malloc.c (which includes it
 * as "../test/c/flip_allocator.h"): one static copy per including file.
 */
#ifndef BEAM_ALLOC_TEST_FLIP_ALLOCATOR_H
#define BEAM_ALLOC_TEST_FLIP_ALLOCATOR_H

#include <beam_alloc.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static unsigned flip_turn;
static void *flip_alloc(void *ctx, size_t len, size_t alignment, uintptr_t r) {
    (void)ctx;
    (void)r;
    if (alignment > 8 || len > (size_t)PTRDIFF_MAX - 16)
        return NULL;
    char *raw = beam_raw_allocator.vtable->alloc(NULL, len + 16, 8, 0);
    if (raw == NULL)
        return NULL;
    char *user = raw + 8;
    if ((((uintptr_t)user & 15) == 0) != ((flip_turn++ & 1) == 0))
        user += 8;
    ((char **)user)[-1] = raw;
    return user;
}
static void flip_free(void *ctx, void *mem, size_t len, size_t alignment,
                      uintptr_t r) {
    (void)ctx;
    (void)alignment;
    (void)r;
    beam_raw_allocator.vtable->free(NULL, ((char **)mem)[-1], len + 16, 8, 0);
}
static bool flip_resize(void *ctx, void *mem, size_t len, size_t alignment,
                        size_t new_len, uintptr_t r) {
    (void)ctx;
    (void)mem;
    (void)len;
    (void)alignment;
    (void)new_len;
    (void)r;
    return false;
}
static void *flip_remap(void *ctx, void *mem, size_t len, size_t alignment,
                        size_t new_len, uintptr_t r) {
    flip_turn = ((uintptr_t)mem & 15) == 0 ? 1 : 0; /* the other kind */
    void *p = flip_alloc(ctx, new_len, alignment, r);
    if (p == NULL)
        return NULL;
    memcpy(p, mem, len < new_len ? len : new_len);
    flip_free(ctx, mem, len, alignment, r);
    return p;
}
static const beam_allocator_vtable flip_vtable = {flip_alloc, flip_resize,
                                                  flip_remap, flip_free};

#endif
