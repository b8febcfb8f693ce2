defmodule BeamAlloc.Test.ChildVm do
  @moduledoc false
  # Runs an expression in a VM of its own with 8 normal and 4 dirty CPU
  # schedulers, under a watchdog (timeout -s KILL) that turns a hang into
  # a failure instead of hanging the suite: {output, exit status}.

  def run(expression, seconds) do
    ebin = Application.app_dir(:beam_alloc, "ebin")

    args = [
      "-s",
      "KILL",
      to_string(seconds),
      System.find_executable("elixir"),
      "--erl",
      "+S 8:8 +SDcpu 4:4 +SDio 4",
      "-pa",
      ebin,
      "-e",
      expression
    ]

    {out, status} = System.cmd("timeout", args, stderr_to_stdout: true)
    if status == 137, do: ExUnit.Assertions.flunk("no answer in #{seconds} s (hung?):\n#{out}")
    {out, status}
  end
end
