/* The options NIFs for BeamAlloc.Test.Options, which loads them with
 * `use BeamAlloc.Nif, nifs: [...]` (test/support/options.ex). */
#define OPTIONS_MODULE Elixir.BeamAlloc.Test.Options
#include "options_impl.h"
