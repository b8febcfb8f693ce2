/*
 * .leak_check = true: each call runs on a fresh general purpose allocator
 * and a block still live at return raises RuntimeError naming the function.
 * The module is LeakCheckTest so that the message reads as in the guide:
 * "memory leak detected in function `LeakCheckTest.check_me/0`".
 */
#include "nif_util.h"

/* Leaks a small block and a large one, so that both the slab and the
 * pass-through paths of the instance are checked. Dirty CPU in the table,
 * like the Zigler original. */
BEAM_NIF(check_me, .leak_check = true) {
    unsigned char *small = beam_alloc(beam_allocator, unsigned char, 8);
    unsigned char *large = beam_alloc(beam_allocator, unsigned char, 100000);
    if (small == NULL || large == NULL)
        return beam_make_error(env, "enomem");
    small[0] = large[0] = 1;
    return enif_make_atom(env, "ok");
}

/* The same leak on a normal scheduler and on a dirty IO one. */
BEAM_NIF(check_me_normal, .leak_check = true) {
    return beam_create(beam_allocator, uint64_t) != NULL
               ? enif_make_atom(env, "ok")
               : beam_make_error(env, "enomem");
}

BEAM_NIF(check_me_io, .leak_check = true) {
    return beam_create(beam_allocator, uint64_t) != NULL
               ? enif_make_atom(env, "ok")
               : beam_make_error(env, "enomem");
}

/* leak_bytes(n): leaks one block of n bytes; the report names the size. */
BEAM_NIF(leak_bytes, .leak_check = true) {
    size_t n;
    if (!get_size(env, argv[0], &n) || n == 0)
        return enif_make_badarg(env);
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, n);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    p[0] = 1;
    return enif_make_atom(env, "ok");
}

/* clean(n): allocates, resizes and frees n blocks; returns their sum so the
 * work cannot be skipped. */
BEAM_NIF(clean, .leak_check = true) {
    size_t n;
    if (!get_size(env, argv[0], &n) || n > 100000)
        return enif_make_badarg(env);
    uint64_t sum = 0;
    for (size_t i = 1; i <= n; i++) {
        uint64_t *p = beam_alloc(beam_allocator, uint64_t, i);
        if (p == NULL)
            return beam_make_error(env, "enomem");
        for (size_t j = 0; j < i; j++)
            p[j] = j;
        uint64_t *q = beam_realloc(beam_allocator, p, i, 2 * i);
        if (q == NULL) {
            beam_free(beam_allocator, p, i);
            return beam_make_error(env, "enomem");
        }
        sum += q[i - 1];
        beam_free(beam_allocator, q, 2 * i);
    }
    return enif_make_uint64(env, sum);
}

BEAM_NIF(clean_dirty, .leak_check = true) {
    uint64_t *p = beam_alloc(beam_allocator, uint64_t, 1000);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_allocator, p, 1000);
    return enif_make_atom(env, "ok");
}

/* Raises ArgumentError without leaking: the exception passes through. */
BEAM_NIF(raise_clean, .leak_check = true) {
    uint64_t *p = beam_create(beam_allocator, uint64_t);
    if (p != NULL)
        beam_destroy(beam_allocator, p);
    return enif_make_badarg(env);
}

/* Raises ArgumentError and leaks: the leak is the error reported. */
BEAM_NIF(raise_and_leak, .leak_check = true) {
    uint64_t *leaked = beam_create(beam_allocator, uint64_t);
    if (leaked != NULL)
        *leaked = 1;
    return enif_make_badarg(env);
}

/* keep_for_later(n): keeps a block of n bytes and a copy of the call's
 * allocator, as a NIF keeps a C library's context in a resource: a leak
 * (raised), and free_kept() frees the block through the copy later. The
 * call's instance used to be gone by then (it lived on the wrapper's
 * stack), and the free crashed the VM. */
static struct {
    beam_allocator_t a;
    void *p;
    size_t n;
} kept;

BEAM_NIF(keep_for_later, .leak_check = true) {
    size_t n;
    if (!get_size(env, argv[0], &n) || n == 0 || kept.p != NULL)
        return enif_make_badarg(env);
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, n);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    p[0] = 1;
    kept.a = beam_allocator;
    kept.p = p;
    kept.n = n;
    return enif_make_atom(env, "ok");
}

BEAM_NIF(free_kept) {
    if (kept.p == NULL)
        return enif_make_badarg(env);
    beam_free(kept.a, (unsigned char *)kept.p, kept.n);
    kept.p = NULL;
    return enif_make_atom(env, "ok");
}

/* aligned_*(al): a block of 64 bytes at alignment al, freed; ok or
 * {error, enomem}. The plain call's allocator is raw (alignments up to
 * 8); the checked one's a general purpose instance. */
static ERL_NIF_TERM aligned_block(ErlNifEnv *env, ERL_NIF_TERM arg) {
    size_t al;
    if (!get_size(env, arg, &al) || al == 0 || (al & (al - 1)) != 0)
        return enif_make_badarg(env);
    void *p = beam_alloc_bytes(beam_allocator, 64, al);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, p, 64, al);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(aligned_checked, .leak_check = true) {
    return aligned_block(env, argv[0]);
}

BEAM_NIF(aligned_plain) {
    return aligned_block(env, argv[0]);
}

/* A function whose Elixir name needs quotes. */
BEAM_NIF(odd_name, .leak_check = true) {
    return leak_one(env);
}

ODD_CHAR_NIFS(leak_one)

/* A function named like an operator, which Elixir writes bare. (A function
 * of its own: one listed under two names of one arity is named by its
 * first entry.) */
BEAM_NIF(operator_name, .leak_check = true) {
    return leak_one(env);
}

static ErlNifFunc funcs[] = {
    {"check_me", 0, check_me, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"check_me_normal", 0, check_me_normal, 0},
    {"check_me_io", 0, check_me_io, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"leak_bytes", 1, leak_bytes, 0},
    {"clean", 1, clean, 0},
    {"clean_dirty", 0, clean_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"raise_clean", 0, raise_clean, 0},
    {"raise_and_leak", 0, raise_and_leak, 0},
    {"odd-name?", 0, odd_name, 0},
    {"<~>", 0, operator_name, 0},
    ODD_CHAR_NIF_ENTRIES,
    {"keep_for_later", 1, keep_for_later, 0},
    {"free_kept", 0, free_kept, 0},
    {"aligned_checked", 1, aligned_checked, 0},
    {"aligned_plain", 1, aligned_plain, 0},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(Elixir.LeakCheckTest, funcs, load_capturing_reports, NULL, NULL)
