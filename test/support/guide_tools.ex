defmodule BeamAlloc.Test.GuideTools do
  @moduledoc false
  # The guide's examples beyond the seed guide (test/nifs/guide_tools_nif.c),
  # loaded the way the guide's "Per-NIF options from Elixir" shows.
  use BeamAlloc.Nif,
    otp_app: :beam_alloc,
    library: "guide_tools_nif",
    nifs: [
      forgetful: [leak_check: true],
      is_scratch: [scratch: true]
    ]

  def forgetful, do: :erlang.nif_error(:not_loaded)
  def is_scratch, do: :erlang.nif_error(:not_loaded)

  def raw_sum(_integers), do: :erlang.nif_error(:not_loaded)
  def with_budget(_bytes), do: :erlang.nif_error(:not_loaded)
  def split_words(_text), do: :erlang.nif_error(:not_loaded)
  def split_words_leaky(_text), do: :erlang.nif_error(:not_loaded)
  def byte_histogram(_binary), do: :erlang.nif_error(:not_loaded)
  def bag_new, do: :erlang.nif_error(:not_loaded)
  def bag_put(_bag, _binary), do: :erlang.nif_error(:not_loaded)
  def bag_to_list(_bag), do: :erlang.nif_error(:not_loaded)
  def bag_release(_bag), do: :erlang.nif_error(:not_loaded)
  def gpa_stats, do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
