/*
 * Internals of the NIF glue shared by the files of src/nif/ (NIF build only).
 * The interface to the fault-injection driver is abi.h.
 */
#ifndef BEAM_ALLOC_NIF_INTERNAL_H
#define BEAM_ALLOC_NIF_INTERNAL_H

#include "../internal.h"
#include "abi.h"

/* --- Per-NIF option overrides (load_options.c) ---------------------- */

enum {
    BEAM__OVERRIDE_LEAK_CHECK = 1u << 0,
    BEAM__OVERRIDE_ALLOCATOR = 1u << 1,
    BEAM__OVERRIDE_SCRATCH = 1u << 2,
    BEAM__OVERRIDE_RAISE_ON_MISUSE = 1u << 3,
};

/* What load_info says about one function of the table. */
typedef struct beam__nif_override {
    unsigned set; /* BEAM__OVERRIDE_* bits: which fields apply */
    bool leak_check;
    bool scratch;
    bool raise_on_misuse;
    beam_allocator_t allocator;
    /* Another entry of the same C function (a twin, another arity) has
     * other load_info entries: its calls pick theirs by scheduler
     * (load_options.c, beam__nif_override_in). */
    bool varies;
} beam__nif_override;

/* The options load_info set (load_options.c), NULL when none. */
struct override_table;
BEAM__HIDDEN extern _Atomic(const struct override_table *) beam__nif_overrides;
/* The override for the function self/argc in table t, or NULL. */
BEAM__HIDDEN const beam__nif_override *
beam__nif_override_in(const struct override_table *t, beam_nif_body_fn self,
                      int argc);
/* The override for the function self/argc of this library's table, or
 * NULL: inline, so that the common case (load_info set none) is one load
 * on every BEAM_NIF call, not a call. */
static inline const beam__nif_override *
beam__nif_override_for(beam_nif_body_fn self, int argc) {
    const struct override_table *t =
        beam__atomic_load_acquire(&beam__nif_overrides);
    return BEAM__LIKELY(t == NULL) ? NULL
                                   : beam__nif_override_in(t, self, argc);
}

/* The table registered at load (glue.c), for the option parser. */
BEAM__HIDDEN const ErlNifFunc *beam__nif_funcs(int *count);
/* The index of the entry of funcs[count] that a call of self with argc
 * is, or -1. By function pointer and arity (argc -1: any arity); when one C
 * function is listed under several names (a normal and a dirty variant), the
 * entry for the scheduler the call runs on, and the first of those when several
 * ask for it (they cannot be told apart). twins false says funcs lists no
 * function twice: the first match is the entry, and the rest of the
 * table is not searched (a call's lookup of its load_info options). */
BEAM__HIDDEN int beam__nif_entry_of(const ErlNifFunc *funcs, int count,
                                    beam_nif_body_fn self, int argc,
                                    bool twins);
/* The table entry a call of self is as a continuation its own call
 * scheduled (beam_nif_schedule): the index of that call's entry, or -1
 * (not such a continuation: the entry is beam__nif_entry_of's). */
BEAM__HIDDEN int beam__nif_continued_entry(beam_nif_body_fn self);
/* The scheduler an entry asks for: 0 (normal) or its dirty flag. */
BEAM__HIDDEN unsigned beam__nif_entry_kind(const ErlNifFunc *f);
/* The load failure code of a load or upgrade callback that let a C++
 * exception out (beam_nif_internal_callback_threw), after load_options.c's
 * codes 0xba1-0xba7 (and 0xbaa, 0xbab); beam_alloc:explain_load_error/1
 * reads them all, and the two upgrade codes below. */
#define BEAM__LOAD_CALLBACK_THREW 0xba8
/* An upgrade without an upgrade callback of a library already loaded,
 * whose load callback would not run (beam_nif_upgrade_without_callback). */
#define BEAM__UPGRADE_NEEDS_CALLBACK 0xba9
/* An upgrade without callbacks from the file this copy of the library was
 * loaded from, rebuilt since: the new version would run this old copy. */
#define BEAM__UPGRADE_FILE_CHANGED 0xbac

/* The end of a load or upgrade whose load_info beam_nif_load_options took
 * (result: what the library's callback returned): its options take effect
 * when it is 0, and are dropped otherwise (load_options.c). */
BEAM__HIDDEN void beam__load_options_settle(int result);

/* The module atom's text registered at load ("" before). */
BEAM__HIDDEN const char *beam__nif_module_atom(void);
/* That module as its language writes it (my_mod, Foo.Bar), into buf:
 * what reports name the library by. */
BEAM__HIDDEN void beam__nif_module_text(char *buf, size_t size);
/* The hooks' loaded_at (abi.h): when a module instance last loaded this
 * copy. */
BEAM__HIDDEN int64_t beam__nif_loaded_at(void);
/* abi.h's beam__fault_hooks_at (copies.c), which the driver uses too. */
BEAM__HIDDEN const beam__fault_hooks *beam__fault_hooks_at(void *handle,
                                                           const char *path);
