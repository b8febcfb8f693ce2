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

  # A check reached through more nested calls than the stack the VM gives
  # a process (backtrace_depth, 8 unless set, four of them the check's
  # own) holds: the crash note named the innermost of them, nested_1/1.
  # (Five functions: the VM records a return address repeated by
  # recursion once.)
  def deep, do: kept(nested_5(fn -> Faults.uses_null(7) end))

  # (Not tail calls: each keeps its frame.)
  defp nested_5(fun), do: kept(nested_4(fun))
  defp nested_4(fun), do: kept(nested_3(fun))
  defp nested_3(fun), do: kept(nested_2(fun))
  defp nested_2(fun), do: kept(nested_1(fun))
  defp nested_1(fun), do: kept(BeamAlloc.Testing.check_all_allocation_failures(fun))

  defp kept(result) do
    send(self(), :nested)
    result
  end

  # A fun that allocates nothing, for a check of a fun whose module is not
  # loaded (a fun from binary_to_term/1).
  def made_fun, do: fn -> :ok end
end
