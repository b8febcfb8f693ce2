/*
 * The raw allocator: the system backend (enif_alloc in NIFs) behind the
 * interface. It only promises BEAM_MAX_ALIGN (enif_alloc's observed
 * alignment), so anything above fails with NULL rather than handing out
 * misaligned memory. Also home of the thread-local beam_allocator, whose
 * initial value on every thread is this allocator.
 */
#include "raw.h"
#include "sys_direct.h"

static inline beam__counters *raw_counters(void) {
    return beam__thread_counters(BEAM__RAW);
}

/* Failed, or misaligned. Belt and braces: should the backend ever hand
 * out less alignment than it promises, fail the call instead of breaking
 * the contract. */
static BEAM__NOINLINE void *raw_alloc_failed(void *p) {
    if (p != NULL)
        beam__sys_free(p);
    beam__atomic_bump(&raw_counters()->failed, 1);
    return NULL;
}

/* An alignment above what the backend serves: refused, and kept with the
 * call's return address for the C++ adapters, which ask with theirs
 * (beam_internal_raw_refused_alignment). Kept by alignment alone, a
 * refusal the C code had handled made a later failure of a C++ adapter
 * at that alignment (an injected one) a bad_alignment (found in review). */
static BEAM__NOINLINE void *raw_refuse(size_t alignment, uintptr_t ret) {
    beam__thread_cold *cold = beam__cold();
    if (cold != NULL) {
        cold->raw_refused_alignment = alignment;
        cold->raw_refused_ret = ret;
    }
    beam__atomic_bump(&raw_counters()->failed, 1);
    return NULL;
}

bool beam_internal_raw_refused_alignment(size_t alignment, uintptr_t ret) {
    beam__thread_cold *cold = beam__cold();
    if (cold == NULL || cold->raw_refused_alignment != alignment ||
        cold->raw_refused_ret != ret)
        return false;
    cold->raw_refused_alignment = 0;
    return true;
}

/* p as the backend gave it is no block: NULL, or, belt and braces, less
 * aligned than it promises. */
static BEAM__ALWAYS_INLINE bool raw_bad(const void *p) {
    return p == NULL || ((uintptr_t)p & (BEAM_MAX_ALIGN - 1)) != 0;
}

/* Counted after the backend's answer: the fast path's way off it, a
 * count that publishes (every count of a thread not listed yet). */
static BEAM__NOINLINE void *raw_alloc_counting_after(size_t len) {
    void *p = beam__sys_alloc(len);
    if (BEAM__UNLIKELY(raw_bad(p)))
        return raw_alloc_failed(p);
    beam__count_alloc(raw_counters(), &beam__kind_peak[BEAM__RAW], len);
    return p;
}

/* The fast path counted a call that failed: taken back (the thread is
 * listed: its count was not due). */
static BEAM__NOINLINE void *raw_alloc_uncount(void *p) {
    beam__thread_stats *t = beam__thread_stats_here();
    beam__counters *c = &t->kind[BEAM__RAW];
    beam__atomic_bump(&c->allocs, (uint64_t)-1);
    beam__count_bytes(c, -(int64_t)t->raw_pending);
    return raw_alloc_failed(p);
}

/* Counted before the backend's call, so that nothing of the call's lives
 * across it but the answer (counted after, len and the answer both were
 * kept: two registers saved and restored on every call); len is left in
 * raw_pending for a failure's take-back. Only a count that publishes
 * nothing, which keeps the block within a step of what is published, and
 * len below it. (A reader's fold can see a failing call's bytes while it
 * runs, and a read's total feeds the peak (beam__stats_peak_of_read): a
 * read concurrent with a failing call can raise the peak by its length,
 * as the header allows a concurrent read's skew to; this thread's
 * publication never includes them.) */
