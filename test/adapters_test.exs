defmodule BeamAlloc.AdaptersTest do
  # zlib and zstd on beam_alloc through <beam_alloc/zlib.h> and
  # <beam_alloc/zstd.h>, in a real BEAM.
  use ExUnit.Case, async: true

  alias BeamAlloc.Testing

  @text :binary.copy("beam_alloc gives NIF authors an allocator system. ", 2000) <>
          :crypto.strong_rand_bytes(5000)

  describe "zlib" do
    test "compresses byte for byte as :zlib.compress/1, on both allocators" do
      expected = :zlib.compress(@text)
      assert AdaptersNif.zlib_compress(@text) == expected
      assert AdaptersNif.zlib_compress_checked(@text) == expected
      assert AdaptersNif.zlib_compress("") == :zlib.compress("")
    end

    test "round-trips, and reads what :zlib wrote" do
      packed = AdaptersNif.zlib_compress_checked(@text)
      assert AdaptersNif.zlib_uncompress_checked(packed) == @text
      assert AdaptersNif.zlib_uncompress(:zlib.compress(@text)) == @text
      assert :zlib.uncompress(AdaptersNif.zlib_compress(@text)) == @text
    end

    test "a leak inside zlib names zlib's function and the NIF's line that called zlib" do
      AdaptersNif.take_reports()

      assert_raise RuntimeError,
                   "memory leak detected in function `AdaptersNif.zlib_leak/0`",
                   fn -> AdaptersNif.zlib_leak() end

      reports = AdaptersNif.take_reports()
      leaks = Enum.filter(reports, &(&1 =~ "leak:"))
      assert leaks != []
      assert Enum.all?(leaks, &(&1 =~ ~r/from deflateInit2_ \(libz\.so/)), inspect(leaks)
      # zlib has no frame pointers: the unwinder walks on through it to the
      # NIF's call of deflateInit, and stops there (not the glue's frame).
      assert Enum.all?(leaks, &(&1 =~ ~r/\(libz\.so[^)]*\) <- adapters_nif\.so\+0x[0-9a-f]+$/)),
             inspect(leaks)

      if BeamAlloc.Symbolizer.with_libdw?() do
        line = BeamAlloc.Symbolizer.resolve_sites(hd(leaks))
        assert line =~ ~r/<- zlib_leak \(\S*adapters_nif\.c:110\)$/, line
      end

      refute Enum.any?(reports, &(&1 =~ "hook"))
    end

    test "survives every allocation failure" do
      assert {:ok, count} =
               Testing.check_all_allocation_failures(fn ->
                 AdaptersNif.zlib_compress(@text)
               end)

      assert count >= 5
    end

    test "check_all_allocation_failures names a leak of zlib's blocks by zlib's function and the NIF's line" do
      error =
        assert_raise BeamAlloc.AllocationFailureError, fn ->
          Testing.check_all_allocation_failures(fn -> AdaptersNif.zlib_end_forgotten() end)
        end

      leaks = Enum.filter(error.problems, &(&1.kind == :leak))
      assert [%{request: %{site: failed}} | _] = leaks
      sites = for p <- leaks, b <- p.blocks, do: b.site
      assert sites != []
      # zlib's request: its function, then the calls up to the NIF's, which
      # ends the chain (not the glue's frames, nor the VM's).
      chain = ~r/^deflateInit2_ \(libz\.so[^)]*\)( <- [^<]*\(libz\.so[^)]*\))* <- [^<]+$/
      assert Enum.all?(sites, &(&1 =~ chain)), inspect(sites)
      # The NIF's own request: its one frame.
      refute failed =~ "<-"

      if BeamAlloc.Symbolizer.with_libdw?() do
        assert Enum.all?(sites, &(&1 =~ ~r/<- zlib_end_forgotten \(\S*adapters_nif\.c:167\)$/)),
               inspect(sites)

        assert failed =~ ~r/^zlib_end_forgotten \(\S*adapters_nif\.c:169\)$/
      end
    end
  end

  describe "zstd" do
    test "round-trips on both allocators" do
      for level <- [1, 3, 19] do
        packed = AdaptersNif.zstd_compress_checked(@text, level)
        assert byte_size(packed) < byte_size(@text)
        assert AdaptersNif.zstd_decompress_checked(packed) == @text
        assert AdaptersNif.zstd_decompress(AdaptersNif.zstd_compress(@text, level)) == @text
      end
    end

    test "survives every allocation failure" do
      assert {:ok, count} =
               Testing.check_all_allocation_failures(fn ->
                 AdaptersNif.zstd_decompress(AdaptersNif.zstd_compress(@text, 3))
               end)

      assert count >= 2
    end
  end

  describe "a stream in a resource, across a hot upgrade" do
    # The stream keeps the hooks of the copy of the library that made it.
    # A new version of the module from another file took the resource type
    # over and the old version was purged: the VM unmapped the old copy
    # while the stream lived, and the new copy's destructor, freeing it,
    # jumped into unmapped code (SIGSEGV, exit 139).
    test "zlib: the old copy's purge leaves its hooks to the stream" do
      stream_upgrade_in_own_vm(:zlib)
    end

    test "zstd: the old copy's purge leaves its hooks to the context" do
      stream_upgrade_in_own_vm(:zstd)
    end
  end

  # A copy whose zlib hooks ran stays mapped after its module's purge: a
  # module loaded again from its file, rebuilt since, runs the old copy.
  # The report said why as for a resource alive or a check (neither here),
  # and purging first does not help: it says the hooks, and a restart.
  test "a module loaded again after its zlib hooks ran is told the copy stays mapped for them" do
    {out, status} =
      BeamAlloc.Test.UpgradeVM.run(AdaptersNif, "adapters_nif", ":report_to_stderr", """
      version.("a")
      say.("a compress", AdaptersNif.zlib_compress("abc") == :zlib.compress("abc"))
      [so] = Regex.run(~r{/\\S+/a/adapters_nif\\.so}, File.read!("/proc/self/maps"))
      File.cp!(so, so <> ".new")
      File.rename!(so <> ".new", so)
      :code.purge(AdaptersNif)
      :code.delete(AdaptersNif)
      :code.purge(AdaptersNif)
      version.("a")
      say.("a again", AdaptersNif.zlib_compress("abc") == :zlib.compress("abc"))
      """)

    assert status == 0, "the VM exited with #{status}:\n#{out}"
    assert out =~ "a compress true\n"
    assert out =~ "a again true\n"
    assert [line] = Regex.scan(~r/^.*rebuilt since the VM mapped it.*$/m, out) |> Enum.concat()
    assert line =~ "its zlib, zstd or SQLite hooks ran"
    assert line =~ "restart the node"
  end

  # A stream made by copy a of AdaptersNif, on its process-wide instance,
  # in a process of its own; a new version from copy b (taking the type
  # over); the old version purged; then the stream freed by b's
  # destructor. In a VM of its own: the kept copy stays mapped. Reports go
  # to stderr (load_info report_to_stderr): none is expected, a's included.
  # The stream's memory is a's, which stats/1 read neither before a's
  # purge (only the running copy, b) nor after (a purged copy read 0).
  defp stream_upgrade_in_own_vm(kind) do
    # A deflate stream's state and window (zlib), a compression context
    # before its first frame (zstd).
    min_stream = if kind == :zlib, do: 200_000, else: 1_000

    {out, status} =
      BeamAlloc.Test.UpgradeVM.run(AdaptersNif, "adapters_nif", ":report_to_stderr", """
      parent = self()
      version.("a")

      {holder, ref} =
        spawn_monitor(fn ->
          stream = AdaptersNif.stream_new(#{inspect(kind)})
          send(parent, {:made, is_reference(stream)})
          receive do: (:free -> :ok)
        end)

      receive do: ({:made, made} -> say.("a stream", made))
      version.("b")
      :code.purge(AdaptersNif)
      say.("a kept mapped", File.read!("/proc/self/maps") =~ "/a/adapters_nif.so")
      live = fn -> BeamAlloc.stats(AdaptersNif).general_purpose.live_bytes end
      held = live.()
      send(holder, :free)
      receive do: ({:DOWN, ^ref, _, _, _} -> :ok)

      freed = fn freed ->
        case AdaptersNif.streams_freed() do
          0 -> Process.sleep(10) && freed.(freed)
          n -> n
        end
      end

      say.("b freed", freed.(freed))
      # What the stream held, in a's instance, counted in the stats.
      say.("stream counted", held - live.() >= #{min_stream})
      say.("b compress", AdaptersNif.zlib_compress("abc") == :zlib.compress("abc"))
      """)

    assert status == 0, "the VM exited with #{status}:\n#{out}"

    assert out == """
           a stream true
           a kept mapped true
           b freed 1
           stream counted true
           b compress true
           """
  end
end
