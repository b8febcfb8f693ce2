defmodule BeamAlloc.ConcurrencyTest do
  # The process-wide general purpose allocator under load: many processes on
  # normal and dirty schedulers allocating, handing blocks to each other,
  # and freeing them on other threads, for a few seconds.
  use ExUnit.Case, async: true

  alias BeamAlloc.Test.Peers
  alias BeamAlloc.Test.Stress

  @processes 40
  @duration_ms 2_500

  @tag timeout: 60_000
  test "many processes share the general purpose allocator without leaks or corruption" do
    parent = self()
    deadline = System.monotonic_time(:millisecond) + @duration_ms

    pids =
      Peers.start(@processes, fn i, peers ->
        result = work(i, peers, deadline, %{made: 0, freed: 0, churns: 0, errors: []})
        send(parent, {:done, self(), result})
      end)

    total = Peers.totals(pids, :done, 30_000)
    assert total.(:made) > 1_000
    assert total.(:freed) > 0
    assert total.(:churns) > 100

    # Blocks still in mailboxes of finished processes die with them, through
    # the resource destructor; give the collector a moment.
    assert Peers.eventually(fn -> Stress.live_blocks() == 0 end)
    refute Stress.detect_leaks()
    assert Stress.misuse_count() == 0
  end

  # One process: allocate a block (normal or dirty scheduler), hand it to a
  # random peer, free what peers handed over (normal or dirty), run a
  # private churn now and then, until the deadline.
  defp work(i, peers, deadline, acc) do
    if System.monotonic_time(:millisecond) >= deadline do
      # Whatever arrived after the deadline is freed too (or left to the
      # destructor if it arrives later still).
      free_received(acc, &Stress.block_free/1)
    else
      acc
      |> make_and_hand(i, peers)
      |> free_received(&free_anywhere/1)
      |> maybe_churn(i)
      |> then(&work(i, peers, deadline, &1))
    end
  end

  defp make_and_hand(acc, i, peers) do
    size = Enum.random([1, 8, 24, 100, 512, 4000, 8192, 9000, 70_000])
    tag = :rand.uniform(256) - 1
    new = if rem(i, 2) == 0, do: &Stress.block_new/2, else: &Stress.block_new_dirty/2
    {:ok, block} = new.(size, tag)
    send(Enum.random(peers), {:block, block})
    %{acc | made: acc.made + 1}
  end

  # Frees every block already received, each with free.(block).
  defp free_received(acc, free) do
    receive do
      {:block, block} ->
        case free.(block) do
          :ok -> free_received(%{acc | freed: acc.freed + 1}, free)
          error -> free_received(failed(acc, error), free)
        end
    after
      0 -> acc
    end
  end

  # On a normal or a dirty scheduler, at random.
  defp free_anywhere(block) do
    if :rand.uniform(2) == 1, do: Stress.block_free(block), else: Stress.block_free_dirty(block)
  end

  defp maybe_churn(acc, i) do
    case :rand.uniform(8) do
      1 -> churned(acc, Stress.churn(50, i * 7919 + acc.made))
      2 -> churned(acc, Stress.churn_dirty(500, i * 104_729 + acc.made))
      3 -> churned(acc, if(LeakCheckTest.clean(20) == Enum.sum(0..19), do: :ok, else: :bad_sum))
      _ -> acc
    end
  end

  defp churned(acc, :ok), do: %{acc | churns: acc.churns + 1}
  defp churned(acc, error), do: failed(acc, error)

  defp failed(acc, error), do: %{acc | errors: [error | acc.errors]}
end
