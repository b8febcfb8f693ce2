/*
 * bench-sqlite's NIF (module beam_alloc_sqlite_bench): an in-memory SQLite
 * workload with SQLite's allocator set to one of
 *
 *   malloc    SQLite's default (the C library's malloc)
 *   enif      enif_alloc with an 8-byte size header, as BEAM bindings
 *             route SQLite today
 *   gpa       beam_alloc's general purpose allocator, through
 *             beam_sqlite3_use (one instance for the whole run)
 *   mimalloc  mimalloc
 *
 * and SQLITE_CONFIG_MEMSTATUS on or off. SQLite's allocator is one per
 * process: configure/2 shuts SQLite down and starts it again, and must not
 * run while a workload does.
 */
#define _GNU_SOURCE /* clock_gettime, CLOCK_THREAD_CPUTIME_ID */
#include <beam_alloc_nif.h>
#include <beam_alloc/sqlite3.h>

#include "orders.h"

#include <mimalloc.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- (b) enif_alloc with a size header ------------------------------- */

static void *enif_hdr_malloc(int n) {
    sqlite3_int64 *p = enif_alloc((size_t)n + 8);
    if (p == NULL)
        return NULL;
    p[0] = n;
    return p + 1;
}
static void enif_hdr_free(void *p) {
    enif_free((sqlite3_int64 *)p - 1);
}
static void *enif_hdr_realloc(void *p, int n) {
    sqlite3_int64 *q = enif_realloc((sqlite3_int64 *)p - 1, (size_t)n + 8);
    if (q == NULL)
        return NULL;
    q[0] = n;
    return q + 1;
}
static int enif_hdr_size(void *p) {
    return p == NULL ? 0 : (int)((sqlite3_int64 *)p)[-1];
}
static int round8(int n) {
    return (n + 7) & ~7;
}
static int no_init(void *app) {
    (void)app;
    return SQLITE_OK;
}
static void no_shutdown(void *app) {
    (void)app;
}
static const sqlite3_mem_methods enif_methods = {
    enif_hdr_malloc, enif_hdr_free, enif_hdr_realloc, enif_hdr_size,
    round8,          no_init,       no_shutdown,      NULL};

/* ---- (d) mimalloc ------------------------------------------------------ */

static void *mi_sq_malloc(int n) {
    return mi_malloc((size_t)n);
}
static void mi_sq_free(void *p) {
    mi_free(p);
}
static void *mi_sq_realloc(void *p, int n) {
    return mi_realloc(p, (size_t)n);
}
static int mi_sq_size(void *p) {
    return (int)mi_usable_size(p);
}
static int mi_sq_roundup(int n) {
    return (int)mi_good_size((size_t)n);
}
static const sqlite3_mem_methods mi_methods = {
    mi_sq_malloc,  mi_sq_free, mi_sq_realloc, mi_sq_size,
    mi_sq_roundup, no_init,    no_shutdown,   NULL};

/* ---- configuration ------------------------------------------------------ */

static sqlite3_mem_methods default_methods; /* SQLite's own, at load */
static beam_gpa_t gpa;
static bool gpa_live;

static ERL_NIF_TERM error(ErlNifEnv *env, const char *what, int rc) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s: %s", what, sqlite3_errstr(rc));
    return enif_make_tuple2(env, enif_make_atom(env, "error"),
                            enif_make_string(env, msg, ERL_NIF_LATIN1));
}

