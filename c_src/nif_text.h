/*
 * Text into terms, for the NIF libraries of c_src/ (the fault-injection
 * driver and the symbolizer): each is a shared object of its own, so this
 * is a header of static functions.
 */
#ifndef BEAM_ALLOC_NIF_TEXT_H
#define BEAM_ALLOC_NIF_TEXT_H

#include <erl_nif.h>
#include <string.h>

/* s as a binary (an empty one when the VM has no memory for it). */
static inline ERL_NIF_TERM text_binary(ErlNifEnv *env, const char *s) {
    size_t len = strlen(s);
    ERL_NIF_TERM bin;
    unsigned char *p = enif_make_new_binary(env, len, &bin);
    if (p != NULL)
        memcpy(p, s, len);
    return bin;
}

/* Raises {badarg, Text}: a driver function called with what it cannot
 * take says what it takes (a bare badarg said only "argument error"). */
static inline ERL_NIF_TERM badarg_text(ErlNifEnv *env, const char *text) {
    return enif_raise_exception(
        env, enif_make_tuple2(env, enif_make_atom(env, "badarg"),
                              text_binary(env, text)));
}

#endif
