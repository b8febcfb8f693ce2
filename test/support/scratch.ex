defmodule BeamAlloc.Test.Scratch do
  @moduledoc false
  # BEAM_NIF(name, .scratch = true) (test/nifs/scratch_nif.c).
  use BeamAlloc.Test.NifModule, nif: "scratch_nif"

  def list(_count), do: :erlang.nif_error(:not_loaded)
  def list_dirty(_count), do: :erlang.nif_error(:not_loaded)
  def allocator_kind, do: :erlang.nif_error(:not_loaded)
  def counted_churn(_count), do: :erlang.nif_error(:not_loaded)
  def counted, do: :erlang.nif_error(:not_loaded)
  def aligned(_alignment), do: :erlang.nif_error(:not_loaded)
  def free_newest, do: :erlang.nif_error(:not_loaded)
  def checked, do: :erlang.nif_error(:not_loaded)
  def checked_escape, do: :erlang.nif_error(:not_loaded)
  def raw_uses_allocator, do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
