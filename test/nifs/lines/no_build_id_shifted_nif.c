/* lines.h built as no_build_id_shifted (see the Makefile), its lines 1000 on:
 * the file that replaces no_build_id_nif.so under the VM. */
#define LINES_SHIFTED
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.NoBuildId
#include "lines.h"
