defmodule BeamAlloc.Test.Guide do
  @moduledoc false
  # The allocator guide's examples (test/nifs/guide_nif.c).
  use BeamAlloc.Test.NifModule, nif: "guide_nif"

  def allocate_raw(_count), do: :erlang.nif_error(:not_loaded)
  def raw_global_alloc, do: :erlang.nif_error(:not_loaded)
  def raw_global_free, do: :erlang.nif_error(:not_loaded)
  def c_malloc, do: :erlang.nif_error(:not_loaded)
  def c_free, do: :erlang.nif_error(:not_loaded)
  def allocate_large_aligned(_count), do: :erlang.nif_error(:not_loaded)
  def leaks, do: :erlang.nif_error(:not_loaded)
  def noleak, do: :erlang.nif_error(:not_loaded)
  def basic, do: :erlang.nif_error(:not_loaded)
  def with_arena, do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
