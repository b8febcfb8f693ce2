defmodule BeamAlloc.Reporter do
  @moduledoc """
  Where beam_alloc's diagnostics go inside a running node.

  Every NIF library built with beam_alloc sends each report line (a leak
  found by `leak_check`, a double free, a write past the end of a block, a
  free of a pointer the allocator does not own, ...) to this process, which
  writes its code sites as source lines (`BeamAlloc.Symbolizer`: function
  and `file.c:line` when the library has debug information), logs it as a
  warning through `Logger` with the metadata `beam_alloc: module`, and keeps
  the latest #{100} for inspection:

      iex> BeamAlloc.Reporter.recent()
      [{LeakCheckTest, "beam_alloc: memory leak detected in function `LeakCheckTest.check_me/0`:"},
       {LeakCheckTest, "beam_alloc: leak: 8 bytes (alignment 1) at 0x..., allocated from check_me (c_src/leak_check_nif.c:17) <- ..."}]

  Tests read them three ways: `take/0` (what came since the last take),
  `since/1` with a `mark/0` taken before (what came between), or
  `BeamAlloc.Case`, which fails any test during which a report was made
  (its guard, or `BeamAlloc.Case.check!/3` with a mark).

  `recent/0`, `take/0` and `since/1` are bounded: they read the latest
  #{100} reports of the whole node, whoever made them, and a report
  followed by more than #{100} others (another test's, or reports a
  check consumed) is no longer among them, without a word (`since/1`'s
  numbers show the gap). `BeamAlloc.Case` counts every report of the test
  however many others come (`check!/3`: up to #{10_000} unconsumed
  reports of the node since its mark; past that it fails, as it cannot
  tell whose the ones let go were).

  A report that `BeamAlloc.Testing.check_all_allocation_failures/2` turned
  into its result (a misuse in one of its runs, or a `leak_check` NIF's
  leak it listed: the line naming the function and each listed block's,
  which the check raises as problems of its
  `BeamAlloc.AllocationFailureError`) is marked `consumed`:
  `BeamAlloc.Case` does not fail the test for it again. It is kept and
  logged all the same.

  Its calls answer with the reports sent before them (of those kept)
  without waiting for them to be logged: the lines are logged in order, in
  the background (a call but `mark/0` first logs what is waiting for
  100 ms at most, so a test's `capture_log` gets its lines). Stopped, it
  logs what it read and had not logged yet (for a second at most, then
  says how many it left).

  Under a flood of reports (a misuse in a loop), at most #{10_000} wait
  to be logged: past that the oldest waiting are not logged, and a line
  says how many (`beam_alloc: N reports not logged: ...`). They are
  numbered and kept all the same (`since/1`, `recent/0`), their sites as
  they came (`lib.so+0x1c1b`).

  It is started by the `:beam_alloc` application. When it is not running
  (an Erlang node that did not start the application), reports go to the
  node's standard error, with sites as `lib.so+0x1c1b` (`addr2line -e
  lib.so 0x1c1b` gives the line). A NIF that installs its own hook with
  `beam_set_report_hook` gets the lines itself, in that form. Its
  functions then raise `RuntimeError` saying so.
  """
  use GenServer

  require Logger

  @keep 100

  # Every report no check consumed is also kept apart from the latest
  # @keep of all (queue, which any report pushes along and take/0
  # empties), the latest @ledger of them (the ledger), for
  # BeamAlloc.Case.check!/3: read from since/1, a test's report followed
  # by more than @keep others (other tests', or reports a check consumed)
  # was pushed out, and check!/3 passed (a silent pass, found in review of
  # 46761e7). Past @ledger the oldest goes, and its number is remembered
  # (ledger_lost): a check!/3 of an older mark fails, as it cannot tell
  # whose it was. Up to about 5 MB of lines. The ledger starts at the
  # first mark/0 (ledger_from): a node where no test takes marks, in
  # production, keeps nothing there; a mark before that start reads as
  # let go. (The option ledger: n is the tests'.) It is an ETS table
  # (ordered by seq), not on the heap: a suite's ledger fills up (reports
  # a test allows are never consumed) and stays full, and the full
  # collection after each batch of reports read (handle_continue) copied
  # all of it, 3 to 11 ms a batch for 10,000, which every reporting call
  # waited (review of 05c5d7c).
  @ledger 10_000

  # At most @unread reports read and not yet kept: past it the oldest are
  # kept at once (see bounded_unread/1).
  @unread 1_000

  @typedoc """
  A kept report: its sequence number, the module whose NIF library made it,
  the line, the process whose NIF call made it (`nil` from threads and
  destructors), the processes it works for (its `$callers` and the pids
  of its `$ancestors`, read before that call returned), and whether a
  fault injection check turned it into its result (`consumed`).
  """
  @type report :: %{
          seq: non_neg_integer,
          module: module,
          line: String.t(),
          pid: pid | nil,
          callers: [pid],
          consumed: boolean
        }

  @doc false
  def start_link(opts \\ []) do
    GenServer.start_link(__MODULE__, opts, name: __MODULE__)
  end

  @doc """
  The latest reports, oldest first, as `{module, line}` where `module` is
  the module whose NIF library reported: at most `kept/0` (100), of the
  whole node, whoever made them.
  """
  @spec recent() :: [{module(), String.t()}]
  def recent do
    call(:recent)
  end

  @doc """
  The latest reports (as `recent/0`), forgetting them: a test can take
  what came before it, run, and take what its code reported. Bounded as
  `recent/0` is: of more than `kept/0` (100) reports since the last take
  (anyone's), the oldest are gone, without a word; another test's take
  takes the test's too. To fail a test for every report of its own, use
  `BeamAlloc.Case`.
  """
  @spec take() :: [{module(), String.t()}]
  def take do
    call(:take)
  end

  @doc """
  How many reports it keeps: the latest, older ones dropped.
  """
  @spec kept() :: pos_integer
  def kept, do: @keep

  @doc """
  A mark for `since/1`: the number of reports received so far.
  """
  @spec mark() :: non_neg_integer
  def mark do
    call(:mark)
  end

  @doc """
  The reports received after `mark` (of those still kept), oldest first,
  with who made them (see `t:report/0`), consumed ones too. Reports sent
  before this call from the same node are all in, of those still kept:
  the reporter keeps the latest `kept/0` (100) of the whole node, whoever
  made them, and `take/0` forgets them. A report made after `mark`, then
  followed by more than 100 others (another test's, or reports a check
  consumed), is missing: the first report's `seq` above `mark + 1` says
  some are. `BeamAlloc.Case.check!/3` answers whether the test's own
  reports since a mark were all consumed, counting every one.

  Raises `ArgumentError` for a mark past the reports received so far:
  not one `mark/0` gave (made up, or taken before the reporter restarted).
  """
  @spec since(non_neg_integer) :: [report]
  def since(mark) when is_integer(mark) and mark >= 0 do
    case call({:since, mark}) do
      {:past_count, count} ->
        raise ArgumentError,
              "mark #{mark} is past the #{count} reports BeamAlloc.Reporter has " <>
                "received: not a mark from BeamAlloc.Reporter.mark/0 (or one " <>
                "taken before the reporter restarted)"

      reports ->
        reports
    end
  end

  # (Compared with the reports' numbers, anything else read as a mark
  # that no report is after: an empty list, as if nothing was reported.)
  def since(other) do
    raise ArgumentError,
          "expected a mark from BeamAlloc.Reporter.mark/0 (a non-negative " <>
            "integer), got: #{inspect(other)}"
  end

  @doc false
  # BeamAlloc.Case's guard: from now on, the reports made by pid or a
  # process working for it (every report when all? is true) are kept for
  # this watch apart from the latest @keep of all, until unwatch/1 takes
  # them. Read from the shared queue at the test's end, another async test
  # reporting more than @keep lines meanwhile pushed the test's own out,
  # and the test passed (found by a bug hunt).
  @spec watch(pid, boolean) :: reference
  def watch(pid, all?) when is_pid(pid) and is_boolean(all?) do
    ref = make_ref()
    :ok = call({:watch, ref, pid, all?})
    ref
  end

  @doc false
  # The watch's reports that no check consumed (the latest @keep of them,
  # oldest first) and how many of those it saw in all; the watch ends.
  # (Counted, not only the kept ones read: a double free, then more than
  # @keep reports a check consumed, pushed the double free out of the
  # watch's latest and the test passed: review.)
  @spec unwatch(reference) :: {[report], non_neg_integer}
  def unwatch(ref) when is_reference(ref), do: call({:unwatch, ref})

  @doc false
  # BeamAlloc.Case.check!/3 and reports/3: the reports after mark that no
  # check consumed, made by pid or a process working for it (every one
  # when all? is true): the latest @keep of them, oldest first, how many
  # in all, and whether the reporter let go of one made after mark
  # (more than @ledger unconsumed reports of anyone's since, see there),
  # which may have been pid's.
  @spec unconsumed_since(non_neg_integer, pid, boolean) ::
          {[report], non_neg_integer, boolean}
  def unconsumed_since(mark, pid, all?)
      when is_integer(mark) and mark >= 0 and is_pid(pid) and is_boolean(all?),
      do: call({:unconsumed_since, mark, pid, all?})

  @doc false
  # How many unconsumed reports unconsumed_since/3 answers from: the
  # latest, older ones let go.
  @spec ledger() :: pos_integer
  def ledger, do: @ledger

  @doc false
  # How many reports it holds read and not yet kept at most (see
  # bounded_unread/1).
  @spec unread_max() :: pos_integer
  def unread_max, do: @unread

  # Without the application, a call said {:noproc, {GenServer, :call, ...}}:
  # a RuntimeError says what to start (the Erlang side raises
  # {not_started, beam_alloc}).
  defp call(request) do
    GenServer.call(__MODULE__, request)
  catch
    :exit, {:noproc, _} ->
      raise RuntimeError,
            "BeamAlloc.Reporter is not running: start the :beam_alloc application " <>
              "(Application.ensure_all_started(:beam_alloc))"
  end

  # At most @backlog reports wait to be logged: under a flood (a misuse
  # in a loop on many processes) reports come faster than they are logged
  # (a site resolved and a line logged: about a millisecond each, 5 ms
  # with a slow handler), and the waiting ones grew without limit (16
  # processes making double frees for 30 s: 26,000 lines waiting, 13 MiB,
  # and growing by 600 a second). Past it the oldest waiting is dropped,
  # and a line in its place says how many were (see keep/2): about
  # 5 MiB of lines, 10 s of logging at the default handler's pace. (The
  # option backlog: n is the tests'.)
  @backlog 10_000

  # The state's version (see is_current/1): one more for every key added
  # to the state or to a watch, which current/1 then defaults (3: the
  # ledger an ETS table, not a map; 4: a watch's all? is all, as the
  # Erlang reporter's that makes it).
  @version 4

  @impl true
  def init(opts) do
    # Reports wait in the mailbox off the heap: read, each is young, and
    # the minor collection after it releases its acknowledgement
    # (released/1). On the heap, one that waited through two collections
    # (spontaneous ones, while a line is logged) was in the old heap once
    # read, and its call waited its whole second.
    Process.flag(:message_queue_data, :off_heap)
    # Its NIF library makes the tokens that reports made off a call carry,
    # by which each NIF library bounds how many of them wait here
    # (src/nif/report_tokens.h): loaded whenever a reporter runs, not at
    # the first report it resolves.
    _ = Code.ensure_loaded(:beam_alloc_symbolizer)

    {:ok,
     %{
       backlog: Keyword.get(opts, :backlog, @backlog),
       queue: :queue.new(),
       seq: 0,
       known: %{},
       unread: :queue.new(),
       watches: %{},
       unlogged: :queue.new(),
       resolved: %{},
       scheduled: false,
       ledger: nil,
       ledger_lost: 0,
       ledger_from: nil,
       ledger_max: Keyword.get(opts, :ledger, @ledger),
       version: @version
     }}
  end

  # The state of this version: reads unread as a queue, watches, and the
  # reports kept and not yet logged (unlogged, in order: {seq, module, the
  # line as it came}; the sites of those lines are not resolved yet in the
  # kept copies, but for those in resolved, seq => line). A reporter of a
  # version before, kept across a code reload, holds unread as a list and
  # no watches, or nothing unlogged (all its lines resolved); every
  # callback takes such a state over first (:queue.len of the list crashed
  # the reporter, and it lost what it kept). A state is current when it
  # has this version's number (version): a watch of a version with
  # unlogged lines but before its pushed-out reports (out, lost) passed
  # for current, and the first report pushed out of it, or line logged,
  # crashed the reporter.
  defguardp is_current(state)
            when is_map_key(state, :version) and :erlang.map_get(:version, state) == @version and
                   not is_list(:erlang.map_get(:unread, state))

  defp current(%{unread: unread} = state) when is_list(unread),
    do: current(%{state | unread: :queue.from_list(unread)})

  defp current(state) do
    state
    |> Map.put_new(:watches, %{})
    |> Map.put_new(:unlogged, :queue.new())
    |> Map.put_new(:resolved, %{})
    |> Map.put_new(:scheduled, false)
    |> ledger_taken_over()
    |> Map.update!(:watches, fn watches ->
      Map.new(watches, fn {ref, watch} ->
        {ref, Map.merge(%{out: %{}, lost: 0}, all_key(watch))}
      end)
    end)
    |> Map.put(:version, @version)
  end

  # A watch of a version before 4 says all? where the Erlang reporter's
  # watch_added/6, which makes them now, says all.
  defp all_key(%{all?: all?} = watch), do: watch |> Map.delete(:all?) |> Map.put(:all, all?)
  defp all_key(watch), do: watch

  # A state of a version before the ledger: no mark started it (the
  # ledger starts at the first mark/0, see @ledger), and a check!/3 of a
  # mark taken before the reload fails, as it cannot tell what came
  # before (failing is the safe side). (Its latest reports were taken
  # over, the ledger started: a node that never takes a mark, hot
  # upgraded in production, kept up to @ledger lines for good; review of
  # 5e90e3f.)
  # (A state of version 2 kept its ledger in a map: it goes into a table.)
  defp ledger_taken_over(%{ledger: ledger} = state) when is_map(ledger) do
    state = Map.drop(%{state | ledger: nil}, [:ledger_seqs])

    case state do
      %{ledger_from: nil} -> state
      %{ledger_from: _} -> Enum.reduce(Map.values(ledger), ledger_table(state), &ledger_in/2)
      _ -> Map.merge(state, %{ledger_lost: state.seq, ledger_from: nil})
    end
  end

  defp ledger_taken_over(%{ledger: _} = state), do: state

  defp ledger_taken_over(state) do
    Map.merge(state, %{ledger: nil, ledger_lost: state.seq, ledger_from: nil, ledger_max: @ledger})
  end

  # (And its mailbox off the heap, as init/1 sets it: see there.)
  @impl true
  def code_change(_old, state, _extra) do
    Process.flag(:message_queue_data, :off_heap)
    {:ok, current(state)}
  end

  # Stopped (GenServer.stop/1, a crash): what it has read and not logged
  # yet is logged now, for @stop_budget ms at most, and how many were left
  # said. Logged a slice at a time, the rest waited behind the stop and
  # was never logged (a stop after 50 reports at 5 ms a line logged 3;
  # the version before logged a batch whole first).
  @stop_budget 1_000

  @impl true
  def terminate(_reason, state) do
    deadline = System.monotonic_time(:millisecond) + @stop_budget
    state = current(state)
    state = state |> keep_unread(:queue.len(state.unread)) |> work_until(deadline)

    case :queue.len(state.unread) + :beam_alloc_reporter.waiting(state.unlogged) do
      0 -> :ok
      left -> Logger.warning("beam_alloc: #{left} more reports not logged: the reporter stopped")
    end
  catch
    # (It stops all the same.)
    _, _ -> :ok
  end

  # The slow part (resolving sites, a dirty NIF call of about a
  # millisecond a site, and logging) is done in slices of @slice ms, the
  # mailbox read between them: a call waits a slice, not all the work
  # (under a flood with a slow log handler, minutes: the guard's unwatch
  # timed out at 5 s, never-hang recheck). Reports read are kept
  # (numbered, with the line as it came) first: calls need them kept, and
  # resolve the sites of those they answer with (see resolved/3).
  @slice 20

  # Only reports of the shape the C side sends (a module, a binary line):
  # anything else someone sends is dropped by handle_info's last clause,
  # not a crash that loses the kept reports.
  defguardp is_report(module, line) when is_atom(module) and is_binary(line)

  @impl true
  def handle_info(message, state) when not is_current(state),
    do: handle_info(message, current(state))

  def handle_info({:beam_alloc_report, module, line, _pid, _ack} = message, state)
      when is_report(module, line) do
    {:noreply, attribute([message], state), {:continue, :release}}
  end

  # From library copies of earlier versions.
  def handle_info({:beam_alloc_report, module, line, pid}, state)
      when is_report(module, line) do
    message = {:beam_alloc_report, module, line, pid, :undefined}
    {:noreply, attribute([message], state), {:continue, :release}}
  end

  def handle_info({:beam_alloc_report, module, line}, state)
      when is_report(module, line) do
    message = {:beam_alloc_report, module, line, :undefined, :undefined}
    {:noreply, attribute([message], state), {:continue, :release}}
  end

  def handle_info({__MODULE__, :keep_unread}, state),
    do: {:noreply, work(%{state | scheduled: false}, @slice)}

  def handle_info({:DOWN, monitor, :process, _, _}, state),
    do: {:noreply, :beam_alloc_reporter.owner_down(monitor, state)}

  def handle_info(_other, state), do: {:noreply, state}

  # Who made each report waiting in the mailbox is read before any is
  # symbolized (dirty NIF calls per site): the processes that made them
  # may be about to exit.
  defp attribute(taken, state) do
    receive do
      {:beam_alloc_report, module, line, _, _} = message
      when is_report(module, line) ->
        attribute([message | taken], state)

      {:beam_alloc_report, module, line, pid} when is_report(module, line) ->
        attribute([{:beam_alloc_report, module, line, pid, :undefined} | taken], state)

      # (Each shape here, or one was kept after the reports behind it.)
      {:beam_alloc_report, module, line} when is_report(module, line) ->
        attribute([{:beam_alloc_report, module, line, :undefined, :undefined} | taken], state)
    after
      0 ->
        {reports, known} =
          taken
          |> Enum.reverse()
          |> Enum.map_reduce(state.known, fn {:beam_alloc_report, module, line, pid, _ack},
                                             known ->
            # (A pid of another node is kept, as the Erlang reporter
            # keeps it: its maker's, though callers/2 reads no process
            # info of it. undefined, from threads, is nil.)
            pid = if is_pid(pid), do: pid
            {callers, known} = callers(pid, known)
            {{module, line, pid, callers}, known}
          end)

        bounded_unread(%{
          state
          | known: known,
            unread: Enum.reduce(reports, state.unread, &:queue.in/2)
        })
    end
  end

  # Reading a report lets its call go, and lets its library send more
  # (src/nif/report.c counts the reports not read): a reporter that read
  # more than it kept (behind on CPU, a soak) held the rest read and not
  # kept without bound, so past @unread the oldest are kept (numbered,
  # unlogged) now; keeping one is cheap, its logging is the slow part.
  defp bounded_unread(state), do: keep_oldest(state, :queue.len(state.unread) - @unread)

  defp keep_oldest(state, n) when n <= 0, do: state

  defp keep_oldest(state, n) do
    {{:value, report}, unread} = :queue.out(state.unread)
    keep_oldest(keep(report, %{state | unread: unread}), n - 1)
  end

  @impl true
  def handle_continue(continue, state) when not is_current(state),
    do: handle_continue(continue, current(state))

  def handle_continue(:release, state) do
    # The messages are read: collecting them runs the destructors of their
    # acknowledgements, and the NIF calls waiting for those return (see
    # src/nif/report.c). Then the slow part.
    :erlang.garbage_collect()
    {:noreply, work(state, @slice)}
  end

  defp work(state, slice) do
    deadline = System.monotonic_time(:millisecond) + slice
    work_until(state, deadline)
  end

  defp work_until(state, deadline) do
    cond do
      idle?(state) -> state
      System.monotonic_time(:millisecond) >= deadline -> scheduled(state)
      :queue.is_empty(state.unread) -> work_until(read_waiting(log_one(state)), deadline)
      true -> work_until(keep_unread(state, 1), deadline)
    end
  end

  defp idle?(state), do: :queue.is_empty(state.unread) and :queue.is_empty(state.unlogged)

  # The rest after what waits in the mailbox now (calls), once.
  defp scheduled(%{scheduled: true} = state), do: state

  defp scheduled(state) do
    send(self(), {__MODULE__, :keep_unread})
    %{state | scheduled: true}
  end

  # The next line, its sites resolved (unless a call did), logged and
  # written into the kept copies.
  defp log_one(state) do
    case :queue.out(state.unlogged) do
      {{:value, {:dropped, _seq, n}}, unlogged} ->
        Logger.warning(
          "beam_alloc: #{n} reports not logged: more than #{backlog(state)} were " <>
            "waiting to be logged (a flood of reports); the latest are kept (recent/0)"
        )

        %{state | unlogged: unlogged}

      {{:value, {seq, module, raw}}, unlogged} ->
        log_line(state, seq, module, raw, unlogged)
    end
  end

  defp log_line(state, seq, module, raw, unlogged) do
    {line, resolved} = Map.pop_lazy(state.resolved, seq, fn -> resolve(raw) end)
    Logger.warning(line, beam_alloc: module)
    state = %{state | unlogged: unlogged, resolved: resolved}
    if line == raw, do: state, else: with_line(state, seq, line)
  end

  defp with_line(state, seq, line) do
    put = fn report -> if report.seq == seq, do: %{report | line: line}, else: report end

    # (A watch's report pushed out of its kept ones too: a check may
    # consume it later, by its line.)
    watches =
      Map.new(state.watches, fn {ref, w} ->
        out = if is_map_key(w.out, seq), do: Map.update!(w.out, seq, put), else: w.out
        {ref, %{w | kept: map_queue(w.kept, put), out: out}}
      end)

    ledger_line(state.ledger, seq, line)
    %{state | queue: map_queue(state.queue, put), watches: watches}
  end

  defp ledger_line(nil, _seq, _line), do: :ok

  defp ledger_line(ledger, seq, line) do
    case :ets.lookup(ledger, seq) do
      [{^seq, report}] -> :ets.insert(ledger, {seq, %{report | line: line}})
      [] -> :ok
    end
  end

  # Source lines here, in this process, on a dirty scheduler: never on the
  # thread that reported (it is inside an allocator call). A line the
  # symbolizer chokes on is kept as it came: losing the reporter (and what
  # it kept) to one report would be worse.
  defp resolve(line) do
    BeamAlloc.Symbolizer.resolve_sites(line)
  catch
    _, _ -> line
  end

  # The reports of queue for which wanted? is true, their sites resolved
  # (each report once: the line is remembered for its logging, and for
  # its other copies); the others as they are. A call answers with at
  # most @keep reports: under a flood, resolving every report read before
  # answering took minutes.
  # (A flood repeats lines, a misuse in a loop on a block used again: each
  # line is resolved once a call, memo.)
  # With dropped? (a consume, an unwatch), also those dropped from the log
  # (see keep/2), which stay as they came otherwise: a check lists
  # its misuse's line resolved, and a dropped report of it was not consumed
  # (the guard failed the test for it). (A line resolved already stays as
  # it is: no site left to resolve.)
  # (The Erlang reporter's resolved_list/4 does it, on the same keys:
  # seq and line of a report, unlogged and resolved of the state.)
  defp resolved(queue, wanted?, state, dropped? \\ false) do
    {reports, state} =
      :beam_alloc_reporter.resolved_list(wanted?, dropped?, :queue.to_list(queue), state)

    {:queue.from_list(reports), state}
  end

  # Reports are kept (numbered) one at a time, and who made the reports
  # that came meanwhile read after each: read after the whole batch, a
  # batch taking over a second (60 reports of other tests at once, a slow
  # log handler) outlasted the wait of a Task's reporting call, and the
  # Task was gone when the reporter read its callers (found by a bug hunt:
  # its test passed).
  defp keep_unread(state, 0), do: state

  defp keep_unread(state, n) do
    {{:value, report}, unread} = :queue.out(state.unread)
    state = keep(report, %{state | unread: unread})
    keep_unread(read_waiting(state), n - 1)
  end

  # The reports waiting in the mailbox, attributed, their calls released.
  defp read_waiting(state) do
    receive do
      {:beam_alloc_report, module, line, _, _} = message when is_report(module, line) ->
        released(attribute([message], state))

      {:beam_alloc_report, module, line, pid} when is_report(module, line) ->
        attribute([{:beam_alloc_report, module, line, pid, :undefined}], state)

      {:beam_alloc_report, module, line} when is_report(module, line) ->
        attribute([{:beam_alloc_report, module, line, :undefined, :undefined}], state)
    after
      0 -> state
    end
  end

  # A minor collection: the messages just read, and their
  # acknowledgements, are in the young heap (the mailbox is off the heap:
  # init/1). A full one here (once a
  # report kept, while reports kept coming) cost a copy of the whole heap,
  # which grows with what waits: under a flood the reporter kept fewer
  # reports a second than came, and those read and not yet kept grew
  # without limit (37,000 after 21 s, 16 processes making double frees).
  defp released(state) do
    :erlang.garbage_collect(self(), type: :minor)
    state
  end

  # What was read is kept before a call is answered: reports sent before
  # the call are all in (since/1). Its lines are logged first too, for
  # @budget ms at most, the rest after (a test's capture_log gets its
  # lines; under a flood with a slow log handler, logging them all took
  # minutes, and BeamAlloc.Case's unwatch timed out at 5 s: never-hang
  # recheck).
  @budget 100

  defp settled(state) do
    deadline = System.monotonic_time(:millisecond) + @budget
    state |> keep_unread(:queue.len(state.unread)) |> work_until(deadline)
  end

  @impl true
  def handle_call(request, from, state) when not is_current(state),
    do: handle_call(request, from, current(state))

  # A watch and a mark are answered at once: the reports read and not yet
  # kept were made before them, and get the numbers up to
  # seq + unread (the watch leaves them out by those).
  def handle_call({:watch, _ref, _pid, _all?} = request, _from, state),
    do: answer(request, state)

  def handle_call({:watch, ref, _pid, _all?, owner} = request, _from, state)
      when is_reference(ref) and is_pid(owner),
      do: answer(request, state)

  def handle_call(:mark, _from, state) do
    mark = count(state)
    {:reply, mark, ledger_started(state, mark)}
  end

  def handle_call(request, _from, state), do: answer(request, settled(state))

  # The reports received: those kept and those read but not yet kept
  # (numbered up to seq + unread). A mark, a watch's after_seq, and the
  # bound of since/1's mark.
  defp count(state), do: state.seq + :queue.len(state.unread)

  defp answer(:recent, state) do
    state = resolved_queue(state)
    {:reply, pairs(state.queue), state}
  end

  defp answer(:take, state) do
    state = resolved_queue(state)
    {:reply, pairs(state.queue), %{state | queue: :queue.new()}}
  end

  # (A mark past the count, as mark/0 gives it, is none of mark/0's:
  # answered [], it hid the reports numbered up to it as they came.)
  defp answer({:since, mark}, state) do
    count = count(state)

    if mark > count do
      {:reply, {:past_count, count}, state}
    else
      state = resolved_queue(state, &(&1.seq > mark))
      {:reply, Enum.filter(:queue.to_list(state.queue), &(&1.seq > mark)), state}
    end
  end

  # The Erlang side's calls (beam_alloc, beam_alloc_testing), answered as
  # the Erlang reporter answers them: the reports pid made in calls into
  # modules, numbered after from and up to to in one of windows, and whose
  # line is one the window lists (the runs of a check and the misuse it
  # turned into its result), are marked consumed; and a take of the others.
  defp answer({:consume, pid, modules, windows}, state) do
    # (The lines of the reports that may be consumed resolved first: the
    # check lists them resolved.)
    candidate? = fn %{seq: seq} = report ->
      report.pid == pid and report.module in modules and
        Enum.any?(windows, &match?({from, to, _} when seq > from and seq <= to, &1))
    end

    consume = fn report ->
      if report.pid == pid and
           :beam_alloc_reporter.consumes(report.seq, report.module, report.line, modules, windows),
         do: %{report | consumed: true},
         else: report
    end

    {queue, state} = resolved(state.queue, candidate?, state, true)
    state = %{state | queue: map_queue(queue, consume)}

    # (And the copies a test's watch keeps, which BeamAlloc.Case reads,
    # those pushed out of them no longer counted, as the Erlang reporter
    # marks them: same keys, kept and out; and the ledger's, which check!/3
    # reads.)
    state = :beam_alloc_reporter.consume_watched(candidate?, consume, state)
    {:reply, :ok, ledger_consumed(state, candidate?, consume)}
  end

  # (A report kept by the version before, across a code reload, has no
  # consumed key: it is not consumed. &1.consumed raised, and the reporter
  # went down with what it kept.)
  defp answer(:take_unconsumed, state) do
    state = resolved_queue(state)
    unconsumed = :queue.filter(&(not Map.get(&1, :consumed, false)), state.queue)
    {:reply, pairs(unconsumed), %{state | queue: :queue.new()}}
  end

  # (Its owner's end drops it, as in the Erlang reporter: watch_added/6,
  # owned/2, owner_down/2. An owner that is no pid is a call it does not
  # know, as there: monitored, it raised, and the reporter went down with
  # what it kept.)
  defp answer({:watch, ref, pid, all?}, state), do: watch_added(ref, pid, all?, :none, state)

  defp answer({:watch, ref, pid, all?, owner}, state) when is_pid(owner),
    do: watch_added(ref, pid, all?, owner, state)

  # (A watch the reporter does not know, as after a restart of it, saw
  # nothing: as since/1 of a mark from before a restart.) Only the lines
  # shown are resolved. The Erlang reporter's unwatched/2 answers it, on
  # the same keys (watches; a watch's kept, out and lost).
  defp answer({:unwatch, ref}, state) do
    {reply, state} = :beam_alloc_reporter.unwatched(ref, state)
    {:reply, reply, state}
  end

  # check!/3's: the reports since mark no check consumed, made by pid or a
  # process working for it (every one with all?), the latest @keep of them
  # (their sites resolved) and how many in all, and whether the ledger
  # let go of one made after mark (which may be pid's).
  defp answer({:unconsumed_since, mark, pid, all?}, state) do
    mine = Enum.filter(ledger_after(state.ledger, mark), &watched?(&1, pid, all?))

    {shown, state} = :beam_alloc_reporter.latest_resolved(mine, state)
    # (A mark past what it counted is not one of its own: one of a
    # reporter that restarted since, the test's reports gone with it. It
    # read no report after it, and check!/3 passed.)
    lost? = state.ledger_from == nil or state.ledger_lost > mark or mark > state.seq
    {:reply, {shown, length(mine), lost?}, state}
  end

  # A call it does not know is answered, not a crash that loses the kept
  # reports.
  defp answer(other, state), do: {:reply, {:error, {:unknown_call, other}}, state}

  # A watch of the reports after those counted so far (see answer/2), as
  # the Erlang reporter's: its watch_added/6 makes it, on the same keys.
  defp watch_added(ref, pid, all?, owner, state),
    do:
      {:reply, :ok, :beam_alloc_reporter.watch_added(ref, pid, all?, owner, count(state), state)}

  # (Its sites resolved later: log_one/1, resolved/3.)
  defp keep({module, line, pid, callers}, state) do
    seq = state.seq + 1
    report = %{seq: seq, module: module, line: line, pid: pid, callers: callers, consumed: false}
    watches = to_watches(report, state.watches)
    unlogged = :queue.in({seq, module, line}, state.unlogged)

    state = %{
      ledgered(report, state)
      | queue: bounded_in(state.queue, report),
        seq: seq,
        watches: watches,
        unlogged: unlogged
    }

    # Past the backlog the oldest line waiting is not logged: counted in an
    # entry that takes the head of unlogged ({:dropped, its last seq, how
    # many}), logged in its place; its kept copies stay as they came (sites
    # as lib.so+0x1c1b), as it is no longer after unlogged's head. The Erlang
    # reporter's drop_oldest/1 and waiting/1 (the reports waiting, dropped
    # ones not counted) do it on the same keys, unlogged and resolved.
    if :beam_alloc_reporter.waiting(unlogged) > backlog(state),
      do: :beam_alloc_reporter.drop_oldest(state),
      else: state
  end

  # (A state of the version before has no backlog.)
  defp backlog(state), do: Map.get(state, :backlog, @backlog)

  defp resolved_queue(state, wanted? \\ fn _ -> true end) do
    {queue, state} = resolved(state.queue, wanted?, state)
    %{state | queue: queue}
  end

  defp map_queue(queue, fun), do: :queue.from_list(Enum.map(:queue.to_list(queue), fun))

  defp bounded_in(queue, report) do
    queue = :queue.in(report, queue)
    if :queue.len(queue) > @keep, do: :queue.drop(queue), else: queue
  end

  # A watch keeps its latest @keep reports, and those pushed out of them
  # that no check has consumed yet (out): a check consumes the reports of
  # its runs when it is over, and a report of its first runs was pushed
  # out already. Up to 10,000 of them: more are counted (lost), and count
  # for the test even if a check consumes them later (a test failing for
  # that is the safe side; the lines would take the reporter's memory
  # without bound). The Erlang reporter's kept_in/2 does it, on the same
  # keys (kept, out, lost).
  defp to_watches(report, watches) do
    Map.new(watches, fn {ref, watch} ->
      if report.seq > Map.get(watch, :after_seq, 0) and watched?(report, watch.pid, watch.all) do
        {ref, :beam_alloc_reporter.kept_in(report, watch)}
      else
        {ref, watch}
      end
    end)
  end

  defp watched?(report, pid, all?),
    do: all? or report.pid == pid or pid in report.callers

  # (See @ledger.) The first mark starts the ledger: every report up to
  # it counts as let go.
  defp ledger_started(%{ledger_from: nil} = state, mark),
    do: ledger_table(%{state | ledger_from: mark, ledger_lost: max(state.ledger_lost, mark)})

  defp ledger_started(state, _mark), do: state

  defp ledger_table(state), do: %{state | ledger: :ets.new(__MODULE__, [:ordered_set])}

  defp ledgered(_report, %{ledger: nil} = state), do: state
  defp ledgered(report, state), do: ledger_in(report, state)

  # The table is ordered by seq: its first is the oldest.
  defp ledger_in(report, %{ledger: ledger} = state) do
    :ets.insert(ledger, {report.seq, report})

    if :ets.info(ledger, :size) > state.ledger_max do
      oldest = :ets.first(ledger)
      :ets.delete(ledger, oldest)
      %{state | ledger_lost: max(state.ledger_lost, oldest)}
    else
      state
    end
  end

  # Its reports numbered after mark, oldest first.
  defp ledger_after(nil, _mark), do: []

  defp ledger_after(ledger, mark),
    do: :ets.select(ledger, [{{:"$1", :"$2"}, [{:>, :"$1", mark}], [:"$2"]}])

  # The ledger's reports a consume marks leave it: consumed, they count
  # for no test.
  defp ledger_consumed(%{ledger: nil} = state, _candidate?, _consume), do: state

  defp ledger_consumed(state, candidate?, consume) do
    {consumed, state} =
      :beam_alloc_reporter.consumed(candidate?, consume, ledger_after(state.ledger, 0), state)

    for seq <- consumed, do: :ets.delete(state.ledger, seq)
    state
  end

  # Who the reporting process works for ($callers, $ancestors, the chain
  # of its parents), read while it may still be alive and remembered for
  # its next lines: the Erlang reporter's callers/2 reads it, as there.
  defp callers(pid, known), do: :beam_alloc_reporter.callers(pid, known)

  defp pairs(queue), do: Enum.map(:queue.to_list(queue), &{&1.module, &1.line})
end
