/*
 * The examples of guides/allocators.md beyond the seed guide's (those are
 * in guide_nif.c): raw NIFs, a custom allocator, and the tools (fault
 * injection, scratch arenas, per-NIF options, resource-scoped memory,
 * stats). The guide quotes these functions verbatim, and
 * test/guide_examples_test.exs checks that it still does. Loaded by
 * BeamAlloc.Test.GuideTools (test/support/guide_tools.ex) with
 * `use BeamAlloc.Nif`, which is one of the examples.
 */
#include "nif_util.h" /* beam_alloc.h, and reports kept for the tests */

#include <string.h>

/* --- Raw NIFs ------------------------------------------------------------- */

static ERL_NIF_TERM raw_sum(ErlNifEnv *env, int argc,
                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    /* A raw NIF: beam_allocator was not set for this call. Name one. */
    beam_allocator_t a = beam_raw_allocator;
    unsigned n;
    if (!enif_get_list_length(env, argv[0], &n))
        return enif_make_badarg(env);
    int64_t *xs = beam_alloc(a, int64_t, n);
    if (xs == NULL)
        return beam_make_error(env, "enomem");
    ERL_NIF_TERM head, tail = argv[0];
    int64_t sum = 0;
    for (unsigned i = 0; enif_get_list_cell(env, tail, &head, &tail); i++) {
        if (!enif_get_int64(env, head, &xs[i])) {
            beam_free(a, xs, n);
            return enif_make_badarg(env);
        }
        sum += xs[i];
    }
    beam_free(a, xs, n);
    return enif_make_int64(env, sum);
}

/* --- Custom allocators ---------------------------------------------------- */

/* An allocator with a budget: it refuses to hand out more than `left`
 * bytes in all, on top of any parent. */
typedef struct budget {
    beam_allocator_t parent;
    size_t left;
} budget;

static void *budget_alloc(void *ctx, size_t len, size_t alignment,
                          uintptr_t ret_addr) {
    budget *b = ctx;
    if (len > b->left)
        return NULL;
    void *p = b->parent.vtable->alloc(b->parent.ctx, len, alignment, ret_addr);
    if (p != NULL)
        b->left -= len;
    return p;
}

static bool budget_resize(void *ctx, void *mem, size_t len, size_t alignment,
                          size_t new_len, uintptr_t ret_addr) {
    budget *b = ctx;
    if (new_len > len && new_len - len > b->left)
        return false;
    if (!b->parent.vtable->resize(b->parent.ctx, mem, len, alignment, new_len,
                                  ret_addr))
        return false;
    b->left = b->left + len - new_len;
    return true;
}

static void *budget_remap(void *ctx, void *mem, size_t len, size_t alignment,
                          size_t new_len, uintptr_t ret_addr) {
    /* Resizing in place is all this allocator does; NULL asks the caller
     * to allocate, copy and free, which goes through budget_alloc. */
    return budget_resize(ctx, mem, len, alignment, new_len, ret_addr) ? mem
                                                                      : NULL;
}

static void budget_free(void *ctx, void *mem, size_t len, size_t alignment,
                        uintptr_t ret_addr) {
    budget *b = ctx;
    b->parent.vtable->free(b->parent.ctx, mem, len, alignment, ret_addr);
    b->left += len;
}

static const beam_allocator_vtable budget_vtable = {budget_alloc, budget_resize,
                                                    budget_remap, budget_free};

BEAM_NIF(with_budget) {
    unsigned long want;
    if (!enif_get_ulong(env, argv[0], &want))
        return enif_make_badarg(env);
    budget b = {beam_allocator, 1024};
    beam_allocator_t limited = {&b, &budget_vtable};

    char *block = beam_alloc(limited, char, want);
    if (block == NULL)
        return beam_make_error(env, "over_budget");
    memset(block, 'x', want);
    size_t left = b.left;
    beam_free(limited, block, want);
    return enif_make_uint64(env, left);
}

/* --- Fault injection ------------------------------------------------------ */

typedef struct word {
    size_t start, len;
} word;

