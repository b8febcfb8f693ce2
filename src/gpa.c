/*
 * The general purpose allocator: the hot paths and the public functions.
 * Types, design and invariants are in gpa_internal.h; segments and the
 * address map in gpa_segment.c; threads and heaps in gpa_thread.c; large
 * blocks in gpa_large.c; leak and misuse reports in gpa_report.c.
 *
 * Fast path of an allocation: class from length, heap from a thread-local
 * slot, pop the current slab's free list (or bump). Fast path of a free:
 * slab from the address map, check the tag, push on the owner's list or,
 * from another thread, on the slab's atomic stack.
 */
#include "frames.h"
#include "gpa_internal.h"

#include <stdio.h>
#include <string.h>

/* 16-byte steps to 128, then four classes per doubling (<= 12.5% waste). */
const uint32_t beam__gpa_class_size[GPA_CLASSES] = {
    16,   32,   48,   64,   80,   96,   112,  128,  160,  192,  224,
    256,  320,  384,  448,  512,  640,  768,  896,  1024, 1280, 1536,
    1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192};

/* cur[] of a new heap points here: nothing free, nothing to bump, so the
 * first allocation of each class takes the slow path without a NULL test. */
gpa_slab beam__gpa_empty_slab;

/* Class of a length up to 1024 by table (one load), above by arithmetic:
 * four classes per doubling from 128 on. */
#define SMALL_DIRECT 1024
static uint8_t class_by_16[SMALL_DIRECT / 16 + 1];

static unsigned class_of_slow(size_t len) {
    if (len <= 128)
        return len <= 16 ? 0 : (unsigned)((len + 15) >> 4) - 1;
    size_t s = len - 1;
    unsigned b = 63u - (unsigned)__builtin_clzll((unsigned long long)s);
    return 8 + (b - 7) * 4 + (unsigned)((s >> (b - 2)) & 3);
}

__attribute__((constructor)) static void fill_class_table(void) {
    for (size_t i = 0; i <= SMALL_DIRECT / 16; i++)
        class_by_16[i] = (uint8_t)class_of_slow(i == 0 ? 1 : i * 16);
}

static inline unsigned class_of(size_t len) {
    if (BEAM__LIKELY(len <= SMALL_DIRECT))
        return class_by_16[(len + 15) >> 4];
    return class_of_slow(len);
}

/* Class for (len, alignment), or GPA_CLASSES when only the backing can
 * serve it. Blocks sit at multiples of their size from a 64 KiB boundary,
 * so a class serves every alignment that divides its size. */
static inline unsigned class_for(size_t len, size_t alignment) {
    if (BEAM__LIKELY(alignment <= GPA_MIN_BLOCK))
        return len <= BEAM_GPA_SMALL_MAX ? class_of(len) : GPA_CLASSES;
    if (len > BEAM_GPA_SMALL_MAX || alignment > BEAM_GPA_SMALL_MAX)
        return GPA_CLASSES;
    unsigned c = class_of(len < alignment ? alignment : len);
    while (c < GPA_CLASSES && (beam__gpa_class_size[c] & (alignment - 1)))
        c++;
    return c;
}

/* A thread's slot 0 is trusted when its id is the state's: ids are unique
 * across every state ever made, so a slot left by a dead instance never
 * matches. */
static inline gpa_heap *heap_of(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    gpa_tls_slot *slot = &beam__gpa_tls[0];
    if (BEAM__LIKELY(st != NULL && slot->id == st->id))
        return slot->heap;
    return beam__gpa_heap_slow(gpa);
}

/* Safe mode's byte patterns: after a block's length, in new and in freed
 * blocks. Distinct, and none a plausible pointer or small integer. */
#define CANARY 0xA5
#define FRESH_FILL 0xAA
#define FREED_FILL 0xDD

/* Index of the first byte in [from, to) of b that is not `byte`, or `to`. */
static size_t first_other(const unsigned char *b, size_t from, size_t to,
                          unsigned char byte) {
    while (from < to && b[from] == byte)
        from++;
    return from;
}

/* Safe mode, a block about to be handed out: was it written while free?
 * Then fill it and its canary. */
static BEAM__NOINLINE void safe_on_alloc(gpa_state *st, gpa_slab *s, void **b,
                                         size_t len, bool reused,
                                         uintptr_t ret) {
    unsigned char *p = (unsigned char *)b;
    gpa_block_info *i = &s->info[beam__gpa_block_index(s, b)];
    if (reused &&
        first_other(p, 2 * sizeof(void *), s->size, FREED_FILL) != s->size)
        beam__gpa_misuse_at(st,
                            "write after free (found when the block was "
                            "reused)",
                            b, s->size, 0, ret, i->site);
    memset(p, FRESH_FILL, len);
    memset(p + len, CANARY, s->size - len);
}

