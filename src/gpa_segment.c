/*
 * Segments, slabs and the address map of the general purpose allocator.
 *
 * A segment is one request to the backing allocator of (n + 1) slabs' worth
 * at alignment 8; n 64 KiB-aligned slabs are carved inside and the slack at
 * the unaligned end (at least half a slab on one side) holds the segment
 * header. Asking the backing for 64 KiB alignment instead would, over the
 * large allocator, cost a second slab per segment.
 *
 * The address map (gpa_internal.h) is global, shared by all instances, so
 * any pointer can be classified. Its leaves come from calloc in both builds:
 * they are metadata, not NIF data, and mostly untouched zero pages.
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
    gpa_slab *leaf = atomic_load_explicit(root, memory_order_acquire);
    if (leaf == NULL) {
        gpa_slab *fresh = (gpa_slab *)calloc(GPA_MAP_SIZE, sizeof(gpa_slab));
        if (fresh == NULL)
            return NULL;
        if (atomic_compare_exchange_strong_explicit(
                root, &leaf, fresh, memory_order_acq_rel, memory_order_acquire))
            leaf = fresh;
        else
            free(fresh); /* another thread made it first */
    }
    return &leaf[g & (GPA_MAP_SIZE - 1)];
}

/* ---- pool --------------------------------------------------------------- */

static void list_push(gpa_slab **head, gpa_slab *s) {
    s->prev = NULL;
    s->next = *head;
    if (s->next != NULL)
        s->next->prev = s;
    *head = s;
}

static void list_unlink(gpa_slab **head, gpa_slab *s) {
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

static void segment_free(gpa_state *st, gpa_segment *seg) {
    for (unsigned i = 0; i < seg->nslabs; i++) {
        gpa_slab *s = beam__gpa_seg_slab(seg, i);
        if (s->info != NULL)
            beam__gpa_meta_free(
                st, s->info, (GPA_SLAB_SIZE / s->size) * sizeof(gpa_block_info),
                BEAM_ALIGNOF(gpa_block_info));
        s->info = NULL;
        __atomic_store_n(&s->st, NULL, __ATOMIC_RELEASE);
    }
    st->backing_bytes -= seg->raw_len;
    st->backing.vtable->free(st->backing.ctx, seg->raw, seg->raw_len,
                             BEAM_MAX_ALIGN, 0);
}

static gpa_segment *segment_new(gpa_state *st) {
    unsigned n = st->next_segment_slabs;
    size_t raw_len = (size_t)(n + 1) * GPA_SLAB_SIZE;
    char *raw = (char *)st->backing.vtable->alloc(st->backing.ctx, raw_len,
                                                  BEAM_MAX_ALIGN, 0);
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
            segment_free(st, seg); /* unmaps the first i */
            st->backing_bytes += raw_len;
            return NULL;
        }
        memset(s, 0, sizeof *s);
        s->base = s->end = base + i * GPA_SLAB_SIZE;
        __atomic_store_n(&s->bump, s->base, __ATOMIC_RELAXED);
        s->seg = seg;
        s->where = WHERE_POOL;
        __atomic_store_n(&s->st, st, __ATOMIC_RELEASE);
        seg->nslabs = i + 1;
    }
    st->backing_bytes += raw_len;
    seg->next = st->segments;
    st->segments = seg;
    for (unsigned i = 0; i < n; i++)
        list_push(&st->pool, beam__gpa_seg_slab(seg, i));
    seg->nfree = n;
    st->pool_count += n;
    if (st->next_segment_slabs < GPA_MAX_SEGMENT_SLABS)
        st->next_segment_slabs = st->next_segment_slabs * 2 + 1;
    return seg;
}

/* ---- slabs -------------------------------------------------------------- */

