defmodule BeamAlloc.LeakCheckTest do
  # BEAM_NIF(name, .leak_check = true): a fresh general purpose allocator
  # per call, and a RuntimeError naming the function when a block outlives
  # the call.
  use ExUnit.Case, async: true

  describe "a leaking NIF" do
    test "raises RuntimeError naming the function (dirty CPU)" do
      message = "memory leak detected in function `LeakCheckTest.check_me/0`"
      assert_raise RuntimeError, message, fn -> LeakCheckTest.check_me() end
    end

    test "raises on a normal scheduler and on a dirty IO one" do
      assert_leak("LeakCheckTest.check_me_normal/0", &LeakCheckTest.check_me_normal/0)
      assert_leak("LeakCheckTest.check_me_io/0", &LeakCheckTest.check_me_io/0)
    end

    test "names the function with its arity" do
      assert_leak("LeakCheckTest.leak_bytes/1", fn -> LeakCheckTest.leak_bytes(100) end)
    end

    test "raises for blocks of any size" do
      for size <- [1, 64, 8192, 8193, 1_000_000] do
        assert_leak("LeakCheckTest.leak_bytes/1", fn -> LeakCheckTest.leak_bytes(size) end)
      end
    end

    test "reports every leaked block with its size" do
      LeakCheckTest.take_reports()
      catch_error(LeakCheckTest.check_me())
      reports = LeakCheckTest.take_reports()

      assert "beam_alloc: memory leak detected in function `LeakCheckTest.check_me/0`:" in reports
      assert Enum.any?(reports, &(&1 =~ "leak: 8 bytes"))
      assert Enum.any?(reports, &(&1 =~ "leak: 100000 bytes"))
    end

    test "raises the leak even when the NIF raised something else" do
      assert_leak("LeakCheckTest.raise_and_leak/0", &LeakCheckTest.raise_and_leak/0)
    end

    test "writes a function name that needs quotes the way Elixir does" do
      assert_leak(~s(LeakCheckTest."odd-name?"/0), &LeakCheckTest."odd-name?"/0)
    end

    # Exception.format_mfa/3 writes an operator bare (Kernel.+/2, a NIF's
    # <~>/0 too); the message quoted every name that is not an identifier.
    test "writes a function named like an operator bare, as Elixir does" do
      assert Exception.format_mfa(LeakCheckTest, :<~>, 0) == "LeakCheckTest.<~>/0"
      assert_leak("LeakCheckTest.<~>/0", &LeakCheckTest.<~>/0)
    end

    # The VM reads a NIF table's names as Latin-1: the message gives them
    # in UTF-8, quoted and escaped where Exception.format_mfa/3 and
    # io_lib's ~tw do (the bytes were quoted and each written as "?").
    test "writes a name beyond ASCII the way each language does" do
      for {name, elixir, erlang} <- [
            {:héllo, "héllo", "héllo"},
            {:"x×y", ~s("x×y"), "'x×y'"},
            {:"a\rb\u0080", ~S("a\rb\x80"), ~S('a\rb\200')}
          ] do
        assert Exception.format_mfa(LeakCheckTest, name, 0) == "LeakCheckTest.#{elixir}/0"
        assert_leak("LeakCheckTest.#{elixir}/0", fn -> apply(LeakCheckTest, name, []) end)

        assert to_string(:io_lib.format(~c"~tw/0", [name])) == "#{erlang}/0"

        assert {:memory_leak, "memory leak detected in function beam_alloc_erl_test:#{erlang}/0"} ==
                 catch_error(apply(:beam_alloc_erl_test, name, []))
      end
    end

    # A message longer than its buffer is cut between two escapes or
    # characters, with nothing after the cut: it ended "\x01\x" (half an
    # escape), and a 2-byte é that did not fit was left out while the b
    # after it was written.
    test "cuts a name too long for the message between whole escapes" do
      module = :"Elixir.LongName#{String.duplicate("A", 235)}"

      for name <- [
            String.duplicate("\u0001", 255),
            "a" <> String.duplicate("\u0001", 238) <> "éb"
          ] do
        %RuntimeError{message: message} = catch_error(apply(module, String.to_atom(name), []))
        prefix = "memory leak detected in function `#{inspect(module)}.\""
        assert String.starts_with?(message, prefix)
        assert String.trim_leading(message, prefix) =~ ~r/\Aa?(\\x01)+`\z/
      end
    end

    # The report's line (1024 bytes) is shorter than the message: its name
    # was cut by the line, in half an escape and without the backquote.
    test "cuts a name too long for the report's line between whole escapes" do
      module = :"Elixir.LongName#{String.duplicate("A", 235)}"
      module.take_reports()
      catch_error(apply(module, String.to_atom(String.duplicate("\u0001", 255)), []))
      prefix = "beam_alloc: memory leak detected in function `#{inspect(module)}.\""

      assert [line] = Enum.filter(module.take_reports(), &String.starts_with?(&1, prefix))
      assert String.trim_leading(line, prefix) =~ ~r/\A(\\x01)+`:\z/
    end

    # maybe and else are the maybe_expr feature's keywords: io_lib quotes
    # them where it is on by default (OTP 27 on), not before (OTP 25, 26).
    test "writes maybe as this VM's Erlang does" do
      erlang = to_string(:io_lib.format(~c"~tw", [:maybe]))

      assert {:memory_leak, "memory leak detected in function beam_alloc_erl_test:#{erlang}/0"} ==
               catch_error(apply(:beam_alloc_erl_test, :maybe, []))
    end

    test "raises an Erlang term, naming the function the Erlang way, in an Erlang module" do
      :beam_alloc_erl_test.take_reports()

      assert {:memory_leak, "memory leak detected in function beam_alloc_erl_test:leaky/0"} =
               catch_error(:beam_alloc_erl_test.leaky())

      assert "beam_alloc: memory leak detected in function beam_alloc_erl_test:leaky/0:" in :beam_alloc_erl_test.take_reports()
    end

    test "beam_raise raises an Erlang term in an Erlang module" do
      assert {:badarg, "expects a binary"} = catch_error(:beam_alloc_erl_test.raise_badarg())
      assert {:badarg, "bad value"} = catch_error(:beam_alloc_erl_test.raise_named())
      assert {:KeyError, "no key"} = catch_error(:beam_alloc_erl_test.raise_other())
    end

    test "quotes an Erlang atom that needs it, and names a NIF by its Erlang name" do
      # C name nif_free, Erlang name 'free'; C name nif_end, Erlang name 'end'
      assert {:memory_leak, "memory leak detected in function beam_alloc_erl_test:free/1"} =
               catch_error(:beam_alloc_erl_test.free(1))

      assert {:memory_leak, "memory leak detected in function beam_alloc_erl_test:'end'/0"} =
               catch_error(apply(:beam_alloc_erl_test, :end, []))
    end
  end

  describe "a block kept past its call" do
    # As a NIF keeps a C library's context in a resource: the leak is
    # raised, and the block, freed later through the call's allocator that
    # the NIF kept, goes back to that instance, which is still there (the
    # free crashed the VM when the instance lived on the call's stack).
    # (The NIF keeps one block: only this test and KeptInstanceTest, which
    # is not async and so never runs at the same time, use it.)
    test "is a leak, and a later free through the kept allocator is sound" do
      for size <- [24, 20_000, 300_000] do
        LeakCheckTest.take_reports()

        assert_leak("LeakCheckTest.keep_for_later/1", fn -> LeakCheckTest.keep_for_later(size) end)

        assert Enum.any?(LeakCheckTest.take_reports(), &(&1 =~ "leak: #{size} bytes"))
        assert :ok = LeakCheckTest.free_kept()
        # The free was the block's own: no free or misuse reported (other
        # modules' calls into this library may report leaks meanwhile).
        refute Enum.any?(LeakCheckTest.take_reports(), &(&1 =~ ~r/free|misuse/)),
               "size #{size}"
      end
    end
  end

  describe "the checking instance" do
    # It is a general purpose instance, which serves any power-of-two
    # alignment, where the raw allocator (the NIF's without options) serves 8:
    # what the README says, so that a test does not pass for the wrong
    # reason unnoticed.
    test "serves alignments the raw allocator refuses" do
      assert LeakCheckTest.aligned_checked(64) == :ok
      assert LeakCheckTest.aligned_plain(64) == {:error, :enomem}
      assert LeakCheckTest.aligned_checked(8) == :ok
      assert LeakCheckTest.aligned_plain(8) == :ok
    end
  end

  describe "a clean NIF" do
    test "returns normally" do
      assert LeakCheckTest.clean(100) == Enum.sum(0..99)
      assert :ok = LeakCheckTest.clean_dirty()
      assert :ok = :beam_alloc_erl_test.clean()
    end

    test "reports nothing" do
      LeakCheckTest.take_reports()
      assert :ok = LeakCheckTest.clean_dirty()
      assert LeakCheckTest.take_reports() == []
    end

    test "keeps its own exceptions" do
      assert_raise ArgumentError, fn -> LeakCheckTest.raise_clean() end
    end

    test "raises ArgumentError on bad arguments" do
      assert_raise ArgumentError, fn -> LeakCheckTest.clean(:many) end
      assert_raise ArgumentError, fn -> LeakCheckTest.leak_bytes(-1) end
    end

    test "runs on a fresh allocator after a call that leaked" do
      assert_leak("LeakCheckTest.check_me_normal/0", &LeakCheckTest.check_me_normal/0)
      assert :ok = LeakCheckTest.clean_dirty()
      assert LeakCheckTest.clean(10) == Enum.sum(0..9)
    end
  end

  defp assert_leak(function, fun) do
    assert_raise RuntimeError, "memory leak detected in function `#{function}`", fun
  end
end

defmodule BeamAlloc.KeptInstanceTest do
  # What a leaking leak_check call's kept instance holds once its blocks
  # are freed. Not async: it reads the library's large-allocator total,
  # which the async leak tests move.
  use ExUnit.Case, async: false

  test "a kept instance gives back what its freed blocks held" do
    large = fn -> BeamAlloc.stats(LeakCheckTest).large.live_bytes end
    before = large.()

    for _ <- 1..20 do
      assert_raise RuntimeError, fn -> LeakCheckTest.keep_for_later(24) end
      assert :ok = LeakCheckTest.free_kept()
    end

    # Each kept instance held ~100 KB until the library was unloaded; now
    # the next keep collects the ones before it (a few KB each).
    kept = large.() - before
    assert kept < 20 * 16_384, "20 kept instances hold #{kept} bytes"

    assert :ok = BeamAlloc.collect(LeakCheckTest)
    assert large.() - before <= kept
  end
end
