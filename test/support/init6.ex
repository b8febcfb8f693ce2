defmodule BeamAlloc.Test.Init6 do
  @moduledoc false
  # test/nifs/init6_nif.c: BEAM_NIF_INIT with ERL_NIF_INIT's six arguments.
  use BeamAlloc.Test.NifModule, nif: "init6_nif", stubs: ~w(loads_seen/0 leaks/0)
end
