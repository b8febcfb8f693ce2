/*
 * The NIF glue: what BEAM_NIF and BEAM_NIF_INIT expand to call.
 *
 * beam_nif_call brackets every BEAM_NIF body: it sets the thread-local
 * beam_allocator for the call and puts the thread's previous value back
 * afterwards. Putting it back matters for leak_check and scratch, whose
 * allocators go at the end of the call: a raw NIF (which sets nothing)
 * running later on the same scheduler must never find beam_allocator
 * pointing at one of them.
 *
 * The library is linked statically into each NIF shared object, so this
 * file's statics belong to one NIF module: BEAM_NIF_INIT registers that
 * module's name and function table at load and upgrade, and leak messages
 * look the running function up there.
 */
#include "../frames.h"
#include "../os/library_file.h"
#include "nif_internal.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Atoms are at most 255 characters; one more for the terminator. */
static char module_atom[256];
/* Whether module_atom holds the name, set (release) once it is written:
 * the fault driver reads the name from other threads (h->module()) while
 * the VM runs the copy's first load, which writes it. Until then the name
 * reads "" (a plain read raced the write: ThreadSanitizer). */
static _Atomic bool module_named;
/* Whether this VM's Erlang writes maybe and else quoted (put_erlang_atom):
 * io_lib quotes the keywords of the features the runtime has on, and
 * maybe_expr's are on by default from OTP 27 (experimental, off, in 25 and
 * 26). Set at each load (beam_nif_register), before any message. */
static _Atomic bool quote_maybe;
/* The table lives in the same shared object as this copy of the library
 * (BEAM_NIF_INIT passes the user's static ErlNifFunc array), so keeping the
 * pointer is safe for as long as any of these functions can run. Written
 * at load/upgrade, before the VM lets any of the module's NIFs run. */
static const ErlNifFunc *module_funcs;
static int module_func_count;
/* The entries of the table that list a C function also listed for another
 * kind of scheduler (a normal and a dirty twin), in table order: only a
 * continuation of one (beam_nif_schedule) carries the entry of the call
 * that scheduled it, by the trampoline of the entry's slot here. */
#define CARRY_SLOTS 16
static int carry_entry[CARRY_SLOTS];
static int carry_count;

/* The name is written once: each load and upgrade of a copy passes the
 * same one, and the fault driver's stats/1 and collect/1 read it from other
 * threads meanwhile (h->module). snprintf empties the buffer before it
 * writes, so rewriting it at every reload made stats/1 answer
 * {not_loaded, M} now and then for a library mapped all along. (Another
 * name, which BEAM_NIF_INIT never passes, the VM checking the library's
 * against the module's, is written over the one readers may read.) */
void beam_nif_register(const char *module, const ErlNifFunc *funcs, int count) {
    beam__report_set_default(beam__report_to_logger);
    ErlNifSysInfo info;
    enif_system_info(&info, sizeof info);
    beam__atomic_store_relaxed(&quote_maybe, atoi(info.otp_release) >= 27);
    char name[sizeof module_atom] = "";
    snprintf(name, sizeof name, "%s", module ? module : "");
    if (strcmp(name, beam__nif_module_atom()) != 0) {
        beam__atomic_store_relaxed(&module_named, false);
        memcpy(module_atom, name, sizeof module_atom);
        beam__atomic_store_release(&module_named, true);
    }
    module_funcs = funcs;
    module_func_count = funcs != NULL && count > 0 ? count : 0;
    /* (Counted aside and stored once: at an upgrade the old code's
     * continuations may read the slots meanwhile, the same ones.) */
    int carried = 0;
    for (int i = 0; i < module_func_count && carried < CARRY_SLOTS; i++)
        for (int j = 0; j < module_func_count; j++)
            if (funcs[i].fptr == funcs[j].fptr &&
                beam__nif_entry_kind(&funcs[i]) !=
                    beam__nif_entry_kind(&funcs[j])) {
                carry_entry[carried++] = i;
                break;
            }
    carry_count = carried;
}

/* Module instances (old and new code of one module share this copy of the
 * library across a hot upgrade) that loaded successfully and are not yet
 * unloaded; and the lock under which the last unload tears the library's
 * allocators down, which the fault driver's stats and collect hooks take
 * too (they run on the driver's NIF calls, not on this module's: a
 * collect during the last unload used the process-wide instance as it
 * was freed and crashed the VM, a stats read hung on its freed lock). */
static pthread_mutex_t instances_lock = PTHREAD_MUTEX_INITIALIZER;
static int module_instances;
/* From the first of those loads until the last unload tears the
 * allocators down, which it skips for a copy kept for a C library's hooks
 * (SQLite, a zlib or zstd stream may use them still): the stats and
 * collect hooks read them until then, the module purged or not. (They
 * answered nothing once the module was purged: after a hot upgrade, what
 * SQLite held through a kept copy's hooks read 0 while its instance held
 * it.) A resource never keeps them up: the VM runs the unload callback of
 * a library whose resources outlive its module only after their last
 * destructor (erl_nif.c, close_lib), and a resource's destructor tears
 * its own allocator down (upgrade_test: a copy kept mapped by a resource
 * alone gives its memory back). */
static bool allocators_up;
/* The VM's monotonic time of the last of those loads, INT64_MIN before:
 * which copy of a module's library runs, for drivers that read only that
 * one (today's sums every copy: abi.h, loaded_at). */
static int64_t loaded_at = INT64_MIN;
/* The file this copy was mapped from, as it was then (the first load's):
 * a module loading the same path gets this copy while it is mapped,
 * whatever the file holds now (upgrade_from_same_file). */
static char loaded_path[1024];
static beam__file_id loaded_file;

/* Kept mapped by its last unload for a newer version of its module
 * (kept_for_newer_version), not for a C library's hooks: what the reports
 * below say. */
static _Atomic bool kept_for_newer;

/* Why the VM hands a module this copy whatever its file holds now, when
 * it is kept for good (beam_internal_keep_mapped): a copy whose zlib, zstd
 * or SQLite hooks ran, or one a newer version of its module left with
 * blocks live, stays mapped until the VM exits, and no purge unloads it,
 * which the reports below say instead of their usual causes and advice
 * (they said a resource or a check kept it, and to purge: found in
 * review). */
static const char *kept_for_good(void) {
    return beam__atomic_load_relaxed(&kept_for_newer)
               ? "the copy is kept mapped until the node stops (a newer "
                 "version left it with blocks live), so no purge unloads it"
               : "the copy is kept mapped until the node stops (its zlib, "
                 "zstd or SQLite hooks ran: beam_alloc/zlib.h says why), so "
                 "no purge unloads it";
}

/* A module instance loads this copy again (after a purge, while the copy
 * stayed mapped: a resource of it alive, a check's handle, its adapter
 * hooks; or an upgrade through the user's own callback): the module runs
 * the copy's C code, not the file's if it was rebuilt since. Said, not
 * refused: the module works. Unless the copy is kept for good, a purge,
 * delete and purge once nothing holds it maps the file anew, as a restart
 * does (the advice was a restart alone: an adopter found the purge works;
 * then a delete first, which code:delete/1 refuses after an upgrade while
 * the old version is there: review).
 * (Upgrades without callbacks fail instead: upgrade_from_same_file.) */
static void say_if_stale_reload(void) {
    if (beam__file_unchanged(loaded_path, &loaded_file))
        return;
    char module[300];
    beam__nif_module_text(module, sizeof module);
    bool kept = beam__library_kept_mapped();
    beam__report("beam_alloc: %s loads its NIF library from %s, rebuilt "
                 "since the VM mapped it; the VM hands it the copy it has "
                 "under that name (%s), so the module runs the old C code: "
                 "%s",
                 module, loaded_path,
                 kept ? kept_for_good()
                      : "an upgrade through the upgrade callback, or a load "
                        "while a resource of the copy is alive or a check "
                        "holds it",
                 kept ? "restart the node to run the new one"
                      : "to run the new one, purge, delete and purge the "
                        "module (code:purge/1, code:delete/1, code:purge/1) "
                        "once no resource of "
                        "this copy is alive and no check holds it, then load "
                        "it again; or restart the node");
}

/* beam_nif_call's three thread-locals in static TLS (os/tls.h): their
 * offsets, learned at load, make each a thread pointer plus a constant,
 * with no call at all. tls_stop_off, stored last, says all three are
 * known; 0 (not learned, or one of them dynamic) keeps the ordinary
 * access. */
#ifdef BEAM__HAVE_TLS_OFFSET
static _Atomic intptr_t tls_allocator_off, tls_here_off, tls_stop_off;

