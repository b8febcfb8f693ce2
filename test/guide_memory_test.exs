defmodule BeamAlloc.GuideMemoryTest do
  # The guide's "tracking memory" examples. They measure the whole VM's
  # memory, so they run alone (async: false runs after every async module).
  use ExUnit.Case, async: false

  import BeamAlloc.Test.Guide

  describe "tracking memory" do
    test "raw allocations are tracked" do
      Process.sleep(100)
      start = :erlang.memory()[:total]
      assert :ok = raw_global_alloc()
      assert :erlang.memory()[:total] - start >= 1_000_000
      assert :ok = raw_global_free()
    end

    test "raw allocations count as system memory and go back when freed" do
      Process.sleep(100)
      start = :erlang.memory(:system)
      assert :ok = raw_global_alloc()
      assert :erlang.memory(:system) - start >= 1_000_000
      assert :ok = raw_global_free()
      assert :erlang.memory(:system) - start < 1_000_000
    end

    test "malloc memory is not tracked" do
      Process.sleep(100)
      start = :erlang.memory()[:total]
      assert :ok = c_malloc()
      assert :erlang.memory()[:total] - start <= 1_000_000
      assert :ok = c_free()
    end
  end
end
