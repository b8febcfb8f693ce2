defmodule AdaptersNif do
  @moduledoc false
  # zlib and zstd through beam_alloc's ready-made hooks
  # (test/nifs/adapters_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "adapters_nif",
    stubs: ~w(zlib_compress/1 zlib_compress_checked/1 zlib_uncompress/1
              zlib_uncompress_checked/1 zlib_leak/0 zlib_end_forgotten/0
              zstd_compress/2
              zstd_compress_checked/2 zstd_decompress/1
              zstd_decompress_checked/1 stream_new/1 streams_freed/0
              take_reports/0)
end
