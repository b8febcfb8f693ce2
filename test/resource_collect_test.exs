defmodule BeamAlloc.ResourceCollectTest do
  # BeamAlloc.collect/1 reaches the general purpose allocators of the
  # library's live BEAM_RESOURCE_GPA resources: a long-lived resource whose
  # blocks were all freed held its peak (205 MB of its parent with no block
  # live, in a soak) until release, and nothing could give it back.
  use ExUnit.Case, async: true

  alias BeamAlloc.Test.Resource

  @library "Elixir.BeamAlloc.Test.Resource"

  test "collect gives back what a live GPA resource holds and does not need" do
    {:ok, res} = Resource.new(:gpa)
    held = burst(res, 4000, 1000)
    assert held.live_blocks == 0
    assert held.parent_bytes > 2_000_000

    :ok = BeamAlloc.collect(Resource)
    after_collect = Resource.usage(res)
    assert after_collect.parent_bytes < 512 * 1024, inspect({held, after_collect})

    # Still a working allocator.
    assert {:ok, slot} = Resource.alloc(res, 100)
    assert :ok = Resource.free(res, slot)
    :ok = Resource.release(res)
  end

  # The auto collector (beam_alloc_collector) decided by the process-wide
  # and named instances alone: a live resource's freed burst was held until
  # BeamAlloc.collect/1 or its release. Its holdings now count the
  # library's GPA resources, so two looks at an idle library collect it.
  # (The collector is off for the suite, test_helper.exs: its steps run
  # here, as its ticks would run them; vm_test.exs runs it in a VM.)
  test "the auto collector's holdings and decision reach a live GPA resource" do
    {:ok, res} = Resource.new(:gpa)
    held = burst(res, 4000, 4000)
    assert held.live_blocks == 0
    assert held.parent_bytes > 4_500_000

    {lib_held, lib_live, ops} = Resource.holdings()
    assert lib_held - lib_live >= held.parent_bytes, inspect({lib_held, lib_live, held})

    # Two ticks' worth of decision; other tests' calls into this library
    # may move its ops between the two: then a few more.
    collected =
      Enum.reduce_while(1..20, %{}, fn _, seen ->
        {done, seen} =
          :beam_alloc_collector.step(:beam_alloc_testing_nif.holdings(), 4 * 1024 * 1024, seen)

        if @library in done, do: {:halt, true}, else: {:cont, seen}
      end)

    assert collected == true
    :ok = :beam_alloc_testing_nif.collect(@library)
    after_collect = Resource.usage(res)
    assert after_collect.parent_bytes < 512 * 1024, inspect({held, after_collect})

    # A released resource's work still counts: the library's ops only grow
    # (a new resource doing the same work again came to the count a
    # released one had shown, and looked idle since the last collect).
    :ok = Resource.release(res)
    {_, _, ops_after} = Resource.holdings()
    assert ops_after >= ops, inspect({ops, ops_after})
  end

  # n blocks of size bytes made on one process, freed on another: the
  # resource's usage after.
  defp burst(res, n, size) do
    slots = Task.async(fn -> for _ <- 1..n, do: elem(Resource.alloc(res, size), 1) end)
    slots = Task.await(slots)
    Task.async(fn -> for s <- slots, do: :ok = Resource.free(res, s) end) |> Task.await()
    Resource.usage(res)
  end

  # A collect working on a resource must not take its release away from the
  # releaser: a release with no pin or call in flight is done when it
  # returns (blocks back to the parent: parent_bytes 0), as before collect
  # reached resources. With collect/1 running meanwhile it was left to the
  # collect's thread, which finished it a little later.
  test "a release during a collect is done when it returns" do
    parent = self()

    collector =
      spawn_link(fn ->
        send(parent, :collecting)
        collect_until_told()
      end)

    assert_receive :collecting

    late =
      for _ <- 1..300, reduce: [] do
        late ->
          {:ok, res} = Resource.new(:gpa)

          burst(res, 300, 1000)
          :ok = Resource.release(res)
          u = Resource.usage(res)
          if u.parent_bytes == 0, do: late, else: [u | late]
      end

    send(collector, :stop)
    assert late == [], "#{length(late)} releases not done at once: #{inspect(Enum.take(late, 3))}"
  end

  # Walks over the resources (collects, holdings reads) from several
  # processes while resources come and go: a smoke test. (A walk names the
  # resource it works on so that its teardown waits; walks run one at a
  # time, under the library's instances_lock, both hooks being entered.)
  test "collects and holdings reads together while resources come and go" do
    loopers =
      for f <- [
            fn -> :ok = BeamAlloc.collect(Resource) end,
            fn -> :ok = BeamAlloc.collect(Resource) end,
            fn -> true = is_list(:beam_alloc_testing_nif.holdings()) end
          ] do
        spawn_link(fn -> until_told(f) end)
      end

    for _ <- 1..60 do
      {:ok, res} = Resource.new(:gpa)

      burst(res, 2000, 1000)
      :ok = Resource.release(res)
      assert Resource.usage(res).parent_bytes == 0
    end

    for l <- loopers, do: send(l, :stop)
  end

  defp collect_until_told, do: until_told(fn -> :ok = BeamAlloc.collect(Resource) end)

  defp until_told(f) do
    receive do
      :stop -> :ok
    after
      0 ->
        f.()
        until_told(f)
    end
  end
end
