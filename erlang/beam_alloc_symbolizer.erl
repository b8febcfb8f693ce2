%% Source lines for the code sites in beam_alloc's reports (Erlang and
%% Elixir: 'Elixir.BeamAlloc.Symbolizer' is a front for this module).
%%
%% The C side names a site the way it can cheaply on any thread: the NIF
%% library and the offset of the call in it, my_nif.so+0x1c1b (what
%% addr2line -e my_nif.so 0x1c1b takes). resolve_sites/1 writes each site
%% of a text as its function and source line, from the library's debug
%% information (DWARF, through elfutils' libdw, in the NIF
%% priv/beam_alloc_symbolize.so, on a dirty IO scheduler):
%%
%%     my_nif.so+0x1c1b  ->  parse (c_src/my_nif.c:42)
%%
%% Functions inlined at the call come first, " <- " between frames. A
%% library built without -g still gets its function names (from its symbol
%% table); a site that cannot be resolved stays as it was, and so does
%% every site when the NIF is not there (built without libdw, or not
%% loadable). A text none of whose sites got a line, because a library
%% has no debug information, is stripped, is a C library the stack kept
%% ended inside (libsqlite3.so.0), or its file changed on disk since it
%% was loaded, says so at its end (once per library, however many times
%% the text is resolved).
-module(beam_alloc_symbolizer).

-export([resolve_sites/1, site/2, with_libdw/0]).
%% Internal, for the tests (test/misuse_test.exs): it takes what resolve/2
%% gives, and checks none of it (a bad argument: a function_clause).
-export([frames_text/3]).
%% Internal, for beam_alloc_testing: a fault-injection request's site;
%% for the tests (test/cxx_test.exs): which of its frames are the author's.
-export([resolve_request_site/1, authors_frame/1]).

-on_load(load/0).

load() ->
    case code:priv_dir(beam_alloc) of
        {error, _} ->
            ok;
        Priv ->
            %% Without the library sites stay as they are: never a reason
            %% to keep this module (and the reporter) from loading; but
            %% said, since no report then names a source line.
            case erlang:load_nif(filename:join(Priv, "beam_alloc_symbolize"), 0) of
                ok ->
                    ok;
                {error, Reason} ->
                    logger:warning("beam_alloc: reports will not name source lines: "
                                   "the symbolizer's library did not load: ~0tp",
                                   [Reason]),
                    ok
            end
    end.

%% The NIF: {ok, [{Function | nil, File | nil, Line}]} | error, innermost
%% (inlined) function first.
resolve(_Object, _Offset) -> erlang:nif_error(not_loaded).

%% Whether the NIF is loaded and was built with libdw: without it no site
%% gets a source line (the build says so, and make test stops on it).
-spec with_libdw() -> boolean().
with_libdw() -> false.

%% A site: an optional exported name the C side found ("fun ("), the
%% object's base name and the call's offset in it.
-define(SITE, "(?:([A-Za-z_$][\\w$.]*) \\()?([^\\s()<>;,]+)\\+0x([0-9a-f]+)(\\))?").

