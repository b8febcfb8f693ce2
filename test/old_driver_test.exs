defmodule BeamAlloc.OldDriverTest do
  # A library copy meets a fault-injection driver of an older version (a
  # NIF built against a newer beam_alloc than the BeamAlloc.Testing that
  # checks it): the interface's later members are "added last", and a copy
  # checks the driver's size before calling them, so it takes the older
  # driver and calls only what that one has. (A copy refused every driver
  # smaller than its own struct: no check ran in it.)
  use ExUnit.Case, async: false

  alias BeamAlloc.Test.OldDriver

  for {version, what} <- [{0, "enter and leave only"}, {1, "misuse, no under"}] do
    test "a copy takes a driver with #{what}" do
      assert OldDriver.attach(unquote(version))

      try do
        assert :ok = OldDriver.call()
        assert {1, 1, 0} = OldDriver.counts()
      after
        OldDriver.detach()
      end
    end
  end

  # A driver without end_run's called and without open/1 (its library
  # older than the checker: the VM keeps the copy it loaded when the file
  # is rebuilt in place), stood in for by an Erlang module in a VM of its
  # own: the check opens with open/0 and runs, and counts every reload of
  # an attached module, as before end_run said called (it raised {badkey,
  # called}: a review; and without open/1 the driver was taken for one not
  # loaded).
  test "a driver whose end_run says nothing of called still checks, every reload counting" do
    check = """
    Code.compiler_options(ignore_module_conflict: true)
    defmodule :beam_alloc_testing_nif do
      def open, do: {:ok, make_ref()}
      def close(_), do: :ok
      def live(_), do: 0
      def leaks(_), do: %{runs: [], lost: false}
      def begin_run(_, _, _), do: :ok
      # attach: one copy of m, two on the third call (a reload) when asked.
      def attach(_, _) do
        n = Process.put(:attaches, (Process.get(:attaches) || 0) + 1) || 0
        if Process.get(:reload) && n == 2, do: ["m", "m"], else: ["m"]
      end
      # end_run: requests 0, then 1 with a reload (a nondeterministic
      # function, that problem the reload's).
      def end_run(_) do
        run = (Process.get(:runs) || 0) + 1
        Process.put(:runs, run)
        %{run: run, requests: if(Process.get(:reload) && run > 1, do: 1, else: 0),
          induced: :undefined, mismatch: :undefined, reloaded: :undefined,
          lost: false, misuse: [], misused: 0}
      end
    end
    Application.ensure_all_started(:beam_alloc)
    IO.puts("clean=\#{inspect(catch_all.(fn -> :beam_alloc_testing.check_all_allocation_failures(fn -> :ok end) end))}")
    Process.put(:reload, true)
    Enum.each([:attaches, :runs], &Process.delete/1)
    IO.puts("reload=\#{inspect(catch_all.(fn -> :beam_alloc_testing.check_all_allocation_failures(fn -> :ok end) end))}")
    """

    catch_all = "catch_all = fn f -> try do f.() catch _, e -> {:caught, e} end end\n"
    {out, status} = BeamAlloc.Test.ChildVm.run(catch_all <> check, 60)
    assert status == 0, out
    assert out =~ "clean={:ok, 0}"
    assert out =~ "reload={:caught, {:reloaded, [:m]}}"
  end
end
