/*
 * Resource-scoped allocators: an allocator whose memory belongs to an
 * Erlang resource term. Every block it hands out lives until the resource
 * is released, explicitly (beam_resource_release) or by the garbage
 * collector (the resource destructor), whichever comes first; any NIF call
 * that receives the term can allocate, use and free through it.
 *
 * The resource object (enif_alloc_resource, so counted by the VM under
 * :erlang.memory(:binary)) holds the allocator's state inline, then the
 * caller's user area:
 *
 *   | struct beam_resource | user_size bytes, zeroed |
 *
 * Blocks come from an inner allocator, a general purpose allocator instance
 * or an arena, whose backing is a counting shim over the caller's parent
 * (so parent_bytes is exact, and teardown can check it gave everything
 * back).
 *
 * Lifetime of the inner allocator. One atomic word, state, holds a
 * RELEASED bit, the number of allocator calls inside, in units of CALL
 * (its low half), and the number of pins (and other entries from
 * outside), in units of PIN (its high half): the destructor tells a call
 * a library's own thread is making (which a release hook stops) from a pin
 * left open (a caller's bug). Every entry point adds its unit and fails
 * when it finds RELEASED (an allocator call reads the word first, and
 * once released fails without adding: see enter); release sets RELEASED.
 * Whoever brings the word to exactly RELEASED (no one inside) tears down: the
 * releaser when nobody was inside, otherwise the last one to leave. So release
 * never waits (but for a BeamAlloc.collect/1 working on that very resource:
 * list_unlink), and is safe while the releasing thread holds a pin. A failed
 * entry briefly adds its unit after RELEASED and may also bring the word back
 * to RELEASED: the torn_down flag makes teardown run once.
 *
 * Invariants:
 *  - state / PIN counts pins, (state % PIN) / CALL calls in flight; once
 *    RELEASED is set it stays.
 *  - No call reaches the inner allocator after teardown has begun: it runs
 *    only when the word is RELEASED with no entries, and no entry can
 *    succeed after RELEASED.
 *  - live_blocks/live_bytes: allocations minus frees through the resource
 *    allocator, as its callers described them; zero after teardown.
 *  - parent_bytes: bytes the inner allocator holds from the parent; zero
 *    after teardown (checked, and reported when not).
 *  - over (the resource whose allocator is the parent, if one): holds an
 *    entry of the child's from its creation to its teardown, so the
 *    parent's memory outlives the child's, and a reference to the end of
 *    the child's destructor, so the parent object outlives the child's.
 *  - live_allocators (per NIF library): resources created and not yet torn
 *    down.
 *  - gpa_list (per NIF library, under list_lock): the GPA resources not yet
 *    torn down, so that BeamAlloc.collect/1 reaches their instances (a
 *    long-lived resource whose blocks were all freed held its peak, 205 MB
 *    in a soak, until release). A listed resource is alive and not torn
 *    down: teardown and the destructor unlink it first, waiting while a
 *    collect works on it (a collect holds no entry: it does not take a
 *    release over).
 *
 * The resource type is per NIF library (each shared object has its own copy
 * of beam_alloc) and its name carries this copy's address, so that a
 * module upgraded to another copy of the library opens a new type instead
 * of handing the old objects to code that does not know their state (the
 * VM keeps the old library loaded until they are gone). The same copy
 * opened again by a hot upgrade (the old code still there) takes its own
 * type over; after a delete and purge the VM has unlinked the type, and a
 * reload opens a new one: an old instance's resources are then a badarg
 * to the new code.
 */
#include "nif_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>

#define RELEASED ((size_t)1)
#define CALL ((size_t)2)
#define PIN ((size_t)1 << (sizeof(size_t) * 4))
#define CALLS_MASK (PIN - CALL)

struct beam_resource {
    _Atomic size_t state; /* RELEASED | calls * CALL | pins * PIN */
    /* Entries that added their unit and only then found RELEASED (and took
     * it back): each showed a call or pin in flight to the destructor's
     * wait for nothing. An allocator call reads the word first, so at most
     * one a thread that raced the release; read by the tests
     * (beam__resource_late_entries). */
    _Atomic size_t late_entries;
    _Atomic size_t live_blocks;  /* see the invariants */
    _Atomic size_t live_bytes;   /* see the invariants */
    _Atomic size_t parent_bytes; /* see the invariants */
    atomic_bool torn_down;       /* teardown has run (or must never run) */
    atomic_bool ops_retired;     /* its ops are in retired_ops */
    /* Where the first pin since the resource last had nothing inside was
     * taken (its caller's return address; 0 when that first entry was not
     * a pin): what the destructor names when a pin outlives the resource.
     * Often the forgotten one, not always (an outer pin around the one
     * left open, another process's pin held meanwhile): the report says
     * which pin it names, no more. */
    _Atomic uintptr_t first_pin;
    /* The user's hook, run by teardown before the memory goes. */
    _Atomic(beam_resource_release_fn) on_release;
    beam_resource_kind kind;
    bool has_lock;
    beam_allocator_t parent; /* where everything comes from in the end */
    /* The resource whose allocator parent is, else NULL: entered (its
     * memory, which holds ours, stays past its release) until our teardown,
     * kept (a reference) until the end of our destructor (hold_parent). */
    beam_resource_t *over;
    beam_allocator_t inner; /* the gpa or the arena below */
    pthread_mutex_t lock;   /* BEAM_RESOURCE_ARENA: guards arena */
    /* The thread holding lock (see me()), else NULL: a thread that finds
     * itself there came back through a cycle of allocators; one that
     * finds a thread waiting, through others, for a lock it holds would
     * wait for ever (see lock_contended). */
    const void *_Atomic holder;
    union {
        beam_gpa_t gpa;
        beam_arena_t arena;
    } impl;
    size_t user_size;
    /* gpa_list's links and the last collect that reached it (list_lock). */
    beam_resource_t *list_prev, *list_next;
    bool listed;
    unsigned collected_in;
    /* The user area follows. */
};

