defmodule Mix.Tasks.Compile.BeamAllocAppup do
  @shortdoc "Writes beam_alloc's appup beside its .app"

  @moduledoc """
  Writes `ebin/beam_alloc.appup` from the `beam_alloc.app` that
  `compile.app` wrote (with `scripts/appup`, which the Erlang builds run
  too), so that a release upgrade to this version (`systools:make_relup`,
  `release_handler`) finds one. After the default compilers:

      compilers: [:beam_alloc_make] ++ Mix.compilers() ++ [:beam_alloc_appup]
  """

  use Mix.Task.Compiler

  # In each app of an umbrella, not in its root (see Compile.BeamAlloc).
  @recursive true

  @impl Mix.Task.Compiler
  def run(_args) do
    ebin = Mix.Project.compile_path()
    app = Path.join(ebin, "beam_alloc.app")
    script = Path.join(Path.dirname(Mix.Project.project_file()), "scripts/appup")
    # The beams too: a module that becomes a gen_server changes its
    # instruction with the same module list and version (the .app as it was).
    # (Listed, not Path.wildcard: that reads the ebin's path as a pattern,
    # and under a folder named with [ or { found no beam.)
    beams = for f <- File.ls!(ebin), Path.extname(f) == ".beam", do: Path.join(ebin, f)

    if Mix.Utils.stale?([app, script | beams], [appup()]) do
      case System.cmd("escript", [script, app], stderr_to_stdout: true) do
        {_, 0} -> {:ok, []}
        {out, status} -> Mix.raise("scripts/appup failed (exit status #{status}):\n#{out}")
      end
    else
      {:noop, []}
    end
  end

  @impl Mix.Task.Compiler
  def clean, do: File.rm(appup())

  defp appup, do: Path.join(Mix.Project.compile_path(), "beam_alloc.appup")
end
