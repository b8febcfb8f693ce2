/*
 * The fixed buffer allocator: bump allocation inside a caller's buffer (the
 * semantics of Zig's std.heap.FixedBufferAllocator). Nothing is taken from
 * anywhere else, so it never touches the VM or the C library.
 *
 * Invariant: end_index <= len. Blocks live in buffer[0, end_index); the
 * newest ends exactly at end_index, which is how it is recognised: it alone
 * can grow, and shrinking or freeing it gives the bytes back.
 */
#include "internal.h"

/* Compared as integers: mem need not point into this buffer. The block
 * must also fit in what is handed out (len <= end_index): a block of
 * another buffer that happens to end here (a neighbour's, in the same
 * array) is not ours, and giving its bytes back would wrap end_index. */
static bool ends_at_end(const beam_fixed_buffer_t *fb, const void *mem,
                        size_t len) {
    return len <= fb->end_index &&
           (uintptr_t)mem + len == (uintptr_t)fb->buffer + fb->end_index;
}

/* Compared as integers, against the handed-out bytes from the buffer's
 * start: mem + len may wrap for a garbage len. */
bool beam__fixed_buffer_holds(const beam_fixed_buffer_t *fb, const void *mem,
                              size_t len) {
    uintptr_t at = (uintptr_t)mem, lo = (uintptr_t)fb->buffer;
    return at >= lo && at - lo <= fb->end_index &&
           len <= fb->end_index - (at - lo);
}

/* A block that ends at end_index (ends_at_end) is the newest one when it
 * also starts where that one does (last_index): a longer length given for
 * an older block ends there too, and rolling back over the newest (live)
 * block would hand it out again. Once the newest is given back, the one
 * before it is not known, and any block ending at end_index is taken for
 * it, as Zig's allocator does. */
static bool starts_newest(const beam_fixed_buffer_t *fb, size_t len) {
    return fb->last_index == SIZE_MAX || fb->end_index - len == fb->last_index;
}

/* true (after a report) when mem is not inside the bytes handed out: a
 * stack array, another allocator's block, one freed already (past
 * end_index), or an older block given with a length that runs past
 * end_index (its start is not known: said among the causes). Zig's allocator
 * asserts ownership here; silently ignored, a free of one said nothing, a
 * shrink answered true, and a realloc copied from it and "freed" it. Blocks
 * inside are not told apart: an older block's free is a no-op, as the bump
 * allocator makes it. Asked after refused_newest_length: the newest block given
 * with a longer length runs past end_index too, but that is a wrong length. */
static bool refused_foreign(const beam_fixed_buffer_t *fb, const char *call,
                            void *mem, size_t len, size_t alignment,
                            uintptr_t ret) {
    if (BEAM__LIKELY(beam__fixed_buffer_holds(fb, mem, len)))
        return false;
    beam__report_foreign(
        call, mem, len, alignment, ret,
        "not a live block of this fixed buffer (outside the bytes it handed "
        "out: a wrong length, another allocator's block, or one freed "
        "already)");
    return true;
}

/* true (after a report) when mem is where the newest block starts but len
 * is not its length (called only when the block does not end at
 * end_index). A free or shrink of an older block is a no-op, as the bump
 * allocator makes it; of the newest, with a shorter length, it was one
 * too, without a word, and the block's bytes stayed taken until a reset
 * (found in an audit of the public calls); with a longer one it was
 * reported as a pointer of elsewhere, the arena saying wrong length. */
static bool refused_newest_length(const beam_fixed_buffer_t *fb,
                                  const char *call, void *mem, size_t len,
                                  size_t alignment, uintptr_t ret) {
    if (BEAM__LIKELY(fb->last_index == SIZE_MAX ||
                     (uintptr_t)mem != (uintptr_t)fb->buffer + fb->last_index))
        return false;
    beam__report_newest_length(call, mem, len, alignment, ret, "buffer",
                               fb->end_index - fb->last_index);
    return true;
}

/* true (after a report) when a block that does not end at end_index is
 * not one to free or resize (an older block is, and nothing is said).
 * Out of line, as is resize_not_at_end: inlined, the two checks made the
 * newest block's free and resize save registers on entry (gcc -O2). */
static BEAM__NOINLINE bool refused_not_at_end(const beam_fixed_buffer_t *fb,
                                              const char *call, void *mem,
                                              size_t len, size_t alignment,
                                              uintptr_t ret) {
    return refused_newest_length(fb, call, mem, len, alignment, ret) ||
           refused_foreign(fb, call, mem, len, alignment, ret);
}

/* An older block shrinks in place (its bytes stay taken) and cannot grow. */
static BEAM__NOINLINE bool resize_not_at_end(const beam_fixed_buffer_t *fb,
                                             void *mem, size_t len,
                                             size_t alignment, size_t new_len,
                                             uintptr_t ret) {
    return !refused_not_at_end(fb, "resize", mem, len, alignment, ret) &&
           new_len <= len;
}

