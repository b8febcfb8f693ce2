defmodule ElixirNif do
  @moduledoc """
  A NIF library built with beam_alloc (`c_src/elixir_nif.c`, with a C++
  part in `c_src/checksum.cpp`), compiled by the `:beam_alloc` Mix compiler
  into `priv/elixir_nif.so` under `_build`, and loaded by `use BeamAlloc.Nif`.

  `leaky/0` is leak-checked from here, without touching the C code.
  """
  use BeamAlloc.Nif, library: "elixir_nif", nifs: [leaky: [leak_check: true]]

  @doc "zlib-compresses data: `{:ok, compressed}` or `{:error, :enomem}`."
  def compress(_data), do: :erlang.nif_error(:not_loaded)

  @doc "The integers of a comma-separated list: `{:ok, [integer]}` or `{:error, reason}`."
  def parse_ints(_text), do: :erlang.nif_error(:not_loaded)

  @doc "Adler-32 of data, computed in C++."
  def checksum(_data), do: :erlang.nif_error(:not_loaded)

  @doc "Allocates 32 bytes and forgets them (leak-checked: raises)."
  def leaky, do: :erlang.nif_error(:not_loaded)

  @doc "Holds `n` bytes from `beam_raw_allocator` until `drop/0`."
  def keep(_n), do: :erlang.nif_error(:not_loaded)

  @doc "Frees what `keep/1` holds."
  def drop, do: :erlang.nif_error(:not_loaded)
end