/* Does another copy of the library in the process (copies.c) run a newer
 * version of module than this copy, loaded at mine (loaded_at's stamp)?
 * Walks the loaded objects: for an unload, not a call. */
BEAM__HIDDEN bool beam__nif_newer_copy_runs(const char *module, int64_t mine);
/* The hooks' gpa_free (abi.h): a block another copy of this module's
 * library was asked to free and does not hold is this copy's when its
 * address map or its large blocks know it, while its allocators are up:
 * freed as though through its process-wide instance, which reports what
 * is wrong with the call (another instance's block, a wrong length, a
 * double free), and misuse says what that report found; true then
 * (copies.c). */
BEAM__HIDDEN bool beam__nif_take_free(void *mem, size_t len, size_t alignment,
                                      uintptr_t ret,
                                      beam__taken_misuse *misuse);
/* The hooks' gpa_size and gpa_resize_check (abi.h): the same for a size
 * query (nothing reported) and the check of a resize or remap (a resize
 * to the block's own length, which changes nothing and reports what is
 * wrong with the call), the block staying where it is (copies.c). */
BEAM__HIDDEN bool beam__nif_take_size(const void *mem, bool owned, size_t *len,
                                      size_t *alignment);
BEAM__HIDDEN bool beam__nif_take_resize_check(void *mem, size_t len,
                                              size_t alignment, bool remap,
                                              uintptr_t ret,
                                              beam__taken_misuse *misuse);
/* While the library's allocators are up (from its first load until the
 * last unload tears them down, which that of a copy kept for a C
 * library's hooks skips: glue.c, allocators_up): true, holding the lock
 * that teardown runs under; leave releases it. false otherwise (nothing
 * to read). For calls from outside the module's NIFs (the fault driver's
 * hooks). */
BEAM__HIDDEN bool beam__nif_library_enter(void);
BEAM__HIDDEN void beam__nif_library_leave(void);
/* A call's watch of the thread's misuse record (beam__misuse_record,
 * glue.c): from open, any misuse on this thread shows as count > before,
 * the record's kind and line being its first one's; close gives the
 * record back to the call around it, its first misuse (if it had one)
 * as it was. For a BEAM_NIF call's body, and for a free another copy of
 * the library passes this one (copies.c). */
typedef struct beam__nif_watch {
    unsigned long outer_watch, before;
    const char *outer_kind;
    bool outer_misused;
    char outer_line[BEAM__MISUSE_LINE];
} beam__nif_watch;
BEAM__HIDDEN void beam__nif_watch_open(beam__nif_watch *w);
BEAM__HIDDEN void beam__nif_watch_close(const beam__nif_watch *w);
/* The hooks' call_name (abi.h): the innermost BEAM_NIF call on this
 * thread, when it is one of fn, named as the reports name it (glue.c). */
BEAM__HIDDEN bool beam__nif_call_name(uintptr_t fn, char *buf, size_t n);
/* beam_gpa_collect on the leak_check instances kept (glue.c), entered. */
BEAM__HIDDEN void beam__nif_collect_kept(void);
/* beam_gpa_collect on every live BEAM_RESOURCE_GPA resource's instance
 * (resource.c), entered. */
BEAM__HIDDEN void beam__nif_collect_resources(void);
/* What those instances hold of their parents, keep live and have done,
 * summed (resource.c), entered. */
BEAM__HIDDEN void beam__nif_resources_holding(beam__holding *out);
/* Entries into r that found it released only after adding their unit
 * (resource.c): for tests, which count them instead of timing the
 * destructor's wait for calls in flight. */
BEAM__HIDDEN size_t beam__resource_late_entries(beam_resource_t *r);

/* Reports inside a BEAM (report.c): to the registered
 * 'Elixir.BeamAlloc.Reporter' or beam_alloc_reporter process, which logs
 * them, else stderr. */
BEAM__HIDDEN void beam__report_to_logger(void *user, const char *line);
/* Waiting for the reporter (report.c): the resource type of the
 * acknowledgements, opened at load and upgrade and used once the load
 * succeeded (beam_nif_loaded); and the end of an
 * outermost BEAM_NIF call, which returns result once the reporter has read
 * who made the call's reports (at once when it made none). */
BEAM__HIDDEN void beam__report_ack_open(ErlNifEnv *env);
BEAM__HIDDEN void beam__report_ack_loaded(int result);
/* Calls of this library that waited their whole bound for the reporter to
 * read their report (report.c): for tests, which count them instead of
 * timing the calls. */
BEAM__HIDDEN unsigned long beam__report_waits_ran_out(void);
/* Whether the library's module is an Erlang one (glue.c). */
BEAM__HIDDEN bool beam__module_is_erlang(void);
/* erlang:error's reason {Tag, Message} of an Erlang module's errors
 * (terms.c), Message a binary: false when it cannot be made (a tag longer
 * than an atom, no memory). */
BEAM__HIDDEN bool beam__error_term(ErlNifEnv *env, const char *tag,
                                   const char *message, ERL_NIF_TERM *out);
/* The Elixir exception struct beam_raise raises (terms.c), without
 * raising it: false when it cannot be made (no memory). */
