# bench-sqlite: an in-memory SQLite workload on 1 and on 2 dirty schedulers
# at once (one database each), with SQLite's allocator set to
#   (a) malloc    SQLite's default
#   (b) enif      enif_alloc with an 8-byte size header (today's bindings)
#   (c) gpa       beam_alloc's general purpose allocator (beam_sqlite3_use)
#   (d) mimalloc
# each with SQLITE_CONFIG_MEMSTATUS on (SQLite's default) and off. The
# configurations alternate within each round (in a rotated order), so that
# drift of the machine hits them all alike; ratios are paired per round and
# reported as min / median / max over the rounds.
#
# Memory: for each allocator, one more run with MEMSTATUS on, sampling
# :erlang.memory(:system) every millisecond: the VM-counted peak above the
# level before the run, against sqlite3_memory_highwater (SQLite's own count
# of what it asked for).
#
#   BENCH_SQLITE_NIF=path/to/nif  BENCH_ROUNDS=7  BENCH_ROWS=20000
#   BENCH_OUT=bench/results/sqlite.md  elixir bench/sqlite/bench_sqlite.exs

defmodule :beam_alloc_sqlite_bench do
  @on_load :load
  def load, do: :erlang.load_nif(String.to_charlist(System.fetch_env!("BENCH_SQLITE_NIF")), 0)
  def configure(_variant, _memstatus), do: :erlang.nif_error(:not_loaded)
  def workload(_rows), do: :erlang.nif_error(:not_loaded)
  def highwater(_reset), do: :erlang.nif_error(:not_loaded)
  def gpa_stats, do: :erlang.nif_error(:not_loaded)
  def large_peak, do: :erlang.nif_error(:not_loaded)
end

