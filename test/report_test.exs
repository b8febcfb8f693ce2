defmodule BeamAlloc.ReportTest do
  # Diagnostics inside the BEAM: the library's default hook sends each line
  # to BeamAlloc.Reporter, which logs it and keeps it for tests. Runs alone:
  # the reporter is shared.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias BeamAlloc.Reporter
  alias BeamAlloc.Test.Report

  setup do
    Code.ensure_loaded!(Report)
    Reporter.take()
    :ok
  end

  # Reports are messages: wait until the reporter has the expected count.
  defp reports(count, tries \\ 50) do
    got = Reporter.recent()

    if length(got) >= count or tries == 0 do
      Reporter.take()
    else
      Process.sleep(10)
      reports(count, tries - 1)
    end
  end

  test "Erlang code takes them with beam_alloc:take_reports/0" do
    capture_log(fn ->
      assert :ok = Report.double_free()
      # (The NIF call returns once the reporter has read the message.)
      assert [{Report, line}] = :beam_alloc.take_reports()
      assert line =~ "called from double_free (test/nifs/report_nif.c:"
      assert [] = :beam_alloc.take_reports()
    end)
  end

  test "beam_alloc:take_reports/0 waits for a reporter its supervisor restarts" do
    # (The supervisor held until the call waits: the reporter is absent
    # then, and the application running. It raised {not_started, ...}.)
    :sys.suspend(BeamAlloc.Supervisor)
    on_exit(fn -> :sys.resume(BeamAlloc.Supervisor) end)
    old = Process.whereis(Reporter)
    ref = Process.monitor(old)
    Process.exit(old, :kill)
    assert_receive {:DOWN, ^ref, _, _, _}
    task = Task.async(fn -> :beam_alloc.take_reports() end)
    Process.sleep(200)
    :sys.resume(BeamAlloc.Supervisor)
    assert [] = Task.await(task)
    assert Process.whereis(Reporter) not in [nil, old]
  end

  test "the Erlang reporter (the application built by rebar3) logs and keeps reports" do
    # Started beside the Elixir one, which the NIFs here send to: this
    # one is fed by hand, in the message's shape (src/nif/report.c).
    start_supervised!(%{id: :erlang_reporter, start: {:beam_alloc_reporter, :start_link, []}})

    log =
      capture_log(fn ->
        for n <- 1..3 do
          send(
            :beam_alloc_reporter,
            {:beam_alloc_report, Report, "report #{n}", self(), :undefined}
          )
        end

        assert [{Report, "report 1"}, {Report, "report 2"}, {Report, "report 3"}] =
                 :beam_alloc_reporter.recent()

        assert length(:beam_alloc_reporter.take()) == 3
        assert [] = :beam_alloc_reporter.take()

        # Anything else is ignored, and the reporter stays.
        send(:beam_alloc_reporter, {:beam_alloc_report, Report, 42, self(), :undefined})
        send(:beam_alloc_reporter, :other)
        assert [] = :beam_alloc_reporter.recent()

        # A call it does not know is answered; the kept reports stay.
        send(:beam_alloc_reporter, {:beam_alloc_report, Report, "kept", self(), :undefined})
        pid = Process.whereis(:beam_alloc_reporter)

        assert {:error, {:unknown_call, :junk}} = :gen_server.call(:beam_alloc_reporter, :junk)

        assert [{Report, "kept"}] = :beam_alloc_reporter.recent()
        assert Process.whereis(:beam_alloc_reporter) == pid
      end)

    assert log =~ "[warning] report 2"
  end

  # Library copies built from earlier versions send {:beam_alloc_report,
  # module, line, pid} and {:beam_alloc_report, module, line}: a node
  # running one beside a newer reporter (a hot upgrade) keeps their
  # reports, in either reporter. (The Erlang one dropped them, unsaid.)
  test "both reporters keep the reports of library copies of earlier versions" do
    start_supervised!(%{id: :erlang_reporter, start: {:beam_alloc_reporter, :start_link, []}})

    capture_log(fn ->
      for reporter <- [:beam_alloc_reporter, BeamAlloc.Reporter] do
        reporter.take()
        mark = :gen_server.call(reporter, :mark)
        send(reporter, {:beam_alloc_report, Report, "four", self()})
        send(reporter, {:beam_alloc_report, Report, "three"})
        send(reporter, {:beam_alloc_report, Report, "five", self(), :undefined})
        assert [{Report, "four"}, {Report, "three"}, {Report, "five"}] = reporter.recent()

        # The pid of the four-element one is its maker's: a check of this
        # process consumes it; the three-element one has none.
        windows = [{mark, mark + 3, ["four", "three"]}]
        :ok = :gen_server.call(reporter, {:consume, self(), [Report], windows})

        assert [{Report, "three"}, {Report, "five"}] =
                 :gen_server.call(reporter, :take_unconsumed)
      end
    end)
  end

  test "the Erlang reporter marks consumed what a check turned into its result" do
    start_supervised!(%{id: :erlang_reporter, start: {:beam_alloc_reporter, :start_link, []}})
    other = spawn(fn -> :ok end)

    capture_log(fn ->
      mark = :gen_server.call(:beam_alloc_reporter, :mark)

      for {module, pid, n} <- [{Report, self(), 1}, {Report, other, 2}, {Other, self(), 3}] do
        send(:beam_alloc_reporter, {:beam_alloc_report, module, "report #{n}", pid, :undefined})
      end

      send(:beam_alloc_reporter, {:beam_alloc_report, Report, "report 4", self(), :undefined})
      assert length(:beam_alloc_reporter.recent()) == 4
      # The check's window is reports 1 to 3: of those, only the first is
      # this process's, in a module the check attached. Report 4, in the
      # next window, is not a line the check listed (a leak beside the
      # misuse it listed, say): it still counts.
      windows = [{mark, mark + 3, ["report 1"]}, {mark + 3, mark + 4, ["report 1"]}]
      :ok = :gen_server.call(:beam_alloc_reporter, {:consume, self(), [Report], windows})

      # Still kept and taken by take/0; not by take_unconsumed, which
      # without_reports/1 reads.
      assert length(:beam_alloc_reporter.recent()) == 4

      assert [{Report, "report 2"}, {Other, "report 3"}, {Report, "report 4"}] =
               :gen_server.call(:beam_alloc_reporter, :take_unconsumed)

      assert [] = :beam_alloc_reporter.recent()
    end)
  end

  test "a check's listed line consumes its report, cut short or not; no other line does" do
    full =
      "beam_alloc: general purpose allocator: double free: 0x7f01 (length 24, alignment 1), " <>
        "called from parse (c_src/p.c:12) <- decode (c_src/p.c:40)"

    # The driver keeps 511 bytes of the line, then resolves its sites: a
    # site cut short stays as it came.
    cut = binary_part(full, 0, byte_size(full) - 20) <> "p.so+0x1c"
    window = {0, 1, [cut]}
    assert :beam_alloc_reporter.consumes(1, Report, full, [Report], [window])
    assert :beam_alloc_reporter.consumes(1, Report, full, [Report], [{0, 1, [full]}])
    refute :beam_alloc_reporter.consumes(2, Report, full, [Report], [window])
    refute :beam_alloc_reporter.consumes(1, Other, full, [Report], [window])

    refute :beam_alloc_reporter.consumes(
             1,
             Report,
             "beam_alloc: leak: 8 bytes (alignment 1) at 0x7f02",
             [Report],
             [window]
           )
  end

  test "a check's leak_check leak consumes the function's line and its blocks' lines, by address" do
    window = {0, 3, [:leak_check_header, {:leak_in, %{0x7F02 => true}}, {:leak_more, 6}]}
    header = "beam_alloc: memory leak detected in function `M.f/0`:"
    block = "beam_alloc: leak: 16 bytes (alignment 1) at 0x7f02, allocated from f (c_src/f.c:3)"
    assert :beam_alloc_reporter.consumes(1, Report, header, [Report], [window])
    assert :beam_alloc_reporter.consumes(2, Report, block, [Report], [window])
    refute :beam_alloc_reporter.consumes(4, Report, block, [Report], [window])
    # The line ending a report of more blocks than the instance lists: by
    # its count.
    more = "beam_alloc: leak: ... and 6 more live blocks"
    assert :beam_alloc_reporter.consumes(3, Report, more, [Report], [window])

    # Another block (an instance the NIF deinitialised), one whose address
    # only begins alike, and a misuse line naming the address: still count.
    for other <- [
          "beam_alloc: leak: block of size class 16 at 0x7f03 (enable BEAM_GPA_TRACK_SITES for its site)",
          "beam_alloc: leak: 16 bytes (alignment 1) at 0x7f021, allocated from f (c_src/f.c:3)",
          "beam_alloc: general purpose allocator: double free: 0x7f02 (length 16, alignment 1)",
          "beam_alloc: leak: 16 bytes (alignment 1) at 0x7f03, allocated from f (c_src/f.c:3) at 0x7f02, x",
          "beam_alloc: leak: ... and 7 more live blocks",
          "beam_alloc: leak: ... and 6 more live blocks, x"
        ] do
      refute :beam_alloc_reporter.consumes(2, Report, other, [Report], [window]), other
    end
  end

  test "a watch is answered without waiting for reports read before it, and leaves them out" do
    {:ok, state} = BeamAlloc.Reporter.init([])
    # Read, not yet kept (logged): made before the watch.
    state = %{state | unread: :queue.from_list([{Report, "made before", nil, []}])}
    ref = make_ref()

    {:reply, :ok, state} = BeamAlloc.Reporter.handle_call({:watch, ref, self(), true}, nil, state)
    # Answered at once: the report is still to be kept (it waited for it).
    assert :queue.len(state.unread) == 1

    log =
      ExUnit.CaptureLog.capture_log(fn ->
        send(self(), {:reply, BeamAlloc.Reporter.handle_call({:unwatch, ref}, nil, state)})
      end)

    assert_received {:reply, {:reply, {[], 0}, _}}
    assert log =~ "made before"
  end

  # A Logger handler as slow as a remote sink: 5 ms a line.
  defmodule SlowHandler do
    def log(_event, %{config: %{delay: ms}}), do: Process.sleep(ms)
  end

  test "under a flood and a slow log handler, calls answer at once with the reports sent before" do
    # 1,000 reports at 5 ms a line: 5 s of logging. Each call waited for
    # all of it (25,000 reports took minutes: BeamAlloc.Case's unwatch at
    # a test's end timed out at 5 s, never-hang recheck).
    # The calls get 3 s: well under those 5 s, with room for a loaded host.
    :ok = :logger.add_handler(:beam_alloc_slow, SlowHandler, %{config: %{delay: 5}})
    on_exit(fn -> :logger.remove_handler(:beam_alloc_slow) end)
    call = fn request -> GenServer.call(Reporter, request, 3_000) end
    flood = for n <- 1..1_000, do: "flood #{n}"

    log =
      capture_log(fn ->
        ref = Reporter.watch(self(), false)
        mark = Reporter.mark()

        for line <- flood,
            do: send(Reporter, {:beam_alloc_report, Report, line, self(), :undefined})

        # The latest 100 of them, in order, numbered in order: all were read.
        assert call.(:mark) == mark + 1_000
        since = call.({:since, mark})
        assert Enum.map(since, & &1.line) == Enum.drop(flood, 900)
        assert Enum.map(since, & &1.seq) == Enum.to_list((mark + 901)..(mark + 1_000))
        assert Enum.map(call.(:take), &elem(&1, 1)) == Enum.drop(flood, 900)

        # A report with a site: resolved in the answer, not yet logged.
        :ok = Report.double_free()
        {kept, seen} = call.({:unwatch, ref})
        assert seen == 1_001
        assert Enum.map(Enum.drop(kept, -1), & &1.line) == Enum.drop(flood, 901)
        assert List.last(kept).line =~ "called from double_free (test/nifs/report_nif.c:"

        # Every line is logged all the same, in order (fast again).
        :ok = :logger.remove_handler(:beam_alloc_slow)
        logged_all()
      end)

    logged = Regex.scan(~r/\[warning\] (flood \d+|.*double free.*)/, log, capture: :all_but_first)
    assert List.flatten(logged) |> Enum.take(1_000) == flood
    assert [last] = List.flatten(logged) |> Enum.drop(1_000)
    assert last =~ "called from double_free (test/nifs/report_nif.c:"
  end

  test "the Erlang reporter, under a flood and a slow log handler, answers at once too" do
    start_supervised!(%{id: :erlang_reporter, start: {:beam_alloc_reporter, :start_link, []}})
    :ok = :logger.add_handler(:beam_alloc_slow, SlowHandler, %{config: %{delay: 5}})
    on_exit(fn -> :logger.remove_handler(:beam_alloc_slow) end)
    call = fn request -> :gen_server.call(:beam_alloc_reporter, request, 3_000) end
    flood = for n <- 1..1_000, do: "flood #{n}"

    log =
      capture_log(fn ->
        # A line with a site, as the C side sends it.
        raw = raw_report(&Report.double_free/0)

        for line <- flood,
            do: send(:beam_alloc_reporter, {:beam_alloc_report, Report, line, self(), :undefined})

        assert call.(:mark) == 1_000
        assert Enum.map(call.(:recent), &elem(&1, 1)) == Enum.drop(flood, 900)
        send(:beam_alloc_reporter, {:beam_alloc_report, Report, raw, self(), :undefined})
        # Its site resolved in the answer, not yet logged.
        assert [_ | _] = taken = call.(:take)
        assert Enum.map(Enum.drop(taken, -1), &elem(&1, 1)) == Enum.drop(flood, 901)
        assert {Report, last} = List.last(taken)
        assert last =~ "called from double_free (test/nifs/report_nif.c:"

        :ok = :logger.remove_handler(:beam_alloc_slow)
        logged_all(:beam_alloc_reporter)
      end)

    logged = Regex.scan(~r/\[warning\] (flood \d+)/, log, capture: :all_but_first)
    assert List.flatten(logged) == flood

    assert log =~
             ~r/flood 1000\n.*\[warning\] .*called from double_free \(test\/nifs\/report_nif.c:/s
  end

  # The line of the report fun makes, as it came: read from the Elixir
  # reporter's mailbox, held meanwhile.
  defp raw_report(fun) do
    reporter = Process.whereis(Reporter)
    :sys.suspend(reporter)

    try do
      spawn(fun)
      raw_message(reporter, 100)
    after
      :sys.resume(reporter)
    end
  end

  defp raw_message(reporter, tries) do
    case Process.info(reporter, :messages) do
      {:messages, [{:beam_alloc_report, _, raw, _, _} | _]} ->
        raw

      _ when tries > 0 ->
        Process.sleep(10)
        raw_message(reporter, tries - 1)
    end
  end

  defp logged_all(reporter \\ Reporter, tries \\ 500) do
    unless :queue.is_empty(:sys.get_state(reporter).unlogged) or tries == 0 do
      Process.sleep(10)
      logged_all(reporter, tries - 1)
    end
  end

  # As SlowHandler, and sends each line it gets to the test (capture_log's
  # text lacked some of the last lines of a reporter stopped meanwhile).
  defmodule CollectHandler do
    def log(%{msg: msg}, %{config: %{delay: ms, to: pid}}) do
      Process.sleep(ms)
      send(pid, {:logged, text(msg)})
    end

    defp text({:string, s}), do: IO.chardata_to_string(s)

    defp text({format, args}) when is_list(args),
      do: IO.chardata_to_string(:io_lib.format(format, args))

    defp text(other), do: inspect(other)
  end

  # A reporter of its own (unnamed: the application's one keeps running),
  # fed count lines by hand and stopped at once: the lines it logged.
  defp stopped_after(start, count, delay) do
    config = %{config: %{delay: delay, to: self()}}
    :ok = :logger.add_handler(:beam_alloc_collect, CollectHandler, config)

    try do
      capture_log(fn ->
        {:ok, pid} = start.()

        for n <- 1..count,
            do: send(pid, {:beam_alloc_report, Report, "stop #{n}", self(), :undefined})

        :ok = :gen_server.stop(pid)
      end)
    after
      :logger.remove_handler(:beam_alloc_collect)
    end

    # (Not the Logger's own events: capture_log restarts its console.)
    Enum.filter(
      BeamAlloc.Test.Mailbox.take(:logged),
      &String.match?(&1, ~r/^(stop \d+|beam_alloc: )/)
    )
  end

  defp stop_lines(lines), do: Enum.filter(lines, &String.starts_with?(&1, "stop "))

  # A reporter start starts, stopped after 50 lines at 5 ms: a slice
  # logged 3, the rest waited behind the stop and was never logged.
  defp assert_logs_on_stop(start) do
    lines = stopped_after(start, 50, 5)
    assert stop_lines(lines) == for(n <- 1..50, do: "stop #{n}")
    refute Enum.any?(lines, &(&1 =~ "not logged"))

    # For a second at most: then it says how many it left.
    lines = stopped_after(start, 200, 10)
    logged = stop_lines(lines)
    assert logged == for(n <- 1..length(logged), do: "stop #{n}")
    assert length(logged) in 1..199

    assert List.last(lines) ==
             "beam_alloc: #{200 - length(logged)} more reports not logged: the reporter stopped"
  end

  test "a reporter stopped logs the lines it has read first" do
    assert_logs_on_stop(fn -> GenServer.start(Reporter, []) end)
  end

  test "the Erlang reporter stopped logs the lines it has read first too" do
    assert_logs_on_stop(fn -> :gen_server.start(:beam_alloc_reporter, [], []) end)
  end

  # A reporter of its own with a backlog of 50, fed 200 lines at once, a
  # handler of 5 ms a line: at most 50 wait to be logged, the oldest 150
  # counted in one line instead; every report numbered all the same.
  # (Under a flood the lines waiting grew without limit: 16 processes
  # making double frees for 30 s left 26,000 waiting, 13 MiB.)
  defp assert_backlog_bounded(start) do
    :ok =
      :logger.add_handler(:beam_alloc_collect, CollectHandler, %{config: %{delay: 5, to: self()}})

    try do
      capture_log(fn ->
        {:ok, pid} = start.()
        :sys.suspend(pid)

        for n <- 1..200,
            do: send(pid, {:beam_alloc_report, Report, "flood #{n}", self(), :undefined})

        :sys.resume(pid)
        state = :sys.get_state(pid)
        assert state.seq == 200
        assert :queue.len(state.unlogged) <= 51
        # (A call answers with the latest, the count at the queue's head.)
        assert Enum.map(:gen_server.call(pid, :recent), &elem(&1, 1)) ==
                 for(n <- 101..200, do: "flood #{n}")

        logged_all(pid)
        :ok = :gen_server.stop(pid)
      end)
    after
      :logger.remove_handler(:beam_alloc_collect)
    end

    lines =
      Enum.filter(
        BeamAlloc.Test.Mailbox.take(:logged),
        &String.match?(&1, ~r/^(flood \d+|beam_alloc: )/)
      )

    assert lines == [
             "beam_alloc: 150 reports not logged: more than 50 were waiting to be logged " <>
               "(a flood of reports); the latest are kept (recent/0)"
             | for(n <- 151..200, do: "flood #{n}")
           ]
  end

  test "at most a backlog of reports waits to be logged, the others counted" do
    assert_backlog_bounded(fn -> GenServer.start(Reporter, backlog: 50) end)
  end

  test "the Erlang reporter bounds its backlog too" do
    assert_backlog_bounded(fn -> :gen_server.start(:beam_alloc_reporter, [backlog: 50], []) end)
  end

  # A check consumes its misuse's report by its line, which the check
  # resolves: the reporter resolves its kept copies first. A report
  # dropped from the log (a flood: more than the backlog waiting) was no
  # longer resolved, its copies stayed as they came (lib.so+0x...), no
  # listed line matched, and the guard failed a test for a misuse its
  # check had turned into its result. A reporter of its own, a backlog of
  # 1: the misuse's report is dropped by the two after it.
  defp assert_dropped_consumed(start, watch?) do
    :beam_alloc_erl_test.take_reports()
    catch_error(:beam_alloc_erl_test.double_free())
    [raw] = Enum.filter(:beam_alloc_erl_test.take_reports(), &(&1 =~ "double free"))
    resolved = BeamAlloc.Symbolizer.resolve_sites(raw)
    assert resolved != raw

    capture_log(fn ->
      {:ok, pid} = start.()
      ref = make_ref()
      if watch?, do: :ok = :gen_server.call(pid, {:watch, ref, self(), false})
      :sys.suspend(pid)

      for line <- [raw, "other 1", "other 2"],
          do: send(pid, {:beam_alloc_report, Report, line, self(), :undefined})

      :sys.resume(pid)
      :ok = :gen_server.call(pid, {:consume, self(), [Report], [{0, 3, [resolved]}]})

      if watch? do
        # (An unwatch answers with the unconsumed reports and their count.)
        {unconsumed, 2} = :gen_server.call(pid, {:unwatch, ref})
        assert Enum.map(unconsumed, & &1.line) == ["other 1", "other 2"]
      end

      assert :gen_server.call(pid, :take_unconsumed) == [{Report, "other 1"}, {Report, "other 2"}]
      :ok = :gen_server.stop(pid)
    end)
  end

  # beam_alloc_testing:without_reports/1 says which of its reports other
  # processes made (tests beside it in EUnit's {inparallel, ...}): it
  # reads who made each from the unwatch's reply, as the reporter read it
  # (pid and callers), the same from both reporters. A watch of one
  # process (BeamAlloc.Case's async test) keeps the reports of those
  # working for it too: the Erlang reporter kept the process's own alone.
  defp assert_attributed(start) do
    me = self()
    child = spawn(fn -> receive(do: (:stop -> :ok)) end)
    # (Spawned by a process gone: working for no one alive.)
    {middle, ref} =
      spawn_monitor(fn -> send(me, {:other, spawn(fn -> receive(do: (:stop -> :ok)) end)}) end)

    assert_receive {:other, other}
    assert_receive {:DOWN, ^ref, _, _, _}

    capture_log(fn ->
      {:ok, pid} = start.()
      [mine, all] = [make_ref(), make_ref()]
      :ok = :gen_server.call(pid, {:watch, mine, me, false})
      :ok = :gen_server.call(pid, {:watch, all, me, true})

      for {line, from} <- [{"child", child}, {"other", other}, {"off", :undefined}],
          do: send(pid, {:beam_alloc_report, Report, line, from, :undefined})

      {[report], 1} = :gen_server.call(pid, {:unwatch, mine})
      assert %{line: "child", pid: ^child} = report
      assert me in report.callers

      {[c, o, off], 3} = :gen_server.call(pid, {:unwatch, all})
      assert {c.line, me in c.callers} == {"child", true}
      assert {o.line, o.pid, o.callers} == {"other", other, [middle]}
      assert {off.line, off.callers} == {"off", []}
      assert off.pid in [nil, :undefined]
      :ok = :gen_server.stop(pid)
    end)

    for p <- [child, other], do: send(p, :stop)
  end

  test "an unwatch says who made each report, and whom it worked for" do
    assert_attributed(fn -> GenServer.start(Reporter, []) end)
  end

  test "the Erlang reporter's unwatch says who made each report, and whom it worked for" do
    assert_attributed(fn -> :gen_server.start(:beam_alloc_reporter, [], []) end)
  end

  # A process killed inside without_reports/1 (a Common Test timetrap, an
  # EUnit or ExUnit timeout) never ends its watch: the reporter kept it for
  # good, copying every later report into it (up to 10,100 a watch; an
  # audit). The reporter monitors the watch's owner, and drops it with it.
  test "the watch of a process killed inside without_reports/1 is dropped" do
    test = self()

    watcher =
      spawn(fn ->
        :beam_alloc_testing.without_reports(fn ->
          send(test, :watching)
          Process.sleep(:infinity)
        end)
      end)

    assert_receive :watching
    assert_dropped_with(Process.whereis(Reporter), watcher)
  end

  test "the Erlang reporter drops the watch of a process killed too" do
    {:ok, reporter} = :gen_server.start(:beam_alloc_reporter, [], [])
    watcher = spawn(fn -> Process.sleep(:infinity) end)
    :ok = :gen_server.call(reporter, {:watch, make_ref(), watcher, true, watcher})
    assert_dropped_with(reporter, watcher)
    :ok = :gen_server.stop(reporter)
  end

  # (The watch of owner's reports: owner made it for itself.)
  defp assert_dropped_with(reporter, owner) do
    assert [_] = watches_of(reporter, owner)
    ref = Process.monitor(owner)
    Process.exit(owner, :kill)
    assert_receive {:DOWN, ^ref, _, _, _}
    # (The reporter's DOWN may come after this process's: a few reads.)
    assert Enum.any?(1..50, fn _ ->
             watches_of(reporter, owner) == [] or (Process.sleep(10) && false)
           end),
           "the reporter kept the watch of a process gone"
  end

  defp watches_of(reporter, pid) do
    for {_ref, %{pid: ^pid} = w} <- :sys.get_state(reporter).watches, do: w
  end

  test "a check consumes its misuse's report dropped from the log" do
    assert_dropped_consumed(fn -> GenServer.start(Reporter, backlog: 1) end, true)
  end

  test "the Erlang reporter consumes a check's report dropped from the log too" do
    assert_dropped_consumed(
      fn -> :gen_server.start(:beam_alloc_reporter, [backlog: 1], []) end,
      false
    )
  end

  # A reporting call returns once the reporter lets go of its report (the
  # acknowledgement's destructor). Read between two kept reports, it is
  # released by a minor collection; but a report that waited in the
  # mailbox (on the heap) through two collections (here forced, while the
  # reporter logs a line at 300 ms; spontaneous ones under a flood) was in
  # the old heap once read: a minor one left it, and the call waited its
  # whole second (the acknowledgement's bound). So the call's wait must end
  # by the read, not run out (counted, not timed: the machine is shared).
  test "a report that waited through collections is released once read" do
    :ok =
      :logger.add_handler(:beam_alloc_collect, CollectHandler, %{
        config: %{delay: 300, to: self()}
      })

    try do
      capture_log(fn ->
        reporter = Process.whereis(Reporter)
        send(reporter, {:beam_alloc_report, Report, "filler", self(), :undefined})
        Process.sleep(50)
        test = self()
        ran_out = Report.waits_ran_out()

        spawn(fn ->
          Report.double_free()
          send(test, :returned)
        end)

        Process.sleep(30)
        for _ <- 1..2, do: :erlang.garbage_collect(reporter, type: :minor)

        assert_receive :returned, 30_000
        assert Report.waits_ran_out() == ran_out, "the reporting call waited its whole second"
        logged_all()
      end)
    after
      :logger.remove_handler(:beam_alloc_collect)
    end
  end

  # A misuse in a loop while the reporter is behind (here suspended): a
  # call's reports past 10,000 unread are not sent, only counted, and the
  # call says how many at its end, so the reporter's mailbox cannot hoard
  # the node's memory (200,000 of them waited there: +386 MiB).
  test "a call's flood of reports while the reporter is behind waits bounded, the rest counted" do
    flood = 200_000

    capture_log(fn ->
      {line, waiting} =
        flood_then_dropped_line(10_001, fn ->
          task = Task.async(fn -> Report.double_frees(flood) end)
          assert :ok = Task.await(task, 60_000)
        end)

      # All but the line that says the drops: the reports sent.
      sent = waiting - 1
      assert line == "beam_alloc: #{flood - sent} reports dropped (the reporter was behind)"
      logged_all()
    end)
  end

  # Past the 10,000 reports and the 1,000 lines that say calls' drops, a
  # call's drops are left to no call: they are said once the reporter has
  # let go of what waited, though no report or call of the library comes
  # after (as a NIF thread's are).
  test "calls' drops past the lines calls send are said once the reporter catches up" do
    capture_log(fn ->
      reporter = Process.whereis(Reporter)

      try do
        bounded_flood(reporter, 11_001, fn ->
          assert :ok = Report.double_frees(10_000)
          for _ <- 1..1_050, do: assert(:ok = Report.double_free())
        end)
      after
        :sys.resume(reporter)
      end

      assert said?("beam_alloc: 50 reports dropped (the reporter was behind)", 100)
      logged_all()
    end)
  end

  # The drops of a call are said from its own process: a test's own
  # misuse dropped behind another process's flood still counts for that
  # test (BeamAlloc.Case's watch of it), not for no one.
  test "a call's report dropped behind another process's flood is said as that call's" do
    reporter = Process.whereis(Reporter)

    capture_log(fn ->
      ref = Reporter.watch(self(), false)
      :sys.suspend(reporter)

      try do
        flooder = Task.async(fn -> Report.double_frees(20_000) end)
        assert :ok = Task.await(flooder, 60_000)
        assert :ok = Report.double_free()
      after
        :sys.resume(reporter)
      end

      {mine, count} = Reporter.unwatch(ref)
      lines = Enum.map(mine, & &1.line)
      assert count == 1, inspect(lines)
      assert lines == ["beam_alloc: 1 reports dropped (the reporter was behind)"]
      logged_all()
    end)
  end

  # The same from a thread of the NIF's own, off any call: its reports
  # cannot carry a resource of the copy's own type (the VM may have freed
  # it), so they carry one of the symbolizer's library, which stays; past
  # 1,000 unread they are dropped and counted, and once the reporter has
  # let go of them all the symbolizer's library says how many.
  test "a NIF thread's flood of reports while the reporter is behind waits bounded, the rest counted" do
    flood = 200_000

    capture_log(fn ->
      {line, waiting} =
        flood_then_dropped_line(1_000, fn -> assert :ok = Report.thread_double_frees(flood) end)

      assert line == "beam_alloc: #{flood - waiting} reports dropped (the reporter was behind)"
      logged_all()
    end)
  end

  # The same with the Erlang reporter (rebar3's), the only one registered.
  test "a NIF thread's flood bounds what waits for the Erlang reporter too" do
    flood = 20_000
    elixir = Process.whereis(Reporter)
    start_supervised!(%{id: :erlang_reporter, start: {:beam_alloc_reporter, :start_link, []}})
    erlang = Process.whereis(:beam_alloc_reporter)

    capture_log(fn ->
      Process.unregister(Reporter)

      try do
        waiting =
          bounded_flood(erlang, 1_000, fn -> assert :ok = Report.thread_double_frees(flood) end)

        :sys.resume(erlang)

        assert dropped_line(50, &:beam_alloc_reporter.recent/0) ==
                 "beam_alloc: #{flood - waiting} reports dropped (the reporter was behind)"
      after
        :sys.resume(erlang)
        Process.register(elixir, Reporter)
      end
    end)
  end

  # A flood off a call that stops, and then nothing of the library: no
  # report, no call. The count is said all the same once the reporter has
  # read what waited (left to a next report or call, it stayed unsaid for
  # good).
  test "a NIF thread's drops are said once the reporter catches up, with nothing after" do
    capture_log(fn ->
      {line, waiting} =
        flood_then_dropped_line(1_000, fn -> assert :ok = Report.thread_double_frees(3_000) end)

      assert line == "beam_alloc: #{3_000 - waiting} reports dropped (the reporter was behind)"
      logged_all()
    end)
  end

  # The symbolizer's library not loaded when a NIF's thread first reports
  # (here purged; at boot, a NIF loaded before the beam_alloc application),
  # then loaded: the thread's next reports find it and carry its tokens.
  # (enif_monotonic_time is an error off the schedulers: the time of the
  # miss and of every later look was INT64_MIN, and the thread never
  # looked again: past 1,000 reports, all went to stderr for good.)
  @tag timeout: 120_000
  test "a NIF thread that reported before the symbolizer's library was loaded finds it later" do
    out =
      thread_flood_in_own_vm(~S"""
      :code.delete(:beam_alloc_symbolizer)
      :code.purge(:beam_alloc_symbolizer)
      false = File.read!("/proc/self/maps") =~ "beam_alloc_symbolize.so"
      :ok = BeamAlloc.Test.Report.thread_double_frees(1)
      {:module, _} = Code.ensure_loaded(:beam_alloc_symbolizer)
      Process.sleep(1_500)
      """)

    refute out =~ "is not loaded to count what waits", out
    assert out =~ ~r/DROPPED \["beam_alloc: \d+ reports dropped/, out
  end

  # A new version of beam_alloc_symbolizer over the same file, the old
  # purged, before any NIF's thread asked for its tokens: the type the
  # tokens are made of must be the new version's (taken over), not one the
  # purge freed while the library stayed mapped.
  @tag timeout: 120_000
  test "a NIF thread's flood after beam_alloc_symbolizer was reloaded over the same file" do
    out =
      thread_flood_in_own_vm(~S"""
      {:module, _} = :code.load_file(:beam_alloc_symbolizer)
      :code.purge(:beam_alloc_symbolizer)
      true = File.read!("/proc/self/maps") =~ "beam_alloc_symbolize.so"
      """)

    assert [_, waiting] = Regex.run(~r/WAITING (\d+)/, out), out
    assert String.to_integer(waiting) <= 1_016, out
    assert out =~ ~r/DROPPED \["beam_alloc: \d+ reports dropped/, out
  end

  # A VM of its own with the application started, setup run, then 3,000
  # reports from a NIF's thread with the reporter suspended: its output,
  # with how many waited and the dropped lines the reporter kept.
  defp thread_flood_in_own_vm(setup) do
    {out, 0} =
      BeamAlloc.Test.NifModule.in_own_vm(
        "{:ok, _} = Application.ensure_all_started(:beam_alloc)\n" <>
          setup <>
          ~S"""
          reporter = Process.whereis(BeamAlloc.Reporter)
          :sys.suspend(reporter)
          :ok = BeamAlloc.Test.Report.thread_double_frees(3_000)
          {:message_queue_len, waiting} = Process.info(reporter, :message_queue_len)
          :sys.resume(reporter)
          Process.sleep(2_000)
          lines = for {_, line} <- BeamAlloc.Reporter.recent(), line =~ "reports dropped", do: line
          IO.puts("WAITING #{waiting} DROPPED #{inspect(lines)}")
          """
      )

    out
  end

  # bounded_flood, then the reporter resumed: the line that says the
  # drops (nothing of the library after the flood), and the messages that
  # waited.
  defp flood_then_dropped_line(max, flood) do
    reporter = Process.whereis(Reporter)

    try do
      waiting = bounded_flood(reporter, max, flood)
      :sys.resume(reporter)
      {dropped_line(50), waiting}
    after
      :sys.resume(reporter)
    end
  end

  # Runs flood with reporter suspended (the caller resumes it) and checks
  # what it left: at most max (and a few) messages waiting, the node grown
  # by less than 32 MiB; the messages waiting.
  defp bounded_flood(reporter, max, flood) do
    :erlang.garbage_collect()
    before = :erlang.memory(:total)
    :sys.suspend(reporter)
    flood.()
    {:message_queue_len, waiting} = Process.info(reporter, :message_queue_len)
    grew = :erlang.memory(:total) - before
    assert waiting <= max + 16, "#{waiting} reports wait"
    assert grew < 32 * 1024 * 1024, "the node grew by #{grew} bytes"
    waiting
  end

  # Whether the reporter kept line, waited for up to tries times 100 ms.
  defp said?(line, tries) do
    cond do
      Enum.any?(Reporter.recent(), &match?({_, ^line}, &1)) ->
        true

      tries > 0 ->
        Process.sleep(100)
        said?(line, tries - 1)

      true ->
        false
    end
  end

  # The latest line of recent (a reporter's recent/0) that says reports
  # were dropped, waited for up to tries times 100 ms.
  defp dropped_line(tries, recent \\ &Reporter.recent/0) do
    case for({_, line} <- recent.(), line =~ "reports dropped", do: line) do
      [line | _] ->
        line

      [] when tries > 0 ->
        Process.sleep(100)
        dropped_line(tries - 1, recent)

      [] ->
        flunk("no line says the reports dropped")
    end
  end

  # The ledger check!/3 reads keeps every report no check consumed, up to
  # its bound (here 2): past it the oldest goes, and an answer for a mark
  # before that one says so; a report a check consumes leaves it; a take
  # of the latest leaves it as it is.
  test "the reporter's ledger lets go of its oldest unconsumed report past its bound, and says so" do
    capture_log(fn ->
      {:ok, pid} = GenServer.start(Reporter, ledger: 2)
      me = self()
      assert 0 = GenServer.call(pid, :mark)

      for line <- ["a", "b", "c"],
          do: send(pid, {:beam_alloc_report, Report, line, me, :undefined})

      assert [_, _, _] = GenServer.call(pid, :take)

      assert {[%{line: "b"}, %{line: "c"}], 2, true} =
               GenServer.call(pid, {:unconsumed_since, 0, me, false})

      assert {[%{line: "c"}], 1, false} = GenServer.call(pid, {:unconsumed_since, 2, me, false})

      assert {[], 0, false} =
               GenServer.call(pid, {:unconsumed_since, 1, spawn(fn -> :ok end), false})

      assert {[_], 1, false} = GenServer.call(pid, {:unconsumed_since, 2, self(), true})

      :ok = GenServer.call(pid, {:consume, me, [Report], [{2, 3, ["c"]}]})
      assert {[%{line: "b"}], 1, false} = GenServer.call(pid, {:unconsumed_since, 1, me, false})
      :ok = GenServer.stop(pid)
    end)
  end

  # The ledger fills up in any suite that reports (reports a test allows,
  # other tests', are never consumed) and stays full. On the reporter's
  # heap, 10,000 reports were 318,000 words, and the full collection it
  # makes after each batch of reports read (to release the reporting
  # calls, handle_continue) copied them all: 3 to 11 ms a batch, where an
  # empty ledger's took 0.04 ms, so every reporting call waited that long
  # and a flood was read at a fraction of the pace (review of 05c5d7c).
  # The ledger is kept off the heap.
  test "a full ledger leaves the reporter's heap small" do
    capture_log(fn ->
      {:ok, pid} = GenServer.start(Reporter, ledger: 5_000)
      assert 0 = GenServer.call(pid, :mark)

      for n <- 1..5_000,
          do: send(pid, {:beam_alloc_report, Report, "report #{n}", self(), :undefined})

      assert {_, 5_000, false} = GenServer.call(pid, {:unconsumed_since, 0, self(), false})
      logged_all(pid)
      :erlang.garbage_collect(pid)
      {:total_heap_size, words} = Process.info(pid, :total_heap_size)
      assert words < 30_000, "the reporter's heap: #{words} words"
      :ok = GenServer.stop(pid)
    end)
  end

  # The ledger starts at the first mark: a node where no test takes marks
  # (production) keeps no report there, and a check of a mark before the
  # start fails (it cannot tell what came before).
  test "the reporter's ledger keeps nothing before the first mark" do
    capture_log(fn ->
      {:ok, pid} = GenServer.start(Reporter, [])
      me = self()

      for line <- ["a", "b"],
          do: send(pid, {:beam_alloc_report, Report, line, me, :undefined})

      assert [_, _] = GenServer.call(pid, :take)
      assert :sys.get_state(pid).ledger == nil
      assert {[], 0, true} = GenServer.call(pid, {:unconsumed_since, 0, me, false})
      assert 2 = GenServer.call(pid, :mark)
      send(pid, {:beam_alloc_report, Report, "c", me, :undefined})
      assert {[%{line: "c"}], 1, false} = GenServer.call(pid, {:unconsumed_since, 2, me, false})
      assert {[%{line: "c"}], 1, true} = GenServer.call(pid, {:unconsumed_since, 1, me, false})
      :ok = GenServer.stop(pid)
    end)
  end

  # A reporter of the version before the ledger (its state has no ledger,
  # kept across a code reload): no mark started it, so a check of a mark
  # before the reload cannot tell and fails, even for the reports the old
  # version still keeps. (They were taken over as the ledger, started:
  # see the next test for why not.)
  test "a reporter of the version before the ledger fails a check of a mark before the reload" do
    old = %{seq: 5, module: Report, line: "kept 5", pid: self(), callers: [], consumed: true}
    kept = [old, %{old | seq: 6, line: "kept 6", consumed: false}]
    state = %{queue: :queue.from_list(kept), seq: 6, known: %{}, unread: []}

    assert {:reply, {[], 0, true}, state} =
             Reporter.handle_call({:unconsumed_since, 0, self(), false}, nil, state)

    assert {:reply, {[], 0, true}, _} =
             Reporter.handle_call({:unconsumed_since, 4, self(), false}, nil, state)
  end

  # A reporter of main's version 1 (3e7f6b9: no ledger), kept across a
  # code reload in a node that never took a mark (production: a hot
  # upgrade): the ledger starts at the first mark, so its reports go
  # into none. The takeover started it all the same, and the node kept
  # up to 10,000 report lines for good (review of 5e90e3f).
  test "a reporter of version 1 taken over keeps no ledger until a mark" do
    {:ok, v1} = Reporter.init([])
    v1 = v1 |> Map.drop([:ledger, :ledger_seqs, :ledger_lost, :ledger_from, :ledger_max])
    v1 = %{v1 | version: 1}
    message = {:beam_alloc_report, Report, "after the reload", self(), :undefined}

    capture_log(fn ->
      {:noreply, state, _} = Reporter.handle_info(message, v1)
      {:reply, _, state} = Reporter.handle_call(:recent, nil, state)
      assert state.seq == 1
      assert state.ledger == nil
      # (A check of a mark before the reload cannot tell: it fails.)
      assert {:reply, {[], 0, true}, state} =
               Reporter.handle_call({:unconsumed_since, 0, self(), false}, nil, state)

      # The first mark starts it.
      assert {:reply, 1, state} = Reporter.handle_call(:mark, nil, state)
      {:noreply, state, _} = Reporter.handle_info(message, state)

      assert {:reply, {[%{seq: 2}], 1, false}, _} =
               Reporter.handle_call({:unconsumed_since, 1, self(), false}, nil, state)
    end)
  end

  # A reporter of version 2 (05c5d7c..5e90e3f: the ledger a map on the
  # heap), kept across a code reload: its ledger goes into the table.
  test "a reporter of version 2 takes its ledger over into the table" do
    {:ok, v3} = Reporter.init([])
    report = %{seq: 3, module: Report, line: "kept 3", pid: self(), callers: [], consumed: false}

    v2 =
      Map.merge(v3, %{
        version: 2,
        seq: 3,
        ledger: %{3 => report},
        ledger_seqs: :queue.from_list([3]),
        ledger_lost: 2,
        ledger_from: 2
      })

    assert {:reply, {[%{line: "kept 3"}], 1, false}, state} =
             Reporter.handle_call({:unconsumed_since, 2, self(), false}, nil, v2)

    assert {:reply, {[_], 1, true}, _} =
             Reporter.handle_call({:unconsumed_since, 1, self(), false}, nil, state)

    refute Map.has_key?(state, :ledger_seqs)
  end

  # A mark the reporter never gave (one of a reporter that restarted
  # since, whose numbers began again at 0): check!/3 read no report after
  # it and passed, though the test's report went to the reporter that
  # died. A mark past the reporter's count reads as let go.
  test "a mark past what the reporter has counted reads as let go" do
    capture_log(fn ->
      {:ok, pid} = GenServer.start(Reporter, [])
      me = self()
      assert 0 = GenServer.call(pid, :mark)
      send(pid, {:beam_alloc_report, Report, "a", me, :undefined})
      assert {[%{line: "a"}], 1, false} = GenServer.call(pid, {:unconsumed_since, 0, me, false})
      assert {[], 0, false} = GenServer.call(pid, {:unconsumed_since, 1, me, false})
      assert {[], 0, true} = GenServer.call(pid, {:unconsumed_since, 500, me, false})
      :ok = GenServer.stop(pid)
    end)
  end

  test "take_unconsumed takes a report kept by the reporter's version before" do
    # Kept before a code reload: no consumed key (the reporter keeps its
    # state across the reload).
    old = %{seq: 1, module: Report, line: "kept before", pid: nil, callers: []}
    state = %{queue: :queue.from_list([old]), seq: 1, known: %{}, unread: []}

    assert {:reply, [{Report, "kept before"}], _} =
             BeamAlloc.Reporter.handle_call(:take_unconsumed, nil, state)
  end

  # A reporter of the version before 46761e7, kept across a code reload:
  # its state has unlogged lines (so it passed for current), and its
  # watches have no out or lost. A report pushing one of a watch's 100
  # out raised KeyError (watch.lost), and so did logging a line whose
  # sites a call resolved (w.out): the reporter went down with what it
  # kept, and the test its watch guarded lost its reports.
  test "a reporter of the version before watches kept apart reports takes its watches over" do
    ref = make_ref()

    kept =
      for n <- 1..100,
          do: %{
            seq: n,
            module: Report,
            line: "kept #{n}",
            pid: self(),
            callers: [],
            consumed: false
          }

    watch = %{pid: self(), all?: false, kept: :queue.from_list(kept), seen: 100, after_seq: 0}

    state = %{
      backlog: 10_000,
      queue: :queue.from_list(kept),
      seq: 100,
      known: %{},
      unread: :queue.new(),
      watches: %{ref => watch},
      unlogged: :queue.from_list([{100, Report, "kept 100"}]),
      resolved: %{100 => "kept 100, resolved"},
      scheduled: false
    }

    capture_log(fn ->
      report = {:beam_alloc_report, Report, "new", self(), :undefined}
      assert {:noreply, state, {:continue, :release}} = Reporter.handle_info(report, state)
      assert {:noreply, state} = Reporter.handle_continue(:release, state)
      assert {:reply, {shown, 101}, _} = Reporter.handle_call({:unwatch, ref}, nil, state)
      assert length(shown) == 100
      assert Enum.at(shown, 98).line == "kept 100, resolved"
      assert List.last(shown).line == "new"
    end)
  end

  test "the Erlang reporter takes over the state of its version before, a queue of reports" do
    old = :queue.from_list([{Report, "a"}, {Report, "b"}])
    assert {:ok, state} = :beam_alloc_reporter.code_change(:old, old, [])

    assert {:reply, [{Report, "a"}, {Report, "b"}], _} =
             :beam_alloc_reporter.handle_call(:recent, nil, state)

    assert {:reply, 0, _} = :beam_alloc_reporter.handle_call(:mark, nil, state)
  end

  test "the Elixir reporter answers a call it does not know and keeps its reports" do
    mark = BeamAlloc.Reporter.mark()
    kept = BeamAlloc.Reporter.recent()
    pid = Process.whereis(BeamAlloc.Reporter)
    assert {:error, {:unknown_call, :junk}} = GenServer.call(BeamAlloc.Reporter, :junk)
    assert Process.whereis(BeamAlloc.Reporter) == pid
    assert BeamAlloc.Reporter.mark() == mark
    assert BeamAlloc.Reporter.recent() == kept
  end

  # (A watch's owner is monitored: one that is no process, monitored,
  # raised, and the reporter went down with what it kept.)
  test "the Elixir reporter answers a watch whose owner is no process and keeps its reports" do
    mark = BeamAlloc.Reporter.mark()
    pid = Process.whereis(BeamAlloc.Reporter)
    call = {:watch, make_ref(), self(), true, "owner"}
    assert {:error, {:unknown_call, ^call}} = GenServer.call(BeamAlloc.Reporter, call)
    assert Process.whereis(BeamAlloc.Reporter) == pid
    assert BeamAlloc.Reporter.mark() == mark
  end

  test "the Elixir reporter's functions say what to start when it is not running" do
    # (Not async: no other test reports while the name is away.)
    pid = Process.whereis(BeamAlloc.Reporter)
    Process.unregister(BeamAlloc.Reporter)

    try do
      for call <- [
            &BeamAlloc.Reporter.recent/0,
            &BeamAlloc.Reporter.take/0,
            &BeamAlloc.Reporter.mark/0,
            fn -> BeamAlloc.Reporter.since(0) end,
            fn -> BeamAlloc.Case.reports(0, self(), false) end
          ] do
        assert_raise RuntimeError,
                     "BeamAlloc.Reporter is not running: start the :beam_alloc application " <>
                       "(Application.ensure_all_started(:beam_alloc))",
                     call
      end
    after
      Process.register(pid, BeamAlloc.Reporter)
    end
  end

  test "the Elixir reporter ignores messages not shaped as reports and keeps its reports" do
    mark = BeamAlloc.Reporter.mark()
    kept = BeamAlloc.Reporter.recent()
    pid = Process.whereis(BeamAlloc.Reporter)

    # (A line that is not a binary crashed it in the symbolizer.)
    for junk <- [
          {:beam_alloc_report, Report, 42, self(), :undefined},
          {:beam_alloc_report, Report, ~c"charlist", self()},
          {:beam_alloc_report, "not a module", "line"},
          :other
        ],
        do: send(BeamAlloc.Reporter, junk)

    assert BeamAlloc.Reporter.mark() == mark
    assert BeamAlloc.Reporter.recent() == kept
    assert Process.whereis(BeamAlloc.Reporter) == pid

    # A report whose pid is of another node is kept, its pid another
    # process's, as the Erlang reporter keeps it (it was nil here, as from
    # a thread), with no callers: its process info is not read (that
    # raised).
    name = "other@nowhere"

    remote =
      :erlang.binary_to_term(
        <<131, 88, 118, byte_size(name)::16, name::binary, 1::32, 0::32, 1::32>>
      )

    assert node(remote) == :other@nowhere

    capture_log(fn ->
      send(BeamAlloc.Reporter, {:beam_alloc_report, Report, "from afar", remote, :undefined})
      assert [%{line: "from afar", pid: ^remote, callers: []}] = BeamAlloc.Reporter.since(mark)
    end)

    assert Process.whereis(BeamAlloc.Reporter) == pid
  end

  test "a double free is logged as a warning naming the module" do
    log =
      capture_log(fn ->
        assert :ok = Report.double_free()
        assert [{Report, line}] = reports(1)
        assert line =~ "double free"
        assert line =~ "called from double_free (test/nifs/report_nif.c:"
      end)

    assert log =~ "[warning]"
    assert log =~ "double free"
  end

  test "a call that reported and then yields (enif_schedule_nif) returns its continuation's value" do
    # It hung the scheduler: the wait for the reporter scheduled itself
    # over the body's continuation, then ran again for ever.
    capture_log(fn ->
      task = Task.async(fn -> Report.double_free_then_yield() end)
      assert {:ok, :continued} = Task.yield(task, 5_000) || Task.shutdown(task)
      assert [{Report, line}] = reports(1)
      assert line =~ "double free"
      assert :ok = Report.double_free()
      assert [{Report, _}] = reports(1)
    end)
  end

  test "a leak_check call that yielded raises, and leaves the process's next yielding call its own" do
    # ERTS puts a call's saved state back when a continuation raises, not
    # when the call that scheduled it does: raising from the call itself
    # left it to the process's next yielding NIF, which then raised as
    # this call. Without a reporter nothing else schedules over the body.
    reporter = Process.whereis(Reporter)
    Process.unregister(Reporter)

    try do
      task =
        Task.async(fn ->
          assert_raise RuntimeError,
                       "memory leak detected in function " <>
                         "`BeamAlloc.Test.Report.leaky_then_yield/0`",
                       fn -> Report.leaky_then_yield() end

          try do
            Report.yield_raise(:some_arg)
          rescue
            e in ErlangError -> {e.original, __STACKTRACE__}
          end
        end)

      assert {:raised_later, [{Report, :yield_raise, [:some_arg], _} | _]} = Task.await(task)
    after
      Process.register(reporter, Reporter)
    end
  end

  test "a write past the end of a block fails a leak_check call and is reported" do
    capture_log(fn ->
      assert_raise RuntimeError,
                   "memory misuse detected in function `BeamAlloc.Test.Report.overrun/0`: " <>
                     "write past the end of a block",
                   fn -> Report.overrun() end

      assert [{Report, line}] = reports(1)
      assert line =~ "write past the end of a block"
      assert line =~ "the block was allocated from overrun (test/nifs/report_nif.c:"
    end)
  end

  test "a leak raises with the exact message and the details reach the logger" do
    log =
      capture_log(fn ->
        assert_raise RuntimeError,
                     "memory leak detected in function `BeamAlloc.Test.Report.leaky/0`",
                     fn -> Report.leaky() end

        assert [{Report, header}, {Report, detail}] = reports(2)
        assert header =~ "memory leak detected in function `BeamAlloc.Test.Report.leaky/0`:"
        assert detail =~ "leak: 40 bytes (alignment 1)"
        assert detail =~ "allocated from leaky (test/nifs/report_nif.c:"
      end)

    assert log =~ "leak: 40 bytes"
  end
end