static void *fb_alloc(void *ctx, size_t len, size_t alignment, uintptr_t ret) {
    (void)ret;
    beam_fixed_buffer_t *fb = ctx;
    size_t avail = fb->len - fb->end_index;
    /* Also keeps an empty (possibly NULL) buffer out of the arithmetic. */
    if (avail == 0)
        return NULL;
    /* Padding from the address alone: no pointer past the buffer is ever
     * formed, and a huge alignment cannot wrap around. */
    uintptr_t at = (uintptr_t)fb->buffer + fb->end_index;
    size_t pad = (size_t)(-at & (uintptr_t)(alignment - 1));
    if (pad > avail || len > avail - pad)
        return NULL;
    unsigned char *p = fb->buffer + fb->end_index + pad;
    fb->last_index = fb->end_index + pad;
    fb->end_index += pad + len;
    return p;
}

static bool fb_resize(void *ctx, void *mem, size_t len, size_t alignment,
                      size_t new_len, uintptr_t ret) {
    beam_fixed_buffer_t *fb = ctx;
    if (new_len == 0)
        return false; /* a direct vtable caller's (the contract: > 0) */
    /* Any block can shrink in place; only the newest gives bytes back. */
    if (!ends_at_end(fb, mem, len))
        return resize_not_at_end(fb, mem, len, alignment, new_len, ret);
    if (BEAM__UNLIKELY(!starts_newest(fb, len))) {
        beam__report_not_newest("resize", mem, len, alignment, ret, "buffer");
        return false;
    }
    if (new_len <= len) {
        fb->end_index -= len - new_len;
        return true;
    }
    if (new_len - len > fb->len - fb->end_index)
        return false;
    fb->end_index += new_len - len;
    return true;
}

/* There is nowhere to move to that alloc + copy would not find as well. */
static void *fb_remap(void *ctx, void *mem, size_t len, size_t alignment,
                      size_t new_len, uintptr_t ret) {
    return fb_resize(ctx, mem, len, alignment, new_len, ret) ? mem : NULL;
}

static void fb_free(void *ctx, void *mem, size_t len, size_t alignment,
                    uintptr_t ret) {
    beam_fixed_buffer_t *fb = ctx;
    if (mem == NULL)
        return; /* NULL: the contract's no-op, also through the vtable */
    if (!ends_at_end(fb, mem, len)) {
        (void)refused_not_at_end(fb, "free", mem, len, alignment, ret);
        return;
    }
    if (BEAM__UNLIKELY(!starts_newest(fb, len))) {
        beam__report_not_newest("free", mem, len, alignment, ret, "buffer");
        return;
    }
    fb->end_index -= len;
    fb->last_index = SIZE_MAX;
}

const beam_allocator_vtable beam__fixed_buffer_vtable = {fb_alloc, fb_resize,
                                                         fb_remap, fb_free};

void beam_fixed_buffer_init(beam_fixed_buffer_t *fb, void *buf, size_t len) {
    if (beam__null_instance(fb, "beam_fixed_buffer_init", BEAM__RET_ADDR()))
        return;
    fb->buffer = buf;
    /* Objects never exceed PTRDIFF_MAX, nor run past the address space's
     * end; a larger len is a caller's error that must not turn into
     * pointer overflow here (a buffer near the top handed out a block
     * that wrapped to address 0). Said, as is a NULL buffer given bytes. */
    size_t room = buf != NULL ? UINTPTR_MAX - (uintptr_t)buf : 0;
    if (room > BEAM__MAX_LEN)
        room = BEAM__MAX_LEN;
    fb->len = len < room ? len : room;
    if (BEAM__UNLIKELY(fb->len != len))
        beam__report("beam_alloc: beam_fixed_buffer_init: a buffer of %zu "
                     "bytes at %p cannot be (%s): %zu bytes used",
                     len, buf,
                     buf == NULL ? "no buffer"
                                 : "it would run past the largest object or "
                                   "the end of memory",
                     fb->len);
    fb->end_index = 0;
    fb->last_index = SIZE_MAX;
}

beam_allocator_t beam_fixed_buffer_allocator(beam_fixed_buffer_t *fb) {
    if (beam__null_instance(fb, "beam_fixed_buffer_allocator",
                            BEAM__RET_ADDR()))
        return BEAM__REFUSING_ALLOCATOR;
    beam_allocator_t a = {fb, &beam__fixed_buffer_vtable};
    return a;
}

void beam_fixed_buffer_reset(beam_fixed_buffer_t *fb) {
    if (beam__null_instance(fb, "beam_fixed_buffer_reset", BEAM__RET_ADDR()))
        return;
    fb->end_index = 0;
    fb->last_index = SIZE_MAX;
}
