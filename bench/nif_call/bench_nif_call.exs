# What BEAM_NIF's glue costs a tiny NIF per call: make bench-nif-call.
#
#   BENCH_NIF_CALL_NIF=path/to/nif (no extension)  BENCH_ROUNDS=7
#   BENCH_CALLS=1000000 (normal scheduler; dirty: a two-hundredth: each
#   dirty call is microseconds of scheduling, which hides the glue)
#
# Every round calls every function BENCH_CALLS times in a loop, the
# starting function rotating from round to round; a pair's ratio and
# difference are taken within a round (both ran under the same load) and
# printed as median [min .. max] over the rounds. The loop's own cost is
# in every figure: e_noop is the same loop calling an Elixir function.
defmodule NifCallBench do
  @on_load :load
  def load, do: :erlang.load_nif(String.to_charlist(System.fetch_env!("BENCH_NIF_CALL_NIF")), 0)

  @nifs ~w(p_noop b_noop p_hash b_hash p_enif b_enif b_raw b_gpa p_gpa b_opts
           dp_noop db_noop dp_enif db_enif db_raw db_gpa dp_gpa)a
  for f <- @nifs, do: def(unquote(f)(_x), do: :erlang.nif_error(:not_loaded))
  def e_noop(x), do: x

  # One loop per function, a remote call by name as user code makes it (no
  # fun call in the loop).
  for f <- [:e_noop | @nifs] do
    loop = :"loop_#{f}"
    defp unquote(loop)(0, _a), do: :ok

    defp unquote(loop)(n, a) do
      NifCallBench.unquote(f)(a)
      unquote(loop)(n - 1, a)
    end

    def run(unquote(f), n, a) do
      t0 = :erlang.monotonic_time(:nanosecond)
      unquote(loop)(n, a)
      (:erlang.monotonic_time(:nanosecond) - t0) / n
    end
  end
end

defmodule NifCallBench.Report do
  def arg(f), do: if(f in [:p_hash, :b_hash], do: "0123456789abcdef0123456789abcdef", else: 7)

  def measure(names, rounds, calls) do
    Enum.each(names, &NifCallBench.run(&1, div(calls, 10), arg(&1)))
    k = length(names)

    for r <- 0..(rounds - 1), reduce: Map.new(names, &{&1, []}) do
      acc ->
        order = Enum.drop(names, rem(r, k)) ++ Enum.take(names, rem(r, k))

        Enum.reduce(order, acc, fn f, acc ->
          Map.update!(acc, f, &[NifCallBench.run(f, calls, arg(f)) | &1])
        end)
    end
  end

  defp median(l), do: Enum.at(Enum.sort(l), div(length(l), 2))
  defp spread(l, fmt), do: :io_lib.format(fmt, [median(l), Enum.min(l), Enum.max(l)])

  def print(title, res, names, pairs) do
    IO.puts("#{title}: ns/call, median [min .. max] over #{length(res[hd(names)])} rounds")

    for f <- names,
        do:
          IO.puts(
            "  #{String.pad_trailing(to_string(f), 8)} #{spread(res[f], "~8.1f [~8.1f .. ~8.1f]")}"
          )

    for {a, b, what} <- pairs do
      ratio = Enum.zip_with(res[a], res[b], &(&1 / &2))
      diff = Enum.zip_with(res[a], res[b], &(&1 - &2))

      IO.puts(
        "  #{a}/#{b} #{spread(ratio, "~5.2f [~5.2f .. ~5.2f]")}  " <>
          "#{spread(diff, "~7.1f [~7.1f .. ~7.1f]")} ns  #{what}"
      )
    end
  end
end

rounds = String.to_integer(System.get_env("BENCH_ROUNDS", "7"))
calls = String.to_integer(System.get_env("BENCH_CALLS", "1000000"))
alias NifCallBench.Report
normal = ~w(e_noop p_noop b_noop p_hash b_hash p_enif b_enif b_raw b_gpa p_gpa b_opts)a
dirty = ~w(dp_noop db_noop dp_enif db_enif db_raw db_gpa dp_gpa)a

Report.print("normal scheduler, #{calls} calls", Report.measure(normal, rounds, calls), normal, [
  {:b_noop, :p_noop, "the glue, empty body"},
  {:b_hash, :p_hash, "the glue, FNV-1a of 32 bytes"},
  {:b_enif, :p_enif, "the glue, enif_alloc+free"},
  {:b_raw, :p_enif, "beam_allocator (raw) vs enif_alloc, plain"},
  {:b_gpa, :p_enif, "beam_allocator (.allocator = gpa) vs enif_alloc, plain"},
  {:b_gpa, :p_gpa, "the glue and .allocator, GPA alloc+free"},
  {:b_opts, :p_noop, "the glue with an option (.raise_on_misuse), empty body"}
])

dcalls = max(div(calls, 200), 1)

Report.print(
  "dirty CPU scheduler, #{dcalls} calls",
  Report.measure(dirty, rounds, dcalls),
  dirty,
  [
    {:db_noop, :dp_noop, "the glue, empty body"},
    {:db_enif, :dp_enif, "the glue, enif_alloc+free"},
    {:db_raw, :dp_enif, "beam_allocator (raw) vs enif_alloc, plain"},
    {:db_gpa, :dp_gpa, "the glue and .allocator, GPA alloc+free"}
  ]
)
