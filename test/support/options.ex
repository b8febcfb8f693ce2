defmodule BeamAlloc.Test.Options do
  @moduledoc false
  # Per-NIF options from Elixir (test/nifs/options_nif.c): C defaults
  # overridden here, through the load_info map that `use BeamAlloc.Nif`
  # builds.
  use BeamAlloc.Nif,
    otp_app: :beam_alloc,
    library: "options_nif",
    nifs: [
      # {name, arity} keys (which must come first in the list) beat names.
      {{:two, 1}, allocator: :gpa, scratch: true},
      kind: [allocator: :gpa],
      kind_large: [allocator: :raw],
      kind_checked: [leak_check: false, allocator: :large],
      kind_scratch: [scratch: false],
      two: [allocator: :large],
      leaky: [leak_check: true]
    ]

  def kind, do: :erlang.nif_error(:not_loaded)
  def kind_large, do: :erlang.nif_error(:not_loaded)
  def kind_checked, do: :erlang.nif_error(:not_loaded)
  def kind_scratch, do: :erlang.nif_error(:not_loaded)
  def two, do: :erlang.nif_error(:not_loaded)
  def two(_), do: :erlang.nif_error(:not_loaded)
  def leaky, do: :erlang.nif_error(:not_loaded)
  def leaky_checked, do: :erlang.nif_error(:not_loaded)
  def parse_load_info(_term), do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end

defmodule BeamAlloc.Test.OptionsDefaultApp do
  @moduledoc false
  # The same NIFs (test/nifs/options_default_nif.c), loaded from the priv/
  # of the Mix project's application: no :otp_app.
  use BeamAlloc.Nif, library: "options_default_nif", nifs: [kind: [allocator: :large]]

  def kind, do: :erlang.nif_error(:not_loaded)
  def kind_large, do: :erlang.nif_error(:not_loaded)
  def kind_checked, do: :erlang.nif_error(:not_loaded)
  def kind_scratch, do: :erlang.nif_error(:not_loaded)
  def two, do: :erlang.nif_error(:not_loaded)
  def two(_), do: :erlang.nif_error(:not_loaded)
  def leaky, do: :erlang.nif_error(:not_loaded)
  def leaky_checked, do: :erlang.nif_error(:not_loaded)
  def parse_load_info(_term), do: :erlang.nif_error(:not_loaded)
  def take_reports, do: :erlang.nif_error(:not_loaded)
end
