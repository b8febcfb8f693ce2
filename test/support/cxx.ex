defmodule CxxNif do
  @moduledoc false
  # C++ containers on beam::allocator and beam::memory_resource
  # (test/nifs/cxx_nif.cpp).
  use BeamAlloc.Test.NifModule, nif: "cxx_nif"

  def containers(_n), do: :erlang.nif_error(:not_loaded)
  def leak, do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
