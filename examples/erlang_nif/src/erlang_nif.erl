%% The NIFs of c_src/erlang_nif.c, built with beam_alloc.
-module(erlang_nif).

-export([parse_ints/1, leaky/0, keep/1, drop/0, free_twice/0]).

-on_load(load/0).

load() ->
    Path = filename:join(code:priv_dir(erlang_nif), "erlang_nif"),
    %% Per-NIF options from Erlang, as load_info: leaky/0 is leak-checked.
    %% explain_load_error/1 turns a refusal of them into its reason.
    beam_alloc:explain_load_error(
      erlang:load_nif(Path, #{leaky => #{leak_check => true}})).

%% The integers of a comma-separated binary: {ok, [integer()]} | {error, Reason}.
parse_ints(_Text) -> erlang:nif_error(not_loaded).
%% Allocates and forgets 32 bytes; leak-checked, so it raises.
leaky() -> erlang:nif_error(not_loaded).
%% Holds N bytes from beam_raw_allocator until drop/0.
keep(_N) -> erlang:nif_error(not_loaded).
drop() -> erlang:nif_error(not_loaded).
%% Frees a block twice: reported (see beam_alloc:take_reports/0), returns ok.
free_twice() -> erlang:nif_error(not_loaded).
