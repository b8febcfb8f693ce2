defmodule BeamAlloc.Test.NifModule do
  @moduledoc false
  # Loads one of the test NIFs (test/nifs/<name>.c, built into priv/ by
  # `make nifs`) into the module that uses it:
  #
  #     use BeamAlloc.Test.NifModule, nif: "guide_nif"
  #
  # The stubs that follow are replaced when the NIF loads; until then they
  # raise, as NIF stubs do.

  defmacro __using__(opts) do
    nif = Keyword.fetch!(opts, :nif)

    quote do
      @on_load :__load_nif__

      @doc false
      def __load_nif__ do
        :beam_alloc
        |> :code.priv_dir()
        |> :filename.join(unquote(String.to_charlist(nif)))
        |> :erlang.load_nif(0)
      end
    end
  end
end
