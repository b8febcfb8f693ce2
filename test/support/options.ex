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

  use BeamAlloc.Test.NifModule,
    stubs: ~w(kind/0 kind_large/0 kind_checked/0 kind_scratch/0 two/0 two/1
              leaky/0 leaky_checked/0 leaky_dirty/0 checked_twin/0 checked_twin_too/0
              parse_load_info/1 take_reports/0)
end

defmodule BeamAlloc.Test.OptionsDefaultApp do
  @moduledoc false
  # The same NIFs (test/nifs/options_default_nif.c), loaded from the priv/
  # of the Mix project's application: no :otp_app.
  use BeamAlloc.Nif, library: "options_default_nif", nifs: [kind: [allocator: :large]]

  use BeamAlloc.Test.NifModule,
    stubs: ~w(kind/0 kind_large/0 kind_checked/0 kind_scratch/0 two/0 two/1
              leaky/0 leaky_checked/0 leaky_dirty/0 checked_twin/0 checked_twin_too/0
              parse_load_info/1 take_reports/0)
end
