defmodule Mix.Tasks.Compile.BeamAllocMake do
  @shortdoc "Builds beam_alloc and its NIFs with make"

  @moduledoc """
  Runs `make nifs` in the project directory, the way `elixir_make` does,
  so that `mix compile` (and `mix test`) build the C library and the test
  NIFs before any Elixir module that loads them is compiled.

  Add it in front of the default compilers:

      compilers: [:beam_alloc_make] ++ Mix.compilers()

  make sees these variables:

    * `MIX_APP_PATH` - the app's build directory; NIFs go to its `priv/`
    * `MIX_ENV` - the NIFs of the test suite are built only for `test`
    * `MIX_BUILD_PATH`, `MIX_COMPILE_PATH`
    * `ERTS_INCLUDE_DIR` - where `erl_nif.h` is: the environment's, or
      the running VM's

  Set `MAKE` to use another make (e.g. `gmake` on BSD). A non-zero exit
  status of make fails the compilation.
  """

  use Mix.Task.Compiler

  # In each app of an umbrella, not in its root (see Compile.BeamAlloc).
  @recursive true

  @target "nifs"

  @impl Mix.Task.Compiler
  def run(_args) do
    make = System.get_env("MAKE", "make")

    unless System.find_executable(make) do
      Mix.raise("""
      could not find #{inspect(make)} in PATH, which beam_alloc needs to build its C sources.

      Install make (on Debian: apt-get install make) or set MAKE to its name.
      """)
    end

    case System.cmd(make, ["--no-print-directory", @target],
           cd: project_dir(),
           env: env(),
           into: IO.stream(:stdio, :line),
           stderr_to_stdout: true
         ) do
      {_, 0} ->
        {:ok, []}

      {_, status} ->
        Mix.raise("""
        could not compile with "#{make} #{@target}" (exit status: #{status}).

        See the output of make above for the reason.
        """)
    end
  end

  @impl Mix.Task.Compiler
  def clean do
    # Listed, not Path.wildcard: that reads the whole path as a pattern,
    # and under a folder named with [ or { it found nothing to remove.
    priv = Path.join(Mix.Project.app_path(), "priv")

    names = if File.dir?(priv), do: File.ls!(priv), else: []
    for name <- names, String.ends_with?(name, ".so"), do: File.rm!(Path.join(priv, name))
  end

  defp project_dir, do: Path.dirname(Mix.Project.project_file())

  defp env do
    [
      {"MIX_APP_PATH", make_path(Mix.Project.app_path())},
      {"MIX_ENV", to_string(Mix.env())},
      {"MIX_TARGET", to_string(Mix.target())},
      {"MIX_BUILD_PATH", Mix.Project.build_path()},
      {"MIX_COMPILE_PATH", Mix.Project.compile_path()},
      {"ERTS_INCLUDE_DIR", erts_include_dir()}
    ]
  end

  # make splits targets at spaces: a project in "My Projects/app" failed
  # with "No rule to make target"; and its recipes hand the path to the
  # shell unquoted: one in "/home/o'brien/app" failed there, an unmatched
  # quote (and make expands a $ in it). Such a path
  # reaches make as a symbolic link under build/, relative to the
  # directory make runs in. (Letters of any language are safe; % and : are
  # make's own.)
  defp make_path(path) do
    if String.match?(path, ~r/[^\p{L}\p{N}_\/.+,@~-]/u) do
      link = Path.join("build", "mix_app_path-#{:erlang.phash2(path)}")
      full = Path.join(project_dir(), link)
      File.mkdir_p!(Path.dirname(full))
      _ = File.rm(full)
      File.mkdir_p!(path)
      File.ln_s!(path, full)
      link
    else
      path
    end
  end

  # ERTS_INCLUDE_DIR of the environment first, as the :beam_alloc
  # compiler: Nerves sets it to the board's (whose OTP may differ), and a
  # board's build got the host's, and a library of another key than the
  # :beam_alloc compiler's, built twice.
  defp erts_include_dir do
    case System.get_env("ERTS_INCLUDE_DIR") do
      dir when dir in [nil, ""] -> running_erts_include_dir()
      dir -> dir
    end
  end

  defp running_erts_include_dir do
    Path.join([
      List.to_string(:code.root_dir()),
      "erts-#{:erlang.system_info(:version)}",
      "include"
    ])
  end
end
