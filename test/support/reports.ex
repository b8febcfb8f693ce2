defmodule BeamAlloc.Test.Reports do
  @moduledoc false
  # Reports are messages to BeamAlloc.Reporter: a test that made some
  # waits for them here.

  alias BeamAlloc.Reporter

  # The reports since mark (Reporter.since/1) once count of them have
  # arrived, or after 2 s (then what arrived: the test's assertion says
  # what is missing).
  def wait_since(mark, count \\ 1, tries \\ 200) do
    if Reporter.mark() < mark + count and tries > 0 do
      Process.sleep(10)
      wait_since(mark, count, tries - 1)
    else
      Reporter.since(mark)
    end
  end

  # The line of source that carries the comment /* SITE: marker */: where
  # a test NIF marks a call its reports must name.
  def line_of(source, marker) do
    source
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_index(&String.contains?(&1, "/* SITE: #{marker} */"))
    |> Kernel.+(1)
  end

  # The first recent report that matches pattern, once one has arrived
  # (a test fails after 2 s without one).
  def report(pattern, tries \\ 200) do
    case Enum.find(Reporter.recent(), &(elem(&1, 1) =~ pattern)) do
      {_, line} ->
        line

      nil when tries > 0 ->
        Process.sleep(10)
        report(pattern, tries - 1)

      nil ->
        ExUnit.Assertions.flunk(
          "no report matching #{inspect(pattern)} in #{inspect(Reporter.recent())}"
        )
    end
  end

  # The pid registered as name, once a process (another test) registers it.
  def registered(name, tries \\ 6000) do
    case Process.whereis(name) do
      nil when tries > 0 ->
        Process.sleep(10)
        registered(name, tries - 1)

      pid ->
        pid
    end
  end
end
