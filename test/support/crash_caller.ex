defmodule BeamAlloc.Test.CrashCaller do
  @moduledoc false
  # Checks whose function crashes the VM (test/fault_injection_crash_test.exs,
  # in a child VM): the crash note names the code that called the check.
  alias BeamAlloc.Test.Faults

  def checks do
    # CALLER: the next line
    {:ok, _} = BeamAlloc.Testing.check_all_allocation_failures(fn -> Faults.uses_null(7) end)
  end

  # As ExUnit's test macro makes a test: the check last, a tail call, so
  # this function's frame is gone from the stack when the check runs.
  def unquote(:"test parse under the check")(_context) do
    BeamAlloc.Testing.check_all_allocation_failures(fn -> Faults.uses_null(7) end)
  end
end
