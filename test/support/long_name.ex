# LongName followed by 235 A's, 250 characters with Elixir.: its messages
# are cut short (test/nifs/long_name_nif.c).
module = Module.concat([:"LongName#{String.duplicate("A", 235)}"])

defmodule module do
  use BeamAlloc.Test.NifModule, nif: "long_name_nif", stubs: ~w(take_reports/0)

  # The C table's names (Latin-1): 255 \x01, and a, 238 \x01, é and b.
  for name <- [String.duplicate("\u0001", 255), "a" <> String.duplicate("\u0001", 238) <> "éb"] do
    def unquote(String.to_atom(name))(), do: :erlang.nif_error(:not_loaded)
  end
end
