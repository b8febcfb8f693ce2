defmodule BeamAlloc.Test.CrashCaller do
  @moduledoc false
  # Checks whose function crashes the VM (test/fault_injection_crash_test.exs,
  # in a child VM): the crash note names the code that called the check.
  alias BeamAlloc.Test.Faults

  def checks do
    # CALLER: the next line
    {:ok, _} = BeamAlloc.Testing.check_all_allocation_failures(fn -> Faults.uses_null(7) end)
  end

  # A test function whose last expression is the check (EUnit's shape: a
  # tail call), so its frame is gone from the stack when the check runs.
  def unquote(:"test parse under the check")(_context) do
    BeamAlloc.Testing.check_all_allocation_failures(fn -> Faults.uses_null(7) end)
  end

  # A fun that allocates nothing, for a check of a fun whose module is not
  # loaded (a fun from binary_to_term/1).
  def made_fun, do: fn -> :ok end
end
