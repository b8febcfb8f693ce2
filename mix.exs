# Mix has to find the compiler that builds the NIFs before it compiles
# anything of this project, so the task is loaded from source here; the
# Elixir compiler then compiles the same file again into the app, which is
# why module conflicts are ignored below.
unless Code.ensure_loaded?(Mix.Tasks.Compile.BeamAllocMake) do
  Code.require_file("lib/mix/tasks/compile.beam_alloc_make.ex", __DIR__)
end

# (And the one that writes the appup after the .app, the same way.)
unless Code.ensure_loaded?(Mix.Tasks.Compile.BeamAllocAppup) do
  Code.require_file("lib/mix/tasks/compile.beam_alloc_appup.ex", __DIR__)
end

defmodule BeamAlloc.MixProject do
  use Mix.Project

  def project do
    [
      app: :beam_alloc,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      erlc_paths: erlc_paths(Mix.env()),
      elixirc_options: [ignore_module_conflict: true],
      compilers: [:beam_alloc_make] ++ Mix.compilers() ++ [:beam_alloc_appup],
      # Elixir 1.15 and later drop from the code path the OTP applications
      # a project does not list. The test suite uses eunit (test/erlang
      # includes eunit.hrl), common_test and xmerl (the Common Test suite)
      # and sasl (collector_test's systools); listing them in
      # extra_applications would put them into beam_alloc.app, which
      # collector_test boots as a release of beam_alloc alone. So the test
      # environment keeps the whole code path. Only the top-level project's
      # setting counts: projects that depend on beam_alloc are unaffected.
      # Elixir 1.14 ignores the option.
      prune_code_paths: Mix.env() != :test,
      deps: []
    ]
  end

  def application do
    [extra_applications: [:logger], mod: {BeamAlloc.Application, []}]
  end

  # The test NIFs' Elixir modules live in test/support; they are compiled
  # (and load their NIFs) only in the test environment.
  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]

  # erlang/: the Erlang front of BeamAlloc.Testing (beam_alloc_testing.erl);
  # test/erlang/: NIF modules of the test suite written in Erlang. (src/ is
  # the C library's.)
  defp erlc_paths(:test), do: ["erlang", "test/erlang"]
  defp erlc_paths(_), do: ["erlang"]
end
