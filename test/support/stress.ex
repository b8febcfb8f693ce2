defmodule BeamAlloc.Test.Stress do
  @moduledoc false
  # The process-wide general purpose allocator under concurrent use
  # (test/nifs/stress_nif.c).
  use BeamAlloc.Test.NifModule, nif: "stress_nif"

  def block_new(_size, _tag), do: :erlang.nif_error(:not_loaded)
  def block_new_dirty(_size, _tag), do: :erlang.nif_error(:not_loaded)
  def block_free(_block), do: :erlang.nif_error(:not_loaded)
  def block_free_dirty(_block), do: :erlang.nif_error(:not_loaded)
  def churn(_iterations, _seed), do: :erlang.nif_error(:not_loaded)
  def churn_dirty(_iterations, _seed), do: :erlang.nif_error(:not_loaded)
  def detect_leaks, do: :erlang.nif_error(:not_loaded)
  def live_blocks, do: :erlang.nif_error(:not_loaded)
  def misuse_count, do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
