defmodule BeamAlloc.NifGlueTest do
  # BEAM_NIF and BEAM_NIF_INIT: beam_allocator in each kind of NIF, custom
  # allocators, alignment and size limits, and the term helpers.
  use ExUnit.Case, async: true

  alias BeamAlloc.Test.Glue

  describe "beam_allocator" do
    test "is the raw allocator in a BEAM_NIF" do
      assert Glue.allocator_is_raw()
    end

    test "is the raw allocator in dirty CPU and dirty IO NIFs" do
      assert Glue.allocator_is_raw_dirty_cpu()
      assert Glue.allocator_is_raw_dirty_io()
    end

    test "is a fresh general purpose allocator under leak_check" do
      assert Glue.allocator_in_leak_check()
    end

    test "is whatever the thread last had in a raw NIF" do
      assert is_boolean(Glue.raw_allocator_is_raw())
    end

    test "never points at a finished call's leak_check allocator" do
      # Many rounds so that the raw NIF lands on schedulers that just ran a
      # leak_check call; a dangling allocator would crash the VM here.
      for _ <- 1..200 do
        assert Glue.allocator_in_leak_check()
        assert :ok = Glue.raw_uses_allocator()
      end
    end

    test "is the NIF's own allocator with .allocator" do
      assert Glue.allocator_is_custom()
      # and only for that call
      assert Glue.allocator_is_raw()
    end
  end

  describe "alignment" do
    # A block of each size from allocator kind, at alignment.
    defp assert_aligned(kind, sizes, alignment) do
      for size <- sizes do
        assert {:ok, address} = Glue.alloc_aligned(kind, size, alignment)
        assert rem(address, alignment) == 0
      end
    end

    test "the large allocator serves 1024-byte alignment" do
      assert_aligned(:large, [1, 1000, 1024, 5000], 1024)
    end

    test "the general purpose allocator serves 1024-byte alignment" do
      assert_aligned(:gpa, [1, 1000, 1024, 20_000], 1024)
    end

    test "the raw allocator serves up to 8 bytes" do
      for alignment <- [1, 2, 4, 8], do: assert_aligned(:raw, [24], alignment)
    end

    test "the raw allocator refuses 16-byte alignment" do
      assert {:error, :unsupported_alignment} = Glue.alloc_aligned(:raw, 24, 16)
      assert {:error, :unsupported_alignment} = Glue.alloc_aligned(:raw, 24, 4096)
    end

    test "an alignment that is not a power of two raises ArgumentError" do
      assert_raise ArgumentError, fn -> Glue.alloc_aligned(:large, 16, 24) end
      assert_raise ArgumentError, fn -> Glue.alloc_aligned(:large, 16, 0) end
    end

    test "bad arguments raise ArgumentError" do
      assert_raise ArgumentError, fn -> Glue.alloc_aligned(:nope, 16, 8) end
      assert_raise ArgumentError, fn -> Glue.alloc_aligned("raw", 16, 8) end
      assert_raise ArgumentError, fn -> Glue.alloc_aligned(:raw, -16, 8) end
    end
  end

  describe "impossible sizes" do
    test "are {:error, :enomem} for every allocator" do
      for kind <- [:raw, :large, :gpa, :beam] do
        assert {:error, :enomem} = Glue.sized_alloc(kind, 2 ** 62, 2)
        assert {:error, :enomem} = Glue.sized_alloc(kind, 2 ** 62, 8)
        assert {:error, :enomem} = Glue.sized_alloc(kind, 2 ** 64 - 1, 1)
        assert {:error, :enomem} = Glue.alloc_aligned(kind, 2 ** 63, 8)
      end
    end

    test "do not disturb later allocations" do
      assert {:error, :enomem} = Glue.sized_alloc(:gpa, 2 ** 62, 2)
      assert :ok = Glue.sized_alloc(:gpa, 1000, 8)
    end

    test "bad arguments raise ArgumentError" do
      assert_raise ArgumentError, fn -> Glue.sized_alloc(:raw, 10, 0) end
      assert_raise ArgumentError, fn -> Glue.sized_alloc(:raw, 2 ** 64, 1) end
      assert_raise ArgumentError, fn -> Glue.sized_alloc(:raw, [], 1) end
    end
  end

  describe "failing allocator" do
    test "turns an injected failure into {:error, :enomem} without leaking" do
      # failing_alloc runs under leak_check: an error path that forgot a
      # block would raise instead.
      assert {:error, :enomem} = Glue.failing_alloc(0)
      assert {:error, :enomem} = Glue.failing_alloc(1)
      assert [0, 1, 2, 3] = Glue.failing_alloc(2)
    end

    test "bad arguments raise ArgumentError" do
      assert_raise ArgumentError, fn -> Glue.failing_alloc(:never) end
    end
  end

  describe "custom allocator" do
    test "sees every allocation of the call" do
      assert_sees_every_allocation(&Glue.custom_alloc/1, 100)
    end

    test "works on dirty schedulers" do
      assert_sees_every_allocation(&Glue.custom_alloc_dirty/1, 1000)
    end

    test "bad arguments raise ArgumentError and allocate nothing" do
      assert_raise ArgumentError, fn -> Glue.custom_alloc(0) end
      assert_raise ArgumentError, fn -> Glue.custom_alloc(:big) end
      assert messages() == []
    end
  end

  describe "custom allocator with leak_check" do
    test "composes: the checking allocator draws from the custom one" do
      assert :ok = Glue.composed_clean(100)
      msgs = messages()
      assert [_ | _] = for({:alloc, n} <- msgs, do: n)
      assert balance(msgs) == 0
    end

    test "still raises on a leak, and keeps what the leaked blocks need" do
      message = "memory leak detected in function `BeamAlloc.Test.Glue.composed_leaky/1`"

      assert_raise RuntimeError, message, fn -> Glue.composed_leaky(100) end

      # The leaking call's instance stays, with its memory from the custom
      # allocator, until the library is unloaded: the NIF may have kept a
      # copy of its allocator with the blocks (a resource's C library
      # context), and their frees must find it. It gave everything back,
      # and a later free through a kept copy crashed the VM.
      msgs = messages()
      assert [_ | _] = for({:alloc, n} <- msgs, do: n)
      assert balance(msgs) > 0
    end
  end

  describe "term helpers" do
    test "beam_make_uint_list handles every element width" do
      assert [0, 1, 255] = Glue.uint_list(1)
      assert [0, 1, 65_535] = Glue.uint_list(2)
      assert [0, 1, 4_294_967_295] = Glue.uint_list(4)
      assert [0, 1, 18_446_744_073_709_551_615] = Glue.uint_list(8)
    end

    test "beam_make_uint_list refuses other widths with ArgumentError" do
      for width <- [0, 3, 5, 16] do
        assert_raise ArgumentError, fn -> Glue.uint_list(width) end
      end
    end

    test "beam_make_error builds {:error, reason}" do
      assert {:error, :enomem} = Glue.error_tuple(:enomem)
      assert_raise ArgumentError, fn -> Glue.error_tuple("enomem") end
    end

    test "beam_raise raises an Elixir exception with the message" do
      assert_raise ArgumentError, "bad size", fn ->
        Glue.raise_exception(ArgumentError, "bad size")
      end

      assert_raise RuntimeError, "", fn -> Glue.raise_exception(RuntimeError, "") end
      # The "Elixir." prefix is optional.
      assert_raise ArgumentError, "x", fn -> Glue.raise_exception(:ArgumentError, "x") end

      # A name that does not fit an atom with its prefix is badarg (it was
      # cut short: a struct of another module).
      long = String.to_atom(String.duplicate("E", 250))
      assert catch_error(Glue.raise_exception(long, "x")) == :badarg
    end

    test "beam_raise with an Erlang name raises Elixir's exception for it" do
      # (It raised %{__struct__: :"Elixir.badarg"}, which no message reads.)
      assert %ArgumentError{message: "expects a binary"} =
               catch_error(Glue.raise_exception(:badarg, "expects a binary"))

      assert %ArithmeticError{message: "x"} = catch_error(Glue.raise_exception(:badarith, "x"))

      assert %SystemLimitError{message: "x"} =
               catch_error(Glue.raise_exception(:system_limit, "x"))

      error = catch_error(Glue.raise_exception(:timeout, "after 5 s"))
      assert %RuntimeError{message: "timeout: after 5 s"} = error
      assert Exception.message(error) == "timeout: after 5 s"

      # The longest atom still names its error.
      long = "a" <> String.duplicate("b", 254)

      assert %RuntimeError{message: message} =
               catch_error(Glue.raise_exception(String.to_atom(long), "x"))

      assert message == long <> ": x"
    end

    test "beam_raise's exception is a proper struct" do
      error = catch_error(Glue.raise_exception(ArgumentError, "why"))
      assert %ArgumentError{message: "why"} = error
      assert Exception.message(error) == "why"
    end

    test "beam_nif_function_name (and its old name beam_nif_module_name) names the running NIF" do
      assert Glue.current_function() == "BeamAlloc.Test.Glue.current_function/0"
      assert Glue.raw_current_function() == nil
    end

    # One C function under two arities (optional arguments by argc): the
    # call's argc picks the entry (the fault-injection crash note named
    # the first one: fault_injection_crash_test).
    test "names a C function listed under two arities by the arity called" do
      assert Glue.current_function_of(1) == "BeamAlloc.Test.Glue.current_function_of/1"
      assert Glue.current_function_of(1, 2) == "BeamAlloc.Test.Glue.current_function_of/2"
    end
  end

  # custom_alloc(n) (or its dirty twin) allocates n bytes, grows them to
  # 2n and frees them: its allocator must be told of each step.
  defp assert_sees_every_allocation(custom_alloc, n) do
    assert :ok = custom_alloc.(n)
    msgs = messages()
    assert {:alloc, n} in msgs
    assert {:free, 2 * n} in msgs
    assert balance(msgs) == 0
  end

  # The custom allocator's messages to this process, in order.
  defp messages(acc \\ []) do
    receive do
      {tag, _} = msg when tag in [:alloc, :free] -> messages([msg | acc])
      {tag, _, _} = msg when tag in [:resize, :remap] -> messages([msg | acc])
    after
      0 -> Enum.reverse(acc)
    end
  end

  # Bytes still live after these messages: zero when everything allocated
  # was given back.
  defp balance(msgs) do
    Enum.reduce(msgs, 0, fn
      {:alloc, n}, live -> live + n
      {:free, n}, live -> live - n
      {_, old, new}, live -> live - old + new
    end)
  end

  describe "BEAM_NIF_INIT" do
    test "takes ERL_NIF_INIT's six arguments too (a drop-in: the line renamed)" do
      assert BeamAlloc.Test.Init6.loads_seen() == 1

      assert_raise RuntimeError,
                   "memory leak detected in function `BeamAlloc.Test.Init6.leaks/0`",
                   fn -> ExUnit.CaptureLog.capture_log(fn -> BeamAlloc.Test.Init6.leaks() end) end
    end
  end
end
