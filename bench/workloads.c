/*
 * bench/workloads.c: the benchmark workloads, shared by both settings.
 *
 * This one file is #included by bench/standalone/bench_main.c (plain C
 * programs over libbeam_alloc_standalone.a) and by bench/nif/bench_nif.c (a
 * NIF over libbeam_alloc.a, run inside a real BEAM on a normal and on a dirty
 * CPU scheduler), so both settings run the very same loops.
 *
 * Before including it, the host defines:
 *   BENCH_HOST_NIF         the NIF host (adds the enif_alloc adapter)
 *   BENCH_PEERS_DLOPEN     peers (mimalloc, jemalloc, tcmalloc) are reached
 *                          through dlopen(RTLD_LOCAL)+dlsym: see bench_nif.c
 *   BENCH_WITH_MALLOC, BENCH_WITH_BEAM, BENCH_WITH_MIMALLOC,
 *   BENCH_WITH_JEMALLOC, BENCH_WITH_TCMALLOC
 *                          which allocators this program measures
 *   BENCH_NO_GPA, BENCH_NO_ARENA
 *                          the library lacks them (rows say "missing")
 * and provides, anywhere in the translation unit:
 *   static int  bench_host_thread_start(bench_thread *t,
 *                                       void *(*fn)(void *), void *arg);
 *   static void bench_host_thread_join(bench_thread *t);
 * with bench_thread a complete type defined before the include.
 *
 * Allocators are adapters of five inline functions (alloc, free, aligned
 * alloc, aligned free, realloc); bench/workload_tmpl.h is included once per
 * adapter, so every loop calls its allocator directly, with no extra
 * indirection added by the harness.
 */
#ifndef BENCH_WORKLOADS_C
#define BENCH_WORKLOADS_C

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "beam_alloc.h"

#define BENCH_INLINE static inline __attribute__((always_inline))
#define BENCH_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Alignment the beam_alloc allocators and the bump baseline are asked for
 * in the unaligned workloads: BEAM_MAX_ALIGN, what enif_alloc promises. */
#define BENCH_BEAM_ALIGN ((size_t)BEAM_MAX_ALIGN)

/* ------------------------------------------------------------------------
 * Small helpers: clock, random numbers, compiler barrier, spinning, RSS
 * ---------------------------------------------------------------------- */

/* The clock the workloads time themselves with: wall time, or (set by
 * bench/paired.c around one-thread runs) the calling thread's CPU time,
 * which does not advance while the thread is preempted. */
static clockid_t bench_clock = CLOCK_MONOTONIC;

/* The calling thread's CPU time (whatever bench_clock says). */
static uint64_t bench_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t bench_now_ns(void) {
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* xorshift64*: cheap and good enough; every allocator sees the same
 * sequence for a given workload. */
BENCH_INLINE uint64_t bench_rng(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Uniform in [0, range) from 32 random bits (range < 2^32). */
BENCH_INLINE size_t bench_below(uint32_t bits, size_t range) {
    return (size_t)(((uint64_t)bits * (uint64_t)range) >> 32);
}

/* Make the compiler believe p is used and memory observed, so that an
 * allocation and free of a known-builtin (malloc/free) is not elided. */
BENCH_INLINE void bench_escape(void *p) {
    __asm__ volatile("" : : "r"(p) : "memory");
}

static void bench_spin(unsigned *spins) {
    if (++*spins < 256) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ volatile("yield");
#endif
    } else {
        *spins = 0;
        sched_yield();
    }
}

/* Current resident set size, from /proc/self/statm (field 2, pages). */
static size_t bench_rss_bytes(void) {
    static int fd = -1;
    if (fd < 0)
        fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char buf[128];
    ssize_t k = pread(fd, buf, sizeof buf - 1, 0);
    if (k <= 0)
        return 0;
    buf[k] = 0;
    unsigned long long size = 0, resident = 0;
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return 0;
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Pin the calling thread to one CPU (cpu modulo the online CPUs); the old
 * mask goes to *saved when saved is not NULL. 0, or -1 when the system
 * refuses (then the thread runs unpinned). */
static int bench_pin_self(int cpu, cpu_set_t *saved) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (saved != NULL && sched_getaffinity(0, sizeof *saved, saved) != 0)
        return -1;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu % (int)n, &set);
    return sched_setaffinity(0, sizeof set, &set);
}

/* Cross-thread workloads pin their two threads to distinct CPUs when set
 * (bench/paired.c sets it for the pinned cases). */
static bool bench_pin_xthread;

