/*
 * Segments, slabs and the address map of the general purpose allocator
 * (the types and the slab life cycle are in gpa_internal.h).
 *
 * A segment is one request to the backing allocator of (n + 1) slabs' worth
 * at alignment 8; n 64 KiB-aligned slabs are carved inside, and the slack at
 * the two ends (a slab's worth in all, in the chunks before and after the
 * slabs) becomes room for sub-slabs: mixed chunks, as are pool slabs lent
 * out (see "Small first slabs" in gpa_internal.h). Asking the backing for
 * 64 KiB alignment instead would, over the large allocator, cost a second
 * slab per segment. The header (with the slack chunks' metadata) is a
 * separate request, like all metadata. Segments are taken before the
 * instance lock and given back after it (lock order rule 2).
 *
 * The address map is global, shared by all instances, so any pointer can be
 * classified. Its leaves come from calloc in both builds: they are
 * metadata, not NIF data, and mostly untouched zero pages. calloc aligns
 * to 16 (an 8 MiB one is a fresh mapping plus glibc's 16-byte header), and
 * an entry is 64-aligned so that the fast paths read one line of it, not
 * two: a leaf is aligned inside a slightly larger request, whose address
 * map_leaf_raw keeps, for the free and so that the request stays
 * reachable (pointed into only, valgrind calls it "possibly lost", an
 * error by default, in every program that ends with the map in place).
 */
#include "gpa_internal.h"

#include <stdlib.h>
#include <string.h>

_Atomic(gpa_slab *) beam__gpa_map_root[GPA_MAP_SIZE];

/* The requests the leaves are aligned in, by root index (see above). */
static void *map_leaf_raw[GPA_MAP_SIZE];

/* A zeroed leaf, 64-aligned (see above), in *raw; NULL when calloc fails. */
static gpa_slab *map_leaf_new(void **raw) {
    size_t align = _Alignof(gpa_slab);
    *raw = calloc(1, GPA_MAP_SIZE * sizeof(gpa_slab) + align);
    if (*raw == NULL)
        return NULL;
    return (gpa_slab *)(((uintptr_t)*raw + align - 1) &
                        ~(uintptr_t)(align - 1));
}

/* The map entry for p, making its leaf when needed; NULL when p is above 48
 * bits or no leaf could be made. */
static gpa_slab *map_slot_make(const void *p) {
    uintptr_t g = (uintptr_t)p >> GPA_SLAB_SHIFT;
    if (g >> (2 * GPA_MAP_BITS))
        return NULL;
    _Atomic(gpa_slab *) *root = &beam__gpa_map_root[g >> GPA_MAP_BITS];
    gpa_slab *leaf = beam__atomic_load_acquire(root);
    if (leaf == NULL) {
        void *raw;
        gpa_slab *fresh = map_leaf_new(&raw);
        if (fresh == NULL)
            return NULL;
        if (beam__atomic_cas_acq_rel(root, &leaf, fresh)) {
            leaf = fresh;
            map_leaf_raw[g >> GPA_MAP_BITS] = raw; /* the winner's alone */
        } else {
            free(raw); /* another thread made it first */
        }
    }
    return &leaf[g & (GPA_MAP_SIZE - 1)];
}

void beam__gpa_map_free(void) {
    for (size_t i = 0; i < GPA_MAP_SIZE; i++) {
        gpa_slab *leaf =
            beam__atomic_exchange_acq_rel(&beam__gpa_map_root[i], NULL);
        if (leaf != NULL) {
            free(map_leaf_raw[i]);
            map_leaf_raw[i] = NULL;
        }
    }
}

void beam__gpa_defer_run(gpa_state *st, gpa_defer *list) {
    while (list != NULL) {
        gpa_defer *d = list;
        list = d->next;
        size_t len = d->len;
        if (d->noted)
            beam__gpa_set_unnote(d);
        if (d->meta)
            gpa_meta_free(st, d, len, d->alignment);
        else
            gpa_backing_free(st, d, len, d->alignment, 0);
    }
}

/* ---- segments ------------------------------------------------------------ */

static size_t info_bytes(const gpa_slab *s) {
    return (GPA_SLAB_SIZE / s->size) * sizeof(gpa_block_info);
}

/* ---- mixed chunks (see "Small first slabs" in gpa_internal.h) ----------- */

/* A gpa_mixed, and a segment's header (which holds two), are 64-aligned
 * (their sub-slabs are): gpa_line_meta_alloc. A segment's header is
 * metadata apart from its memory, like the map: no block borders on it. */

/* Metadata for a mixed chunk, from the backing (no lock held). */
static gpa_mixed *mixed_meta_new(gpa_state *st) {
    void *raw;
    gpa_mixed *m = (gpa_mixed *)gpa_line_meta_alloc(st, sizeof *m, &raw);
    if (m == NULL)
        return NULL;
    memset(m, 0, sizeof *m);
    m->raw = raw;
    return m;
}

/* No lock held: metadata that found no use goes straight back. */
static void mixed_meta_drop(gpa_state *st, gpa_mixed *m) {
    gpa_line_meta_free(st, m->raw, sizeof *m);
}

/* Map entry e's chunk, of which the pages in usable are ours, is cut into
 * sub-slabs described by m (none yet). The entry keeps no block of its
 * own (bump == base) and has fast_span 0, so the inline free looks up the
 * sub-slab (beam__gpa_free_in_chunk), as the general path does
 * (beam__gpa_slab_of). Lock held, or the chunk not yet published.
 */
static void entry_mix(gpa_slab *e, gpa_mixed *m, gpa_segment *seg,
                      uint16_t usable, bool slack) {
    char *base = e->base;
    m->entry = e;
    m->base = base;
    m->seg = seg;
    m->usable = usable;
    m->taken = 0;
    m->slack = slack;
    beam__atomic_store_relaxed(&e->mixed, m);
    e->fast_span = 0;
    e->end = base;
    beam__atomic_store_plain_relaxed(&e->bump, base);
    e->subs = m;
    for (unsigned k = 0; k < GPA_PAGES; k++)
        gpa_set_page(e, k, (usable >> k) & 1 ? GPA_PAGE_FREE : GPA_PAGE_NONE);
    /* Release: a free that sees MIXED (acquire, beam__gpa_slab_of) sees
     * subs and the page table written above (found in review; free on x86,
     * needed on weakly ordered CPUs). */
    beam__atomic_store_release(&e->where, (uint8_t)WHERE_MIXED);
}

/* Lock held: a lent chunk with no sub-slab left is a plain pool slab
 * again. Its page table goes first out of sight (where), then is
 * overwritten by the fields it stood in for; the entry keeps m (in mixed)
 * for the chunk's next loan. */
static void entry_unmix(gpa_slab *e) {
    gpa_set_where(e, WHERE_POOL);
    beam__atomic_store_relaxed(&e->heap, NULL);
    e->used = 0;
    e->size = 0;
}

static void mixed_list(gpa_state *st, gpa_mixed *m) {
    GPA_ASSERT(!m->listed);
    m->next = st->mixed;
    st->mixed = m;
    m->listed = true;
}

static void mixed_unlist(gpa_state *st, gpa_mixed *m) {
    for (gpa_mixed **p = &st->mixed; *p != NULL; p = &(*p)->next)
        if (*p == m) {
            *p = m->next;
            break;
        }
    m->next = NULL;
    m->listed = false;
}

