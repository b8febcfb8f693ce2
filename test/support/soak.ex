defmodule BeamAlloc.Test.Soak do
  @moduledoc false
  # Mixed operations over raw, large and the process-wide general purpose
  # allocator from schedulers and threads of our own (test/nifs/soak_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "soak_nif",
    stubs: ~w(ops/2 ops_dirty/2 thread_ops/2 drain/0 counters/0 stats/0
              gpa_misuse/0 gpa_backing_bytes/0 collect/0 collect_dirty_cpu/0
              collect_dirty_io/0 take_reports/0)
end
