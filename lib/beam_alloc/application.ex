defmodule BeamAlloc.Application do
  @moduledoc false
  # Starts BeamAlloc.Reporter, where NIF libraries built with beam_alloc
  # send their diagnostics (leaks, double frees, ...) to be logged, and
  # :beam_alloc_collector, which gives back what idle libraries hold and no
  # longer need (erlang/beam_alloc_collector.erl).
  use Application

  @impl true
  def start(_type, _args) do
    collector = %{id: :beam_alloc_collector, start: {:beam_alloc_collector, :start_link, []}}

    Supervisor.start_link([BeamAlloc.Reporter, collector],
      strategy: :one_for_one,
      name: BeamAlloc.Supervisor
    )
  end
end