static void learn_tls_offsets(void) {
    if (beam__atomic_load_acquire(&tls_stop_off) != 0)
        return;
    intptr_t a = BEAM__TLS_STATIC_OFFSET(beam_allocator);
    intptr_t h = BEAM__TLS_STATIC_OFFSET(beam__nif_here);
    intptr_t s = BEAM__TLS_STATIC_OFFSET(beam__frames_stop);
    if (a == 0 || h == 0 || s == 0)
        return;
    beam__atomic_store_relaxed(&tls_allocator_off, a);
    beam__atomic_store_relaxed(&tls_here_off, h);
    beam__atomic_store_release(&tls_stop_off, s);
}
#else
static void learn_tls_offsets(void) {}
#endif

int beam_nif_loaded(int result) {
    learn_tls_offsets();
    beam__report_ack_loaded(result);
    beam__load_options_settle(result);
    if (result == 0) {
        int64_t now = enif_monotonic_time(ERL_NIF_NSEC);
        pthread_mutex_lock(&instances_lock);
        module_instances++;
        allocators_up = true;
        loaded_at = now;
        pthread_mutex_unlock(&instances_lock);
        if (!loaded_file.known)
            beam__library_file((const void *)beam_nif_loaded, loaded_path,
                               sizeof loaded_path, &loaded_file);
        else
            say_if_stale_reload();
    }
    return result;
}

/* A new version of the module, with no load callback, loads the file this
 * copy came from. The dynamic linker hands back this copy, loaded under
 * that name, even when the file was rebuilt since: the new version would
 * then run the old C code, silently (found by a bug hunt: a recompile in a
 * running node kept the old NIFs). Then the upgrade fails and says how to
 * get the new code; otherwise it takes place. */
static int upgrade_from_same_file(void) {
    if (beam__file_unchanged(loaded_path, &loaded_file))
        return beam_nif_loaded(0);
    char module[300];
    beam__nif_module_text(module, sizeof module);
    bool kept = beam__library_kept_mapped();
    beam__report("beam_alloc: a new version of %s loads its NIF library from "
                 "%s, which was rebuilt since the VM loaded it; the VM keeps "
                 "the copy it has under that name, so the new version would "
                 "run the old C code: the upgrade fails. %s%s%s",
                 module, loaded_path, kept ? "And " : "",
                 kept ? kept_for_good()
                      : "Purge, delete and purge the module (code:purge/1, "
                        "code:delete/1, code:purge/1), then load it again; or "
                        "restart the node",
                 kept ? ": restart the node" : "");
    return beam_nif_loaded(BEAM__UPGRADE_FILE_CHANGED);
}

/* A new version of the module loads this library while its old version
 * keeps one, and BEAM_NIF_INIT was given no upgrade callback (load: its
 * load callback's caller, NULL when it has none). Returning 0 there (all
 * this did before) left a library loaded from another file (a fresh copy:
 * no module instance of it yet) with its load callback never run: its
 * first NIF call used a resource type never opened and crashed the VM
 * (found in review). Such a copy now runs the load callback, as a first
 * load would. A copy already loaded cannot share what its load callback
 * set up: the resource types it opened belong to the old version, and go
 * when it is purged (and priv_data starts NULL); that upgrade fails, as
 * ERL_NIF_INIT's would, and says why, naming the cover tools: most meet
 * it in a coverage run, which loads a cover-compiled version beside the
 * one already loaded (the compiler's under mix test --cover, eunit's
 * cover-compiled one under rebar3's ct --cover), not in a hot upgrade
 * (found auditing the tools users run in CI). With no load callback there is
 * nothing of the user's to set up. (module_instances is read once: loads,
 * upgrades and purges of a module do not overlap, the code server's
 * lock.) */
int beam_nif_upgrade_without_callback(ErlNifEnv *env, void **priv,
                                      ERL_NIF_TERM info,
                                      beam_nif_load_fn load) {
    pthread_mutex_lock(&instances_lock);
    bool fresh = module_instances == 0;
    pthread_mutex_unlock(&instances_lock);
    if (load == NULL)
        return fresh ? beam_nif_loaded(0) : upgrade_from_same_file();
    if (fresh)
        return load(env, priv, info);
    char module[300];
    beam__nif_module_text(module, sizeof module);
    beam__report("beam_alloc: a new version of %s loads the NIF library its "
                 "old version runs, and BEAM_NIF_INIT has a load callback but "
                 "no upgrade callback: what the load set up (its resource "
                 "types, priv_data) stays the old version's and goes when it "
                 "is purged, so the upgrade fails, as with ERL_NIF_INIT (give "
                 "an upgrade callback; it may open the types with "
                 "ERL_NIF_RT_TAKEOVER). Cover tools load such a version: "
                 "mix test --cover when it compiled the module (the old "
                 "version then runs the tests uncovered; MIX_ENV=test mix "
                 "compile first avoids it) and rebar3 do eunit --cover, ct "
                 "--cover.",
                 module);
    return beam_nif_loaded(BEAM__UPGRADE_NEEDS_CALLBACK);
}

int beam_nif_internal_callback_threw(ErlNifEnv *env, const char *callback,
                                     const char *text) {
    (void)env;
    char module[300];
    beam__nif_module_text(module, sizeof module);
    bool unload = callback != NULL && strcmp(callback, "unload") == 0;
    beam__report("beam_alloc: the %s callback of the NIF library of %s let a "
                 "C++ exception out: %s; %s",
                 callback ? callback : "load", module, text ? text : "",
                 unload ? "the library is unloaded all the same"
                        : "the load fails");
    return BEAM__LOAD_CALLBACK_THREW;
}

int64_t beam__nif_loaded_at(void) {
    pthread_mutex_lock(&instances_lock);
    int64_t at = loaded_at;
    pthread_mutex_unlock(&instances_lock);
    return at;
}

bool beam__nif_library_enter(void) {
    pthread_mutex_lock(&instances_lock);
    if (allocators_up)
        return true;
    pthread_mutex_unlock(&instances_lock);
    return false;
}

void beam__nif_library_leave(void) {
    pthread_mutex_unlock(&instances_lock);
}

/* A leak_check call's instance, on the heap. One whose call left blocks
 * live is kept (a leak, reported and raised), never deinitialised while
 * the library lives: the body may have stored a copy of its beam_allocator
 * with a block (a zstd context in a resource, say), and a later free
 * through it must find the instance, not a dead stack frame (it did: a
 * resource's destructor crashed the VM). Kept ones go at the last unload. */
typedef struct kept_instance {
    beam_gpa_t gpa;
    struct kept_instance *next;
} kept_instance;
static kept_instance *_Atomic kept_instances;
/* Kept instances a new keep collects, newest first (below). */
#define KEPT_COLLECTED 16

static void keep_instance(kept_instance *k) {
    /* Its leaks were reported in their call: not again when it goes (with
     * the instance it is over, too: gpa.c, deinit_instance_over). */
    k->gpa.flags |= BEAM_GPA_QUIET_LEAKS;
    kept_instance *head = beam__atomic_load_relaxed(&kept_instances);
    do {
        k->next = head;
    } while (!beam__atomic_cas_weak_release(&kept_instances, &head, k));
}

/* Before the process-wide instance goes: a kept instance may take its
 * memory from it (.allocator gpa). One over any other backing than raw,
 * large and that one is left as it is: its backing may be gone already
 * (a user's instance, deinitialised in the library's unload callback,
 * which runs first), and with it everything the kept one holds. */
static bool kept_over_ours(const kept_instance *k) {
    const beam_allocator_t b = k->gpa.backing;
    return b.vtable == &beam__raw_vtable || b.vtable == &beam__large_vtable ||
           (b.vtable == &beam__gpa_vtable &&
            b.ctx == &beam_general_purpose_allocator_instance);
}

static void free_kept_instances(void) {
    kept_instance *k = beam__atomic_exchange_acquire(&kept_instances, NULL);
    while (k != NULL) {
        kept_instance *next = k->next;
        if (kept_over_ours(k))
            beam_gpa_deinit(&k->gpa);
        beam__sys_free(k);
        k = next;
    }
}

/* What the kept leak_check instances hold: their live blocks (the user's),
 * and the chunks they take from the copy's raw and large allocators
 * (theirs, not the user's). One over any other backing is counted as
 * holding: what it takes cannot be told apart from the user's blocks. */
typedef struct kept_holdings {
    size_t live_blocks, live_bytes, from_raw, from_large;
} kept_holdings;

static kept_holdings kept_instances_hold(void) {
    kept_holdings h = {0, 0, 0, 0};
    for (kept_instance *k = beam__atomic_load_acquire(&kept_instances);
         k != NULL; k = k->next) {
        const beam_allocator_vtable *backing = k->gpa.backing.vtable;
        if (backing != &beam__raw_vtable && backing != &beam__large_vtable) {
            h.live_blocks++;
            continue;
        }
        beam_gpa_usage u = beam_gpa_usage_of(&k->gpa);
        h.live_blocks += u.live_blocks;
        h.live_bytes += u.live_bytes;
        *(backing == &beam__raw_vtable ? &h.from_raw : &h.from_large) +=
            u.backing_bytes;
    }
    return h;
}

