defmodule BeamAlloc.Test.Misuse do
  @moduledoc false
  # One NIF per kind of misuse (test/nifs/misuse_nif.c); reports go to
  # BeamAlloc.Reporter. double_free_opted raises because of the option here.
  use BeamAlloc.Nif,
    otp_app: :beam_alloc,
    library: "misuse_nif",
    nifs: [double_free_opted: [raise_on_misuse: true]]

  def double_free, do: :erlang.nif_error(:not_loaded)
  def write_past_end, do: :erlang.nif_error(:not_loaded)
  def wrong_length, do: :erlang.nif_error(:not_loaded)
  def wrong_alignment, do: :erlang.nif_error(:not_loaded)
  def foreign_free, do: :erlang.nif_error(:not_loaded)
  def write_after_free, do: :erlang.nif_error(:not_loaded)
  def large_double_free, do: :erlang.nif_error(:not_loaded)
  def large_write_past_end, do: :erlang.nif_error(:not_loaded)
  def large_wrong_length, do: :erlang.nif_error(:not_loaded)
  def large_write_after_free, do: :erlang.nif_error(:not_loaded)
  def double_free_and_badarg, do: :erlang.nif_error(:not_loaded)
  def double_free_plain, do: :erlang.nif_error(:not_loaded)
  def double_free_raising, do: :erlang.nif_error(:not_loaded)
  def double_free_opted, do: :erlang.nif_error(:not_loaded)
  def leak_and_bad_free, do: :erlang.nif_error(:not_loaded)
  def leak_deep, do: :erlang.nif_error(:not_loaded)
  def impossible_free, do: :erlang.nif_error(:not_loaded)
  def nested_outer, do: :erlang.nif_error(:not_loaded)
end

defmodule BeamAlloc.Test.TwinMisuse do
  @moduledoc false
  # A library with the same base name as Misuse's, misuse_nif.so, in
  # another directory (test/nifs/twin/misuse_nif.c -> priv/twin/).
  use BeamAlloc.Nif, otp_app: :beam_alloc, library: "twin/misuse_nif"

  def twin_double_free, do: :erlang.nif_error(:not_loaded)
end