/* Safe mode, a tracked block being freed: check its canary, poison it. */
static void safe_on_free(gpa_state *st, gpa_slab *s, void **b, size_t len,
                         size_t alignment, uintptr_t ret, uintptr_t site) {
    unsigned char *p = (unsigned char *)b;
    size_t bad = first_other(p, len, s->size, CANARY);
    if (bad != s->size) {
        char what[112];
        snprintf(what, sizeof what,
                 "write past the end of a block (padding byte %zu changed; "
                 "found at free)",
                 bad - len);
        beam__gpa_misuse_at(st, what, b, len, alignment, ret, site);
    }
    memset(p + 2 * sizeof(void *), FREED_FILL, s->size - 2 * sizeof(void *));
}

static inline void note_alloc(gpa_slab *s, void **b, size_t len,
                              size_t alignment, uintptr_t ret, bool reused) {
    if (BEAM__UNLIKELY(s->info != NULL)) {
        if (s->st->safe)
            safe_on_alloc(s->st, s, b, len, reused, ret);
        gpa_block_info *i = &s->info[beam__gpa_block_index(s, b)];
        i->len = (uint32_t)len;
        i->alignment = (uint32_t)alignment;
        i->site = beam__site(s->st->flags, ret);
    }
}

static BEAM__NOINLINE void *alloc_slow(gpa_heap *h, unsigned cls, size_t len,
                                       size_t alignment, uintptr_t ret);
static BEAM__NOINLINE void *alloc_large(beam_gpa_t *gpa, size_t len,
                                        size_t alignment, uintptr_t ret);

/* Hand out a block of s, which has one: its free list first, else bump.
 * (The fast path in gpa_alloc is this, inlined by hand, for the common
 * case only.) */
static inline void *take_block(gpa_heap *h, gpa_slab *s, size_t len,
                               size_t alignment, uintptr_t ret) {
    void **b = s->free;
    bool reused = b != NULL;
    if (reused) {
        s->free = (void **)b[0];
    } else {
        b = (void **)s->bump;
        /* Others read bump to tell handed-out blocks from the rest. */
        __atomic_store_n(&s->bump, s->bump + s->size, __ATOMIC_RELAXED);
    }
    b[1] = NULL; /* not tagged free (fresh memory may hold an old tag) */
    s->used++;
    note_alloc(s, b, len, alignment, ret, reused);
    beam__count_alloc_fast(&h->stats, len);
    return b;
}

/* Every allocation the fast path below does not settle. */
static BEAM__NOINLINE void *alloc_general(beam_gpa_t *gpa, size_t len,
                                          size_t alignment, uintptr_t ret) {
    /* Safe mode keeps at least one byte after each block for a canary. */
    unsigned cls =
        class_for(len + ((gpa->flags & BEAM_GPA_SAFE) != 0), alignment);
    if (cls == GPA_CLASSES)
        return alloc_large(gpa, len, alignment, ret);
    gpa_heap *h = heap_of(gpa);
    if (h == NULL) {
        gpa_state *st = beam__gpa_state_of(gpa);
        if (st != NULL)
            atomic_fetch_add_explicit(&st->large_counts.failed, 1,
                                      memory_order_relaxed);
        return NULL;
    }
    gpa_slab *s = h->cur[cls];
    if (s->free == NULL && s->bump >= s->end)
        return alloc_slow(h, cls, len, alignment, ret);
    return take_block(h, s, len, alignment, ret);
}

/* The fast path: a small block off the current slab's free list. Anything
 * else is a tail call, so this needs no stack frame. */
static void *gpa_alloc(void *ctx, size_t len, size_t alignment, uintptr_t ret) {
    beam_gpa_t *gpa = (beam_gpa_t *)ctx;
    gpa_state *st = beam__gpa_state_of(gpa);
    if (BEAM__LIKELY(len <= SMALL_DIRECT && alignment <= GPA_MIN_BLOCK &&
                     st != NULL)) {
        gpa_tls_slot *slot = &beam__gpa_tls[0];
        if (BEAM__LIKELY(slot->id == st->id)) {
            gpa_slab *s = slot->heap->cur[class_by_16[(len + 15) >> 4]];
            void **b = s->free;
            if (BEAM__LIKELY(b != NULL && !st->safe)) {
                s->free = (void **)b[0];
                b[1] = NULL;
                s->used++;
                if (BEAM__UNLIKELY(s->info != NULL)) {
                    gpa_block_info *i = &s->info[beam__gpa_index_of(s, b)];
                    i->len = (uint32_t)len;
                    i->alignment = (uint32_t)alignment;
                    i->site = beam__site(st->flags, ret);
                }
                beam__count_alloc_fast(&slot->heap->stats, len);
                return b;
            }
        }
    }
    return alloc_general(gpa, len, alignment, ret);
}

