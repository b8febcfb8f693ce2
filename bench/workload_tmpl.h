/*
 * bench/workload_tmpl.h: the workload loops for one allocator adapter.
 *
 * Included by bench/workloads.c once per adapter, with BA_ID defined to the
 * adapter's id; uses ad_<id>_{alloc,free,alloc_al,free_al,realloc} and
 * defines wl_<id>_tab (one function per workload, indexed by W_*) and
 * wl_<id>_rss. No include guard: that is the point.
 */
#ifndef BA_ID
#error "define BA_ID before including workload_tmpl.h"
#endif

#define BA_P3(a, b, c) a##b##c
#define BA_X3(a, b, c) BA_P3(a, b, c)
#define BA(f) BA_X3(ad_, BA_ID, f)
#define BW(f) BA_X3(wl_, BA_ID, f)
#define BA_STR2(x) #x
#define BA_STR(x) BA_STR2(x)

/* al == 0 means the default alignment; callers pass a constant 0 or the
 * spec's alignment, so the branch folds away after inlining. */
BENCH_INLINE void *BW(_get)(bench_ctx *c, size_t n, size_t al) {
    return al ? BA(_alloc_al)(c, n, al) : BA(_alloc)(c, n);
}

BENCH_INLINE void BW(_put)(bench_ctx *c, void *p, size_t n, size_t al) {
    if (al)
        BA(_free_al)(c, p, n, al);
    else
        BA(_free)(c, p, n);
}

static void BW(_drain)(bench_ctx *c, bench_slots *t, size_t al) {
    for (size_t i = 0; i < BENCH_SLOTS; i++) {
        if (t->p[i] != NULL)
            BW(_put)(c, t->p[i], t->n[i], al);
        t->p[i] = NULL;
    }
}

/* Fill the 1000 slots (untimed). 0, or -1 with err set. */
BENCH_INLINE int BW(_fill)(bench_ctx *c, bench_slots *t, uint64_t *rng,
                           size_t lo, size_t span, size_t al, char *err,
                           size_t errlen) {
    memset(t, 0, sizeof *t);
    for (size_t i = 0; i < BENCH_SLOTS; i++) {
        size_t n = lo + bench_below((uint32_t)bench_rng(rng), span);
        void *p = BW(_get)(c, n, al);
        if (p == NULL) {
            snprintf(err, errlen, "allocation of %zu bytes (align %zu) failed",
                     n, al);
            return -1;
        }
        *(char *)p = 1;
        t->p[i] = p;
        t->n[i] = n;
    }
    return 0;
}

/* The churn: ops x (pick a slot, free it, allocate a random size, write the
 * first byte). 0, or -1 with err set. */
BENCH_INLINE int BW(_churn)(bench_ctx *c, bench_slots *t, uint64_t *rng,
                            size_t ops, size_t lo, size_t span, size_t al,
                            char *err, size_t errlen) {
    void **P = t->p;
    size_t *N = t->n;
    for (size_t i = 0; i < ops; i++) {
        uint64_t r = bench_rng(rng);
        size_t k = bench_below((uint32_t)(r >> 32), BENCH_SLOTS);
        size_t n = lo + bench_below((uint32_t)r, span);
        BW(_put)(c, P[k], N[k], al);
        void *p = BW(_get)(c, n, al);
        if (BENCH_UNLIKELY(p == NULL)) {
            P[k] = NULL;
            snprintf(err, errlen, "allocation of %zu bytes (align %zu) failed",
                     n, al);
            return -1;
        }
        if (al && BENCH_UNLIKELY(((uintptr_t)p & (al - 1)) != 0)) {
            snprintf(err, errlen, "misaligned block %p for align %zu", p, al);
            BW(_put)(c, p, n, al);
            P[k] = NULL;
            return -1;
        }
        *(char *)p = (char)i;
        P[k] = p;
        N[k] = n;
    }
    return 0;
}

static int BW(_churn_run)(bench_ctx *c, const bench_spec *s, size_t ops,
                          uint64_t *ns, char *err, size_t errlen) {
    bench_slots *t = &bench_slot_tab[0];
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    size_t span = s->hi - s->lo + 1;
    int rc;
    if (s->align == 0) {
        rc = BW(_fill)(c, t, &rng, s->lo, span, 0, err, errlen);
        uint64_t t0 = bench_now_ns();
        if (rc == 0)
            rc = BW(_churn)(c, t, &rng, ops, s->lo, span, 0, err, errlen);
        *ns = bench_now_ns() - t0;
        BW(_drain)(c, t, 0);
    } else {
        rc = BW(_fill)(c, t, &rng, s->lo, span, s->align, err, errlen);
        uint64_t t0 = bench_now_ns();
        if (rc == 0)
            rc =
                BW(_churn)(c, t, &rng, ops, s->lo, span, s->align, err, errlen);
        *ns = bench_now_ns() - t0;
        BW(_drain)(c, t, s->align);
    }
    return rc;
}

