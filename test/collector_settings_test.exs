defmodule BeamAlloc.CollectorSettingsTest do
  # The collector's application environment (erlang/beam_alloc_collector.erl)
  # as a sys.config gives it. A value it cannot take was used as the
  # default, silently: {auto_collect, "false"} or off went on collecting,
  # {auto_collect_min_bytes, 0} meant 4 MiB (a release hunt). Not async:
  # the environment is the node's.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  setup do
    on_exit(fn ->
      Application.put_env(:beam_alloc, :auto_collect, false)
      Application.delete_env(:beam_alloc, :auto_collect_min_bytes)
      Application.delete_env(:beam_alloc, :auto_collect_interval)
    end)
  end

  defp tick_log(key, value) do
    Application.put_env(:beam_alloc, key, value)
    capture_log(fn -> :beam_alloc_collector.tick() end)
  end

  test "an auto_collect that is not a boolean is said, once" do
    # (Elixir's Logger writes an atom of the ~p as :off, Erlang's as off.)
    for {value, text} <- [{"false", ~s("false")}, {:off, ":?off"}, {0, "0"}] do
      log = tick_log(:auto_collect, value)
      assert log =~ ~r/auto_collect is #{text}: /
      assert log =~ "expected true or false"
      # Said once per value, not at every tick.
      assert tick_log(:auto_collect, value) == ""
    end
  end

  test "bad numbers are said; a min_bytes of 0 is taken" do
    Application.put_env(:beam_alloc, :auto_collect, true)
    assert tick_log(:auto_collect_min_bytes, -1) =~ "auto_collect_min_bytes is -1"
    assert tick_log(:auto_collect_min_bytes, 0) == ""
    Application.put_env(:beam_alloc, :auto_collect, false)
    # (Read when the next tick is scheduled: by the ticker itself.)
    Application.put_env(:beam_alloc, :auto_collect_interval, "1000")

    log =
      capture_log(fn ->
        send(Process.whereis(:beam_alloc_collector), :tick)
        :beam_alloc_collector.tick()
      end)

    assert log =~ "auto_collect_interval is \"1000\": expected a positive integer"
  end
end
