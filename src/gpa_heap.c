/*
 * Threads, heaps, instance states and collection for the general purpose
 * allocator (lock order and the heap protocol: gpa_internal.h).
 *
 * A thread finds its heap for an instance in a few thread-local slots, the
 * most recent first. A slot is trusted only when the state's unique id
 * matches, and a slot whose instance may be gone is looked up in the
 * registry (a table of live states by index) before anything of it is
 * touched. When a thread exits (thread_exit.c) or a slot is reused, the
 * heap is retired: its current slabs are parked with the instance (at most
 * one per class, so this is short whatever the heap allocated), where any
 * heap adopts them and any collection returns them.
 */
#define _GNU_SOURCE
#include "gpa_internal.h"
#include "os/barrier.h"

#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

BEAM_THREAD_LOCAL gpa_tls_slot beam__gpa_tls[GPA_TLS_SLOTS];
#ifdef GPA_TLS_OFFSET
_Atomic intptr_t beam__gpa_tls_offset;
#endif
#ifdef BEAM_ALLOC_DEBUG
BEAM_THREAD_LOCAL const gpa_state *beam__gpa_lock_held;
#endif

/* ---- the registry of live states ------------------------------------------
 * A table from index to (state, id), so that a slot's instance is known to
 * live in one step. Its own lock, never held with another (rule 1). The
 * table comes from calloc: like the address map, it is shared metadata. */

typedef struct reg_entry {
    gpa_state *st;
    uint64_t id;      /* 0: free */
    beam_gpa_t *gpa;  /* the instance st was made for */
    const void *over; /* its backing when that is an instance, else NULL:
                         kept here, so that a walk of the table reads no
                         state (one may be in memory gone wrongly) */
} reg_entry;

/* Live entries whose backing is an instance, counted by a hash of that
 * instance's address: a deinit whose instance's count is 0 has nothing
 * over it, and does not walk the table. Walking it at every deinit (a
 * leak_check call's, a resource's), under the one lock, cost time in the
 * number of states live: 0.2 us a deinit became 52 us with 50,000 live,
 * and tearing n instances down took n^2 (found in review). */
#define OVER_BUCKETS 256

static struct {
    pthread_mutex_t lock;
    reg_entry *tab;
    uint32_t cap, live, hint;
    uint64_t next_id;
    uint32_t over_live[OVER_BUCKETS];
} registry = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, 0, 0, 1, {0}};

uint64_t beam__gpa_registry_reads;

static unsigned over_bucket(const void *gpa) {
    return (unsigned)(((uint64_t)(uintptr_t)gpa * 0x9E3779B97F4A7C15ull) >> 56);
}

static void registry_lock(void) {
    GPA_ASSERT_NO_LOCK();
    pthread_mutex_lock(&registry.lock);
}

static bool registry_add(gpa_state *st, beam_gpa_t *gpa) {
    beam__fork_guard();
    registry_lock();
    if (registry.live == registry.cap) {
        uint32_t cap = registry.cap ? registry.cap * 2 : 64;
        reg_entry *tab = (reg_entry *)realloc(registry.tab, cap * sizeof *tab);
        if (tab == NULL) {
            pthread_mutex_unlock(&registry.lock);
            return false;
        }
        memset(tab + registry.cap, 0, (cap - registry.cap) * sizeof *tab);
        registry.hint = registry.cap;
        registry.tab = tab;
        registry.cap = cap;
    }
    uint32_t i = registry.hint;
    while (registry.tab[i].id != 0)
        i = (i + 1) % registry.cap;
    registry.hint = (i + 1) % registry.cap;
    st->id = registry.next_id++;
    st->reg = i;
    registry.tab[i].st = st;
    registry.tab[i].id = st->id;
    registry.tab[i].gpa = gpa;
    registry.tab[i].over =
        st->backing.vtable == &beam__gpa_vtable ? st->backing.ctx : NULL;
    if (registry.tab[i].over != NULL)
        registry.over_live[over_bucket(registry.tab[i].over)]++;
    registry.live++;
    pthread_mutex_unlock(&registry.lock);
    return true;
}

