defmodule ElixirNif.MixProject do
  use Mix.Project

  # A Mix application with a NIF in C and C++ built against beam_alloc, a
  # path dependency here (a git one works the same). The two lines that
  # matter are compilers: and beam_alloc:.
  def project do
    [
      app: :elixir_nif,
      version: "0.1.0",
      elixir: "~> 1.14",
      compilers: [:beam_alloc] ++ Mix.compilers(),
      beam_alloc: [nifs: [elixir_nif: ["c_src/elixir_nif.c", "c_src/checksum.cpp"]], libs: ["z"]],
      deps: [{:beam_alloc, path: "../.."}]
    ]
  end

  def application do
    [extra_applications: [:logger]]
  end
end