static int BW(_pair)(bench_ctx *c, const bench_spec *s, size_t ops,
                     uint64_t *ns, char *err, size_t errlen) {
    size_t n = s->lo;
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < ops; i++) {
        void *p = BA(_alloc)(c, n);
        if (BENCH_UNLIKELY(p == NULL)) {
            snprintf(err, errlen, "allocation of %zu bytes failed", n);
            return -1;
        }
        *(char *)p = (char)i;
        bench_escape(p);
        BA(_free)(c, p, n);
    }
    *ns = bench_now_ns() - t0;
    return 0;
}

/* Batches of BENCH_BATCH: allocate all, then free in reverse (LIFO) or in
 * order (FIFO). ops is a multiple of BENCH_BATCH. */
static int BW(_batch)(bench_ctx *c, const bench_spec *s, size_t ops,
                      uint64_t *ns, char *err, size_t errlen) {
    size_t n = s->lo;
    bool lifo = s == &bench_specs[W_LIFO];
    void **tab = bench_batch_tab;
    uint64_t t0 = bench_now_ns();
    for (size_t done = 0; done < ops; done += BENCH_BATCH) {
        for (size_t i = 0; i < BENCH_BATCH; i++) {
            void *p = BA(_alloc)(c, n);
            if (BENCH_UNLIKELY(p == NULL)) {
                while (i-- > 0)
                    BA(_free)(c, tab[i], n);
                snprintf(err, errlen, "allocation of %zu bytes failed", n);
                return -1;
            }
            *(char *)p = 1;
            tab[i] = p;
        }
        if (lifo) {
            for (size_t i = BENCH_BATCH; i-- > 0;)
                BA(_free)(c, tab[i], n);
        } else {
            for (size_t i = 0; i < BENCH_BATCH; i++)
                BA(_free)(c, tab[i], n);
        }
    }
    *ns = bench_now_ns() - t0;
    return 0;
}

/* Chains of reallocs 16 B -> 1 MiB, doubling, writing the last byte after
 * each step. ops counts reallocs (BENCH_REALLOC_STEPS per chain). */
static int BW(_realloc)(bench_ctx *c, const bench_spec *s, size_t ops,
                        uint64_t *ns, char *err, size_t errlen) {
    size_t chains = ops / BENCH_REALLOC_STEPS;
    uint64_t t0 = bench_now_ns();
    for (size_t ch = 0; ch < chains; ch++) {
        size_t n = s->lo;
        char *p = BA(_alloc)(c, n);
        if (BENCH_UNLIKELY(p == NULL)) {
            snprintf(err, errlen, "allocation of %zu bytes failed", n);
            return -1;
        }
        p[0] = 1;
        while (n < s->hi) {
            char *q = BA(_realloc)(c, p, n, 2 * n);
            if (BENCH_UNLIKELY(q == NULL)) {
                BA(_free)(c, p, n);
                snprintf(err, errlen, "realloc to %zu bytes failed", 2 * n);
                return -1;
            }
            if (BENCH_UNLIKELY(q[0] != 1)) {
                BA(_free)(c, q, 2 * n);
                snprintf(err, errlen, "realloc lost the contents");
                return -1;
            }
            p = q;
            n *= 2;
            p[n - 1] = 1;
        }
        BA(_free)(c, p, n);
    }
    *ns = bench_now_ns() - t0;
    return 0;
}

/* Wait until the other thread is ready / the start signal is given. */
static void BW(_await)(atomic_int *v, int want) {
    unsigned spins = 0;
    while (atomic_load_explicit(v, memory_order_acquire) < want)
        bench_spin(&spins);
}

/* Consumer of the producer/consumer run: takes items off the ring and frees
 * them on its own thread. */