%% The largest offset a site has (the C side's uint64).
-define(OFFSET_MAX, 16#FFFFFFFFFFFFFFFF).

%% Text with every site (lib.so+0x1c1b, or fun (lib.so+0x1c1b)) written as
%% function (file.c:line) where the library's debug information says, as
%% function (lib.so+0x1c1b) where only its symbols do. A site whose object
%% is a base name that several loaded objects carry stays as it is.
-spec resolve_sites(binary()) -> binary().
resolve_sites(Text) when is_binary(Text) ->
    case re:run(Text, ?SITE, [global, {capture, all, index}]) of
        nomatch -> Text;
        {match, Matches} -> splice(Text, drop_cut(Text, Matches), 0, [], [])
    end;
resolve_sites(Other) ->
    erlang:error({badarg, iolist_to_binary(
                            io_lib:format("resolve_sites/1 takes a binary (a report's text), got ~0tp",
                                          [Other]))},
                 [Other]).

%% A fault-injection request's site (beam_alloc_testing.c keeps a few
%% frames of one made in a NIF library, innermost first, " <- " between
%% them), resolved and shortened to the frames its author needs: up to the
%% first frame that holds the author's code (see authors/2). A C request's
%% first frame is the author's line, and the site is that frame alone, as
%% it always was; a request inside the standard library's code
%% instantiated in a C++ NIF (std::vector's _M_realloc_insert, its own
%% function) names its frames, then the author's line that led there. A
%% site none of whose frames is the author's keeps them all.
-spec resolve_request_site(binary()) -> binary().
resolve_request_site(Site) when is_binary(Site) ->
    Frames = binary:split(Site, <<" <- ">>, [global]),
    resolve_sites(iolist_to_binary(lists:join(<<" <- ">>, up_to_authors(Frames, [])))).

up_to_authors([], Kept) ->
    lists:reverse(Kept);
up_to_authors([Frame | Rest], Kept) ->
    case authors(Frame) of
        true -> lists:reverse([Frame | Kept]);
        false -> up_to_authors(Rest, [Frame | Kept])
    end.

%% Does the call at Frame (a site of the C side's, lib.so+0x1c1b) hold
%% the author's code: a function of a NIF library (not a C library's, as
%% libz.so.1) whose source is not a header of the compiler's or the
%% system's (a C++ standard header: <vector>, bits/vector.tcc), nor
%% beam_alloc's own, at any of its inlined levels. Without debug
%% information, a function not in namespace std (the symbol table's
%% name).
authors(Frame) ->
    case re:run(Frame, "^" ?SITE "$", [{capture, [2, 3], binary}]) of
        {match, [Object, Offset]} ->
            not c_library(Object) andalso
                case safe_resolve(Object, binary_to_integer(Offset, 16)) of
                    {ok, Frames} -> lists:any(fun authors_frame/1, Frames);
                    _ -> false
                end;
        nomatch ->
            false
    end.

authors_frame({_Fun, File, Line}) when is_binary(File), Line > 0 ->
    not library_header(File);
authors_frame({Fun, _, _}) when is_binary(Fun) ->
    re:run(Fun, "^(std|__gnu_cxx|__cxxabiv1)::", [{capture, none}]) =:= nomatch;
authors_frame(_) ->
    false.

%% A header the author did not write: the C++ standard library's (in an
%% include/c++ folder: /usr/include/c++/12, libc++'s .../include/c++/v1;
%% its headers with no extension, <vector>, and its .tcc files among
%% them), the system's, the compiler's (/usr/lib/gcc/..., /usr/lib/llvm-14/
%% ...), or beam_alloc's own. By those folders, not a path's parts alone:
%% the project itself may be under /usr/lib (built where a release is
%% installed), in a folder named c++, or hold a file with no extension.
library_header(File) ->
    Base = filename:basename(File),
    lists:any(fun(Prefix) -> string:prefix(File, Prefix) =/= nomatch end,
              ["/usr/include/", "/usr/local/include/"]) orelse
        re:run(File, "^/usr/lib(64)?/(gcc|clang|llvm[^/]*)/", [{capture, none}]) =:= match orelse
        string:find(File, "/include/c++/") =/= nomatch orelse
        re:run(Base, "^beam_alloc(_nif)?\\.h(pp)?$", [{capture, none}]) =:= match orelse
        string:find(File, "include/beam_alloc/") =/= nomatch.

%% The C side writes a report into 1024 bytes: a line of 1023 was maybe cut
%% short, and a site at its very end may have lost digits of its offset
%% (which would name another line). Such a site stays as it is.
-define(REPORT_MAX, 1023).

drop_cut(Text, Matches) when byte_size(Text) =:= ?REPORT_MAX ->
    [M || [{Start, Len} | _] = M <- Matches, Start + Len < ?REPORT_MAX];
