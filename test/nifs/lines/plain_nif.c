/* lines.h built as plain (see the Makefile). */
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.Plain
#include "lines.h"
