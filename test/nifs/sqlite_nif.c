/*
 * SQLite on beam_alloc through <beam_alloc/sqlite3.h>: the NIFs of
 * SqliteNif.
 *
 * SQLite's allocator is one per process, so these NIFs share one
 * connection and one configuration, and the tests that call them run one
 * at a time (async: false):
 *
 *   start_gpa/0 (start_process_wide/0 on the library's process-wide
 *   instance), open/0, populate/1, query/0, close/0, shutdown/0:
 *     SQLite on this library's own general purpose instance, listed in
 *     BeamAlloc.stats(SqliteNif) as :sqlite;
 *   database/1: a connection of its own on the running SQLite, for
 *     concurrent callers;
 *   roundtrip/1: start SQLite on the call's beam_allocator (the fault
 *     driver's under check_all_allocation_failures), open, insert, query,
 *     close and shut down, all in one call.
 */
#include "nif_util.h"

#include <beam_alloc/sqlite3.h>

#include "../../bench/sqlite/orders.h"

#include <stdio.h>

static beam_gpa_t sqlite_gpa;
static sqlite3 *db;

static ERL_NIF_TERM sqlite_error(ErlNifEnv *env, int rc, const char *what) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s: %s (%d)", what, sqlite3_errstr(rc), rc);
    size_t len = strlen(msg);
    ERL_NIF_TERM bin;
    memcpy(enif_make_new_binary(env, len, &bin), msg, len);
    return enif_make_tuple2(env, enif_make_atom(env, "error"), bin);
}

/* SQLite (re)started on a: ok | {error, Msg}. */
static ERL_NIF_TERM start_on(ErlNifEnv *env, beam_allocator_t a) {
    sqlite3_shutdown();
    int rc = beam_sqlite3_use(a);
    if (rc == SQLITE_OK)
        rc = sqlite3_initialize();
    return rc == SQLITE_OK ? enif_make_atom(env, "ok")
                           : sqlite_error(env, rc, "start");
}

/* start_gpa(): SQLite on sqlite_gpa. */
BEAM_NIF(start_gpa) {
    return start_on(env, beam_gpa_allocator(&sqlite_gpa));
}

/* start_process_wide(): SQLite on this library's process-wide instance,
 * which its last unload tears down unless the library is kept mapped
 * (beam_sqlite3_use). */
BEAM_NIF(start_process_wide) {
    return start_on(env, beam_general_purpose_allocator);
}

/* use_again() -> SQLite's code for beam_sqlite3_use while it runs. */
BEAM_NIF(use_again) {
    return enif_make_int(env, beam_sqlite3_use(beam_raw_allocator));
}

BEAM_NIF(open) {
    if (db != NULL)
        return enif_make_badarg(env);
    int rc = sqlite3_open(":memory:", &db);
    if (rc != SQLITE_OK) {
        sqlite3_close(db);
        db = NULL;
        return sqlite_error(env, rc, "open");
    }
    return enif_make_atom(env, "ok");
}

