defmodule BeamAlloc.StressTest do
  # Nothing crashes, nothing is lost: 64 processes x 100k mixed operations
  # over raw, large and the general purpose allocator, on normal and dirty
  # schedulers and on threads of our own, blocks freed by other threads;
  # then every allocator's live count is zero and the VM's system memory is
  # back where it was. Runs alone (async: false) so that the memory figures
  # are ours. `make soak` runs the long variant (SOAK_SECONDS, default 300).
  use ExUnit.Case, async: false

  alias BeamAlloc.Test.Soak

  @chunk 1_000

  @tag timeout: 300_000
  test "64 processes x 100k mixed operations leave nothing behind" do
    # A short warm-up settles the allocators' retained memory (slabs cached
    # per scheduler, ERTS carriers) so the baseline is a steady state.
    run(8, 5_000, System.monotonic_time(:millisecond) + 60_000)
    settle()
    baseline = :erlang.memory(:system)

    ops = run(64, 100_000, System.monotonic_time(:millisecond) + 240_000)
    assert ops == 64 * 100_000
    settle()

    assert %{corrupt: 0} = Soak.counters()
    assert Soak.gpa_misuse() == 0
    assert Soak.take_reports() == []

    stats = Soak.stats()

    for {allocator, counts} <- stats do
      assert counts.allocations > 100_000, "#{allocator}: #{inspect(counts)}"
    end

    assert %{live_blocks: 0, live_bytes: 0} = stats.raw
    assert %{live_blocks: 0, live_bytes: 0} = stats.gpa
    # What the large allocator still holds is the general purpose
    # allocator's cached slabs, nothing else.
    assert stats.large.live_bytes == Soak.gpa_backing_bytes()

    # Every scheduler gives back what its heap caches (beam_gpa_collect);
    # the calls are spread over many processes until each thread has had
    # one, which the memory figure shows.
    growth = settle_memory(baseline)

    assert growth < 1024 * 1024,
           "system memory grew by #{growth} bytes over the baseline #{baseline}"
  end

  @tag :soak
  @tag timeout: :infinity
  test "soak: the same for SOAK_SECONDS" do
    seconds = String.to_integer(System.get_env("SOAK_SECONDS", "300"))
    run(8, 5_000, System.monotonic_time(:millisecond) + 60_000)
    settle()
    baseline = :erlang.memory(:system)

    ops = run(64, :infinity, System.monotonic_time(:millisecond) + seconds * 1_000)
    IO.puts("\nsoak: #{ops} operations in #{seconds} s")
    settle()

    assert %{corrupt: 0} = Soak.counters()
    assert Soak.gpa_misuse() == 0
    stats = Soak.stats()
    assert stats.raw.live_blocks == 0 and stats.gpa.live_blocks == 0
    assert stats.large.live_bytes == Soak.gpa_backing_bytes()
    assert settle_memory(baseline) < 1024 * 1024
  end

  # n processes, each doing `per` operations (or until the deadline) in
  # chunks that rotate between a normal scheduler, a dirty one and a thread
  # of our own. Returns the operations done.
  defp run(n, per, deadline) do
    parent = self()

    for i <- 1..n do
      spawn_link(fn -> send(parent, {:done, work(i, per, deadline, 0)}) end)
    end

    for _ <- 1..n, reduce: 0 do
      acc -> receive(do: ({:done, done} -> acc + done))
    end
  end

  defp work(_i, per, _deadline, done) when is_integer(per) and done >= per, do: done

  defp work(i, per, deadline, done) do
    if System.monotonic_time(:millisecond) > deadline do
      done
    else
      n = if is_integer(per), do: min(@chunk, per - done), else: @chunk
      seed = i * 1_000_003 + done

      :ok =
        case rem(div(done, @chunk) + i, 3) do
          0 -> Soak.ops(n, seed)
          1 -> Soak.ops_dirty(n, seed)
          2 -> Soak.thread_ops(n, seed)
        end

      work(i, per, deadline, done + n)
    end
  end

  defp settle do
    :ok = Soak.drain()
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    collect_everywhere()
    Process.sleep(100)
  end

  defp collect_everywhere do
    1..32
    |> Enum.map(fn _ ->
      Task.async(fn ->
        :ok = Soak.collect()
        :ok = Soak.collect_dirty_cpu()
        :ok = Soak.collect_dirty_io()
      end)
    end)
    |> Enum.each(&Task.await/1)
  end

  defp settle_memory(baseline, tries \\ 20) do
    growth = :erlang.memory(:system) - baseline

    if growth < 1024 * 1024 or tries == 0 do
      growth
    else
      collect_everywhere()
      Process.sleep(50)
      settle_memory(baseline, tries - 1)
    end
  end
end
