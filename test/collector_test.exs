defmodule BeamAlloc.CollectorTest do
  # The application's collector (erlang/beam_alloc_collector.erl) in a VM of
  # its own, where beam_alloc's priv lacks the driver library.
  use ExUnit.Case, async: true

  test "without the driver library the collector idles, saying so once" do
    dir = copy_without_driver("beam_alloc_collector")

    script = """
    Application.put_env(:beam_alloc, :auto_collect_interval, 50)
    {:ok, _} = Application.ensure_all_started(:beam_alloc)
    Process.sleep(1_000)
    pid = Process.whereis(:beam_alloc_collector)
    IO.puts("alive=\#{is_pid(pid) and Process.alive?(pid)} ticks=\#{inspect(:beam_alloc_collector.tick())}")
    """

    {out, status} =
      System.cmd(
        "timeout",
        [
          "-s",
          "KILL",
          "60",
          System.find_executable("elixir"),
          "-pa",
          Path.join([dir, "beam_alloc", "ebin"]),
          "-e",
          script
        ],
        stderr_to_stdout: true
      )

    assert status == 0, out
    assert out =~ "alive=true ticks=[]", out
    # Ticks every 50 ms for a second: said once, not once per tick (the
    # code server loaded the module again at every call, logging the
    # failure of its on_load each time).
    assert length(Regex.scan(~r/priv\/beam_alloc_testing.so\) did not load/, out)) == 1, out
  end

  test "a release without the driver library boots (embedded mode: on_load failures are fatal)" do
    # Mix and rebar3 releases boot in embedded mode, loading every module
    # of the release before any starts: a module whose on_load fails stops
    # the boot ("Kernel pid terminated"), which the driver's did when
    # priv/beam_alloc_testing.so was left out of a release (audit).
    dir = copy_without_driver("beam_alloc_embedded")
    apps = [:kernel, :stdlib, :compiler, :elixir, :logger, :beam_alloc]
    rel_apps = for app <- apps, do: {app, Application.spec(app, :vsn)}
    rel = {:release, {~c"r", ~c"1"}, {:erts, :erlang.system_info(:version)}, rel_apps}
    File.write!(Path.join(dir, "r.rel"), :io_lib.format("~p.~n", [rel]))
    ebin = Path.join([dir, "beam_alloc", "ebin"])
    r = to_charlist(Path.join(dir, "r"))
    {:ok, _, _} = :systools.make_script(r, [{:path, [to_charlist(ebin)]}, :local, :silent])

    script = ~S"""
    Driver = try beam_alloc:stats(lists) catch error:R -> R end,
    io:format("beam_alloc=~p collector=~p stats=~0p~n",
              [lists:keymember(beam_alloc, 1, application:which_applications()),
               is_pid(whereis(beam_alloc_collector)), Driver]),
    halt().
    """

    {out, status} =
      System.cmd(
        "timeout",
        ["-s", "KILL", "60", "erl", "-boot", to_string(r), "-mode", "embedded", "-noshell"] ++
          ["-eval", script],
        stderr_to_stdout: true,
        cd: dir
      )

    assert status == 0, out
    assert out =~ "beam_alloc=true collector=true stats={driver,{missing,", out
    assert out =~ "beam_alloc_testing.so", out
  end

  # A copy of beam_alloc's application directory, in a directory of the
  # test's own, without priv/beam_alloc_testing.so.
  defp copy_without_driver(name) do
    dir = BeamAlloc.Test.TmpDir.path!(name)
    File.mkdir_p!(dir)
    # (Its files, not the links to them: a checkout that has a priv/ of its
    # own, made by rebar3 compile there, has _build link to it, relatively,
    # and the link copied led nowhere.)
    File.cp_r!(to_string(:code.lib_dir(:beam_alloc)), Path.join(dir, "beam_alloc"),
      dereference_symlinks: true
    )

    File.rm!(Path.join([dir, "beam_alloc", "priv", "beam_alloc_testing.so"]))
    dir
  end
end
