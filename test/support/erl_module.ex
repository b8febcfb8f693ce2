defmodule :beam_alloc_erl_test do
  @moduledoc false
  # A NIF module named the Erlang way (test/nifs/erl_module_nif.c): leaks
  # and misuse raise Erlang errors naming beam_alloc_erl_test:fun/arity.
  use BeamAlloc.Test.NifModule, nif: "erl_module_nif"

  def leaky, do: :erlang.nif_error(:not_loaded)
  def clean, do: :erlang.nif_error(:not_loaded)
  def double_free, do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
