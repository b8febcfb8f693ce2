/* The options NIFs for BeamAlloc.Test.LoadInfo, a module the tests create
 * and load again and again with bad load_info maps
 * (test/nif_options_test.exs). Reports made before the load callback runs
 * (the refusals) are dropped rather than printed: the tests check the
 * refusal itself here, and the messages through parse_load_info/1. */
#define OPTIONS_MODULE Elixir.BeamAlloc.Test.LoadInfo
#include "options_impl.h"

static void drop_report(void *user, const char *line) {
    (void)user;
    (void)line;
}

__attribute__((constructor)) static void quiet_until_loaded(void) {
    beam_set_report_hook(drop_report, NULL);
}
