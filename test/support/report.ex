defmodule BeamAlloc.Test.Report do
  @moduledoc false
  # Reports through the default hook: BeamAlloc.Reporter and the logger
  # (test/nifs/report_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "report_nif",
    stubs: ~w(double_free/0 double_free_then_yield/0 overrun/0 leaky/0
              leaky_then_yield/0 yield_raise/1 double_frees/1
              thread_double_frees/1 waits_ran_out/0)
end
