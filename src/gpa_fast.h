/*
 * The general purpose allocator's fast paths, inline (design: gpa_internal.h).
 *
 * Two callers share them: the vtable functions of gpa.c, and the calling
 * helpers of core.c, which skip the vtable when the allocator is a GPA (an
 * indirect call, a second frame and an argument shuffle fewer per call).
 * The helpers stay out of line, so reports still name the user's call
 * site. Each fast path either settles the call or leaves it wholly to the
 * general path, which checks everything again: a miss changes nothing.
 *
 * Every check of the general path is made here too, on the slab's first
 * cache line: the block is one of ours (address map, owner), of this class
 * (length range), at a block boundary below bump, and not already free (its
 * tag).
 *
 * Medium blocks take a shorter way too: their lengths go from the helpers
 * straight to gpa_medium.c (no class search), and a free whose map entry
 * is a medium slab of this instance goes straight to the medium free,
 * which makes every check under the lock.
 */
#ifndef BEAM_ALLOC_GPA_FAST_H
#define BEAM_ALLOC_GPA_FAST_H

#include "gpa_internal.h"

/* Alignments the fast paths serve: the powers of two up to GPA_MIN_BLOCK. */
static inline bool gpa_fast_alignment(size_t alignment) {
    return beam__is_pow2_at_most(alignment, GPA_MIN_BLOCK);
}

/* This thread's first slot: the heap of the instance it used last. One
 * thread-local access per call: in a dlopen'ed NIF each is a call (a TLS
 * descriptor), and the compiler, left alone, makes one per field read. The
 * empty asm hands it an address it cannot recompute. In a NIF whose slots
 * are in static TLS, the thread pointer plus their offset, no call. */
static inline gpa_tls_slot *gpa_fast_slot(void) {
    gpa_tls_slot *slot;
#ifdef GPA_TLS_OFFSET
    slot = (gpa_tls_slot *)beam__tls_cached(
        beam__atomic_load_relaxed(&beam__gpa_tls_offset));
    if (BEAM__LIKELY(slot != NULL))
        return slot;
#endif
    slot = &beam__gpa_tls[0];
    __asm__("" : "+r"(slot));
    return slot;
}

/* The slot for the inline fast paths: gpa_fast_slot, but NULL where the
 * cache does not answer and the ordinary access is a plain call
 * (os/tls.h): the fast path then misses, and the call goes on, without a
 * call of its own, to the out-of-line path it misses to (the general
 * allocation; beam__gpa_free_unslotted), which finds the slot the
 * ordinary way. That happens in a thread's first calls, before the offset
 * is learned, and in a library in dynamic TLS. */
static BEAM__ALWAYS_INLINE gpa_tls_slot *gpa_inline_slot(void) {
#ifdef BEAM__TLS_PLAIN_CALL
    return (gpa_tls_slot *)beam__tls_cached(
        beam__atomic_load_relaxed(&beam__gpa_tls_offset));
#else
    return gpa_fast_slot();
#endif
}

/* Whether gpa_inline_slot gave no slot (never, but with a plain call). */
#ifdef BEAM__TLS_PLAIN_CALL
#define GPA_NO_INLINE_SLOT(slot) ((slot) == NULL)
#else
#define GPA_NO_INLINE_SLOT(slot) false
#endif

/* Hand out block b of s (popped from its free list, or bumped): the one
 * place every path accounts for a block. */
static BEAM__ALWAYS_INLINE void gpa_hand_out(gpa_heap *h, gpa_slab *s, void **b,
                                             size_t len) {
    BEAM__ASAN_UNPOISON(b, s->size); /* see beam__gpa_release */
    gpa_untag(b);                    /* fresh memory may hold an old tag */
    s->used++;
    beam__count_alloc_blind(&h->stats, len);
}

/* Block b (tagged free) back on s's free list, by its owner: the one
 * place a free puts a block on a slab's own list (the inline free into a
 * current slab, a free into a kept one). */
static BEAM__ALWAYS_INLINE void gpa_take_back(gpa_slab *s, void **b) {
    GPA_ASSERT(s->used > 0);
    gpa_set_link(b, s->free);
    s->free = b;
    s->used--;
}