static bool slab_format(gpa_state *st, gpa_slab *s, unsigned cls) {
    uint32_t size = beam__gpa_class_size[cls];
    uint32_t nblocks = (uint32_t)(GPA_SLAB_SIZE / size);
    if (st->track) {
        size_t bytes = nblocks * sizeof(gpa_block_info);
        s->info = (gpa_block_info *)beam__gpa_meta_alloc(
            st, bytes, BEAM_ALIGNOF(gpa_block_info));
        if (s->info == NULL)
            return false;
        memset(s->info, 0, bytes);
    }
    s->size = size;
    s->recip = (uint32_t)((((uint64_t)1 << 32) + size - 1) / size);
    s->cls = (uint16_t)cls;
    s->free = NULL;
    __atomic_store_n(&s->bump, s->base, __ATOMIC_RELAXED);
    s->end = s->base + (size_t)nblocks * size;
    s->used = 0;
    atomic_store_explicit(&s->thread_free, 0, memory_order_relaxed);
    return true;
}

gpa_slab *beam__gpa_slab_take(gpa_state *st, unsigned cls) {
    gpa_slab *s = st->abandoned[cls];
    if (s != NULL) {
        list_unlink(&st->abandoned[cls], s);
        return s;
    }
    if (st->pool == NULL && segment_new(st) == NULL)
        return NULL;
    s = st->pool;
    if (!slab_format(st, s, cls))
        return NULL;
    list_unlink(&st->pool, s);
    st->pool_count--;
    s->seg->nfree--;
    return s;
}

void beam__gpa_abandoned_unlink(gpa_state *st, gpa_slab *s) {
    list_unlink(&st->abandoned[s->cls], s);
}

/* Keep this many free slabs beyond a wholly free segment before giving the
 * segment back: a workload that frees everything and starts again should not
 * pay the backing allocator each round. */
#define POOL_KEEP 8

void beam__gpa_slab_release(gpa_state *st, gpa_slab *s) {
    atomic_store_explicit(&s->heap, NULL, memory_order_relaxed);
    s->where = WHERE_POOL;
    if (s->info != NULL) {
        beam__gpa_meta_free(st, s->info,
                            (GPA_SLAB_SIZE / s->size) * sizeof(gpa_block_info),
                            BEAM_ALIGNOF(gpa_block_info));
        s->info = NULL;
    }
    s->end = s->base; /* nothing valid in it any more */
    __atomic_store_n(&s->bump, s->base, __ATOMIC_RELAXED);
    list_push(&st->pool, s);
    st->pool_count++;
    gpa_segment *seg = s->seg;
    if (++seg->nfree < seg->nslabs || st->pool_count < seg->nslabs + POOL_KEEP)
        return;
    for (unsigned i = 0; i < seg->nslabs; i++)
        list_unlink(&st->pool, beam__gpa_seg_slab(seg, i));
    st->pool_count -= seg->nslabs;
    for (gpa_segment **p = &st->segments; *p != NULL; p = &(*p)->next)
        if (*p == seg) {
            *p = seg->next;
            break;
        }
    segment_free(st, seg);
}

void beam__gpa_segments_trim(gpa_state *st) {
    gpa_segment **p = &st->segments;
    while (*p != NULL) {
        gpa_segment *seg = *p;
        if (seg->nfree != seg->nslabs) {
            p = &seg->next;
            continue;
        }
        for (unsigned i = 0; i < seg->nslabs; i++)
            list_unlink(&st->pool, beam__gpa_seg_slab(seg, i));
        st->pool_count -= seg->nslabs;
        *p = seg->next;
        segment_free(st, seg);
    }
}

void beam__gpa_segments_free_all(gpa_state *st) {
    while (st->segments != NULL) {
        gpa_segment *seg = st->segments;
        st->segments = seg->next;
        segment_free(st, seg);
    }
    st->pool = NULL;
    st->pool_count = 0;
    memset(st->abandoned, 0, sizeof st->abandoned);
}

void beam__gpa_collect(gpa_slab *s) {
    uintptr_t tf =
        atomic_exchange_explicit(&s->thread_free, 0, memory_order_acquire);
    void **head = (void **)(tf & ~GPA_FULL_BIT);
    if (head == NULL)
        return;
    void **tail = head;
    uint32_t n = 1;
    while (tail[0] != NULL) {
        tail = (void **)tail[0];
        n++;
    }
    tail[0] = s->free;
    s->free = head;
    s->used -= n;
}
