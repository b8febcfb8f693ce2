/*
 * The general purpose allocator: the vtable, the general paths and the
 * public functions (design, invariants and lock order: gpa_internal.h; the
 * fast paths, which core.c's helpers run too: gpa_fast.h).
 *
 * Allocation: class from length, heap from a thread-local slot, take a
 * block of the current slab (take_block; the fast path pops inline, both
 * account for it in gpa_hand_out). Free: slab from the address map, checks
 * (ours, this class, a block boundary, not already free), then onto the
 * slab's own list when this thread's heap owns it, else onto its heap's
 * stash or its atomic stack.
 */
#include "frames.h"
#include "gpa_fast.h"
#include "gpa_msize.h"
#include "os/barrier.h"

#include <stdio.h>
#include <string.h>

/* 16-byte steps to 128, then four classes per doubling (<= 20% waste;
 * 25% from 6 to 8 KiB). Above 4 KiB a slab holds only 8 to 16 blocks, so
 * the first two classes there are the largest sizes that fit 14 and 12
 * blocks (multiples of 16), and a 4 KiB page with a small header
 * (SQLite's page cache: 4096 + about 200 bytes) takes 4672 bytes, not
 * 5120. (6544, which fits 10, made a thread's few blocks of 8 B-8 KiB
 * need one more segment in most `mem` runs of `make bench`; 6144 did
 * not.) The waste bounds are for alignments up to 16: a larger one takes
 * the first class its size is a multiple of (4097-5120 B at 128-1024
 * takes 6144, where it took 5120). */
const uint32_t beam__gpa_class_size[GPA_CLASSES] = {
    16,   32,   48,   64,   80,   96,   112,  128,  160,  192,  224,
    256,  320,  384,  448,  512,  640,  768,  896,  1024, 1280, 1536,
    1792, 2048, 2560, 3072, 3584, 4096, 4672, 5456, 6144, 8192};

/* class_of(len) for len in 16-byte steps up to 8 KiB, by table: one load
 * (513 bytes; the lengths up to 1 KiB, most of them, use the first 65).
 * A constant, so that allocations made before any constructor ran (a C
 * constructor or C++ static initialiser of the user's) are classed right.
 * test_gpa_classes.c checks it against a plain search of the classes. */
const uint8_t beam__gpa_class_by_16[BEAM_GPA_SMALL_MAX / 16 + 1] = {
    0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  8,  9,  9,  10, 10, 11, 11, 12, 12,
    12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15, 16, 16, 16, 16, 16,
    16, 16, 16, 17, 17, 17, 17, 17, 17, 17, 17, 18, 18, 18, 18, 18, 18, 18, 18,
    19, 19, 19, 19, 19, 19, 19, 19, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20, 20, 20, 20, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21,
    21, 21, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 23,
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 24, 24, 24, 24,
    24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24,
    24, 24, 24, 24, 24, 24, 24, 24, 24, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25,
    25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25, 25,
    25, 25, 25, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26,
    26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 26, 27, 27, 27,
    27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27,
    27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29,
    29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29,
    29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29, 29,
    30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30,
    30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30,
    30, 30, 30, 30, 30, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31,
    31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31};

gpa_slab beam__gpa_empty_slab;

static inline unsigned class_of(size_t len) {
    GPA_ASSERT(len <= BEAM_GPA_SMALL_MAX);
    return beam__gpa_class_by_16[(len + 15) >> 4];
}

/* Blocks sit at multiples of their size from a 64 KiB boundary, so a class
 * serves every alignment that divides its size. */
unsigned beam__gpa_class_for(size_t len, size_t alignment) {
    if (BEAM__LIKELY(alignment <= GPA_MIN_BLOCK))
        return len <= BEAM_GPA_SMALL_MAX ? class_of(len) : GPA_CLASSES;
    if (len > BEAM_GPA_SMALL_MAX || alignment > BEAM_GPA_SMALL_MAX)
        return GPA_CLASSES;
    unsigned c = class_of(len < alignment ? alignment : len);
    while (c < GPA_CLASSES && (beam__gpa_class_size[c] & (alignment - 1)))
        c++;
    return c;
}

/* Safe mode (patterns and checks: gpa_internal.h), a block about to be handed
 * out: was it written while free? Then fill it and its canary. */
static BEAM__NOINLINE void safe_on_alloc(gpa_state *st, gpa_slab *s, void **b,
                                         size_t len, bool reused,
                                         uintptr_t ret) {
    unsigned char *p = (unsigned char *)b;
    gpa_block_info *i = &s->info[beam__gpa_block_index(s, b)];
    size_t bad =
        reused ? gpa_first_other(p, 2 * sizeof(void *), s->size, GPA_FREED_FILL)
               : s->size;
    if (bad != s->size)
        beam__gpa_reuse_dirty(st, s, b, bad, ret, i->site);
    memset(p, GPA_FRESH_FILL, len);
    memset(p + len, GPA_CANARY, s->size - len);
}

