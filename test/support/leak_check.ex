defmodule LeakCheckTest do
  @moduledoc false
  # NIFs declared with .leak_check = true (test/nifs/leak_check_nif.c). The
  # module name is part of the contract: leak messages read
  # "memory leak detected in function `LeakCheckTest.check_me/0`".
  use BeamAlloc.Test.NifModule,
    nif: "leak_check_nif",
    stubs: ~w(check_me/0 check_me_normal/0 check_me_io/0 leak_bytes/1
              clean/1 clean_dirty/0 raise_clean/0 raise_and_leak/0
              odd-name?/0 <~>/0 take_reports/0 keep_for_later/1 free_kept/0
              aligned_checked/1 aligned_plain/1)

  # Names beyond ASCII and with a control character (the C table's are
  # Latin-1), which ~w cannot hold.
  for name <- [:héllo, :"x×y", :"a\rb\u0080"] do
    def unquote(name)(), do: :erlang.nif_error(:not_loaded)
  end
end
