/*
 * Block sizes of a general purpose allocator instance from an address
 * alone, so that malloc-style blocks need no header (see malloc.c).
 *
 * Kept apart from the allocator's own files on purpose, and small: it
 * relies only on these internals of gpa_internal.h: beam__gpa_state_of,
 * beam__gpa_slab_mine, beam__gpa_block_index,
 * gpa_small_live, slab->size, st->track, slab->info[i].len and .alignment
 * (tracked mode), beam__gpa_large_find under gpa_lock(st) (its .len,
 * .alignment), gpa_where and beam__gpa_medium_block under gpa_lock(st)
 * (medium slabs), GPA_MEDIUM_MAX and GPA_PAGE_SIZE, and the class table
 * beam__gpa_class_size with GPA_CLASSES (each class serves every length up
 * to its size at alignment 16, the smallest class that fits being the one
 * chosen). The common case (small_entry) takes the inline free's own:
 * gpa_map_slot_masked, fast_span (!= 0 only on an untracked class slab
 * outside the pool), beam__gpa_at_block_in_entry, beam__gpa_tag and
 * beam__gpa_release (gpa_fast.h). beam_malloc's direct path allocates
 * as the vtable does (beam__gpa_alloc_any, gpa_fast.h); a free it cannot
 * settle goes through the vtable's. Blocks it does not hold, of the
 * process-wide instance, are asked of the library's other copies
 * (beam__nif_size_in_other_copy).
 */
#include "gpa_msize.h"

#include "gpa_fast.h"
#include "gpa_internal.h"

/* The class size for lengths up to BEAM_GPA_SMALL_MAX, by 16-byte step. */
#define STEPS (BEAM_GPA_SMALL_MAX / 16 + 1)
static uint16_t class_by_step[STEPS];

__attribute__((constructor)) static void fill_steps(void) {
    unsigned c = 0;
    for (size_t i = 0; i < STEPS; i++) {
        size_t len = i == 0 ? 16 : i * 16;
        while (c + 1 < GPA_CLASSES && beam__gpa_class_size[c] < len)
            c++;
        class_by_step[i] = (uint16_t)beam__gpa_class_size[c];
    }
}

/* Inline in beam__gpa_malloc: a call fewer per malloc. */
static BEAM__ALWAYS_INLINE size_t good_size(const beam_gpa_t *gpa, size_t n) {
    if (n > BEAM__MAX_LEN - 15)
        return 0;
    if (gpa->flags & (BEAM_GPA_TRACK_SITES | BEAM_GPA_SAFE))
        return n == 0 ? 1 : n;
    if (BEAM__LIKELY(n <= BEAM_GPA_SMALL_MAX))
        return class_by_step[(n + 15) >> 4];
    if (n <= GPA_MEDIUM_MAX) /* a run of whole pages */
        return (size_t)beam__align_up(n, GPA_PAGE_SIZE);
    return (size_t)beam__align_up(n, 16);
}

void *beam__gpa_malloc(beam_gpa_t *gpa, size_t n, uintptr_t ret) {
    size_t good = good_size(gpa, n);
    if (BEAM__UNLIKELY(good == 0))
        return NULL;
    /* What the instance's vtable alloc runs, without the indirect call. */
    return beam__gpa_alloc_any(gpa, good, 16, ret);
}

size_t beam__gpa_good_size(const beam_gpa_t *gpa, size_t n) {
    return good_size(gpa, n);
}

bool beam__gpa_stateless(beam_gpa_t *gpa) {
    return beam__gpa_state_of(gpa) == NULL;
}

/* A block the process-wide instance does not hold: another copy of the
 * module's library may (an upgrade's taken-over resource: gpa.c's
 * freed_by_other_copy) and sizes it, so that beam_msize, beam_mfree and
 * beam_mrealloc of it work as a sized free does. */
static bool sized_by_other_copy(beam_gpa_t *gpa, const void *p, bool owned,
                                size_t *len, size_t *alignment) {
    return gpa == &beam_general_purpose_allocator_instance &&
           beam__nif_size_in_other_copy(p, owned, len, alignment);
}

