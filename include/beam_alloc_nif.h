/*
 * beam_alloc_nif.h: the NIF glue of beam_alloc. A NIF includes this one
 * header; it brings <erl_nif.h> and <beam_alloc.h> (the allocators).
 *
 *   BEAM_NIF, BEAM_NIF_INIT   NIFs that set beam_allocator on entry, with
 *                             per-NIF options (leak_check, scratch, ...)
 *   term helpers              beam_make_error, beam_raise, ...
 *   resource-scoped memory    allocators owned by an Erlang resource term
 *
 * Link the NIF against libbeam_alloc.a (the enif_alloc-backed build).
 */
#ifndef BEAM_ALLOC_NIF_H
#define BEAM_ALLOC_NIF_H

#include <erl_nif.h>

/* beam_alloc.h, included first or not, declares stand-ins for the glue's
 * names that fail with a message; the real ones follow. */
#undef BEAM_NIF
#undef BEAM_NIF_INIT
#include "beam_alloc.h"
#undef BEAM_INTERNAL_NEEDS_NIF_H
#undef beam_make_uint_list
#undef beam_make_error
#undef beam_raise
#undef beam_nif_function_name
#undef beam_nif_module_name
#undef beam_resource_init
#undef beam_resource_new
#undef beam_resource_term
#undef beam_resource_get
#undef beam_resource_keep
#undef beam_resource_drop
#undef beam_resource_allocator
#undef beam_resource_user_data
#undef beam_resource_user_size
#undef beam_resource_pin
#undef beam_resource_unpin
#undef beam_resource_release
#undef beam_resource_on_release
#undef beam_resource_is_released
#undef beam_resource_usage_of
#undef beam_resource_live_count
#undef BEAM_RESOURCE_GPA
#undef BEAM_RESOURCE_ARENA

