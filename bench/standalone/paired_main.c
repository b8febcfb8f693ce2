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
 * small live sets: held - 1.5 x live is the per-thread floor the issue bounds
 * at 256 KiB. Each set is drawn MEM_DRAWS times (seeds), as one draw says
 * little: the first held 133 KiB beyond 1.5 x live, others of the same
 * sets up to 816 KiB. And MEM_THREADS threads hold their sets in one
 * instance at once, as a BEAM's schedulers do: a thread holds more there
 * than alone (0.6-1.4 MiB a thread for the worst set in a 64-scheduler
 * node: README, "What a small live set costs"). */

#define MEM_DRAWS 9
#define MEM_THREADS 64

static const struct {
    const char *what;
    size_t count, lo, hi;
} mem_sets[] = {
    {"16 blocks of 8-512 B", 16, 8, 512},
    {"256 blocks of 8-512 B", 256, 8, 512},
    {"4,096 blocks of 8-512 B", 4096, 8, 512},
    {"64 blocks of 8 B-8 KiB", 64, 8, 8192},
    {"64 blocks of 8 B-64 KiB", 64, 8, 65536},
};
#define MEM_NSETS (sizeof mem_sets / sizeof mem_sets[0])

static size_t large_live(void) {
    beam_alloc_stats s;
    memset(&s, 0, sizeof s);
    beam_allocator_stats(beam_large_allocator, &s);
    return s.live_bytes;
}

/* Threads holding their sets, and whether they may free them now (a mutex
 * and a condition: macOS has no pthread_barrier_t). */
typedef struct mem_gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int held;
    bool release;
} mem_gate;

/* One thread's live set: set k drawn from seed, allocated from a. */
typedef struct mem_hold {
    beam_allocator_t a;
    size_t k;
    uint64_t seed;
    void **p;
    size_t *len;
    size_t live;
    mem_gate *gate;
} mem_hold;

static void mem_alloc(mem_hold *h) {
    size_t n = mem_sets[h->k].count, lo = mem_sets[h->k].lo;
    h->p = (void **)calloc(n, sizeof *h->p);
    h->len = (size_t *)calloc(n, sizeof *h->len);
    h->live = 0;
    uint64_t rng = h->seed;
    for (size_t i = 0; h->p != NULL && h->len != NULL && i < n; i++) {
        h->len[i] = lo + bench_below((uint32_t)bench_rng(&rng),
                                     mem_sets[h->k].hi - lo + 1);
        h->p[i] = beam_alloc_bytes(h->a, h->len[i], 8);
        h->live += h->len[i];
    }
}

static void mem_free(mem_hold *h) {
    for (size_t i = 0; h->p != NULL && h->len != NULL &&
                       i < mem_sets[h->k].count;
         i++)
        beam_free_bytes(h->a, h->p[i], h->len[i], 8);
    free(h->p);
    free(h->len);
}

/* A thread of the many: holds its set until the main thread has read what
 * the instance holds, then frees it on its own thread, as a scheduler
 * would. */
static void *mem_thread(void *arg) {
    mem_hold *h = (mem_hold *)arg;
    mem_alloc(h);
    pthread_mutex_lock(&h->gate->mu);
    h->gate->held++;
    pthread_cond_broadcast(&h->gate->cv);
    while (!h->gate->release)
        pthread_cond_wait(&h->gate->cv, &h->gate->mu);
    pthread_mutex_unlock(&h->gate->mu);
    mem_free(h);
    return NULL;
}

/* held - 1.5 x live per thread for set k, drawn from seed, on nthreads
 * threads sharing a fresh instance (1: this thread); *live_out, *held_out
 * are the totals. */
