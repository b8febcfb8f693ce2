defmodule BeamAlloc.CollectorStepTest do
  # The collector's decision (beam_alloc_collector:step/3) over holdings
  # {ModuleName, Held, Live, Ops} as the driver reads them, tick after tick.
  use ExUnit.Case, async: true

  @mib 1024 * 1024
  @min 4 * @mib

  # Ticks over a list of holdings, one per library: the modules collected
  # at each tick.
  defp ticks(readings) do
    {done, _} =
      Enum.map_reduce(readings, %{}, fn holdings, seen ->
        :beam_alloc_collector.step(holdings, @min, seen)
      end)

    done
  end

  test "an idle library is collected once, a busy one not at all" do
    m = "Elixir.M"
    idle = {m, 30 * @mib, 0, 1000}
    after_collect = {m, 7000, 0, 1000}

    assert ticks([[idle], [idle], [after_collect], [after_collect]]) == [[], [m], [], []]

    assert ticks([[{m, 30 * @mib, 0, 1}], [{m, 30 * @mib, 0, 2}], [{m, 30 * @mib, 0, 3}]]) ==
             [[], [], []]

    # Still holding after the collection (what it cannot give back): once.
    assert ticks([[idle], [idle], [idle], [idle]]) == [[], [m], [], []]
  end

  test "a module loaded again and doing the same work is collected again" do
    # Its new library counts from 0: the same burst comes to the same
    # count as the one collected before, and was taken for it (a hunt:
    # 35.9 MB held for good after a purge, a load and the same burst).
    m = "Elixir.M"
    burst = {m, 35 * @mib, 0, 1_048_576}
    collected = {m, 7000, 0, 1_048_576}
    reloaded = {m, 0, 0, 0}

    # A tick saw the new copy before its burst.
    assert ticks([[burst], [burst], [collected], [reloaded], [burst], [burst], [burst]]) ==
             [[], [m], [], [], [], [m], []]

    # No tick saw it: reloaded and the same burst done within an interval.
    assert ticks([[burst], [burst], [collected], [burst], [burst]]) ==
             [[], [m], [], [m], []]
  end

  test "a busy library holding min_bytes beyond live 30 ticks in a row is collected" do
    # A light steady trickle of calls kept a library busy for good, and
    # 31 MB that other processes freed with it (a hunt).
    m = "Elixir.M"
    trickle = for i <- 1..61, do: [{m, 31 * @mib, 0, i}]
    done = ticks(trickle)
    assert for({[_], i} <- Enum.with_index(done), do: i) == [29, 59]

    # Below min_bytes once: the count starts again.
    dip = for i <- 1..50, do: [{m, if(i == 15, do: @mib, else: 31 * @mib), 0, i}]
    assert for({[_], i} <- Enum.with_index(ticks(dip)), do: i) == [44]

    # Never while it keeps under min_bytes beyond live.
    small = for i <- 1..40, do: [{m, 3 * @mib, 0, i}]
    assert Enum.all?(ticks(small), &(&1 == []))
  end

  test "the state of the versions before ({Ops, Held, Collected}, {Ops, Ops at its collection}) is taken" do
    m = "Elixir.M"
    held = {m, 30 * @mib, 0, 5}
    assert {[], _} = :beam_alloc_collector.step([held], @min, %{m => {5, 30 * @mib, true}})
    assert {[^m], _} = :beam_alloc_collector.step([held], @min, %{m => {5, 30 * @mib, false}})
  end

  test "the state of the version before ({Ops, Ops at its collection}) is taken" do
    m = "Elixir.M"
    held = {m, 30 * @mib, 0, 5}
    assert {[], _} = :beam_alloc_collector.step([held], @min, %{m => {5, 5}})
    assert {[^m], _} = :beam_alloc_collector.step([held], @min, %{m => {5, 3}})
    assert {[], _} = :beam_alloc_collector.step([held], @min, %{m => {4, 3}})
  end
end
