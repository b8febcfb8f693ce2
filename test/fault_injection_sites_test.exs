defmodule BeamAlloc.FaultInjectionSitesTest do
  # A check resolves an allocation's site (dirty NIF calls into the
  # symbolizer, one per frame) only for a problem that names it. It used to
  # resolve every failing allocation's site, problem or not: on a VM busy
  # with other processes each of those calls waited for a scheduler, and a
  # check of 9 allocations took 6-14 s beside two processes calling a NIF
  # (3 ms idle). Not async: call counts are global.
  use ExUnit.Case, async: false

  import BeamAlloc.Testing, only: [check_all_allocation_failures: 1]

  alias BeamAlloc.AllocationFailureError
  alias BeamAlloc.Test.Faults

  setup_all do
    Code.ensure_loaded!(Faults)
    Code.ensure_loaded!(:beam_alloc_symbolizer)
    :ok
  end

  # The count is the VM's: the reporter resolves sites too. A call to it
  # first has it done with every report of the tests before (found in
  # review: one still in its mailbox would have counted here).
  defp resolutions(fun) do
    _ = BeamAlloc.Reporter.recent()
    mfa = {:beam_alloc_symbolizer, :resolve_sites, 1}
    1 = :erlang.trace_pattern(mfa, true, [:call_count])

    try do
      result =
        try do
          fun.()
        rescue
          e in AllocationFailureError -> e
        end

      {:call_count, n} = :erlang.trace_info(mfa, :call_count)
      {result, n}
    after
      :erlang.trace_pattern(mfa, false, [:call_count])
    end
  end

  test "a passing check resolves no site" do
    assert {{:ok, 4}, 0} =
             resolutions(fn -> check_all_allocation_failures(fn -> Faults.correct(3) end) end)
  end

  test "a problem still names its allocation's site, resolved" do
    {%AllocationFailureError{problems: [problem]}, n} =
      resolutions(fn -> check_all_allocation_failures(&Faults.swallows/0) end)

    assert %{kind: :swallowed, request: %{index: 1, site: site}} = problem
    assert site =~ ~r/faults_nif\.c:\d+/
    assert n >= 1
  end
end
