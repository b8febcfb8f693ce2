%% A check whose function crashes the VM, called from Erlang
%% (test/fault_injection_crash_test.exs, in a child VM): the crash note
%% names the code that called the check, as Erlang writes it.
-module(beam_alloc_crash_caller).

-export([checks_test/0]).

checks_test() ->
    Fun = fun() -> 'Elixir.BeamAlloc.Test.Faults':uses_null(7) end,
    %% CALLER: the next line
    {ok, _} = beam_alloc_testing:check_all_allocation_failures(Fun),
    ok.
