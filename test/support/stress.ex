defmodule BeamAlloc.Test.Stress do
  @moduledoc false
  # The process-wide general purpose allocator under concurrent use
  # (test/nifs/stress_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "stress_nif",
    stubs: ~w(block_new/2 block_new_dirty/2 block_free/1 block_free_dirty/1
              churn/2 churn_dirty/2 detect_leaks/0 live_blocks/0
              misuse_count/0 take_reports/0 names_setup/0 names_churn/0
              names_stop/0 names_teardown/0)
end
