/*
 * <beam_alloc/sqlite3.h>: SQLite's memory on a beam_alloc allocator.
 * Header-only: beam_alloc never links SQLite; include it after (or
 * instead of) <sqlite3.h> and link -lsqlite3 yourself.
 *
 *     static beam_gpa_t sqlite_gpa;        // SQLite's own instance
 *     beam_gpa_init(&sqlite_gpa, beam_large_allocator);
 *     beam_stats_register("sqlite", beam_gpa_allocator(&sqlite_gpa));
 *     int rc = beam_sqlite3_use(beam_gpa_allocator(&sqlite_gpa));
 *     if (rc == SQLITE_MISUSE) ... // SQLite was started already
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
 * until sqlite3_shutdown). Call before sqlite3_initialize, or after
 * sqlite3_shutdown. Returns SQLite's result code: SQLITE_OK, or
 * SQLITE_MISUSE when SQLite is initialised already (nothing changed). */
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
    if (rc == SQLITE_OK)
        beam_sqlite3_allocator = a;
    return rc;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BEAM_ALLOC_SQLITE3_H */