drop_cut(_Text, Matches) ->
    Matches.

splice(Text, [], At, Acc, Notes) ->
    iolist_to_binary(lists:reverse([binary:part(Text, At, byte_size(Text) - At) | Acc],
                                   hints(Notes, Text)));
splice(Text, [[{Start, Len} | Groups] | Rest], At, Acc, Notes) ->
    Whole = binary:part(Text, Start, Len),
    [Exported, Object, Offset, Close] = [part(Text, G) || G <- pad(Groups)],
    Described =
        case {Exported, Close} of
            %% "fun (" without its ")" is not a site of ours: leave it whole.
            {<<_, _/binary>>, <<>>} ->
                {Whole, none};
            %% A bare site: a ")" after it closes the text around it, as in
            %% "(length 8; called from lib.so+0x1c1b)", and stays.
            {<<>>, _} ->
                resolved(Object, Offset, Whole, Close);
            _ ->
                resolved(Object, Offset, Whole, <<>>)
        end,
    {Out, Note} = written_before(Text, Start + Len, Whole, Described),
    splice(Text, Rest, Start + Len,
           [Out, binary:part(Text, At, Start - At) | Acc], [Note | Notes]).

%% A site the text already names as its resolution D (a pass before this
%% one's wrote it, ending at End: the site's ")" with it) stays: a C++
%% name from a symbol table, "std::pmr::monotonic_buffer_resource::
%% _M_new_buffer (libstdc++.so.6+0x..)", is more than ?SITE's name takes,
%% and the second pass wrote it again after its own first part (or, after
%% a template's ">", the whole site inside its own parentheses).
written_before(Text, End, Whole, {[D, _After], Note} = Described) ->
    Size = iolist_size(D),
    case End >= Size andalso binary:part(Text, End - Size, Size) =:= iolist_to_binary(D) of
        true -> {Whole, Note};
        false -> Described
    end;
written_before(_Text, _End, _Whole, Described) ->
    Described.

%% {Text, Note}: Note says why a site got no line (see hints/2).
%% (An offset of more than 64 bits is no site: site/2 refuses it.)
resolved(Object, Offset, Whole, After) ->
    case binary_to_integer(Offset, 16) of
        N when N =< ?OFFSET_MAX ->
            case site_lines(Object, N) of
                {ok, D, true} -> {[D, After], lines};
                {ok, D, false} -> {[D, After], {no_debug_info, Object}};
                {error, changed} -> {Whole, {changed, Object}};
                {error, no_symbols} -> {Whole, {stripped, Object}};
                error -> {Whole, none}
            end;
        _ ->
            {Whole, none}
    end.

%% Why the text names no source line, when none of its sites got one: a
%% library built without -g (its sites then have only function names, and
%% nothing else says why), or one whose file was rebuilt since the VM
%% loaded it (its sites stay lib.so+0x..: the new file's lines would be
%% wrong). A site in a C library without debug information (libz.so.1),
%% next to the NIF's own lines, needs no word; nor next to a line the text
%% names already (a report resolved before, whose NIF sites are lines and
%% whose libz.so.1+0x.. sites are left: the reporter resolves again what a
%% watch shows, and each line then ended "no source lines").
hints(Notes, Text) ->
    case lists:member(lines, Notes) orelse names_line(Text) orelse has_hint(Text) of
        true -> [];
        false -> [hint(N, Text) || N <- one_note_each(Notes)]
    end.

%% One note a library: a NIF library's sites with names from its dynamic
%% symbols (nif_init) and without any read as "no debug information" and
%% "stripped", and it is stripped. A C library's unnamed sites (its static
%% functions: shipped without a symbol table) add nothing to its note.
one_note_each(Notes) ->
    Known = lists:usort([normal(N) || N <- Notes, N =/= none]),
    [N || N <- Known,
          not (element(1, N) =:= no_debug_info andalso
               lists:member({stripped, element(2, N)}, Known))].

