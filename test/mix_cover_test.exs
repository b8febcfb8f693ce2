defmodule BeamAlloc.MixCoverTest do
  # `mix test --cover` on a copy of examples/elixir_nif, as a NIF author's
  # CI runs it: from a fresh build, compiled in the VM that then runs the
  # tests. The compiler loads ElixirNif (its on_load loads the NIF) and
  # cover loads a cover-compiled version of it from the same .so: an
  # upgrade. Without an upgrade callback in BEAM_NIF_INIT it was refused
  # (found auditing the CI tools: a warning, the old version ran the tests
  # uncovered, and the report listed no module, "100.00% | Total", so a
  # coverage threshold passed).
  use ExUnit.Case, async: false

  @moduletag timeout: 180_000

  test "mix test --cover on a fresh build covers the NIF module" do
    app = Path.join(BeamAlloc.Test.TmpDir.path!("beam_alloc_cover"), "elixir_nif")
    File.mkdir_p!(app)

    for entry <- ~w(mix.exs lib c_src test) do
      File.cp_r!(Path.join("examples/elixir_nif", entry), Path.join(app, entry))
    end

    # beam_alloc from this checkout, whose library is built: only its
    # Elixir and Erlang side compile again.
    mix_exs = Path.join(app, "mix.exs")

    File.write!(
      mix_exs,
      String.replace(File.read!(mix_exs), ~s(path: "../.."), "path: #{inspect(File.cwd!())}")
    )

    env =
      for var <- ~w(MIX_ENV MIX_BUILD_PATH MIX_APP_PATH MIX_EXS MAKEFLAGS MAKELEVEL),
          do: {var, nil}

    # (Not its exit status, which is 3 when all pass: the example's total,
    # 14.29%, is under mix's default threshold of 90%. Its output, below.)
    {out, _status} =
      System.cmd("mix", ["test", "--cover"], cd: app, env: env, stderr_to_stdout: true)

    # ExUnit's summary and the cover report's row as Elixir 1.14 prints
    # them, "10 tests, 0 failures" and "    14.29% | ElixirNif", and as
    # 1.20 does, "Result: 10 passed" (a failure: "Result: 9/10 passed")
    # and a table row, "|     14.29% | ElixirNif  |".
    assert out =~ ~r/10 tests, 0 failures|^Result: 10 passed$/m
    refute out =~ "The on_load function for module Elixir.ElixirNif returned"
    assert out =~ ~r/^\|? +[0-9.]+% \| ElixirNif *\|?$/m
  end
end
