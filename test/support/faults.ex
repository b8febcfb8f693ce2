defmodule BeamAlloc.Test.Faults do
  @moduledoc false
  # NIFs for BeamAlloc.Testing.check_all_allocation_failures/2, correct and
  # buggy ones (test/nifs/faults_nif.c).
  use BeamAlloc.Test.NifModule, nif: "faults_nif"

  def correct(_count), do: :erlang.nif_error(:not_loaded)
  def correct_dirty(_count), do: :erlang.nif_error(:not_loaded)
  def correct_raising, do: :erlang.nif_error(:not_loaded)
  def leaky_on_failure, do: :erlang.nif_error(:not_loaded)
  def swallows, do: :erlang.nif_error(:not_loaded)
  def nondeterministic, do: :erlang.nif_error(:not_loaded)
  def reset_nondeterministic, do: :erlang.nif_error(:not_loaded)
  def grow, do: :erlang.nif_error(:not_loaded)
  def scratch_work, do: :erlang.nif_error(:not_loaded)
  def checked_leaky, do: :erlang.nif_error(:not_loaded)
  def buffer_new, do: :erlang.nif_error(:not_loaded)
  def buffer_grow(_buffer), do: :erlang.nif_error(:not_loaded)
  def buffers_freed, do: :erlang.nif_error(:not_loaded)
  def allocator_is_raw, do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
