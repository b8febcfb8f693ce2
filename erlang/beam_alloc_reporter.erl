%% Where beam_alloc's diagnostics go in an Erlang node (the beam_alloc
%% application built by rebar3 starts it; a Mix build starts the Elixir
%% 'Elixir.BeamAlloc.Reporter' instead, and the C side sends to whichever
%% runs).
%%
%% Every NIF library built with beam_alloc sends each report line (a leak
%% found by leak_check, a double free, a write past the end of a block, ...)
%% to this process, which writes its code sites as source lines
%% (beam_alloc_symbolizer: function and file.c:line when the library has
%% debug information), logs it as a warning through logger, with the
%% metadata #{beam_alloc => Module}, and keeps the latest 100 for tests:
%% beam_alloc:take_reports/0 returns and forgets them. Of more than 100
%% (anyone's), the oldest are gone: beam_alloc_testing:without_reports/1
%% has the reporter keep the reports made while its fun runs apart (a
%% watch, below), and counts them all.
%%
%% A fault injection check (beam_alloc_testing) that turned some of them
%% into its result marks those consumed ({consume, ...} below):
%% beam_alloc_testing:without_reports/1 does not fail for them again. It
%% finds them by their numbers (mark): each report is numbered as it is
%% kept, as in the Elixir reporter.
%%
%% Without it (the application not started), reports go to standard error
%% with sites as lib.so+0x1c1b offsets.
-module(beam_alloc_reporter).
-behaviour(gen_server).

-export([start_link/0, take/0, recent/0]).
%% Internal: BeamAlloc.Reporter consumes, resolves the lines it answers
%% with, bounds its backlog and its watches, makes, owns, ends and drops a
%% watch (its owner gone), and reads whom a reporting process works for,
%% as this one does.
-export([consumes/5, resolved_list/4, drop_oldest/1, waiting/1, kept_in/2,
         consume_watched/3, consumed/4, unwatched/2, latest_resolved/2, callers/2,
         watch_added/6, owned/2, owner_down/2]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, handle_continue/2,
         terminate/2, code_change/3]).

-define(KEEP, 100).
%% A watch (beam_alloc_testing:without_reports/1) keeps up to OUT_KEPT of
%% its reports pushed out of its latest KEEP that no check consumed yet
%% (see kept_in/2).
-define(OUT_KEPT, 10000).
%% Lines are logged in slices of SLICE ms, the mailbox read between them;
%% a call logs for BUDGET ms at most before it answers (see log_until/2).
-define(SLICE, 20).
-define(BUDGET, 100).
%% A reporter stopped logs what it has not logged yet for STOP_BUDGET ms
%% at most (see terminate/2).
-define(STOP_BUDGET, 1000).
%% At most BACKLOG reports wait to be logged (as in BeamAlloc.Reporter,
%% which says why): past it the oldest waiting is dropped, and a line in
%% its place says how many were (drop_oldest/1). init([{backlog, N}]) is
%% the tests'.
-define(BACKLOG, 10000).
%% callers/2 remembers whom the latest REMEMBER reporting processes work
%% for, and follows PARENTS parents of one at most.
-define(REMEMBER, 64).
-define(PARENTS, 8).
%% Only reports of the shapes the C side sends (a module, a binary line):
%% anything else someone sends is dropped, not a crash that loses the
%% kept reports.
-define(IS_REPORT(M, L), is_atom(M), is_binary(L)).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% The reports kept (the latest 100 of the node, anyone's), oldest first,
%% as {Module, Line}, Module the module whose NIF library reported;
%% forgetting them.
-spec take() -> [{module(), binary()}].
take() ->
    gen_server:call(?MODULE, take).

%% The same, keeping them.
-spec recent() -> [{module(), binary()}].
recent() ->
    gen_server:call(?MODULE, recent).

%% State: #{kept := queue of reports, seq := reports kept so far,
%% watches := #{Ref => watch} (see watch_added/6),
%% unlogged := queue of {Seq, Module, Line as it came} kept and not yet
%% logged, resolved := #{Seq => Line} of those whose sites a call resolved
%% already, scheduled := whether a {?MODULE, log} message is on its way,
%% backlog := how many may wait in unlogged (BACKLOG), known := whom the
%% latest reporting processes work for (callers/2)}; unlogged's head may
%% be {dropped, Seq, N}: N lines up to Seq's not logged (drop_oldest/1);
%% a report is #{seq, module, line, pid, callers, consumed}, its line as it
%% came while it is not logged (see resolved/2), callers the processes its
%% maker works for (BeamAlloc.Reporter's report type).
init(Opts) ->
    %% Its NIF library makes the tokens that reports made off a call
    %% carry, by which each NIF library bounds how many of them wait here
    %% (src/nif/report_tokens.h): loaded whenever a reporter runs, not at
    %% the first report it resolves.
    _ = code:ensure_loaded(beam_alloc_symbolizer),
    {ok, current(#{kept => queue:new(), seq => 0,
                   backlog => proplists:get_value(backlog, Opts, ?BACKLOG)})}.