__attribute__((unused)) static int bench_cmp_double(const void *a,
                                                    const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------------------------
 * Workloads
 * ---------------------------------------------------------------------- */

enum bench_kind { K_PAIR, K_CHURN, K_BATCH, K_REALLOC, K_XTHREAD, K_MT2 };

enum {
    W_PAIR64,
    W_CHURN_S,
    W_CHURN_L,
    W_LIFO,
    W_FIFO,
    W_REALLOC,
    W_XTHREAD,
    W_MT2,
    W_ALIGN64,
    W_ALIGN4K,
    W_COUNT
};

typedef struct bench_spec {
    const char *name;
    const char *what;
    enum bench_kind kind;
    size_t ops;      /* operations per repetition (scaled at run time) */
    size_t lo, hi;   /* size range in bytes */
    size_t align;    /* 0: the allocator's default */
    size_t op_bytes; /* address space one op uses when frees do not reclaim */
} bench_spec;

#define BENCH_SLOTS 1000
#define BENCH_BATCH 100000
#define BENCH_REALLOC_MAX ((size_t)1 << 20)
#define BENCH_REALLOC_STEPS 16 /* 16 B -> 1 MiB */
/* Allocators whose frees do not reclaim (arena, bump) get at most this much
 * address space per repetition: their op counts are capped to fit. */
#define BENCH_NOREUSE_BUDGET ((size_t)256 << 20)

static const bench_spec bench_specs[W_COUNT] = {
    [W_PAIR64] = {"pair64", "immediate alloc+free, 64 B", K_PAIR, 2000000, 64,
                  64, 0, 0},
    [W_CHURN_S] = {"churn_8_512", "random-replace churn, 1000 slots, 8-512 B",
                   K_CHURN, 1000000, 8, 512, 0, 264},
    [W_CHURN_L] = {"churn_1k_64k", "random-replace churn, 1000 slots, 1-64 KiB",
                   K_CHURN, 200000, 1024, 65536, 0, 33296},
    [W_LIFO] = {"lifo_100k", "alloc 100k x 64 B, free in reverse", K_BATCH,
                500000, 64, 64, 0, 0},
    [W_FIFO] = {"fifo_100k", "alloc 100k x 64 B, free in order", K_BATCH,
                500000, 64, 64, 0, 64},
    [W_REALLOC] = {"realloc_16_1m",
                   "realloc 16 B -> 1 MiB doubling (per realloc)", K_REALLOC,
                   400 * BENCH_REALLOC_STEPS, 16, BENCH_REALLOC_MAX, 0,
                   2 * BENCH_REALLOC_MAX / BENCH_REALLOC_STEPS},
    [W_XTHREAD] = {"xthread_8_512",
                   "producer allocs 8-512 B, consumer thread frees (ring)",
                   K_XTHREAD, 500000, 8, 512, 0, 264},
    [W_MT2] = {"mt2_churn_8_512",
               "2 threads, independent churn 8-512 B (wall ns / all ops)",
               K_MT2, 1000000, 8, 512, 0, 264},
    [W_ALIGN64] = {"align64_8_512", "churn 8-512 B, 64-byte aligned", K_CHURN,
                   500000, 8, 512, 64, 264 + 64},
    [W_ALIGN4K] = {"align4096_8_512", "churn 8-512 B, 4096-byte aligned",
                   K_CHURN, 200000, 8, 512, 4096, 264 + 4096},
};

/* ------------------------------------------------------------------------
 * Per-thread context and shared state of the workloads
 * ---------------------------------------------------------------------- */

typedef struct bench_ctx {
    beam_allocator_t a; /* the beam_alloc allocator measured */
#if defined(BENCH_WITH_BEAM) && !defined(BENCH_NO_GPA)
    beam_gpa_t *gpa; /* the instance behind a, for the gpa cells */
#endif
#if defined(BENCH_WITH_BEAM) && !defined(BENCH_NO_ARENA)
    beam_arena_t arena;
    bool arena_live;
#endif
    char *bump_base, *bump_cur, *bump_end; /* the bare bump baseline */
    /* The check-free floor (bench/paired.c): a free list per 16-byte
     * class, carved from its own reserved region. */
    void **floor_free;
    char *floor_base, *floor_cur, *floor_end;
} bench_ctx;

/* The scalable churn of bench/paired.c: `live` blocks in all, split over
 * nthreads threads (each its own slots and context), ops in all, sizes in
 * [lo, hi]. Thread 0 is the caller. */
#define BENCH_PC_MAX_THREADS 8
typedef struct bench_pc {
    bench_ctx *ctx; /* nthreads contexts */
    size_t live, lo, hi, ops;
    int nthreads, started;
    bool pin;
    void **slot_p;
    uint32_t *slot_n;
    atomic_int ready, go, done;
    uint64_t t0, end_ns[BENCH_PC_MAX_THREADS];
    /* CPU time each thread spent in its timed loop, and their sum. */
    uint64_t cpu_ns[BENCH_PC_MAX_THREADS], cpu_total_ns;
    int err[BENCH_PC_MAX_THREADS];
} bench_pc;
typedef int (*bench_pc_fn)(bench_pc *m, uint64_t *ns, char *err, size_t errlen);

typedef struct bench_slots {
    void *p[BENCH_SLOTS];
    size_t n[BENCH_SLOTS];
} bench_slots;

static bench_slots bench_slot_tab[2];
static void *bench_batch_tab[BENCH_BATCH];

#define BENCH_RING_CAP 1024
typedef struct bench_item {
    void *p;
    size_t n;
} bench_item;

static struct {
    _Alignas(64) atomic_size_t head; /* consumer: items taken */
    _Alignas(64) atomic_size_t tail; /* producer: items published */
    _Alignas(64) atomic_size_t stop; /* items the producer will publish */
    _Alignas(64) bench_item items[BENCH_RING_CAP];
} bench_ring;

/* A two-thread run: thread 0 is the caller, thread 1 a host thread. */
typedef struct bench_mt {
    bench_ctx *ctx;
    const bench_spec *spec;
    size_t ops;
    atomic_int ready; /* threads ready to start */
    atomic_int go;
    uint64_t t0;
    uint64_t end_ns[2];
    int err[2];
} bench_mt;

static void bench_mt_init(bench_mt *m, bench_ctx *c, const bench_spec *s,
                          size_t ops) {
    memset(m, 0, sizeof *m);
    m->ctx = c;
    m->spec = s;
    m->ops = ops;
    atomic_init(&m->ready, 0);
    atomic_init(&m->go, 0);
}

typedef struct bench_rss_result {
    size_t peak_live;  /* largest sum of live requested bytes */
    size_t rss_before; /* resident bytes before the first allocation */
    size_t rss_peak;   /* largest resident size seen during the run */
} bench_rss_result;

#define BENCH_RSS_SLOTS 20000
#define BENCH_RSS_OPS 300000
static struct {
    void *p[BENCH_RSS_SLOTS];
    size_t n[BENCH_RSS_SLOTS];
} bench_rss_tab;

/* Mixed sizes for the RSS workload: 85% 8-512 B, 12% 513 B-8 KiB,
 * 3% 8-64 KiB. */
BENCH_INLINE size_t bench_mixed_size(uint64_t r) {
    uint32_t pick = (uint32_t)(r & 0xffff) % 100;
    uint32_t bits = (uint32_t)(r >> 32);
    if (pick < 85)
        return 8 + bench_below(bits, 512 - 8 + 1);
    if (pick < 97)
        return 513 + bench_below(bits, 8192 - 513 + 1);
    return 8193 + bench_below(bits, 65536 - 8193 + 1);
}

typedef struct bench_thread bench_thread;
static int bench_host_thread_start(bench_thread *t, void *(*fn)(void *),
                                   void *arg);
static void bench_host_thread_join(bench_thread *t);

/* A workload run: 0 and *ns (whole timed section) on success, else -1 with
 * a message. */
typedef int (*bench_wl_fn)(bench_ctx *ctx, const bench_spec *s, size_t ops,
                           uint64_t *ns, char *err, size_t errlen);
typedef int (*bench_rss_fn)(bench_ctx *ctx, size_t ops, bench_rss_result *r,
                            char *err, size_t errlen);

/* ------------------------------------------------------------------------
 * Peers: mimalloc, jemalloc, tcmalloc
 *
 * Every one of Debian's builds of these three exports unprefixed malloc and
 * free as well as its own API. In the standalone setting each is linked into
 * its own executable (bench/run.sh), so one process never holds two malloc
 * implementations and "malloc" is always glibc's in the program that
 * measures it. Inside the BEAM (BENCH_PEERS_DLOPEN) they are dlopen'ed with
 * RTLD_LOCAL from the NIF: see bench/nif/bench_nif.c for why that is sound.
 * ---------------------------------------------------------------------- */

#if defined(BENCH_PEERS_DLOPEN)
#include <dlfcn.h>
struct bench_peer {
    const char *name;
    const char *const *libs; /* sonames to try, in order */
    void *handle;
    char error[200];
    void *fn[4];
};
static const char *const bench_mi_libs[] = {"libmimalloc.so.2",
                                            "libmimalloc.so", NULL};
static const char *const bench_je_libs[] = {"libjemalloc.so.2",
                                            "libjemalloc.so", NULL};
static const char *const bench_tc_libs[] = {"libtcmalloc_minimal.so.4",
                                            "libtcmalloc_minimal.so", NULL};
static struct bench_peer bench_mi = {"mimalloc", bench_mi_libs, NULL, "", {0}};
static struct bench_peer bench_je = {"jemalloc", bench_je_libs, NULL, "", {0}};
static struct bench_peer bench_tc = {"tcmalloc", bench_tc_libs, NULL, "", {0}};

static void bench_peer_open(struct bench_peer *p, const char *const syms[4]) {
    const char *err = "not found";
    for (int i = 0; p->libs[i] != NULL && p->handle == NULL; i++) {
        p->handle = dlopen(p->libs[i], RTLD_NOW | RTLD_LOCAL);
        if (p->handle == NULL)
            err = dlerror();
    }
    if (p->handle == NULL) {
        snprintf(p->error, sizeof p->error, "not loadable: %s", err);
        return;
    }
    for (int i = 0; i < 4; i++) {
        p->fn[i] = dlsym(p->handle, syms[i]);
        if (p->fn[i] == NULL) {
            snprintf(p->error, sizeof p->error, "symbol %s missing", syms[i]);
            return;
        }
    }
}

static void bench_peers_open(void) {
    static const char *const mi[4] = {"mi_malloc", "mi_free",
                                      "mi_malloc_aligned", "mi_realloc"};
    static const char *const je[4] = {"mallocx", "sdallocx", "rallocx",
                                      "mallocx"};
    static const char *const tc[4] = {"tc_malloc", "tc_free", "tc_memalign",
                                      "tc_realloc"};
    bench_peer_open(&bench_mi, mi);
    bench_peer_open(&bench_je, je);
    bench_peer_open(&bench_tc, tc);
}

typedef void *(*bench_fn_malloc)(size_t);
typedef void (*bench_fn_free)(void *);
typedef void *(*bench_fn_aligned)(size_t, size_t);
typedef void *(*bench_fn_realloc)(void *, size_t);
typedef void *(*bench_fn_mallocx)(size_t, int);
typedef void (*bench_fn_sdallocx)(void *, size_t, int);
typedef void *(*bench_fn_rallocx)(void *, size_t, int);

/* Function pointers out of void * (POSIX guarantees this works). */
#define BENCH_PEER_FN(peer, i, type) (*(type *)(void *)&(peer).fn[i])
#define MI_MALLOC(n) BENCH_PEER_FN(bench_mi, 0, bench_fn_malloc)(n)
#define MI_FREE(p) BENCH_PEER_FN(bench_mi, 1, bench_fn_free)(p)
#define MI_MALLOC_ALIGNED(n, al)                                               \
    BENCH_PEER_FN(bench_mi, 2, bench_fn_aligned)(n, al)
#define MI_REALLOC(p, n) BENCH_PEER_FN(bench_mi, 3, bench_fn_realloc)(p, n)
#define JE_MALLOCX(n, f) BENCH_PEER_FN(bench_je, 0, bench_fn_mallocx)(n, f)
#define JE_SDALLOCX(p, n, f)                                                   \
    BENCH_PEER_FN(bench_je, 1, bench_fn_sdallocx)(p, n, f)
#define JE_RALLOCX(p, n, f)                                                    \
    BENCH_PEER_FN(bench_je, 2, bench_fn_rallocx)(p, n, f)
#define TC_MALLOC(n) BENCH_PEER_FN(bench_tc, 0, bench_fn_malloc)(n)
#define TC_FREE(p) BENCH_PEER_FN(bench_tc, 1, bench_fn_free)(p)
#define TC_MEMALIGN(al, n) BENCH_PEER_FN(bench_tc, 2, bench_fn_aligned)(al, n)
#define TC_REALLOC(p, n) BENCH_PEER_FN(bench_tc, 3, bench_fn_realloc)(p, n)
/* MALLOCX_ALIGN(a) is lg(a) in the low bits of the flags. */
#define JE_ALIGN(al) ((int)__builtin_ctzl(al))
#define BENCH_PEER_ERROR(peer) ((peer).error[0] ? (peer).error : NULL)
#else
#if defined(BENCH_WITH_MIMALLOC)
#include <mimalloc.h>
#define MI_MALLOC(n) mi_malloc(n)
#define MI_FREE(p) mi_free(p)
#define MI_MALLOC_ALIGNED(n, al) mi_malloc_aligned(n, al)
#define MI_REALLOC(p, n) mi_realloc(p, n)
#endif
#if defined(BENCH_WITH_JEMALLOC)
#include <jemalloc/jemalloc.h>
#define JE_MALLOCX(n, f) mallocx(n, f)
#define JE_SDALLOCX(p, n, f) sdallocx(p, n, f)
#define JE_RALLOCX(p, n, f) rallocx(p, n, f)
#define JE_ALIGN(al) MALLOCX_ALIGN(al)
#endif
#if defined(BENCH_WITH_TCMALLOC)
#include <gperftools/tcmalloc.h>
#define TC_MALLOC(n) tc_malloc(n)
#define TC_FREE(p) tc_free(p)
#define TC_MEMALIGN(al, n) tc_memalign(al, n)
#define TC_REALLOC(p, n) tc_realloc(p, n)
#endif
#define BENCH_PEER_ERROR(peer) NULL
#endif

/* ------------------------------------------------------------------------
 * Adapters. Each is ad_<id>_{alloc,free,alloc_al,free_al,realloc}; the
 * template turns one into the wl_<id>_* workload functions.
 * ---------------------------------------------------------------------- */

/* The adapters of a peer whose free takes the pointer alone (the length
 * and alignment the workloads pass are not its business): its malloc,
 * aligned (n, al), free and realloc. */
#define BENCH_POINTER_FREE_ADAPTERS(id, malloc_fn, aligned_fn, free_fn,        \
                                    realloc_fn)                                \
    BENCH_INLINE void *ad_##id##_alloc(bench_ctx *c, size_t n) {               \
        (void)c;                                                               \
        return malloc_fn(n);                                                   \
    }                                                                          \
    BENCH_INLINE void ad_##id##_free(bench_ctx *c, void *p, size_t n) {        \
        (void)c;                                                               \
        (void)n;                                                               \
        free_fn(p);                                                            \
    }                                                                          \
    BENCH_INLINE void *ad_##id##_alloc_al(bench_ctx *c, size_t n, size_t al) { \
        (void)c;                                                               \
        return aligned_fn(n, al);                                              \
    }                                                                          \
    BENCH_INLINE void ad_##id##_free_al(bench_ctx *c, void *p, size_t n,       \
                                        size_t al) {                           \
        (void)c;                                                               \
        (void)n;                                                               \
        (void)al;                                                              \
        free_fn(p);                                                            \
    }                                                                          \
    BENCH_INLINE void *ad_##id##_realloc(bench_ctx *c, void *p, size_t o,      \
                                         size_t n) {                           \
        (void)c;                                                               \
        (void)o;                                                               \
        return realloc_fn(p, n);                                               \
    }

