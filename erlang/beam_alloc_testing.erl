%% Fault injection for NIFs built with beam_alloc, for Erlang test suites
%% (EUnit, Common Test). Pure Erlang: needs the beam_alloc application (its
%% priv/beam_alloc_testing.so driver), not Elixir. The Elixir module
%% 'Elixir.BeamAlloc.Testing' is a front for this one.
%%
%%     {ok, N} = beam_alloc_testing:check_all_allocation_failures(
%%                   fun() -> my_nif:parse(<<"[1, 2]">>) end,
%%                   #{expect => error_tuple}).
%%
%% runs the fun once counting the allocations its NIF calls make through
%% beam_allocator, then N more times failing allocation 0, 1, ..., N-1 in
%% turn (and every later one), then once more without failures. Every
%% induced failure must surface as an exception or an {error, _} (or error)
%% result, leave no block live, and each run must repeat the first one.
%%
%% Counted: requests for memory through beam_allocator in the BEAM_NIF calls
%% of the calling process, in every NIF library built with BEAM_NIF_INIT
%% (or only those of the modules option). Other processes calling the same
%% NIFs are not affected, nor counted: {ok, 0} checked nothing, as when
%% the fun calls the NIF through a gen_server. Match the count you expect
%% ({ok, 4} = ...) to see that.
%%
%% Time: N + 2 runs of the function, and, when blocks are left live, one
%% wait of up to 127 ms at the end for resource destructors (a function with
%% 300 allocations that leaks on every failure path: about 0.2 s). EUnit
%% stops a test after 5 s with a bare timeout: give a check of a slow
%% function more time, as a generator:
%% parse_test_() -> {timeout, 60, fun() -> ... end}.
%%
%% Options (a map or a property list):
%%   expect   any (default): an exception, exit or throw, or a returned
%%            {error, _} or error; raise: an exception only; error_tuple:
%%            a returned {error, _} or error only.
%%   modules  all (default), or a non-empty list of NIF modules (loaded
%%            first).
%%            With all, a library that the fun loads itself (its module's
%%            first call) is attached after the first run, which then ran
%%            outside the check, for real, and runs again: load such
%%            modules first (code:ensure_loaded/1) when that would harm
%%            (a remote fun's own module, fun my_nif:f/0, is loaded first).
%%
%% Errors (erlang:error/1):
%%   {allocation_failures, #{message := binary(), allocations := N,
%%                           problems := [Problem]}}
%%       the function mishandled failures; message lists every problem
%%       with allocation numbers and sites. Each Problem is a map with
%%       kind (leak, swallowed, unexpected_error, nondeterministic,
%%       failed_without_injection, incomplete, misuse) and index (the failed
%%       allocation's number, or undefined for a run without failures),
%%       plus request (#{index, kind, size, site} | undefined) and the
%%       kind's own keys: blocks and leaked (leak), outcome ({returned,
%%       Value} | {raised, Class, Reason, Stacktrace}), expect, reason and
%%       expected_site (nondeterministic), misuse, report, 'after' and more
%%       (misuse: a call of the run misused memory, as its allocator
%%       reported; a block freed through another allocator than the one
%%       it came from; or, for the raw and the large allocator, which check
%%       no free, a block freed twice in one NIF call, or through its
%%       old address after a realloc moved it: the check holds what a
%%       call frees through them until it ends, and does not pass the
%%       second free on to enif_free). Sites are source lines
%%       (beam_alloc_symbolizer) when the NIF library has debug info.
%%   {badarg, Message}                 a bad function or option
%%   {already_running, Pid}            a check is running in this process
%%   {cannot_nest, {already_running, Pid}}
%%       the function called check_all_allocation_failures itself, which
%%       failed with {already_running, Pid} (checks cannot be nested), and
%%       the function failed with that, without any allocation failure (a
%%       function that caught it and failed otherwise: that failure's
%%       allocation_failures)
%%   {not_loaded, [Module]}            no NIF library built with beam_alloc
%%                                     is loaded for these modules
%%   {driver, Reason}                  the driver could not start a check
%%   {reloaded, [Module]}
%%       the NIF library of these modules, which the runs called, was
%%       loaded again while the check ran (a hot upgrade: another copy of
%%       the library), and the check found problems: the runs after the
%%       reload called that copy, not the one the first run counted, so
%%       they tell nothing of the function; run the check again. (A
%%       library that no run called, another module's, loaded again
%%       meanwhile changes nothing: the function's own problems are
%%       raised, or the check passes.)
%%
%% Reports as failures: without_reports(Fun) runs Fun and returns what it
%% returns, or raises erlang:error({beam_alloc_reports, [Line]}) when
%% beam_alloc reported a problem while it ran (a double free or a leak in
%% a NIF without leak_check is reported and the call goes on: the test
%% would pass). The Erlang form of Elixir's `use BeamAlloc.Case`:
%%
%%     parse_test() ->
%%         ?assertMatch({ok, _}, beam_alloc_testing:without_reports(
%%                                   fun() -> my_nif:parse(<<"[1]">>) end)).
%%
%% The reporter keeps the reports made while Fun runs apart for it (not
%% its latest 100 of the node, which more reports push along), and every
%% report made meanwhile counts, whoever made it (a NIF thread's or a
%% resource destructor's has no process, and may be the test's): run such
%% tests one at a time, as EUnit does unless told otherwise. Under
%% {inparallel, ...} a clean test fails with the reports of a test beside
%% it, and the error says so: the line of a report made by another
%% process, neither the caller nor one working for it (the caller among
%% its $callers, $ancestors or parents), begins with that process's pid,
%% and a line first says how many, by which processes, and why they
%% count ("beam_alloc: 1 of the reports below was made by another process
%% (<0.95.0>) than this one (<0.90.0>) and those it started: tests that
%% run at the same time ({inparallel, ...}) count each other's reports:
%% ..."). (It takes the node's reports, beam_alloc:take_reports/0, before
%% and after.) All of them that no check
%% consumed are counted, however many (up to 10,000 lines kept past the
%% latest 100, more counted); the error lists the latest 100, after a line
%% "beam_alloc: N reports, the latest 100 below" when there were more. A report
%% wins over an exception of Fun (a misuse often causes the failure): a
%% leak_check NIF's {memory_leak, Message}, which names the function alone,
%% gives way to the leak's lines with their sources. The lines are written
%% to the test's output too: EUnit's failure cuts an error term's long
%% binaries, and shows the output whole ("output:<<...>>"). The
%% beam_alloc application must be started ({not_started, beam_alloc}
%% otherwise): application:ensure_all_started(beam_alloc). In Common Test,
%% the hook beam_alloc_cth does this around every case.
%%
%% Not counted: the reports a check_all_allocation_failures in Fun turned
%% into its result (a misuse of one of its runs, or a leak_check NIF's
%% leak, listed among the problems it raised): a test asserting that error
%% has handled them,
%%
%%     ?assertError({allocation_failures, _},
%%                  beam_alloc_testing:without_reports(fun() ->
%%                      beam_alloc_testing:check_all_allocation_failures(
%%                          fun() -> my_nif:parse(<<"[1]">>) end) end)),
%%
%% fails on the error's absence only. Any other report still counts: one
%% made outside the check's runs, by another process, by a NIF of a
%% module its modules option leaves out, in a run whose problems the
%% check does not list (a run found nondeterministic), or in a listed run
%% but not the misuse it lists (a leak an instance the NIF deinitialised
%% reported there).
-module(beam_alloc_testing).

-export([check_all_allocation_failures/1, check_all_allocation_failures/2]).
-export([without_reports/1]).
%% Internal: the Elixir front (BeamAlloc.Testing) raises its own exceptions
%% from these results, and writes caller/1's frame as Elixir does.
-export([run_check/4, caller/1, format_problems/2, refusal_message/1]).
%% Internal: BeamAlloc.Case says whose its reports were with this.
-export([attributed_lines/3]).
%% Internal: beam_alloc_cth fails a Common Test case on the reports made
%% while it ran, as without_reports/1 fails its fun's test.
-export([watch/1, reports_since/3]).

-type expect() :: any | raise | error_tuple.
-type problem() :: #{kind := atom(), index := non_neg_integer() | undefined,
                     atom() => term()}.