static void *BW(_consumer)(void *arg) {
    bench_mt *m = arg;
    bench_ctx *c = &m->ctx[1];
    if (bench_pin_xthread)
        (void)bench_pin_self(1, NULL);
    atomic_fetch_add_explicit(&m->ready, 1, memory_order_release);
    BW(_await)(&m->go, 1);
    size_t head = 0, tail = 0;
    unsigned spins = 0;
    int bad = 0;
    for (;;) {
        if (head == tail) {
            tail = atomic_load_explicit(&bench_ring.tail, memory_order_acquire);
            if (head == tail) {
                size_t stop = atomic_load_explicit(&bench_ring.stop,
                                                   memory_order_acquire);
                if (head >= stop) {
                    /* stop is published after the last tail: look again. */
                    tail = atomic_load_explicit(&bench_ring.tail,
                                                memory_order_acquire);
                    if (head == tail)
                        break;
                    continue;
                }
                bench_spin(&spins);
                continue;
            }
        }
        bench_item it = bench_ring.items[head & (BENCH_RING_CAP - 1)];
        head++;
        atomic_store_explicit(&bench_ring.head, head, memory_order_release);
        bad |= *(char *)it.p != 1;
        BA(_free)(c, it.p, it.n);
    }
    m->end_ns[1] = bench_now_ns();
    m->err[1] = bad;
    return NULL;
}

static int BW(_xthread)(bench_ctx *c, const bench_spec *s, size_t ops,
                        uint64_t *ns, char *err, size_t errlen) {
    bench_mt m;
    bench_mt_init(&m, c, s, ops);
    atomic_store(&bench_ring.head, 0);
    atomic_store(&bench_ring.tail, 0);
    atomic_store(&bench_ring.stop, SIZE_MAX);
    bench_thread th;
    if (bench_host_thread_start(&th, BW(_consumer), &m) != 0) {
        snprintf(err, errlen, "thread creation failed");
        return -1;
    }
    cpu_set_t saved;
    bool pinned = bench_pin_xthread && bench_pin_self(0, &saved) == 0;
    BW(_await)(&m.ready, 1);
    uint64_t rng = 0xD1B54A32D192ED03ULL;
    size_t span = s->hi - s->lo + 1;
    size_t tail = 0, head = 0;
    unsigned spins = 0;
    int rc = 0;
    m.t0 = bench_now_ns();
    atomic_store_explicit(&m.go, 1, memory_order_release);
    for (size_t i = 0; i < ops; i++) {
        size_t n = s->lo + bench_below((uint32_t)bench_rng(&rng), span);
        void *p = BA(_alloc)(c, n);
        if (BENCH_UNLIKELY(p == NULL)) {
            snprintf(err, errlen, "allocation of %zu bytes failed", n);
            rc = -1;
            break;
        }
        *(char *)p = 1;
        while (tail - head == BENCH_RING_CAP) {
            head = atomic_load_explicit(&bench_ring.head, memory_order_acquire);
            if (tail - head == BENCH_RING_CAP)
                bench_spin(&spins);
        }
        bench_ring.items[tail & (BENCH_RING_CAP - 1)] = (bench_item){p, n};
        tail++;
        atomic_store_explicit(&bench_ring.tail, tail, memory_order_release);
    }
    atomic_store_explicit(&bench_ring.stop, tail, memory_order_release);
    bench_host_thread_join(&th);
    if (pinned)
        (void)sched_setaffinity(0, sizeof saved, &saved);
    *ns = m.end_ns[1] - m.t0;
    if (rc == 0 && m.err[1]) {
        snprintf(err, errlen, "consumer saw corrupted blocks");
        rc = -1;
    }
    return rc;
}

/* One half of the two-thread churn: its own slots, its own seed. */
static void BW(_mt2_half)(bench_mt *m, int idx, char *err, size_t errlen) {
    bench_ctx *c = &m->ctx[idx];
    bench_slots *t = &bench_slot_tab[idx];
    const bench_spec *s = m->spec;
    uint64_t rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)idx << 40);
    size_t span = s->hi - s->lo + 1;
    int rc = BW(_fill)(c, t, &rng, s->lo, span, 0, err, errlen);
    atomic_fetch_add_explicit(&m->ready, 1, memory_order_release);
    if (idx == 0) {
        BW(_await)(&m->ready, 2);
        m->t0 = bench_now_ns();
        atomic_store_explicit(&m->go, 1, memory_order_release);
    } else {
        BW(_await)(&m->go, 1);
    }
    if (rc == 0)
        rc = BW(_churn)(c, t, &rng, m->ops / 2, s->lo, span, 0, err, errlen);
    m->end_ns[idx] = bench_now_ns();
    BW(_drain)(c, t, 0);
    m->err[idx] = rc;
}

static void *BW(_mt2_thread)(void *arg) {
    char err[160];
    BW(_mt2_half)((bench_mt *)arg, 1, err, sizeof err);
    return NULL;
}