#if defined(BENCH_HOST_NIF)
/* enif_alloc has no aligned form: those cells are n/a (never called). */
BENCH_INLINE void *bench_enif_no_aligned(size_t n, size_t al) {
    (void)n;
    (void)al;
    return NULL;
}
BENCH_POINTER_FREE_ADAPTERS(enif, enif_alloc, bench_enif_no_aligned, enif_free,
                            enif_realloc)
#define BA_ID enif
#include "workload_tmpl.h"
#endif

#if defined(BENCH_WITH_MALLOC)
/* posix_memalign rather than aligned_alloc: C11 wants the size of the
 * latter to be a multiple of the alignment (glibc does not care, ASan does). */
BENCH_INLINE void *bench_posix_aligned(size_t n, size_t al) {
    void *p;
    return posix_memalign(&p, al, n) == 0 ? p : NULL;
}
BENCH_POINTER_FREE_ADAPTERS(malloc, malloc, bench_posix_aligned, free, realloc)
#define BA_ID malloc
#include "workload_tmpl.h"
#endif

#if defined(BENCH_WITH_MIMALLOC) || defined(BENCH_PEERS_DLOPEN)
BENCH_POINTER_FREE_ADAPTERS(mimalloc, MI_MALLOC, MI_MALLOC_ALIGNED, MI_FREE,
                            MI_REALLOC)
