%% Gives back, without being asked, what NIF libraries built with
%% beam_alloc hold and no longer need. Blocks freed by other threads than
%% the ones that allocated them (a process handing its data to another)
%% leave their slabs with the general purpose allocator until a thread
%% allocating that size class reuses them, or beam_alloc:collect/1: in a
%% node that goes quiet after such a burst, that was never (a bug hunt's
%% idle node held 199 MB of the VM's memory with no block live).
%%
%% Every interval it reads each library's holdings (what its general
%% purpose allocators hold of the VM, keep live, and have done); a library
%% that did nothing for a whole interval and holds at least min_bytes more
%% than it keeps live is collected, once: again only after it was used
%% since. A busy library is left to its own refills, which reuse what
%% other threads freed, but for one that held min_bytes more than it keeps
%% live at each of BUSY_TICKS ticks in a row: collected then (and again
%% after as many). A light steady trickle of calls (two every 200 ms) kept
%% a library busy for good, and 31 MB freed by other processes with it (a
%% hunt); a collect costs well under a millisecond once the first has
%% registered the barrier.
%%
%% Application environment (read at every tick, so it may change at any
%% time): auto_collect (true | false, default true), auto_collect_interval
%% (milliseconds, a positive integer, default 1000; looked at every second
%% at least, so a new one takes effect within a second), auto_collect_min_bytes
%% (a non-negative integer, default 4 MiB). Another value is logged as a
%% warning, once, and the default used; the collector's start (the
%% application's) logs every such value, and every key it does not know.
%% The beam_alloc application starts it (rebar3's beam_alloc_app, Mix's
%% BeamAlloc.Application).
-module(beam_alloc_collector).
-behaviour(gen_server).

-export([start_link/0, tick/0]).
%% For tests.
-export([step/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, code_change/3]).

-define(INTERVAL, 1000).
-define(MIN_BYTES, 4194304).
%% The longest interval erlang:send_after/3 takes on every VM (about 49.7
%% days): a larger one made it raise badarg, in init/1 too, so the
%% supervisor gave up and the application stopped (review).
-define(MAX_INTERVAL, 4294967295).
%% The longest the collector sleeps between two looks at its interval.
-define(WAKE, 1000).
%% Ticks in a row a busy library may hold min_bytes beyond what it keeps
%% live before it is collected anyway.
-define(BUSY_TICKS, 30).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% One tick now (tests): the names of the libraries' modules it collected.
-spec tick() -> [binary()].
tick() ->
    gen_server:call(?MODULE, tick, infinity).