void *beam__raw_alloc(size_t len) {
    beam__thread_stats *t = beam__thread_stats_here();
    beam__counters *c = &t->kind[BEAM__RAW];
    /* (Unsigned: a length near BEAM__MAX_LEN, which is always due, must
     * not overflow. Above it, bytes + len can wrap to a count not due:
     * the vtable's alloc keeps such lengths away.) */
    int64_t bytes =
        (int64_t)((uint64_t)beam__atomic_load_relaxed(&c->bytes) + len);
    if (BEAM__UNLIKELY(beam__publish_due_at(c, bytes)))
        return raw_alloc_counting_after(len);
    beam__atomic_bump(&c->allocs, 1);
    beam__atomic_store_relaxed(&c->bytes, bytes);
    t->raw_pending = (uint32_t)len;
    void *p = beam__sys_alloc_direct(len);
    if (BEAM__UNLIKELY(raw_bad(p)))
        return raw_alloc_uncount(p);
    return p;
}

/* The backend knows no capacity beyond len: only shrinking is in place. */
static bool raw_resize(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    (void)ctx;
    if (beam__refused_block("resize", "raw", mem, len, alignment, ret))
        return false;
    if (new_len > len || new_len == 0)
        return false;
    beam__count_resize(raw_counters(), &beam__kind_peak[BEAM__RAW], len,
                       new_len);
    return true;
}

/* enif_realloc keeps the backend's alignment, which is all this allocator
 * serves; on failure it leaves the old block alone, as remap must. The
 * same length is the block as it is: no call to the backend for nothing
 * (the helpers ask the allocator, so that a GPA can check the block). */
static void *raw_remap(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    (void)ctx;
    if (beam__refused_block("remap", "raw", mem, len, alignment, ret))
        return NULL;
    /* (new_len 0, from a direct caller of the vtable: realloc would free
     * the block and answer NULL, "nothing changed", and the caller's free
     * was a double free.) */
    if (alignment > BEAM_MAX_ALIGN || new_len == 0)
        return NULL;
    if (new_len == len)
        return mem;
    void *p = beam__sys_realloc(mem, new_len);
    if (p != NULL)
        beam__count_resize(raw_counters(), &beam__kind_peak[BEAM__RAW], len,
                           new_len);
    return p;
}

/* The free's way off its path, a count that publishes (every count of a
 * thread not listed yet, which raw_counters lists). Apart, so that the
 * free itself needs no frame and ends in a jump to the backend. */
static BEAM__NOINLINE void raw_free_publishing(void *mem) {
    beam__publish(raw_counters(), &beam__kind_peak[BEAM__RAW]);
    beam__sys_free(mem);
}

/* Counted first, so that the backend's free is a tail call. */
void beam__raw_free(void *mem, size_t len) {
    beam__counters *c = beam__thread_counters_any(BEAM__RAW);
    if (BEAM__UNLIKELY(
            beam__publish_due_at(c, beam__count_free_fast(c, len)))) {
        raw_free_publishing(mem);
        return;
    }
    beam__sys_free_direct(mem);
}

/* The vtable's alloc and free: what the helpers call directly, for the
 * other callers of the interface. */
static void *raw_alloc(void *ctx, size_t len, size_t alignment, uintptr_t ret) {
    (void)ctx;
    if (BEAM__UNLIKELY(alignment > BEAM_MAX_ALIGN))
        return raw_refuse(alignment, ret);
    /* (A length the helpers refuse, from a direct caller: beam__raw_alloc
     * counts before the call only for one it can tell is below a step,
     * and one near SIZE_MAX wraps the live bytes to just below
     * themselves, a count not due. No backend serves it: a failure, as
     * the helpers answer, without asking malloc for "-1" bytes, which
     * valgrind calls an error.) */
    if (BEAM__UNLIKELY(len > BEAM__MAX_LEN))
        return raw_alloc_failed(NULL);
    return beam__raw_alloc(len);
}

static void raw_free(void *ctx, void *mem, size_t len, size_t alignment,
                     uintptr_t ret) {
    (void)ctx;
    if (mem == NULL)
        return; /* NULL: the contract's no-op, also through the vtable */
    if (beam__refused_block("free", "raw", mem, len, alignment, ret))
        return;
    beam__raw_free(mem, len);
}

const beam_allocator_vtable beam__raw_vtable = {raw_alloc, raw_resize,
                                                raw_remap, raw_free};

const beam_allocator_t beam_raw_allocator = {NULL, &beam__raw_vtable};

BEAM_THREAD_LOCAL beam_allocator_t beam_allocator = {NULL, &beam__raw_vtable};
