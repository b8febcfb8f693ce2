defmodule BeamAlloc.Test.Report do
  @moduledoc false
  # Reports through the default hook: BeamAlloc.Reporter and the logger
  # (test/nifs/report_nif.c).
  use BeamAlloc.Test.NifModule, nif: "report_nif"

  def double_free, do: :erlang.nif_error(:not_loaded)
  def overrun, do: :erlang.nif_error(:not_loaded)
  def leaky, do: :erlang.nif_error(:not_loaded)
end