/* Lock held (or not yet published): m's sub-slabs' records and m itself
 * on defer. */
static void mixed_free(gpa_mixed *m, gpa_defer **defer) {
    for (unsigned k = 0; k < GPA_PAGES; k++) {
        gpa_slab *s = &m->sub[k];
        if (s->info != NULL)
            gpa_defer_free(defer, s->info, info_bytes(s),
                           BEAM_ALIGNOF(gpa_block_info), true);
        s->info = NULL;
    }
    if (m->raw != NULL)
        gpa_line_meta_defer(defer, m->raw, sizeof *m);
}

/* The whole pages of [lo, hi), in the chunk at chunk, as a page mask. */
static uint16_t pages_within(const char *chunk, const char *lo,
                             const char *hi) {
    uintptr_t c = (uintptr_t)chunk;
    unsigned first =
        (unsigned)((beam__align_up((uintptr_t)lo, GPA_PAGE_SIZE) - c) >>
                   GPA_PAGE_SHIFT);
    unsigned last = (unsigned)((((uintptr_t)hi & ~(GPA_PAGE_SIZE - 1)) - c) >>
                               GPA_PAGE_SHIFT);
    if (first >= last)
        return 0;
    return (uint16_t)(((1u << last) - 1) & ~((1u << first) - 1));
}

/* The owner of a slack chunk's map entry while its claimer makes its page
 * table: no instance's (zeroed, never used), so every reader takes the
 * chunk for another instance's. */
static gpa_state gpa_claiming;

/* The chunk's map entry e, claimed, describes the slack piece k of seg:
 * seg->room[k], pages usable. */
static gpa_mixed *slack_take(gpa_segment *seg, unsigned k, gpa_slab *e,
                             char *chunk) {
    /* An unowned entry keeps nothing of its past but zeros here (see
     * entry_unmap). */
    GPA_ASSERT(beam__gpa_owner(e) == &gpa_claiming && e->fast_span == 0 &&
               e->info == NULL && beam__atomic_load_relaxed(&e->mixed) == NULL);
    e->seg = seg;
    e->base = chunk;
    entry_mix(e, &seg->room[k], seg, seg->own[k], true);
    return &seg->room[k];
}

/* No lock held: [lo, hi), piece k of a new segment's slack (inside one
 * chunk): its whole pages, and the chunk's map entry made ready (a leaf
 * may need making). segment_insert claims it. */
static void slack_prepare(gpa_segment *seg, unsigned k, char *lo, char *hi) {
    char *chunk = (char *)((uintptr_t)lo & ~(GPA_SLAB_SIZE - 1));
    seg->own[k] = pages_within(chunk, lo, hi);
    seg->chunk[k] = chunk;
    if (seg->own[k] != 0 && map_slot_make(chunk) == NULL)
        seg->own[k] = 0;
}

static bool slack_owner(const gpa_segment *seg, unsigned k) {
    return seg->slack[k] == &seg->room[k];
}

/* Lock held: slack piece k of seg becomes room for sub-slabs. The chunk's
 * map entry is claimed with a compare-and-swap on its owner, since the
 * slack of a neighbouring segment of any instance may share the chunk (its
 * claim is made under its own instance's lock). When a segment of this
 * instance has it (segments often lie side by side in the backing), this
 * one's pages join that chunk (one joiner a chunk at most); when another
 * instance has it, the piece stays unused, as all slack did before. */
static void slack_join(gpa_state *st, gpa_segment *seg, unsigned k) {
    gpa_slab *e = beam__gpa_map_slot(seg->chunk[k]);
    /* slack_prepare made the leaf (own[k] != 0), and leaves stay until
     * the library goes. (Said for gcc too: with ASan and the debug
     * checks it followed the NULL return into the CAS below and failed
     * the build, -Werror=stringop-overflow.) */
    GPA_ASSERT(e != NULL);
    gpa_state *none = NULL;
    /* Claimed for no instance until its page table is made: a chunk
     * owned by st while still WHERE_POOL read as a pool slab of st to a
     * free of a neighbour's block in it (another large block of st, say),
     * which was reported as a double free and leaked (bug hunt: nested
     * instances under load). */
    if (beam__atomic_cas_acq_rel(&e->st, &none, &gpa_claiming)) {
        seg->slack[k] = slack_take(seg, k, e, seg->chunk[k]);
        mixed_list(st, seg->slack[k]);
        beam__atomic_store_release(&e->st, st);
        return;
    }
    /* Another instance's entry is written under its own lock: nothing of
     * it is read but its owner (a read of subs raced its entry_mix). */
    gpa_mixed *m = none == st ? e->subs : NULL;
    if (m == NULL || gpa_where(e) != WHERE_MIXED || !m->slack ||
        m->joined != NULL || (m->usable & seg->own[k]) != 0) {
        seg->own[k] = 0;
        return;
    }
    m->usable |= seg->own[k];
    for (unsigned p = 0; p < GPA_PAGES; p++)
        if ((seg->own[k] >> p) & 1)
            gpa_set_page(e, p, GPA_PAGE_FREE);
    m->joined = seg;
    m->joined_k = k;
    seg->slack[k] = m;
}

/* Lock held: seg, about to go, takes its pages out of a chunk it joined,
 * or its chunk from the segment that joined it. */
static void slack_leave(gpa_segment *seg, unsigned k) {
    gpa_mixed *m = seg->slack[k];
    if (slack_owner(seg, k)) {
        if (m->joined != NULL) {
            m->joined->slack[m->joined_k] = NULL;
            m->joined->own[m->joined_k] = 0;
            m->joined = NULL;
        }
        return;
    }
    GPA_ASSERT((m->taken & seg->own[k]) == 0);
    m->usable &= (uint16_t)~seg->own[k];
    for (unsigned p = 0; p < GPA_PAGES; p++)
        if ((seg->own[k] >> p) & 1)
            gpa_set_page(m->entry, p, GPA_PAGE_NONE);
    m->joined = NULL;
    seg->slack[k] = NULL;
    seg->own[k] = 0;
}

/* Lock held (or not yet published): the map entry e no longer describes
 * memory of ours. The owner goes last, with a release: whoever claims the
 * entry next reads it after every write here. */
static void entry_unmap(gpa_slab *e, gpa_defer **defer) {
    gpa_mixed *m = beam__atomic_load_relaxed(&e->mixed);
    if (m != NULL)
        mixed_free(m, defer);
    if (e->info != NULL)
        gpa_defer_free(defer, e->info, info_bytes(e),
                       BEAM_ALIGNOF(gpa_block_info), true);
    e->info = NULL;
    beam__atomic_store_relaxed(&e->mixed, NULL);
    e->fast_span = 0; /* ownerless: see the invariants */
    gpa_set_where(e, WHERE_POOL);
    beam__atomic_store_release(&e->st, NULL);
}

/* Lock held (or the segment not yet published): unmap its slabs and its
 * slack and queue its memory. */