/* The user area starts right after the struct: keep it BEAM_MAX_ALIGN
 * aligned, as the header promises (resource objects are). */
_Static_assert(sizeof(struct beam_resource) % BEAM_MAX_ALIGN == 0,
               "user area misaligned");
_Static_assert(BEAM_ALIGNOF(struct beam_resource) <= BEAM_MAX_ALIGN,
               "resource state over-aligned");

static _Atomic(ErlNifResourceType *) resource_type;
/* BEAM_NIF_INIT opened the type in this library's load/upgrade callback: a
 * user's own beam_resource_init call then has nothing left to do. */
static atomic_bool opened_by_hook;
static _Atomic size_t live_allocators;

/* The GPA resources to collect (see the invariants). list_lock is a leaf
 * but for the wait below: nothing allocates or frees under it. collecting
 * is the resource a walk (a collect, a holdings read) works on with the
 * lock let go, collector its thread: the destructor of that resource waits
 * on list_done for it. Walks run entered (instances_lock), so one at a
 * time: one collecting is enough. */
static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t list_done = PTHREAD_COND_INITIALIZER;
static beam_resource_t *gpa_list;
static beam_resource_t *collecting;
static const void *collector;
static unsigned collect_round;

/* The allocations and frees of the GPA resources torn down: the holdings'
 * ops must only grow, or a new resource's burst that came to the count a
 * released one had shown (the same work done again) looked like no work
 * since the last collect, and was never collected. Added before the
 * resource leaves the list: a walk may count it twice (the library looks
 * busy a tick longer), never not at all. */
static _Atomic uint64_t retired_ops;

/* A GPA resource's allocations plus frees (its instance's counters). */
static uint64_t ops_of(beam_resource_t *r) {
    beam_alloc_stats s;
    memset(&s, 0, sizeof s);
    (void)beam_allocator_stats(r->inner, &s);
    return s.allocations + s.frees;
}

/* Nobody can enter r (torn down, or no reference left: the destructor):
 * its counts are final (a walk's collect counts nothing). Once, from
 * whichever of teardown and the destructor comes first, each before it
 * unlinks r: the destructor unlinked first, then counted in its teardown,
 * so a holdings read in between missed r's ops (found in review: a read
 * came out 600 below what was done with that window widened). */
static void add_retired_ops(beam_resource_t *r) {
    if (r->kind == BEAM_RESOURCE_GPA &&
        !beam__atomic_exchange_acq_rel(&r->ops_retired, true))
        beam__atomic_add_relaxed(&retired_ops, ops_of(r));
}

/* --- The counting shim over the parent --------------------------------- */

static void add(_Atomic size_t *c, size_t n) {
    beam__atomic_add_relaxed(c, n);
}
static void sub(_Atomic size_t *c, size_t n) {
    beam__atomic_sub_relaxed(c, n);
}
/* Adjust a byte count from len to new_len. */
static void adjust(_Atomic size_t *c, size_t len, size_t new_len) {
    if (new_len >= len)
        add(c, new_len - len);
    else
        sub(c, len - new_len);
}

static void *parent_alloc(void *ctx, size_t len, size_t alignment,
                          uintptr_t ret) {
    beam_resource_t *r = ctx;
    void *p = beam__parent_alloc(r->parent, len, alignment, ret);
    if (p != NULL)
        add(&r->parent_bytes, len);
    return p;
}

static bool parent_resize(void *ctx, void *mem, size_t len, size_t alignment,
                          size_t new_len, uintptr_t ret) {
    beam_resource_t *r = ctx;
    bool ok = beam__parent_resize(r->parent, mem, len, alignment, new_len, ret);
    if (ok)
        adjust(&r->parent_bytes, len, new_len);
    return ok;
}

static void *parent_remap(void *ctx, void *mem, size_t len, size_t alignment,
                          size_t new_len, uintptr_t ret) {
    beam_resource_t *r = ctx;
    void *p = beam__parent_remap(r->parent, mem, len, alignment, new_len, ret);
    if (p != NULL)
        adjust(&r->parent_bytes, len, new_len);
    return p;
}

static void parent_free(void *ctx, void *mem, size_t len, size_t alignment,
                        uintptr_t ret) {
    beam_resource_t *r = ctx;
    if (mem == NULL)
        return; /* NULL: the contract's no-op, also through the vtable */
    beam__parent_free(r->parent, mem, len, alignment, ret);
    sub(&r->parent_bytes, len);
}

static const beam_allocator_vtable parent_vtable = {parent_alloc, parent_resize,
                                                    parent_remap, parent_free};

/* --- Lifetime ---------------------------------------------------------- */

static void list_unlink(beam_resource_t *r);
static bool leave_is_last(beam_resource_t *r, size_t unit);

/* What tore a resource down: a report made meanwhile (a chunk of an arena
 * resource written past, found as it goes back to a checking parent) says
 * so, where it would name the frames of the teardown, which tell the NIF's
 * author nothing (torn_found). */
