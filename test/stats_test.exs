defmodule BeamAlloc.StatsTest do
  # BeamAlloc.stats/1: the counters of a module's NIF library, checked
  # against the VM's own accounting. Runs alone: it measures the VM.
  use ExUnit.Case, async: false

  alias BeamAlloc.Test.Guide

  test "raw allocations show in the library's counters and in the VM's" do
    Process.sleep(50)
    before = BeamAlloc.stats(Guide).raw
    system = :erlang.memory(:system)

    assert :ok = Guide.raw_global_alloc()
    during = BeamAlloc.stats(Guide).raw
    grown = :erlang.memory(:system) - system

    assert during.live_bytes - before.live_bytes == 1_000_000
    assert during.live_blocks - before.live_blocks == 1
    assert during.allocations - before.allocations == 1
    assert during.peak_bytes >= during.live_bytes
    # The VM counts the block plus enif_alloc's own few bytes per block
    # (give or take what the VM itself freed meanwhile).
    assert grown >= 1_000_000 - 4096 and grown < 1_000_000 + 64 * 1024

    assert :ok = Guide.raw_global_free()
    after_free = BeamAlloc.stats(Guide).raw
    assert after_free.live_bytes == before.live_bytes
    assert after_free.frees - before.frees == 1
  end

  test "general purpose allocator counters and what it holds" do
    %{general_purpose: gpa, large: large} = BeamAlloc.stats(Guide)
    assert is_integer(gpa.backing_bytes)
    # Its chunks come from the large allocator, which counts them.
    assert large.live_bytes >= gpa.backing_bytes - 64 * 1024
    assert Guide.noleak() == false
    after_call = BeamAlloc.stats(Guide).general_purpose
    assert after_call.allocations >= gpa.allocations + 1
    assert after_call.live_blocks == gpa.live_blocks
  end

  test "each library has its own counters" do
    a = BeamAlloc.stats(Guide).raw
    assert %{raw: _} = BeamAlloc.stats(BeamAlloc.Test.Soak)
    assert :ok = BeamAlloc.Test.Soak.ops(100, 1)
    assert BeamAlloc.stats(Guide).raw.allocations == a.allocations
  end

  test "a module without a beam_alloc library raises ArgumentError" do
    assert_raise ArgumentError,
                 ~r/no NIF library built with beam_alloc is loaded for Enum .*BEAM_NIF_INIT/,
                 fn -> BeamAlloc.stats(Enum) end

    assert_raise ArgumentError, ~r/expected a module name/, fn -> BeamAlloc.stats("Guide") end

    # nil is an atom, but no module: a missing option, not a missing library.
    for f <- [&BeamAlloc.stats/1, &BeamAlloc.collect/1], value <- [nil, true, false] do
      assert_raise ArgumentError, "expected a module name, got: #{inspect(value)}", fn ->
        f.(value)
      end
    end
  end

  test "from Erlang, a module that is not an atom is badarg" do
    assert {:ok, %{raw: _}} = :beam_alloc.find_stats(Guide)
    assert {:error, :not_loaded} = :beam_alloc.find_stats(Enum)
    assert :badarg = catch_error(:beam_alloc.stats(1))
    # It raised a function_clause instead.
    assert :badarg = catch_error(:beam_alloc.find_stats(1))
    assert :badarg = catch_error(:beam_alloc.collect(1))
  end

  test "from Erlang, the badarg says which argument and why" do
    # A bare badarg: the shell said "bad argument" and no more.
    for f <- [:stats, :find_stats, :collect] do
      {class, reason, stack} =
        try do
          apply(:beam_alloc, f, [~c"my_nif"])
        catch
          class, reason -> {class, reason, __STACKTRACE__}
        end

      assert {:error, :badarg} = {class, reason}
      text = :erl_error.format_exception(class, reason, stack) |> IO.chardata_to_string()
      assert text =~ "argument 1: not a module name (an atom)"
    end
  end

  # The driver read a library's named stats a name at a time, each read
  # under the table's lock on its own: with another name registered and
  # unregistered in a slot before it meanwhile, "stress_named" (one live
  # block) was read twice in one copy, summed (2 blocks), or missed.
  test "a named instance is read once while other names come and go" do
    alias BeamAlloc.Test.Stress
    assert Stress.names_setup()
    churn = Task.async(fn -> Stress.names_churn() end)

    seen =
      for _ <- 1..3000 do
        BeamAlloc.stats(Stress) |> Map.get(:stress_named, %{}) |> Map.get(:live_blocks)
      end

    Stress.names_stop()
    rounds = Task.await(churn, 30_000)
    assert Stress.names_teardown()
    assert rounds > 0
    assert Enum.frequencies(seen) == %{1 => 3000}
  end

  # stats/1 and collect/1 load a module not loaded yet (interactive mode:
  # its @on_load loads its library) and, since they skip the load of a
  # module whose library answered before (an upgrade's gap), must still
  # do so for one no call reached yet. In a VM of its own: this one loaded
  # these modules long ago.
  test "stats/1 and collect/1 of a module not loaded yet load it" do
    call = """
    mods = [BeamAlloc.Test.Guide, BeamAlloc.Test.Glue, BeamAlloc.Test.Hang]
    IO.puts("before=\#{inspect(Enum.map(mods, &:erlang.module_loaded/1))}")
    [guide, glue, hang] = mods
    %{raw: _} = BeamAlloc.stats(guide)
    %{raw: _} = :beam_alloc.stats(glue)
    :ok = BeamAlloc.collect(hang)
    IO.puts("after=\#{inspect(Enum.map(mods, &:erlang.module_loaded/1))}")
    """

    {out, status} = BeamAlloc.Test.ChildVm.run(call, 30)
    assert status == 0, out
    assert out =~ "before=[false, false, false]"
    assert out =~ "after=[true, true, true]"
  end
end
