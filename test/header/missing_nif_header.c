/* Must not compile: BEAM_NIF without <beam_alloc_nif.h>. The error has to
 * name the header (make header-test checks the message). */
#include <beam_alloc.h>
#include <erl_nif.h>

BEAM_NIF(forgot_the_header) {
    return enif_make_int(env, 1);
}
