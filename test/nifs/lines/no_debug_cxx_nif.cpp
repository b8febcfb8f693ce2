// lines.h built as C++ without -g (see the Makefile): its functions have
// only their mangled names.
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.NoDebugCxx
#include "lines.h"
