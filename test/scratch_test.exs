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

    # A write past the arena's chunk is found when the arena gives the
    # chunk back to the checking instance at the call's end. The report
    # gave the chunk's length (4096) for the block's, which the NIF never
    # allocated, and named the glue's frames as its caller ("called from
    # unstack_allocators (glue.c) <- call_composed (glue.c)"): it names the
    # chunk as such, the NIF's last block in it and where the write was,
    # and the call at whose end it was found.
    defp overrun_report(fun) do
      Scratch.take_reports()

      message =
        "memory misuse detected in function `BeamAlloc.Test.Scratch.#{fun}/0`: " <>
          "write past the end of a block"

      assert_raise RuntimeError, message, fn -> apply(Scratch, fun, []) end
      assert [line] = Scratch.take_reports()
      refute line =~ "called from"
      refute line =~ "length 4096"
      assert line =~ ", found when the NIF call `BeamAlloc.Test.Scratch.#{fun}/0` returned; "
      assert line =~ "; the chunk was taken by an allocation from "
      line
    end

    test "a write past its chunk names the NIF's block and the call, not the glue" do
      assert overrun_report(:overrun) =~
               ~r/\(a chunk of 4096 bytes of the call's scratch arena, not a block of the NIF's: the write was at byte 4064 of 0x[0-9a-f]+, the last block allocated from it \(1 byte\)\)/
    end

    test "a write past its chunk through a later block names that block's offset" do
      assert overrun_report(:overrun_second) =~
               ~r/the write was at byte 3964 of 0x[0-9a-f]+, the last block allocated from it \(16 bytes\)\)/
    end
  end
end
