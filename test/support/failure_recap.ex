defmodule BeamAlloc.Test.FailureRecap do
  # An ExUnit formatter that keeps every failure, and print/0, which
  # test_helper.exs runs from ExUnit.after_suite/1 to print them once more.
  # ExUnit prints a failure where it happens, among hundreds of lines of
  # dots and expected warnings; a CI log that keeps only its tail then
  # shows "1 failure" without saying which.
  #
  # Why after_suite: each formatter is a process of its own, so a write made
  # here at :suite_finished is not ordered against ExUnit.CLIFormatter's
  # (it came out among the dots in most runs). after_suite runs once the
  # runner has stopped every formatter, and stopping one first drains its
  # queue: the recap is then the last thing printed.
  use GenServer

  @key {__MODULE__, :failures}

  def init(_opts) do
    :persistent_term.put(@key, [])
    {:ok, []}
  end

  def handle_cast({:test_finished, %ExUnit.Test{state: {:failed, _}} = test}, failures) do
    {:noreply, keep([test | failures])}
  end

  def handle_cast({:module_finished, %ExUnit.TestModule{state: {:failed, _}} = mod}, failures) do
    {:noreply, keep([mod | failures])}
  end

  def handle_cast(_event, failures), do: {:noreply, failures}

  # Kept where print/0, in another process, finds them. (Failures are few:
  # the term is rewritten only when a test fails.)
  defp keep(failures) do
    :persistent_term.put(@key, failures)
    failures
  end

  def print do
    case :persistent_term.get(@key, []) |> Enum.reverse() do
      [] ->
        :ok

      failures ->
        recap =
          failures
          |> Enum.with_index(1)
          |> Enum.map(fn {failure, n} -> [format(failure, n), "\n"] end)

        IO.write(["\nThe failures again, in the order they happened:\n\n" | recap])
    end
  end

  defp format(%ExUnit.Test{state: {:failed, failures}} = test, n) do
    ExUnit.Formatter.format_test_failure(test, failures, n, 100, &plain/2)
  end

  defp format(%ExUnit.TestModule{state: {:failed, failures}} = mod, n) do
    ExUnit.Formatter.format_test_all_failure(mod, failures, n, 100, &plain/2)
  end

  # No colours, no diffs: the recap is meant for logs.
  defp plain(:diff_enabled?, _), do: false
  defp plain(_key, msg), do: msg
end
