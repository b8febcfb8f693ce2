defmodule BeamAlloc.Case do
  @moduledoc """
  Fails any test during which beam_alloc reported a problem.

  A double free in a NIF without `leak_check` is reported and the call goes
  on: without a guard, the test passes and the report scrolls by in the
  log. One line after `use ExUnit.Case` makes such a test fail, with the
  reports in the failure message:

      defmodule MyNifTest do
        use ExUnit.Case, async: true
        use BeamAlloc.Case

        test "parse/1" do
          assert {:ok, _} = MyNif.parse("[1, 2]")
        end
      end

      1) test parse/1 (MyNifTest)
         beam_alloc reported 1 problem during the test:

           beam_alloc: general purpose allocator: double free: 0x... (length 24,
           alignment 8), called from parse (c_src/my_nif.c:42) <- ...; the block was
           allocated from parse (c_src/my_nif.c:30) <- ...

  A NIF call that raises for its own misuse or leak (`leak_check`, or
  `raise_on_misuse`) fails the test with its `RuntimeError`, which names
  the function (and a misuse's kind) but no source line. The guard adds
  the test's reports, with their source lines, as a second failure of the
  same test (`ExUnit.MultiError`), the `RuntimeError` unchanged:

      1) test check_me/0 (MyNifTest)
         test/my_nif_test.exs:8
         Failure #1
         ** (RuntimeError) memory leak detected in function `MyNif.check_me/0`
         stacktrace:
           (my_app 0.1.0) MyNif.check_me()
           test/my_nif_test.exs:9: (test)
         Failure #2
         beam_alloc reported 2 problems during the test:

           beam_alloc: memory leak detected in function `MyNif.check_me/0`:
           beam_alloc: leak: 40 bytes (alignment 1) at 0x..., allocated from check_me (c_src/my_nif.c:42)

  So for any failure of a guarded test during which reports were made (an
  assertion that failed after a double free the NIF reported and went
  on): ExUnit shows a test's first failure only, and the guard's own,
  found after the test, would be dropped. A test tagged
  `beam_alloc_reports: :allow` gets the second failure only when it
  failed with such a `RuntimeError` (or `{:memory_leak, message}` /
  `{:memory_misuse, message}` from an Erlang module's NIF). To do this the
  guard wraps each test function of the module (`defoverridable`; the
  stack trace still reads `(test)`; a test that timed out shows it at
  the test's line, under a frame of its body `"test ... (overridable 1)"`;
  a test whose name, `"test "` included, is longer than 238 characters is
  not wrapped, its failure as without the guard); the reports are read,
  and their sites resolved, only when the test failed. A module that gets
  `use BeamAlloc.Case` twice (from a case template's `using` and itself)
  is guarded once. In a case template, `use BeamAlloc.Case` goes in its
  `using` block: in the template's body it guards the tests but cannot
  wrap them (it warns).

  Which reports count: those made by NIF calls of the test process or of
  processes it started (a `Task`'s `$callers`, a proc_lib process's
  `$ancestors`: `Task.async/1`, `Task.async_stream/3`, a GenServer started
  by the test; and, from OTP 25 on, the processes that spawned it while
  they live: `spawn/1`, `spawn_link/1`), and those of its `on_exit`
  callbacks (ExUnit runs them after the test, in a process of its own
  that the test did not start: the guard makes it the test's once the
  test's body returned). Not those of a callback registered before the
  guard's setup (a setup that comes before `use BeamAlloc.Case`): it
  runs after the guard's check, and counts for no test; nor those of a
  test that failed (ExUnit shows its first failure alone: they are only
  logged); in an async
  module, not those of a test the guard does not wrap (its name too
  long, see above) either. A
  `BEAM_NIF` call that reported returns only once
  `BeamAlloc.Reporter` has read who made the call, so a Task that ends
  right after its call still counts (it waits a second at most, and not
  at all while 256 reports of its NIF library wait to be read: a flood of
  reports would otherwise slow every reporting call to one a second). The
  reporter keeps a test's own reports for its guard, however many other
  tests report meanwhile, and counts every one no check consumed (the
  message shows the latest 100 of them). In a test module that is not async, every report made
  while the test ran (the test runs alone; threads and resource
  destructors report without a process): a process the test did not
  start counts too, such as one of `setup_all` or of an application
  calling another NIF library in a loop, whose reports then fail every
  such test (stop that process during its tests: making the module async
  would also stop counting the reports the test caused, see below). The
  failure says whose such a report was: its line begins with
  the pid of the process that made it, and a first line says how many
  were another process's:

      beam_alloc reported 1 problem during the test:

        beam_alloc: 1 of the reports below was made by another process (#PID<0.122.0>) than the test's (#PID<0.123.0>) and those it started: a test module that is not async counts every report made while a test runs: the test may have caused it (by calling that process, in an on_exit callback, through a process it started that has exited); if not (a process of setup_all, of an application), stop that process during the tests (an async module counts neither)
        #PID<0.122.0>: beam_alloc: general purpose allocator: double free: 0x... (length 24, alignment 8), called from double_free (c_src/zipper_nif.c:29)

  (A report made off any process, or by one gone before the reporter
  read whom it worked for, has no pid before it: it may be the test's.
  One with a pid may be the test's doing too: a call of the test to a
  GenServer it did not start, a process it started through one that has
  exited. Fix those as the test's bugs: making the module async would
  only stop counting them.)
  In an async module a report made off any process (a thread the
  NIF started, a resource destructor) counts for no test: the test passes,
  the line only logged; test such code in a module that is not async. A test that triggers
  reports on purpose opts out with `@tag beam_alloc_reports: :allow`.

  Not counted: the reports that `BeamAlloc.Testing.check_all_allocation_failures/2`
  turned into its result: a misuse of one of its runs (a double free on a
  general purpose allocator, say), which the allocator reported and the
  check listed in the `BeamAlloc.AllocationFailureError` it raised, and a
  `leak_check` NIF's leak that a run's call reported and the check listed
  (the line naming the function and its blocks' lines, up to 4,096
  blocks a call) (the reporter marks those reports `consumed`). A test
  that asserts that error needs no tag:

      test "the check finds the double free on parse/1's error path" do
        error =
          assert_raise BeamAlloc.AllocationFailureError, fn ->
            BeamAlloc.Testing.check_all_allocation_failures(fn -> MyNif.parse("[1]") end)
          end

        assert [%{kind: :misuse, misuse: "double free"}] = error.problems
      end

  Every other report still fails the test: one made outside the check's
  runs, by another process (a Task the function starts: its calls are not
  checked), by a NIF of a module the check's `:modules` leave out, in a
  run whose problems the check does not list (a run found
  nondeterministic), or in a listed run but not the misuse it lists (a
  leak reported by an instance the NIF deinitialised there). A report whose call did not wait for the reporter
  (see above) may be read after its run is over, and then counts too.

  The reports are read from `BeamAlloc.Reporter`, so the `:beam_alloc`
  application must be running (as it is under `mix test`).

  `use BeamAlloc.Case` takes no options (`async:` goes to `use
  ExUnit.Case`): any given fail the module's compilation.
  """

  alias BeamAlloc.Reporter

  # What a failure of the test needs (see __failed__/3), in its process.
  @failure_key {__MODULE__, :failure}

  @doc false
  defmacro __using__(opts) do
    # It takes no options: `use BeamAlloc.Case, async: true` read as if
    # async were set, and the test module ran synchronously without a
    # word (bad-arguments hunt). async belongs to `use ExUnit.Case`.
    if opts != [] do
      raise CompileError,
        file: __CALLER__.file,
        line: __CALLER__.line,
        description:
          "use BeamAlloc.Case takes no options, got: #{Macro.to_string(opts)} " <>
            "(give async: to use ExUnit.Case; @tag beam_alloc_reports: :allow lets a " <>
            "test report)"
    end

    # It adds a setup callback: ExUnit.Case must come first (else the
    # error was "undefined function setup/2", which says nothing of it).
    setup_imported? =
      Enum.any?(__CALLER__.macros, fn {module, macros} ->
        module == ExUnit.Callbacks and {:setup, 2} in macros
      end)

    unless setup_imported? do
      raise CompileError,
        file: __CALLER__.file,
        line: __CALLER__.line,
        description:
          "use BeamAlloc.Case must come after use ExUnit.Case in a test module: " <>
            "it adds a setup callback, which ExUnit.Case defines"
    end

    # Once a module: used twice (a case template's `using`, then the
    # module itself), each test was wrapped twice and its failure listed
    # the reports twice (review).
    if Module.get_attribute(__CALLER__.module, :beam_alloc_case_used) do
      :ok
    else
      Module.put_attribute(__CALLER__.module, :beam_alloc_case_used, true)

      quote do
        setup context do
          BeamAlloc.Case.setup_reports(context)
        end

        @before_compile BeamAlloc.Case
      end
    end
  end

  # ExUnit shows one failure of a test: the first. A leak_check NIF's
  # RuntimeError ("memory leak detected in function `M.f/0`") failed the
  # test, the guard's failure with the source lines came after (on_exit)
  # and was dropped, and the lines were only in the log (the product
  # brief: a misuse fails the test and points at the line). Each test function is wrapped: a failure of the
  # test itself is raised again with the test's reports as a second
  # failure of the same test (ExUnit.MultiError), the first unchanged.
  @doc false
  defmacro __before_compile__(env) do
    warn_unless_test_module(env)
    registered = registered_tests(env.module)

    for {name, 1} <- Module.definitions_in(env.module, :def),
        test_function?(name, registered),
        overridable_name_fits?(name) do
      # (At the test's line: a test that timed out shows the wrapper's
      # frame as "(test)", which stood at the module's first line.)
      {:v1, :def, meta, _clauses} = Module.get_definition(env.module, {name, 1})

      quote line: Keyword.get(meta, :line, env.line) do
        defoverridable [{unquote(name), 1}]

        def unquote(name)(context) do
          result = super(context)
          BeamAlloc.Case.__passed__()
          result
        catch
          kind, reason -> BeamAlloc.Case.__failed__(kind, reason, __STACKTRACE__)
        end
      end
    end
  end

  # ExUnit names a test "test name" (also under describe), a doctest
  # "doctest ...", StreamData's property "property name", any other test
  # registered with ExUnit.Case.register_test/6 (or /4) "<type> name"
  # (Wallaby's "feature ...", which the names alone left out: review): the
  # tests ExUnit keeps in @ex_unit_tests, and those names where it is not
  # read.
  defp test_function?(name, registered),
    do:
      MapSet.member?(registered, name) or
        String.starts_with?(Atom.to_string(name), ["test ", "doctest ", "property "])

  defp registered_tests(module) do
    case Module.get_attribute(module, :ex_unit_tests) do
      tests when is_list(tests) -> MapSet.new(for %{name: name} <- tests, do: name)
      _ -> MapSet.new()
    end
  end

  # In a case template's body (setup is imported there too), the guard's
  # setup reaches the modules that use the template, the wrapper (a
  # @before_compile of the template, which has no tests) does not: their
  # failures came without the reports, with no word (review). (Not an
  # error: it guarded them before the wrapper, and still does.)
  defp warn_unless_test_module(env) do
    unless Module.has_attribute?(env.module, :ex_unit_tests) do
      IO.warn(
        "use BeamAlloc.Case in #{inspect(env.module)}, which is not an ExUnit.Case " <>
          "module (a case template's body?): its tests are guarded, but a failed " <>
          "test's failure will not list beam_alloc's reports; in a case template, " <>
          "put use BeamAlloc.Case in its using block",
        Macro.Env.stacktrace(env)
      )
    end
  end

  # defoverridable names the test's body "<name> (overridable 1)", an
  # atom of 255 characters at most: a test name ExUnit takes failed the
  # module's compilation (SystemLimitError). Such a test is left
  # unwrapped, guarded as before (its failure without the reports).
  defp overridable_name_fits?(name),
    do: String.length(Atom.to_string(name)) + String.length(" (overridable 99)") <= 255

  @doc false
  def setup_reports(context) do
    check_tags!(context)

    async? = Map.get(context, :async, false)
    allowed? = context[:beam_alloc_reports] == :allow

    # A failure of the test reads the guard's watch (the test's own
    # reports, however many others report); a test allowed to report has
    # none, and reads those since a mark. (It never needed the reporter:
    # without one, its failures stay as they are.)
    if allowed? do
      with {:ok, mark} <- mark(), do: Process.put(@failure_key, {{:mark, mark}, async?, true})
    else
      guard = start_guard(self(), async?)
      ExUnit.Callbacks.on_exit({__MODULE__, make_ref()}, fn -> check_guard!(guard) end)
      Process.put(@failure_key, {{:guard, guard}, async?, false})
    end

    :ok
  end

  defp mark do
    {:ok, Reporter.mark()}
  rescue
    RuntimeError -> :error
  end

  # The test failed with kind, reason: raised again as it was, or, with
  # reports of the test not consumed, as an ExUnit.MultiError whose
  # second failure lists them (the guard's own message). A test allowed to
  # report gets them only when its failure is beam_alloc's own leak or
  # misuse error (its reports are then that error's source lines).
  # (It only raises: said, for dialyzer, which warns of it from OTP 26 on,
  # where :erlang.raise/3 is no_return.)
  @doc false
  @spec __failed__(:error | :exit | :throw, term, list) :: no_return
  def __failed__(kind, reason, stack) do
    stack = unwrapped(stack)

    with {from, async?, allowed?} <- Process.get(@failure_key),
         true <- not allowed? or beam_alloc_error?(reason),
         {reports, n} when n > 0 <- failure_reports(from, async?) do
      error = reports_error(reports, n, self())
      errors = failures(kind, reason, stack) ++ [{:error, error, []}]
      :erlang.raise(:error, %ExUnit.MultiError{errors: errors}, stack)
    else
      _ -> :erlang.raise(kind, reason, stack)
    end
  end

  # ExUnit runs a test's on_exit callbacks after it, last registered
  # first, in one process it spawns for them, which the test did not
  # start: in an async module a double free in one counted for no test,
  # and the test passed (found in review). A callback registered after
  # the test's body is the first to run there: it makes that process the
  # test's (its $callers, which the reporter reads), for the callbacks
  # after it up to the guard's check (those registered before the
  # guard's setup run after its check: not counted).
  @doc false
  def __passed__ do
    case Process.get(@failure_key) do
      {{:guard, {_watch, test_pid}}, _async?, false} ->
        ExUnit.Callbacks.on_exit({__MODULE__, make_ref()}, fn -> works_for(test_pid) end)

      _ ->
        :ok
    end
  end

  defp works_for(test_pid) do
    callers = List.wrap(Process.get(:"$callers", []))
    Process.put(:"$callers", [test_pid | callers])
    :ok
  end

  # The stack as it was without the wrapper: the test's own frame under
  # its name (ExUnit writes it "(test)"), not "test x (overridable 1)",
  # and the wrapper's frame, the next one, gone.
  defp unwrapped([{module, name, arity, location} = frame | rest]) when is_atom(name) do
    case test_of_body(name) do
      nil ->
        [frame | unwrapped(rest)]

      test ->
        rest = with [{^module, ^test, ^arity, _} | after_it] <- rest, do: after_it
        [{module, test, arity, location} | unwrapped(rest)]
    end
  end

  defp unwrapped([frame | rest]), do: [frame | unwrapped(rest)]
  defp unwrapped([]), do: []

  # The test whose body the guard's wrapper named "<test> (overridable N)"
  # (defoverridable), or nil: the test's atom exists, the test defines it.
  # BeamAlloc.Testing names a crash's caller with it too.
  @doc false
  def test_of_body(name) when is_atom(name) do
    case Regex.run(~r/^(.*) \(overridable \d+\)$/s, Atom.to_string(name)) do
      [_, test] -> String.to_existing_atom(test)
      nil -> nil
    end
  end

  # (A test that failed several times already: each, then the reports.)
  defp failures(:error, %ExUnit.MultiError{errors: errors}, _stack), do: errors
  defp failures(kind, reason, stack), do: [{kind, reason, stack}]

  # (A reporter gone, or too slow to answer: the failure as it was.)
  # The guard's watch ends here: its check after the test (on_exit) then
  # finds nothing, and the test failed anyway. (They were read from the
  # reporter's latest Reporter.kept() of all: other async tests reporting
  # more than that before the failure pushed the test's own out: review.)
  defp failure_reports(from, async?) do
    case from do
      {:guard, {watch, _test_pid}} ->
        Reporter.unwatch(watch)

      {:mark, mark} ->
        reports = reports(mark, self(), async?)
        {reports, length(reports)}
    end
  rescue
    _ -> {[], 0}
  catch
    :exit, _ -> {[], 0}
  end

  # The guard's failure for n problems of the test in test_pid, reports
  # the latest of them (the note says what is not shown): raised after
  # the test, or added to its own failure.
  defp reports_error(reports, n, test_pid) do
    said = reported(n) <> shown_note(n, length(reports))
    %ExUnit.AssertionError{message: said_with(said, reports, test_pid)}
  end

  @beam_alloc_errors ["memory leak detected in function", "memory misuse detected in function"]

  defp beam_alloc_error?(%RuntimeError{message: message}),
    do: String.starts_with?(message, @beam_alloc_errors)

  defp beam_alloc_error?({tag, message})
       when tag in [:memory_leak, :memory_misuse] and is_binary(message),
       do: true

  defp beam_alloc_error?(_reason), do: false

  # A misspelled tag or value would have guarded the test as if it were
  # not there, with no word about it (found in a bug hunt).
  defp check_tags!(context) do
    case Map.fetch(context, :beam_alloc_reports) do
      {:ok, value} when value != :allow ->
        raise ArgumentError,
              "@tag beam_alloc_reports: #{inspect(value)}: the tag takes one value, :allow"

      _ ->
        :ok
    end

    for key <- Map.keys(context),
        is_atom(key),
        key != :beam_alloc_reports,
        String.starts_with?(Atom.to_string(key), "beam_alloc") do
      raise ArgumentError,
            "unknown tag #{inspect(key)} for BeamAlloc.Case (its tag is :beam_alloc_reports)"
    end

    :ok
  end

  # The guard's reports are kept apart for it by the reporter (a watch),
  # not read from the latest Reporter.kept() of all at the end: other
  # async tests reporting more than that meanwhile (leak_check leaks they
  # allow, a check_all_allocation_failures of a leaking NIF) pushed the
  # test's own reports out, and it passed (found by a bug hunt).
  # (With the test's pid: its check runs in another process, on_exit, and
  # names the reports the test did not make, see said_with/3.)
  @doc false
  def start_guard(test_pid, async?) do
    {Reporter.watch(test_pid, not async?), test_pid}
  rescue
    RuntimeError ->
      reraise RuntimeError,
              "use BeamAlloc.Case reads BeamAlloc.Reporter, which is not running: start " <>
                "the :beam_alloc application (Application.ensure_all_started(:beam_alloc))",
              __STACKTRACE__
  end

  @doc false
  def check_guard!({watch, test_pid}) do
    # (Not those a fault injection check turned into its result: consumed.
    # Counted whether or not their lines are still kept: one made before
    # more than Reporter.kept() that a check consumed was pushed out of the
    # latest, and the test passed: review.)
    {reports, unconsumed} = Reporter.unwatch(watch)
    fail_with(reports, unconsumed, test_pid)
  end

  @doc """
  The reports since `mark` (from `BeamAlloc.Reporter.mark/0`) that belong
  to the test running in `test_pid`: made by it or by a process it started
  (`$callers`, `$ancestors` or, from OTP 25 on, the live chain of parents
  of the reporting process, read by the reporter before the reporting call
  returns); when `async?` is false,
  every report since the mark (the test runs alone). Not those a fault
  injection check turned into its result (`consumed`). The latest
  `BeamAlloc.Reporter.kept/0` (100) of them, oldest first: `check!/3`
  counts them all.

  Read from what the reporter keeps for this apart from its latest 100
  (`since/1`): the latest 10,000 reports of the node that no check
  consumed, whoever made them. A report of the test made before more
  than 10,000 such reports (any test's) is no longer there: `check!/3`
  fails then, this function leaves it out.
  """
  @spec reports(non_neg_integer, pid, boolean) :: [Reporter.report()]
  def reports(mark, test_pid, async?) do
    {reports, _n, _lost?} = unconsumed_since(mark, test_pid, async?)
    reports
  end

  @doc """
  Raises `ExUnit.AssertionError` if beam_alloc reported a problem since
  `mark` that belongs to the test (see `reports/3`): it counts every such
  report, however many other reports came meanwhile (other tests', or
  those a check consumed), and lists the latest 100 (with `async?`
  false, a report of a process that is neither `test_pid` nor one it
  started has that pid first, and a first line says so, as the guard's
  failure does); `:ok` otherwise.

  Bounded: from the node's first `BeamAlloc.Reporter.mark/0` on (a node
  that takes no marks keeps nothing for it), the reporter keeps the
  latest 10,000 reports of the node that no check consumed. When one made
  after `mark` was let go (more than 10,000 since, of any test), it fails
  too, saying so: it cannot tell whether that one was the test's; so it
  does for a mark the reporter did not give (one taken before the
  reporter restarted, whose reports went with it). (The guard itself, `use
  BeamAlloc.Case`, does not call it: the reporter keeps the test's own
  reports apart for it, however many others come.)
  """
  @spec check!(non_neg_integer, pid, boolean) :: :ok
  def check!(mark, test_pid, async?) do
    case unconsumed_since(mark, test_pid, async?) do
      {reports, n, false} -> fail_with(reports, n, test_pid)
      {reports, n, true} -> fail_lost(reports, n, test_pid)
    end
  end

  # (It read the reporter's latest 100 of all, since/1: a test's report
  # followed by more than 100 others, other tests' or reports a check
  # consumed, was pushed out, and check!/3 passed: review of 46761e7.)
  # (A bad argument raised FunctionClauseError from the reporter's
  # internal call, or nothing: say which argument.)
  defp unconsumed_since(mark, test_pid, async?)
       when is_integer(mark) and mark >= 0 and is_pid(test_pid) and is_boolean(async?),
       do: Reporter.unconsumed_since(mark, test_pid, not async?)

  defp unconsumed_since(mark, _test_pid, _async?) when not (is_integer(mark) and mark >= 0) do
    raise ArgumentError,
          "expected a mark from BeamAlloc.Reporter.mark/0 (a non-negative " <>
            "integer), got: #{inspect(mark)}"
  end

  defp unconsumed_since(_mark, test_pid, _async?) when not is_pid(test_pid),
    do: raise(ArgumentError, "expected the test's pid, got: #{inspect(test_pid)}")

  defp unconsumed_since(_mark, _test_pid, async?),
    do: raise(ArgumentError, "expected async? to be true or false, got: #{inspect(async?)}")

  defp fail_with(_reports, 0, _test_pid), do: :ok
  defp fail_with(reports, n, test_pid), do: raise(reports_error(reports, n, test_pid))

  defp shown_note(n, n), do: ""
  defp shown_note(_n, 0), do: " (their lines are no longer kept)"
  defp shown_note(_n, shown), do: " (the latest #{shown} shown)"

  # Some report made since the mark is no longer kept: it may have been
  # the test's, so the test fails (the safe side), with what is kept.
  # (It only raises: said, for dialyzer.)
  @spec fail_lost([Reporter.report()], non_neg_integer, pid) :: no_return
  defp fail_lost(_reports, 0, test_pid),
    do: fail("beam_alloc may have reported problems during the test: " <> lost(), [], test_pid)

  defp fail_lost(reports, n, test_pid) do
    fail(
      reported(n) <> shown_note(n, length(reports)) <> ", and may have reported more (#{lost()})",
      reports,
      test_pid
    )
  end

  defp lost do
    "reports made since the mark are no longer kept by BeamAlloc.Reporter, which keeps " <>
      "the latest #{Reporter.ledger()} that no check consumed, of any test: some may " <>
      "have been this test's"
  end

  defp reported(n),
    do: "beam_alloc reported #{n} #{if n == 1, do: "problem", else: "problems"} during the test"

  defp fail(said, reports, test_pid),
    do: raise(ExUnit.AssertionError, message: said_with(said, reports, test_pid))

  # Each report's line; one made by a process that is neither the test's
  # nor one it started (in a module that is not async, which counts them
  # all: a setup_all process's) begins with that pid, and a line first
  # says how many, whose, and what to do. A clean test showed another
  # process's double free, and nothing said so. (Worded and attributed
  # where Erlang's without_reports/1 does it.)
  defp said_with(said, [], _test_pid), do: said

  defp said_with(said, reports, test_pid) do
    {note, lines} = :beam_alloc_testing.attributed_lines(reports, test_pid, :elixir)
    said <> ":\n\n" <> Enum.map_join(note ++ lines, "\n", &("  " <> &1))
  end
end
