%% A Common Test hook for test/common_test_test.exs that skips the case
%% named from its pre_init_per_testcase, at the priority given: below
%% beam_alloc_cth's, CT calls it first, and then gives beam_alloc_cth's
%% pre_init_per_testcase the skip for a config.
-module(beam_alloc_ct_skip).

-export([id/1, init/2, pre_init_per_testcase/4]).

id(_Opts) -> ?MODULE.

init(_Id, [Case, Priority]) when is_atom(Case), is_integer(Priority) -> {ok, Case, Priority}.

pre_init_per_testcase(_Suite, Case, _Config, Case) -> {{skip, {?MODULE, Case}}, Case};
pre_init_per_testcase(_Suite, _Case, Config, Skipped) -> {Config, Skipped}.