#define BA_ID mimalloc
#include "workload_tmpl.h"
#endif

#if defined(BENCH_WITH_JEMALLOC) || defined(BENCH_PEERS_DLOPEN)
BENCH_INLINE void *ad_jemalloc_alloc(bench_ctx *c, size_t n) {
    (void)c;
    return JE_MALLOCX(n, 0);
}
BENCH_INLINE void ad_jemalloc_free(bench_ctx *c, void *p, size_t n) {
    (void)c;
    JE_SDALLOCX(p, n, 0);
}
BENCH_INLINE void *ad_jemalloc_alloc_al(bench_ctx *c, size_t n, size_t al) {
    (void)c;
    return JE_MALLOCX(n, JE_ALIGN(al));
}
BENCH_INLINE void ad_jemalloc_free_al(bench_ctx *c, void *p, size_t n,
                                      size_t al) {
    (void)c;
    JE_SDALLOCX(p, n, JE_ALIGN(al));
}
BENCH_INLINE void *ad_jemalloc_realloc(bench_ctx *c, void *p, size_t o,
                                       size_t n) {
    (void)c;
    (void)o;
    return JE_RALLOCX(p, n, 0);
}
#define BA_ID jemalloc
#include "workload_tmpl.h"
#endif

#if defined(BENCH_WITH_TCMALLOC) || defined(BENCH_PEERS_DLOPEN)
/* tc_memalign takes the alignment first. */
#define BENCH_TC_ALIGNED(n, al) TC_MEMALIGN(al, n)
BENCH_POINTER_FREE_ADAPTERS(tcmalloc, TC_MALLOC, BENCH_TC_ALIGNED, TC_FREE,
                            TC_REALLOC)
#define BA_ID tcmalloc
#include "workload_tmpl.h"
#endif

#if defined(BENCH_WITH_BEAM)
/* Every beam_alloc allocator through the public interface: the calling
 * helpers and the vtable, as a NIF author would use them. */
BENCH_INLINE void *ad_beam_alloc(bench_ctx *c, size_t n) {
    return beam_alloc_bytes(c->a, n, BENCH_BEAM_ALIGN);
}
BENCH_INLINE void ad_beam_free(bench_ctx *c, void *p, size_t n) {
    beam_free_bytes(c->a, p, n, BENCH_BEAM_ALIGN);
}
BENCH_INLINE void *ad_beam_alloc_al(bench_ctx *c, size_t n, size_t al) {
    return beam_alloc_bytes(c->a, n, al);
}
BENCH_INLINE void ad_beam_free_al(bench_ctx *c, void *p, size_t n, size_t al) {
    beam_free_bytes(c->a, p, n, al);
}
BENCH_INLINE void *ad_beam_realloc(bench_ctx *c, void *p, size_t o, size_t n) {
    return beam_realloc_bytes(c->a, p, o, BENCH_BEAM_ALIGN, n);
}
#define BA_ID beam
#include "workload_tmpl.h"

/* The bare pointer-bump baseline: what an arena costs with no interface at
 * all. Like the arena, a free of the most recent block takes it back and the
 * most recent block grows in place. */
BENCH_INLINE void *ad_bump_alloc_al(bench_ctx *c, size_t n, size_t al) {
    uintptr_t p = ((uintptr_t)c->bump_cur + (al - 1)) & ~(uintptr_t)(al - 1);
    if (BENCH_UNLIKELY(n > (uintptr_t)c->bump_end - p))
        return NULL;
    c->bump_cur = (char *)p + n;
    return (void *)p;
}
BENCH_INLINE void *ad_bump_alloc(bench_ctx *c, size_t n) {
    return ad_bump_alloc_al(c, n, BENCH_BEAM_ALIGN);
}
BENCH_INLINE void ad_bump_free_al(bench_ctx *c, void *p, size_t n, size_t al) {
    (void)al;
    if ((char *)p + n == c->bump_cur)
        c->bump_cur = (char *)p;
}
BENCH_INLINE void ad_bump_free(bench_ctx *c, void *p, size_t n) {
    ad_bump_free_al(c, p, n, BENCH_BEAM_ALIGN);
}
BENCH_INLINE void *ad_bump_realloc(bench_ctx *c, void *p, size_t o, size_t n) {
    if ((char *)p + o == c->bump_cur &&
        n <= (size_t)(c->bump_end - (char *)p)) {
        c->bump_cur = (char *)p + n;
        return p;
    }
    void *q = ad_bump_alloc(c, n);
    if (q != NULL)
        memcpy(q, p, o < n ? o : n);
    return q;
}
#define BA_ID bump
#include "workload_tmpl.h"
#endif