typedef enum torn_by {
    TORN_BY_LEAVE,   /* the last call or pin inside, after the release */
    TORN_BY_RELEASE, /* beam_resource_release, called from ret */
    TORN_BY_DTOR,    /* the destructor */
    TORN_BY_CHILD,   /* the teardown of the last resource made over it */
} torn_by;

typedef struct torn {
    const beam_resource_t *r;
    torn_by by;
    uintptr_t ret;
} torn;

/* "found when resource 0x.. (BEAM_RESOURCE_ARENA) was torn down by ..." */
static void torn_said(const torn *w, char *buf, size_t n) {
    static const char *const by[] = {
        [TORN_BY_LEAVE] = "after its release, as the last call or pin "
                          "inside it left",
        [TORN_BY_RELEASE] = "by beam_resource_release, called from ",
        [TORN_BY_DTOR] = "by its destructor (its last reference gone: "
                         "garbage collected, or dropped)",
        [TORN_BY_CHILD] = "after its release, as the last resource made "
                          "over its allocator went",
    };
    char site[512] = "";
    if (w->by == TORN_BY_RELEASE)
        beam__describe_addr(w->ret, site, sizeof site);
    snprintf(buf, n, "found when resource %p (%s) was torn down %s%s",
             (const void *)w->r,
             w->r->kind == BEAM_RESOURCE_GPA ? "BEAM_RESOURCE_GPA"
                                             : "BEAM_RESOURCE_ARENA",
             by[w->by], site);
}

static void torn_found(const beam__call_end *end, char *buf, size_t n) {
    torn_said(end->call, buf, n);
}

static void deinit_inner(beam__call_end *end, void *arg) {
    beam_resource_t *r = arg;
    if (r->kind == BEAM_RESOURCE_GPA)
        (void)beam_gpa_deinit(&r->impl.gpa); /* live blocks are expected */
    else
        beam__arena_deinit_noting(&r->impl.arena, end);
}

/* The inner allocator gives everything back to the parent, in an end that
 * says what tore r down (torn). */
static void deinit_inner_saying(beam_resource_t *r, const torn *why) {
    beam__call_end end = {
        torn_found, why, NULL, 0, 0, 0, "the resource's arena"};
    beam__nif_in_end(&end, deinit_inner, r);
}

/* in_call: the last one out is a call of the allocator (res_*), which may
 * come from deep inside the code the hook takes down (a zstd worker
 * thread allocating: the hook would join that very thread). With a hook,
 * such a call leaves everything to the next outside actor (a pin or unpin,
 * a release, the destructor); without one, it tears down as before.
 * Returns the resource whose teardown is now the caller's: the parent
 * resource (over) when r's entry was the last thing holding back its
 * release, else NULL. */
static beam_resource_t *teardown_one(beam_resource_t *r, bool in_call,
                                     const torn *why) {
    if (in_call && beam__atomic_load_acquire(&r->on_release) != NULL)
        return NULL;
    if (beam__atomic_exchange_acq_rel(&r->torn_down, true))
        return NULL;
    add_retired_ops(r);
    list_unlink(r); /* nothing to collect any more */
    /* First: what lives in the memory (a library's context, its threads,
     * a mutex in the user area) goes down while the memory is still
     * there. Nobody else is inside, and nobody can enter. */
    beam_resource_release_fn fn = beam__atomic_exchange_acq_rel(
        &r->on_release, (beam_resource_release_fn)NULL);
    if (fn != NULL)
        fn(r);
    deinit_inner_saying(r, why);
    beam__atomic_store_relaxed(&r->live_blocks, 0);
    beam__atomic_store_relaxed(&r->live_bytes, 0);
    size_t held = beam__atomic_load_relaxed(&r->parent_bytes);
    if (held != 0 && r->over != NULL && beam_resource_is_released(r->over)) {
        /* Our frees into a released parent did nothing: its teardown,
         * which our entry holds back, takes those bytes. */
        beam__atomic_store_relaxed(&r->parent_bytes, 0);
        held = 0;
    }
    if (held != 0) {
        char said[640];
        torn_said(why, said, sizeof said);
        beam__report("beam_alloc: resource allocator %p still holds %zu bytes "
                     "of its parent after release (%s)",
                     (void *)r, held, said);
    }
    sub(&live_allocators, 1);
    /* Our memory went back: our entry on the parent goes. */
    return r->over != NULL && leave_is_last(r->over, PIN) ? r->over : NULL;
}

/* teardown_one down a chain of released resources, each of which only its
 * child's entry held back: a loop, not a call per link (a teardown that
 * called its parent's went a frame deeper per link: a chain of 100 000,
 * each released under its child, overflowed a scheduler's stack at the
 * last one's release; test/resource_parent_test.exs). Out of line: the
 * allocator calls that may end in it stay as short as they were. */
static BEAM__NOINLINE void teardown(beam_resource_t *r, bool in_call,
                                    torn_by by, uintptr_t ret) {
    while (r != NULL) {
        torn why = {r, by, ret};
        r = teardown_one(r, in_call, &why);
        by = TORN_BY_CHILD;
    }
}

/* Entry into the inner allocator: false (and nothing held) once released.
 * in_call: an allocator call's entry, not a pin (see teardown). pin: a
 * pin's call site, else 0 (noted when the entry finds nobody inside). */
