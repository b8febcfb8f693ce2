defmodule BeamAlloc.Test.Soak do
  @moduledoc false
  # Mixed operations over raw, large and the process-wide general purpose
  # allocator from schedulers and threads of our own (test/nifs/soak_nif.c).
  use BeamAlloc.Test.NifModule, nif: "soak_nif"

  def ops(_n, _seed), do: :erlang.nif_error(:not_loaded)
  def ops_dirty(_n, _seed), do: :erlang.nif_error(:not_loaded)
  def thread_ops(_n, _seed), do: :erlang.nif_error(:not_loaded)
  def drain, do: :erlang.nif_error(:not_loaded)
  def counters, do: :erlang.nif_error(:not_loaded)
  def stats, do: :erlang.nif_error(:not_loaded)
  def gpa_misuse, do: :erlang.nif_error(:not_loaded)
  def gpa_backing_bytes, do: :erlang.nif_error(:not_loaded)
  def collect, do: :erlang.nif_error(:not_loaded)
  def collect_dirty_cpu, do: :erlang.nif_error(:not_loaded)
  def collect_dirty_io, do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