#ifdef __cplusplus
extern "C" {
#endif

/** Per-NIF options, given to BEAM_NIF as designated initialisers. The
 * module's load_info can override them per function (see BEAM_NIF_INIT).
 * While BeamAlloc.Testing.check_all_allocation_failures/2 runs in the
 * calling process, beam_allocator is its counting, failing allocator,
 * stacked over the one these options make (other processes are not
 * affected). */
typedef struct beam_nif_options {
    /** Run the call on a fresh general purpose allocator in safe mode
     * (over .allocator when given) and raise RuntimeError "memory leak
     * detected in function `M.fun/arity`" when any block is live at return,
     * or "memory misuse detected in function `M.fun/arity`: <kind>" when the
     * call misused memory (see raise_on_misuse); in an Erlang module (a name
     * without "Elixir."), erlang:error({memory_leak, <<"memory leak detected
     * in function my_mod:fun/arity">>}) or {memory_misuse, ...}. The blocks
     * and sites go to the report hook (inside a BEAM: the logger and
     * BeamAlloc.Reporter). The instance goes at return (unless the call
     * leaked): a copy of beam_allocator kept by a thread past the call's
     * end must not be used, as with .scratch. A NIF that yields
     * (enif_schedule_nif) is checked slice by slice, each with a fresh
     * instance: a block of beam_allocator handed to the continuation is a
     * leak of the slice (raised in place of the continuation); carry such
     * memory in a named allocator (beam_general_purpose_allocator, or
     * .allocator's), freed by the last slice. A continuation of the NIF's
     * own C function is named as the call that scheduled it, on whatever
     * scheduler it runs (see beam_nif_schedule). */
    bool leak_check;
    /** beam_allocator for the call; NULL means beam_raw_allocator. */
    beam_allocator_t (*allocator)(void);
    /** Scratch memory: beam_allocator is an arena over the NIF's allocator
     * (beam_raw_allocator, or .allocator's) for the call, and everything in
     * it goes back in one step when the body returns. Allocation is a
     * pointer bump and nothing needs freeing, which makes parsers, temporary
     * buffers and intermediate lists cheap. The trade-offs:
     *   - frees do nothing (except for the most recent block), so memory
     *     freed early is not reused: the call holds everything it ever
     *     allocated until it returns;
     *   - the arena takes memory from the parent in chunks (4 KiB first,
     *     doubling), so a call that allocates at all costs at least one
     *     chunk;
     *   - no pointer into it may outlive the call: not in a resource, a
     *     global, another thread, or a binary made with enif_make_resource
     *     _binary, nor a continuation of enif_schedule_nif (each slice is
     *     a call of its own, with a fresh arena). Copy what must stay
     *     (enif_make_new_binary, or another allocator).
     * With .leak_check the arena sits over the checking instance and is
     * given back before the check: only blocks allocated some other way can
     * then leak. */
    bool scratch;
    /** Raise when the call misuses memory (a double free, a write past the
     * end of a block or after free, a free with a wrong length or
     * alignment, a free of a pointer the allocator does not own), as
     * .leak_check calls always do: once the call is over, RuntimeError
     * "memory misuse detected in function `M.fun/arity`: double free"
     * (erlang:error({memory_misuse, Message}) from an Erlang module).
     * Without it (and without .leak_check) misuse is reported and the call
     * returns as usual. Counts what any allocator reports on the calling
     * thread during the call, beam_general_purpose_allocator included;
     * under .leak_check also a misuse of the checking instance on another
     * thread (one the body started) before the call is over. */
    bool raise_on_misuse;
    /** .leak_check: frames of each allocation's stack kept for reports
     * (1 to 16; 0 means 6). See BEAM_GPA_FRAMES. A C library's allocation
     * (through the adapters) whose frames kept hold none of the NIF's
     * ends with the NIF's first frame all the same, after a gap marker
     * ("... (frames skipped)") in place of the library's last ones. */
    unsigned frames;
    int beam_reserved_end; /* internal: lets BEAM_NIF(name) take no options */
    /* internal: how .allocator is called. NULL (C): directly; in C++, a
     * guard that catches an exception (false, with its text), which the
     * call then raises: it would otherwise cross the VM's C frames. */
    bool (*beam_internal_pick)(beam_allocator_t (*allocator)(void),
                               beam_allocator_t *out, char *text, size_t size);
} beam_nif_options;
typedef beam_nif_options beam_nif_options_t;

typedef ERL_NIF_TERM (*beam_nif_body_fn)(ErlNifEnv *env, int argc,
                                         const ERL_NIF_TERM argv[]);

/** The wrapper every BEAM_NIF goes through. */
BEAM_API ERL_NIF_TERM beam_nif_call(const beam_nif_options *options,
                                    const char *c_name, beam_nif_body_fn self,
                                    beam_nif_body_fn body, ErlNifEnv *env,
                                    int argc, const ERL_NIF_TERM argv[]);

/** enif_schedule_nif as the glue needs it, which this header makes of every
 * enif_schedule_nif call after it (a macro of that name; where erl_nif.h
 * already makes it one, as on Windows, it is left alone). A continuation
 * of the running BEAM_NIF's own C function is the call that scheduled it:
 * named in reports, and given load_info options, by the name that call
 * came in by, whatever the scheduler it moves to. erl_nif tells a function
 * nothing of the name it runs under, and the glue otherwise tells a C
 * function listed under a normal and a dirty name by the scheduler a call
 * runs on: a call of the normal name that moved itself to a dirty
 * scheduler was the dirty name's. For such a function (and such a table
 * only) the continuation is a trampoline of the glue's, one for each of
 * the table's first 16 entries of such functions, which calls fp with
 * argc and argv as given (the VM shows it as fun_name with argv, as
 * enif_schedule_nif's); otherwise this is enif_schedule_nif. */
BEAM_API ERL_NIF_TERM beam_nif_schedule(ErlNifEnv *env, const char *fun_name,
                                        int flags, beam_nif_body_fn fp,
                                        int argc, const ERL_NIF_TERM argv[]);

/** Define a NIF: BEAM_NIF(name) { ... } or BEAM_NIF(name, .leak_check = true)
 * { ... }. Inside the body env, argc and argv are in scope and
 * beam_allocator is set. name goes in an ErlNifFunc table as usual.
 *
 * name is the C function's name (a static function), not the Erlang one:
 * the ErlNifFunc table gives that. A NIF named like a C library function
 * or a keyword (compress next to <zlib.h>, free, open, end) takes another
 * C name, and messages still name it as Erlang knows it:
 *
 *     BEAM_NIF(nif_compress) { ... }
 *     static ErlNifFunc funcs[] = {{"compress", 1, nif_compress, 0}};
 *
 * Besides name itself, BEAM_NIF defines beam_nif_body_<name>,
 * beam_nif_options_<name>, beam_nif_mark_<name> and beam_nif_note_<name>
 * (static), and in C++ beam_nif_guard_<name>: a
 * C++ exception that leaves the body is raised as an Erlang exception
 * (std::bad_alloc as "out of memory", beam::bad_alignment with its text,
 * another std::exception with "uncaught C++ exception: " and its what()),
 * where it would have crossed the VM's C
 * frames and aborted it (beam::allocator throws under fault injection);
 * so is one that leaves the .allocator function. A continuation
 * (enif_schedule_nif) is guarded when it is a BEAM_NIF too, which need not
 * be in the ErlNifFunc table; a plain C++ function scheduled is not, and
 * must catch everything itself.
 * In C++ the options go in their declaration order (leak_check, allocator,
 * scratch, raise_on_misuse, frames): g++ refuses any other. */
#define BEAM_NIF(...)                                                          \
    BEAM_INTERNAL_NIF(__VA_ARGS__, .beam_reserved_end = 0,                     \
                      .beam_internal_pick = BEAM_INTERNAL_PICK)
/* C++ before C++20 takes designated initialisers only as an extension and
 * warns about the fields they leave out; the options are meant to be
 * partial. (In C++20, name options in declaration order.) */
#if defined(__cplusplus) && defined(__clang__)
#define BEAM_INTERNAL_OPTIONS_PUSH                                             \
    _Pragma("clang diagnostic push")                                           \
        _Pragma("clang diagnostic ignored \"-Wmissing-field-initializers\"")   \
            _Pragma("clang diagnostic ignored \"-Wc++20-extensions\"")
#define BEAM_INTERNAL_OPTIONS_POP _Pragma("clang diagnostic pop")
#elif defined(__cplusplus) && defined(__GNUC__)
#define BEAM_INTERNAL_OPTIONS_PUSH                                             \
    _Pragma("GCC diagnostic push")                                             \
        _Pragma("GCC diagnostic ignored \"-Wmissing-field-initializers\"")     \
            _Pragma("GCC diagnostic ignored \"-Wpedantic\"")                   \
                BEAM_INTERNAL_IGNORE_CXX20_EXTENSIONS
#define BEAM_INTERNAL_OPTIONS_POP _Pragma("GCC diagnostic pop")
/* GCC 12 and later warn about designated initialisers before C++20 under
 * -Wc++20-extensions, which -Wpedantic turns on and the ignored -Wpedantic
 * does not cover (GCC 11 knows no such option: naming it would warn). */
#if __GNUC__ >= 12
#define BEAM_INTERNAL_IGNORE_CXX20_EXTENSIONS                                  \
    _Pragma("GCC diagnostic ignored \"-Wc++20-extensions\"")
#else
#define BEAM_INTERNAL_IGNORE_CXX20_EXTENSIONS
#endif
#else
#define BEAM_INTERNAL_OPTIONS_PUSH
#define BEAM_INTERNAL_OPTIONS_POP
#endif
/* (Built with -fno-exceptions, C++ code has no exception to stop.) */
#if defined(__cplusplus) && (defined(__cpp_exceptions) || defined(__EXCEPTIONS))
#define BEAM_INTERNAL_CXX_GUARD 1
#endif
#ifdef BEAM_INTERNAL_CXX_GUARD
/* The body as beam_nif_call calls it: through C frames, where no C++
 * exception may pass. */
#define BEAM_INTERNAL_ENTRY(name) beam_nif_guard_##name
#define BEAM_INTERNAL_PICK beam_nif_internal_pick_guarded
#define BEAM_INTERNAL_GUARD(name)                                              \
    static ERL_NIF_TERM beam_nif_guard_##name(                                 \
        ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) noexcept {        \
        try {                                                                  \
            return beam_nif_body_##name(env, argc, argv);                      \
        } catch (...) {                                                        \
            return beam_nif_internal_raise_current(env);                       \
        }                                                                      \
    }