static int BW(_mt2)(bench_ctx *c, const bench_spec *s, size_t ops, uint64_t *ns,
                    char *err, size_t errlen) {
    bench_mt m;
    bench_mt_init(&m, c, s, ops);
    bench_thread th;
    if (bench_host_thread_start(&th, BW(_mt2_thread), &m) != 0) {
        snprintf(err, errlen, "thread creation failed");
        return -1;
    }
    BW(_mt2_half)(&m, 0, err, errlen);
    bench_host_thread_join(&th);
    uint64_t end = m.end_ns[0] > m.end_ns[1] ? m.end_ns[0] : m.end_ns[1];
    *ns = end - m.t0;
    if (m.err[0] != 0)
        return -1;
    if (m.err[1] != 0) {
        snprintf(err, errlen, "second thread: allocation failed");
        return -1;
    }
    return 0;
}

/* A new block of n bytes in slot k of the RSS table, every byte written
 * (with byte): false, err set, when the allocation fails. */
static bool BW(_rss_put)(bench_ctx *c, size_t k, size_t n, int byte, char *err,
                         size_t errlen) {
    void *p = BA(_alloc)(c, n);
    if (p == NULL) {
        snprintf(err, errlen, "allocation of %zu bytes failed", n);
        return false;
    }
    memset(p, byte, n);
    bench_rss_tab.p[k] = p;
    bench_rss_tab.n[k] = n;
    return true;
}

/* Peak RSS over live bytes: 20000 slots of mixed sizes, every byte
 * written, RSS sampled every 1024 ops. */
static int BW(_rss)(bench_ctx *c, size_t ops, bench_rss_result *r, char *err,
                    size_t errlen) {
    memset(&bench_rss_tab, 0, sizeof bench_rss_tab);
    uint64_t rng = 0xA0761D6478BD642FULL;
    size_t live = 0, peak = 0;
    int rc = 0;
    r->rss_before = r->rss_peak = bench_rss_bytes();
    for (size_t i = 0; i < BENCH_RSS_SLOTS; i++) {
        size_t n = bench_mixed_size(bench_rng(&rng));
        if (!BW(_rss_put)(c, i, n, (int)i, err, errlen)) {
            rc = -1;
            break;
        }
        live += n;
    }
    peak = live;
    for (size_t i = 0; rc == 0 && i < ops; i++) {
        if ((i & 1023) == 0) {
            size_t rss = bench_rss_bytes();
            if (rss > r->rss_peak)
                r->rss_peak = rss;
        }
        size_t k =
            bench_below((uint32_t)(bench_rng(&rng) >> 32), BENCH_RSS_SLOTS);
        size_t n = bench_mixed_size(bench_rng(&rng));
        BA(_free)(c, bench_rss_tab.p[k], bench_rss_tab.n[k]);
        live -= bench_rss_tab.n[k];
        bench_rss_tab.p[k] = NULL;
        bench_rss_tab.n[k] = 0;
        if (!BW(_rss_put)(c, k, n, (int)i, err, errlen)) {
            rc = -1;
            break;
        }
        live += n;
        if (live > peak)
            peak = live;
    }
    size_t rss = bench_rss_bytes();
    if (rss > r->rss_peak)
        r->rss_peak = rss;
    r->peak_live = peak;
    for (size_t i = 0; i < BENCH_RSS_SLOTS; i++)
        if (bench_rss_tab.p[i] != NULL)
            BA(_free)(c, bench_rss_tab.p[i], bench_rss_tab.n[i]);
    return rc;
}

/* The scalable churn (bench_pc): thread idx fills its share of the slots
 * (untimed), waits for the others, churns its share of the ops, and drains
 * only once every thread has stopped the clock. */
typedef struct {
    bench_pc *m;
    int idx;
} BW(_pc_arg);

