defmodule BeamAlloc.CxxLoadTest do
  # A C++ exception out of a NIF library's load, upgrade or unload
  # (test/nifs/cxx_load_nif.cpp) is reported and fails the load: it does
  # not end the VM. Not async: the tests read BeamAlloc.Reporter, which
  # every library shares.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias BeamAlloc.Reporter

  @module BeamAlloc.Test.CxxLoad

  setup do
    on_exit(fn -> capture_log(fn -> drop_module() end) end)
    :ok
  end

  defp drop_module do
    :code.purge(@module)
    :code.delete(@module)
    :code.purge(@module)
  end

  # A new version of the module, over the current one if any (then the
  # library is upgraded), with the NIFs' stubs and loader, the code that
  # loads the library.
  defp create_version(loader) do
    contents =
      quote do
        unquote(loader)
        def ping, do: :erlang.nif_error(:not_loaded)
        def alloc_kind, do: :erlang.nif_error(:not_loaded)
        def load_setting, do: :erlang.nif_error(:not_loaded)
      end

    BeamAlloc.Test.NifModule.create_version(@module, contents, __ENV__)
  end

  defp nif_path, do: :filename.join(:code.priv_dir(:beam_alloc), ~c"cxx_load_nif")

  # A new version whose load/1 loads the library with info.
  defp load_version(info) do
    create_version(quote(do: def(load(info), do: :erlang.load_nif(unquote(nif_path()), info))))
    apply(@module, :load, [info])
  end

  # A new version that loads the library in its on_load: when that fails,
  # the new version is not loaded (Elixir logs why) and the one before
  # stays the module's code.
  defp load_on_load(info) do
    create_version(
      quote do
        @on_load :load_it
        def load_it, do: :erlang.load_nif(unquote(nif_path()), unquote(Macro.escape(info)))
      end
    )

    :ok
  end

  defp load_fresh(info) do
    drop_module()
    load_version(info)
  end

  # The reports after mark that name this library.
  defp reports_since(mark) do
    for %{line: line} <- BeamAlloc.Test.Reports.wait_since(mark),
        line =~ "BeamAlloc.Test.CxxLoad",
        do: line
  end

  test "a load that throws fails with a reason, reported with the exception's text" do
    for {info, text} <- [
          {:throw_load, "uncaught C++ exception: load boom"},
          {:throw_int, "uncaught C++ exception"},
          {:throw_bad_alloc, "out of memory"}
        ] do
      mark = Reporter.mark()

      capture_log(fn ->
        assert {:error, {:load, message}} = :beam_alloc.explain_load_error(load_fresh(info))

        assert message ==
                 "beam_alloc: the library's load or upgrade callback let a C++ exception " <>
                   "out (the details went to the logger, or to standard error where the " <>
                   "beam_alloc application is not started)"

        assert reports_since(mark) == [
                 "beam_alloc: the load callback of the NIF library of " <>
                   "BeamAlloc.Test.CxxLoad let a C++ exception out: #{text}; " <>
                   "the load fails"
               ]
      end)
    end

    # The library is usable after all that.
    assert :ok = load_fresh(:none)
    assert apply(@module, :ping, []) == :pong
  end

  test "an upgrade that throws fails and leaves the old version working" do
    assert :ok = load_fresh(:none)
    mark = Reporter.mark()

    capture_log(fn ->
      assert {:error, {:upgrade, _}} = load_version(:throw_upgrade)

      assert reports_since(mark) == [
               "beam_alloc: the upgrade callback of the NIF library of " <>
                 "BeamAlloc.Test.CxxLoad let a C++ exception out: " <>
                 "uncaught C++ exception: upgrade boom; the load fails"
             ]
    end)
  end

  test "a failed upgrade leaves the running version its load_info options" do
    drop_module()
    assert :ok = load_on_load(%{beam_alloc: %{alloc_kind: [allocator: :large]}})
    assert apply(@module, :alloc_kind, []) == :large

    capture_log(fn ->
      # (The options of the new version were in force before its upgrade
      # callback had answered, and stayed when it refused.)
      for why <- [:throw_upgrade, :fail_upgrade] do
        info = %{:beam_alloc => %{alloc_kind: [allocator: :raw]}, why => true}
        # (Elixir logs the on_load failure; the version before stays.)
        load_on_load(info)
        assert apply(@module, :alloc_kind, []) == :large
      end
    end)

    # A successful upgrade changes them.
    assert :ok = load_on_load(%{beam_alloc: %{alloc_kind: [allocator: :raw]}})
    assert apply(@module, :alloc_kind, []) == :raw
  end

  test "use BeamAlloc.Nif passes :load_info to the library's load, the :nifs options under beam_alloc" do
    drop_module()

    use_it = fn opts ->
      Code.compile_quoted(
        quote do
          defmodule unquote(@module) do
            use BeamAlloc.Nif, unquote([otp_app: :beam_alloc, library: "cxx_load_nif"] ++ opts)
            def ping, do: :erlang.nif_error(:not_loaded)
            def alloc_kind, do: :erlang.nif_error(:not_loaded)
            def load_setting, do: :erlang.nif_error(:not_loaded)
          end
        end
      )
    end

    use_it.(load_info: Macro.escape(%{pool_size: 4}), nifs: [alloc_kind: [allocator: :large]])
    assert apply(@module, :load_setting, []) == 4
    assert apply(@module, :alloc_kind, []) == :large
    drop_module()

    # Without :load_info the load gets the options' map alone, as before.
    use_it.(nifs: [alloc_kind: [allocator: :large]])
    assert apply(@module, :load_setting, []) == -1
    assert apply(@module, :alloc_kind, []) == :large

    for {bad, why} <- [
          {Macro.escape(%{beam_alloc: %{}}),
           ~r/the key beam_alloc is where the :nifs options go/},
          {[pool_size: 4], ~r/expected a map of the library's own settings/}
        ] do
      assert_raise ArgumentError, why, fn -> use_it.(load_info: bad) end
    end
  end

  test "an unload that throws is reported and the library is unloaded all the same" do
    assert :ok = load_fresh(:throw_unload)
    assert apply(@module, :ping, []) == :pong
    mark = Reporter.mark()

    capture_log(fn ->
      drop_module()

      assert reports_since(mark) == [
               "beam_alloc: the unload callback of the NIF library of " <>
                 "BeamAlloc.Test.CxxLoad let a C++ exception out: " <>
                 "uncaught C++ exception: unload boom; the library is unloaded all the same"
             ]
    end)

    # Loaded again from scratch, it works.
    assert :ok = load_fresh(:none)
    assert apply(@module, :ping, []) == :pong
  end
end