void beam__gpa_registry_remove(gpa_state *st) {
    registry_lock();
    if (registry.tab[st->reg].over != NULL)
        registry.over_live[over_bucket(registry.tab[st->reg].over)]--;
    registry.tab[st->reg].st = NULL;
    registry.tab[st->reg].id = 0;
    registry.tab[st->reg].over = NULL;
    registry.live--;
    pthread_mutex_unlock(&registry.lock);
    /* A thread that pinned st before it left the table finishes first. */
    while (beam__atomic_load_acquire(&st->pins) != 0)
        sched_yield();
}

/* A live state at index *at or after whose backing is gpa itself (an
 * instance over it), and the instance it was made for; *at moves past it.
 * NULL when none is left. Reads the table alone. */
gpa_state *beam__gpa_registry_over(const beam_gpa_t *gpa, uint32_t *at,
                                   beam_gpa_t **made_for) {
    gpa_state *found = NULL;
    registry_lock();
    uint32_t i = registry.over_live[over_bucket(gpa)] != 0 ? *at : registry.cap;
    uint32_t first = i;
    for (; i < registry.cap && found == NULL; i++)
        if (registry.tab[i].id != 0 && registry.tab[i].over == gpa) {
            found = registry.tab[i].st;
            *made_for = registry.tab[i].gpa;
            *at = i + 1;
        }
    beam__gpa_registry_reads += i - first;
    pthread_mutex_unlock(&registry.lock);
    return found;
}

/* The registry, then each live instance's lock in the table's order (both
 * leaves: fork.c). The registry held keeps every instance in the table
 * alive until the locks are dropped. In the child, the pins of threads
 * that were retiring a heap are gone with them: a deinit would wait for
 * them for good. */
static void instance_fork(gpa_state *st, beam__fork_phase phase) {
    if (phase == BEAM__FORK_CHILD)
        beam__atomic_store_relaxed(&st->pins, 0);
    beam__fork_lock(&st->lock, phase);
}

void beam__gpa_fork(beam__fork_phase phase) {
    if (phase == BEAM__FORK_PREPARE)
        pthread_mutex_lock(&registry.lock);
    for (uint32_t i = 0; i < registry.cap; i++)
        if (registry.tab[i].id != 0)
            instance_fork(registry.tab[i].st, phase);
    if (phase != BEAM__FORK_PREPARE)
        pthread_mutex_unlock(&registry.lock);
}

static bool slot_live_locked(const gpa_tls_slot *slot) {
    return slot->id != 0 && slot->reg < registry.cap &&
           registry.tab[slot->reg].id == slot->id;
}

/* The slot's instance, pinned (so that it outlives what follows), or NULL
 * when it is gone. */
static gpa_state *slot_pin(const gpa_tls_slot *slot) {
    if (slot->id == 0)
        return NULL;
    registry_lock();
    gpa_state *st = NULL;
    if (slot_live_locked(slot)) {
        st = slot->st;
        beam__atomic_add_relaxed(&st->pins, 1);
    }
    pthread_mutex_unlock(&registry.lock);
    return st;
}

static void unpin(gpa_state *st) {
    beam__atomic_sub_release(&st->pins, 1);
}

bool beam__gpa_registry_empty(void) {
    registry_lock();
    bool empty = registry.live == 0;
    pthread_mutex_unlock(&registry.lock);
    return empty;
}

void beam__gpa_registry_free(void) {
    free(registry.tab);
    registry.tab = NULL;
    registry.cap = registry.live = registry.hint = 0;
}

/* ---- instance state ----------------------------------------------------- */

static uintptr_t make_cookie(const void *salt, uint64_t id) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t)(uintptr_t)salt ^ (uint64_t)ts.tv_nsec ^
                 ((uint64_t)ts.tv_sec << 32) ^ (id * 0x9E3779B97F4A7C15ull);
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return (uintptr_t)(x | 1); /* odd: a tag is never an aligned pointer */
}

/* The vtable b's chain of instances (GPA over GPA, to a depth of 16) ends
 * in. */
static const beam_allocator_vtable *chain_end(beam_allocator_t b) {
    for (int depth = 0; depth < 16 && b.vtable == &beam__gpa_vtable; depth++)
        b = ((const beam_gpa_t *)b.ctx)->backing;
    return b.vtable;
}

