/*
 * bench/paired.c: paired, interleaved measurement, the part of `make bench`
 * a noisy machine cannot fool.
 *
 * #included after bench/workloads.c by bench/standalone/paired_main.c and by
 * bench/nif/bench_nif.c, so both settings run the same groups.
 *
 * A *group* is one workload and a list of *members* (an allocator and a
 * thread count). Every member of a group is set up in the same process, and
 * every repetition runs each member once, back to back, in an order that
 * rotates from one repetition to the next. A ratio between two members is
 * taken per repetition (the two numbers were measured a few hundred
 * milliseconds apart, under the same load) and reported as median, min and
 * max over the repetitions. Whatever else the machine runs slows both sides
 * of a pair alike, so the ratios hold where absolute times drift.
 *
 * One-thread members are timed by their thread's CPU time
 * (CLOCK_THREAD_CPUTIME_ID): time the thread spent preempted does not
 * count. Members with threads are timed by the wall clock.
 *
 * Each repetition also records how much CPU other processes used while it
 * ran: busy ticks of the whole machine (/proc/stat) minus this process's
 * own CPU time (getrusage), over the wall time, in cores. Repetitions where
 * that exceeds PAIRED_DISTURBED cores are marked, and a group with any is
 * reported with a warning.
 *
 * Output lines (to the FILE the host gives):
 *   human-readable blocks per group,
 *   "TARGET|setting|label|ratio median|min|max|goal|met" per target,
 *   "REP,setting,group,alloc,threads,rep,ns_per_op,other_cores" per rep.
 * bench/run.sh collects the TARGET and REP lines into the summary and
 * bench/results/paired.csv.
 */
#ifndef BENCH_PAIRED_C
#define BENCH_PAIRED_C

#include <pthread.h>
#include <sys/resource.h>

#define PAIRED_MAX_MEMBERS 16
#define PAIRED_MAX_REPS 64
/* Other processes' CPU use (cores) above which a repetition is marked. */
#define PAIRED_DISTURBED 0.25

enum { PG_PC, PG_WL };
enum { PS_SA = 1u, PS_BEAM = 2u };

typedef struct paired_member {
    const char *alloc;
    int threads;
} paired_member;

typedef struct paired_group {
    const char *name;
    const char *what;
    int kind;
    int wl;                   /* PG_WL: the W_* workload */
    size_t live, lo, hi, ops; /* PG_PC: the scalable churn */
    bool pin;                 /* threads pinned to distinct CPUs */
    unsigned where;           /* PS_SA | PS_BEAM */
    int reps;                 /* default repetitions */
    paired_member m[PAIRED_MAX_MEMBERS];
} paired_group;

#define M1(a)                                                                  \
    { a, 1 }
#define M4(a)                                                                  \
    {a, 1}, {a, 2}, {a, 4}, {                                                  \
        a, 8                                                                   \
    }

static const paired_group paired_groups[] = {
    {"churn_8_512",
     "churn 8-512 B, 1,000 live",
     PG_PC,
     0,
     1000,
     8,
     512,
     500000,
     false,
     PS_SA | PS_BEAM,
     11,
     {M1("gpa"), M1("mimalloc"), M1("floor"), M1("raw"), M1("enif")}},
    {"pair64",
     "immediate alloc+free, 64 B",
     PG_WL,
     W_PAIR64,
     0,
     0,
     0,
     0,
     false,
     PS_SA | PS_BEAM,
     9,
     {M1("gpa"), M1("mimalloc"), M1("floor"), M1("raw"), M1("enif")}},
    {"churn_100k",
     "churn 8-512 B, 100,000 live",
     PG_PC,
     0,
     100000,
     8,
     512,
     1000000,
     false,
     PS_SA | PS_BEAM,
     7,
     {M1("gpa"), M1("mimalloc"), M1("floor")}},
    {"churn_1k_64k",
     "churn 1-64 KiB, 1,000 live",
     PG_PC,
     0,
     1000,
     1024,
     65536,
     200000,
     false,
     PS_SA | PS_BEAM,
     7,
     {M1("gpa"), M1("mimalloc"), M1("floor"), M1("enif")}},
    {"threads_8_512",
     "churn 8-512 B, 2,000 live in all, threads pinned",
     PG_PC,
     0,
     2000,
     8,
     512,
     2000000,
     true,
     PS_SA,
     9,
     {M1("gpa"),
      {"gpa", 2},
      M1("mimalloc"),
      {"mimalloc", 2},
      M1("floor"),
      {"floor", 2}}},
    {"xthread_8_512",
     "producer allocates 8-512 B, consumer frees, threads pinned",
     PG_WL,
     W_XTHREAD,
     0,
     0,
     0,
     0,
     true,
     PS_SA,
     9,
     {M1("gpa"), M1("mimalloc")}},
    {"scale_1k",
     "scale table: churn 8-128 B, 1,000 live in all",
     PG_PC,
     0,
     1000,
     8,
     128,
     2000000,
     true,
     PS_SA,
     5,
     {M4("gpa"), M4("mimalloc"), M4("floor")}},
    {"scale_100k",
     "scale table: churn 8-128 B, 100,000 live in all",
     PG_PC,
     0,
     100000,
     8,
     128,
     2000000,
     true,
     PS_SA,
     5,
     {M4("gpa"), M4("mimalloc"), M4("floor")}},
    {"scale_10m",
     "scale table: churn 8-128 B, 10,000,000 live in all",
     PG_PC,
     0,
     10000000,
     8,
     128,
     500000,
     true,
     PS_SA,
     3,
     {M4("gpa"), M4("mimalloc"), M4("floor")}},
};
#define PAIRED_NGROUPS ((int)(sizeof paired_groups / sizeof paired_groups[0]))