/* configure(Variant, MemStatus) -> ok | {error, Msg} */
static ERL_NIF_TERM configure(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    char variant[16], status[8];
    if (!enif_get_atom(env, argv[0], variant, sizeof variant, ERL_NIF_LATIN1) ||
        !enif_get_atom(env, argv[1], status, sizeof status, ERL_NIF_LATIN1))
        return enif_make_badarg(env);
    sqlite3_shutdown();
    int rc;
    if (strcmp(variant, "malloc") == 0) {
        rc = sqlite3_config(SQLITE_CONFIG_MALLOC, &default_methods);
    } else if (strcmp(variant, "enif") == 0) {
        rc = sqlite3_config(SQLITE_CONFIG_MALLOC, &enif_methods);
    } else if (strcmp(variant, "mimalloc") == 0) {
        rc = sqlite3_config(SQLITE_CONFIG_MALLOC, &mi_methods);
    } else if (strcmp(variant, "gpa") == 0) {
        /* One instance for the whole run, as a NIF library would keep
         * one: after the first configuration it starts warm, as malloc
         * and enif_alloc do (they keep what SQLite freed). */
        if (!gpa_live) {
            beam_gpa_init(&gpa, beam_large_allocator);
            gpa_live = true;
        }
        rc = beam_sqlite3_use(beam_gpa_allocator(&gpa));
    } else {
        return enif_make_badarg(env);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS,
                            strcmp(status, "true") == 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_initialize();
    return rc == SQLITE_OK ? enif_make_atom(env, "ok")
                           : error(env, "configure", rc);
}

/* ---- the workload ------------------------------------------------------- */

static int exec(sqlite3 *db, const char *sql) {
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* This thread's CPU time in ns: immune to the time other processes of a
 * shared machine take from it. */
static long long thread_cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* workload(Rows) -> {Checksum, CpuNs} | {error, Msg}: inserts (Rows customers,
 * 3 orders each), an index build, a join with a group-by, a sort. */
static ERL_NIF_TERM workload(ErlNifEnv *env, int argc,
                             const ERL_NIF_TERM argv[]) {
    (void)argc;
    int rows;
    if (!enif_get_int(env, argv[0], &rows) || rows < 1)
        return enif_make_badarg(env);
    sqlite3 *db = NULL;
    sqlite3_stmt *q = NULL;
    long long check = 0;
    long long cpu0 = thread_cpu_ns();
    int rc = sqlite3_open(":memory:", &db);
    if (rc == SQLITE_OK)
        rc = orders_populate(db, rows, 50, 3);
    if (rc == SQLITE_OK)
        rc = exec(db, "commit;"
                      "create index orders_customer on orders(customer);"
                      "create index customer_name on customer(name)");
    static const char *queries[] = {
        "select c.region, count(*), sum(o.amount) from orders o"
        " join customer c on c.id = o.customer group by c.region",
        "select o.note, o.amount from orders o order by o.note desc, o.amount"
        " limit 50",
        "select count(*) from customer c where exists (select 1 from orders o"
        " where o.customer = c.id and o.amount > 900)",
    };
    for (size_t k = 0; rc == SQLITE_OK && k < 3; k++) {
        rc = sqlite3_prepare_v2(db, queries[k], -1, &q, NULL);
        while (rc == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
            check += sqlite3_column_int64(q, 1) + sqlite3_column_bytes(q, 0);
        sqlite3_finalize(q);
    }
    sqlite3_close(db);
    if (rc != SQLITE_OK)
        return error(env, "workload", rc);
    return enif_make_tuple2(env, enif_make_int64(env, check),
                            enif_make_int64(env, thread_cpu_ns() - cpu0));
}

/* highwater(Reset) -> sqlite3_memory_highwater(Reset) */
static ERL_NIF_TERM highwater(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    return enif_make_int64(env, sqlite3_memory_highwater(enif_is_identical(
                                    argv[0], enif_make_atom(env, "true"))));
}

/* gpa_peak() -> {LivePeak, BackingBytes} of the instance (0s when the gpa
 * variant is not configured). */
static ERL_NIF_TERM gpa_stats(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    beam_alloc_stats s;
    memset(&s, 0, sizeof s);
    size_t backing = 0;
    if (gpa_live) {
        beam_allocator_stats(beam_gpa_allocator(&gpa), &s);
        backing = beam_gpa_usage_of(&gpa).backing_bytes;
    }
    return enif_make_tuple3(env, enif_make_uint64(env, s.peak_bytes),
                            enif_make_uint64(env, s.live_bytes),
                            enif_make_uint64(env, backing));
}

/* large_peak() -> {PeakBytes, LiveBytes} of beam_large_allocator in this
 * library: what the general purpose instance took from enif_alloc (its
 * segments, large blocks and metadata; nothing else here uses it). The
 * peak is since the library loaded: read it before any other use. */
static ERL_NIF_TERM large_peak(ErlNifEnv *env, int argc,
                               const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    beam_alloc_stats s;
    beam_allocator_stats(beam_large_allocator, &s);
    return enif_make_tuple2(env, enif_make_uint64(env, s.peak_bytes),
                            enif_make_uint64(env, s.live_bytes));
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    return sqlite3_config(SQLITE_CONFIG_GETMALLOC, &default_methods) !=
           SQLITE_OK;
}

static ErlNifFunc funcs[] = {
    {"configure", 2, configure, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"workload", 1, workload, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"highwater", 1, highwater, 0},
    {"gpa_stats", 0, gpa_stats, 0},
    {"large_peak", 0, large_peak, 0},
};

ERL_NIF_INIT(beam_alloc_sqlite_bench, funcs, load, NULL, NULL, NULL)
