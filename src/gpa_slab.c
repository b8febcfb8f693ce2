/*
 * Segments, slabs and the address map of the general purpose allocator
 * (the types and the slab life cycle are in gpa_internal.h).
 *
 * A segment is one request to the backing allocator of (n + 1) slabs' worth
 * at alignment 8; n 64 KiB-aligned slabs are carved inside and the slack at
 * the unaligned end (at least half a slab on one side) holds the segment
 * header. Asking the backing for 64 KiB alignment instead would, over the
 * large allocator, cost a second slab per segment. Segments are taken
 * before the instance lock and given back after it (lock order rule 2).
 *
 * The address map is global, shared by all instances, so any pointer can be
 * classified. Its leaves come from calloc in both builds: they are
 * metadata, not NIF data, and mostly untouched zero pages.
 */
#include "gpa_internal.h"

#include <stdlib.h>
#include <string.h>

_Atomic(gpa_slab *) beam__gpa_map_root[GPA_MAP_SIZE];

/* The map entry for p, making its leaf when needed; NULL when p is above 48
 * bits or no leaf could be made. */
static gpa_slab *map_slot_make(const void *p) {
    uintptr_t g = (uintptr_t)p >> GPA_SLAB_SHIFT;
    if (g >> (2 * GPA_MAP_BITS))
        return NULL;
    _Atomic(gpa_slab *) *root = &beam__gpa_map_root[g >> GPA_MAP_BITS];
    gpa_slab *leaf = beam__atomic_load_acquire(root);
    if (leaf == NULL) {
        gpa_slab *fresh = (gpa_slab *)calloc(GPA_MAP_SIZE, sizeof(gpa_slab));
        if (fresh == NULL)
            return NULL;
        if (beam__atomic_cas_acq_rel(root, &leaf, fresh))
            leaf = fresh;
        else
            free(fresh); /* another thread made it first */
    }
    return &leaf[g & (GPA_MAP_SIZE - 1)];
}

void beam__gpa_map_free(void) {
    for (size_t i = 0; i < GPA_MAP_SIZE; i++) {
        gpa_slab *leaf =
            beam__atomic_exchange_acq_rel(&beam__gpa_map_root[i], NULL);
        free(leaf);
    }
}

void beam__gpa_defer_run(gpa_state *st, gpa_defer *list) {
    while (list != NULL) {
        gpa_defer *d = list;
        list = d->next;
        size_t len = d->len;
        if (d->meta)
            beam__atomic_sub_relaxed(&st->meta_bytes, len);
        gpa_backing_free(st, d, len, d->alignment, 0);
    }
}

/* ---- segments ------------------------------------------------------------ */

static size_t info_bytes(const gpa_slab *s) {
    return (GPA_SLAB_SIZE / s->size) * sizeof(gpa_block_info);
}

/* Lock held (or the segment not yet published): unmap its slabs and queue
 * its memory. */
static void segment_drop(gpa_segment *seg, gpa_defer **defer) {
    for (unsigned i = 0; i < seg->nslabs; i++) {
        gpa_slab *s = beam__gpa_seg_slab(seg, i);
        if (s->info != NULL)
            gpa_defer_free(defer, s->info, info_bytes(s),
                           BEAM_ALIGNOF(gpa_block_info), true);
        s->info = NULL;
        s->fast_span = 0; /* ownerless: see the invariants */
        beam__atomic_store_release(&s->st, NULL);
    }
    gpa_defer_free(defer, seg->raw, seg->raw_len, BEAM_MAX_ALIGN, false);
}

/* A new segment of n slabs from the backing, mapped, not yet linked in. No
 * lock held. */
