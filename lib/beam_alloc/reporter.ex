defmodule BeamAlloc.Reporter do
  @moduledoc """
  Where beam_alloc's diagnostics go inside a running node.

  Every NIF library built with beam_alloc sends each report line (a leak
  found by `leak_check`, a double free, a write past the end of a block, a
  free of a pointer the allocator does not own, ...) to this process, which
  logs it as a warning through `Logger` with the metadata
  `beam_alloc: module`, and keeps the latest #{100} for inspection:

      iex> BeamAlloc.Reporter.recent()
      [{LeakCheckTest, "beam_alloc: memory leak detected in function `LeakCheckTest.check_me/0`:"},
       {LeakCheckTest, "beam_alloc: leak: 8 bytes (alignment 1) at 0x..., allocated from ..."}]

  It is started by the `:beam_alloc` application. When it is not running
  (an Erlang node that did not start the application), reports go to the
  node's standard error. A NIF that installs its own hook with
  `beam_set_report_hook` keeps it.
  """
  use GenServer

  require Logger

  @keep 100

  @doc false
  def start_link(opts \\ []) do
    GenServer.start_link(__MODULE__, opts, name: __MODULE__)
  end

  @doc """
  The latest reports, oldest first, as `{module, line}` where `module` is
  the module whose NIF library reported.
  """
  @spec recent() :: [{module(), String.t()}]
  def recent do
    GenServer.call(__MODULE__, :recent)
  end

  @doc """
  The latest reports (as `recent/0`), forgetting them: a test can take
  what came before it, run, and take what its code reported.
  """
  @spec take() :: [{module(), String.t()}]
  def take do
    GenServer.call(__MODULE__, :take)
  end

  @impl true
  def init(_opts), do: {:ok, :queue.new()}

  @impl true
  def handle_info({:beam_alloc_report, module, line}, queue) do
    Logger.warning(line, beam_alloc: module)
    queue = :queue.in({module, line}, queue)
    queue = if :queue.len(queue) > @keep, do: :queue.drop(queue), else: queue
    {:noreply, queue}
  end

  def handle_info(_other, queue), do: {:noreply, queue}

  @impl true
  def handle_call(:recent, _from, queue), do: {:reply, :queue.to_list(queue), queue}
  def handle_call(:take, _from, queue), do: {:reply, :queue.to_list(queue), :queue.new()}
end