/* What the copy's allocators hold for its user: live blocks of the
 * process-wide instance and of the kept leak_check instances, and bytes
 * of the raw and large allocators beyond what those instances take. Each
 * one, for the report: it gave the process-wide instance's alone, and a
 * copy kept for a raw block (what a BEAM_NIF without options allocates)
 * read "0 ..., 0 bytes" (found in review); a kept instance whose blocks
 * were all freed since, its chunk counted as the user's, kept an upgraded
 * copy mapped for good (found by a release upgrade). */
typedef struct copy_held {
    size_t gpa_blocks, gpa_bytes, kept_blocks, kept_bytes, raw_bytes,
        large_bytes;
} copy_held;

static size_t beyond(size_t live, size_t theirs) {
    return live > theirs ? live - theirs : 0;
}

static copy_held held_by_copy(void) {
    beam_alloc_stats raw, large, gpa;
    beam_allocator_stats(beam_raw_allocator, &raw);
    beam_allocator_stats(beam_large_allocator, &large);
    beam_allocator_stats(beam_general_purpose_allocator, &gpa);
    size_t backing = beam_gpa_usage_of(&beam_general_purpose_allocator_instance)
                         .backing_bytes;
    kept_holdings k = kept_instances_hold();
    return (copy_held){gpa.live_blocks,
                       gpa.live_bytes,
                       k.live_blocks,
                       k.live_bytes,
                       beyond(raw.live_bytes, k.from_raw),
                       beyond(large.live_bytes, backing + k.from_large)};
}

static bool holds_blocks(const copy_held *h) {
    return h->gpa_blocks != 0 || h->kept_blocks != 0 || h->raw_bytes != 0 ||
           h->large_bytes != 0;
}

/* The last unload of a copy that a newer version of its module replaced
 * (an upgrade, from another file), its allocators holding blocks still: a
 * resource type that version opened with ERL_NIF_RT_TAKEOVER is the new
 * copy's now, so the VM unloads this one while such a resource may hold
 * those blocks, or a beam_allocator_t of this copy. Torn down, they
 * dangled: the next call on the resource read freed memory and the VM
 * died (SIGSEGV; found by an adopter's upgrade). So the copy stays
 * mapped, its allocators up, until the node stops, and says so; what they
 * cache goes back. A copy no newer version replaced (its module deleted
 * and purged) gives everything back at once, as before: nothing of the
 * module can reach its blocks. No lock of ours held: the walk asks the
 * other copies, whose own unloads may ask this one. */
static bool kept_for_newer_version(int64_t at) {
    const copy_held h = held_by_copy();
    if (!holds_blocks(&h) ||
        !beam__nif_newer_copy_runs(beam__nif_module_atom(), at))
        return false;
    (void)beam_internal_keep_mapped();
    beam__atomic_store_relaxed(&kept_for_newer, true);
    /* (Not entered, as collects are elsewhere: no teardown can run, this
     * thread being the unload; a collect meanwhile takes each instance's
     * own lock.) */
    beam_gpa_collect(&beam_general_purpose_allocator_instance);
    beam__nif_collect_kept();
    char module[300];
    beam__nif_module_text(module, sizeof module);
    beam__report("beam_alloc: %s's old NIF library (%s) is unloaded while a "
                 "newer version of the module runs, and its allocators still "
                 "hold blocks (process-wide general purpose: %zu, %zu bytes; "
                 "raw: %zu bytes; large: %zu bytes; leak_check instances kept "
                 "after a leak: %zu, %zu bytes): a resource type the new "
                 "version took over (ERL_NIF_RT_TAKEOVER) may hold them, or a "
                 "static the unload callback did not free. The old copy stays "
                 "mapped, with its allocators, until the node "
                 "stops",
                 module, loaded_path[0] ? loaded_path : "?", h.gpa_blocks,
                 h.gpa_bytes, h.raw_bytes, h.large_bytes, h.kept_blocks,
                 h.kept_bytes);
    return true;
}

/* No module instance left, nor anything else that may run the library
 * (instances_lock held). (Kept mapped, the library can run still:
 * SQLite's hooks, say, or a zlib stream's in a resource another copy took
 * over. No resource of ours is live here, the VM calling this after their
 * destructors (allocators_up): that test is a guard.) */
static bool nothing_runs_it(void) {
    return module_instances == 0 && beam_resource_live_count() == 0 &&
           !beam__library_kept_mapped();
}

void beam_nif_unloaded(void) {
    pthread_mutex_lock(&instances_lock);
    --module_instances;
    bool last = nothing_runs_it();
    int64_t at = loaded_at;
    pthread_mutex_unlock(&instances_lock);
    if (!last || kept_for_newer_version(at))
        return;
    pthread_mutex_lock(&instances_lock);
    /* (Loads and unloads of the library do not overlap, the code
     * server's lock: asked again all the same.) */
    if (nothing_runs_it()) {
        /* Nothing of this library can run any more: its process-wide
         * instance goes, with whatever blocks it still has (unreachable
         * now), and so do the leak_check instances kept with blocks
         * live. */
        free_kept_instances();
        beam_general_purpose_allocator_instance.flags |= BEAM_GPA_QUIET_LEAKS;
        beam_gpa_deinit(&beam_general_purpose_allocator_instance);
        /* As it was before its first use: a library the VM keeps mapped
         * and loads again starts with it usable (deinit leaves an
         * instance refusing until it is initialised again). */
        beam_gpa_init(&beam_general_purpose_allocator_instance,
                      beam_large_allocator);
        /* And the schedulers' per-thread buffers, which outlive the
         * library. */
        beam__cold_release_all();
        allocators_up = false;
    }
    pthread_mutex_unlock(&instances_lock);
}

/* Kept instances give back what their blocks no longer need (a kept
 * instance's blocks may all be freed by now; it stays, its memory need
 * not): max of them from k on, the list being newest first. At each keep
 * the KEPT_COLLECTED before it, which bounds a keep's cost (all of them
 * made keeping quadratic: 375 ms for 2000 leaks); all of them from
 * BeamAlloc.collect/1 (fault.c, library entered). Either way no unload
 * can run meanwhile. Only those over the library's own allocators: a
 * user's may be gone (deinitialised in UNLOAD, which runs before the last
 * unload takes the lock), and its code must not run under the lock
 * anyway. */
static void collect_kept_from(kept_instance *k, size_t max) {
    for (; k != NULL && max-- > 0; k = k->next)
        if (kept_over_ours(k))
            beam_gpa_collect(&k->gpa);
}

void beam__nif_collect_kept(void) {
    collect_kept_from(beam__atomic_load_acquire(&kept_instances), SIZE_MAX);
}

unsigned beam__nif_entry_kind(const ErlNifFunc *f) {
    return f->flags &
           (ERL_NIF_DIRTY_JOB_CPU_BOUND | ERL_NIF_DIRTY_JOB_IO_BOUND);
}

/* This thread's scheduler as an entry's flags say it: 0 (normal, or no
 * scheduler), ERL_NIF_DIRTY_JOB_CPU_BOUND or ERL_NIF_DIRTY_JOB_IO_BOUND. */
static unsigned thread_kind(void) {
    switch (enif_thread_type()) {
    case ERL_NIF_THR_DIRTY_CPU_SCHEDULER:
        return ERL_NIF_DIRTY_JOB_CPU_BOUND;
    case ERL_NIF_THR_DIRTY_IO_SCHEDULER:
        return ERL_NIF_DIRTY_JOB_IO_BOUND;
    default:
        return 0;
    }
}

static bool entry_is(const ErlNifFunc *f, beam_nif_body_fn self, int argc) {
    return (beam_nif_body_fn)f->fptr == self &&
           (argc < 0 || (int)f->arity == argc);
}

int beam__nif_entry_of(const ErlNifFunc *funcs, int count,
                       beam_nif_body_fn self, int argc, bool twins) {
    int first = 0;
    while (first < count && !entry_is(&funcs[first], self, argc))
        first++;
    if (first == count || !twins)
        return first == count ? -1 : first;
    /* Twins (one C function under several names, often a normal and a
     * dirty variant): the one for the scheduler this call runs on. */
    unsigned kind = ~0u;
    for (int i = first + 1; i < count; i++) {
        if (!entry_is(&funcs[i], self, argc))
            continue;
        if (kind == ~0u)
            kind = thread_kind();
        if (beam__nif_entry_kind(&funcs[first]) != kind &&
            beam__nif_entry_kind(&funcs[i]) == kind)
            return i;
    }
    return first;
}

const ErlNifFunc *beam__nif_funcs(int *count) {
    *count = module_func_count;
    return module_funcs;
}

const char *beam__nif_module_atom(void) {
    return beam__atomic_load_acquire(&module_named) ? module_atom : "";
}

/* --- Writing names the way Elixir's inspect/1 does ---------------------- */