#if defined(BENCH_WITH_BEAM)
/* Address space for a bump region of len bytes, reserved (pages are backed
 * only when touched): NULL, errno set, when there is none. */
static char *bench_reserve(size_t len) {
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return m == MAP_FAILED ? NULL : (char *)m;
}

static void bench_release(char *base, size_t len) {
    if (base != NULL)
        munmap(base, len);
}

/* The check-free floor: one free list per 16-byte class up to 64 KiB, per
 * thread (context), no checks, no stats, no interface: what the churn
 * costs when an allocator does nothing but reuse. Not thread-safe (no
 * cross-thread cells). Larger blocks are bumped and never reused. */
#define BENCH_FLOOR_CLASSES (65536 / 16 + 1)
#define BENCH_FLOOR_REGION ((size_t)8 << 30)
BENCH_INLINE void *ad_floor_alloc(bench_ctx *c, size_t n) {
    size_t k = (n + 15) >> 4;
    if (BENCH_UNLIKELY(k >= BENCH_FLOOR_CLASSES))
        k = 0;
    void **b = (void **)c->floor_free[k];
    if (k != 0 && b != NULL) {
        c->floor_free[k] = *b;
        return b;
    }
    size_t len = k != 0 ? k << 4 : (n + 15) & ~(size_t)15;
    if (BENCH_UNLIKELY(len > (size_t)(c->floor_end - c->floor_cur)))
        return NULL;
    b = (void **)c->floor_cur;
    c->floor_cur += len;
    return b;
}
BENCH_INLINE void ad_floor_free(bench_ctx *c, void *p, size_t n) {
    size_t k = (n + 15) >> 4;
    if (BENCH_UNLIKELY(k >= BENCH_FLOOR_CLASSES))
        return;
    *(void **)p = c->floor_free[k];
    c->floor_free[k] = p;
}
BENCH_INLINE void *ad_floor_alloc_al(bench_ctx *c, size_t n, size_t al) {
    (void)al;
    return ad_floor_alloc(c, n);
}
BENCH_INLINE void ad_floor_free_al(bench_ctx *c, void *p, size_t n, size_t al) {
    (void)al;
    ad_floor_free(c, p, n);
}
BENCH_INLINE void *ad_floor_realloc(bench_ctx *c, void *p, size_t o, size_t n) {
    void *q = ad_floor_alloc(c, n);
    if (q != NULL) {
        memcpy(q, p, o < n ? o : n);
        ad_floor_free(c, p, o);
    }
    return q;
}
#define BA_ID floor
#include "workload_tmpl.h"

static int bench_begin_floor(bench_ctx *c, int nt, char *err, size_t len) {
    for (int i = 0; i < nt; i++) {
        char *m = bench_reserve(BENCH_FLOOR_REGION);
        c[i].floor_free = (void **)calloc(BENCH_FLOOR_CLASSES, sizeof(void *));
        if (m == NULL || c[i].floor_free == NULL) {
            snprintf(err, len, "floor: no memory");
            bench_release(m, BENCH_FLOOR_REGION);
            free(c[i].floor_free);
            c[i].floor_free = NULL;
            return -1;
        }
        c[i].floor_base = c[i].floor_cur = m;
        c[i].floor_end = m + BENCH_FLOOR_REGION;
    }
    return 0;
}
static int bench_end_floor(bench_ctx *c, int nt, char *err, size_t len) {
    (void)err;
    (void)len;
    for (int i = 0; i < nt; i++) {
        bench_release(c[i].floor_base, BENCH_FLOOR_REGION);
        free(c[i].floor_free);
        c[i].floor_free = NULL;
        c[i].floor_base = c[i].floor_cur = c[i].floor_end = NULL;
    }
    return 0;
}
#endif /* BENCH_WITH_BEAM */

/* ------------------------------------------------------------------------
 * The allocators measured, and their set-up
 * ---------------------------------------------------------------------- */

enum {
    F_XTHREAD = 1u << 0,   /* a block may be freed by another thread */
    F_REUSE = 1u << 1,     /* freed memory is reused (else ops are capped) */
    F_OVERALIGN = 1u << 2, /* serves alignments above 8 */
};

typedef struct bench_alloc_desc {
    const char *name;
    const char *what;
    unsigned flags;
    const bench_wl_fn *wl; /* NULL: not built into this program */
    bench_rss_fn rss;
    const char *missing; /* why it is not built, when wl is NULL */
    const char *(*unavailable)(void);
    /* Optional hooks around a cell (nthreads contexts) and repetitions. */
    int (*begin)(bench_ctx *c, int nthreads, char *err, size_t errlen);
    void (*rep_end)(bench_ctx *c, int nthreads);
    int (*end)(bench_ctx *c, int nthreads, char *err, size_t errlen);
    bench_pc_fn pc; /* the scalable churn (bench/paired.c) */
} bench_alloc_desc;

#if defined(BENCH_PEERS_DLOPEN)
static const char *bench_mi_unavailable(void) {
    return BENCH_PEER_ERROR(bench_mi);
}
static const char *bench_je_unavailable(void) {
    return BENCH_PEER_ERROR(bench_je);
}
static const char *bench_tc_unavailable(void) {
    return BENCH_PEER_ERROR(bench_tc);
}
#define BENCH_MI_UNAVAILABLE bench_mi_unavailable
#define BENCH_JE_UNAVAILABLE bench_je_unavailable
#define BENCH_TC_UNAVAILABLE bench_tc_unavailable
#else
#define BENCH_MI_UNAVAILABLE NULL
#define BENCH_JE_UNAVAILABLE NULL
#define BENCH_TC_UNAVAILABLE NULL
#endif

#if defined(BENCH_WITH_BEAM)
/* bench_begin_<name>: every thread on the one process-wide allocator. */
#define BENCH_BEGIN_SHARED(name, allocator)                                    \
    static int bench_begin_##name(bench_ctx *c, int nt, char *err,             \
                                  size_t len) {                                \
        (void)err;                                                             \
        (void)len;                                                             \
        for (int i = 0; i < nt; i++)                                           \
            c[i].a = allocator;                                                \
        return 0;                                                              \
    }
BENCH_BEGIN_SHARED(raw, beam_raw_allocator)
BENCH_BEGIN_SHARED(large, beam_large_allocator)