/* A small block off the current slab's free list of this thread's heap, or
 * NULL: then the general path decides (anything else: no heap yet, an
 * empty list, a tracked instance (its fast_id matches no slot), a
 * collector at work, odd arguments). len 0 and bad alignments fall
 * through to it too. */
static BEAM__ALWAYS_INLINE void *
beam__gpa_alloc_fast(beam_gpa_t *gpa, size_t len, size_t alignment) {
    gpa_state *st = beam__gpa_state_of(gpa);
    if (BEAM__UNLIKELY(len - 1 >= BEAM_GPA_SMALL_MAX ||
                       !gpa_fast_alignment(alignment) || st == NULL))
        return NULL;
    gpa_tls_slot *slot = gpa_inline_slot();
    if (BEAM__UNLIKELY(GPA_NO_INLINE_SLOT(slot) || slot->id != st->fast_id))
        return NULL;
    gpa_heap *h = slot->heap;
    void **b = NULL;
    gpa_heap_enter_fast(h);
    if (BEAM__LIKELY(!gpa_heap_revoked(h))) {
        /* (len + 15) >> 4 as 1 + ((len - 1) >> 4): len - 1 is at hand,
         * from the range test. */
        gpa_slab *s = h->cur[beam__gpa_class_by_16[1 + ((len - 1) >> 4)]];
        b = s->free;
        GPA_ASSERT(b == NULL || s->fast_span != 0);
        if (BEAM__LIKELY(b != NULL)) {
            s->free = (void **)gpa_link(b);
            gpa_hand_out(h, s, b, len);
        } else {
            b = NULL;
        }
    }
    gpa_heap_leave_fast(h);
    return b;
}

/* A medium length (above the slab classes, up to a slab) at an alignment
 * the fast paths serve: the helpers send such a call straight to
 * beam__gpa_medium_alloc_entry, past the general path's class search. */
static inline bool beam__gpa_is_medium_call(size_t len, size_t alignment) {
    return len - (BEAM_GPA_SMALL_MAX + 1) <
               GPA_MEDIUM_MAX - BEAM_GPA_SMALL_MAX &&
           gpa_fast_alignment(alignment);
}

/* Out of line (gpa_medium.c): a medium block for a length
 * beam__gpa_is_medium_call accepted; what it cannot serve (no state yet, a
 * tracked instance) goes on to the general path. It takes the helpers'
 * arguments where they hold them (vt, the GPA's vtable, unused): a tail
 * call from them then moves no register, on the small blocks' path
 * included. */
BEAM__HIDDEN void *beam__gpa_medium_alloc_entry(void *gpa,
                                                const beam_allocator_vtable *vt,
                                                size_t len, size_t alignment,
                                                uintptr_t ret);

/* The general paths (gpa.c): every case, checks included; the vtable runs
 * them when the fast paths above and below do not settle a call, and the
 * helpers go to them directly (a second try of the fast path would only
 * miss again). */
BEAM__HIDDEN void *beam__gpa_alloc_general(beam_gpa_t *gpa, size_t len,
                                           size_t alignment, uintptr_t ret);
BEAM__HIDDEN void beam__gpa_free_general(beam_gpa_t *gpa, void *mem, size_t len,
                                         size_t alignment, uintptr_t ret);

/* An instance's whole allocation, as its vtable runs it: the inline fast
 * path, then the medium or the general one. The vtable's alloc (gpa.c)
 * and beam_malloc's direct path (gpa_msize.c) share it, so that a check
 * added here reaches both. */
static BEAM__ALWAYS_INLINE void *beam__gpa_alloc_any(beam_gpa_t *gpa,
                                                     size_t len,
                                                     size_t alignment,
                                                     uintptr_t ret) {
    void *b = beam__gpa_alloc_fast(gpa, len, alignment);
    if (BEAM__LIKELY(b != NULL))
        return b;
    if (beam__gpa_is_medium_call(len, alignment))
        return beam__gpa_medium_alloc_entry(gpa, &beam__gpa_vtable, len,
                                            alignment, ret);
    return beam__gpa_alloc_general(gpa, len, alignment, ret);
}