static bool is_upper(char c) {
    return c >= 'A' && c <= 'Z';
}
static bool is_lower(char c) {
    return c >= 'a' && c <= 'z';
}
static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
static bool is_ident_char(char c) {
    return is_upper(c) || is_lower(c) || is_digit(c) || c == '_';
}

/* Names (a NIF table's, BEAM_NIF_INIT's module) are Latin-1, one byte a
 * character: so the VM reads them (erl_nif.c's load_nif). Both languages
 * write a Latin-1 letter in a bare atom, starting with a lowercase one
 * (ß to ÿ but ÷); the bytes were quoted and each written as "?". */
static bool is_latin1_letter(char c) {
    const unsigned char u = (unsigned char)c;
    return u >= 0xC0 && u != 0xD7 && u != 0xF7;
}
static bool is_latin1_lower(char c) {
    return is_latin1_letter(c) && (unsigned char)c >= 0xDF;
}

/* "Foo.Bar": dot-separated aliases, each an uppercase letter followed by
 * identifier characters. */
static bool is_alias_path(const char *s) {
    if (*s == '\0')
        return false;
    while (*s) {
        if (!is_upper(*s))
            return false;
        s++;
        while (is_ident_char(*s))
            s++;
        if (*s == '.')
            s++;
        else if (*s != '\0')
            return false;
        else
            break;
        if (*s == '\0') /* a trailing dot */
            return false;
    }
    return true;
}

/* An atom Elixir writes without quotes: a lowercase letter or underscore,
 * identifier characters (Latin-1 letters and the middle dot, U+00B7, too)
 * or @, and an optional trailing ? or !. */
static bool is_plain_atom(const char *s, bool allow_at) {
    if (!(is_lower(*s) || *s == '_' || is_latin1_lower(*s)))
        return false;
    for (s++; *s; s++) {
        if (is_ident_char(*s) || is_latin1_letter(*s) ||
            (unsigned char)*s == 0xB7 || (allow_at && *s == '@'))
            continue;
        if ((*s == '?' || *s == '!') && s[1] == '\0')
            return true;
        return false;
    }
    return true;
}

/* Append s to buf (capacity n, current length *len) whole; once a piece
 * does not fit, nothing more. The pieces are characters and escapes: a
 * message cut short ended in half an escape ("\x01\x"), or left out a
 * 2-byte character and went on with a 1-byte one after it (leak_check_test,
 * long_name_nif). */
static void put(char *buf, size_t n, size_t *len, const char *s) {
    const size_t l = strlen(s);
    if (l > n - 1 - *len) {
        *len = n - 1; /* full: the text ends where it did */
        return;
    }
    memcpy(buf + *len, s, l);
    *len += l;
    buf[*len] = '\0';
}

/* Append the Latin-1 character c in UTF-8. */
static void put_latin1_char(char *buf, size_t n, size_t *len, unsigned char c) {
    char one[3] = {(char)c, '\0', '\0'};
    if (c >= 0x80) {
        one[0] = (char)(0xC0 | (c >> 6));
        one[1] = (char)(0x80 | (c & 0x3F));
    }
    put(buf, n, len, one);
}

/* A name (Latin-1) in UTF-8. */
static void put_latin1(char *buf, size_t n, size_t *len, const char *s) {
    for (; *s; s++)
        put_latin1_char(buf, n, len, (unsigned char)*s);
}

/* s between two quote characters, escaped as Elixir's inspect ("name")
 * and Erlang's ~tw ('name') write quoted atoms: the quote and backslash,
 * the control characters with a letter of their own, the others in hex
 * (Elixir) or octal (Erlang), and for Elixir #{ (\#{, not to read as
 * interpolation). */
static void put_escaped(char *buf, size_t n, size_t *len, const char *s,
                        char quote) {
    static const char letters[] = "\a\b\t\n\v\f\r\x1b\x7f";
    static const char names[] = "abtnvfred";
    const bool erlang = quote == '\'';
    const char q[2] = {quote, '\0'};
    put(buf, n, len, q);
    for (; *s; s++) {
        char one[6];
        const unsigned char c = (unsigned char)*s;
        const char *letter = c != 0 ? strchr(letters, c) : NULL;
        if (c == (unsigned char)quote || c == '\\' ||
            (!erlang && c == '#' && s[1] == '{'))
            snprintf(one, sizeof one, "\\%c", c);
        else if (letter != NULL && !(erlang && c == '\a'))
            snprintf(one, sizeof one, "\\%c", names[letter - letters]);
        else if (c < 0x20 || (c >= 0x7F && c < 0xA0))
            snprintf(one, sizeof one, erlang ? "\\%03o" : "\\x%02X", c);
        else {
            put_latin1_char(buf, n, len, c);
            continue;
        }
        put(buf, n, len, one);
    }
    put(buf, n, len, q);
}

/* "name" with the escapes Elixir's inspect uses for quoted atoms. */
static void put_quoted(char *buf, size_t n, size_t *len, const char *s) {
    put_escaped(buf, n, len, s, '"');
}

/* The module as inspect/1 writes it: Elixir.Foo.Bar -> Foo.Bar, my_mod ->
 * :my_mod, anything else quoted. */
static void put_module(char *buf, size_t n, size_t *len, const char *atom) {
    static const char prefix[] = "Elixir.";
    if (strcmp(atom, "Elixir") == 0) {
        put(buf, n, len, atom);
    } else if (strncmp(atom, prefix, sizeof prefix - 1) == 0 &&
               is_alias_path(atom + sizeof prefix - 1)) {
        put(buf, n, len, atom + sizeof prefix - 1);
    } else if (strcmp(atom, "nil") == 0 || strcmp(atom, "true") == 0 ||
               strcmp(atom, "false") == 0) {
        put(buf, n, len, atom);
    } else {
        put(buf, n, len, ":");
        if (is_plain_atom(atom, true))
            put_latin1(buf, n, len, atom);
        else
            put_quoted(buf, n, len, atom);
    }
}

/* Elixir's operators (Code.Identifier's unary_op and binary_op, less
 * the ones Macro.inspect_atom(:remote_call, _) calls not callable: ..
 * ... .), which Exception.format_mfa writes bare after "M." (Kernel.+/2,
 * Foo.<~>/0) though they are not identifiers. */
