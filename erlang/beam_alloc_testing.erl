%% Fault injection for NIFs built with beam_alloc, for Erlang test suites
%% (EUnit, Common Test). A thin front for the Elixir module
%% 'Elixir.BeamAlloc.Testing', whose documentation has the details.
%%
%%     {ok, N} = beam_alloc_testing:check_all_allocation_failures(
%%                   fun() -> my_nif:parse(<<"[1, 2]">>) end,
%%                   #{expect => error_tuple}).
%%
%% runs the fun once counting the allocations its NIF calls make through
%% beam_allocator, then N more times failing allocation 0, 1, ..., N-1 in
%% turn. Every induced failure must surface as an exception or an
%% {error, _} result (option expect: any, raise or error_tuple), leave no
%% block live, and the runs must repeat the first one. Otherwise it raises
%% 'Elixir.BeamAlloc.AllocationFailureError' (an error-class exception whose
%% message lists every problem, with allocation numbers and sites).
%%
%% Options (a map or a property list): expect, modules (a list of NIF
%% modules to fail allocations in; default all).
-module(beam_alloc_testing).

-export([check_all_allocation_failures/1, check_all_allocation_failures/2]).

-spec check_all_allocation_failures(fun(() -> term())) -> {ok, non_neg_integer()}.
check_all_allocation_failures(Fun) ->
    check_all_allocation_failures(Fun, []).

-spec check_all_allocation_failures(fun(() -> term()), map() | list()) ->
    {ok, non_neg_integer()}.
check_all_allocation_failures(Fun, Opts) when is_map(Opts) ->
    check_all_allocation_failures(Fun, maps:to_list(Opts));
check_all_allocation_failures(Fun, Opts) when is_list(Opts) ->
    'Elixir.BeamAlloc.Testing':check_all_allocation_failures(Fun, Opts).
