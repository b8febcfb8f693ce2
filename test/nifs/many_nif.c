/*
 * A table of 48 BEAM_NIFs, each returning the kind of its beam_allocator,
 * for load_info options over a table of many functions (each call finds
 * its entry by C function: load_options.c). Loaded by BeamAlloc.Test.Many
 * (test/support/many.ex).
 */
#include "nif_util.h"

/* (clang-format moves this list about at every run.) */
/* clang-format off */
#define MANY(X)                                                                \
    X(f0) X(f1) X(f2) X(f3) X(f4) X(f5) X(f6) X(f7) X(f8) X(f9) X(f10) X(f11) \
    X(f12) X(f13) X(f14) X(f15) X(f16) X(f17) X(f18) X(f19) X(f20) X(f21)     \
    X(f22) X(f23) X(f24) X(f25) X(f26) X(f27) X(f28) X(f29) X(f30) X(f31)     \
    X(f32) X(f33) X(f34) X(f35) X(f36) X(f37) X(f38) X(f39) X(f40) X(f41)     \
    X(f42) X(f43) X(f44) X(f45) X(f46) X(f47)
/* clang-format on */

#define DEFINE(name)                                                           \
    BEAM_NIF(name) {                                                           \
        return kind_of(env, beam_allocator);                                   \
    }
MANY(DEFINE)

#define ENTRY(name) {#name, 0, name, 0},
static ErlNifFunc funcs[] = {MANY(ENTRY)};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Many, funcs, NULL, NULL, NULL)
