%% Per-NIF options from Erlang: the library (test/nifs/options_erl_nif.c) is
%% loaded with a load_info map, as an Erlang NIF module would.
-module(beam_alloc_options_erl).

-export([kind/0, kind_large/0, kind_checked/0, kind_scratch/0, two/0, two/1,
         leaky/0, leaky_checked/0, leaky_dirty/0, checked_twin/0,
         checked_twin_too/0, parse_load_info/1, take_reports/0]).

-on_load(load/0).

load() ->
    Path = filename:join(code:priv_dir(beam_alloc), "options_erl_nif"),
    erlang:load_nif(Path, #{kind => #{allocator => large},
                            kind_checked => [{scratch, true}],
                            {two, 0} => #{leak_check => true},
                            leaky_checked => #{leak_check => false}}).

kind() -> erlang:nif_error(not_loaded).
kind_large() -> erlang:nif_error(not_loaded).
kind_checked() -> erlang:nif_error(not_loaded).
kind_scratch() -> erlang:nif_error(not_loaded).
two() -> erlang:nif_error(not_loaded).
two(_) -> erlang:nif_error(not_loaded).
leaky() -> erlang:nif_error(not_loaded).
leaky_checked() -> erlang:nif_error(not_loaded).
leaky_dirty() -> erlang:nif_error(not_loaded).
checked_twin() -> erlang:nif_error(not_loaded).
checked_twin_too() -> erlang:nif_error(not_loaded).
parse_load_info(_) -> erlang:nif_error(not_loaded).
take_reports() -> erlang:nif_error(not_loaded).
