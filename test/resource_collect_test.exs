defmodule BeamAlloc.ResourceCollectTest do
  # BeamAlloc.collect/1 reaches the general purpose allocators of the
  # library's live BEAM_RESOURCE_GPA resources: a long-lived resource whose
  # blocks were all freed held its peak (205 MB of its parent with no block
  # live, in a soak) until release, and nothing could give it back.
  use ExUnit.Case, async: true

  alias BeamAlloc.Test.Resource

  test "collect gives back what a live GPA resource holds and does not need" do
    {:ok, res} = Resource.new(:gpa)
    # 4,000 blocks of 1,000 bytes made on one process, freed on another.
    slots =
      Task.async(fn -> for _ <- 1..4000, do: elem(Resource.alloc(res, 1000), 1) end)
      |> Task.await()

    Task.async(fn -> for s <- slots, do: :ok = Resource.free(res, s) end) |> Task.await()
    held = Resource.usage(res)
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

          slots =
            Task.async(fn -> for _ <- 1..300, do: elem(Resource.alloc(res, 1000), 1) end)
            |> Task.await()

          Task.async(fn -> for s <- slots, do: :ok = Resource.free(res, s) end)
          |> Task.await()

          :ok = Resource.release(res)
          u = Resource.usage(res)
          if u.parent_bytes == 0, do: late, else: [u | late]
      end

    send(collector, :stop)
    assert late == [], "#{length(late)} releases not done at once: #{inspect(Enum.take(late, 3))}"
  end

  defp collect_until_told do
    receive do
      :stop -> :ok
    after
      0 ->
        :ok = BeamAlloc.collect(Resource)
        collect_until_told()
    end
  end
end