static inline bool enter(beam_resource_t *r, bool in_call, uintptr_t pin) {
    /* A call once released fails without touching the word. A thread
     * that goes on calling after the release (a worker pool's, until the
     * release hook stops it) would otherwise count as a call in flight
     * each time, and the destructor, which waits for no call in flight
     * before the hook, waited as long as such threads went on: up to 6 s
     * of a scheduler with 16 of them (found in review). Not a pin: one
     * after the release may be the outside actor that completes it (see
     * teardown), and a call never is. */
    if (in_call &&
        BEAM__UNLIKELY(beam__atomic_load_relaxed(&r->state) & RELEASED))
        return false;
    size_t unit = in_call ? CALL : PIN;
    size_t v = beam__atomic_add_acquire(&r->state, unit);
    if (BEAM__LIKELY(v == 0)) {
        beam__atomic_store_relaxed(&r->first_pin, pin);
        return true;
    }
    if (BEAM__LIKELY(!(v & RELEASED)))
        return true;
    /* Undo. This may be the step that leaves the word at RELEASED: the
     * torn_down flag keeps teardown from running twice. */
    beam__atomic_add_relaxed(&r->late_entries, 1);
    v = beam__atomic_sub_acq_rel(&r->state, unit);
    if (v == (unit | RELEASED))
        teardown(r, in_call, TORN_BY_LEAVE, 0);
    return false;
}

size_t beam__resource_late_entries(beam_resource_t *r) {
    return beam__atomic_load_relaxed(&r->late_entries);
}

/* Gives back one unit: true when that left r released with nobody
 * inside, its teardown then the caller's. */
static inline bool leave_is_last(beam_resource_t *r, size_t unit) {
    size_t v = beam__atomic_sub_acq_rel(&r->state, unit);
    return BEAM__UNLIKELY(v == (unit | RELEASED));
}

static inline void leave_unit(beam_resource_t *r, size_t unit, bool in_call) {
    if (leave_is_last(r, unit))
        teardown(r, in_call, TORN_BY_LEAVE, 0); /* released while inside */
}

static inline void leave(beam_resource_t *r, bool in_call) {
    leave_unit(r, in_call ? CALL : PIN, in_call);
}

/* A child's entry (a PIN unit, see hold_parent) given back by a child
 * that never got its allocator (its teardown gives it back itself). */
static void leave_parent(beam_resource_t *over) {
    leave_unit(over, PIN, false);
}

/* A thread, as the resource locks know it: the address of its nesting
 * state (a thread-local the library has anyway: the thread-local block
 * stays small, see internal.h), compared, never read through. */
static inline const void *me(void) {
    const void *w = &beam__nesting;
    __asm__("" : "+r"(w)); /* one thread-local access (a call, dlopen'ed) */
    return w;
}

/* The wait-for graph: every thread blocked, or about to block, on a
 * resource lock, with the resource it waits for. waits_lock guards it, a
 * leaf: nothing is called while it is held. A listed resource is alive:
 * its waiting thread entered it and takes its edge off before it leaves.
 * Past WAITS_MAX threads waiting at once (far more than a VM has
 * schedulers) a thread waits unwatched. */
#define WAITS_MAX 1024
typedef struct wait_edge {
    const void *who;
    beam_resource_t *on;
} wait_edge;
static pthread_mutex_t waits_lock = PTHREAD_MUTEX_INITIALIZER;
static wait_edge waits[WAITS_MAX];
static unsigned waits_n;

/* waits_lock held: the resource who waits for, or NULL. */
static beam_resource_t *waited_by(const void *who) {
    for (unsigned i = 0; i < waits_n; i++)
        if (waits[i].who == who)
            return waits[i].on;
    return NULL;
}

/* waits_lock held: who's edge off the graph. */
static void wait_remove(const void *who) {
    for (unsigned i = 0; i < waits_n; i++)
        if (waits[i].who == who) {
            waits[i] = waits[--waits_n];
            return;
        }
}

/* waits_lock held: from r, its holder, the resource that one waits for,
 * that one's holder...: how many threads stand between r's holder and
 * who when the chain comes back to who (0: who holds r already), else
 * -1. Every holder on the chain but the last waits, so it is one of
 * waits_n threads: a chain longer than that runs round a cycle without
 * who in it, which the thread that closed it is breaking. */
static int chain_back_to(beam_resource_t *r, const void *who) {
    for (unsigned i = 0; r != NULL && i <= waits_n; i++) {
        const void *h = beam__atomic_load_acquire(&r->holder);
        if (h == who)
            return (int)i;
        if (h == NULL)
            return -1;
        r = waited_by(h);
    }
    return -1;
}

/* The lock of r is taken. By this very thread, further up its stack: the
 * resource's allocator was reached again through its own parent. Or by a
 * thread that waits, through others, for a lock this one holds: two
 * resources built on each other (each one's parent leads to the other),
 * used by two threads at once, each holding one lock and wanting the
 * other's, would wait for ever, schedulers of the VM among them. So a
 * thread about to wait lists itself in the wait-for graph and follows the
 * chain of holders: a chain back to itself is a cycle, and its call fails
 * (reported) instead, which lets its locks go to the threads of the cycle
 * that listed themselves before.
 *
 * The last thread to close a cycle sees it: the graph changes only under
 * waits_lock; every thread of the cycle stored its holders before it
 * listed itself, then blocks with its edge listed and its locks held, so
 * what the chain reads is the state it is stuck in, not a passing one. A
 * holder seen without an edge is running: the chain ends there. */
