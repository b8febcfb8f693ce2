defmodule BeamAlloc.ReleaseUpgradeTest do
  # A release upgrade of beam_alloc itself (systools:make_relup, then
  # release_handler in the running node) from an earlier 0.1.x to the
  # version built here, with ebin/beam_alloc.appup (scripts/appup). There
  # was no appup: make_relup failed, "no such file", as soon as a release
  # changed beam_alloc's version (audit).
  use ExUnit.Case, async: true

  defp ebin, do: Path.join(:code.lib_dir(:beam_alloc), "ebin")

  defp appup do
    {:ok, [appup]} = :file.consult(Path.join(ebin(), "beam_alloc.appup"))
    appup
  end

  test "the appup has an instruction for each module of the application, for this version" do
    {:ok, vsn} = :application.get_key(:beam_alloc, :vsn)
    {:ok, modules} = :application.get_key(:beam_alloc, :modules)
    {^vsn, [{from, up}], [{to, down}]} = appup()
    assert from == to

    for earlier <- ["0.1.0", "0.1.7", "0.1.10-rc1"],
        do: assert(Regex.match?(~r/\A(?:#{from})\z/, earlier), earlier)

    for other <- ["0.2.0", "0.10.1", "1.1.0"],
        do: refute(Regex.match?(~r/\A(?:#{from})\z/, other), other)

    for instructions <- [up, down] do
      named = Enum.map(instructions, &elem(&1, 1))
      assert Enum.sort(named) == Enum.sort(modules)
      assert length(named) == length(Enum.uniq(named))
    end

    # The processes' modules go through code_change/3: their state is
    # taken over, not left to new code that cannot read it.
    for m <- [:beam_alloc_reporter, :beam_alloc_collector, BeamAlloc.Reporter] do
      Code.ensure_loaded!(m)
      assert {:update, m, {:advanced, []}} in up
      assert function_exported?(m, :code_change, 3)
    end

    assert {:update, :beam_alloc_app, :supervisor} in up

    # The modules that load a library with dirty NIFs (stats, collect,
    # resolve) keep their old version while a process runs it: a dirty
    # call that raised after its module's version was purged crashed the
    # VM on OTP 25 (README, release upgrades), and load_module purges at
    # once.
    for m <- [:beam_alloc_testing_nif, :beam_alloc_symbolizer],
        instructions <- [up, down] do
      assert {:load_module, m, :soft_purge, :soft_purge, []} in instructions
    end
  end

  # The Mix build (the Elixir reporter) and the Erlang one (rebar3, make
  # erlang-app: beam_alloc_app's supervisor, the Erlang reporter) run
  # other processes: each is upgraded. Each as shipped: the test build's
  # files, less the modules of test/ (whose NIFs' on_load fails when loaded
  # again from another file, as a downgrade does) or, for the Erlang
  # build, all but erlang/'s, with erlang/beam_alloc.app.src's .app; its
  # .app lists them, and scripts/appup writes its appup, as the build does.
  test "a Mix release upgrade to this version, and back, keeps the reporter and the collector with their state, a NIF loaded before reporting to them" do
    upgrade(
      :mix,
      [:compiler, :elixir, :logger],
      [BeamAlloc.Reporter, :beam_alloc_collector],
      BeamAlloc.Test.Misuse
    )
  end

  test "an Erlang release upgrade to this version, and back, keeps the supervisor, the reporter and the collector with their state" do
    upgrade(
      :erlang,
      [],
      [:beam_alloc_sup, :beam_alloc_reporter, :beam_alloc_collector]
    )
  end

  # A release of an earlier 0.1.x and one of this version, built with
  # systools, make_relup from the one to the other; release_handler's
  # install of the upgrade and then of the downgrade in a node of its own.
  defp upgrade(build, other_apps, procs, nif \\ nil) do
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_relup")
    lib = Path.join(dir, "lib")
    {:ok, vsn} = :application.get_key(:beam_alloc, :vsn)
    [major, minor | _] = String.split(to_string(vsn), ".")
    old = ~c"#{major}.#{minor}.0-rc.0"
    from = to_string(:code.lib_dir(:beam_alloc))

    {:ok, [{:application, :beam_alloc, props}]} =
      :file.consult(Path.join(from, "ebin/beam_alloc.app"))

    shipped =
      for m <- props[:modules],
          beam = to_charlist(Path.join(from, "ebin/#{m}.beam")),
          {:ok, {^m, [compile_info: info]}} = :beam_lib.chunks(beam, [:compile_info]),
          shipped?(build, to_string(info[:source])),
          do: m

    props =
      case build do
        :mix ->
          props

        :erlang ->
          {:ok, [{:application, :beam_alloc, src}]} = :file.consult("erlang/beam_alloc.app.src")

          src
      end

    for v <- [old, vsn] do
      app_dir = Path.join(lib, "beam_alloc-#{v}")
      File.mkdir_p!(lib)
      File.cp_r!(from, app_dir, dereference_symlinks: true)

      for beam <- Path.wildcard(Path.join(app_dir, "ebin/*.beam")),
          String.to_atom(Path.basename(beam, ".beam")) not in shipped,
          do: File.rm!(beam)

      app = Path.join(app_dir, "ebin/beam_alloc.app")

      props =
        props
        |> List.keystore(:vsn, 0, {:vsn, v})
        |> List.keystore(:modules, 0, {:modules, shipped})

      File.write!(app, :io_lib.format(~c"~tp.~n", [{:application, :beam_alloc, props}]))
      {_, 0} = System.cmd("escript", [Path.join(File.cwd!(), "scripts/appup"), app])
    end

    # Elixir's applications, whose folders have no version in their names.
    _ = :application.load(:sasl)
    apps = [:kernel, :stdlib, :sasl | other_apps]
    rel_apps = for app <- apps, do: {app, Application.spec(app, :vsn)}

    elixir_apps =
      for app <- other_apps, app != :compiler do
        app_vsn = Application.spec(app, :vsn)
        File.ln_s!(to_string(:code.lib_dir(app)), Path.join(lib, "#{app}-#{app_vsn}"))
        {app, app_vsn}
      end

    rels = Path.join(dir, "releases")

    for {name, v} <- [{~c"1", old}, {~c"2", vsn}] do
      rel_dir = Path.join(rels, to_string(name))
      File.mkdir_p!(rel_dir)

      rel =
        {:release, {~c"r", name}, {:erts, :erlang.system_info(:version)},
         rel_apps ++ [beam_alloc: v]}

      File.write!(Path.join(rel_dir, "r.rel"), :io_lib.format(~c"~tp.~n", [rel]))
    end

    rel = fn name -> to_charlist(Path.join([rels, name, "r"])) end
    path = [to_charlist(Path.join(lib, "*/ebin")) | :code.get_path()]

    for name <- ["1", "2"] do
      {:ok, _, _} = :systools.make_script(rel.(name), [{:path, path}, :local, :silent])
      File.rename!(Path.join([rels, name, "r.boot"]), Path.join([rels, name, "start.boot"]))
    end

    assert {:ok, _, _, _} =
             :systools.make_relup(rel.("2"), [rel.("1")], [rel.("1")], [
               {:path, path},
               {:outdir, to_charlist(Path.join(rels, "2"))},
               :silent
             ])

    lib_dirs = fn v ->
      for {app, v} <- elixir_apps ++ [beam_alloc: v], do: {app, v, to_charlist(lib)}
    end

    :ok =
      :release_handler.create_RELEASES(
        :code.root_dir(),
        rels,
        rel.("1") ++ ~c".rel",
        lib_dirs.(old)
      )

    # (Erlang's terms in the script: inspect/1 writes a charlist as 'text',
    # Erlang's atom.)
    erl = fn term -> to_string(:io_lib.format(~c"~tp", [term])) end

    # In the node: the processes and their states before and after the
    # upgrade, before and after the downgrade; then a call to each, still
    # served.
    script = ~s"""
    #{nif_script(nif)}
    Look = fun() -> [{P, whereis(P), sys:get_state(P)} || P <- #{erl.(procs)}] end,
    %% (Its first tick sets the state of the collector, which then ticks
    %% no more: the interval is an hour.)
    _ = beam_alloc_collector:tick(),
    Nif(before_upgrade),
    Before = Look(),
    true = lists:all(fun({_, Pid, _}) -> is_pid(Pid) end, Before),
    {ok, "2"} = release_handler:set_unpacked(#{erl.(rel.("2") ++ ~c".rel")}, #{erl.(lib_dirs.(vsn))}),
    {ok, "1", []} = release_handler:install_release("2"),
    io:format("upgraded=~p from=~s~n", [Look() =:= Before, code:which(beam_alloc_collector)]),
    Nif(after_upgrade),
    Upgraded = Look(),
    {ok, "1", []} = release_handler:install_release("1"),
    io:format("downgraded=~p from=~s~n", [Look() =:= Upgraded, code:which(beam_alloc_collector)]),
    io:format("serving=~p~n", [{beam_alloc:take_reports(), beam_alloc_collector:tick()}]),
    halt().
    """

    {out, status} =
      System.cmd(
        "timeout",
        ["-s", "KILL", "60", "erl", "-boot", Path.join([rels, "1", "start"]), "-noshell"] ++
          ["-sasl", "releases_dir", erl.(to_charlist(rels))] ++
          ["-beam_alloc", "auto_collect_interval", "3600000", "-eval", script],
        stderr_to_stdout: true,
        cd: dir
      )

    assert status == 0, out
    assert out =~ "upgraded=true from=#{lib}/beam_alloc-#{vsn}/ebin/", out
    assert out =~ "downgraded=true from=#{lib}/beam_alloc-#{old}/ebin/", out
    assert out =~ "serving={[],", out

    if nif do
      for time <- ["before", "after"],
          do: assert(out =~ "#{time}_upgrade=['#{nif}']", out)
    end
  end

  # A user's NIF (not in the release, so not loaded again), linked with
  # the library of the earlier version: loaded before the upgrade, its
  # misuse reported to the reporter before and after it.
  defp nif_script(nil), do: "Nif = fun(_) -> ok end,"

  defp nif_script(module) do
    beam = Path.join(ebin(), "#{module}")

    ~s"""
    {module, _} = code:load_abs(#{inspect(beam)}),
    Nif = fun(When) ->
              _ = try '#{module}':double_free() catch _:_ -> ok end,
              io:format("~p=~p~n", [When, [M || {M, _} <- beam_alloc:take_reports()]])
          end,
    """
  end

  # (By the source's folder in this checkout, wherever that is.)
  defp shipped?(:mix, source), do: not String.starts_with?(Path.relative_to_cwd(source), "test/")
  defp shipped?(:erlang, source), do: Path.dirname(Path.relative_to_cwd(source)) == "erlang"
end
