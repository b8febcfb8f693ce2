defmodule LeakCheckTest do
  @moduledoc false
  # NIFs declared with .leak_check = true (test/nifs/leak_check_nif.c). The
  # module name is part of the contract: leak messages read
  # "memory leak detected in function `LeakCheckTest.check_me/0`".
  use BeamAlloc.Test.NifModule, nif: "leak_check_nif"

  def check_me, do: :erlang.nif_error(:not_loaded)
  def check_me_normal, do: :erlang.nif_error(:not_loaded)
  def check_me_io, do: :erlang.nif_error(:not_loaded)
  def leak_bytes(_size), do: :erlang.nif_error(:not_loaded)
  def clean(_count), do: :erlang.nif_error(:not_loaded)
  def clean_dirty, do: :erlang.nif_error(:not_loaded)
  def raise_clean, do: :erlang.nif_error(:not_loaded)
  def raise_and_leak, do: :erlang.nif_error(:not_loaded)
  def unquote(:"odd-name?")(), do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
