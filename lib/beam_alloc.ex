defmodule BeamAlloc do
  @moduledoc """
  Allocators for Erlang/Elixir NIFs written in C.

  `beam_alloc` is a C library (`include/beam_alloc.h`, `build/libbeam_alloc.a`)
  that gives NIF authors the allocators of Zigler's allocator guide behind
  one interface, the contract of Zig's `std.mem.Allocator`:

    * `beam_raw_allocator` wraps `enif_alloc`, so the VM accounts for every
      byte (`:erlang.memory(:system)`); alignment above 8 fails cleanly.
    * `beam_large_allocator` serves any power-of-two alignment on top of it.
    * `beam_general_purpose_allocator` is fast, thread-safe and detects leaks.
    * `beam_allocator` is a thread-local set on entry to every NIF declared
      with `BEAM_NIF`; `BEAM_NIF(name, .leak_check = true)` runs the call on a
      fresh leak-checking allocator and raises `RuntimeError` on a leak.
    * arena, fixed-buffer and fault-injecting allocators compose over any of
      them.

  The Elixir side has the tools (see `guides/allocators.md`):

    * `BeamAlloc.Testing.check_all_allocation_failures/2` fails each
      allocation of a function's NIF calls in turn, from ExUnit, and reports
      leaks, swallowed failures and nondeterminism (per process: async tests
      are not affected);
    * `use BeamAlloc.Nif` loads a NIF library with per-NIF allocator options
      (`leak_check`, `scratch`, `allocator`) that override the C ones;
    * `BeamAlloc.stats/1` reads the allocator counters of a module's NIF
      library.

  A project with beam_alloc as a dependency builds its own NIFs with the
  `:beam_alloc` compiler (`compilers: [:beam_alloc] ++ Mix.compilers()`,
  see `Mix.Tasks.Compile.BeamAlloc`). This Mix project builds the library,
  the fault-injection driver and the NIFs of its test suite through the
  `:beam_alloc_make` compiler (see `Mix.Tasks.Compile.BeamAllocMake`).

  The tools are Erlang modules underneath (`beam_alloc_testing`,
  `beam_alloc:stats/1`), usable from Erlang without Elixir.
  """

  @typedoc "Counters of one allocator of a NIF library (see `stats/1`)."
  @type allocator_stats :: %{
          live_bytes: non_neg_integer(),
          live_blocks: non_neg_integer(),
          peak_bytes: non_neg_integer(),
          allocations: non_neg_integer(),
          frees: non_neg_integer(),
          failed: non_neg_integer()
        }

  @doc """
  The allocator counters of the NIF library loaded for `module`.

  Every NIF library built with beam_alloc has its own copy of the
  allocators, so the numbers are that library's alone:

    * `:raw` - calls through `beam_raw_allocator` (`enif_alloc`);
    * `:large` - calls through `beam_large_allocator`, including the chunks
      the general purpose allocator takes from it;
    * `:general_purpose` - the process-wide general purpose allocator, with
      `:backing_bytes`, what it holds of the large allocator (its slabs,
      partly used or cached, and its metadata);
    * each instance the library registered with
      `beam_stats_register("name", a)`, under `:name`, counted as
      `:general_purpose` is.

  After a code upgrade to a new library file, while the old copy is still
  mapped (the old version not purged, a resource of it alive, or, purged
  or not, the copy kept for SQLite's, zlib's or zstd's hooks), each key
  sums that key over every copy: SQLite started by the old copy goes on
  allocating from the old copy's instance, which the new copy's
  connections use too, and so does a stream in a resource the new copy
  took over. `peak_bytes` is then the sum of each copy's peak. SQLite is
  one per process: what it holds is counted by the library (of any
  module) whose `beam_sqlite3_use` succeeded.

  `live_bytes` counts the lengths asked for. The VM's own figure
  (`:erlang.memory(:system)`) adds each allocator's overhead: about 16 bytes
  per `enif_alloc` block, the large allocator's alignment padding, and the
  general purpose allocator's unused slab space (`backing_bytes` minus its
  `live_bytes`). `peak_bytes` can lag by up to 64 KiB per thread, and is
  never below the `live_bytes` it comes with.

  Raises `ArgumentError` when no such library is loaded. A module not
  loaded yet is loaded first; one whose library answered before and that
  is not loaded now (deleted and purged during an upgrade, its new version
  not loaded yet) is not: the error says so, and a loop of calls during
  the upgrade reads it until the new version is loaded. (Loading it then
  raced the upgrade's own load, which OTP 25 never finished.)

      iex> BeamAlloc.stats(MyNif).raw
      %{live_bytes: 1000000, live_blocks: 1, peak_bytes: 1000000,
        allocations: 3, frees: 2, failed: 0}
  """
  @spec stats(module()) :: %{
          required(:raw) => allocator_stats(),
          required(:large) => allocator_stats(),
          required(:general_purpose) => map(),
          optional(atom()) => map()
        }
  def stats(module) when is_atom(module) and module not in [nil, true, false] do
    # :beam_alloc.find_stats/1 loads the module first (its @on_load loads
    # its NIF library) when it is not loaded and never answered.
    case erlang_side(module, fn -> :beam_alloc.find_stats(module) end) do
      {:ok, stats} -> stats
      {:error, :not_loaded} -> not_loaded!(module)
    end
  end

  # nil (a missing option, Keyword.get's default) and the booleans are
  # atoms, but no module: they read "no NIF library ... is loaded for nil",
  # which sent one looking for a library (a hunt).
  def stats(other) do
    raise ArgumentError, "expected a module name, got: #{inspect(other)}"
  end

  @doc """
  Gives back what the process-wide general purpose allocator of `module`'s
  NIF library holds and does not need (`beam_gpa_collect`): the current
  slabs of schedulers that are idle, dirty ones included, every slab without
  a live block, and every wholly free segment, so that
  `:erlang.memory(:system)` goes down after a burst. The library's
  instances registered for named stats (`beam_stats_register`, SQLite's
  say) are collected too, and so are the instances of its live
  `BEAM_RESOURCE_GPA` resources (first: what they give back goes to their
  parent), and so is every copy of the library loaded for
  `module` (an old and a new version's, during an upgrade). Runs on a dirty
  scheduler; call it from any process, for example after a burst whose
  blocks were freed elsewhere. Raises `ArgumentError` when no library built
  with beam_alloc is loaded for `module`; loads a module not loaded yet
  first, but not one in an upgrade's gap, as `stats/1` does.

  The beam_alloc application also calls it by itself for a library that
  was idle for a second and holds 4 MiB or more beyond what it keeps live,
  and for a busy one that held that much at 30 ticks in a row (30 s at
  the default interval; application environment `auto_collect`, `auto_collect_interval`,
  `auto_collect_min_bytes`: README, "An idle node gives it back unasked").
  """
  @spec collect(module()) :: :ok
  def collect(module) when is_atom(module) and module not in [nil, true, false] do
    erlang_side(module, fn -> :beam_alloc.collect(module) end)
  end

  def collect(other) do
    raise ArgumentError, "expected a module name, got: #{inspect(other)}"
  end

  # A call of :beam_alloc for module, its errors as Elixir's: no library
  # for module, an ArgumentError; beam_alloc's own driver
  # (priv/beam_alloc_testing.so) not loaded, a RuntimeError saying so (it
  # read as "no NIF library ... for the module": review).
  defp erlang_side(module, fun) do
    fun.()
  rescue
    error in ErlangError ->
      case error.original do
        {:not_loaded, ^module} ->
          not_loaded!(module)

        {:driver, reason} ->
          raise RuntimeError,
                "beam_alloc's driver (priv/beam_alloc_testing.so) could not be loaded: " <>
                  inspect(reason)

        _ ->
          reraise error, __STACKTRACE__
      end
  end

  # A module whose library answered before and that is not loaded now is
  # in an upgrade's gap (deleted and purged, its new version not loaded
  # yet): "no library built with beam_alloc" would send one to the build.
  # Says what loads it: stats/1 and collect/1 no longer do, so one deleted
  # by hand reads this until it is loaded.
  defp not_loaded!(module) do
    if not :erlang.module_loaded(module) and :beam_alloc.answered(module) do
      raise ArgumentError,
            "#{inspect(module)} is not loaded now: its NIF library answered before, " <>
              "and the module was deleted or purged since (an upgrade between its " <>
              "delete and its new version's load?); stats/1 and collect/1 do not " <>
              "load it again: load it (Code.ensure_loaded/1) and call again"
    end

    raise ArgumentError,
          "no NIF library built with beam_alloc is loaded for #{inspect(module)} " <>
            "(its NIF library must be loaded, and initialised with BEAM_NIF_INIT)"
  end
end
