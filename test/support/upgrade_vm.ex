defmodule BeamAlloc.Test.UpgradeVM do
  @moduledoc false
  # A hot upgrade between two copies of a test NIF from two files (a/ and
  # b/ in a temporary folder, as a release's lib/app-VSN/priv would be),
  # in a VM of its own (elixir -e): what the upgrade keeps mapped, or
  # crashes, stays there. The script runs with
  #
  #   version.(copy): a new version of module that loads that copy of nif
  #     with load_info (Elixir source), over the current one;
  #   say.(what, value): prints "what inspect(value)";
  #   hold.(make): a process that keeps the resource make.() gives ({:ok,
  #     resource}, as the NIF returns it), made once the call returns: its
  #     pid, for run_in.(pid, fun) (fun.(resource), run in it) and
  #     drop.(pid) (it ends, the resource with it: after a collection
  #     and 50 ms its destructor has run).
  #
  # The stubs are module's functions in this VM, or opts' stubs:
  # ["name/arity", ...] when module is not loaded here.
  #
  # Returns {output with stderr, exit status}.
  def run(module, nif, load_info, script, opts \\ []) do
    # (Removed when the calling test ends.)
    dir = BeamAlloc.Test.TmpDir.path!("beam_alloc_upgrade_#{nif}")

    for copy <- ["a", "b"] do
      File.mkdir_p!(Path.join(dir, copy))

      File.cp!(
        Path.join(:code.priv_dir(:beam_alloc), nif <> ".so"),
        Path.join([dir, copy, nif <> ".so"])
      )
    end

    stubs =
      Keyword.get_lazy(opts, :stubs, fn ->
        for {name, arity} <- module.__info__(:functions),
            name != :__load_nif__,
            do: "#{name}/#{arity}"
      end)

    prelude = """
    version = fn copy ->
      path = String.to_charlist(Path.join([#{inspect(dir)}, copy, #{inspect(nif)}]))

      contents =
        quote do
          def load, do: :erlang.load_nif(unquote(path), #{load_info})
          use BeamAlloc.Test.NifModule, stubs: #{inspect(stubs)}
        end

      BeamAlloc.Test.NifModule.create_version(#{inspect(module)}, contents, __ENV__)
      :ok = #{inspect(module)}.load()
    end

    say = fn what, value -> IO.puts(what <> " " <> inspect(value)) end

    hold = fn make ->
      parent = self()

      pid =
        spawn(fn ->
          {:ok, resource} = make.()
          send(parent, {:made, self()})

          serve = fn serve ->
            receive do
              {:run, fun} ->
                send(parent, {:ran, fun.(resource)})
                serve.(serve)

              :drop ->
                :ok
            end
          end

          serve.(serve)
        end)

      receive do: ({:made, ^pid} -> pid)
    end

    run_in = fn pid, fun ->
      send(pid, {:run, fun})
      receive do: ({:ran, value} -> value)
    end

    drop = fn pid ->
      ref = Process.monitor(pid)
      send(pid, :drop)
      receive do: ({:DOWN, ^ref, _, _, _} -> :ok)
      :erlang.garbage_collect()
      Process.sleep(50)
    end

    _ = {hold, run_in, drop}
    """

    BeamAlloc.Test.NifModule.in_own_vm(prelude <> script)
  end
end
