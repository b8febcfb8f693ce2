defmodule BeamAlloc.DeepStackTest do
  # A block allocated deep inside another library's code (SQLite's malloc
  # is often more than 6 calls below sqlite3_exec): the frames leak_check
  # keeps all fell inside the library, and the report named none of the
  # NIF's lines. The walk goes on to the NIF's first frame and keeps it
  # last, after a marker of the frames it skipped. (The library is
  # test/nifs/foreign/deep.c, built without frame pointers, as C libraries
  # are.) Not async: the tests read BeamAlloc.Reporter.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import BeamAlloc.Test.Reports, only: [report: 1]

  alias BeamAlloc.Reporter

  @source "test/nifs/deep_stack_nif.c"

  setup do
    Reporter.take()
    :ok
  end

  defp leak_of(fun) do
    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory leak/, fn -> apply(DeepStackNif, fun, []) end
      send(self(), {:leak, report("leak: 24 bytes")})
    end)

    assert_received {:leak, leak}
    leak
  end

  defp own_line, do: BeamAlloc.Test.Reports.line_of(@source, "deep leak")

  # The library's first frames (kept - 2 of them), the gap in place of
  # the rest, then the NIF's line (the function holding the call, and any
  # it was inlined into).
  defp gap_then_own_line(leak, kept) do
    [library, own] = String.split(leak, " <- ... (frames skipped) <- ")
    assert library =~ ~r/allocated from deep_level \(/, leak
    assert length(String.split(library, " <- ")) == kept - 2, leak

    if BeamAlloc.Symbolizer.with_libdw?() do
      assert own =~ ~r/^leak_at_depth \(#{@source}:#{own_line()}\)/, leak
    else
      assert own =~ ~r/^deep_stack_nif\.so\+0x[0-9a-f]+$/, leak
    end

    refute own =~ "glue"
  end

  test "a leak deeper in a library than the frames kept names the NIF's line, after a gap" do
    gap_then_own_line(leak_of(:leak_deep), 6)
  end

  test "with .frames = 16, a library deeper still" do
    gap_then_own_line(leak_of(:leak_deep_16), 16)
  end

  test "a leak whose frames reach the NIF's own is as before: no gap" do
    leak = leak_of(:leak_shallow)
    refute leak =~ "skipped"

    if BeamAlloc.Symbolizer.with_libdw?() do
      assert leak =~ ~r/ <- leak_at_depth \(#{@source}:#{own_line()}\) <- leak_shallow /, leak
    end
  end
end