#else
#define BEAM_INTERNAL_ENTRY(name) beam_nif_body_##name
#define BEAM_INTERNAL_GUARD(name)
#define BEAM_INTERNAL_PICK BEAM_INTERNAL_NULL
#endif
#define BEAM_INTERNAL_NIF(name, ...)                                           \
    static ERL_NIF_TERM beam_nif_body_##name(ErlNifEnv *env, int argc,         \
                                             const ERL_NIF_TERM argv[]);       \
    BEAM_INTERNAL_GUARD(name)                                                  \
    BEAM_INTERNAL_OPTIONS_PUSH                                                 \
    static const beam_nif_options beam_nif_options_##name = {__VA_ARGS__};     \
    BEAM_INTERNAL_OPTIONS_POP                                                  \
    static ERL_NIF_TERM name(ErlNifEnv *env, int argc,                         \
                             const ERL_NIF_TERM argv[]) {                      \
        return beam_nif_call(&beam_nif_options_##name, #name, name,            \
                             BEAM_INTERNAL_ENTRY(name), env, argc, argv);      \
    }                                                                          \
    BEAM_INTERNAL_NIF_MARK(name)                                               \
    static ERL_NIF_TERM beam_nif_body_##name(                                  \
        BEAM_INTERNAL_UNUSED ErlNifEnv *env, BEAM_INTERNAL_UNUSED int argc,    \
        BEAM_INTERNAL_UNUSED const ERL_NIF_TERM argv[])

/* Every BEAM_NIF's function, listed as the library is loaded (a
 * constructor per BEAM_NIF pushes its static node): load_info options that
 * name only plain functions of the table (raw NIFs, which no option
 * reaches) then fail the load rather than do nothing. Without constructors
 * there is no list, and no check. */
typedef struct beam_nif_mark {
    beam_nif_body_fn fn;
    struct beam_nif_mark *next;
} beam_nif_mark;
/** Internal: BEAM_NIF's constructor calls it; BEAM_NIF_INIT's, with NULL,
 * says the list is kept (a table with no BEAM_NIF at all has it empty). */
BEAM_API void beam_nif_internal_mark(beam_nif_mark *mark);
/* Clang 21 reports these constructors under -Wglobal-constructors (in C
 * too): a user's -Weverything -Werror failed on every BEAM_NIF and on
 * BEAM_NIF_INIT (Debian sid's make test, header-test). They are the
 * header's, not the user's, and run nothing but a list push. */
#if defined(__clang__)
#define BEAM_INTERNAL_CTOR_PUSH                                                \
    _Pragma("clang diagnostic push")                                           \
        _Pragma("clang diagnostic ignored \"-Wglobal-constructors\"")
#define BEAM_INTERNAL_CTOR_POP _Pragma("clang diagnostic pop")
#else
#define BEAM_INTERNAL_CTOR_PUSH
#define BEAM_INTERNAL_CTOR_POP
#endif
#if defined(__GNUC__) || defined(__clang__)
/* The header's one kind of constructor: fn passes mark to the list. */
#define BEAM_INTERNAL_MARK_CTOR(fn, mark)                                      \
    BEAM_INTERNAL_CTOR_PUSH                                                    \
    __attribute__((constructor)) static void fn(void) {                        \
        beam_nif_internal_mark(mark);                                          \
    }                                                                          \
    BEAM_INTERNAL_CTOR_POP
