%% A check whose function crashes the VM, called from Erlang
%% (test/fault_injection_crash_test.exs, in a child VM): the crash note
%% names the code that called the check, as Erlang writes it.
-module(beam_alloc_crash_caller).

-export([checks_test/0, deep_test/0]).

checks_test() ->
    Fun = fun() -> 'Elixir.BeamAlloc.Test.Faults':uses_null(7) end,
    %% CALLER: the next line
    {ok, _} = beam_alloc_testing:check_all_allocation_failures(Fun),
    ok.

%% A check reached through more nested calls than the stack the VM gives
%% a process (backtrace_depth, 8 unless set, three of them the check's
%% own) holds: the crash note named the innermost of them, nested_1/1.
%% (Five functions: the VM records a return address repeated by recursion
%% once.)
deep_test() ->
    {ok, _} = nested_5(fun() -> 'Elixir.BeamAlloc.Test.Faults':uses_null(7) end),
    ok.

%% (Not tail calls: each keeps its frame.)
nested_5(Fun) -> kept(nested_4(Fun)).
nested_4(Fun) -> kept(nested_3(Fun)).
nested_3(Fun) -> kept(nested_2(Fun)).
nested_2(Fun) -> kept(nested_1(Fun)).
nested_1(Fun) -> kept(beam_alloc_testing:check_all_allocation_failures(Fun)).

kept(Result) ->
    self() ! nested,
    Result.