/* The common case first, with the inline free's own checks, on the
 * slab's first line alone (the line the free reads anyway): p is a block
 * of an untracked class slab of st (fast_span != 0 only there), whose map
 * entry is p's own (not a sub-slab), at a block boundary below bump. Its
 * length is the class size. NULL: the careful path below decides (a
 * miss changes nothing). slab_mine's second look under the lock is for a
 * pointer that reads as no block; this one reads as one. */
static BEAM__ALWAYS_INLINE gpa_slab *small_entry(gpa_state *st, const void *p) {
    gpa_slab *s = gpa_map_slot_masked(p);
    if (BEAM__LIKELY(s != NULL && beam__gpa_owner(s) == st &&
                     s->fast_span != 0 && beam__gpa_at_block_in_entry(s, p)))
        return s;
    return NULL;
}

/* beam_mfree's common case, in one lookup: p is a live block of one of
 * gpa's untracked class slabs (every check of the instance's inline free
 * passes), freed as its class size, the length beam_malloc asked for.
 * false: nothing done. */
static BEAM__ALWAYS_INLINE bool free_unsized(beam_gpa_t *gpa, void *p) {
    gpa_state *st = beam__gpa_state_of(gpa);
    if (BEAM__UNLIKELY(st == NULL))
        return false;
    gpa_slab *s = small_entry(st, p);
    /* Not free already (its tag): the inline free's last check. */
    if (s == NULL || gpa_tag_at(p) == beam__gpa_tag(st, p))
        return false;
    beam__gpa_release(st, s, (void **)p, s->size);
    return true;
}

/* beam__gpa_block_size past small_entry: every other case, and misuse.
 * Apart, so that the common case saves no registers. */
static BEAM__NOINLINE bool block_size_slow(beam_gpa_t *gpa, gpa_state *st,
                                           const void *p, bool owned,
                                           size_t *len, size_t *alignment) {
    if (st == NULL)
        return sized_by_other_copy(gpa, p, owned, len, alignment);
    gpa_slab *s = beam__gpa_slab_mine(st, p);
    if (s != NULL && gpa_where(s) == WHERE_MEDIUM) {
        /* A medium block: its pages, which its free accepts as a length. */
        gpa_lock(st);
        size_t bytes = beam__gpa_medium_block(st, s, p);
        gpa_unlock(st);
        *len = bytes;
        *alignment = 16;
        return bytes != 0;
    }
    if (s != NULL) {
        long idx = beam__gpa_block_index(s, p);
        if (!gpa_small_live(st, s, p, idx, owned))
            return false;
        if (st->track) {
            const gpa_block_info *i = &s->info[idx];
            *len = i->len;
            *alignment = i->alignment;
            return true;
        }
        /* Untracked, the class is all the instance knows; its free checks
         * lengths by class, so the class size is a length it accepts. */
        *len = s->size;
        *alignment = 16;
        return true;
    }
    /* Not in one of our slabs: a large block, perhaps (even inside another
     * instance's slab, when that instance is our backing). */
    gpa_lock(st);
    const gpa_large *e = beam__gpa_large_find(st, p);
    bool found = e != NULL;
    if (found) {
        *len = e->len;
        *alignment = e->alignment;
    }
    gpa_unlock(st);
    return found || sized_by_other_copy(gpa, p, owned, len, alignment);
}

bool beam__gpa_block_size(beam_gpa_t *gpa, const void *p, bool owned,
                          size_t *len, size_t *alignment) {
    if (p == NULL)
        return false;
    gpa_state *st = beam__gpa_state_of(gpa);
    gpa_slab *s = st != NULL ? small_entry(st, p) : NULL;
    if (BEAM__LIKELY(s != NULL) &&
        !(owned && gpa_tag_at(p) == beam__gpa_tag(st, p))) {
        *len = s->size;
        *alignment = 16;
        return true;
    }
    return block_size_slow(gpa, st, p, owned, len, alignment);
}

/* a's free of p as gpa holds it (found: len and alignment), else gpa's
 * own free's report of what p is. */
