defmodule BeamAlloc.CxxTest do
  # <beam_alloc.hpp>: STL and pmr containers inside a leak-checked NIF.
  use ExUnit.Case, async: true

  test "std::vector, std::map and std::pmr containers give back everything" do
    n = 20_000
    expected = Enum.sum(0..(n - 1)) + 2 * div(n, 10)
    assert CxxNif.containers(n) == expected
  end

  test "a block the C++ code keeps is the call's leak" do
    CxxNif.take_reports()

    assert_raise RuntimeError, "memory leak detected in function `CxxNif.leak/0`", fn ->
      CxxNif.leak()
    end

    assert Enum.any?(CxxNif.take_reports(), &(&1 =~ "leak: 800 bytes"))
  end
end
