/*
 * Blocks above the slab classes go to the backing allocator as they are;
 * this open-addressing table (pointer -> length, alignment, site) is what
 * lets the allocator check their frees and list them as leaks. Instance
 * lock held throughout; the table's memory comes from the backing too.
 */
#include "gpa_internal.h"

#include <string.h>

static size_t slot_of(const void *p, size_t cap) {
    uint64_t x = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 32) & (cap - 1);
}

gpa_large *beam__gpa_large_find(gpa_state *st, const void *p) {
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

static void place(gpa_large *tab, size_t cap, const gpa_large *e) {
    size_t i = slot_of(e->ptr, cap);
    while (tab[i].ptr != NULL && tab[i].ptr != GPA_TOMBSTONE)
        i = (i + 1) & (cap - 1);
    tab[i] = *e;
}

/* Rebuild at a size that leaves the table at most half full. */
static bool rehash(gpa_state *st) {
    size_t cap = 16;
    while (cap < (st->large_count + 1) * 2)
        cap *= 2;
    gpa_large *tab = (gpa_large *)beam__gpa_meta_alloc(st, cap * sizeof *tab,
                                                       BEAM_ALIGNOF(gpa_large));
    if (tab == NULL)
        return false;
    memset(tab, 0, cap * sizeof *tab);
    for (size_t i = 0; i < st->large_cap; i++)
        if (st->large[i].ptr != NULL && st->large[i].ptr != GPA_TOMBSTONE)
            place(tab, cap, &st->large[i]);
    if (st->large != NULL)
        beam__gpa_meta_free(st, st->large, st->large_cap * sizeof *tab,
                            BEAM_ALIGNOF(gpa_large));
    st->large = tab;
    st->large_cap = cap;
    st->large_used = st->large_count;
    return true;
}

bool beam__gpa_large_reserve(gpa_state *st) {
    /* Keep live + tombstones under 3/4 so probes stay short and end. */
    return (st->large_used + 1) * 4 <= st->large_cap * 3 || rehash(st);
}

bool beam__gpa_large_insert(gpa_state *st, const gpa_large *e) {
    if (!beam__gpa_large_reserve(st))
        return false;
    size_t i = slot_of(e->ptr, st->large_cap);
    while (st->large[i].ptr != NULL && st->large[i].ptr != GPA_TOMBSTONE)
        i = (i + 1) & (st->large_cap - 1);
    if (st->large[i].ptr == NULL)
        st->large_used++;
    st->large[i] = *e;
    st->large_count++;
    return true;
}

void beam__gpa_large_remove(gpa_state *st, gpa_large *e) {
    e->ptr = GPA_TOMBSTONE;
    st->large_count--;
}
