%% A Common Test event handler for test/common_test_test.exs: sends each
%% case's result, as CT counts it (after the hooks), to the process
%% registered under the name given, {beam_alloc_ct_events, Case, Result}.
%% (A name: CT writes its options to a file and reads them back, and a pid
%% does not read back: ct:run_test/1 returned {error, {bad_installation,
%% ...}}.)
-module(beam_alloc_ct_events).
-behaviour(gen_event).

-export([init/1, handle_event/2, handle_call/2, handle_info/2, terminate/2]).

init([Name]) when is_atom(Name) -> {ok, Name}.

handle_event({event, tc_done, _Node, {_Suite, Case, Result}}, Name) ->
    Name ! {?MODULE, Case, Result},
    {ok, Name};
handle_event(_Event, Name) ->
    {ok, Name}.

handle_call(_Request, Name) -> {ok, ok, Name}.
handle_info(_Info, Name) -> {ok, Name}.
terminate(_Reason, _Name) -> ok.