-export_type([expect/0, problem/0]).

-spec without_reports(fun(() -> T)) -> T.
without_reports(Fun) when is_function(Fun, 0) ->
    Watch = watch(),
    Outcome = invoke(Fun),
    case reports_since(Watch, self(), erlang) of
        [] -> pass_on(Outcome);
        Lines -> erlang:error({beam_alloc_reports, Lines})
    end;
without_reports(Other) ->
    erlang:error({badarg, <<"without_reports/1 takes a fun of arity 0">>},
                 [Other]).

%% A watch of the reports made from now on (the node's earlier ones taken
%% and dropped), for reports_since/3: without_reports/1's, and
%% beam_alloc_cth's around a Common Test case. The reporter ends it when
%% Owner exits (this process for watch/0): a process killed inside
%% without_reports/1 (a timetrap, an EUnit timeout) never reads its watch,
%% which the reporter kept for good, copying every later report into it.
-spec watch() -> term().
watch() ->
    watch(self()).

-spec watch(pid()) -> term().
watch(Owner) ->
    _ = beam_alloc:take_reports(),
    watch_reports(Owner).

%% The lines of the reports made since Watch that no check consumed,
%% written to the output, or [] when there were none; worded for Front
%% (attributed_lines/3), Self the process the test ran in. The watch ends.
-spec reports_since(term(), pid(), erlang | ct) -> [binary()].
reports_since(Watch, Self, Front) ->
    case unwatch_reports(Watch) of
        {[], 0} -> [];
        {Reports, N} -> written(report_lines(Reports, N, Self, Front))
    end.

%% The reporter keeps the reports made while Fun runs for it (a watch),
%% and counts those no check consumed: read from its latest 100 at the
%% end, a report of Fun's own, then more than 100 that a check consumed,
%% was pushed out, and the test passed (review). A reporter without
%% watches (an older version): its latest reports, as before.
watch_reports(Owner) ->
    Ref = make_ref(),
    Reporter = beam_alloc:reporter(),
    try gen_server:call(Reporter, {watch, Ref, self(), true, Owner}) of
        ok -> {Reporter, Ref};
        _ -> latest
    catch
        exit:_ -> latest
    end.

