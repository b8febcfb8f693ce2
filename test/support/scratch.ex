defmodule BeamAlloc.Test.Scratch do
  @moduledoc false
  # BEAM_NIF(name, .scratch = true) (test/nifs/scratch_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "scratch_nif",
    stubs: ~w(list/1 list_dirty/1 allocator_kind/0 counted_churn/1 counted/0
              aligned/1 free_newest/0 checked/0 checked_escape/0 overrun/0 overrun_second/0
              raw_uses_allocator/0 take_reports/0)
end
