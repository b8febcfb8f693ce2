%% A Common Test suite for test/common_test_test.exs with beam_alloc_cth
%% in its suite/0 rather than in the run's options (a hook CT installs at
%% init_per_suite, after those of the run). The NIFs are
%% BeamAlloc.Test.Misuse's (test/nifs/misuse_nif.c).
-module(beam_alloc_cth_suite0_SUITE).

-compile([export_all, nowarn_export_all]).

-define(MISUSE, 'Elixir.BeamAlloc.Test.Misuse').

suite() ->
    [{ct_hooks, [beam_alloc_cth]}].

all() ->
    [clean, double_free, leak].

clean(_Config) ->
    ok.

double_free(_Config) ->
    ok = ?MISUSE:double_free_plain().

leak(_Config) ->
    ok = ?MISUSE:leak_deep().