static gpa_segment *segment_new(gpa_state *st, unsigned n) {
    size_t raw_len = (size_t)(n + 1) * GPA_SLAB_SIZE;
    char *raw = (char *)gpa_backing_alloc(st, raw_len, BEAM_MAX_ALIGN, 0);
    if (raw == NULL)
        return NULL;
    char *base = (char *)beam__align_up((uintptr_t)raw, GPA_SLAB_SIZE);
    size_t pre = (size_t)(base - raw);
    /* The header goes in whichever slack is big enough (one always is: they
     * add up to a slab). */
    gpa_segment *seg =
        (gpa_segment *)(pre >= sizeof(gpa_segment) ? raw
                                                   : base + n * GPA_SLAB_SIZE);
    memset(seg, 0, sizeof *seg);
    seg->raw = raw;
    seg->raw_len = raw_len;
    seg->base = base;
    for (unsigned i = 0; i < n; i++) {
        gpa_slab *s = map_slot_make(base + i * GPA_SLAB_SIZE);
        if (s == NULL) {
            gpa_defer *defer = NULL;
            segment_drop(seg, &defer); /* unmaps the first i */
            beam__gpa_defer_run(st, defer);
            return NULL;
        }
        /* The previous owner of this address range (an instance that gave
         * the memory back) released the entry; acquiring that release
         * orders its last reads before our reuse. */
        gpa_state *prev = beam__atomic_load_acquire(&s->st);
        GPA_ASSERT(prev == NULL);
        (void)prev;
        memset(s, 0, sizeof *s);
        s->base = s->end = base + i * GPA_SLAB_SIZE;
        s->bump = s->base;
        s->seg = seg;
        s->where = WHERE_POOL;
        beam__atomic_store_release(&s->st, st);
        seg->nslabs = i + 1;
    }
    return seg;
}

/* Lock held: a segment from segment_new joins the pool. */
static void segment_insert(gpa_state *st, gpa_segment *seg) {
    GPA_ASSERT_LOCKED(st);
    st->backing_bytes += seg->raw_len;
    seg->next = st->segments;
    st->segments = seg;
    for (unsigned i = 0; i < seg->nslabs; i++)
        gpa_list_push(&st->pool, beam__gpa_seg_slab(seg, i));
    seg->nfree = seg->nslabs;
    st->pool_count += seg->nslabs;
    if (st->next_segment_slabs < GPA_MAX_SEGMENT_SLABS)
        st->next_segment_slabs = st->next_segment_slabs * 2 + 1;
}

/* Lock held: a wholly free segment leaves the instance. */
static void segment_remove(gpa_state *st, gpa_segment *seg, gpa_defer **defer) {
    GPA_ASSERT(seg->nfree == seg->nslabs);
    for (unsigned i = 0; i < seg->nslabs; i++)
        gpa_list_unlink(&st->pool, beam__gpa_seg_slab(seg, i));
    st->pool_count -= seg->nslabs;
    for (gpa_segment **p = &st->segments; *p != NULL; p = &(*p)->next)
        if (*p == seg) {
            *p = seg->next;
            break;
        }
    st->backing_bytes -= seg->raw_len;
    segment_drop(seg, defer);
}

void beam__gpa_segments_free_all(gpa_state *st, gpa_defer **defer) {
    while (st->segments != NULL) {
        gpa_segment *seg = st->segments;
        st->segments = seg->next;
        st->backing_bytes -= seg->raw_len;
        segment_drop(seg, defer);
    }
    st->pool = NULL;
    st->pool_count = 0;
    memset(st->partial, 0, sizeof st->partial);
    beam__atomic_store_relaxed(&st->reclaim, NULL);
}

/* ---- slabs ----------------------------------------------------------------
 */

uint32_t beam__gpa_slab_collect_remote(gpa_slab *s) {
    /* Read before exchanging: most calls find nothing, and a load does not
     * take the line away from the threads that push. */
    if (beam__atomic_load_relaxed(&s->thread_free) == 0)
        return 0;
    uintptr_t tf = beam__atomic_exchange_acquire(&s->thread_free, 0);
    GPA_ASSERT((tf & GPA_FULL_BIT) == 0);
    void **head = GPA_TF_PTR(tf);
    uint32_t n = GPA_TF_COUNT(tf);
    GPA_ASSERT((head == NULL) == (n == 0) && n <= s->used);
    if (head == NULL)
        return 0;
    /* The count comes with the list, so the list is walked (each block a
     * likely cache miss) only when there is a free list to append. */
    if (s->free != NULL) {
        void **tail = head;
        while (tail[0] != NULL)
            tail = (void **)tail[0];
        tail[0] = s->free;
    }
#ifdef BEAM_ALLOC_DEBUG
    uint32_t walked = 0;
    for (void **b = head; b != NULL && walked <= n; b = (void **)b[0])
        walked++;
    GPA_ASSERT(walked >= n);
#endif
    s->free = head;
    s->used -= n;
    GPA_ASSERT_SLAB(s);
    return n;
}

/* Lock held: s, from the pool, becomes a slab of class cls (info: its block
 * records in tracked mode, from the caller). */