/* The alignment metadata takes over backing b (see gpa_meta_alignment):
 * GPA_NESTED_META_ALIGN when b is an instance whose chain of backings ends
 * in the large allocator, which serves it (the process-wide instance's
 * does); else none (a chain down to the raw allocator or to a user's
 * allocator, which might refuse it and count a failure). Backings are set
 * at init and not changed while in use: reading them races nothing. */
static size_t meta_align_over(beam_allocator_t b) {
    if (b.vtable != &beam__gpa_vtable)
        return 0;
    return chain_end(b) == &beam__large_vtable ? GPA_NESTED_META_ALIGN : 0;
}

/* Does the chain of backings from b (instances, to any depth) end in the
 * raw or the large allocator? Then a heap can be made on any thread: see
 * beam__gpa_heap_for_free. */
static bool chain_thread_safe(beam_allocator_t b) {
    const beam_allocator_vtable *end = chain_end(b);
    return end == &beam__raw_vtable || end == &beam__large_vtable;
}

/* A state's alignment at its backing: its type's, or meta_align (the
 * state is metadata too) when that is larger. */
static size_t state_alignment(size_t meta_align) {
    return meta_align > BEAM_ALIGNOF(gpa_state) ? meta_align
                                                : BEAM_ALIGNOF(gpa_state);
}

void beam__gpa_state_free(gpa_state *st) {
    char *line = beam__atomic_load_acquire(&st->first_misuse_line);
    if (line != NULL)
        beam__sys_free(line);
    beam_allocator_t b = st->backing;
    size_t alignment = state_alignment(st->meta_align);
    beam__lock_destroy(&st->lock);
    GPA_ASSERT_NO_LOCK();
    b.vtable->free(b.ctx, st, sizeof *st, alignment, 0);
}

static gpa_state *state_create(beam_gpa_t *gpa) {
    beam_allocator_t b = gpa->backing;
    if (b.vtable == NULL)
        return NULL;
    GPA_ASSERT_NO_LOCK();
    size_t meta_align = meta_align_over(b);
    gpa_state *st = (gpa_state *)beam__parent_alloc(
        b, sizeof *st, state_alignment(meta_align), 0);
    if (st == NULL)
        return NULL;
    memset(st, 0, sizeof *st);
    st->meta_align = meta_align;
    st->backing = b;
    st->flags = gpa->flags;
    st->safe = (gpa->flags & BEAM_GPA_SAFE) != 0;
    st->track = st->safe || (gpa->flags & BEAM_GPA_TRACK_SITES) != 0;
    /* A heap made for a free takes its memory from the backing on the
     * freeing thread: only over chains of the built-in thread-safe
     * allocators (a GPA over an arena may be allocated from on one thread
     * and freed into from others; a failing allocator counts calls). */
    st->free_heaps = chain_thread_safe(b);
    beam__atomic_store_relaxed(&st->meta_bytes, sizeof *st);
    beam__lock_init(&st->lock);
    if (!registry_add(st, gpa)) {
        beam__gpa_state_free(st);
        return NULL;
    }
    st->cookie = make_cookie(st, st->id);
    st->fast_id = st->track ? GPA_NO_ID : st->id;
    return st;
}

/* No lock: the state is made outside any lock and published with one
 * compare-and-swap; a thread that loses the race throws its own away. So
 * making a state (which allocates from the backing, which may be another
 * instance) holds nothing. */
gpa_state *beam__gpa_state_slow(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st != NULL)
        return st;
    gpa_state *fresh = state_create(gpa);
    if (fresh == NULL)
        return NULL;
    if (beam__atomic_cas_plain_acq_rel(&gpa->internal_state, &st, fresh))
        return fresh;
    beam__gpa_registry_remove(fresh);
    beam__gpa_state_free(fresh);
    return st;
}

/* ---- heaps --------------------------------------------------------------- */

/* Lock held, h's owner not running in it: h's stash goes to its slabs and
 * every current and kept slab of h is parked with the instance. O(classes +
 * GPA_STASH_MAX + kept slabs). */
