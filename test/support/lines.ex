# The lines/ libraries (test/nifs/lines/): one source under several build
# flags, for test/lines_test.exs.
for {module, library} <- [
      {BeamAlloc.Test.Lines.SplitDwarf, "lines/split_dwarf_nif"},
      {BeamAlloc.Test.Lines.Lto, "lines/lto_nif"},
      {BeamAlloc.Test.Lines.NoDebug, "lines/no_debug_nif"},
      {BeamAlloc.Test.Lines.OmitFp, "lines/omit_fp_nif"},
      {BeamAlloc.Test.Lines.NoDebugCxx, "lines/no_debug_cxx_nif"}
    ] do
  defmodule module do
    @moduledoc false
    use BeamAlloc.Nif, otp_app: :beam_alloc, library: library

    use BeamAlloc.Test.NifModule,
      stubs:
        ~w(inlined_double_free/0 tail_double_free/0 leak/0 uses_null/0 foreign_free/0 stack_words_free/0)
  end
end

# Loaded by the tests from a copy (which some replace on disk): load/1
# takes the copy's path (without .so).
for module <- [
      BeamAlloc.Test.Lines.Plain,
      BeamAlloc.Test.Lines.NoBuildId,
      BeamAlloc.Test.Lines.NoBuildIdKept,
      BeamAlloc.Test.Lines.Stripped
    ] do
  defmodule module do
    @moduledoc false
    use BeamAlloc.Test.NifModule,
      stubs:
        ~w(inlined_double_free/0 tail_double_free/0 leak/0 uses_null/0 foreign_free/0 stack_words_free/0)

    def load(path), do: :erlang.load_nif(String.to_charlist(path), 0)
  end
end
