defmodule BeamAlloc.FaultInjectionMemoryTest do
  # What a finished check_all_allocation_failures/2 leaves behind. The
  # driver never frees a session (an allocator value a NIF stored may still
  # point at it), so each check keeps a small fixed part for the life of
  # the VM; it once kept the misuse records too, 5 KB a check. Runs alone:
  # it measures the VM's system memory.
  use ExUnit.Case, async: false

  alias BeamAlloc.Test.Faults

  @checks 3000

  test "a finished check keeps less than 1 KB of VM memory" do
    check = fn ->
      {:ok, 3} =
        BeamAlloc.Testing.check_all_allocation_failures(fn -> Faults.correct(2) end,
          modules: [Faults]
        )
    end

    # Warm up (the session registry's array, atoms, code), then measure.
    # The VM frees memory of its own now and then: the bound must hold
    # once in a few tries; a leak of a few KB a check fails every one.
    for _ <- 1..200, do: check.()

    tries =
      Enum.reduce_while(1..3, [], fn _, tries ->
        :erlang.garbage_collect()
        before = :erlang.memory(:system)
        for _ <- 1..@checks, do: check.()
        :erlang.garbage_collect()
        Process.sleep(100)
        grown = :erlang.memory(:system) - before
        if grown < 1024 * @checks, do: {:halt, []}, else: {:cont, [grown | tries]}
      end)

    assert tries == [],
           "system memory grew by #{inspect(Enum.reverse(tries))} bytes over " <>
             "#{@checks} checks in each try"
  end
end
