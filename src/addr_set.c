/*
 * Sets of counted addresses, a few of them, each for one question about a
 * block asked where nothing else can answer it cheaply:
 *
 * - BEAM__SET_GPA_LARGE: every instance's large blocks (gpa_large.c:
 *   memory an instance took from its backing for a block above the slab
 *   classes and has not given back, cached blocks included), for the raw
 *   and the large allocators' refusal of a general purpose allocator's
 *   block (beam__refused_block): the address map answers for slab
 *   memory only, and a large block freed through them went to enif_free,
 *   which crashed on a large allocator's header or, at 8, freed it under
 *   its instance, whose own free or deinit then freed it again (bug hunt).
 *   An instance over another notes the block its parent noted too: hence
 *   the counts.
 * - BEAM__SET_LARGE_PAGE_STARTS: the large allocator's live blocks whose
 *   header lies on the page before them (large.c), so that a header there
 *   is read only for a block it placed. Not counted: one live block an
 *   address, so a note of an address noted already finds a note left
 *   behind (a block freed by another copy of the library, which cannot
 *   reach this copy's set), and takes its place instead of stacking on it
 *   for good.
 *
 * Each set is in stripes, each an open-addressing table under its own
 * lock: a leaf, never taken with an instance lock held (blocks are noted
 * and unnoted next to the backing's calls, which rule 2 of gpa_internal.h
 * keeps outside them), and nothing else is taken under it but the system
 * allocator's, for the tables (metadata, like the registry's). With no
 * address noted, an ask takes no lock.
 */
#include "internal.h"
#include "os/lock.h"

#include <pthread.h>
#include <stdlib.h>

/* 64 stripes a set, by the hash's top bits. Under ThreadSanitizer 8: a
 * fork holds every stripe at once (fork.c), and its deadlock detector
 * follows at most 64 locks held by one thread (it aborts past them). */
#ifdef BEAM__TSAN
#define SET_STRIPE_BITS 3
#else
#define SET_STRIPE_BITS 6
#endif
#define SET_STRIPES (1u << SET_STRIPE_BITS)
#define SET_EMPTY ((uintptr_t)0)
#define SET_GONE ((uintptr_t)1) /* a removed key: probes go on past it */

typedef struct set_slot {
    uintptr_t key; /* an address, SET_EMPTY or SET_GONE */
    size_t count;  /* how many notes it has */
} set_slot;

typedef struct set_stripe {
    beam__lock lock;
    set_slot *slots;
    size_t cap;  /* 0, or a power of two */
    size_t used; /* keys and SET_GONE slots */
    size_t live; /* keys */
} set_stripe;

/* The table a stripe keeps when its last address goes: one of this many
 * slots or fewer stays for the next (a single block's alloc and free
 * then allocate nothing); a larger one, grown for a peak of blocks, is
 * given back then, and a rehash sizes a table for the keys it holds. The
 * tables only grew: after a peak of 100,000 page-aligned blocks, 4 MiB
 * stayed with the set for good. */
#define SET_KEPT_CAP 16

static struct {
    pthread_once_t once;
    set_stripe stripes[BEAM__SETS][SET_STRIPES];
} all = {PTHREAD_ONCE_INIT};

/* Which sets count their notes of an address (the others hold one). */
static const bool set_counted[BEAM__SETS] = {[BEAM__SET_GPA_LARGE] = true};

/* Addresses in each set, all stripes (internal.h). */
beam__set_size beam__set_sizes[BEAM__SETS];

static void sets_init(void) {
    beam__fork_guard();
    for (size_t k = 0; k < BEAM__SETS; k++)
        for (size_t i = 0; i < SET_STRIPES; i++)
            beam__lock_init(&all.stripes[k][i].lock);
}

/* Fibonacci hashing: the stripe from the top bits, the slot from the
 * next ones. (Blocks are at least 8-aligned: the low bits say nothing.) */
static uint64_t set_hash(uintptr_t p) {
    return (uint64_t)(p >> 3) * UINT64_C(0x9E3779B97F4A7C15);
}

/* The first slot of hash h's probe in a table of cap slots. */
static size_t slot_home(uint64_t h, size_t cap) {
    return (size_t)(h >> 16) & (cap - 1);
}

/* The slot a key of hash h goes in: the first of its probe that holds no
 * key (empty or removed). The table has room (stripe_make_room). */
