/*
 * The orders database on SQLite: a customer table and an orders table,
 * filled with prepared statements in one transaction. One workload for
 * bench-sqlite's NIF (bench/sqlite/sqlite_bench_nif.c) and for SqliteNif's
 * tests (test/nifs/sqlite_nif.c), which check its sums.
 */
#ifndef BENCH_SQLITE_ORDERS_H
#define BENCH_SQLITE_ORDERS_H

#include <sqlite3.h>
#include <stdio.h>

/* Creates the tables in db and, in a transaction it leaves open for the
 * caller to commit, inserts rows customers (customer i in region
 * i % regions) with orders_each orders each (order k of customer i for
 * customer (i * 7919 + k) % rows, amount (i * 31 + k * 17) % 1000).
 * SQLite's result code. */
static int orders_populate(sqlite3 *db, int rows, int regions,
                           int orders_each) {
    int rc = sqlite3_exec(db,
                          "create table customer(id integer primary key,"
                          " name text, region integer);"
                          "create table orders(id integer primary key,"
                          " customer integer, amount integer, note text);"
                          "begin",
                          NULL, NULL, NULL);
    sqlite3_stmt *c = NULL, *o = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "insert into customer values(?,?,?)", -1,
                                &c, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db, "insert into orders values(?,?,?,?)", -1,
                                &o, NULL);
    char text[64];
    for (int i = 0; rc == SQLITE_OK && i < rows; i++) {
        snprintf(text, sizeof text, "customer %d, region %d", i, i % regions);
        sqlite3_bind_int(c, 1, i);
        sqlite3_bind_text(c, 2, text, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(c, 3, i % regions);
        rc = sqlite3_step(c) == SQLITE_DONE ? sqlite3_reset(c) : SQLITE_ERROR;
        for (int k = 0; rc == SQLITE_OK && k < orders_each; k++) {
            snprintf(text, sizeof text, "order %d/%d for %d", k, i * 7 % 997,
                     i);
            sqlite3_bind_int(o, 1, orders_each * i + k);
            sqlite3_bind_int(o, 2, (int)(((long long)i * 7919 + k) % rows));
            sqlite3_bind_int(o, 3, (i * 31 + k * 17) % 1000);
            sqlite3_bind_text(o, 4, text, -1, SQLITE_TRANSIENT);
            rc = sqlite3_step(o) == SQLITE_DONE ? sqlite3_reset(o)
                                                : SQLITE_ERROR;
        }
    }
    sqlite3_finalize(c);
    sqlite3_finalize(o);
    return rc;
}

#endif