static void BW(_pc_part)(bench_pc *m, int idx) {
    bench_ctx *c = &m->ctx[idx];
    int n = m->nthreads;
    size_t from = m->live * (size_t)idx / (size_t)n;
    size_t to = m->live * (size_t)(idx + 1) / (size_t)n;
    size_t cnt = to - from, span = m->hi - m->lo + 1;
    void **P = m->slot_p + from;
    uint32_t *N = m->slot_n + from;
    uint64_t rng = 0x9E3779B97F4A7C15ULL ^ ((uint64_t)(idx + 1) << 40);
    int rc = 0;
    if (m->pin && idx > 0)
        (void)bench_pin_self(idx, NULL);
    for (size_t i = 0; i < cnt; i++) {
        size_t sz = m->lo + bench_below((uint32_t)bench_rng(&rng), span);
        void *p = BA(_alloc)(c, sz);
        if (BENCH_UNLIKELY(p == NULL)) {
            rc = -1;
            break;
        }
        *(char *)p = 1;
        P[i] = p;
        N[i] = (uint32_t)sz;
    }
    atomic_fetch_add_explicit(&m->ready, 1, memory_order_acq_rel);
    if (idx == 0) {
        BW(_await)(&m->ready, m->started);
        m->t0 = bench_now_ns();
        atomic_store_explicit(&m->go, 1, memory_order_release);
    } else {
        BW(_await)(&m->go, 1);
    }
    size_t ops = m->ops / (size_t)n;
    uint64_t cpu0 = bench_thread_cpu_ns();
    for (size_t i = 0; rc == 0 && i < ops; i++) {
        uint64_t r = bench_rng(&rng);
        size_t k = bench_below((uint32_t)(r >> 32), cnt);
        size_t sz = m->lo + bench_below((uint32_t)r, span);
        BA(_free)(c, P[k], N[k]);
        void *p = BA(_alloc)(c, sz);
        if (BENCH_UNLIKELY(p == NULL)) {
            P[k] = NULL;
            rc = -1;
            break;
        }
        *(char *)p = (char)i;
        P[k] = p;
        N[k] = (uint32_t)sz;
    }
    m->end_ns[idx] = bench_now_ns();
    m->cpu_ns[idx] = bench_thread_cpu_ns() - cpu0;
    atomic_fetch_add_explicit(&m->done, 1, memory_order_acq_rel);
    BW(_await)(&m->done, m->started);
    for (size_t i = 0; i < cnt; i++)
        if (P[i] != NULL)
            BA(_free)(c, P[i], N[i]);
    m->err[idx] = rc;
}

static void *BW(_pc_thread)(void *arg) {
    BW(_pc_arg) *a = arg;
    BW(_pc_part)(a->m, a->idx);
    return NULL;
}

__attribute__((unused)) static int BW(_pc)(bench_pc *m, uint64_t *ns, char *err,
                                           size_t errlen) {
    bench_thread th[BENCH_PC_MAX_THREADS];
    BW(_pc_arg) args[BENCH_PC_MAX_THREADS];
    int started = 1;
    cpu_set_t saved;
    bool pinned = m->pin && bench_pin_self(0, &saved) == 0;
    atomic_init(&m->ready, 0);
    atomic_init(&m->go, 0);
    atomic_init(&m->done, 0);
    memset(m->err, 0, sizeof m->err);
    for (int i = 1; i < m->nthreads; i++) {
        args[i].m = m;
        args[i].idx = i;
        if (bench_host_thread_start(&th[i], BW(_pc_thread), &args[i]) != 0)
            break;
        started++;
    }
    /* Threads that did start pass the barriers with those alone (they read
     * started only after go, which is released after this store). */
    m->started = started;
    BW(_pc_part)(m, 0);
    for (int i = 1; i < started; i++)
        bench_host_thread_join(&th[i]);
    if (pinned)
        (void)sched_setaffinity(0, sizeof saved, &saved);
    uint64_t end = 0;
    int bad = 0;
    m->cpu_total_ns = 0;
    for (int i = 0; i < started; i++) {
        if (m->end_ns[i] > end)
            end = m->end_ns[i];
        m->cpu_total_ns += m->cpu_ns[i];
        bad |= m->err[i];
    }
    *ns = end - m->t0;
    if (started < m->nthreads || bad) {
        snprintf(err, errlen, "%s",
                 bad ? "allocation failed" : "thread creation failed");
        return -1;
    }
    return 0;
}

static const bench_wl_fn BW(_tab)[W_COUNT] = {
    [W_PAIR64] = BW(_pair),       [W_CHURN_S] = BW(_churn_run),
    [W_CHURN_L] = BW(_churn_run), [W_LIFO] = BW(_batch),
    [W_FIFO] = BW(_batch),        [W_REALLOC] = BW(_realloc),
    [W_XTHREAD] = BW(_xthread),   [W_MT2] = BW(_mt2),
    [W_ALIGN64] = BW(_churn_run), [W_ALIGN4K] = BW(_churn_run),
};

#undef BA_P3
#undef BA_X3
#undef BA
#undef BW
#undef BA_STR2
#undef BA_STR
#undef BA_ID
