/*
 * Fault injection, this library copy's side (see abi.h for the
 * whole picture). All it keeps is which driver is attached and how many
 * times: the plans, the counters and the blocks live in the driver, so that
 * one process's allocation number i means the same thing in every NIF
 * library it calls.
 *
 * Cost when no test is running: beam_nif_call loads beam__fault_driver_now
 * (NULL) and moves on.
 */
#include "nif_internal.h"

#include <pthread.h>
#include <string.h>

_Atomic(const beam__fault_driver *) beam__fault_driver_now;

/* Guards attach/detach only; beam_nif_call never takes it. */
static pthread_mutex_t attach_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned attached; /* attaches not yet detached */

/* A driver of this version, as small as the first one (enter and leave):
 * the members added since (misuse, under) are called only when its size
 * says it has them. Asking for the whole struct refused every older
 * driver, so no check ran in a copy newer than the driver. */
static bool driver_known(const beam__fault_driver *d) {
    return d != NULL && d->magic == BEAM__FAULT_MAGIC &&
           d->version == BEAM__FAULT_VERSION &&
           d->size >= offsetof(beam__fault_driver, misuse);
}

static bool hooks_attach(const beam__fault_driver *driver) {
    if (!driver_known(driver))
        return false;
    pthread_mutex_lock(&attach_lock);
    const beam__fault_driver *now =
        beam__atomic_load_relaxed(&beam__fault_driver_now);
    bool ok = now == NULL || now == driver;
    if (ok) {
        attached++;
        beam__atomic_store_release(&beam__fault_driver_now, driver);
    }
    pthread_mutex_unlock(&attach_lock);
    return ok;
}

static void hooks_detach(const beam__fault_driver *driver) {
    pthread_mutex_lock(&attach_lock);
    const beam__fault_driver *now =
        beam__atomic_load_relaxed(&beam__fault_driver_now);
    if (now == driver && attached > 0 && --attached == 0)
        beam__atomic_store_release(&beam__fault_driver_now, NULL);
    pthread_mutex_unlock(&attach_lock);
}

/* The hooks below run on the driver's calls, at any time: only while a
 * module instance is loaded (glue.c's lock), else as for a library with
 * nothing (zeros, nothing to collect). */
static void hooks_stats(beam_alloc_stats out[3], size_t *gpa_backing_bytes) {
    memset(out, 0, 3 * sizeof *out);
    *gpa_backing_bytes = 0;
    if (!beam__nif_library_enter())
        return;
    beam_allocator_stats(beam_raw_allocator, &out[0]);
    beam_allocator_stats(beam_large_allocator, &out[1]);
    beam_allocator_stats(beam_general_purpose_allocator, &out[2]);
    *gpa_backing_bytes =
        beam_gpa_usage_of(&beam_general_purpose_allocator_instance)
            .backing_bytes;
    beam__nif_library_leave();
}

static bool hooks_named(size_t i, char *name_out, beam_alloc_stats *out,
                        size_t *backing_bytes) {
    if (!beam__nif_library_enter())
        return false;
    bool found = beam_stats_named(i, name_out, out, backing_bytes);
    beam__nif_library_leave();
    return found;
}

/* Where named_all's readings go: out, up to max. */
typedef struct named_into {
    beam__named_reading *out;
    size_t max, n;
} named_into;

static void named_take(void *arg, const char *name,
                       const beam_alloc_stats *stats, size_t backing_bytes) {
    named_into *to = arg;
    if (to->n == to->max)
        return;
    beam__named_reading *r = &to->out[to->n++];
    memset(r, 0, sizeof *r);
    strcpy(r->name, name);
    r->stats = *stats;
    r->backing_bytes = backing_bytes;
}

static size_t hooks_named_all(beam__named_reading *out, size_t max) {
    named_into to = {out, max, 0};
    if (!beam__nif_library_enter())
        return 0;
    beam__stats_named_each(named_take, &to);
    beam__nif_library_leave();
    return to.n;
}

static void hooks_resources_holding(beam__holding *out) {
    memset(out, 0, sizeof *out);
    if (!beam__nif_library_enter())
        return;
    beam__nif_resources_holding(out);
    beam__nif_library_leave();
}

static void hooks_collect(void) {
    if (!beam__nif_library_enter())
        return;
    /* The resources first: what they give back goes to their parents, the
     * process-wide instance often, whose collect then passes it on. */
    beam__nif_collect_resources();
    beam_gpa_collect(&beam_general_purpose_allocator_instance);
    beam__stats_named_collect();
    beam__nif_collect_kept();
    beam__nif_library_leave();
}

/* The plan allocator's vtable a call of this copy was last given, and the
 * driver that gave it (one that answers under): so that the malloc-style
 * calls know a plan allocator for what it is, also one a NIF kept and uses
 * after the check detached (a block beam_malloc sized by the GPA under it
 * must be freed the same way: it was reported as a foreign free). Only a
 * plan allocator's calls reach the driver, whose library a user of that
 * allocator needs loaded anyway; every other allocator costs a load and a
 * compare. */
static _Atomic(const beam__fault_driver *) plan_driver;
static _Atomic(const beam_allocator_vtable *) plan_vtable;

void beam__fault_note_plan(const beam__fault_driver *driver,
                           beam_allocator_t plan) {
    if (driver->size <
            offsetof(beam__fault_driver, under) + sizeof driver->under ||
        driver->under == NULL ||
        (beam__atomic_load_relaxed(&plan_vtable) == plan.vtable &&
         beam__atomic_load_relaxed(&plan_driver) == driver))
        return;
    /* The driver first: a vtable read with acquire finds its driver (or a
     * newer one, which refuses a plan allocator not its own). */
    beam__atomic_store_release(&plan_driver, driver);
    beam__atomic_store_release(&plan_vtable, plan.vtable);
}

bool beam__fault_under(beam_allocator_t a, const void *p,
                       beam_allocator_t *out) {
    const beam_allocator_vtable *v = beam__atomic_load_acquire(&plan_vtable);
    if (v == NULL || a.vtable != v)
        return false;
    return beam__atomic_load_acquire(&plan_driver)->under(a, p, out);
}

const beam__fault_hooks beam__fault_hooks_self = {
    BEAM__FAULT_MAGIC,
    BEAM__FAULT_VERSION,
    sizeof(beam__fault_hooks),
    beam__nif_module_atom,
    hooks_attach,
    hooks_detach,
    hooks_stats,
    hooks_named,
    hooks_collect,
    beam__nif_loaded_at,
    hooks_named_all,
    beam__nif_take_free,
    hooks_resources_holding,
    beam__nif_take_size,
    beam__nif_take_resize_check,
    beam__nif_call_name,
};

const void *beam_nif_fault_hooks_internal(void) {
    return &beam__fault_hooks_self;
}
