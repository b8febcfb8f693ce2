defmodule BeamAlloc.Test.Peers do
  @moduledoc false
  # Many processes that hand blocks to each other (test/concurrency_test.exs,
  # test/resource_test.exs): started together, each told who the others
  # are, their results collected, and what they left behind waited for.

  import ExUnit.Assertions

  # Starts count linked processes running fun.(i, peers) for i in 1..count;
  # peers (every pid, its own included) arrives once all are started.
  def start(count, fun) do
    pids =
      for i <- 1..count do
        spawn_link(fn ->
          peers = receive do: ({:peers, peers} -> peers)
          fun.(i, peers)
        end)
      end

    Enum.each(pids, &send(&1, {:peers, pids}))
    pids
  end

  # The result each of pids sends as {tag, pid, result}, in pids' order;
  # none of them may hold errors. Returns key -> the sum of key over them.
  def totals(pids, tag, timeout) do
    results =
      for pid <- pids do
        assert_receive {^tag, ^pid, result}, timeout
        result
      end

    for result <- results, do: assert(%{errors: []} = result)
    fn key -> results |> Enum.map(& &1[key]) |> Enum.sum() end
  end

  # Polls, collecting garbage everywhere, until fun is true (about 10 s at
  # most): blocks held by terms of processes that are gone are freed by
  # their resource destructors only when those terms are collected.
  def eventually(fun, tries \\ 200) do
    cond do
      fun.() ->
        true

      tries == 0 ->
        false

      true ->
        Enum.each(Process.list(), &:erlang.garbage_collect/1)
        Process.sleep(50)
        eventually(fun, tries - 1)
    end
  end
end