static void segment_drop(gpa_segment *seg, gpa_defer **defer) {
    for (unsigned i = 0; i < seg->nslabs; i++)
        entry_unmap(beam__gpa_seg_slab(seg, i), defer);
    for (unsigned k = 0; k < 2; k++)
        if (slack_owner(seg, k))
            entry_unmap(seg->room[k].entry, defer);
    /* Leaked slabs still hold poisoned free blocks: the backing's next
     * user (another NIF, over enif_alloc) must get addressable memory. */
    BEAM__ASAN_UNPOISON(seg->raw, seg->raw_len);
    gpa_defer_free(defer, seg->raw, seg->raw_len, BEAM_MAX_ALIGN, false);
    gpa_line_meta_defer(defer, seg->meta, sizeof *seg);
}

/* A map entry for a new segment's slab, back to zeros but for st (which
 * the caller publishes last). Any thread may read any entry at any time: a
 * free reads the entry of whatever pointer it gets, and a block freed to
 * the backing just before may be this very memory. The backing orders that
 * free before our reuse, but not in a way a race detector sees for the
 * map, which is not that memory: so what such a reader looks at (where,
 * st, the heap word, thread_free, mixed) is written atomically here, and
 * the rest, which only the owner's paths read, plainly. */
static void entry_reset(gpa_slab *s) {
    gpa_set_where(s, WHERE_POOL);
    beam__atomic_store_relaxed(&s->heap, NULL);
    beam__atomic_store_relaxed(&s->thread_free, 0);
    beam__atomic_store_relaxed(&s->mixed, NULL);
    s->free = NULL;
    s->bump = s->base = s->end = NULL;
    /* used and size are pages[] of a mixed chunk, which frees read
     * (gpa_map_holds, from any thread): atomically. */
    beam__atomic_store_plain_relaxed(&s->used, 0);
    beam__atomic_store_plain_relaxed(&s->size, 0);
    s->recip = 0;
    s->prev_size = s->fast_span = s->cls = s->requeue = 0;
    s->next = s->prev = s->reclaim_next = NULL;
    s->seg = NULL;
    s->info = NULL;
}

/* A new segment of n slabs (n may be 0: slack only) from the backing,
 * mapped, not yet linked in. No lock held. */
static gpa_segment *segment_new(gpa_state *st, unsigned n) {
    void *meta;
    gpa_segment *seg =
        (gpa_segment *)gpa_line_meta_alloc(st, sizeof *seg, &meta);
    if (seg == NULL)
        return NULL;
    size_t raw_len = (size_t)(n + 1) * GPA_SLAB_SIZE;
    char *raw = (char *)gpa_backing_alloc(st, raw_len, BEAM_MAX_ALIGN, 0);
    if (raw == NULL) {
        gpa_line_meta_free(st, meta, sizeof *seg);
        return NULL;
    }
    memset(seg, 0, sizeof *seg);
    seg->meta = meta;
    char *base = (char *)beam__align_up((uintptr_t)raw, GPA_SLAB_SIZE);
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
        /* And the raw frees that read it (gpa_map_holds) before the
         * memory came to us through the backing. */
        beam__tsan_acquire(s);
        entry_reset(s);
        s->base = s->end = base + i * GPA_SLAB_SIZE;
        s->bump = s->base;
        s->seg = seg;
        s->where = WHERE_POOL;
        beam__atomic_store_release(&s->st, st);
        seg->nslabs = i + 1;
    }
    /* The slack, a slab's worth at the two ends, is room for sub-slabs. */
    slack_prepare(seg, 0, raw, base);
    slack_prepare(seg, 1, base + (size_t)n * GPA_SLAB_SIZE, raw + raw_len);
    return seg;
}

_Static_assert(GPA_MAX_SEGMENT_SLABS < 64, "a segment's masks hold its slabs");

/* All of seg's slabs, in its masks. */
static uint64_t seg_all(const gpa_segment *seg) {
    return ((uint64_t)1 << seg->nslabs) - 1;
}

/* Slab s's bit in its segment's masks. */
static uint64_t seg_bit(const gpa_slab *s) {
    return (uint64_t)1 << ((size_t)(s->base - s->seg->base) >> GPA_SLAB_SHIFT);
}

/* The keeping's clock (keep_since, keep_decay): CLOCK_MONOTONIC in ms,
 * modulo 2^32 (compared by difference). */
static uint32_t keep_now_ms(void) {
    return (uint32_t)(beam__gpa_now_ns() / 1000000u);
}

/* Lock held: the instance took a segment (segment_insert). One taken after
 * a segment went back (segment_maybe_remove) shows a workload that shrinks
 * and grows again: a live set freed whole and built again, say, where a
 * churn scatters its free pages over more slabs than its fill took, and
 * each round's churn took again, from the backing, the segments the last
 * round's frees had given back: fresh pages, a fault each (the bench's
 * medium churn: 2 to 4 segments of 63 slabs a repetition, some 15% of the
 * GPA's time there). From then on the instance keeps keep_slabs: at once
 * the most slabs it had in use in the window (demand; but no more than
 * twice what it holds now: a burst long ago is not kept for a small
 * workload's sake), then each new high it grows to. keep_decay lowers it
 * to what the instance needed in the window when that is over. */
static void note_growth(gpa_state *st) {
    /* A new high while keeping is kept whether a segment went back since
     * the last growth or not: with only the most slabs in use kept there,
     * a churn whose in-use high crept up gave back, at each such growth,
     * what it had just taken, and took it again (found in review:
     * churn_rounds failing one run in 20 to 40). */
    if (st->keep_slabs != 0 && st->slabs > st->keep_slabs)
        st->keep_slabs = (uint32_t)st->slabs;
    if (st->gave_back) {
        st->gave_back = false;
        size_t keep = st->demand < 2 * st->slabs ? st->demand : 2 * st->slabs;
        /* The window starts with the keeping, not at the instance's start:
         * the need it measures is the workload's that thrashed. */
        if (st->keep_slabs == 0)
            st->keep_since = keep_now_ms();
        if (keep > st->keep_slabs)
            st->keep_slabs = (uint32_t)keep;
    }
}

/* Lock held: a segment from segment_new joins the pool. */
static void segment_insert(gpa_state *st, gpa_segment *seg) {
    GPA_ASSERT_LOCKED(st);
    st->backing_bytes += seg->raw_len;
    seg->next = st->segments;
    st->segments = seg;
    for (unsigned i = 0; i < seg->nslabs; i++)
        gpa_list_push(&st->pool, beam__gpa_seg_slab(seg, i));
    seg->pooled = seg_all(seg);
    st->pool_count += seg->nslabs;
    for (unsigned k = 0; k < 2; k++)
        if (seg->own[k] != 0)
            slack_join(st, seg, k);
    st->slabs += seg->nslabs;
    note_growth(st);
}

/* Every slab in the pool and no sub-slab in the slack (in the whole chunk
 * when it is this segment's, joined or not: the chunk's metadata goes with
 * it). */
static bool segment_idle(const gpa_segment *seg) {
    for (unsigned k = 0; k < 2; k++) {
        const gpa_mixed *m = seg->slack[k];
        if (m != NULL &&
            (m->taken & (slack_owner(seg, k) ? 0xFFFF : seg->own[k])) != 0)
            return false;
    }
    return seg->pooled == seg_all(seg);
}

