defmodule BeamAlloc.AllocationFailureError do
  @moduledoc """
  Raised by `BeamAlloc.Testing.check_all_allocation_failures/2` when a
  function mishandles an allocation failure.

  `:problems` lists what went wrong, one map per problem, in the order the
  runs found them. Every map has `:kind` and `:index` (the number of the
  allocation that was failed, or `nil` for a run without failures); the
  failing request, when there is one, is in `:request` as
  `%{index:, kind: :alloc | :resize | :remap, size:, site:}`. The kinds:

    * `:leak` - blocks were still live when the function returned;
      `:blocks` lists them (`%{index:, size:, site:}`, at most 100) and
      `:leaked` counts them all.
    * `:swallowed` - the failure was injected but the function returned a
      success; `:outcome` is `{:returned, value}`.
    * `:unexpected_error` - the failure surfaced, but not the way the
      `:expect` option asks (`:expect` and `:outcome` tell how).
    * `:nondeterministic` - a run did not repeat the first: `:reason` says
      how, `:expected_site` is where the first run's allocation came from.
      No further runs are made.
    * `:failed_without_injection` - the function failed with no failure
      injected; `:outcome` is `{:returned, value}` or
      `{:raised, kind, reason, stacktrace}`.
    * `:incomplete` - the checker ran out of memory for its bookkeeping;
      the run's results are partial.
    * `:misuse` - a call of the run misused memory: `:misuse` is the kind
      (`"double free"`, `"write past the end of a block"`, ...), `:report`
      the allocator's report (with the sites of the call and of the
      block's allocation), `:after` the number of allocations the run had
      made when the misusing call ended, `:more` how many further misuses
      of the run are not listed.

  `:allocations` is the number of allocations the first run made.
  """

  defexception problems: [], allocations: 0, message: nil

  @impl true
  def exception(opts) do
    error = struct!(__MODULE__, valid_options!(opts))
    %{error | message: error.message || format(error)}
  end

  # A hand-built raise with a count that is no count (allocations: -1 said
  # "-1 allocations"), problems that are no list (an ArgumentError of
  # length/1) or options that are no keyword list (Protocol.UndefinedError)
  # says what it takes instead (bad-arguments hunt).
  defp valid_options!(opts) do
    unless Keyword.keyword?(opts) or is_map(opts) do
      raise ArgumentError,
            "BeamAlloc.AllocationFailureError takes a keyword list of :problems, " <>
              ":allocations and :message, got: #{inspect(opts)}"
    end

    Enum.each(opts, fn
      {:problems, list} when is_list(list) ->
        List.improper?(list) and bad_option!(:problems, "a list of problem maps", list)

      {:problems, other} ->
        bad_option!(:problems, "a list of problem maps", other)

      {:allocations, n} when is_integer(n) and n >= 0 ->
        :ok

      {:allocations, other} ->
        bad_option!(:allocations, "a non-negative integer", other)

      {:message, text} when is_binary(text) or is_nil(text) ->
        :ok

      {:message, other} ->
        bad_option!(:message, "a string", other)

      {key, _} ->
        raise ArgumentError,
              "unknown option #{inspect(key)} for BeamAlloc.AllocationFailureError " <>
                "(known: :problems, :allocations, :message)"
    end)

    opts
  end

  defp bad_option!(key, expected, value) do
    raise ArgumentError,
          "invalid value for #{inspect(key)} of BeamAlloc.AllocationFailureError, " <>
            "expected #{expected}, got: #{inspect(value)}"
  end

  defp format(%{problems: problems, allocations: count}) do
    n = length(problems)

    # (A first run that failed already: no allocation was failed at all.)
    how =
      cond do
        Enum.any?(problems, &(is_map(&1) and Map.get(&1, :kind) == :failed_without_injection)) ->
          "none failed: the run without failures already failed"

        count == 0 ->
          "none to fail"

        true ->
          "each failed in turn"
      end

    header =
      "#{n} allocation failure #{plural(n, "problem")} " <>
        "(#{count} #{plural(count, "allocation")}, #{how}):"

    header <> "\n\n" <> Enum.map_join(problems, "\n", &("  * " <> describe_any(&1)))
  end

  # A problem built by hand (raise with problems: ...) that is not one the
  # checker makes is shown as it is, not a crash of the message.
  defp describe_any(p) do
    describe(p)
  rescue
    _ in [FunctionClauseError, KeyError, ArgumentError, ArithmeticError] -> inspect(p)
  end

  # A leak lists its first @blocks_shown blocks in the message (its
  # :blocks has them all, up to the driver's 100): a function that leaks
  # on every failure path would otherwise make a message of megabytes.
  @blocks_shown 10

  defp describe(%{kind: :leak} = p) do
    shown = Enum.take(p.blocks, @blocks_shown)

    blocks =
      Enum.map_join(shown, "", fn b ->
        "\n      #{b.size} #{plural(b.size, "byte")} from allocation ##{b.index} at #{site(b.site)}"
      end)

    hidden = p.leaked - length(shown)
    more = if hidden > 0, do: "\n      ... and #{hidden} more", else: ""

    "#{when_(p)} left #{p.leaked} #{plural(p.leaked, "block")} live:" <> blocks <> more
  end

  defp describe(%{kind: :swallowed} = p) do
    "#{when_(p)} was swallowed: the function #{outcome(p.outcome)}"
  end

  defp describe(%{kind: :unexpected_error} = p) do
    wanted = if p.expect == :raise, do: "an exception", else: "an error result"

    "#{when_(p)} surfaced, but not as #{wanted} (expect: #{inspect(p.expect)}): " <>
      "the function #{outcome(p.outcome)}"
  end

  # (The request is the later run's: in parentheses after the reason it
  # read as the first run's, as in :beam_alloc_testing.)
  defp describe(%{kind: :nondeterministic} = p) do
    at = if p.request, do: "; in a later run it was: #{request(p.request)}", else: ""
    "the function is nondeterministic: #{p.reason}#{at}; the remaining runs were skipped"
  end

  defp describe(%{kind: :failed_without_injection} = p) do
    "the function failed without any allocation failure: it #{outcome(p.outcome)}"
  end

  defp describe(%{kind: :misuse} = p) do
    more = if p.more > 0, do: " (and #{p.more} more)", else: ""

    "#{when_(p)} misused memory: #{p.misuse}#{more} (in a call that ended after " <>
      "#{p.after} #{plural(p.after, "allocation")}):\n      #{p.report}"
  end

  defp describe(%{kind: :incomplete} = p) do
    "#{when_(p)}: the checker ran out of memory for its bookkeeping; results are incomplete"
  end

  defp when_(%{index: nil}), do: "the run without failures"

  defp when_(%{request: request}),
    do: "failing allocation ##{request.index} (#{request(request)})"

  defp request(%{kind: kind, size: size, site: site}) do
    what =
      case kind do
        :alloc -> "alloc of #{size} #{plural(size, "byte")}"
        other -> "#{other} to #{size} #{plural(size, "byte")}"
      end

    "#{what} at #{site(site)}"
  end

  defp site(nil), do: "an unknown site"
  defp site(site), do: site

  defp outcome({:returned, value}),
    do: "returned #{inspect(value, limit: 10, printable_limit: 80)}"

  defp outcome({:raised, kind, reason, stacktrace}) do
    "raised " <>
      (kind |> Exception.format_banner(reason, stacktrace) |> String.replace("\n", " "))
  end

  defp plural(1, word), do: word
  defp plural(_, word), do: word <> "s"
end
