defmodule BeamAlloc.CommonTestTest do
  # Common Test with {ct_hooks, [beam_alloc_cth]}: a report made while a
  # case runs fails that case, naming the source line, as without_reports/1
  # fails an EUnit test (an Erlang team's audit: a double free in a CT case
  # passed, its report only in the log's "Unexpected I/O"). The suite,
  # test/common_test/beam_alloc_cth_SUITE.erl, runs in this node (its NIFs
  # are BeamAlloc.Test.Misuse's); not async: CT runs one test run at a time
  # in a node, and the reporter is shared.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  @suite "test/common_test/beam_alloc_cth_SUITE.erl"
  @source "misuse_nif.c"

  # (A directory outside the project: CT writes its logs there, and the
  # suite's .beam.)
  setup do
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_ct")
    File.mkdir_p!(dir)
    %{dir: dir}
  end

  test "a case whose NIF misused memory fails with the report's line; a clean one passes",
       %{dir: dir} do
    # {Passed, Failed, {UserSkipped, AutoSkipped}}
    assert {5, 10, {0, 2}} =
             run_suite(dir, @suite,
               ct_hooks: [:beam_alloc_cth],
               event_handler: {:beam_alloc_ct_events, [:beam_alloc_ct_test]}
             )

    # (The parallel group's case twice, every other once.)
    {twice, once} = Map.pop(collect(), :at_once)
    results = Map.new(once, fn {c, [result]} -> {c, result} end)

    assert results[:clean] == :ok
    assert results[:check_consumed] == :ok
    assert results[:after_end_misuse] == :ok
    # A case whose init_per_testcase failed is skipped, its watch ended,
    # as is one whose init_per_testcase a timetrap killed (its process
    # held the watch, and the reporter kept it to the run's end): the
    # watch of the last case is the reporter's only one.
    assert {:auto_skipped, _} = results[:init_fails]
    assert {:auto_skipped, _} = results[:init_timetrap]
    assert results[:one_watch] == :ok

    assert {:failed, {:beam_alloc_reports, [line]}} = failed(results[:double_free])
    assert line =~ ~r/double free: .* called from double_free_plain \(\S*#{@source}:\d+\)/

    # The leak's lines, before the {memory_leak, ...} that names no line.
    assert {:failed, {:beam_alloc_reports, [named, leak, too]}} = failed(results[:leak])
    assert named =~ "memory leak detected"
    assert leak =~ ~r/<- leak_deep \(\S*#{@source}:\d+\)/
    assert too =~ "beam_alloc: the case failed too: "

    # init_per_suite's process: its pid on its line, and a note saying why.
    assert {:failed, {:beam_alloc_reports, [note, line]}} = failed(results[:suite_process])

    assert note =~
             ~r/^beam_alloc: 1 of the reports below was made by another process \(<[\d.]+>\)/

    assert note =~ "init_per_suite"
    assert line =~ ~r/^<[\d.]+>: beam_alloc: .*double_free_plain/

    # A process an earlier case started, which outlived it: the note
    # names that case among those it may be (it named init_per_suite's and
    # init_per_group's processes alone).
    assert results[:leaves_process] == :ok
    assert {:failed, {:beam_alloc_reports, [note, _]}} = failed(results[:after_leaves_process])
    assert note =~ "an earlier case"

    # end_per_testcase runs within the case.
    assert {:failed, {:beam_alloc_reports, [_]}} = failed(results[:end_misuse])

    # The same case twice at once in a parallel group: each read its own
    # watch (one took the other's place, and a case passed).
    assert [{:failed, {:beam_alloc_reports, _}}, {:failed, {:beam_alloc_reports, _}}] =
             Enum.map(twice, &failed/1)

    # The process owning the hook's watches killed: it was every later
    # case's owner, whose watch the reporter dropped at once, and they
    # passed with their double frees; and the case it ran in, its watch
    # dropped, passed too.
    assert {:failed, {:beam_alloc_reports, [lost]}} = failed(results[:keeper_killed])
    assert lost =~ ~r/^beam_alloc: this case's reports are unknown: .*exited while it ran/
    assert {:failed, {:beam_alloc_reports, [_]}} = failed(results[:after_keeper_killed])

    # A case a timetrap killed: its reports, and what else failed it.
    assert {:failed, {:beam_alloc_reports, lines}} = failed(results[:timetrap])
    assert Enum.any?(lines, &(&1 =~ "double_free_plain"))
    assert List.last(lines) =~ "timetrap_timeout"
  end

  # A failure the hook adds is shown once, by on_tc_fail, with the hook in
  # suite/0 as in the run's options, whatever the order the run lists the
  # hooks in. rebar3 ct showed it twice with the hook in suite/0, first
  # as "end_per_testcase FAILED": CT calls post_end_per_testcase hooks
  # last installed first, and a suite/0 hook is installed after the run's
  # (rebar3's console hook among them), so that hook saw the case's ok
  # turned into {fail, ...}. beam_alloc_ct_shell prints as rebar3's does.
  for {way, hooks} <- [
        suite0: [{:beam_alloc_ct_shell, [:beam_alloc_ct_test]}],
        options: [{:beam_alloc_ct_shell, [:beam_alloc_ct_test]}, :beam_alloc_cth]
      ] do
    test "a failure is shown once, the hook in #{way}", %{dir: dir} do
      suite = "test/common_test/beam_alloc_cth_suite0_SUITE.erl"
      assert {1, 2, {0, 0}} = run_suite(dir, suite, ct_hooks: unquote(hooks))
      # (The lines beam_alloc_ct_shell would have printed, in order.)
      shown = BeamAlloc.Test.Mailbox.take(:beam_alloc_ct_shell)
      assert [double_free] = Enum.filter(shown, &(&1 =~ "double free"))
      assert double_free =~ ~r/^double_free: FAILED: .*double_free_plain \(\S*#{@source}:\d+\)/
      assert [leak] = Enum.filter(shown, &(&1 =~ "leak_deep"))
      assert leak =~ ~r/^leak: FAILED: /
    end
  end

  # A hook CT calls before this one (a priority below its -1000) that
  # skips a case: CT gives this hook's pre_init_per_testcase the skip for
  # a config, which it passes on. The case failed instead,
  # "beam_alloc_cth:pre_init_per_testcase/4 CTH call failed"
  # (lists:keydelete/3 on the tuple); before the hook's priority, so did
  # a case skipped by any hook listed before it.
  test "a case a hook called before this one skips is skipped", %{dir: dir} do
    suite = "test/common_test/beam_alloc_cth_suite0_SUITE.erl"

    assert {1, 1, {1, 0}} =
             run_suite(dir, suite, ct_hooks: [{:beam_alloc_ct_skip, [:double_free, -2000]}])
  end

  # A run that ends without the hooks' terminate/1 (a case killed CT's
  # server) leaves no process of the hook's, and no watch: the process
  # that owns the cases' watches lived on, and with it the watch of the
  # case that was running, kept by the reporter for as long as the node
  # ran, every later report checked against it and kept in it. In a VM
  # of its own: CT leaves servers of its own after such a run.
  for {way, hooks} <- [suite0: "[]", options: "[:beam_alloc_cth]"] do
    test "a run that ends without terminate/1 leaves no keeper nor watch, the hook in #{way}",
         %{dir: dir} do
      suite = "test/common_test/beam_alloc_cth_aborted_SUITE.erl"
      File.cp!(suite, Path.join(dir, Path.basename(suite)))

      script = """
      run = spawn(fn ->
        :ct.run_test(suite: ~c"beam_alloc_cth_aborted_SUITE", dir: ~c"#{dir}",
          logdir: ~c"#{dir}", auto_compile: true, ct_hooks: #{unquote(hooks)})
      end)
      ref = Process.monitor(run)
      receive do {:DOWN, ^ref, _, _, _} -> :ok end
      Process.sleep(500)
      # (Any process in the hook's code: the keeper waits in keep/1, and a
      # check for keeper/0, which only spawns it, matched no process.)
      keepers = for p <- Process.list(),
        match?({:current_function, {:beam_alloc_cth, _, _}}, Process.info(p, :current_function)), do: p
      %{watches: watches} = :sys.get_state(:beam_alloc.reporter())
      IO.puts("RESULT " <> inspect({keepers, map_size(watches)}))
      """

      {out, 0} = BeamAlloc.Test.ChildVm.run(script, 60)
      assert [_, result] = String.split(out, "RESULT ")
      assert String.trim(result) == "{[], 0}"
    end
  end

  # The hook where the beam_alloc application cannot start (here: no
  # beam_alloc.app on the code path): each case fails saying so. init/2
  # returned {error, Reason}, which CT does not read as an error but takes
  # as the hook's state (ct_hooks:call_init/3: anything but {ok, ...} is
  # the state), so every case failed with "beam_alloc_cth:
  # pre_init_per_testcase/4 CTH call failed" (a function_clause on that
  # state), the reason in the CT log alone, and terminate/1 failed too. The
  # callbacks are called here as CT calls them, in a VM of their own.
  test "a case fails with the reason when the beam_alloc application cannot start",
       %{dir: dir} do
    beam = :code.which(:beam_alloc_cth)
    File.cp!(beam, Path.join(dir, Path.basename(beam)))

    script = ~S"""
    Show = fun(F) -> try F() of V -> {returned, V} catch C:R -> {C, R} end end,
    State = case beam_alloc_cth:init(beam_alloc_cth, []) of
                {ok, S} -> S;
                {ok, S, _} -> S;
                S -> S
            end,
    io:format("~0p~n~0p~n",
              [Show(fun() -> element(1, beam_alloc_cth:pre_init_per_testcase(s, c, [], State)) end),
               Show(fun() -> beam_alloc_cth:terminate(State) end)]),
    halt().
    """

    {out, 0} =
      System.cmd("erl", ["-noshell", "-pa", dir, "-eval", script], stderr_to_stdout: true)

    assert [case_result, terminated] = String.split(out, "\n", trim: true)
    assert case_result =~ ~r/^\{returned,\{fail,\{beam_alloc_not_started,\{beam_alloc,/
    assert terminated == "{returned,ok}"
  end

  # The cases' results as CT's events give them, once the run is over: a
  # list for each case.
  defp collect(acc \\ %{}) do
    receive do
      {:beam_alloc_ct_events, c, result} ->
        collect(Map.update(acc, c, [result], &(&1 ++ [result])))
    after
      0 -> acc
    end
  end

  # Runs the suite (its source copied into dir, where CT compiles it and
  # writes its logs) in this node, registered as :beam_alloc_ct_test for
  # the test's hooks and event handler to send to; CT's result.
  defp run_suite(dir, suite, options) do
    Code.ensure_loaded!(BeamAlloc.Test.Misuse)
    File.cp!(suite, Path.join(dir, Path.basename(suite)))
    Process.register(self(), :beam_alloc_ct_test)

    capture_log(fn ->
      ExUnit.CaptureIO.capture_io(fn ->
        run =
          :ct.run_test(
            [
              suite: String.to_charlist(Path.basename(suite, ".erl")),
              dir: String.to_charlist(dir),
              logdir: String.to_charlist(dir),
              auto_compile: true
            ] ++ options
          )

        send(self(), {:run, run})
      end)
    end)

    assert_received {:run, run}
    run
  end

  # CT writes a failure as {failed, {error, Reason}} or {failed, Reason}.
  defp failed({:failed, {:error, reason}}), do: {:failed, reason}
  defp failed(other), do: other
end