/* Safe mode, a tracked block being freed: check its canary, poison it. */
static void safe_on_free(gpa_state *st, gpa_slab *s, void **b, size_t len,
                         size_t alignment, uintptr_t ret, uintptr_t site) {
    unsigned char *p = (unsigned char *)b;
    size_t bad = gpa_first_other(p, len, s->size, GPA_CANARY);
    if (bad != s->size)
        beam__gpa_overrun(st, b, len, alignment, bad - len, ret, site);
    memset(p + 2 * sizeof(void *), GPA_FREED_FILL,
           s->size - 2 * sizeof(void *));
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

/* A tracked slab's free block b, at the head of its free list: its tag
 * and its link are intact. A write after free into a block's first 16
 * bytes (which safe mode's poison leaves to them) changes them, and the
 * link, followed, would make the next allocation take any address (found
 * by a C++ walkthrough: a segfault inside leak_check). The link must be
 * the end of the list or a free block of s. */
static bool free_link_ok(gpa_state *st, gpa_slab *s, void **b) {
    return gpa_tag_at(b) == beam__gpa_tag(st, b) &&
           (gpa_link(b) == NULL || gpa_link_ok(st, s, gpa_link(b)));
}

/* Reported, and the list dropped. A slab with no block out starts again
 * (its blocks are all free: none is in a stash or on its remote list,
 * which count as out). Otherwise the dropped blocks stay out of reach
 * until it empties: its requeue mark comes down to the blocks still out,
 * whose frees then bring it back once it is detached (a FULL slab's mark
 * above them would keep it FULL for good). */
static BEAM__NOINLINE void free_list_broken(gpa_state *st, gpa_slab *s,
                                            void **b, uintptr_t ret) {
    beam__gpa_link_broken(st, s, b,
                          "the first 16 bytes of a freed block changed; "
                          "found when the block was to be reused; the blocks "
                          "freed after it are not reused",
                          ret);
    s->free = NULL;
    if (s->used == 0)
        beam__atomic_store_plain_relaxed(&s->bump, s->base);
    else if (s->used < beam__atomic_load_plain_relaxed(&s->requeue))
        beam__atomic_store_plain_relaxed(&s->requeue, (uint16_t)s->used);
}

/* Hand out a block of s, which has one: its free list first, else bump;
 * NULL when a tracked slab's list was broken and nothing is left to bump.
 * The general path; the fast path pops inline with the same gpa_hand_out
 * (never from tracked slabs). Inline in its three callers: as a call, with
 * its five arguments kept across it, it took some 18 instructions of each
 * refill's 270 (callgrind, 100,000 live). */
static BEAM__ALWAYS_INLINE void *take_block(gpa_heap *h, gpa_slab *s,
                                            size_t len, size_t alignment,
                                            uintptr_t ret) {
    void **b = s->free;
    if (BEAM__UNLIKELY(s->info != NULL) && b != NULL &&
        !free_link_ok(h->st, s, b)) {
        free_list_broken(h->st, s, b, ret);
        b = NULL;
        if (s->bump >= s->end)
            return NULL; /* alloc_slow takes another slab */
    }
    bool reused = b != NULL;
    if (reused) {
        s->free = (void **)gpa_link(b);
    } else {
        b = (void **)s->bump;
        /* Scans read bump to tell handed-out blocks from the rest. */
        beam__atomic_store_plain_relaxed(&s->bump, s->bump + s->size);
    }
    gpa_hand_out(h, s, b, len);
    note_alloc(s, b, len, alignment, ret, reused);
    return b;
}

static inline bool has_room(const gpa_slab *s) {
    return s->free != NULL || s->bump < s->end;
}

/* A heap keeps its current slab of a class even when it empties, so that
 * alloc/free of one block does not take and give back a slab each time; but
 * only this many empty ones, so an idle thread does not sit on a slab of
 * every class it ever used. */
#define EMPTY_CUR_KEEP 4

/* s, which h gives up, to the instance (beam__gpa_slab_park, which takes
 * its owner off), under the lock; what it frees runs from defer. */
static void park_locked(gpa_heap *h, gpa_slab *s, gpa_defer **defer) {
    gpa_lock(h->st);
    beam__gpa_slab_park(h->st, s, defer);
    gpa_unlock(h->st);
}

static void trim_empty_cur(gpa_heap *h, unsigned keep) {
    unsigned empty = 0;
    gpa_defer *defer = NULL;
    for (unsigned c = 0; c < GPA_CLASSES; c++) {
        gpa_slab *t = h->cur[c];
        if (t == &beam__gpa_empty_slab || c == keep || t->used != 0)
            continue;
        beam__gpa_slab_collect_remote(t);
        if (t->used != 0 || empty++ < EMPTY_CUR_KEEP)
            continue;
        h->cur[c] = &beam__gpa_empty_slab;
        park_locked(h, t, &defer);
    }
    beam__gpa_defer_run(h->st, defer);
}

/* The owner gives up an exhausted current slab: false when a remote free
 * raced in (then the slab has room again and stays). */
static bool detach_full(gpa_heap *h, gpa_slab *s);

/* A class of h gone busy (GPA_CLASS_BUSY_FREES) retires its current
 * sub-slab: its next blocks come from whole slabs, which the inline free
 * finds without a lookup. A retired sub-slab is detached like a full one
 * and comes back (to be released) when every block in it is free. */
static void retire_sub(gpa_heap *h, gpa_slab *s, gpa_defer **defer) {
    beam__gpa_slab_collect_remote(s);
    while (s->used != 0) {
        /* (Pushers read the mark only once they see FULL, which
         * detach_full sets after this store, and they see it with
         * acquire (slab_push): the mark they read is this one.) */
        beam__atomic_store_plain_relaxed(&s->requeue, (uint16_t)s->used);
        if (detach_full(h, s))
            return;
    }
    park_locked(h, s, defer);
}

/* Class cls of h graduates: whole slabs from its next refill on (no more
 * sub-slab steps), until the heap is stripped. Owner, inside a bracket. */
static void graduate(gpa_heap *h, unsigned cls) {
    h->graduated = true;
    h->subs[cls] = GPA_SUB_STEPS;
    gpa_slab *t = h->cur[cls];
    if (t == &beam__gpa_empty_slab || !gpa_is_sub(t))
        return;
    gpa_defer *defer = NULL;
    h->cur[cls] = &beam__gpa_empty_slab;
    retire_sub(h, t, &defer);
    beam__gpa_defer_run(h->st, defer);
}
static bool detach_full(gpa_heap *h, gpa_slab *s) {
    /* Ownerless first: from the moment FULL is set, this thread's frees
     * into it must not take the local path. A whole untracked slab keeps
     * the mark of the heap that left it, whose next free into it takes it
     * back (kept_reattach); a sub-slab or a tracked slab does not. */
    bool mark = !gpa_is_sub(s) && s->info == NULL;
    beam__atomic_store_relaxed(&s->heap, mark ? gpa_left_by(h) : NULL);
    gpa_set_where(s, WHERE_FULL);
    uintptr_t expect = 0;
    if (beam__atomic_cas_acq_rel(&s->thread_free, &expect, GPA_FULL_BIT))
        return true;
    beam__atomic_store_relaxed(&s->heap, h);
    gpa_set_where(s, WHERE_CUR);
    beam__gpa_slab_collect_remote(s);
    return false;
}

/* ---- kept slabs (see "Kept slabs" in gpa_internal.h) ------------------ */

/* The oldest kept slab of cls becomes h's current one, or NULL. A kept
 * slab has room: it came back with a free, and only a current slab hands
 * out blocks. */
static gpa_slab *kept_take(gpa_heap *h, unsigned cls) {
    gpa_slab *s = h->kept[cls].tail;
    if (s == NULL)
        return NULL;
    gpa_kept_unlink(h, s);
    GPA_ASSERT(has_room(s));
    gpa_set_where(s, WHERE_CUR);
    beam__atomic_store_relaxed(&s->heap, h);
    return s;
}

/* h at GPA_KEPT_MAX: the oldest kept slab of some class goes back to the
 * instance if it is wholly free (every block it has out waits in
 * thread_free: other threads freed them), to make room; false when no
 * class's oldest is. The cap is per heap, so without this a class whose
 * kept slabs other threads emptied (a burst handed to them) held it all
 * for a busy heap (a shed comes only at a look or before a segment, a
 * collect later): every other class's frees took the stash
 * (1.4x slower churn, 100,000 blocks live) and up to 64 MiB stayed with
 * the idle class (found in review). A class's oldest kept slab is the one
 * other threads have had longest to empty. Not cls's own: its next refill
 * takes that one (so a class past the cap alone, over 64 MiB, pays no
 * look). Only at the cap: a load of each class's tail, and of a slab's
 * count for each other class that has one. */
static bool kept_make_room(gpa_heap *h, unsigned cls) {
    for (unsigned c = 0; c < GPA_CLASSES; c++) {
        gpa_slab *t = h->kept[c].tail;
        if (t == NULL || c == cls)
            continue;
        uintptr_t tf = beam__atomic_load_relaxed(&t->thread_free);
        if (tf == 0 || GPA_TF_COUNT(tf) != t->used)
            continue;
        gpa_kept_unlink(h, t);
        gpa_defer *defer = NULL;
        park_locked(h, t, &defer);
        beam__gpa_defer_run(h->st, defer);
        return true;
    }
    return false;
}

/* A class of h at GPA_KEPT_CLASS kept slabs may keep one more: only
 * while wholly free kept slabs can be taken from an idle heap (the barrier
 * is ready: beam__gpa_shed_kept, which makes it ready once h wants more),
 * and within GPA_KEPT_MAX in all. Without the barrier, 32 per class bound
 * what an idle heap keeps that other threads emptied. */
static bool kept_may_grow(gpa_heap *h, unsigned cls) {
    if (!beam__process_barrier_ready()) {
        h->kept_wants_more = true;
        return false;
    }
    return h->kept_n < GPA_KEPT_MAX || kept_make_room(h, cls);
}

/* A free by h's thread into a slab h left FULL: h takes it back (KEPT)
 * unless other threads' frees requeued it meanwhile, or another heap took
 * it: taking FULL off thread_free is the one way to own a detached slab,
 * so exactly one of them wins (a stale mark may win too, against a slab
 * FULL again since: as good an owner as any). Frees waiting there are
 * collected at once. */
static bool kept_reattach(gpa_heap *h, gpa_slab *s) {
    if (h->kept[s->cls].n >= GPA_KEPT_CLASS && !kept_may_grow(h, s->cls))
        return false;
    uintptr_t tf = beam__atomic_load_acquire(&s->thread_free);
    while (tf & GPA_FULL_BIT) {
        if (beam__atomic_cas_weak_acq_rel(&s->thread_free, &tf,
                                          tf & ~GPA_FULL_BIT)) {
            beam__atomic_store_relaxed(&s->heap, gpa_kept_by(h));
            gpa_set_where(s, WHERE_KEPT);
            gpa_kept_add(h, s);
            /* The frees waiting there are h's to count now: left counted
             * as used, they kept a slab whose last block h freed from
             * ever going back (it stayed KEPT, wholly free). */
            if (tf != GPA_FULL_BIT)
                beam__gpa_slab_collect_remote(s);
            return true;
        }
    }
    return false;
}

/* Owner, in a bracket: block b (tagged free) goes back to s, which h
 * keeps; an emptied kept slab goes back to the instance at once, so a
 * thread that frees what it made holds no empty slab for it. */
static void kept_free(gpa_heap *h, gpa_slab *s, void **b) {
    gpa_take_back(s, b);
    if (s->used != 0) {
        /* The rest may all be waiting in thread_free (other threads'
         * frees, or this heap's stash pushed after it took the slab
         * back): then this was its last live block too. */
        uintptr_t tf = beam__atomic_load_relaxed(&s->thread_free);
        if (tf == 0 || GPA_TF_COUNT(tf) != s->used)
            return;
        beam__gpa_slab_collect_remote(s);
        if (s->used != 0)
            return;
    }
    gpa_kept_unlink(h, s);
    gpa_defer *defer = NULL;
    park_locked(h, s, &defer);
    beam__gpa_defer_run(h->st, defer);
}

/* A block from a refill: this heap's chance to feed the shared peak. */
static void *refilled(gpa_heap *h, void *b) {
    beam__publish(&h->stats, &h->st->peak);
    return b;
}

/* Slabs a refill tries when tracked slabs' free lists turn out broken
 * (take_block): each is reported, detached and passed over. */
#define GPA_REFILL_ROUNDS 8

/* The current slab of cls has nothing left (owner, h busy). */
static BEAM__NOINLINE void *alloc_slow(gpa_heap *h, unsigned cls, size_t len,
                                       size_t alignment, uintptr_t ret) {
    /* What this thread freed elsewhere goes home first: some of it may
     * make a slab worth adopting. */
    if (h->stash_n != 0)
        beam__gpa_stash_flush(h->st, h);
    /* Every so many refills, give back empty current slabs of other
     * classes beyond the few a heap keeps. */
    if ((++h->refills & 15) == 0)
        trim_empty_cur(h, cls);
    /* Every so many more, kept slabs other threads emptied go back when
     * slab_push noted some: this heap's, and now and then quiet heaps'
     * (beam__gpa_shed_look). */
    if (BEAM__UNLIKELY((h->refills & (GPA_SHED_REFILLS - 1)) == 0))
        beam__gpa_shed_look(h);
    for (unsigned round = 0; round < GPA_REFILL_ROUNDS; round++) {
        gpa_slab *s = h->cur[cls];
        if (s != &beam__gpa_empty_slab) {
            beam__gpa_slab_collect_remote(s);
            if (has_room(s) || !detach_full(h, s)) {
                void *b = take_block(h, s, len, alignment, ret);
                if (b != NULL)
                    return refilled(h, b);
                continue; /* broken and spent: detached next round */
            }
            h->cur[cls] = &beam__gpa_empty_slab;
        }
        s = kept_take(h, cls);
        if (s == NULL)
            s = beam__gpa_slab_acquire(h, cls);
        if (s == NULL)
            break;
        h->cur[cls] = s;
        void *b = take_block(h, s, len, alignment, ret);
        if (b != NULL)
            return refilled(h, b);
    }
    beam__atomic_bump(&h->stats.failed, 1);
    return NULL;
}

/* An allocation that got no state or heap: NULL, reported first when gpa
 * is deinited (beam__deinited: no state can be made again until its init,
 * and the caller learns why; before, a new state was made silently, which
 * nothing would ever give back). */
static BEAM__NOINLINE void *no_state_answer(beam_gpa_t *gpa, size_t len,
                                            uintptr_t ret) {
    if (!beam__is_deinited(gpa->backing, gpa)) {
        /* A failure with no state to count it in (the backing refused
         * even the state: a failing allocator at index 0, an exhausted
         * parent): counted in the instance itself, else its stats said
         * failed 0 while every allocation answered NULL (bug hunt). */
        if (beam__gpa_state_of(gpa) == NULL)
            beam__atomic_add_plain_relaxed(&gpa->internal_failed, 1);
        return NULL;
    }
    beam__report_misuse(BEAM__KIND_AFTER_DEINIT, ret,
                        "beam_alloc: allocation of %zu bytes through a general "
                        "purpose allocator after beam_gpa_deinit: refused",
                        len);
    return NULL;
}

/* Every allocation the fast path below does not settle. */
BEAM__NOINLINE void *beam__gpa_alloc_general(beam_gpa_t *gpa, size_t len,
                                             size_t alignment, uintptr_t ret) {
    /* Safe mode keeps at least one byte after each block for a canary. */
    unsigned cls = beam__gpa_class_for(
        len + ((gpa->flags & BEAM_GPA_SAFE) != 0), alignment);
    if (cls == GPA_CLASSES) {
        gpa_state *st = beam__gpa_state_slow(gpa);
        if (st == NULL)
            return no_state_answer(gpa, len, ret);
        if (!st->track && len <= GPA_MEDIUM_MAX && alignment <= GPA_PAGE_SIZE)
            return beam__gpa_medium_alloc(st, len);
        return beam__gpa_large_alloc(st, len, alignment, ret);
    }
    gpa_state *st = beam__gpa_state_of(gpa);
    gpa_tls_slot *slot = gpa_fast_slot();
    gpa_heap *h = st != NULL && slot->id == st->id ? slot->heap
                                                   : beam__gpa_heap_slow(gpa);
    if (h == NULL) {
        st = beam__gpa_state_of(gpa);
        if (st != NULL)
            beam__atomic_add_relaxed(&st->large_counts.failed, 1);
        return no_state_answer(gpa, len, ret);
    }
    uint32_t busy = gpa_heap_enter(h);
    if (BEAM__UNLIKELY(gpa_heap_revoked(h)))
        beam__gpa_heap_wait_revoked(h, busy);
    gpa_slab *s = h->cur[cls];
    void *b = has_room(s) ? take_block(h, s, len, alignment, ret) : NULL;
    if (b == NULL)
        b = alloc_slow(h, cls, len, alignment, ret);
    gpa_heap_leave(h, busy);
    return b;
}

/* The vtable's entry: the fast path, else the medium or the general one
 * (beam__gpa_alloc_any, gpa_fast.h, which beam_malloc shares). */
static void *gpa_alloc(void *ctx, size_t len, size_t alignment, uintptr_t ret) {
    return beam__gpa_alloc_any((beam_gpa_t *)ctx, len, alignment, ret);
}

/* ---- free --------------------------------------------------------------- */

/* For a push onto s: the bytes of s's blocks when s is kept by a heap, else
 * SIZE_MAX; a push that leaves half of them or more waiting in thread_free
 * (kept_emptied) may leave s wholly free, or near, which its heap, idle,
 * would not see (see "Kept slabs"). Only the owner knows how many blocks
 * it has out, so every such push notes it, until a refill sheds: the one
 * that empties s is noted too. (Slabs below half are left to the shed
 * before a segment, or to their heap.) Read before the push, while the
 * block pushed keeps s as it is: once pushed, it may be s's last, and s
 * go back and be formatted again, a sub-slab's record freed with its chunk
 * (found in review: read after, under TSan a race with the release). */
static inline size_t kept_span(const gpa_slab *s) {
    uintptr_t o = (uintptr_t)beam__atomic_load_relaxed(&s->heap);
    return (o & GPA_HEAP_KEPT) != 0 ? (size_t)(s->end - s->base) : SIZE_MAX;
}

static inline bool kept_emptied(size_t span, uint32_t size, uintptr_t next) {
    return (size_t)GPA_TF_COUNT(next) * size * 2 >= span;
}

/* GPA_SHED_MORE too becomes GPA_SHED_PUSHED: the next look's shed starts
 * a new round, in which the heaps the last one took count again. */
static BEAM__NOINLINE void kept_emptied_note(gpa_state *st) {
    if (beam__atomic_load_relaxed(&st->shed_wanted) != GPA_SHED_PUSHED)
        beam__atomic_store_relaxed(&st->shed_wanted, GPA_SHED_PUSHED);
}

/* Push b on s's thread_free stack (any thread; s is not this thread's
 * current slab). The push that brings a detached slab's waiting frees to its
 * requeue mark takes FULL off and hands the slab to the instance, which
 * gives it back to the pool once it is empty. */
static BEAM__NOINLINE void slab_push(gpa_state *st, gpa_slab *s, void **b) {
    /* Acquire, here and when the exchange below fails: the requeue mark
     * read against a FULL bit must be the one written before that bit was
     * set (on a weakly ordered processor a relaxed read could see an older
     * mark, higher than the live blocks of a retired sub-slab, and the
     * slab's last free would leave it FULL for good; found in review). */
    uintptr_t old = beam__atomic_load_acquire(&s->thread_free);
    uintptr_t next;
    size_t span = kept_span(s);
    uint32_t size = s->size;
    do {
        gpa_set_link(b, GPA_TF_PTR(old));
        next = (uintptr_t)b + ((old >> GPA_TF_COUNT_SHIFT) + 1) * GPA_TF_ONE;
        if ((old & GPA_FULL_BIT) &&
            GPA_TF_COUNT(next) < beam__atomic_load_plain_relaxed(&s->requeue))
            next |= GPA_FULL_BIT;
    } while (!beam__atomic_cas_weak_acq_rel(&s->thread_free, &old, next));
    /* (Acquire too: the push that takes FULL off goes on to write the slab's
     * reclaim link, after the writes of whoever detached it.) */
    if (BEAM__UNLIKELY((old & GPA_FULL_BIT) && !(next & GPA_FULL_BIT)))
        beam__gpa_reclaim_push(st, s);
    else if (BEAM__UNLIKELY(kept_emptied(span, size, next)))
        kept_emptied_note(st);
}

void beam__gpa_stash_flush(gpa_state *st, gpa_heap *h) {
    void **b = h->stash;
    h->stash = NULL;
    h->stash_n = 0;
    while (b != NULL) {
        void **next = (void **)gpa_link(b);
        if (BEAM__UNLIKELY(st->track) && next != NULL &&
            !gpa_any_link_ok(st, next, true)) {
            /* The rest of the stash is not pushed (its blocks, freed,
             * stay out of reach until their instance goes). */
            beam__gpa_link_broken(st, beam__gpa_slab_of(b), b,
                                  "the first word of a freed block changed; "
                                  "found when it was given back to its slab; "
                                  "the blocks freed before it are not reused",
                                  0);
            next = NULL;
        }
        slab_push(st, beam__gpa_slab_of(b), b);
        b = next;
    }
}

/* A free by a thread with no heap of st that did not make one (no empty
 * slot, fewer than GPA_FREE_STREAK frees in a row, no memory): counted in
 * the shared counters. */
static void free_remote(gpa_state *st, gpa_slab *s, void **b, size_t len) {
    beam__atomic_add_relaxed(&st->remote_frees, 1);
    beam__atomic_sub_relaxed(&st->remote_bytes, (int64_t)len);
    beam__atomic_sub_relaxed(&st->peak.published, (int64_t)len);
    slab_push(st, s, b);
}

/* A free by a thread whose first slot is another instance's, or empty:
 * through its heap of st in a later slot, else a heap made for it. A
 * thread that only frees (a consumer of another thread's blocks) then
 * counts in its own heap, where each free took three shared atomic
 * additions besides its push (cross-thread benchmark: README). */
BEAM__NOINLINE void beam__gpa_free_unslotted(gpa_state *st, gpa_slab *s,
                                             void **b, size_t len) {
    gpa_heap *h = beam__gpa_heap_for_free(st);
    if (h == NULL)
        free_remote(st, s, b, len);
    else
        gpa_release_by(st, s, b, len, h);
}

/* A free into a slab this thread's heap h does not own: onto h's stash
 * (see "The stash" in gpa_internal.h), or, while a collector has h, an
 * atomic push at once. Counted in h either way (stats are summed over heaps
 * and a heap's counters are written by its thread alone; a collector never
 * touches them), which spares the shared counters' atomics. Out of line, so
 * that the local free stays free of calls. */
BEAM__NOINLINE void beam__gpa_free_elsewhere(gpa_state *st, gpa_slab *s,
                                             void **b, size_t len,
                                             gpa_heap *h) {
    /* Counted first: once pushed, the block may be collected and handed
     * out again by another thread, whose rise must not find this fall
     * still unpublished (the peak would then read high). */
    beam__count_free(&h->stats, &st->peak, len);
    if (BEAM__UNLIKELY(h->refills == 0)) {
        /* A heap that never allocated (a thread that only frees:
         * beam__gpa_heap_for_free) neither stashes nor keeps slabs: no
         * refill of its own would ever flush the stash or allocate from
         * them, nor, without the process barrier, a collection. (A new
         * heap often has the address of one retired, whose marks its
         * former slabs still bear: kept_reattach would take them.) Its
         * frees reach their slabs at once, counted in the heap, not in the
         * shared counters. */
        slab_push(st, s, b);
        return;
    }
    uint32_t busy = gpa_heap_enter(h);
    if (BEAM__LIKELY(!gpa_heap_revoked(h))) {
        /* (One load tells both states. Only h's thread, or a collector
         * holding h, sets and clears kept_by(h); left_by(h) may be stale,
         * which kept_reattach's compare-and-swap settles.) */
        gpa_heap *o = beam__atomic_load_relaxed(&s->heap);
        if (o == gpa_kept_by(h) ||
            (o == gpa_left_by(h) && kept_reattach(h, s))) {
            kept_free(h, s, b);
            gpa_heap_leave(h, busy);
            return;
        }
        gpa_set_link(b, h->stash);
        h->stash = b;
        if (++h->stash_n >= GPA_STASH_MAX)
            beam__gpa_stash_flush(st, h);
        gpa_heap_leave(h, busy);
    } else {
        gpa_heap_leave(h, busy);
        slab_push(st, s, b);
    }
}

/* This thread freed a block of class cls into a sub-slab: counted in its
 * heap of st, whose class graduates when the count reaches
 * GPA_CLASS_BUSY_FREES. A refill would not notice a busy class whose
 * allocations never miss (a block allocated and freed over and over in one
 * sub-slab); counting frees sees it, and leaves classes seldom freed in
 * sub-slabs, where a few blocks take a few pages, not a slab. */
static void sub_freed(gpa_state *st, unsigned cls) {
    gpa_tls_slot *slot = gpa_fast_slot();
    if (slot->id != st->id)
        return;
    gpa_heap *h = slot->heap;
    uint32_t busy = gpa_heap_enter(h);
    if (!gpa_heap_revoked(h) && !gpa_class_graduated(h, cls) &&
        ++h->sub_frees[cls] == GPA_CLASS_BUSY_FREES)
        graduate(h, cls);
    gpa_heap_leave(h, busy);
}

/* Block b of slab s passed every check: released, and counted towards
 * its class's graduation when s is a sub-slab (its class read first: once
 * released, the sub-slab may go and be carved again). */
static void release_counted(gpa_state *st, gpa_slab *s, void **b, size_t len) {
    bool sub = gpa_is_sub(s);
    unsigned cls = s->cls;
    beam__gpa_release(st, s, b, len);
    if (sub)
        sub_freed(st, cls);
}

/* A free into a chunk cut into sub-slabs (the inline free saw its map
 * entry): the sub-slab the page table names gets every check of the
 * inline free; anything they do not pass goes to the general path, which
 * reports it. (The lookup is made again: the chunk may have changed
 * since. st is tested: a released sub-slab's fields may still be read by
 * a free racing its chunk's reuse, and a NULL st must not pass for its
 * owner.) */
BEAM__NOINLINE void beam__gpa_free_in_chunk(beam_gpa_t *gpa,
                                            const beam_allocator_vtable *vt,
                                            void *mem, size_t len,
                                            size_t alignment, uintptr_t ret) {
    (void)vt;
    gpa_state *st = beam__gpa_state_of(gpa);
    gpa_slab *s = beam__gpa_slab_of(mem);
    if (st != NULL && s != NULL && gpa_fast_free_ok(st, s, mem, len)) {
        release_counted(st, s, (void **)mem, len);
        return;
    }
    beam__gpa_free_general(gpa, mem, len, alignment, ret);
}

/* The vtable's entry: the fast path (gpa_fast.h), else the general one. */
static void gpa_free(void *ctx, void *mem, size_t len, size_t alignment,
                     uintptr_t ret) {
    if (BEAM__LIKELY(
            beam__gpa_free_fast((beam_gpa_t *)ctx, mem, len, alignment, ret)))
        return;
    beam__gpa_free_general((beam_gpa_t *)ctx, mem, len, alignment, ret);
}

/* The slab of p if it is one of st's, else NULL. The map is read
 * without the lock, a field at a time (where, and a chunk's page, before
 * the owner), and the entry of a chunk a segment's slack shares changes
 * while the blocks of its neighbours' pages live (st's own large blocks
 * among them): claimed or unmapped meanwhile, such a block read as in a
 * page of st's with no block at it, and its free was refused and the
 * block leaked (a stress test: GPA over GPA, a collector below). Such a
 * look, and only such (where one of st's slabs has a block, p is st's),
 * is made again under the lock, which st's entries change under. */
gpa_slab *beam__gpa_slab_mine(gpa_state *st, const void *p) {
    gpa_slab *s = beam__gpa_slab_of(p);
    if (beam__gpa_owner(s) != st)
        return NULL;
    if (gpa_where(s) == WHERE_MEDIUM ||
        gpa_small_at_block(s, beam__gpa_block_index(s, p)))
        return s;
    gpa_lock(st);
    s = beam__gpa_slab_of(p);
    if (beam__gpa_owner(s) != st)
        s = NULL;
    gpa_unlock(st);
    return s;
}

/* A block the process-wide instance does not hold, freed through it: in
 * a NIF library, another copy of the module's library may hold it, left
 * by an upgrade (beam__nif_free_in_other_copy), and frees it then. Any
 * other instance's foreign block is a misuse. */
static bool freed_by_other_copy(beam_gpa_t *gpa, void *mem, size_t len,
                                size_t alignment, uintptr_t ret) {
    return gpa == &beam_general_purpose_allocator_instance &&
           beam__nif_free_in_other_copy(mem, len, alignment, ret);
}

/* Everything the fast path did not settle: tracked blocks, large blocks and
 * misuse, told apart carefully. */
BEAM__NOINLINE void beam__gpa_free_general(beam_gpa_t *gpa, void *mem,
                                           size_t len, size_t alignment,
                                           uintptr_t ret) {
    if (mem == NULL)
        return; /* the contract's no-op, also through the vtable */
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL) {
        if (!freed_by_other_copy(gpa, mem, len, alignment, ret))
            beam__gpa_misuse_stateless(gpa->flags, "free", mem, len, alignment,
                                       ret);
        return;
    }
    gpa_slab *s = beam__gpa_slab_mine(st, mem);
    if (s != NULL && gpa_where(s) == WHERE_MEDIUM) {
        beam__gpa_medium_free(st, s, mem, len, alignment, ret);
        return;
    }
    if (s != NULL) {
        void **b = (void **)mem;
        long idx = beam__gpa_block_index(s, mem);
        if (!gpa_small_at_block(s, idx)) {
            /* A slab back in the pool holds no block: most likely it held
             * the block, which was freed, and then the slab emptied. */
            beam__gpa_misuse(st,
                             gpa_where(s) == WHERE_POOL
                                 ? "double free, or a free of a pointer "
                                   "into unused memory (its slab holds no "
                                   "block)"
                                 : "free of a pointer inside a block or "
                                   "into unused memory",
                             mem, len, alignment, ret);
            return;
        }
        uintptr_t site = s->info != NULL ? s->info[idx].site : 0;
        if (gpa_small_freed(st, s, b, idx, true)) {
            beam__gpa_misuse_at(st, "double free", mem, len, alignment, ret,
                                site);
            return;
        }
        if (s->info == NULL && len > BEAM_GPA_SMALL_MAX) {
            /* No block of that length lives in a class slab: most likely
             * the second free of a medium or large block whose memory has
             * since become this slab. Freeing would free another block. */
            beam__gpa_misuse_at(st,
                                "double free, or a free with a wrong length "
                                "(one no size class serves: not freed)",
                                mem, len, alignment, ret, site);
            return;
        }
        size_t real_len = len;
        if (s->info != NULL ? (s->info[idx].len != len ||
                               s->info[idx].alignment != alignment)
                            : beam__gpa_class_for(len, alignment) != s->cls) {
            beam__gpa_misuse_at(st,
                                "free with a wrong length or alignment "
                                "(freed anyway)",
                                mem, len, alignment, ret, site);
            /* Untracked, counted as the least a block of its class can
             * have been asked for, which no sized allocation of it
             * exceeds: counted with the wrong length, live bytes went
             * below zero for good (found by a walkthrough). */
            if (len - s->prev_size - 1 >= (size_t)(s->size - s->prev_size))
                real_len = (size_t)s->prev_size + 1;
        }
        if (s->info != NULL) {
            real_len = s->info[idx].len;
            s->info[idx].len = 0;
            if (st->safe)
                safe_on_free(st, s, b, real_len, alignment, ret, site);
        }
        /* (A sub-slab's free counts here too: tracked, safe, or an
         * alignment the inline free refuses.) */
        release_counted(st, s, b, real_len);
        return;
    }
    /* A slab of another instance may still hold one of our large blocks:
     * the other instance can be our backing. The table decides. */
    uintptr_t site = 0;
    gpa_large_freed r =
        beam__gpa_large_free(st, mem, len, alignment, ret, &site);
    if (r == GPA_LARGE_TWICE)
        beam__gpa_misuse_at(st, "double free", mem, len, alignment, ret, site);
    else if (r == GPA_LARGE_NOT_OURS &&
             !freed_by_other_copy(gpa, mem, len, alignment, ret))
        beam__gpa_misuse(st,
                         beam__gpa_owner(beam__gpa_slab_of(mem)) != NULL
                             ? "free of a block of another allocator instance"
                             : "free of a pointer this allocator does not own "
                               "(foreign, or already freed)",
                         mem, len, alignment, ret);
}

