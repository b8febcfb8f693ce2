defmodule BeamAlloc.CollectorSettingsTest do
  # The collector's application environment (erlang/beam_alloc_collector.erl)
  # as a sys.config gives it. A value it cannot take was used as the
  # default, silently: {auto_collect, "false"} or off went on collecting,
  # {auto_collect_min_bytes, 0} meant 4 MiB (a release hunt). Not async:
  # the environment is the node's.
  use ExUnit.Case, async: false

  import Bitwise
  import ExUnit.CaptureLog

  setup do
    on_exit(fn ->
      Application.put_env(:beam_alloc, :auto_collect, false)
      Application.delete_env(:beam_alloc, :auto_collect_min_bytes)
      Application.delete_env(:beam_alloc, :auto_collect_interval)
    end)
  end

  # As the application's start starts it.
  defp restart_collector do
    :ok = Supervisor.terminate_child(BeamAlloc.Supervisor, :beam_alloc_collector)
    {:ok, _} = Supervisor.restart_child(BeamAlloc.Supervisor, :beam_alloc_collector)
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
      # Said once per value, not at every tick. (capture_log takes what
      # any process logs, the reporter's backlog too: only the collector's
      # warning counts.)
      refute tick_log(:auto_collect, value) =~ "application environment"
    end
  end

  test "bad numbers are said; a min_bytes of 0 is taken" do
    Application.put_env(:beam_alloc, :auto_collect, true)
    assert tick_log(:auto_collect_min_bytes, -1) =~ "auto_collect_min_bytes is -1"
    refute tick_log(:auto_collect_min_bytes, 0) =~ "application environment"
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

  test "every key is checked at the application's start, unknown ones too" do
    # auto_collect and auto_collect_min_bytes were said only at the first
    # tick, a second later, and a key the collector does not know (a typo)
    # not at all (an audit). (The collector starts with the application:
    # restarted here as the application's start starts it.)
    # Restarted again at the end, with the environment as the others
    # expect it: the new collector remembers the bad values it said, and
    # did not say -1 again to "bad numbers are said" when that ran after
    # this test (mix test --seed 1).
    on_exit(fn ->
      Application.delete_env(:beam_alloc, :auto_colect)
      Application.put_env(:beam_alloc, :auto_collect, false)
      Application.delete_env(:beam_alloc, :auto_collect_min_bytes)
      restart_collector()
    end)

    Application.put_env(:beam_alloc, :auto_collect, :off)
    Application.put_env(:beam_alloc, :auto_collect_min_bytes, -1)
    Application.put_env(:beam_alloc, :auto_colect, false)

    log =
      capture_log(fn ->
        restart_collector()
        # (Before any tick: the collector now logs at its start.)
        Application.put_env(:beam_alloc, :auto_collect, false)
      end)

    assert log =~ ~r/auto_collect is :?off: expected true or false/
    assert log =~ "auto_collect_min_bytes is -1: expected a non-negative integer"
    assert log =~ ~r/unknown key :?auto_colect \(its value: false\)/
    assert log =~ "known keys: auto_collect, auto_collect_interval, auto_collect_min_bytes"
  end

  test "an interval send_after cannot take is said, and the collector stays up" do
    # A larger one made erlang:send_after/3 raise badarg: the collector
    # crashed at its next tick, and again in init/1 at each restart, until
    # the supervisor gave up and stopped the application (review).
    Application.put_env(:beam_alloc, :auto_collect, false)
    pid = Process.whereis(:beam_alloc_collector)

    for value <- [4_294_967_296, 1 <<< 70] do
      Application.put_env(:beam_alloc, :auto_collect_interval, value)

      log =
        capture_log(fn ->
          send(pid, :tick)
          assert :beam_alloc_collector.tick() == []
        end)

      assert log =~ "auto_collect_interval is #{value}: expected a positive integer"
      assert Process.whereis(:beam_alloc_collector) == pid
    end
  end

  test "the state of the version before (a release upgrade) is taken" do
    # Seen alone was the state before {Driver, Seen}: the new code, loaded
    # over a running collector, crashed at its first tick on it.
    pid = Process.whereis(:beam_alloc_collector)
    Application.put_env(:beam_alloc, :auto_collect, true)
    Application.put_env(:beam_alloc, :auto_collect_min_bytes, 1 <<< 62)
    :sys.replace_state(pid, fn {_, seen} -> seen end)
    assert is_list(:beam_alloc_collector.tick())
    assert Process.whereis(:beam_alloc_collector) == pid
    :sys.suspend(pid)
    :sys.change_code(pid, :beam_alloc_collector, :old, [])
    :sys.resume(pid)
    assert {:loaded, %{}} = :sys.get_state(pid)
    :sys.replace_state(pid, fn {_, seen} -> seen end)
    :sys.suspend(pid)
    assert :ok = :sys.change_code(pid, :beam_alloc_collector, :old, [])
    :sys.resume(pid)
    assert {:unknown, %{}} = :sys.get_state(pid)
  end

  test "an interval lowered at run time takes effect within a second" do
    # The timer was armed with the interval of the tick before: from an
    # hour back to 50 ms, nothing ran for the hour (a hunt: a burst held
    # 16 MB the while).
    Application.put_env(:beam_alloc, :auto_collect, false)
    Application.put_env(:beam_alloc, :auto_collect_interval, 3_600_000)
    # Every timer armed before (a second at most) fires and arms the next.
    Process.sleep(1_100)
    Application.put_env(:beam_alloc, :auto_collect_interval, 50)
    Application.put_env(:beam_alloc, :auto_collect, true)
    # A run says so: it reads min_bytes, here a value it cannot take.
    bad = "bad #{System.unique_integer([:positive])}"
    Application.put_env(:beam_alloc, :auto_collect_min_bytes, bad)
    log = capture_log(fn -> Process.sleep(1_500) end)
    assert log =~ "auto_collect_min_bytes is \"#{bad}\""
  end
end