static void slab_format(gpa_slab *s, unsigned cls, gpa_block_info *info) {
    GPA_ASSERT(gpa_where(s) == WHERE_POOL && s->used == 0);
    uint32_t size = beam__gpa_class_size[cls];
    uint32_t nblocks = (uint32_t)(GPA_SLAB_SIZE / size);
    s->info = info;
    s->size = size;
    s->recip = (uint32_t)((((uint64_t)1 << 32) + size - 1) / size);
    s->cls = (uint16_t)cls;
    s->free = NULL;
    beam__atomic_store_plain_relaxed(&s->bump, s->base);
    s->end = s->base + (size_t)nblocks * size;
    s->requeue = (uint16_t)(nblocks >= 16 ? nblocks / 8 : 1);
    s->prev_size = (uint16_t)(cls == 0 ? 0 : beam__gpa_class_size[cls - 1]);
    s->fast_span = (uint16_t)(info == NULL ? size - s->prev_size : 0);
    beam__atomic_store_relaxed(&s->thread_free, 0);
}

/* Keep this many free slabs beyond a wholly free segment before giving the
 * segment back: a workload that frees everything and starts again should not
 * pay the backing allocator each round. */
#define POOL_KEEP 8

void beam__gpa_slab_release(gpa_state *st, gpa_slab *s, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    GPA_ASSERT(s->used == 0 && beam__atomic_load_relaxed(&s->heap) == NULL);
    gpa_set_where(s, WHERE_POOL);
    s->fast_span = 0; /* no block to free in it */
    if (s->info != NULL) {
        gpa_defer_free(defer, s->info, info_bytes(s),
                       BEAM_ALIGNOF(gpa_block_info), true);
        s->info = NULL;
    }
    s->end = s->base; /* nothing valid in it any more */
    beam__atomic_store_plain_relaxed(&s->bump, s->base);
    gpa_list_push(&st->pool, s);
    st->pool_count++;
    gpa_segment *seg = s->seg;
    if (++seg->nfree == seg->nslabs &&
        st->pool_count >= seg->nslabs + POOL_KEEP)
        segment_remove(st, seg, defer);
}

void beam__gpa_slab_park(gpa_state *st, gpa_slab *s, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    beam__atomic_store_relaxed(&s->heap, NULL);
    gpa_set_where(s, WHERE_PARTIAL); /* on its way: ownerless */
    beam__gpa_slab_collect_remote(s);
    if (s->used == 0) {
        beam__gpa_slab_release(st, s, defer);
        return;
    }
    gpa_set_where(s, WHERE_PARTIAL);
    gpa_list_push(&st->partial[s->cls], s);
}

void beam__gpa_reclaim_push(gpa_state *st, gpa_slab *s) {
    GPA_ASSERT(gpa_where(s) == WHERE_FULL);
    gpa_set_where(s, WHERE_RECLAIM);
    gpa_slab *head = beam__atomic_load_relaxed(&st->reclaim);
    do {
        s->reclaim_next = head;
    } while (!beam__atomic_cas_weak_release(&st->reclaim, &head, s));
}

void beam__gpa_reclaim_drain(gpa_state *st, size_t max, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    /* One consumer (the lock holder) and pushers that only push slabs they
     * took FULL off, which a slab on this stack cannot have again before it
     * is popped: so popping one at a time has no ABA problem. */
    while (max-- > 0) {
        gpa_slab *s = beam__atomic_load_acquire(&st->reclaim);
        if (s == NULL)
            return;
        if (!beam__atomic_cas_acquire(&st->reclaim, &s, s->reclaim_next)) {
            max++;
            continue;
        }
        GPA_ASSERT(gpa_where(s) == WHERE_RECLAIM);
        s->reclaim_next = NULL;
        beam__gpa_slab_park(st, s, defer);
    }
}

void beam__gpa_slabs_trim(gpa_state *st, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    beam__gpa_reclaim_drain(st, SIZE_MAX, defer);
    for (unsigned c = 0; c < GPA_CLASSES; c++) {
        for (gpa_slab *s = st->partial[c]; s != NULL;) {
            gpa_slab *next = s->next;
            beam__gpa_slab_collect_remote(s);
            if (s->used == 0) {
                gpa_list_unlink(&st->partial[c], s);
                beam__gpa_slab_release(st, s, defer);
            }
            s = next;
        }
    }
    for (gpa_segment *seg = st->segments, *next; seg != NULL; seg = next) {
        next = seg->next;
        if (seg->nfree == seg->nslabs)
            segment_remove(st, seg, defer);
    }
}

