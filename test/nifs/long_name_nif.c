/*
 * A NIF module whose messages are longer than their buffers (MFA_MAX):
 * its name has 250 characters (the most a .beam file's name allows), and its
 * NIFs' names are mostly \x01, a control character Elixir writes as a 4-byte
 * escape. A message cut short keeps each escape and each character whole, and
 * has nothing after the cut.
 */
#include "nif_util.h"

BEAM_NIF(escapes, .leak_check = true) {
    return leak_one(env);
}

BEAM_NIF(escapes_then_latin1, .leak_check = true) {
    return leak_one(env);
}

#define X4 "\x01\x01\x01\x01"
#define X16 X4 X4 X4 X4
#define X64 X16 X16 X16 X16
/* a and 238 escapes: after "LongName...A.\"" (245 bytes) they leave one
 * byte of the message's 1199, where \xE9 (é, 2 bytes in UTF-8) does not
 * fit and a b would. */
#define A_X238 "a" X64 X64 X64 X16 X16 X4 X4 X4 "\x01\x01"

static ErlNifFunc funcs[] = {
    {X64 X64 X64 X16 X16 X16 X4 X4 X4 "\x01\x01\x01", 0, escapes, 0},
    {A_X238 "\xe9"
            "b",
     0, escapes_then_latin1, 0},
    {"take_reports", 0, take_reports, 0},
};

/* (One token: clang-format would split the name at its dot.) */
/* clang-format off */
BEAM_NIF_INIT(Elixir.LongNameAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA, funcs, load_capturing_reports, NULL, NULL)
/* clang-format on */