#define BEAM_INTERNAL_NIF_MARK(name)                                           \
    static beam_nif_mark beam_nif_mark_##name = {name, BEAM_INTERNAL_NULL};    \
    BEAM_INTERNAL_MARK_CTOR(beam_nif_note_##name, &beam_nif_mark_##name)
#define BEAM_INTERNAL_INIT_MARK                                                \
    BEAM_INTERNAL_MARK_CTOR(beam_nif_note_init, BEAM_INTERNAL_NULL)
#else
#define BEAM_INTERNAL_NIF_MARK(name)
#define BEAM_INTERNAL_INIT_MARK
#endif

/** Called by BEAM_NIF_INIT at load: remembers the module name and the
 * function table (for messages). */
BEAM_API void beam_nif_register(const char *module, const ErlNifFunc *funcs,
                                int count);

/** Called by BEAM_NIF_INIT at load and upgrade, after beam_nif_register:
 * takes per-NIF option overrides from load_info (see BEAM_NIF_INIT). 0 when
 * load_info is not a map or is a valid one; otherwise the reason is reported
 * (section 7) and the non-zero result fails the load. */
BEAM_API int beam_nif_load_options(ErlNifEnv *env, ERL_NIF_TERM load_info);

/* Fault injection from ExUnit (BeamAlloc.Testing). Every NIF library built
 * with BEAM_NIF_INIT exports one symbol, the same in each: the test driver
 * (priv/beam_alloc_testing.so) finds the loaded libraries through the
 * dynamic loader, looks the symbol up in each, and arms the library for one
 * process at a time. Internal; the layout behind it is versioned. */
BEAM_API const void *beam_alloc_fault_hooks_v1(void);
BEAM_API const void *beam_nif_fault_hooks_internal(void);
#ifdef STATIC_ERLANG_NIF
/* Linked into the VM: one symbol per library cannot be; no fault hooks. */
#define BEAM_INTERNAL_FAULT_HOOKS_EXPORT
#else
#define BEAM_INTERNAL_FAULT_HOOKS_EXPORT                                       \
    const void *beam_alloc_fault_hooks_v1(void) {                              \
        return beam_nif_fault_hooks_internal();                                \
    }
#endif

typedef int (*beam_nif_upgrade_fn)(ErlNifEnv *, void **, void **, ERL_NIF_TERM);
typedef void (*beam_nif_unload_fn)(ErlNifEnv *, void *);

/** Called by BEAM_NIF_INIT after a load or upgrade callback with its result
 * (which it returns): counts the module instances using this library. */
BEAM_API int beam_nif_loaded(int result);
typedef int (*beam_nif_load_fn)(ErlNifEnv *, void **, ERL_NIF_TERM);
/** BEAM_NIF_INIT's upgrade when it was given no upgrade callback: 0 without
 * a load callback (load NULL); load (which runs it) for a library not
 * loaded yet (another file than the old version's); else a failure,
 * reported. */
BEAM_API int beam_nif_upgrade_without_callback(ErlNifEnv *env, void **priv,
                                               ERL_NIF_TERM info,
                                               beam_nif_load_fn load);
/** Called by BEAM_NIF_INIT's unload callback, after the user's: when the
 * last module instance using this library goes (hot upgrade keeps the new
 * one) and no resource of it is live, the library's process-wide general
 * purpose allocator gives every segment back, so that load/purge cycles
 * leave nothing behind; but not in a copy kept mapped for a C library's
 * hooks (beam_internal_keep_mapped: beam_sqlite3_use succeeded, or a zlib
 * or zstd hook ran), whose allocators those hooks may still use. */
BEAM_API void beam_nif_unloaded(void);

/** Called by BEAM_NIF_INIT when the user's load, upgrade or unload
 * (callback: "load", ...) let a C++ exception out, with its text: reports
 * it (section 7) and returns the code that fails a load or upgrade
 * (beam_alloc:explain_load_error/1 reads it). */
BEAM_API int beam_nif_internal_callback_threw(ErlNifEnv *env,
                                              const char *callback,
                                              const char *text);
/* BEAM_NIF_INIT's call of the user's load, upgrade or unload (call, an
 * int expression; what: "load", ...): in C++ through a guard
 * (beam_nif_internal_callback_guarded). */
#ifdef BEAM_INTERNAL_CXX_GUARD
#define BEAM_INTERNAL_CALLBACK(env, what, call)                                \
    beam_nif_internal_callback_guarded(env, what, [&]() { return call; })
#else
#define BEAM_INTERNAL_CALLBACK(env, what, call) (call)
#endif

/** Drop-in for ERL_NIF_INIT(NAME, FUNCS, LOAD, NULL, UPGRADE, UNLOAD).
 *
 * Per-NIF options from load_info. When the module loads the library with a
 * map (erlang:load_nif(Path, Map); `use BeamAlloc.Nif, nifs: [...]` builds
 * it), the map overrides the BEAM_NIF options of the functions it names:
 *
 *     #{check_me => #{leak_check => true},         % every arity of check_me
 *       {basic, 0} => [{allocator, gpa}],          % basic/0 only
 *       parse => #{scratch => true}}
 *
 * A continuation a NIF schedules of its own C function (enif_schedule_nif,
 * any number of arguments) takes the NIF's options, as it takes its C
 * ones: those of the name the call that scheduled it came in by (see
 * beam_nif_schedule), a dirty twin's only when called by that name (a
 * function listed under several arities takes the first entry's).
 *
 * One C function under a normal and a dirty name is told apart by the
 * scheduler a call runs on; under two names on one kind of scheduler it
 * cannot be, and they must have the same entries (the load fails
 * otherwise). Twins on two kinds must have the same allocator: a
 * continuation that does not go through beam_nif_schedule (erl_nif.h's
 * own macro), or of an entry past a table's 16th of twins, is still told
 * by its scheduler.
 *
 * Keys are a function name (all its arities) or {Name, Arity}; values are a
 * map or a property list of leak_check (boolean), scratch (boolean),
 * raise_on_misuse (boolean) and allocator (raw, large or gpa:
 * beam_raw_allocator, beam_large_allocator, beam_general_purpose_allocator, in
 * place of the .allocator function). A name missing from FUNCS, or whose
 * functions there are all plain ones (not BEAM_NIF: no option reaches
 * them), an unknown option, one given twice or a bad value fails the load
 * ({error, {load, "Library load-call unsuccessful (N)."}}) and reports why
 * (section 7); but for a key naming no function and no option whose value
 * is no map or list (#{version => 1}, as an ERL_NIF_INIT library may have
 * loaded with): a setting of LOAD's own, skipped (not under beam_alloc,
 * below). A load_info that is not a map is left to LOAD alone (a list
 * that names a NIF, [{check_me, [{leak_check, true}]}], is reported: its
 * options are not applied); a map
 * is passed on to LOAD as well. A map with the key beam_alloc holds the
 * options under that key alone, its other keys being LOAD's own settings:
 *
 *     #{beam_alloc => #{check_me => #{leak_check => true}}, pool_size => 4}
 *
 * (a NIF named beam_alloc then takes its options under it too).
 *
 * In C++, an exception that leaves LOAD, UPGRADE or UNLOAD is reported
 * (section 7) with its text, as one from a BEAM_NIF body is raised: a load
 * or upgrade then fails ({error, {load, "... (2984)."}}, or {upgrade, ...},
 * which beam_alloc:explain_load_error/1 explains), an unload goes on.
 *
 * Upgrade (a new version of the module loads the library while its old
 * version keeps one: a hot upgrade, a recompile) with UPGRADE NULL: a
 * library from another file than the old version's is a fresh copy and
 * runs LOAD, as a first load does (resource types opened there need
 * ERL_NIF_RT_TAKEOVER too); with LOAD NULL as well the upgrade just takes
 * place (unless the file was rebuilt since this copy was loaded from it:
 * the new version would run the old copy, and the upgrade fails, reported);
 * otherwise it fails, as with ERL_NIF_INIT ({error, {upgrade,
 * ...}}, reported): what LOAD set up stays the old version's, its resource
 * types go when that version is purged, and running LOAD again over state
 * the old version still uses is not BEAM_NIF_INIT's to decide. Give an
 * UPGRADE for that.
 *
 * Unload: after UNLOAD (which may be NULL), the library's copy of
 * beam_general_purpose_allocator is torn down once no module instance and
 * no resource of the library is left (see beam_nif_unloaded): blocks still
 * live in it then are freed without a report. Not in a copy kept mapped by
 * <beam_alloc/sqlite3.h>, <beam_alloc/zlib.h> or <beam_alloc/zstd.h>:
 * its allocators stay until the VM exits, so UNLOAD must leave what those
 * hooks use (SQLite's instance, a stream's allocator) as it is.
 * A resource whose type a new copy took over (ERL_NIF_RT_TAKEOVER) is the
 * new copy's, and the VM unloads the old copy at the old version's purge
 * all the same: when a newer version of the module runs another copy and
 * the old copy's allocators still hold blocks then, the old copy stays
 * mapped with them until the VM exits (reported), so such a resource's
 * blocks, and a beam_allocator_t of that copy kept in it, stay valid; a
 * free of such a block through the new copy's process-wide instance goes
 * to the old copy (README: "A resource type a new version takes over
 * keeps the old copy"). */
/* NAME may itself be a macro: it is expanded before it is named. */
#define BEAM_NIF_STRINGIFY_(x) #x
#define BEAM_NIF_STRINGIFY(x) BEAM_NIF_STRINGIFY_(x)
/* BEAM_NIF_INIT(NAME, FUNCS, LOAD, UPGRADE, UNLOAD), or ERL_NIF_INIT's own
 * six arguments (NAME, FUNCS, LOAD, RELOAD, UPGRADE, UNLOAD; RELOAD, which
 * the VM no longer calls, goes to ERL_NIF_INIT as given), so that renaming
 * an ERL_NIF_INIT line is enough. */
/* Any other count from 1 to 10 picks the static assertion (a shorter
 * list had 1 to 3 arguments, and 7, pick a name of the list or an
 * argument: errors that never said which forms it takes). */
#define BEAM_NIF_INIT(...)                                                     \
    BEAM_INTERNAL_NIF_INIT_PICK(                                               \
        __VA_ARGS__, BEAM_INTERNAL_NIF_INIT_BAD, BEAM_INTERNAL_NIF_INIT_BAD,   \
        BEAM_INTERNAL_NIF_INIT_BAD, BEAM_INTERNAL_NIF_INIT_BAD,                \
        BEAM_INTERNAL_NIF_INIT_6, BEAM_INTERNAL_NIF_INIT_5,                    \
        BEAM_INTERNAL_NIF_INIT_BAD, BEAM_INTERNAL_NIF_INIT_BAD,                \
        BEAM_INTERNAL_NIF_INIT_BAD, BEAM_INTERNAL_NIF_INIT_BAD, unused_)       \
    (__VA_ARGS__)
#define BEAM_INTERNAL_NIF_INIT_PICK(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10,   \
                                    name, ...)                                 \
    name
