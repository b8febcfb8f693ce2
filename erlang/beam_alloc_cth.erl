%% A Common Test hook: a case fails when beam_alloc reported a misuse or a
%% leak while it ran, with the reports' lines, as
%% beam_alloc_testing:without_reports/1 fails an EUnit test. In
%% rebar.config:
%%
%%     {ct_opts, [{ct_hooks, [beam_alloc_cth]}]}.
%%
%% (ct_run -ct_hooks beam_alloc_cth, or {ct_hooks, [beam_alloc_cth]} in
%% ct:run_test/1's options or a suite's suite/0, alike.) A double free in
%% a NIF without leak_check is reported and its call goes on: without the
%% hook the case passes, the report in the log's "Unexpected I/O" alone
%% (on standard error, without its line, where nothing started the
%% beam_alloc application). With it the case fails with
%%
%%     {beam_alloc_reports, [<<"beam_alloc: general purpose allocator: double free: "
%%                             "0x7f.. (length 24, alignment 8), called from parse "
%%                             "(/src/my_app/c_src/my_nif.c:42)">>]}
%%
%% (Whole paths: CT runs in its log directory.) The hook starts the
%% beam_alloc application (where it cannot, each case fails with
%% {beam_alloc_not_started, Reason}). It counts the reports from
%% before init_per_testcase to after end_per_testcase, whoever made them,
%% but those a check_all_allocation_failures turned into the error it
%% raised, as without_reports/1 does. A report made by a process that is
%% neither the case's nor one working for it (a process init_per_suite
%% started, say) has that process's pid before its line, and a line first
%% says so. A case that failed and reported fails with the reports, the
%% case's own failure on the last line (a leak_check NIF's {memory_leak,
%% Message} names the function alone; its report names the line). Reports
%% made outside the cases (init_per_suite, end_per_group) fail nothing:
%% they are logged, as before (rebar3 ct's console shows the logger's
%% reports only for what failed: the CT log has them, init_per_suite's in
%% that function's log with the hook in the run's options, in "Unexpected
%% I/O" with it in suite/0); nor do those of a case that its
%% init_per_testcase failed or skipped. The case's watch is in its
%% config, under the key beam_alloc_cth.
-module(beam_alloc_cth).

-export([id/1, init/2, pre_init_per_testcase/4, post_init_per_testcase/5,
         post_end_per_testcase/5, terminate/1]).

%% Characters of a case's own failure the last line shows at most.
-define(REASON_CHARS, 1000).

-spec id(term()) -> ?MODULE.
id(_Opts) ->
    ?MODULE.

%% State: #{keeper := Pid}, the owner of the cases' watches: the reporter
%% ends a watch when its owner exits, and a case's process does before
%% post_end_per_testcase reads its watch after a timetrap (it runs in
%% another process). The keeper lives as long as the hook (terminate/1,
%% or the run: keeper/0), which init/2's process does not (that of
%% init_per_suite for a hook in suite/0). #{not_started := Reason} when
%% the beam_alloc application could not start: each case fails with
%% {beam_alloc_not_started, Reason} (CT reads no error from init/2: an
%% {error, Reason} it returned became the state, and each case failed as
%% "pre_init_per_testcase/4 CTH call failed", the reason in the CT log
%% alone).
-type state() :: #{keeper := pid()} | #{not_started := term()}.

%% The priority init/2 returns: below the default 0 of other hooks, so
%% that CT calls this hook's post_end_per_testcase after theirs (it calls
%% them in reverse order of priority, then of installation). Other hooks
%% see the case's own result, and a failure this hook adds reaches them
%% through on_tc_fail alone. Without it, a hook installed after the
%% run's, as one in suite/0 is, ran first: rebar3's console hook saw the
%% case's ok become {fail, ...} and printed the failure twice, first as
%% "end_per_testcase FAILED".
-define(PRIORITY, -1000).

