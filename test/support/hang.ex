defmodule BeamAlloc.Test.Hang do
  @moduledoc false
  # Compositions used at once, for the hang hunt (test/nifs/hang_nif.c).
  use BeamAlloc.Test.NifModule,
    nif: "hang_nif",
    stubs: ~w(res_new/4 churn/2 churn_dirty/2 release/1 flood/1 thread_flood/2
              yield_scratch/1 yield_checked/1 yield_both/1 fork_child/2)
end

defmodule BeamAlloc.Test.HangScenarios do
  @moduledoc false
  # Run in a VM of its own under a watchdog (test/hang_test.exs): every
  # part's workers at once until the deadline; prints what they did as
  # key=value lines and halts with status 0 once every worker came back
  # (a hang is the watchdog's to catch; a worker's error halts with 3).
  # Long schedules are printed, not failed: on a machine with fewer cores
  # than the VM has threads, the OS deschedules a NIF as it likes.
  alias BeamAlloc.Test.Hang

  @all [:resources, :flood, :thread_flood, :yield, :observe, :fork, :os_cmd]

  def storm(ms, parts \\ @all) do
    Application.put_env(:beam_alloc, :auto_collect_interval, 20)
    Application.put_env(:beam_alloc, :auto_collect_min_bytes, 0)
    {:ok, _} = Application.ensure_all_started(:beam_alloc)
    # Reports are the point here, not their lines.
    Logger.configure(level: :error)
    monitor = spawn(fn -> long_schedules([]) end)
    :erlang.system_monitor(monitor, long_schedule: 500)
    # Loaded, its on_load done, before any worker calls it: OTP 25's code
    # server never answers a load of a module queued behind that module's
    # pending on_load (the first load, which the workers' first calls ask
    # for): code:load_file/1 of :upgrade hung there (erlang/otp#7466).
    {:module, Hang} = :code.ensure_loaded(Hang)
    deadline = System.monotonic_time(:millisecond) + ms
    workers = Enum.flat_map(parts, fn part -> tag(workers(part, deadline), part) end)
    rounds = workers |> finish(ms + 60_000) |> Enum.sum()
    send(monitor, {:done, self()})
    long = receive do: ({:long, l} -> l)
    reporter = Process.whereis(BeamAlloc.Reporter)
    {:message_queue_len, queue} = Process.info(reporter, :message_queue_len)
    {:memory, reporter_bytes} = Process.info(reporter, :memory)

    IO.puts(
      "rounds=#{rounds} long_schedules=#{length(long)} reporter_queue=#{queue} " <>
        "reporter_mb=#{div(reporter_bytes, 1_000_000)} " <>
        "memory_mb=#{div(:erlang.memory(:total), 1_000_000)}"
    )

    for l <- long, do: IO.puts("long: #{inspect(l)}")
    System.halt(0)
  end

  # The module deleted, purged and loaded again n times (the way to run a
  # rebuilt library file) while a process reads BeamAlloc.stats/1 in a
  # loop, as a dashboard would: prints reloads=n and halts with 0, or
  # hangs (the watchdog's to catch).
  def stats_during_reloads(n) do
    {:module, Hang} = :code.ensure_loaded(Hang)
    # Read once before, as a dashboard's loop did before the upgrade: the
    # reader's first call, spawned now, came in the first gap (6 runs of
    # 6), where a library that never answered still gets its module
    # loaded, racing the load below (the hang this test is about).
    %{raw: _} = BeamAlloc.stats(Hang)
    reader = spawn(fn -> read_stats() end)

    for _ <- 1..n do
      :code.purge(Hang)
      :code.delete(Hang)
      :code.purge(Hang)
      {:module, Hang} = :code.load_file(Hang)
    end

    Process.exit(reader, :kill)
    IO.puts("reloads=#{n}")
    System.halt(0)
  end

  # (Between the delete and the load no library is loaded for Hang.)
  defp read_stats do
    try do
      BeamAlloc.stats(Hang)
    rescue
      ArgumentError -> :between
    end

    read_stats()
  end

  # Every worker's rounds; a worker still running then is stuck: its
  # stack is printed and the VM halts with 4 (after STUCK_WAIT ms, for a
  # debugger to attach to the OS pid printed).
  defp finish(tasks, timeout) do
    results = Task.yield_many(tasks, timeout)
    stuck = for {t, nil} <- results, do: t.pid

    if stuck != [] do
      IO.puts("STUCK os_pid=#{System.pid()}")

      for pid <- stuck do
        info = Process.info(pid, [:current_stacktrace, :status, :dictionary])
        IO.puts("stuck: #{inspect(pid)} #{inspect(info)}")
      end

      cs = Process.whereis(:code_server)

      IO.puts(
        "code_server: #{inspect(Process.info(cs, [:current_stacktrace, :message_queue_len, :status, :monitors, :monitored_by, :dictionary]))}"
      )

      # The on_loads it waits for: {{pid, ref}, module, waiting callers}.
      {:status, _, _, [_, _, _, _, state]} = :sys.get_status(cs)
      IO.puts("code_server on_load: #{inspect(elem(state, tuple_size(state) - 1))}")

      IO.puts(
        "Hang: #{inspect(:erlang.module_loaded(Hang))} old=#{inspect(:erlang.check_old_code(Hang))} #{inspect(:code.is_loaded(Hang))}"
      )

      purger = Process.whereis(:erts_code_purger)

      IO.puts(
        "purger: #{inspect(Process.info(purger, [:status, :monitors, :message_queue_len, :dictionary, :links]))}"
      )

      for p <- Process.list() do
        info =
          Process.info(p, [:current_stacktrace, :registered_name, :status, :message_queue_len])

        IO.puts("proc: #{inspect(p)} #{inspect(info)}")
      end

      Process.sleep(String.to_integer(System.get_env("STUCK_WAIT", "0")))
      System.halt(4)
    end

    for {_, {:ok, n}} <- results, do: n
  end

  defp workers(:resources, d), do: for(i <- 1..8, do: loop(d, &resources(i, &1)))
  defp workers(:flood, d), do: for(_ <- 1..4, do: loop(d, fn _ -> Hang.flood(20) end))
  defp workers(:thread_flood, d), do: [loop(d, fn _ -> Hang.thread_flood(4, 100) end)]
  defp workers(:yield, d), do: for(i <- 1..4, do: loop(d, &kill_yielding(i, &1)))
  defp workers(:observe, d), do: [loop(d, fn _ -> observe() end)]
  # The child does nothing (the fork handlers are what runs), or
  # allocates: ERTS's allocators take no fork handlers, so that child may
  # hang in enif_alloc (README, "A fork leaves its own locks free; inside
  # a BEAM the VM's may stay held").
  defp workers(:fork, d), do: [loop(d, fn _ -> fork(false) end)]
  defp workers(:fork_work, d), do: [loop(d, fn _ -> fork(true) end)]
  defp workers(:os_cmd, d), do: [loop(d, fn _ -> :os.cmd(~c"true") end)]
  defp workers(:upgrade, d), do: [loop(d, fn _ -> upgrade() end)]

  defp tag(tasks, part) do
    for t <- tasks, do: send(t.pid, {:role, part})
    tasks
  end

  defp loop(deadline, fun) do
    Task.async(fn ->
      receive do
        {:role, part} -> Process.put(:hang_role, part)
      end

      loop(deadline, fun, 0)
    end)
  end

  defp loop(deadline, fun, n) do
    if System.monotonic_time(:millisecond) > deadline do
      n
    else
      try do
        fun.(n)
      catch
        kind, what ->
          IO.puts("worker failed: #{Exception.format(kind, what, __STACKTRACE__)}")
          System.halt(3)
      end

      loop(deadline, fun, n + 1)
    end
  end

  defp resources(i, n) do
    kind = Enum.at([:gpa, :arena], rem(n + i, 2))
    parent = Enum.at([:gpa, :named, :raw, :beam], rem(n * 7 + i, 4))
    {:ok, res} = Hang.res_new(kind, parent, nil, rem(n, 3))
    churn = if rem(n, 2) == 0, do: &Hang.churn/2, else: &Hang.churn_dirty/2
    churn.(res, 200)

    if rem(n, 3) == 0 do
      # A resource over the other's allocator, gone before it (release/1
      # waits for its hook: a release that finds a thread inside is left
      # to a later one, and the parent must outlive its memory).
      {:ok, child} = Hang.res_new(Enum.at([:gpa, :arena], rem(n, 2)), :res, res, 2)
      churn.(child, 200)
      true = is_integer(Hang.release(child))
    end

    # Released now (the hook joins the threads here) or by the garbage
    # collector later (on whichever thread runs the destructor).
    if rem(n, 4) == 0, do: Hang.release(res)
    if rem(n, 16) == 0, do: :erlang.garbage_collect()
  end

  defp kill_yielding(i, n) do
    fun =
      Enum.at([&Hang.yield_scratch/1, &Hang.yield_checked/1, &Hang.yield_both/1], rem(n + i, 3))

    pid = spawn(fn -> fun.(1000) end)
    Process.sleep(rem(n, 3))
    Process.exit(pid, :kill)
  end

  defp observe do
    BeamAlloc.stats(Hang)
    BeamAlloc.collect(Hang)

    # Behind a flood of reports a call to the reporter may time out.
    try do
      BeamAlloc.Reporter.take()
      :beam_alloc.take_reports()
    catch
      :exit, {:timeout, _} -> IO.puts("reporter call timed out")
    end
  end

  # A new version of the module (an upgrade of the same copy) while the
  # old one runs: a version no process runs any more is purged first.
  defp upgrade do
    purged = :code.soft_purge(Hang)
    Process.put(:hang_step, :load_file)
    if purged, do: {:module, Hang} = :code.load_file(Hang)
    Process.put(:hang_step, :soft_purge)
  end

  defp fork(work) do
    case Hang.fork_child(5000, work) do
      :ok ->
        :ok

      other ->
        IO.puts("fork: #{inspect(other)}")
        System.halt(2)
    end
  end

  defp long_schedules(acc) do
    receive do
      {:monitor, pid, :long_schedule, info} ->
        role =
          case Process.info(pid, :dictionary) do
            {:dictionary, d} -> Keyword.get(d, :hang_role, :other)
            _ -> :gone
          end

        long_schedules([{role, info[:timeout]} | acc])

      {:done, to} ->
        send(to, {:long, acc})
    end
  end
end
