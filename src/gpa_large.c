/*
 * Blocks above the slab classes: they go to the backing allocator as they
 * are, and this open-addressing table (pointer -> length, alignment, site)
 * is what lets the allocator check their frees and list them as leaks. A
 * small per-instance cache of freed blocks spares the backing allocator
 * (enif_alloc, a few hundred ns inside a BEAM) the common free-then-
 * allocate-again cycle.
 *
 * Table and cache are under the instance lock; every backing call is made
 * without it (lock order rule 2), so a path drops the lock around one and
 * looks its entry up again afterwards: entries move when the table grows.
 */
#include "frames.h"
#include "gpa_internal.h"

#include <stdio.h>
#include <string.h>

static size_t slot_of(const void *p, size_t cap) {
    uint64_t x = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 32) & (cap - 1);
}

gpa_large *beam__gpa_large_find(gpa_state *st, const void *p) {
    GPA_ASSERT_LOCKED(st);
    if (st->large_cap == 0 || p == NULL || p == GPA_TOMBSTONE)
        return NULL;
    for (size_t i = slot_of(p, st->large_cap);;
         i = (i + 1) & (st->large_cap - 1)) {
        gpa_large *e = &st->large[i];
        if (e->ptr == p)
            return e;
        if (e->ptr == NULL)
            return NULL;
    }
}

/* Lock held; the table has an empty slot (load is kept under 3/4, and one
 * insert past that still finds one). */
static void insert(gpa_state *st, const gpa_large *e) {
    GPA_ASSERT(st->large_used < st->large_cap);
    size_t i = slot_of(e->ptr, st->large_cap);
    while (st->large[i].ptr != NULL && st->large[i].ptr != GPA_TOMBSTONE)
        i = (i + 1) & (st->large_cap - 1);
    if (st->large[i].ptr == NULL)
        st->large_used++;
    st->large[i] = *e;
    st->large_count++;
}

static void remove_entry(gpa_state *st, gpa_large *e) {
    e->ptr = GPA_TOMBSTONE;
    st->large_count--;
}

static bool has_room(const gpa_state *st) {
    /* Live + tombstones under 3/4 so probes stay short and end. */
    return (st->large_used + 1) * 4 <= st->large_cap * 3;
}

/* Lock held: make room for one insert, growing (or cleaning) the table with
 * the lock dropped around the allocation. false: out of memory. */
static bool make_room(gpa_state *st, gpa_defer **defer) {
    while (!has_room(st)) {
        size_t cap = 16;
        while (cap < (st->large_count + 1) * 2)
            cap *= 2;
        gpa_unlock(st);
        gpa_large *tab = (gpa_large *)gpa_meta_alloc(st, cap * sizeof *tab,
                                                     BEAM_ALIGNOF(gpa_large));
        gpa_lock(st);
        if (tab == NULL)
            return false;
        if (has_room(st) || cap < (st->large_count + 1) * 2) {
            /* Others changed the table meanwhile: look again. */
            gpa_defer_free(defer, tab, cap * sizeof *tab,
                           BEAM_ALIGNOF(gpa_large), true);
            continue;
        }
        memset(tab, 0, cap * sizeof *tab);
        gpa_large *old = st->large;
        size_t old_cap = st->large_cap;
        st->large = tab;
        st->large_cap = cap;
        st->large_count = st->large_used = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i].ptr != NULL && old[i].ptr != GPA_TOMBSTONE)
                insert(st, &old[i]);
        if (old != NULL)
            gpa_defer_free(defer, old, old_cap * sizeof *old,
                           BEAM_ALIGNOF(gpa_large), true);
    }
    return true;
}

/* ---- the cache (lock held) ------------------------------------------------
 */

/* The longest large block: room for safe mode's canary within the
 * lengths a backing may be asked for (PTRDIFF_MAX; it passed the backing
 * 0x800000000000000f, found in review). Every mode, so that all answer
 * alike. */
#define GPA_LARGE_MAX (BEAM__MAX_LEN - GPA_LARGE_CANARY)

/* What the backing holds for a block of len: a safe instance's canary
 * after it, and at least a gpa_defer's worth (a freed block may carry
 * one). */
static size_t backing_len_for(const gpa_state *st, size_t len) {
    GPA_ASSERT(len <= GPA_LARGE_MAX);
    size_t want = len + (st->safe ? GPA_LARGE_CANARY : 0);
    return want < GPA_DEFER_MIN ? GPA_DEFER_MIN : want;
}

/* What a cached block holds of the backing, against the cache's bytes: its
 * length and, at an alignment above the backing's natural one, what
 * aligning costs a backing like the large allocator (up to the alignment
 * again). Length alone let 16 blocks of 100 bytes at 32 MiB keep 512 MiB
 * (found in review). */
