/* Must not compile: the NIF glue's functions (a term helper, a resource)
 * without <beam_alloc_nif.h>. C would declare them implicitly (a warning,
 * then a link that truncates what they return); the error has to name the
 * header (make header-test checks the message). */
#include <beam_alloc.h>
#include <erl_nif.h>

ERL_NIF_TERM forgot_the_header(ErlNifEnv *env, int argc,
                               const ERL_NIF_TERM argv[]);

ERL_NIF_TERM forgot_the_header(ErlNifEnv *env, int argc,
                               const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM term;
    if (beam_resource_new(env, BEAM_RESOURCE_GPA, beam_raw_allocator, 0,
                          &term) == NULL)
        return beam_make_error(env, "enomem");
    return term;
}