static BEAM__NOINLINE bool lock_contended(beam_resource_t *r, const void *who) {
    pthread_mutex_lock(&waits_lock);
    /* (Unlisted, past WAITS_MAX, it still sees its own cycles; others'
     * walks do not see it.) */
    bool listed = waits_n < WAITS_MAX;
    if (listed)
        waits[waits_n++] = (wait_edge){who, r};
    int between = chain_back_to(r, who);
    if (listed && between >= 0) {
        wait_remove(who);
        listed = false;
    }
    pthread_mutex_unlock(&waits_lock);
    if (between == 0)
        return beam__nesting_refused(
            "a resource allocator reached again through its own parent, on "
            "the thread that holds its lock");
    if (between > 0)
        return beam__nesting_refused(
            "a resource allocator whose lock is held by a thread waiting, "
            "through other allocators, for a lock this thread holds "
            "(resources built on each other, used by several threads at "
            "once)");
    pthread_mutex_lock(&r->lock);
    if (listed) {
        pthread_mutex_lock(&waits_lock);
        wait_remove(who);
        pthread_mutex_unlock(&waits_lock);
    }
    return true;
}

/* false: waiting for the lock would never end (lock_contended); reported,
 * the call fails. */
static inline bool lock(beam_resource_t *r) {
    if (r->kind != BEAM_RESOURCE_ARENA)
        return true;
    const void *w = me();
    if (BEAM__UNLIKELY(pthread_mutex_trylock(&r->lock) != 0) &&
        !lock_contended(r, w))
        return false;
    beam__atomic_store_release(&r->holder, w);
    return true;
}
static inline void unlock(beam_resource_t *r) {
    if (r->kind == BEAM_RESOURCE_ARENA) {
        beam__atomic_store_release(&r->holder, NULL);
        pthread_mutex_unlock(&r->lock);
    }
}

/* enter, then lock: false, with nothing held, when the resource is
 * released or the lock refused. */
static inline bool enter_locked(beam_resource_t *r) {
    if (!enter(r, true, 0))
        return false;
    if (lock(r))
        return true;
    leave(r, true);
    return false;
}

/* --- The list of GPA resources, for collect ---------------------------- */

static void list_link(beam_resource_t *r) {
    pthread_mutex_lock(&list_lock);
    r->list_prev = NULL;
    r->list_next = gpa_list;
    if (gpa_list != NULL)
        gpa_list->list_prev = r;
    gpa_list = r;
    r->listed = true;
    pthread_mutex_unlock(&list_lock);
}

/* Off the list, once no collect works on r: from teardown and the
 * destructor, whichever comes first, which so wait out one instance's
 * collect at most (a collect's own thread, should r be torn down from
 * inside its collect, does not wait). */
static void list_unlink(beam_resource_t *r) {
    if (r->kind != BEAM_RESOURCE_GPA)
        return;
    pthread_mutex_lock(&list_lock);
    while (collecting == r && collector != me())
        pthread_cond_wait(&list_done, &list_lock);
    if (r->listed) {
        if (r->list_prev != NULL)
            r->list_prev->list_next = r->list_next;
        else
            gpa_list = r->list_next;
        if (r->list_next != NULL)
            r->list_next->list_prev = r->list_prev;
        r->listed = false;
    }
    pthread_mutex_unlock(&list_lock);
}

/* list_lock held: the next resource this round has not reached, from r
 * when it is still listed, else from the head (r went: torn down from
 * inside its own collect). */
static beam_resource_t *list_next_uncollected(beam_resource_t *r) {
    r = r == NULL ? gpa_list : r->listed ? r->list_next : gpa_list;
    while (r != NULL && r->collected_in == collect_round)
        r = r->list_next;
    return r;
}

/* visit(r, arg) on every live GPA resource of this library, one at a
 * time, list_lock let go meanwhile (a collect frees into the parent, a
 * stats read takes the instance's lock). Not an entry of r: a release
 * landing meanwhile would have been left to this thread's leave, so a
 * release with no pin or call of the user's in flight was not done when
 * it returned (parent_bytes still counted; its hook run later, here,
 * under the library's instances_lock). Listed, r is not torn down, and
 * its teardown waits in list_unlink until we are out. Entered (the
 * library's instances_lock held, beam__nif_library_enter: the collect and
 * holdings hooks), so one walk at a time: collecting names one resource,
 * which a second walk at once would overwrite. */
static void each_gpa_resource(void (*visit)(beam_resource_t *r, void *arg),
                              void *arg) {
    pthread_mutex_lock(&list_lock);
    collect_round++;
    for (beam_resource_t *r = list_next_uncollected(NULL); r != NULL;
         r = list_next_uncollected(r)) {
        r->collected_in = collect_round;
        collecting = r;
        collector = me();
        pthread_mutex_unlock(&list_lock);
        visit(r, arg);
        pthread_mutex_lock(&list_lock);
        collecting = NULL;
        collector = NULL;
        pthread_cond_broadcast(&list_done);
    }
    pthread_mutex_unlock(&list_lock);
}

static void collect_one(beam_resource_t *r, void *arg) {
    (void)arg;
    beam_gpa_collect(&r->impl.gpa);
}

void beam__nif_collect_resources(void) {
    each_gpa_resource(collect_one, NULL);
}

static void add_holding(beam_resource_t *r, void *arg) {
    beam__holding *h = arg;
    h->held += beam__atomic_load_relaxed(&r->parent_bytes);
    h->live += beam__atomic_load_relaxed(&r->live_bytes);
    h->ops += ops_of(r);
}

void beam__nif_resources_holding(beam__holding *out) {
    memset(out, 0, sizeof *out);
    each_gpa_resource(add_holding, out);
    out->ops += beam__atomic_load_relaxed(&retired_ops);
}