static bool is_elixir_operator(const char *s) {
    static const char *const ops[] = {
        "&",   "!",   "^",   "+",   "-",   "~~~", "@",   "<-",  "\\\\",
        "::",  "|",   "=",   "||",  "|||", "&&",  "&&&", "==",  "!=",
        "=~",  "===", "!==", "<",   "<=",  ">=",  ">",   "|>",  "<<<",
        ">>>", "<~",  "~>",  "<<~", "~>>", "<~>", "<|>", "^^^", "++",
        "--",  "<>",  "+++", "---", "*",   "/",   "**"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        if (strcmp(s, ops[i]) == 0)
            return true;
    return false;
}

/* The function name after "M." as Exception.format_mfa writes it: bare
 * when it is an identifier or an operator, quoted otherwise
 * (Mod."odd-name"/0). */
static void put_function(char *buf, size_t n, size_t *len, const char *fun) {
    if (is_plain_atom(fun, false) || is_elixir_operator(fun))
        put_latin1(buf, n, len, fun);
    else
        put_quoted(buf, n, len, fun);
}

/* --- The running call --------------------------------------------------- */

typedef struct nif_call {
    beam_nif_body_fn self;
    const char *c_name;
    int argc;
    ErlNifEnv *env;
    /* While the body runs, when leak_check, scratch or fault injection
     * gave it an allocator of the call's own (scoped, gone at its
     * return): the one beam_allocator is without them (lasting). */
    beam_allocator_t scoped, lasting;
    unsigned char flags; /* CALL_INJECTED, CALL_AT_END, CALL_NONE */
    /* Reports of this call (and of calls inside it, once they returned)
     * that were not sent: the outermost call's end says how many. */
    unsigned long dropped;
    /* What a report made in the call's end says of it
     * (beam__call_ending): set then only, with CALL_AT_END, a bit of the
     * flags every call clears (a pointer cleared too was one more store
     * on every call). */
    const beam__call_end *ending;
} nif_call;
enum {
    /* scoped is fault injection's (else leak_check's or scratch's own) */
    CALL_INJECTED = 1,
    /* the call is in its end (beam__nif_in_end): ending is set */
    CALL_AT_END = 2,
    /* no call: beam__nif_in_end's stand-in, out of one */
    CALL_NONE = 4,
};

BEAM_THREAD_LOCAL beam__nif_thread beam__nif_here;

beam_allocator_t beam__nif_lasting_parent(beam_allocator_t parent,
                                          bool *injected) {
    const nif_call *c = beam__nif_here.call;
    *injected = false;
    if (c != NULL && c->scoped.vtable != NULL &&
        parent.vtable == c->scoped.vtable && parent.ctx == c->scoped.ctx) {
        *injected = (c->flags & CALL_INJECTED) != 0;
        return c->lasting;
    }
    return parent;
}

const beam__call_end *beam__call_ending(void) {
    const nif_call *c = beam__nif_here.call;
    return c != NULL && (c->flags & CALL_AT_END) != 0 ? c->ending : NULL;
}

/* Out of line: its callers' paths are cold (a composed call's end, a
 * teardown), and inlined it took the composed call 60 instructions. */
BEAM__NOINLINE void beam__nif_in_end(beam__call_end *end,
                                     void (*fn)(beam__call_end *end, void *arg),
                                     void *arg) {
    beam__nif_thread *t = &beam__nif_here;
    nif_call *c = t->call;
    /* Out of a call: a stand-in that names no function (CALL_NONE), with no
     * allocator of its own, no env. */
    nif_call none;
    if (c == NULL) {
        memset(&none, 0, sizeof none);
        none.flags = CALL_NONE;
        c = t->call = &none;
    }
    const unsigned char flags = c->flags;
    const beam__call_end *const ending = c->ending;
    c->ending = end;
    c->flags |= CALL_AT_END;
    fn(end, arg);
    c->ending = ending;
    c->flags = flags;
    if (c == &none)
        t->call = NULL;
}

ErlNifEnv *beam__nif_current_env(void) {
    const nif_call *c = beam__nif_here.call;
    return c != NULL ? c->env : NULL;
}

void beam__nif_count_dropped(void) {
    nif_call *c = beam__nif_here.call;
    if (c != NULL)
        c->dropped++;
}

/* Atoms, escapes and an arity: a Latin-1 character takes 2 bytes in
 * UTF-8, so 255-character names fit twice over; one escaped in hex or
 * octal (a control character) takes 4, and a long module's NIF named with
 * little else is cut short, between two escapes (put). */
#define MFA_MAX BEAM__NIF_NAME_MAX

/* --- Writing names the way Erlang does ---------------------------------- */

/* Erlang's reserved words: atoms that need quotes although they look
 * plain. */
static bool is_erlang_reserved(const char *s) {
    if ((strcmp(s, "maybe") == 0 || strcmp(s, "else") == 0) &&
        beam__atomic_load_relaxed(&quote_maybe))
        return true;
    static const char *const words[] = {
        "after",  "and",     "andalso", "band", "begin", "bnot", "bor",
        "bsl",    "bsr",     "bxor",    "case", "catch", "cond", "div",
        "end",    "fun",     "if",      "let",  "not",   "of",   "or",
        "orelse", "receive", "rem",     "try",  "when",  "xor"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strcmp(s, words[i]) == 0)
            return true;
    return false;
}

/* An atom as io:format("~tw") writes it: bare when it starts with a
 * lowercase letter (Latin-1's too) followed by identifier characters,
 * Latin-1 letters or @, quoted with single quotes otherwise. */
static void put_erlang_atom(char *buf, size_t n, size_t *len, const char *s) {
    bool plain =
        (is_lower(*s) || is_latin1_lower(*s)) && !is_erlang_reserved(s);
    for (const char *p = s; plain && *p; p++)
        plain = is_ident_char(*p) || is_latin1_letter(*p) || *p == '@';
    if (plain) {
        put_latin1(buf, n, len, s);
        return;
    }
    put_escaped(buf, n, len, s, '\'');
}

/* Is the registered module an Erlang one (no "Elixir." prefix)? Its
 * messages are written the Erlang way and its errors are Erlang terms
 * (beam_raise's too, in terms.c). */
static bool is_erlang_module(const char *atom) {
    return atom[0] != '\0' && strncmp(atom, "Elixir.", 7) != 0 &&
           strcmp(atom, "Elixir") != 0;
}

bool beam__module_is_erlang(void) {
    return is_erlang_module(module_atom);
}

/* The module as its language writes it: my_mod, 'My-Mod', or MyApp.Nif
 * (an Elixir module's load errors said 'Elixir.MyApp.Nif'; found in a bug
 * hunt). */
void beam__nif_module_text(char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    if (module_atom[0] == '\0' || beam__module_is_erlang())
        put_erlang_atom(buf, size, &len, module_atom);
    else
        put_module(buf, size, &len, module_atom);
}

/* A NIF function as its module's language writes it, quoted where it
 * must be (MyNif."odd name"/1, my_nif:'end'/1), into buf of n bytes. */
static void nif_mfa_text(const char *module, const char *fun, unsigned arity,
                         char *buf, size_t n) {
    size_t len = 0;
    buf[0] = '\0';
    if (is_erlang_module(module)) {
        put_erlang_atom(buf, n, &len, module);
        put(buf, n, &len, ":");
        put_erlang_atom(buf, n, &len, fun);
    } else {
        if (module[0] != '\0') {
            put_module(buf, n, &len, module);
            put(buf, n, &len, ".");
        }
        put_function(buf, n, &len, fun);
    }
    char tail[16];
    snprintf(tail, sizeof tail, "/%u", arity);
    put(buf, n, &len, tail);
}

int beam__nif_continued_entry(beam_nif_body_fn self) {
    const int i = beam__nif_here.continued - 1;
    return i >= 0 && self != NULL &&
                   (beam_nif_body_fn)module_funcs[i].fptr == self
               ? i
               : -1;
}

/* The table entry call is (-1: its C function is not in the table). A
 * continuation of the call's own C function that beam_nif_schedule
 * carried is the entry of the call that scheduled it; any other call of
 * a function listed under several names the entry for its arity and
 * scheduler (beam__nif_entry_of); a continuation of the NIF's own C
 * function with other arguments the NIF's, as its options are
 * (beam__nif_override_for) and as the VM names the function a
 * continuation raises from. */
static int call_entry(const nif_call *call) {
    int i = beam__nif_continued_entry(call->self);
    if (i < 0)
        i = beam__nif_entry_of(module_funcs, module_func_count, call->self,
                               call->argc, true);
    if (i < 0)
        i = beam__nif_entry_of(module_funcs, module_func_count, call->self, -1,
                               true);
    return i;
}

/* "M.fun/arity" from the registered table (my_mod:fun/arity for an Erlang
 * module); the C name and argc when the function is not in it (or no
 * module was registered), under any arity. The table is searched by function
 * pointer, so a NIF whose C name differs from its Erlang name
 * (BEAM_NIF(nif_free) in
 * {"free", 1, nif_free, 0}) is named as Erlang knows it, and a function
 * listed under several names by its entry (call_entry: the call's that
 * scheduled it, for a continuation of its own; otherwise the one for this
 * call's scheduler, the first of twins on the same scheduler). */
static const char *call_fun(const nif_call *call, unsigned *arity) {
    const int i = call_entry(call);
    *arity = i >= 0 ? module_funcs[i].arity : (unsigned)call->argc;
    return i >= 0 ? module_funcs[i].name : call->c_name;
}

static void format_mfa(const nif_call *call, char *buf, size_t n) {
    unsigned arity;
    const char *fun = call_fun(call, &arity);
    nif_mfa_text(module_atom, fun, arity, buf, n);
}

/* "the NIF call M.f/1" as a report of the module's language says it: the
 * call in backquotes in an Elixir module, as its exceptions name it, the
 * Erlang way without. The one writer of it (abi.h: the fault-injection
 * driver's crash note names the call with it, outside its signal handler,
 * as the reports do): the crash note of a check wrote Elixir's without
 * them, where the report at a call's end had them. A call too long for
 * buf (n bytes) is written to the room left before its closing backquote,
 * where put cuts it between two characters or escapes (the crash note's
 * buffer had cut the backquote and half a character, then a cut by bytes
 * half an escape, "\x01\"). */
void beam__nif_call_text(const char *module, const char *fun, unsigned arity,
                         char *buf, size_t n) {
    static const char words[] = "the NIF call ";
    const bool erlang = is_erlang_module(module);
    const char *quote = erlang ? "" : "`";
    const size_t fixed = sizeof words - 1 + 2 * strlen(quote);
    const size_t room = n > fixed + 1 ? n - fixed : 1;
    char mfa[MFA_MAX];
    nif_mfa_text(module, fun, arity, mfa, room < MFA_MAX ? room : MFA_MAX);
    snprintf(buf, n, "%s%s%s%s", words, quote, mfa, quote);
}

/* A running call in those words (the reports at its end, the crash note's
 * call_name hook). */
static void call_words(const nif_call *call, char *buf, size_t n) {
    unsigned arity;
    const char *fun = call_fun(call, &arity);
    beam__nif_call_text(module_atom, fun, arity, buf, n);
}

const char *beam_nif_function_name(void) {
    /* In the thread's cold block (internal.h: keeping the thread-local
     * block small keeps the fast paths fast); NULL too if that cannot be
     * had. */
    const nif_call *call = beam__nif_here.call;
    if (call != NULL && (call->flags & CALL_NONE) != 0)
        return NULL;
    beam__thread_cold *c = call != NULL ? beam__cold() : NULL;
    if (c == NULL)
        return NULL;
    format_mfa(call, c->nif_name, sizeof c->nif_name);
    return c->nif_name;
}

bool beam__nif_call_name(uintptr_t fn, char *buf, size_t n) {
    /* In a continuation beam_nif_schedule carried, the driver's outermost
     * frame of the library, fn's code, is the glue's trampoline
     * (continue_as_N), which the VM called: the call is the entry carried
     * (the trampoline's code was taken for the table's function nearest
     * below it, another NIF). */
    const beam__nif_thread *t = &beam__nif_here;
    if (t->continued != 0) {
        const ErlNifFunc *f = &module_funcs[t->continued - 1];
        beam__nif_call_text(module_atom, f->name, f->arity, buf, n);
        return true;
    }
    const nif_call *call = t->call;
    if (call == NULL || (call->flags & CALL_NONE) != 0 ||
        (uintptr_t)call->self != fn)
        return false;
    call_words(call, buf, n);
    return true;
}

const char *beam_nif_module_name(void) {
    return beam_nif_function_name();
}

/* --- Continuations ------------------------------------------------------ */

/* The continuation beam_nif_schedule scheduled in place of a call's own C
 * function, the trampoline of the slot of the entry of the call that
 * scheduled it (carry_entry): calls of that function on this thread take
 * the entry (call_entry, beam__nif_override_in) while it runs with the
 * caller's arguments. The entry is in which trampoline, not in one more
 * argument: the VM shows a continuation by the name and the arguments it
 * was scheduled with (process_info's current_function and stacks named
 * the NIF with an arity one higher, a function the module does not have;
 * found in review). */
static ERL_NIF_TERM continue_as(int slot, ErlNifEnv *env, int argc,
                                const ERL_NIF_TERM argv[]) {
    const int entry = carry_entry[slot];
    const beam_nif_body_fn fn = (beam_nif_body_fn)module_funcs[entry].fptr;
    beam__nif_thread *t = &beam__nif_here;
    const int outer = t->continued;
    t->continued = entry + 1;
    const ERL_NIF_TERM result = fn(env, argc, argv);
    t->continued = outer;
    return result;
}

#define CONTINUE_AS(slot)                                                      \
    static ERL_NIF_TERM continue_as_##slot(ErlNifEnv *env, int argc,           \
                                           const ERL_NIF_TERM argv[]) {        \
        return continue_as(slot, env, argc, argv);                             \
    }
