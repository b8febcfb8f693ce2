%% EUnit tests of erlang_nif, with beam_alloc's Erlang tools only: no
%% Elixir on the code path.
-module(erlang_nif_tests).

-include_lib("eunit/include/eunit.hrl").

no_elixir_test() ->
    ?assertEqual(non_existing, code:which('Elixir.Kernel')),
    ?assertEqual(non_existing, code:which('Elixir.BeamAlloc.Testing')),
    ?assertEqual({error, bad_name}, code:lib_dir(elixir)).

parse_ints_test() ->
    ?assertEqual({ok, [1, 22, 333, 4, 5]}, erlang_nif:parse_ints(<<"1,22,333,4,5">>)),
    ?assertEqual({error, syntax}, erlang_nif:parse_ints(<<"1,x">>)).

%% --- beam_alloc_testing ----------------------------------------------------

survives_every_allocation_failure_test() ->
    %% the first array, then growths to 4, 8 and 16 elements
    ?assertEqual({ok, 4},
                 beam_alloc_testing:check_all_allocation_failures(
                   fun() -> erlang_nif:parse_ints(<<"1,2,3,4,5,6,7,8,9">>) end)),
    ?assertEqual({ok, 1},
                 beam_alloc_testing:check_all_allocation_failures(
                   fun() -> erlang_nif:parse_ints(<<"1">>) end,
                   #{expect => error_tuple, modules => [erlang_nif]})).

swallowed_failure_is_an_erlang_error_test() ->
    Swallowing = fun() -> _ = erlang_nif:parse_ints(<<"1,2,3">>), ok end,
    try beam_alloc_testing:check_all_allocation_failures(Swallowing) of
        Result -> ?assertEqual(an_error, Result)
    catch
        error:{allocation_failures, #{allocations := 2, problems := Problems,
                                      message := Message}} ->
            ?assertMatch([#{kind := swallowed, index := 0,
                            request := #{index := 0, kind := alloc, size := 16},
                            outcome := {returned, ok}},
                          #{kind := swallowed, index := 1} | _], Problems),
            %% The site is a source line: the NIF is built with -g.
            ?assertMatch({match, _},
                         re:run(Message, "failing allocation #0 \\(alloc of 16 bytes at "
                                "parse_ints \\([^)]*erlang_nif\\.c:[0-9]+\\)\\) was "
                                "swallowed: the function returned ok"))
    end.

%% A leak_check error under the check: the message quotes it whole, the
%% function's name included (a depth limit cut binaries short), after the
%% leaked block with its source line (the error names the function alone).
leak_under_a_check_is_quoted_whole_test() ->
    try beam_alloc_testing:check_all_allocation_failures(fun erlang_nif:leaky/0) of
        Result -> ?assertEqual(an_error, Result)
    catch
        error:{allocation_failures, #{problems := [#{kind := leak, index := undefined,
                                                     blocks := [#{size := 32}]},
                                                   #{kind := failed_without_injection}],
                                      message := Message}} ->
            ?assertMatch({match, _},
                         re:run(Message, "32 bytes from allocation #0 at "
                                "leaky \\([^)]*erlang_nif\\.c:[0-9]+\\)")),
            ?assertMatch({match, _},
                         re:run(Message, "it raised error:\\{memory_leak,<<\"memory leak "
                                "detected in function erlang_nif:leaky/0\">>\\}"))
    end.

bad_options_test() ->
    ?assertError({badarg, <<"invalid value for expect, expected any, raise or error_tuple, got: sometimes">>},
                 beam_alloc_testing:check_all_allocation_failures(fun() -> ok end,
                                                                  #{expect => sometimes})),
    ?assertError({badarg, <<"invalid value for modules, expected all or a non-empty list "
                            "of modules, got: []">>},
                 beam_alloc_testing:check_all_allocation_failures(fun() -> ok end,
                                                                  #{modules => []})),
    ?assertError({badarg, <<"option expect given twice">>},
                 beam_alloc_testing:check_all_allocation_failures(
                   fun() -> ok end, [{expect, raise}, {expect, bogus}])),
    ?assertError({not_loaded, [lists]},
                 beam_alloc_testing:check_all_allocation_failures(fun() -> ok end,
                                                                  [{modules, [lists]}])).

%% --- leak_check, misuse and stats ---------------------------------------------

leak_is_an_erlang_error_test() ->
    ?assertError({memory_leak, <<"memory leak detected in function erlang_nif:leaky/0">>},
                 erlang_nif:leaky()).

stats_test() ->
    ok = erlang_nif:drop(),
    #{raw := #{live_bytes := Before}} = beam_alloc:stats(erlang_nif),
    ok = erlang_nif:keep(100000),
    #{raw := #{live_bytes := Held, allocations := Allocs}} = beam_alloc:stats(erlang_nif),
    ?assertEqual(100000, Held - Before),
    ?assert(Allocs > 0),
    ok = erlang_nif:drop(),
    ?assertMatch(#{raw := #{live_bytes := Before}, large := #{}, general_purpose := #{}},
                 beam_alloc:stats(erlang_nif)),
    ?assertError({not_loaded, lists}, beam_alloc:stats(lists)).

%% A misuse is reported with its source line: the beam_alloc application's
%% reporter (started here) writes the site as function (file.c:line) and
%% keeps the report for beam_alloc:take_reports/0.
misuse_report_names_the_source_line_test() ->
    {ok, _} = application:ensure_all_started(beam_alloc),
    _ = beam_alloc:take_reports(),
    %% (Not a speed check: the call waits until the reporter has read the
    %% report, which is at once, or a whole second if it never lets go.)
    {Micros, ok} = timer:tc(erlang_nif, free_twice, []),
    ?assert(Micros < 500000),
    [{erlang_nif, Line}] = beam_alloc:take_reports(),
    ?assertMatch({match, _},
                 re:run(Line, "double free: .*called from free_twice "
                              "\\([^)]*erlang_nif\\.c:[0-9]+\\)")).

%% Reports as test failures (the Erlang form of Elixir's use BeamAlloc.Case):
%% a misuse that lets the call return still fails the test, with its lines.
without_reports_test() ->
    {ok, _} = application:ensure_all_started(beam_alloc),
    ?assertEqual({ok, [1]}, beam_alloc_testing:without_reports(
                              fun() -> erlang_nif:parse_ints(<<"1">>) end)),
    ?assertError({beam_alloc_reports, [_]},
                 beam_alloc_testing:without_reports(fun erlang_nif:free_twice/0)).

%% A check that lists a misuse as a problem of its own has turned the
%% allocator's report into the error the test asserts: without_reports/1
%% does not fail for it again. A report beside the check still fails.
without_reports_passes_what_a_check_listed_test() ->
    {ok, _} = application:ensure_all_started(beam_alloc),
    Check = fun() -> beam_alloc_testing:check_all_allocation_failures(fun erlang_nif:free_twice/0) end,
    ?assertError({allocation_failures, #{problems := [#{kind := misuse} | _]}},
                 beam_alloc_testing:without_reports(Check)),
    ?assertError({beam_alloc_reports, [_]},
                 beam_alloc_testing:without_reports(
                   fun() ->
                           ?assertError({allocation_failures, _}, Check()),
                           erlang_nif:free_twice()
                   end)).

%% A report of the fun's own, then more than the reporter keeps (100)
%% that checks consumed: without_reports/1 read the reporter's latest 100
%% at the end, all consumed, and passed (review). Every report is counted;
%% one a check consumes later, once pushed out of the latest, is not.
without_reports_counts_a_report_pushed_out_test_() ->
    {timeout, 120,
     fun() ->
             {ok, _} = application:ensure_all_started(beam_alloc),
             CheckEach = fun() ->
                                 [?assertError({allocation_failures, _},
                                               beam_alloc_testing:check_all_allocation_failures(
                                                 fun erlang_nif:free_twice/0))
                                  || _ <- lists:seq(1, 101)],
                                 ok
                         end,
             %% One check of 60 leak_check calls that leak: 120 report
             %% lines a run (the function's, the block's), which the
             %% check consumes once it is over.
             CheckMany = fun() ->
                                 ?assertError({allocation_failures, _},
                                              beam_alloc_testing:check_all_allocation_failures(
                                                fun() -> [try erlang_nif:leaky() catch _:_ -> ok end
                                                          || _ <- lists:seq(1, 60)] end)),
                                 ok
                         end,
             ?assertEqual(ok, beam_alloc_testing:without_reports(CheckEach)),
             ?assertEqual(ok, beam_alloc_testing:without_reports(CheckMany)),
             [?assertError({beam_alloc_reports, [_]},
                           beam_alloc_testing:without_reports(
                             fun() -> ok = erlang_nif:free_twice(), Check() end))
              || Check <- [CheckEach, CheckMany]]
     end}.

%% The application's collector runs under rebar3's build too: it reads
%% every loaded library's holdings, erlang_nif's among them, and collects
%% none that holds too little to matter.
collector_reads_the_libraries_test() ->
    {ok, _} = application:ensure_all_started(beam_alloc),
    {ok, _} = erlang_nif:parse_ints(<<"1">>),
    ?assert(is_pid(whereis(beam_alloc_collector))),
    ?assert(lists:keymember(<<"erlang_nif">>, 1, beam_alloc_testing_nif:holdings())),
    ?assertEqual([], beam_alloc_collector:tick()).

take_reports_needs_the_application_test() ->
    _ = application:stop(beam_alloc),
    ?assertError({not_started, beam_alloc}, beam_alloc:take_reports()),
    {ok, _} = application:ensure_all_started(beam_alloc).