/* --- The resource allocator's vtable ----------------------------------- */

static void *res_alloc(void *ctx, size_t len, size_t alignment, uintptr_t ret) {
    beam_resource_t *r = ctx;
    if (!enter_locked(r))
        return NULL;
    void *p = r->inner.vtable->alloc(r->inner.ctx, len, alignment, ret);
    unlock(r);
    if (p != NULL) {
        add(&r->live_blocks, 1);
        add(&r->live_bytes, len);
    }
    leave(r, true);
    return p;
}

static bool res_resize(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    beam_resource_t *r = ctx;
    if (!enter_locked(r))
        return false;
    bool ok = r->inner.vtable->resize(r->inner.ctx, mem, len, alignment,
                                      new_len, ret);
    unlock(r);
    if (ok)
        adjust(&r->live_bytes, len, new_len);
    leave(r, true);
    return ok;
}

static void *res_remap(void *ctx, void *mem, size_t len, size_t alignment,
                       size_t new_len, uintptr_t ret) {
    beam_resource_t *r = ctx;
    if (!enter_locked(r))
        return NULL;
    void *p =
        r->inner.vtable->remap(r->inner.ctx, mem, len, alignment, new_len, ret);
    unlock(r);
    if (p != NULL)
        adjust(&r->live_bytes, len, new_len);
    leave(r, true);
    return p;
}

static void res_free(void *ctx, void *mem, size_t len, size_t alignment,
                     uintptr_t ret) {
    beam_resource_t *r = ctx;
    if (mem == NULL)
        return; /* NULL: the contract's no-op, also through the vtable */
    if (!enter_locked(r))
        return; /* released: the block went with everything else */
    r->inner.vtable->free(r->inner.ctx, mem, len, alignment, ret);
    unlock(r);
    sub(&r->live_blocks, 1);
    sub(&r->live_bytes, len);
    leave(r, true);
}

static const beam_allocator_vtable resource_vtable = {res_alloc, res_resize,
                                                      res_remap, res_free};

/* --- The resource type ------------------------------------------------- */

/* A pin outlived the last reference: a caller's bug (a call in flight is
 * a library thread's: CALLS_INSIDE). The memory goes anyway; better
 * reported than kept forever, with the site of the first pin since the
 * resource had none inside (see first_pin; a report, not a misuse of the
 * thread that happens to run the destructor). */
#define LEFT_INSIDE                                                            \
    "beam_alloc: resource %p destroyed with %zu entries still inside (an "     \
    "unpin missing?)"
static void report_left_inside(beam_resource_t *r, size_t pins) {
    uintptr_t site = beam__atomic_load_relaxed(&r->first_pin);
    if (site == 0)
        beam__report(LEFT_INSIDE, (void *)r, pins);
    else
        beam__report_misuse(NULL, site,
                            LEFT_INSIDE "; the first pin since it last had "
                                        "none inside, perhaps not the one "
                                        "left open, was taken",
                            (void *)r, pins);
}

/* Calls of the allocator a library's own thread was making when the last
 * reference went. With a release hook that is the documented way (the
 * hook stops such threads); without one, the thread uses an allocator
 * nobody holds a reference to, and its next call reads freed memory. */
#define CALLS_INSIDE                                                           \
    "beam_alloc: resource %p destroyed with %zu call%s of its allocator on "   \
    "another thread in progress: a thread that uses a resource's allocator "   \
    "holds a reference (beam_resource_keep) or is stopped by a release hook "  \
    "(beam_resource_on_release)"

/* Waits out the calls in flight: once RELEASED is set, no call enters (a
 * failed entry no longer touches the word, but for one that read it just
 * before, which undoes at once) and one inside comes out in the time of
 * an allocation, so teardown never deinitialises under it. */
static void wait_for_calls(beam_resource_t *r) {
    while ((beam__atomic_load_acquire(&r->state) & CALLS_MASK) != 0)
        sched_yield();
}

/* A resource made over another resource's allocator (a request's arena
 * over a connection's GPA) gives its memory back to that resource at its
 * own teardown, and its inner allocator's state lives in that memory. The
 * garbage collector may destroy the parent first (its term dropped
 * first), or the NIF release it: the child then wrote into freed memory
 * and the VM crashed (found with test/resource_parent_test.exs). So the
 * child holds an entry on the parent (a release of the parent completes
 * once the child's memory went back: at the child's teardown) and a
 * reference (the object stays: given back at the end of the child's
 * destructor), both taken here. A parent already released is refused:
 * NULL, reported at the caller's site. Parents are fixed at creation and
 * exist before their children, so these holds never form a cycle. */
static bool hold_parent(beam_resource_t *over, uintptr_t ret) {
    if (!enter(over, false, 0)) {
        beam__report_misuse(NULL, ret,
                            "beam_alloc: beam_resource_new over the allocator "
                            "of resource %p, released: refused",
                            (void *)over);
        return false;
    }
    enif_keep_resource(over);
    return true;
}

/* Undoes hold_parent for a child that never got its allocator. */
static void unhold_parent(beam_resource_t *over) {
    leave_parent(over); /* may complete the parent's release, here */
    enif_release_resource(over);
}

/* May run on any thread, long after the last NIF call that used the
 * resource. Nobody holds a reference any more, so no NIF call is inside:
 * a pin still held is a caller's bug, a call may be a library thread's. */