static void heap_strip(gpa_state *st, gpa_heap *h, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    /* The stash first: some of it may belong to the slabs parked below. */
    beam__gpa_stash_flush(st, h);
    for (unsigned c = 0; c < GPA_CLASSES; c++) {
        gpa_slab *s = h->cur[c];
        if (s != &beam__gpa_empty_slab) {
            GPA_ASSERT(gpa_where(s) == WHERE_CUR &&
                       beam__atomic_load_relaxed(&s->heap) == h);
            h->cur[c] = &beam__gpa_empty_slab;
            beam__gpa_slab_park(st, s, defer);
        }
        /* Kept slabs go the same way (the lock holds h, whose owner is
         * away). */
        while ((s = h->kept[c].head) != NULL) {
            gpa_kept_unlink(h, s);
            beam__gpa_slab_park(st, s, defer);
        }
    }
    /* Stripped, the heap starts small again (see "Small first slabs"). */
    h->graduated = false;
    memset(h->sub_frees, 0, sizeof h->sub_frees);
    memset(h->subs, 0, sizeof h->subs);
    h->sub_total = 0;
}

/* h's block onto the list, for the backing (h's fields are read first:
 * the record overwrites them). */
static void heap_defer_free(gpa_defer **defer, gpa_heap *h) {
    gpa_line_meta_defer(defer, h->mem, sizeof *h);
}

/* The heap's own thread, lock held: the heap ends. */
static void heap_abandon(gpa_state *st, gpa_heap *h, gpa_defer **defer) {
    heap_strip(st, h, defer);
    beam__counters_retire(&st->retired, &h->stats, &st->peak);
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        st->heaps = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    heap_defer_free(defer, h);
}

/* Retire a slot: abandon its heap if its instance still lives. */
static void slot_retire(gpa_tls_slot *slot) {
    gpa_tls_slot old = *slot;
    memset(slot, 0, sizeof *slot);
    gpa_state *st = slot_pin(&old);
    if (st == NULL)
        return;
    gpa_defer *defer = NULL;
    gpa_lock(st);
    heap_abandon(st, old.heap, &defer);
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer); /* may call into other instances */
    unpin(st);
}

/* (A free while the slots are retired may make a heap in one retired
 * already, beam__gpa_heap_for_free: the hook, armed again by it, retires
 * that one in its next round.) */
void beam__gpa_thread_exit(void) {
    for (int i = 0; i < GPA_TLS_SLOTS; i++)
        slot_retire(&beam__gpa_tls[i]);
}

static gpa_heap *heap_create(gpa_state *st) {
    /* 64-aligned: its first cache line is its counters' (gpa_heap). */
    void *mem;
    gpa_heap *h = (gpa_heap *)gpa_line_meta_alloc(st, sizeof *h, &mem);
    if (h == NULL)
        return NULL;
    memset(h, 0, sizeof *h);
    h->mem = mem;
    for (int c = 0; c < GPA_CLASSES; c++)
        h->cur[c] = &beam__gpa_empty_slab;
    h->st = st;
    gpa_lock(st);
    h->next = st->heaps;
    if (h->next != NULL)
        h->next->prev = h;
    st->heaps = h;
    gpa_unlock(st);
    return h;
}

/* The slot a new heap takes: a free one, else one whose instance is gone,
 * else the least recently used one whose heap is not busy. A busy heap is
 * inside a call of this very thread, further up the stack (a refill asking
 * its backing, another instance, for memory): it must not go. -1 when every
 * slot is busy (instances nested eight deep). */
static int victim_slot(void) {
    for (int i = 0; i < GPA_TLS_SLOTS; i++)
        if (beam__gpa_tls[i].id == 0)
            return i;
    int at = -1;
    /* Under the registry lock: a live instance's heaps stay allocated. */
    registry_lock();
    for (int i = 0; i < GPA_TLS_SLOTS && at < 0; i++)
        if (!slot_live_locked(&beam__gpa_tls[i]))
            at = i;
    for (int i = GPA_TLS_SLOTS - 1; i >= 0 && at < 0; i--)
        if (!gpa_heap_in_call(beam__gpa_tls[i].heap, false))
            at = i;
    pthread_mutex_unlock(&registry.lock);
    return at;
}

/* A heap made and given no slot: back to its instance. */
static void heap_drop(gpa_state *st, gpa_heap *h) {
    gpa_defer *defer = NULL;
    gpa_lock(st);
    heap_abandon(st, h, &defer);
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
}

