defmodule BeamAlloc.GuideTest do
  # Every example of the allocator guide, with the guide's assertions, plus
  # the errors its NIFs must turn into instead of crashing.
  use ExUnit.Case, async: true

  import BeamAlloc.Test.Guide

  # Counts no memory can hold, as the guide's allocating NIFs must take them.
  defp assert_impossible_counts_fail(allocate) do
    assert {:error, :enomem} = allocate.(2 ** 62)
    assert {:error, :enomem} = allocate.(2 ** 64 - 1)
  end

  describe "raw beam allocator" do
    test "raw allocator" do
      assert [0, 1, 2] = allocate_raw(3)
    end

    test "an empty slice is an empty list" do
      assert [] = allocate_raw(0)
    end

    test "an impossible count is {:error, :enomem}, not a crash" do
      assert_impossible_counts_fail(&allocate_raw/1)
    end

    test "arguments that are not a count raise ArgumentError" do
      assert_raise ArgumentError, fn -> allocate_raw(-1) end
      assert_raise ArgumentError, fn -> allocate_raw(2 ** 64) end
      assert_raise ArgumentError, fn -> allocate_raw(:three) end
      assert_raise ArgumentError, fn -> allocate_raw(3.0) end
    end
  end

  describe "large allocator" do
    test "aligned allocation" do
      assert 0 = rem(allocate_large_aligned(3), 4096)
    end

    test "page alignment holds for sizes around a page" do
      for count <- [1, 4095, 4096, 4097, 100_000] do
        assert rem(allocate_large_aligned(count), 4096) == 0
      end
    end

    test "an impossible count is {:error, :enomem}, not a crash" do
      assert_impossible_counts_fail(&allocate_large_aligned/1)
    end

    test "arguments that are not a count raise ArgumentError" do
      assert_raise ArgumentError, fn -> allocate_large_aligned(-3) end
      assert_raise ArgumentError, fn -> allocate_large_aligned("3") end
    end
  end

  describe "general purpose allocator" do
    test "leak checks with general purpose allocator" do
      take_reports()
      assert leaks()
      refute noleak()
    end

    test "detect_leaks reports the live block" do
      take_reports()
      assert leaks()
      assert [report] = take_reports()
      assert report =~ "beam_alloc: leak: block of size class 16"
    end
  end

  describe "beam_allocator" do
    test "leak checks with allocator" do
      assert [0, 1, 2, 3] = basic()
    end
  end

  describe "custom allocators" do
    test "arena allocator" do
      assert [0, 1, 2, 3] == with_arena()
    end
  end
end