/* Try to make s usable: collect remote frees; if still exhausted, mark it
 * full. Returns true when s has a block to give. */
static bool refill_or_mark_full(gpa_slab *s) {
    for (;;) {
        beam__gpa_collect(s);
        if (s->free != NULL || s->bump < s->end)
            return true;
        /* FULL first: a remote free that takes the bit off must find the
         * slab marked full, or nobody would requeue it. */
        uint8_t was = s->where;
        s->where = WHERE_FULL;
        uintptr_t expect = 0;
        if (atomic_compare_exchange_strong_explicit(
                &s->thread_free, &expect, GPA_FULL_BIT, memory_order_acq_rel,
                memory_order_acquire))
            return false;
        s->where = was;
        /* A remote free raced in: collect it. */
    }
}

static void avail_push(gpa_heap *h, gpa_slab *s) {
    s->where = WHERE_AVAIL;
    s->prev = NULL;
    s->next = h->avail[s->cls];
    if (s->next != NULL)
        s->next->prev = s;
    h->avail[s->cls] = s;
}

static void avail_unlink(gpa_heap *h, gpa_slab *s) {
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        h->avail[s->cls] = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

/* Slabs that remote frees un-fulled come back to their avail lists. */
static void drain_notify(gpa_heap *h) {
    gpa_slab *s =
        atomic_exchange_explicit(&h->notify, NULL, memory_order_acquire);
    while (s != NULL) {
        gpa_slab *next = s->notify_next;
        if (s->where == WHERE_NOTIFY)
            avail_push(h, s);
        s = next;
    }
}

/* A heap keeps its current slab of a class even when it empties, so that
 * alloc/free of one block does not take and give back a slab each time; but
 * only this many empty ones, so an idle scheduler does not sit on a slab of
 * every class it ever used. */
#define EMPTY_CUR_KEEP 4

static void trim_empty_cur(gpa_heap *h, gpa_slab *keep) {
    unsigned empty = 0;
    for (unsigned c = 0; c < GPA_CLASSES; c++) {
        gpa_slab *t = h->cur[c];
        if (t == &beam__gpa_empty_slab || t == keep || t->used != 0)
            continue;
        beam__gpa_collect(t);
        if (t->used != 0 || empty++ < EMPTY_CUR_KEEP)
            continue;
        h->cur[c] = &beam__gpa_empty_slab;
        pthread_mutex_lock(&h->st->lock);
        beam__gpa_slab_release(h->st, t);
        pthread_mutex_unlock(&h->st->lock);
    }
}

static void *alloc_slow(gpa_heap *h, unsigned cls, size_t len, size_t alignment,
                        uintptr_t ret) {
    /* Every so many refills, give back empty current slabs of other
     * classes beyond the few a heap keeps. */
    if ((++h->refills & 15) == 0)
        trim_empty_cur(h, h->cur[cls]);
    gpa_slab *s = h->cur[cls];
    if (s != &beam__gpa_empty_slab && refill_or_mark_full(s))
        goto have;
    drain_notify(h);
    while ((s = h->avail[cls]) != NULL) {
        avail_unlink(h, s);
        if (refill_or_mark_full(s))
            goto installed;
    }
    pthread_mutex_lock(&h->st->lock);
    while ((s = beam__gpa_slab_take(h->st, cls)) != NULL) {
        atomic_store_explicit(&s->heap, h, memory_order_release);
        /* An adopted slab may hold remote frees, or be full (then it stays
         * ours, marked full, and we take another). */
        if (refill_or_mark_full(s))
            break;
    }
    pthread_mutex_unlock(&h->st->lock);
    if (s == NULL) {
        /* The old current slab is full (or queued elsewhere) now: it must
         * not stay current, or a free would list it twice. */
        h->cur[cls] = &beam__gpa_empty_slab;
        BEAM__BUMP(h->stats.failed, 1);
        return NULL;
    }
installed:
    s->where = WHERE_CUR;
    h->cur[cls] = s;
have:;
    void *b = take_block(h, s, len, alignment, ret);
    /* A slab refill is this heap's chance to feed the shared peak. */
    beam__publish(&h->stats, &h->st->peak);
    return b;
}

/* This thread's heap for st if it has one (never makes one). */
static gpa_heap *heap_if_any(const gpa_state *st) {
    for (int i = 0; i < GPA_TLS_SLOTS; i++)
        if (beam__gpa_tls[i].id == st->id)
            return beam__gpa_tls[i].heap;
    return NULL;
}

/* A cached block for (len, alignment): same alignment, at most 1/8 longer
 * than asked (so reuse does not inflate memory). Owner only. */
static bool cache_take(gpa_heap *h, size_t len, size_t alignment,
                       gpa_large *out) {
    for (unsigned i = 0; i < h->cache_n; i++) {
        gpa_large *c = &h->cache[i];
        if (c->alignment == alignment && c->backing_len >= len &&
            c->backing_len - len <= len / 8) {
            *out = *c;
            h->cache_bytes -= c->backing_len;
            *c = h->cache[--h->cache_n];
            return true;
        }
    }
    return false;
}

/* Keep a freed large block if there is room. Owner only. */
static bool cache_put(gpa_heap *h, const gpa_large *e) {
    if (h->cache_n == GPA_LARGE_CACHE ||
        e->backing_len > GPA_LARGE_CACHE_BYTES - h->cache_bytes)
        return false;
    h->cache[h->cache_n++] = *e;
    h->cache_bytes += e->backing_len;
    return true;
}

void beam__gpa_cache_flush(gpa_state *st, gpa_heap *h) {
    while (h->cache_n > 0) {
        gpa_large *c = &h->cache[--h->cache_n];
        st->backing_bytes -= c->backing_len;
        st->backing.vtable->free(st->backing.ctx, c->ptr, c->backing_len,
                                 c->alignment, 0);
    }
    h->cache_bytes = 0;
}

static void *alloc_large(beam_gpa_t *gpa, size_t len, size_t alignment,
                         uintptr_t ret) {
    gpa_state *st = beam__gpa_state_slow(gpa);
    if (st == NULL)
        return NULL;
    gpa_heap *h = heap_of(gpa); /* NULL (out of memory): no cache */
    gpa_large e;
    bool cached = h != NULL && cache_take(h, len, alignment, &e);
    if (!cached) {
        e.ptr = st->backing.vtable->alloc(st->backing.ctx, len, alignment, ret);
        e.backing_len = len;
        e.alignment = alignment;
    }
    e.len = len;
    e.site = beam__site(st->flags, ret);
    pthread_mutex_lock(&st->lock);
    bool ok = e.ptr != NULL && beam__gpa_large_insert(st, &e);
    if (ok) {
        if (!cached)
            st->backing_bytes += e.backing_len;
        beam__count_alloc(&st->large_counts, &st->peak, len);
    } else {
        atomic_fetch_add_explicit(&st->large_counts.failed, 1,
                                  memory_order_relaxed);
    }
    pthread_mutex_unlock(&st->lock);
    if (ok)
        return e.ptr;
    /* The table could not grow. A block from the cache goes back there
     * (taking it made room); a fresh one goes back to the backing. */
    if (cached)
        cache_put(h, &e);
    else if (e.ptr != NULL)
        st->backing.vtable->free(st->backing.ctx, e.ptr, e.backing_len,
                                 alignment, ret);
    return NULL;
}

/* ---- free --------------------------------------------------------------- */

static BEAM__NOINLINE void free_slow(beam_gpa_t *gpa, void *mem, size_t len,
                                     size_t alignment, uintptr_t ret);
static BEAM__NOINLINE void local_free_slow(gpa_heap *h, gpa_slab *s);
static BEAM__NOINLINE void remote_notify(gpa_state *st, gpa_slab *s);

/* A free into a slab whose thread has gone: nobody would collect it until
 * another heap adopts the slab, so under the lock (which stands in for the
 * owner of abandoned slabs) collect now, and give the slab back once it is
 * empty. */
/* An abandoned slab, lock held (the lock stands in for its owner): collect
 * what other threads freed into it, and give it back once it is empty. */
static void reclaim_abandoned(gpa_state *st, gpa_slab *s) {
    beam__gpa_collect(s);
    if (s->used == 0) {
        beam__gpa_abandoned_unlink(st, s);
        beam__gpa_slab_release(st, s);
    }
}

static BEAM__NOINLINE void abandoned_free(gpa_state *st, gpa_slab *s) {
    pthread_mutex_lock(&st->lock);
    /* Under the lock the slab is what it is: still ours, still abandoned
     * (its segment may have gone since the push). */
    if (beam__gpa_owner(s) == st &&
        atomic_load_explicit(&s->heap, memory_order_relaxed) == NULL &&
        s->where == WHERE_ABANDONED)
        reclaim_abandoned(st, s);
    pthread_mutex_unlock(&st->lock);
}

static BEAM__NOINLINE void remote_free(gpa_state *st, gpa_slab *s, void **b,
                                       size_t len) {
    atomic_fetch_add_explicit(&st->remote_frees, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&st->remote_bytes, (int64_t)len,
                              memory_order_relaxed);
    atomic_fetch_sub_explicit(&st->peak.published, (int64_t)len,
                              memory_order_relaxed);
    uintptr_t old = atomic_load_explicit(&s->thread_free, memory_order_relaxed);
    do {
        b[0] = (void *)(old & ~GPA_FULL_BIT);
    } while (!atomic_compare_exchange_weak_explicit(
        &s->thread_free, &old, (uintptr_t)b, memory_order_release,
        memory_order_relaxed));
    if (BEAM__UNLIKELY(old & GPA_FULL_BIT))
        remote_notify(st, s);
    if (BEAM__UNLIKELY(atomic_load_explicit(&s->heap, memory_order_relaxed) ==
                       NULL))
        abandoned_free(st, s);
}

/* The block b of slab s passed every check: give it back, to the owner's
 * list when this thread owns the slab, else to the slab's atomic stack. */
static inline void release_block(gpa_state *st, gpa_slab *s, void **b,
                                 size_t len) {
    b[1] = (void *)beam__gpa_tag(st, b);
    gpa_heap *owner = atomic_load_explicit(&s->heap, memory_order_relaxed);
    gpa_tls_slot *slot = &beam__gpa_tls[0];
    if (BEAM__LIKELY(slot->id == st->id && slot->heap == owner)) {
        b[0] = s->free;
        s->free = b;
        beam__count_free_fast(&owner->stats, len);
        /* A current slab that empties stays current (alloc/free of one
         * block must not cycle slabs); alloc_slow trims those now and then. */
        if (BEAM__UNLIKELY(
                (--s->used == 0 && s->where != WHERE_CUR) ||
                (atomic_load_explicit(&s->thread_free, memory_order_relaxed) &
                 GPA_FULL_BIT)))
            local_free_slow(owner, s);
        return;
    }
    remote_free(st, s, b, len);
}

/* The fast path: a small untracked block, checked (ours, this class, a block
 * boundary, not already free) and released. */
static void gpa_free(void *ctx, void *mem, size_t len, size_t alignment,
                     uintptr_t ret) {
    beam_gpa_t *gpa = (beam_gpa_t *)ctx;
    gpa_state *st = beam__gpa_state_of(gpa);
    gpa_slab *s = beam__gpa_map_slot(mem);
    void **b = (void **)mem;
    long idx;
    if (BEAM__LIKELY(len <= SMALL_DIRECT && alignment <= GPA_MIN_BLOCK &&
                     s != NULL && st != NULL && beam__gpa_owner(s) == st &&
                     s->cls == class_by_16[(len + 15) >> 4] && !st->safe &&
                     (idx = beam__gpa_block_index(s, mem)) >= 0 &&
                     (uintptr_t)b[1] != beam__gpa_tag(st, b))) {
        if (BEAM__UNLIKELY(s->info != NULL)) {
            /* Tracked: the length and alignment must be exactly those
             * recorded (else the slow path says what is wrong). */
            gpa_block_info *i = &s->info[idx];
            if (i->len != len || i->alignment != alignment)
                goto slow;
            i->len = 0;
        }
        release_block(st, s, b, len);
        return;
    }
slow:
    free_slow(gpa, mem, len, alignment, ret);
}

/* Everything the fast path did not settle: tracked blocks, large blocks and
 * misuse, told apart carefully. */
static void free_slow(beam_gpa_t *gpa, void *mem, size_t len, size_t alignment,
                      uintptr_t ret) {
    if (mem == NULL)
        return; /* the contract's no-op, also through the vtable */
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL) {
        beam__gpa_misuse_stateless(gpa->flags, mem, len, alignment, ret);
        return;
    }
    gpa_slab *s = beam__gpa_map_slot(mem);
    gpa_state *owner = beam__gpa_owner(s);
    if (owner == st) {
        void **b = (void **)mem;
        long idx = beam__gpa_block_index(s, mem);
        if (idx < 0 || s->where == WHERE_POOL) {
            beam__gpa_misuse(st,
                             "free of a pointer inside a block or into "
                             "unused memory",
                             mem, len, alignment, ret);
            return;
        }
        uintptr_t site = s->info != NULL ? s->info[idx].site : 0;
        if ((uintptr_t)b[1] == beam__gpa_tag(st, b) ||
            (s->info != NULL && s->info[idx].len == 0)) {
            beam__gpa_misuse_at(st, "double free", mem, len, alignment, ret,
                                site);
            return;
        }
        if (s->info != NULL ? (s->info[idx].len != len ||
                               s->info[idx].alignment != alignment)
                            : class_for(len, alignment) != s->cls)
            beam__gpa_misuse_at(st,
                                "free with a wrong length or alignment "
                                "(freed anyway)",
                                mem, len, alignment, ret, site);
        size_t real_len = len;
        if (s->info != NULL) {
            real_len = s->info[idx].len;
            s->info[idx].len = 0;
            if (st->safe)
                safe_on_free(st, s, b, real_len, alignment, ret, site);
        }
        release_block(st, s, b, real_len);
        return;
    }
    /* A slab of another instance may still hold one of our large blocks:
     * the other instance can be our backing. The table decides. */
    pthread_mutex_lock(&st->lock);
    gpa_large *e = beam__gpa_large_find(st, mem);
    if (e == NULL) {
        pthread_mutex_unlock(&st->lock);
        beam__gpa_misuse(st,
                         owner != NULL
                             ? "free of a block of another allocator instance"
                             : "free of a pointer this allocator does not own "
                               "(foreign, or already freed)",
                         mem, len, alignment, ret);
        return;
    }
    gpa_large copy = *e;
    beam__gpa_large_remove(st, e);
    beam__count_free(&st->large_counts, &st->peak, copy.len);
    gpa_heap *h = heap_if_any(st);
    bool kept = h != NULL && cache_put(h, &copy);
    if (!kept)
        st->backing_bytes -= copy.backing_len;
    pthread_mutex_unlock(&st->lock);
    if (copy.len != len || copy.alignment != alignment)
        beam__gpa_misuse(st,
                         "free with a wrong length or alignment (freed "
                         "anyway)",
                         mem, len, alignment, ret);
    if (!kept)
        st->backing.vtable->free(st->backing.ctx, copy.ptr, copy.backing_len,
                                 copy.alignment, ret);
}