/* How many slabs a refill takes off the reclaim stack at most: enough to
 * keep up with any rate of remote frees (a slab is pushed once per fill),
 * few enough to keep a refill short. */
#define RECLAIM_BATCH 32

/* Lock held: a slab of class cls with room, or NULL when the partial list
 * and the pool have none (or tracking needs info and has none). */
static gpa_slab *slab_find(gpa_state *st, unsigned cls, gpa_block_info **info,
                           gpa_defer **defer) {
    beam__gpa_reclaim_drain(st, RECLAIM_BATCH, defer);
    gpa_slab *s;
    while ((s = st->partial[cls]) != NULL) {
        gpa_list_unlink(&st->partial[cls], s);
        beam__gpa_slab_collect_remote(s);
        if (s->free != NULL || s->bump < s->end)
            return s;
        /* Parked with live blocks and nothing free: it must not be lost
         * from sight. Mark it FULL like any exhausted slab. */
        gpa_set_where(s, WHERE_FULL);
        uintptr_t expect = 0;
        if (!beam__atomic_cas_acq_rel(&s->thread_free, &expect, GPA_FULL_BIT)) {
            beam__gpa_slab_collect_remote(s); /* a free raced in */
            return s;
        }
    }
    if (st->pool == NULL || (st->track && *info == NULL))
        return NULL;
    s = st->pool;
    gpa_list_unlink(&st->pool, s);
    st->pool_count--;
    s->seg->nfree--;
    slab_format(s, cls, st->track ? *info : NULL);
    if (st->track) {
        memset(*info, 0, info_bytes(s));
        *info = NULL;
    }
    return s;
}

gpa_slab *beam__gpa_pool_take(gpa_state *st) {
    GPA_ASSERT_LOCKED(st);
    if (st->pool == NULL) {
        /* The segment is taken with the lock dropped (rule 2); the pool
         * may have filled meanwhile, and has a slab either way after the
         * insert. */
        unsigned n = st->next_segment_slabs;
        gpa_unlock(st);
        gpa_segment *fresh = segment_new(st, n);
        gpa_lock(st);
        if (fresh == NULL)
            return NULL;
        segment_insert(st, fresh);
    }
    gpa_slab *s = st->pool;
    gpa_list_unlink(&st->pool, s);
    st->pool_count--;
    s->seg->nfree--;
    return s;
}

gpa_slab *beam__gpa_slab_acquire(gpa_heap *h, unsigned cls) {
    gpa_state *st = h->st;
    gpa_defer *defer = NULL;
    gpa_block_info *info = NULL;
    size_t info_len =
        (GPA_SLAB_SIZE / beam__gpa_class_size[cls]) * sizeof(gpa_block_info);
    gpa_segment *fresh = NULL;
    gpa_slab *s = NULL;
    for (int round = 0; round < 3; round++) {
        gpa_lock(st);
        if (fresh != NULL) {
            segment_insert(st, fresh);
            fresh = NULL;
        }
        s = slab_find(st, cls, &info, &defer);
        if (s != NULL) {
            gpa_set_where(s, WHERE_CUR);
            beam__atomic_store_relaxed(&s->heap, h);
        }
        bool need_segment = s == NULL && st->pool == NULL;
        unsigned n = st->next_segment_slabs;
        gpa_unlock(st);
        if (s != NULL)
            break;
        /* What was missing is taken with no lock held, then we look
         * again (another thread may have filled the gap meanwhile). */
        if (st->track && info == NULL &&
            (info = (gpa_block_info *)gpa_meta_alloc(
                 st, info_len, BEAM_ALIGNOF(gpa_block_info))) == NULL)
            break;
        if (need_segment && (fresh = segment_new(st, n)) == NULL)
            break;
    }
    if (fresh != NULL) { /* out of rounds: keep it for the next refill */
        gpa_lock(st);
        segment_insert(st, fresh);
        gpa_unlock(st);
    }
    if (info != NULL) {
        beam__atomic_sub_relaxed(&st->meta_bytes, info_len);
        gpa_backing_free(st, info, info_len, BEAM_ALIGNOF(gpa_block_info), 0);
    }
    beam__gpa_defer_run(st, defer);
    return s;
}
