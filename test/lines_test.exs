defmodule BeamAlloc.LinesTest do
  # Reports name the source line of each call under the build flags a NIF
  # author may have (test/nifs/lines/lines.h, built by the Makefile as one
  # library per set of flags), and name none rather than a wrong one when
  # the library cannot tell: no -g, or its file rebuilt under the VM. Not
  # async: the tests read BeamAlloc.Reporter, which every library shares.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias BeamAlloc.Reporter
  alias BeamAlloc.Test.Lines

  @source "test/nifs/lines/lines.h"

  setup do
    Reporter.take()
    :ok
  end

  defp line_of(marker) do
    @source
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_index(&String.contains?(&1, "/* SITE: #{marker} */"))
    |> Kernel.+(1)
  end

  # The first report that matches pattern, waiting for the reporter.
  defp report(pattern, tries \\ 200) do
    case Enum.find(Reporter.recent(), &(elem(&1, 1) =~ pattern)) do
      {_, line} ->
        line

      nil when tries > 0 ->
        Process.sleep(10)
        report(pattern, tries - 1)

      nil ->
        flunk("no report matching #{inspect(pattern)} in #{inspect(Reporter.recent())}")
    end
  end

  defp inlined_free_named(module) do
    capture_log(fn ->
      assert_raise RuntimeError, ~r/double free/, fn -> module.inlined_double_free() end

      assert report("double free") =~
               "called from lines_free (#{@source}:#{line_of("inlined free")}) <- " <>
                 "inlined_double_free (#{@source}:#{line_of("second free")})"
    end)
  end

  # The skeleton unit in the object has the lines but no functions; they
  # are in the .dwo: the inlined function's line was named as the NIF,
  # and the NIF's own line was lost.
  test "split DWARF (-gsplit-dwarf): an inlined function and its caller's line" do
    inlined_free_named(Lines.SplitDwarf)
  end

  # GCC's LTO refers from each function's DIE to one in another unit:
  # dwarf_getscopes found no scope (clang's LTO passed before).
  test "LTO (-flto): an inlined function and its caller's line" do
    inlined_free_named(Lines.Lto)
  end
end
