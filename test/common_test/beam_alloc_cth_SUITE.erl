%% A Common Test suite run with {ct_hooks, [beam_alloc_cth]} by
%% test/common_test_test.exs (BeamAlloc.CommonTestTest), which compiles it
%% into a temporary directory (it is not in erlc_paths: CT compiles suites
%% itself) and reads each case's result. The NIFs are
%% BeamAlloc.Test.Misuse's (test/nifs/misuse_nif.c).
-module(beam_alloc_cth_SUITE).

-compile([export_all, nowarn_export_all]).

-define(MISUSE, 'Elixir.BeamAlloc.Test.Misuse').

all() ->
    [clean, double_free, leak, check_consumed, suite_process, end_misuse, after_end_misuse,
     timetrap, init_fails, init_timetrap, leaves_process, after_leaves_process, {group, twice}, keeper_killed,
     after_keeper_killed, one_watch].

%% The same case twice at once: each its own watch.
groups() ->
    [{twice, [parallel], [at_once, at_once]}].

%% A process of init_per_suite that double frees when asked: its report
%% counts for the case that runs meanwhile, and names that process.
init_per_suite(Config) ->
    Helper = spawn(fun Loop() ->
                           receive
                               {double_free, From} ->
                                   ok = ?MISUSE:double_free_plain(),
                                   From ! done,
                                   Loop()
                           end
                   end),
    [{helper, Helper} | Config].

end_per_suite(Config) ->
    exit(proplists:get_value(helper, Config), kill),
    ok.

init_per_testcase(init_fails, _Config) ->
    error(init_fails);
init_per_testcase(init_timetrap, _Config) ->
    timer:sleep(infinity);
%% (A config of its own, not the one given: the hook's watch goes on.)
init_per_testcase(at_once, _Config) ->
    [];
init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(end_misuse, _Config) ->
    ok = ?MISUSE:double_free_plain();
end_per_testcase(_Case, _Config) ->
    ok.

clean(_Config) ->
    ok.

%% Reported, and the call goes on: without the hook the case passes.
double_free(_Config) ->
    ok = ?MISUSE:double_free_plain().

%% A leak_check NIF raises {memory_leak, ...}, which names the function
%% alone: the hook's failure gives the lines.
leak(_Config) ->
    ok = ?MISUSE:leak_deep().

%% A misuse that the check listed in the error the case asserts.
check_consumed(_Config) ->
    try beam_alloc_testing:check_all_allocation_failures(fun ?MISUSE:double_free_on_failure/0) of
        Result -> error({passed, Result})
    catch
        error:{allocation_failures, _} -> ok
    end.

suite_process(Config) ->
    proplists:get_value(helper, Config) ! {double_free, self()},
    receive done -> ok end.

end_misuse(_Config) ->
    ok.

%% Clean: the misuse of the case before is that one's.
after_end_misuse(_Config) ->
    ok.

%% The case process is killed; its report still fails it.
timetrap() ->
    [{timetrap, 300}].

timetrap(_Config) ->
    ok = ?MISUSE:double_free_plain(),
    timer:sleep(infinity).

%% Skipped: a timetrap killed its init_per_testcase, whose process held
%% its watch.
init_timetrap() ->
    [{timetrap, 300}].

init_timetrap(_Config) ->
    ok.

%% A process the case starts outlives it, and double frees while the
%% next case runs: that one fails, and its note names the earlier case
%% among the processes it may be.
leaves_process(_Config) ->
    Left = spawn(fun() ->
                         receive
                             {double_free, From} ->
                                 ok = ?MISUSE:double_free_plain(),
                                 From ! done
                         end
                 end),
    true = register(beam_alloc_cth_left, Left),
    ok.

after_leaves_process(_Config) ->
    beam_alloc_cth_left ! {double_free, self()},
    receive done -> ok end.

%% (Each waits for the other to have begun.)
at_once(_Config) ->
    ok = ?MISUSE:double_free_plain(),
    timer:sleep(300).

%% Skipped: its init_per_testcase failed.
init_fails(_Config) ->
    ok.

%% The process owning the hook's watches is killed (as by a suite that
%% kills the processes it finds): this case, whose watch went with it,
%% fails saying so, and the cases after it are still checked.
keeper_killed(_Config) ->
    #{watches := Watches} = sys:get_state(beam_alloc:reporter()),
    [#{owner := Keeper}] = maps:values(Watches),
    Monitor = monitor(process, Keeper),
    exit(Keeper, kill),
    receive {'DOWN', Monitor, _, _, _} -> ok end,
    ok = ?MISUSE:double_free_plain().

after_keeper_killed(_Config) ->
    ok = ?MISUSE:double_free_plain().

%% The hook's watch of this case is the reporter's only one: those of the
%% cases before ended, a case skipped, one whose init_per_testcase a
%% timetrap killed and a parallel one's too.
one_watch(_Config) ->
    #{watches := Watches} = sys:get_state(beam_alloc:reporter()),
    1 = map_size(Watches).
