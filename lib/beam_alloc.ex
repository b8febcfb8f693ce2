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
      (`leak_check`, `scratch`, `allocator`) that override the C ones.

  This Mix project builds the library, the fault-injection driver and the
  NIFs of its test suite through the `:beam_alloc_make` compiler (see
  `Mix.Tasks.Compile.BeamAllocMake`).
  """
end
