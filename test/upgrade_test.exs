defmodule BeamAlloc.UpgradeTest do
  # A new version of a module loads its NIF library while the old version
  # keeps one (a hot upgrade, a recompile), and BEAM_NIF_INIT has no
  # upgrade callback (test/nifs/upgrade_nif.c). From another file the
  # library is a fresh copy: its load callback must run (before, it did
  # not, and the first NIF call crashed the VM). Not async: the tests read
  # BeamAlloc.Reporter, which every library shares.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias BeamAlloc.Reporter

  @module BeamAlloc.Test.Upgrade

  setup do
    dir = Path.join(System.tmp_dir!(), "beam_alloc_upgrade_#{System.unique_integer([:positive])}")
    so = Path.join(:code.priv_dir(:beam_alloc), "upgrade_nif.so")

    for copy <- ["a", "b"] do
      File.mkdir_p!(Path.join(dir, copy))
      File.cp!(so, Path.join([dir, copy, "upgrade_nif.so"]))
    end

    on_exit(fn ->
      capture_log(fn ->
        :code.purge(@module)
        :code.delete(@module)
        :code.purge(@module)
      end)

      File.rm_rf!(dir)
    end)

    drop_module()
    {:ok, dir: dir}
  end

  defp drop_module do
    :code.purge(@module)
    :code.delete(@module)
    :code.purge(@module)
  end

  # A new version of the module (over the current one, which the VM keeps
  # as old code) that loads the library from copy with info.
  defp load_version(dir, copy, info) do
    path = String.to_charlist(Path.join([dir, copy, "upgrade_nif"]))

    contents =
      quote do
        def load(info), do: :erlang.load_nif(unquote(path), info)
        def make, do: :erlang.nif_error(:not_loaded)
        def loads, do: :erlang.nif_error(:not_loaded)
        def priv, do: :erlang.nif_error(:not_loaded)
      end

    ignore = Code.get_compiler_option(:ignore_module_conflict)
    Code.put_compiler_option(:ignore_module_conflict, true)

    try do
      Module.create(@module, contents, Macro.Env.location(__ENV__))
    after
      Code.put_compiler_option(:ignore_module_conflict, ignore)
    end

    apply(@module, :load, [info])
  end

  defp call(fun), do: apply(@module, fun, [])

  test "a library from another file runs its load callback", %{dir: dir} do
    assert :ok = load_version(dir, "a", :plain)
    assert {:ok, _} = call(:make)
    assert :ok = load_version(dir, "b", :plain)
    assert {:ok, _} = call(:make)
    assert call(:loads) == 1
  end

  test "the same file is shared: its load callback does not run again", %{dir: dir} do
    assert :ok = load_version(dir, "a", :plain)
    assert :ok = load_version(dir, "a", :plain)
    assert {:ok, _} = call(:make)
    assert call(:loads) == 1
  end

  test "another file whose load sets priv_data gives the new version its own", %{dir: dir} do
    assert :ok = load_version(dir, "a", :set_priv)
    assert :ok = load_version(dir, "b", :set_priv)
    assert call(:priv) == :set
  end

  test "the same file whose load set priv_data fails the upgrade, reported", %{dir: dir} do
    assert :ok = load_version(dir, "a", :set_priv)
    assert call(:priv) == :set
    mark = Reporter.mark()

    capture_log(fn ->
      assert {:error, {:upgrade, message}} =
               :beam_alloc.explain_load_error(load_version(dir, "a", :set_priv))

      assert message =~ "the library's load callback set priv_data and BEAM_NIF_INIT has no"
    end)

    assert [line] =
             for(
               %{line: line} <- BeamAlloc.Test.Reports.wait_since(mark),
               line =~ "'Elixir.BeamAlloc.Test.Upgrade'",
               do: line
             )

    assert line =~ "whose load callback set priv_data"
    assert line =~ "the upgrade fails"
  end
end