/* A slot emptied for a new heap, or -1 (victim_slot). Retiring gives
 * memory back to other instances: frees only, and a free makes a heap
 * in an empty slot alone (beam__gpa_heap_for_free), so the one it can
 * take is the slot just retired: then another goes. */
static int slot_vacate(void) {
    for (;;) {
        int at = victim_slot();
        if (at < 0)
            return -1;
        slot_retire(&beam__gpa_tls[at]);
        if (beam__gpa_tls[at].id == 0)
            return at;
    }
}

/* A slot no instance holds, or -1. */
static int empty_slot(void) {
    for (int i = 0; i < GPA_TLS_SLOTS; i++)
        if (beam__gpa_tls[i].id == 0)
            return i;
    return -1;
}

/* A heap for a thread that frees into st and has none: made at its
 * GPA_FREE_STREAK-th free into st in a row (the count is in the thread's
 * cold block: the library's thread-locals stay within the spare of static
 * TLS) and put in an empty slot, never in place of another heap: a thread
 * that streams another's blocks back gets one at once; one that frees now
 * and then into many instances (blocks of many resources' instances, say)
 * neither makes a heap for each nor evicts the heaps it allocates from. */
static gpa_heap *heap_for_free_make(gpa_state *st) {
    if (!st->free_heaps)
        return NULL;
    beam__thread_cold *cold = beam__cold();
    if (cold == NULL || empty_slot() < 0)
        return NULL;
    if (cold->gpa_free_streak_id != st->id) {
        cold->gpa_free_streak_id = st->id;
        cold->gpa_free_streak = 0;
    }
    if (++cold->gpa_free_streak < GPA_FREE_STREAK)
        return NULL;
    cold->gpa_free_streak = 0;
    /* Made before the slot is chosen: making it may allocate from other
     * instances, and so use the slots. */
    gpa_heap *h = heap_create(st);
    if (h == NULL)
        return NULL;
    int at = empty_slot();
    if (at < 0) {
        heap_drop(st, h);
        return NULL;
    }
    beam__thread_exit_arm();
    beam__gpa_tls[at] = (gpa_tls_slot){st, st->id, h, st->reg};
    return h;
}

gpa_heap *beam__gpa_heap_for_free(gpa_state *st) {
    gpa_heap *h = beam__gpa_heap_if_any(st);
    return h != NULL ? h : heap_for_free_make(st);
}

gpa_heap *beam__gpa_heap_if_any(const gpa_state *st) {
    for (int i = 0; i < GPA_TLS_SLOTS; i++)
        if (beam__gpa_tls[i].id == st->id)
            return beam__gpa_tls[i].heap;
    return NULL;
}

gpa_heap *beam__gpa_heap_slow(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_slow(gpa);
    return st == NULL ? NULL : beam__gpa_heap_of(st);
}

gpa_heap *beam__gpa_heap_of(gpa_state *st) {
#ifdef GPA_TLS_OFFSET
    /* Every thread's first call of every instance comes here. */
    BEAM__TLS_LEARN(beam__gpa_tls_offset, beam__gpa_tls);
#endif
    int at = -1;
    for (int i = 0; i < GPA_TLS_SLOTS; i++)
        if (beam__gpa_tls[i].id == st->id) {
            at = i;
            break;
        }
    gpa_tls_slot found;
    if (at >= 0) {
        found = beam__gpa_tls[at];
    } else {
        /* Made before any slot changes: making it may itself allocate
         * from other instances, and so use the slots. */
        gpa_heap *h = heap_create(st);
        if (h == NULL)
            return NULL;
        found = (gpa_tls_slot){st, st->id, h, st->reg};
        beam__thread_exit_arm();
        at = slot_vacate();
        if (at < 0) {
            /* Nested eight deep: this call fails rather than take a heap
             * from under a call in progress. */
            heap_drop(st, h);
            return NULL;
        }
    }
    memmove(&beam__gpa_tls[1], &beam__gpa_tls[0], (size_t)at * sizeof found);
    beam__gpa_tls[0] = found;
    return found.heap;
}

void beam__gpa_heaps_free_all(gpa_state *st, gpa_defer **defer) {
    while (st->heaps != NULL) {
        gpa_heap *h = st->heaps;
        st->heaps = h->next;
        heap_defer_free(defer, h);
    }
}