static void local_free_slow(gpa_heap *h, gpa_slab *s) {
    beam__maybe_publish(&h->stats, &h->st->peak);
    uintptr_t expect = GPA_FULL_BIT;
    if (s->where == WHERE_FULL &&
        atomic_compare_exchange_strong_explicit(&s->thread_free, &expect, 0,
                                                memory_order_acq_rel,
                                                memory_order_relaxed))
        avail_push(h, s); /* else a remote push took the bit: it requeues */
    if (s->used == 0 && s->where == WHERE_AVAIL) {
        beam__gpa_collect(s);
        if (s->used != 0)
            return;
        avail_unlink(h, s);
        pthread_mutex_lock(&h->st->lock);
        beam__gpa_slab_release(h->st, s);
        pthread_mutex_unlock(&h->st->lock);
    }
}

/* We took FULL_BIT off with our push: requeue the slab with its owner. The
 * lock keeps the owner heap from being abandoned under us. */
static void remote_notify(gpa_state *st, gpa_slab *s) {
    pthread_mutex_lock(&st->lock);
    gpa_heap *h = atomic_load_explicit(&s->heap, memory_order_relaxed);
    /* Only a slab its owner still holds as full needs requeueing; one that
     * was adopted, abandoned or released meanwhile (its segment perhaps gone:
     * the owner check) is found another way. */
    if (beam__gpa_owner(s) == st && h != NULL && s->where == WHERE_FULL) {
        s->where = WHERE_NOTIFY;
        gpa_slab *head = atomic_load_explicit(&h->notify, memory_order_relaxed);
        do {
            s->notify_next = head;
        } while (!atomic_compare_exchange_weak_explicit(
            &h->notify, &head, s, memory_order_release, memory_order_relaxed));
    }
    pthread_mutex_unlock(&st->lock);
}

