/* Must not compile: BEAM_NIF_INIT with a count of arguments it does not
 * take (BEAM_TEST_ARGS: 3 or 7). The error has to say which forms it takes
 * (make header-test checks the message); these counts used to pick another
 * name and fail on a syntax error instead. */
#include <beam_alloc_nif.h>

static ErlNifFunc funcs[] = {{"a", 0, NULL, 0}};

#if BEAM_TEST_ARGS == 3
BEAM_NIF_INIT(my_mod, funcs, NULL)
#else
BEAM_NIF_INIT(my_mod, funcs, NULL, NULL, NULL, NULL, NULL)
#endif
