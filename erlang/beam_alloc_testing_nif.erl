%% The fault-injection driver (c_src/beam_alloc_testing.c, built into
%% priv/beam_alloc_testing.so of the beam_alloc application). Internal:
%% beam_alloc_testing and beam_alloc are its only users. The functions
%% mirror the C ones:
%%
%%   open() -> {ok, Session} | {error, already_open | enomem}
%%   attach(Session, all | [ModuleName :: binary()]) -> [ModuleName]
%%   begin_run(Session, FailIndex | infinity, record | compare) -> ok
%%   end_run(Session) -> #{run, requests, induced, mismatch, lost, misuse,
%%                         misused}
%%   live(Session) -> leak suspects (blocks of ended runs) still live
%%   leaks(Session) -> #{runs => [{Run, Leaked, [{Index, Len, Site}]}],
%%                       lost => boolean()}
%%   close(Session) -> ok
%%   stats(ModuleName :: binary()) -> {ok, #{raw, large, general_purpose}}
%%                                    | {error, not_found}
%%   collect(ModuleName :: binary()) -> ok | {error, not_found}
%%   holdings() -> [{ModuleName :: binary(), Held, Live, Ops}]
%%
%% Every call but close/1 must come from the process that opened the
%% session. Absent values (a site, a request) are the atom undefined. An
%% argument a function cannot take raises {badarg, Text}, Text saying what
%% it takes.
-module(beam_alloc_testing_nif).

-export([open/0, attach/2, begin_run/3, end_run/1, live/1, leaks/1, close/1,
         stats/1, collect/1, holdings/0]).

-on_load(load/0).

load() ->
    case code:priv_dir(beam_alloc) of
        {error, Reason} ->
            {error, {priv_dir, Reason}};
        Priv ->
            erlang:load_nif(filename:join(Priv, "beam_alloc_testing"), 0)
    end.

open() -> erlang:nif_error(not_loaded).
attach(_Session, _Modules) -> erlang:nif_error(not_loaded).
begin_run(_Session, _FailIndex, _Mode) -> erlang:nif_error(not_loaded).
end_run(_Session) -> erlang:nif_error(not_loaded).
live(_Session) -> erlang:nif_error(not_loaded).
leaks(_Session) -> erlang:nif_error(not_loaded).
close(_Session) -> erlang:nif_error(not_loaded).
stats(_ModuleName) -> erlang:nif_error(not_loaded).
collect(_ModuleName) -> erlang:nif_error(not_loaded).
holdings() -> erlang:nif_error(not_loaded).