normal({stripped, Object} = Note) ->
    case c_library(Object) of
        true -> {no_debug_info, Object};
        false -> Note
    end;
normal(Note) ->
    Note.

%% A text resolved before carries its note already, and its sites without
%% a line are left to find again (BeamAlloc.Case's failure said "... build
%% it with -g)" twice).
has_hint(Text) ->
    binary:match(Text, <<" (no source lines: ">>) =/= nomatch.

%% A C library the NIF links, by its versioned name (libz.so.1,
%% libsqlite3.so.0): the system's, not built by the user, so "build it with
%% -g" is no advice. Its sites alone in a report mean no NIF frame was
%% reached: the walk goes on past the frames kept to the NIF's first one,
%% so the allocation ran on the library's own thread, or over 64 frames
%% inside it (a larger .frames would not help). A NIF
%% library (my_nif.so, as the Mix compiler and beam_alloc.mk name it) has
%% no version.
c_library(Object) ->
    re:run(filename:basename(Object), "\\.so\\.[0-9]", [{capture, none}]) =:= match.

%% A resolved site's "(file.c:42)" (no spaces: "(length 8, alignment 8)"
%% is none).
names_line(Text) ->
    re:run(Text, "\\([^()\\s]+:[0-9]+\\)", [{capture, none}]) =:= match.

hint({no_debug_info, Object}, Text) ->
    case {c_library(Object), caller_alone(Text, Object)} of
        {true, true} ->
            [<<" (no source lines: the caller is in ">>, Object,
             <<", which has none: a misuse report names its caller alone)">>];
        {true, false} ->
            [<<" (no source lines: the frames kept are all in ">>, Object,
             <<", which has none: an allocation on a thread of its own, or over 64 frames inside it)">>];
        {false, _} ->
            [<<" (no source lines: ">>, Object,
             <<" has no debug information for them: build it with -g and keep its debug information)">>]
    end;
hint(Note, _Text) ->
    hint(Note).

