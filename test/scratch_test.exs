defmodule BeamAlloc.ScratchTest do
  # BEAM_NIF(name, .scratch = true): beam_allocator is an arena over the
  # NIF's allocator for the call, given back in one step at return.
  use ExUnit.Case, async: true

  alias BeamAlloc.Test.Scratch

  describe "a scratch NIF" do
    test "allocates without freeing and returns normally" do
      assert Scratch.list(5) == [0, 1, 2, 3, 4]
      assert Scratch.list(0) == []
      assert length(Scratch.list(100_000)) == 100_000
    end

    test "works on a dirty scheduler" do
      assert Scratch.list_dirty(3) == [0, 1, 2]
    end

    test "has an arena over the raw allocator as beam_allocator" do
      assert Scratch.allocator_kind() == :arena_over_raw
    end

    test "gives every chunk back to its allocator when the call returns" do
      before = Scratch.counted()

      for n <- [1, 10, 100] do
        # During the call the arena holds chunks of the counting allocator...
        assert {blocks, bytes} = Scratch.counted_churn(n)
        assert blocks > elem(before, 0)
        assert bytes >= div(n * (n + 1), 2) * 1024
        # ...and after it, none.
        assert {live_blocks, live_bytes, _} = Scratch.counted()
        assert {live_blocks, live_bytes} == {elem(before, 0), elem(before, 1)}
      end
    end

    test "takes few chunks for many blocks" do
      {_, _, allocs_before} = Scratch.counted()
      assert {_, _} = Scratch.counted_churn(100)
      {_, _, allocs_after} = Scratch.counted()
      # 100 blocks, 5 MB in all: the arena's doubling chunks, not 100 calls.
      assert allocs_after - allocs_before < 20
    end

    test "serves alignments the raw allocator cannot" do
      for alignment <- [16, 64, 4096] do
        assert {:ok, address} = Scratch.aligned(alignment)
        assert rem(address, alignment) == 0
      end
    end

    test "reuses the newest block once it is freed" do
      assert Scratch.free_newest()
    end

    test "never leaves beam_allocator pointing at a finished call's arena" do
      for _ <- 1..200 do
        assert [0] = Scratch.list(1)
        assert :ok = Scratch.raw_uses_allocator()
      end
    end

    test "raises ArgumentError on bad arguments" do
      assert_raise ArgumentError, fn -> Scratch.list(-1) end
      assert_raise ArgumentError, fn -> Scratch.aligned(3) end
    end
  end

  describe "a scratch NIF with leak_check" do
    test "puts the arena over the checking instance, and nothing in it leaks" do
      Scratch.take_reports()
      assert Scratch.checked()
      assert Scratch.take_reports() == []
    end

    test "still catches a block taken beside the arena" do
      message = "memory leak detected in function `BeamAlloc.Test.Scratch.checked_escape/0`"
      assert_raise RuntimeError, message, fn -> Scratch.checked_escape() end
      assert Enum.any?(Scratch.take_reports(), &(&1 =~ "leak: 8 bytes"))
    end
  end
end
