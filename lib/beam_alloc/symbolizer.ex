defmodule BeamAlloc.Symbolizer do
  @moduledoc """
  Source lines for the code sites in beam_alloc's reports.

  The C side names a site the way it can cheaply on any thread: the NIF
  library and the offset of the call in it, `my_nif.so+0x1c1b` (what
  `addr2line -e my_nif.so 0x1c1b` takes). `BeamAlloc.Reporter` passes every
  report through `resolve_sites/1`, which reads the libraries' debug
  information (DWARF, through elfutils' libdw, on a dirty IO scheduler) and
  writes each site as its function and source line:

      my_nif.so+0x1c1b            ->  parse (c_src/my_nif.c:42)

  Functions inlined at the call come first (`read_int (c_src/my_nif.c:12)
  <- parse (c_src/my_nif.c:42)`). A library built without `-g` still gets
  its function names (from its symbol table); a site that cannot be
  resolved stays as it was. A text none of whose sites got a source line
  says why at its end: `(no source lines: my_nif.so has no debug
  information for them: build it with -g and keep its debug
  information)`, `(no source lines:
  my_nif.so is stripped: build it with -g and keep its symbols)`, `(no
  source lines: the frames kept are all in libz.so.1, which has none: an
  allocation on a thread of its own, or over 64 frames inside it)` (a versioned C
  library's sites alone: the stack kept ended inside it; of a misuse report,
  which names its caller alone, `(no source lines: the caller is in
  libxml2.so.2, which has none: a misuse report names its caller alone)`),
  or `(no source
  lines: my_nif.so changed on disk since it was loaded)` (the file's lines
  would be another build's). Two loaded libraries with the same file name
  (`nif.so` of two applications) are told apart by path: the C side then
  names the object by its full path, and a bare `nif.so+0x..` that could
  be either stays as it is (no line rather than the other library's).
  The fault-injection errors of
  `BeamAlloc.Testing` name their sites the same way. The work is done by
  the Erlang module `beam_alloc_symbolizer`, which Erlang code calls
  directly.
  """

  @doc """
  `text` with every site (`lib.so+0x1c1b`, or `fun (lib.so+0x1c1b)`)
  written as `function (file.c:line)` where the library's debug information
  says, as `function (lib.so+0x1c1b)` where only its symbols do.
  """
  @spec resolve_sites(String.t()) :: String.t()
  def resolve_sites(text) when is_binary(text), do: :beam_alloc_symbolizer.resolve_sites(text)

  def resolve_sites(other) do
    raise ArgumentError, "expected a report's text (a binary), got: #{inspect(other)}"
  end

  @doc """
  Whether sites can become source lines here: `true` when the symbolizer's
  NIF is loaded and was built with libdw (elfutils; Debian's `libdw-dev`),
  `false` when it was built without (sites then stay `lib.so+0x1c1b`).
  """
  @spec with_libdw?() :: boolean
  defdelegate with_libdw?(), to: :beam_alloc_symbolizer, as: :with_libdw

  @doc """
  The function and source line of the call at `offset` in the loaded
  object `object` (a base name, `"my_nif.so"`): `{:ok, "parse
  (c_src/my_nif.c:42)"}`, or `:error` when nothing is known about it.
  Raises `ArgumentError` for an offset outside 0..2^64-1 or an object that
  is not a binary.
  """
  @spec site(String.t(), 0..0xFFFF_FFFF_FFFF_FFFF) :: {:ok, String.t()} | :error
  def site(object, offset)
      when is_binary(object) and is_integer(offset) and offset in 0..0xFFFF_FFFF_FFFF_FFFF,
      do: :beam_alloc_symbolizer.site(object, offset)

  def site(object, offset) do
    raise ArgumentError,
          "expected an object's name (a binary) and an offset (an integer " <>
            "from 0 to 2^64-1), got: #{inspect(object)} and #{inspect(offset)}"
  end
end
