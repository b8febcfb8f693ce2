defmodule BeamAlloc.UpgradeTest do
  # A new version of a module loads its NIF library while the old version
  # keeps one (a hot upgrade, a recompile), and BEAM_NIF_INIT has no
  # upgrade callback (test/nifs/upgrade_nif.c, upgrade_plain_nif.c). From
  # another file the library is a fresh copy: its load callback must run
  # (before, it did not, and the first NIF call crashed the VM). From the
  # same file the upgrade fails as with ERL_NIF_INIT, unless there is no
  # load callback. Not async: the tests read BeamAlloc.Reporter, which
  # every library shares.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias BeamAlloc.Reporter

  @module BeamAlloc.Test.Upgrade
  @plain BeamAlloc.Test.UpgradePlain

  setup do
    dir = Path.join(System.tmp_dir!(), "beam_alloc_upgrade_#{System.unique_integer([:positive])}")

    for copy <- ["a", "b"], so <- ["upgrade_nif.so", "upgrade_plain_nif.so"] do
      File.mkdir_p!(Path.join(dir, copy))
      File.cp!(Path.join(:code.priv_dir(:beam_alloc), so), Path.join([dir, copy, so]))
    end

    on_exit(fn ->
      capture_log(fn ->
        drop_module()
        drop_module(@plain)
      end)

      File.rm_rf!(dir)
    end)

    drop_module()
    drop_module(@plain)
    {:ok, dir: dir}
  end

  defp drop_module(module \\ @module) do
    :code.purge(module)
    :code.delete(module)
    :code.purge(module)
  end

  # A new version of module (over the current one, which the VM keeps as
  # old code) that loads the library so (its file name, no extension) from
  # copy with info.
  defp load_version(dir, copy, info, module \\ @module, so \\ "upgrade_nif") do
    path = String.to_charlist(Path.join([dir, copy, so]))

    contents =
      quote do
        def load(info), do: :erlang.load_nif(unquote(path), info)
        def make, do: :erlang.nif_error(:not_loaded)
        def loads, do: :erlang.nif_error(:not_loaded)
        def priv, do: :erlang.nif_error(:not_loaded)
        def ping, do: :erlang.nif_error(:not_loaded)
      end

    BeamAlloc.Test.NifModule.create_version(module, contents, __ENV__)
    apply(module, :load, [info])
  end

  defp call(fun), do: apply(@module, fun, [])

  test "a library from another file runs its load callback", %{dir: dir} do
    assert :ok = load_version(dir, "a", :plain)
    assert {:ok, _} = call(:make)
    assert :ok = load_version(dir, "b", :plain)
    assert {:ok, _} = call(:make)
    assert call(:loads) == 1
    # The old version purged, the type its load opened lives on (taken over).
    :code.purge(@module)
    assert {:ok, _} = call(:make)
  end

  test "another file whose load sets priv_data gives the new version its own", %{dir: dir} do
    assert :ok = load_version(dir, "a", :set_priv)
    assert :ok = load_version(dir, "b", :set_priv)
    assert call(:priv) == :set
  end

  test "the same file, with a load callback, fails the upgrade, reported", %{dir: dir} do
    assert :ok = load_version(dir, "a", :plain)
    mark = Reporter.mark()

    capture_log(fn ->
      assert {:error, {:upgrade, message}} =
               :beam_alloc.explain_load_error(load_version(dir, "a", :plain))

      assert message =~ "shares the library file of the old one, whose load callback it cannot"
    end)

    assert [line] =
             for(
               %{line: line} <- BeamAlloc.Test.Reports.wait_since(mark),
               line =~ "new version of BeamAlloc.Test.Upgrade ",
               do: line
             )

    assert line =~ "has a load callback but no upgrade callback"
    assert line =~ "the upgrade fails, as with ERL_NIF_INIT"
  end

  test "the same file, with no load callback, is upgraded", %{dir: dir} do
    assert :ok = load_version(dir, "a", :none, @plain, "upgrade_plain_nif")
    assert :ok = load_version(dir, "a", :none, @plain, "upgrade_plain_nif")
    assert apply(@plain, :ping, []) == :pong
  end

  test "load_info options for a table of raw NIFs alone fail the load", %{dir: dir} do
    # (The list of BEAM_NIFs is empty there, and was read as no list.)
    capture_log(fn ->
      assert {:error, {:load, message}} =
               :beam_alloc.explain_load_error(
                 load_version(dir, "a", %{ping: %{leak_check: true}}, @plain, "upgrade_plain_nif")
               )

      assert message =~ "names only plain functions of the NIF table"
    end)
  end
end