%% (A state of the version before, across a code reload, has no unlogged
%% lines.)
current(S) ->
    maps:merge(#{unlogged => queue:new(), resolved => #{}, scheduled => false,
                 backlog => ?BACKLOG, watches => #{}, known => #{}}, S).

%% A mark is answered at once: it needs no line. Other calls resolve the
%% sites of the reports they answer with (at most KEEP), and log what is
%% kept and not yet logged first, for BUDGET ms at most, the rest after: a
%% test capturing the log gets its lines, and under a flood of reports
%% with a slow log handler a call waited for all of them to be resolved
%% and logged (minutes; a fault injection check's marks and a take timed
%% out: never-hang recheck). What was read is kept (numbered) before any
%% call, all the same: reports sent before a call are in its answer.
handle_call(mark, _From, #{seq := Seq} = S) ->
    {reply, Seq, S};
%% A watch is answered at once too: what was kept before it is not its.
handle_call({watch, Ref, Pid, All}, _From, S0) when is_reference(Ref) ->
    #{seq := Seq} = S = current(S0),
    {reply, ok, watch_added(Ref, Pid, All, none, Seq, S)};
handle_call({watch, Ref, Pid, All, Owner}, _From, S0) when is_reference(Ref), is_pid(Owner) ->
    #{seq := Seq} = S = current(S0),
    {reply, ok, watch_added(Ref, Pid, All, Owner, Seq, S)};
handle_call(Request, _From, S) ->
    answer(Request, log_until(current(S), deadline(?BUDGET))).

answer(take, S0) ->
    #{kept := Kept} = S = resolved(fun(_) -> true end, S0),
    {reply, pairs(queue:to_list(Kept)), S#{kept := queue:new()}};
answer(take_unconsumed, S0) ->
    #{kept := Kept} = S = resolved(fun(_) -> true end, S0),
    {reply, pairs([R || #{consumed := false} = R <- queue:to_list(Kept)]),
     S#{kept := queue:new()}};
answer(recent, S0) ->
    #{kept := Kept} = S = resolved(fun(_) -> true end, S0),
    {reply, pairs(queue:to_list(Kept)), S};
%% (The lines of the reports it may consume resolved first: the check
%% lists them resolved.)
answer({consume, Pid, Modules, Windows}, S0) ->
    Candidate = fun(#{pid := P, module := M, seq := Seq}) ->
                        P =:= Pid andalso lists:member(M, Modules) andalso
                            lists:any(fun({From, To, _}) -> Seq > From andalso Seq =< To;
                                         (_) -> false
                                      end, Windows)
                end,
    #{kept := Kept} = S1 = resolved(Candidate, true, S0),
    Consume = fun(R) -> consume(R, Pid, Modules, Windows) end,
    S = S1#{kept := queue:from_list(lists:map(Consume, queue:to_list(Kept)))},
    {reply, ok, consume_watched(Candidate, Consume, S)};
%% The watch's reports no check consumed, the latest KEEP (their sites
%% resolved), and how many in all; the watch ends. (A watch it does not
%% know, as after a restart, saw nothing.)
answer({unwatch, Ref}, S0) ->
    {Reply, S} = unwatched(Ref, S0),
    {reply, Reply, S};
%% A call it does not know is answered, not a crash that loses the kept
%% reports.
answer(Other, S) ->
    {reply, {error, {unknown_call, Other}}, S}.

%% Marked consumed: a report Pid made in a call into one of Modules, kept
%% after From and up to To, and listed, for one of the windows {From, To,
%% Lines} (a run of a check, beam_alloc_testing, and the report lines of
%% the misuse, and the marks of the leak_check leaks, it turned into its
%% result).
consume(#{seq := Seq, module := M, pid := Pid, line := Line} = R, Pid, Modules, Windows) ->
    case consumes(Seq, M, Line, Modules, Windows) of
        true -> R#{consumed := true};
        false -> R
    end;
consume(R, _Pid, _Modules, _Windows) ->
    R.

%% Whether a report (its number, module and line) is one of those a check
%% turned into its result. Only the lines it listed: another report of
%% the same run (a leak of an instance the NIF deinitialised, a misuse of
%% another block) is no problem of the check's, and still counts.
%% A listed line was cut at 511 bytes before its sites were resolved: a
%% report then begins with it up to its last space (a site cut short).
consumes(Seq, Module, Line, Modules, Windows) when is_binary(Line) ->
    lists:member(Module, Modules) andalso
        lists:any(fun({From, To, Lines}) when Seq > From, Seq =< To ->
                          lists:any(fun(L) -> listed(Line, L) end, Lines);
                     (_) ->
                          false
                  end, Windows);
consumes(_Seq, _Module, _Line, _Modules, _Windows) ->
    false.

listed(Line, Line) ->
    true;
%% A leak_check call's report of its leaked blocks (beam_alloc_testing's
%% leak_reports/1): the line naming the function, each block's line by its
%% address (one of At's keys, the number the line gives before its first
%% comma),
%% and the line that ends a report of more blocks than it lists, by its
%% count.
listed(<<"beam_alloc: memory leak detected in function ", _/binary>>, leak_check_header) ->
    true;
listed(<<"beam_alloc: leak: ... and ", Rest/binary>>, {leak_more, N}) ->
    Rest =:= <<(integer_to_binary(N))/binary, " more live blocks">>;
listed(<<"beam_alloc: leak: ", Rest/binary>>, {leak_in, At}) ->
    case re:run(Rest, <<"^[^,]* at 0x([0-9a-fA-F]+),">>, [{capture, all_but_first, binary}]) of
        {match, [A]} -> is_map_key(binary_to_integer(A, 16), At);
        nomatch -> false
    end;
listed(Line, L) when is_binary(L) ->
    Cut = case binary:matches(L, <<" ">>) of
              [] -> L;
              Spaces -> binary:part(L, 0, element(1, lists:last(Spaces)))
          end,
    %% (Not a line's first words alone: they would name no block.)
    byte_size(Cut) >= 64 andalso
        binary:longest_common_prefix([Line, Cut]) =:= byte_size(Cut);
listed(_Line, _L) ->
    false.

pairs(Reports) ->
    [{M, L} || #{module := M, line := L} <- Reports].

handle_cast(_Msg, Kept) ->
    {noreply, Kept}.

%% Each report carries an acknowledgement the reporting NIF call waits on
%% (for a second at most: src/nif/report.c), released when this process
%% lets go of the message. So every report waiting is read first, keeping
%% only {Module, Line}; garbage is collected in handle_continue, once
%% gen_server itself no longer holds the message it handed to handle_info
%% (collected here, the first one's ack survived, and the call waited its
%% whole second); and only then are sites resolved (dirty NIF calls, slow),
%% as the lines are logged, a slice at a time (or as a call answers with
%% them).
handle_info({beam_alloc_report, M, L, _, _} = Msg, S0) when ?IS_REPORT(M, L) ->
    received(Msg, S0);
%% From library copies of earlier versions (a hot upgrade's old one): as
%% BeamAlloc.Reporter takes them. (They were dropped, unsaid.)
handle_info({beam_alloc_report, M, L, Pid}, S0) when ?IS_REPORT(M, L) ->
    received({beam_alloc_report, M, L, Pid, undefined}, S0);
handle_info({beam_alloc_report, M, L}, S0) when ?IS_REPORT(M, L) ->
    received({beam_alloc_report, M, L, undefined, undefined}, S0);
handle_info({'DOWN', Monitor, process, _, _}, S) ->
    {noreply, owner_down(Monitor, current(S))};
handle_info({?MODULE, log}, S) ->
    {noreply, log_until((current(S))#{scheduled := false}, deadline(?SLICE))};
handle_info(_Other, S) ->
    {noreply, S}.

received(Msg, S0) ->
    {Reports, S} = attributed(drain([Msg]), current(S0)),
    {noreply, S, {continue, {release, Reports}}}.

handle_continue({release, Reports}, S) ->
    erlang:garbage_collect(),
    Kept = lists:foldl(fun keep/2, current(S), Reports),
    {noreply, log_until(Kept, deadline(?SLICE))}.

deadline(Ms) ->
    erlang:monotonic_time(millisecond) + Ms.

%% The lines kept, their sites resolved (unless a call did), logged in
%% order until Deadline and written into the kept reports; the rest after
%% what waits in the mailbox now (calls, reports).
log_until(#{unlogged := Unlogged, resolved := Resolved} = S, Deadline) ->
    case queue:out(Unlogged) of
        {empty, _} ->
            S;
        {{value, {dropped, _, N}}, Rest} ->
            logger:warning("beam_alloc: ~b reports not logged: more than ~b were waiting to be "
                           "logged (a flood of reports); the latest are kept (recent/0)",
                           [N, maps:get(backlog, S)]),
            log_until(S#{unlogged := Rest}, Deadline);
        {{value, {Seq, Module, Raw}}, Rest} ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true ->
                    scheduled(S);
                false ->
                    {Line, Left} = case maps:take(Seq, Resolved) of
                                       error -> {resolve(Raw), Resolved};
                                       Taken -> Taken
                                   end,
                    logger:warning("~ts", [Line], #{beam_alloc => Module}),
                    S1 = S#{unlogged := Rest, resolved := Left},
                    log_until(with_line(Seq, Line, Raw, S1), Deadline)
            end
    end.

with_line(_Seq, Raw, Raw, S) ->
    S;
with_line(Seq, Line, _Raw, #{kept := Kept, watches := Watches} = S) ->
    Put = fun(#{seq := N} = R) when N =:= Seq -> R#{line := Line};
             (R) -> R
          end,
    PutQ = fun(Q) -> queue:from_list(lists:map(Put, queue:to_list(Q))) end,
    %% (And a watch's copies, those pushed out of its latest too: a check
    %% may consume one later, by its line.)
    W = maps:map(fun(_, #{kept := K, out := Out} = Watch) ->
                         Watch#{kept := PutQ(K),
                                out := case Out of
                                           #{Seq := R} -> Out#{Seq := R#{line := Line}};
                                           _ -> Out
                                       end}
                 end, Watches),
    S#{kept := PutQ(Kept), watches := W}.

%% The kept reports for which Wanted is true, their sites resolved (each
%% once: the line is remembered for its logging); the others as they are.
%% (Each line once a call: a flood repeats them.)
resolved(Wanted, S) ->
    resolved(Wanted, false, S).

%% With Dropped (a consume, an unwatch), also those dropped from the log
%% (drop_oldest/1), which stay as they came otherwise: a check lists its
%% misuse's line resolved, and a dropped report of it was not consumed
%% (without_reports/1 failed for it). (A line resolved already stays as it
%% is: no site left to resolve.)
resolved(Wanted, Dropped, #{kept := Kept} = S0) ->
    {Reports, S} = resolved_list(Wanted, Dropped, queue:to_list(Kept), S0),
    S#{kept := queue:from_list(Reports)}.

resolved_list(Wanted, Dropped, Reports0,
              #{unlogged := Unlogged, resolved := Resolved0} = S) ->
    First = case queue:peek(Unlogged) of
                {value, {dropped, Seq, _}} -> Seq + 1;
                {value, {Seq, _, _}} -> Seq;
                empty -> infinity
            end,
    {Reports, {Resolved, _Memo}} =
        lists:mapfoldl(
          fun(#{seq := Seq, line := Raw} = R, {Resolved1, Memo} = Acc) ->
                  Waiting = is_integer(First) andalso Seq >= First,
                  case (Waiting orelse Dropped) andalso Wanted(R) of
                      false ->
                          {R, Acc};
                      true ->
                          Line = case {Resolved1, Memo} of
                                     {#{Seq := L}, _} -> L;
                                     {_, #{Raw := L}} -> L;
                                     _ -> resolve(Raw)
                                 end,
                          %% (Remembered for its logging: none for one
                          %% logged or dropped.)
                          Resolved2 = case Waiting of
                                          true -> Resolved1#{Seq => Line};
                                          false -> Resolved1
                                      end,
                          {R#{line := Line}, {Resolved2, Memo#{Raw => Line}}}
                  end
          end, {Resolved0, #{}}, Reports0),
    {Reports, S#{resolved := Resolved}}.

%% S with a watch Ref of the reports kept after AfterSeq: those of Pid and
%% of the processes working for it, or every one (All). Owner (a pid, or
%% none) is the process whose end ends the watch (owner_down/2): a process
%% killed inside beam_alloc_testing:without_reports/1 (a Common Test
%% timetrap, an EUnit timeout) never unwatches, and its watch stayed for
%% good, every later report copied into it (up to KEEP + OUT_KEPT: an
%% audit). none for a watch read after its process ends (BeamAlloc.Case's,
%% read by its on_exit) and from callers of an earlier version.
%% (BeamAlloc.Reporter's watches too: its state has watches.)
watch_added(Ref, Pid, All, Owner, AfterSeq, #{watches := Watches} = S) ->
    Watch = #{pid => Pid, all => All =:= true, after_seq => AfterSeq, kept => queue:new(),
              out => #{}, lost => 0},
    S#{watches := Watches#{Ref => owned(Watch, Owner)}}.

%% Watch with its Owner, monitored (BeamAlloc.Reporter's watches too).
owned(Watch, none) ->
    Watch#{owner => none, monitor => none};
owned(Watch, Owner) ->
    Watch#{owner => Owner, monitor => erlang:monitor(process, Owner)}.

%% S without the watches whose owner's Monitor went down.
owner_down(Monitor, #{watches := Watches} = S) ->
    S#{watches := maps:filter(fun(_, W) -> maps:get(monitor, W, none) =/= Monitor end,
                              Watches)}.

%% {Reports, N}, the reply to an unwatch: the latest KEEP of the watch's
%% reports no check consumed (those pushed out of its latest first), and
%% how many in all; the watch gone from S. (A report of a version without
%% consumed is not consumed.)
unwatched(Ref, #{watches := Watches} = S0) ->
    case maps:take(Ref, Watches) of
        error ->
            {{[], 0}, S0};
        {#{kept := Kept, out := Out, lost := Lost} = Watch, Rest} ->
            _ = case maps:get(monitor, Watch, none) of
                    none -> true;
                    Monitor -> erlang:demonitor(Monitor, [flush])
                end,
            Unconsumed = [R || {_, R} <- lists:sort(maps:to_list(Out))] ++
                [R || R <- queue:to_list(Kept), not maps:get(consumed, R, false)],
            {Reports, S} = latest_resolved(Unconsumed, S0#{watches := Rest}),
            {{Reports, length(Unconsumed) + Lost}, S}
    end.

%% The latest KEEP of Reports (oldest first), their sites resolved: what a
%% call that counts them all shows of them.
latest_resolved(Reports, S) ->
    Shown = lists:nthtail(max(0, length(Reports) - ?KEEP), Reports),
    resolved_list(fun(_) -> true end, true, Shown, S).

%% A line the symbolizer chokes on is kept as it came: losing the reporter
%% (and what it kept) to one report would be worse.
resolve(Line) ->
    try beam_alloc_symbolizer:resolve_sites(Line)
    catch _:_ -> Line
    end.

scheduled(#{scheduled := true} = S) ->
    S;
scheduled(S) ->
    self() ! {?MODULE, log},
    S#{scheduled := true}.

%% (A pid of a process, or undefined from threads and destructors. The
%% shapes of earlier versions too, in their order: see handle_info/2.)
drain(Taken) ->
    receive
        {beam_alloc_report, M, L, _, _} = Msg when ?IS_REPORT(M, L) ->
            drain([Msg | Taken]);
        {beam_alloc_report, M, L, Pid} when ?IS_REPORT(M, L) ->
            drain([{beam_alloc_report, M, L, Pid, undefined} | Taken]);
        {beam_alloc_report, M, L} when ?IS_REPORT(M, L) ->
            drain([{beam_alloc_report, M, L, undefined, undefined} | Taken])
    after 0 ->
        [{Module, Line, Pid} || {beam_alloc_report, Module, Line, Pid, _} <- lists:reverse(Taken)]
    end.

%% Whom each reporting process works for, read before its call is
%% released (handle_continue/2): the process may exit right after it.
%% Only watches read it (watched/2): without one, not read (process_info
%% copies the maker's dictionary, a cost per report that grew with it: a
%% flood from processes holding 10,000 words each was kept 6-8 times
%% slower; review).
attributed(Reports, #{watches := Watches} = S) when map_size(Watches) =:= 0 ->
    {[{Module, Line, Pid, []} || {Module, Line, Pid} <- Reports], S};
attributed(Reports, #{known := Known0} = S) ->
    {Attributed, Known} =
        lists:mapfoldl(fun({Module, Line, Pid}, Known1) ->
                               {Callers, Known2} = callers(Pid, Known1),
                               {{Module, Line, Pid, Callers}, Known2}
                       end, Known0, Reports),
    {Attributed, S#{known := Known}}.

%% (Its sites resolved later: log_until/2, resolved/2. S is current/1's.)
keep({Module, Line, Pid, Callers}, #{kept := Kept, seq := Seq0, watches := Watches0,
                                     unlogged := Unlogged0, backlog := Backlog} = S) ->
    Seq = Seq0 + 1,
    Report = #{seq => Seq, module => Module, line => Line, pid => Pid, callers => Callers,
               consumed => false},
    Kept1 = queue:in(Report, Kept),
    Watches = maps:map(fun(_, W) -> watched(Report, W) end, Watches0),
    Unlogged = queue:in({Seq, Module, Line}, Unlogged0),
    S1 = S#{seq := Seq,
            watches := Watches,
            unlogged := Unlogged,
            kept := case queue:len(Kept1) > ?KEEP of
                        true -> queue:drop(Kept1);
                        false -> Kept1
                    end},
    case waiting(Unlogged) > Backlog of
        true -> drop_oldest(S1);
        false -> S1
    end.

%% The oldest line waiting is not logged: counted in the entry that takes
%% the head of the queue ({dropped, its last Seq, how many}), logged in its
%% place. Its kept copy stays as it came (no longer after First in
%% resolved/2). (BeamAlloc.Reporter's state is bounded by it too: it has
%% the same unlogged and resolved.)
drop_oldest(#{unlogged := Unlogged, resolved := Resolved} = S) ->
    {N, Rest} = case queue:out(Unlogged) of
                    {{value, {dropped, _, N0}}, Rest0} -> {N0, Rest0};
                    {{value, _}, _} -> {0, Unlogged}
                end,
    {{value, {Seq, _, _}}, Rest1} = queue:out(Rest),
    S#{unlogged := queue:in_r({dropped, Seq, N + 1}, Rest1),
       resolved := maps:remove(Seq, Resolved)}.

%% The reports waiting to be logged (the dropped ones not counted).
waiting(Unlogged) ->
    case queue:peek(Unlogged) of
        {value, {dropped, _, _}} -> queue:len(Unlogged) - 1;
        _ -> queue:len(Unlogged)
    end.

%% A watch keeps the reports of its process and of those working for it
%% (their callers), or every one (all): its latest KEEP reports, and those
%% pushed out of them that no check has consumed yet (out): a check consumes the reports of
%% its runs when it is over, and a report of its first runs may be pushed
%% out by then. Up to OUT_KEPT of them: more are counted (lost), and count
%% even if a check consumes them later (failing is the safe side; their
%% lines would take memory without bound). (It kept the latest KEEP alone:
%% a double free, then more than KEEP reports a check consumed, and
%% without_reports/1 passed: review.)
watched(#{seq := Seq, pid := Pid} = R, #{after_seq := After, pid := P, all := All} = W)
  when Seq > After ->
    case All orelse Pid =:= P orelse lists:member(P, maps:get(callers, R, [])) of
        true -> kept_in(R, W);
        false -> W
    end;
watched(_R, W) ->
    W.

%% Whom a reporting process works for: a Task's $callers lead back to the
%% test that started it, $ancestors to whoever started a proc_lib process
%% (a gen_server, a Task), and the chain of its parents (OTP 25 on) to
%% whoever spawned it (spawn/1 records neither). Read while the process
%% may still be alive, and remembered (Known, pid => callers, the latest
%% REMEMBER) for its next lines: a report of several lines comes from a
%% process that may be gone before the last one is read. None for a
%% report made off a process (undefined; nil from BeamAlloc.Reporter) or
%% on another node (no process info to read here).
callers(Pid, Known) when is_pid(Pid), node(Pid) =:= node() ->
    case erlang:process_info(Pid, dictionary) of
        {dictionary, Dict} ->
            Ancestors = [A || A <- wrap(proplists:get_value('$ancestors', Dict, [])), is_pid(A)],
            Callers = uniq(wrap(proplists:get_value('$callers', Dict, [])) ++ Ancestors ++
                               parents(Pid, ?PARENTS)),
            Known1 = case map_size(Known) >= ?REMEMBER of
                         true -> #{};
                         false -> Known
                     end,
            {Callers, Known1#{Pid => Callers}};
        undefined ->
            {maps:get(Pid, Known, []), Known}
    end;
callers(_Pid, Known) ->
    {[], Known}.

wrap(L) when is_list(L) -> L;
wrap(X) -> [X].

%% (lists:uniq/1 is OTP 25's.)
uniq([]) -> [];
uniq([X | Rest]) -> [X | uniq([Y || Y <- Rest, Y =/= X])].

%% The process that spawned Pid, and that one's parent, and so on up to
%% Depth, as far as a live process leads (a dead one's pid is the last).
%% (process_info/2 knows parent from OTP 25 on; before, none.)
parents(_Pid, 0) ->
    [];
parents(Pid, Depth) ->
    try erlang:process_info(Pid, parent) of
        {parent, Parent} when is_pid(Parent) -> [Parent | parents(Parent, Depth - 1)];
        _ -> []
    catch
        error:badarg -> []
    end.

kept_in(R, #{kept := Kept0} = W) ->
    Kept = queue:in(R, Kept0),
    case queue:len(Kept) > ?KEEP of
        false ->
            W#{kept := Kept};
        true ->
            {{value, Oldest}, Rest} = queue:out(Kept),
            pushed_out(Oldest, W#{kept := Rest})
    end.

pushed_out(#{consumed := true}, W) ->
    W;
pushed_out(#{seq := Seq} = R, #{out := Out} = W) when map_size(Out) < ?OUT_KEPT ->
    W#{out := Out#{Seq => R}};
pushed_out(_R, #{lost := Lost} = W) ->
    W#{lost := Lost + 1}.

%% A consume call marks the copies of the watches too: their kept ones,
%% and those pushed out of them (no longer counted once consumed).
consume_watched(Candidate, Consume, #{watches := Watches} = S0) ->
    maps:fold(
      fun(Ref, #{kept := K, out := Out} = W, S1) ->
              {Kept, S2} = resolved_list(Candidate, true, queue:to_list(K), S1),
              {Consumed, S3} = consumed(Candidate, Consume, maps:values(Out), S2),
              W1 = W#{kept := queue:from_list(lists:map(Consume, Kept)),
                      out := maps:without(Consumed, Out)},
              S3#{watches := (maps:get(watches, S3))#{Ref := W1}}
      end, S0, Watches).

%% The numbers of the reports of a store kept apart from the latest (a
%% watch's out; BeamAlloc.Reporter's ledger) that a consume call marks,
%% which leave the store: their candidates' lines resolved first (the
%% check lists them resolved).
consumed(Candidate, Consume, Reports, S0) ->
    {Candidates, S} = resolved_list(fun(_) -> true end, true,
                                    [R || R <- Reports, Candidate(R)], S0),
    {[N || #{seq := N} = R <- Candidates, maps:get(consumed, Consume(R))], S}.

%% Stopped (gen_server:stop/1, a crash): the reports waiting are kept, and
%% the lines not logged yet are logged now, for STOP_BUDGET ms at most, and
%% how many were left said. Logged a slice at a time, the rest waited
%% behind the stop and was never logged (a stop after 50 reports at 5 ms a
%% line logged 3; the version before logged them all first).
terminate(_Reason, S0) ->
    try
        Deadline = deadline(?STOP_BUDGET),
        {Reports, S1} = attributed(drain([]), current(S0)),
        S = log_until(lists:foldl(fun keep/2, S1, Reports), Deadline),
        case waiting(maps:get(unlogged, S)) of
            0 -> ok;
            Left -> logger:warning("beam_alloc: ~b more reports not logged: the reporter stopped",
                                   [Left])
        end
    catch
        %% (It stops all the same.)
        _:_ -> ok
    end.

code_change(_OldVsn, S, _Extra) when is_map(S) ->
    {ok, current(S)};
%% From a version that kept a queue of {Module, Line}. (Told by
%% queue:is_queue/1, not by a {_, _} pattern: the queue is opaque, and
%% dialyzer warned of that pattern.)
code_change(_OldVsn, Queue, _Extra) ->
    case queue:is_queue(Queue) of
        true ->
            Reports = [#{seq => 0, module => M, line => L, pid => undefined, callers => [],
                         consumed => false}
                       || {M, L} <- queue:to_list(Queue)],
            {ok, current(#{kept => queue:from_list(Reports), seq => 0})};
        false ->
            {ok, Queue}
    end.
