/*
 * A second library called misuse_nif.so (in priv/twin/), for another
 * module (BeamAlloc.Test.TwinMisuse, test/support/misuse.ex): reports must
 * tell it from test/nifs/misuse_nif.c's, whose base name it shares, and
 * name this file's lines (test/misuse_test.exs). Keep the marker on the
 * line of its call.
 */
#include <beam_alloc_nif.h>

static beam_allocator_t process_wide(void) {
    return beam_general_purpose_allocator;
}

/* Not at the offsets of misuse_nif.c's double_free_plain: padding first. */
static volatile int padding;

static void pad(void) {
    for (int i = 0; i < 3; i++)
        padding += i;
}

BEAM_NIF(twin_double_free, .allocator = process_wide) {
    pad();
    void *p = beam_alloc_bytes(beam_allocator, 40, 8);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, p, 40, 8);
    beam_free_bytes(beam_allocator, p, 40, 8); /* SITE: twin double free */
    return enif_make_atom(env, "ok");
}

static ErlNifFunc funcs[] = {
    {"twin_double_free", 0, twin_double_free, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.TwinMisuse, funcs, NULL, NULL, NULL)
