/*
 * Threads, heaps and instance state of the general purpose allocator.
 *
 * A thread finds its heap for an instance in a few thread-local slots, the
 * most recent first; a slot is trusted only when both the state pointer and
 * the state's unique id match, so slots left behind by a destroyed instance
 * are never followed. When a thread exits (thread_exit.c calls
 * beam__gpa_thread_exit) or a slot is evicted, the heap is abandoned: its
 * slabs stay where they are, so
 * every block stays valid and freeable from any thread, and the next heap
 * that needs a slab of that class adopts them.
 *
 * Lock order: registry lock, then an instance lock.
 */
#include "gpa_internal.h"

#include <sched.h>
#include <string.h>
#include <time.h>

BEAM_THREAD_LOCAL gpa_tls_slot beam__gpa_tls[GPA_TLS_SLOTS];

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static gpa_state *registry;
static uint64_t next_id = 1;

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

static gpa_state *state_create(beam_gpa_t *gpa) {
    beam_allocator_t b = gpa->backing;
    if (b.vtable == NULL)
        return NULL;
    gpa_state *st = (gpa_state *)b.vtable->alloc(b.ctx, sizeof *st,
                                                 BEAM_ALIGNOF(gpa_state), 0);
    if (st == NULL)
        return NULL;
    memset(st, 0, sizeof *st);
    st->backing = b;
    st->flags = gpa->flags;
    st->safe = (gpa->flags & BEAM_GPA_SAFE) != 0;
    st->track = st->safe || (gpa->flags & BEAM_GPA_TRACK_SITES) != 0;
    st->next_segment_slabs = 3;
    atomic_store_explicit(&st->meta_bytes, sizeof *st, memory_order_relaxed);
    pthread_mutex_init(&st->lock, NULL);
    pthread_mutex_lock(&registry_lock);
    st->id = next_id++;
    st->reg_next = registry;
    if (registry != NULL)
        registry->reg_prev = st;
    registry = st;
    pthread_mutex_unlock(&registry_lock);
    st->cookie = make_cookie(st, st->id);
    return st;
}

gpa_state *beam__gpa_state_slow(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st != NULL)
        return st;
    while (__atomic_exchange_n(&gpa->beam__lock, 1, __ATOMIC_ACQUIRE))
        sched_yield();
    st = gpa->beam__state;
    if (st == NULL) {
        st = state_create(gpa);
        __atomic_store_n(&gpa->beam__state, st, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&gpa->beam__lock, 0, __ATOMIC_RELEASE);
    return st;
}

void beam__gpa_registry_remove(gpa_state *st) {
    pthread_mutex_lock(&registry_lock);
    if (st->reg_prev != NULL)
        st->reg_prev->reg_next = st->reg_next;
    else
        registry = st->reg_next;
    if (st->reg_next != NULL)
        st->reg_next->reg_prev = st->reg_prev;
    pthread_mutex_unlock(&registry_lock);
}

/* ---- abandoning a heap --------------------------------------------------- */

/* Called by the heap's own thread with st locked. */
static void heap_abandon(gpa_state *st, gpa_heap *h) {
    atomic_store_explicit(&h->notify, NULL, memory_order_relaxed);
    beam__gpa_cache_flush(st, h);
    gpa_slab *empty = NULL;
    for (gpa_segment *seg = st->segments; seg != NULL; seg = seg->next) {
        for (unsigned i = 0; i < seg->nslabs; i++) {
            gpa_slab *s = beam__gpa_seg_slab(seg, i);
            if (atomic_load_explicit(&s->heap, memory_order_relaxed) != h)
                continue;
            beam__gpa_collect(s);
            atomic_store_explicit(&s->heap, NULL, memory_order_relaxed);
            if (s->used == 0) {
                /* Released after the walk: releasing may free a segment. */
                s->next = empty;
                empty = s;
                continue;
            }
            s->where = WHERE_ABANDONED;
            s->prev = NULL;
            s->next = st->abandoned[s->cls];
            if (s->next != NULL)
                s->next->prev = s;
            st->abandoned[s->cls] = s;
        }
    }
    while (empty != NULL) {
        gpa_slab *next = empty->next;
        beam__gpa_slab_release(st, empty);
        empty = next;
    }
    beam__counters_retire(&st->retired, &h->stats, &st->peak);
    for (gpa_heap **p = &st->heaps; *p != NULL; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            break;
        }
    beam__gpa_meta_free(st, h, sizeof *h, BEAM_ALIGNOF(gpa_heap));
}

/* Abandon the heap of a slot if its instance still lives. */
static void slot_retire(gpa_tls_slot *slot) {
    if (slot->st == NULL)
        return;
    pthread_mutex_lock(&registry_lock);
    for (gpa_state *st = registry; st != NULL; st = st->reg_next) {
        if (st == slot->st && st->id == slot->id) {
            pthread_mutex_lock(&st->lock);
            heap_abandon(st, slot->heap);
            pthread_mutex_unlock(&st->lock);
            break;
        }
    }
    pthread_mutex_unlock(&registry_lock);
    memset(slot, 0, sizeof *slot);
}

void beam__gpa_thread_exit(void) {
    for (int i = 0; i < GPA_TLS_SLOTS; i++)
        slot_retire(&beam__gpa_tls[i]);
}

/* ---- finding or making this thread's heap -------------------------------- */

static gpa_heap *heap_create(gpa_state *st) {
    gpa_heap *h =
        (gpa_heap *)beam__gpa_meta_alloc(st, sizeof *h, BEAM_ALIGNOF(gpa_heap));
    if (h == NULL)
        return NULL;
    memset(h, 0, sizeof *h);
    for (int c = 0; c < GPA_CLASSES; c++)
        h->cur[c] = &beam__gpa_empty_slab;
    h->st = st;
    pthread_mutex_lock(&st->lock);
    h->next = st->heaps;
    st->heaps = h;
    pthread_mutex_unlock(&st->lock);
    return h;
}

gpa_heap *beam__gpa_heap_slow(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_slow(gpa);
    if (st == NULL)
        return NULL;
    gpa_tls_slot found = {NULL, 0, NULL};
    int at = GPA_TLS_SLOTS - 1;
    for (int i = 0; i < GPA_TLS_SLOTS; i++) {
        if (beam__gpa_tls[i].st == st && beam__gpa_tls[i].id == st->id) {
            found = beam__gpa_tls[i];
            at = i;
            break;
        }
    }
    if (found.heap == NULL) {
        found.heap = heap_create(st);
        if (found.heap == NULL)
            return NULL;
        found.st = st;
        found.id = st->id;
        beam__thread_exit_arm();
        slot_retire(&beam__gpa_tls[at]); /* the least recent goes */
    }
    memmove(&beam__gpa_tls[1], &beam__gpa_tls[0], (size_t)at * sizeof found);
    beam__gpa_tls[0] = found;
    return found.heap;
}

void beam__gpa_heaps_free_all(gpa_state *st) {
    while (st->heaps != NULL) {
        gpa_heap *h = st->heaps;
        st->heaps = h->next;
        beam__gpa_meta_free(st, h, sizeof *h, BEAM_ALIGNOF(gpa_heap));
    }
}
