defmodule BeamAlloc.Test.ResourceParentScenarios do
  @moduledoc false
  # Resources made over another resource's allocator (new_child/2 of
  # test/nifs/resource_nif.c). Each scenario runs in a VM of its own
  # (test/resource_parent_test.exs): a parent torn down under its child
  # crashed the VM. Each halts with status 0 when it passed, else prints
  # why and halts with 1. Alone in its VM, the library's live count is
  # this scenario's.
  alias BeamAlloc.Test.Resource

  @kinds [:gpa, :arena]

  # A parent's term dropped, and collected, while its child lives: the
  # child goes on allocating (new chunks from the parent), its blocks stay
  # intact, then it goes too, and the parent with it.
  def parent_dropped(rounds) do
    finish(each_pair(rounds, &child_outlives([&1, &2])), Resource.take_reports())
  end

  # The same down a chain of three: a <- b <- c, a's and b's terms dropped.
  def chain_dropped(rounds) do
    bad =
      for _ <- 1..rounds, k <- @kinds, reduce: [] do
        acc -> acc ++ child_outlives([k, :arena, :gpa]) ++ child_outlives([:gpa, k, :arena])
      end

    finish(bad, Resource.take_reports())
  end

  # A parent released explicitly while its child lives: the child's memory
  # stays (its blocks read back), its new chunks are refused; the child's
  # drop then completes the parent's release, with nothing reported.
  def parent_released(rounds) do
    finish(each_pair(rounds, &released_under_child/2), Resource.take_reports())
  end

  # A child released before its parent, its term still held: the parent's
  # release completes at once (its memory goes back), as without a child.
  def child_released_first do
    finish(each_pair(1, &released_after_child/2), Resource.take_reports())
  end

  # A child asked of a released parent: NULL (enomem), reported.
  def child_of_released do
    finish(each_pair(1, &refused_over_released/2), [])
  end

  # A long chain, every resource in it released while its child lives,
  # then the last: each release completes its parent's, down to the first
  # (a teardown that left its parent by calling the parent's teardown went
  # one stack frame deeper per link: 100 000 overflowed a scheduler's
  # stack, SIGSEGV). Bare resources (no user area): the chain stays small.
  def released_chain(n) do
    {:ok, root} = Resource.new(:arena)

    all =
      Enum.reduce(1..n, [root], fn i, [p | _] = acc ->
        {:ok, c} = Resource.new_bare_child(if(rem(i, 2) == 0, do: :gpa, else: :arena), p)
        [c | acc]
      end)

    [leaf | above] = all
    for r <- Enum.reverse(above), do: :ok = Resource.release(r)
    kept = if Resource.live_count() == n + 1, do: [], else: [{:kept, Resource.live_count()}]
    :ok = Resource.release(leaf)
    gone = if Resource.live_count() == 0, do: [], else: [{:left, Resource.live_count()}]
    finish(kept ++ gone, Resource.take_reports())
  end

  # What fun(parent_kind, child_kind) found wrong, for every pair of kinds,
  # rounds times.
  defp each_pair(rounds, fun) do
    for _ <- 1..rounds, pk <- @kinds, ck <- @kinds, reduce: [] do
      acc -> acc ++ fun.(pk, ck)
    end
  end

  defp released_after_child(pk, ck) do
    {:ok, p} = Resource.new(pk)
    {:ok, c} = Resource.new_child(ck, p)
    for _ <- 1..16, do: {:ok, _} = Resource.alloc(c, 3000)
    :ok = Resource.release(c)
    :ok = Resource.release(p)
    held = Resource.usage(p).parent_bytes
    bad = if held == 0, do: [], else: [{pk, ck, held, Resource.usage(c)}]
    bad ++ gone_after_gc([pk, ck])
  end

  defp refused_over_released(pk, ck) do
    {:ok, p} = Resource.new(pk)
    :ok = Resource.release(p)
    got = Resource.new_child(ck, p)
    reports = Resource.take_reports()

    cond do
      got != {:error, :enomem} -> [{pk, ck, got}]
      not Enum.any?(reports, &(&1 =~ "released")) -> [{pk, ck, reports}]
      true -> []
    end
  end

  # kinds: the chain's, parent first. Every resource but the last made in
  # a process that dies; the last is handed over and filled here.
  defp child_outlives(kinds) do
    child = chain_in_dying_process(kinds)
    collect()

    bad =
      if Resource.live_count() == length(kinds),
        do: [],
        else: [{:kept, kinds, Resource.live_count()}]

    churn_elsewhere()
    bad = bad ++ fill_and_check(child, kinds)
    bad ++ gone_after_gc(kinds)
  end

  defp chain_in_dying_process(kinds) do
    me = self()

    spawn(fn ->
      [first | rest] = kinds
      {:ok, root} = Resource.new(first)
      last = Enum.reduce(rest, root, fn k, p -> elem(Resource.new_child(k, p), 1) end)
      send(me, {:child, last})
    end)

    receive do
      {:child, c} -> c
    after
      5_000 -> raise "no child"
    end
  end

  # Blocks past the first chunks: the parent is asked for more.
  defp fill_and_check(child, kinds) do
    slots =
      for i <- 1..64 do
        {:ok, slot} = Resource.alloc(child, 3000)
        :ok = Resource.write(child, slot, 0, :binary.copy(<<i>>, 3000))
        {slot, i}
      end

    for {slot, i} <- slots,
        Resource.read(child, slot, 0, 3000) != {:ok, :binary.copy(<<i>>, 3000)},
        do: {:corrupt, kinds, slot}
  end

  # Memory a torn-down parent gave back taken by others, so that a child
  # still writing there shows.
  defp churn_elsewhere do
    for _ <- 1..8 do
      {:ok, r} = Resource.new(:arena)
      for _ <- 1..16, do: {:ok, _} = Resource.alloc(r, 4000)
      :ok = Resource.release(r)
    end
  end

  defp released_under_child(pk, ck) do
    {:ok, p} = Resource.new(pk)
    {:ok, c} = Resource.new_child(ck, p)
    {:ok, slot} = Resource.alloc(c, 100)
    :ok = Resource.write(c, slot, 0, "kept")
    :ok = Resource.release(p)
    churn_elsewhere()
    bad = if Resource.read(c, slot, 0, 4) == {:ok, "kept"}, do: [], else: [{:lost, pk, ck}]
    # New chunks come from a released parent: refused.
    grown = Enum.map(1..64, fn _ -> Resource.alloc(c, 3000) end)
    bad = if {:error, :enomem} in grown, do: bad, else: bad ++ [{:grew, pk, ck}]
    bad ++ gone_after_gc([pk, ck])
  end

  defp gone_after_gc(kinds) do
    collect()
    if Resource.live_count() == 0, do: [], else: [{:left, kinds, Resource.live_count()}]
  end

  defp collect do
    Enum.each(Process.list(), &:erlang.garbage_collect/1)
    Process.sleep(20)
  end

  defp finish(bad, reports) do
    reports = Enum.filter(reports, &(&1 =~ "resource"))

    if bad == [] and reports == [] do
      System.halt(0)
    else
      IO.puts("FAILED: #{inspect(bad)} #{inspect(reports)}")
      System.halt(1)
    end
  end
end