/* ---- resize, remap ------------------------------------------------------- */

/* The remap's words are beam__gpa_realloc_ok's, for the same refusal. */
static const gpa_resize_words resize_said = {
    "resize",
    "resize of a pointer that is not a live block (freed, foreign, or "
    "inside a block): not resized",
    "resize with a wrong length or alignment: not resized"};
static const gpa_resize_words remap_said = {
    "remap or realloc", GPA_SAID_MOVE_NOT_LIVE, GPA_SAID_MOVE_WRONG_LENGTH};

/* A block the process-wide instance does not hold, resized or moved
 * through it: another copy of the module's library may hold it, as for a
 * free (freed_by_other_copy), and checks the call in said's words (its
 * misuse is this call's). Not in place then: a realloc moves the block
 * into this copy, whose free of it goes to that copy. Before, such a
 * resize was reported as a pointer not live and a realloc failed, where
 * a free worked: a NIF that grows a buffer kept in a taken-over resource
 * failed after the upgrade. */
static bool held_by_other_copy(beam_gpa_t *gpa, void *mem, size_t len,
                               size_t alignment, uintptr_t ret,
                               const gpa_resize_words *said) {
    return gpa == &beam_general_purpose_allocator_instance &&
           beam__nif_resize_in_other_copy(mem, len, alignment,
                                          said == &remap_said, ret);
}

