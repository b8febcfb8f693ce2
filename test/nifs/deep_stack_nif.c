/*
 * Blocks allocated from inside another library's code, deep in its own
 * calls: test/nifs/foreign/deep.c, a shared object of its own built
 * without frame pointers, which allocates through the hook this NIF hands
 * it (as SQLite or zlib through <beam_alloc/...h>). The NIFs of
 * DeepStackNif, for test/deep_stack_test.exs. Keep each marker on its
 * call's line.
 */
#include "nif_util.h"

typedef void *(*deep_alloc_fn)(void *opaque, size_t n);
void *deep_alloc(deep_alloc_fn alloc, void *opaque, size_t n, int depth);

/* The hook: its caller, inside deep.c, is the block's site. */
static void *deep_hook(void *opaque, size_t n) {
    return beam_malloc_at(*(beam_allocator_t *)opaque, n, BEAM_RET_ADDR());
}

/* Leaks a block of 24 bytes that the library allocates depth calls below
 * its entry point. */
static ERL_NIF_TERM leak_at_depth(ErlNifEnv *env, int depth) {
    beam_allocator_t a = beam_allocator;
    return deep_alloc(deep_hook, &a, 24, depth) != NULL /* SITE: deep leak */
               ? enif_make_atom(env, "ok")
               : beam_make_error(env, "enomem");
}

/* 12 levels: more than the 6 frames leak_check keeps. */
BEAM_NIF(leak_deep, .leak_check = true) {
    return leak_at_depth(env, 12);
}

/* 1 level: the NIF's own frame is among the 6 kept. */
BEAM_NIF(leak_shallow, .leak_check = true) {
    return leak_at_depth(env, 1);
}

/* 20 levels: more than the 16 frames .frames = 16 keeps. */
BEAM_NIF(leak_deep_16, .leak_check = true, .frames = 16) {
    return leak_at_depth(env, 20);
}

static ErlNifFunc funcs[] = {
    {"leak_deep", 0, leak_deep, 0},
    {"leak_shallow", 0, leak_shallow, 0},
    {"leak_deep_16", 0, leak_deep_16, 0},
};

BEAM_NIF_INIT(Elixir.DeepStackNif, funcs, NULL, NULL, NULL)