#if !defined(BENCH_NO_GPA)
/* One instance per cell (or paired member), over beam_large_allocator,
 * shared by the threads of the cell; deinit at the end must find no live
 * block. */
static int bench_begin_gpa_flags(bench_ctx *c, int nt, unsigned flags,
                                 char *err, size_t len) {
    beam_gpa_t *g = (beam_gpa_t *)malloc(sizeof *g);
    if (g == NULL) {
        snprintf(err, len, "no memory");
        return -1;
    }
    if (flags == 0)
        beam_gpa_init(g, beam_large_allocator);
    else
        beam_gpa_init_ex(g, beam_large_allocator, flags);
    for (int i = 0; i < nt; i++) {
        c[i].a = beam_gpa_allocator(g);
        c[i].gpa = g;
    }
    return 0;
}
static int bench_begin_gpa(bench_ctx *c, int nt, char *err, size_t len) {
    return bench_begin_gpa_flags(c, nt, 0, err, len);
}
static int bench_begin_gpa_track(bench_ctx *c, int nt, char *err, size_t len) {
    return bench_begin_gpa_flags(c, nt, BEAM_GPA_TRACK_SITES, err, len);
}
/* Tracked with six frames of each allocation's stack (BEAM_GPA_FRAMES):
 * what the frame walk and the stack depot cost on the allocation path. */
static int bench_begin_gpa_frames(bench_ctx *c, int nt, char *err, size_t len) {
    return bench_begin_gpa_flags(
        c, nt, BEAM_GPA_TRACK_SITES | BEAM_GPA_FRAMES(6), err, len);
}
static int bench_end_gpa(bench_ctx *c, int nt, char *err, size_t len) {
    beam_gpa_t *g = c[0].gpa;
    for (int i = 0; i < nt; i++)
        c[i].gpa = NULL;
    if (g == NULL)
        return 0;
    beam_gpa_usage u = beam_gpa_usage_of(g);
    bool leaked = beam_gpa_deinit(g);
    free(g);
    if (leaked) {
        snprintf(err, len, "GPA reported %zu live blocks at deinit",
                 u.live_blocks);
        return -1;
    }
    if (u.misuse_count != 0) {
        snprintf(err, len, "GPA reported %zu misuses", u.misuse_count);
        return -1;
    }
    return 0;
}
#endif

#if !defined(BENCH_NO_ARENA)
/* One arena over beam_raw_allocator per thread; reset between repetitions
 * (capacity retained, as the default). */
static int bench_begin_arena(bench_ctx *c, int nt, char *err, size_t len) {
    (void)err;
    (void)len;
    for (int i = 0; i < nt; i++) {
        beam_arena_init(&c[i].arena, beam_raw_allocator);
        c[i].arena_live = true;
        c[i].a = beam_arena_allocator(&c[i].arena);
    }
    return 0;
}
static void bench_rep_end_arena(bench_ctx *c, int nt) {
    for (int i = 0; i < nt; i++)
        (void)beam_arena_reset(&c[i].arena);
}
static int bench_end_arena(bench_ctx *c, int nt, char *err, size_t len) {
    (void)err;
    (void)len;
    for (int i = 0; i < nt; i++) {
        if (c[i].arena_live)
            beam_arena_deinit(&c[i].arena);
        c[i].arena_live = false;
    }
    return 0;
}
#endif

/* The bump baseline's region: address space reserved with mmap (pages are
 * only backed when touched), one per thread. */
#define BENCH_BUMP_REGION ((size_t)4 << 30)
static int bench_begin_bump(bench_ctx *c, int nt, char *err, size_t len) {
    for (int i = 0; i < nt; i++) {
        char *m = bench_reserve(BENCH_BUMP_REGION);
        if (m == NULL) {
            snprintf(err, len, "mmap: %s", strerror(errno));
            return -1;
        }
        c[i].bump_base = c[i].bump_cur = m;
        c[i].bump_end = m + BENCH_BUMP_REGION;
    }
    return 0;
}
static void bench_rep_end_bump(bench_ctx *c, int nt) {
    for (int i = 0; i < nt; i++)
        c[i].bump_cur = c[i].bump_base;
}
static int bench_end_bump(bench_ctx *c, int nt, char *err, size_t len) {
    (void)err;
    (void)len;
    for (int i = 0; i < nt; i++) {
        bench_release(c[i].bump_base, BENCH_BUMP_REGION);
        c[i].bump_base = c[i].bump_cur = c[i].bump_end = NULL;
    }
    return 0;
}
#endif /* BENCH_WITH_BEAM */

#define BENCH_ALL_FLAGS (F_XTHREAD | F_REUSE | F_OVERALIGN)
#define BENCH_NOT_BUILT(name_, what_, why_)                                    \
    { name_, what_, 0, NULL, NULL, why_, NULL, NULL, NULL, NULL, NULL }