/* ---- resize, remap ------------------------------------------------------- */

static bool gpa_resize(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    beam_gpa_t *gpa = (beam_gpa_t *)ctx;
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL)
        return false;
    gpa_slab *s = beam__gpa_map_slot(mem);
    if (beam__gpa_owner(s) == st) {
        /* In place only within the class: free derives it from the length. */
        size_t pad = st->safe; /* room for the canary */
        if (beam__gpa_block_index(s, mem) < 0 ||
            class_for(len + pad, alignment) != s->cls ||
            class_for(new_len + pad, alignment) != s->cls)
            return false;
        if (s->info != NULL)
            s->info[beam__gpa_block_index(s, mem)].len = (uint32_t)new_len;
        if (st->safe && new_len < len)
            memset((char *)mem + new_len, CANARY, len - new_len);
        else if (st->safe)
            memset((char *)mem + len, FRESH_FILL, new_len - len);
        int64_t d = (int64_t)new_len - (int64_t)len;
        atomic_fetch_add_explicit(&st->remote_bytes, d, memory_order_relaxed);
        beam__peak_observe(&st->peak,
                           atomic_fetch_add_explicit(&st->peak.published, d,
                                                     memory_order_relaxed) +
                               d);
        return true;
    }
    pthread_mutex_lock(&st->lock);
    gpa_large *e = beam__gpa_large_find(st, mem);
    /* Within what the backing holds, in place costs nothing; beyond, ask
     * the backing. */
    bool ok = e != NULL && e->len == len &&
              (new_len <= e->backing_len ||
               st->backing.vtable->resize(st->backing.ctx, mem, e->backing_len,
                                          alignment, new_len, ret));
    if (ok) {
        if (new_len > e->backing_len) {
            st->backing_bytes += new_len - e->backing_len;
            e->backing_len = new_len;
        }
        e->len = new_len;
        beam__count_resize(&st->large_counts, &st->peak, len, new_len);
    }
    pthread_mutex_unlock(&st->lock);
    return ok;
}