CONTINUE_AS(0)
CONTINUE_AS(1)
CONTINUE_AS(2)
CONTINUE_AS(3)
CONTINUE_AS(4)
CONTINUE_AS(5)
CONTINUE_AS(6)
CONTINUE_AS(7)
CONTINUE_AS(8)
CONTINUE_AS(9)
CONTINUE_AS(10)
CONTINUE_AS(11)
CONTINUE_AS(12)
CONTINUE_AS(13)
CONTINUE_AS(14)
CONTINUE_AS(15)
static const beam_nif_body_fn continuations[CARRY_SLOTS] = {
    continue_as_0,  continue_as_1,  continue_as_2,  continue_as_3,
    continue_as_4,  continue_as_5,  continue_as_6,  continue_as_7,
    continue_as_8,  continue_as_9,  continue_as_10, continue_as_11,
    continue_as_12, continue_as_13, continue_as_14, continue_as_15,
};

/* The trampoline a continuation of fp scheduled now goes through, or
 * NULL: one of the running call's own C function, listed under entries
 * for two kinds of scheduler, which would otherwise be named, and given
 * options, by the scheduler it runs on (the dirty twin's, for a call by
 * the normal name that moved itself to a dirty scheduler: erl_nif tells a
 * function nothing of the name it runs under). */
static beam_nif_body_fn continuation_for(beam_nif_body_fn fp) {
    if (carry_count == 0)
        return NULL;
    const nif_call *call = beam__nif_here.call;
    if (call == NULL || (call->flags & CALL_NONE) != 0 || call->self != fp)
        return NULL;
    const int i = call_entry(call);
    for (int slot = 0; slot < carry_count; slot++)
        if (carry_entry[slot] == i)
            return continuations[slot];
    return NULL;
}

ERL_NIF_TERM beam_nif_schedule(ErlNifEnv *env, const char *fun_name, int flags,
                               beam_nif_body_fn fp, int argc,
                               const ERL_NIF_TERM argv[]) {
    const beam_nif_body_fn via = continuation_for(fp);
    return (enif_schedule_nif)(env, fun_name, flags, via != NULL ? via : fp,
                               argc, argv);
}

/* --- The wrapper -------------------------------------------------------- */

static ERL_NIF_TERM raise_now(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    return enif_raise_exception(env, argv[0]);
}

/* Raise reason instead of what the body returned (result). When the body
 * scheduled a continuation (enif_schedule_nif), from a continuation of
 * ours that replaces it: ERTS puts the call's saved state back when a
 * continuation raises, not when the call that scheduled one does (found in
 * review: the process's next yielding NIF then raised with this call's
 * name and arguments). */
static ERL_NIF_TERM raise_instead(ErlNifEnv *env, ERL_NIF_TERM result,
                                  ERL_NIF_TERM reason) {
    if (beam__scheduled(env, result))
        return enif_schedule_nif(env, "beam_alloc_raise", 0, raise_now, 1,
                                 &reason);
    return enif_raise_exception(env, reason);
}

/* "<what> detected in function `M.fun/arity`<tail>" as RuntimeError in an
 * Elixir module; in an Erlang one erlang:error({Tag, Message}), the
 * function written the Erlang way and without the backquotes. */
static ERL_NIF_TERM raise_detected(ErlNifEnv *env, const nif_call *call,
                                   ERL_NIF_TERM result, const char *what,
                                   const char *tag, const char *tail) {
    char mfa[MFA_MAX];
    char message[MFA_MAX + 128];
    format_mfa(call, mfa, sizeof mfa);
    const bool erlang = beam__module_is_erlang();
    snprintf(message, sizeof message,
             erlang ? "%s detected in function %s%s"
                    : "%s detected in function `%s`%s",
             what, mfa, tail);
    ERL_NIF_TERM reason;
    if (!erlang) {
        if (!beam__exception_term(env, "RuntimeError", message, &reason))
            reason = enif_make_atom(env, "enomem");
        return raise_instead(env, result, reason);
    }
    if (!beam__error_term(env, tag, message, &reason))
        reason = enif_make_atom(env, tag);
    return raise_instead(env, result, reason);
}

/* A leak raises RuntimeError in an Elixir module and
 * erlang:error({memory_leak, Message}) in an Erlang one. */
static ERL_NIF_TERM raise_leak(ErlNifEnv *env, const nif_call *call,
                               ERL_NIF_TERM result) {
    return raise_detected(env, call, result, "memory leak", "memory_leak", "");
}

/* A misuse: the same, with its kind ("...: double free"), and
 * {memory_misuse, Message}. */
static ERL_NIF_TERM raise_misuse(ErlNifEnv *env, const nif_call *call,
                                 ERL_NIF_TERM result, const char *kind) {
    char tail[128];
    snprintf(tail, sizeof tail, ": %s", kind);
    return raise_detected(env, call, result, "memory misuse", "memory_misuse",
                          tail);
}

/* The options of one call: the BEAM_NIF ones with load_info's overrides
 * applied. */
typedef struct call_options {
    bool leak_check;
    bool scratch;
    bool raise_on_misuse;
    bool has_allocator; /* an allocator was chosen (else: the default) */
    beam_allocator_t allocator;
    bool threw; /* .allocator let a C++ exception out: the call raises */
    ERL_NIF_TERM raised;
} call_options;

/* .allocator's allocator in *a; false when it let a C++ exception out
 * (its guard, beam_internal_pick, caught it), which *raised then raises as
 * a body's would be. */
static bool pick_allocator(const beam_nif_options *options, ErlNifEnv *env,
                           beam_allocator_t *a, ERL_NIF_TERM *raised) {
    if (options->beam_internal_pick == NULL) {
        *a = options->allocator();
        return true;
    }
    char text[256];
    if (options->beam_internal_pick(options->allocator, a, text, sizeof text))
        return true;
    *raised = beam_raise(env, NULL, text);
    return false;
}

static call_options resolve(const beam_nif_options *options,
                            const beam__nif_override *ov, ErlNifEnv *env) {
    call_options o = {.leak_check = options->leak_check,
                      .scratch = options->scratch,
                      .raise_on_misuse = options->raise_on_misuse,
                      .allocator = beam_raw_allocator};
    if (ov != NULL && (ov->set & BEAM__OVERRIDE_ALLOCATOR)) {
        o.has_allocator = true;
        o.allocator = ov->allocator;
    } else if (options->allocator != NULL) {
        o.has_allocator = true;
        o.threw = !pick_allocator(options, env, &o.allocator, &o.raised);
    }
    if (ov != NULL && (ov->set & BEAM__OVERRIDE_LEAK_CHECK))
        o.leak_check = ov->leak_check;
    if (ov != NULL && (ov->set & BEAM__OVERRIDE_SCRATCH))
        o.scratch = ov->scratch;
    if (ov != NULL && (ov->set & BEAM__OVERRIDE_RAISE_ON_MISUSE))
        o.raise_on_misuse = ov->raise_on_misuse;
    return o;
}

