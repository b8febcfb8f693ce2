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
static bool is_last(const beam_fixed_buffer_t *fb, const void *mem,
                    size_t len) {
    return len <= fb->end_index &&
           (uintptr_t)mem + len == (uintptr_t)fb->buffer + fb->end_index;
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
    fb->end_index += pad + len;
    return p;
}

static bool fb_resize(void *ctx, void *mem, size_t len, size_t alignment,
                      size_t new_len, uintptr_t ret) {
    (void)alignment;
    (void)ret;
    beam_fixed_buffer_t *fb = ctx;
    /* Any block can shrink in place; only the newest gives bytes back. */
    if (!is_last(fb, mem, len))
        return new_len <= len;
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
    (void)alignment;
    (void)ret;
    beam_fixed_buffer_t *fb = ctx;
    if (is_last(fb, mem, len))
        fb->end_index -= len;
}

static const beam_allocator_vtable fb_vtable = {fb_alloc, fb_resize, fb_remap,
                                                fb_free};

void beam_fixed_buffer_init(beam_fixed_buffer_t *fb, void *buf, size_t len) {
    fb->buffer = buf;
    /* Objects never exceed PTRDIFF_MAX; a larger len is a caller's error
     * that must not turn into pointer overflow here. */
    fb->len = buf != NULL ? (len < BEAM__MAX_LEN ? len : BEAM__MAX_LEN) : 0;
    fb->end_index = 0;
}

beam_allocator_t beam_fixed_buffer_allocator(beam_fixed_buffer_t *fb) {
    beam_allocator_t a = {fb, &fb_vtable};
    return a;
}

void beam_fixed_buffer_reset(beam_fixed_buffer_t *fb) {
    fb->end_index = 0;
}
