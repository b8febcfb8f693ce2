defmodule DeepStackNif do
  @moduledoc false
  # Leaks allocated deep inside another library's code
  # (test/nifs/deep_stack_nif.c, test/nifs/foreign/deep.c).
  use BeamAlloc.Test.NifModule,
    nif: "deep_stack_nif",
    stubs: ~w(leak_deep/0 leak_shallow/0 leak_deep_16/0)
end
