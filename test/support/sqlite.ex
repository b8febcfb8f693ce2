defmodule SqliteNif do
  @moduledoc false
  # SQLite through <beam_alloc/sqlite3.h> (test/nifs/sqlite_nif.c). SQLite's
  # allocator is process-wide: only one test module calls these.
  use BeamAlloc.Test.NifModule,
    nif: "sqlite_nif",
    stubs: ~w(start_gpa/0 start_process_wide/0 use_again/0 open/0 populate/1 query/0 close/0
              shutdown/0 roundtrip/1 database/1 leak_connection/0 leak_connection_16/0
              take_reports/0)
end