/* Out of line (gpa.c): a free into a slab this thread's heap h does not
 * own. */
BEAM__HIDDEN void beam__gpa_free_elsewhere(gpa_state *st, gpa_slab *s, void **b,
                                           size_t len, gpa_heap *h);

/* A free by h's thread into s, whose heap field o it read, that is a plain
 * push on s's own list: s is kept by h and keeps a live block after it
 * (one more than this one is live, none waiting in thread_free). With
 * 100,000 blocks live nearly every free lands in a kept slab; out of line
 * (beam__gpa_free_elsewhere) each took some 60 instructions more. A free
 * that may leave s with no live block goes there: it parks s. */
static BEAM__ALWAYS_INLINE bool gpa_kept_plain_free(gpa_heap *h, gpa_slab *s,
                                                    gpa_heap *o) {
    return o == gpa_kept_by(h) && s->used > 1 &&
           beam__atomic_load_relaxed(&s->thread_free) == 0;
}

/* A free by h, this thread's heap of st, of block b of slab s (tagged
 * free): to the slab's own list when h owns or keeps it (but a kept slab's
 * last live block), else through free_elsewhere. No call but, rarely, the
 * publication of the stats. */
static BEAM__ALWAYS_INLINE void
gpa_release_by(gpa_state *st, gpa_slab *s, void **b, size_t len, gpa_heap *h) {
    gpa_heap_enter_fast(h);
    if (BEAM__LIKELY(!gpa_heap_revoked(h))) {
        gpa_heap *o = beam__atomic_load_relaxed(&s->heap);
        if (BEAM__LIKELY(o == h || gpa_kept_plain_free(h, s, o))) {
            GPA_ASSERT(gpa_where(s) == (o == h ? WHERE_CUR : WHERE_KEPT));
            gpa_take_back(s, b);
            gpa_heap_leave_fast(h);
            beam__count_free(&h->stats, &st->peak, len);
            return;
        }
    }
    gpa_heap_leave_fast(h);
    beam__gpa_free_elsewhere(st, s, b, len, h);
}

/* Out of line (gpa.c): a free by a thread whose first slot is not st's. */
BEAM__HIDDEN void beam__gpa_free_unslotted(gpa_state *st, gpa_slab *s, void **b,
                                           size_t len);

/* The block b of slab s passed every check: tag it free and give it back
 * through this thread's heap of st (gpa_release_by), found in the first
 * slot, else out of line. */
static BEAM__ALWAYS_INLINE void beam__gpa_release(gpa_state *st, gpa_slab *s,
                                                  void **b, size_t len) {
    /* All of it, before it is on any list, where another thread may take
     * it (its owner's later shadow writes then follow this one through
     * the list's atomics); the link and the tag go past ASan. */
    BEAM__ASAN_POISON(b, s->size);
    gpa_set_tag(b, beam__gpa_tag(st, b));
    gpa_tls_slot *slot = gpa_inline_slot();
    if (BEAM__UNLIKELY(GPA_NO_INLINE_SLOT(slot) || slot->id != st->id)) {
        beam__gpa_free_unslotted(st, s, b, len);
        return;
    }
    gpa_release_by(st, s, b, len, slot->heap);
}

/* Every check of a small free on slab s (a slab, or a sub-slab): ours
 * (owner), of this class, at a block boundary below bump, not free. The
 * class check is a range test on the slab: prev_size < len <= size is what
 * beam__gpa_class_for(len, alignment) == s->cls means for alignments up to
 * GPA_MIN_BLOCK, without the table; with fast_span 0 (a tracked slab, whose
 * exact lengths the general path checks, or a map entry with no blocks of
 * its own) no length passes. It also rejects len 0, as the helpers must. */
static BEAM__ALWAYS_INLINE bool gpa_fast_free_ok(gpa_state *st, gpa_slab *s,
                                                 void **b, size_t len) {
    return beam__gpa_owner(s) == st &&
           len - s->prev_size - 1 < (size_t)s->fast_span &&
           beam__gpa_at_block(s, b) && gpa_tag_at(b) != beam__gpa_tag(st, b);
}