static double mem_run(size_t k, uint64_t seed, int nthreads,
                      size_t *live_out, size_t *held_out) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    size_t before = large_live(), live = 0, held;
    if (nthreads == 1) {
        mem_hold h = {.a = a, .k = k, .seed = seed};
        mem_alloc(&h);
        held = large_live() - before;
        live = h.live;
        mem_free(&h);
    } else {
        mem_hold h[MEM_THREADS];
        pthread_t t[MEM_THREADS];
        mem_gate gate = {.held = 0, .release = false};
        pthread_mutex_init(&gate.mu, NULL);
        pthread_cond_init(&gate.cv, NULL);
        for (int i = 0; i < nthreads; i++) {
            h[i] = (mem_hold){.a = a,
                              .k = k,
                              .seed = seed + 1000003ULL * (uint64_t)i,
                              .gate = &gate};
            /* The threads started wait for the rest: none can go on. */
            if (pthread_create(&t[i], NULL, mem_thread, &h[i]) != 0) {
                fprintf(stderr, "paired mem: cannot start thread %d\n", i);
                exit(1);
            }
        }
        pthread_mutex_lock(&gate.mu);
        while (gate.held < nthreads)
            pthread_cond_wait(&gate.cv, &gate.mu);
        held = large_live() - before;
        for (int i = 0; i < nthreads; i++)
            live += h[i].live;
        gate.release = true;
        pthread_cond_broadcast(&gate.cv);
        pthread_mutex_unlock(&gate.mu);
        for (int i = 0; i < nthreads; i++)
            pthread_join(t[i], NULL);
        pthread_cond_destroy(&gate.cv);
        pthread_mutex_destroy(&gate.mu);
    }
    beam_gpa_deinit(&g);
    *live_out = live;
    *held_out = held;
    return ((double)held - 1.5 * (double)live) / nthreads;
}

/* The floor for nthreads: per draw, the worst set's held - 1.5 x live a
 * thread; their median into *med and range into *lo, *hi (bytes). Draw 0
 * is printed set by set. */
static void mem_floor(int nthreads, double *med, double *lo, double *hi) {
    double worst[MEM_DRAWS];
    for (int d = 0; d < MEM_DRAWS; d++) {
        worst[d] = -1e300;
        for (size_t k = 0; k < MEM_NSETS; k++) {
            size_t live, held;
            double extra = mem_run(k, 0x1234567ULL + k + 7919ULL * (uint64_t)d,
                                   nthreads, &live, &held);
            if (extra > worst[d])
                worst[d] = extra;
            if (d == 0)
                printf("  %-26s %10zu %10zu %8.2f %12.0f B\n",
                       mem_sets[k].what, live / (size_t)nthreads,
                       held / (size_t)nthreads,
                       (double)held / (double)live, extra);
        }
    }
    *med = paired_median(worst, MEM_DRAWS); /* (sorts worst: least first) */
    *lo = worst[0];
    *hi = worst[MEM_DRAWS - 1];
}

static void run_mem(void) {
    static const int threads[] = {1, MEM_THREADS};
    for (size_t i = 0; i < sizeof threads / sizeof threads[0]; i++) {
        int n = threads[i];
        printf("\n== mem_small [standalone]: bytes the GPA holds from its "
               "backing (what a BEAM counts) for small live sets, %d "
               "thread%s holding one each in one instance; %d draws of "
               "each set\n",
               n, n == 1 ? "" : "s", MEM_DRAWS);
        printf("  %-26s %10s %10s %8s %14s\n", "first draw, per thread",
               "live", "held", "held/live", "held-1.5*live");
        double med, lo, hi;
        mem_floor(n, &med, &lo, &hi);
        printf("  per-thread floor (worst set's held - 1.5 x live, median "
               "of %d draws [least .. most]): %.0f KiB [%.0f .. %.0f]; 64 "
               "such threads: %.1f MiB\n",
               MEM_DRAWS, med / 1024, lo / 1024, hi / 1024,
               64 * med / 1048576);
        /* The one-thread name is the one the README's table has. */
        printf("TARGET|standalone|memory: held - 1.5 x live, %s "
               "(KiB)|%.0f|%.0f|%.0f|<= 256|%s\n",
               n == 1 ? "one thread" : "64 threads sharing", med / 1024,
               lo / 1024, hi / 1024,
               med <= 256.0 * 1024 ? "met" : "NOT MET");
    }
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