void beam__gpa_heap_wait_revoked(gpa_heap *h, uint32_t n) {
    /* The collector holds the lock for as long as revoked is set. */
    while (gpa_heap_revoked(h)) {
        gpa_heap_leave(h, n);
        gpa_lock(h->st);
        gpa_unlock(h->st);
        gpa_heap_enter(h);
    }
}

/* ---- collection ----------------------------------------------------------
 * Other threads' heaps are taken only when the process-wide barrier is
 * available: without it an idle heap keeps its current slabs (at most one
 * per class) and its kept ones (GPA_KEPT_CLASS per class: no more
 * without the barrier, gpa.c kept_may_grow) until its thread
 * allocates, exits, or collects itself. */

typedef void heap_take_fn(gpa_state *st, gpa_heap *h, gpa_defer **defer);

_Atomic uint64_t beam__gpa_heap_barriers, beam__gpa_heaps_taken;
_Atomic uint64_t beam__gpa_heap_tail_steps;

/* Lock held: the last heap of st->heaps (not empty), one walk a take. */
static gpa_heap *heaps_tail(gpa_state *st) {
    gpa_heap *tail = st->heaps;
    uint64_t steps = 0;
    for (; tail->next != NULL; tail = tail->next)
        steps++;
    beam__atomic_add_relaxed(&beam__gpa_heap_tail_steps, steps);
    return tail;
}

/* Lock held: h, revoked, goes to the end of st->heaps, *tail (which it
 * then is), so that the next shed, which takes at most GPA_SHED_HEAPS,
 * starts with the others. The end is found once a take: found again for
 * each heap, a collect of n idle heaps stepped n * n / 2 heaps under the
 * lock (2,000 idle threads: 1 to 1.8 s instead of 30 ms). */
static void heap_to_tail(gpa_state *st, gpa_heap *h, gpa_heap **tail) {
    if (h == *tail)
        return;
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        st->heaps = h->next;
    h->next->prev = h->prev;
    (*tail)->next = h;
    h->prev = *tail;
    h->next = NULL;
    *tail = h;
}

/* Lock held: h's owner looked (beam__gpa_shed_look, at its every
 * GPA_SHED_REFILLS-th refill) since the last shed that read it; a heap no
 * shed read counts as quiet. */
static bool heap_looked(gpa_heap *h) {
    uint32_t looked = beam__atomic_load_relaxed(&h->looked);
    bool moved = h->looked_read && looked != h->looked_seen;
    h->looked_seen = looked;
    h->looked_read = true;
    return moved;
}

/* Lock held: a look's shed (quiet) passes over the heaps its round took
 * already (st->shed_round). */
static bool heap_shed_this_round(const gpa_state *st, const gpa_heap *h,
                                 bool quiet) {
    return quiet && h->shed_round == st->shed_round;
}

/* Lock held: what_to_do to up to max other heaps whose owner is not inside
 * a call (revoked meanwhile), only quiet ones (heap_looked) of this round
 * not yet taken if asked; nothing without the process barrier. Those taken
 * go to the end of the list (heap_to_tail). True when a heap was left:
 * passed over as busy, or past max (a look's shed that took GPA_SHED_HEAPS
 * and said nothing of the rest left them their emptied slabs: no push
 * would raise the flag again). */
static bool take_idle_heaps(gpa_state *st, gpa_heap *mine, gpa_defer **defer,
                            heap_take_fn *what_to_do, unsigned max,
                            bool quiet) {
    unsigned n = 0;
    bool left = false;
    for (gpa_heap *h = st->heaps; h != NULL && !(left && n == max);
         h = h->next) {
        if (h == mine || heap_shed_this_round(st, h, quiet))
            continue;
        if (n == max || gpa_heap_in_call(h, false) ||
            (heap_looked(h) && quiet)) {
            left = true;
            continue;
        }
        gpa_busy_store(&h->revoked, 1);
        n++;
    }
    if (n == 0)
        return left;
    /* Every owner that stored busy before the barrier is seen busy, one
     * that stores it after sees revoked (os/barrier.h). */
    beam__atomic_add_relaxed(&beam__gpa_heap_barriers, 1);
    bool fenced = beam__process_barrier();
    gpa_heap *tail = heaps_tail(st);
    for (gpa_heap *h = st->heaps, *next; h != NULL && n != 0; h = next) {
        next = h->next;
        if (beam__atomic_load_relaxed(&h->revoked) == 0)
            continue;
        if (fenced && !gpa_heap_in_call(h, true)) {
            what_to_do(st, h, defer);
            beam__atomic_add_relaxed(&beam__gpa_heaps_taken, 1);
            h->shed_round = st->shed_round;
        } else {
            left = true;
        }
        beam__atomic_store_release(&h->revoked, 0);
        heap_to_tail(st, h, &tail);
        n--;
    }
    return left;
}

