/*
 * A NIF module with an Erlang-style name (beam_alloc_erl_test, no
 * "Elixir." prefix): a leak or a misuse raises an Erlang error,
 * erlang:error({memory_leak, Message}) or {memory_misuse, Message}, with
 * the function written as Erlang does, beam_alloc_erl_test:leaky/0.
 *
 * Two NIFs are named like C library functions or keywords (free, end):
 * their C names differ (BEAM_NIF(nif_free)), the table gives the Erlang
 * name, and messages use the Erlang one.
 */
#include "nif_util.h"

#include <stdlib.h> /* declares free(): BEAM_NIF(free) would clash */

/* A block of n bytes, touched and never freed: the leak each leaky NIF
 * below is there to make. */
static void leak_block(size_t n) {
    unsigned char *leaked = beam_alloc(beam_allocator, unsigned char, n);
    if (leaked != NULL)
        leaked[0] = 1;
}

BEAM_NIF(leaky, .leak_check = true) {
    leak_block(24);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(clean, .leak_check = true) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 24);
    beam_free(beam_allocator, p, 24);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(nif_free, .leak_check = true) {
    leak_block(8);
    return argv[0];
}

/* A leaky NIF's return: ok, after an 8-byte leak. */
static ERL_NIF_TERM leak_ok(ErlNifEnv *env) {
    leak_block(8);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(nif_end, .leak_check = true) {
    return leak_ok(env);
}

ODD_CHAR_NIFS(leak_ok)

/* maybe/0: a keyword of the maybe_expr feature, which Erlang writes quoted
 * where the feature is on by default (OTP 27 and later) and bare before. */
BEAM_NIF(nif_maybe, .leak_check = true) {
    return leak_ok(env);
}

/* end(tag), a keyword Erlang writes quoted (beam_alloc_erl_test:'end'/1):
 * its one request used unchecked, for the fault-injection check's crash
 * note. */
BEAM_NIF(nif_end_unchecked) {
    unsigned tag;
    if (!enif_get_uint(env, argv[0], &tag))
        return enif_make_badarg(env);
    unsigned char *volatile p = beam_alloc(beam_allocator, unsigned char, 8);
    p[0] = (unsigned char)tag;
    beam_free(beam_allocator, p, 8);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(double_free, .leak_check = true) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 24);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_allocator, p, 24);
    beam_free(beam_allocator, p, 24); /* SITE: erl double free */
    return enif_make_atom(env, "ok");
}

/* A freed block written, found by the leak check once the call returned:
 * its report names the call the Erlang way (beam_alloc_erl_test:stale/0). */
BEAM_NIF(stale, .leak_check = true) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 64);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_allocator, p, 64);
    volatile unsigned char *dangling = p;
    dangling[20] = 7;
    return enif_make_atom(env, "ok");
}

/* raise_badarg(): beam_raise from an Erlang module raises an Erlang term;
 * raise_named(): the same with Elixir's name of an Erlang error, which
 * gives the Erlang one; raise_other(): an Elixir name of nothing Erlang
 * has, "Elixir." dropped. */
BEAM_NIF(raise_badarg) {
    return beam_raise(env, "badarg", "expects a binary");
}

BEAM_NIF(raise_named) {
    return beam_raise(env, "Elixir.ArgumentError", "bad value");
}

BEAM_NIF(raise_other) {
    return beam_raise(env, "Elixir.KeyError", "no key");
}

static ErlNifFunc funcs[] = {
    {"leaky", 0, leaky, 0},
    {"double_free", 0, double_free, 0},
    {"stale", 0, stale, 0},
    {"free", 1, nif_free, 0},
    {"end", 0, nif_end, 0},
    {"end", 1, nif_end_unchecked, 0},
    ODD_CHAR_NIF_ENTRIES,
    {"maybe", 0, nif_maybe, 0},
    {"clean", 0, clean, 0},
    {"take_reports", 0, take_reports, 0},
    {"raise_badarg", 0, raise_badarg, 0},
    {"raise_named", 0, raise_named, 0},
    {"raise_other", 0, raise_other, 0},
};

BEAM_NIF_INIT(beam_alloc_erl_test, funcs, load_capturing_reports, NULL, NULL)
