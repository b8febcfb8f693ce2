defmodule BeamAlloc.Test.Bursts do
  @moduledoc false
  # Repeated identical bursts through each path (test/nifs/bursts_nif.c,
  # test/bursts_test.exs).
  use BeamAlloc.Test.NifModule,
    nif: "bursts_nif",
    stubs: ~w(gpa_burst/2 gpa_burst_dirty/2 named_burst/2 threads_burst/3
              malloc_burst/2 usage/0 named_usage/0 collect/0)
end