static const bench_alloc_desc bench_allocs[] = {
#if defined(BENCH_HOST_NIF)
    {"enif", "enif_alloc/enif_free directly", F_XTHREAD | F_REUSE, wl_enif_tab,
     wl_enif_rss, NULL, NULL, NULL, NULL, NULL, wl_enif_pc},
#endif
#if defined(BENCH_WITH_MALLOC)
    {"malloc", "glibc malloc/free", BENCH_ALL_FLAGS, wl_malloc_tab,
     wl_malloc_rss, NULL, NULL, NULL, NULL, NULL, wl_malloc_pc},
#endif
#if defined(BENCH_WITH_MIMALLOC) || defined(BENCH_PEERS_DLOPEN)
    {"mimalloc", "mi_malloc/mi_free", BENCH_ALL_FLAGS, wl_mimalloc_tab,
     wl_mimalloc_rss, NULL, BENCH_MI_UNAVAILABLE, NULL, NULL, NULL,
     wl_mimalloc_pc},
#endif
#if defined(BENCH_WITH_JEMALLOC) || defined(BENCH_PEERS_DLOPEN)
    {"jemalloc", "mallocx/sdallocx", BENCH_ALL_FLAGS, wl_jemalloc_tab,
     wl_jemalloc_rss, NULL, BENCH_JE_UNAVAILABLE, NULL, NULL, NULL,
     wl_jemalloc_pc},
#endif
#if defined(BENCH_WITH_TCMALLOC) || defined(BENCH_PEERS_DLOPEN)
    {"tcmalloc", "tc_malloc/tc_free (tcmalloc_minimal)", BENCH_ALL_FLAGS,
     wl_tcmalloc_tab, wl_tcmalloc_rss, NULL, BENCH_TC_UNAVAILABLE, NULL, NULL,
     NULL, wl_tcmalloc_pc},
#endif
#if defined(BENCH_WITH_BEAM)
    {"raw", "beam_raw_allocator (align <= 8)", F_XTHREAD | F_REUSE, wl_beam_tab,
     wl_beam_rss, NULL, NULL, bench_begin_raw, NULL, NULL, wl_beam_pc},
    {"large", "beam_large_allocator", BENCH_ALL_FLAGS, wl_beam_tab, wl_beam_rss,
     NULL, NULL, bench_begin_large, NULL, NULL, wl_beam_pc},
#if !defined(BENCH_NO_GPA)
    {"gpa", "beam_gpa_init over large, tracking off", BENCH_ALL_FLAGS,
     wl_beam_tab, wl_beam_rss, NULL, NULL, bench_begin_gpa, NULL, bench_end_gpa,
     wl_beam_pc},
    {"gpa_track", "beam_gpa_init_ex(large, BEAM_GPA_TRACK_SITES)",
     BENCH_ALL_FLAGS, wl_beam_tab, wl_beam_rss, NULL, NULL,
     bench_begin_gpa_track, NULL, bench_end_gpa, wl_beam_pc},
    {"gpa_frames",
     "beam_gpa_init_ex(large, BEAM_GPA_TRACK_SITES | BEAM_GPA_FRAMES(6))",
     BENCH_ALL_FLAGS, wl_beam_tab, wl_beam_rss, NULL, NULL,
     bench_begin_gpa_frames, NULL, bench_end_gpa, wl_beam_pc},
#else
    BENCH_NOT_BUILT("gpa", "beam_gpa_init over large, tracking off",
                    "src/gpa.c not in the library"),
    BENCH_NOT_BUILT("gpa_track",
                    "beam_gpa_init_ex(large, BEAM_GPA_TRACK_SITES)",
                    "src/gpa.c not in the library"),
    BENCH_NOT_BUILT("gpa_frames",
                    "beam_gpa_init_ex(large, BEAM_GPA_TRACK_SITES | "
                    "BEAM_GPA_FRAMES(6))",
                    "src/gpa.c not in the library"),
#endif
#if !defined(BENCH_NO_ARENA)
    {"arena", "beam_arena_t over raw, reset per repetition", F_OVERALIGN,
     wl_beam_tab, wl_beam_rss, NULL, NULL, bench_begin_arena,
     bench_rep_end_arena, bench_end_arena, NULL},
#else
    BENCH_NOT_BUILT("arena", "beam_arena_t over raw, reset per repetition",
                    "src/arena.c not in the library"),
#endif
    {"bump", "bare pointer bump (baseline), reset per repetition", F_OVERALIGN,
     wl_bump_tab, wl_bump_rss, NULL, NULL, bench_begin_bump, bench_rep_end_bump,
     bench_end_bump, NULL},
    {"floor", "check-free free lists per 16 B class (reference floor)", F_REUSE,
     wl_floor_tab, wl_floor_rss, NULL, NULL, bench_begin_floor, NULL,
     bench_end_floor, wl_floor_pc},
#endif
};
#define BENCH_NALLOCS ((int)(sizeof bench_allocs / sizeof bench_allocs[0]))

static int bench_find_alloc(const char *name) {
    for (int i = 0; i < BENCH_NALLOCS; i++)
        if (strcmp(bench_allocs[i].name, name) == 0)
            return i;
    return -1;
}

static int bench_find_workload(const char *name) {
    for (int i = 0; i < W_COUNT; i++)
        if (strcmp(bench_specs[i].name, name) == 0)
            return i;
    return -1;
}

/* ------------------------------------------------------------------------
 * Cells: one allocator x one workload, run as begin / rep x N / end so that
 * a NIF host can make each repetition its own (short) NIF call.
 * ---------------------------------------------------------------------- */

enum bench_status { BS_OK, BS_NA, BS_MISSING, BS_ERROR };
static const char *const bench_status_names[] = {"ok", "na", "missing",
                                                 "error"};

#define BENCH_MAX_REPS 16
static struct bench_cell {
    const bench_alloc_desc *d;
    const bench_spec *s;
    size_t ops;
    int nthreads;
    bool open;
    enum bench_status status;
    int nreps;
    double ns_per_op[BENCH_MAX_REPS];
    char note[240];
    bench_ctx ctx[2];
} bench_cell;

static size_t bench_scaled(size_t ops, double scale) {
    double v = (double)ops * scale;
    return v < 1 ? 1 : (size_t)v;
}

/* Ops of one repetition of workload s for allocator d at scale. */
static size_t bench_cell_ops(const bench_alloc_desc *d, const bench_spec *s,
                             double scale) {
    size_t ops = bench_scaled(s->ops, scale);
    if (s->kind == K_REALLOC) /* whole chains */
        ops = (ops + BENCH_REALLOC_STEPS - 1) / BENCH_REALLOC_STEPS *
              BENCH_REALLOC_STEPS;
    if (s->kind == K_BATCH && ops < BENCH_BATCH)
        ops = BENCH_BATCH;
    if (s->kind == K_BATCH)
        ops = ops / BENCH_BATCH * BENCH_BATCH;
    if (!(d->flags & F_REUSE) && s->op_bytes != 0) {
        size_t cap = BENCH_NOREUSE_BUDGET / s->op_bytes;
        if (s->kind == K_REALLOC)
            cap = cap / BENCH_REALLOC_STEPS * BENCH_REALLOC_STEPS;
        if (s->kind == K_BATCH)
            cap = cap / BENCH_BATCH * BENCH_BATCH;
        if (ops > cap)
            ops = cap;
    }
    return ops;
}

static void bench_cell_fail(enum bench_status st, const char *fmt,
                            const char *arg) {
    bench_cell.status = st;
    snprintf(bench_cell.note, sizeof bench_cell.note, fmt, arg);
}

/* Start a cell; runs one short untimed warm-up. Returns the status (BS_OK
 * when repetitions may follow). */
