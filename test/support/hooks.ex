defmodule HooksNif do
  @moduledoc false
  # A library of each allocator-hook shape through <beam_alloc/hooks.h>
  # (test/nifs/hooks_nif.c over test/nifs/foreign/hooklib.c).
  use BeamAlloc.Test.NifModule,
    nif: "hooks_nif",
    stubs: ~w(global_words/1 global_words_checked/1 global_leak/0
              global_live_bytes/0 ctx_words/1 lua_words/1 fl_words_checked/1
              fl_leak/1 last_words/1 last_leak/1 take_reports/0)
end
