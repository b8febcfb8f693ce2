/* lines.h built as no_debug (see the Makefile). */
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.NoDebug
#include "lines.h"
