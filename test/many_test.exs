defmodule BeamAlloc.ManyTest do
  # load_info options over a table of 48 BEAM_NIFs (test/nifs/many_nif.c):
  # each call finds its own entry, wherever it is in the table.
  use ExUnit.Case, async: true

  alias BeamAlloc.Test.Many

  test "every NIF of a long table runs with its own load_info allocator" do
    for {name, i} <- Enum.with_index(Many.names()) do
      assert {name, apply(Many, name, [])} == {name, Many.expected(i)}
    end
  end
end
