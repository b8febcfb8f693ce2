%% The Erlang modules' public functions given arguments of the wrong type
%% or out of range: an error term that says what was expected ({badarg,
%% Text}, {not_loaded, Module}) or badarg with error_info, never an answer
%% as if the argument were fine. Run by test/bad_arguments_test.exs
%% (BeamAlloc.BadArgumentsTest), which has the Elixir side's table.
-module(beam_alloc_bad_arguments_tests).

-include_lib("eunit/include/eunit.hrl").

%% Values of every kind, none of them a module name, a binary, a fun of
%% arity 0 or options.
bad_values() ->
    Dead = spawn(fun() -> ok end),
    [1, -1, 1 bsl 70, -(1 bsl 70), 1.5, "lists", <<"lists">>, [a | b], [1, 2],
     #{foo => 1}, {a}, Dead, make_ref(), fun(_) -> ok end, <<1:3>>].

%% Atoms that name no module with a beam_alloc NIF library.
not_beam_alloc() ->
    [undefined, no_such_module_here, lists, beam_alloc, crypto].

%% The error F raises (a return is a failure), with its stack.
error_of(F) ->
    try F() of
        Value -> erlang:error({returned, Value})
    catch
        error:Reason:Stack -> {Reason, Stack}
    end.

%% F raises badarg whose error_info gives argument 1 a text.
assert_badarg_info(F) ->
    {Reason, [{M, Fun, Args, Info} | _] = Stack} = error_of(F),
    ?assertEqual(badarg, Reason),
    ?assertMatch(#{module := M}, proplists:get_value(error_info, Info)),
    #{1 := Text} = M:format_error(badarg, Stack),
    ?assert(is_list(Text) andalso Text =/= []),
    {Fun, Args}.

%% F raises {badarg, Text}, Text matching Pattern.
assert_badarg_text(F, Pattern) ->
    {Reason, _} = error_of(F),
    ?assertMatch({badarg, Text} when is_binary(Text), Reason),
    {badarg, Text} = Reason,
    ?assertMatch({match, _}, re:run(Text, Pattern)).

%% Calling Module:Function with Args raises {badarg, Text}, Text matching
%% Pattern, from a top frame that is that call: not an internal helper's
%% (check_all_allocation_failures' was its badarg/2: an audit).
assert_badarg_call(Module, Function, Args, Pattern) ->
    F = fun() -> apply(Module, Function, Args) end,
    assert_badarg_text(F, Pattern),
    {_, [Top | _]} = error_of(F),
    ?assertMatch({Module, Function, Args, _}, Top).

stats_and_collect_test() ->
    [assert_badarg_info(fun() -> beam_alloc:F(V) end)
     || V <- bad_values(), F <- [stats, find_stats, collect]],
    [begin
         ?assertEqual({not_loaded, M}, element(1, error_of(fun() -> beam_alloc:stats(M) end))),
         ?assertEqual({error, not_loaded}, beam_alloc:find_stats(M)),
         ?assertEqual({not_loaded, M}, element(1, error_of(fun() -> beam_alloc:collect(M) end)))
     end || M <- not_beam_alloc()].

%% (Anything but a load_nif result came back unchanged.)
explain_load_error_test() ->
    [assert_badarg_info(fun() -> beam_alloc:explain_load_error(V) end)
     || V <- [error, {ok, x}, {error} | bad_values()]],
    ?assertEqual(ok, beam_alloc:explain_load_error(ok)),
    ?assertEqual({error, x}, beam_alloc:explain_load_error({error, x})),
    ?assertEqual({error, {load, "other"}},
                 beam_alloc:explain_load_error({error, {load, "other"}})).

check_all_allocation_failures_test() ->
    Ok = fun() -> ok end,
    NotAFun = "expects a fun of arity 0",
    Check = fun(Args, Text) ->
                    assert_badarg_call(beam_alloc_testing, check_all_allocation_failures, Args,
                                       Text)
            end,
    [begin
         Check([V], NotAFun),
         Check([V, []], NotAFun),
         Check([Ok, #{expect => V}], "invalid value for expect"),
         Check([Ok, #{modules => V}], "invalid value for modules")
     end || V <- [fun(_, _) -> ok end, fun lists:reverse/1 | bad_values()]],
    [Check([Ok, Opts], Text)
     || {Opts, Text} <- [{#{foo => 1}, "unknown option foo"},
                         {[{foo, 1}], "unknown option foo"},
                         {[{<<"expect">>, raise}], "option names as atoms"},
                         {[{expect, raise} | x], "a map or a property list"},
                         {[expect], "invalid value for expect"},
                         {[{expect, raise}, {expect, any}], "option expect given twice"},
                         {#{modules => []}, "non-empty list of modules"},
                         {#{modules => [lists | x]}, "non-empty list of modules"},
                         {1, "a map or a property list"},
                         {<<>>, "a map or a property list"}]],
    [?assertEqual({not_loaded, [M]},
                  element(1, error_of(fun() ->
                                              beam_alloc_testing:check_all_allocation_failures(
                                                Ok, #{modules => [M]})
                                      end)))
     || M <- not_beam_alloc()].

without_reports_test() ->
    [assert_badarg_call(beam_alloc_testing, without_reports, [V], "takes a fun of arity 0")
     || V <- bad_values()].

symbolizer_test() ->
    [assert_badarg_text(fun() -> beam_alloc_symbolizer:resolve_sites(V) end,
                        "takes a binary")
     || V <- [atom, "x.so+0x10" | bad_values()], not is_binary(V)],
    Offsets = [-1, 1 bsl 64, 1 bsl 70, 1.5, <<"16">>, undefined],
    [assert_badarg_text(fun() -> beam_alloc_symbolizer:site(O, Off) end,
                        "an offset \\(an integer from 0 to 2\\^64-1\\)")
     || O <- [<<"guide_nif.so">> | bad_values()], Off <- [0 | Offsets],
        not (is_binary(O) andalso is_integer(Off) andalso Off >= 0 andalso Off < 1 bsl 64)],
    ?assertEqual(error, beam_alloc_symbolizer:site(<<"guide_nif.so">>, (1 bsl 64) - 1)),
    ?assertEqual(error, beam_alloc_symbolizer:site(<<>>, 0)),
    ?assertEqual(error, beam_alloc_symbolizer:site(<<"a", 0, "b">>, 0)),
    %% A site whose offset is too large to be one stays as it is.
    Text = <<"at guide_nif.so+0x1", (binary:copy(<<"0">>, 16))/binary>>,
    ?assertEqual(Text, beam_alloc_symbolizer:resolve_sites(Text)).

%% The fault-injection driver's NIFs (internal: beam_alloc and
%% beam_alloc_testing call them with what they take) raise {badarg, Text}
%% naming the function, not a bare badarg.
driver_nif_test() ->
    N = beam_alloc_testing_nif,
    [begin
         assert_badarg_text(fun() -> N:stats(V) end, "stats/1 and collect/1 take a module's name"),
         assert_badarg_text(fun() -> N:collect(V) end, "stats/1 and collect/1 take a module's name"),
         assert_badarg_text(fun() -> N:attach(V, all) end, "attach/2 takes an open session"),
         assert_badarg_text(fun() -> N:begin_run(V, 0, record) end, "begin_run/3 takes"),
         assert_badarg_text(fun() -> N:end_run(V) end, "end_run/1 takes"),
         assert_badarg_text(fun() -> N:live(V) end, "live/1 takes"),
         assert_badarg_text(fun() -> N:leaks(V) end, "leaks/1 takes"),
         assert_badarg_text(fun() -> N:close(V) end, "close/1 takes a session")
     end || V <- [atom | bad_values()], not is_binary(V)],
    {ok, S} = N:open(),
    try
        [assert_badarg_text(fun() -> N:begin_run(S, I, M) end, "begin_run/3 takes")
         || {I, M} <- [{-1, record}, {1 bsl 64, record}, {1.5, compare}, {0, replay},
                       {0, "record"}, {infinity, recordxxxxxxxxxxxx}]],
        assert_badarg_text(fun() -> N:attach(S, 1) end, "all or a list of module names"),
        %% Another atom was read as all, and a list of atoms, or of other
        %% terms, or an improper one, attached nothing: both silently.
        [assert_badarg_text(fun() -> N:attach(S, V) end, "all or a list of module names")
         || V <- [lists, true, [lists], [1], [<<"lists">> | x], [<<"lists">>, "x"]]],
        ?assert(is_list(N:attach(S, [<<"lists">>]))),
        ?assert(is_list(N:attach(S, []))),
        assert_badarg_text(fun() -> N:end_run(S) end, "with a run under way"),
        ok = N:begin_run(S, infinity, record),
        assert_badarg_text(fun() -> N:begin_run(S, 0, record) end, "a run is under way"),
        assert_badarg_text(fun() -> N:leaks(S) end, "between runs"),
        #{run := 1} = N:end_run(S),
        %% Another process's session.
        Self = self(),
        spawn(fun() -> Self ! {other, try N:end_run(S) catch C:R -> {C, R} end} end),
        receive {other, Other} -> ?assertMatch({error, {badarg, _}}, Other) end
    after
        ok = N:close(S)
    end,
    assert_badarg_text(fun() -> N:attach(S, all) end, "attach/2"),
    assert_badarg_text(fun() -> N:begin_run(S, 0, record) end, "begin_run/3").
