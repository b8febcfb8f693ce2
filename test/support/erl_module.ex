defmodule :beam_alloc_erl_test do
  @moduledoc false
  # A NIF module named the Erlang way (test/nifs/erl_module_nif.c): leaks
  # and misuse raise {:memory_leak, message} / {:memory_misuse, message},
  # the function written the Erlang way; beam_raise raises {Name, Message}.
  use BeamAlloc.Test.NifModule,
    nif: "erl_module_nif",
    stubs: ~w(leaky/0 clean/0 double_free/0 free/1 end/0 end/1 take_reports/0 raise_badarg/0
              raise_named/0 raise_other/0 stale/0 maybe/0)

  # Names beyond ASCII and with a control character (the C table's are
  # Latin-1), which ~w cannot hold.
  for name <- [:héllo, :"x×y", :"a\rb\u0080"] do
    def unquote(name)(), do: :erlang.nif_error(:not_loaded)
  end
end
