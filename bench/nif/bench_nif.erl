%% bench/nif/bench_nif.erl: drives bench_nif.c inside a running BEAM.
%%
%% Started by bench/run.sh as
%%   erl -noshell -pa DIR -run bench_nif main run OUT.csv SCALE REPS [ALLOC...]
%%   erl -noshell -pa DIR -run bench_nif main rss ALLOC OUT.csv SCALE
%% with BENCH_NIF_SO naming the NIF library (without .so). "run" measures
%% every workload for each allocator given (default: all), on a normal
%% scheduler, then on a dirty CPU scheduler; every repetition is its own NIF
%% call. run.sh starts one BEAM per allocator. Rows are appended to
%% OUT.csv in the format of bench/workloads.c.
-module(bench_nif).
-export([main/1]).
-export([allocators/0, workloads/0, peers/0, cell_begin/3, cell_rep/0,
         cell_end/0, cell_begin_dirty/3, cell_rep_dirty/0, cell_end_dirty/0,
         cell_row/2, rss_row/2, paired_groups/0, paired_begin/3,
         paired_rep/0, paired_end/1, paired_begin_dirty/3, paired_rep_dirty/0,
         paired_end_dirty/1]).
-on_load(init/0).

init() ->
    case os:getenv("BENCH_NIF_SO") of
        false -> {error, "BENCH_NIF_SO not set"};
        Path -> erlang:load_nif(Path, 0)
    end.

allocators() -> erlang:nif_error(not_loaded).
workloads() -> erlang:nif_error(not_loaded).
peers() -> erlang:nif_error(not_loaded).
cell_begin(_, _, _) -> erlang:nif_error(not_loaded).
cell_rep() -> erlang:nif_error(not_loaded).
cell_end() -> erlang:nif_error(not_loaded).
cell_begin_dirty(_, _, _) -> erlang:nif_error(not_loaded).
cell_rep_dirty() -> erlang:nif_error(not_loaded).
cell_end_dirty() -> erlang:nif_error(not_loaded).
cell_row(_, _) -> erlang:nif_error(not_loaded).
rss_row(_, _) -> erlang:nif_error(not_loaded).
paired_groups() -> erlang:nif_error(not_loaded).
paired_begin(_, _, _) -> erlang:nif_error(not_loaded).
paired_rep() -> erlang:nif_error(not_loaded).
paired_end(_) -> erlang:nif_error(not_loaded).
paired_begin_dirty(_, _, _) -> erlang:nif_error(not_loaded).
paired_rep_dirty() -> erlang:nif_error(not_loaded).
paired_end_dirty(_) -> erlang:nif_error(not_loaded).

main(Args) ->
    try run(Args) of
        ok -> erlang:halt(0)
    catch
        Class:Reason:Stack ->
            io:format(standard_error, "bench_nif: ~p:~p~n~p~n",
                      [Class, Reason, Stack]),
            erlang:halt(1)
    end.

run(["run", Out, ScaleS, RepsS | Only]) ->
    Scale = number(ScaleS),
    Reps = list_to_integer(RepsS),
    Allocs = case Only of
                 [] -> allocators();
                 _ -> [list_to_binary(A) || A <- Only]
             end,
    [io:format("  peer ~s: ~s~n", [N, case S of ok -> "loaded"; _ -> S end])
     || {N, S} <- peers(), Only =:= [] orelse lists:member(N, Allocs)],
    {ok, F} = file:open(Out, [append, binary]),
    [begin
         Row = cell(Sched, A, W, Scale, Reps),
         ok = file:write(F, Row),
         [_, _, _, _, Status | _] = binary:split(Row, <<",">>, [global]),
         io:format("  ~-6s ~-10s ~-18s ~s~n", [Sched, A, W, Status])
     end || A <- Allocs, Sched <- [normal, dirty], W <- workloads()],
    ok = file:close(F);
run(["paired", Out, ScaleS | Only]) ->
    %% The paired groups (bench/paired.c): members interleaved within each
    %% repetition, one NIF call per repetition, on a normal scheduler and
    %% then on a dirty CPU scheduler.
    Scale = number(ScaleS),
    Groups = case Only of
                 [] -> paired_groups();
                 _ -> [list_to_binary(G) || G <- Only]
             end,
    [paired(Sched, G, Scale, list_to_binary(Out))
     || G <- Groups, Sched <- [normal, dirty]],
    ok;
run(["rss", Alloc, Out, ScaleS]) ->
    Row = rss_row(list_to_binary(Alloc), number(ScaleS)),
    ok = file:write_file(Out, Row, [append]);
run(Other) ->
    error({bad_arguments, Other}).

paired(normal, G, Scale, Out) ->
    paired(G, Scale, Out, <<"beam normal">>, fun paired_begin/3,
           fun paired_rep/0, fun paired_end/1);
paired(dirty, G, Scale, Out) ->
    paired(G, Scale, Out, <<"beam dirty">>, fun paired_begin_dirty/3,
           fun paired_rep_dirty/0, fun paired_end_dirty/1).

paired(G, Scale, Out, Setting, Begin, Rep, End) ->
    io:format("  paired ~s [~s]~n", [G, Setting]),
    case Begin(G, Scale, Setting) of
        Reps when is_integer(Reps) ->
            [ok = Rep() || _ <- lists:seq(1, Reps)];
        error -> ok
    end,
    ok = End(Out).

cell(normal, A, W, Scale, Reps) ->
    cell(A, W, Scale, Reps, fun cell_begin/3, fun cell_rep/0, fun cell_end/0,
         <<"normal">>);
cell(dirty, A, W, Scale, Reps) ->
    cell(A, W, Scale, Reps, fun cell_begin_dirty/3, fun cell_rep_dirty/0,
         fun cell_end_dirty/0, <<"dirty">>).

cell(A, W, Scale, Reps, Begin, Rep, End, Sched) ->
    case Begin(A, W, Scale) of
        ok -> reps(Rep, Reps);
        _ -> ok
    end,
    End(),
    cell_row(<<"beam">>, Sched).

reps(_, 0) -> ok;
reps(Rep, N) ->
    case Rep() of
        error -> ok;
        _ -> reps(Rep, N - 1)
    end.

number(S) ->
    try list_to_float(S)
    catch error:badarg -> float(list_to_integer(S))
    end.
