defmodule ElixirNifTest do
  use ExUnit.Case, async: true

  import BeamAlloc.Testing, only: [check_all_allocation_failures: 1]

  describe "the NIFs" do
    test "compress/1 (zlib; C name nif_compress) round-trips" do
      data = String.duplicate("beam_alloc ", 100)
      assert {:ok, compressed} = ElixirNif.compress(data)
      assert byte_size(compressed) < byte_size(data)
      assert :zlib.uncompress(compressed) == data
    end

    test "parse_ints/1 parses, and reports a syntax error" do
      assert {:ok, [1, 22, 333, 4, 5]} = ElixirNif.parse_ints("1,22,333,4,5")
      assert {:error, :syntax} = ElixirNif.parse_ints("1,x")
    end

    test "checksum/1, from the C++ source, is Adler-32" do
      data = :crypto.strong_rand_bytes(1000)
      assert ElixirNif.checksum(data) == :erlang.adler32(data)
    end
  end

  describe "fault injection" do
    test "parse_ints/1 survives every allocation failure" do
      # the first array, then growths to 4, 8 and 16 elements
      assert {:ok, 4} =
               check_all_allocation_failures(fn ->
                 ElixirNif.parse_ints("1,2,3,4,5,6,7,8,9")
               end)
    end

    test "compress/1 survives its allocation failing" do
      assert {:ok, 1} = check_all_allocation_failures(fn -> ElixirNif.compress("abc") end)
    end

    test "a swallowed failure is caught" do
      # checksum/1 allocates nothing; a function that hides parse_ints'
      # error behind a success is flagged.
      error =
        assert_raise BeamAlloc.AllocationFailureError, fn ->
          check_all_allocation_failures(fn ->
            _ = ElixirNif.parse_ints("1,2,3")
            :ok
          end)
        end

      assert [%{kind: :swallowed, index: 0} | _] = error.problems
    end
  end

  describe "leak checking" do
    @tag :capture_log
    test "leaky/0 raises, and the leak is reported to the logger" do
      BeamAlloc.Reporter.take()

      assert_raise RuntimeError, "memory leak detected in function `ElixirNif.leaky/0`", fn ->
        ElixirNif.leaky()
      end

      lines = for {ElixirNif, line} <- BeamAlloc.Reporter.take(), do: line
      assert Enum.any?(lines, &(&1 =~ "memory leak detected in function `ElixirNif.leaky/0`"))
      assert Enum.any?(lines, &(&1 =~ "leak: 32 bytes"))
    end
  end

  describe "stats" do
    test "count the bytes a NIF holds" do
      ElixirNif.drop()
      before = BeamAlloc.stats(ElixirNif).raw
      assert :ok = ElixirNif.keep(100_000)
      held = BeamAlloc.stats(ElixirNif).raw
      assert held.live_bytes - before.live_bytes == 100_000
      assert held.allocations > before.allocations
      assert :ok = ElixirNif.drop()
      assert BeamAlloc.stats(ElixirNif).raw.live_bytes == before.live_bytes
    end
  end

  describe "the built library" do
    test "is in priv/ under _build, and exports nothing of beam_alloc" do
      so = Path.join(:code.priv_dir(:elixir_nif), "elixir_nif.so")
      assert File.exists?(so)
      assert so =~ "/_build/test/lib/elixir_nif/priv/"

      {out, 0} = System.cmd("nm", ["-D", "--defined-only", so])

      exported =
        for line <- String.split(out, "\n", trim: true), do: List.last(String.split(line))

      assert "nif_init" in exported

      assert Enum.filter(exported, &String.starts_with?(&1, "beam_")) == [
               "beam_alloc_fault_hooks_v1"
             ]
    end

    test "has debug info" do
      so = Path.join(:code.priv_dir(:elixir_nif), "elixir_nif.so")
      {out, 0} = System.cmd("readelf", ["-S", so])
      assert out =~ ".debug_info"
    end
  end
end
