/*
 * <beam_alloc/sqlite3.h>: SQLite's memory on a beam_alloc allocator.
 * Header-only: beam_alloc never links SQLite; include it after (or
 * instead of) <sqlite3.h> and link -lsqlite3 yourself.
 *
 *     static beam_gpa_t sqlite_gpa;        // SQLite's own instance
 *     beam_gpa_init(&sqlite_gpa, beam_large_allocator);  // once: below
 *     beam_stats_register("sqlite", beam_gpa_allocator(&sqlite_gpa));
 *     int rc = beam_sqlite3_use(beam_gpa_allocator(&sqlite_gpa));
 *     if (rc == SQLITE_MISUSE) ... // SQLite was started already: below
 *     rc = sqlite3_initialize();
 *
 * On a general purpose allocator SQLite's memory is counted by the VM
 * (:erlang.memory(:system), through enif_alloc) without a per-block header
 * and without a global lock: xSize and xRoundup answer from the instance's
 * size classes (beam_msize, beam_mgood_size).
 *
 * SQLite's allocator is one per process, shared by every NIF library of
 * the VM that links the same libsqlite3: it can be set only before
 * sqlite3_initialize or after sqlite3_shutdown, from one thread while no
 * other starts SQLite. Otherwise beam_sqlite3_use changes nothing and
 * returns SQLITE_MISUSE (another library may have started SQLite first;
 * its allocator stays, and so does the one this library gave before).
 *
 * A hot upgrade or a purge unloads a NIF library while libsqlite3 stays
 * (the new copy, or another library, links it): SQLite would go on
 * calling the hooks of an unmapped copy and crash the VM. So the copy
 * whose beam_sqlite3_use succeeds stays mapped until the process exits
 * (beam_internal_keep_mapped), and its last unload tears none of its
 * allocators down: the hooks, and a, stay valid for SQLite, whichever
 * copy runs it now. For that, a must live as long: an instance of the
 * library's own that its unload callback never deinitialises (while
 * SQLite may run: a new copy may use it; nor does the unload shut SQLite
 * down), not a call's beam_allocator unless SQLite is shut down before the
 * call returns. A new copy's beam_sqlite3_use then returns SQLITE_MISUSE
 * (SQLite runs on the old copy's allocator, which is fine): to move SQLite
 * to the new copy's, close every connection, sqlite3_shutdown and call it
 * again. A copy loaded again from the same file is the kept one, its
 * statics as they were: initialise SQLite's instance once (a static flag),
 * not again over the blocks SQLite holds. The kept copy costs its mapping
 * and what SQLite holds, for each copy SQLite was started on (a new copy's
 * call fails while SQLite runs, so keeps nothing).
 *
 * BeamAlloc.stats(MyNif) sums every copy of the module's library still
 * mapped, the kept one after its purge too: its "sqlite" key (as above,
 * registered by each copy) shows what SQLite holds on whichever copy's
 * instance SQLite runs. SQLite started by another NIF library (this one's
 * call returning SQLITE_MISUSE) is counted in that library's stats.
 *
 * SQLITE_CONFIG_MEMSTATUS is left as it is (on by default): with it,
 * SQLite counts every allocation under one global mutex, which serialises
 * concurrent connections whatever the allocator. beam_alloc's own counters
 * (BeamAlloc.stats/1) make that count redundant; to drop the mutex, call
 * sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) next to beam_sqlite3_use
 * (sqlite3_memory_used() then reads 0).
 *
 * Reports (leaks, misuse) name SQLite's calling function (sqlite3Malloc,
 * sqlite3Realloc, ...), not these hooks.
 */
#ifndef BEAM_ALLOC_SQLITE3_H
#define BEAM_ALLOC_SQLITE3_H

#include <beam_alloc.h>
#include <sqlite3.h>

#ifdef __cplusplus
extern "C" {
#endif

/* SQLite's hooks take no context: the allocator lives here, one per
 * translation unit that includes this header (SQLite keeps one hook set
 * per process anyway). */
static beam_allocator_t beam_sqlite3_allocator;

#define BEAM_SQLITE3_HOOK BEAM_INTERNAL_HOOK

BEAM_SQLITE3_HOOK void *beam_sqlite3_malloc_hook(int n) {
    if (n < 0)
        return BEAM_INTERNAL_NULL;
    return beam_malloc_at(beam_sqlite3_allocator, BEAM_INTERNAL_AS(size_t, n),
                          BEAM_RET_ADDR());
}

BEAM_SQLITE3_HOOK void beam_sqlite3_free_hook(void *p) {
    beam_mfree_at(beam_sqlite3_allocator, p, BEAM_RET_ADDR());
}

BEAM_SQLITE3_HOOK void *beam_sqlite3_realloc_hook(void *p, int n) {
    if (n < 0)
        return BEAM_INTERNAL_NULL;
    return beam_mrealloc_at(beam_sqlite3_allocator, p,
                            BEAM_INTERNAL_AS(size_t, n), BEAM_RET_ADDR());
}

BEAM_SQLITE3_HOOK int beam_sqlite3_size_hook(void *p) {
    size_t n = beam_msize_at(beam_sqlite3_allocator, p, BEAM_RET_ADDR());
    return n > 0x7fffffff ? 0x7fffffff : BEAM_INTERNAL_AS(int, n);
}

BEAM_SQLITE3_HOOK int beam_sqlite3_roundup_hook(int n) {
    size_t r = n < 0 ? 0
                     : beam_mgood_size(beam_sqlite3_allocator,
                                       BEAM_INTERNAL_AS(size_t, n));
    /* A size SQLite could not ask for anyway: answer n, the request fails
     * at xMalloc. */
    return r == 0 || r > 0x7fffffff ? n : BEAM_INTERNAL_AS(int, r);
}

BEAM_SQLITE3_HOOK int beam_sqlite3_init_hook(void *app) {
    (void)app;
    return SQLITE_OK;
}

BEAM_SQLITE3_HOOK void beam_sqlite3_shutdown_hook(void *app) {
    (void)app;
}

/** SQLite's allocator becomes a (which must outlive SQLite's use of it:
 * until sqlite3_shutdown, or for good once the library is unloaded with
 * SQLite running; see above). Call before sqlite3_initialize, or after
 * sqlite3_shutdown. Returns SQLite's result code: SQLITE_OK (this copy of
 * the NIF library is then kept mapped), or SQLITE_MISUSE when SQLite is
 * initialised already (nothing changed). */
static inline int beam_sqlite3_use(beam_allocator_t a) {
    static const sqlite3_mem_methods methods = {
        beam_sqlite3_malloc_hook,   beam_sqlite3_free_hook,
        beam_sqlite3_realloc_hook,  beam_sqlite3_size_hook,
        beam_sqlite3_roundup_hook,  beam_sqlite3_init_hook,
        beam_sqlite3_shutdown_hook, BEAM_INTERNAL_NULL};
    /* Configure first: while SQLite runs (the call then fails) its hooks
     * must go on seeing the allocator they started with. Once it
     * succeeds SQLite is stopped, and nothing calls the hooks until
     * sqlite3_initialize. */
    int rc = sqlite3_config(SQLITE_CONFIG_MALLOC, &methods);
    if (rc == SQLITE_OK) {
        beam_sqlite3_allocator = a;
        /* The hooks outlive this copy's unload (a hot upgrade or purge
         * while libsqlite3 stays). Failing, the hooks are in no shared
         * object, which nothing unloads. */
        (void)beam_internal_keep_mapped();
    }
    return rc;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BEAM_ALLOC_SQLITE3_H */
