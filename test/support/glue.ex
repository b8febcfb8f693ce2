defmodule BeamAlloc.Test.Glue do
  @moduledoc false
  # The NIF glue beyond the guide (test/nifs/glue_nif.c).
  use BeamAlloc.Test.NifModule, nif: "glue_nif"

  def allocator_is_raw, do: :erlang.nif_error(:not_loaded)
  def allocator_is_raw_dirty_cpu, do: :erlang.nif_error(:not_loaded)
  def allocator_is_raw_dirty_io, do: :erlang.nif_error(:not_loaded)
  def allocator_in_leak_check, do: :erlang.nif_error(:not_loaded)
  def raw_allocator_is_raw, do: :erlang.nif_error(:not_loaded)
  def raw_uses_allocator, do: :erlang.nif_error(:not_loaded)
  def alloc_aligned(_kind, _size, _alignment), do: :erlang.nif_error(:not_loaded)
  def sized_alloc(_kind, _count, _elem_size), do: :erlang.nif_error(:not_loaded)
  def failing_alloc(_fail_index), do: :erlang.nif_error(:not_loaded)
  def allocator_is_custom, do: :erlang.nif_error(:not_loaded)
  def custom_alloc(_size), do: :erlang.nif_error(:not_loaded)
  def custom_alloc_dirty(_size), do: :erlang.nif_error(:not_loaded)
  def composed_clean(_size), do: :erlang.nif_error(:not_loaded)
  def composed_leaky(_size), do: :erlang.nif_error(:not_loaded)
  def uint_list(_width), do: :erlang.nif_error(:not_loaded)
  def raise_exception(_module, _message), do: :erlang.nif_error(:not_loaded)
  def error_tuple(_reason), do: :erlang.nif_error(:not_loaded)
  def current_function, do: :erlang.nif_error(:not_loaded)
  def raw_current_function, do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
