/* The options NIFs for the Erlang module beam_alloc_options_erl, which
 * loads them with erlang:load_nif/2 and a map
 * (test/erlang/beam_alloc_options_erl.erl). */
#define OPTIONS_MODULE beam_alloc_options_erl
#include "options_impl.h"
