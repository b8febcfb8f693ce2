defmodule :beam_alloc_erl_test do
  @moduledoc false
  # A NIF module named the Erlang way (test/nifs/erl_module_nif.c): leaks
  # and misuse raise {:memory_leak, message} / {:memory_misuse, message},
  # the function written the Erlang way.
  use BeamAlloc.Test.NifModule, nif: "erl_module_nif"

  def leaky, do: :erlang.nif_error(:not_loaded)
  def clean, do: :erlang.nif_error(:not_loaded)
  def double_free, do: :erlang.nif_error(:not_loaded)
  def free(_), do: :erlang.nif_error(:not_loaded)
  def unquote(:end)(), do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