static inline void free_as_held(beam_allocator_t a, beam_gpa_t *gpa, void *p,
                                bool found, size_t len, size_t alignment,
                                uintptr_t ret) {
    if (!found) {
        /* Not a live block: the instance's free says what it is instead
         * (double free, foreign pointer, inside a block) and counts it.
         * The instance's own, also under a fault-injection check (a, the
         * plan allocator, found gpa by a block p lies in): the plan knows
         * no block at p and passed it to the call's allocator, whose
         * report, a raw one's, blamed a whole block of an instance, of
         * length SIZE_MAX (found in review). */
        beam__gpa_vtable.free(gpa, p, BEAM__GPA_LEN_UNSIZED, 16, ret);
        return;
    }
    a.vtable->free(a.ctx, p, len, alignment, ret);
}

void beam__gpa_mfree_sized(beam_allocator_t a, beam_gpa_t *gpa, void *p,
                           uintptr_t ret) {
    size_t len = 0, alignment = 0;
    bool found = beam__gpa_block_size(gpa, p, true, &len, &alignment);
    free_as_held(a, gpa, p, found, len, alignment, ret);
}

/* Everything but free_unsized's case, on gpa itself. Straight to
 * block_size_slow: free_unsized has seen what beam__gpa_block_size's
 * small_entry would (no such block, or one whose tag says freed), and a
 * second lookup would answer the same (the caller owns p). */
static BEAM__NOINLINE void mfree_sized(beam_gpa_t *gpa, void *p,
                                       uintptr_t ret) {
    beam_allocator_t self = {gpa, &beam__gpa_vtable};
    size_t len = 0, alignment = 0;
    bool found = block_size_slow(gpa, beam__gpa_state_of(gpa), p, true, &len,
                                 &alignment);
    free_as_held(self, gpa, p, found, len, alignment, ret);
}

void beam__gpa_mfree(beam_gpa_t *gpa, void *p, uintptr_t ret) {
    if (BEAM__LIKELY(free_unsized(gpa, p)))
        return;
    mfree_sized(gpa, p, ret);
}

/* beam__gpa_msize past small_entry. */
static BEAM__NOINLINE size_t msize_slow(beam_gpa_t *gpa, gpa_state *st,
                                        const void *p, uintptr_t ret) {
    size_t len, alignment;
    if (block_size_slow(gpa, st, p, false, &len, &alignment))
        return len;
    beam__report_not_gpa_block("beam_msize", p, ret);
    return 0;
}

size_t beam__gpa_msize(beam_gpa_t *gpa, const void *p, uintptr_t ret) {
    gpa_state *st = beam__gpa_state_of(gpa);
    gpa_slab *s = st != NULL ? small_entry(st, p) : NULL;
    if (BEAM__LIKELY(s != NULL))
        return s->size;
    return msize_slow(gpa, st, p, ret);
}

bool beam__gpa_realloc_ok(beam_gpa_t *gpa, const void *p, size_t len,
                          size_t alignment, uintptr_t ret) {
    size_t have, have_alignment;
    gpa_state *st = beam__gpa_state_of(gpa);
    /* (Stateless, the instance holds no block: another copy's is one
     * its remap passed on, not asked about here.) */
    if (st != NULL &&
        beam__gpa_block_size(gpa, p, true, &have, &have_alignment)) {
        /* Untracked, a small block's length is its class (len up to it
         * is what its free accepts); tracked, the record is exact, and
         * the move's free would report a difference anyway: said here,
         * once, and nothing moves. */
        if (st->track ? len == have && alignment == have_alignment
                      : len <= have)
            return true;
        beam__gpa_misuse(st, GPA_SAID_MOVE_WRONG_LENGTH, p, len, alignment,
                         ret);
        return false;
    }
    if (st == NULL)
        beam__gpa_misuse_stateless(gpa->flags, "remap or realloc", p, len,
                                   alignment, ret);
    else
        beam__gpa_misuse(st, GPA_SAID_MOVE_NOT_LIVE, p, len, alignment, ret);
    return false;
}
