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

  A library built without `-g` still gets its function names (from its
  symbol table); a site that cannot be resolved stays as it was. The
  fault-injection errors of `BeamAlloc.Testing` name their sites the same
  way.
  """

  @on_load :__load_nif__

  # A site: an optional exported name the C side found ("fun ("), the
  # object's base name and the call's offset in it.
  @site ~r/(?:([A-Za-z_$][\w$.]*) \()?([^\s()<>;,]+)\+0x([0-9a-f]+)(\))?/

  @doc false
  def __load_nif__ do
    path = :filename.join(:code.priv_dir(:beam_alloc), ~c"beam_alloc_symbolize")

    # Without the library, sites stay as the reports give them: never a
    # reason to keep the module (and the reporter) from loading.
    _ = :erlang.load_nif(path, 0)
    :ok
  end

  @doc false
  # The NIF: {:ok, [{function | nil, file | nil, line}]} | :error,
  # innermost (inlined) function first.
  def resolve(_object, _offset), do: :erlang.nif_error(:not_loaded)

  @doc """
  `text` with every site (`lib.so+0x1c1b`, or `fun (lib.so+0x1c1b)`)
  written as `function (file.c:line)` where the library's debug information
  says, as `function (lib.so+0x1c1b)` where only its symbols do.
  """
  @spec resolve_sites(String.t()) :: String.t()
  def resolve_sites(text) when is_binary(text) do
    Regex.replace(@site, text, fn whole, exported, object, offset, close ->
      # "fun (" without its ")" is not a site of ours: leave it whole.
      if exported != "" and close == "" do
        whole
      else
        case site(object, String.to_integer(offset, 16)) do
          {:ok, described} -> described
          :error -> whole
        end
      end
    end)
  end

  @doc """
  The function and source line of the call at `offset` in the loaded
  object `object` (a base name, `"my_nif.so"`): `{:ok, "parse
  (c_src/my_nif.c:42)"}`, with the functions inlined there first
  (`"read_int (c_src/my_nif.c:12) <- parse (c_src/my_nif.c:42)"`), or
  `:error` when nothing is known about it.
  """
  @spec site(String.t(), non_neg_integer) :: {:ok, String.t()} | :error
  def site(object, offset) do
    case safe_resolve(object, offset) do
      {:ok, [_ | _] = frames} ->
        if Enum.any?(frames, fn {fun, file, _} -> fun || file end) do
          {:ok, Enum.map_join(frames, " <- ", &frame(&1, object, offset))}
        else
          :error
        end

      _ ->
        :error
    end
  end

  defp frame({fun, file, line}, _object, _offset) when is_binary(file) and line > 0,
    do: "#{function(fun)} (#{relative(file)}:#{line})"

  defp frame({fun, _, _}, object, offset),
    do: "#{function(fun)} (#{object}+0x#{String.downcase(Integer.to_string(offset, 16))})"

  defp safe_resolve(object, offset) do
    resolve(object, offset)
  rescue
    _ -> :error
  end

  # BEAM_NIF(name) puts the body in beam_nif_body_name: the NIF's name
  # is what its author wrote.
  defp function(nil), do: "?"
  defp function("beam_nif_body_" <> name), do: name
  defp function(name), do: name

  defp relative(file) do
    cwd = File.cwd!() <> "/"

    if String.starts_with?(file, cwd),
      do: String.replace_prefix(file, cwd, ""),
      else: file
  end
end
