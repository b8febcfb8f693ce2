defmodule BeamAlloc.Testing.Nif do
  @moduledoc false
  # The fault-injection driver (c_src/beam_alloc_testing.c, built into
  # priv/beam_alloc_testing.so by `make nifs`). BeamAlloc.Testing is its only
  # user; the functions mirror the C ones:
  #
  #   open() :: {:ok, session} | {:error, :already_open | :enomem}
  #   attach(session, :all | [module_name :: binary]) :: [module_name]
  #   begin_run(session, fail_index | :infinity, :record | :compare) :: :ok
  #   end_run(session) :: %{requests:, induced:, mismatch:, leaks:, leaked:, lost:}
  #   live(session) :: blocks of the current run still live
  #   close(session) :: :ok
  #   stats(module_name :: binary) :: {:ok, %{raw:, large:, general_purpose:}}
  #                                    | {:error, :not_found}
  #
  # Every call but close/1 must come from the process that opened the session.

  @on_load :load_nif

  @doc false
  def load_nif do
    case :code.priv_dir(:beam_alloc) do
      {:error, reason} ->
        {:error, {:priv_dir, reason}}

      priv ->
        priv
        |> :filename.join(~c"beam_alloc_testing")
        |> :erlang.load_nif(0)
    end
  end

  def open, do: :erlang.nif_error(:not_loaded)
  def attach(_session, _modules), do: :erlang.nif_error(:not_loaded)
  def begin_run(_session, _fail_index, _mode), do: :erlang.nif_error(:not_loaded)
  def end_run(_session), do: :erlang.nif_error(:not_loaded)
  def live(_session), do: :erlang.nif_error(:not_loaded)
  def close(_session), do: :erlang.nif_error(:not_loaded)
  def stats(_module_name), do: :erlang.nif_error(:not_loaded)
end
