defmodule BeamAlloc.LinesTest do
  # Reports name the source line of each call under the build flags a NIF
  # author may have (test/nifs/lines/lines.h, built by the Makefile as one
  # library per set of flags), and name none rather than a wrong one when
  # the library cannot tell: no -g, or its file rebuilt under the VM. Not
  # async: the tests read BeamAlloc.Reporter, which every library shares.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog
  import BeamAlloc.Test.Reports, only: [report: 1]

  alias BeamAlloc.Reporter
  alias BeamAlloc.Test.Lines

  @source "test/nifs/lines/lines.h"

  setup do
    Reporter.take()
    :ok
  end

  defp line_of(marker), do: BeamAlloc.Test.Reports.line_of(@source, marker)

  # nif's double free is named at callee's line (marked callee_site),
  # then nif's (caller_site).
  defp double_free_named(module, nif, callee, callee_site, caller_site) do
    capture_log(fn ->
      assert_raise RuntimeError, ~r/double free/, fn -> apply(module, nif, []) end

      assert report("double free") =~
               "called from #{callee} (#{@source}:#{line_of(callee_site)}) <- " <>
                 "#{nif} (#{@source}:#{line_of(caller_site)})"
    end)
  end

  defp inlined_free_named(module),
    do:
      double_free_named(module, :inlined_double_free, "lines_free", "inlined free", "second free")

  # A function whose last act is the free: the compiler turns the call
  # into a jump unless told not to, and the report named the NIF's line
  # alone. The NIFs a user builds with beam_alloc.mk or the Mix compiler
  # (and these) are built without sibling calls.
  defp tail_free_named(module),
    do: double_free_named(module, :tail_double_free, "lines_drop", "tail free", "second drop")

  test "a helper whose last act is the free keeps its frame (no sibling calls)" do
    tail_free_named(Lines.SplitDwarf)
    tail_free_named(Lines.Lto)
  end

  # The skeleton unit in the object has the lines but no functions; they
  # are in the .dwo: the inlined function's line was named as the NIF,
  # and the NIF's own line was lost.
  test "split DWARF (-gsplit-dwarf): an inlined function and its caller's line" do
    inlined_free_named(Lines.SplitDwarf)
  end

  # GCC's LTO refers from each function's DIE to one in another unit:
  # dwarf_getscopes found no scope (clang's LTO passed before).
  test "LTO (-flto): an inlined function and its caller's line" do
    inlined_free_named(Lines.Lto)
  end

  # OmitFp's nif frees memory it does not own: the report names the
  # call's line (marker) and no frame after it.
  defp foreign_free_named(nif, marker) do
    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory misuse/, fn -> apply(Lines.OmitFp, nif, []) end

      assert report("does not own") =~
               ~r/, called from #{nif} \(#{@source}:#{line_of(marker)}\)$/
    end)
  end

  # Without frame pointers rbp is any register: a body that keeps env in
  # it across the free had env's words (it lies on the scheduler's stack,
  # above the glue's frame) taken for a frame, one more site after its
  # line: "<- 0x7eff72f801bf", or an address in beam.smp. The walk stops at
  # the glue's frame whatever frame pointer leads there.
  test "without frame pointers: the call's line, and no frame above it" do
    foreign_free_named(:foreign_free, "foreign free")
  end

  # Below the glue's frame, rbp at the body's own words looks like any
  # frame to the walk: their second word, a static's address, was named
  # after the line ("<- omit_fp_nif.so+0x2ea9f"). A report leaves out what
  # returns into no module's code.
  test "without frame pointers: no frame of words that are no frame" do
    foreign_free_named(:stack_words_free, "words free")
  end

  test "without -g: function names and offsets, and the report says why" do
    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory leak/, fn -> Lines.NoDebug.leak() end
      leak = report("leak: 24 bytes")
      assert leak =~ ~r/allocated from leak \(no_debug_nif\.so\+0x[0-9a-f]+\)/
      refute leak =~ @source

      assert String.ends_with?(
               leak,
               " (no source lines: no_debug_nif.so has no debug information for them: " <>
                 "build it with -g and keep its debug information)"
             )
    end)
  end

  # A line resolved once, then again (the reporter resolves the reports a
  # watch shows after logging them: without_reports/1, BeamAlloc.Case):
  # its NIF's site is a source line by then, and only the sites of a
  # library without debug information (libz's, say) are left, so the
  # second pass said "no source lines" after a line that names one.
  test "a text that already names a source line gets no note that it names none" do
    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory leak/, fn -> Lines.NoDebug.leak() end
      [site] = Regex.run(~r/leak \(no_debug_nif\.so\+0x[0-9a-f]+\)/, report("leak: 24 bytes"))
      text = "leak: 24 bytes, allocated from #{site} <- caller (c_src/my_nif.c:12)"
      assert BeamAlloc.Symbolizer.resolve_sites(text) == text
    end)
  end

  # The same for a text that names no line: the reporter's second pass
  # found the note of its first and wrote it again ("... build it with
  # -g) (no source lines: ... build it with -g)" in BeamAlloc.Case's
  # failure for every report of a library without -g).
  test "a text resolved twice gets its note that it names no line once" do
    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory leak/, fn -> Lines.NoDebug.leak() end
      leak = report("leak: 24 bytes")
      assert String.ends_with?(leak, "keep its debug information)")
      assert BeamAlloc.Symbolizer.resolve_sites(leak) == leak
    end)
  end

  # A C library the NIF calls (libz.so.1, libsqlite3.so.0) has no debug
  # information, and a site of its says nothing the user can act on: where
  # none of a report's sites has a line, every frame kept is the
  # library's (its own thread's allocation, which no NIF code is under, or
  # one deeper than the walk goes on: src/frames.c). The note said "build
  # it with -g", of the system's library.
  test "sites only in a C library's code: the note says why, not -g" do
    # (A site of a static function of the library has no name either:
    # the library, shipped without its symbol table, read as stripped
    # too, a second note.)
    text = "leak: 8 bytes, allocated from deflateInit2_ (libz.so.1+0x8d86) <- libz.so.1+0x10"
    resolved = BeamAlloc.Symbolizer.resolve_sites(text)
    refute resolved =~ "build it with -g"
    assert length(String.split(resolved, "(no source lines")) == 2

    assert String.ends_with?(
             resolved,
             " (no source lines: the frames kept are all in libz.so.1, " <>
               "which has none: an allocation on a thread of its own, or over 64 frames inside it)"
           )
  end

  # A misuse report names its caller alone: a free inside a C library
  # through the NIF's hooks (libxml2's xmlFreeDoc, of a block another
  # library's hooks made) is one site in it, made on the NIF call's
  # thread. The note said "an allocation on a thread of its own, or over
  # 64 frames inside it", neither of them true, of a free.
  test "a misuse called from a C library's code: the note says the caller alone is named" do
    text =
      "general purpose allocator: free of a pointer this allocator does not own " <>
        "(foreign, or already freed): 0x7f8481881080 (beam_mfree: no length), " <>
        "called from deflateInit2_ (libz.so.1+0x8d86)"

    resolved = BeamAlloc.Symbolizer.resolve_sites(text)
    refute resolved =~ "thread of its own", resolved

    assert String.ends_with?(
             resolved,
             " (no source lines: the caller is in libz.so.1, which has none: a misuse " <>
               "report names its caller alone)"
           ),
           resolved
  end

  # The caller the note speaks of is the site after "called from": a
  # misuse whose caller is the NIF's (without -g) and whose block was
  # allocated in a C library said of the library "the caller is in
  # libz.so.1", naming the allocation's site as the caller.
  test "a misuse whose block a C library allocated: its site is not called the caller" do
    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory leak/, fn -> Lines.NoDebug.leak() end
      [site] = Regex.run(~r/leak \(no_debug_nif\.so\+0x[0-9a-f]+\)/, report("leak: 24 bytes"))

      text =
        "general purpose allocator: free of a freed block: 0x7f8481881080 (length 8), " <>
          "called from #{site}; the block was allocated from deflateInit2_ (libz.so.1+0x8d86)"

      resolved = BeamAlloc.Symbolizer.resolve_sites(text)
      refute resolved =~ "the caller is in libz.so.1", resolved
      assert resolved =~ " (no source lines: the frames kept are all in libz.so.1, ", resolved
    end)
  end

  # A stripped library (ldflags -s, strip) has neither lines nor names:
  # the note said "build it with -g" of a library built with it.
  test "a stripped library: the note says so" do
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_lines_stripped")
    load_copy(Lines.Stripped, dir, "stripped_nif", &({_, 0} = System.cmd("strip", [&1])))

    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory leak/, fn -> Lines.Stripped.leak() end
      leak = report("leak: 24 bytes")
      assert leak =~ ~r/allocated from stripped_nif\.so\+0x[0-9a-f]+ /

      assert String.ends_with?(
               leak,
               " (no source lines: stripped_nif.so is stripped: build it with -g and keep " <>
                 "its symbols)"
             )
    end)
  end

  # The symbol table's names are mangled: the C++ runtime demangles them
  # (they read "_ZL19beam_nif_guard_leakP18enif_environment_tiPKm").
  test "C++ without -g: demangled function names, without their parameters" do
    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory leak/, fn -> Lines.NoDebugCxx.leak() end
      leak = report("leak: 24 bytes")
      assert leak =~ ~r/allocated from leak \(no_debug_cxx_nif\.so\+0x[0-9a-f]+\) \(no source/
      refute leak =~ "_Z"
    end)
  end

  # A C++ library without debug information (libstdc++) names its sites
  # with the symbol table's qualified names, "std::pmr::...::_M_new_buffer
  # (libstdc++.so.6+0x..)": a second pass took the last name alone for a
  # site, and wrote the qualified name before it again ("std::pmr::
  # monotonic_buffer_resource::std::pmr::monotonic_buffer_resource::
  # _M_new_buffer" in BeamAlloc.Case's failure for a leak under a
  # std::pmr::monotonic_buffer_resource), or, after a name ending in a
  # template's ">", the whole site inside its own parentheses.
  test "a C++ library's qualified names stay as they are when resolved again" do
    # (CxxNif links libstdc++, for a VM that does not)
    {:module, _} = Code.ensure_loaded(CxxNif)

    for symbol <- [
          "_ZNSt3pmr25monotonic_buffer_resource13_M_new_bufferEmm",
          "_ZSt9use_facetISt5ctypeIcEERKT_RKSt6locale"
        ] do
      text = "leak: 8 bytes, allocated from #{libstdcxx_site(symbol)} <- nif (c_src/my_nif.c:12)"
      once = BeamAlloc.Symbolizer.resolve_sites(text)
      assert once =~ "std::"
      assert BeamAlloc.Symbolizer.resolve_sites(once) == once
    end
  end

  # "libstdc++.so.6+0x..": a site inside symbol's code in the libstdc++
  # the VM has mapped.
  defp libstdcxx_site(symbol) do
    [path | _] = Regex.run(~r"/\S*/libstdc\+\+\.so\.6\S*$"m, File.read!("/proc/self/maps"))
    {symbols, 0} = System.cmd("nm", ["-D", "--defined-only", path])
    [address] = Regex.run(~r/^([0-9a-f]+) [TW] #{symbol}@/m, symbols, capture: :all_but_first)

    "libstdc++.so.6+0x" <>
      String.downcase(Integer.to_string(String.to_integer(address, 16) + 4, 16))
  end

  # module loaded from a copy of the lines/ library in dir, made anew and
  # removed on exit (a TmpDir path, or one on a file system a test wants),
  # after prepare (strip, say) ran on the copy: the copy's path.
  defp load_copy(module, dir, library, prepare \\ fn _copy -> :ok end) do
    File.rm_rf!(dir)
    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    copy = Path.join(dir, library <> ".so")
    File.cp!(Path.join([:code.priv_dir(:beam_alloc), "lines", library <> ".so"]), copy)
    prepare.(copy)
    assert :ok = module.load(Path.rootname(copy))
    copy
  end

  # A copy of library loaded by module, replaced on disk (a new file, as a
  # linker writes) by replacement before any report of it was read: its
  # leak names no line, and says why.
  defp rebuilt_under_the_vm(module, library, replacement) do
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_lines_#{library}")
    copy = load_copy(module, dir, library)
    priv = Path.join(:code.priv_dir(:beam_alloc), "lines")
    File.cp!(Path.join(priv, replacement <> ".so"), copy <> ".new")
    File.rename!(copy <> ".new", copy)

    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory leak/, fn -> module.leak() end
      leak = report("leak: 24 bytes")
      assert leak =~ ~r/allocated from #{library}\.so\+0x[0-9a-f]+ /
      refute leak =~ @source

      assert String.ends_with?(
               leak,
               " (no source lines: #{library}.so changed on disk since it was loaded)"
             )
    end)
  end

  # Nothing in the object says which build it is: the new file's lines
  # (1000 on) were named for the old code.
  test "a library without a build ID rebuilt under the VM names no line of the new file" do
    rebuilt_under_the_vm(Lines.NoBuildId, "no_build_id_nif", "no_build_id_shifted_nif")
  end

  test "a library with a build ID rebuilt under the VM names no line, and says why" do
    rebuilt_under_the_vm(Lines.Plain, "plain_nif", "no_build_id_shifted_nif")
  end

  # On btrfs, stat gives a file the device of its subvolume, while
  # /proc/self/maps names the file system's: the check that the file at
  # the path is the loaded one failed for every library without a build
  # ID, whose reports then named no line and said it had changed on disk.
  # Needs a directory on btrfs: BEAM_ALLOC_TEST_BTRFS_DIR.
  @btrfs System.get_env("BEAM_ALLOC_TEST_BTRFS_DIR")
  unless @btrfs, do: @tag(skip: "BEAM_ALLOC_TEST_BTRFS_DIR (a directory on btrfs) not set")

  test "a library without a build ID on btrfs names its lines" do
    # Read here, not from @btrfs: unset, @btrfs is nil in the code, and
    # Elixir 1.20's type checker warns about Path.join(nil, _) though the
    # test is skipped then.
    dir =
      Path.join(
        System.fetch_env!("BEAM_ALLOC_TEST_BTRFS_DIR"),
        "beam_alloc_lines_#{System.pid()}"
      )

    load_copy(Lines.NoBuildIdKept, dir, "no_build_id_kept_nif")

    capture_log(fn ->
      assert_raise RuntimeError, ~r/memory leak/, fn -> Lines.NoBuildIdKept.leak() end
      assert report("leak: 24 bytes") =~ "allocated from leak (#{@source}:#{line_of("leak")})"
    end)
  end
end