static size_t cache_cost(const gpa_large *e) {
    return e->backing_len + (e->alignment > BEAM_MAX_ALIGN ? e->alignment : 0);
}

/* A cached block for (len, alignment): same alignment, at most 1/8 longer
 * than needed (so reuse does not inflate memory). */
static bool cache_take(gpa_state *st, size_t len, size_t alignment,
                       gpa_large *out) {
    size_t need = backing_len_for(st, len);
    for (unsigned i = 0; i < st->cache_n; i++) {
        gpa_large *c = &st->cache[i];
        if (c->alignment == alignment && c->backing_len >= need &&
            c->backing_len - need <= len / 8) {
            *out = *c;
            st->cache_bytes -= cache_cost(c);
            *c = st->cache[--st->cache_n];
            return true;
        }
    }
    return false;
}

static bool cache_put(gpa_state *st, const gpa_large *e) {
    size_t cost = cache_cost(e);
    if (st->cache_n == GPA_LARGE_CACHE ||
        cost > GPA_LARGE_CACHE_BYTES - st->cache_bytes)
        return false;
    st->cache[st->cache_n++] = *e;
    st->cache_bytes += cost;
    return true;
}

void beam__gpa_cache_flush(gpa_state *st, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    while (st->cache_n > 0) {
        gpa_large *c = &st->cache[--st->cache_n];
        st->backing_bytes -= c->backing_len;
        gpa_defer_free_large(defer, c);
    }
    st->cache_bytes = 0;
}

/* The table of no live block (tombstones at most) goes back: it only
 * grows with the blocks live at once, so without this an instance that
 * once held many large blocks kept a table for them all (16,000 blocks:
 * 1.3 MB) with none live. (One with live blocks keeps its size: shrinking
 * it would take an allocation, which is not made under the lock.) */
void beam__gpa_large_trim(gpa_state *st, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    if (st->large == NULL || st->large_count != 0)
        return;
    gpa_defer_free(defer, st->large, st->large_cap * sizeof(gpa_large),
                   BEAM_ALIGNOF(gpa_large), true);
    st->large = NULL;
    st->large_cap = st->large_used = 0;
}

void beam__gpa_large_free_all(gpa_state *st, gpa_defer **defer) {
    beam__gpa_cache_flush(st, defer);
    for (size_t i = 0; i < st->large_cap; i++) {
        gpa_large *e = &st->large[i];
        if (e->ptr != NULL && e->ptr != GPA_TOMBSTONE)
            gpa_defer_free_large(defer, e);
    }
    if (st->large != NULL)
        gpa_defer_free(defer, st->large, st->large_cap * sizeof(gpa_large),
                       BEAM_ALIGNOF(gpa_large), true);
    st->large = NULL;
    st->large_cap = st->large_count = st->large_used = 0;
}

/* ---- the paths --------------------------------------------------------------
 */

/* Safe mode, a block about to be handed out (no lock: it is ours): a cached
 * one must still be all poison; then fill it, and its canary. */
static void safe_hand_out(gpa_state *st, const gpa_large *e, bool cached,
                          uintptr_t old_site, uintptr_t ret) {
    unsigned char *p = (unsigned char *)e->ptr;
    size_t bad = cached ? gpa_first_other(p, 0, e->backing_len, GPA_FREED_FILL)
                        : e->backing_len;
    if (bad != e->backing_len)
        beam__gpa_large_reuse_dirty(st, p, e->backing_len, bad, ret, old_site);
    memset(p, GPA_FRESH_FILL, e->len);
    memset(p + e->len, GPA_CANARY, e->backing_len - e->len);
}

void *beam__gpa_large_alloc(gpa_state *st, size_t len, size_t alignment,
                            uintptr_t ret) {
    if (BEAM__UNLIKELY(len > GPA_LARGE_MAX)) {
        beam__atomic_add_relaxed(&st->large_counts.failed, 1);
        return NULL;
    }
    gpa_defer *defer = NULL;
    gpa_large e;
    /* Before the lock: capturing frames may take the depot's. */
    const uintptr_t site = beam__site(st->flags, ret);
    gpa_lock(st);
    bool cached = cache_take(st, len, alignment, &e);
    uintptr_t old_site = cached ? e.site : 0;
    if (!cached) {
        gpa_unlock(st);
        e.backing_len = backing_len_for(st, len);
        e.alignment = alignment;
        e.ptr = gpa_backing_alloc(st, e.backing_len, alignment, ret);
        if (e.ptr != NULL)
            beam__gpa_set_note(e.ptr);
        gpa_lock(st);
        if (e.ptr != NULL)
            st->backing_bytes += e.backing_len;
    }
    e.len = len;
    e.site = site;
    bool ok = e.ptr != NULL && make_room(st, &defer);
    if (ok) {
        insert(st, &e);
        beam__count_alloc(&st->large_counts, &st->peak, len);
    } else {
        beam__atomic_add_relaxed(&st->large_counts.failed, 1);
        /* The table could not grow: the block goes back. */
        if (e.ptr != NULL && !cache_put(st, &e)) {
            st->backing_bytes -= e.backing_len;
            gpa_defer_free_large(&defer, &e);
        }
    }
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
    if (!ok)
        return NULL;
    if (st->safe)
        safe_hand_out(st, &e, cached, old_site, ret);
    else
        gpa_untag(e.ptr);
    return e.ptr;
}

