%% beam_alloc_testing:without_reports/1 under EUnit's {inparallel, ...}:
%% a clean test fails with the report of a test running beside it (every
%% report made while its fun runs counts, whoever made it), and its error
%% says so: the other process's line names that process, and a line says
%% that tests running at the same time count each other's reports. A
%% process the caller started is its own. Run by test/misuse_test.exs
%% (BeamAlloc.MisuseTest); the NIFs are BeamAlloc.Test.Misuse's.
-module(beam_alloc_parallel_reports_tests).

-include_lib("eunit/include/eunit.hrl").

-define(MISUSE, 'Elixir.BeamAlloc.Test.Misuse').

%% (An adopter's audit: the clean test failed with the other's double
%% free, and nothing in its error said that parallel tests caused it.)
inparallel_test_() ->
    {setup, fun rendezvous/0, fun(R) -> exit(R, kill) end,
     fun(R) -> {inparallel, [?_test(clean(R)), ?_test(dirty(R))]} end}.

%% Its fun reports nothing: it waits until the other test has reported.
clean(R) ->
    Self = self(),
    {Other, Lines} = error_lines(fun() ->
                                         Other = meet(R),
                                         receive {reported, Other} -> Other end
                                 end),
    OtherText = pid_text(Other),
    [Note | Rest] = Lines,
    ?assertMatch({match, _}, re:run(Note, <<"^beam_alloc: 1 of the reports below was made by another process ">>)),
    ?assertMatch({match, _}, re:run(Note, <<"\\{inparallel, \\.\\.\\.\\}">>)),
    ?assertNotEqual(nomatch, binary:match(Note, OtherText)),
    ?assertNotEqual(nomatch, binary:match(Note, pid_text(Self))),
    [Line] = [L || L <- Rest, binary:match(L, <<"double_free_plain">>) =/= nomatch],
    Named = <<OtherText/binary, ": beam_alloc: ">>,
    ?assertEqual(Named, binary:part(Line, 0, byte_size(Named))).

dirty(R) ->
    Clean = meet(R),
    ok = ?MISUSE:double_free_plain(),
    Clean ! {reported, self()}.

%% A process the caller spawned (no $ancestors: found by its parent) is
%% working for it: its report is the caller's own, its line as it came,
%% and no note.
own_process_test() ->
    Self = self(),
    {_, [Line]} = error_lines(fun() ->
                                      Pid = spawn_link(fun() ->
                                                               ok = ?MISUSE:double_free_plain(),
                                                               Self ! {done, self()}
                                                       end),
                                      receive {done, Pid} -> Pid end
                              end),
    ?assertMatch(<<"beam_alloc: ", _/binary>>, Line).

%% Several reports of one other process: the note names it as one
%% process ("another process"), not "other processes".
one_other_process_test() ->
    Other = whereis(code_server),
    Reporter = beam_alloc:reporter(),
    {_, [Note | _]} =
        error_lines(fun() ->
                            Report = {beam_alloc_report, ?MODULE,
                                      <<"beam_alloc: made by another">>, Other, undefined},
                            [Reporter ! Report || _ <- [1, 2]],
                            _ = sys:get_state(Reporter)
                    end),
    ?assertMatch({match, _}, re:run(Note, <<"^beam_alloc: 2 of the reports below were made by "
                                             "another process \\(">>)).

%% The lines of Fun's without_reports/1 error, and what Fun returned.
error_lines(Fun) ->
    Result = self(),
    try beam_alloc_testing:without_reports(fun() -> V = Fun(), put(Result, V), V end) of
        V -> erlang:error({passed, V})
    catch
        error:{beam_alloc_reports, Lines} -> {get(Result), Lines}
    end.

pid_text(Pid) ->
    list_to_binary(pid_to_list(Pid)).

%% The two tests meet: each gets the other's pid.
rendezvous() ->
    spawn(fun() ->
                  receive {meet, A} -> receive {meet, B} -> A ! {met, B}, B ! {met, A} end end
          end).

meet(R) ->
    R ! {meet, self()},
    receive {met, Other} -> Other after 5000 -> erlang:error(no_other_test) end.
