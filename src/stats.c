/*
 * Stats of the raw and large allocators: per-thread counters, folded on
 * read. A thread's counters join a global list on its first allocation and
 * are folded into the retired totals when it exits, so reads see every
 * thread that ever allocated. The general purpose allocator keeps its own
 * per-heap counters (gpa_heap.c); the arithmetic is shared here.
 */
#include "internal.h"

#include <pthread.h>
#include <string.h>

typedef beam__thread_stats thread_stats;

/* The calling thread's counters (internal.h reads them inline), not
 * listed: every count is due (BEAM__MARK_UNLISTED). */
_Static_assert(BEAM__KINDS == 2, "a mark for every kind below");
BEAM_THREAD_LOCAL thread_stats beam__stats_mine = {
    .kind = {{.mark = BEAM__MARK_UNLISTED}, {.mark = BEAM__MARK_UNLISTED}}};
static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static thread_stats *threads;
static beam__counters retired[BEAM__KINDS];
beam__peak beam__kind_peak[BEAM__KINDS];

void beam__peak_observe(beam__peak *p, int64_t live) {
    int64_t peak = beam__atomic_load_relaxed(&p->peak);
    while (live > peak && !beam__atomic_cas_weak_relaxed(&p->peak, &peak, live))
        ;
}

void beam__publish(beam__counters *c, beam__peak *p) {
    int64_t bytes = beam__atomic_load_relaxed(&c->bytes);
    int64_t d = bytes - c->mark;
    if (d < 0) {
        /* A fall raises no peak. Published below bytes: the published
         * total still never exceeds what is live. (A fall is published
         * as it happens, so mark <= bytes between calls: a publication
         * at any other time, a thread's last included, is exact.) */
        d -= BEAM__PUBLISH_CUSHION;
        c->mark += d;
        beam__atomic_add_relaxed(&p->published, d);
        return;
    }
    c->mark = bytes;
    beam__peak_add(p, d);
}

void beam__stats_add(beam_alloc_stats *out, const beam__counters *c) {
    int64_t bytes = beam__atomic_load_relaxed(&c->bytes);
    uint64_t a = beam__atomic_load_relaxed(&c->allocs);
    uint64_t f = beam__atomic_load_relaxed(&c->frees);
    /* Accumulated as if signed: one thread may free what another made. */
    out->live_bytes += (size_t)bytes;
    out->live_blocks += (size_t)(a - f);
    out->allocations += a;
    out->frees += f;
    out->failed += beam__atomic_load_relaxed(&c->failed);
}

void beam__counters_retire(beam__counters *r, beam__counters *c,
                           beam__peak *p) {
    /* Exact (mark <= bytes between calls): no cushion stays in the
     * published total once c is gone, which would drift the peak low with
     * every thread retired. */
    beam__publish(c, p);
    beam__atomic_bump(&r->bytes, beam__atomic_load_relaxed(&c->bytes));
    beam__atomic_bump(&r->allocs, beam__atomic_load_relaxed(&c->allocs));
    beam__atomic_bump(&r->frees, beam__atomic_load_relaxed(&c->frees));
    beam__atomic_bump(&r->failed, beam__atomic_load_relaxed(&c->failed));
    memset(c, 0, sizeof *c);
}

void beam__stats_thread_exit(void) {
    if (!beam__stats_mine.listed)
        return;
    pthread_mutex_lock(&list_lock);
    for (int k = 0; k < BEAM__KINDS; k++) {
        beam__counters_retire(&retired[k], &beam__stats_mine.kind[k],
                              &beam__kind_peak[k]);
        beam__stats_mine.kind[k].mark = BEAM__MARK_UNLISTED;
    }
    if (beam__stats_mine.prev != NULL)
        beam__stats_mine.prev->next = beam__stats_mine.next;
    else
        threads = beam__stats_mine.next;
    if (beam__stats_mine.next != NULL)
        beam__stats_mine.next->prev = beam__stats_mine.prev;
    beam__stats_mine.listed = false;
    pthread_mutex_unlock(&list_lock);
}

