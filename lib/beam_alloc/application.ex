defmodule BeamAlloc.Application do
  @moduledoc false
  # Starts BeamAlloc.Reporter, where NIF libraries built with beam_alloc
  # send their diagnostics (leaks, double frees, ...) to be logged.
  use Application

  @impl true
  def start(_type, _args) do
    Supervisor.start_link([BeamAlloc.Reporter],
      strategy: :one_for_one,
      name: BeamAlloc.Supervisor
    )
  end
end
