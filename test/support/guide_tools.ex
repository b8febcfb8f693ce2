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

  use BeamAlloc.Test.NifModule,
    stubs: ~w(forgetful/0 is_scratch/0 raw_sum/1 with_budget/1 split_words/1
              split_words_leaky/1 byte_histogram/1 bag_new/0 bag_put/2
              bag_to_list/1 bag_release/1 shared_bag_new/0 gpa_stats/0 take_reports/0)
end
