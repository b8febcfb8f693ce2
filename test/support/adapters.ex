defmodule AdaptersNif do
  @moduledoc false
  # zlib and zstd through beam_alloc's ready-made hooks
  # (test/nifs/adapters_nif.c).
  use BeamAlloc.Test.NifModule, nif: "adapters_nif"

  def zlib_compress(_data), do: :erlang.nif_error(:not_loaded)
  def zlib_compress_checked(_data), do: :erlang.nif_error(:not_loaded)
  def zlib_uncompress(_data), do: :erlang.nif_error(:not_loaded)
  def zlib_uncompress_checked(_data), do: :erlang.nif_error(:not_loaded)
  def zlib_leak, do: :erlang.nif_error(:not_loaded)
  def zstd_compress(_data, _level), do: :erlang.nif_error(:not_loaded)
  def zstd_compress_checked(_data, _level), do: :erlang.nif_error(:not_loaded)
  def zstd_decompress(_data), do: :erlang.nif_error(:not_loaded)
  def zstd_decompress_checked(_data), do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
