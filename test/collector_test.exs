defmodule BeamAlloc.CollectorTest do
  # The application's collector (erlang/beam_alloc_collector.erl) in a VM of
  # its own, where beam_alloc's priv lacks the driver library.
  use ExUnit.Case, async: true

  test "without the driver library the collector idles, saying so once" do
    # (The OS pid too: unique_integer is unique in one VM only, and two
    # suites run at once would share the directory, one deleting it.)
    dir =
      Path.join(
        System.tmp_dir!(),
        "beam_alloc_collector_#{System.pid()}_#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(dir)
    on_exit(fn -> File.rm_rf!(dir) end)
    lib = to_string(:code.lib_dir(:beam_alloc))
    File.cp_r!(lib, Path.join(dir, "beam_alloc"))
    File.rm!(Path.join([dir, "beam_alloc", "priv", "beam_alloc_testing.so"]))

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
    # Ticks every 50 ms for a second: one on_load failure at most, not one
    # per tick (the code server loaded the module again at every call).
    assert length(Regex.scan(~r/on_load function for module beam_alloc_testing_nif/, out)) <= 1,
           out
  end
end