static enum bench_status bench_cell_begin(int ai, int wi, double scale) {
    const bench_alloc_desc *d = &bench_allocs[ai];
    const bench_spec *s = &bench_specs[wi];
    memset(&bench_cell, 0, sizeof bench_cell);
    bench_cell.d = d;
    bench_cell.s = s;
    bench_cell.status = BS_OK;
    bench_cell.nthreads = (s->kind == K_XTHREAD || s->kind == K_MT2) ? 2 : 1;
    bench_cell.ops = d->wl ? bench_cell_ops(d, s, scale) : 0;
    if (d->wl == NULL) {
        bench_cell_fail(BS_MISSING, "%s", d->missing);
        return bench_cell.status;
    }
    const char *why = d->unavailable ? d->unavailable() : NULL;
    if (why != NULL) {
        bench_cell_fail(BS_NA, "%s", why);
        return bench_cell.status;
    }
    if (s->kind == K_XTHREAD && !(d->flags & F_XTHREAD)) {
        bench_cell_fail(BS_NA, "%s", "not thread-safe: no cross-thread frees");
        return bench_cell.status;
    }
    if (s->align > BEAM_MAX_ALIGN && !(d->flags & F_OVERALIGN)) {
        bench_cell_fail(BS_NA, "%s", "no alignment above 8");
        return bench_cell.status;
    }
    if (d->begin && d->begin(bench_cell.ctx, bench_cell.nthreads,
                             bench_cell.note, sizeof bench_cell.note) != 0) {
        bench_cell.status = BS_ERROR;
        return bench_cell.status;
    }
    bench_cell.open = true;
    if (!(d->flags & F_REUSE) && s->op_bytes != 0 &&
        bench_cell.ops < bench_scaled(s->ops, scale))
        snprintf(bench_cell.note, sizeof bench_cell.note,
                 "ops capped at %zu (frees do not reclaim)", bench_cell.ops);
    /* Warm-up, untimed: a quarter of a repetition (whole batches /
     * chains). Allocators that do not reuse memory get two full ones, so
     * that the memory they retain across resets is already touched (the
     * arena's first reset replaces its chunks by one big chunk). */
    size_t warm = bench_cell.ops / 4;
    int rounds = 1;
    if (s->kind == K_BATCH)
        warm = BENCH_BATCH;
    if (s->kind == K_REALLOC)
        warm = BENCH_REALLOC_STEPS * 8;
    if (!(d->flags & F_REUSE)) {
        warm = bench_cell.ops;
        rounds = 2;
    }
    for (int i = 0; i < rounds; i++) {
        uint64_t ns;
        char err[200];
        if (d->wl[wi](bench_cell.ctx, s, warm, &ns, err, sizeof err) != 0) {
            bench_cell_fail(BS_ERROR, "%s", err);
            return bench_cell.status;
        }
        if (d->rep_end)
            d->rep_end(bench_cell.ctx, bench_cell.nthreads);
    }
    return BS_OK;
}

/* One timed repetition; ns per op, or a negative value on error. */
static double bench_cell_rep(void) {
    if (!bench_cell.open || bench_cell.status != BS_OK)
        return -1;
    const bench_alloc_desc *d = bench_cell.d;
    uint64_t ns = 0;
    char err[200];
    int wi = (int)(bench_cell.s - bench_specs);
    if (d->wl[wi](bench_cell.ctx, bench_cell.s, bench_cell.ops, &ns, err,
                  sizeof err) != 0) {
        bench_cell_fail(BS_ERROR, "%s", err);
        return -1;
    }
    if (d->rep_end)
        d->rep_end(bench_cell.ctx, bench_cell.nthreads);
    double v = (double)ns / (double)bench_cell.ops;
    if (bench_cell.nreps < BENCH_MAX_REPS)
        bench_cell.ns_per_op[bench_cell.nreps++] = v;
    return v;
}

static enum bench_status bench_cell_end(void) {
    if (bench_cell.open && bench_cell.d->end) {
        char err[200];
        if (bench_cell.d->end(bench_cell.ctx, bench_cell.nthreads, err,
                              sizeof err) != 0 &&
            bench_cell.status == BS_OK)
            bench_cell_fail(BS_ERROR, "%s", err);
    }
    bench_cell.open = false;
    return bench_cell.status;
}

/* Keep notes CSV-safe. */
static void bench_csv_clean(char *s) {
    for (; *s; s++)
        if (*s == ',' || *s == '\n' || *s == '\r' || *s == '"')
            *s = ';';
}

/* The raw CSV row of the cell just ended:
 * setting,sched,allocator,workload,status,ops,values,note */
static int bench_cell_row(char *buf, size_t len, const char *setting,
                          const char *sched) {
    char vals[BENCH_MAX_REPS * 24] = "";
    size_t k = 0;
    for (int i = 0; i < bench_cell.nreps && k < sizeof vals; i++)
        k += (size_t)snprintf(vals + k, sizeof vals - k, "%s%.3f", i ? " " : "",
                              bench_cell.ns_per_op[i]);
    bench_csv_clean(bench_cell.note);
    return snprintf(buf, len, "%s,%s,%s,%s,%s,%zu,%s,%s\n", setting, sched,
                    bench_cell.d->name, bench_cell.s->name,
                    bench_status_names[bench_cell.status], bench_cell.ops, vals,
                    bench_cell.note);
}

/* ------------------------------------------------------------------------
 * RSS: the mixed-size workload for one allocator, meant to be the only
 * thing a fresh process does. Row:
 * setting,sched,allocator,rss_mixed,status,ops,"peak_live rss_before
 * rss_peak",note
 * ---------------------------------------------------------------------- */

static int bench_rss_row(char *buf, size_t len, const char *setting,
                         const char *sched, int ai, double scale) {
    const bench_alloc_desc *d = &bench_allocs[ai];
    bench_rss_result r = {0, 0, 0};
    enum bench_status st = BS_OK;
    char note[240] = "";
    size_t ops = bench_scaled(BENCH_RSS_OPS, scale);
    bench_ctx ctx[2];
    memset(ctx, 0, sizeof ctx);
    if (d->wl == NULL) {
        st = BS_MISSING;
        snprintf(note, sizeof note, "%s", d->missing);
    } else if (d->unavailable && d->unavailable() != NULL) {
        st = BS_NA;
        snprintf(note, sizeof note, "%s", d->unavailable());
    } else if (d->begin && d->begin(ctx, 1, note, sizeof note) != 0) {
        st = BS_ERROR;
    } else {
        if (d->rss(ctx, ops, &r, note, sizeof note) != 0)
            st = BS_ERROR;
        char err[200];
        if (d->end && d->end(ctx, 1, err, sizeof err) != 0 && st == BS_OK) {
            st = BS_ERROR;
            snprintf(note, sizeof note, "%s", err);
        }
    }
    bench_csv_clean(note);
    return snprintf(buf, len, "%s,%s,%s,rss_mixed,%s,%zu,%zu %zu %zu,%s\n",
                    setting, sched, d->name, bench_status_names[st], ops,
                    r.peak_live, r.rss_before, r.rss_peak, note);
}

#endif /* BENCH_WORKLOADS_C */