/* Lock held: strip every heap whose owner is not inside a call. */
static void strip_idle_heaps(gpa_state *st, gpa_heap *mine, gpa_defer **defer) {
    /* This thread's own heap, unless a call of this instance is in
     * progress further up the stack (collect from a report hook). */
    if (mine != NULL && !gpa_heap_in_call(mine, false))
        heap_strip(st, mine, defer);
    (void)take_idle_heaps(st, mine, defer, heap_strip, UINT_MAX, false);
}

/* h's owner, or the lock holder while it is away: h's kept slabs whose every
 * block out waits in thread_free (other threads freed them: none is in
 * h's stash, which counts as out) go back to the instance, each without
 * its list walked (beam__gpa_slab_park). So do, beyond GPA_KEPT_CLASS of a
 * class, those with as many frees waiting as bring a FULL slab back (its
 * requeue mark), their frees left waiting (beam__gpa_slab_park_pending):
 * with 32 a class such a slab was FULL and went back at that mark, and
 * kept beyond, one live block each, an idle heap held up to 1,024 slabs
 * (64 MiB) that only its own refills of that class would use (found in
 * review). A read of each kept slab's thread_free, up to GPA_KEPT_MAX;
 * the slabs taken off h's lists, linked through next (the owner's walk
 * needs no lock). */
static gpa_slab *kept_pick(gpa_heap *h) {
    gpa_slab *picked = NULL, **end = &picked;
    for (unsigned c = 0; c < GPA_CLASSES; c++) {
        for (gpa_slab *s = h->kept[c].head, *next; s != NULL; s = next) {
            next = s->next;
            uintptr_t tf = beam__atomic_load_relaxed(&s->thread_free);
            if (tf == 0 || (GPA_TF_COUNT(tf) != s->used &&
                            (h->kept[c].n <= GPA_KEPT_CLASS ||
                             GPA_TF_COUNT(tf) < beam__gpa_slab_mark(s))))
                continue;
            gpa_kept_unlink(h, s);
            *end = s; /* in the lists' order: so they go back */
            end = &s->next;
        }
    }
    *end = NULL;
    return picked;
}

/* Lock held: the slabs kept_pick took go back (frees only add to
 * thread_free meanwhile: a slab wholly free then still is). */
static void kept_park(gpa_state *st, gpa_slab *picked, gpa_defer **defer) {
    for (gpa_slab *s = picked, *next; s != NULL; s = next) {
        next = s->next;
        s->next = NULL; /* off every list, as a park wants it */
        uintptr_t tf = beam__atomic_load_relaxed(&s->thread_free);
        if (GPA_TF_COUNT(tf) == s->used)
            beam__gpa_slab_park(st, s, defer);
        else
            beam__gpa_slab_park_pending(st, s);
    }
}

static void heap_shed_kept(gpa_state *st, gpa_heap *h, gpa_defer **defer) {
    kept_park(st, kept_pick(h), defer);
}

/* Other heaps only when there are any, and only with the barrier ready:
 * its first use registers the process, which takes 8-11 ms in a
 * multithreaded one (os/barrier.h), and must not happen under the lock.
 * A heap registers it here when one of its classes wanted more than
 * GPA_KEPT_CLASS kept slabs (kept_wants_more): a heap that large, when it
 * next grows the instance, not the first allocation of every process. */
static bool other_heaps(const gpa_state *st, const gpa_heap *mine) {
    return st->heaps != NULL &&
           (st->heaps != mine || mine == NULL || mine->next != NULL) &&
           beam__process_barrier_ready();
}

