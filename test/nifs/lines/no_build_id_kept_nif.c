/* lines.h built as no_build_id_kept (see the Makefile): a library without
 * a build ID that stays as it was loaded, from a directory the test names
 * (on btrfs, where stat and /proc/self/maps name different devices). */
#define LINES_MODULE Elixir.BeamAlloc.Test.Lines.NoBuildIdKept
#include "lines.h"
