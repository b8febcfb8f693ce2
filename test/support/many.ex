defmodule BeamAlloc.Test.Many do
  @moduledoc false
  # 48 BEAM_NIFs f0..f47 (test/nifs/many_nif.c); load_info gives every
  # third the general purpose allocator and the one after it the large
  # allocator.
  @names for i <- 0..47, do: :"f#{i}"

  def names, do: @names

  def expected(i) do
    case rem(i, 3) do
      0 -> :gpa
      1 -> :large
      2 -> :raw
    end
  end

  use BeamAlloc.Nif,
    otp_app: :beam_alloc,
    library: "many_nif",
    nifs:
      (for i <- 0..47, rem(i, 3) != 2 do
         {:"f#{i}", allocator: if(rem(i, 3) == 0, do: :gpa, else: :large)}
       end)

  for i <- 0..47 do
    def unquote(:"f#{i}")(), do: :erlang.nif_error(:not_loaded)
  end
end