#ifdef __cplusplus
#define BEAM_INTERNAL_NIF_STATIC_ASSERT static_assert
#else
#define BEAM_INTERNAL_NIF_STATIC_ASSERT _Static_assert
#endif
#define BEAM_INTERNAL_NIF_INIT_BAD(...)                                        \
    BEAM_INTERNAL_NIF_STATIC_ASSERT(                                           \
        0, "BEAM_NIF_INIT takes (NAME, FUNCS, LOAD, "                          \
           "UPGRADE, UNLOAD) or ERL_NIF_INIT's (NAME, "                        \
           "FUNCS, LOAD, RELOAD, UPGRADE, UNLOAD)")
#define BEAM_INTERNAL_NIF_INIT_5(NAME, FUNCS, LOAD, UPGRADE, UNLOAD)           \
    BEAM_INTERNAL_NIF_INIT_6(NAME, FUNCS, LOAD, BEAM_INTERNAL_NULL, UPGRADE,   \
                             UNLOAD)
/* LOAD, UPGRADE and UNLOAD initialise their variables unparenthesised:
 * clang++'s -Wzero-as-null-pointer-constant lets a system header's NULL
 * (__null) pass where it starts the expression, as in ERL_NIF_INIT, and
 * reports it behind a parenthesis of ours (test/header/cxx_flags.cpp). */
#define BEAM_INTERNAL_NIF_INIT_6(NAME, FUNCS, LOAD, RELOAD, UPGRADE, UNLOAD)   \
    BEAM_INTERNAL_FAULT_HOOKS_EXPORT                                           \
    BEAM_INTERNAL_INIT_MARK                                                    \
    /* Load and upgrade alike, up to the user's function. */                   \
    static int beam_nif_glue_start(ErlNifEnv *env, ERL_NIF_TERM info) {        \
        beam_nif_register(BEAM_NIF_STRINGIFY(NAME), FUNCS,                     \
                          sizeof(FUNCS) / sizeof(FUNCS[0]));                   \
        int options_failed = beam_nif_load_options(env, info);                 \
        if (options_failed)                                                    \
            return options_failed;                                             \
        beam_nif_resource_on_load(env); /* resource-scoped allocators */       \
        return 0;                                                              \
    }                                                                          \
    static int beam_nif_glue_load_user(ErlNifEnv *env, void **priv,            \
                                       ERL_NIF_TERM info) {                    \
        beam_nif_load_fn user = LOAD;                                          \
        return beam_nif_loaded(                                                \
            user ? BEAM_INTERNAL_CALLBACK(env, "load", user(env, priv, info))  \
                 : 0);                                                         \
    }                                                                          \
    static int beam_nif_glue_load(ErlNifEnv *env, void **priv,                 \
                                  ERL_NIF_TERM info) {                         \
        int options_failed = beam_nif_glue_start(env, info);                   \
        if (options_failed)                                                    \
            return options_failed;                                             \
        return beam_nif_glue_load_user(env, priv, info);                       \
    }                                                                          \
    static int beam_nif_glue_upgrade(ErlNifEnv *env, void **priv, void **old,  \
                                     ERL_NIF_TERM info) {                      \
        beam_nif_upgrade_fn user = UPGRADE;                                    \
        beam_nif_load_fn beam_nif_user_load = LOAD;                            \
        int options_failed = beam_nif_glue_start(env, info);                   \
        if (options_failed)                                                    \
            return options_failed;                                             \
        if (!user)                                                             \
            return beam_nif_upgrade_without_callback(                          \
                env, priv, info,                                               \
                beam_nif_user_load ? beam_nif_glue_load_user                   \
                                   : BEAM_INTERNAL_NULL);                      \
        return beam_nif_loaded(BEAM_INTERNAL_CALLBACK(                         \
            env, "upgrade", user(env, priv, old, info)));                      \
    }                                                                          \
    static void beam_nif_glue_unload(ErlNifEnv *env, void *priv) {             \
        beam_nif_unload_fn user = UNLOAD;                                      \
        if (user)                                                              \
            (void)BEAM_INTERNAL_CALLBACK(env, "unload", (user(env, priv), 0)); \
        beam_nif_unloaded();                                                   \
    }                                                                          \
    ERL_NIF_INIT(NAME, FUNCS, beam_nif_glue_load, RELOAD,                      \
                 beam_nif_glue_upgrade, beam_nif_glue_unload)

