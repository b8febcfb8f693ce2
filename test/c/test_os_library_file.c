/* Keeping this copy of the library mapped (src/os/library_file.c), which
 * beam_sqlite3_use asks for: the NIF glue's last unload then leaves the
 * copy's allocators to the hooks SQLite holds. The dlopen itself is
 * tested where it matters, on a NIF library (test/sqlite_test.exs). */
#include "check.h"

#include <beam_alloc.h>

#include "os/library_file.h"

/* The test program is an executable: no dlopen finds it by its name, and
 * nothing ever unmaps its code. Asked to keep it, the copy counts as kept
 * all the same (so does one the C library never unloads, which musl's
 * dlopen of a file replaced since cannot find): its allocators must stay
 * while the hooks in it can run. Before, the answer false left the flag
 * unset, and a NIF's last unload would have torn the process-wide
 * instance down under SQLite. */
TEST(os_library_kept_even_where_no_dlopen_can_hold_it) {
    (void)beam_internal_keep_mapped();
    CHECK(beam__library_kept_mapped());
    /* Asked again (sqlite3_shutdown, then beam_sqlite3_use): still kept. */
    (void)beam_internal_keep_mapped();
    CHECK(beam__library_kept_mapped());
}
