%% A Common Test suite for test/common_test_test.exs whose case kills
%% CT's own server (ct_util_server), as a suite's crash may: the run ends
%% without calling the hooks' terminate/1. beam_alloc_cth is in suite/0,
%% and in the run's options too for one run (then installed from those).
-module(beam_alloc_cth_aborted_SUITE).

-compile([export_all, nowarn_export_all]).

suite() ->
    [{ct_hooks, [beam_alloc_cth]}].

all() ->
    [kills_ct, not_run].

kills_ct(_Config) ->
    exit(whereis(ct_util_server), kill).

not_run(_Config) ->
    ok.
