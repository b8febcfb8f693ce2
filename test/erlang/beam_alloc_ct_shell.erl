%% A Common Test hook for test/common_test_test.exs that reports a case's
%% failure as rebar3's console does (cth_readable_compact_shell, which
%% rebar3 ct installs): once from on_tc_fail/3, and once more from
%% post_end_per_testcase/4 when the case passed (tc_status ok) but the
%% return it is given is not ok ("end_per_testcase FAILED"), as when a
%% hook whose post_end_per_testcase ran before its own turned the case's
%% ok into {fail, Reason}. Each line it would print goes to the process
%% registered under the name given, {beam_alloc_ct_shell, Line}.
-module(beam_alloc_ct_shell).

-export([id/1, init/2, post_end_per_testcase/4, on_tc_fail/3]).

id(_Opts) -> ?MODULE.

init(_Id, [Name]) when is_atom(Name) -> {ok, Name}.

post_end_per_testcase(_Case, _Config, ok, Name) ->
    {ok, Name};
post_end_per_testcase(Case, Config, Return, Name) ->
    case lists:keyfind(tc_status, 1, Config) of
        {tc_status, ok} -> shown(Name, Case, "end_per_testcase FAILED", Return);
        _ -> ok
    end,
    {Return, Name}.

on_tc_fail(Case, Reason, Name) ->
    shown(Name, Case, "FAILED", Reason),
    Name.

shown(Name, Case, Label, Reason) ->
    Name ! {?MODULE, iolist_to_binary(io_lib:format("~p: ~s: ~0tp", [Case, Label, Reason]))}.
