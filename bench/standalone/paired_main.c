/*
 * bench/standalone/paired_main.c: the paired groups of bench/paired.c as a
 * plain C program over libbeam_alloc_standalone.a, with mimalloc (and the
 * other peers) dlopen'ed RTLD_LOCAL as in the BEAM host (see
 * bench/nif/bench_nif.c): every allocator of a group lives in this one
 * process, so they can be interleaved, and glibc stays the process's malloc.
 *
 * Usage:
 *   paired run [SCALE [GROUP...]]   groups (default: all standalone ones)
 *   paired rss [REPS]               peak RSS / live bytes, mixed sizes: one
 *                                   fresh child process per run, gpa and
 *                                   mimalloc alternating
 *   paired mem                      memory held for small live sets
 *   paired groups                   group names
 */
#define _GNU_SOURCE

#include <pthread.h>
#include <sys/wait.h>

typedef struct bench_thread {
    pthread_t t;
} bench_thread;

/* The cell runner of workloads.c is bench_main.c's, not used here. */
#pragma GCC diagnostic ignored "-Wunused-function"
#define BENCH_PEERS_DLOPEN 1
#define BENCH_WITH_MALLOC 1
#define BENCH_WITH_BEAM 1
#include "../workloads.c"
#include "../paired.c"

static int bench_host_thread_start(bench_thread *t, void *(*fn)(void *),
                                   void *arg) {
    return pthread_create(&t->t, NULL, fn, arg);
}

static void bench_host_thread_join(bench_thread *t) {
    pthread_join(t->t, NULL);
}

static void run_group(int gi, double scale) {
    if (paired_begin(gi, scale, "standalone") != 0) {
        fprintf(stderr, "paired: %s: no memory\n", paired_groups[gi].name);
        return;
    }
    int reps = paired_reps_for(gi);
    for (int r = 0; r < reps; r++)
        paired_rep();
    paired_end(stdout);
}

/* ---- RSS: peak resident size over peak live bytes ----------------------- */

static int rss_child(int ai, double scale, bench_rss_result *out) {
    int fd[2];
    if (pipe(fd) != 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fd[0]);
        const bench_alloc_desc *d = &bench_allocs[ai];
        bench_ctx ctx[1];
        memset(ctx, 0, sizeof ctx);
        bench_rss_result r = {0, 0, 0};
        char err[200];
        int rc = d->begin ? d->begin(ctx, 1, err, sizeof err) : 0;
        if (rc == 0)
            rc = d->rss(ctx, bench_scaled(BENCH_RSS_OPS, scale), &r, err,
                        sizeof err);
        if (d->end)
            (void)d->end(ctx, 1, err, sizeof err);
        if (rc != 0)
            r.peak_live = 0;
        ssize_t w = write(fd[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 1);
    }
    close(fd[1]);
    ssize_t n = read(fd[0], out, sizeof *out);
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    return n == (ssize_t)sizeof *out && out->peak_live > 0 ? 0 : -1;
}

static void run_rss(int reps, double scale) {
    const char *names[2] = {"gpa", "mimalloc"};
    double q[2][PAIRED_MAX_REPS];
    int n[2] = {0, 0};
    if (reps > PAIRED_MAX_REPS)
        reps = PAIRED_MAX_REPS;
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < 2; k++) {
            int i = (k + r) % 2;
            int ai = bench_find_alloc(names[i]);
            bench_rss_result res;
            if (ai < 0 || (bench_allocs[ai].unavailable != NULL &&
                           bench_allocs[ai].unavailable() != NULL))
                continue;
            if (rss_child(ai, scale, &res) == 0)
                q[i][n[i]++] = (double)(res.rss_peak - res.rss_before) /
                               (double)res.peak_live;
        }
    printf("\n== rss_mixed [standalone]: peak RSS growth / peak live bytes, "
           "mixed sizes (85%% 8-512 B, 12%% to 8 KiB, 3%% to 64 KiB), "
           "one fresh process per run, %d runs each\n",
           reps);
    for (int i = 0; i < 2; i++) {
        if (n[i] == 0) {
            printf("  %-14s n/a\n", names[i]);
            continue;
        }
        double med = paired_median(q[i], n[i]);
        printf("  %-14s %6.2f [%.2f .. %.2f]\n", names[i], med, q[i][0],
               q[i][n[i] - 1]);
        if (i == 0)
            printf("TARGET|standalone|peak RSS / live, mixed sizes: gpa|%.2f|"
                   "%.2f|%.2f|<= 1.25|%s\n",
                   med, q[i][0], q[i][n[i] - 1],
                   med <= 1.25 ? "met" : "NOT MET");
    }
}

