defmodule BeamAlloc.BadArgumentsTest do
  # Every public function, given arguments of the wrong type or out of
  # range, fails with an exception that says what it expected: never a
  # bare badarg from a NIF, a hang or an answer as if the argument were
  # fine. One table of bad values, tried on each function in turn; the
  # Erlang modules' table is the EUnit module beam_alloc_bad_arguments_tests
  # (test/erlang/), run at the end. Fast (0.3 s alone): nothing here allocates.
  use ExUnit.Case, async: true

  alias BeamAlloc.Symbolizer
  alias BeamAlloc.Testing

  # Values of every kind, none of them a module with a beam_alloc NIF
  # library, a binary, a fun of arity 0 or a keyword list.
  defp bad_values do
    dead = spawn(fn -> :ok end)

    [
      1,
      -1,
      2 ** 70,
      -(2 ** 70),
      1.5,
      [:a | :b],
      [1, 2],
      %{},
      %{foo: 1},
      {:a},
      dead,
      make_ref(),
      fn _ -> :ok end,
      <<1::3>>
    ]
  end

  # Atoms that name no module with a beam_alloc NIF library: none, not a
  # module, a module without a NIF, a NIF library not built with beam_alloc.
  @not_beam_alloc [nil, true, :no_such_module_here, :lists, BeamAlloc, :crypto]

  # fun() raises an exception of one of kinds whose message matches
  # message, within 5 s (a hang is a failure too). (Not 1 s: beside other
  # suites, stats(:crypto)'s code:ensure_loaded/1 alone took 0.3-0.5 s at
  # times, waiting for the code server.)
  defp assert_clear(label, fun, kinds, message) do
    task =
      Task.async(fn ->
        try do
          {:returned, fun.()}
        rescue
          e -> {:raised, e}
        catch
          kind, reason -> {:caught, kind, reason}
        end
      end)

    case Task.yield(task, 5000) || Task.shutdown(task, :brutal_kill) do
      {:ok, {:raised, %kind{} = e}} ->
        assert kind in kinds, "#{label}: raised #{inspect(e)}"
        assert Exception.message(e) =~ message, "#{label}: #{Exception.message(e)}"

      {:ok, other} ->
        flunk("#{label}: #{inspect(other)}, expected #{inspect(kinds)}")

      nil ->
        flunk("#{label}: no answer within 5 s")
    end
  end

  test "stats/1 and collect/1: ArgumentError for anything but a beam_alloc NIF's module" do
    for value <- bad_values() ++ ["Elixir.BeamAlloc.Test.Guide", "lists"] do
      assert_clear(
        "stats(#{inspect(value)})",
        fn -> BeamAlloc.stats(value) end,
        [ArgumentError],
        ~r/expected a module name, got: /
      )

      assert_clear(
        "collect(#{inspect(value)})",
        fn -> BeamAlloc.collect(value) end,
        [ArgumentError],
        ~r/expected a module name, got: /
      )
    end

    for module <- @not_beam_alloc do
      message = ~r/expected a module name|no NIF library built with beam_alloc is loaded/

      assert_clear(
        "stats(#{inspect(module)})",
        fn -> BeamAlloc.stats(module) end,
        [ArgumentError],
        message
      )

      assert_clear(
        "collect(#{inspect(module)})",
        fn -> BeamAlloc.collect(module) end,
        [ArgumentError],
        message
      )
    end
  end

  test "Symbolizer.resolve_sites/1 and site/2: ArgumentError for a wrong type or offset" do
    for value <- bad_values() ++ [:atom, nil, ~c"guide_nif.so+0x10"] do
      assert_clear(
        "resolve_sites(#{inspect(value)})",
        fn -> Symbolizer.resolve_sites(value) end,
        [ArgumentError],
        ~r/expected a report's text \(a binary\)/
      )
    end

    # (2 ** 64 and above answered :error, "nothing known": no offset of a
    # loaded object is that large.)
    offsets = [-1, 2 ** 64, 2 ** 70, -(2 ** 70), 1.5, "16", nil, :zero, [0]]

    for value <- bad_values() ++ [:guide_nif, ~c"guide_nif.so"], offset <- [0 | offsets] do
      assert_clear(
        "site(#{inspect(value)}, #{inspect(offset)})",
        fn -> Symbolizer.site(value, offset) end,
        [ArgumentError],
        ~r/expected an object's name \(a binary\) and an offset \(an integer from 0 to 2\^64-1\)/
      )
    end

    for offset <- offsets do
      assert_clear(
        "site(\"guide_nif.so\", #{inspect(offset)})",
        fn -> Symbolizer.site("guide_nif.so", offset) end,
        [ArgumentError],
        ~r/an offset \(an integer from 0 to 2\^64-1\)/
      )
    end

    # Within range: an answer, :error for what is not known.
    assert Symbolizer.site("guide_nif.so", 2 ** 64 - 1) == :error
    assert Symbolizer.site("", 0) == :error
    assert Symbolizer.site("a\0b", 0) == :error
    assert Symbolizer.site("no_such_object.so", 16) == :error
    # A site in a report whose offset is too large to be one stays as it is.
    text = "free at guide_nif.so+0x" <> String.duplicate("f", 17)
    assert Symbolizer.resolve_sites(text) == text
  end

  test "Reporter.since/1: ArgumentError for anything but a mark" do
    for value <- bad_values() ++ [nil, :latest, "0"], not (is_integer(value) and value >= 0) do
      assert_clear(
        "since(#{inspect(value)})",
        fn -> BeamAlloc.Reporter.since(value) end,
        [ArgumentError],
        ~r/expected a mark from BeamAlloc.Reporter.mark\/0/
      )
    end
  end

  # A mark past the reporter's count was never given by mark/0 (made up,
  # or taken before the reporter restarted): since/1 answered [], and
  # went on hiding the reports numbered up to it once they came.
  test "Reporter.since/1: ArgumentError for a mark past the reports received" do
    mark = BeamAlloc.Reporter.mark()
    assert is_list(BeamAlloc.Reporter.since(mark))

    for value <- [mark + 1_000_000_000, 2 ** 70] do
      assert_clear(
        "since(#{inspect(value)})",
        fn -> BeamAlloc.Reporter.since(value) end,
        [ArgumentError],
        ~r/mark #{value} is past the \d+ reports BeamAlloc.Reporter has received/
      )
    end
  end

  test "BeamAlloc.Case.check!/3 and reports/3: ArgumentError for a bad mark, pid or async?" do
    for {args, said} <- [
          {[-1, self(), true], ~r/expected a mark from BeamAlloc.Reporter.mark\/0/},
          {[:latest, self(), true], ~r/expected a mark/},
          {[0, :me, true], ~r/expected the test's pid, got: :me/},
          {[0, self(), nil], ~r/expected async\? to be true or false, got: nil/}
        ],
        fun <- [:check!, :reports] do
      assert_clear(
        "#{fun}#{inspect(args)}",
        fn -> apply(BeamAlloc.Case, fun, args) end,
        [ArgumentError],
        said
      )
    end
  end

  test "check_all_allocation_failures/2: ArgumentError for a bad function or option" do
    ok = fn -> :ok end

    for value <- bad_values() ++ [nil, fn _, _ -> :ok end, &List.first/1] do
      assert_clear(
        "check(#{inspect(value)})",
        fn -> Testing.check_all_allocation_failures(value) end,
        [ArgumentError],
        ~r/expects a function of arity 0|expects a keyword list of options/
      )

      unless is_list(value) and value != [] and Keyword.keyword?(value) do
        assert_clear(
          "check(ok, #{inspect(value)})",
          fn -> Testing.check_all_allocation_failures(ok, value) end,
          [ArgumentError],
          ~r/expects a keyword list of options, got: /
        )
      end

      assert_clear(
        "check(ok, expect: #{inspect(value)})",
        fn -> Testing.check_all_allocation_failures(ok, expect: value) end,
        [ArgumentError],
        ~r/invalid value for :expect option, expected :any, :raise or :error_tuple/
      )

      assert_clear(
        "check(ok, modules: #{inspect(value)})",
        fn -> Testing.check_all_allocation_failures(ok, modules: value) end,
        [ArgumentError],
        ~r/invalid value for :modules option/
      )
    end

    for opts <- [
          [{"expect", :raise}],
          [:expect],
          [expect: :raise, expect: :any],
          [modules: :all, modules: :all],
          [foo: 1],
          [expect: "raise"],
          [modules: []],
          [modules: [:lists | :x]]
        ] do
      assert_clear(
        "check(ok, #{inspect(opts)})",
        fn -> Testing.check_all_allocation_failures(ok, opts) end,
        [ArgumentError],
        ~r/option|keyword list|unknown keys \[:foo\]/
      )
    end

    for module <- @not_beam_alloc do
      assert_clear(
        "check(ok, modules: [#{inspect(module)}])",
        fn -> Testing.check_all_allocation_failures(ok, modules: [module]) end,
        [ArgumentError],
        ~r/no NIF library built with beam_alloc is loaded for #{inspect(module)}/
      )
    end
  end

  test "AllocationFailureError.exception/1: ArgumentError for options it cannot show" do
    alias BeamAlloc.AllocationFailureError, as: E

    for {opts, message} <- [
          {1, ~r/takes a keyword list of :problems, :allocations and :message, got: 1/},
          {[1, 2], ~r/takes a keyword list/},
          {[problems: 1], ~r/invalid value for :problems .* expected a list of problem maps/},
          {[problems: [%{} | :x]], ~r/invalid value for :problems/},
          {[allocations: -1], ~r/invalid value for :allocations .* a non-negative integer/},
          {[allocations: 1.5], ~r/invalid value for :allocations/},
          {[allocations: "2"], ~r/invalid value for :allocations/},
          {[message: :text], ~r/invalid value for :message .* expected a string/},
          {[foo: 1], ~r/unknown option :foo for BeamAlloc.AllocationFailureError/},
          {%{allocations: -1}, ~r/invalid value for :allocations/}
        ] do
      assert_clear(
        "exception(#{inspect(opts)})",
        fn -> E.exception(opts) end,
        [ArgumentError],
        message
      )
    end

    # What it takes, as before.
    assert E.exception(allocations: 0).message =~ "(0 allocations, none to fail)"
    assert E.exception(message: "given").message == "given"
    assert E.exception(%{problems: [], allocations: 2}).message =~ "(2 allocations"
  end

  test "use BeamAlloc.Case with options fails to compile, saying it takes none" do
    # No use ExUnit.Case in the module: the options are checked first, so
    # [] passes on to the next check (ExUnit.Case missing) and no module
    # ever compiles. One that did registered itself with ExUnit, which
    # before Elixir 1.15 (no register: false) raised "cannot add sync case
    # ... after the suite starts running" once all test files were loaded
    # and async modules still ran (mix test --max-cases 1 with
    # fault_injection_test and others: Elixir 1.14, seed 575865).
    for opts <- ["async: true", "[]", ":x"] do
      code = """
      defmodule BeamAlloc.BadArgumentsTest.CaseOptions do
        use BeamAlloc.Case, #{opts}
      end
      """

      error = assert_raise CompileError, fn -> Code.compile_string(code) end

      if opts == "[]" do
        refute Exception.message(error) =~ "takes no options"
        assert Exception.message(error) =~ "must come after use ExUnit.Case"
      else
        assert Exception.message(error) =~ "use BeamAlloc.Case takes no options, got: "
        assert Exception.message(error) =~ "give async: to use ExUnit.Case"
      end
    end
  end

  test "use BeamAlloc.Nif: ArgumentError for a library path outside priv/" do
    for library <- ["/tmp/my_nif", "../my_nif", "nifs/../../my_nif", "a\0b"] do
      code = """
      defmodule BeamAlloc.BadArgumentsTest.Library do
        use BeamAlloc.Nif, otp_app: :beam_alloc, library: #{inspect(library)}
      end
      """

      assert_clear(
        "library: #{inspect(library)}",
        fn -> Code.compile_string(code) end,
        [ArgumentError],
        ~r/invalid value for :library option, expected a path inside/
      )
    end

    # A path below priv/ is one.
    assert %{library: "twin/misuse_nif"} =
             BeamAlloc.Nif.validate_use_options!(
               [otp_app: :beam_alloc, library: "twin/misuse_nif"],
               __ENV__
             )
  end

  test "the Erlang modules' table (EUnit: beam_alloc_bad_arguments_tests)" do
    assert :ok = :eunit.test(:beam_alloc_bad_arguments_tests, [])
  end
end
