/*
 * bench/standalone/bench_main.c: the workloads of bench/workloads.c as a
 * plain C program over libbeam_alloc_standalone.a (libc backed).
 *
 * bench/run.sh builds this file several times, once per process image:
 *   bench_sa_base      -DBENCH_WITH_MALLOC -DBENCH_WITH_BEAM: glibc malloc,
 *                      beam_alloc's allocators and the bump baseline
 *   bench_sa_mimalloc  -DBENCH_WITH_MIMALLOC, linked with -lmimalloc
 *   bench_sa_jemalloc  -DBENCH_WITH_JEMALLOC, linked with -ljemalloc
 *   bench_sa_tcmalloc  -DBENCH_WITH_TCMALLOC, linked with -ltcmalloc_minimal
 * Debian builds all three peers to replace malloc/free process-wide (each
 * exports unprefixed malloc, free, posix_memalign...). Linked into the same
 * program as one another, or as the glibc malloc measurement, they would
 * interpose malloc for everything, glibc's "malloc" row would silently
 * measure a peer and two peers would fight over one symbol. One executable
 * per peer keeps exactly one malloc implementation per process, each used
 * as its authors intend.
 *
 * Usage:
 *   bench_sa_X list                       allocator names, one a line
 *   bench_sa_X workloads                  name<TAB>description<TAB>ops
 *   bench_sa_X run [SCALE [REPS]]         every allocator x workload: CSV rows
 *                                         (each cell in a child process)
 *   bench_sa_X cell ALLOC WORKLOAD [SCALE [REPS]]
 *   bench_sa_X rss ALLOC [SCALE]          RSS row of one allocator (run it
 *                                         alone in a fresh process)
 */
#define _GNU_SOURCE

#include <pthread.h>
#include <sys/wait.h>

typedef struct bench_thread {
    pthread_t t;
} bench_thread;

#include "../workloads.c"

static int bench_host_thread_start(bench_thread *t, void *(*fn)(void *),
                                   void *arg) {
    return pthread_create(&t->t, NULL, fn, arg);
}

static void bench_host_thread_join(bench_thread *t) {
    pthread_join(t->t, NULL);
}

static void run_cell(int ai, int wi, double scale, int reps) {
    char row[1024];
    if (bench_cell_begin(ai, wi, scale) == BS_OK)
        for (int r = 0; r < reps; r++)
            if (bench_cell_rep() < 0)
                break;
    bench_cell_end();
    bench_cell_row(row, sizeof row, "standalone", "-");
    fputs(row, stdout);
    fflush(stdout);
    fprintf(stderr, "  %-10s %-18s %s\n", bench_allocs[ai].name,
            bench_specs[wi].name, bench_status_names[bench_cell.status]);
}

/* Each cell of "run" in a child process: cells start from the same fresh
 * state, and an allocator that crashes costs its cell (an error row), not
 * the run. */
static void run_cell_isolated(int ai, int wi, double scale, int reps) {
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        run_cell(ai, wi, scale, reps);
        _exit(0);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0) {
        run_cell(ai, wi, scale, reps); /* cannot fork: run it here */
        return;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return;
    char why[64];
    if (WIFSIGNALED(st))
        snprintf(why, sizeof why, "crashed (signal %d)", WTERMSIG(st));
    else
        snprintf(why, sizeof why, "exited with status %d", WEXITSTATUS(st));
    printf("standalone,-,%s,%s,error,0,,%s\n", bench_allocs[ai].name,
           bench_specs[wi].name, why);
    fflush(stdout);
    fprintf(stderr, "  %-10s %-18s error: %s\n", bench_allocs[ai].name,
            bench_specs[wi].name, why);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_sa list | run [SCALE [REPS]] | cell ALLOC "
                    "WORKLOAD [SCALE [REPS]] | rss ALLOC [SCALE]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return usage();
    if (strcmp(argv[1], "list") == 0) {
        for (int i = 0; i < BENCH_NALLOCS; i++)
            printf("%s\n", bench_allocs[i].name);
        return 0;
    }
    if (strcmp(argv[1], "workloads") == 0) {
        for (int i = 0; i < W_COUNT; i++)
            printf("%s\t%s\t%zu\n", bench_specs[i].name, bench_specs[i].what,
                   bench_specs[i].ops);
        return 0;
    }
    if (strcmp(argv[1], "run") == 0) {
        double scale = argc > 2 ? atof(argv[2]) : 1.0;
        int reps = argc > 3 ? atoi(argv[3]) : 5;
        if (scale <= 0 || reps < 1 || reps > BENCH_MAX_REPS)
            return usage();
        for (int ai = 0; ai < BENCH_NALLOCS; ai++)
            for (int wi = 0; wi < W_COUNT; wi++)
                run_cell_isolated(ai, wi, scale, reps);
        return 0;
    }
    if (strcmp(argv[1], "cell") == 0 && argc >= 4) {
        int ai = bench_find_alloc(argv[2]), wi = bench_find_workload(argv[3]);
        double scale = argc > 4 ? atof(argv[4]) : 1.0;
        int reps = argc > 5 ? atoi(argv[5]) : 5;
        if (ai < 0 || wi < 0 || scale <= 0 || reps < 1 || reps > BENCH_MAX_REPS)
            return usage();
        run_cell(ai, wi, scale, reps);
        return bench_cell.status == BS_ERROR;
    }
    if (strcmp(argv[1], "rss") == 0 && argc >= 3) {
        int ai = bench_find_alloc(argv[2]);
        double scale = argc > 3 ? atof(argv[3]) : 1.0;
        if (ai < 0 || scale <= 0)
            return usage();
        char row[1024];
        bench_rss_row(row, sizeof row, "standalone", "-", ai, scale);
        fputs(row, stdout);
        return 0;
    }
    return usage();
}
