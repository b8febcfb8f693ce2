/* lines.h built as split_dwarf (see the Makefile). */
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.SplitDwarf
#include "lines.h"