static void resource_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    beam_resource_t *r = obj;
    add_retired_ops(r); /* before r leaves the list, as teardown does */
    list_unlink(r);     /* then: a collect may be inside it (it holds no
                           reference, and waits for nobody) */
    /* An entry of our own meanwhile: no call leaving tears down (the
     * memory would go under this destructor, then the object with it). */
    (void)beam__atomic_add_acquire(&r->state, PIN);
    size_t v = beam__atomic_or_acq_rel(&r->state, RELEASED);
    size_t calls = (v & CALLS_MASK) / CALL, pins = v / PIN - 1;
    if (pins != 0)
        report_left_inside(r, pins);
    if (calls != 0 && beam__atomic_load_acquire(&r->on_release) == NULL)
        beam__report(CALLS_INSIDE, (void *)r, calls, calls == 1 ? "" : "s");
    wait_for_calls(r);
    (void)beam__atomic_sub_acq_rel(&r->state, PIN);
    teardown(r, false, TORN_BY_DTOR, 0);
    if (r->has_lock)
        pthread_mutex_destroy(&r->lock);
    if (r->over != NULL) /* last: teardown gave back our memory and entry */
        enif_release_resource(r->over);
}

static bool open_type(ErlNifEnv *env) {
    char name[64];
    snprintf(name, sizeof name, "beam_alloc_resource@%p",
             (void *)&resource_type);
    ErlNifResourceType *t = enif_open_resource_type(
        env, NULL, name, resource_dtor,
        (ErlNifResourceFlags)(ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER), NULL);
    if (t == NULL)
        /* Keep what an earlier callback of this copy opened, if anything. */
        return beam__atomic_load_acquire(&resource_type) != NULL;
    beam__atomic_store_release(&resource_type, t);
    return true;
}

void beam_nif_resource_on_load(ErlNifEnv *env) {
    (void)open_type(env);
    /* The acknowledgements of reports (report.c): opened here, once the
     * load_info was accepted, like the type above. */
    beam__report_ack_open(env);
    beam__atomic_store_relaxed(&opened_by_hook, true);
}

bool beam_resource_init(ErlNifEnv *env) {
    if (beam__atomic_load_relaxed(&opened_by_hook))
        return beam__atomic_load_acquire(&resource_type) != NULL;
    return open_type(env);
}

/* A resource made over the call's own allocator takes the lasting one
 * (beam__nif_lasting_parent), but under fault injection its making is
 * still asked of the call's: that allocation is one a check counts and
 * fails, so the NIF's handling of a NULL from beam_resource_new is tested
 * (a bug hunt found every resource exempt, where the README promised it
 * checked). Asked with the resource's size and the caller's return
 * address, so that a report names the NIF's line; freed at once. Not in a
 * leak_check or scratch call: there it would only cost (a large user area
 * taken twice over, in safe mode: review). */
static bool scoped_allows(beam_allocator_t scoped, size_t len, uintptr_t ret) {
    void *p = beam_alloc_bytes_at(scoped, len, BEAM_MAX_ALIGN, ret);
    if (p == NULL)
        return false;
    beam_free_bytes_at(scoped, p, len, BEAM_MAX_ALIGN, ret);
    return true;
}

/* The allocator a resource made over parent lives on, in *lasting: the
 * lasting one for the call's own (see scoped_allows), the large allocator
 * for a zeroed one. false when fault injection failed the making. */
static bool lasting_parent(beam_allocator_t parent, size_t size, uintptr_t ret,
                           beam_allocator_t *lasting) {
    bool injected;
    *lasting = beam__nif_lasting_parent(parent, &injected);
    if (injected && !scoped_allows(parent, size, ret))
        return false;
    if (lasting->vtable == NULL)
        *lasting = beam_large_allocator;
    return true;
}

/* A zeroed resource object with user_size bytes after it, holding the
 * resource whose allocator lasting is (hold_parent), if it is one; NULL,
 * holding nothing, when either fails. */
static beam_resource_t *new_object(ErlNifResourceType *type,
                                   beam_allocator_t lasting, size_t user_size,
                                   uintptr_t ret) {
    beam_resource_t *over =
        lasting.vtable == &resource_vtable ? lasting.ctx : NULL;
    if (over != NULL && !hold_parent(over, ret))
        return NULL;
    beam_resource_t *r =
        enif_alloc_resource(type, sizeof(beam_resource_t) + user_size);
    if (r == NULL) {
        if (over != NULL)
            unhold_parent(over);
        return NULL;
    }
    memset(r, 0, sizeof *r + user_size);
    r->over = over; /* from here, teardown and the destructor let it go */
    beam__atomic_init(&r->state, 0);
    beam__atomic_init(&r->late_entries, 0);
    beam__atomic_init(&r->live_blocks, 0);
    beam__atomic_init(&r->live_bytes, 0);
    beam__atomic_init(&r->parent_bytes, 0);
    beam__atomic_init(&r->torn_down, false);
    beam__atomic_init(&r->ops_retired, false);
    beam__atomic_init(&r->first_pin, (uintptr_t)0);
    beam__atomic_init(&r->on_release, (beam_resource_release_fn)NULL);
    return r;
}

/* The resource's own allocator, over its parent through parent_vtable: a
 * GPA, or an arena and its lock. false when the lock could not be had: r
 * is released then. */