/* The calling thread's first misuse line of the call ("" when none could
 * be kept). */
static const char *misuse_text(void) {
    const char *line = beam__misuse_line();
    return line != NULL ? line : "";
}

void beam__nif_watch_open(beam__nif_watch *w) {
    beam__misuse_record *m = &beam__misuse;
    w->outer_watch = m->watch_from;
    w->before = m->count;
    /* A call inside another one (a BEAM_NIF body calling another's): the
     * outer call's first misuse, if it had one, is what it raises with
     * once it is over; this call's own would overwrite it. */
    w->outer_misused = w->before != w->outer_watch;
    w->outer_kind = m->kind;
    if (w->outer_misused)
        snprintf(w->outer_line, sizeof w->outer_line, "%s", misuse_text());
    m->watch_from = w->before;
}

void beam__nif_watch_close(const beam__nif_watch *w) {
    beam__misuse_record *m = &beam__misuse;
    m->watch_from = w->outer_watch;
    if (w->outer_misused) {
        m->kind = w->outer_kind;
        char *now = beam__misuse_line();
        if (now != NULL)
            memcpy(now, w->outer_line, sizeof w->outer_line);
    }
}

/* The raw and the large allocator hand a free to the system as it is: a
 * fault injection check catches a double free of theirs (the driver's
 * BEAM__FAULT_UNCHECKED), which would crash the VM in the next runs. */
static bool checks_no_free(beam_allocator_t a) {
    return a.vtable == &beam__raw_vtable || a.vtable == &beam__large_vtable;
}

/* One of the library's process-wide allocators (the driver's
 * BEAM__FAULT_PROCESS_WIDE). */
static bool process_wide(beam_allocator_t a) {
    return checks_no_free(a) ||
           (a.vtable == beam_general_purpose_allocator.vtable &&
            a.ctx == beam_general_purpose_allocator.ctx);
}

/* What a fault-injection check lists for a misuse on another thread
 * when its report line is not at hand (its own report names the line). */
#define ELSEWHERE_LINE                                                         \
    "beam_alloc: a misuse of this call's allocator on another thread (its "    \
    "report names the line)"

/* One composed call's state, from its set-up to its end: what
 * call_composed's steps share. */
typedef struct composed_call {
    const beam_nif_options *options;
    const beam__fault_driver *driver;
    nif_call *call;
    ErlNifEnv *env;
    call_options o;
    kept_instance *check; /* leak_check's instance (else NULL) */
    beam__misuse_record *m;
    beam__nif_watch watch;
    beam_arena_t arena; /* scratch's */
    ErlNifPid pid;
    bool has_pid;
    beam__fault_frame frame;
    bool faulted; /* the driver's plan wraps the call's allocator */
} composed_call;

/* What finishing the leak check found. */
typedef struct check_outcome {
    bool leaked;
    const char *elsewhere; /* a misuse on another thread */
    /* Its report, copied before the instance goes: the line the check's
     * problem quotes (it said "its report names the line" only, and the
     * exception named none: bug hunt). Set only with elsewhere. */
    char elsewhere_line[BEAM__MISUSE_LINE];
} check_outcome;

/* The checking instance over the NIF's allocator, then the scratch arena
 * over that: the allocator the body gets, before fault injection. */
static beam_allocator_t stack_allocators(composed_call *c) {
    beam_allocator_t a = c->o.allocator;
    /* A custom allocator becomes the backing of the checking instance, so
     * the two options compose: blocks still come from the user's
     * allocator, and the instance sees every one of them. */
    if (c->o.leak_check) {
        /* Safe mode: sites for the leak report, and canaries and poison
         * so that overruns and writes after free show up too. */
        beam_gpa_init_ex(&c->check->gpa,
                         c->o.has_allocator ? a : beam_large_allocator,
                         BEAM_GPA_SAFE | BEAM_GPA_FRAMES(c->options->frames));
        /* With its state from the start: a misuse on another thread
         * before any allocation (a foreign free) is kept in it too (found
         * in review). Without memory for it, the first allocation fails. */
        (void)beam__gpa_prepare(&c->check->gpa);
        a = beam_gpa_allocator(&c->check->gpa);
    }
    if (c->o.scratch) {
        beam_arena_init(&c->arena, a);
        a = beam_arena_allocator(&c->arena);
    }
    return a;
}

/* What the driver is told of the call and of a, its allocator. */
static unsigned fault_flags(const call_options *o, beam_allocator_t a) {
    return (o->scratch ? BEAM__FAULT_SCRATCH : 0u) |
           (o->leak_check ? BEAM__FAULT_CALL_LOCAL : 0u) |
           (checks_no_free(a) ? BEAM__FAULT_UNCHECKED : 0u) |
           (process_wide(a) ? BEAM__FAULT_PROCESS_WIDE : 0u);
}

/* a, or the driver's plan over it when a test armed this process
 * (c->faulted). */
static beam_allocator_t enter_driver(composed_call *c, beam_allocator_t a) {
    c->faulted = false;
    c->has_pid = enif_self(c->env, &c->pid) != NULL;
    if (c->driver != NULL && c->has_pid)
        c->faulted = c->driver->enter(&c->pid, &beam__fault_hooks_self, a,
                                      fault_flags(&c->o, a), &c->frame, &a);
    if (c->faulted)
        beam__fault_note_plan(c->driver, a);
    return a;
}

/* Where a report made at end's call's end says it was found
 * (beam__call_end), naming the call as its exception does: "found when
 * the NIF call demo:overrun/0 returned". */
static void found_at_end_of(const beam__call_end *end, char *buf, size_t n) {
    /* The call's room: "the NIF call ", two backquotes and the NUL. */
    char call[MFA_MAX + 16];
    call_words(end->call, call, sizeof call);
    snprintf(buf, n, "found when %s returned", call);
}

/* The end of c's call (beam__nif_in_end runs a step in it): a misuse
 * found was the body's, which has returned, and its report names the call
 * (the frames it would name are the glue's). */
static beam__call_end call_end_of(const composed_call *c) {
    return (beam__call_end){found_at_end_of, c->call, NULL, 0, 0, 0, NULL};
}

static void give_back_in_end(beam__call_end *end, void *arg) {
    composed_call *c = arg;
    if (c->faulted)
        c->driver->leave(&c->frame);
    if (c->o.scratch)
        beam__arena_deinit_noting(&c->arena, end);
}

/* The plan lets go of the call's blocks, then the arena gives its chunks
 * back (the leak check comes last: finish_leak_check), in the call's end:
 * a scratch chunk written past is reported as such. */
static void unstack_allocators(composed_call *c) {
    if (!c->faulted && !c->o.scratch)
        return;
    beam__call_end end = call_end_of(c);
    beam__nif_in_end(&end, give_back_in_end, c);
}

/* A thread the body started (and joined, or not) that misused the call's
 * allocator: its report went out from there, and this thread's record has
 * not seen it (found in a C++ walkthrough: a std::thread's double free let
 * the call return :ok). */
static void find_misuse_elsewhere(const composed_call *c, check_outcome *out) {
    if (c->m->count != c->watch.before)
        return;
    out->elsewhere = beam__gpa_first_misuse(&c->check->gpa);
    const char *line = beam__gpa_first_misuse_line(&c->check->gpa);
    if (out->elsewhere != NULL)
        snprintf(out->elsewhere_line, sizeof out->elsewhere_line, "%s",
                 line != NULL ? line : ELSEWHERE_LINE);
}

/* The leak report's first line but for the function and what follows it:
 * one text for the line and for the function's room in it (report_leaks),
 * so that they cannot part. */
#define LEAK_LINE "beam_alloc: memory leak detected in function "

/* Reports the blocks the body left live; true when it did. */
static bool report_leaks(const composed_call *c) {
    if (beam_gpa_usage_of(&c->check->gpa).live_blocks == 0)
        return false;
    /* Name the function before the instance lists the blocks, so the
     * report reads as one story. The name is cut to the line's room, by
     * put, between two escapes: the line (shorter than MFA_MAX) cut it
     * anywhere, and the backquote and colon after it. */
    char mfa[BEAM__REPORT_LINE + 1 - sizeof LEAK_LINE "``:"];
    format_mfa(c->call, mfa, sizeof mfa);
    beam__report(beam__module_is_erlang() ? LEAK_LINE "%s:" : LEAK_LINE "`%s`:",
                 mfa);
    return beam_gpa_detect_leaks(&c->check->gpa);
}