/* Targets of the issue: ratio = num / den per repetition (ns per op), or
 * for a speedup (ge) den / num: throughput of num over that of den. */
typedef struct paired_target {
    const char *group;
    paired_member num, den;
    double goal;
    bool ge;  /* goal is a floor (speedup), else a ceiling */
    bool cpu; /* ge only: from the threads' CPU time per op, times the
                 thread ratio: what the threads would give with a core each,
                 which a busy machine cannot fake (wall time it can) */
    const char *label;
} paired_target;

static const paired_target paired_targets[] = {
    {"churn_8_512", M1("gpa"), M1("mimalloc"), 1.10, false, false,
     "small churn 8-512 B, 1k live: gpa / mimalloc"},
    {"pair64", M1("gpa"), M1("mimalloc"), 1.10, false, false,
     "immediate alloc+free 64 B: gpa / mimalloc"},
    {"churn_100k", M1("gpa"), M1("mimalloc"), 1.50, false, false,
     "churn 8-512 B, 100k live: gpa / mimalloc"},
    {"churn_1k_64k", M1("gpa"), M1("mimalloc"), 1.50, false, false,
     "medium churn 1-64 KiB: gpa / mimalloc"},
    {"churn_1k_64k", M1("gpa"), M1("enif"), 0.25, false, false,
     "medium churn 1-64 KiB: gpa / enif_alloc"},
    {"threads_8_512",
     {"gpa", 2},
     M1("gpa"),
     1.80,
     true,
     false,
     "2 threads pinned: gpa throughput 2 threads / 1 thread (wall)"},
    {"threads_8_512",
     {"gpa", 2},
     M1("gpa"),
     1.80,
     true,
     true,
     "2 threads pinned: gpa scaling from CPU time per op"},
    {"xthread_8_512", M1("gpa"), M1("mimalloc"), 1.30, false, false,
     "cross-thread frees, pinned: gpa / mimalloc"},
    {"churn_8_512", M1("raw"), M1("enif"), 1.03, false, false,
     "raw allocator churn: raw / enif_alloc"},
    {"pair64", M1("raw"), M1("enif"), 1.03, false, false,
     "raw allocator alloc+free: raw / enif_alloc"},
};
#define PAIRED_NTARGETS                                                        \
    ((int)(sizeof paired_targets / sizeof paired_targets[0]))

/* ---- the run of one group ------------------------------------------------ */

static struct {
    const paired_group *g;
    const char *setting;
    double scale;
    int nm;
    int ai[PAIRED_MAX_MEMBERS];
    bool ok[PAIRED_MAX_MEMBERS], begun[PAIRED_MAX_MEMBERS];
    char note[PAIRED_MAX_MEMBERS][160];
    bench_ctx ctx[PAIRED_MAX_MEMBERS][BENCH_PC_MAX_THREADS];
    size_t ops; /* per repetition (PG_PC: in all threads) */
    int nreps;
    double ns[PAIRED_MAX_MEMBERS][PAIRED_MAX_REPS];
    /* PG_PC: the threads' CPU time per op, summed over the threads. */
    double cpu[PAIRED_MAX_MEMBERS][PAIRED_MAX_REPS];
    double other[PAIRED_MAX_REPS];
    /* Pinned groups: a cache line's round trip between CPUs 0 and 1 at
     * the start of each repetition (ns; -1: not measured). */
    double trip[PAIRED_MAX_REPS];
    void **slot_p;
    uint32_t *slot_n;
} pr;

