defmodule BeamAlloc.GuideToolsTest do
  # The guide's examples beyond the seed guide (guides/allocators.md, with
  # its NIFs in test/nifs/guide_tools_nif.c). The guide quotes these tests.
  use ExUnit.Case, async: true

  import BeamAlloc.Test.GuideTools

  describe "raw NIFs" do
    test "a raw NIF names its allocator" do
      assert raw_sum([1, 2, 3]) == 6
      assert raw_sum([]) == 0
      assert_raise ArgumentError, fn -> raw_sum([1, :two]) end
    end
  end

  describe "custom allocators" do
    test "an allocator with a budget" do
      assert with_budget(100) == 924
      assert {:error, :over_budget} = with_budget(2000)
    end
  end

  describe "fault injection" do
    test "split_words/1 survives every allocation failure" do
      assert split_words("the quick  brown fox") == ["the", "quick", "brown", "fox"]

      assert {:ok, 3} =
               BeamAlloc.Testing.check_all_allocation_failures(fn ->
                 split_words("the quick brown fox jumps over the lazy dog")
               end)
    end

    test "a leak on a failure path is caught" do
      error =
        assert_raise BeamAlloc.AllocationFailureError, fn ->
          BeamAlloc.Testing.check_all_allocation_failures(fn ->
            split_words_leaky("the quick brown fox jumps over the lazy dog")
          end)
        end

      assert [%{kind: :leak, index: 1, request: %{kind: :remap}}, %{kind: :leak, index: 2}] =
               error.problems
    end
  end

  describe "scratch arenas" do
    test "byte_histogram/1 counts in scratch memory" do
      assert byte_histogram("abca") == [{?a, 2}, {?b, 1}, {?c, 1}]
      assert byte_histogram("") == []

      assert {:ok, 2} =
               BeamAlloc.Testing.check_all_allocation_failures(fn -> byte_histogram("x") end)
    end
  end

  describe "per-NIF options from Elixir" do
    test "leak_check and scratch set from use BeamAlloc.Nif" do
      assert_raise RuntimeError, ~r/memory leak detected in function/, fn -> forgetful() end
      assert is_scratch()
    end

    test "the leak report names the block and its site" do
      take_reports()
      catch_error(forgetful())

      assert [_, report] = take_reports()
      assert report =~ ~r/leak: 32 bytes .* allocated from guide_tools_nif\.so/
    end
  end

  describe "resource-scoped memory" do
    test "a release hook takes down the mutex in a bag's user area" do
      # (The hook's semantics are resource_test's; here the guide's code
      # runs through a release and a collection.)
      bag = shared_bag_new()
      assert is_reference(bag)
      assert :ok = bag_release(bag)
      assert :ok = bag_release(bag)
      {pid, ref} = spawn_monitor(fn -> shared_bag_new() end)
      assert_receive {:DOWN, ^ref, :process, ^pid, :normal}, 5_000
      :erlang.garbage_collect()
    end

    test "a bag of binaries in resource memory" do
      bag = bag_new()
      assert :ok = bag_put(bag, "one")
      assert :ok = Task.await(Task.async(fn -> bag_put(bag, "two") end))
      assert bag_to_list(bag) == ["one", "two"]

      assert :ok = bag_release(bag)
      assert {:error, :released} = bag_put(bag, "three")
    end
  end

  describe "stats" do
    test "stats of a general purpose allocator instance" do
      {during, finally} = gpa_stats()
      assert %{allocations: 10, frees: 4, live_blocks: 6, live_bytes: 600} = during
      assert %{allocations: 10, frees: 10, live_blocks: 0, live_bytes: 0} = finally
      assert finally.peak_bytes >= 600
    end
  end
end

defmodule BeamAlloc.GuideGuardTest do
  # The guide's ExUnit guard example: a guarded test that makes no report.
  use ExUnit.Case, async: true
  use BeamAlloc.Case

  import BeamAlloc.Test.GuideTools

  test "split_words/1 reports nothing" do
    assert split_words("a b") == ["a", "b"]
  end
end