void beam__stats_fork(beam__fork_phase phase) {
    beam__fork_mutex(&list_lock, phase);
}

void beam__stats_list_thread(void) {
    beam__thread_exit_arm();
    pthread_mutex_lock(&list_lock);
    beam__stats_mine.prev = NULL;
    beam__stats_mine.next = threads;
    if (threads != NULL)
        threads->prev = &beam__stats_mine;
    threads = &beam__stats_mine;
    /* (Counts made before, with the marks unlisted, are then published
     * from 0, as if the thread had been listed at its first.) */
    for (int k = 0; k < BEAM__KINDS; k++)
        beam__stats_mine.kind[k].mark = 0;
    beam__stats_mine.listed = true;
    pthread_mutex_unlock(&list_lock);
}

#ifdef BEAM__STATS_TLS_OFFSET
_Atomic intptr_t beam__stats_tls_offset;
#endif

beam__counters *beam__thread_counters_slow(int kind) {
    if (!beam__stats_mine.listed)
        beam__stats_list_thread();
#ifdef BEAM__STATS_TLS_OFFSET
    BEAM__TLS_LEARN(beam__stats_tls_offset, beam__stats_mine);
#endif
    return &beam__stats_mine.kind[kind];
}

static void fold_kind(int kind, beam_alloc_stats *out) {
    /* This thread's lag is known: publish it. (A fold of other threads'
     * counters is no snapshot, so it never feeds the peak.) */
    if (beam__stats_mine.listed)
        beam__publish(&beam__stats_mine.kind[kind], &beam__kind_peak[kind]);
    pthread_mutex_lock(&list_lock);
    beam__stats_add(out, &retired[kind]);
    for (thread_stats *t = threads; t != NULL; t = t->next)
        beam__stats_add(out, &t->kind[kind]);
    pthread_mutex_unlock(&list_lock);
}

/* The peak of a read: other threads' rises wait to be published (up to a
 * step each), so the peak can lag the live total the fold finds, and a
 * peak below the live_bytes it comes with reads as nonsense (one read on
 * a dirty scheduler gave peak 0 with 124 bytes live). The fold's total
 * feeds the peak, so later reads never give less. (A fold while threads
 * allocate and free is no snapshot: it can raise the peak by what it is
 * off; a total below zero, a fold's skew too, feeds nothing.) */
void beam__stats_peak_of_read(beam__peak *p, beam_alloc_stats *out) {
    /* A total below zero reads as 0, not as 2^64 less a little: a fold's
     * skew, or a drift that the lengths frees are counted with can make
     * (beam_mfree of a sized block counts its size class; a wrong length
     * in the same class is not seen without tracking; found by a
     * review). */
    if ((int64_t)out->live_bytes < 0)
        out->live_bytes = 0;
    if ((int64_t)out->live_blocks < 0)
        out->live_blocks = 0;
    if (out->live_bytes > 0)
        beam__peak_observe(p, (int64_t)out->live_bytes);
    out->peak_bytes = (size_t)beam__atomic_load_relaxed(&p->peak);
}

bool beam_allocator_stats(beam_allocator_t a, beam_alloc_stats *out) {
    beam_alloc_stats ignored;
    if (out == NULL) /* only asks whether a keeps stats */
        out = &ignored;
    memset(out, 0, sizeof *out);
    int kind;
    if (a.vtable == &beam__raw_vtable)
        kind = BEAM__RAW;
    else if (a.vtable == &beam__large_vtable)
        kind = BEAM__LARGE;
    else if (a.vtable == &beam__gpa_vtable)
        return beam__gpa_stats(a.ctx, out);
    else
        return false;
    fold_kind(kind, out);
    beam__stats_peak_of_read(&beam__kind_peak[kind], out);
    return true;
}