/* The large blocks' resize, or another copy's check (*elsewhere) of a
 * block none of st's is; neither: reported. (No lock held here: the
 * other copy's check takes its own.) */
static bool large_resize(beam_gpa_t *gpa, gpa_state *st, void *mem, size_t len,
                         size_t alignment, size_t new_len, uintptr_t ret,
                         const gpa_resize_words *said, bool *elsewhere) {
    bool not_ours = false;
    if (beam__gpa_large_resize(st, mem, len, alignment, new_len, ret, said,
                               &not_ours))
        return true;
    if (!not_ours)
        return false;
    *elsewhere = held_by_other_copy(gpa, mem, len, alignment, ret, said);
    if (!*elsewhere)
        beam__gpa_misuse(st, said->not_live, mem, len, alignment, ret);
    return false;
}

/* *elsewhere: mem is another copy's block (held_by_other_copy). */
static bool resize_impl(void *ctx, void *mem, size_t len, size_t alignment,
                        size_t new_len, uintptr_t ret,
                        const gpa_resize_words *said, bool *elsewhere) {
    beam_gpa_t *gpa = (beam_gpa_t *)ctx;
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL) {
        /* No block lives in an instance without state. */
        *elsewhere = held_by_other_copy(gpa, mem, len, alignment, ret, said);
        if (!*elsewhere)
            beam__gpa_misuse_stateless(gpa->flags, said->call, mem, len,
                                       alignment, ret);
        return false;
    }
    gpa_slab *s = beam__gpa_slab_mine(st, mem);
    if (s == NULL)
        return large_resize(gpa, st, mem, len, alignment, new_len, ret, said,
                            elsewhere);
    if (gpa_where(s) == WHERE_MEDIUM)
        return beam__gpa_medium_resize(st, s, mem, len, alignment, new_len, ret,
                                       said);
    long idx = beam__gpa_block_index(s, mem);
    if (!gpa_small_live(st, s, mem, idx, true)) {
        beam__gpa_misuse(st, said->not_live, mem, len, alignment, ret);
        return false;
    }
    /* Tracked: the exact length is known, and a wrong one would overwrite
     * the record (and the canary's place) with it. */
    if (s->info != NULL &&
        (s->info[idx].len != len || s->info[idx].alignment != alignment)) {
        beam__gpa_misuse_at(st, said->wrong_length, mem, len, alignment, ret,
                            s->info[idx].site);
        return false;
    }
    /* Untracked, the class stands for the length: len of another class is
     * not this block's (its free would say so too). */
    size_t pad = st->safe; /* room for the canary */
    if (beam__gpa_class_for(len + pad, alignment) != s->cls) {
        beam__gpa_misuse(st, said->wrong_length, mem, len, alignment, ret);
        return false;
    }
    /* In place only within the class: free derives it from the length. */
    if (beam__gpa_class_for(new_len + pad, alignment) != s->cls)
        return false;
    if (s->info != NULL)
        s->info[idx].len = (uint32_t)new_len;
    if (st->safe && new_len < len)
        memset((char *)mem + new_len, GPA_CANARY, len - new_len);
    else if (st->safe)
        memset((char *)mem + len, GPA_FRESH_FILL, new_len - len);
    int64_t d = (int64_t)new_len - (int64_t)len;
    beam__atomic_add_relaxed(&st->remote_bytes, d);
    beam__peak_add(&st->peak, d);
    return true;
}