%% State: {Driver, Seen}. Driver: unknown until the first enabled tick,
%% then loaded or missing (the driver library could not be loaded: looked
%% for once, not at every tick). Seen: ModuleName => {Ops and Held at the
%% last tick, whether it was collected since} (step/3).
init([]) ->
    check_env(),
    put(last_tick, erlang:monotonic_time(millisecond)),
    _ = erlang:send_after(min(setting(auto_collect_interval, ?INTERVAL), ?WAKE),
                          self(), tick),
    {ok, {unknown, #{}}}.

handle_call(tick, _From, State) ->
    {Collected, State1} = run(State),
    {reply, Collected, State1};
handle_call(_Other, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

%% The timer wakes it at least every ?WAKE ms, and it runs once the
%% interval read then has passed since the last run: an interval lowered at
%% run time (from an hour back to a second, say) took effect only when the
%% timer armed with the old one fired (a hunt: a burst held 16 MB for as
%% long, the setting back at 500 ms).
handle_info(tick, State) ->
    Interval = setting(auto_collect_interval, ?INTERVAL),
    Now = erlang:monotonic_time(millisecond),
    {State1, Last} = case get(last_tick) of
                         L when is_integer(L), Now - L < Interval -> {State, L};
                         _ ->
                             {_, S} = run(State),
                             put(last_tick, Now),
                             {S, Now}
                     end,
    _ = erlang:send_after(max(1, min(Interval - (Now - Last), ?WAKE)), self(), tick),
    {noreply, State1};
handle_info(_Msg, State) ->
    {noreply, State}.

%% A release upgrade from a version whose state was Seen alone.
code_change(_OldVsn, Seen, _Extra) when is_map(Seen) ->
    {ok, {unknown, Seen}};
code_change(_OldVsn, State, _Extra) ->
    {ok, State}.

%% A value it cannot take is logged (once per key and value) and the default
%% used: {auto_collect, "false"} or {auto_collect, off} in a sys.config
%% went on collecting, silently, and {auto_collect_min_bytes, 0} meant 4 MiB
%% (a release hunt).
setting(Key, Default) ->
    case application:get_env(beam_alloc, Key) of
        undefined -> Default;
        {ok, V} when is_integer(V), V >= 0, Key =:= auto_collect_min_bytes -> V;
        {ok, V} when is_integer(V), V > 0, V =< ?MAX_INTERVAL -> V;
        {ok, V} ->
            Expected = case Key of
                           auto_collect_min_bytes -> "a non-negative integer (bytes)";
                           _ -> "a positive integer (milliseconds) up to 4294967295"
                       end,
            bad_setting(Key, V, Expected, Default)
    end.

%% Every key of the environment, at the start: a bad auto_collect or
%% auto_collect_min_bytes was said only at the first tick (a second
%% later, or never with auto_collect false), and a key it does not know
%% (auto_colect) not at all (an audit). Said, never refused: the
%% application starts with the defaults.
check_env() ->
    _ = enabled(),
    _ = setting(auto_collect_interval, ?INTERVAL),
    _ = setting(auto_collect_min_bytes, ?MIN_BYTES),
    Known = [auto_collect, auto_collect_interval, auto_collect_min_bytes],
    _ = [logger:warning("beam_alloc: the application environment has an unknown key ~0tp "
                        "(its value: ~0tp), ignored; known keys: ~ts",
                        [K, V, lists:join(", ", [atom_to_list(A) || A <- Known])],
                        #{beam_alloc => collector})
         || {K, V} <- application:get_all_env(beam_alloc), not lists:member(K, Known)],
    ok.

enabled() ->
    case application:get_env(beam_alloc, auto_collect, true) of
        B when is_boolean(B) -> B;
        V -> bad_setting(auto_collect, V, "true or false", true)
    end.

bad_setting(Key, Value, Expected, Default) ->
    case get({bad_setting, Key}) of
        Value ->
            ok;
        _ ->
            put({bad_setting, Key}, Value),
            logger:warning("beam_alloc: the application environment's ~ts is ~0tp: "
                           "expected ~ts; using the default, ~0tp",
                           [Key, Value, Expected, Default], #{beam_alloc => collector})
    end,
    Default.

%% (A state of the version before, Seen alone: its new code may run it
%% after a release upgrade loaded this module without code_change/3.)
run(Seen) when is_map(Seen) ->
    run({unknown, Seen});
run({Driver0, Seen} = State) ->
    case enabled() of
        false -> {[], State};
        true ->
            case driver(Driver0) of
                missing -> {[], {missing, Seen}};
                loaded ->
                    {Done, Seen1} = run(holdings(), setting(auto_collect_min_bytes,
                                                            ?MIN_BYTES), Seen),
                    {Done, {loaded, Seen1}}
            end
    end.

%% Whether the driver's library is loaded, asked once (its module's stubs
%% raise without it). Its on_load once failed there, leaving the module
%% unloaded, so every call loaded it again, and the code server logged the
%% failure at every tick (every second, on a node without
%% priv/beam_alloc_testing.so: review).
driver(unknown) ->
    try beam_alloc_testing_nif:holdings() of
        _ -> loaded
    catch
        error:_ -> missing
    end;
driver(Known) ->
    Known.

%% Every copy of a module's library counts, summed (an old and a new one
%% during an upgrade: collect/1 collects each). A library is collected when
%% it holds min_bytes or more beyond what it keeps live, and more at all (a
%% min_bytes of 0 collected an idle library holding nothing: review).
run(Holdings, MinBytes, Seen) ->
    {Collect, Seen1} = step(Holdings, MinBytes, Seen),
    _ = [collect(M) || M <- Collect],
    {Collect, Seen1}.

%% The decision alone (exported for tests): the libraries to collect and
%% the state to keep. Seen: ModuleName => {Ops, Held, Collected, Busy},
%% what the last tick read, whether the library was collected since its Ops
%% last moved, and the ticks in a row it was busy holding min_bytes beyond
%% what it keeps live. (Collected was once the Ops count of the collection,
%% compared with the Ops read: a library whose module was purged and loaded again starts
%% counting at 0, and the same work done again (a test's, a job's) came to
%% the same count, so the new copy's memory was taken for what had been
%% collected and kept for good (a hunt: 35.9 MB held, idle, nothing live,
%% after a reload and the same burst). Now any move of Ops between two
%% ticks clears it, and so does Held growing while Ops stood still, which
%% the same copy cannot do (only allocations make it hold more): a reload
%% and the same work done within one interval.)
step(Holdings, MinBytes, Seen) ->
    Sums = lists:foldl(fun({M, Held, Live, Ops}, Acc) ->
                               {H0, L0, O0} = maps:get(M, Acc, {0, 0, 0}),
                               Acc#{M => {H0 + Held, L0 + Live, O0 + Ops}}
                       end, #{}, Holdings),
    maps:fold(fun(M, {Held, Live, Ops}, {Done, Acc}) ->
                      {LastOps, LastHeld, WasCollected, LastBusy} =
                          entry(maps:get(M, Seen, none)),
                      Idle = LastOps =:= Ops,
                      Collected = Idle andalso Held =< LastHeld andalso WasCollected,
                      Excess = Held - Live >= max(MinBytes, 1),
                      Busy = case Excess andalso not Idle of
                                 true -> LastBusy + 1;
                                 false -> 0
                             end,
                      if
                          Idle andalso not Collected andalso Excess ->
                              {[M | Done], Acc#{M => {Ops, Held, true, 0}}};
                          Busy >= ?BUSY_TICKS ->
                              {[M | Done], Acc#{M => {Ops, Held, false, 0}}};
                          true ->
                              {Done, Acc#{M => {Ops, Held, Collected, Busy}}}
                      end
              end, {[], #{}}, Sums).

%% A library's entry as step/3 keeps it, {Ops, Held, Collected, Busy}, from
%% its own, from an earlier version's ({Ops, Held, Collected}, or {LastOps,
%% Ops at its last collection}, whose held is unknown: any is no more), or
%% from none (a library not seen yet).
entry({_, _, _, _} = E) -> E;
entry({Ops, Held, Collected}) -> {Ops, Held, Collected, 0};
entry({LastOps, CollectedAt}) -> {LastOps, infinity, LastOps =:= CollectedAt, 0};
entry(none) -> {none, 0, false, 0}.

%% Without the driver library (not built, or beam_alloc's priv not found)
%% there is nothing to read: the collector idles (driver/1).
holdings() ->
    try beam_alloc_testing_nif:holdings()
    catch error:_ -> []
    end.

collect(M) ->
    try beam_alloc_testing_nif:collect(M)
    catch error:_ -> {error, not_loaded}
    end.