static set_slot *slot_free(set_slot *slots, size_t cap, uint64_t h) {
    size_t i = slot_home(h, cap);
    while (slots[i].key > SET_GONE)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

/* Stripe lock held: the slot of p, or NULL when p is not in it. */
static set_slot *slot_find(set_stripe *s, uintptr_t p, uint64_t h) {
    if (s->cap == 0)
        return NULL;
    size_t mask = s->cap - 1;
    for (size_t i = slot_home(h, s->cap);; i = (i + 1) & mask) {
        if (s->slots[i].key == p)
            return &s->slots[i];
        if (s->slots[i].key == SET_EMPTY)
            return NULL;
    }
}

/* Stripe lock held: room for one more key (a load of at most 3/4 counting
 * removed slots, which a rehash drops), or false when the system
 * allocator has none: the address then goes unnoted (never refused: each
 * set's user says what an address missing from it costs). */
static bool stripe_make_room(set_stripe *s) {
    if ((s->used + 1) * 4 <= s->cap * 3)
        return true;
    size_t live = s->live;
    size_t cap = SET_KEPT_CAP;
    while ((live + 1) * 2 > cap)
        cap *= 2;
    set_slot *slots = (set_slot *)calloc(cap, sizeof *slots);
    if (slots == NULL)
        return false;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].key > SET_GONE)
            *slot_free(slots, cap, set_hash(s->slots[i].key)) = s->slots[i];
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    s->used = live;
    return true;
}

/* Stripe lock held: the table back to the system. */
static void stripe_clear(set_stripe *s) {
    free(s->slots);
    s->slots = NULL;
    s->cap = s->used = s->live = 0;
}

/* p's stripe in set id, locked, and p's slot in it (NULL: p is not in the
 * set). */
static set_stripe *stripe_lock(beam__set_id id, const void *p, uint64_t *h,
                               set_slot **slot) {
    pthread_once(&all.once, sets_init);
    *h = set_hash((uintptr_t)p);
    set_stripe *s = &all.stripes[id][*h >> (64 - SET_STRIPE_BITS)];
    beam__lock_take(&s->lock);
    *slot = slot_find(s, (uintptr_t)p, *h);
    return s;
}

void beam__set_note(beam__set_id id, const void *p) {
    uint64_t h;
    set_slot *e;
    set_stripe *s = stripe_lock(id, p, &h, &e);
    if (e != NULL) {
        e->count += set_counted[id];
    } else if (stripe_make_room(s)) {
        set_slot *f = slot_free(s->slots, s->cap, h);
        s->used += f->key == SET_EMPTY;
        *f = (set_slot){(uintptr_t)p, 1};
        s->live++;
        beam__atomic_add_relaxed(&beam__set_sizes[id].noted, 1);
    }
    beam__lock_drop(&s->lock);
}

bool beam__set_unnote(beam__set_id id, const void *p) {
    uint64_t h;
    set_slot *e;
    set_stripe *s = stripe_lock(id, p, &h, &e);
    if (e != NULL && --e->count == 0) {
        e->key = SET_GONE;
        beam__atomic_sub_relaxed(&beam__set_sizes[id].noted, 1);
        if (--s->live == 0 && s->cap > SET_KEPT_CAP)
            stripe_clear(s);
    }
    beam__lock_drop(&s->lock);
    return e != NULL;
}

bool beam__set_lookup(beam__set_id id, const void *p) {
    uint64_t h;
    set_slot *e;
    set_stripe *s = stripe_lock(id, p, &h, &e);
    beam__lock_drop(&s->lock);
    return e != NULL;
}

/* Each stripe under its lock, its addresses taken off the set's count:
 * at exit the destructors run while other threads may still call in (a
 * scheduler's NIF as the VM halts), and a note made unlocked into a freed
 * table wrote into freed memory. A note after this makes a table again. */
void beam__set_free(beam__set_id id) {
    pthread_once(&all.once, sets_init);
    for (size_t i = 0; i < SET_STRIPES; i++) {
        set_stripe *s = &all.stripes[id][i];
        beam__lock_take(&s->lock);
        beam__atomic_sub_relaxed(&beam__set_sizes[id].noted, s->live);
        stripe_clear(s);
        beam__lock_drop(&s->lock);
    }
}

/* Every stripe of every set, in order (each a leaf: any order would do). */
void beam__set_fork(beam__fork_phase phase) {
    pthread_once(&all.once, sets_init);
    for (size_t k = 0; k < BEAM__SETS; k++)
        for (size_t i = 0; i < SET_STRIPES; i++)
            beam__fork_lock(&all.stripes[k][i].lock, phase);
}

size_t beam__set_table_bytes(beam__set_id id) {
    pthread_once(&all.once, sets_init);
    size_t bytes = 0;
    for (size_t i = 0; i < SET_STRIPES; i++) {
        set_stripe *s = &all.stripes[id][i];
        beam__lock_take(&s->lock);
        bytes += s->cap * sizeof(set_slot);
        beam__lock_drop(&s->lock);
    }
    return bytes;
}