static bool gpa_resize(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    if (new_len == 0)
        return false; /* a direct vtable caller's (the contract: > 0) */
    bool elsewhere = false;
    return resize_impl(ctx, mem, len, alignment, new_len, ret, &resize_said,
                       &elsewhere);
}

static void *gpa_remap(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    if (new_len == 0)
        return NULL; /* a direct vtable caller's (the contract: > 0) */
    unsigned long misuse = beam__misuse.count;
    bool elsewhere = false;
    if (resize_impl(ctx, mem, len, alignment, new_len, ret, &remap_said,
                    &elsewhere))
        return mem;
    /* Not in place: the caller may go on to copy len bytes out of mem (a
     * realloc, core.c, or a failing or resource allocator's over this
     * one). They must be a live block's, or the misuse is reported, once
     * (the resize may have said it already), and the answer is NULL.
     * Another copy's block that copy checked: NULL too, and unless it
     * found a misuse, a realloc moves it into this copy. */
    if (elsewhere || beam__misuse.count != misuse ||
        !beam__gpa_realloc_ok(ctx, mem, len, alignment, ret))
        return NULL;
    beam_gpa_t *gpa = (beam_gpa_t *)ctx;
    gpa_state *st = beam__gpa_state_of(gpa);
    /* Only a large block that stays large can move in the backing. */
    if (st == NULL || beam__gpa_slab_mine(st, mem) != NULL ||
        beam__gpa_class_for(new_len, alignment) != GPA_CLASSES)
        return NULL;
    return beam__gpa_large_remap(st, mem, len, alignment, new_len, ret);
}