BEAM__HIDDEN bool beam__exception_term(ErlNifEnv *env, const char *exception,
                                       const char *message, ERL_NIF_TERM *out);
/* The value a NIF returns when it raised or scheduled a continuation
 * (enif_schedule_nif): ERTS's non-value, 0 in a release emulator and
 * another header word in a debug one. A header's primary tag (the low two
 * bits, 00) is never that of a term a NIF can return (list 01, boxed 10,
 * immediate 11), in any build. */
static inline bool beam__is_non_value(ERL_NIF_TERM t) {
    return (t & 3) == 0;
}
/* The call's body scheduled a continuation: it returned the non-value
 * and raised nothing. */
static inline bool beam__scheduled(ErlNifEnv *env, ERL_NIF_TERM result) {
    return beam__is_non_value(result) && !enif_has_pending_exception(env, NULL);
}
/* The glue's per-thread state, one thread-local object: in a dlopen'ed
 * NIF every thread-local access is a call into the dynamic linker (a
 * short one in static TLS: internal.h), and beam_nif_call made seven per
 * call (three objects on entry, the same three again on exit, and this
 * one in beam__report_wait). It now reaches its three objects at the
 * static offsets learned at load (glue.c, learn_tls_offsets), and in
 * dynamic TLS takes each address once. */
typedef struct beam__nif_thread {
    /* The innermost BEAM_NIF running on this thread, for
     * beam_nif_function_name (NULL outside one: it points at
     * beam_nif_call's frame). glue.c's. */
    struct nif_call *call;
    /* The acknowledgement this thread's outermost BEAM_NIF call waits for:
     * the latest report's (the reporter reads messages in order).
     * report.c's. */
    struct report_ack *pending;
    /* The continuation beam_nif_schedule's trampoline runs on this thread:
     * 1 + the index of the table entry whose call scheduled it (0 outside
     * one), which calls of that entry's C function take for their name
     * and options. An index, not the function too: the thread-locals must
     * fit glibc's spare static TLS (tls-check). glue.c's; not read by
     * beam_nif_call. */
    int continued;
    /* This thread is serving another copy of the module (copies.c's);
     * here beside continued, where it costs no bytes of its own. */
    bool taking;
} beam__nif_thread;
BEAM__HIDDEN extern BEAM_THREAD_LOCAL beam__nif_thread beam__nif_here;
/* Runs fn(end, arg) in an end as a NIF call's (beam__call_end): a report
 * made meanwhile says end's text where it would name its caller. Out of a
 * call (a destructor, a thread of the NIF's), as in one. For the library's
 * own work after the fact (a composed call giving its allocators back and
 * its leak check's look at freed blocks; a resource's teardown), whose
 * frames tell the reader nothing. glue.c's. */
BEAM__HIDDEN void beam__nif_in_end(beam__call_end *end,
                                   void (*fn)(beam__call_end *end, void *arg),
                                   void *arg);
/* The outermost call's end, with beam__nif_here.pending set or dropped
 * (its reports that were not sent: the reporter too far behind) not 0:
 * says how many of the call's reports (and of the library's no call
 * could say, as nobody's) were dropped, waits for the reporter to have
 * read the call's reports, then returns result. */
BEAM__HIDDEN ERL_NIF_TERM beam__report_wait(ErlNifEnv *env, ERL_NIF_TERM result,
                                            unsigned long dropped);
/* Counts a report of the running BEAM_NIF call that was not sent, for its
 * outermost call's end to say (on the call's frame, not in the thread's
 * static TLS: glibc's spare is 512 bytes). glue.c's. */
BEAM__HIDDEN void beam__nif_count_dropped(void);
/* Calls visit with the path of each object the loader has loaded, until it
 * returns true: true then. The paths are gathered first, so visit may
 * dlopen them (the loader's lock is not held). copies.c's. */
BEAM__HIDDEN bool
beam__nif_each_object(bool (*visit)(const char *path, void *arg), void *arg);
/* The env of the BEAM_NIF call running on this thread, or NULL. */
BEAM__HIDDEN ErlNifEnv *beam__nif_current_env(void);
/* The parent a resource made now takes for parent: parent itself, but
 * for the allocator of the running call's own that leak_check, scratch or
 * fault injection gave beam_allocator (gone at the call's return), the
 * allocator beam_allocator is without them; *injected: parent was fault
 * injection's. */
BEAM__HIDDEN beam_allocator_t beam__nif_lasting_parent(beam_allocator_t parent,
                                                       bool *injected);

/* The attached driver of this copy, or NULL (the common case). Read with
 * one relaxed load on every BEAM_NIF call. */
BEAM__HIDDEN extern _Atomic(const beam__fault_driver *) beam__fault_driver_now;
/* A call was given driver's plan allocator plan: noted for
 * beam__fault_under (internal.h). */
BEAM__HIDDEN void beam__fault_note_plan(const beam__fault_driver *driver,
                                        beam_allocator_t plan);
/* This copy's hooks (what beam_nif_fault_hooks_internal returns). */
BEAM__HIDDEN extern const beam__fault_hooks beam__fault_hooks_self;

#endif