/* Lock held: a wholly free segment leaves the instance. */
static void segment_remove(gpa_state *st, gpa_segment *seg, gpa_defer **defer) {
    GPA_ASSERT(segment_idle(seg));
    for (unsigned i = 0; i < seg->nslabs; i++)
        gpa_list_unlink(&st->pool, beam__gpa_seg_slab(seg, i));
    st->pool_count -= seg->nslabs;
    st->slabs -= seg->nslabs;
    for (unsigned k = 0; k < 2; k++) {
        if (seg->slack[k] == NULL)
            continue;
        if (slack_owner(seg, k))
            mixed_unlist(st, seg->slack[k]);
        slack_leave(seg, k);
    }
    for (gpa_segment **p = &st->segments; *p != NULL; p = &(*p)->next)
        if (*p == seg) {
            *p = seg->next;
            break;
        }
    if (st->fill == seg)
        st->fill = NULL;
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
    st->fill = NULL;
    st->slabs = 0;
    st->mixed = NULL;
    memset(st->partial, 0, sizeof st->partial);
    memset(st->partial_sub, 0, sizeof st->partial_sub);
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
        uint32_t k = 1;
        while (gpa_link(tail) != NULL) {
            /* A tracked slab's links are checked (a write after free into
             * the first word of a block another thread freed would send
             * the walk anywhere: found in review); the list ends at a
             * broken one (the blocks after it count as free and stay out
             * of reach until the slab is empty and starts again). */
            if (BEAM__UNLIKELY(s->info != NULL) &&
                (k == n ||
                 !gpa_link_ok(beam__gpa_owner(s), s, gpa_link(tail)))) {
                beam__gpa_link_broken(
                    beam__gpa_owner(s), s, tail,
                    "the first word of a block freed by another thread "
                    "changed; found when it came back to its slab; the "
                    "blocks freed after it are not reused",
                    0);
                break;
            }
            tail = (void **)gpa_link(tail);
            k++;
        }
        gpa_set_link(tail, s->free);
    }
#ifdef BEAM_ALLOC_DEBUG
    /* (Not a tracked slab's list: it may hold a write after free, which
     * only the checked walks follow.) */
    uint32_t walked = 0;
    for (void **b = head; s->info == NULL && b != NULL && walked <= n;
         b = (void **)gpa_link(b))
        walked++;
    GPA_ASSERT(s->info != NULL || walked >= n);
#endif
    s->free = head;
    s->used -= n;
    GPA_ASSERT_SLAB(s);
    return n;
}

/* Lock held: s, from the pool (or pages of a mixed chunk), becomes a slab
 * of class cls over span bytes (info: its block records in tracked mode,
 * from the caller). */
static void slab_format(gpa_slab *s, unsigned cls, gpa_block_info *info,
                        size_t span) {
    GPA_ASSERT(gpa_where(s) == WHERE_POOL && s->used == 0);
    uint32_t size = beam__gpa_class_size[cls];
    uint32_t nblocks = (uint32_t)(span / size);
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

uint32_t beam__gpa_keep_window_ms = GPA_KEEP_WINDOW_MS;

/* Lock held, the instance keeping (keep_slabs): when the window is over
 * (beam__gpa_keep_window_ms since keep_since), what is kept becomes the
 * most slabs in use over it: a workload that repeats keeps what it needs,
 * one that shrank keeps less, and one that stopped nothing at the next
 * window's end (keep_slabs 0: kept again only when a thrash is seen
 * again). True when the window ended: the caller then looks at every
 * segment again (keep_shed). */
static bool keep_decay(gpa_state *st) {
    uint32_t now = keep_now_ms();
    if ((uint32_t)(now - st->keep_since) < beam__gpa_keep_window_ms)
        return false;
    st->keep_slabs = st->demand;
    st->demand = (uint32_t)(st->slabs - st->pool_count);
    st->keep_since = now;
    return true;
}

/* Slab releases between two looks at the clock (keep_decay) while the
 * instance keeps slabs, beside every give-back keep_slabs stops: a wholly
 * free segment is rare once a workload shrank (its slabs stay in the
 * heaps, and the segments it left are free already, with no release to
 * come that would decide for them), but releases go on while it runs. A
 * power of two; a look is some 20 ns, under the lock already held. */
#define KEEP_TICK 16

/* Lock held: seg may have become wholly free: it goes back to the backing
 * unless the pool is short (POOL_KEEP) or the instance would go below
 * keep_slabs (note_growth). True when keep_slabs alone kept it: the caller
 * then asks keep_decay, and calls keep_shed once it holds no pointer to a
 * segment that could go (sub_release's joined one). */
static bool segment_maybe_remove(gpa_state *st, gpa_segment *seg,
                                 gpa_defer **defer) {
    if (!segment_idle(seg) || st->pool_count < seg->nslabs + POOL_KEEP)
        return false;
    if (st->slabs - seg->nslabs < st->keep_slabs)
        return true;
    st->gave_back = true;
    segment_remove(st, seg, defer);
    return false;
}

/* Segments keep_shed gives back at most a call: one, beside the release's
 * own, as many as a release gives back without keeping (its own and the
 * one its slack chunk joins). All at once, an instance that had kept 256
 * MiB gave it back in one free of one block, 19-70 ms in munmap (found in
 * review). */
#define KEEP_SHED_SEGMENTS 1

/* Lock held: wholly free segments that may go now go (after keep_decay
 * lowered keep_slabs: those the workload that shrank no longer touches
 * would otherwise stay until a collect, no release of theirs coming to
 * decide), KEEP_SHED_SEGMENTS of them; keep_shedding says whether the
 * walk stopped there, and the next releases go on with it. A walk of the
 * segments, once a window, or a release, while it goes on. */
static void keep_shed(gpa_state *st, gpa_defer **defer) {
    unsigned gone = 0;
    st->keep_shedding = false;
    for (gpa_segment *seg = st->segments, *next; seg != NULL; seg = next) {
        if (gone == KEEP_SHED_SEGMENTS) {
            st->keep_shedding = true;
            return;
        }
        next = seg->next;
        size_t slabs = st->slabs;
        (void)segment_maybe_remove(st, seg, defer);
        gone += st->slabs != slabs;
    }
}

/* Lock held, a slab released while the instance keeps or sheds (kept: as
 * segment_maybe_remove): the window's end looked at, every KEEP_TICK
 * releases, at once when keep_slabs kept a segment, at every release while
 * keep_shed has segments left; keep_shed when either says so. (Not
 * keep_decay once the keeping ended: it would start it again, with no
 * segment taken again after one went back.) */
static void keep_look(gpa_state *st, bool kept, gpa_defer **defer) {
    bool shed = st->keep_shedding;
    if (st->keep_slabs != 0 &&
        (kept || shed || ++st->keep_ticks % KEEP_TICK == 0) && keep_decay(st))
        shed = true;
    if (shed)
        keep_shed(st, defer);
}

/* Lock held: s goes on the pool. */
static void pool_push(gpa_state *st, gpa_slab *s) {
    gpa_list_push(&st->pool, s);
    st->pool_count++;
    s->seg->pooled |= seg_bit(s);
}

/* Lock held: pool slab s, taken out of the pool. */
static void pool_unlink(gpa_state *st, gpa_slab *s) {
    GPA_ASSERT(gpa_where(s) == WHERE_POOL && (s->seg->pooled & seg_bit(s)));
    gpa_list_unlink(&st->pool, s);
    st->pool_count--;
    s->seg->pooled &= ~seg_bit(s);
    s->seg->warm |= seg_bit(s);
    /* What keep_decay measures: a compare, under the lock already held. */
    if (st->slabs - st->pool_count > st->demand)
        st->demand = (uint32_t)(st->slabs - st->pool_count);
}

/* The pool slab of seg among those of mask (not 0). */
static gpa_slab *seg_pool_slab(const gpa_segment *seg, uint64_t mask) {
    return beam__gpa_seg_slab(seg, (unsigned)__builtin_ctzll(mask));
}

/* Lock held: the pool slab to take next, or NULL when the pool is empty.
 * Refills fill one segment (st->fill) before the next, with slabs used
 * before (warm: their pages are resident) first: one of the fill's warm
 * ones, else the pool's first (the slab released last, most likely warm),
 * whose segment is filled next, but for a cold first when the fill has
 * a cold slab too. Taking the pool's first alone, a refill, which parks
 * reclaim-stack slabs before it takes one (partial_find), took the slab it
 * had just parked, in the segment being emptied, before the rest of that
 * came back: a burst of 100 MB that another thread freed left a live set
 * of 6.1 MB (99 slabs) keeping 26 segments, 90 MB held after a collect
 * (a soak audit; test_gpa_hoard.c's smaller burst: 57 MB for 3 MiB live).
 * Cold slabs last: filling a segment's cold slabs
 * before warm ones elsewhere raised the bench's peak RSS by 2%. */
static gpa_slab *pool_pick(gpa_state *st) {
    gpa_segment *fill = st->fill;
    if (fill != NULL && (fill->pooled & fill->warm) != 0)
        return seg_pool_slab(fill, fill->pooled & fill->warm);
    gpa_slab *s = st->pool;
    if (s == NULL)
        return NULL;
    if (fill != NULL && fill->pooled != 0 && (s->seg->warm & seg_bit(s)) == 0)
        return seg_pool_slab(fill, fill->pooled);
    st->fill = s->seg;
    return s;
}

/* Lock held: a slab taken out of the pool, which has one (pool_pick). */
static gpa_slab *pool_take(gpa_state *st) {
    gpa_slab *s = pool_pick(st);
    pool_unlink(st, s);
    return s;
}

/* Lock held: the pages of released sub-slab s are free again; a lent chunk
 * with none taken goes back to the pool, a segment with nothing in use
 * perhaps back to the backing. True: as segment_maybe_remove. */
static bool sub_release(gpa_state *st, gpa_slab *s, gpa_defer **defer) {
    gpa_mixed *m = beam__atomic_load_relaxed(&s->mixed);
    gpa_slab *e = m->entry;
    unsigned first = (unsigned)((s->base - m->base) >> GPA_PAGE_SHIFT);
    for (unsigned k = first; k < GPA_PAGES && gpa_page(e, k) == first; k++) {
        gpa_set_page(e, k, GPA_PAGE_FREE);
        m->taken &= (uint16_t) ~(1u << k);
    }
    if (m->taken != 0)
        return false;
    if (m->slack) {
        gpa_segment *joined = m->joined; /* m may go with m->seg */
        bool kept = segment_maybe_remove(st, m->seg, defer);
        if (joined != NULL)
            kept |= segment_maybe_remove(st, joined, defer);
        return kept;
    }
    mixed_unlist(st, m);
    entry_unmix(e);
    beam__gpa_slab_release(st, e, defer);
    return false;
}

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
    /* Its free blocks' poison goes: the memory may become another class's
     * blocks, a medium run, or the backing's again. */
    BEAM__ASAN_UNPOISON(s->base, (size_t)(s->end - s->base));
    s->end = s->base; /* nothing valid in it any more */
    beam__atomic_store_plain_relaxed(&s->bump, s->base);
    bool kept;
    if (gpa_is_sub(s)) {
        kept = sub_release(st, s, defer);
    } else {
        pool_push(st, s);
        kept = segment_maybe_remove(st, s->seg, defer);
    }
    if (BEAM__UNLIKELY(st->keep_slabs != 0 || st->keep_shedding))
        keep_look(st, kept, defer);
}