/* Term helpers. */

/** A list of the n unsigned integers at p, each elem_size (1, 2, 4 or 8)
 * bytes wide. */
BEAM_API ERL_NIF_TERM beam_make_uint_list(ErlNifEnv *env, const void *p,
                                          size_t n, size_t elem_size);
/** {error, Reason} ({:error, reason} in Elixir) with Reason an atom. */
BEAM_API ERL_NIF_TERM beam_make_error(ErlNifEnv *env, const char *reason);
/** Raise an exception with message, in the language of the module the
 * library was loaded for (BEAM_NIF_INIT): from an Elixir module the
 * exception struct named (module "ArgumentError", "RuntimeError", ...,
 * without "Elixir."); from an Erlang module erlang:error({Name, Message}),
 * Name an atom and Message a binary (beam_raise(env, "badarg", "expects a
 * binary") raises {badarg, <<"expects a binary">>}). In an Elixir module
 * an Erlang name (lower case) raises Elixir's exception for it: badarg
 * ArgumentError, badarith ArithmeticError, system_limit SystemLimitError,
 * any other RuntimeError "name: message"; the other way, in an Erlang
 * module those four Elixir names (with "Elixir." or not) raise badarg,
 * badarith, system_limit and error, so that one NIF library serves both.
 * A NULL name is RuntimeError, or error from an Erlang module; a name
 * longer than an atom can be, or no memory for the message, raises
 * badarg. */
BEAM_API ERL_NIF_TERM beam_raise(ErlNifEnv *env, const char *exception,
                                 const char *message);
/** "M.fun/arity" of the running BEAM_NIF when known (for messages;
 * "my_mod:fun/arity" in an Erlang module), else NULL (also when the
 * thread's small buffer for it cannot be allocated). Per-thread text,
 * valid until the next call on this thread. */
BEAM_API const char *beam_nif_function_name(void);
/** The same, under its first name (it names a function, not a module). */
BEAM_API const char *beam_nif_module_name(void);

/* Resource-scoped allocators.
 *
 * An allocator whose memory belongs to an Erlang resource term: one NIF
 * call creates it and returns the term; any later call that receives the
 * term (from any process, on any scheduler) allocates, uses and frees
 * through it; everything it holds goes back at once when the resource is
 * released, explicitly or when the garbage collector drops the last
 * reference to the term (the destructor may run later, on another thread).
 *
 *     BEAM_NIF(tree_new) {
 *         ERL_NIF_TERM term;
 *         if (!beam_resource_new(env, BEAM_RESOURCE_ARENA,
 *                                beam_large_allocator, 0, &term))
 *             return beam_make_error(env, "enomem");
 *         return term;
 *     }
 *     BEAM_NIF(tree_add) {
 *         beam_resource_t *r;
 *         if (!beam_resource_get(env, argv[0], &r))
 *             return enif_make_badarg(env);   // not one of ours
 *         node *n = beam_create(beam_resource_allocator(r), node);
 *         if (n == NULL)                      // released, or out of memory
 *             return beam_make_error(env, "enomem");
 *         ...
 *     }
 *
 * Two kinds:
 *   BEAM_RESOURCE_GPA    a general purpose allocator instance: every free
 *                        gives memory back for reuse; threads allocate in
 *                        parallel. Takes about 74 KiB of the parent with
 *                        its first small block: for resources that live
 *                        long and churn. What it holds beyond its live
 *                        blocks (a burst freed) goes back at
 *                        BeamAlloc.collect/1 (beam_alloc:collect/1), as
 *                        the process-wide instance's does, and the
 *                        application's collector counts it with the
 *                        library's other instances.
 *   BEAM_RESOURCE_ARENA  an arena behind a mutex: bump allocation in chunks
 *                        (the first 4 KiB); a free only reclaims the most
 *                        recent block, the rest waits for release. Cheap to
 *                        create: for many small or short-lived resources.
 *
 * Thread safety: every function here may be called from any thread, and a
 * resource's allocator from several at once. Each call into the allocator
 * costs a few atomic operations on the resource (plus the mutex for an
 * arena); for a hot loop inside one call, put a plain beam_arena_t over
 * the resource allocator.
 *
 * Lifetime: a beam_resource_t pointer, and the allocator made from it, are
 * valid while someone holds a reference: a live term in the calling NIF's
 * env (its arguments, what it made), or one taken with beam_resource_keep.
 * Blocks are valid until the resource is released; release is final (later
 * allocations fail with NULL, later frees do nothing) and takes every block
 * with it, so do not keep a block's address beyond the resource (in a
 * global, another resource) and do not release a resource that other
 * processes may still be reading: beam_resource_pin guards a read against a
 * concurrent release.
 *
 * The parent must serve calls from any thread and outlive the resource:
 * beam_raw_allocator, beam_large_allocator, beam_general_purpose_allocator,
 * a beam_gpa_t that outlives it, not a plain arena; or another resource's
 * allocator (beam_resource_allocator(parent): a request's arena over a
 * connection's GPA), which outlives it by itself: the new resource keeps
 * the parent's memory until its own release (or destruction) and a
 * reference on the parent until the end of its destructor. So the parent's
 * term may be dropped first, or the parent released (its own allocations
 * fail from then on, as after any release; the child's blocks stay valid,
 * it only cannot grow, and the parent's memory goes when the child's
 * does); a chain of them holds down to its first. Holds never form a cycle: a
 * parent exists before its children and never changes. A parent already
 * released is refused (NULL, reported). The caller holds a reference to the
 * parent while it makes the resource (the parent's term in its env, or
 * beam_resource_keep): a thread of a library's that uses the parent's
 * allocator with none, stopped by the parent's release hook, must not make
 * resources over it (the garbage collector may be destroying the parent
 * at that very moment, and the hold would come too late). Only this library's
 * own resources are known as such: a parent reached through another allocator
 * (an arena over a resource allocator) or made by another NIF library (its own
 * copy of beam_alloc) is not held, and must outlive the resource as any parent
 * must. beam_allocator too: where it is the call's own (a leak_check or scratch
 * call, or one under fault injection), gone at its return, the resource takes
 * the allocator beam_allocator is without those options (the NIF's .allocator,
 * or the raw allocator), so its memory is neither the call's leak nor injected;
 * under fault injection its making is asked of the injecting allocator
 * first (the resource's size, taken and given back), so that
 * beam_resource_new is one of the allocations a check fails (NULL) and its
 * report names the caller's line. That is on the call's own thread: on a
 * thread the NIF started, a copy of such a beam_allocator is taken as it
 * is, and the resource's memory goes with the call (a leak_check call
 * raises it as a leak; a scratch call's arena takes it back at return,
 * under the live resource): there, give the resource a named allocator.
 * Memory comes from the parent (with the enif backends:
 * :erlang.memory(:system)); the resource object itself, with its user area,
 * counts under :erlang.memory(:binary).
 *
 * Each NIF library has its own resource type (and its own copy of this
 * library): a term made by another NIF library, or by an older copy of the
 * same module's library after a code upgrade to a new library file, is not
 * one of ours. (A new version of the module loading the same file, an
 * upgrade, keeps the library the VM has mapped, and its resources stay
 * ours; a module deleted and purged, then loaded again, starts with a new
 * resource type: terms made before are refused, with badarg.) */

