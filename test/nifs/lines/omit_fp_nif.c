/* lines.h built as omit_fp (see the Makefile). */
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.OmitFp
#include "lines.h"
