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
  the function (and a misuse's kind) but no source line; ExUnit shows
  that failure and drops the guard's (an `on_exit` failure of a test that
  failed already is not shown), so the reports' source lines are then in
  the log above the failures alone.
  `@moduletag :capture_log` (or `ExUnit.start(capture_log: true)`) puts
  the logged lines in the failure.

  Which reports count: those made by NIF calls of the test process or of
  processes it started (a `Task`'s `$callers`, a proc_lib process's
  `$ancestors`: `Task.async/1`, `Task.async_stream/3`, a GenServer started
  by the test; and, from OTP 25 on, the processes that spawned it while
  they live: `spawn/1`, `spawn_link/1`). A `BEAM_NIF` call that reported returns only once
  `BeamAlloc.Reporter` has read who made the call, so a Task that ends
  right after its call still counts (it waits a second at most, and not
  at all while 256 reports of its NIF library wait to be read: a flood of
  reports would otherwise slow every reporting call to one a second). The
  reporter keeps a test's own reports for its guard, however many other
  tests report meanwhile, and counts every one no check consumed (the
  message shows the latest 100 of them). In a test module that is not async, every report made
  while the test ran (the test runs alone; threads and resource
  destructors report without a process). A test that triggers
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

    quote do
      setup context do
        BeamAlloc.Case.setup_reports(context)
      end
    end
  end

  @doc false
  def setup_reports(context) do
    check_tags!(context)

    unless context[:beam_alloc_reports] == :allow do
      guard = start_guard(self(), Map.get(context, :async, false))
      ExUnit.Callbacks.on_exit({__MODULE__, make_ref()}, fn -> check_guard!(guard) end)
    end

    :ok
  end

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
  @doc false
  def start_guard(test_pid, async?) do
    Reporter.watch(test_pid, not async?)
  rescue
    RuntimeError ->
      reraise RuntimeError,
              "use BeamAlloc.Case reads BeamAlloc.Reporter, which is not running: start " <>
                "the :beam_alloc application (Application.ensure_all_started(:beam_alloc))",
              __STACKTRACE__
  end

  @doc false
  def check_guard!(guard) do
    # (Not those a fault injection check turned into its result: consumed.
    # Counted whether or not their lines are still kept: one made before
    # more than Reporter.kept() that a check consumed was pushed out of the
    # latest, and the test passed: review.)
    {reports, unconsumed} = Reporter.unwatch(guard)
    fail_with(reports, unconsumed, &shown_note/2)
  end

  @doc """
  The reports since `mark` (from `BeamAlloc.Reporter.mark/0`) that belong
  to the test running in `test_pid`: made by it or by a process it started
  (`$callers`, `$ancestors` or, from OTP 25 on, the live chain of parents
  of the reporting process, read by the reporter before the reporting call
  returns); when `async?` is false,
  every report since the mark (the test runs alone). Not those a fault
  injection check turned into its result (`consumed`).
  """
  @spec reports(non_neg_integer, pid, boolean) :: [Reporter.report()]
  def reports(mark, test_pid, async?), do: mark |> Reporter.since() |> of_test(test_pid, async?)

  # (Not those a fault injection check turned into its result, which the
  # test got as the check's error: consumed.)
  defp of_test(reports, test_pid, async?) do
    Enum.filter(reports, fn report ->
      not Map.get(report, :consumed, false) and
        (not async? or report.pid == test_pid or test_pid in report.callers)
    end)
  end

  @doc """
  Raises `ExUnit.AssertionError` listing the reports of `reports/3`, if
  any; `:ok` otherwise. (The guard itself does not call it: the reporter
  keeps the test's own reports apart for it, however many others come.)
  """
  @spec check!(non_neg_integer, pid, boolean) :: :ok
  def check!(mark, test_pid, async?) do
    kept = Reporter.since(mark)
    reports = of_test(kept, test_pid, async?)
    fail_with(reports, length(reports), fn _, _ -> dropped_note(dropped(mark, kept)) end)
  end

  # n problems in all, reports the latest of them; note says what is not
  # shown.
  defp fail_with(_reports, 0, _note), do: :ok

  defp fail_with(reports, n, note) do
    raise ExUnit.AssertionError,
      message:
        "beam_alloc reported #{n} #{if n == 1, do: "problem", else: "problems"} " <>
          "during the test#{note.(n, length(reports))}:\n\n" <>
          Enum.map_join(reports, "\n", &("  " <> &1.line))
  end

  defp shown_note(n, n), do: ""
  defp shown_note(_n, 0), do: " (their lines are no longer kept)"
  defp shown_note(_n, shown), do: " (the latest #{shown} shown)"

  # The reporter keeps the latest reports only: say so when some made
  # since the mark are gone (150 double frees read as "100 problems").
  defp dropped(mark, [%{seq: oldest} | _]) when oldest > mark + 1, do: oldest - mark - 1
  defp dropped(_mark, _kept), do: 0

  defp dropped_note(0), do: ""

  defp dropped_note(n) do
    " (and #{n} earlier reports, no longer kept by " <>
      "BeamAlloc.Reporter, which keeps the latest #{Reporter.kept()})"
  end
end
