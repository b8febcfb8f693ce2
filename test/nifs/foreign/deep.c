/*
 * A C "library" of the kind a NIF hands beam_alloc's hooks to (SQLite,
 * zlib): its own shared object, built without frame pointers (see the
 * Makefile), whose calls go depth levels deep before it allocates through
 * the hook it was given. For test/deep_stack_test.exs: a leak_check report
 * of its block must still name the NIF's line that called it.
 */
#include <stddef.h>

typedef void *(*deep_alloc_fn)(void *opaque, size_t n);

/* Read after each call: no level ends in a jump to the next (a tail call
 * would take its frame from the stack). */
static volatile int deep_levels;

__attribute__((noinline)) static void *
deep_level(deep_alloc_fn alloc, void *opaque, size_t n, int depth) {
    void *p =
        depth > 0 ? deep_level(alloc, opaque, n, depth - 1) : alloc(opaque, n);
    deep_levels++;
    return p;
}

/* Allocates n bytes through alloc, depth calls below this one. */
__attribute__((visibility("default"))) void *
deep_alloc(deep_alloc_fn alloc, void *opaque, size_t n, int depth) {
    void *p = deep_level(alloc, opaque, n, depth);
    deep_levels++;
    return p;
}
