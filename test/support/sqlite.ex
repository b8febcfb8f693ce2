defmodule SqliteNif do
  @moduledoc false
  # SQLite through <beam_alloc/sqlite3.h> (test/nifs/sqlite_nif.c). SQLite's
  # allocator is process-wide: only one test module calls these.
  use BeamAlloc.Test.NifModule, nif: "sqlite_nif"

  def start_gpa, do: :erlang.nif_error(:not_loaded)
  def use_again, do: :erlang.nif_error(:not_loaded)
  def open, do: :erlang.nif_error(:not_loaded)
  def populate(_rows), do: :erlang.nif_error(:not_loaded)
  def query, do: :erlang.nif_error(:not_loaded)
  def close, do: :erlang.nif_error(:not_loaded)
  def shutdown, do: :erlang.nif_error(:not_loaded)
  def roundtrip(_rows), do: :erlang.nif_error(:not_loaded)
  def database(_rows), do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