static void keep_or_free_instance(kept_instance *check, bool leaked) {
    if (leaked) {
        /* Kept with what the leaked blocks need, not more; and the
         * instances kept before give back what their blocks, freed
         * since, no longer need (each held ~100 KB until a collect,
         * ~4 KB after). */
        beam_gpa_collect(&check->gpa); /* its backing is alive now */
        keep_instance(check);
        collect_kept_from(check->next, KEPT_COLLECTED);
    } else {
        beam_gpa_deinit(&check->gpa);
        beam__sys_free(check);
    }
}

static void check_freed_in_end(beam__call_end *end, void *arg) {
    (void)end;
    (void)beam__gpa_check_freed(&((composed_call *)arg)->check->gpa);
}

static void finish_leak_check(composed_call *c, check_outcome *out) {
    /* Freed blocks written since: found now or never, in the call's end
     * (a report names the call). */
    beam__call_end end = call_end_of(c);
    beam__nif_in_end(&end, check_freed_in_end, c);
    find_misuse_elsewhere(c, out);
    out->leaked = report_leaks(c);
    keep_or_free_instance(c->check, out->leaked);
}

/* A fault-injection check lists the call's misuse as a problem of its
 * run (a driver older than misuse has no room for it). */
static void tell_driver_misuse(const composed_call *c, const char *kind,
                               const check_outcome *found) {
    const beam__fault_driver *d = c->driver;
    if (d != NULL && c->has_pid &&
        d->size >= offsetof(beam__fault_driver, misuse) + sizeof d->misuse &&
        d->misuse != NULL)
        d->misuse(&c->pid, &beam__fault_hooks_self, kind,
                  found->elsewhere != NULL ? found->elsewhere_line
                                           : misuse_text());
}

/* Ends the watch of the thread's misuse record, once the driver has heard
 * of a misuse: whether the call misused an allocator (on this thread, or
 * on another as the leak check found), and its kind in *kind. */
static bool close_misuse_watch(composed_call *c, const check_outcome *found,
                               const char **kind) {
    const beam__misuse_record *m = c->m;
    const bool misused =
        m->count != c->watch.before || found->elsewhere != NULL;
    *kind = found->elsewhere != NULL     ? found->elsewhere
            : misused && m->kind != NULL ? m->kind
                                         : "misuse";
    if (misused)
        tell_driver_misuse(c, *kind, found);
    beam__nif_watch_close(&c->watch);
    return misused;
}

/* Everything but the plain call, out of line so that the common path stays
 * a few moves and a call. The allocators stack up, innermost first:
 *
 *   the NIF's allocator (raw, .allocator's, or load_info's)
 *   <- leak_check: a fresh general purpose allocator instance over it
 *   <- scratch: an arena over that
 *   <- fault injection, when a test armed this process: the driver's plan
 *
 * and come down in reverse: the plan lets go of the call's blocks, the
 * arena gives its chunks back, then the leak check looks at what is left. */
static BEAM__NOINLINE ERL_NIF_TERM
call_composed(const beam_nif_options *options, const beam__nif_override *ov,
              const beam__fault_driver *driver, nif_call *call,
              beam_allocator_t saved, beam_nif_body_fn body, ErlNifEnv *env,
              int argc, const ERL_NIF_TERM argv[]) {
    /* Set field by field: an initialiser zeroed all of it, ~750 bytes (the
     * watch's line most), on every call that comes here. Each other field
     * is set by the step that owns it before any reads it. */
    composed_call c;
    c.options = options;
    c.driver = driver;
    c.call = call;
    c.env = env;
    c.o = resolve(options, ov, env);
    c.check = NULL;
    if (c.o.threw)
        return c.o.raised;
    /* (First: without it the body does not run, and nothing needs undoing.
     * enomem, as the VM raises when it cannot allocate.) */
    if (c.o.leak_check && (c.check = beam__sys_alloc(sizeof *c.check)) == NULL)
        return enif_raise_exception(env, enif_make_atom(env, "enomem"));

    /* Misuse any allocator reports on this thread from here to the end of
     * the cleanup belongs to this call (see beam__misuse_record). */
    c.m = &beam__misuse;
    /* The body's caller is this frame: stacks end at the body. */
    beam__frames_stop = (uintptr_t)__builtin_frame_address(0);
    beam__nif_watch_open(&c.watch);

    const beam_allocator_t a = enter_driver(&c, stack_allocators(&c));
    beam_allocator = a;
    if (a.ctx != c.o.allocator.ctx || a.vtable != c.o.allocator.vtable) {
        call->scoped = a;
        call->lasting = c.o.allocator;
        call->flags = c.faulted ? CALL_INJECTED : 0;
    }
    ERL_NIF_TERM result = body(env, argc, argv);
    /* The allocators below are about to go: nothing (a report hook
     * included) may reach them through the thread-local from here on. */
    beam_allocator = saved;
    call->scoped.vtable = NULL;

    unstack_allocators(&c);
    /* Set field by field: the line (512 bytes) is written only for a
     * misuse elsewhere (find_misuse_elsewhere), not zeroed each call. */
    check_outcome found;
    found.leaked = false;
    found.elsewhere = NULL;
    if (c.o.leak_check)
        finish_leak_check(&c, &found);
    const char *kind;
    const bool misused = close_misuse_watch(&c, &found, &kind);

    /* Both override whatever the body returned or raised: a misuse or a
     * leak is a bug in the NIF itself, and one the caller cannot see
     * otherwise. A misuse first: it often causes the leak (a free that
     * missed its block). */
    if (misused && (c.o.leak_check || c.o.raise_on_misuse))
        return raise_misuse(env, call, result, kind);
    if (found.leaked)
        return raise_leak(env, call, result);
    return result;
}

/* Takes a thread-local object's address once: the empty asm hands the
 * compiler an address it cannot recompute, where it would otherwise
 * compute it again after the body's call (each time, in a dlopen'ed NIF,
 * a call into the dynamic linker: internal.h). A call runs on one thread
 * from its entry to its return. */
#define TLS_ADDRESS_ONCE(p) __asm__("" : "+r"(p))

ERL_NIF_TERM beam_nif_call(const beam_nif_options *options, const char *c_name,
                           beam_nif_body_fn self, beam_nif_body_fn body,
                           ErlNifEnv *env, int argc,
                           const ERL_NIF_TERM argv[]) {
    beam_allocator_t *here;
    beam__nif_thread *t;
    uintptr_t *stop;
#ifdef BEAM__HAVE_TLS_OFFSET
    const intptr_t stop_off = beam__atomic_load_acquire(&tls_stop_off);
    if (BEAM__LIKELY(stop_off != 0)) {
        char *tp = beam__thread_pointer();
        here = (beam_allocator_t *)(void *)(tp + beam__atomic_load_relaxed(
                                                     &tls_allocator_off));
        t = (beam__nif_thread *)(void *)(tp + beam__atomic_load_relaxed(
                                                  &tls_here_off));
        stop = (uintptr_t *)(void *)(tp + stop_off);
    } else
#endif
    {
        here = &beam_allocator;
        t = &beam__nif_here;
        stop = &beam__frames_stop;
        TLS_ADDRESS_ONCE(here);
        TLS_ADDRESS_ONCE(t);
        TLS_ADDRESS_ONCE(stop);
    }
    const beam_allocator_t saved = *here;
    nif_call *const outer = t->call;
    /* Set field by field: an initialiser would zero ending too (read
     * only with CALL_AT_END), one more store on every call. */
    nif_call call;
    call.self = self;
    call.c_name = c_name;
    call.argc = argc;
    call.env = env;
    call.scoped = (beam_allocator_t){NULL, NULL};
    call.lasting = (beam_allocator_t){NULL, NULL};
    call.flags = 0;
    call.dropped = 0;
    t->call = &call;
    /* Stacks in reports end at the body (frames.h). */
    const uintptr_t outer_stop = *stop;
    *stop = (uintptr_t)__builtin_frame_address(0);

    const beam__nif_override *ov = beam__nif_override_for(self, argc);
    const beam__fault_driver *driver =
        beam__atomic_load_acquire(&beam__fault_driver_now);
    ERL_NIF_TERM result;
    if (BEAM__UNLIKELY(options->leak_check || options->scratch ||
                       options->raise_on_misuse || ov != NULL ||
                       driver != NULL)) {
        result = call_composed(options, ov, driver, &call, saved, body, env,
                               argc, argv);
    } else if (options->allocator == NULL) {
        *here = beam_raw_allocator;
        result = body(env, argc, argv);
    } else if (pick_allocator(options, env, here, &result)) {
        result = body(env, argc, argv);
    }

    *here = saved;
    t->call = outer;
    *stop = outer_stop;
    if (BEAM__UNLIKELY(call.dropped != 0) && outer != NULL)
        outer->dropped += call.dropped;
    /* A call that reported returns once the reporter knows who made it. */
    else if (outer == NULL &&
             BEAM__UNLIKELY(t->pending != NULL || call.dropped != 0))
        return beam__report_wait(env, result, call.dropped);
    return result;
}