/* The partial list s belongs on: sub-slabs are kept apart. */
static gpa_slab **partial_list(gpa_state *st, gpa_slab *s) {
    return gpa_is_sub(s) ? &st->partial_sub[s->cls] : &st->partial[s->cls];
}

/* Lock held, s ownerless: true when every block s has out was waiting in
 * thread_free, which is then emptied without its list walked: s is empty,
 * and its free lists go with it (slab_format starts them again). The walk
 * read every such block, a likely miss each, under the lock: a heap's kept
 * slabs whose blocks other threads freed (up to GPA_KEPT_MAX, 1,024, of
 * one class) are parked at once, by a collect or beam__gpa_shed_kept:
 * 64 MiB of 256-byte blocks held the lock ~10 ms (found in review). Not a
 * tracked slab: its walk checks the links. */
static bool remote_frees_empty(gpa_slab *s) {
    uintptr_t tf = beam__atomic_load_relaxed(&s->thread_free);
    if (s->info != NULL || tf == 0 || GPA_TF_COUNT(tf) != s->used)
        return false;
    /* No live block is left to free, so no push races this exchange. */
    tf = beam__atomic_exchange_acquire(&s->thread_free, 0);
    GPA_ASSERT((tf & GPA_FULL_BIT) == 0 && GPA_TF_COUNT(tf) == s->used);
    s->free = NULL;
    s->used = 0;
    return true;
}

/* Lock held: s, ownerless with live blocks, onto its partial list at its
 * requeue mark. A retired sub-slab's mark was raised to its live blocks
 * (gpa.c, retire_sub); back on the partial list it is an ordinary slab
 * again (found in review: the raised mark stayed). */
static BEAM__ALWAYS_INLINE void partial_requeue(gpa_state *st, gpa_slab *s) {
    beam__atomic_store_plain_relaxed(&s->requeue, beam__gpa_slab_mark(s));
    gpa_set_where(s, WHERE_PARTIAL);
    gpa_list_push(partial_list(st, s), s);
}

void beam__gpa_slab_park(gpa_state *st, gpa_slab *s, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    beam__atomic_store_relaxed(&s->heap, NULL);
    gpa_set_where(s, WHERE_PARTIAL); /* on its way: ownerless */
    if (!remote_frees_empty(s))
        beam__gpa_slab_collect_remote(s);
    if (s->used == 0) {
        beam__gpa_slab_release(st, s, defer);
        return;
    }
    partial_requeue(st, s);
}

uint16_t beam__gpa_slab_mark(const gpa_slab *s) {
    uint32_t nblocks = (uint32_t)((s->end - s->base) / s->size);
    return (uint16_t)(nblocks >= 16 ? nblocks / 8 : 1);
}

