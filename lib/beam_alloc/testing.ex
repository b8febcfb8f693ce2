defmodule BeamAlloc.Testing do
  @moduledoc """
  Fault injection for NIFs built with beam_alloc, from ExUnit.

  `check_all_allocation_failures/2` finds the error paths of a NIF that
  nobody ever runs: what happens when allocation number 3 of 7 returns
  `NULL`. It runs a function once, counting the allocations that its NIF
  calls make through `beam_allocator`, then once more for each of them,
  failing that allocation (and every later one) in turn:

      test "parse/1 survives every allocation failure" do
        assert {:ok, _count} =
                 BeamAlloc.Testing.check_all_allocation_failures(fn ->
                   MyNif.parse("[1, [2, 3]]")
                 end)
      end

  For every induced failure it checks that

    * the failure surfaced: the function raised or returned `{:error, _}`
      (or `:error`) instead of carrying on as if nothing happened;
    * nothing leaked: every block allocated during the run was freed by the
      time the function returned;
    * the run repeated the first one: the same allocations, from the same
      call sites, up to the failing one; a function whose allocations depend
      on a counter, the clock or randomness cannot be checked this way, and
      is reported as nondeterministic.

  Then it runs the function once more without failures, which must make the
  same allocations as the first run. Problems are collected and raised
  together as a `BeamAlloc.AllocationFailureError`, naming each allocation
  by number and by site: the function and source line of the call
  (`parse_list (c_src/my_nif.c:42)`) when the NIF library has debug
  information, else its function or the library and offset of the call
  (`my_nif.so+0x1a2b`). A misuse of memory in any run (a double free, a
  write past the end of a block, ...) is a problem too, with its report.

  ## What is counted

  Every request for memory through `beam_allocator` in a `BEAM_NIF` that the
  calling process makes, in any NIF library built with beam_alloc's
  `BEAM_NIF_INIT`: allocations, and resizes or remaps that grow a block
  (each may fail). Allocations through other allocators
  (`beam_raw_allocator`, `beam_general_purpose_allocator`, malloc), in raw
  NIFs, or in other processes (including processes the function spawns) are
  not counted and never fail.

  ## Concurrency

  The fault plan belongs to the calling process: other processes calling the
  same NIFs at the same time, async tests included, are not affected. A
  process can run one check at a time.

  ## How it works

  Each NIF library built with beam_alloc has its own copy of the library,
  so the plan lives in a driver of its own (`priv/beam_alloc_testing.so`).
  The driver finds the loaded NIF libraries through the dynamic loader and
  attaches to them; while a check runs, every `BEAM_NIF` call of the
  calling process gets the driver's counting, failing, block-tracking
  allocator as `beam_allocator`, stacked over the allocator the call would
  have had (leak checking, scratch arenas and custom allocators still
  apply). Blocks keep their allocator across calls: a block allocated in
  one NIF call may be freed in another, or by a resource destructor.

  Erlang test suites can call `beam_alloc_testing:check_all_allocation_failures/1,2`.
  """

  alias BeamAlloc.AllocationFailureError
  alias BeamAlloc.Testing.Nif

  @typedoc """
  How an induced allocation failure must surface:

    * `:any` - a raised exception (or exit, or throw), or a returned
      `{:error, _}` or `:error` (the default)
    * `:raise` - a raised exception only
    * `:error_tuple` - a returned `{:error, _}` or `:error` only
  """
  @type expect :: :any | :raise | :error_tuple

  @type option :: {:expect, expect} | {:modules, :all | [module]}

  @doc """
  Runs `fun` once, then once per allocation it made, failing that allocation
  and every later one; raises `BeamAlloc.AllocationFailureError` listing
  every problem found.

  Returns `{:ok, count}`, `count` being the number of allocations the
  function makes (and so the number of failures it survived). A function
  that makes no allocation through `beam_allocator` passes with
  `{:ok, 0}`.

  The first run must succeed: a function that raises, or returns an error
  (as `:expect` defines it), before any failure is injected raises
  `BeamAlloc.AllocationFailureError` at once.

  ## Options

    * `:expect` - how an induced failure must surface: `:any` (the default),
      `:raise` or `:error_tuple`; see `t:expect/0`.
    * `:modules` - the NIF modules whose allocations are counted and failed:
      `:all` (the default: every loaded NIF library built with beam_alloc),
      or a list of modules, which are loaded first if needed.

  ## Examples

      BeamAlloc.Testing.check_all_allocation_failures(fn -> MyNif.parse("[]") end)
      #=> {:ok, 3}

      BeamAlloc.Testing.check_all_allocation_failures(
        fn -> MyNif.encode(%{a: 1}) end,
        expect: :raise,
        modules: [MyNif]
      )

  """
  @spec check_all_allocation_failures((() -> term), [option]) :: {:ok, non_neg_integer}
  def check_all_allocation_failures(fun, opts \\ [])

  def check_all_allocation_failures(fun, opts) when is_function(fun, 0) and is_list(opts) do
    {expect, modules} = validate_options!(opts)
    session = open_session!()

    try do
      attached = attach!(session, modules)
      first = run(session, :infinity, :record, fun)

      # A module loaded by its first call during that run had no library
      # attached yet: attach it, and count again.
      first =
        if length(Nif.attach(session, wanted(modules))) > length(attached) do
          run(session, :infinity, :record, fun)
        else
          first
        end

      check_first_run!(first, expect)
      count = first.requests
      problems = check_failures(session, fun, expect, count, leak_problems(nil, nil, first))

      case Enum.reverse(problems) do
        [] -> {:ok, count}
        problems -> raise AllocationFailureError, problems: problems, allocations: count
      end
    after
      Nif.close(session)
    end
  end

  def check_all_allocation_failures(fun, opts) when is_list(opts) do
    raise ArgumentError,
          "check_all_allocation_failures/2 expects a function of arity 0, got: #{inspect(fun)}"
  end

  def check_all_allocation_failures(_fun, opts) do
    raise ArgumentError,
          "check_all_allocation_failures/2 expects a keyword list of options, got: #{inspect(opts)}"
  end

  # --- Options ---------------------------------------------------------------

  defp validate_options!(opts) do
    opts = Keyword.validate!(opts, expect: :any, modules: :all)

    expect = opts[:expect]

    unless expect in [:any, :raise, :error_tuple] do
      raise ArgumentError,
            "invalid value for :expect option, expected :any, :raise or :error_tuple, got: " <>
              inspect(expect)
    end

    modules = opts[:modules]

    unless modules == :all or (is_list(modules) and Enum.all?(modules, &is_atom/1)) do
      raise ArgumentError,
            "invalid value for :modules option, expected :all or a list of modules, got: " <>
              inspect(modules)
    end

    if is_list(modules), do: Enum.each(modules, &Code.ensure_loaded/1)
    {expect, modules}
  end

  defp open_session! do
    case Nif.open() do
      {:ok, session} ->
        session

      {:error, :already_open} ->
        raise ArgumentError,
              "check_all_allocation_failures/2 is already running in this process " <>
                "(#{inspect(self())}); it cannot be nested"

      {:error, reason} ->
        raise RuntimeError, "could not start the allocation failure check: #{inspect(reason)}"
    end
  end

  defp wanted(:all), do: :all
  defp wanted(modules), do: Enum.map(modules, &Atom.to_string/1)

  defp attach!(session, modules) do
    attached = Nif.attach(session, wanted(modules))

    if is_list(modules) do
      case Enum.reject(modules, &(Atom.to_string(&1) in attached)) do
        [] ->
          :ok

        missing ->
          raise ArgumentError,
                "no NIF library built with beam_alloc is loaded for " <>
                  Enum.map_join(missing, ", ", &inspect/1) <>
                  " (its NIF library must be loaded, with BEAM_NIF_INIT, before the check)"
      end
    end

    attached
  end

  # --- Runs ------------------------------------------------------------------

  defp run(session, fail_index, mode, fun) do
    :ok = Nif.begin_run(session, fail_index, mode)
    outcome = invoke(fun)
    settle(session)
    session |> Nif.end_run() |> Map.put(:outcome, outcome)
  end

  # Resources the run dropped must go before the blocks are counted, or
  # what their destructors free would pass for a leak. A collection
  # releases them, and the VM runs their destructors shortly after, as
  # scheduler work: give it a few milliseconds while blocks are live.
  @settle_ms [0, 1, 2, 4, 8]

  defp settle(session) do
    :erlang.garbage_collect()

    Enum.reduce_while(@settle_ms, :ok, fn ms, :ok ->
      if Nif.live(session) == 0 do
        {:halt, :ok}
      else
        if ms == 0, do: :erlang.yield(), else: Process.sleep(ms)
        {:cont, :ok}
      end
    end)
  end

  defp invoke(fun) do
    {:returned, fun.()}
  catch
    kind, reason -> {:raised, kind, reason, __STACKTRACE__}
  end

  defp check_first_run!(%{outcome: outcome} = first, expect) do
    if failed?(outcome, expect) do
      raise AllocationFailureError,
        problems:
          misuse_problems(nil, nil, first) ++
            [%{kind: :failed_without_injection, index: nil, outcome: outcome}],
        allocations: first.requests
    end
  end

  # One run per allocation, then one without failures. Nondeterminism stops
  # the runs: the numbers no longer mean the same thing.
  defp check_failures(session, fun, expect, count, problems) do
    result =
      Enum.reduce_while(0..(count - 1)//1, problems, fn index, acc ->
        run = run(session, index, :compare, fun)

        case failure_run_problems(index, run, count, expect) do
          {:halt, new} -> {:halt, {:stopped, new ++ acc}}
          {:cont, new} -> {:cont, new ++ acc}
        end
      end)

    case result do
      {:stopped, problems} ->
        problems

      problems ->
        last = run(session, :infinity, :compare, fun)
        last_run_problems(last, count, expect) ++ problems
    end
  end

  defp failure_run_problems(index, run, count, expect) do
    cond do
      run.mismatch != nil ->
        {:halt, [mismatch_problem(run.mismatch, count)]}

      run.induced == nil ->
        {:halt,
         [
           %{
             kind: :nondeterministic,
             index: index,
             request: nil,
             expected_site: nil,
             reason:
               "allocation ##{index} never happened: this run made #{run.requests} " <>
                 "#{plural(run.requests, "allocation")}, the first run made #{count}"
           }
         ]}

      true ->
        request = request(run.induced)

        {:cont,
         leak_problems(index, request, run) ++ outcome_problems(index, request, run, expect)}
    end
  end

  defp last_run_problems(run, count, expect) do
    cond do
      run.mismatch != nil ->
        [mismatch_problem(run.mismatch, count)]

      run.requests != count ->
        [
          %{
            kind: :nondeterministic,
            index: nil,
            request: nil,
            expected_site: nil,
            reason:
              "a run without failures made #{run.requests} " <>
                "#{plural(run.requests, "allocation")}, the first run made #{count}"
          }
        ]

      failed?(run.outcome, expect) ->
        [%{kind: :failed_without_injection, index: nil, outcome: run.outcome}]

      true ->
        leak_problems(nil, nil, run)
    end
  end

  defp mismatch_problem({{index, _, _, _} = actual, expected_site}, count) do
    expected_site = resolve(expected_site)

    reason =
      if expected_site == nil do
        "allocation ##{index} did not happen in the first run, which made #{count}"
      else
        "allocation ##{index} came from #{expected_site} in the first run"
      end

    %{
      kind: :nondeterministic,
      index: index,
      request: request(actual),
      expected_site: expected_site,
      reason: reason
    }
  end

  # Misuse (a double free, a write past the end, ...) in any run is a
  # problem of its own, whatever the run returned.
  defp misuse_problems(index, request, %{misuse: misuse, misused: misused}) do
    misuse
    |> Enum.with_index()
    |> Enum.map(fn {{kind, line, after_requests}, i} ->
      %{
        kind: :misuse,
        index: index,
        request: request,
        misuse: kind,
        report: BeamAlloc.Symbolizer.resolve_sites(line),
        after: after_requests,
        more: if(i == length(misuse) - 1, do: misused - length(misuse), else: 0)
      }
    end)
  end

  defp misuse_problems(_index, _request, _run), do: []

  defp leak_problems(index, request, %{leaks: leaks, leaked: leaked, lost: lost} = run) do
    misuse_problems(index, request, run) ++
      leak_problems_only(index, request, leaks, leaked, lost)
  end

  defp leak_problems_only(index, request, leaks, leaked, lost) do
    lost =
      if lost do
        [%{kind: :incomplete, index: index, request: request}]
      else
        []
      end

    leaks =
      if leaked > 0 do
        blocks =
          leaks
          |> Enum.map(fn {block_index, size, site} ->
            %{index: block_index, size: size, site: resolve(site)}
          end)
          |> Enum.sort_by(& &1.index)

        [%{kind: :leak, index: index, request: request, blocks: blocks, leaked: leaked}]
      else
        []
      end

    lost ++ leaks
  end

  defp outcome_problems(index, request, %{outcome: outcome}, expect) do
    cond do
      surfaced?(outcome, expect) ->
        []

      failed?(outcome, :any) ->
        [
          %{
            kind: :unexpected_error,
            index: index,
            request: request,
            outcome: outcome,
            expect: expect
          }
        ]

      true ->
        [%{kind: :swallowed, index: index, request: request, outcome: outcome}]
    end
  end

  defp request({index, kind, size, site}),
    do: %{index: index, kind: kind, size: size, site: resolve(site)}

  # Sites come as lib.so+0x1c1b: their source lines when known.
  defp resolve(nil), do: nil
  defp resolve(site), do: BeamAlloc.Symbolizer.resolve_sites(site)

  # Did the outcome surface a failure the way expect asks?
  defp surfaced?({:raised, _, _, _}, expect), do: expect in [:any, :raise]
  defp surfaced?({:returned, value}, expect), do: expect != :raise and error_value?(value)

  # Is the outcome a failure at all (for the runs without injection, where
  # a returned error is fine when only raising counts)?
  defp failed?(outcome, :raise), do: surfaced?(outcome, :raise)
  defp failed?(outcome, _), do: surfaced?(outcome, :any)

  defp error_value?(:error), do: true
  defp error_value?({:error, _}), do: true
  defp error_value?(_), do: false

  defp plural(1, word), do: word
  defp plural(_, word), do: word <> "s"
end