static void *gpa_remap(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    if (gpa_resize(ctx, mem, len, alignment, new_len, ret))
        return mem;
    beam_gpa_t *gpa = (beam_gpa_t *)ctx;
    gpa_state *st = beam__gpa_state_of(gpa);
    /* Only a large block that stays large can move in the backing. */
    if (st == NULL || beam__gpa_owner(beam__gpa_map_slot(mem)) == st ||
        class_for(new_len, alignment) != GPA_CLASSES)
        return NULL;
    pthread_mutex_lock(&st->lock);
    gpa_large *e = beam__gpa_large_find(st, mem);
    void *p = NULL;
    /* Room for the moved entry first: once the backing has moved the block,
     * recording it must not fail. */
    if (e != NULL && e->len == len && beam__gpa_large_reserve(st)) {
        e = beam__gpa_large_find(st, mem); /* reserving may rehash */
        p = st->backing.vtable->remap(st->backing.ctx, mem, e->backing_len,
                                      alignment, new_len, ret);
    }
    if (p != NULL) {
        gpa_large moved = {p, new_len, alignment, e->site, new_len};
        st->backing_bytes += new_len - e->backing_len;
        beam__gpa_large_remove(st, e);
        beam__gpa_large_insert(st, &moved); /* reserved: cannot fail */
        beam__count_resize(&st->large_counts, &st->peak, len, new_len);
    }
    pthread_mutex_unlock(&st->lock);
    return p;
}

