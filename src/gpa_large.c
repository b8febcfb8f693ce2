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
#include "gpa_internal.h"

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

/* A cached block for (len, alignment): same alignment, at most 1/8 longer
 * than asked (so reuse does not inflate memory). */
static bool cache_take(gpa_state *st, size_t len, size_t alignment,
                       gpa_large *out) {
    for (unsigned i = 0; i < st->cache_n; i++) {
        gpa_large *c = &st->cache[i];
        if (c->alignment == alignment && c->backing_len >= len &&
            c->backing_len - len <= len / 8) {
            *out = *c;
            st->cache_bytes -= c->backing_len;
            *c = st->cache[--st->cache_n];
            return true;
        }
    }
    return false;
}

static bool cache_put(gpa_state *st, const gpa_large *e) {
    if (st->cache_n == GPA_LARGE_CACHE ||
        e->backing_len > GPA_LARGE_CACHE_BYTES - st->cache_bytes)
        return false;
    st->cache[st->cache_n++] = *e;
    st->cache_bytes += e->backing_len;
    return true;
}

void beam__gpa_cache_flush(gpa_state *st, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    while (st->cache_n > 0) {
        gpa_large *c = &st->cache[--st->cache_n];
        st->backing_bytes -= c->backing_len;
        gpa_defer_free(defer, c->ptr, c->backing_len, c->alignment, false);
    }
    st->cache_bytes = 0;
}

void beam__gpa_large_free_all(gpa_state *st, gpa_defer **defer) {
    beam__gpa_cache_flush(st, defer);
    for (size_t i = 0; i < st->large_cap; i++) {
        gpa_large *e = &st->large[i];
        if (e->ptr != NULL && e->ptr != GPA_TOMBSTONE)
            gpa_defer_free(defer, e->ptr, e->backing_len, e->alignment, false);
    }
    if (st->large != NULL)
        gpa_defer_free(defer, st->large, st->large_cap * sizeof(gpa_large),
                       BEAM_ALIGNOF(gpa_large), true);
    st->large = NULL;
    st->large_cap = st->large_count = st->large_used = 0;
}

/* ---- the paths --------------------------------------------------------------
 */

void *beam__gpa_large_alloc(gpa_state *st, size_t len, size_t alignment,
                            uintptr_t ret) {
    gpa_defer *defer = NULL;
    gpa_large e;
    gpa_lock(st);
    bool cached = cache_take(st, len, alignment, &e);
    if (!cached) {
        gpa_unlock(st);
        /* At least a gpa_defer's worth: a freed block may carry one. */
        e.backing_len = len < GPA_DEFER_MIN ? GPA_DEFER_MIN : len;
        e.alignment = alignment;
        e.ptr = gpa_backing_alloc(st, e.backing_len, alignment, ret);
        gpa_lock(st);
        if (e.ptr != NULL)
            st->backing_bytes += e.backing_len;
    }
    e.len = len;
    e.site = ret;
    bool ok = e.ptr != NULL && make_room(st, &defer);
    if (ok) {
        insert(st, &e);
        beam__count_alloc(&st->large_counts, &st->peak, len);
    } else {
        atomic_fetch_add_explicit(&st->large_counts.failed, 1,
                                  memory_order_relaxed);
        /* The table could not grow: the block goes back. */
        if (e.ptr != NULL && !cache_put(st, &e)) {
            st->backing_bytes -= e.backing_len;
            gpa_defer_free(&defer, e.ptr, e.backing_len, e.alignment, false);
        }
    }
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
    return ok ? e.ptr : NULL;
}

bool beam__gpa_large_free(gpa_state *st, void *mem, size_t len,
                          size_t alignment, uintptr_t ret) {
    gpa_lock(st);
    gpa_large *e = beam__gpa_large_find(st, mem);
    if (e == NULL) {
        gpa_unlock(st);
        return false;
    }
    gpa_large copy = *e;
    remove_entry(st, e);
    beam__count_free(&st->large_counts, &st->peak, copy.len);
    bool kept = cache_put(st, &copy);
    if (!kept)
        st->backing_bytes -= copy.backing_len;
    gpa_unlock(st);
    if (copy.len != len || copy.alignment != alignment)
        beam__gpa_misuse_at(st,
                            "free with a wrong length or alignment (freed "
                            "anyway)",
                            mem, len, alignment, ret, copy.site);
    if (!kept)
        gpa_backing_free(st, copy.ptr, copy.backing_len, copy.alignment, ret);
    return true;
}

bool beam__gpa_large_resize(gpa_state *st, void *mem, size_t len,
                            size_t alignment, size_t new_len, uintptr_t ret) {
    gpa_lock(st);
    gpa_large *e = beam__gpa_large_find(st, mem);
    if (e == NULL || e->len != len || e->alignment != alignment) {
        gpa_unlock(st);
        return false;
    }
    /* Within what the backing holds, in place costs nothing. */
    if (new_len <= e->backing_len) {
        e->len = new_len;
        beam__count_resize(&st->large_counts, &st->peak, len, new_len);
        gpa_unlock(st);
        return true;
    }
    size_t backing_len = e->backing_len;
    gpa_unlock(st);
    GPA_ASSERT_NO_LOCK();
    if (!st->backing.vtable->resize(st->backing.ctx, mem, backing_len,
                                    alignment, new_len, ret))
        return false;
    /* The caller owns the block: nobody else removed it meanwhile. */
    gpa_lock(st);
    e = beam__gpa_large_find(st, mem);
    GPA_ASSERT(e != NULL);
    if (e != NULL) {
        st->backing_bytes += new_len - e->backing_len;
        e->backing_len = new_len;
        e->len = new_len;
        beam__count_resize(&st->large_counts, &st->peak, len, new_len);
    }
    gpa_unlock(st);
    return e != NULL;
}

void *beam__gpa_large_remap(gpa_state *st, void *mem, size_t len,
                            size_t alignment, size_t new_len, uintptr_t ret) {
    gpa_lock(st);
    gpa_large *e = beam__gpa_large_find(st, mem);
    if (e == NULL || e->len != len || e->alignment != alignment) {
        gpa_unlock(st);
        return NULL;
    }
    size_t backing_len = e->backing_len;
    gpa_unlock(st);
    GPA_ASSERT_NO_LOCK();
    size_t want = new_len < GPA_DEFER_MIN ? GPA_DEFER_MIN : new_len;
    void *p = st->backing.vtable->remap(st->backing.ctx, mem, backing_len,
                                        alignment, want, ret);
    if (p == NULL)
        return NULL;
    /* Room for the moved entry first (the old one only turns into a
     * tombstone): without it, moves alone would fill the table until
     * lookups never end. Making room may drop the lock; if it cannot (out
     * of memory), the table still has an empty slot, since every insert
     * makes room first. */
    gpa_defer *defer = NULL;
    gpa_lock(st);
    make_room(st, &defer);
    e = beam__gpa_large_find(st, mem);
    GPA_ASSERT(e != NULL);
    gpa_large moved = {p, new_len, alignment, e != NULL ? e->site : ret, want};
    if (e != NULL)
        remove_entry(st, e);
    st->backing_bytes += want - backing_len;
    insert(st, &moved);
    beam__count_resize(&st->large_counts, &st->peak, len, new_len);
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
    return p;
}