/** What a resource allocator is built from (see above). */
typedef enum beam_resource_kind {
    BEAM_RESOURCE_GPA = 1,
    BEAM_RESOURCE_ARENA = 2,
} beam_resource_kind;
typedef beam_resource_kind beam_resource_kind_t;

/** A resource that owns an allocator (opaque). */
typedef struct beam_resource beam_resource_t;

/** Open this library's resource type; call it from the load and upgrade
 * callbacks of a module that uses plain ERL_NIF_INIT. BEAM_NIF_INIT does it
 * by itself (then this returns whether that worked). false: the type could
 * not be opened, and beam_resource_new will return NULL. */
BEAM_API bool beam_resource_init(ErlNifEnv *env);
/** Internal: BEAM_NIF_INIT's load and upgrade wrappers call it. Never
 * fails the load; beam_resource_new reports a missing type with NULL. */
BEAM_API void beam_nif_resource_on_load(ErlNifEnv *env);

/** A new resource whose allocator of kind takes its memory from parent
 * (parent.vtable == NULL means beam_large_allocator), with user_size
 * bytes of zeroed user area (see beam_resource_user_data). When term is not
 * NULL, *term is the resource term in env and the term holds the only
 * reference (the pointer is valid while the term is); when term is NULL,
 * the caller holds the only reference and must beam_resource_drop it (env
 * is then unused and may be NULL). Such a reference kept for the life of
 * the library (a static; a pool of threads started in load) keeps its copy
 * mapped for good: the VM runs the unload callback only after the last
 * resource of the library is gone, so an unload that would drop it never
 * runs, and a module purged and loaded again runs that copy's C code, not
 * the file's (the logger says so). Keep process-wide state on a beam_gpa_t
 * or beam_general_purpose_allocator. NULL when the type is not open, kind
 * is unknown, parent is the allocator of a released resource (reported),
 * or memory is short. */
BEAM_API BEAM_NODISCARD beam_resource_t *
beam_resource_new(ErlNifEnv *env, beam_resource_kind kind,
                  beam_allocator_t parent, size_t user_size,
                  ERL_NIF_TERM *term);
/** A term for r in env (adds a reference held by the term). */
BEAM_API ERL_NIF_TERM beam_resource_term(ErlNifEnv *env, beam_resource_t *r);
/** true, and *out set, when term is a resource of this library's type;
 * false (and *out NULL) for anything else: other resources, other types,
 * before the type is open. Never raises. *out is valid while term is. */
BEAM_API bool beam_resource_get(ErlNifEnv *env, ERL_NIF_TERM term,
                                beam_resource_t **out);
/** Take a reference (to keep r beyond the term, e.g. in a thread). */
BEAM_API void beam_resource_keep(beam_resource_t *r);
/** Give back a reference from beam_resource_keep or beam_resource_new
 * (term == NULL). The last reference gone, the destructor releases. */
BEAM_API void beam_resource_drop(beam_resource_t *r);

/** r's allocator (two words; copy freely while r is referenced). Blocks
 * are aligned as asked (any power of two, as the parent serves it). After
 * release: alloc and remap NULL, resize false, free a no-op. NULL r gives
 * an allocator for which every call fails. */
BEAM_API beam_allocator_t beam_resource_allocator(beam_resource_t *r);
/** The user area: user_size bytes given at creation, zeroed then, aligned
 * to BEAM_MAX_ALIGN, living as long as the resource object (release does
 * not touch it); NULL when user_size was 0. Its use by several threads is
 * the caller's to synchronise. */
BEAM_API void *beam_resource_user_data(beam_resource_t *r);
BEAM_API size_t beam_resource_user_size(const beam_resource_t *r);