defmodule BenchSqlite do
  alias :beam_alloc_sqlite_bench, as: Nif

  @variants [
    malloc: "(a) malloc",
    enif: "(b) enif_alloc + header",
    gpa: "(c) beam GPA",
    mimalloc: "(d) mimalloc"
  ]

  def main do
    rounds = env_int("BENCH_ROUNDS", 7)
    rows = env_int("BENCH_ROWS", 20_000)
    out = System.get_env("BENCH_OUT")
    configs = for {v, _} <- @variants, ms <- [true, false], do: {v, ms}

    busy0 = busy()

    IO.puts(
      "bench-sqlite: #{rounds} rounds, #{rows} customers x 3 orders, " <>
        "#{:erlang.system_info(:dirty_cpu_schedulers_online)} dirty CPU schedulers"
    )

    # Memory first, (c) before anything else: the large allocator's peak
    # (what the instance took from enif_alloc) is then that run's alone.
    memory = for v <- [:gpa, :malloc, :enif, :mimalloc], into: %{}, do: {v, memory(v, rows)}

    # Warm-up: every configuration once, untimed.
    for {v, ms} <- configs do
      :ok = Nif.configure(v, ms)
      run(rows, 1)
    end

    samples =
      for round <- 1..rounds, reduce: %{} do
        acc ->
          order = rotate(configs, round)

          Enum.reduce(order, acc, fn {v, ms} = c, acc ->
            :ok = Nif.configure(v, ms)
            {t1, c1} = run(rows, 1)
            {t2, c2} = run(rows, 2)
            sample = %{round: round, t1: t1, t2: t2, c1: c1, c2: c2}
            Map.update(acc, c, [sample], &[sample | &1])
          end)
      end

    :ok = Nif.configure(:malloc, true)
    other = others_cores(busy0, busy())
    report = format(samples, memory, rounds, rows) <> load_note(other)
    IO.puts(report)
    if out, do: File.write!(out, report)
  end

  # CPU ticks: the whole machine's busy ones, this VM's own, and the time.
  defp busy do
    [cpu | _] = File.read!("/proc/stat") |> String.split("\n")
    [_ | fields] = String.split(cpu)

    [user, nice, system, _idle, _iowait, irq, softirq | _] =
      Enum.map(fields, &String.to_integer/1)

    self_fields =
      File.read!("/proc/self/stat") |> String.split(") ") |> List.last() |> String.split()

    own =
      String.to_integer(Enum.at(self_fields, 11)) + String.to_integer(Enum.at(self_fields, 12))

    {user + nice + system + irq + softirq, own, System.monotonic_time(:millisecond)}
  end

  # Cores other processes kept busy on average during the run (ticks are
  # 1/100 s on Linux).
  defp others_cores({b0, o0, t0}, {b1, o1, t1}) do
    max(0.0, (b1 - b0 - (o1 - o0)) / 100 / max((t1 - t0) / 1000, 0.001))
  end

  defp load_note(other) do
    note =
      if other > 0.25,
        do: " The machine was shared: take the 2-scheduler figures with salt.",
        else: ""

    "\nOther processes kept #{f2(other)} of the #{System.schedulers_online()} cores busy " <>
      "on average during the run (0 = quiet machine).#{note}\n"
  end

  defp env_int(name, default) do
    case System.get_env(name) do
      nil -> default
      s -> String.to_integer(s)
    end
  end

  defp rotate(list, n) do
    k = rem(n, length(list))
    Enum.drop(list, k) ++ Enum.take(list, k)
  end

  # {wall µs, summed thread CPU µs} of n workloads started at once, each on
  # its own dirty scheduler (n <= the number of dirty CPU schedulers).
  defp run(rows, n) do
    parent = self()
    t0 = System.monotonic_time(:microsecond)

    pids =
      for _ <- 1..n do
        spawn_link(fn -> send(parent, {self(), Nif.workload(rows)}) end)
      end

    cpu =
      for pid <- pids, reduce: 0 do
        acc ->
          receive do
            {^pid, {check, cpu_ns}} when is_integer(check) -> acc + div(cpu_ns, 1000)
            {^pid, other} -> raise "workload failed: #{inspect(other)}"
          end
      end

    {System.monotonic_time(:microsecond) - t0, cpu}
  end

  defp memory(variant, rows) do
    :ok = Nif.configure(variant, true)
    :erlang.garbage_collect()
    Process.sleep(20)
    base = :erlang.memory(:system)
    Nif.highwater(true)
    sampler = spawn_link(fn -> sample(base) end)
    run(rows, 1)
    send(sampler, {:done, self()})

    peak =
      receive do
        {:peak, p} -> p
      end

    {gpa_peak, _live, backing} = Nif.gpa_stats()
    {large_peak, _} = Nif.large_peak()

    %{
      vm_peak: peak - base,
      highwater: Nif.highwater(false),
      gpa_live_peak: gpa_peak,
      gpa_retained: backing,
      large_peak: large_peak
    }
  end

  defp sample(peak) do
    receive do
      {:done, from} -> send(from, {:peak, max(peak, :erlang.memory(:system))})
    after
      1 -> sample(max(peak, :erlang.memory(:system)))
    end
  end

  defp median(xs) do
    s = Enum.sort(xs)
    n = length(s)

    if rem(n, 2) == 1,
      do: Enum.at(s, div(n, 2)),
      else: (Enum.at(s, div(n, 2) - 1) + Enum.at(s, div(n, 2))) / 2
  end

  defp spread(xs), do: {Enum.min(xs), median(xs), Enum.max(xs)}

  defp fmt_spread({lo, med, hi}), do: "#{f2(med)} (#{f2(lo)}–#{f2(hi)})"
  defp f2(x), do: :erlang.float_to_binary(x / 1, decimals: 2)
  defp ms(us), do: :erlang.float_to_binary(us / 1000, decimals: 1)

  # Paired per round: ratio of config x to config y in the same round.
  defp paired(samples, x, y, key) do
    ys = Map.new(samples[y], fn s -> {s.round, s[key]} end)
    for s <- samples[x], do: s[key] / ys[s.round]
  end

  defp values(samples, c, key), do: Enum.map(samples[c], & &1[key])
  # Speed-up on two schedulers: two databases' work in t2 against one in t1.
  defp speedups(samples, c), do: Enum.map(samples[c], &(2 * &1.t1 / &1.t2))
  # CPU a database costs when two run at once, against alone: above 1 is
  # time lost to contention (spinning on locks, shared caches).
  defp cpu_growth(samples, c), do: Enum.map(samples[c], &(&1.c2 / (2 * &1.c1)))

  defp format(samples, memory, rounds, rows) do
    header = """
    ## bench-sqlite

    #{rounds} rounds of an in-memory SQLite workload (#{rows} customers, #{3 * rows} orders:
    inserts in a transaction, two index builds, a join with a group-by, a sort,
    an EXISTS subquery), alternating the configurations within each round.
    Times are medians over the rounds; ratios are paired per round, as
    median (min–max). "CPU" is the thread CPU time of the workload (what
    other processes on the machine cannot inflate); "wall" is elapsed time.
    Speed-up = 2 × wall(1 db) / wall(2 dbs at once on 2 dirty schedulers);
    CPU growth = CPU per db with 2 at once / CPU alone (1.00: no contention).

    | allocator | MEMSTATUS | 1 db CPU ms | 1 db wall ms | 2 dbs wall ms | speed-up | CPU growth | 1 db CPU / (a) | 2 dbs wall / (a) |
    |---|---|---|---|---|---|---|---|---|
    """

    rows_md =
      for {v, label} <- @variants, ms <- [true, false] do
        c = {v, ms}
        base = {:malloc, ms}

        "| #{label} | #{if ms, do: "on", else: "off"} | #{ms(median(values(samples, c, :c1)))} | " <>
          "#{ms(median(values(samples, c, :t1)))} | #{ms(median(values(samples, c, :t2)))} | " <>
          "#{fmt_spread(spread(speedups(samples, c)))} | #{fmt_spread(spread(cpu_growth(samples, c)))} | " <>
          "#{fmt_spread(spread(paired(samples, c, base, :c1)))} | " <>
          "#{fmt_spread(spread(paired(samples, c, base, :t2)))} |"
      end

    targets =
      for ms <- [true, false] do
        cpu1 = spread(paired(samples, {:gpa, ms}, {:malloc, ms}, :c1))
        wall1 = spread(paired(samples, {:gpa, ms}, {:malloc, ms}, :t1))
        sa = spread(speedups(samples, {:malloc, ms}))
        sc = spread(speedups(samples, {:gpa, ms}))
        ga = spread(cpu_growth(samples, {:malloc, ms}))
        gc = spread(cpu_growth(samples, {:gpa, ms}))
        cb1 = spread(paired(samples, {:enif, ms}, {:gpa, ms}, :c1))
        cb2 = spread(paired(samples, {:enif, ms}, {:gpa, ms}, :t2))
        on = if ms, do: "on", else: "off"

        """
        MEMSTATUS #{on}:
        - (c) / (a) on 1 scheduler: CPU #{fmt_spread(cpu1)}, wall #{fmt_spread(wall1)} (target ≤ 1.05, on CPU: #{met(elem(cpu1, 1) <= 1.05)})
        - 2-scheduler speed-up: (c) #{fmt_spread(sc)} vs (a) #{fmt_spread(sa)} (target (c) ≥ (a): #{met(elem(sc, 1) >= elem(sa, 1))}); CPU growth (c) #{fmt_spread(gc)} vs (a) #{fmt_spread(ga)}
        - (c) faster than (b): (b) / (c) = #{fmt_spread(cb1)} CPU on 1 scheduler, **#{fmt_spread(cb2)} wall on 2 schedulers** (#{met(elem(cb1, 1) > 1 and elem(cb2, 1) > 1)})
        """
      end

    mem_rows =
      for {v, label} <- @variants do
        m = memory[v]
        ratio = if m.highwater > 0, do: f2(m.vm_peak / m.highwater), else: "–"
        "| #{label} | #{kib(m.highwater)} | #{kib(m.vm_peak)} | #{ratio} |"
      end

    c = memory[:gpa]
    # The instance's take from enif_alloc at its peak, counted exactly (the
    # sampled figure can miss a short peak on a busy machine).
    cm = c.large_peak / max(c.highwater, 1)

    retained =
      "\n(c) in detail: the instance's own live peak #{kib(c.gpa_live_peak)} KiB; " <>
        "after the run (connection closed, nothing live) it still holds " <>
        "#{kib(c.gpa_retained)} KiB of the backing (slabs, segments and cached " <>
        "large blocks that go back on beam_gpa_collect or deinit).\n"

    header <>
      Enum.join(rows_md, "\n") <>
      "\n\n" <>
      Enum.join(targets, "\n") <>
      """

      Memory (one run on 1 scheduler, MEMSTATUS on, before the timed runs):
      SQLite's own peak (sqlite3_memory_highwater, in xSize units) against the
      VM's :erlang.memory(:system) peak above its level before the run,
      sampled every millisecond (it can miss a short peak). malloc and
      mimalloc are invisible to the VM (their VM figure is noise).

      | allocator | SQLite highwater KiB | VM-counted peak KiB | VM / SQLite |
      |---|---|---|---|
      """ <>
      Enum.join(mem_rows, "\n") <>
      "\n\n(c)'s VM-counted peak, exactly: the instance took at most " <>
      "#{kib(c.large_peak)} KiB from enif_alloc (beam_large_allocator's peak; " <>
      "enif_alloc's own tags, 16 bytes a block, come on top): " <>
      "#{f2(cm)} × SQLite's highwater (target ≤ 1.3: #{met(cm <= 1.3)})\n" <>
      retained
  end

  defp kib(b), do: Integer.to_string(div(b, 1024))
  defp met(true), do: "met"
  defp met(false), do: "NOT met"
end

BenchSqlite.main()