/* ---- memory held for a small live set ---------------------------------------
 * What the general purpose allocator holds from its backing (here the large
 * allocator over malloc; in a NIF, enif_alloc: what the VM counts) for a few
 * small live sets on one thread: held - 1.5 x live is the per-thread floor
 * the issue bounds at 256 KiB. */

static size_t large_live(void) {
    beam_alloc_stats s;
    memset(&s, 0, sizeof s);
    beam_allocator_stats(beam_large_allocator, &s);
    return s.live_bytes;
}

static void run_mem(void) {
    static const struct {
        const char *what;
        size_t count, lo, hi;
    } sets[] = {
        {"16 blocks of 8-512 B", 16, 8, 512},
        {"256 blocks of 8-512 B", 256, 8, 512},
        {"4,096 blocks of 8-512 B", 4096, 8, 512},
        {"64 blocks of 8 B-8 KiB", 64, 8, 8192},
        {"64 blocks of 8 B-64 KiB", 64, 8, 65536},
    };
    printf("\n== mem_small [standalone]: bytes the GPA holds from its backing "
           "(what a BEAM counts) for small live sets, 1 thread\n");
    printf("  %-26s %10s %10s %8s %14s\n", "live set", "live", "held",
           "held/live", "held-1.5*live");
    double worst = 0;
    for (size_t k = 0; k < sizeof sets / sizeof sets[0]; k++) {
        beam_gpa_t g;
        beam_gpa_init(&g, beam_large_allocator);
        beam_allocator_t a = beam_gpa_allocator(&g);
        void **p = (void **)calloc(sets[k].count, sizeof *p);
        size_t *len = (size_t *)calloc(sets[k].count, sizeof *len);
        uint64_t rng = 0x1234567ULL + k;
        size_t before = large_live(), live = 0;
        for (size_t i = 0; p != NULL && len != NULL && i < sets[k].count; i++) {
            len[i] = sets[k].lo + bench_below((uint32_t)bench_rng(&rng),
                                              sets[k].hi - sets[k].lo + 1);
            p[i] = beam_alloc_bytes(a, len[i], 8);
            live += len[i];
        }
        size_t held = large_live() - before;
        double extra = (double)held - 1.5 * (double)live;
        if (extra > worst)
            worst = extra;
        printf("  %-26s %10zu %10zu %8.2f %12.0f B\n", sets[k].what, live, held,
               (double)held / (double)live, extra);
        for (size_t i = 0; p != NULL && len != NULL && i < sets[k].count; i++)
            beam_free_bytes(a, p[i], len[i], 8);
        free(p);
        free(len);
        beam_gpa_deinit(&g);
    }
    printf("  per-thread floor (worst held - 1.5 x live): %.0f KiB; 64 "
           "schedulers: %.1f MiB\n",
           worst / 1024, 64 * worst / 1048576);
    printf("TARGET|standalone|memory: held - 1.5 x live, one thread (KiB)|%.0f|"
           "%.0f|%.0f|<= 256|%s\n",
           worst / 1024, worst / 1024, worst / 1024,
           worst <= 256.0 * 1024 ? "met" : "NOT MET");
}

int main(int argc, char **argv) {
    bench_peers_open();
    if (argc >= 2 && strcmp(argv[1], "groups") == 0) {
        for (int i = 0; i < PAIRED_NGROUPS; i++)
            if (paired_groups[i].where & PS_SA)
                printf("%s\n", paired_groups[i].name);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "run") == 0) {
        double scale = argc > 2 ? atof(argv[2]) : 1.0;
        if (scale <= 0)
            scale = 1;
        if (argc > 3) {
            for (int k = 3; k < argc; k++) {
                int gi = paired_find_group(argv[k]);
                if (gi < 0) {
                    fprintf(stderr, "paired: no group %s\n", argv[k]);
                    return 2;
                }
                run_group(gi, scale);
            }
        } else {
            for (int gi = 0; gi < PAIRED_NGROUPS; gi++)
                if (paired_groups[gi].where & PS_SA)
                    run_group(gi, scale);
        }
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "rss") == 0) {
        int reps = argc > 2 ? atoi(argv[2]) : 3;
        double scale = argc > 3 ? atof(argv[3]) : 1.0;
        run_rss(reps < 1 ? 3 : reps, scale <= 0 ? 1 : scale);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "mem") == 0) {
        run_mem();
        return 0;
    }
    fprintf(stderr, "usage: paired run [SCALE [GROUP...]] | rss [REPS "
                    "[SCALE]] | mem | groups\n");
    return 2;
}
