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
      time the function returned, or later by a resource destructor (a
      resource the function returned or another process held), before the
      check ends; a block that only a later run's call frees is a leak;
    * the run repeated the first one: the same allocations, from the same
      call sites, up to the failing one; a function whose allocations depend
      on a counter, the clock or randomness cannot be checked this way, and
      is reported as nondeterministic. (A NIF library that the runs
      called, loaded again while the check runs (a hot upgrade to another
      copy than the one the first run counted), raises a `RuntimeError`
      saying so instead of the problems its runs then show: run the check
      again. A library loaded again that no run called, another module's,
      changes nothing: the function's own problems are raised, or the
      check passes.)

  Then it runs the function once more without failures, which must make the
  same allocations as the first run. Problems are collected and raised
  together as a `BeamAlloc.AllocationFailureError`, naming each allocation
  by number and by site: the function and source line of the call
  (`parse_list (c_src/my_nif.c:42)`) when the NIF library has debug
  information, else its function or the library and offset of the call
  (`my_nif.so+0x1a2b`); a request a C library makes through the NIF's
  hooks (zlib, zstd, SQLite) by the calls that led to it, up to the NIF's
  (16 frames at most; `deflateInit2_ (libz.so.1+0x8d86) <- deflateInit_
  (libz.so.1+0x8fbd) <- compress_nif (c_src/my_nif.c:88)`). A misuse of
  memory in any run (a double free, a write past the end of a block, ...)
  is a problem too, with its report (which `BeamAlloc.Case` then does not
  count against the test again: the check turned it into its error; nor
  the reports of a `leak_check` NIF's leak the check lists).

  ## What is counted

  Every request for memory through `beam_allocator` in a `BEAM_NIF` that the
  calling process makes, in any NIF library built with beam_alloc's
  `BEAM_NIF_INIT`: allocations, and resizes or remaps that grow a block
  (each may fail; a `beam_realloc` counts the same over any allocator, even
  when it has to allocate, copy and free: a growth once, a shrink not at
  all). Allocations through other allocators
  (`beam_raw_allocator`, `beam_general_purpose_allocator`, malloc), in raw
  NIFs, or in other processes (including processes the function spawns) are
  not counted and never fail.

  ## Concurrency

  The fault plan belongs to the calling process: other processes calling the
  same NIFs at the same time, async tests included, are not affected. A
  process can run one check at a time: a check called inside the function
  of another raises `ArgumentError`, and when the function fails for it,
  so does the outer check, saying that checks cannot be nested.

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

  The checker itself is the Erlang module `beam_alloc_testing`, so Erlang
  test suites call `beam_alloc_testing:check_all_allocation_failures/1,2`
  without Elixir; this module validates the options and raises Elixir
  exceptions from its results.
  """

  alias BeamAlloc.AllocationFailureError

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
  `{:ok, 0}`: it checked nothing, as when the NIF is called through
  another process (a GenServer, a Task), whose calls are not counted.
  Match the count you expect (`{:ok, 4} = ...`) to see that.

  The first run must succeed: a function that raises, or returns an error
  (as `:expect` defines it), before any failure is injected raises
  `BeamAlloc.AllocationFailureError` at once.

  ## Options

    * `:expect` - how an induced failure must surface: `:any` (the default),
      `:raise` or `:error_tuple`; see `t:expect/0`.
    * `:modules` - the NIF modules whose allocations are counted and failed:
      `:all` (the default: every loaded NIF library built with beam_alloc),
      or a non-empty list of modules, which are loaded first if needed. With `:all`,
      a library that the function loads itself (its module's first call) is
      attached after the first run, which then ran outside the check, for
      real, and runs again: load such modules first (`Code.ensure_loaded!/1`)
      when that would harm (a remote capture's module, `&MyNif.parse/0`, is
      loaded first by the check).

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

    case :beam_alloc_testing.run_check(fun, expect, modules, caller_text(fun)) do
      {:ok, count} ->
        {:ok, count}

      {:problems, problems, count} ->
        raise AllocationFailureError,
          problems: Enum.map(problems, &to_elixir/1),
          allocations: count

      # (:beam_alloc_testing's nested/1 knows this text, which it builds:
      # an outer check whose function failed with it raises the error below.)
      {:error, {:already_running, pid}} ->
        raise ArgumentError, :beam_alloc_testing.refusal_message(pid)

      {:error, {:cannot_nest, {:already_running, pid}}} ->
        raise ArgumentError,
              "the function given to check_all_allocation_failures/2 called " <>
                "check_all_allocation_failures/2 itself, which was refused (a check is " <>
                "already running in this process, #{inspect(pid)}: checks cannot be " <>
                "nested), and the function failed"

      {:error, {:not_loaded, missing}} ->
        raise ArgumentError,
              "no NIF library built with beam_alloc is loaded for " <>
                Enum.map_join(missing, ", ", &inspect/1) <>
                " (its NIF library must be loaded, with BEAM_NIF_INIT, before the check)"

      {:error, {:reloaded, modules}} ->
        raise RuntimeError,
              "the NIF library of " <>
                Enum.map_join(modules, ", ", &inspect/1) <>
                " was loaded again while the check ran (a hot upgrade: another copy of the " <>
                "library): the runs after it called that copy, not the one the first run " <>
                "counted, and tell nothing of the function; run the check again"

      {:error, {:driver, reason}} ->
        raise RuntimeError, "could not start the allocation failure check: #{inspect(reason)}"
    end
  end

  def check_all_allocation_failures(fun, opts) when is_list(opts) do
    raise ArgumentError,
          "check_all_allocation_failures/2 expects a function of arity 0, got: #{inspect(fun)}"
  end

  def check_all_allocation_failures(_fun, opts) do
    raise not_options(opts)
  end

  # The code that called the check as Elixir writes it, for the note a
  # crash during the check writes: MyTest."test parse"/1 at
  # test/my_test.exs:12 (:beam_alloc_testing.caller/1 finds it).
  defp caller_text(fun) do
    case :beam_alloc_testing.caller(fun) do
      :none -> ""
      {m, f, a, location} -> Exception.format_mfa(m, test_or(f), a) <> location_text(location)
    end
  end

  # A test BeamAlloc.Case wraps (defoverridable) has its body, where the
  # fun is written, under "test parse (overridable 1)": the note named
  # that, where ExUnit names the test "test parse" (review of the README's
  # example, whose module uses the guard).
  defp test_or(f), do: BeamAlloc.Case.test_of_body(f) || f

  defp location_text(location) do
    case {location[:file], location[:line]} do
      {nil, _} -> ""
      {file, nil} -> " at #{file}"
      {file, line} -> " at #{file}:#{line}"
    end
  end

  defp not_options(opts) do
    ArgumentError.exception(
      "check_all_allocation_failures/2 expects a keyword list of options, got: #{inspect(opts)}"
    )
  end

  defp validate_options!(opts) do
    # (A keyword list first: Keyword.validate!/2 raises a FunctionClauseError
    # on an improper list, which would hide this error.)
    unless Keyword.keyword?(opts), do: raise(not_options(opts))

    # (Of two, Keyword.validate!/2 and opts[...] would take one and drop
    # the other unchecked.)
    for key <- [:expect, :modules], length(Keyword.get_values(opts, key)) > 1 do
      raise ArgumentError, "option #{inspect(key)} given twice"
    end

    opts = Keyword.validate!(opts, expect: :any, modules: :all)

    expect = opts[:expect]

    unless expect in [:any, :raise, :error_tuple] do
      raise ArgumentError,
            "invalid value for :expect option, expected :any, :raise or :error_tuple, got: " <>
              inspect(expect)
    end

    modules = opts[:modules]

    # (A proper list first: Enum.all?/2 raises a FunctionClauseError on an
    # improper one, which would hide this error. An empty list would count
    # nothing and pass: {:ok, 0}.)
    unless modules == :all or
             (is_list(modules) and modules != [] and not List.improper?(modules) and
                Enum.all?(modules, &is_atom/1)) do
      raise ArgumentError,
            "invalid value for :modules option, expected :all or a non-empty list of modules, " <>
              "got: " <> inspect(modules)
    end

    {expect, modules}
  end

  # The Erlang checker writes an absent index, request or site as
  # :undefined; Elixir's problems use nil.
  @absent [:index, :request, :expected_site, :site]

  defp to_elixir(problem) when is_map(problem) do
    Map.new(problem, fn
      {key, :undefined} when key in @absent -> {key, nil}
      {:request, request} when is_map(request) -> {:request, to_elixir(request)}
      {:blocks, blocks} -> {:blocks, Enum.map(blocks, &to_elixir/1)}
      other -> other
    end)
  end
end
