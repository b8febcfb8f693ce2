defmodule BeamAlloc.ReporterBoundTest do
  # The reporter reads who made each report (its unread queue) before it
  # numbers and keeps them; past the bound it keeps the oldest read at
  # once. Unbounded, a long-running node whose reporter got less CPU than
  # its reports needed (a soak: hundreds of processes calling NIFs, a
  # misuse flood, resource threads' double frees, hot upgrades) read more
  # than it kept, and the queue grew by about 70 reports a second for good
  # (13,562 after 3 minutes, the reporter at 7.6 MB and rising). In a VM
  # of its own: the reports are synthetic, and would count for other tests.
  use ExUnit.Case, async: true

  @moduletag timeout: 120_000

  test "the reports read and not yet kept stay bounded however many wait" do
    {out, status} =
      BeamAlloc.Test.ChildVm.run("BeamAlloc.Test.ReporterBound.unread_after_burst(20_000)", 60)

    assert status == 0, out
    [_, unread] = Regex.run(~r/unread=(\d+)/, out)
    assert String.to_integer(unread) <= BeamAlloc.Reporter.unread_max(), out
  end
end
