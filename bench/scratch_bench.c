/*
 * Scratch arena vs freeing each block: what BEAM_NIF(name, .scratch = true)
 * saves a NIF call that makes many short-lived allocations.
 *
 * One "call" allocates n blocks of random sizes in [16, 512] bytes and
 * touches each, then lets them all go:
 *
 *   free each  every block from the raw allocator, freed one by one at the
 *              end of the call (what a plain BEAM_NIF does)
 *   scratch    an arena over the raw allocator, made at the start of the
 *              call and given back in one step at the end (what .scratch
 *              does: beam_arena_init ... beam_arena_deinit)
 *
 * Standalone build: the raw allocator is malloc here. Inside the VM it is
 * enif_alloc, several times slower per call (shared/BASELINES.md), which
 * only widens the gap: the arena asks its parent for a few chunks per call
 * instead of once per block.
 *
 *   make bench-scratch
 *
 * prints ns per allocation (its free included) for both, and the ratio.
 */
#define _POSIX_C_SOURCE 200809L
#include <beam_alloc.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BLOCKS 4096
#define ROUNDS 7

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Sizes are drawn once, so both variants do exactly the same work. */
static size_t sizes[MAX_BLOCKS];
static void *blocks[MAX_BLOCKS];
static volatile unsigned long sink;

static void draw_sizes(size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        sizes[i] = 16 + (size_t)((seed >> 33) % (512 - 16 + 1));
    }
}

/* One call, freeing each block. false when memory ran out. */
static bool call_free_each(size_t n) {
    beam_allocator_t a = beam_raw_allocator;
    for (size_t i = 0; i < n; i++) {
        unsigned char *p = beam_alloc(a, unsigned char, sizes[i]);
        if (p == NULL)
            return false;
        p[0] = (unsigned char)i;
        p[sizes[i] - 1] = 1;
        blocks[i] = p;
    }
    unsigned long sum = 0;
    for (size_t i = n; i-- > 0;) {
        unsigned char *p = blocks[i];
        sum += p[0];
        beam_free(a, p, sizes[i]);
    }
    sink += sum;
    return true;
}

/* One call on a scratch arena. */
static bool call_scratch(size_t n) {
    beam_arena_t arena;
    beam_arena_init(&arena, beam_raw_allocator);
    beam_allocator_t a = beam_arena_allocator(&arena);
    unsigned long sum = 0;
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        unsigned char *p = beam_alloc(a, unsigned char, sizes[i]);
        if (p == NULL) {
            ok = false;
            break;
        }
        p[0] = (unsigned char)i;
        p[sizes[i] - 1] = 1;
        sum += p[0];
    }
    beam_arena_deinit(&arena);
    sink += sum;
    return ok;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median over ROUNDS of ns per allocation, each round about 50 ms. */
static double measure(bool (*call)(size_t), size_t n) {
    size_t calls = 1;
    for (;;) { /* calibrate */
        double t0 = now_ns();
        for (size_t c = 0; c < calls; c++)
            if (!call(n))
                return -1;
        if (now_ns() - t0 > 5e6)
            break;
        calls *= 2;
    }
    calls *= 10;
    double rounds[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (size_t c = 0; c < calls; c++)
            if (!call(n))
                return -1;
        rounds[r] = (now_ns() - t0) / (double)(calls * n);
    }
    qsort(rounds, ROUNDS, sizeof rounds[0], compare);
    return rounds[ROUNDS / 2];
}

int main(void) {
    static const size_t counts[] = {4, 16, 64, 256, 1024, 4096};
    printf("scratch arena vs freeing each block (standalone build: the raw "
           "allocator is malloc)\n");
    printf("blocks of 16-512 B per call; ns per allocation, its free "
           "included; median of %d rounds\n\n",
           ROUNDS);
    printf("%14s %16s %14s %8s\n", "blocks/call", "free each (ns)",
           "scratch (ns)", "ratio");
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        size_t n = counts[k];
        draw_sizes(n, 0x5eed + n);
        double each = measure(call_free_each, n);
        double scratch = measure(call_scratch, n);
        if (each < 0 || scratch < 0) {
            fprintf(stderr, "out of memory at %zu blocks per call\n", n);
            return 1;
        }
        printf("%14zu %16.1f %14.1f %7.2fx\n", n, each, scratch,
               each / scratch);
    }
    printf("\nratio: free-each time / scratch time (above 1: scratch is "
           "faster)\n");
    return 0;
}
