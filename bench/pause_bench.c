/*
 * Pauses from slot eviction and heap retirement (make bench-pause).
 *
 * One thread holds HOLD_MIB of small blocks in the process-wide general
 * purpose allocator, then, round after round, runs what a scheduler running
 * leak_check NIFs does: eight throwaway instances (a new one per call, each
 * taking one of the thread's eight slots and so pushing the process-wide
 * heap out), followed by one call into the process-wide instance, which
 * must find or make its heap again. Every call is timed; the report gives
 * the worst and the 99.9th percentile of each kind, and the worst overall,
 * against the 100 us a call on a normal scheduler may take.
 */
#define _GNU_SOURCE
#include <beam_alloc.h>

#include <sys/resource.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* This thread's involuntary context switches so far: a call during which
 * the kernel preempted the thread measured the machine, not the code (this
 * machine is shared), and is reported apart. */
static long preemptions(void) {
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_nivcsw;
}

static size_t preempted;

/* A call's time, or -1 when the thread was preempted during it. */
static double since(double start_us, long start_csw) {
    double t = now_us() - start_us;
    if (preemptions() != start_csw) {
        preempted++;
        return -1;
    }
    return t;
}

/* The time of one alloc and free of len bytes on a, as since() gives it. */
static double timed_call(beam_allocator_t a, size_t len) {
    long csw = preemptions();
    double start = now_us();
    void *p = beam_alloc_bytes(a, len, 8);
    beam_free_bytes(a, p, len, 8);
    return since(start, csw);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Prints the summary; returns the worst. */
static double report(const char *what, double *t, size_t n) {
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (t[i] >= 0)
            t[kept++] = t[i];
    n = kept;
    size_t at = 0;
    for (size_t i = 1; i < n; i++)
        if (t[i] > t[at])
            at = i;
    qsort(t, n, sizeof *t, cmp);
    if (getenv("BENCH_PAUSE_WHERE"))
        printf("  (worst of %s at call %zu of %zu)\n", what, at, n);
    printf("  %-50s median %6.2f us   p99.9 %7.2f us   worst %8.2f us\n", what,
           t[n / 2], t[n * 999 / 1000], t[n - 1]);
    return n > 0 ? t[n - 1] : 0;
}

int main(int argc, char **argv) {
    size_t hold_mib = argc > 1 ? (size_t)atol(argv[1]) : 1024;
    size_t rounds = argc > 2 ? (size_t)atol(argv[2]) : 2000;
    const size_t len = 256;
    size_t count = hold_mib * 1024 * 1024 / len;
    beam_allocator_t g = beam_general_purpose_allocator;
    void **held = malloc(count * sizeof *held);
    if (held == NULL)
        return 1;
    double t0 = now_us();
    for (size_t i = 0; i < count; i++)
        if ((held[i] = beam_alloc_bytes(g, len, 8)) == NULL)
            return 1;
    printf("bench-pause: %zu MiB held in %zu blocks of %zu B (%.0f ms to "
           "allocate); %zu rounds of 8 throwaway instances + 1 call\n",
           hold_mib, count, len, (now_us() - t0) / 1e3, rounds);
    double *wide = malloc(rounds * sizeof *wide);
    double *throwaway = malloc(rounds * 8 * sizeof *throwaway);
    double worst = 0;
    for (size_t r = 0; r < rounds; r++) {
        for (int k = 0; k < 8; k++) {
            long csw = preemptions();
            double a = now_us();
            beam_gpa_t checker;
            beam_gpa_init_ex(&checker, beam_raw_allocator, BEAM_GPA_SAFE);
            beam_allocator_t c = beam_gpa_allocator(&checker);
            void *p = beam_alloc_bytes(c, 100, 8);
            beam_free_bytes(c, p, 100, 8);
            beam_gpa_deinit(&checker);
            throwaway[r * 8 + (size_t)k] = since(a, csw);
        }
        wide[r] = timed_call(g, len);
    }
    worst = report("process-wide call after 8 dead instances", wide, rounds);
    report("leak_check-like instance (init..deinit)", throwaway, rounds * 8);
    /* Live instances this time (dead ones' slots are reused first): eight
     * of them round robin with the process-wide one, so every call evicts
     * and retires a heap, the process-wide one's included. */
    beam_gpa_t live[8];
    void *mark[8];
    for (int k = 0; k < 8; k++) {
        beam_gpa_init(&live[k], beam_raw_allocator);
        mark[k] = beam_alloc_bytes(beam_gpa_allocator(&live[k]), 64, 8);
    }
    for (size_t r = 0; r < rounds; r++) {
        for (int k = 0; k < 8; k++) {
            throwaway[r * 8 + (size_t)k] =
                timed_call(beam_gpa_allocator(&live[k]), 100);
        }
        wide[r] = timed_call(g, len);
    }
    double evicted = report("process-wide call, its heap evicted by live ones",
                            wide, rounds);
    report("live instance call, evicting another's heap", throwaway,
           rounds * 8);
    if (evicted > worst)
        worst = evicted;
    for (int k = 0; k < 8; k++) {
        beam_free_bytes(beam_gpa_allocator(&live[k]), mark[k], 64, 8);
        beam_gpa_deinit(&live[k]);
    }
    for (size_t i = 0; i < count; i++)
        beam_free_bytes(g, held[i], len, 8);
    printf("  worst process-wide call: %.1f us (target: <= 100 us): %s\n",
           worst, worst <= 100 ? "met" : "NOT met");
    printf("  (%zu calls preempted by the kernel were left out)\n", preempted);
    free(held);
    free(wide);
    free(throwaway);
    return 0;
}