BEAM_NIF(split_words) {
    ErlNifBinary text;
    if (!enif_inspect_binary(env, argv[0], &text))
        return enif_make_badarg(env);

    size_t cap = 4, n = 0;
    word *words = beam_alloc(beam_allocator, word, cap);
    if (words == NULL)
        return beam_make_error(env, "enomem");

    for (size_t i = 0; i < text.size;) {
        while (i < text.size && text.data[i] == ' ')
            i++;
        size_t start = i;
        while (i < text.size && text.data[i] != ' ')
            i++;
        if (i == start)
            break;
        if (n == cap) {
            word *bigger = beam_realloc(beam_allocator, words, cap, 2 * cap);
            if (bigger == NULL) {
                beam_free(beam_allocator, words, cap);
                return beam_make_error(env, "enomem");
            }
            words = bigger;
            cap *= 2;
        }
        words[n++] = (word){start, i - start};
    }

    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t k = n; k-- > 0;) {
        ERL_NIF_TERM w =
            enif_make_sub_binary(env, argv[0], words[k].start, words[k].len);
        list = enif_make_list_cell(env, w, list);
    }
    beam_free(beam_allocator, words, cap);
    return list;
}

/* The same with one bug: a failed growth returns without freeing. */
BEAM_NIF(split_words_leaky) {
    ErlNifBinary text;
    if (!enif_inspect_binary(env, argv[0], &text))
        return enif_make_badarg(env);
    size_t cap = 4, n = 0;
    word *words = beam_alloc(beam_allocator, word, cap);
    if (words == NULL)
        return beam_make_error(env, "enomem");
    for (size_t i = 0; i < text.size;) {
        while (i < text.size && text.data[i] == ' ')
            i++;
        size_t start = i;
        while (i < text.size && text.data[i] != ' ')
            i++;
        if (i == start)
            break;
        if (n == cap) {
            word *bigger = beam_realloc(beam_allocator, words, cap, 2 * cap);
            if (bigger == NULL)
                return beam_make_error(env, "enomem"); /* words leaks */
            words = bigger;
            cap *= 2;
        }
        words[n++] = (word){start, i - start};
    }
    ERL_NIF_TERM count = enif_make_uint64(env, n);
    beam_free(beam_allocator, words, cap);
    return count;
}

/* --- Scratch arenas ------------------------------------------------------- */

BEAM_NIF(byte_histogram, .scratch = true) {
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, argv[0], &bin))
        return enif_make_badarg(env);

    /* Never freed: the arena goes back in one step when the call returns. */
    uint64_t *counts = beam_alloc(beam_allocator, uint64_t, 256);
    uint8_t *order = beam_alloc(beam_allocator, uint8_t, 256);
    if (counts == NULL || order == NULL)
        return beam_make_error(env, "enomem");
    memset(counts, 0, 256 * sizeof *counts);

    size_t distinct = 0;
    for (size_t i = 0; i < bin.size; i++)
        if (counts[bin.data[i]]++ == 0)
            order[distinct++] = bin.data[i];

    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t k = distinct; k-- > 0;) {
        ERL_NIF_TERM pair =
            enif_make_tuple2(env, enif_make_uint(env, order[k]),
                             enif_make_uint64(env, counts[order[k]]));
        list = enif_make_list_cell(env, pair, list);
    }
    return list;
}

/* --- Per-NIF options from Elixir -------------------------------------------
 * Plain BEAM_NIFs: BeamAlloc.Test.GuideTools gives them options with
 * `use BeamAlloc.Nif, nifs: [...]`. */

BEAM_NIF(forgetful) {
    char *note = beam_alloc(beam_allocator, char, 32);
    if (note == NULL)
        return beam_make_error(env, "enomem");
    strcpy(note, "never freed");
    return enif_make_atom(env, "ok");
}

BEAM_NIF(is_scratch) {
    beam_arena_t probe;
    beam_arena_init(&probe, beam_raw_allocator);
    bool arena = beam_allocator.vtable == beam_arena_allocator(&probe).vtable;
    return enif_make_atom(env, arena ? "true" : "false");
}

/* --- Resource-scoped memory --------------------------------------------- */

/* A bag of binaries that lives in a resource: each put copies its binary
 * into the resource's own memory; it all goes when the bag does. */
typedef struct item {
    struct item *next;
    size_t len;
    unsigned char data[];
} item;

typedef struct bag {
    item *items; /* newest first */
    size_t count;
} bag;

BEAM_NIF(bag_new) {
    ERL_NIF_TERM term;
    if (!beam_resource_new(env, BEAM_RESOURCE_ARENA, beam_large_allocator,
                           sizeof(bag), &term))
        return beam_make_error(env, "enomem");
    return term;
}