%% {Reports, N}: the latest 100 reports no check consumed, of N in all,
%% each a map with its line (and, from a reporter's watch, its pid and
%% callers: BeamAlloc.Reporter's report type).
unwatch_reports({Reporter, Ref}) ->
    try gen_server:call(Reporter, {unwatch, Ref}) of
        {Reports, N} when is_list(Reports), is_integer(N) ->
            _ = beam_alloc:take_reports(),
            {[R || #{line := _} = R <- Reports], N};
        _ ->
            unwatch_reports(latest)
    catch
        %% (The reporter restarted meanwhile: what the new one has.)
        exit:_ -> unwatch_reports(latest)
    end;
unwatch_reports(latest) ->
    Reports = [#{line => Line} || {_Module, Line} <- beam_alloc:take_unconsumed_reports()],
    {Reports, length(Reports)}.

%% The error's lines: what other processes made, if any (whose/2), what is
%% not shown, if anything, then each report's line, another process's
%% with its pid first. Every report counts all the same: one of a NIF
%% thread or a resource destructor has no pid, and may well be the
%% caller's (failing is the safe side); the note tells a user of
%% {inparallel, ...} why a clean test failed (an adopter's audit: the
%% error showed another test's double free and said nothing of it).
report_lines(Reports, N, Self, Front) ->
    {Note, Lines} = attributed_lines(Reports, Self, Front),
    Note ++ not_shown(N, length(Reports)) ++ Lines.

%% {Note, Lines}: each report's line, another process's with its pid
%% first, and the note on those (none if there are none), worded for the
%% front whose guard made Self's watch: erlang (without_reports/1),
%% elixir (BeamAlloc.Case, in a module that is not async: its failure
%% named no process, and a clean test showed a setup_all process's double
%% free) or ct (beam_alloc_cth, Self a Common Test case's process). The one
%% attribution and text for all.
-spec attributed_lines([map()], pid(), erlang | elixir | ct) -> {[binary()], [binary()]}.
attributed_lines(Reports, Self, Front) ->
    Whose = [{whose(R, Self), Line} || #{line := Line} = R <- Reports],
    {others_note(Whose, Self, Front),
     [case W of
          {other, Pid} -> <<(pid_text(Pid, Front))/binary, ": ", Line/binary>>;
          _ -> Line
      end || {W, Line} <- Whose]}.

%% A report made by Self or a process working for it (BeamAlloc.Case's
%% attribution: its pid, or Self among its callers), by another process,
%% off any process, or by whom unknown: a reporter without watches, or a
%% process gone before the reporter read whom it worked for (no callers:
%% a live one has its parent at least). That one was named another's,
%% with the note on parallel tests, when the test's own process made it
%% and exited (review).
whose(#{pid := Pid} = R, Self) when is_pid(Pid) ->
    case {Pid =:= Self, maps:get(callers, R, [])} of
        {true, _} -> own;
        {false, []} -> unknown;
        {false, Callers} ->
            case lists:member(Self, Callers) of
                true -> own;
                false -> {other, Pid}
            end
    end;
whose(#{pid := P}, _Self) when P =:= undefined; P =:= nil -> none;
whose(_R, _Self) -> unknown.

others_note(Whose, Self, Front) ->
    case [Pid || {{other, Pid}, _} <- Whose] of
        [] ->
            [];
        Others ->
            K = length(Others),
            Pids = lists:usort(Others),
            Listed = lists:join(", ", [pid_text(P, Front) || P <- lists:sublist(Pids, 5)]) ++
                [", ..." || length(Pids) > 5],
            %% (Several reports of one process: "another process".)
            Made = case {K, Pids} of
                       {1, _} -> "was made by another process";
                       {_, [_]} -> "were made by another process";
                       _ -> "were made by other processes"
                   end,
            Offs = case length([none || {none, _} <- Whose]) of
                       0 -> "";
                       M -> fmt(", and ~b off any process (a NIF thread, a resource "
                                "destructor: anyone's)", [M])
                   end,
            {Whom, Why} = others_words(Front),
            [fmt("beam_alloc: ~b of the reports below ~ts (~ts) than ~ts (~ts) and those it "
                 "started~ts: ~ts", [K, Made, Listed, Whom, pid_text(Self, Front), Offs, Why])]
    end.

%% Whose process the others' are told from, and why they count: what to do.
%% (Elixir's: "or make the module async" alone hid a real bug of the test,
%% which an async module does not count either: one it caused by calling
%% an application's GenServer, or through a process it started that
%% exited before the reporter read the chain: review. An on_exit
%% callback's report is another process's only to a check!/3 the test
%% calls itself: the guard makes the callbacks' process the test's.)
others_words(erlang) ->
    {"this one",
     "tests that run at the same time ({inparallel, ...}) count each other's reports: run "
     "the tests that use without_reports/1 one at a time"};
%% (Common Test runs init_per_suite and init_per_group in processes of
%% their own, and a process they start outlives them: its report counted
%% for whichever case ran then, an audit's "whose is it?". So does a
%% process an earlier case started: the note named the suite's and the
%% group's alone, and sent its reader there: review.)
others_words(ct) ->
    {"the case's",
     "every report made while a case runs (its init_per_testcase and end_per_testcase "
     "too) counts for that case: the case may have caused it (by calling that process); "
     "if not (a process that init_per_suite, init_per_group or an earlier case started, "
     "which outlived it, of an application, a case of a parallel group beside it), stop "
     "that process during the cases, or run the cases one at a time"};
others_words(elixir) ->
    {"the test's",
     "a test module that is not async counts every report made while a test runs: the test "
     "may have caused it (by calling that process, in an on_exit callback, through a process "
     "it started that has exited); if not (a process of setup_all, of an application), stop "
     "that process during the tests (an async module counts neither)"}.

%% A pid as the front's users write it.
pid_text(Pid, Front) when Front =:= erlang; Front =:= ct ->
    list_to_binary(pid_to_list(Pid));
pid_text(Pid, elixir) ->
    <<"#PID", (pid_text(Pid, erlang))/binary>>.

%% The lines are written to the test's output too, whole: EUnit's
%% failure shows an error term's binaries cut to their first 60 or so
%% characters (eunit:test/2, `make test`: "<<\"beam_alloc: leak: 24 bytes
%% (alignment 1) at 0x7f..., \"...>>", the source line cut off), and the
%% output after it in full (output:<<...>>; rebar3's Output:).
written(Lines) ->
    %% try, not catch: OTP 29 deprecates catch expressions (a warning
    %% in every build of this module there).
    try io:put_chars([[Line, $\n] || Line <- Lines]) catch _:_ -> ok end,
    Lines.

not_shown(N, N) ->
    [];
not_shown(N, 0) ->
    [iolist_to_binary(io_lib:format("beam_alloc: ~b reports, their lines no longer kept", [N]))];
not_shown(N, Shown) ->
    [iolist_to_binary(io_lib:format("beam_alloc: ~b reports, the latest ~b below", [N, Shown]))].

pass_on({returned, Value}) -> Value;
pass_on({raised, Class, Reason, Stack}) -> erlang:raise(Class, Reason, Stack).

%% Delays (ms) waiting for resource destructors before blocks are counted,
%% once per check (127 ms at most, while blocks are live: the VM can run
%% a destructor late on a busy node, and a late one read as a leak).
-define(SETTLE_MS, [0, 1, 2, 4, 8, 16, 32, 64]).

%% The process dictionary key of the sites a check resolved (resolve/1).
-define(SITES, {?MODULE, sites}).

%% The process dictionary key of the reporter and its mark before the
%% current run, {Reporter, Mark}, or none: no reporter to tell (see
%% run_reports/0).
-define(REPORTS, {?MODULE, reports}).

%% The modules whose library a run's request found loaded again (another
%% copy than the first run's, see reloaded/3).
-define(RELOADED, {?MODULE, reloaded}).

%% The modules whose library the runs' calls went through (end_run's
%% called): a reload of another explains none of the runs (reloaded/3).
-define(CALLED, {?MODULE, called}).

%% A misuse problem's key, until the check returns: the reports its run
%% made, as the reporter numbered them (see consume/2).
-define(RUN_REPORTS, {?MODULE, run_reports}).

%% A leak problem's key, until the check returns: what the reports of its
%% blocks left in a leak_check call's instance look like (see
%% leak_reports/1), the lines the reporter consumes in its run's window.
-define(LEAK_REPORTS, {?MODULE, leak_reports}).

%% Blocks a leak_check call's instance lists in its leak report, before
%% "... and N more live blocks" (src/gpa.c, LEAKS_LISTED).
-define(INSTANCE_LISTED, 64).

%% Blocks a leak problem lists in the message (its blocks key has them all,
%% up to the driver's 100).
-define(BLOCKS_SHOWN, 10).

%% Characters an outcome's term takes in the message at most.
-define(TERM_CHARS, 400).

-spec check_all_allocation_failures(fun(() -> term())) -> {ok, non_neg_integer()}.
check_all_allocation_failures(Fun) when is_function(Fun, 0) ->
    check_all_allocation_failures(Fun, []);
check_all_allocation_failures(Fun) ->
    erlang:error({badarg, not_a_fun(1, Fun)}, [Fun]).

-spec check_all_allocation_failures(fun(() -> term()), map() | list()) ->
    {ok, non_neg_integer()}.
check_all_allocation_failures(Fun, Opts) when is_function(Fun, 0) ->
    %% (Raised here, so that the error's top frame is this call with the
    %% caller's arguments: raised in the helper, it named badarg/2.)
    {Expect, Modules} = try options(Opts)
                        catch throw:{?MODULE, badarg, Text} ->
                                erlang:error({badarg, Text}, [Fun, Opts])
                        end,
    case run_check(Fun, Expect, Modules, caller_text(caller(Fun))) of
        {ok, Count} ->
            {ok, Count};
        {problems, Problems, Count} ->
            erlang:error({allocation_failures,
                          #{message => format_problems(Problems, Count),
                            allocations => Count,
                            problems => Problems}});
        {error, Reason} ->
            erlang:error(Reason)
    end;
check_all_allocation_failures(Fun, Opts) ->
    erlang:error({badarg, not_a_fun(2, Fun)}, [Fun, Opts]).

not_a_fun(Arity, Fun) ->
    text("check_all_allocation_failures/~b expects a fun of arity 0, got: ~0tp", [Arity, Fun]).

options(Opts) when is_map(Opts) ->
    options(maps:to_list(Opts));
%% (length/1 fails on an improper list, which then takes the last clause.)
options(Opts0) when is_list(Opts0), length(Opts0) >= 0 ->
    Known = [expect, modules],
    %% (A bare atom is the property list's shorthand for {Atom, true}.)
    Opts = [case O of A when is_atom(A) -> {A, true}; _ -> O end || O <- Opts0],
    lists:foreach(
      fun({K, _}) when is_atom(K) ->
              lists:member(K, Known) orelse badarg("unknown option ~0tp (known: expect, modules)", [K]);
         ({K, _}) ->
              badarg("expected option names as atoms (expect, modules), got: ~0tp", [K]);
         (Other) ->
              badarg("expected options as a map or a property list, got: ~0tp", [Other])
      end, Opts),
    %% (proplists would take the first and drop the other unchecked.)
    [badarg("option ~0tp given twice", [K])
     || K <- Known, length([K2 || {K2, _} <- Opts, K2 =:= K]) > 1],
    Expect = proplists:get_value(expect, Opts, any),
    lists:member(Expect, [any, raise, error_tuple]) orelse
        badarg("invalid value for expect, expected any, raise or error_tuple, got: ~0tp", [Expect]),
    Modules = proplists:get_value(modules, Opts, all),
    %% (An empty list would count nothing and pass: {ok, 0}.)
    (Modules =:= all orelse (Modules =/= [] andalso module_list(Modules))) orelse
        badarg("invalid value for modules, expected all or a non-empty list of modules, "
               "got: ~0tp", [Modules]),
    {Expect, Modules};
options(Other) ->
    badarg("expected options as a map or a property list, got: ~0tp", [Other]).

%% A proper list of atoms (lists:all/2 raises a function_clause on an
%% improper one, which would hide the option's own error).
module_list([]) -> true;
module_list([M | Rest]) when is_atom(M) -> module_list(Rest);
module_list(_) -> false.

%% An option's error, thrown to check_all_allocation_failures/2, which
%% raises it.
badarg(Format, Args) ->
    throw({?MODULE, badarg, text(Format, Args)}).

%% (A bounded text: a list of two million items given as options made a
%% 15 MB message, which EUnit prints whole.)
text(Format, Args) ->
    iolist_to_binary(io_lib:format(Format, Args, [{chars_limit, ?TERM_CHARS}])).

%% The check itself, without raising: {ok, Count} | {problems, Problems,
%% Count} | {error, Reason}, Reason as check_all_allocation_failures/2
%% raises it. Expect and Modules are valid; Caller is the text a crash
%% during the check names (caller/1's frame as the caller's language
%% writes it).
-spec run_check(fun(() -> term()), expect(), all | [module()], binary()) ->
    {ok, non_neg_integer()} | {problems, [problem()], non_neg_integer()} | {error, term()}.
run_check(Fun, Expect, Modules, Caller) ->
    is_list(Modules) andalso lists:foreach(fun code:ensure_loaded/1, Modules),
    load_fun_module(Fun),
    case open_driver(Caller) of
        {ok, Session} ->
            try
                reports_start(),
                nested(checked(Session, Fun, Expect, Modules))
            after
                erase(?SITES),
                erase(?REPORTS),
                erase(?RELOADED),
                erase(?CALLED),
                beam_alloc_testing_nif:close(Session)
            end;
        {error, already_open} ->
            {error, {already_running, self()}};
        {error, Reason} ->
            {error, {driver, Reason}}
    end.

%% The code that called the check, for the note a crash during it writes
%% (with many test files, the NIF alone does not say which test crashed):
%% {Module, Function, Arity, Location}, or none. The function that wrote
%% Fun (a local fun's name says it) where it is on the stack: the test,
%% where a helper of its calls the check. Else the calling process's first
%% frame outside the check's own modules (the test, where a helper made
%% Fun). But a test whose last expression is the check (an EUnit test
%% function, a tail call) has no frame left, and the first frame outside is
%% its runner's: then the function that wrote Fun, with its module's
%% source file. Once per check. Code evaluated (erl -eval, the shell,
%% elixir -e) has no source to name: none. The frames current_stacktrace
%% gives are the innermost backtrace_depth (8 unless the node sets more),
%% three of them the check's own (four from Elixir): a writer further out
%% is found on the whole stack (further_out/1), and named with its
%% module's source file, without a line.
-spec caller(fun(() -> term())) -> {module(), atom(), arity(), list()} | none.
caller(Fun) ->
    case found_caller(Fun) of
        {M, _, _, _} = Frame ->
            case interpreter(M) of
                true -> none;
                false -> Frame
            end;
        none ->
            none
    end.

interpreter(M) ->
    M =:= erl_eval orelse lists:prefix("elixir", atom_to_list(M)).

%% A test runner's module: the function it called has returned already,
%% by a tail call of the check.
runner(M) ->
    Name = atom_to_list(M),
    lists:prefix("Elixir.ExUnit.", Name) orelse lists:prefix("eunit", Name) orelse
        M =:= test_server.

found_caller(Fun) ->
    {current_stacktrace, Stack} = process_info(self(), current_stacktrace),
    Outside = [F || {M, _, _, _} = F <- Stack,
                    M =/= ?MODULE, M =/= 'Elixir.BeamAlloc.Testing'],
    Writer = writer(Fun),
    case [Frame || {M, F, A, _} = Frame <- Outside, {M, F, A} =:= Writer] of
        [Frame | _] -> Frame;
        [] ->
            case further_out(Writer) of
                true -> written_by(Writer);
                false -> first_outside(Outside, Writer)
            end
    end.

%% Is the writer on the stack further out than the frames
%% current_stacktrace gives (backtrace_depth: a test that reaches the check
%% through more nested helpers than that was named by the innermost). The
%% whole stack is in process_info/2's backtrace text, each frame's return
%% address as "(M:F/A + Offset)", without a line; raising backtrace_depth
%% would change it for the whole node. Asked only where the writer is not
%% among the frames given.
further_out(none) ->
    false;
further_out({M, F, A}) ->
    {backtrace, Text} = process_info(self(), backtrace),
    Frame = unicode:characters_to_binary(io_lib:format("(~tw:~tw/~b + ", [M, F, A])),
    binary:match(Text, Frame) =/= nomatch.

%% The first frame outside (the writer is not on the stack), where it is
%% the test's: not a runner's, nor evaluated code's.
first_outside([{M, _, _, _} = Frame | _], Writer) ->
    case Writer =:= none orelse not (runner(M) orelse interpreter(M)) of
        true -> Frame;
        false -> written_by(Writer)
    end;
first_outside([], Writer) ->
    written_by(Writer).

written_by(none) -> none;
written_by({M, F, A}) -> {M, F, A, source(M)}.

%% The function whose code has the local fun Fun ("-parse_test/0-fun-0-"
%% is parse_test/0's), or none (a remote fun, &MyNif.parse/0, names the
%% NIF, not its caller; a fun of a module not loaded has no name: one
%% from another node, or from binary_to_term/1, whose call loads it).
writer(Fun) ->
    case {erlang:fun_info(Fun, module), erlang:fun_info(Fun, name)} of
        {{module, M}, {name, Name}} when is_atom(Name) -> writer(M, Name);
        _ -> none
    end.

writer(M, Name) ->
    case re:run(atom_to_list(Name), "^-(.+)/([0-9]+)-fun-[0-9]+-$",
                [unicode, {capture, all_but_first, list}]) of
        {match, [F, A]} -> {M, list_to_atom(F), list_to_integer(A)};
        nomatch -> none
    end.

%% Module's source file as a location, [] where not known.
source(Module) ->
    case proplists:get_value(source, Module:module_info(compile)) of
        undefined -> [];
        File -> [{file, File}]
    end.

%% caller/1's frame as Erlang writes it: my_tests:parse_test/0 at
%% test/my_tests.erl:12.
caller_text(none) ->
    <<>>;
caller_text({M, F, A, Location}) ->
    unicode:characters_to_binary(
      [io_lib:format("~tw:~tw/~b", [M, F, A]) | location_text(Location)]).

location_text(Location) ->
    case {proplists:get_value(file, Location), proplists:get_value(line, Location)} of
        {undefined, _} -> [];
        {File, undefined} -> [" at ", File];
        {File, Line} -> [" at ", File, ":", integer_to_list(Line)]
    end.

%% A function that failed without injection with the refusal of a check
%% it called itself: that refusal is the error, not the problem it caused
%% (which said only failed_without_injection, the reason deep in its
%% outcome: an audit). The outcome itself, not a mark of the refusal: a
%% function that caught the refusal and then failed for a reason of its
%% own had that reason replaced by the refusal (a review).
nested({problems, Problems, _} = Result) ->
    case lists:any(fun refused/1, Problems) of
        true -> {error, {cannot_nest, {already_running, self()}}};
        false -> Result
    end;
nested(Result) ->
    Result.

%% The refusal as check_all_allocation_failures/2 raises it, or as the
%% Elixir front does (lib/beam_alloc/testing.ex raises refusal_message/1's
%% text: the one text, built here for both).
refused(#{kind := failed_without_injection, outcome := {raised, error, Reason, _}}) ->
    Self = self(),
    Message = refusal_message(Self),
    case Reason of
        {already_running, Self} ->
            true;
        #{'__struct__' := 'Elixir.ArgumentError', message := Message} ->
            true;
        _ ->
            false
    end;
refused(_) ->
    false.

%% The Elixir front's ArgumentError text for {already_running, Pid}
%% (Pid as Elixir's inspect/1 writes it).
-spec refusal_message(pid()) -> binary().
refusal_message(Pid) ->
    iolist_to_binary(["check_all_allocation_failures/2 is already running in this process "
                      "(#PID", pid_to_list(Pid), "); it cannot be nested"]).

%% A remote fun's module (fun my_nif:f/0, &MyNif.f/0) loaded before the
%% check: a library its first run loads is attached only after that run,
%% which then ran outside the check, for real (a double free through the
%% raw allocator there crashed the VM: found by a bug hunt). A local fun's
%% calls are not known: the documentation says to load such modules first.
load_fun_module(Fun) ->
    case erlang:fun_info(Fun, type) of
        {type, external} ->
            {module, M} = erlang:fun_info(Fun, module),
            _ = code:ensure_loaded(M),
            ok;
        _ ->
            ok
    end.

%% The driver's open/1, its failure to load ({driver, Reason} raised by
%% beam_alloc:driver/1) an error like its refusals.
open_driver(Caller) ->
    try
        beam_alloc:driver(fun() -> open_naming(Caller) end)
    catch
        error:{driver, Reason} -> {error, Reason}
    end.

%% A driver older than this module has no open/1 (the VM keeps the library
%% it loaded when the files are rebuilt in place): it opens with open/0,
%% and a crash then names no caller, rather than the check failing as if
%% the driver were missing. A driver not loaded at all fails open/0 too,
%% which beam_alloc:driver/1 turns into its reason.
open_naming(Caller) ->
    try
        beam_alloc_testing_nif:open(Caller)
    catch
        error:{beam_alloc_driver, not_loaded} ->
            beam_alloc_testing_nif:open();
        error:undef:Stack ->
            case Stack of
                [{beam_alloc_testing_nif, open, [_], _} | _] -> beam_alloc_testing_nif:open();
                _ -> erlang:raise(error, undef, Stack)
            end
    end.

checked(Session, Fun, Expect, Modules) ->
    Attached = beam_alloc_testing_nif:attach(Session, wanted(Modules)),
    Missing = case Modules of
                  all -> [];
                  _ -> [M || M <- Modules, not lists:member(atom_to_binary(M, utf8), Attached)]
              end,
    case Missing of
        [] -> first_run(Session, Fun, Expect, Modules, Attached);
        _ -> {error, {not_loaded, Missing}}
    end.

first_run(Session, Fun, Expect, Modules, Attached0) ->
    First0 = run(Session, infinity, record, Fun),
    %% A module loaded by its first call during that run had no library
    %% attached yet: attach it, and count again.
    Attached = beam_alloc_testing_nif:attach(Session, wanted(Modules)),
    First = case length(Attached) > length(Attached0) of
                true -> run(Session, infinity, record, Fun);
                false -> First0
            end,
    Count = maps:get(requests, First),
    case failed(maps:get(outcome, First), Expect) of
        true ->
            %% Its leaks too, with their sites: a leak_check NIF that
            %% leaks raises here, and its error names the function alone.
            Ps = with_leaks(Session, [],
                            lists:reverse(leak_problems(undefined, undefined, First)),
                            Attached, true),
            {problems, lists:reverse(Ps) ++
                           [#{kind => failed_without_injection, index => undefined,
                              outcome => maps:get(outcome, First)}], Count};
        false ->
            {Last, Earlier} = check_failures(Session, Fun, Expect, Count,
                                             leak_problems(undefined, undefined, First)),
            %% The reload's error stands for the problems, which it does not
            %% list: their reports are not consumed then, but left to the
            %% test (review: a misuse of a run before the reload was
            %% consumed, and lost for good when the check ran again).
            Reloaded = reloaded(Session, Modules, Attached),
            case lists:reverse(with_leaks(Session, Last, Earlier, Attached,
                                          Reloaded =:= [])) of
                [] -> {ok, Count};
                _ when Reloaded =/= [] -> {error, {reloaded, Reloaded}};
                Ps -> {problems, Ps, Count}
            end
    end.

%% The modules whose library was loaded again while the check ran (a hot
%% upgrade to another file: a new copy). Problems found then are the
%% reload's: the runs after it called the new copy, which the check had
%% not attached, so they came up short or failed nothing, and the function
%% read as nondeterministic (found by a soak). A copy attached now of a
%% module attached after the first run, whose library a run called, is
%% that reload; a module attached now alone is a library loaded meanwhile,
%% for all, which the function's runs did not call. A module no run
%% called (with modules all, any library loaded: another test's, reloaded
%% meanwhile) explains nothing of the runs: its reload hid the function's
%% own problems behind an error naming that module (a review). (Not
%% compared with the copies before the first run: a copy that run loaded
%% was attached, and the first run made again on it, so later runs were
%% sound, and the function's own problems read as a reload: review of
%% 61dec5f.) A copy attached already, its module switched to it later
%% (mapped before its module ran it, as a load in progress may be: a
%% soak's checks saw later runs' requests come from another attached
%% copy), shows as a run whose requests came from another copy of the
%% module than the first run's (end_run's reloaded).
reloaded(Session, Modules, Attached) ->
    New = beam_alloc_testing_nif:attach(Session, wanted(Modules)) -- Attached,
    Called = get_list(?CALLED),
    Reloaded = lists:usort([M || M <- New, lists:member(M, Attached), called(M, Called)] ++
                               get_list(?RELOADED)),
    [binary_to_atom(M, utf8) || M <- Reloaded].

wanted(all) -> all;
wanted(Modules) -> [atom_to_binary(M, utf8) || M <- Modules].

%% --- Runs -----------------------------------------------------------------

%% A run's blocks still live at its end are its leak suspects; the check
%% asks which stayed leaks once, at its end (with_leaks/5).
run(Session, FailIndex, Mode, Fun) ->
    ok = beam_alloc_testing_nif:begin_run(Session, FailIndex, Mode),
    Outcome = invoke(Fun),
    %% (Resources the run dropped go now: their destructors free their
    %% blocks while the next runs go on.)
    erlang:garbage_collect(),
    Run = beam_alloc_testing_nif:end_run(Session),
    case Run of
        #{reloaded := Module} when is_binary(Module) -> add_to_list(?RELOADED, [Module]);
        _ -> ok
    end,
    add_called(Run),
    Run#{outcome => Outcome, reports => run_reports()}.

%% The modules whose library the run called, kept under ?CALLED; all when
%% the driver does not say (its library older than this module: the VM
%% keeps the copy it loaded when the file is rebuilt in place): every
%% reload counts then, as before end_run said called (with maps:get/2
%% every check over such a driver raised {badkey, called}: a review).
add_called(Run) ->
    case {get(?CALLED), Run} of
        {all, _} -> ok;
        {_, #{called := Modules}} -> add_to_list(?CALLED, Modules);
        _ -> put(?CALLED, all)
    end.

called(_Module, all) -> true;
called(Module, Called) -> lists:member(Module, Called).

%% The modules kept under Key (?RELOADED, ?CALLED: all, see add_called/1)
%% until the check ends.
get_list(Key) ->
    case get(Key) of
        undefined -> [];
        Modules -> Modules
    end.

add_to_list(Key, Modules) ->
    put(Key, lists:usort(Modules ++ get_list(Key))).

%% --- Reports the check turns into its result ------------------------------
%%
%% A misuse in a NIF on a general purpose allocator is reported (to
%% BeamAlloc.Reporter or beam_alloc_reporter) as well as noted by the
%% driver: the check lists it as a problem, and a test that asserts that
%% error has handled it. So the check tells the reporter which reports
%% those were, and the reporter marks them consumed: BeamAlloc.Case and
%% without_reports/1 do not fail the test for them again (they did: found
%% by the Elixir release hunt). Which: the reports this process made, in
%% calls into the libraries the check attached, during a run whose misuse
%% the result lists, and whose line is that misuse's report (not another
%% report of the run: a leak beside it is no problem of the check's, and
%% consuming it hid it; review). The reporter numbers what it keeps: its marks before
%% and after each run delimit that run's reports (a reporting call returns
%% once the reporter has read its report; one that did not wait, in a
%% flood, may be read later and is not consumed: a test failing for it is
%% the safe side). (The raw and the large allocator's misuse, which the
%% driver catches itself, is not reported: nothing to consume.) A leak_check
%% NIF's leak is reported by its instance, "memory leak detected in function
%% ...:" and a line a block "leak: ... at 0x...", and raised: a leak problem
%% the check lists (found writing a new project from the README: asserting
%% the check's error on such a NIF failed the test under BeamAlloc.Case, for
%% those reports). Those lines are consumed too, in the run of the leak the
%% result lists, for the blocks the driver saw left in that instance (by
%% address); a leak of another instance (one the NIF deinitialised) names
%% other blocks, and still counts.

reports_start() ->
    put(?REPORTS, case beam_alloc:reporter() of
                      undefined -> none;
                      Reporter -> reporter_mark(Reporter)
                  end).

%% (An older reporter, without marks, answers {error, _}; one that is
%% stuck or gone: none for the rest of the check.)
reporter_mark(Reporter) ->
    try gen_server:call(Reporter, mark) of
        Mark when is_integer(Mark) -> {Reporter, Mark};
        _ -> none
    catch
        exit:_ -> none
    end.

%% The reports of the run just over: {After, UpTo}, the reporter's numbers,
%% or undefined.
run_reports() ->
    case get(?REPORTS) of
        {Reporter, From} ->
            Now = reporter_mark(Reporter),
            put(?REPORTS, Now),
            case Now of
                {_, To} -> {From, To};
                none -> undefined
            end;
        _ ->
            undefined
    end.

%% Tells the reporter that the reports of the runs of the misuse Problems
%% (the ones the result lists) are consumed.
consume(Problems, Attached) ->
    Windows = run_windows(Problems),
    case {Windows, get(?REPORTS)} of
        {[_ | _], {Reporter, _}} ->
            Modules = [binary_to_atom(M, utf8) || M <- Attached],
            _ = try gen_server:call(Reporter, {consume, self(), Modules, Windows})
                catch _:_ -> ok
                end,
            ok;
        _ ->
            ok
    end.

%% {From, To, Lines}: each run's window and the report lines of the misuse
%% and the leak_check leaks it listed (the reporter consumes those alone:
%% beam_alloc_reporter).
run_windows(Problems) ->
    ByRun = lists:foldl(
              fun(#{?RUN_REPORTS := {From, To}} = P, Acc) ->
                      Lines = listed_lines(P),
                      maps:update_with({From, To}, fun(Ls) -> Lines ++ Ls end, Lines, Acc);
                 (_, Acc) ->
                      Acc
              end, #{}, Problems),
    [{From, To, Lines} || {{From, To}, Lines} <- maps:to_list(ByRun), Lines =/= []].

listed_lines(#{report := Line}) -> [Line];
listed_lines(#{?LEAK_REPORTS := Lines}) -> Lines;
listed_lines(_) -> [].

without_run_reports(Problems) ->
    [maps:without([?RUN_REPORTS, ?LEAK_REPORTS], P) || P <- Problems].

%% The reports of the run's leak_check calls' leaked blocks, CallLocal
%% [{Count, Addresses}] a call (the driver's): the line that names the
%% function, each block's line by its address (a number: the line's is
%% read, not formatted here for each address), and the "... and N more live blocks" that ends a report of more
%% blocks than the instance lists: what beam_alloc_reporter:consumes/5
%% matches. (The instance lists its first 64 in its own order, not the
%% check's first 100 of the run: every address of the call is passed, up
%% to 4096; and a leak of more than 64 blocks ended in a line that still
%% counted: review.)
leak_reports([]) ->
    [];
leak_reports(CallLocal) ->
    [leak_check_header |
     lists:append(
       [[{leak_in, maps:from_list([{At, true} || At <- Addresses])} |
         [{leak_more, Count - ?INSTANCE_LISTED} || Count > ?INSTANCE_LISTED]]
        || {Count, Addresses} <- CallLocal])].

invoke(Fun) ->
    try
        {returned, Fun()}
    catch
        Class:Reason:Stacktrace -> {raised, Class, Reason, Stacktrace}
    end.

%% Resources the runs dropped must go before the blocks are counted, or what
%% their destructors free would pass for a leak. A collection releases
%% them, and the VM runs their destructors shortly after, as scheduler
%% work: give it a few milliseconds while blocks are live. This is done
%% once, when the runs are over: a block a destructor frees in the meantime
%% was no leak, one that a later run's call frees still is (the driver
%% tells them apart). (Waiting after every run cost a function that leaks
%% 15 ms a run: 6 s for 300 allocations.)
settle(Session) ->
    erlang:garbage_collect(),
    settle(Session, ?SETTLE_MS).

settle(_Session, []) ->
    ok;
settle(Session, [Ms | Rest]) ->
    case beam_alloc_testing_nif:live(Session) of
        0 ->
            ok;
        _ ->
            case Ms of
                0 -> erlang:yield();
                _ -> timer:sleep(Ms)
            end,
            settle(Session, Rest)
    end.

%% One run per allocation, then one without failures. Nondeterminism stops
%% the runs: the numbers no longer mean the same thing. Problems are
%% accumulated newest first, leaks as placeholders (leak_problems/3):
%% {LastRunProblems, EarlierProblems}.
check_failures(Session, Fun, Expect, Count, Acc) ->
    failure_runs(Session, Fun, Expect, Count, 0, Acc).

failure_runs(Session, Fun, Expect, Count, Index, Acc) when Index < Count ->
    Run = run(Session, Index, compare, Fun),
    case failure_run_problems(Index, Run, Count, Expect) of
        {halt, New} -> {[], New ++ Acc};
        {cont, New} -> failure_runs(Session, Fun, Expect, Count, Index + 1, New ++ Acc)
    end;
failure_runs(Session, Fun, Expect, Count, _Index, Acc) ->
    Last = run(Session, infinity, compare, Fun),
    {last_run_problems(Last, Count, Expect), Acc}.

%% The problems with their leak placeholders replaced, once the runs'
%% destructors had their time: Earlier's, then the last run's that Earlier
%% does not have (it repeats the first run, both without failures: a
%% problem both showed, the same call's, is listed once, and both runs'
%% reports are consumed). Newest first.
with_leaks(Session, Last, Earlier, Attached, Consume) ->
    settle(Session),
    #{runs := Runs, lost := Lost} = beam_alloc_testing_nif:leaks(Session),
    ByRun = maps:from_list([{R, {Leaked, Blocks, CallLocal}}
                            || {R, Leaked, Blocks, CallLocal} <- Runs]),
    EarlierPs = resolve_leaks(ByRun, Earlier),
    LastPs = resolve_leaks(ByRun, Last),
    _ = Consume andalso consume(EarlierPs ++ LastPs, Attached),
    Acc = without_run_reports(EarlierPs),
    Seen = [same_problem(P) || P <- Acc],
    New = [P || P <- without_run_reports(LastPs), not lists:member(same_problem(P), Seen)],
    %% Leaks the driver could not keep (out of memory), of runs unknown.
    LostP = case Lost of
                true -> [#{kind => incomplete, index => undefined, request => undefined}];
                false -> []
            end,
    LostP ++ New ++ Acc.

resolve_leaks(ByRun, Problems) ->
    lists:flatmap(
      fun({leaks_of, Run, Index, Request, Lost, Window}) ->
              {Leaked, Blocks, CallLocal} = maps:get(Run, ByRun, {0, [], []}),
              [with_leak_reports(P, Window, CallLocal)
               || P <- leak_problems_only(Index, Request, Blocks, Leaked, Lost)];
         (P) ->
              [P]
      end, Problems).

%% A problem as another run would show it again: its report with the
%% addresses in it blanked (the blocks differ from run to run; the sites
%% and everything else must be the same).
same_problem(#{report := Report} = P) when is_binary(Report) ->
    P#{report := re:replace(Report, "0x[0-9a-f]+", "0x", [global, {return, binary}])};
same_problem(P) ->
    P.

failure_run_problems(_Index, #{mismatch := Mismatch}, Count, _Expect)
  when Mismatch =/= undefined ->
    {halt, [mismatch_problem(Mismatch, Count)]};
failure_run_problems(Index, #{induced := undefined, requests := Requests}, Count, _Expect) ->
    {halt, [#{kind => nondeterministic, index => Index, request => undefined,
              expected_site => undefined,
              reason => fmt("allocation #~b never happened: this run made ~b ~ts, "
                            "the first run made ~b",
                            [Index, Requests, plural(Requests, "allocation"), Count])}]};
failure_run_problems(Index, #{induced := Induced} = Run, _Count, Expect) ->
    %% The request's site is resolved only for a problem that names it:
    %% resolving takes dirty NIF calls, one per frame, each a wait for a
    %% scheduler, which on a busy VM made every passing run cost tens of
    %% milliseconds to seconds (found by a bug hunt: 6-14 s for a check of
    %% 9 allocations beside two processes calling a NIF, 3 ms idle).
    Request = {unresolved, Induced},
    {cont, [resolved(P) || P <- leak_problems(Index, Request, Run) ++
                                    outcome_problems(Index, Request, Run, Expect)]}.

last_run_problems(#{mismatch := Mismatch}, Count, _Expect) when Mismatch =/= undefined ->
    [mismatch_problem(Mismatch, Count)];
last_run_problems(#{requests := Requests}, Count, _Expect) when Requests =/= Count ->
    [#{kind => nondeterministic, index => undefined, request => undefined,
       expected_site => undefined,
       reason => fmt("a run without failures made ~b ~ts, the first run made ~b",
                     [Requests, plural(Requests, "allocation"), Count])}];
last_run_problems(#{outcome := Outcome} = Run, _Count, Expect) ->
    case failed(Outcome, Expect) of
        true -> [#{kind => failed_without_injection, index => undefined, outcome => Outcome}];
        false -> leak_problems(undefined, undefined, Run)
    end.

mismatch_problem({{Index, _, _, _} = Actual, ExpectedSite0}, Count) ->
    ExpectedSite = resolve(ExpectedSite0),
    Reason = case ExpectedSite of
                 undefined ->
                     fmt("allocation #~b did not happen in the first run, which made ~b",
                         [Index, Count]);
                 _ ->
                     fmt("allocation #~b came from ~ts in the first run", [Index, ExpectedSite])
             end,
    #{kind => nondeterministic, index => Index, request => request(Actual),
      expected_site => ExpectedSite, reason => Reason}.

%% Misuse (a double free, a write past the end, ...) in any run is a
%% problem of its own, whatever the run returned: kind misuse, with misuse
%% (the kind's text), report (the allocator's line), after (allocations
%% the run had made when the misusing call ended) and more (further
%% misuses of the run not listed).
misuse_problems(Index, Request, #{misuse := Misuse, misused := Misused} = Run) ->
    N = length(Misuse),
    [#{kind => misuse, index => Index, request => Request, misuse => Kind,
       report => beam_alloc_symbolizer:resolve_sites(Line), 'after' => After,
       more => case I of N -> Misused - N; _ -> 0 end,
       ?RUN_REPORTS => maps:get(reports, Run, undefined)}
     || {I, {Kind, Line, After}} <- lists:zip(lists:seq(1, N), Misuse)];
misuse_problems(_Index, _Request, _Run) ->
    [].

%% A run's misuse, and a placeholder for its leaks (with_leaks/5).
leak_problems(Index, Request, #{run := Run, lost := Lost} = R) ->
    misuse_problems(Index, Request, R) ++
        [{leaks_of, Run, Index, Request, Lost, maps:get(reports, R, undefined)}].

%% A leak problem with what the check consumes of its run's reports.
with_leak_reports(#{kind := leak} = P, {_, _} = Window, CallLocal) ->
    P#{?RUN_REPORTS => Window, ?LEAK_REPORTS => leak_reports(CallLocal)};
with_leak_reports(P, _Window, _CallLocal) ->
    P.

leak_problems_only(Index, Request, Leaks, Leaked, Lost) ->
    [resolved(P) || P <- leak_problems_listed(Index, Request, Leaks, Leaked, Lost)].

leak_problems_listed(Index, Request, Leaks, Leaked, Lost) ->
    LostP = case Lost of
                true -> [#{kind => incomplete, index => Index, request => Request}];
                false -> []
            end,
    LeakP = case Leaked > 0 of
                true ->
                    Blocks = lists:sort(
                               fun(#{index := A}, #{index := B}) -> A =< B end,
                               [#{index => I, size => S, site => resolve(Site)}
                                || {I, S, Site} <- Leaks]),
                    [#{kind => leak, index => Index, request => Request,
                       blocks => Blocks, leaked => Leaked}];
                false ->
                    []
            end,
    LostP ++ LeakP.

outcome_problems(Index, Request, #{outcome := Outcome}, Expect) ->
    case surfaced(Outcome, Expect) of
        true ->
            [];
        false ->
            case failed(Outcome, any) of
                true ->
                    [#{kind => unexpected_error, index => Index, request => Request,
                       outcome => Outcome, expect => Expect}];
                false ->
                    [#{kind => swallowed, index => Index, request => Request,
                       outcome => Outcome}]
            end
    end.

request({Index, Kind, Size, Site}) ->
    #{index => Index, kind => Kind, size => Size, site => resolve(Site)}.

%% A problem's request resolved ({unresolved, Induced} until a problem
%% names it); a leak's placeholder keeps it as it is until its leaks are
%% known (leak_problems_only/5).
resolved(#{request := Request} = P) -> P#{request := resolved_request(Request)};
resolved(P) -> P.

resolved_request({unresolved, Induced}) -> request(Induced);
resolved_request(Request) -> Request.

%% Sites come as lib.so+0x1c1b: their source lines when known.
%% A site's text, resolved once per check: every run of a function that
%% leaks on its failure paths lists the same sites again, and each
%% resolution walks the loaded objects and the debug info (N allocations
%% made N^2 / 2 of them: 47 s for 1000).
%% The cache is in the process dictionary (the runs are many functions
%% deep), erased when the check ends; checks do not nest.
resolve(Site) when is_binary(Site) ->
    Sites = case get(?SITES) of
                undefined -> #{};
                Map -> Map
            end,
    case Sites of
        #{Site := Text} ->
            Text;
        _ ->
            Text = beam_alloc_symbolizer:resolve_request_site(Site),
            put(?SITES, Sites#{Site => Text}),
            Text
    end;
resolve(Site) -> Site.

%% Did the outcome surface a failure the way Expect asks?
surfaced({raised, _, _, _}, Expect) -> Expect =:= any orelse Expect =:= raise;
surfaced({returned, Value}, Expect) -> Expect =/= raise andalso error_value(Value).

%% Is the outcome a failure at all (for the runs without injection, where
%% a returned error is fine when only raising counts)?
failed(Outcome, raise) -> surfaced(Outcome, raise);
failed(Outcome, _) -> surfaced(Outcome, any).

error_value(error) -> true;
error_value({error, _}) -> true;
error_value(_) -> false.

%% --- The message ----------------------------------------------------------

%% The text of the allocation_failures error: every problem, Erlang syntax.
-spec format_problems([problem()], non_neg_integer()) -> binary().
format_problems(Problems, Count) ->
    N = length(Problems),
    %% (A first run that failed already: no allocation was failed at all.)
    How = case lists:any(fun(#{kind := K}) -> K =:= failed_without_injection end,
                         Problems) of
              true -> "none failed: the run without failures already failed";
              false when Count =:= 0 -> "none to fail";
              false -> "each failed in turn"
          end,
    Header = fmt("~b allocation failure ~ts (~b ~ts, ~ts):",
                 [N, plural(N, "problem"), Count, plural(Count, "allocation"), How]),
    %% (Characters, not bytes: an outcome's term may hold any, as '€'.)
    unicode:characters_to_binary(
      [Header, "\n\n", lists:join("\n", [["  * ", describe(P)] || P <- Problems])]).

describe(#{kind := leak, blocks := Blocks, leaked := Leaked} = P) ->
    Shown = lists:sublist(Blocks, ?BLOCKS_SHOWN),
    Lines = [fmt("\n      ~b ~ts from allocation #~b at ~ts",
                 [S, plural(S, "byte"), I, site(Site)])
             || #{index := I, size := S, site := Site} <- Shown],
    More = case Leaked - length(Shown) of
               0 -> "";
               Hidden -> fmt("\n      ... and ~b more", [Hidden])
           end,
    [when_(P), fmt(" left ~b ~ts live:", [Leaked, plural(Leaked, "block")]), Lines, More];
describe(#{kind := swallowed, outcome := Outcome} = P) ->
    [when_(P), " was swallowed: the function ", outcome(Outcome)];
describe(#{kind := unexpected_error, expect := Expect, outcome := Outcome} = P) ->
    Wanted = case Expect of
                 raise -> "an exception";
                 _ -> "an error result"
             end,
    [when_(P), " surfaced, but not as ", Wanted, fmt(" (expect: ~ts): ", [Expect]),
     "the function ", outcome(Outcome)];
%% (The request is the later run's; in parentheses after the reason it
%% read as the first run's: "came from A in the first run (alloc ... at B)".)
describe(#{kind := nondeterministic, request := Request, reason := Reason}) ->
    At = case Request of
             undefined -> "";
             _ -> ["; in a later run it was: ", request_text(Request)]
         end,
    ["the function is nondeterministic: ", Reason, At, "; the remaining runs were skipped"];
describe(#{kind := failed_without_injection, outcome := Outcome}) ->
    ["the function failed without any allocation failure: it ", outcome(Outcome)];
describe(#{kind := misuse, misuse := Kind, report := Report, 'after' := After,
           more := More} = P) ->
    MoreText = case More of
                   0 -> "";
                   _ -> fmt(" (and ~b more)", [More])
               end,
    [when_(P), " misused memory: ", Kind, MoreText,
     fmt(" (in a call that ended after ~b ~ts):\n      ", [After, plural(After, "allocation")]),
     Report];
describe(#{kind := incomplete} = P) ->
    [when_(P), ": the checker ran out of memory for its bookkeeping; results are incomplete"];
describe(#{kind := Kind} = P) ->
    fmt("~ts: ~0tp", [Kind, P]).

when_(#{index := undefined}) -> "the run without failures";
when_(#{request := Request}) ->
    [fmt("failing allocation #~b (", [maps:get(index, Request)]), request_text(Request), ")"].

request_text(#{kind := alloc, size := Size, site := Site}) ->
    fmt("alloc of ~b ~ts at ~ts", [Size, plural(Size, "byte"), site(Site)]);
request_text(#{kind := Kind, size := Size, site := Site}) ->
    fmt("~ts to ~b ~ts at ~ts", [Kind, Size, plural(Size, "byte"), site(Site)]).

site(undefined) -> "an unknown site";
site(Site) -> Site.

%% (A limit in characters, not in depth: a depth cuts binaries short, and
%% a leak_check error's message would lose the function's name.)
outcome({returned, Value}) ->
    ["returned ", io_lib:format("~0tp", [Value], [{chars_limit, ?TERM_CHARS}])];
outcome({raised, Class, Reason, _Stacktrace}) ->
    ["raised ", io_lib:format("~ts:~0tp", [Class, Reason], [{chars_limit, ?TERM_CHARS}])].

fmt(Format, Args) ->
    unicode:characters_to_binary(io_lib:format(Format, Args)).

plural(1, Word) -> Word;
plural(_, Word) -> Word ++ "s".