static int paired_find_group(const char *name) {
    for (int i = 0; i < PAIRED_NGROUPS; i++)
        if (strcmp(paired_groups[i].name, name) == 0)
            return i;
    return -1;
}

/* Busy CPU seconds of the whole machine so far (/proc/stat), or -1. */
static double paired_machine_busy(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return -1;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
                   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 7)
        return -1;
    /* user nice system [idle iowait] irq softirq steal */
    unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
    return (double)busy / (double)sysconf(_SC_CLK_TCK);
}

static double paired_self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Contexts member i uses: its threads, or the two of a two-thread
 * workload of workloads.c. */
static int paired_nctx(int i) {
    const paired_group *g = pr.g;
    if (g->kind == PG_WL && (bench_specs[g->wl].kind == K_XTHREAD ||
                             bench_specs[g->wl].kind == K_MT2))
        return 2;
    return g->m[i].threads;
}

/* One run of member i: ns per op (negative: failed, note set); PG_PC
 * members also leave the threads' CPU ns per op in *cpu. */
static double paired_run_member(int i, size_t ops, double *cpu) {
    const paired_group *g = pr.g;
    const bench_alloc_desc *d = &bench_allocs[pr.ai[i]];
    uint64_t ns = 0;
    char err[200] = "";
    int rc;
    /* One thread: its own CPU time, so that preemption by whatever else
     * runs on the machine is not counted (cache and frequency effects
     * still are). Threads: wall time, as the threads' work overlaps. */
    bench_clock =
        paired_nctx(i) == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
    if (g->kind == PG_PC) {
        bench_pc m;
        memset(&m, 0, sizeof m);
        m.ctx = pr.ctx[i];
        m.live = g->live;
        m.lo = g->lo;
        m.hi = g->hi;
        m.ops = ops;
        m.nthreads = g->m[i].threads;
        m.pin = g->pin;
        m.slot_p = pr.slot_p;
        m.slot_n = pr.slot_n;
        rc = d->pc(&m, &ns, err, sizeof err);
        if (cpu != NULL)
            *cpu = (double)m.cpu_total_ns / (double)ops;
    } else {
        bench_pin_xthread = g->pin;
        rc = d->wl[g->wl](pr.ctx[i], &bench_specs[g->wl], ops, &ns, err,
                          sizeof err);
        bench_pin_xthread = false;
    }
    bench_clock = CLOCK_MONOTONIC;
    if (d->rep_end)
        d->rep_end(pr.ctx[i], paired_nctx(i));
    if (rc != 0) {
        snprintf(pr.note[i], sizeof pr.note[i], "%s", err);
        pr.ok[i] = false;
        return -1;
    }
    return (double)ns / (double)ops;
}

/* Set up every member of group gi and warm each up (untimed). 0, or -1
 * when the group does not run in this setting. */
