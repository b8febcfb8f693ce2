/* lines.h built as no_build_id (see the Makefile). */
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.NoBuildId
#include "lines.h"