static bool init_inner(beam_resource_t *r, beam_resource_kind kind) {
    beam_allocator_t backing = {r, &parent_vtable};
    if (kind == BEAM_RESOURCE_GPA) {
        /* The resource is expected to die with blocks live: no reports. */
        beam_gpa_init_ex(&r->impl.gpa, backing, BEAM_GPA_QUIET_LEAKS);
        r->inner = beam_gpa_allocator(&r->impl.gpa);
        return true;
    }
    beam_arena_init(&r->impl.arena, backing);
    r->inner = beam_arena_allocator(&r->impl.arena);
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        /* Nothing to tear down: let the destructor skip it (it gives
         * back the parent's reference; its entry goes here). */
        beam__atomic_store_seq_cst(&r->torn_down, true);
        if (r->over != NULL)
            leave_parent(r->over);
        enif_release_resource(r);
        return false;
    }
    r->has_lock = true;
    return true;
}

/* --- Public functions -------------------------------------------------- */

beam_resource_t *beam_resource_new(ErlNifEnv *env, beam_resource_kind kind,
                                   beam_allocator_t parent, size_t user_size,
                                   ERL_NIF_TERM *term) {
    uintptr_t ret = BEAM__RET_ADDR();
    ErlNifResourceType *type = beam__atomic_load_acquire(&resource_type);
    if (type == NULL || (term != NULL && env == NULL))
        return NULL;
    if (kind != BEAM_RESOURCE_GPA && kind != BEAM_RESOURCE_ARENA)
        return NULL;
    if (user_size > BEAM__MAX_LEN - sizeof(beam_resource_t))
        return NULL;
    beam_allocator_t lasting;
    if (!lasting_parent(parent, sizeof(beam_resource_t) + user_size, ret,
                        &lasting))
        return NULL;
    beam_resource_t *r = new_object(type, lasting, user_size, ret);
    if (r == NULL)
        return NULL;
    r->kind = kind;
    /* A resource outlives the call that makes it: over the call's own
     * allocator (beam_allocator in a leak_check or scratch call, or under
     * fault injection) its first allocation after the call crashed the
     * VM (found in a bug hunt: leak_check turned on from Elixir made a
     * correct NIF segfault). */
    r->parent = lasting;
    r->user_size = user_size;
    if (!init_inner(r, kind))
        return NULL;
    add(&live_allocators, 1);
    if (kind == BEAM_RESOURCE_GPA)
        list_link(r);

    if (term != NULL) {
        *term = enif_make_resource(env, r);
        enif_release_resource(r); /* the term holds it now */
    }
    return r;
}

ERL_NIF_TERM beam_resource_term(ErlNifEnv *env, beam_resource_t *r) {
    return enif_make_resource(env, r);
}

bool beam_resource_get(ErlNifEnv *env, ERL_NIF_TERM term,
                       beam_resource_t **out) {
    ErlNifResourceType *type = beam__atomic_load_acquire(&resource_type);
    void *obj = NULL;
    if (type == NULL || !enif_get_resource(env, term, type, &obj)) {
        if (out != NULL)
            *out = NULL;
        return false;
    }
    if (out != NULL)
        *out = obj;
    return true;
}

void beam_resource_keep(beam_resource_t *r) {
    enif_keep_resource(r);
}

void beam_resource_drop(beam_resource_t *r) {
    enif_release_resource(r);
}

beam_allocator_t beam_resource_allocator(beam_resource_t *r) {
    /* (beam_resource_allocator(NULL): every call fails.) */
    beam_allocator_t a = {r, r != NULL ? &resource_vtable
                                       : &beam__refusing_vtable};
    return a;
}

void *beam_resource_user_data(beam_resource_t *r) {
    return r != NULL && r->user_size != 0 ? (void *)(r + 1) : NULL;
}

size_t beam_resource_user_size(const beam_resource_t *r) {
    return r != NULL ? r->user_size : 0;
}

bool beam_resource_pin(beam_resource_t *r) {
    return r != NULL && enter(r, false, BEAM__RET_ADDR());
}

void beam_resource_unpin(beam_resource_t *r) {
    if (r != NULL)
        leave(r, false);
}

bool beam_resource_on_release(beam_resource_t *r, beam_resource_release_fn fn) {
    /* Inside, teardown cannot run: set now, fn runs (or the release came
     * first, and it never will: false). */
    if (r == NULL || !enter(r, false, 0))
        return false;
    beam__atomic_store_release(&r->on_release, fn);
    leave(r, false);
    return true;
}

void beam_resource_release(beam_resource_t *r) {
    if (r == NULL)
        return;
    size_t v = beam__atomic_or_acq_rel(&r->state, RELEASED);
    /* Nobody inside: now (again, if a call left it to us, see teardown);
     * otherwise the last to leave. */
    if ((v & ~RELEASED) == 0)
        teardown(r, false, TORN_BY_RELEASE, BEAM__RET_ADDR());
}

bool beam_resource_is_released(const beam_resource_t *r) {
    return r == NULL ||
           (beam__atomic_load_acquire(&((beam_resource_t *)r)->state) &
            RELEASED) != 0;
}

beam_resource_usage beam_resource_usage_of(const beam_resource_t *res) {
    beam_resource_usage u;
    memset(&u, 0, sizeof u);
    if (res == NULL) {
        u.released = true;
        return u;
    }
    beam_resource_t *r = (beam_resource_t *)res; /* atomics are read-only */
    u.kind = r->kind;
    u.live_blocks = beam__atomic_load_relaxed(&r->live_blocks);
    u.live_bytes = beam__atomic_load_relaxed(&r->live_bytes);
    u.parent_bytes = beam__atomic_load_relaxed(&r->parent_bytes);
    u.released = beam_resource_is_released(r);
    return u;
}

size_t beam_resource_live_count(void) {
    return beam__atomic_load_relaxed(&live_allocators);
}