static int paired_begin(int gi, double scale, const char *setting) {
    memset(&pr, 0, sizeof pr);
    const paired_group *g = &paired_groups[gi];
    pr.g = g;
    pr.setting = setting;
    pr.scale = scale;
    pr.ops =
        bench_scaled(g->kind == PG_PC ? g->ops : bench_specs[g->wl].ops, scale);
    if (g->kind == PG_PC) {
        pr.slot_p = (void **)calloc(g->live, sizeof(void *));
        pr.slot_n = (uint32_t *)calloc(g->live, sizeof(uint32_t));
        if (pr.slot_p == NULL || pr.slot_n == NULL)
            return -1;
    }
    for (int i = 0; i < PAIRED_MAX_MEMBERS && g->m[i].alloc != NULL; i++) {
        pr.nm = i + 1;
        int ai = bench_find_alloc(g->m[i].alloc);
        pr.ai[i] = ai < 0 ? 0 : ai;
        if (ai < 0) {
            snprintf(pr.note[i], sizeof pr.note[i], "not in this setting");
            continue;
        }
        const bench_alloc_desc *d = &bench_allocs[ai];
        const char *why = d->wl == NULL    ? d->missing
                          : d->unavailable ? d->unavailable()
                                           : NULL;
        if (why == NULL && g->kind == PG_PC && d->pc == NULL)
            why = "no scalable churn for it";
        if (why == NULL && g->kind == PG_WL && g->wl == W_XTHREAD &&
            !(d->flags & F_XTHREAD))
            why = "not thread-safe";
        if (why != NULL) {
            snprintf(pr.note[i], sizeof pr.note[i], "%s", why);
            continue;
        }
        if (d->begin && d->begin(pr.ctx[i], paired_nctx(i), pr.note[i],
                                 sizeof pr.note[i]) != 0)
            continue;
        pr.begun[i] = pr.ok[i] = true;
    }
    /* Warm-up: a quarter of a repetition each. */
    for (int i = 0; i < pr.nm; i++)
        if (pr.ok[i])
            (void)paired_run_member(i, pr.ops / 4 < 1 ? 1 : pr.ops / 4, NULL);
    return 0;
}

/* A cache line's round trip between two threads pinned to CPUs 0 and 1,
 * in ns, or -1. What a cross-thread free or a shared counter costs
 * follows it, and on a virtual machine it moves with where the host puts
 * the two virtual CPUs (siblings of one core or two cores: 2x and more),
 * which no other processes' CPU time shows: pinned groups print it so
 * that runs can be compared. */
typedef struct paired_trip {
    _Atomic unsigned turn;
    unsigned n;
} paired_trip;

