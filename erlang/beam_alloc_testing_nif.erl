%% The fault-injection driver (c_src/beam_alloc_testing.c, built into
%% priv/beam_alloc_testing.so of the beam_alloc application). Internal:
%% beam_alloc_testing and beam_alloc are its only users. The functions
%% mirror the C ones:
%%
%%   open() -> {ok, Session} | {error, already_open | enomem}
%%   open(Caller :: binary()) -> the same; a crash during the check names
%%       Caller, the code that called it
%%   attach(Session, all | [ModuleName :: binary()]) -> [ModuleName]
%%   begin_run(Session, FailIndex | infinity, record | compare) -> ok
%%   end_run(Session) -> #{run, requests, induced, mismatch, reloaded,
%%                         called, lost, misuse, misused}
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

-export([open/0, open/1, attach/2, begin_run/3, end_run/1, live/1, leaks/1, close/1,
         stats/1, collect/1, holdings/0]).

-on_load(load/0).

%% The stubs' error while the library is not loaded: beam_alloc:driver/1
%% turns it into {driver, Reason}.
-define(NOT_LOADED, erlang:nif_error({beam_alloc_driver, not_loaded})).

%% Never fails: a release boots in embedded mode, loading every module
%% first, and a module whose on_load fails there stops the boot ("Kernel
%% pid terminated": a release without priv/beam_alloc_testing.so did not
%% start). Without the library the stubs stay, and the node runs without
%% stats, collects and fault injection, as the log says once.
load() ->
    case code:priv_dir(beam_alloc) of
        {error, Reason} ->
            unavailable({priv_dir, Reason});
        Priv ->
            case erlang:load_nif(filename:join(Priv, "beam_alloc_testing"), 0) of
                ok -> ok;
                {error, Reason} -> unavailable(Reason)
            end
    end.

unavailable(Reason) ->
    logger:warning("beam_alloc: no stats, collect or fault injection in this node: "
                   "the driver's library (priv/beam_alloc_testing.so) did not load: ~0tp",
                   [Reason]),
    ok.

open() -> ?NOT_LOADED.
open(_Caller) -> ?NOT_LOADED.
attach(_Session, _Modules) -> ?NOT_LOADED.
begin_run(_Session, _FailIndex, _Mode) -> ?NOT_LOADED.
end_run(_Session) -> ?NOT_LOADED.
live(_Session) -> ?NOT_LOADED.
leaks(_Session) -> ?NOT_LOADED.
close(_Session) -> ?NOT_LOADED.
stats(_ModuleName) -> ?NOT_LOADED.
collect(_ModuleName) -> ?NOT_LOADED.
holdings() -> ?NOT_LOADED.