/* The same for s, b's entry in the map (gpa_map_slot_masked): b's offset
 * in s is its low bits; a sub-slab's chunk entry, the one entry whose
 * blocks are not at that offset, fails the range test (fast_span 0). The
 * at-block test (bump) comes before the tag is read: b may be a pointer
 * above the map's reach whose masked entry is another's. */
static BEAM__ALWAYS_INLINE bool
gpa_fast_free_ok_entry(gpa_state *st, gpa_slab *s, void **b, size_t len) {
    /* (Each test likely on its own: the passing free then runs straight
     * through, each miss a branch off it.) */
    return BEAM__LIKELY(beam__gpa_owner(s) == st) &&
           BEAM__LIKELY(len - s->prev_size - 1 < (size_t)s->fast_span) &&
           BEAM__LIKELY(beam__gpa_at_block_in_entry(s, b)) &&
           BEAM__LIKELY(gpa_tag_at(b) != beam__gpa_tag(st, b));
}

/* Out of line (gpa.c): the free of a block in a sub-slab, with every
 * check of the inline free; what they do not settle goes on to the
 * general path. vt (unused) keeps the helpers' arguments where they hold
 * them, as beam__gpa_medium_alloc_entry does. */
BEAM__HIDDEN void beam__gpa_free_in_chunk(beam_gpa_t *gpa,
                                          const beam_allocator_vtable *vt,
                                          void *mem, size_t len,
                                          size_t alignment, uintptr_t ret);

/* Free a small untracked block when every check passes, or hand a block
 * in a chunk cut into sub-slabs to beam__gpa_free_in_chunk (then true, as
 * a tail call: the inline free needs no stack frame of its own); false
 * leaves the call, misuse included, to the general path. */
static BEAM__ALWAYS_INLINE bool beam__gpa_free_fast(beam_gpa_t *gpa, void *mem,
                                                    size_t len,
                                                    size_t alignment,
                                                    uintptr_t ret) {
    /* st is tested, not left to the owner test: an instance with no
     * state (never used, or deinit) matches an entry with no owner, and
     * one another instance is formatting may show its class and bump
     * before its owner; the checks then passed and read the tag through
     * NULL. First, apart: some 3 instructions a free (in the alignment
     * test's branch, the register shuffle cost 8). */
    gpa_state *st = beam__gpa_state_of(gpa);
    if (BEAM__UNLIKELY(st == NULL))
        return false;
    gpa_slab *s = gpa_map_slot_masked(mem);
    void **b = (void **)mem;
    if (BEAM__UNLIKELY(!gpa_fast_alignment(alignment)))
        return false;
    if (BEAM__LIKELY(s != NULL && gpa_fast_free_ok_entry(st, s, b, len))) {
        beam__gpa_release(st, s, b, len);
        return true;
    }
    /* A block in a sub-slab: its chunk's map entry (fast_span 0) failed
     * the range test. A call more than a slab's free, off its path. (The
     * entry's where, not its fast_span: a miss may be a stale pointer into
     * an entry being reset, whose plain fields are not ours to read. A
     * length out of range, 0 included, is the general path's to judge.
     * Below GPA_MAP_END, the masked entry is mem's own.) */
    if (s != NULL && (uintptr_t)mem < GPA_MAP_END && len - 1 < BEAM__MAX_LEN) {
        unsigned where = beam__atomic_load_acquire(&s->where);
        if (where == WHERE_MIXED) {
            beam__gpa_free_in_chunk(gpa, &beam__gpa_vtable, mem, len, alignment,
                                    beam__ret_of(ret));
            return true;
        }
        /* A medium slab of this instance: its free checks everything
         * again under the lock (a stale look is only a misuse's). An entry
         * being unmapped loses its owner after its where: st, not NULL
         * (tested first), then does not pass for its owner. */
        if (where == WHERE_MEDIUM && beam__gpa_owner(s) == st) {
            beam__gpa_medium_free(st, s, mem, len, alignment,
                                  beam__ret_of(ret));
            return true;
        }
    }
    return false;
}

#endif