static void *paired_trip_back(void *arg) {
    paired_trip *t = (paired_trip *)arg;
    (void)bench_pin_self(1, NULL);
    for (unsigned i = 0; i < t->n; i++) {
        while (atomic_load_explicit(&t->turn, memory_order_acquire) !=
               2 * i + 1)
            ;
        atomic_store_explicit(&t->turn, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

static double paired_trip_ns(void) {
    paired_trip t = {0, 5000};
    cpu_set_t saved;
    pthread_t other;
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2 || bench_pin_self(0, &saved) != 0)
        return -1;
    if (pthread_create(&other, NULL, paired_trip_back, &t) != 0) {
        sched_setaffinity(0, sizeof saved, &saved);
        return -1;
    }
    /* Timed from the 100th trip on: the first ones wait for the other
     * thread to start and move to its CPU. */
    uint64_t t0 = 0;
    for (unsigned i = 0; i < t.n; i++) {
        if (i == 100)
            t0 = bench_now_ns();
        atomic_store_explicit(&t.turn, 2 * i + 1, memory_order_release);
        while (atomic_load_explicit(&t.turn, memory_order_acquire) != 2 * i + 2)
            ;
    }
    double ns = (double)(bench_now_ns() - t0) / (t.n - 100);
    pthread_join(other, NULL);
    sched_setaffinity(0, sizeof saved, &saved);
    return ns;
}

/* One repetition: every member once, starting at a member that rotates. */
static int paired_rep(void) {
    if (pr.g == NULL || pr.nreps >= PAIRED_MAX_REPS)
        return -1;
    int r = pr.nreps;
    pr.trip[r] = pr.g->pin ? paired_trip_ns() : -1;
    double b0 = paired_machine_busy(), s0 = paired_self_cpu();
    uint64_t t0 = bench_now_ns();
    for (int k = 0; k < pr.nm; k++) {
        int i = (k + r) % pr.nm;
        pr.cpu[i][r] = -1;
        pr.ns[i][r] =
            pr.ok[i] ? paired_run_member(i, pr.ops, &pr.cpu[i][r]) : -1;
    }
    double wall = (double)(bench_now_ns() - t0) / 1e9;
    double b1 = paired_machine_busy(), s1 = paired_self_cpu();
    double other = b0 < 0 || b1 < 0 ? 0 : ((b1 - b0) - (s1 - s0)) / wall;
    pr.other[r] = other < 0 ? 0 : other;
    pr.nreps++;
    return 0;
}

static void paired_sort(double *v, int n) {
    qsort(v, (size_t)n, sizeof v[0], bench_cmp_double);
}

static double paired_median(double *v, int n) {
    paired_sort(v, n);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int paired_member_index(const paired_member *m) {
    for (int i = 0; i < pr.nm; i++)
        if (strcmp(pr.g->m[i].alloc, m->alloc) == 0 &&
            pr.g->m[i].threads == m->threads)
            return i;
    return -1;
}

/* Per-rep ratios of target t into out; how many. */
static int paired_ratios(const paired_target *t, double *out) {
    int a = paired_member_index(&t->num), b = paired_member_index(&t->den);
    if (a < 0 || b < 0 || !pr.ok[a] || !pr.ok[b])
        return 0;
    int n = 0;
    double threads = (double)t->num.threads / (double)t->den.threads;
    for (int r = 0; r < pr.nreps; r++)
        if (t->cpu) {
            if (pr.cpu[a][r] > 0 && pr.cpu[b][r] > 0)
                out[n++] = threads * pr.cpu[b][r] / pr.cpu[a][r];
        } else if (pr.ns[a][r] > 0 && pr.ns[b][r] > 0) {
            out[n++] =
                t->ge ? pr.ns[b][r] / pr.ns[a][r] : pr.ns[a][r] / pr.ns[b][r];
        }
    return n;
}

static void paired_print_ratio(FILE *f, const char *label, double *v, int n,
                               bool all) {
    double keep[PAIRED_MAX_REPS];
    memcpy(keep, v, sizeof(double) * (size_t)n);
    double med = paired_median(v, n);
    fprintf(f, "  %-44s %6.2fx [%.2f .. %.2f]", label, med, v[0], v[n - 1]);
    if (all) {
        fprintf(f, "  reps:");
        for (int r = 0; r < n; r++)
            fprintf(f, " %.2f%s", keep[r],
                    pr.other[r] > PAIRED_DISTURBED ? "*" : "");
    }
    fprintf(f, "\n");
}

/* Print the group's results and targets; tear every member down. */
static void paired_end(FILE *f) {
    const paired_group *g = pr.g;
    if (g == NULL)
        return;
    int disturbed = 0;
    double oth[PAIRED_MAX_REPS];
    for (int r = 0; r < pr.nreps; r++) {
        oth[r] = pr.other[r];
        disturbed += pr.other[r] > PAIRED_DISTURBED;
    }
    double omed = pr.nreps ? paired_median(oth, pr.nreps) : 0;
    fprintf(f,
            "\n== %s [%s]: %s; %zu ops per run, %d reps, members "
            "interleaved\n",
            g->name, pr.setting, g->what, pr.ops, pr.nreps);
    fprintf(f,
            "   other processes used %.2f cores (median per rep); %d of %d "
            "reps above %.2f%s\n",
            omed, disturbed, pr.nreps, PAIRED_DISTURBED,
            disturbed ? "  WARNING: disturbed, trust the ratios, not the ns"
                      : "");
    double trip[PAIRED_MAX_REPS];
    int ntrip = 0;
    for (int r = 0; r < pr.nreps; r++)
        if (pr.trip[r] > 0)
            trip[ntrip++] = pr.trip[r];
    if (ntrip > 0) {
        double med = paired_median(trip, ntrip); /* (sorts trip) */
        fprintf(f,
                "   cache line round trip CPU 0 <-> 1: %.0f ns [%.0f .. %.0f] "
                "(cross-thread costs follow it)\n",
                med, trip[0], trip[ntrip - 1]);
    }
    fprintf(f, "  %-14s %7s  %-22s %s\n", "member", "threads",
            "ns/op median [min..max]", "");
    bool all = g->pin; /* pinned cases: every repetition */
    for (int i = 0; i < pr.nm; i++) {
        if (!pr.ok[i]) {
            fprintf(f, "  %-14s %7d  n/a (%s)\n", g->m[i].alloc,
                    g->m[i].threads, pr.note[i]);
            continue;
        }
        double v[PAIRED_MAX_REPS];
        int n = 0;
        for (int r = 0; r < pr.nreps; r++)
            if (pr.ns[i][r] > 0)
                v[n++] = pr.ns[i][r];
        if (n == 0)
            continue;
        double med = paired_median(v, n);
        fprintf(f, "  %-14s %7d  %7.2f [%.2f .. %.2f]\n", g->m[i].alloc,
                g->m[i].threads, med, v[0], v[n - 1]);
        for (int r = 0; r < pr.nreps; r++)
            fprintf(f, "REP,%s,%s,%s,%d,%d,%.3f,%.2f\n", pr.setting, g->name,
                    g->m[i].alloc, g->m[i].threads, r, pr.ns[i][r],
                    pr.other[r]);
    }
    /* Scaling of each allocator from its one-thread member, by the
     * threads' CPU time per op (see paired_target.cpu). */
    for (int i = 0; i < pr.nm && g->kind == PG_PC; i++) {
        if (g->m[i].threads == 1 || !pr.ok[i])
            continue;
        paired_member one = {g->m[i].alloc, 1};
        int j = paired_member_index(&one);
        if (j < 0 || !pr.ok[j])
            continue;
        paired_target t = {g->name, g->m[i], one, 0, true, true, ""};
        double v[PAIRED_MAX_REPS];
        int n = paired_ratios(&t, v);
        char label[96];
        snprintf(label, sizeof label, "%s: %d threads / 1, CPU-time scaling",
                 g->m[i].alloc, g->m[i].threads);
        if (n > 0)
            paired_print_ratio(f, label, v, n, false);
    }
    /* Ratios: gpa against each other member with the same thread count,
     * then the targets for this group. */
    int gi = -1;
    for (int i = 0; i < pr.nm; i++)
        if (strcmp(g->m[i].alloc, "gpa") == 0 && g->m[i].threads == 1)
            gi = i;
    for (int i = 0; i < pr.nm && gi >= 0; i++) {
        for (int j = 0; j < pr.nm; j++) {
            if (strcmp(g->m[i].alloc, "gpa") != 0 ||
                strcmp(g->m[j].alloc, "gpa") == 0 ||
                g->m[i].threads != g->m[j].threads || !pr.ok[i] || !pr.ok[j])
                continue;
            paired_target t = {g->name, g->m[i], g->m[j], 0, false, false, ""};
            double v[PAIRED_MAX_REPS];
            int n = paired_ratios(&t, v);
            char label[96];
            snprintf(label, sizeof label, "gpa / %s (%d thread%s)",
                     g->m[j].alloc, g->m[j].threads,
                     g->m[j].threads > 1 ? "s" : "");
            if (n > 0)
                paired_print_ratio(f, label, v, n, all);
        }
    }
    for (int k = 0; k < PAIRED_NTARGETS; k++) {
        const paired_target *t = &paired_targets[k];
        if (strcmp(t->group, g->name) != 0)
            continue;
        int a = paired_member_index(&t->num), b = paired_member_index(&t->den);
        if (a < 0 || b < 0 || bench_find_alloc(t->num.alloc) < 0 ||
            bench_find_alloc(t->den.alloc) < 0)
            continue; /* not a target in this setting (enif standalone) */
        double v[PAIRED_MAX_REPS];
        int n = paired_ratios(t, v);
        if (n == 0) {
            fprintf(f, "TARGET|%s|%s|n/a|||%s %.2f|n/a\n", pr.setting, t->label,
                    t->ge ? ">=" : "<=", t->goal);
            continue;
        }
        paired_print_ratio(f, t->label, v, n, true);
        double med = paired_median(v, n);
        bool met = t->ge ? med >= t->goal : med <= t->goal;
        fprintf(f, "TARGET|%s|%s|%.2f|%.2f|%.2f|%s %.2f|%s%s\n", pr.setting,
                t->label, med, v[0], v[n - 1], t->ge ? ">=" : "<=", t->goal,
                met ? "met" : "NOT MET", disturbed ? " (disturbed reps)" : "");
    }
    fflush(f);
    for (int i = 0; i < pr.nm; i++) {
        const bench_alloc_desc *d = &bench_allocs[pr.ai[i]];
        if (pr.begun[i] && d->end) {
            char err[200];
            if (d->end(pr.ctx[i], paired_nctx(i), err, sizeof err) != 0)
                fprintf(f, "  %s: ERROR at end: %s\n", g->m[i].alloc, err);
        }
    }
    free(pr.slot_p);
    free(pr.slot_n);
    pr.g = NULL;
}

/* Repetitions for a group: BENCH_REPS when set, else its default. */
static int paired_reps_for(int gi) {
    const char *e = getenv("BENCH_REPS");
    int r = e != NULL ? atoi(e) : 0;
    if (r <= 0)
        r = paired_groups[gi].reps;
    return r > PAIRED_MAX_REPS ? PAIRED_MAX_REPS : r;
}

#endif /* BENCH_PAIRED_C */
