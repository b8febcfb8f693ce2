defmodule BeamAlloc.Test.NifModule do
  @moduledoc false
  # Loads one of the test NIFs (test/nifs/<name>.c, built into priv/ by
  # `make nifs`) into the module that uses it, and defines its stubs:
  #
  #     use BeamAlloc.Test.NifModule, nif: "guide_nif", stubs: ~w(basic/0 leaks/0)
  #
  # Each "name/arity" in :stubs becomes `def name(_, ...)`, replaced when the
  # NIF loads; until then it raises, as NIF stubs do. A module loaded by
  # `use BeamAlloc.Nif` passes :stubs alone.

  defmacro __using__(opts) do
    loader =
      case Keyword.fetch(opts, :nif) do
        {:ok, nif} ->
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

        :error ->
          nil
      end

    stubs =
      for spec <- Macro.expand(Keyword.get(opts, :stubs, []), __CALLER__) do
        # A name with a character inspect/1 writes a binary's bytes for
        # comes as that binary's code, <<...>> (UpgradeVM's stubs).
        {spec, []} = Code.eval_quoted(spec)
        [name, arity] = String.split(spec, "/")
        args = List.duplicate(Macro.var(:_, nil), String.to_integer(arity))

        quote do
          def unquote(String.to_atom(name))(unquote_splicing(args)),
            do: :erlang.nif_error(:not_loaded)
        end
      end

    [loader | stubs]
  end

  # A new version of module from contents (its location: env's), over the
  # current one if any (a library it loads again is then upgraded), on
  # purpose: without the compiler's warning about redefining it.
  def create_version(module, contents, env) do
    ignore = Code.get_compiler_option(:ignore_module_conflict)
    Code.put_compiler_option(:ignore_module_conflict, true)

    try do
      Module.create(module, contents, Macro.Env.location(env))
    after
      Code.put_compiler_option(:ignore_module_conflict, ignore)
    end
  end

  # Runs the Elixir script in a VM of its own (the test build's modules on
  # its path), for what no test VM may keep (SQLite started for good, a
  # library kept mapped): {output with standard error, exit status}.
  def in_own_vm(script) do
    ebin = Path.join(Mix.Project.build_path(), "lib/beam_alloc/ebin")

    System.cmd("elixir", ["-pa", ebin, "-e", script],
      stderr_to_stdout: true,
      env: [{"MIX_ENV", "test"}]
    )
  end
end