BEAM_NIF(bag_put) {
    beam_resource_t *r;
    ErlNifBinary bin;
    if (!beam_resource_get(env, argv[0], &r) ||
        !enif_inspect_binary(env, argv[1], &bin))
        return enif_make_badarg(env);
    if (!beam_resource_pin(r))
        return beam_make_error(env, "released");

    beam_allocator_t a = beam_resource_allocator(r);
    item *it = beam_alloc_bytes(a, sizeof(item) + bin.size, _Alignof(item));
    if (it == NULL) {
        beam_resource_unpin(r);
        return beam_make_error(env, "enomem");
    }
    bag *b = beam_resource_user_data(r);
    it->len = bin.size;
    memcpy(it->data, bin.data, bin.size);
    it->next = b->items;
    b->items = it;
    b->count++;
    beam_resource_unpin(r);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(bag_to_list) {
    beam_resource_t *r;
    if (!beam_resource_get(env, argv[0], &r))
        return enif_make_badarg(env);
    if (!beam_resource_pin(r))
        return beam_make_error(env, "released");
    bag *b = beam_resource_user_data(r);
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (item *it = b->items; it != NULL; it = it->next) {
        ERL_NIF_TERM bin;
        memcpy(enif_make_new_binary(env, it->len, &bin), it->data, it->len);
        list = enif_make_list_cell(env, bin, list);
    }
    beam_resource_unpin(r);
    return list;
}

BEAM_NIF(bag_release) {
    beam_resource_t *r;
    if (!beam_resource_get(env, argv[0], &r))
        return enif_make_badarg(env);
    beam_resource_release(r);
    return enif_make_atom(env, "ok");
}

/* The guide's release hook: a bag whose user area holds a mutex. */
typedef struct shared_bag {
    ErlNifMutex *lock; /* every put takes it */
    bag bag;
} shared_bag;

static void shared_bag_down(beam_resource_t *r) {
    shared_bag *sb = beam_resource_user_data(r);
    if (sb->lock != NULL)
        enif_mutex_destroy(sb->lock);
}

BEAM_NIF(shared_bag_new) {
    ERL_NIF_TERM term;
    beam_resource_t *r =
        beam_resource_new(env, BEAM_RESOURCE_ARENA, beam_large_allocator,
                          sizeof(shared_bag), &term);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    shared_bag *sb = beam_resource_user_data(r);
    sb->lock = enif_mutex_create("shared_bag");
    beam_resource_on_release(r, shared_bag_down);
    if (sb->lock == NULL)
        return beam_make_error(env, "enomem");
    return term;
}

/* --- Stats ---------------------------------------------------------------- */

static ERL_NIF_TERM stats_map(ErlNifEnv *env, beam_alloc_stats s) {
    ERL_NIF_TERM keys[] = {
        enif_make_atom(env, "live_blocks"), enif_make_atom(env, "live_bytes"),
        enif_make_atom(env, "peak_bytes"), enif_make_atom(env, "allocations"),
        enif_make_atom(env, "frees")};
    ERL_NIF_TERM values[] = {enif_make_uint64(env, s.live_blocks),
                             enif_make_uint64(env, s.live_bytes),
                             enif_make_uint64(env, s.peak_bytes),
                             enif_make_uint64(env, s.allocations),
                             enif_make_uint64(env, s.frees)};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, 5, &map);
    return map;
}

BEAM_NIF(gpa_stats) {
    beam_gpa_t gpa;
    beam_gpa_init(&gpa, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&gpa);

    char *blocks[10];
    for (int i = 0; i < 10; i++)
        blocks[i] = beam_alloc(a, char, 100);
    for (int i = 0; i < 4; i++)
        beam_free(a, blocks[i], 100);

    beam_alloc_stats during;
    beam_allocator_stats(a, &during);
    for (int i = 4; i < 10; i++)
        beam_free(a, blocks[i], 100);
    beam_alloc_stats after;
    beam_allocator_stats(a, &after);
    beam_gpa_deinit(&gpa);

    return enif_make_tuple2(env, stats_map(env, during), stats_map(env, after));
}

static ErlNifFunc funcs[] = {
    {"raw_sum", 1, raw_sum, 0},
    {"with_budget", 1, with_budget, 0},
    {"split_words", 1, split_words, 0},
    {"split_words_leaky", 1, split_words_leaky, 0},
    {"byte_histogram", 1, byte_histogram, 0},
    {"forgetful", 0, forgetful, 0},
    {"is_scratch", 0, is_scratch, 0},
    {"bag_new", 0, bag_new, 0},
    {"bag_put", 2, bag_put, 0},
    {"bag_to_list", 1, bag_to_list, 0},
    {"bag_release", 1, bag_release, 0},
    {"shared_bag_new", 0, shared_bag_new, 0},
    {"gpa_stats", 0, gpa_stats, 0},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.GuideTools, funcs, load_capturing_reports,
              NULL, NULL)