void beam__gpa_slab_park_pending(gpa_state *st, gpa_slab *s) {
    GPA_ASSERT_LOCKED(st);
    GPA_ASSERT(!gpa_is_sub(s) && s->used != 0);
    beam__atomic_store_relaxed(&s->heap, NULL);
    partial_requeue(st, s);
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

/* Lock held: s, on the partial list at head, goes if it is empty (its
 * remote frees counted in first). */
static void partial_release_empty(gpa_state *st, gpa_slab **head, gpa_slab *s,
                                  gpa_defer **defer) {
    beam__gpa_slab_collect_remote(s);
    if (s->used == 0) {
        gpa_list_unlink(head, s);
        beam__gpa_slab_release(st, s, defer);
    }
}

/* Lock held: the empty slabs of a partial list go. */
static void trim_list(gpa_state *st, gpa_slab **head, gpa_defer **defer) {
    for (gpa_slab *s = *head, *next; s != NULL; s = next) {
        next = s->next;
        partial_release_empty(st, head, s, defer);
    }
}

void beam__gpa_slabs_trim(gpa_state *st, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    beam__gpa_reclaim_drain(st, SIZE_MAX, defer);
    for (unsigned c = 0; c < GPA_CLASSES; c++) {
        trim_list(st, &st->partial[c], defer);
        trim_list(st, &st->partial_sub[c], defer);
    }
    for (gpa_segment *seg = st->segments, *next; seg != NULL; seg = next) {
        next = seg->next;
        if (segment_idle(seg))
            segment_remove(st, seg, defer);
    }
    /* What the instance keeps against shrinking and growing again
     * (note_growth) is learnt anew. */
    st->keep_slabs = 0;
    st->gave_back = false;
    st->keep_shedding = false;
    st->demand = (uint32_t)(st->slabs - st->pool_count);
}

/* ---- sub-slabs ------------------------------------------------------------
 * A heap's first slabs of a class are sub-slabs of a few pages, growing:
 * GPA_SUB_STEPS of them, each twice the last, before it takes whole slabs.
 * So a thread with a few blocks of many classes holds pages, not slabs. */
/* Pages of sub-slabs a heap carves at most until it is stripped (512 KiB):
 * beyond, it is no small heap, and what its sub-slabs would save is small
 * beside what it holds; whole slabs serve it faster. 64 pages were too few
 * for 64 blocks of 8 B-8 KiB (some 100 pages of first sub-slabs): the
 * classes past the budget took a whole slab each, and 64 threads sharing
 * an instance held 391-402 KiB a thread beyond 1.5x live (bench mem),
 * 144-185 KiB with 128 (test_gpa_sub.c, threads sharing an instance). */
#define SUB_BUDGET 128

/* Pages of h's next sub-slab of cls, or 0 for a whole slab. The first holds
 * two blocks at least; none is over half a chunk. */
static unsigned sub_pages(const gpa_heap *h, unsigned cls) {
    unsigned k = h->subs[cls];
    size_t size = beam__gpa_class_size[cls];
    unsigned first = (unsigned)((2 * size + GPA_PAGE_SIZE - 1) / GPA_PAGE_SIZE);
    if (k + 1 > GPA_SUB_STEPS || h->sub_total >= SUB_BUDGET)
        return 0;
    return (first << k) < GPA_PAGES / 2 ? first << k : GPA_PAGES / 2;
}

/* Pages a sub-slab of cls starts at a multiple of: blocks must keep every
 * alignment their size has (beam__gpa_class_for relies on it). */
static unsigned sub_align(unsigned cls) {
    uint32_t size = beam__gpa_class_size[cls];
    uint32_t low = size & (0u - size);
    return low > GPA_PAGE_SIZE ? (unsigned)(low / GPA_PAGE_SIZE) : 1;
}

/* The first of n free pages of m at a multiple of align, or -1. */
static int mixed_room(const gpa_mixed *m, unsigned n, unsigned align) {
    uint32_t want = (1u << n) - 1;
    uint32_t avail = (uint32_t)(m->usable & ~m->taken);
    for (unsigned i = 0; i + n <= GPA_PAGES; i += align)
        if (((avail >> i) & want) == want)
            return (int)i;
    return -1;
}

/* Lock held: pages first .. first + n - 1 of m become a sub-slab of cls. */
static gpa_slab *sub_carve(gpa_state *st, gpa_mixed *m, unsigned first,
                           unsigned n, unsigned cls, gpa_block_info *info) {
    gpa_slab *s = &m->sub[first];
    GPA_ASSERT(gpa_where(s) == WHERE_POOL && s->used == 0);
    s->base = m->base + (size_t)first * GPA_PAGE_SIZE;
    s->seg = m->seg;
    s->next = s->prev = s->reclaim_next = NULL;
    beam__atomic_store_relaxed(&s->mixed, m);
    beam__atomic_store_release(&s->st, st);
    for (unsigned k = first; k < first + n; k++) {
        gpa_set_page(m->entry, k, (uint8_t)first);
        m->taken |= (uint16_t)(1u << k);
    }
    slab_format(s, cls, info, (size_t)n * GPA_PAGE_SIZE);
    return s;
}

/* Lock held: the pool's next slab (pool_pick) becomes a mixed chunk (with
 * the metadata of its last loan, or *spare). NULL when the pool is empty or
 * metadata is missing. */
static gpa_mixed *lend_pool_slab(gpa_state *st, gpa_mixed **spare) {
    gpa_slab *e = pool_pick(st);
    if (e == NULL)
        return NULL;
    gpa_mixed *m = beam__atomic_load_relaxed(&e->mixed);
    if (m == NULL && (m = *spare) == NULL)
        return NULL;
    if (m == *spare)
        *spare = NULL;
    pool_unlink(st, e);
    entry_mix(e, m, e->seg, 0xFFFF, false);
    mixed_list(st, m);
    return m;
}

/* Slabs (2 MiB) from which an instance's segments are big enough that
 * their slack matters little. */
#define FALLBACK_SLABS 32

/* Lock held: a new sub-slab of n pages for cls, in a chunk with room or a
 * pool slab lent out; NULL when there is neither. An instance of
 * FALLBACK_SLABS slabs or more with slabs in its pool lends one (of the
 * segment filled) before it takes other segments' slack: a sub-slab there
 * keeps a segment that may be free otherwise, while a pool slab's segment
 * is kept already: a live set's first sub-slabs, in the slack of segments
 * of a burst freed meanwhile, kept 4 to 8 MiB more (test_gpa_hoard.c). */
static gpa_slab *sub_find(gpa_state *st, unsigned cls, unsigned n,
                          gpa_block_info *info, gpa_mixed **spare) {
    unsigned align = sub_align(cls);
    bool lend_first = st->slabs >= FALLBACK_SLABS && st->pool != NULL;
    for (gpa_mixed *m = st->mixed; m != NULL; m = m->next) {
        if (lend_first && m->slack)
            continue;
        int first = mixed_room(m, n, align);
        if (first >= 0)
            return sub_carve(st, m, (unsigned)first, n, cls, info);
    }
    gpa_mixed *m = lend_pool_slab(st, spare);
    return m == NULL ? NULL : sub_carve(st, m, 0, n, cls, info);
}

/* Lock held, the pool empty: rather than a new segment, or failing when the
 * backing has nothing more, the biggest sub-slab of cls the mixed chunks
 * have room for (half a chunk at most). NULL when none. Not for a busy heap
 * (the sub-slab's frees would be slow), nor, unless out of memory, in an
 * instance of FALLBACK_SLABS slabs or more (sub_find). */
static gpa_slab *sub_fallback(gpa_state *st, unsigned cls, gpa_block_info *info,
                              unsigned *pages) {
    size_t size = beam__gpa_class_size[cls];
    unsigned least = (unsigned)((size + GPA_PAGE_SIZE - 1) / GPA_PAGE_SIZE);
    gpa_mixed *none = NULL;
    for (unsigned n = GPA_PAGES / 2; n >= least && n > 0; n /= 2) {
        gpa_slab *s = sub_find(st, cls, n, info, &none);
        if (s != NULL) {
            *pages = n;
            return s;
        }
    }
    return NULL;
}

/* How many slabs a refill takes off the reclaim stack at most: enough to
 * keep up with any rate of remote frees (a slab is pushed once per fill),
 * few enough to keep a refill short. */
#define RECLAIM_BATCH 32

/* Lock held: a slab with room from the partial list head, or NULL. */
static gpa_slab *partial_take(gpa_slab **head) {
    gpa_slab *s;
    while ((s = *head) != NULL) {
        gpa_list_unlink(head, s);
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
    return NULL;
}

/* Lock held: a partial slab of class cls with room, or NULL; whole slabs
 * first (their frees are the inline path's). whole: the class graduated,
 * and takes no sub-slab (taken again, partial sub-slabs kept a graduated
 * class on the chunk's slower free for good: over a backing that placed
 * segments so that sub-slabs served two classes, 17% of a million churn
 * frees). */
static gpa_slab *partial_find(gpa_state *st, unsigned cls, bool whole,
                              gpa_defer **defer) {
    beam__gpa_reclaim_drain(st, RECLAIM_BATCH, defer);
    gpa_slab *s = partial_take(&st->partial[cls]);
    if (!whole)
        return s != NULL ? s : partial_take(&st->partial_sub[cls]);
    /* Passed over, the sub-slabs still go once empty: one look per refill
     * at the first (found in review: left for a collection, they held
     * their pages). */
    if (st->partial_sub[cls] != NULL)
        partial_release_empty(st, &st->partial_sub[cls], st->partial_sub[cls],
                              defer);
    return s;
}

/* What a slab search lacked, to be taken with no lock held. */
typedef struct slab_need {
    gpa_block_info *info; /* tracked mode: records for the new slab */
    gpa_mixed *spare;     /* metadata for a chunk to lend */
    unsigned pages;       /* a sub-slab of this many pages; 0: a slab */
    unsigned carved;      /* pages of the slab found, a new sub-slab */
    bool stepped;         /* it is h's next step (sub_pages) */
    bool small_ok;        /* a sub-slab will do instead of a slab, in a
                             small instance (FALLBACK_SLABS) */
    bool any_room;        /* the same, in any instance (out of memory) */
    bool whole;           /* the class graduated: no partial sub-slab */
} slab_need;

/* Short of memory: the next look takes any room, a whole slab or what a
 * chunk has, a partial sub-slab too. */
static void need_any_room(slab_need *need) {
    need->pages = 0;
    need->any_room = true;
    need->whole = false;
}

/* Lock held: a slab of class cls with room, or NULL when the partial list,
 * the mixed chunks and the pool have none (or tracking needs info and has
 * none). */
static gpa_slab *slab_find(gpa_state *st, unsigned cls, slab_need *need,
                           gpa_defer **defer) {
    gpa_slab *s = partial_find(st, cls, need->whole, defer);
    if (s != NULL)
        return s;
    if (st->track && need->info == NULL)
        return NULL;
    if (need->pages != 0) {
        s = sub_find(st, cls, need->pages, need->info, &need->spare);
        need->carved = s != NULL ? need->pages : 0;
        need->stepped = s != NULL;
    } else if (st->pool != NULL) {
        s = pool_take(st);
        slab_format(s, cls, need->info, GPA_SLAB_SIZE);
    } else if ((need->small_ok && st->slabs < FALLBACK_SLABS) ||
               need->any_room) {
        s = sub_fallback(st, cls, need->info, &need->carved);
    }
    if (s != NULL && st->track) {
        memset(need->info, 0, info_bytes(s));
        need->info = NULL;
    }
    return s;
}

/* Lock held: slabs in the next segment, for h wanting pages (0: a slab).
 * The first segment is slack alone, room for sub-slabs; the next ones grow
 * with the instance by an eighth of its slabs, small enough that what a
 * segment holds unused stays a small part of the whole (with the slack in
 * use, a small segment costs no more than a big one), and by a quarter
 * from 32 slabs on (fewer segments: fewer headers and slack pages touched,
 * a lower peak RSS). A heap with a busy class (or h NULL: a medium slab,
 * which is whole) uses little of the slack: its segments have three slabs at
 * least, so that the slack is a quarter of them at most (medium slabs in
 * one-slab segments held twice their size: 64 medium blocks of up to 64
 * KiB, 1.8 MB live, held 3.5 MB; 2.7 with three). Over another instance the
 * first segment is not slack alone: that instance serves 64 KiB as one aligned
 * slab of its own, whose chunk is then not ours to claim (found in
 * review). */
static unsigned segment_slabs(const gpa_state *st, const gpa_heap *h,
                              unsigned pages) {
    size_t n = st->slabs / (st->slabs < 32 ? 8 : 4);
    if ((h == NULL || h->graduated) && n < 3)
        n = 3;
    if (n == 0 && (st->segments != NULL || pages == 0 ||
                   st->backing.vtable == &beam__gpa_vtable))
        n = 1;
    return n > GPA_MAX_SEGMENT_SLABS ? GPA_MAX_SEGMENT_SLABS : (unsigned)n;
}

/* What was left over from a slab search goes back (no lock held). */
static void slab_need_drop(gpa_state *st, slab_need *need, size_t info_len) {
    if (need->info != NULL) {
        gpa_meta_free(st, need->info, info_len, BEAM_ALIGNOF(gpa_block_info));
    }
    if (need->spare != NULL)
        mixed_meta_drop(st, need->spare);
}

/* What a look that found no slab lacked, to be taken with no lock held
 * before the next. */
typedef enum slab_lack {
    LACK_ROOM,    /* nothing to take: pages taken meanwhile, say */
    LACK_INFO,    /* a tracked instance's block records for a new slab */
    LACK_SEGMENT, /* the pool is empty */
    LACK_META,    /* metadata for a pool slab to lend as a mixed chunk */
} slab_lack;

/* One look, under the lock: a segment taken since the last joins the pool
 * first; then a slab of cls with room, which becomes h's current, or NULL
 * and, in *lack, what was lacking (*n: the slabs of a segment, if that;
 * both mean nothing when a slab is found). */
static gpa_slab *slab_look(gpa_heap *h, unsigned cls, slab_need *need,
                           gpa_segment **fresh, gpa_defer **defer,
                           slab_lack *lack, unsigned *n) {
    gpa_state *st = h->st;
    gpa_lock(st);
    if (*fresh != NULL) {
        segment_insert(st, *fresh);
        *fresh = NULL;
    }
    gpa_slab *s = slab_find(st, cls, need, defer);
    *lack = LACK_ROOM;
    if (s != NULL) {
        gpa_set_where(s, WHERE_CUR);
        beam__atomic_store_relaxed(&s->heap, h);
    } else if (st->track && need->info == NULL) {
        /* Without records for a new slab, a tracked instance has not
         * looked beyond the partial list: neither a segment nor a chunk's
         * metadata may be missing (found with a test: it took a segment it
         * had room for). */
        *lack = LACK_INFO;
    } else if (st->pool == NULL) {
        *lack = LACK_SEGMENT;
    } else if (need->pages != 0 && need->spare == NULL &&
               beam__atomic_load_relaxed(&pool_pick(st)->mixed) == NULL) {
        *lack = LACK_META;
    }
    *n = segment_slabs(st, h, need->pages);
    gpa_unlock(st);
    return s;
}

/* No lock held: take what a look lacked (another thread may fill the gap
 * meanwhile; the next look sees). false: out of memory, give up. */
static bool slab_lack_take(gpa_state *st, slab_need *need, slab_lack lack,
                           unsigned n, gpa_segment **fresh, size_t info_len) {
    switch (lack) {
    case LACK_INFO:
        need->info = (gpa_block_info *)gpa_meta_alloc(
            st, info_len, BEAM_ALIGNOF(gpa_block_info));
        if (need->info == NULL && need->whole) {
            /* A partial sub-slab, passed over, needs no new records: it
             * will do now (found in review: a tracked instance short of
             * memory failed where it had room). */
            need_any_room(need);
            return true;
        }
        return need->info != NULL;
    case LACK_META:
        if ((need->spare = mixed_meta_new(st)) == NULL)
            need->pages = 0; /* no metadata for a chunk: a whole slab */
        return true;
    case LACK_SEGMENT:
        if ((*fresh = segment_new(st, n)) != NULL)
            return true;
        if (need->any_room && need->pages == 0)
            return false;
        /* One more look, for any room: a whole slab, or what the fallback
         * finds in a chunk (found in review: with a sub-slab step asked
         * for, the fallback was never tried, and a refused backing failed
         * allocations the pages held could serve). */
        need_any_room(need);
        return true;
    case LACK_ROOM:
        break;
    }
    return true;
}

/* How many reclaim-stack slabs a lock hold parks before a segment: a
 * bound on the pause (a slab partly free walks its remote frees). */
#define RECLAIM_GROWTH_BATCH 256

/* Lock held: reclaim-stack slabs are parked, up to max, until one is in
 * the pool (a wholly free one, or a segment's worth that stays there);
 * how many were parked. */
static size_t reclaim_drain_to_pool(gpa_state *st, size_t max,
                                    gpa_defer **defer) {
    size_t n = 0;
    while (n < max && st->pool == NULL &&
           beam__atomic_load_relaxed(&st->reclaim) != NULL) {
        beam__gpa_reclaim_drain(st, 1, defer);
        n++;
    }
    return n;
}

/* No lock held: before the instance takes a segment from its backing, the
 * slabs other threads freed into (the reclaim stack: wholly free ones
 * among them, which go to the pool) are parked, and kept slabs other
 * threads emptied in idle heaps go back (beam__gpa_shed_kept; see "Kept
 * slabs"). A refill parks only RECLAIM_BATCH of them, and a medium slab
 * none: with partly free slabs of other classes on top, or medium blocks
 * alone, a segment was taken for every slab while as many wholly free
 * ones waited there (a medium burst of 2,200 blocks of 32 KiB grew the
 * backing by 68 MiB, found in review). Batches, the lock dropped in
 * between; until a slab is in the pool (then no segment is needed), the
 * stack is empty, or after as many slabs as the instance had (pushes go
 * on meanwhile: each needs a slab filled). Not the whole stack: each
 * wholly free slab parked may give its segment back, and one allocation
 * gave 500 MiB back, 89 ms in munmap (found in review); the rest wait for
 * the next growth, the refills or a collect, as before. */
static void before_growth(gpa_state *st, gpa_heap *h) {
    beam__gpa_shed_kept(st, h);
    size_t left = SIZE_MAX;
    bool pooled = false;
    while (!pooled && left != 0 &&
           beam__atomic_load_relaxed(&st->reclaim) != NULL) {
        gpa_defer *defer = NULL;
        gpa_lock(st);
        if (left == SIZE_MAX)
            left = st->slabs + 1;
        left -= reclaim_drain_to_pool(
            st, left < RECLAIM_GROWTH_BATCH ? left : RECLAIM_GROWTH_BATCH,
            &defer);
        pooled = st->pool != NULL;
        gpa_unlock(st);
        beam__gpa_defer_run(st, defer);
    }
}

/* How many looks for a slab with room a refill may miss (the looks made
 * before a tracked instance has its block records are not counted: they
 * saw the partial lists only; two for a graduated class refused its
 * records), taking what was missing in between. A fresh
 * instance whose first segment's slack is all claimed by neighbours in the
 * backing (seen under valgrind) misses three times: the slack segment,
 * then one with a slab whose slack is claimed too, then a chunk's metadata
 * to lend that slab; its fourth look finds the sub-slab. The last two are
 * made to settle for a whole slab, so six is the least that serves it. */
#define SLAB_MISSES 6

gpa_slab *beam__gpa_slab_acquire(gpa_heap *h, unsigned cls) {
    gpa_state *st = h->st;
    gpa_defer *defer = NULL;
    /* A busy class's slabs are whole (sub_pages says 0), none of them a
     * partial sub-slab (whole); a heap with one takes no sub-slab in place
     * of a whole slab (small_ok), and takes whole segments (see
     * segment_slabs). */
    slab_need need = {.pages = sub_pages(h, cls),
                      .small_ok = !h->graduated,
                      .whole = gpa_class_graduated(h, cls)};
    size_t info_len =
        (GPA_SLAB_SIZE / beam__gpa_class_size[cls]) * sizeof(gpa_block_info);
    gpa_segment *fresh = NULL;
    gpa_slab *s = NULL;
    bool shed = false;
    for (int misses = 0; misses < SLAB_MISSES;) {
        /* The last looks settle for a whole slab: a sub-slab may keep
         * missing (pages taken meanwhile by other threads). */
        if (misses >= SLAB_MISSES - 2)
            need.pages = 0;
        slab_lack lack;
        unsigned n;
        s = slab_look(h, cls, &need, &fresh, &defer, &lack, &n);
        if (s != NULL)
            break;
        if (lack == LACK_SEGMENT && !shed) {
            /* Before the backing is asked for more: kept slabs that
             * other threads emptied, in idle heaps (see "Kept slabs"). */
            shed = true;
            before_growth(st, h);
            continue;
        }
        if (!slab_lack_take(st, &need, lack, n, &fresh, info_len))
            break;
        if (lack != LACK_INFO) /* (at most twice: see above) */
            misses++;
    }
    if (fresh != NULL) { /* out of looks: keep it for the next refill */
        gpa_lock(st);
        segment_insert(st, fresh);
        gpa_unlock(st);
    }
    if (need.stepped) {
        h->subs[cls]++;
        h->sub_total += need.carved;
    }
    slab_need_drop(st, &need, info_len);
    beam__gpa_defer_run(st, defer);
    return s;
}

gpa_slab *beam__gpa_pool_take(gpa_state *st) {
    GPA_ASSERT_LOCKED(st);
    if (st->pool == NULL) {
        /* The segment is taken with the lock dropped (rule 2); the pool
         * may have filled meanwhile, and has a slab either way after the
         * insert. (A medium slab is a whole slab: never the slack.) */
        gpa_unlock(st);
        /* Slabs other threads freed first, as a small block's refill
         * does. */
        before_growth(st, NULL);
        gpa_lock(st);
        if (st->pool != NULL)
            return pool_take(st);
        unsigned n = segment_slabs(st, NULL, 0);
        gpa_unlock(st);
        gpa_segment *fresh = segment_new(st, n);
        gpa_lock(st);
        if (fresh == NULL)
            return NULL;
        segment_insert(st, fresh);
    }
    return pool_take(st);
}