/* Lock held: was mem one of ours, freed already (in the cache, or among
 * the last freed)? Then *site is where it was allocated. */
static bool freed_before(const gpa_state *st, const void *mem,
                         uintptr_t *site) {
    for (unsigned i = 0; i < st->cache_n; i++)
        if (st->cache[i].ptr == mem) {
            *site = st->cache[i].site;
            return true;
        }
    for (unsigned i = 0; i < GPA_LARGE_FREED_RING; i++)
        if (st->freed_ring[i].ptr == mem) {
            *site = st->freed_ring[i].site;
            return true;
        }
    return false;
}

/* Safe mode, a freed block (no lock: nobody else has it): check its canary,
 * then poison all of it. */
static void safe_take_back(gpa_state *st, const gpa_large *e, size_t len,
                           size_t alignment, uintptr_t ret) {
    unsigned char *p = (unsigned char *)e->ptr;
    size_t bad = gpa_first_other(p, e->len, e->backing_len, GPA_CANARY);
    if (bad != e->backing_len)
        beam__gpa_overrun(st, p, len, alignment, bad - e->len, ret, e->site);
    memset(p, GPA_FREED_FILL, e->backing_len);
}

gpa_large_freed beam__gpa_large_free(gpa_state *st, void *mem, size_t len,
                                     size_t alignment, uintptr_t ret,
                                     uintptr_t *site) {
    gpa_lock(st);
    gpa_large *e = beam__gpa_large_find(st, mem);
    if (e == NULL) {
        bool twice = freed_before(st, mem, site);
        gpa_unlock(st);
        return twice ? GPA_LARGE_TWICE : GPA_LARGE_NOT_OURS;
    }
    gpa_large copy = *e;
    remove_entry(st, e);
    beam__count_free(&st->large_counts, &st->peak, copy.len);
    st->freed_ring[st->freed_next].ptr = mem;
    st->freed_ring[st->freed_next].site = copy.site;
    st->freed_next = (st->freed_next + 1) % GPA_LARGE_FREED_RING;
    /* A safe instance checks and poisons the block before anyone else can
     * take it from the cache. */
    bool kept = !st->safe && cache_put(st, &copy);
    if (!kept && !st->safe)
        st->backing_bytes -= copy.backing_len;
    gpa_unlock(st);
    if (copy.len != len || copy.alignment != alignment)
        beam__gpa_misuse_at(st,
                            "free with a wrong length or alignment (freed "
                            "anyway)",
                            mem, len, alignment, ret, copy.site);
    if (st->safe) {
        safe_take_back(st, &copy, len, alignment, ret);
        gpa_lock(st);
        kept = cache_put(st, &copy);
        if (!kept)
            st->backing_bytes -= copy.backing_len;
        gpa_unlock(st);
    }
    if (!kept) {
        beam__gpa_set_unnote(copy.ptr);
        gpa_backing_free(st, copy.ptr, copy.backing_len, copy.alignment, ret);
    }
    return GPA_LARGE_FREED;
}

size_t beam__gpa_large_check_freed(gpa_state *st, gpa_large *out, size_t *at,
                                   size_t max) {
    GPA_ASSERT_LOCKED(st);
    size_t found = 0;
    for (unsigned i = 0; i < st->cache_n; i++) {
        const gpa_large *c = &st->cache[i];
        size_t bad = gpa_first_other((const unsigned char *)c->ptr, 0,
                                     c->backing_len, GPA_FREED_FILL);
        if (bad == c->backing_len)
            continue;
        if (found < max) {
            out[found] = *c;
            at[found] = bad;
        }
        found++;
    }
    return found;
}

/* A block above the slab classes never takes a length the raw
 * allocator's inline free accepts without asking the set (core.c: under
 * BEAM_GPA_SMALL_MAX, at an alignment raw serves): such a resize or remap
 * fails, and a realloc moves the block into a slab, which the address
 * map knows (review: a shrink in place to 100 bytes went to enif_free
 * through raw, and was freed again at deinit). */
static bool stays_large(size_t new_len, size_t alignment) {
    return new_len >= BEAM_GPA_SMALL_MAX || alignment > BEAM_MAX_ALIGN;
}