const beam_allocator_vtable beam__gpa_vtable = {gpa_alloc, gpa_resize,
                                                gpa_remap, gpa_free};

/* ---- public ------------------------------------------------------------- */

beam_gpa_t beam_general_purpose_allocator_instance = {
    {NULL, &beam__large_vtable}, 0, NULL, 0};

const beam_allocator_t beam_general_purpose_allocator = {
    &beam_general_purpose_allocator_instance, &beam__gpa_vtable};

/* The flags beam_gpa_init_ex knows: enum beam_gpa_flags and
 * BEAM_GPA_FRAMES' field. */
#define KNOWN_FLAGS                                                            \
    (BEAM_GPA_TRACK_SITES | BEAM_GPA_QUIET_LEAKS | BEAM_GPA_SAFE |             \
     (BEAM__GPA_FRAMES_MASK << BEAM__GPA_FRAMES_SHIFT))

/* Bits it does not know (a typo, another enum's value) are said and
 * dropped: kept without a word, a caller who meant an option got none. */
static unsigned known_flags(unsigned flags, const beam_gpa_t *gpa) {
    if (BEAM__UNLIKELY((flags & ~KNOWN_FLAGS) != 0))
        beam__report("beam_alloc: beam_gpa_init_ex: unknown flags 0x%x "
                     "ignored for the instance at %p (known: "
                     "BEAM_GPA_TRACK_SITES, BEAM_GPA_QUIET_LEAKS, "
                     "BEAM_GPA_SAFE, BEAM_GPA_FRAMES(n))",
                     flags & ~KNOWN_FLAGS, (const void *)gpa);
    return flags & KNOWN_FLAGS;
}