/** Pin the allocator's memory: true when r is not released, and then
 * every block stays valid until beam_resource_unpin, even if another thread
 * releases r meanwhile (the release completes at the unpin). false: r is
 * released, do not touch its blocks (and do not unpin). Pins nest; a pin is
 * cheap (one atomic operation) but must not outlive the caller's reference.
 * Releasing while holding a pin is allowed. A pin still held when the
 * resource is garbage collected is reported ("destroyed with 1 entries
 * still inside (an unpin missing?)"), with the call site of the first pin
 * taken since the resource last had none (often, not always, the one left
 * open). */
BEAM_API BEAM_NODISCARD bool beam_resource_pin(beam_resource_t *r);
BEAM_API void beam_resource_unpin(beam_resource_t *r);

/** Release now: every block goes back to the parent (at once, or when the
 * last pin or call in flight on another thread ends, or the last resource
 * made over r's allocator is released or destroyed: its memory is in r's).
 * Idempotent; later allocations fail, later frees do nothing. The
 * destructor does the same when the resource is garbage collected. */
BEAM_API void beam_resource_release(beam_resource_t *r);
/** What lives in a resource's memory and needs taking down (a C library's
 * context with threads of its own, a mutex in the user area): fn(r) runs
 * once when r is released, by beam_resource_release or by the garbage
 * collector, before its memory goes back. Inside fn the blocks are still
 * there to read and tear down, but the allocator already refuses (its
 * frees do nothing, as after any release) and no other thread is inside
 * it. fn never runs inside a call of r's allocator: a release that lands
 * while one is in progress (a library's own thread allocating, whose
 * teardown would then join itself) leaves fn and the memory to a later
 * release, pin or unpin that finds no call in progress, and at the latest
 * to the collection of r (or the drop of its last reference); a thread of
 * the library's that keeps calling the allocator after the release keeps
 * them waiting. A collection that finds such a call in progress waits
 * for it to come out, then runs fn (no report: fn stops those threads;
 * without fn, a thread using the allocator of a resource nobody holds a
 * reference to is reported). Otherwise fn runs on
 * whichever thread completes the release, a scheduler running the
 * destructor included: keep it short, and call nothing that needs an env.
 * Code that uses what fn takes down (a mutex in the user area) holds a pin
 * meanwhile: a pin fails once r is released, and fn waits for the unpin.
 * false (fn not set) for NULL or a released r; a later call replaces fn
 * (NULL: none). */
typedef void (*beam_resource_release_fn)(beam_resource_t *r);
BEAM_API bool beam_resource_on_release(beam_resource_t *r,
                                       beam_resource_release_fn fn);
/** true once beam_resource_release (or the destructor) has run, and for
 * NULL. */
BEAM_API bool beam_resource_is_released(const beam_resource_t *r);

/** Counters of a resource allocator (a snapshot when threads are busy). */
typedef struct beam_resource_usage {
    beam_resource_kind kind;
    bool released;
    size_t live_blocks;  /* allocations minus frees; 0 after release */
    size_t live_bytes;   /* their lengths as callers gave them */
    size_t parent_bytes; /* bytes held from the parent (chunks, slabs,
                            large blocks, bookkeeping); 0 after release */
} beam_resource_usage;
typedef beam_resource_usage beam_resource_usage_t;
BEAM_API beam_resource_usage beam_resource_usage_of(const beam_resource_t *r);
/** Resource allocators of this NIF library not yet released (explicitly or
 * by the garbage collector): for tests and leak hunting. */
BEAM_API size_t beam_resource_live_count(void);

#ifdef __cplusplus
} /* extern "C" */
#endif
/* (See beam_nif_schedule.) */
#ifndef enif_schedule_nif
#define enif_schedule_nif(env, fun_name, flags, fp, argc, argv)                \
    beam_nif_schedule(env, fun_name, flags, fp, argc, argv)
#endif
#ifdef BEAM_INTERNAL_CXX_GUARD
/* extern "C++": the header may be included inside a user's extern "C". */
extern "C++" {
#include <exception>
#include <new>
/* The text of the exception being handled, as a raise or a report gives
 * it (call it in a catch block only). */
static inline void beam_nif_internal_current_text(char *text,
                                                  size_t size) noexcept {
    try {
        throw;
    } catch (const std::bad_alloc &e) {
        /* beam::bad_alignment's text says more than out of memory. */
        const char *own = beam_internal_cxx_own_text(e.what());
        enif_snprintf(text, size, "%s", own != nullptr ? own : "out of memory");
    } catch (const std::exception &e) {
        int n =
            enif_snprintf(text, size, "uncaught C++ exception: %s", e.what());
        if (n >= static_cast<int>(size)) /* cut short: say so */
            enif_snprintf(text + size - 4, 4, "...");
    } catch (...) {
        enif_snprintf(text, size, "uncaught C++ exception");
    }
}

/* The exception being handled, raised as beam_raise does (call it in a
 * catch block only). */
static inline ERL_NIF_TERM
beam_nif_internal_raise_current(ErlNifEnv *env) noexcept {
    char text[256];
    beam_nif_internal_current_text(text, sizeof text);
    return beam_raise(env, nullptr, text);
}

/* beam_nif_call's call of a BEAM_NIF's .allocator (its
 * beam_internal_pick): false, with the text of the exception that left it. */
static inline bool beam_nif_internal_pick_guarded(beam_allocator_t (*f)(void),
                                                  beam_allocator_t *out,
                                                  char *text,
                                                  size_t size) noexcept {
    try {
        *out = f();
        return true;
    } catch (...) {
        beam_nif_internal_current_text(text, size);
        return false;
    }
}

/* BEAM_NIF_INIT's calls of the user's load, upgrade and unload: the VM
 * calls them through C frames, where an exception would end the VM. One
 * that leaves them is reported, and its code fails a load or upgrade. */
template <typename Call>
static inline int beam_nif_internal_callback_guarded(ErlNifEnv *env,
                                                     const char *what,
                                                     Call call) noexcept {
    try {
        return call();
    } catch (...) {
        char text[256];
        beam_nif_internal_current_text(text, sizeof text);
        return beam_nif_internal_callback_threw(env, what, text);
    }
}
}
#endif

#endif /* BEAM_ALLOC_NIF_H */
