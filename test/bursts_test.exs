defmodule BeamAlloc.BurstsTest do
  # An adopter's long-running node: the same burst, allocated and freed, a
  # hundred times through each path. What the instances hold (with the
  # collector off, test_helper.exs) must level off after the first rounds,
  # not grow with every burst; and a collect gives it all back. Counted in
  # backing bytes, not timed.
  use ExUnit.Case, async: false
  alias BeamAlloc.Test.Bursts

  @mib 1024 * 1024

  defp medium(r), do: 1024 * (1 + rem(r * 37, 256))
  defp large(r), do: @mib * Enum.at([1, 2, 3, 5, 8, 16, 32, 64], rem(r, 8))

  defp held, do: Bursts.usage().backing_bytes + Bursts.named_usage().backing_bytes

  # Held after round 10 and after round 100, every block freed.
  defp rounds(fun) do
    for r <- 1..10, do: true = fun.(r) != false
    after10 = held()
    for r <- 11..100, do: true = fun.(r) != false
    {after10, held()}
  end

  for {name, fun} <- [
        {"gpa, small, normal scheduler", quote(do: fn _ -> Bursts.gpa_burst(100_000, 64) end)},
        {"gpa, small, dirty scheduler",
         quote(do: fn _ -> Bursts.gpa_burst_dirty(100_000, 64) end)},
        {"gpa, 1-256 KiB", quote(do: fn r -> Bursts.gpa_burst(64, medium(r)) end)},
        {"gpa, 1-256 KiB, dirty", quote(do: fn r -> Bursts.gpa_burst_dirty(64, medium(r)) end)},
        {"gpa, 1-64 MiB", quote(do: fn r -> Bursts.gpa_burst(2, large(r)) end)},
        {"named instance, 1-256 KiB", quote(do: fn r -> Bursts.named_burst(64, medium(r)) end)},
        {"named instance, 1-64 MiB", quote(do: fn r -> Bursts.named_burst(2, large(r)) end)},
        {"beam_malloc/mrealloc/mfree, 1-256 KiB",
         quote(do: fn r -> Bursts.malloc_burst(64, medium(r)) end)},
        {"beam_malloc/mrealloc/mfree, 1-64 MiB",
         quote(do: fn r -> Bursts.malloc_burst(2, large(r)) end)},
        {"threads that exit, their blocks half freed by the joiner",
         quote(do: fn _ -> Bursts.threads_burst(4, 5_000, 64) end)}
      ] do
    test "repeated bursts do not grow what is held: #{name}" do
      :ok = Bursts.collect()
      {after10, after100} = rounds(unquote(fun))
      # Levels off: 90 more identical bursts add at most 2 MiB (a few
      # slabs of rounding), never a burst's worth each.
      assert after100 <= after10 + 2 * @mib, "#{after10} after 10 rounds, #{after100} after 100"
      # Within the documented floor: the slabs and caches of a few heaps.
      assert after100 <= 16 * @mib
      :ok = Bursts.collect()
      assert %{live_blocks: 0, backing_bytes: b} = Bursts.usage()
      assert b < 512 * 1024
    end
  end
end
