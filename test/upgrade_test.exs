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

  test "beam_alloc's own NIF modules reload, and keep working (source lines, fault injection)" do
    # A new version of each over the same library (c:l/1, a release
    # upgrade): without upgrade callbacks the symbolizer's new version
    # loaded without its NIF (reports lost their source lines, silently)
    # and the driver's refused to load. The old version is purged after.
    libdw = :beam_alloc_symbolizer.with_libdw()

    for module <- [:beam_alloc_symbolizer, :beam_alloc_testing_nif] do
      assert {:module, ^module} = :code.load_file(module)
      assert wait_soft_purge(module)
    end

    assert :beam_alloc_symbolizer.with_libdw() == libdw
    assert {:ok, 0} = BeamAlloc.Testing.check_all_allocation_failures(fn -> :ok end)
    # Purged, the old version's unload left the new one its state.
    assert :beam_alloc_symbolizer.with_libdw() == libdw
  end

  defp wait_soft_purge(module, tries \\ 100) do
    cond do
      :code.soft_purge(module) -> true
      tries == 0 -> false
      true -> Process.sleep(10) && wait_soft_purge(module, tries - 1)
    end
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
