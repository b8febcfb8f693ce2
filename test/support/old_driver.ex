defmodule BeamAlloc.Test.OldDriver do
  @moduledoc false
  # A fault-injection driver of an older version, offered to this
  # library's own copy (test/nifs/old_driver_nif.c).
  use BeamAlloc.Nif, otp_app: :beam_alloc, library: "old_driver_nif"

  use BeamAlloc.Test.NifModule, stubs: ~w(attach/1 detach/0 call/0 counts/0)
end
