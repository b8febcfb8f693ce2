defmodule BeamAlloc.VmTest do
  # What a node must survive, each scenario in a VM of its own with 8 normal
  # and 4 dirty CPU schedulers, under a watchdog (timeout -s KILL) that turns
  # a hang into a failure instead of hanging the suite.
  use ExUnit.Case, async: true

  @moduletag timeout: 300_000

  defp run_child(call, seconds) do
    BeamAlloc.Test.ChildVm.run("BeamAlloc.Test.VmScenarios.#{call}", seconds)
  end

  test "resources over the process-wide GPA and leak_check NIFs on every scheduler never hang" do
    {out, status} = run_child("hang(4000)", 90)
    assert status == 0, out
    assert out =~ ~r/calls=\d+/
  end

  # Scenarios that pass when their VM halts with status 0, under a
  # 120 s watchdog each.
  for {name, call} <- [
        {"memory freed elsewhere goes back to the VM while its owners idle", "memory(256)"},
        {"memory freed elsewhere goes back to the VM with no call to collect once the library idles",
         "auto_collect(128)"},
        {"a library kept busy by a trickle of calls still gives back what it holds beyond live",
         "trickle_collect(64)"}
      ] do
    test name do
      {out, status} = run_child(unquote(call), 120)
      assert status == 0, out
    end
  end

  # The same, with a folder of the test's own (TmpDir) for the copy of the
  # library the scenario loads: its VM has no ExUnit to remove one.
  test "a collect reaches every copy of a library loaded for the module (an upgrade's)" do
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_vm_copy")
    {out, status} = run_child("collect_every_copy(64, #{inspect(dir)})", 120)
    assert status == 0, out
  end

  test "BEAM_NIF_INIT expands a module name given as a macro" do
    assert_raise RuntimeError,
                 "memory leak detected in function `BeamAlloc.Test.Vm.leaky/0`",
                 fn -> BeamAlloc.Test.Vm.leaky() end
  end

  test "BeamAlloc.collect/1 gives back what the library's instance does not need" do
    alias BeamAlloc.Test.Vm
    Vm.drop(Vm.hold(50_000, 64), 64)
    assert :ok = BeamAlloc.collect(Vm)
    assert %{live_blocks: 0, backing_bytes: held} = Vm.usage()
    # Metadata only: every slab went back, and so every segment.
    assert held < 64 * 1024

    assert_raise ArgumentError, ~r/no NIF library built with beam_alloc/, fn ->
      BeamAlloc.collect(Enum)
    end
  end

  test "load/purge cycles leave nothing behind" do
    {out, status} = run_child("unload(5)", 90)
    assert status == 0, out
  end
end
