/* lines.h built as stripped (see the Makefile): the test loads a copy
 * that it strips first. */
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.Stripped
#include "lines.h"
