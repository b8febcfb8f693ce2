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
%% since. A busy library is left alone: its own refills reuse what other
%% threads freed.
%%
%% Application environment (read at every tick, so it may change at any
%% time): auto_collect (true | false, default true), auto_collect_interval
%% (milliseconds, default 1000), auto_collect_min_bytes (default 4 MiB).
%% The beam_alloc application starts it (rebar3's beam_alloc_app, Mix's
%% BeamAlloc.Application).
-module(beam_alloc_collector).
-behaviour(gen_server).

-export([start_link/0, tick/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(INTERVAL, 1000).
-define(MIN_BYTES, 4194304).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% One tick now (tests): the names of the libraries' modules it collected.
-spec tick() -> [binary()].
tick() ->
    gen_server:call(?MODULE, tick, infinity).

%% State: ModuleName => {Ops at the last tick, Ops at its last collection}.
init([]) ->
    schedule(),
    {ok, #{}}.

handle_call(tick, _From, Seen) ->
    {Collected, Seen1} = run(Seen),
    {reply, Collected, Seen1};
handle_call(_Other, _From, Seen) ->
    {reply, {error, unknown_call}, Seen}.

handle_cast(_Msg, Seen) ->
    {noreply, Seen}.

handle_info(tick, Seen) ->
    schedule(),
    {_, Seen1} = run(Seen),
    {noreply, Seen1};
handle_info(_Msg, Seen) ->
    {noreply, Seen}.

schedule() ->
    erlang:send_after(setting(auto_collect_interval, ?INTERVAL), self(), tick).

setting(Key, Default) ->
    case application:get_env(beam_alloc, Key) of
        {ok, V} when is_integer(V), V > 0 -> V;
        _ -> Default
    end.

run(Seen) ->
    case application:get_env(beam_alloc, auto_collect, true) of
        false -> {[], Seen};
        _ -> run(holdings(), setting(auto_collect_min_bytes, ?MIN_BYTES), Seen)
    end.

%% Every copy of a module's library counts, summed (an old and a new one
%% during an upgrade: collect/1 takes the first it finds).
run(Holdings, MinBytes, Seen) ->
    Sums = lists:foldl(fun({M, Held, Live, Ops}, Acc) ->
                               {H0, L0, O0} = maps:get(M, Acc, {0, 0, 0}),
                               Acc#{M => {H0 + Held, L0 + Live, O0 + Ops}}
                       end, #{}, Holdings),
    maps:fold(fun(M, {Held, Live, Ops}, {Done, Acc}) ->
                      {LastOps, CollectedAt} = maps:get(M, Seen, {none, none}),
                      case LastOps =:= Ops andalso CollectedAt =/= Ops
                          andalso Held - Live >= MinBytes of
                          true ->
                              _ = collect(M),
                              {[M | Done], Acc#{M => {Ops, Ops}}};
                          false ->
                              {Done, Acc#{M => {Ops, CollectedAt}}}
                      end
              end, {[], #{}}, Sums).

%% Without the driver library (not built, or beam_alloc's priv not found)
%% there is nothing to read: the collector idles.
holdings() ->
    try beam_alloc_testing_nif:holdings()
    catch error:_ -> []
    end.

collect(M) ->
    try beam_alloc_testing_nif:collect(M)
    catch error:_ -> {error, not_loaded}
    end.
