defmodule BeamAlloc.Test.ReporterBound do
  @moduledoc false

  # A burst of n reports waiting in the reporter's mailbox at once (sent
  # while it was suspended, as many NIF libraries and threads can leave
  # them behind a busy reporter): prints how many it has read and not yet
  # kept once it has handled the first, and halts with 0.
  def unread_after_burst(n) do
    Logger.configure(level: :error)
    {:ok, _} = Application.ensure_all_started(:beam_alloc)
    reporter = Process.whereis(BeamAlloc.Reporter)
    :sys.suspend(reporter)

    for i <- 1..n,
        do: send(reporter, {:beam_alloc_report, __MODULE__, "beam_alloc: report #{i}", self()})

    :sys.resume(reporter)
    state = :sys.get_state(reporter, 30_000)
    IO.puts("unread=#{:queue.len(state.unread)} kept=#{state.seq}")
    System.halt(0)
  end
end