void beam_gpa_init_ex(beam_gpa_t *gpa, beam_allocator_t backing,
                      unsigned flags) {
    if (beam__null_instance(gpa, "beam_gpa_init", BEAM__RET_ADDR()))
        return;
    flags = known_flags(flags, gpa);
    gpa->backing =
        beam__parent_not_self(backing, gpa, &beam__gpa_vtable, "beam_gpa_init",
                              "instance", "backing allocator");
    gpa->flags = flags;
    gpa->internal_state = NULL;
    gpa->internal_failed = 0;
}

void beam_gpa_init(beam_gpa_t *gpa, beam_allocator_t backing) {
    if (beam__null_instance(gpa, "beam_gpa_init", BEAM__RET_ADDR()))
        return;
    beam_gpa_init_ex(gpa, backing, 0);
}

beam_allocator_t beam_gpa_allocator(beam_gpa_t *gpa) {
    if (beam__null_instance(gpa, "beam_gpa_allocator", BEAM__RET_ADDR()))
        return BEAM__REFUSING_ALLOCATOR;
    beam_allocator_t a = {gpa, &beam__gpa_vtable};
    return a;
}

void beam_gpa_collect(beam_gpa_t *gpa) {
    if (beam__null_instance(gpa, "beam_gpa_collect", BEAM__RET_ADDR()))
        return;
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st != NULL)
        beam__gpa_collect_all(st);
}

