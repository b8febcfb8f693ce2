defmodule BeamAlloc.HangTest do
  # The strongest scenario of a hang hunt, kept cheap: resources (GPA and
  # arena, over the process-wide, a named and the raw allocator, and over
  # each other) whose release hooks join threads churning through them,
  # released explicitly and by the garbage collector; floods of misuse
  # reports; yielding leak_check and scratch calls killed in the middle;
  # BeamAlloc.stats/1, collect/1, the collector every 20 ms and report
  # takes; forks from a NIF and os:cmd/1; all at once, in a VM of its own
  # (8 normal and 4 dirty CPU schedulers) under a watchdog (timeout -s
  # KILL) that turns a hang into a failure instead of hanging the suite.
  use ExUnit.Case, async: true

  @moduletag timeout: 120_000

  test "allocators composed and used from every kind of thread at once never hang the VM" do
    storm("[:resources, :flood, :yield, :observe, :fork, :os_cmd]", 60)
  end

  # A new version of the NIF module loaded again and again (soft_purge,
  # then code:load_file/1) while its NIFs run from schedulers, dirty
  # schedulers and the resources' threads. A worker stuck a minute after
  # the deadline makes the child print what every process was doing and
  # halt with 4; the watchdog backs that up.
  test "hot upgrades of a NIF module while its NIFs run never hang the VM" do
    storm("[:resources, :upgrade]", 90)
  end

  # stats/1 loaded the module first, always: during an upgrade's gap
  # (deleted, purged, not loaded yet) its load raced the upgrade's
  # code:load_file/1, which OTP 25's code server then never answered
  # (erlang/otp#7466): the upgrade hung (an audit, 3 runs of 3).
  test "stats/1 in a loop while the module is deleted and loaded again never hangs the upgrade" do
    {out, status} =
      BeamAlloc.Test.ChildVm.run("BeamAlloc.Test.HangScenarios.stats_during_reloads(300)", 30)

    assert status == 0, out
    assert out =~ "reloads=300"
  end

  # A 2 s storm of parts in a child VM under a watchdog of seconds: it
  # must end (status 0) having made rounds.
  defp storm(parts, seconds) do
    call = "BeamAlloc.Test.HangScenarios.storm(2_000, #{parts})"
    {out, status} = BeamAlloc.Test.ChildVm.run(call, seconds)
    assert status == 0, out
    assert out =~ ~r/rounds=[1-9]/
  end
end