const beam_allocator_vtable beam__gpa_vtable = {gpa_alloc, gpa_resize,
                                                gpa_remap, gpa_free};

/* ---- public ------------------------------------------------------------- */

beam_gpa_t beam_general_purpose_allocator_instance = {
    {NULL, &beam__large_vtable}, 0, 0, NULL};

const beam_allocator_t beam_general_purpose_allocator = {
    &beam_general_purpose_allocator_instance, &beam__gpa_vtable};

void beam_gpa_init_ex(beam_gpa_t *gpa, beam_allocator_t backing,
                      unsigned flags) {
    gpa->backing = backing;
    gpa->flags = flags;
    gpa->beam__lock = 0;
    gpa->beam__state = NULL;
}

void beam_gpa_init(beam_gpa_t *gpa, beam_allocator_t backing) {
    beam_gpa_init_ex(gpa, backing, 0);
}

beam_allocator_t beam_gpa_allocator(beam_gpa_t *gpa) {
    beam_allocator_t a = {gpa, &beam__gpa_vtable};
    return a;
}

/* An empty slab of h goes back to the instance (lock held). */
static bool give_back_if_empty(gpa_heap *h, gpa_slab *s) {
    beam__gpa_collect(s);
    if (s->used != 0)
        return false;
    beam__gpa_slab_release(h->st, s);
    return true;
}

