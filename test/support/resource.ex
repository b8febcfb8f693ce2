defmodule BeamAlloc.Test.Resource do
  @moduledoc false
  # Resource-scoped allocators (test/nifs/resource_nif.c). Blocks are named
  # by slot numbers in the resource's own table.
  use BeamAlloc.Test.NifModule, nif: "resource_nif"

  def new(_kind), do: :erlang.nif_error(:not_loaded)
  def new_raw(_kind), do: :erlang.nif_error(:not_loaded)
  def new_failing(_kind, _fail_index), do: :erlang.nif_error(:not_loaded)
  def alloc(_res, _size), do: :erlang.nif_error(:not_loaded)
  def alloc_checked(_res, _size), do: :erlang.nif_error(:not_loaded)
  def write(_res, _slot, _offset, _binary), do: :erlang.nif_error(:not_loaded)
  def read(_res, _slot, _offset, _len), do: :erlang.nif_error(:not_loaded)
  def resize(_res, _slot, _new_len), do: :erlang.nif_error(:not_loaded)
  def free(_res, _slot), do: :erlang.nif_error(:not_loaded)
  def aligned(_res, _size, _alignment), do: :erlang.nif_error(:not_loaded)
  def release(_res), do: :erlang.nif_error(:not_loaded)
  def calls_after_release(_res), do: :erlang.nif_error(:not_loaded)
  def usage(_res), do: :erlang.nif_error(:not_loaded)
  def live_count, do: :erlang.nif_error(:not_loaded)
  def is_resource(_term), do: :erlang.nif_error(:not_loaded)
  def pin_across_release(_res, _slot), do: :erlang.nif_error(:not_loaded)
  def keep(_res), do: :erlang.nif_error(:not_loaded)
  def drop_kept, do: :erlang.nif_error(:not_loaded)
  def new_dropped(_kind), do: :erlang.nif_error(:not_loaded)
  def dead_allocator, do: :erlang.nif_error(:not_loaded)
  def churn(_res, _iterations, _seed), do: :erlang.nif_error(:not_loaded)
  def churn_dirty(_res, _iterations, _seed), do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end

defmodule BeamAlloc.Test.ResourcePlain do
  @moduledoc false
  # The same feature from a module using plain ERL_NIF_INIT and
  # beam_resource_init (test/nifs/resource_plain_nif.c).
  use BeamAlloc.Test.NifModule, nif: "resource_plain_nif"

  def new, do: :erlang.nif_error(:not_loaded)
  def alloc(_res, _size), do: :erlang.nif_error(:not_loaded)
  def is_resource(_term), do: :erlang.nif_error(:not_loaded)
  def live_count, do: :erlang.nif_error(:not_loaded)
end
