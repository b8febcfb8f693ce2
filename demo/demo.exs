# A walk through beam_alloc's allocators inside a running BEAM.
#
#   make demo
#
# builds build/demo/beam_alloc_demo.so from demo/demo_nif.c and runs this
# script with BEAM_ALLOC_DEMO_NIF pointing at it.

defmodule BeamAllocDemo do
  @moduledoc false
  @on_load :load_nif

  def load_nif do
    path =
      System.get_env("BEAM_ALLOC_DEMO_NIF") ||
        Path.expand("../build/demo/beam_alloc_demo", __DIR__)

    :erlang.load_nif(String.to_charlist(path), 0)
  end

  def raw_addresses(_count, _size), do: :erlang.nif_error(:not_loaded)
  def raw_alloc_aligned(_alignment), do: :erlang.nif_error(:not_loaded)
  def raw_hold, do: :erlang.nif_error(:not_loaded)
  def raw_release, do: :erlang.nif_error(:not_loaded)
  def large_aligned(_size, _alignment), do: :erlang.nif_error(:not_loaded)
  def gpa_leaks, do: :erlang.nif_error(:not_loaded)
  def which_allocator, do: :erlang.nif_error(:not_loaded)
  def which_allocator_checked, do: :erlang.nif_error(:not_loaded)
  def arena(_count), do: :erlang.nif_error(:not_loaded)
  def leaky, do: :erlang.nif_error(:not_loaded)
  def failing(_fail_index), do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end

defmodule BeamAllocDemo.Tour do
  @moduledoc false

  def run do
    raw()
    tracking()
    large()
    general_purpose()
    beam_allocator()
    arena()
    leak_check()
    failing()
    IO.puts("\nThat was every allocator of the guide, live.")
  end

  defp raw do
    section("Raw allocator: enif_alloc behind the allocator interface")
    addresses = BeamAllocDemo.raw_addresses(4, 24)

    for address <- addresses do
      say("24-byte block at #{hex(address)}  (aligned to #{alignment(address)} bytes)")
    end

    say(
      "every block is at least #{addresses |> Enum.map(&alignment/1) |> Enum.min()}-byte aligned, " <>
        "which is all enif_alloc promises"
    )

    for alignment <- [8, 16, 4096] do
      case BeamAllocDemo.raw_alloc_aligned(alignment) do
        :null ->
          say(
            "asking for #{alignment}-byte alignment: NULL (the raw allocator refuses, it never misaligns)"
          )

        address ->
          say("asking for #{alignment}-byte alignment: #{hex(address)}")
      end
    end
  end

  defp tracking do
    section("Tracking: the VM counts raw allocations")
    :erlang.garbage_collect()
    before = :erlang.memory(:system)
    :ok = BeamAllocDemo.raw_hold()
    held = :erlang.memory(:system)
    :ok = BeamAllocDemo.raw_release()
    released = :erlang.memory(:system)

    say(":erlang.memory(:system) before:           #{bytes(before)}")
    say("holding 1 MiB from the raw allocator:     #{bytes(held)}  (#{delta(held - before)})")

    say(
      "after freeing it:                         #{bytes(released)}  (#{delta(released - before)})"
    )
  end

  defp large do
    section("Large allocator: any power-of-two alignment")

    for {size, alignment} <- [{3, 4096}, {100, 4096}, {10_000, 65_536}] do
      address = BeamAllocDemo.large_aligned(size, alignment)

      say(
        "#{size} bytes at #{alignment}-byte alignment: #{hex(address)}  " <>
          "(address rem #{alignment} = #{rem(address, alignment)})"
      )
    end
  end

  defp general_purpose do
    section("General purpose allocator: leak detection")
    {live, freed} = BeamAllocDemo.gpa_leaks()
    say("detect_leaks with an 8-byte block live:   #{live}")
    reports()
    say("detect_leaks once it is freed:            #{freed}")
  end

  defp beam_allocator do
    section("beam_allocator: set on entry to every BEAM_NIF")
    {name, list} = BeamAllocDemo.which_allocator()
    say("in a plain BEAM_NIF it is #{name}; it built #{inspect(list)}")
    {name, list} = BeamAllocDemo.which_allocator_checked()
    say("with .leak_check = true it is #{name}; it built #{inspect(list)}")
  end

  defp arena do
    section("Arena over beam_allocator: free everything at once")
    {first, used} = BeamAllocDemo.arena(1000)
    say("1000 arrays of 4 u16 and no individual free; the first is #{inspect(first)}")
    say("the arena handed out #{bytes(used)} and gave them back in one deinit")
  end

  defp leak_check do
    section("leak_check: a NIF that forgets a block")

    try do
      BeamAllocDemo.leaky()
    rescue
      error in RuntimeError ->
        say("the library reported:")
        reports()
        say("and the call raised RuntimeError: #{Exception.message(error)}")
    end
  end

  defp failing do
    section("Failing allocator: out of memory on demand")

    for fail_index <- 0..3 do
      say("fail from allocation ##{fail_index} on: #{inspect(BeamAllocDemo.failing(fail_index))}")
    end
  end

  # What the library reported through its hook since the last look.
  defp reports do
    for line <- BeamAllocDemo.take_reports(), do: say("  | " <> line)
  end

  defp section(title), do: IO.puts("\n== #{title}")
  defp say(line), do: IO.puts("   " <> line)

  defp hex(address), do: "0x" <> String.downcase(Integer.to_string(address, 16))

  defp alignment(address) do
    Enum.find([65_536, 4096, 1024, 256, 64, 32, 16, 8, 4, 2, 1], &(rem(address, &1) == 0))
  end

  defp bytes(n) when n >= 1_048_576, do: "#{Float.round(n / 1_048_576, 2)} MiB"
  defp bytes(n) when n >= 1024, do: "#{Float.round(n / 1024, 1)} KiB"
  defp bytes(n), do: "#{n} B"

  defp delta(n) when n >= 0, do: "+" <> bytes(n)
  defp delta(n), do: "-" <> bytes(-n)
end

BeamAllocDemo.Tour.run()