void beam_gpa_collect(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL)
        return;
    gpa_heap *h = heap_if_any(st);
    if (h != NULL)
        drain_notify(h);
    pthread_mutex_lock(&st->lock);
    if (h != NULL) {
        beam__gpa_cache_flush(st, h);
        beam__publish(&h->stats, &st->peak);
        for (unsigned c = 0; c < GPA_CLASSES; c++) {
            gpa_slab *s = h->cur[c];
            if (s != &beam__gpa_empty_slab && give_back_if_empty(h, s))
                h->cur[c] = &beam__gpa_empty_slab;
            for (s = h->avail[c]; s != NULL;) {
                gpa_slab *next = s->next;
                beam__gpa_collect(s);
                if (s->used == 0) {
                    avail_unlink(h, s);
                    beam__gpa_slab_release(st, s);
                }
                s = next;
            }
        }
    }
    for (unsigned c = 0; c < GPA_CLASSES; c++) {
        for (gpa_slab *s = st->abandoned[c]; s != NULL;) {
            gpa_slab *next = s->next;
            reclaim_abandoned(st, s);
            s = next;
        }
    }
    beam__gpa_segments_trim(st);
    pthread_mutex_unlock(&st->lock);
}

beam_gpa_usage beam_gpa_usage_of(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    beam_gpa_usage u;
    memset(&u, 0, sizeof u);
    if (st == NULL)
        return u;
    pthread_mutex_lock(&st->lock);
    u = beam__gpa_scan(st, 0);
    pthread_mutex_unlock(&st->lock);
    return u;
}

bool beam_gpa_detect_leaks(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL)
        return false;
    size_t report = (gpa->flags & BEAM_GPA_QUIET_LEAKS) ? 0 : 64;
    pthread_mutex_lock(&st->lock);
    beam_gpa_usage u = beam__gpa_scan(st, report);
    pthread_mutex_unlock(&st->lock);
    return u.live_blocks != 0;
}

bool beam_gpa_deinit(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL)
        return false;
    size_t report = (gpa->flags & BEAM_GPA_QUIET_LEAKS) ? 0 : 64;
    beam__gpa_registry_remove(st);
    pthread_mutex_lock(&st->lock);
    beam_gpa_usage u = beam__gpa_scan(st, report);
    for (gpa_heap *h = st->heaps; h != NULL; h = h->next)
        beam__gpa_cache_flush(st, h);
    for (size_t i = 0; i < st->large_cap; i++) {
        gpa_large *e = &st->large[i];
        if (e->ptr != NULL && e->ptr != GPA_TOMBSTONE)
            st->backing.vtable->free(st->backing.ctx, e->ptr, e->backing_len,
                                     e->alignment, 0);
    }
    if (st->large != NULL)
        st->backing.vtable->free(st->backing.ctx, st->large,
                                 st->large_cap * sizeof(gpa_large),
                                 BEAM_ALIGNOF(gpa_large), 0);
    beam__gpa_segments_free_all(st);
    beam__gpa_heaps_free_all(st);
    pthread_mutex_unlock(&st->lock);
    pthread_mutex_destroy(&st->lock);
    beam_allocator_t backing = st->backing;
    backing.vtable->free(backing.ctx, st, sizeof *st, BEAM_ALIGNOF(gpa_state),
                         0);
    __atomic_store_n(&gpa->beam__state, NULL, __ATOMIC_RELEASE);
    return u.live_blocks != 0;
}

bool beam__gpa_stats(void *ctx, beam_alloc_stats *out) {
    gpa_state *st = beam__gpa_state_of((beam_gpa_t *)ctx);
    if (st == NULL)
        return true; /* never used: all zero */
    pthread_mutex_lock(&st->lock);
    beam__stats_add(out, &st->retired);
    beam__stats_add(out, &st->large_counts);
    for (gpa_heap *h = st->heaps; h != NULL; h = h->next)
        beam__stats_add(out, &h->stats);
    pthread_mutex_unlock(&st->lock);
    uint64_t rf = atomic_load_explicit(&st->remote_frees, memory_order_relaxed);
    out->frees += rf;
    out->live_blocks -= (size_t)rf;
    out->live_bytes +=
        (size_t)atomic_load_explicit(&st->remote_bytes, memory_order_relaxed);
    beam__peak_observe(&st->peak, (int64_t)out->live_bytes);
    out->peak_bytes =
        (size_t)atomic_load_explicit(&st->peak.peak, memory_order_relaxed);
    return true;
}
