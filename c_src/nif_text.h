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

#endif
