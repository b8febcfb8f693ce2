defmodule BeamAlloc.MisuseTest do
  # Misuse of memory fails the call (under leak_check, or when asked), and
  # its reports name the source lines of the calls involved. Not async:
  # the tests read BeamAlloc.Reporter, which every library shares.
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  import ExUnit.CaptureLog

  alias BeamAlloc.Reporter
  alias BeamAlloc.Test.Misuse

  @source "test/nifs/misuse_nif.c"

  setup do
    Code.ensure_loaded!(Misuse)
    Reporter.take()
    :ok
  end

  defp message(fun, kind),
    do: "memory misuse detected in function `BeamAlloc.Test.Misuse.#{fun}/0`: #{kind}"

  # The line of source (by default this module's NIF) that carries the
  # comment /* SITE: marker */.
  defp line_of(marker, source \\ @source),
    do: BeamAlloc.Test.Reports.line_of(source, marker)

  # Reports are messages to the reporter: wait for at least count.
  defp reports(count, tries \\ 100) do
    got = Reporter.recent()

    if length(got) >= count or tries == 0 do
      Enum.map(Reporter.take(), &elem(&1, 1))
    else
      Process.sleep(10)
      reports(count, tries - 1)
    end
  end

  test "two frees alike ending two branches are each reported at their own line" do
    for {which, marker} <- [{1, "branch one"}, {2, "branch two"}] do
      capture_log(fn ->
        assert_raise RuntimeError, fn -> Misuse.branch_free(which) end
        assert [line | _] = reports(1)
        assert line =~ "called from branch_free (#{@source}:#{line_of(marker)})", line
      end)
    end
  end

  # check_all_allocation_failures(fun) fails with a misuse of kind whose
  # report matches report.
  defp assert_check_misuse(fun, kind, report) do
    error =
      assert_raise BeamAlloc.AllocationFailureError, fn ->
        BeamAlloc.Testing.check_all_allocation_failures(fun)
      end

    assert Enum.any?(
             error.problems,
             &(&1.kind == :misuse and &1.misuse == kind and &1.report =~ report)
           ),
           inspect(error.problems)
  end

  # A GPA block of len kept by one NIF, freed by a raw one: refused.
  defp refused_in_raw_nif(len) do
    capture_log(fn ->
      assert :ok = Misuse.keep_gpa_block(len)

      assert_raise RuntimeError,
                   message(
                     :free_kept_block_here,
                     "free of a pointer the allocator does not own"
                   ),
                   fn -> Misuse.free_kept_block_here() end

      assert [line] = reports(1)
      assert line =~ "a block of a general purpose allocator, given to the raw allocator"
      assert line =~ "called from free_kept_block_here (#{@source}:#{line_of("wrong nif")})"
      # Still live and intact: its own NIF frees it.
      assert :ok = Misuse.free_kept_block_rightly()
    end)
  end

  describe "under leak_check, each kind raises once the call is over" do
    for {fun, kind} <- [
          double_free: "double free",
          write_past_end: "write past the end of a block",
          wrong_length: "free with a wrong length or alignment",
          wrong_alignment: "free with a wrong length or alignment",
          foreign_free: "free of a pointer the allocator does not own",
          write_after_free: "write after free",
          large_double_free: "double free",
          large_write_past_end: "write past the end of a block",
          large_wrong_length: "free with a wrong length or alignment",
          large_write_after_free: "write after free"
        ] do
      test "#{kind} (#{fun})" do
        capture_log(fn ->
          assert_raise RuntimeError, message(unquote(fun), unquote(kind)), fn ->
            apply(Misuse, unquote(fun), [])
          end

          # The details still reach the reporter (and the logger).
          assert [line | _] = reports(1)
          assert line =~ "beam_alloc: general purpose allocator: "
          # The site of the misusing call, or of the block's allocation
          # when the misuse is found later (a write after free).
          assert line =~ "from #{unquote(fun)} (#{@source}:"
        end)

        # The VM and the library carry on: a clean call works.
        assert {:ok, _} = BeamAlloc.Testing.check_all_allocation_failures(fn -> :ok end)
      end
    end

    test "beam_msize of a freed block raises as a misuse of its own kind" do
      capture_log(fn ->
        assert_raise RuntimeError,
                     message(
                       :msize_after_free,
                       "size query of a pointer that is not a live block"
                     ),
                     fn -> Misuse.msize_after_free() end

        assert [line | _] = reports(1)
        assert line =~ "beam_msize of"
        assert line =~ "from msize_after_free (#{@source}:"
      end)
    end

    test "a free the library ignores (alignment 3) is a misuse, not a leak" do
      capture_log(fn ->
        assert_raise RuntimeError,
                     message(:impossible_free, "free with a wrong length or alignment"),
                     fn -> Misuse.impossible_free() end

        assert Enum.any?(
                 reports(1),
                 &(&1 =~
                     "ignored: impossible length or alignment, or an address no block has (length 24, alignment 3;")
               )
      end)
    end

    test "a call inside another raises with its own misuse; the outer call with its own" do
      capture_log(fn ->
        assert_raise RuntimeError, message(:nested_outer, "double free"), fn ->
          Misuse.nested_outer()
        end
      end)
    end

    test "a misuse on a thread the call started raises too" do
      capture_log(fn ->
        assert_raise RuntimeError, message(:thread_double_free, "double free"), fn ->
          Misuse.thread_double_free()
        end

        assert Enum.any?(reports(1), &(&1 =~ "called from double_free_on (#{@source}:"))
      end)

      # And check_all_allocation_failures lists it as a misuse, with the
      # thread's report: the line (it gave "on another thread (its report
      # names the line)", and the exception named none).
      capture_log(fn ->
        assert_check_misuse(
          &Misuse.thread_double_free/0,
          "double free",
          "called from double_free_on (#{@source}:"
        )
      end)
    end

    test "a misuse on a thread the call started raises, though the call allocated nothing" do
      capture_log(fn ->
        assert_raise RuntimeError,
                     message(
                       :thread_foreign_free,
                       "free of a pointer the allocator does not own"
                     ),
                     fn -> Misuse.thread_foreign_free() end

        assert Enum.any?(reports(1), &(&1 =~ "called from foreign_free_on (#{@source}:"))
      end)
    end

    test "the misuse wins over the NIF's own exception" do
      capture_log(fn ->
        assert_raise RuntimeError, message(:double_free_and_badarg, "double free"), fn ->
          Misuse.double_free_and_badarg()
        end
      end)
    end

    test "an Erlang module gets erlang:error({memory_misuse, Message})" do
      :beam_alloc_erl_test.take_reports()

      assert {:memory_misuse,
              "memory misuse detected in function beam_alloc_erl_test:double_free/0: double free"} =
               catch_error(:beam_alloc_erl_test.double_free())

      assert Enum.any?(:beam_alloc_erl_test.take_reports(), &(&1 =~ "double free"))
    end
  end

  describe "a write after free found once the call returned" do
    # The leak check's look at the freed blocks runs after the body
    # returned: the report names the call, as the exception does (it said
    # "found at the end of the call", which call left to the reader).
    for fun <- [:write_after_free, :large_write_after_free] do
      test "names the call (#{fun})" do
        capture_log(fn ->
          assert_raise RuntimeError, message(unquote(fun), "write after free"), fn ->
            apply(Misuse, unquote(fun), [])
          end

          assert [line] = reports(1)

          assert line =~
                   "of the freed block changed; found when the NIF call " <>
                     "`BeamAlloc.Test.Misuse.#{unquote(fun)}/0` returned)"

          refute line =~ "at the end of the call"
          refute line =~ "called from"
        end)
      end
    end

    test "names the call the Erlang way in an Erlang module" do
      :beam_alloc_erl_test.take_reports()

      assert {:memory_misuse,
              "memory misuse detected in function beam_alloc_erl_test:stale/0: write after free"} =
               catch_error(:beam_alloc_erl_test.stale())

      assert [line] = :beam_alloc_erl_test.take_reports()

      assert line =~
               "(byte 20 of the freed block changed; found when the NIF call " <>
                 "beam_alloc_erl_test:stale/0 returned)"
    end
  end

  describe "without leak_check" do
    test "a misuse is reported and the call returns" do
      capture_log(fn ->
        assert :ok = Misuse.double_free_plain()
        assert [line] = reports(1)
        assert line =~ "double free"
      end)
    end

    test ".raise_on_misuse = true raises, for the process-wide allocator too" do
      capture_log(fn ->
        assert_raise RuntimeError, message(:double_free_raising, "double free"), fn ->
          Misuse.double_free_raising()
        end

        # Its own line, not its twin's: the three bodies are alike, and GCC
        # merged them (-fipa-icf) until the build turned that off.
        assert [line] = reports(1)
        assert line =~ "called from double_free_raising (test/nifs/misuse_nif.c:"
      end)
    end

    test "check_all_allocation_failures catches a double free the raw allocator would pass on" do
      raw_frees = fn -> BeamAlloc.stats(Misuse).raw end

      capture_log(fn ->
        before = raw_frees.()

        assert_check_misuse(
          &Misuse.raw_double_free/0,
          "double free",
          "#{@source}:#{line_of("raw twice")}"
        )

        # Neither free went to enif_free twice: each run's one block, freed once.
        now = raw_frees.()
        assert now.allocations - before.allocations == now.frees - before.frees
      end)

      # A raw block of the NIF's own at a freed block's address is no
      # double free (the freed block is held until the call ends).
      assert {:ok, 1} =
               BeamAlloc.Testing.check_all_allocation_failures(&Misuse.raw_free_then_reuse/0)
    end

    test "check_all_allocation_failures catches a raw free with a wrong length, and keeps the stats" do
      raw = fn -> BeamAlloc.stats(Misuse).raw end

      capture_log(fn ->
        before = raw.()

        assert_check_misuse(
          &Misuse.raw_wrong_length_free/0,
          "free with a wrong length or alignment",
          "#{@source}:#{line_of("wrong length")}"
        )

        # Each run's block went back with its own length.
        now = raw.()
        assert now.allocations - before.allocations == now.frees - before.frees
        assert now.live_bytes == before.live_bytes
      end)
    end

    # A check of fun that reports a misuse of kind (report: as
    # assert_check_misuse), with each run's large block back at its own
    # alignment, and the VM kept.
    defp assert_large_misuse_freed(fun, kind, report) do
      large = fn -> BeamAlloc.stats(Misuse).large end

      capture_log(fn ->
        before = large.()
        assert_check_misuse(fun, kind, report)
        now = large.()
        assert now.allocations - before.allocations == now.frees - before.frees
        assert now.live_bytes == before.live_bytes
      end)
    end

    test "check_all_allocation_failures catches a large block freed at a smaller alignment, and keeps the VM" do
      assert_large_misuse_freed(
        &Misuse.large_free_at_8/0,
        "free with a wrong length or alignment",
        "#{@source}:#{line_of("large at 8")}"
      )
    end

    # Any other alignment, where one is above 8: the large allocator finds
    # the header by it, and refused this free (the block left live).
    test "check_all_allocation_failures catches a large block freed at another alignment above 8, and frees it" do
      assert_large_misuse_freed(
        &Misuse.large_free_at_16/0,
        "free with a wrong length or alignment",
        "with alignment 16, called from large_free_at_16 (#{@source}:#{line_of("large at 16")}); " <>
          "the block's alignment is 4096, allocated from large_free_at_16"
      )
    end

    test "check_all_allocation_failures catches a large block remapped at alignment 8, and keeps the VM" do
      assert_large_misuse_freed(
        &Misuse.large_remap_at_8/0,
        "resize or realloc with a wrong pointer, length or alignment",
        "with alignment 8, called from large_remap_at_8 (#{@source}:#{line_of("large remap at 8")}); " <>
          "the block's alignment is 64, allocated from large_remap_at_8"
      )
    end

    test "check_all_allocation_failures reports a sized free of a malloc-style raw block" do
      capture_log(fn ->
        assert_check_misuse(
          &Misuse.raw_mfree_sized/0,
          "free of a pointer the allocator does not own",
          "#{@source}:#{line_of("sized mfree")}"
        )
      end)
    end

    # A library the first run loads is attached only after it: that run
    # ran unchecked, and its double free went to enif_free (a bug hunt
    # crashed the VM so). A remote fun's module is loaded first.
    test "check_all_allocation_failures loads a remote fun's module first, so its first run is checked" do
      {copy, before} = Misuse.copy_state()

      capture_log(fn ->
        :code.purge(Misuse)
        :code.delete(Misuse)
        :code.purge(Misuse)
        refute :code.is_loaded(Misuse)

        assert_check_misuse(
          &Misuse.raw_double_free/0,
          "double free",
          "#{@source}:#{line_of("raw twice")}"
        )
      end)

      # No call ran outside the check (the library may be a fresh copy: a
      # module purged may or may not take its library with it; raw stats
      # could not tell the two apart reliably).
      {now_copy, now} = Misuse.copy_state()
      assert if(now_copy == copy, do: now - before, else: now) == 0
    end

    test "check_all_allocation_failures catches a raw block of the NIF's own freed twice" do
      capture_log(fn ->
        assert_check_misuse(
          &Misuse.raw_own_double_free/0,
          "double free",
          "#{@source}:#{line_of("own twice")}"
        )
      end)
    end

    test "check_all_allocation_failures reports a block freed through another allocator than it came from" do
      capture_log(fn ->
        for len <- [48, 100_000] do
          assert_check_misuse(
            fn ->
              :ok = Misuse.keep_gpa_block(len)
              :ok = Misuse.free_kept_block_here()
              Misuse.forget_kept_block()
            end,
            "free of a pointer the allocator does not own",
            "#{@source}:#{line_of("wrong nif")}"
          )
        end
      end)
    end

    # Above the 64 KiB the check holds, the large allocator's own refusal
    # is the report: a double free (it said a wrong length).
    test "check_all_allocation_failures reports a large allocator's double free at alignment 64 as one" do
      capture_log(fn ->
        assert_check_misuse(
          &Misuse.large_aligned_double_free/0,
          "double free",
          "double free (the block was freed already) (length 100000, alignment 64; " <>
            "called from large_aligned_double_free (#{@source}:#{line_of("large twice")}))"
        )
      end)
    end

    # Under the check the malloc-style calls size blocks by the allocator
    # under the plan, as they would without it: over a general purpose
    # allocator no header (a header's word, covered by the GPA's free
    # list, made a second beam_mfree a foreign free; the header's rounding
    # hid a leak_check instance's canary).
    test "check_all_allocation_failures reports a second beam_mfree over the process-wide GPA as a double free" do
      capture_log(fn ->
        assert_check_misuse(
          &Misuse.mfree_twice/0,
          "double free",
          "called from mfree_twice (#{@source}:#{line_of("mfree twice")})"
        )
      end)
    end

    test "check_all_allocation_failures finds two bytes past a beam_malloc block in a leak_check NIF" do
      capture_log(fn ->
        assert_raise RuntimeError,
                     message(:malloc_overflow, "write past the end of a block"),
                     fn ->
                       Misuse.malloc_overflow()
                     end

        assert_check_misuse(
          &Misuse.malloc_overflow/0,
          "write past the end of a block",
          "called from malloc_overflow (#{@source}:#{line_of("malloc overflow")})"
        )
      end)
    end

    # A NIF that keeps beam_allocator (the check's plan allocator) with a
    # block, and frees the block through it once the check is over: still
    # sized as the check sized it (no header over the GPA), no report.
    test "a beam_malloc block kept with beam_allocator under a check is freed through it after the check" do
      capture_log(fn ->
        # The block left live is the run's leak.
        assert_raise BeamAlloc.AllocationFailureError, fn ->
          BeamAlloc.Testing.check_all_allocation_failures(&Misuse.keep_malloc_block/0)
        end

        Reporter.take()
        gpa = fn -> BeamAlloc.stats(Misuse).general_purpose.live_blocks end
        live = gpa.()
        assert :ok = Misuse.free_kept_malloc_block()
        assert [] = Reporter.take()
        assert gpa.() == live - 1
      end)
    end

    test "check_all_allocation_failures catches a free of the old pointer after a realloc moved it" do
      capture_log(fn ->
        assert_check_misuse(
          &Misuse.raw_free_after_realloc/0,
          "double free",
          "#{@source}:#{line_of("stale free")}"
        )
      end)
    end

    # 48 bytes: a slab's block; 100,000: above the slab classes, the
    # backing's own block (enif_free of it crashed the VM too).
    for len <- [48, 100_000] do
      test "a general purpose allocator's block of #{len} bytes freed by a raw NIF is refused, not crashing the VM" do
        refused_in_raw_nif(unquote(len))
      end
    end

    test "raise_on_misuse: true from use BeamAlloc.Nif raises" do
      capture_log(fn ->
        assert_raise RuntimeError, message(:double_free_opted, "double free"), fn ->
          Misuse.double_free_opted()
        end

        assert [line] = reports(1)
        assert line =~ "called from double_free_opted (test/nifs/misuse_nif.c:"
      end)
    end
  end

  # without_reports/1 writes the lines it raises to the test's output too
  # (for EUnit): kept out of this suite's.
  defp quietly(fun), do: capture_io(fn -> capture_log(fun) end)

  describe "beam_alloc_testing:without_reports/1 (Erlang's BeamAlloc.Case)" do
    test "passes the fun's result on when nothing was reported" do
      assert :beam_alloc_testing.without_reports(fn -> {:ok, 1} end) == {:ok, 1}

      assert_raise ArgumentError, fn ->
        :beam_alloc_testing.without_reports(fn -> raise ArgumentError end)
      end
    end

    test "raises {beam_alloc_reports, Lines}, source lines in them, for a misuse that returned" do
      quietly(fn ->
        assert {:beam_alloc_reports, [line]} =
                 catch_error(:beam_alloc_testing.without_reports(&Misuse.double_free_plain/0))

        assert line =~ "double free"
        assert line =~ "called from double_free_plain (#{@source}:"
      end)
    end

    # EUnit (eunit:test/2) cuts the error term's binaries to some 60
    # characters, the source line with them; it shows the test's output
    # whole, where the lines are written too.
    test "raises a leak_check NIF's leak as its lines, written to the output too" do
      capture_log(fn ->
        output =
          capture_io(fn ->
            assert {:beam_alloc_reports, [named, leak]} =
                     catch_error(:beam_alloc_testing.without_reports(&Misuse.leak_deep/0))

            assert named =~ "memory leak detected in function `BeamAlloc.Test.Misuse.leak_deep/0`"
            assert leak =~ ~r/<- leak_deep \(#{@source}:\d+\)/
            send(self(), {:lines, [named, leak]})
          end)

        assert_received {:lines, lines}
        assert output == Enum.map_join(lines, &(&1 <> "\n"))
      end)
    end

    test "passes a misuse a check turned into the error it raised; fails one beside it" do
      check = fn ->
        :beam_alloc_testing.check_all_allocation_failures(&Misuse.double_free_on_failure/0)
      end

      quietly(fn ->
        # The check's own error, asserted: the report it lists is its.
        assert {:allocation_failures, %{problems: [%{kind: :misuse, index: 1}]}} =
                 catch_error(:beam_alloc_testing.without_reports(check))

        # A misuse outside the check's runs still fails the test.
        assert {:beam_alloc_reports, [line]} =
                 catch_error(
                   :beam_alloc_testing.without_reports(fn ->
                     catch_error(check.())
                     Misuse.double_free_plain()
                   end)
                 )

        assert line =~ "called from double_free_plain (#{@source}:"
      end)
    end

    # Its reports were the reporter's latest 100 at the end: a misuse of
    # the fun's own, then 101 a check consumed, and it passed (review).
    # Every report counts; more than 100 are said, the latest listed.
    test "counts a misuse pushed out by reports checks consumed, and every report" do
      check = fn ->
        catch_error(
          :beam_alloc_testing.check_all_allocation_failures(&Misuse.double_free_on_failure/0)
        )
      end

      quietly(fn ->
        assert {:beam_alloc_reports, [line]} =
                 catch_error(
                   :beam_alloc_testing.without_reports(fn ->
                     Misuse.double_free_plain()
                     for _ <- 1..101, do: check.()
                   end)
                 )

        assert line =~ "called from double_free_plain (#{@source}:"

        assert {:beam_alloc_reports, [said | lines]} =
                 catch_error(
                   :beam_alloc_testing.without_reports(fn ->
                     for _ <- 1..150, do: Misuse.double_free_plain()
                   end)
                 )

        assert said == "beam_alloc: 150 reports, the latest 100 below"
        assert length(lines) == 100
      end)
    end

    # An Erlang team's EUnit tests in {inparallel, ...}: a clean test
    # failed with the other's double free, and nothing said why.
    test "says which reports other processes made (EUnit: beam_alloc_parallel_reports_tests)" do
      capture_log(fn ->
        assert :ok = :eunit.test(:beam_alloc_parallel_reports_tests, [])
      end)
    end

    test "refuses what is not a fun of arity 0" do
      assert {:badarg, _} = catch_error(:beam_alloc_testing.without_reports(:not_a_fun))
      assert {:badarg, _} = catch_error(:beam_alloc_testing.without_reports(fn _ -> :ok end))
    end
  end

  describe "BeamAlloc.Symbolizer" do
    test "turns the sites of a report line into source lines, and leaves the rest" do
      :beam_alloc_erl_test.take_reports()
      catch_error(:beam_alloc_erl_test.double_free())

      # The line as the C side writes it (this library captures its own).
      [raw] = Enum.filter(:beam_alloc_erl_test.take_reports(), &(&1 =~ "double free"))
      assert raw =~ ~r/called from erl_module_nif\.so\+0x[0-9a-f]+/

      line = line_of("erl double free", "test/nifs/erl_module_nif.c")

      resolved = BeamAlloc.Symbolizer.resolve_sites(raw)
      assert resolved =~ "called from double_free (test/nifs/erl_module_nif.c:#{line})"
      refute resolved =~ "erl_module_nif.so+0x"

      # A ")" right after a bare site closes the text around it, and stays
      # (it was taken for the site's own, as in "fun (lib.so+0x1c)").
      [site] = Regex.run(~r/erl_module_nif\.so\+0x[0-9a-f]+/, raw)

      assert BeamAlloc.Symbolizer.resolve_sites("(length 8; called from #{site})") ==
               "(length 8; called from double_free (test/nifs/erl_module_nif.c:#{line}))"

      assert BeamAlloc.Symbolizer.resolve_sites("at double_free (#{site}).") ==
               "at double_free (test/nifs/erl_module_nif.c:#{line})."

      # What it cannot place stays as it was.
      assert BeamAlloc.Symbolizer.resolve_sites("at no_such_object.so+0x10") ==
               "at no_such_object.so+0x10"

      assert BeamAlloc.Symbolizer.resolve_sites("no sites here: 0x7f00") ==
               "no sites here: 0x7f00"

      # Text is a binary: anything else is an ArgumentError saying what it
      # takes, not a FunctionClauseError or a bare "argument error".
      for bad <- [~c"misuse_nif.so+0x10", nil, 7] do
        assert_raise ArgumentError, ~r/expected a report's text/, fn ->
          BeamAlloc.Symbolizer.resolve_sites(bad)
        end
      end

      for {object, offset} <- [{1, 2}, {"x", -1}, {"x", :x}, {~c"x.so", 16}] do
        assert_raise ArgumentError, ~r/expected an object's name/, fn ->
          BeamAlloc.Symbolizer.site(object, offset)
        end
      end

      # From Erlang: {badarg, Message}.
      assert {:badarg, msg} = catch_error(:beam_alloc_symbolizer.site(:foo, :foo))
      assert msg =~ "site/2 takes"
      assert {:badarg, msg} = catch_error(:beam_alloc_symbolizer.resolve_sites(nil))
      assert msg =~ "resolve_sites/1 takes a binary"
    end

    test "a function inlined into itself is one frame" do
      # GCC's partial inlining can leave a NIF body as an inlined copy of
      # itself, at its BEAM_NIF line: `sum (c.c:102) <- sum (c.c:85)`.
      frames = [
        {"beam_nif_body_sum", "c_src/c.c", 102},
        {"beam_nif_body_sum", "c_src/c.c", 85},
        {"helper", "c_src/c.c", 12}
      ]

      assert :beam_alloc_symbolizer.frames_text(frames, "c.so", 0x10) ==
               "sum (c_src/c.c:102) <- helper (c_src/c.c:12)"

      # Two C++ functions of one short name, one calling the other further
      # down the file (polymorphic_allocator's deallocate inlined into
      # allocator_traits'), are two frames.
      frames = [{"deallocate", "memory_resource", 187}, {"deallocate", "memory_resource", 489}]

      assert :beam_alloc_symbolizer.frames_text(frames, "c.so", 0x10) ==
               "deallocate (memory_resource:187) <- deallocate (memory_resource:489)"

      # In C++, BEAM_NIF's guard calls the body: one frame too, by the
      # names reports give (it read leak (c.cpp:51) <- leak (c.cpp:48)).
      frames = [{"beam_nif_body_leak", "c.cpp", 51}, {"beam_nif_guard_leak", "c.cpp", 48}]
      assert :beam_alloc_symbolizer.frames_text(frames, "c.so", 0x10) == "leak (c.cpp:51)"

      # A real call chain keeps every frame, and unknown functions stay.
      frames = [{"read_int", "c_src/c.c", 12}, {"parse", "c_src/c.c", 42}]

      assert :beam_alloc_symbolizer.frames_text(frames, "c.so", 0x10) ==
               "read_int (c_src/c.c:12) <- parse (c_src/c.c:42)"

      assert :beam_alloc_symbolizer.frames_text([{nil, nil, 0}, {nil, nil, 0}], "c.so", 0x1F) ==
               "? (c.so+0x1f) <- ? (c.so+0x1f)"
    end
  end

  describe "two loaded libraries with the same base name" do
    # test/nifs/misuse_nif.c and test/nifs/twin/misuse_nif.c are both
    # misuse_nif.so, in priv/ and priv/twin/, for two modules.
    test "each report names its own library's lines, never the other's" do
      Code.ensure_loaded!(BeamAlloc.Test.TwinMisuse)

      twin_line = line_of("twin double free", "test/nifs/twin/misuse_nif.c")

      capture_log(fn ->
        assert :ok = BeamAlloc.Test.TwinMisuse.twin_double_free()
        assert [twin] = reports(1)

        assert twin =~
                 "called from twin_double_free (test/nifs/twin/misuse_nif.c:#{twin_line})"

        refute twin =~ "test/nifs/misuse_nif.c"

        assert :ok = Misuse.double_free_plain()
        assert [own] = reports(1)
        assert own =~ "called from double_free_plain (#{@source}:"
        refute own =~ "twin"
      end)

      # A bare base name could be either library: no line rather than a
      # wrong one.
      assert BeamAlloc.Symbolizer.site("misuse_nif.so", 0x10) == :error

      assert BeamAlloc.Symbolizer.resolve_sites("called from misuse_nif.so+0x10") ==
               "called from misuse_nif.so+0x10"
    end
  end

  describe "sites" do
    test "name the exact file.c:line of a leaking allocation, a bad free and its block" do
      capture_log(fn ->
        assert_raise RuntimeError, message(:leak_and_bad_free, "double free"), fn ->
          Misuse.leak_and_bad_free()
        end

        lines = reports(3)
        misuse = Enum.find(lines, &(&1 =~ "double free"))
        leak = Enum.find(lines, &(&1 =~ "leak: 40 bytes"))
        assert misuse && leak, inspect(lines)

        # The bad free: the call itself, in the NIF's body.
        [called, allocated] = String.split(misuse, "; the block was allocated from ")
        assert called =~ "called from leak_and_bad_free (#{@source}:#{line_of("bad free")})"

        # The block freed twice: allocated in a helper, which the NIF
        # called (safe mode keeps several frames).
        assert allocated =~ "make_block (#{@source}:#{line_of("helper")})"
        assert allocated =~ "leak_and_bad_free (#{@source}:#{line_of("caller")})"

        # The leak: the line of the allocation, not the one after it.
        assert leak =~ "allocated from leak_and_bad_free (#{@source}:#{line_of("leak")})"
      end)
    end

    test "the guide's quoted report names this test's lines" do
      # (Its text block is no example the guide tests compile: a line moved
      # in the NIF left the guide's numbers 22 lines out.)
      guide = File.read!("guides/allocators.md")
      assert guide =~ "called from leak_and_bad_free (#{@source}:#{line_of("bad free")});"

      assert guide =~
               "make_block (#{@source}:#{line_of("helper")}) <- " <>
                 "leak_and_bad_free (#{@source}:#{line_of("caller")})"
    end

    test "name each caller of an allocation, innermost first, from the stack" do
      capture_log(fn ->
        assert_raise RuntimeError, fn -> Misuse.leak_deep() end
        leak = Enum.find(reports(2), &(&1 =~ "leak: 24 bytes"))

        assert leak =~
                 "allocated from deep_alloc (#{@source}:#{line_of("deep")}) <- " <>
                   "middle_alloc (#{@source}:#{line_of("middle")}) <- " <>
                   "leak_deep (#{@source}:#{line_of("top")})"

        # The stack ends at the NIF's body: nothing of the glue or the VM.
        refute leak =~ "beam_nif_call"
      end)
    end

    test "name each function inlined at the call, innermost first, from the debug information" do
      capture_log(fn ->
        assert_raise RuntimeError, fn -> Misuse.leak_inlined() end
        leak = Enum.find(reports(2), &(&1 =~ "leak: 24 bytes"))

        # Two levels: the second was named as the NIF, at the first's call.
        assert leak =~
                 "allocated from inlined_deep_alloc (#{@source}:#{line_of("ideep")}) <- " <>
                   "inlined_middle_alloc (#{@source}:#{line_of("imiddle")}) <- " <>
                   "leak_inlined (#{@source}:#{line_of("itop")})"
      end)
    end
  end
end

defmodule BeamAlloc.MisuseFaultInjectionTest do
  # check_all_allocation_failures/2 flags misuse in any run.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias BeamAlloc.AllocationFailureError
  alias BeamAlloc.Test.Misuse

  # What check_all_allocation_failures raises over Misuse.fun().
  defp failures_of(fun) do
    assert_raise AllocationFailureError, fn ->
      BeamAlloc.Testing.check_all_allocation_failures(fn -> apply(Misuse, fun, []) end)
    end
  end

  test "a misuse in a run is a problem of its own, with its report and allocation count" do
    capture_log(fn ->
      error = failures_of(:double_free_plain)

      # The NIF handles its one allocation failing; what is wrong is the
      # double free of the runs where the allocation succeeds.
      assert error.allocations == 1
      # One problem: the first run and the last (both without failures)
      # misuse alike, and it is listed once.
      assert [_] = misuse = Enum.filter(error.problems, &(&1.kind == :misuse))
      assert Enum.all?(error.problems, &(&1.kind == :misuse))

      for problem <- misuse do
        assert problem.misuse == "double free"
        assert problem.after == 1
        assert problem.report =~ "double free"
        assert problem.report =~ "called from double_free_plain (test/nifs/misuse_nif.c:"
      end

      assert Exception.message(error) =~ "misused memory: double free"

      # The same from Erlang, as Erlang terms.
      assert {:allocation_failures, %{message: message, problems: [%{kind: :misuse} | _]}} =
               catch_error(
                 :beam_alloc_testing.check_all_allocation_failures(
                   &Misuse.double_free_plain/0,
                   []
                 )
               )

      assert message =~ "the run without failures misused memory: double free"
      assert message =~ "called from double_free_plain (test/nifs/misuse_nif.c:"
    end)
  end

  test "a leak_check NIF that misuses fails the first run, with the misuse named" do
    capture_log(fn ->
      error = failures_of(:double_free)

      assert [
               %{kind: :misuse, misuse: "double free", index: nil},
               %{kind: :failed_without_injection}
             ] = error.problems
    end)
  end
end

defmodule BeamAlloc.CaseTest do
  # The ExUnit guard: a test during which the library reported a problem
  # fails, with the report in the message.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias BeamAlloc.Reporter
  alias BeamAlloc.Test.Misuse

  defp wait_for(mark), do: BeamAlloc.Test.Reports.wait_since(mark)

  test "use BeamAlloc.Case before use ExUnit.Case says so at compile time" do
    code = """
    defmodule BeamAlloc.CaseTest.WrongOrder do
      use BeamAlloc.Case
      use ExUnit.Case
    end
    """

    error = assert_raise CompileError, fn -> Code.compile_string(code) end
    assert Exception.message(error) =~ "use BeamAlloc.Case must come after use ExUnit.Case"
  end

  test "a misspelled tag of use BeamAlloc.Case, or value, raises instead of guarding" do
    assert_raise ArgumentError, ~r/beam_alloc_reports: :alow: the tag takes one value/, fn ->
      BeamAlloc.Case.setup_reports(%{beam_alloc_reports: :alow})
    end

    assert_raise ArgumentError, ~r/unknown tag :beam_alloc_report for BeamAlloc.Case/, fn ->
      BeamAlloc.Case.setup_reports(%{beam_alloc_report: :allow})
    end
  end

  test "check!/3 fails with the report when the test's own call reported" do
    mark = Reporter.mark()
    capture_log(fn -> assert :ok = Misuse.double_free_plain() end)
    assert [_] = wait_for(mark)

    error =
      assert_raise ExUnit.AssertionError, fn -> BeamAlloc.Case.check!(mark, self(), true) end

    assert error.message =~ "beam_alloc reported 1 problem during the test:"
    assert error.message =~ "double free"
    assert error.message =~ "double_free_plain (test/nifs/misuse_nif.c:"
  end

  # check!/3 of a test that is not async counts a report of a process the
  # test did not start, and says whose (as the guard does): a process
  # whose parent is gone, which the reporter cannot tell the test's (the
  # test spawned that parent: the note says the test may have caused it).
  test "check!/3 names the process of a report the test did not make" do
    me = self()
    mark = Reporter.mark()

    capture_log(fn ->
      spawn(fn ->
        spawn(fn -> send(me, {:other, self(), Misuse.double_free_plain()}) end)
      end)

      assert_receive {:other, other, :ok}, 5_000
      assert :ok = Misuse.double_free_plain()
      assert [_, _] = BeamAlloc.Test.Reports.wait_since(mark, 2)

      error = assert_raise ExUnit.AssertionError, fn -> BeamAlloc.Case.check!(mark, me, false) end

      assert [said, "", note, first, second] = String.split(error.message, "\n")
      assert said == "beam_alloc reported 2 problems during the test:"

      assert note ==
               "  beam_alloc: 1 of the reports below was made by another process " <>
                 "(#{inspect(other)}) than the test's (#{inspect(me)}) and those it started: " <>
                 "a test module that is not async counts every report made while a test runs: " <>
                 "the test may have caused it (by calling that process, in an on_exit callback, " <>
                 "through a process it started that has exited); if not (a process of " <>
                 "setup_all, of an application), stop that process during the tests (an async " <>
                 "module counts neither)"

      # (In the order made: the other's call returned before the test's.)
      assert first =~ ~r/^  #{Regex.escape(inspect(other))}: beam_alloc: .*double free/
      assert second =~ ~r/^  beam_alloc: .*double free/

      # Async, the other's report counts for no test: as before.
      assert [_] = BeamAlloc.Case.reports(mark, me, true)
    end)
  end

  # Reporter.take/0 in another test empties the reporter's latest reports:
  # the guard, which read them at the test's end, found none, and the test
  # passed. Its own watch keeps them.
  test "the guard keeps the test's reports when another test takes the reporter's" do
    guard = BeamAlloc.Case.start_guard(self(), true)
    mark = Reporter.mark()
    capture_log(fn -> assert :ok = Misuse.double_free_plain() end)
    assert [_] = wait_for(mark)
    Task.async(&Reporter.take/0) |> Task.await()

    error = assert_raise ExUnit.AssertionError, fn -> BeamAlloc.Case.check_guard!(guard) end
    assert error.message =~ "beam_alloc reported 1 problem during the test:"
    assert error.message =~ "double_free_plain (test/nifs/misuse_nif.c:"
  end

  # More reports than a watch keeps the lines of: every one is counted,
  # the latest shown (it said "100 problems", and "50 earlier reports, no
  # longer kept", of reports it did keep count of).
  test "the guard counts every report of the test, and shows the latest" do
    guard = BeamAlloc.Case.start_guard(self(), true)
    mark = Reporter.mark()
    n = Reporter.kept() + 50
    capture_log(fn -> for _ <- 1..n, do: :ok = Misuse.double_free_plain() end)
    assert length(BeamAlloc.Test.Reports.wait_since(mark, n)) == Reporter.kept()

    error = assert_raise ExUnit.AssertionError, fn -> BeamAlloc.Case.check_guard!(guard) end

    assert error.message =~
             "beam_alloc reported #{n} problems during the test (the latest #{Reporter.kept()} shown):"

    assert length(Regex.scan(~r/called from double_free_plain/, error.message)) == Reporter.kept()
  end

  # A double free in a process that start (given the process's function)
  # starts; the process lives until its report is in (the reporter reads
  # whom it works for when the report arrives).
  defp double_free_in(start) do
    test_pid = self()
    mark = Reporter.mark()

    pid =
      start.(fn ->
        Misuse.double_free_plain()
        send(test_pid, :called)
        receive do: (:done -> :ok)
      end)

    assert_receive :called
    assert [_] = wait_for(mark)
    send(pid, :done)
  end

  test "check!/3 counts calls of the test's Tasks and spawned processes, not of unrelated ones (async)" do
    mark = Reporter.mark()

    capture_log(fn ->
      double_free_in(&Task.async(&1).pid)
      # A plain spawn records neither $callers nor $ancestors: its
      # parent, the test, is what the reporter reads (OTP 25 on).
      double_free_in(&spawn/1)

      # A process whose parent is gone before it reports: nobody's.
      other_mark = Reporter.mark()

      spawn(fn ->
        middle = self()

        spawn(fn ->
          ref = Process.monitor(middle)
          receive do: ({:DOWN, ^ref, _, _, _} -> Misuse.double_free_plain())
        end)
      end)

      assert [_] = wait_for(other_mark)
    end)

    parent_known? =
      try do
        match?({:parent, _}, Process.info(self(), :parent))
      rescue
        ArgumentError -> false
      end

    reports = BeamAlloc.Case.reports(mark, self(), true)
    assert length(reports) == if(parent_known?, do: 2, else: 1)
    assert Enum.all?(reports, &(&1.line =~ "double free"))
    # Not async: whatever was reported during the test counts.
    assert length(BeamAlloc.Case.reports(mark, self(), false)) == 3
  end

  # (It counted the reporter's latest Reporter.kept() alone, and said
  # "and 10 earlier reports, no longer kept".)
  test "check!/3 counts every report of the test since the mark, and shows the latest" do
    mark = Reporter.mark()

    capture_log(fn ->
      for _ <- 1..(Reporter.kept() + 10), do: Misuse.double_free_plain()
      BeamAlloc.Test.Reports.wait_since(mark, Reporter.kept() + 10)
    end)

    error =
      assert_raise ExUnit.AssertionError, fn -> BeamAlloc.Case.check!(mark, self(), false) end

    assert error.message =~
             "beam_alloc reported #{Reporter.kept() + 10} problems during the test " <>
               "(the latest #{Reporter.kept()} shown):"

    assert length(BeamAlloc.Case.reports(mark, self(), true)) == Reporter.kept()
  end

  # check!/3 read the reporter's latest Reporter.kept() reports of all
  # (since/1): a double free, then more reports than that which checks
  # consumed, or which a process not the test's made, pushed the double
  # free out, and check!/3 passed (a silent pass, as the guard's before
  # 46761e7). It reads the reporter's ledger of unconsumed reports.
  @tag timeout: 120_000
  test "check!/3 fails for a report pushed out by reports checks consumed or others made" do
    capture_log(fn ->
      mark = Reporter.mark()
      assert :ok = Misuse.double_free_plain()

      for _ <- 1..(Reporter.kept() + 1) do
        assert_raise BeamAlloc.AllocationFailureError, fn ->
          BeamAlloc.Testing.check_all_allocation_failures(&Misuse.double_free_on_failure/0)
        end
      end

      assert Enum.all?(Reporter.since(mark), & &1.consumed)
      assert_pushed_out_double_free(mark)

      mark = Reporter.mark()
      assert :ok = Misuse.double_free_plain()
      others = Reporter.mark()
      double_frees_of_nobody(Reporter.kept() + 1)
      BeamAlloc.Test.Reports.wait_since(others, Reporter.kept() + 1)
      assert BeamAlloc.Case.reports(others, self(), true) == []
      assert_pushed_out_double_free(mark)
    end)
  end

  defp assert_pushed_out_double_free(mark) do
    # (The double free, mark + 1, no longer among the latest.)
    assert [%{seq: first} | _] = Reporter.since(mark)
    assert first > mark + 1

    error =
      assert_raise ExUnit.AssertionError, fn -> BeamAlloc.Case.check!(mark, self(), true) end

    assert error.message =~ "beam_alloc reported 1 problem during the test:"
    assert error.message =~ "called from double_free_plain (test/nifs/misuse_nif.c:"
  end

  # n double frees of a process whose parent is gone before it reports:
  # nobody's.
  defp double_frees_of_nobody(n) do
    spawn(fn ->
      middle = self()

      spawn(fn ->
        ref = Process.monitor(middle)
        receive do: ({:DOWN, ^ref, _, _, _} -> for(_ <- 1..n, do: Misuse.double_free_plain()))
      end)
    end)
  end

  # Past the reporter's ledger (Reporter.ledger() unconsumed reports) the
  # oldest goes: check!/3 of a mark before it cannot tell whose it was,
  # and fails, saying so. (As if the reporter had let go of the report
  # after the mark: made so, more than 10,000 reports would take seconds.)
  test "check!/3 fails when the reporter let go of a report made since the mark" do
    mark = Reporter.mark()
    lost = :sys.get_state(Reporter).ledger_lost
    :sys.replace_state(Reporter, &%{&1 | ledger_lost: mark + 1})

    try do
      error =
        assert_raise ExUnit.AssertionError, fn -> BeamAlloc.Case.check!(mark, self(), true) end

      assert error.message ==
               "beam_alloc may have reported problems during the test: reports made since " <>
                 "the mark are no longer kept by BeamAlloc.Reporter, which keeps the latest " <>
                 "#{Reporter.ledger()} that no check consumed, of any test: some may have " <>
                 "been this test's"

      capture_log(fn -> assert :ok = Misuse.double_free_plain() end)
      wait_for(mark)

      error =
        assert_raise ExUnit.AssertionError, fn -> BeamAlloc.Case.check!(mark, self(), true) end

      assert error.message =~
               "beam_alloc reported 1 problem during the test, and may have reported more " <>
                 "(reports made since the mark are no longer kept"

      assert error.message =~ "called from double_free_plain"
      # (Nothing after the double free, nothing let go after it.)
      assert :ok = BeamAlloc.Case.check!(mark + 1, self(), true)
    after
      :sys.replace_state(Reporter, &%{&1 | ledger_lost: lost})
    end
  end

  # A misuse in a loop on many processes puts the reporter behind, and a
  # call that reported waits (yielding) until the reporter has read it, a
  # second at most: past 256 reports unread, calls stop waiting, or each
  # would take its whole second. Once the reporter has caught up, calls
  # wait again.
  test "calls stop waiting for the reporter once it is 256 reports behind" do
    reporter = Process.whereis(Reporter)
    # (A test killed by its timeout skips `after`: the reporter must not
    # stay suspended for the rest of the suite.)
    on_exit(fn -> :sys.resume(reporter) end)
    mark = Reporter.mark()

    capture_log(fn ->
      quick = with_reporter_suspended(reporter, fn -> report_from_processes(300) end)
      assert quick in 40..100, "#{quick} of 300 calls returned before the reporter read"
      for _ <- 1..(300 - quick), do: assert_receive({:returned, _}, 30_000)
      # It counts every report it has read before it answers (a mark after them, then).
      assert GenServer.call(Reporter, :mark, 60_000) >= mark + 300

      assert 0 == with_reporter_suspended(reporter, fn -> report_from_processes(1) end),
             "a call did not wait for the reporter once it had caught up"

      assert_receive {:returned, _}, 30_000
      assert GenServer.call(Reporter, :mark, 60_000) >= mark + 301
    end)
  end

  # A reporter that reads nothing for two seconds while calls wait
  # (suspended, stuck in a handler) is stopped: the calls after that do not
  # wait until it reads again (each took its second, until 256 were unread).
  # Counted, not timed (the machine is shared): the calls whose wait ran out.
  test "calls stop waiting for a reporter that read nothing for two seconds" do
    reporter = Process.whereis(Reporter)
    on_exit(fn -> :sys.resume(reporter) end)
    mark = Reporter.mark()

    capture_log(fn ->
      ran_out = Misuse.waits_ran_out()

      with_reporter_suspended(reporter, fn ->
        for _ <- 1..8, do: :ok = Misuse.double_free_plain()
      end)

      # Two or three calls wait their second (the third starts under two
      # seconds after the first ran out, but for a stall of a second
      # between calls); the rest do not wait (all 8 did before; only the
      # first once a single wait stopped it).
      waited = Misuse.waits_ran_out() - ran_out
      assert waited in 2..3, "#{waited} of 8 reporting calls waited their second"
      assert GenServer.call(Reporter, :mark, 60_000) >= mark + 8

      # It read again: calls wait again.
      assert 0 == with_reporter_suspended(reporter, fn -> report_from_processes(1) end)
      assert_receive {:returned, _}, 30_000
    end)
  end

  # A reporter merely slow (busy for 1.3 s) is not stopped: a Task that
  # reports after one call waited its second in vain still waits, and its
  # report is its test's (found in review: it returned at once, and its
  # report went to no test).
  test "a Task's report after a slow reporter's stall is still its test's" do
    reporter = Process.whereis(Reporter)
    on_exit(fn -> :sys.resume(reporter) end)
    me = self()

    capture_log(fn ->
      mark = Reporter.mark()
      :sys.suspend(reporter)
      {:ok, _} = :timer.apply_after(1300, :sys, :resume, [reporter])
      assert :ok = Task.async(&Misuse.double_free_plain/0) |> Task.await(5000)
      assert :ok = Task.async(&Misuse.double_free_plain/0) |> Task.await(5000)
      _ = BeamAlloc.Test.Reports.wait_since(mark, 2)
      send(me, {:mine, length(BeamAlloc.Case.reports(mark, me, true))})
    end)

    # The first Task waited its second and ended before the reporter read
    # its report (the bound a call waits); the second's is the test's.
    assert_received {:mine, 1}
  end

  defp with_reporter_suspended(reporter, fun) do
    :sys.suspend(reporter)

    try do
      fun.()
    after
      :sys.resume(reporter)
    end
  end

  # n processes report once each; how many of their calls returned within
  # half a second (with the reporter suspended, one that waits returns
  # after its second).
  defp report_from_processes(n) do
    parent = self()

    for i <- 1..n do
      spawn(fn ->
        :ok = Misuse.double_free_plain()
        send(parent, {:returned, i})
      end)
    end

    Process.sleep(500)
    length(BeamAlloc.Test.Mailbox.take(:returned))
  end

  # check_all_allocation_failures(fun), its log captured: the
  # AllocationFailureError it must raise.
  defp failed_check(fun) do
    {error, _log} =
      with_log(fn ->
        assert_raise BeamAlloc.AllocationFailureError, fn ->
          BeamAlloc.Testing.check_all_allocation_failures(fun)
        end
      end)

    error
  end

  # A check over a NIF on a general purpose allocator that double frees
  # on its error path only: the allocator reports the misuse, and the check
  # turns it into the AllocationFailureError the test asserts.
  defp assert_check_turns_misuse_into_error do
    error =
      assert_raise BeamAlloc.AllocationFailureError, fn ->
        BeamAlloc.Testing.check_all_allocation_failures(&Misuse.double_free_on_failure/0)
      end

    assert [%{kind: :misuse, misuse: "double free", index: 1}] = error.problems
  end

  test "check!/3 passes when the only report is one a check turned into its asserted error" do
    mark = Reporter.mark()
    capture_log(fn -> assert_check_turns_misuse_into_error() end)
    # The report was made (and is still kept for take/0 and since/1) ...
    assert [%{consumed: true} = report] = Reporter.since(mark)
    assert report.line =~ "double_free_on_failure (test/nifs/misuse_nif.c:"
    # ... but it is the check's result, not a problem of the test's.
    assert BeamAlloc.Case.reports(mark, self(), true) == []
    assert :ok = BeamAlloc.Case.check!(mark, self(), true)
    assert :ok = BeamAlloc.Case.check!(mark, self(), false)
  end

  test "check!/3 passes when a leak_check NIF's leak reports are the check's asserted leak" do
    # checked_leak_on_failure (leak_check) loses a block on its failure
    # path: its instance reports the leak (a line naming the function, one
    # for the block) and the check lists it. Those reports failed the test
    # under BeamAlloc.Case although the test asserted the error (found
    # writing a new project from the README). The leak of the instance the
    # NIF deinitialised there is no problem of the check's: it still counts.
    mark = Reporter.mark()

    error = failed_check(&Misuse.checked_leak_on_failure/0)
    assert [%{kind: :leak, index: 1, leaked: 1}] = error.problems

    consumed = for %{consumed: true, line: line} <- Reporter.since(mark), do: line

    assert [
             "beam_alloc: memory leak detected in function `BeamAlloc.Test.Misuse.checked_leak_on_failure/0`:",
             "beam_alloc: leak: 16 bytes" <> _
           ] = consumed

    assert [%{line: "beam_alloc: leak: block of size class 16 " <> _}] =
             BeamAlloc.Case.reports(mark, self(), false)
  end

  test "check!/3 passes when a leak_check NIF's asserted leak is more blocks than its instance lists" do
    # 70 blocks lost: the call's instance lists 64 and ends with "... and 6
    # more live blocks"; the check lists all 70 (its cap is 100), so every
    # report of that leak is the check's. The last line counted, and the
    # test failed under BeamAlloc.Case (review).
    mark = Reporter.mark()

    error = failed_check(fn -> Misuse.checked_many_leaks_on_failure(70) end)
    assert [%{kind: :leak, index: 70, leaked: 70}] = error.problems

    assert [] = BeamAlloc.Case.reports(mark, self(), false)
    assert length(for %{consumed: true} <- Reporter.since(mark), do: 1) == 66
  end

  test "check!/3 passes when the blocks a leak_check NIF's instance lists are not the check's first 100" do
    # 101 blocks lost in a run: the check lists its first 100 by number,
    # the instance the last one first (it lies in an earlier slab), then 63
    # others and "... and 37 more live blocks". The last block's line, and
    # that one, counted: the test failed under BeamAlloc.Case (review).
    mark = Reporter.mark()

    failed_check(&Misuse.checked_leak_past_listed/0)

    assert [] = BeamAlloc.Case.reports(mark, self(), false)
  end

  test "check!/3 still fails for a leak_check call's leak outside the check, of the function the check lists" do
    # The same function leaks before the check and in its runs: its
    # reports there are consumed (the check lists them), its header and
    # block line before it are not.
    mark = Reporter.mark()

    capture_log(fn ->
      assert_raise RuntimeError, fn -> Misuse.leak_deep() end

      assert_raise BeamAlloc.AllocationFailureError, fn ->
        BeamAlloc.Testing.check_all_allocation_failures(&Misuse.leak_deep/0)
      end
    end)

    assert [
             %{
               line:
                 "beam_alloc: memory leak detected in function `BeamAlloc.Test.Misuse.leak_deep/0`:"
             },
             %{line: "beam_alloc: leak: 24 bytes" <> _}
           ] = BeamAlloc.Case.reports(mark, self(), false)

    assert Enum.any?(Reporter.since(mark), & &1.consumed)
  end

  test "check!/3 still fails for a leak reported in a run whose misuse the check listed" do
    # The error path double frees (the check lists it) and deinitialises
    # an instance of its own with a block live: a leak report, which the
    # check does not list. Every report of the run was consumed, the leak
    # too, and the test passed (review).
    mark = Reporter.mark()

    error = failed_check(&Misuse.double_free_and_leak_on_failure/0)
    assert [%{kind: :misuse, misuse: "double free"}] = error.problems

    assert [%{consumed: false, line: "beam_alloc: leak: " <> _}] =
             BeamAlloc.Case.reports(mark, self(), false)

    assert [%{consumed: true, line: "beam_alloc: general purpose allocator: double free" <> _}] =
             Enum.filter(Reporter.since(mark), & &1.consumed)
  end

  test "check!/3 still fails for a report made beside a check, not turned into its result" do
    mark = Reporter.mark()

    capture_log(fn ->
      assert_check_turns_misuse_into_error()
      # The same kind of misuse, outside the check's runs.
      assert :ok = Misuse.double_free_plain()
      # And inside a check whose modules leave Misuse out: its calls (a
      # run without failures, and the last run) are not checked, and the
      # check sees nothing of their misuse.
      assert {:ok, 0} =
               BeamAlloc.Testing.check_all_allocation_failures(
                 &Misuse.double_free_plain/0,
                 modules: [LeakCheckTest]
               )
    end)

    assert [_, _, _, _] = BeamAlloc.Test.Reports.wait_since(mark, 4)

    error =
      assert_raise ExUnit.AssertionError, fn -> BeamAlloc.Case.check!(mark, self(), true) end

    assert error.message =~ "beam_alloc reported 3 problems during the test:"
    assert error.message =~ "double_free_plain (test/nifs/misuse_nif.c:"
    refute error.message =~ "double_free_on_failure"
  end

  test "check!/3 passes when nothing was reported" do
    mark = Reporter.mark()
    assert :ok = BeamAlloc.Case.check!(mark, self(), false)
  end

  test "since/1 takes only a mark: anything else is an ArgumentError, not []" do
    for bad <- [:bad, -1, 1.5, "0"] do
      assert_raise ArgumentError, ~r/expected a mark from BeamAlloc.Reporter.mark/, fn ->
        Reporter.since(bad)
      end
    end
  end

  # A real test module using the guard, run by ExUnit in a VM of its own:
  # its test that triggers a report fails, the clean one and the one
  # tagged to allow reports pass.
  @tag timeout: 120_000
  test "use BeamAlloc.Case fails a test during which a report was made" do
    out =
      run_ex_unit(~S"""
      defmodule Guarded do
        use ExUnit.Case
        use BeamAlloc.Case

        test "misuses", do: assert(:ok = BeamAlloc.Test.Misuse.double_free_plain())
        test "clean", do: assert(true)

        @tag beam_alloc_reports: :allow
        test "allowed", do: assert(:ok = BeamAlloc.Test.Misuse.double_free_plain())
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 1/
    assert out =~ "beam_alloc reported 1 problem during the test"
    assert out =~ "double free"
  end

  # A module that is not async counts every report made while its test
  # runs, a setup_all process's too: the failure showed a double free the
  # clean test never made, and nothing said whose it was (parity with
  # Erlang's without_reports/1). Such a report's line begins with its
  # process, and a first line says how many, whose, and what to do; the
  # test's own reports stay as they were.
  @tag timeout: 120_000
  test "use BeamAlloc.Case names the process of a report the test did not make" do
    out =
      run_ex_unit(~S"""
      defmodule GuardedBeside do
        use ExUnit.Case
        use BeamAlloc.Case

        setup_all do
          worker =
            spawn(fn ->
              Stream.repeatedly(fn ->
                receive do
                  {:go, from} -> send(from, {:done, BeamAlloc.Test.Misuse.double_free_plain()})
                end
              end)
              |> Stream.run()
            end)

          IO.puts("WORKER " <> inspect(worker))
          %{worker: worker}
        end

        defp beside(worker) do
          send(worker, {:go, self()})
          assert_receive {:done, :ok}, 5_000
        end

        test "clean", %{worker: worker} do
          IO.puts("CLEAN " <> inspect(self()))
          beside(worker)
        end

        test "fails beside", %{worker: worker} do
          IO.puts("FAILS " <> inspect(self()))
          beside(worker)
          assert 1 + 1 == 3
        end

        test "own", do: assert(:ok = BeamAlloc.Test.Misuse.double_free_plain())
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 3/, out
    [worker] = Regex.run(~r/WORKER (#PID<[\d.]+>)/, out, capture: :all_but_first)

    for {name, tag} <- [{"clean", "CLEAN"}, {"fails beside", "FAILS"}] do
      [test_pid] = Regex.run(~r/#{tag} (#PID<[\d.]+>)/, out, capture: :all_but_first)

      # (ExUnit indents the failure's lines.)
      note =
        [
          "beam_alloc reported 1 problem during the test:",
          "",
          "beam_alloc: 1 of the reports below was made by another process (#{worker}) " <>
            "than the test's (#{test_pid}) and those it started: a test module that is not " <>
            "async counts every report made while a test runs: the test may have caused it " <>
            "(by calling that process, in an on_exit callback, through a process it started " <>
            "that has exited); if not (a process of setup_all, of an application), stop that " <>
            "process during the tests (an async module counts neither)",
          "#{worker}: beam_alloc: general purpose allocator: double free"
        ]
        |> Enum.map_join("\n *", &Regex.escape/1)
        |> Regex.compile!()

      assert [_, failure] = String.split(out, "test #{name} (GuardedBeside)", parts: 2), out
      assert failure =~ note, out
    end

    # The test's own report: as before, no pid, no note.
    [_, own] = String.split(out, "test own (GuardedBeside)", parts: 2)

    assert own =~
             ~r/\A\n.*\n\s+beam_alloc reported 1 problem during the test:\n\s+beam_alloc: general purpose allocator: double free/,
           out
  end

  # An async test's own misuse made while another process's flood has
  # 10,000 reports unread is not sent, only counted (report.c): the count,
  # said as the call's own at its end, still fails that test. (Said as
  # nobody's, or not at all, the test passed.)
  @tag timeout: 120_000
  test "use BeamAlloc.Case fails an async test whose own report was dropped behind a flood" do
    out =
      run_ex_unit(~S"""
      flooder =
        spawn(fn ->
          receive do
            {:flood, test} -> send(test, {:flooded, BeamAlloc.Test.Report.double_frees(20_000)})
          end
        end)

      :persistent_term.put(:flooder, flooder)

      defmodule GuardedFlood do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        test "own misuse behind a flood" do
          reporter = Process.whereis(BeamAlloc.Reporter)
          :sys.suspend(reporter)

          try do
            send(:persistent_term.get(:flooder), {:flood, self()})
            assert_receive {:flooded, :ok}, 60_000
            assert :ok = BeamAlloc.Test.Report.double_free()
          after
            :sys.resume(reporter)
          end
        end
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 1/, out
    assert out =~ "beam_alloc: 1 reports dropped (the reporter was behind)", out
  end

  # A leak_check NIF's RuntimeError fails the test first, so ExUnit
  # dropped the guard's failure (on_exit) with the source lines: the lines
  # were in the log alone. The test's reports are now a second failure of
  # the same test, the RuntimeError (its message exact) the first; so for
  # a failed assertion after a misuse the NIF reported and went on. A test
  # allowed to report gets them with beam_alloc's own error only; the
  # stack names the test as it did ("(test)"), not the wrapper.
  @tag timeout: 120_000
  test "use BeamAlloc.Case puts the source lines in the failure of a test that raised" do
    out =
      run_ex_unit(~S"""
      defmodule GuardedRaise do
        use ExUnit.Case
        use BeamAlloc.Case

        test "leak", do: BeamAlloc.Test.Misuse.leak_deep()
        test "misuse", do: BeamAlloc.Test.Misuse.double_free()

        test "assert after a plain misuse" do
          BeamAlloc.Test.Misuse.double_free_plain()
          assert 1 + 1 == 3
        end

        @tag beam_alloc_reports: :allow
        test "allowed leak", do: BeamAlloc.Test.Misuse.leak_deep()

        @tag beam_alloc_reports: :allow
        test "allowed assert" do
          BeamAlloc.Test.Misuse.double_free_plain()
          assert 1 + 1 == 3
        end

        describe "clean" do
          test "exit", do: exit(:boom)
          test "passes", do: assert(true)
        end
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 6/, out

    failure = fn name ->
      [_, text] =
        Regex.run(
          ~r/\) test #{name} \(GuardedRaise\)\n(.*?)(?=\n\s*\d+\) test |\nFinished)/s,
          out
        )

      text
    end

    for name <- ["leak", "allowed leak"] do
      text = failure.(name)
      assert text =~ "Failure #1", text

      assert text =~
               "** (RuntimeError) memory leak detected in function " <>
                 "`BeamAlloc.Test.Misuse.leak_deep/0`\n",
             text

      assert text =~ "Failure #2\n     beam_alloc reported 2 problems during the test:", text
      assert text =~ ~r/leak: 24 bytes.* <- leak_deep \(test\/nifs\/misuse_nif.c:\d+\)/, text
      assert text =~ ~r/nofile:\d+: \(test\)/, text
      refute text =~ "overridable", text
    end

    misuse = failure.("misuse")

    assert misuse =~
             "** (RuntimeError) memory misuse detected in function " <>
               "`BeamAlloc.Test.Misuse.double_free/0`: double free\n"

    assert misuse =~ ~r/Failure #2.*called from double_free \(test\/nifs\/misuse_nif.c:\d+\)/s

    assert failure.("assert after a plain misuse") =~
             ~r/Assertion with == failed.*Failure #2.*called from double_free_plain \(test/s

    for name <- ["allowed assert", "clean exit"] do
      text = failure.(name)
      refute text =~ "Failure #", text
      refute text =~ "beam_alloc reported", text
    end

    assert failure.("clean exit") =~ "** (exit) :boom"
  end

  # The wrapper of each test function (defoverridable) broke three things
  # a test module could do without BeamAlloc.Case (review): used twice (a
  # case template's `using` and the module itself), each test was wrapped
  # twice and its failure listed the reports twice, with two "(test)"
  # frames; a test name ExUnit takes (up to 255 characters) no longer
  # compiled ("test <name> (overridable 1)" is past the atom limit); and a
  # test that timed out showed the wrapper's frame as the test, at the
  # module's first line ("code: defmodule ..."), not at the test.
  @tag timeout: 120_000
  test "use BeamAlloc.Case: used twice, long test names, a timed out test's line" do
    long = String.duplicate("x", 245)

    modules = """
    defmodule GuardTemplate do
      use ExUnit.CaseTemplate

      using do
        quote do
          use BeamAlloc.Case
        end
      end
    end

    defmodule GuardedTwice do
      use GuardTemplate
      use BeamAlloc.Case

      test "fails" do
        BeamAlloc.Test.Misuse.double_free_plain()
        assert 1 + 1 == 3
      end

      test "#{long}", do: assert(true)

      @tag timeout: 200
      test "slow" do
        Process.sleep(5_000)
      end
    end
    """

    out = run_ex_unit(modules)
    assert out =~ ~r/RESULT %\{.*failures: 2/, out

    [_, fails] =
      Regex.run(~r/\) test fails \(GuardedTwice\)\n(.*?)(?=\n\s*\d+\) test |\nFinished)/s, out)

    assert fails =~ "Failure #2", fails
    refute fails =~ "Failure #3", fails
    assert length(Regex.scan(~r/\(test\)/, fails)) == 1, fails

    # (run_ex_unit's script puts the modules from its fourth line on.)
    slow_line = 3 + Enum.find_index(String.split(modules, "\n"), &(&1 =~ ~s(test "slow"))) + 1

    [_, slow] =
      Regex.run(~r/\) test slow \(GuardedTwice\)\n(.*?)(?=\n\s*\d+\) test |\nFinished)/s, out)

    assert slow =~ "nofile:#{slow_line}: (test)", slow
  end

  # In a case template's body (not its `using`), the guard's setup
  # reaches the modules that use the template, but the wrapper (a
  # @before_compile of the template, which has no tests) does not: their
  # failures came without the reports, silently (review). It compiles, as
  # it did, with a warning that says where it goes.
  @tag timeout: 120_000
  test "use BeamAlloc.Case in a case template's body warns: the wrapper needs `using`" do
    out =
      run_ex_unit(~S"""
      defmodule BodyTemplate do
        use ExUnit.CaseTemplate
        use BeamAlloc.Case
      end

      defmodule UsingTemplate do
        use ExUnit.CaseTemplate

        using do
          quote do
            use BeamAlloc.Case
          end
        end
      end

      defmodule ViaUsing do
        use UsingTemplate
        test "passes", do: assert(true)
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 0/, out
    assert [_] = Regex.scan(~r/warning: .*BodyTemplate.*using/, out), out
  end

  # ExUnit.Case.register_test/6 names a test "<type> <name>" of any type:
  # Wallaby's "feature ...", say. The wrapper took "test", "doctest" and
  # "property" alone: another type's failure kept its error alone, the
  # reports dropped with the guard's failure (review). The tests are those
  # ExUnit registered.
  @tag timeout: 120_000
  test "use BeamAlloc.Case wraps a test of any type ExUnit registered" do
    out =
      run_ex_unit(~S"""
      defmodule FeatureCase do
        defmacro feature(message, do: contents) do
          contents = Macro.escape(contents, unquote: true)

          quote bind_quoted: [message: message, contents: contents] do
            name =
              ExUnit.Case.register_test(__MODULE__, __ENV__.file, __ENV__.line, :feature,
                message, [])
            def unquote(name)(_context), do: unquote(contents)
          end
        end
      end

      defmodule GuardedFeature do
        use ExUnit.Case
        use BeamAlloc.Case
        import FeatureCase

        feature "fails" do
          BeamAlloc.Test.Misuse.double_free_plain()
          assert 1 + 1 == 3
        end
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 1/, out
    assert out =~ ~r/Failure #2\n\s+beam_alloc reported 1 problem during the test:/, out
    # Elixir 1.18 deprecates register_test/4 (a warning in this output);
    # register_test/6 is there since 1.11.
    refute out =~ "deprecated", out
  end

  # The failure's reports were read from the reporter's latest
  # Reporter.kept() of all: in an async module, other tests reporting more
  # than that between the test's report and its failure pushed the test's
  # own out, and the failure came without them (the guard's own, which has
  # them, is dropped: the test failed). They are read from the guard's
  # watch, as the guard reads them (review).
  @tag timeout: 120_000
  test "use BeamAlloc.Case: a failure's reports, however many others report meanwhile" do
    out =
      run_ex_unit(~S"""
      flooder =
        spawn(fn ->
          receive do
            {:flood, from} ->
              for _ <- 1..(BeamAlloc.Reporter.kept() + 20),
                  do: BeamAlloc.Test.Misuse.double_free_plain()

              send(from, :flooded)
          end
        end)

      :persistent_term.put(:flooder, flooder)

      defmodule GuardedFlooded do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        @tag :capture_log
        test "fails after others flood" do
          BeamAlloc.Test.Misuse.double_free_plain()
          send(:persistent_term.get(:flooder), {:flood, self()})
          assert_receive :flooded, 30_000
          assert 1 + 1 == 3
        end
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 1/, out
    assert out =~ ~r/Failure #2\n\s+beam_alloc reported 1 problem during the test:\n.*/, out
  end

  # A test allowed to report never read the reporter: it runs, and fails
  # as it is, where the :beam_alloc application is not started (the mark
  # the guard takes for a failure's lines raised "BeamAlloc.Reporter is
  # not running" in its setup: review).
  @tag timeout: 120_000
  test "use BeamAlloc.Case: an allowed test needs no reporter" do
    out =
      run_ex_unit(
        ~S"""
        defmodule AllowedNoReporter do
          use ExUnit.Case
          use BeamAlloc.Case

          @tag beam_alloc_reports: :allow
          test "passes", do: assert(true)

          @tag beam_alloc_reports: :allow
          test "fails", do: assert(1 + 1 == 3)
        end
        """,
        started: false
      )

    assert out =~ ~r/RESULT %\{.*failures: 1/, out
    assert out =~ "Assertion with == failed", out
    refute out =~ "not running", out
  end

  # A test that asserts the error a check raised for a misuse the
  # allocator also reported passes, async or not; one that misuses beside
  # the check still fails, for that report alone.
  @tag timeout: 120_000
  test "use BeamAlloc.Case does not fail a test again for a misuse its check listed" do
    out =
      run_ex_unit(~S"""
      defmodule CheckHelpers do
        def assert_check_misuse do
          import ExUnit.Assertions

          error =
            assert_raise BeamAlloc.AllocationFailureError, fn ->
              BeamAlloc.Testing.check_all_allocation_failures(
                &BeamAlloc.Test.Misuse.double_free_on_failure/0
              )
            end

          assert [%{kind: :misuse, misuse: "double free"}] = error.problems
        end
      end

      defmodule GuardedCheck do
        use ExUnit.Case
        use BeamAlloc.Case

        test "asserted", do: CheckHelpers.assert_check_misuse()

        test "misuse beside" do
          CheckHelpers.assert_check_misuse()
          assert :ok = BeamAlloc.Test.Misuse.double_free_plain()
        end
      end

      defmodule GuardedCheckAsync do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        test "asserted in a Task" do
          Task.async(&CheckHelpers.assert_check_misuse/0) |> Task.await()
        end
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 1/, out
    assert out =~ ~r/test misuse beside \(GuardedCheck\)\n.*\n\s+beam_alloc reported 1 problem/
    assert out =~ "called from double_free_plain"
    refute out =~ ~r/reported.*\n.*called from double_free_on_failure/
  end

  # In an async module, reports of the test's own Tasks count, however
  # soon the Task exits after its call; reports of another module's
  # tests do not.
  @tag timeout: 120_000
  test "use BeamAlloc.Case in an async module fails tests whose Tasks reported" do
    out =
      run_ex_unit(~S"""
      defmodule GuardedAsync do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        alias BeamAlloc.Test.Misuse

        test "task async await" do
          assert :ok = Task.async(fn -> Misuse.double_free_plain() end) |> Task.await()
        end

        test "task async_stream" do
          assert [ok: :ok, ok: :ok] =
                   [1, 2]
                   |> Task.async_stream(fn _ -> Misuse.double_free_plain() end)
                   |> Enum.to_list()
        end

        test "clean", do: assert(true)
      end

      defmodule GuardedAsyncNeighbour do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        test "clean while the others report" do
          Process.sleep(100)
          assert true
        end
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 2/, out
    assert out =~ ~r/test task async await \(GuardedAsync\)\n.*\n\s+beam_alloc reported 1 problem/

    assert out =~
             ~r/test task async_stream \(GuardedAsync\)\n.*\n\s+beam_alloc reported 2 problems/

    refute out =~ "test clean"
  end

  # ExUnit runs a test's on_exit callbacks after the test, in a process
  # of its own that the test did not start: in an async module a double
  # free in one counted for no test, and the test passed. (A module that
  # is not async counted it as another process's.) Counted as the test's
  # own, those of its setup too; a clean test with a clean on_exit
  # passes.
  @tag timeout: 120_000
  test "use BeamAlloc.Case fails a test whose on_exit callback reported" do
    out =
      run_ex_unit(~S"""
      for {name, async} <- [{GuardedOnExitAsync, true}, {GuardedOnExitSync, false}] do
        defmodule name do
          use ExUnit.Case, async: async
          use BeamAlloc.Case

          alias BeamAlloc.Test.Misuse

          setup context do
            if context[:in_setup], do: on_exit(fn -> :ok = Misuse.double_free_plain() end)
            :ok
          end

          test "on_exit" do
            on_exit(fn -> :ok = Misuse.double_free_plain() end)
          end

          @tag in_setup: true
          test "setup on_exit", do: assert(true)

          test "clean on_exit" do
            on_exit(fn -> :ok end)
          end

          test "fails, on_exit" do
            on_exit(fn -> :ok = Misuse.double_free_plain() end)
            assert 1 == 2
          end
        end
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 6/, out

    # A test that failed shows its own failure alone (ExUnit keeps a
    # test's first): its callbacks' reports are only logged.
    for module <- ["GuardedOnExitAsync", "GuardedOnExitSync"] do
      assert out =~
               ~r/test fails, on_exit \(#{module}\)\n.*\n\s+Assertion with == failed\n(?:(?!beam_alloc reported|\n\s+\d+\) test).)*stacktrace:/s,
             out
    end

    for module <- ["GuardedOnExitAsync", "GuardedOnExitSync"],
        name <- ["on_exit", "setup on_exit"] do
      assert out =~
               ~r/test #{name} \(#{module}\)\n.*\n\s+beam_alloc reported 1 problem during the test:\n\s+beam_alloc: general purpose allocator: double free/,
             out
    end

    refute out =~ "test clean on_exit"
  end

  # A watch kept the test's latest Reporter.kept() reports only: a double
  # free followed by more reports than that which a check consumed (a
  # check per report, or one check whose listed leaks come to more: their
  # consume marks come after the reports) pushed the double free out, and
  # the test passed. Every unconsumed report is counted, and a report
  # pushed out that a check consumes later is not.
  @tag timeout: 120_000
  test "use BeamAlloc.Case fails a test whose report consumed reports pushed out of its watch" do
    out =
      run_ex_unit(~S"""
      defmodule Checks do
        import ExUnit.Assertions
        alias BeamAlloc.Test.Misuse

        # One consumed report a check.
        def one_each(n) do
          for _ <- 1..n do
            assert_raise BeamAlloc.AllocationFailureError, fn ->
              BeamAlloc.Testing.check_all_allocation_failures(&Misuse.double_free_on_failure/0)
            end
          end
        end

        # 198 consumed reports in one check: three leak_check calls' 70
        # blocks (a line naming the function, 64 blocks, "... and 6 more").
        def many_in_one do
          assert_raise BeamAlloc.AllocationFailureError, fn ->
            BeamAlloc.Testing.check_all_allocation_failures(fn ->
              for _ <- 1..3, do: Misuse.checked_many_leaks_on_failure(70)
            end)
          end
        end
      end

      defmodule GuardedPushedOut do
        use ExUnit.Case
        use BeamAlloc.Case

        @moduletag :capture_log

        test "double free, then a check per report" do
          assert :ok = BeamAlloc.Test.Misuse.double_free_plain()
          Checks.one_each(BeamAlloc.Reporter.kept() + 1)
        end

        test "double free, then one check of more" do
          assert :ok = BeamAlloc.Test.Misuse.double_free_plain()
          Checks.many_in_one()
        end

        test "one check of more", do: Checks.many_in_one()
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 2/, out

    for name <- ["double free, then a check per report", "double free, then one check of more"] do
      assert out =~
               ~r/test #{name} \(GuardedPushedOut\)\n.*\n\s+beam_alloc reported 1 problem during the test:\n\s+beam_alloc: .*double free.*called from double_free_plain/,
             out
    end
  end

  # Another async test that reports more than the reporter keeps (here
  # leaks it allows) while a guarded test runs: the guarded test's own
  # report must still fail it. The guard read the latest Reporter.kept()
  # reports of all at the test's end, and the test passed.
  @tag timeout: 120_000
  test "use BeamAlloc.Case fails a test whose report another async test's reports pushed out" do
    out =
      run_ex_unit(~S"""
      defmodule GuardedReporter do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        test "misuses, then waits while another test floods" do
          assert :ok = BeamAlloc.Test.Misuse.double_free_plain()
          Process.register(self(), :guarded_reporter)
          assert_receive :flooded, 60_000
        end
      end

      defmodule FloodingNeighbour do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        @tag beam_alloc_reports: :allow
        test "reports more than the reporter keeps" do
          BeamAlloc.Test.Reports.registered(:guarded_reporter)
          mark = BeamAlloc.Reporter.mark()
          n = BeamAlloc.Reporter.kept() + 10
          for _ <- 1..n, do: BeamAlloc.Test.Misuse.double_free_plain()
          BeamAlloc.Test.Reports.wait_since(mark, n)
          send(:guarded_reporter, :flooded)
        end
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 1/, out

    assert out =~
             ~r/test misuses, then waits while another test floods \(GuardedReporter\)\n.*\n\s+beam_alloc reported 1 problem/
  end

  # A Task reporting while the reporter works through a batch of other
  # tests' reports taking it over a second (60 here, logged by a handler
  # that takes 30 ms each): the Task's call waits a second at most, and
  # the reporter read who made the report only after the whole batch,
  # once the Task was gone: the report was nobody's, and the test passed.
  @tag timeout: 120_000
  test "use BeamAlloc.Case counts a Task's report made while the reporter is busy" do
    out =
      run_ex_unit(~S"""
      defmodule SlowHandler do
        def log(_event, _config), do: Process.sleep(30)
      end

      :ok = :logger.add_handler(:slow, SlowHandler, %{})

      defmodule GuardedTask do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        test "a Task misuses while the reporter is busy" do
          Process.register(self(), :guarded_task)
          assert_receive :busy, 60_000
          assert :ok = Task.async(fn -> BeamAlloc.Test.Misuse.double_free_plain() end) |> Task.await()
        end
      end

      defmodule BusyNeighbour do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        @tag beam_alloc_reports: :allow
        test "reports 60 times at once" do
          BeamAlloc.Test.Reports.registered(:guarded_task)
          mark = BeamAlloc.Reporter.mark()
          tasks = for _ <- 1..60, do: Task.async(&BeamAlloc.Test.Misuse.double_free_plain/0)
          Process.sleep(200)
          send(:guarded_task, :busy)
          Task.await_many(tasks, 60_000)
          BeamAlloc.Test.Reports.wait_since(mark, 61, 1000)
        end
      end
      """)

    assert out =~ ~r/RESULT %\{.*failures: 1/, out

    assert out =~
             ~r/test a Task misuses while the reporter is busy \(GuardedTask\)\n.*\n\s+beam_alloc reported 1 problem/
  end

  test "without its driver, stats and fault injection raise {:driver, reason}, not undef" do
    # beam_alloc's modules on the path without its application directory:
    # the driver (priv/beam_alloc_testing.so) cannot load, and its stub
    # module is not there (its on_load failed). A bare undef said nothing.
    ebin = Path.join(Mix.Project.build_path(), "lib/beam_alloc/ebin")

    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_no_driver")
    File.mkdir_p!(dir)

    for beam <- Path.wildcard(Path.join(ebin, "*.beam")),
        do: File.cp!(beam, Path.join(dir, Path.basename(beam)))

    script = ~S"""
    Show = fun(F) -> try F() of V -> {returned, V} catch C:R -> {C, R} end end,
    io:format("~p~n~p~n~p~n~p~n",
              [Show(fun() -> beam_alloc:stats(lists) end),
               Show(fun() -> beam_alloc:collect(lists) end),
               Show(fun() -> beam_alloc_testing:check_all_allocation_failures(fun() -> ok end) end),
               Show(fun() -> beam_alloc:driver(fun() -> no_such_module_here:f() end) end)]),
    halt().
    """

    {out, 0} =
      System.cmd("erl", ["-noshell", "-pa", dir, "-eval", script], stderr_to_stdout: true)

    assert out =~
             "{error,{driver,{priv_dir,bad_name}}}\n{error,{driver,{priv_dir,bad_name}}}\n" <>
               "{error,{driver,{priv_dir,bad_name}}}\n{error,undef}\n"

    # From Elixir, a RuntimeError that says so (collect/1 said "no NIF
    # library built with beam_alloc is loaded for :lists": review).
    elixir = ~S"""
    for f <- [fn -> BeamAlloc.stats(:lists) end, fn -> BeamAlloc.collect(:lists) end] do
      try do
        f.()
      rescue
        e -> IO.puts(inspect(e.__struct__) <> ": " <> Exception.message(e))
      end
    end
    """

    {out, 0} = System.cmd("elixir", ["-pa", dir, "-e", elixir], stderr_to_stdout: true)

    said =
      "RuntimeError: beam_alloc's driver (priv/beam_alloc_testing.so) could not be loaded: " <>
        "{:priv_dir, :bad_name}\n"

    # (Twice; the VM's own warnings about the on_load come in between.)
    assert length(String.split(out, said)) == 3
  end

  # Runs ExUnit over the test modules in `modules` (source text) in a VM of
  # its own, with beam_alloc started (not with started: false); its
  # output, which ends with "RESULT <ExUnit.run/0's result>".
  defp run_ex_unit(modules, opts \\ [started: true]) do
    start = if opts[:started], do: "{:ok, _} = Application.ensure_all_started(:beam_alloc)"

    script = """
    #{start}
    ExUnit.start(autorun: false, colors: [enabled: false])

    #{modules}

    result = ExUnit.run()
    IO.puts("RESULT " <> inspect(result))
    """

    {out, 0} = BeamAlloc.Test.NifModule.in_own_vm(script)
    out
  end
end
