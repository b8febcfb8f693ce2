%% beam_alloc from Erlang: the allocator counters of a NIF library.
%% (The C library is include/beam_alloc.h; fault injection is
%% beam_alloc_testing.) Pure Erlang: the Elixir function BeamAlloc.stats/1
%% is a front for this one.
-module(beam_alloc).

-export([stats/1, find_stats/1, collect/1, explain_load_error/1, take_reports/0]).
%% Internal, for beam_alloc_testing.
-export([driver/1, reporter/0, take_unconsumed_reports/0]).
%% Internal, for BeamAlloc.stats/1's message.
-export([answered/1]).
-export([format_error/2]).

%% badarg for a module name that is not an atom, raised in the function
%% called (so the stack's top frame is it, with its argument), with
%% error_info: the shell and erl_error say which argument and why
%% ("argument 1: not a module name (an atom)"), as they do for the BIFs; a
%% bare badarg said only "bad argument".
%% (erlang:error/3 is OTP 24's: before, the plain badarg.)
-if(?OTP_RELEASE >= 24).
-define(BADARG(Args), erlang:error(badarg, Args, [{error_info, #{module => ?MODULE}}])).
-else.
-define(BADARG(Args), erlang:error(badarg, Args)).
-endif.
-define(NOT_A_MODULE(Other), ?BADARG([Other])).

-type allocator_stats() :: #{live_bytes := non_neg_integer(),
                             live_blocks := non_neg_integer(),
                             peak_bytes := non_neg_integer(),
                             allocations := non_neg_integer(),
                             frees := non_neg_integer(),
                             failed := non_neg_integer()}.
%% A general purpose allocator's, with what it holds of its backing; a
%% named instance's (beam_stats_register) too, backing_bytes 0 when it is
%% no general purpose allocator.
-type gpa_stats() :: #{live_bytes := non_neg_integer(),
                       live_blocks := non_neg_integer(),
                       peak_bytes := non_neg_integer(),
                       allocations := non_neg_integer(),
                       frees := non_neg_integer(),
                       failed := non_neg_integer(),
                       backing_bytes := non_neg_integer()}.
%% Named instances under their names: the map is open to any atom key
%% (closed, Dialyzer said a match of #{sqlite := _} could never succeed).
-type stats() :: #{raw := allocator_stats(),
                   large := allocator_stats(),
                   general_purpose := gpa_stats(),
                   atom() => gpa_stats()}.
-export_type([allocator_stats/0, gpa_stats/0, stats/0]).

%% The counters of the NIF library loaded for Module (loading the module
%% first, which loads its library through its on_load, when it is not
%% loaded and its library never answered in this node: one deleted during
%% an upgrade, its new version not loaded yet, gets not_loaded, see
%% load_first/1):
%%   raw              calls through beam_raw_allocator (enif_alloc);
%%   large            calls through beam_large_allocator, including the
%%                    chunks the general purpose allocator takes from it;
%%   general_purpose  the process-wide general purpose allocator, with
%%                    backing_bytes, what it holds of the large allocator;
%%   Name             each instance the library registered with
%%                    beam_stats_register("name", a), as an atom, counted
%%                    as general_purpose is (#{sqlite := #{live_bytes := _}}).
%% Every NIF library built with beam_alloc has its own copy of the
%% allocators, so the numbers are that library's alone. After a code
%% upgrade to a new library file, while the old copy is still mapped (the
%% old version not purged, a resource of it alive, or, purged or not, the
%% copy kept for SQLite's, zlib's or zstd's hooks), each key sums that key
%% over every copy: SQLite started by the old copy goes on allocating from
%% the old copy's instance, which the new copy's connections use too, and
%% so does a stream in a resource the new copy took over. peak_bytes is
%% then the sum of each copy's peak (at least the peak of the sum). SQLite
%% is one per process: what it holds is counted by the library (any
%% module's) whose beam_sqlite3_use succeeded. Raises
%% erlang:error({not_loaded, Module}) when no library built with beam_alloc
%% is loaded for Module, badarg when Module is not an atom, and
%% erlang:error({driver, Reason}) when beam_alloc's own driver
%% (priv/beam_alloc_testing.so) cannot be loaded (see driver/1).
-spec stats(module()) -> stats().
stats(Module) when is_atom(Module) ->
    case find_stats(Module) of
        {ok, Stats} -> Stats;
        {error, not_loaded} -> erlang:error({not_loaded, Module})
    end;
stats(Other) ->
    ?NOT_A_MODULE(Other).

%% As stats/1, without raising when no library is loaded for Module:
%% {ok, Stats} or {error, not_loaded}. Raises badarg, as stats/1 does, when
%% Module is not an atom.
-spec find_stats(module()) -> {ok, stats()} | {error, not_loaded}.
find_stats(Module) when is_atom(Module) ->
    load_first(Module),
    case driver(fun() -> beam_alloc_testing_nif:stats(atom_to_binary(Module, utf8)) end) of
        {ok, Stats} -> seen(Module), {ok, Stats};
        {error, not_found} -> {error, not_loaded}
    end;
find_stats(Other) ->
    ?NOT_A_MODULE(Other).

%% Give back what the process-wide general purpose allocator of Module's NIF
%% library (of every copy of it loaded, an old one after an upgrade too)
%% holds and does not need: beam_gpa_collect from any process. It
%% takes the current slabs of schedulers that are idle (dirty ones too),
%% returns every slab without a live block, and every wholly free segment
%% to enif_alloc, so :erlang.memory(system) goes down; the library's
%% instances registered for named stats (beam_stats_register) too, those
%% of its live BEAM_RESOURCE_GPA resources (first), and every
%% copy of the library loaded for Module (an old and a new version's, during
%% an upgrade). Runs on a dirty scheduler. Raises erlang:error({not_loaded, Module}) like stats/1.
%% The application's beam_alloc_collector calls it by itself for a library
%% idle for a second that holds 4 MiB or more beyond what it keeps live,
%% and for a busy one that held that much at 30 ticks in a row.
-spec collect(module()) -> ok.
collect(Module) when is_atom(Module) ->
    load_first(Module),
    case driver(fun() -> beam_alloc_testing_nif:collect(atom_to_binary(Module, utf8)) end) of
        ok -> seen(Module), ok;
        {error, not_found} -> erlang:error({not_loaded, Module})
    end;
collect(Other) ->
    ?NOT_A_MODULE(Other).

%% Loads Module first (its on_load loads its library) when it is not
%% loaded and no library of it answered stats/1 or collect/1 in this node
%% yet: a module not called yet (interactive mode). One that answered and
%% is not loaded now is in an upgrade's gap (deleted and purged, its new
%% version not loaded yet): loading it here raced the upgrade's own load,
%% which OTP 25's code server then never answered (erlang/otp#7466; a
%% stats/1 loop hung a code:load_file/1), so the call says not_loaded.
%% (erlang:module_loaded/1 asks no server: ensure_loaded/1 did, each call.)
load_first(Module) ->
    case erlang:module_loaded(Module) orelse answered(Module) of
        true -> ok;
        false -> _ = code:ensure_loaded(Module), ok
    end.

%% Whether a library of Module answered stats/1 or collect/1 in this node
%% (for BeamAlloc.stats/1's message).
-spec answered(module()) -> boolean().
answered(Module) ->
    persistent_term:get({?MODULE, seen, Module}, false).

%% Module's library answered (a persistent term a module: written once).
seen(Module) ->
    Key = {?MODULE, seen, Module},
    case persistent_term:get(Key, false) of
        true -> ok;
        false -> persistent_term:put(Key, true)
    end.

%% The error_info callback (OTP 24 and later): the cause of a badarg of
%% stats/1, find_stats/1 or collect/1.
-spec format_error(term(), erlang:stacktrace()) -> #{pos_integer() => string()}.
format_error(badarg, [{?MODULE, F, [_], _} | _]) when
        F =:= stats; F =:= find_stats; F =:= collect ->
    #{1 => "not a module name (an atom)"};
format_error(badarg, [{?MODULE, explain_load_error, [_], _} | _]) ->
    #{1 => "not what erlang:load_nif/2 returns (ok or {error, Reason})"};
format_error(_, _) ->
    #{}.

%% F() (a call of beam_alloc_testing_nif), or erlang:error({driver,
%% Reason}) when that module's library did not load (beam_alloc's ebin on
%% the path without its application directory, or the driver not built
%% or left out of a release: its stubs raise), or the module is not there:
%% the call was a bare undef, with the reason only in a log line (found in
%% a bug hunt). Reason: {priv_dir, bad_name} (no beam_alloc application
%% found), {missing, Path} or {not_loadable, Path}.
-spec driver(fun(() -> T)) -> T.
driver(F) ->
    try F()
    catch
        error:{beam_alloc_driver, not_loaded} ->
            erlang:error({driver, driver_problem()});
        error:undef:Stack ->
            case Stack of
                [{beam_alloc_testing_nif, _, _, _} | _] ->
                    erlang:error({driver, driver_problem()});
                _ ->
                    erlang:raise(error, undef, Stack)
            end
    end.

driver_problem() ->
    case code:priv_dir(beam_alloc) of
        {error, Reason} ->
            {priv_dir, Reason};
        Priv ->
            Path = filename:join(Priv, "beam_alloc_testing.so"),
            case filelib:is_regular(Path) of
                true -> {not_loadable, Path};
                false -> {missing, Path}
            end
    end.

%% A reporter that died is restarted by the application's supervisor: while
%% the application runs, its absence is waited out (a second at most)
%% rather than taken for an application never started (a hunt's reporter,
%% killed during a test, made without_reports/1 say {not_started, ...}).
-define(REPORTER_TRIES, 20).

%% The reports (a leak, a double free, ...) the beam_alloc application's
%% reporter has kept since the last take, oldest first, as {Module, Line}:
%% Module the module whose NIF library reported, Line the report with its
%% code sites as source lines (my_nif:double_free/0's "called from
%% double_free (c_src/my_nif.c:42)"). An EUnit test can take what came
%% before it, run, and check what its code reported. Bounded: the
%% reporter keeps the latest 100 reports of the node, whoever made them
%% (consumed ones too: beam_alloc_testing); of more since the last take,
%% the oldest are gone, without a word. A test that must fail for every
%% report made while it ran uses beam_alloc_testing:without_reports/1,
%% which counts them all. Raises
%% erlang:error({not_started, beam_alloc}) when the application is not
%% running (a reporter its supervisor is restarting is waited for, a second
%% at most): start it first (application:ensure_all_started(beam_alloc));
%% until then reports go to standard error with sites as my_nif.so+0x1c1b.
-spec take_reports() -> [{module(), binary()}].
take_reports() ->
    take(take, ?REPORTER_TRIES).

%% As take_reports/0, without the reports a fault injection check turned
%% into its result (beam_alloc_testing marks them consumed): what
%% beam_alloc_testing:without_reports/1 fails with under a reporter that
%% keeps no watch (an older version), bounded as take_reports/0 is.
-spec take_unconsumed_reports() -> [{module(), binary()}].
take_unconsumed_reports() ->
    take(take_unconsumed, ?REPORTER_TRIES).

%% The reporter the C side sends to: the Elixir one first (a Mix build),
%% else the Erlang one (rebar3); undefined when neither runs.
-spec reporter() -> pid() | undefined.
reporter() ->
    case {whereis('Elixir.BeamAlloc.Reporter'), whereis(beam_alloc_reporter)} of
        {Pid, _} when is_pid(Pid) -> Pid;
        {_, Pid} -> Pid
    end.

take(Request, Tries) ->
    Reporter = reporter(),
    %% (Gone between the lookup and the call: not there either.)
    try is_pid(Reporter) andalso gen_server:call(Reporter, Request) of
        false -> reporter_absent(Request, Tries);
        Reports -> Reports
    catch
        exit:{noproc, _} -> reporter_absent(Request, Tries)
    end.

reporter_absent(Request, Tries) ->
    case Tries > 0 andalso lists:keymember(beam_alloc, 1, application:which_applications()) of
        true ->
            timer:sleep(50),
            take(Request, Tries - 1);
        false ->
            erlang:error({not_started, beam_alloc})
    end.

%% A readable reason for what erlang:load_nif/2 returned when BEAM_NIF_INIT
%% refused the load_info, or the library's own load or upgrade callback let
%% a C++ exception out (the VM can only show a number), at a load or an
%% upgrade: wrap the result of your on_load's load_nif with it. Other
%% errors pass through unchanged; a term that is neither ok nor
%% {error, _} raises badarg (with error_info).
%%   {error, {load, "Library load-call unsuccessful (2980)."}} becomes
%%   {error, {load, <<"beam_alloc: load_info names an unknown option ...">>}}
%% The full report (which key, which value) goes to the logger.
%% A library that fails to load with an undefined symbol gets a hint
%% appended to its {error, {load_failed, Text}}: which link step to mend.
-spec explain_load_error(ok | {error, term()}) -> ok | {error, term()}.
explain_load_error({error, {Kind, Text}} = Error) when Kind =:= load; Kind =:= upgrade ->
    %% (upgrade: the library loaded again for a new version of a module
    %% whose old one still has it, a recompile or a hot upgrade.)
    case load_reason(load_code(Text)) of
        undefined -> Error;
        Why -> {error, {Kind, <<"beam_alloc: ", Why/binary,
                               " (the details went to the logger, or to standard "
                               "error where the beam_alloc application is not "
                               "started)">>}}
    end;
explain_load_error({error, {load_failed, Text}} = Error) when is_list(Text) ->
    case undefined_symbol(Text) of
        undefined -> Error;
        {Symbol, Versioned} ->
            Hint = undefined_symbol_hint(Symbol, Versioned),
            %% (Explained once: a second call keeps the text as it is.)
            case lists:suffix(Hint, Text) of
                true -> Error;
                false -> {error, {load_failed, Text ++ Hint}}
            end
    end;
explain_load_error(ok) ->
    ok;
explain_load_error({error, _} = Other) ->
    Other;
%% (Anything else is no load_nif result: it came back unchanged, so a
%% wrapped call of the wrong function went unnoticed.)
explain_load_error(Other) ->
    ?BADARG([Other]).

%% dlopen's "undefined symbol: deflate": most often a C library the sources
%% call and the link did not name (the link of a shared object accepts
%% undefined symbols: the VM's own enif_ functions are some). {Symbol,
%% Versioned}: ", version V" follows it (a library older than the one
%% built against).
undefined_symbol(Text) ->
    try re:run(Text, "undefined symbol: ([^ ,'\"]+)(, version )?",
               [{capture, all_but_first, list}]) of
        {match, [Symbol]} -> {Symbol, false};
        {match, [Symbol, _]} -> {Symbol, true};
        nomatch -> undefined
    catch
        error:badarg -> undefined
    end.

undefined_symbol_hint("enif_" ++ _ = Symbol, _) ->
    " (beam_alloc: this VM has no " ++ Symbol ++ ": the NIF library was built"
        " against the erl_nif.h of a newer Erlang/OTP; build it for this one)";
undefined_symbol_hint(Symbol, true) ->
    " (beam_alloc: the library that defines " ++ Symbol ++ " here is older than"
        " the one the NIF library was built against; build it on this machine)";
undefined_symbol_hint(Symbol, false) ->
    case sanitizer_symbol(Symbol) of
        true -> sanitizer_hint(Symbol);
        false -> library_hint(Symbol)
    end.

%% A sanitizer runtime's: objects built with CFLAGS=-fsanitize=... call
%% it, and a link without the flag (no LDFLAGS) named no library that
%% defines it. Naming a library to link was no help.
sanitizer_symbol(Symbol) ->
    lists:any(fun(Prefix) -> lists:prefix(Prefix, Symbol) end,
              ["__asan_", "__ubsan_", "__tsan_", "__msan_", "__lsan_",
               "__sanitizer_"]).

sanitizer_hint(Symbol) ->
    " (beam_alloc: " ++ Symbol ++ " is a sanitizer's: the NIF library was"
        " compiled with -fsanitize=... but not linked with it; give the link"
        " the same flag (LDFLAGS, or ldflags: in the Mix options) and preload"
        " the sanitizer's runtime into the VM: README, \"Under"
        " AddressSanitizer or valgrind\")".

library_hint(Symbol) ->
    " (beam_alloc: nothing the NIF library was linked with defines " ++ Symbol ++
        ": link the C library that does, libs: [\"name\"] in the Mix options"
        " (beam_alloc: [nifs: ...]) or LDLIBS += -lname in a Makefile that includes"
        " beam_alloc.mk; or a source that defines it is missing from the build)".

%% The code at the end of the VM's "Library load-call unsuccessful (N)."
%% text, or undefined: anything else, text or not, is not ours to explain.
load_code(Text) when is_list(Text); is_binary(Text) ->
    try re:run(Text, "\\(([0-9]+)\\)\\.$", [{capture, all_but_first, list}]) of
        {match, [Code]} -> list_to_integer(Code);
        nomatch -> undefined
    catch
        error:badarg -> undefined
    end;
load_code(_) ->
    undefined.

%% The codes of src/nif/load_options.c and src/nif/nif_internal.h.
load_reason(16#ba1) -> <<"a load_info key is neither a function name nor {Name, Arity}">>;
load_reason(16#ba2) -> <<"a load_info key names no function of the NIF table">>;
load_reason(16#ba3) ->
    <<"a load_info value is neither a map nor a property list (under beam_alloc: not a map)">>;
load_reason(16#ba4) -> <<"load_info names an unknown option">>;
load_reason(16#ba5) -> <<"a load_info option has a value it cannot take">>;
load_reason(16#ba6) -> <<"out of memory while reading load_info">>;
load_reason(16#ba7) ->
    <<"load_info gives two names of one C function options a call cannot keep apart">>;
load_reason(16#ba8) ->
    <<"the library's load or upgrade callback let a C++ exception out">>;
load_reason(16#ba9) ->
    <<"the new version of the module shares the library file of the old one, whose "
      "load callback it cannot run again, and BEAM_NIF_INIT has no upgrade callback "
      "(give one; cover tools load such a version: mix test --cover when it compiled "
      "the module (MIX_ENV=test mix compile first avoids it) and rebar3 do eunit "
      "--cover, ct --cover)">>;
load_reason(16#baa) ->
    <<"a load_info key names only plain functions of the NIF table (not BEAM_NIF), "
      "which options do not reach">>;
load_reason(16#bab) -> <<"a load_info property list gives an option twice">>;
load_reason(16#bac) ->
    <<"the new version of the module loads its NIF library from the file of the old "
      "one, rebuilt since: the VM would keep running the old copy (purge, delete "
      "and purge the module, then load it again; or restart the node)">>;
load_reason(_) -> undefined.