/* No lock held: the kept slabs of mine (this thread's heap, or NULL) that
 * other threads emptied, taken off its lists (kept_pick) for kept_park;
 * the barrier is readied first when mine wanted more (other_heaps: not
 * under the lock). */
static gpa_slab *own_pick(gpa_heap *mine) {
    if (mine == NULL)
        return NULL;
    if (mine->kept_wants_more)
        beam__process_barrier_prepare();
    return kept_pick(mine);
}

void beam__gpa_shed_kept(gpa_state *st, gpa_heap *mine) {
    /* A tracked instance keeps no slab (gpa.c kept_reattach): each of its
     * growths revoked every idle heap and interrupted every processor
     * (the barrier) to find nothing. */
    if (st->track)
        return;
    gpa_defer *defer = NULL;
    gpa_slab *picked = own_pick(mine);
    gpa_lock(st);
    kept_park(st, picked, &defer);
    if (other_heaps(st, mine))
        (void)take_idle_heaps(st, mine, &defer, heap_shed_kept, GPA_SHED_HEAPS,
                              false);
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
}

uint64_t beam__gpa_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Whether this refill's look may take other heaps: at most one look an
 * instance every GPA_SHED_GAP_NS (one thread wins the slot). */
static bool shed_due(gpa_state *st) {
    uint64_t now = beam__gpa_now_ns();
    uint64_t due = beam__atomic_load_relaxed(&st->shed_due);
    return now >= due &&
           beam__atomic_cas_acq_rel(&st->shed_due, &due, now + GPA_SHED_GAP_NS);
}

void beam__gpa_shed_look(gpa_heap *h) {
    gpa_state *st = h->st;
    beam__atomic_store_relaxed(&h->looked, h->refills);
    if (st->track || beam__atomic_load_relaxed(&st->shed_wanted) == 0)
        return;
    /* This heap's own, with no lock for the walk and none at all when
     * nothing is due; the flag stays up for the others. */
    gpa_slab *picked = own_pick(h);
    uint32_t wanted = 0;
    bool others =
        shed_due(st) &&
        (wanted = beam__atomic_exchange_acquire(&st->shed_wanted, 0)) != 0;
    if (picked == NULL && !others)
        return;
    gpa_defer *defer = NULL;
    gpa_lock(st);
    kept_park(st, picked, &defer);
    /* A push's note starts a round: every idle heap once. */
    if (others && wanted == GPA_SHED_PUSHED)
        st->shed_round++;
    /* A heap left (passed over as busy: it may idle by the next; or past
     * GPA_SHED_HEAPS) keeps the flag up for the next: slab_push may have
     * noted its slabs for the last time. A push meanwhile wins. */
    uint32_t none = 0;
    if (others && other_heaps(st, h) &&
        take_idle_heaps(st, h, &defer, heap_shed_kept, GPA_SHED_HEAPS, true))
        (void)beam__atomic_cas_acq_rel(&st->shed_wanted, &none, GPA_SHED_MORE);
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
}

void beam__gpa_collect_all(gpa_state *st) {
    gpa_heap *mine = beam__gpa_heap_if_any(st);
    if (mine != NULL)
        beam__publish(&mine->stats, &st->peak);
    gpa_defer *defer = NULL;
    /* The barrier's registration (first use) before the lock: under it,
     * with idle heaps revoked, their owners waited for it (os/barrier.h). */
    beam__process_barrier_prepare();
    gpa_lock(st);
    strip_idle_heaps(st, mine, &defer);
    beam__gpa_medium_flush(st, &defer);
    beam__gpa_slabs_trim(st, &defer);
    beam__gpa_cache_flush(st, &defer);
    beam__gpa_large_trim(st, &defer);
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
}

/* ---- library unload --------------------------------------------------------
 * A NIF library's copy of this code goes away with the library; the process-
 * wide instance is torn down by the unload callback (src/nif/glue.c), and
 * what is global here goes when the object is unloaded, if no instance is
 * left (one still live means memory still in use: then nothing is freed). */
__attribute__((destructor)) static void gpa_unload(void) {
    if (!beam__gpa_registry_empty())
        return;
    beam__gpa_registry_free();
    beam__gpa_map_free();
    beam__set_free(BEAM__SET_GPA_LARGE);
}
