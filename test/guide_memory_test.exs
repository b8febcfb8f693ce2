defmodule BeamAlloc.GuideMemoryTest do
  # The guide's "tracking memory" examples. They measure the whole VM's
  # memory, so they run alone (async: false runs after every async module).
  # Even alone, the VM frees memory of its own now and then (deferred
  # deallocations, other schedulers): each measurement is tried a few times
  # and must hold cleanly once.
  use ExUnit.Case, async: false

  import BeamAlloc.Test.Guide

  defp holds_once?(attempts \\ 5, measure) do
    Enum.any?(1..attempts, fn _ ->
      Process.sleep(100)
      measure.()
    end)
  end

  describe "tracking memory" do
    test "raw allocations are tracked" do
      assert holds_once?(fn ->
               start = :erlang.memory()[:total]
               :ok = raw_global_alloc()
               grown = :erlang.memory()[:total] - start
               :ok = raw_global_free()
               grown >= 1_000_000
             end)
    end

    test "raw allocations count as system memory and go back when freed" do
      assert holds_once?(fn ->
               start = :erlang.memory(:system)
               :ok = raw_global_alloc()
               grown = :erlang.memory(:system) - start
               :ok = raw_global_free()
               grown >= 1_000_000 and :erlang.memory(:system) - start < 1_000_000
             end)
    end

    test "malloc memory is not tracked" do
      assert holds_once?(fn ->
               start = :erlang.memory()[:total]
               :ok = c_malloc()
               grown = :erlang.memory()[:total] - start
               :ok = c_free()
               grown <= 1_000_000
             end)
    end
  end
end
