/* lines.h built as lto (see the Makefile). */
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.Lto
#include "lines.h"
