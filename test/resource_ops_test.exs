defmodule BeamAlloc.ResourceOpsTest do
  # The holdings' ops of a library (beam_alloc_testing_nif:holdings/0, what
  # beam_alloc_collector reads) count its GPA resources' allocations and
  # frees, and never fewer than were done: the collector takes unchanged
  # ops for an idle library. A resource the garbage collector takes left
  # the list of resources before its ops were added to the library's
  # retired count, so a read in between missed them. Not async: a release
  # of another test's resource may count its ops twice for one read (never
  # fewer), which would raise the baseline here.
  use ExUnit.Case, async: false

  alias BeamAlloc.Test.Resource

  # The window is short (a few instructions): this catches it when it is
  # widened (a 300 us sleep in resource_dtor after its list_unlink: every
  # round read 600 below), rarely as it is.
  test "holdings never read fewer ops than were done while resources are garbage collected" do
    lows =
      for round <- 1..40, reduce: [] do
        lows ->
          holder = hold_resources(30, round)
          base = library_ops()
          test = self()
          spawn_link(fn -> send(test, {:low, lowest_ops(400, base)}) end)
          send(holder, :drop)
          low = receive do: ({:low, low} -> low)
          if low < base, do: [{round, base - low} | lows], else: lows
      end

    assert lows == [], "ops read below what was done (round, by): #{inspect(lows)}"
  end

  # A process holding n GPA resources, each having made and freed 300
  # blocks, until told to drop them (its exit frees the terms: their
  # destructors run).
  defp hold_resources(n, round) do
    test = self()

    holder =
      spawn(fn ->
        resources =
          for i <- 1..n do
            {:ok, res} = Resource.new(:gpa)
            Resource.churn(res, 300, round * 100 + i)
            res
          end

        send(test, :holding)

        receive do
          :drop -> length(resources)
        end
      end)

    receive do: (:holding -> holder)
  end

  defp lowest_ops(reads, low),
    do: Enum.reduce(1..reads, low, fn _, low -> min(low, library_ops()) end)

  defp library_ops, do: elem(Resource.holdings(), 2)
end
