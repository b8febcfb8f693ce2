defmodule BeamAlloc.NewerOtpTest do
  # What a newer Erlang/OTP or Elixir than the one running reads
  # differently, checked from any version: the CI machine runs Debian 12's
  # OTP 25, while a user builds with OTP 27 or later. Fast: nothing here
  # loads a NIF.
  use ExUnit.Case, async: true

  @root Path.expand("..", __DIR__)

  # OTP 27 enables the maybe_expr feature by default, making `maybe` and
  # `else` reserved words: an unquoted atom of either is a syntax error
  # there (examples/erlang_nif's EUnit test passed `expect => maybe` and did
  # not compile under OTP 27). Every Erlang source a user or the suite
  # compiles quotes them (the preprocessor's -else. is no atom). (A bad
  # value in a test is another atom: OTP 27's ~p writes 'maybe' quoted, so
  # an expected "got: maybe" differs between the versions.)
  test "no Erlang source spells maybe or else as a bare atom" do
    files = Path.wildcard(Path.join(@root, "{erlang,test,examples}/**/*.{erl,hrl}"))
    assert files != []

    bare =
      for file <- files,
          tokens = tokens(file),
          {before, {:atom, anno, atom}} <- Enum.zip([nil | tokens], tokens),
          atom in [:maybe, :else],
          not match?({:-, _}, before),
          not String.starts_with?(to_string(:erl_anno.text(anno)), "'"),
          do: "#{Path.relative_to(file, @root)}:#{:erl_anno.line(anno)}: #{atom}"

    assert bare == [],
           "quote these atoms ('maybe'), or use others: OTP 27 reserves the words\n" <>
             Enum.join(bare, "\n")
  end

  defp tokens(file) do
    text = file |> File.read!() |> String.to_charlist()
    {:ok, tokens, _} = :erl_scan.string(text, 1, [:text])
    tokens
  end
end
