defmodule BeamAlloc.YieldTest do
  # NIFs that yield with enif_schedule_nif (test/nifs/yield_nif.c): each
  # slice is a call of its own, and every slice of one NIF gets its
  # options, load_info's included.
  use ExUnit.Case, async: true

  alias BeamAlloc.Test.Yield

  describe "a continuation with other arguments than the table's" do
    test "takes the NIF's load_info allocator in every slice" do
      Yield.take_reports()
      # walk/1 reschedules itself with three arguments; load_info gives it
      # the general purpose allocator. Its continuations ran on the C
      # default (raw), whose free of the first slice's block was refused.
      assert Yield.walk(3) == [:gpa, :gpa, :gpa, :gpa]
      assert Yield.take_reports() == []
    end

    test "takes it on dirty schedulers too" do
      Yield.take_reports()

      assert Yield.hop(0) == [
               normal: :gpa,
               dirty_io: :gpa,
               dirty_cpu: :gpa,
               normal: :gpa
             ]

      assert Yield.take_reports() == []
    end

    test "passes check_all_allocation_failures" do
      assert {:ok, 1} = BeamAlloc.Testing.check_all_allocation_failures(fn -> Yield.walk(3) end)
      assert {:ok, 1} = BeamAlloc.Testing.check_all_allocation_failures(fn -> Yield.hop(0) end)
    end
  end

  describe "a leak_check NIF that yields" do
    test "is checked slice by slice, over many reschedules" do
      assert Yield.chain(2000) == :done
      assert {:ok, 4} = BeamAlloc.Testing.check_all_allocation_failures(fn -> Yield.chain(3) end)
    end

    test "names the NIF in a leak its continuation makes" do
      # The continuation, nif_leak_later with two arguments, is the NIF
      # leak_later/1, as the VM says too (it named nif_leak_later/2).
      Yield.take_reports()

      assert_raise RuntimeError,
                   "memory leak detected in function `BeamAlloc.Test.Yield.leak_later/1`",
                   fn -> Yield.leak_later(0) end

      assert Enum.any?(Yield.take_reports(), &(&1 =~ "leak: 8 bytes"))
    end
  end

  # One BEAM_NIF listed under a normal and a dirty name that moves itself
  # to a dirty scheduler (enif_schedule_nif under its own name): the
  # continuation is the call by the normal name. The glue told twins apart
  # by the scheduler a call ran on, and named it, and gave it the options
  # of, the dirty twin.
  describe "a NIF with a dirty twin that moves itself to a dirty scheduler" do
    test "is named by the name it was called by in a leak" do
      Yield.take_reports()

      assert_raise RuntimeError,
                   "memory leak detected in function `BeamAlloc.Test.Yield.twin_leak/0`",
                   fn -> Yield.twin_leak() end

      assert [report] =
               Enum.filter(Yield.take_reports(), &(&1 =~ "memory leak detected in function"))

      assert report =~ "function `BeamAlloc.Test.Yield.twin_leak/0`:"
    end

    test "keeps its load_info options, and its name, in the continuation" do
      assert Yield.twin_kind() ==
               {:dirty_cpu, {:arena, :raw}, ~c"BeamAlloc.Test.Yield.twin_kind/0"}

      # The dirty name, called as such, has its own (none).
      assert Yield.twin_kind_dirty() ==
               {:dirty_cpu, :raw, ~c"BeamAlloc.Test.Yield.twin_kind_dirty/0"}

      assert_raise RuntimeError,
                   "memory leak detected in function `BeamAlloc.Test.Yield.twin_leak_dirty/0`",
                   fn -> Yield.twin_leak_dirty() end

      Yield.take_reports()
    end
  end

  # What the VM says of such a continuation is the user's: the name and
  # the arguments it was scheduled with, as enif_schedule_nif has it.
  # process_info named twin_badarg/2 (beam_nif_schedule carried the entry
  # as one more argument); an exception names the call that scheduled it
  # either way (ERTS puts the call's state back), a guard.
  describe "a NIF with a dirty twin that moves itself, as the VM sees it" do
    test "raises from the continuation with its own arguments" do
      stack =
        try do
          Yield.twin_badarg(:x)
        rescue
          ArgumentError -> __STACKTRACE__
        end

      assert [{Yield, :twin_badarg, [:x], _} | _] = stack
    end

    test "is the function process_info names while it runs" do
      parent = self()

      pid =
        spawn(fn ->
          try do
            Yield.twin_badarg(300)
          catch
            :error, reason -> send(parent, {:done, reason})
          end
        end)

      # Well into the dirty slice, which sleeps 300 ms (before the move the
      # process is in the function anyway, the module's stub).
      Process.sleep(100)
      assert Process.info(pid, :current_function) == {:current_function, {Yield, :twin_badarg, 1}}
      assert_receive {:done, :badarg}, 5000
    end
  end

  test "a resource made over beam_allocator by a leak_check NIF lasts across its slices" do
    # The resource takes the NIF's lasting allocator, not the slice's
    # checking instance: no leak, and a check passes.
    assert Yield.res_walk(5) == 6
    assert {:ok, 1} = BeamAlloc.Testing.check_all_allocation_failures(fn -> Yield.res_walk(3) end)
  end

  describe "a leak_check NIF that raises" do
    test "with a block live raises the leak, not its own exception" do
      Yield.take_reports()

      assert_raise RuntimeError,
                   "memory leak detected in function `BeamAlloc.Test.Yield.raise_live/0`",
                   fn -> Yield.raise_live() end

      assert Enum.any?(Yield.take_reports(), &(&1 =~ "leak: 24 bytes"))
    end

    test "with its blocks freed raises its own exception" do
      assert_raise ArgumentError, fn -> Yield.raise_freed() end
    end
  end

  test "a BEAM_NIF calling another's C function gets the other's allocator, then its own back" do
    assert Yield.nested() == {{:arena, :raw}, true}
  end

  test "an enif thread and the load callback see the raw allocator" do
    assert Yield.thread_allocator() == {:gpa, :raw}
    assert Yield.load_kind() == :raw
  end
end