/* Safe mode, a block resized from len to new_len with backing_len behind
 * it: the part it gained is fresh, everything past it canary. */
static void safe_refill(void *mem, size_t len, size_t new_len,
                        size_t backing_len) {
    unsigned char *p = (unsigned char *)mem;
    if (new_len > len)
        memset(p + len, GPA_FRESH_FILL, new_len - len);
    memset(p + new_len, GPA_CANARY, backing_len - new_len);
}

bool beam__gpa_large_resize(gpa_state *st, void *mem, size_t len,
                            size_t alignment, size_t new_len, uintptr_t ret,
                            const gpa_resize_words *said, bool *not_ours) {
    gpa_lock(st);
    gpa_large *e = beam__gpa_large_find(st, mem);
    if (e == NULL) {
        gpa_unlock(st);
        *not_ours = true;
        return false;
    }
    if (e->len != len || e->alignment != alignment) {
        uintptr_t site = e->site;
        gpa_unlock(st);
        beam__gpa_misuse_at(st, said->wrong_length, mem, len, alignment, ret,
                            site);
        return false;
    }
    if (new_len > GPA_LARGE_MAX || !stays_large(new_len, alignment)) {
        gpa_unlock(st);
        return false;
    }
    /* Within what the backing holds, in place costs nothing. */
    size_t want = backing_len_for(st, new_len);
    if (want <= e->backing_len) {
        e->len = new_len;
        beam__count_resize(&st->large_counts, &st->peak, len, new_len);
        size_t backing_len = e->backing_len;
        gpa_unlock(st);
        if (st->safe)
            safe_refill(mem, len, new_len, backing_len);
        return true;
    }
    size_t backing_len = e->backing_len;
    gpa_unlock(st);
    GPA_ASSERT_NO_LOCK();
    /* (Unnoted for the backing's call: a raw or a large backing refuses a
     * noted block, as it must when someone else hands it one.) */
    beam__gpa_set_unnote(mem);
    bool resized =
        gpa_backing_resize(st, mem, backing_len, alignment, want, ret);
    beam__gpa_set_note(mem);
    if (!resized)
        return false;
    /* The caller owns the block: nobody else removed it meanwhile. */
    gpa_lock(st);
    e = beam__gpa_large_find(st, mem);
    GPA_ASSERT(e != NULL);
    if (e != NULL) {
        st->backing_bytes += want - e->backing_len;
        e->backing_len = want;
        e->len = new_len;
        beam__count_resize(&st->large_counts, &st->peak, len, new_len);
    }
    gpa_unlock(st);
    if (st->safe)
        safe_refill(mem, len, new_len, want);
    return e != NULL;
}

void *beam__gpa_large_remap(gpa_state *st, void *mem, size_t len,
                            size_t alignment, size_t new_len, uintptr_t ret) {
    if (new_len > GPA_LARGE_MAX || !stays_large(new_len, alignment))
        return NULL;
    gpa_lock(st);
    gpa_large *e = beam__gpa_large_find(st, mem);
    if (e == NULL || e->len != len || e->alignment != alignment) {
        gpa_unlock(st);
        return NULL;
    }
    /* Out of the table while the backing works: once it has moved the
     * block, its old address is the backing's to hand to another thread,
     * whose entry must not meet this one's (found in review: it could
     * land in an earlier tombstone, and the entry removed after the move
     * was then the other thread's). Put back if the move fails. */
    gpa_large old = *e;
    remove_entry(st, e);
    gpa_unlock(st);
    GPA_ASSERT_NO_LOCK();
    size_t want = backing_len_for(st, new_len);
    /* Unnoted for the backing's call, as for a resize, and while the
     * backing may move it (and give its address to anyone); noted again
     * where it is after. */
    beam__gpa_set_unnote(mem);
    void *p = gpa_backing_remap(st, mem, old.backing_len, alignment, want, ret);
    beam__gpa_set_note(p != NULL ? p : mem);
    /* Room for the entry first (the old one turned into a tombstone):
     * without it, moves alone would fill the table until lookups never
     * end. Making room may drop the lock; if it cannot (out of memory),
     * the table still has an empty slot, since every insert makes room
     * first. */
    gpa_defer *defer = NULL;
    gpa_lock(st);
    make_room(st, &defer);
    if (p == NULL) {
        insert(st, &old);
        gpa_unlock(st);
        beam__gpa_defer_run(st, defer);
        return NULL;
    }
    gpa_large moved = {p, new_len, alignment, old.site, want};
    st->backing_bytes += want - old.backing_len;
    insert(st, &moved);
    beam__count_resize(&st->large_counts, &st->peak, len, new_len);
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
    if (st->safe)
        safe_refill(p, len, new_len, want);
    return p;
}
