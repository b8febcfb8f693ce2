/*
 * bench/sqlite/sqlite_paired.c (make bench-sqlite-c): SQLite's CPU time on
 * a general purpose allocator instance (beam_sqlite3_use) against glibc
 * malloc (SQLite's default), standalone, no BEAM. The workload is an
 * adopter's (100k rows): inserts into :memory:, a sort, lookups by key.
 *
 * Paired as bench/paired.c is: each round runs both, back to back, the
 * first one alternating, and the ratio is taken within the round. Each of
 * PROCS fresh processes (forked) runs ROUNDS rounds with
 * SQLITE_CONFIG_MEMSTATUS on (SQLite's default), then ROUNDS off. Printed:
 * each process's median ratio, and the median of those with the least
 * and greatest round of any.
 *
 *   sqlite_paired [ROUNDS [ROWS [PROCS]]]      (9, 100000, 3)
 */
#define _GNU_SOURCE
#include <beam_alloc/sqlite3.h>

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 64
#define MAX_PROCS 16

static beam_gpa_t gpa;
static sqlite3_mem_methods default_mem;

static void fail(const char *what, int rc) {
    fprintf(stderr, "sqlite_paired: %s: %s\n", what, sqlite3_errstr(rc));
    exit(1);
}

/* SQLite on the instance (on) or on malloc, MEMSTATUS as given. */
static void use(bool on, int memstatus) {
    int rc = sqlite3_shutdown();
    if (rc == SQLITE_OK)
        rc = on ? beam_sqlite3_use(beam_gpa_allocator(&gpa))
                : sqlite3_config(SQLITE_CONFIG_MALLOC, &default_mem);
    if (rc == SQLITE_OK)
        rc = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, memstatus);
    if (rc == SQLITE_OK)
        rc = sqlite3_initialize();
    if (rc != SQLITE_OK)
        fail("configure", rc);
}

static void exec(sqlite3 *db, const char *sql) {
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        fail(sql, rc);
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        fail(sql, rc);
    return st;
}

static void step(sqlite3_stmt *st, int want) {
    int rc = sqlite3_step(st);
    if (rc != want)
        fail("step", rc);
}

static double workload(int n) {
    sqlite3 *db;
    int rc = sqlite3_open(":memory:", &db);
    if (rc != SQLITE_OK)
        fail("open", rc);
    exec(db, "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL); "
             "BEGIN");
    sqlite3_stmt *st = prepare(db, "INSERT INTO t VALUES(?1, ?2, ?3)");
    for (int i = 0; i < n; i++) {
        char name[32];
        int len = snprintf(name, sizeof name, "name-%d", (i * 7919) % n);
        sqlite3_bind_int(st, 1, i);
        sqlite3_bind_text(st, 2, name, len, SQLITE_TRANSIENT);
        sqlite3_bind_double(st, 3, i * 0.5);
        step(st, SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec(db, "COMMIT");
    st = prepare(db, "SELECT sum(v) FROM (SELECT v FROM t ORDER BY name "
                     "LIMIT 1000)");
    step(st, SQLITE_ROW);
    double sum = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    st = prepare(db, "SELECT v FROM t WHERE id = ?1");
    for (int i = 0; i < n / 5; i++) {
        sqlite3_bind_int(st, 1, (i * 31) % n);
        step(st, SQLITE_ROW);
        sum += sqlite3_column_double(st, 0);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return sum;
}

static double cpu_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static volatile double sink;

static double timed(bool on, int memstatus, int rows) {
    use(on, memstatus);
    double t0 = cpu_ms();
    sink = workload(rows);
    return cpu_ms() - t0;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, by_value);
    return v[n / 2];
}

/* One process: ROUNDS ratios for MEMSTATUS on, then off, into fd. */
static void child(int fd, int rounds, int rows) {
    beam_gpa_init(&gpa, beam_large_allocator);
    sqlite3_config(SQLITE_CONFIG_GETMALLOC, &default_mem);
    double r[2][MAX_ROUNDS];
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < rounds; k++) {
            bool gpa_first = k & 1;
            double first = timed(gpa_first, 1 - m, rows);
            double second = timed(!gpa_first, 1 - m, rows);
            r[m][k] = gpa_first ? first / second : second / first;
        }
    sqlite3_shutdown();
    if (write(fd, r, sizeof r) != (ssize_t)sizeof r)
        exit(1);
    exit(0);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 9;
    int rows = argc > 2 ? atoi(argv[2]) : 100000;
    int procs = argc > 3 ? atoi(argv[3]) : 3;
    if (rounds < 1 || rounds > MAX_ROUNDS || rows < 5 || procs < 1 ||
        procs > MAX_PROCS) {
        fprintf(stderr,
                "usage: sqlite_paired [ROUNDS<=%d [ROWS [PROCS<=%d]]]\n",
                MAX_ROUNDS, MAX_PROCS);
        return 2;
    }
    static double all[MAX_PROCS][2][MAX_ROUNDS];
    for (int p = 0; p < procs; p++) {
        int fd[2];
        if (pipe(fd) != 0)
            return 1;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(fd[0]);
            child(fd[1], rounds, rows);
        }
        close(fd[1]);
        int status;
        bool ok = read(fd[0], all[p], sizeof all[p]) == (ssize_t)sizeof all[p];
        close(fd[0]);
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !ok || status != 0) {
            fprintf(stderr, "sqlite_paired: process %d failed\n", p);
            return 1;
        }
    }
    printf("SQLite %d rows, CPU time GPA / malloc, %d processes x %d rounds\n",
           rows, procs, rounds);
    for (int m = 0; m < 2; m++) {
        double meds[MAX_PROCS], lo = 1e9, hi = 0;
        printf("  MEMSTATUS %-3s per process:", m == 0 ? "on" : "off");
        for (int p = 0; p < procs; p++) {
            for (int k = 0; k < rounds; k++) {
                lo = all[p][m][k] < lo ? all[p][m][k] : lo;
                hi = all[p][m][k] > hi ? all[p][m][k] : hi;
            }
            meds[p] = median(all[p][m], rounds);
            printf(" %.3f", meds[p]);
        }
        printf("  median %.3f [%.3f .. %.3f]\n", median(meds, procs), lo, hi);
    }
    return 0;
}