bool beam__gpa_prepare(beam_gpa_t *gpa) {
    return beam__gpa_state_slow(gpa) != NULL;
}

beam_gpa_usage beam_gpa_usage_of(beam_gpa_t *gpa) {
    beam_gpa_usage u;
    memset(&u, 0, sizeof u);
    if (beam__null_instance(gpa, "beam_gpa_usage_of", BEAM__RET_ADDR()))
        return u;
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL)
        return u;
    size_t n = 0;
    gpa_lock(st);
    u = beam__gpa_scan(st, NULL, 0, &n);
    gpa_unlock(st);
    return u;
}

/* How many leaks a report lists (the rest are counted). */
#define LEAKS_LISTED 64

static bool scan_and_report(gpa_state *st, bool quiet) {
    gpa_leak leaks[LEAKS_LISTED];
    size_t n = 0;
    gpa_lock(st);
    beam_gpa_usage u = beam__gpa_scan(st, leaks, quiet ? 0 : LEAKS_LISTED, &n);
    gpa_unlock(st);
    if (!quiet)
        beam__gpa_report_leaks(leaks, n, u.live_blocks);
    return u.live_blocks != 0;
}

bool beam_gpa_detect_leaks(beam_gpa_t *gpa) {
    if (beam__null_instance(gpa, "beam_gpa_detect_leaks", BEAM__RET_ADDR()))
        return false;
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL)
        return false;
    return scan_and_report(st, (gpa->flags & BEAM_GPA_QUIET_LEAKS) != 0);
}

/* st's instance goes: out of the registry, its leaks reported, all its
 * memory back to its backing; then gpa (its instance, when known) refuses
 * until its next init. */
static bool deinit_state(beam_gpa_t *gpa, gpa_state *st, bool quiet) {
    beam__gpa_registry_remove(st);
    bool leaked = scan_and_report(st, quiet);
    gpa_defer *defer = NULL;
    gpa_lock(st);
    beam__gpa_large_free_all(st, &defer);
    beam__gpa_segments_free_all(st, &defer);
    beam__gpa_heaps_free_all(st, &defer);
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
    if (gpa != NULL) {
        beam__atomic_store_plain_release(&gpa->internal_state, NULL);
        gpa->backing = beam__deinited(gpa);
    }
    beam__gpa_state_free(st);
    return leaked;
}

static void deinit_instances_over(beam_gpa_t *gpa, bool quiet, uintptr_t ret);

/* A live instance over gpa, whose deinit is under way: its state, its
 * heaps and its slabs are blocks of gpa's, which gpa's deinit gives back,
 * and a deinit of it after that walked freed memory (seen: a 3-level
 * nesting deinitialised outermost first crashed, or looped reporting,
 * in its inner instances' deinit). So it is deinitialised now, first,
 * and reported, unless gpa's deinit is quiet (what is live at a quiet
 * deinit goes unreported: the library's unload) or the instance itself is
 * (the glue's kept leak_check instances, whose leaks were reported in
 * their call: a user deinitialising the instance they were over in the
 * unload callback, as the guide says, did nothing wrong). made_for is the
 * instance the state was made for; when that no longer holds the state
 * (initialised again without a deinit), only the state goes: the
 * instances over made_for are over its new state. */
static void deinit_instance_over(beam_gpa_t *gpa, gpa_state *st,
                                 beam_gpa_t *made_for, bool quiet,
                                 uintptr_t ret) {
    bool holds = beam__gpa_state_of(made_for) == st;
    unsigned flags = holds ? made_for->flags : st->flags;
    quiet = quiet || (flags & BEAM_GPA_QUIET_LEAKS) != 0;
    if (!quiet)
        beam__report_misuse(
            BEAM__KIND_DEINIT_ORDER, ret,
            "beam_alloc: beam_gpa_deinit of instance %p while instance %p, "
            "which takes its memory from it, is live: that one is "
            "deinitialised first, now (deinitialise an instance before its "
            "backing)",
            (void *)gpa, (void *)made_for);
    if (holds)
        deinit_instances_over(made_for, quiet, ret);
    deinit_state(holds ? made_for : NULL, st, quiet);
}

/* Every live instance over gpa, innermost first. Each step takes one out
 * of the registry, which is walked once: this ends. */
static void deinit_instances_over(beam_gpa_t *gpa, bool quiet, uintptr_t ret) {
    uint32_t at = 0;
    beam_gpa_t *made_for = NULL;
    gpa_state *st;
    while ((st = beam__gpa_registry_over(gpa, &at, &made_for)) != NULL)
        deinit_instance_over(gpa, st, made_for, quiet, ret);
}

bool beam_gpa_deinit(beam_gpa_t *gpa) {
    if (beam__null_instance(gpa, "beam_gpa_deinit", BEAM__RET_ADDR()))
        return false;
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL) {
        gpa->backing = beam__deinited(gpa);
        return false;
    }
    bool quiet = (gpa->flags & BEAM_GPA_QUIET_LEAKS) != 0;
    deinit_instances_over(gpa, quiet, BEAM__RET_ADDR());
    return deinit_state(gpa, st, quiet);
}

bool beam__gpa_stats(void *ctx, beam_alloc_stats *out) {
    beam_gpa_t *gpa = (beam_gpa_t *)ctx;
    gpa_state *st = beam__gpa_state_of(gpa);
    /* Allocations refused before a state could be made (no_state_answer). */
    out->failed += beam__atomic_load_plain_relaxed(&gpa->internal_failed);
    if (st == NULL)
        return true; /* no state: nothing else to count */
    /* This thread's own lag is known: publish it (other heaps' increases
     * may lag: see beam__stats_peak_of_read). */
    gpa_heap *mine = beam__gpa_heap_if_any(st);
    if (mine != NULL)
        beam__publish(&mine->stats, &st->peak);
    gpa_lock(st);
    beam__stats_add(out, &st->retired);
    beam__stats_add(out, &st->large_counts);
    beam__stats_add(out, &st->medium_counts);
    for (gpa_heap *h = st->heaps; h != NULL; h = h->next)
        beam__stats_add(out, &h->stats);
    gpa_unlock(st);
    uint64_t rf = beam__atomic_load_relaxed(&st->remote_frees);
    out->frees += rf;
    out->live_blocks -= (size_t)rf;
    out->live_bytes += (size_t)beam__atomic_load_relaxed(&st->remote_bytes);
    beam__stats_peak_of_read(&st->peak, out);
    return true;
}
