%% Where beam_alloc's diagnostics go in an Erlang node (the beam_alloc
%% application built by rebar3 starts it; a Mix build starts the Elixir
%% 'Elixir.BeamAlloc.Reporter' instead, and the C side sends to whichever
%% runs).
%%
%% Every NIF library built with beam_alloc sends each report line (a leak
%% found by leak_check, a double free, a write past the end of a block, ...)
%% to this process, which writes its code sites as source lines
%% (beam_alloc_symbolizer: function and file.c:line when the library has
%% debug information), logs it as a warning through logger, with the
%% metadata #{beam_alloc => Module}, and keeps the latest 100 for tests:
%% beam_alloc:take_reports/0 returns and forgets them.
%%
%% Without it (the application not started), reports go to standard error
%% with sites as lib.so+0x1c1b offsets.
-module(beam_alloc_reporter).
-behaviour(gen_server).

-export([start_link/0, take/0, recent/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, handle_continue/2]).

-define(KEEP, 100).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% The reports kept, oldest first, as {Module, Line}, Module the module
%% whose NIF library reported; forgetting them.
-spec take() -> [{module(), binary()}].
take() ->
    gen_server:call(?MODULE, take).

%% The same, keeping them.
-spec recent() -> [{module(), binary()}].
recent() ->
    gen_server:call(?MODULE, recent).

init([]) ->
    {ok, queue:new()}.

handle_call(take, _From, Kept) ->
    {reply, queue:to_list(Kept), queue:new()};
handle_call(recent, _From, Kept) ->
    {reply, queue:to_list(Kept), Kept};
%% A call it does not know is answered, not a crash that loses the kept
%% reports.
handle_call(Other, _From, Kept) ->
    {reply, {error, {unknown_call, Other}}, Kept}.

handle_cast(_Msg, Kept) ->
    {noreply, Kept}.

%% Each report carries an acknowledgement the reporting NIF call waits on
%% (for a second at most: src/nif/report.c), released when this process
%% lets go of the message. So every report waiting is read first, keeping
%% only {Module, Line}; garbage is collected in handle_continue, once
%% gen_server itself no longer holds the message it handed to handle_info
%% (collected here, the first one's ack survived, and the call waited its
%% whole second); and only then are sites resolved (dirty NIF calls, slow).
handle_info({beam_alloc_report, M, L, _, _} = Msg, Kept) when is_atom(M), is_binary(L) ->
    {noreply, Kept, {continue, {release, drain([Msg])}}};
handle_info(_Other, Kept) ->
    {noreply, Kept}.

handle_continue({release, Reports}, Kept) ->
    erlang:garbage_collect(),
    {noreply, lists:foldl(fun keep/2, Kept, Reports)}.

drain(Taken) ->
    receive
        {beam_alloc_report, M, L, _, _} = Msg when is_atom(M), is_binary(L) ->
            drain([Msg | Taken])
    after 0 ->
        [{Module, Line} || {beam_alloc_report, Module, Line, _, _} <- lists:reverse(Taken)]
    end.

keep({Module, Line0}, Kept) ->
    %% A line the symbolizer chokes on is kept as it came: losing the
    %% reporter (and what it kept) to one report would be worse.
    Line = try beam_alloc_symbolizer:resolve_sites(Line0)
           catch _:_ -> Line0
           end,
    logger:warning("~ts", [Line], #{beam_alloc => Module}),
    Kept1 = queue:in({Module, Line}, Kept),
    case queue:len(Kept1) > ?KEEP of
        true -> queue:drop(Kept1);
        false -> Kept1
    end.