static int exec(const char *sql) {
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* populate(Rows): the orders database of bench-sqlite, Rows customers in
 * 17 regions and 2 * Rows orders, then an index. */
BEAM_NIF(populate) {
    int rows;
    if (db == NULL || !enif_get_int(env, argv[0], &rows) || rows < 1)
        return enif_make_badarg(env);
    int rc = orders_populate(db, rows, 17, 2);
    if (rc == SQLITE_OK)
        rc = exec("commit; create index orders_customer on orders(customer)");
    return rc == SQLITE_OK ? enif_make_atom(env, "ok")
                           : sqlite_error(env, rc, "populate");
}

/* query() -> [{Region, Orders, Total}] by region: a join and a group-by. */
BEAM_NIF(query) {
    if (db == NULL)
        return enif_make_badarg(env);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(
        db,
        "select c.region, count(*), sum(o.amount) from orders o"
        " join customer c on c.id = o.customer"
        " group by c.region order by c.region",
        -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sqlite_error(env, rc, "prepare");
    ERL_NIF_TERM list = enif_make_list(env, 0);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        list = enif_make_list_cell(
            env,
            enif_make_tuple3(env, enif_make_int(env, sqlite3_column_int(st, 0)),
                             enif_make_int64(env, sqlite3_column_int64(st, 1)),
                             enif_make_int64(env, sqlite3_column_int64(st, 2))),
            list);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sqlite_error(env, rc, "query");
    ERL_NIF_TERM reversed;
    enif_make_reverse_list(env, list, &reversed);
    return reversed;
}

BEAM_NIF(close) {
    int rc = sqlite3_close(db);
    db = NULL;
    return rc == SQLITE_OK ? enif_make_atom(env, "ok")
                           : sqlite_error(env, rc, "close");
}

BEAM_NIF(shutdown) {
    return enif_make_int(env, sqlite3_shutdown());
}

/* A connection of its own: open, create, insert rows, query, close, on
 * whatever allocator SQLite runs on. {Count, Sum} | {error, Msg}; every
 * failure surfaces and everything is given back on every path. */
static ERL_NIF_TERM one_database(ErlNifEnv *env, int rows) {
    sqlite3 *conn = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open(":memory:", &conn);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(conn,
                          "create table t(a integer, b text);"
                          "create index t_b on t(b)",
                          NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(conn, "insert into t values(?, ?)", -1, &st,
                                NULL);
    for (int i = 0; rc == SQLITE_OK && i < rows; i++) {
        char text[32];
        snprintf(text, sizeof text, "row %d", i);
        sqlite3_bind_int(st, 1, i);
        sqlite3_bind_text(st, 2, text, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st) == SQLITE_DONE ? sqlite3_reset(st)
                                             : sqlite3_errcode(conn);
    }
    sqlite3_finalize(st);
    st = NULL;
    long long count = 0, sum = 0;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(conn,
                                "select count(*), sum(a) from t where b like "
                                "'row %'",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            count = sqlite3_column_int64(st, 0);
            sum = sqlite3_column_int64(st, 1);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    const char *what = rc == SQLITE_OK ? "" : sqlite3_errmsg(conn);
    char why[128];
    snprintf(why, sizeof why, "database: %s", what);
    sqlite3_close(conn); /* NULL after a failed open: a no-op */
    if (rc != SQLITE_OK)
        return sqlite_error(env, rc, why);
    return enif_make_tuple2(env, enif_make_int64(env, count),
                            enif_make_int64(env, sum));
}

/* roundtrip(Rows): the whole life of SQLite in one call, on this call's
 * beam_allocator (the fault driver's under check_all_allocation_failures):
 * start, one database, shut down. */
BEAM_NIF(roundtrip) {
    int rows;
    if (!enif_get_int(env, argv[0], &rows) || rows < 1)
        return enif_make_badarg(env);
    sqlite3_shutdown();
    int rc = beam_sqlite3_use(beam_allocator);
    if (rc != SQLITE_OK)
        return sqlite_error(env, rc, "use");
    rc = sqlite3_initialize();
    if (rc != SQLITE_OK) {
        sqlite3_shutdown();
        return sqlite_error(env, rc, "initialize");
    }
    ERL_NIF_TERM result = one_database(env, rows);
    sqlite3_shutdown();
    return result;
}

/* leak_connection(): SQLite on the leak_check call's instance (the
 * call's beam_allocator), as the
 * README's sqlite_checked, and a connection opened and used but never
 * closed: its blocks leak. SQLite goes back to sqlite_gpa after (the
 * connection, never used again, stays in the kept instance). */
static ERL_NIF_TERM leak_a_connection(ErlNifEnv *env) {
    sqlite3 *conn = NULL;
    int rc = sqlite3_shutdown();
    if (rc == SQLITE_OK)
        rc = beam_sqlite3_use(beam_allocator);
    if (rc == SQLITE_OK)
        rc = sqlite3_initialize();
    if (rc == SQLITE_OK)
        rc = sqlite3_open_v2(":memory:", &conn, /* SITE: open leaked */
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(conn, /* SITE: exec leaked */
                          "create table t(a integer primary key, b text);"
                          "insert into t(b) values ('one'), ('two');"
                          "create index t_b on t(b)",
                          NULL, NULL, NULL);
    sqlite3_shutdown();
    beam_sqlite3_use(beam_gpa_allocator(&sqlite_gpa));
    sqlite3_initialize();
    return rc == SQLITE_OK ? enif_make_atom(env, "ok")
                           : sqlite_error(env, rc, "leak_connection");
}

BEAM_NIF(leak_connection, .leak_check = true) {
    return leak_a_connection(env);
}

/* The same, keeping 16 frames: SQLite's 14 first and the NIF's line make
 * a long site. */
BEAM_NIF(leak_connection_16, .leak_check = true, .frames = 16) {
    return leak_a_connection(env);
}

/* database(Rows): one database on the running SQLite (start_gpa/0's), for
 * many processes at once on the dirty schedulers. */
BEAM_NIF(database) {
    int rows;
    if (!enif_get_int(env, argv[0], &rows) || rows < 1)
        return enif_make_badarg(env);
    return one_database(env, rows);
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    /* Once (README): a copy kept mapped by beam_sqlite3_use and loaded
     * again keeps its statics, and SQLite may run on this instance. */
    static bool sqlite_gpa_ready;
    if (!sqlite_gpa_ready)
        beam_gpa_init(&sqlite_gpa, beam_large_allocator);
    sqlite_gpa_ready = true;
    if (!beam_stats_register("sqlite", beam_gpa_allocator(&sqlite_gpa)))
        return 1;
    return load_capturing_reports(env, priv, info);
}

static ErlNifFunc funcs[] = {
    {"start_gpa", 0, start_gpa, 0},
    {"start_process_wide", 0, start_process_wide, 0},
    {"use_again", 0, use_again, 0},
    {"open", 0, open, 0},
    {"populate", 1, populate, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"query", 0, query, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"close", 0, close, 0},
    {"shutdown", 0, shutdown, 0},
    {"roundtrip", 1, roundtrip, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"database", 1, database, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"leak_connection", 0, leak_connection, 0},
    {"leak_connection_16", 0, leak_connection_16, 0},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(Elixir.SqliteNif, funcs, load, NULL, NULL)
