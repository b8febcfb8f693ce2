/*
 * A NIF module with an Erlang-style name (beam_alloc_erl_test, no
 * "Elixir." prefix): leak messages must write it as inspect/1 does,
 * :beam_alloc_erl_test.leaky/0.
 */
#include "nif_util.h"

BEAM_NIF(leaky, .leak_check = true) {
    unsigned char *leaked = beam_alloc(beam_allocator, unsigned char, 24);
    if (leaked != NULL)
        leaked[0] = 1;
    return enif_make_atom(env, "ok");
}

BEAM_NIF(clean, .leak_check = true) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 24);
    beam_free(beam_allocator, p, 24);
    return enif_make_atom(env, "ok");
}

static ErlNifFunc funcs[] = {
    {"leaky", 0, leaky, 0},
    {"clean", 0, clean, 0},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(beam_alloc_erl_test, funcs, load_capturing_reports, NULL, NULL)
