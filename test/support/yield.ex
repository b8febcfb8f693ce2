defmodule BeamAlloc.Test.Yield do
  @moduledoc false
  # NIFs that yield, raise, call one another and start threads
  # (test/nifs/yield_nif.c); load_info gives walk and hop the process-wide
  # general purpose allocator, twin_kind scratch.
  use BeamAlloc.Nif,
    otp_app: :beam_alloc,
    library: "yield_nif",
    nifs: [walk: [allocator: :gpa], hop: [allocator: :gpa], twin_kind: [scratch: true]]

  use BeamAlloc.Test.NifModule,
    stubs: ~w(walk/1 chain/1 leak_later/1 hop/1 raise_live/0 raise_freed/0 nested/0
              thread_allocator/0 load_kind/0
              res_walk/1 take_reports/0 twin_leak/0 twin_leak_dirty/0
              twin_kind/0 twin_kind_dirty/0 twin_badarg/1 twin_badarg_dirty/1)
end