-spec init(term(), term()) -> {ok, state(), integer()}.
init(_Id, _Opts) ->
    case application:ensure_all_started(beam_alloc) of
        {ok, _} -> {ok, #{keeper => keeper()}, ?PRIORITY};
        {error, Reason} -> {ok, #{not_started => Reason}, ?PRIORITY}
    end.

%% The keeper ends with terminate/1, or with the run: CT's server,
%% ct_util_server, ends with each run (after the hooks' terminate/1). A
%% run that ended without terminate/1 (a case that killed CT's server or
%% its I/O process) left the keeper for as long as the node ran, and with
%% it the watch of the case then running, which the reporter checked each
%% later report against and kept. (Outside CT, no server: terminate/1
%% alone.) The server is looked up before the spawn: a keeper that looked
%% it up itself, after a server died in between, outlived the run.
keeper() ->
    Run = whereis(ct_util_server),
    spawn(fun() -> keep(Run) end).

keep(Run) ->
    _ = case Run of
            undefined -> none;
            _ -> monitor(process, Run)
        end,
    receive
        stop -> ok;
        {'DOWN', _, process, _, _} -> ok
    end.

-spec terminate(state()) -> ok.
terminate(#{keeper := Keeper}) ->
    Keeper ! stop,
    ok;
terminate(#{not_started := _}) ->
    ok.

%% A case's watch, and its process, go in its config, not in the hook's
%% state: two cases of a parallel group ran under one key ({Suite, Case},
%% the same case listed twice), the second's watch took the first's place,
%% and one case passed with its double free unread (the other watch kept
%% by the reporter for good). The config is init_per_testcase's (CT gives
%% post_end_per_testcase that one, after a timetrap too), which may not
%% have the key: post_init_per_testcase puts it back. It finds the watch
%% in the case process's dictionary when init_per_testcase returned (CT
%% gives it the config returned, pre_ and post_init_per_testcase run in
%% the case's process), or in the config init_per_testcase was given when
%% a timetrap killed that process (post_init_per_testcase runs in another:
%% the dictionary alone lost the watch, which the reporter kept to the end
%% of the run).
%%
%% A {skip, _} or {fail, _} for a config is what a hook CT called first (of
%% a lower priority) returned: CT calls the next hooks with it. It is
%% passed on, and no watch started (the case does not run): the case
%% failed as "pre_init_per_testcase/4 CTH call failed" (lists:keydelete/3
%% on the tuple) rather than being skipped.
-spec pre_init_per_testcase(module(), atom(), list() | {skip | fail, term()}, State) ->
          {list() | {skip | fail, term()}, State}
      when State :: state().
pre_init_per_testcase(_Suite, _Case, Config, State) when not is_list(Config) ->
    {Config, State};
pre_init_per_testcase(_Suite, _Case, _Config, #{not_started := Reason} = State) ->
    {{fail, {beam_alloc_not_started, Reason}}, State};
pre_init_per_testcase(_Suite, _Case, Config, State0) ->
    #{keeper := Keeper} = State = kept(State0),
    Watched = {beam_alloc_testing:watch(Keeper), self(), Keeper},
    put(?MODULE, Watched),
    {[{?MODULE, Watched} | lists:keydelete(?MODULE, 1, Config)], State}.

%% State with a live keeper: one killed (a suite that kills the processes
%% it finds) made the reporter drop each later case's watch at once, and
%% every case passed, its double frees unread.
kept(#{keeper := Keeper} = State) ->
    case is_process_alive(Keeper) of
        true -> State;
        false -> State#{keeper := keeper()}
    end.

%% (Return is ok when init_per_testcase returned a config, Config that one;
%% a config from an older CT. An init_per_testcase that failed or skipped
%% the case ends the watch: no post_end_per_testcase follows, and its
%% watch stayed in the reporter.)
-spec post_init_per_testcase(module(), atom(), list(), term(), State) -> {term(), State}.
post_init_per_testcase(_Suite, _Case, Config, Return, State) ->
    case {watched(Config), Return} of
        {undefined, _} ->
            {Return, State};
        {Watched, ok} ->
            {[{?MODULE, Watched} | lists:keydelete(?MODULE, 1, Config)], State};
        {Watched, NewConfig} when is_list(NewConfig) ->
            {[{?MODULE, Watched} | lists:keydelete(?MODULE, 1, NewConfig)], State};
        {{Watch, Self, _Keeper}, _} ->
            _ = beam_alloc_testing:reports_since(Watch, Self, ct),
            {Return, State}
    end.

watched(Config) ->
    case erase(?MODULE) of
        undefined -> proplists:get_value(?MODULE, Config);
        Watched -> Watched
    end.

-spec post_end_per_testcase(module(), atom(), list(), term(), State) -> {term(), State}.
post_end_per_testcase(_Suite, _Case, Config, Return, State) ->
    case lists:keyfind(?MODULE, 1, Config) of
        false ->
            {Return, State};
        {_, {Watch, Self, Keeper}} ->
            Lost = not is_process_alive(Keeper),
            case {beam_alloc_testing:reports_since(Watch, Self, ct), Lost} of
                {[], false} -> {Return, State};
                {[], true} -> {{fail, {beam_alloc_reports, [lost(Keeper) | failed_too(Return)]}}, State};
                {Lines, _} -> {{fail, {beam_alloc_reports, Lines ++ failed_too(Return)}}, State}
            end
    end.

%% The reporter drops a watch when its owner exits: a keeper killed while
%% the case ran took the case's watch, which then saw nothing, and the
%% case passed whatever it reported.
lost(Keeper) ->
    unicode:characters_to_binary(
      io_lib:format("beam_alloc: this case's reports are unknown: the process keeping its watch "
                    "for beam_alloc_cth (~p) exited while it ran (killed?), and the watch "
                    "with it", [Keeper])).

failed_too(Return) ->
    case failure(Return) of
        none ->
            [];
        Reason ->
            [unicode:characters_to_binary(
               io_lib:format("beam_alloc: the case failed too: ~0tp", [Reason],
                             [{chars_limit, ?REASON_CHARS}]))]
    end.

failure({fail, Reason}) -> Reason;
failure({error, Reason}) -> Reason;
failure({'EXIT', Reason}) -> Reason;
failure({timetrap_timeout, _} = Reason) -> Reason;
failure(_) -> none.