%% A misuse report names the one frame that called ("called from
%% xmlFreeNodeList (libxml2.so.2+0x..)": a C library's free through the
%% NIF's hooks): "a thread of its own, or over 64 frames" is a walked
%% chain's reason, and no chain was walked. Object's site must be that
%% caller, with no " <- " after it: in "called from leak (my_nif.so+0x..);
%% the block was allocated from xmlStrdup (libxml2.so.2+0x..)" the caller
%% is the NIF's, and the note called libxml2.so.2's allocation site the
%% caller. (Atomic: backtracking off the site's ")" or an offset digit
%% found no " <- " after a chain's first site.)
caller_alone(Text, Object) ->
    case re:run(Text, "called from (?>" ?SITE ")(?! <- )", [global, {capture, [2], binary}]) of
        {match, Callers} -> lists:member([Object], Callers);
        nomatch -> false
    end.

hint({stripped, Object}) ->
    [<<" (no source lines: ">>, Object,
     <<" is stripped: build it with -g and keep its symbols)">>];
hint({changed, Object}) ->
    [<<" (no source lines: ">>, Object,
     <<" changed on disk since it was loaded)">>].

%% Unmatched trailing groups are left out of re's result.
pad(Groups) -> Groups ++ lists:duplicate(4 - length(Groups), {-1, 0}).

part(_Text, {-1, _}) -> <<>>;
part(Text, {Start, Len}) -> binary:part(Text, Start, Len).

%% The function and source line of the call at Offset in the loaded object
%% Object (a base name, <<"my_nif.so">>, or a path, as reports name an
%% object whose base name another loaded object shares):
%% {ok, <<"parse (c_src/my_nif.c:42)">>}, or error when nothing is known
%% about it, or when several loaded objects have that base name. An
%% Offset beyond 64 bits is no offset in an object: badarg, as for a
%% negative one (it answered error, "nothing known").
-spec site(binary(), non_neg_integer()) -> {ok, binary()} | error.
site(Object, Offset) when not is_binary(Object);
                          not is_integer(Offset); Offset < 0; Offset > ?OFFSET_MAX ->
    erlang:error({badarg, iolist_to_binary(
                            io_lib:format("site/2 takes an object's name (a binary) and "
                                          "an offset (an integer from 0 to 2^64-1), got ~0tp "
                                          "and ~0tp", [Object, Offset]))},
                 [Object, Offset]);
site(Object, Offset) ->
    case site_lines(Object, Offset) of
        {ok, Text, _} -> {ok, Text};
        _ -> error
    end.

%% {ok, Text, whether a frame has a source line} | {error, changed} |
%% {error, no_symbols} (stripped of its symbol table too) | error.
site_lines(Object, Offset) ->
    case safe_resolve(Object, Offset) of
        {ok, [_ | _] = Frames} ->
            case lists:any(fun({F, File, _}) -> F =/= nil orelse File =/= nil end, Frames) of
                true ->
                    {ok, frames_text(Frames, Object, Offset),
                     lists:any(fun({_, File, Line}) -> is_binary(File) andalso Line > 0 end,
                               Frames)};
                false ->
                    {error, no_symbols}
            end;
        {error, changed} ->
            {error, changed};
        _ ->
            error
    end.

%% The text of a site's frames (as resolve/2 gives them, innermost first)
%% in Object at Offset; exported for the tests alone. A frame whose function is
%% the one of the frame inside it, in the same file and at an earlier line,
%% goes: GCC may leave a function's code as an inlined copy of itself in
%% its own out-of-line body (partial inlining), and that outer frame would
%% only add the function's first line, the BEAM_NIF line for a NIF body
%% (`parse (c.c:42) <- parse (c.c:30)`). (Not any two of one name: C++
%% frames have short names, and two functions may share one.)
-spec frames_text([{binary() | nil, binary() | nil, non_neg_integer()}],
                  binary(), non_neg_integer()) -> binary().
frames_text(Frames, Object, Offset) ->
    iolist_to_binary(
      lists:join(<<" <- ">>, [frame(Fr, Object, Offset) || Fr <- collapse(Frames)])).

collapse([{F, File, Line} = Inner, {G, File, Outer} | Rest] = Frames)
  when F =/= nil, G =/= nil, File =/= nil, Outer < Line ->
    %% (By the names reports give: in C++, BEAM_NIF's guard calls the body,
    %% beam_nif_guard_X and beam_nif_body_X both X.)
    case function(F) =:= function(G) of
        true -> collapse([Inner | Rest]);
        false -> [Inner | collapse(tl(Frames))]
    end;
collapse([Frame | Rest]) ->
    [Frame | collapse(Rest)];
collapse([]) ->
    [].

safe_resolve(Object, Offset) ->
    try
        resolve(Object, Offset)
    catch
        error:_ -> error
    end.

frame({Fun, File, Line}, _Object, _Offset) when is_binary(File), Line > 0 ->
    [function(Fun), <<" (">>, relative(File), <<":">>, integer_to_binary(Line), <<")">>];
frame({Fun, _, _}, Object, Offset) ->
    [function(Fun), <<" (">>, Object, <<"+0x">>,
     string:lowercase(integer_to_binary(Offset, 16)), <<")">>].

%% BEAM_NIF(name) puts the body in beam_nif_body_name (and, in C++, calls
%% it from beam_nif_guard_name): the NIF's name is what its author wrote.
function(nil) -> <<"?">>;
function(<<"beam_nif_body_", Name/binary>>) -> Name;
function(<<"beam_nif_guard_", Name/binary>>) -> Name;
function(Name) -> Name.

relative(File) ->
    case file:get_cwd() of
        {ok, Cwd} ->
            Prefix = unicode:characters_to_binary([Cwd, "/"]),
            case string:prefix(File, Prefix) of
                nomatch -> File;
                Rest -> Rest
            end;
        _ ->
            File
    end.
