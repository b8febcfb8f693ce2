/*
 * The general purpose allocator's types, invariants and lock order, in one
 * place. gpa_fast.h has the fast paths (inline: core.c's calling helpers
 * run them without the vtable); gpa.c the vtable, the general paths and the
 * public functions; gpa_slab.c the segments, slabs and address map;
 * gpa_heap.c threads, heaps, the registry and collection; gpa_large.c
 * blocks above the slab classes; gpa_report.c leaks and misuse.
 *
 * Design:
 *
 *  - A *slab* is 64 KiB, aligned to 64 KiB, holding blocks of one size class.
 *    Its metadata (struct gpa_slab) lives outside it, in a global address
 *    map, so blocks have no header. Slabs are carved out of *segments*: one
 *    request of (n + 1) * 64 KiB to the backing allocator at modest
 *    alignment, aligned inside; the slack at the two ends (64 KiB in all)
 *    is room for sub-slabs (below). A segment's header is metadata apart.
 *  - Every thread has its own *heap* per instance. A heap owns only its
 *    *current* slab of each class (cur[cls]): only the owner pops, bumps or
 *    pushes on its free list. Other threads free into a slab's atomic
 *    thread_free stack.
 *  - A current slab that runs out is *detached*: it leaves its heap, marked
 *    FULL in thread_free. From then on every free into it is a push on
 *    thread_free (but the old owner's, which may take it back: *Kept
 *    slabs* below); the push that brings the frees waiting
 *    there to the slab's requeue mark (1/8 of its blocks) takes FULL off and
 *    puts the slab on the instance's lock-free reclaim stack. (Requeueing
 *    on the first free would hand the next refill a slab with one free
 *    block: a refill, with its lock, per allocation.) Under the instance
 *    lock, which stands in for the owner of every ownerless slab, reclaimed
 *    slabs are collected and go back to the pool when empty or to the
 *    partial list of their class, from which heaps adopt them: a refill
 *    parks up to 32, and before the instance takes a segment from its
 *    backing (small or medium blocks; gpa_slab.c before_growth) the stack
 *    is parked until a slab is in the pool (not further: each wholly free
 *    slab may give a segment back, in the allocating call). So memory
 *    freed by other threads comes back without its allocating thread's
 *    help, and never makes the instance grow.
 *  - *Kept slabs*: a detached whole slab (not a sub-slab, not tracked)
 *    keeps the mark of the heap that left it (heap = gpa_left_by(h)). A
 *    free by that heap's thread into it takes FULL off (the one way to own
 *    a detached slab, so it races the requeueing push and any other heap
 *    fairly) and the heap keeps it (KEPT, heap = gpa_kept_by(h), on
 *    h->kept[cls]); the heap's frees into it are then plain
 *    pushes on its free list (inline, gpa_fast.h, but for one that may
 *    be its last live block), and its next refill of that class takes
 *    the oldest kept slab before asking the instance. Without them, with
 *    many blocks live, nearly every free landed in a detached slab and
 *    took the stash, an atomic push, the requeue and a locked adoption
 *    (100,000 live blocks, alternated: 2.26-3.01x mimalloc, 2.09-2.15x
 *    with them, 1.67-1.86x with their frees inline; README). The heap's
 *    free that leaves a kept slab with no live block (the rest
 *    waiting in thread_free included) gives it back to the pool at once;
 *    one whose last blocks other threads free stays kept, wholly free,
 *    until the heap refills that class, or is retired or collected, or
 *    a shed (beam__gpa_shed_kept) gives it back: every heap whose owner
 *    is away (the process barrier, as a collect takes them) and the
 *    calling one give such slabs back, before the instance takes a
 *    segment from its backing (small or medium blocks), and at a heap's
 *    refill (every GPA_SHED_REFILLS) once a push left a kept slab half
 *    free or more (slab_push): there the heap's own, walked without the
 *    lock, and, at most every GPA_SHED_GAP_NS an instance, those of idle
 *    heaps that made no such look since a shed last read them (a busy heap
 *    sheds its own; with cross-thread frees the flag is nearly always up,
 *    and sheds of every idle heap came 39 a second with 8 threads, a
 *    barrier and up to 56 ms each). A shed takes at most GPA_SHED_HEAPS
 *    idle heaps, the next shed the next ones (one over 32 idle heaps of
 *    1,024 kept slabs held the lock 0.8 ms, up to 43 ms); the looks'
 *    sheds that follow a push's note (a round) take every idle heap once,
 *    the flag kept up until they have (cleared after the first four, the
 *    rest kept their emptied slabs: no push noted them again). A shed gives
 *    memory back to the backing too: a segment left wholly free goes
 *    (gpa_slab.c segment_maybe_remove), so the idle heaps' part of a
 *    refill's shed is what brought 74.4 MiB held down to 8.3 below (a
 *    third thread's light churn). So wholly free kept slabs hardly make an
 *    instance grow (each growth first takes GPA_SHED_HEAPS more idle
 *    heaps: with more idle heaps holding such slabs, a growth may come
 *    before the shed reaches theirs), and go back as the reclaim stack's
 *    slabs do: a burst
 *    of 1,100 slabs of 256 B handed to other threads, their owner then
 *    idle, made another thread's same burst grow the backing by 69.7 MiB
 *    with 1,024 kept a heap and nothing given back, by 1.7 MiB with 32
 *    per class, and by none now; a third thread's light churn of 64 B
 *    left 74.4, 8.7 and 8.3 MiB held. The shed also gives back, beyond
 *    GPA_KEPT_CLASS of a class, kept slabs with their requeue mark of
 *    frees waiting, to the partial lists, those frees left waiting
 *    (beam__gpa_slab_park_pending): with 32 per class such a slab was
 *    FULL and went back at that mark; kept, one live block each, an idle
 *    heap held up to 1,024 of them. At most
 *    GPA_KEPT_CLASS (32) per class, and beyond, once the barrier is known
 *    to work (where it does not, nothing could give them back while their
 *    heap idles), up to GPA_KEPT_MAX (1,024) per heap in all classes:
 *    with 100,000 blocks live a busy class has some 100 slabs, and a cap
 *    of 32 per class left most of them FULL, their frees on the stash
 *    and the refills on kept slabs of few free blocks (callgrind, that
 *    churn: 275 -> 230 instructions an operation, harness included). At
 *    GPA_KEPT_MAX, a class's oldest kept slab that other threads emptied
 *    gives way (gpa.c kept_make_room), so one class cannot hold the cap
 *    for good while the heap is busy; a heap retired or collected parks
 *    them like its current slabs. The mark stays on a slab requeued
 *    meanwhile until the lock holder parks it: a stale mark costs a
 *    failed compare-and-swap, or takes a slab FULL again since (any
 *    heap taking FULL off owns it rightly).
 *  - The address map (address >> 16 -> slab) tells, for any pointer,
 *    whether it is one of ours and which slab it is in, without reading the
 *    pointer's memory: foreign frees are reported, never followed.
 *  - A free block carries a tag in its second word: cookie ^ its address.
 *    That catches double frees and lets leak detection tell live blocks
 *    from free ones without a per-block bit. Allocation clears the tag.
 *  - Medium blocks, above BEAM_GPA_SMALL_MAX up to a slab (64 KiB), of an
 *    untracked instance: runs of 4 KiB pages of a *medium slab*, a pool
 *    slab whose pages serve blocks of any size (so a few medium blocks of
 *    many sizes share slabs, unlike classes, which would take a slab each).
 *    The instance lock guards them; a medium slab with no block left goes
 *    back to the pool at once (gpa_medium.c).
 *  - Blocks above that (or with an alignment no class or page gives, or of
 *    a tracked instance, which records every block) go to the backing
 *    allocator and are recorded in a hash table.
 *  - Small first slabs. A whole slab per class is 64 KiB whatever a thread
 *    keeps in it, and the VM counts every byte the backing hands out: a
 *    thread with a few blocks of many classes held megabytes. So a heap's
 *    first slabs of a class are *sub-slabs*: a few 4 KiB pages of a
 *    *mixed chunk* (struct gpa_mixed), GPA_SUB_STEPS of them, each twice
 *    the last (from two blocks' worth, at most half a chunk), and only
 *    then whole slabs; 512 KiB of sub-slabs at most per heap. A sub-slab is a
 * struct gpa_slab like any other, with its own free list, thread_free, where
 * and requeue, living in the chunk's gpa_mixed (metadata from the backing)
 * rather than in the map, so allocation (cur[cls]), detaching, reclaiming, the
 * partial lists, adoption by other heaps and collection all work on it
 * unchanged; only its release differs (its pages go back to its chunk).
 *  - A mixed chunk is a pool slab lent out (back to the pool when its last
 *    sub-slab goes), or a piece of a segment's *slack*: the (up to) 64 KiB
 *    a segment asks beyond its slabs to align them, once wasted, now room
 *    for sub-slabs. A slack chunk is shared with whatever the backing put
 *    next to the segment, so only its whole pages inside the segment are
 *    ours (usable); its map entry is claimed with a compare-and-swap on
 *    the owner. When the neighbour is another segment's slack that got
 *    there first, a segment of the same instance joins that chunk (its
 *    pages become usable there too); another instance's keeps it, and
 *    that piece stays unused, as all slack did before.
 *  - The map entry of a mixed chunk (WHERE_MIXED) keeps, in place of the
 *    free list, owner, count and size it does not need, the chunk's
 *    gpa_mixed and a page table (page -> first page of its sub-slab, or
 *    ours-but-free, or not ours), on one cache line: beam__gpa_slab_of
 *    finds a sub-slab with one load more than a slab. The entry has no
 *    block of its own (bump == base) and fast_span 0, so the inline
 *    free's checks miss on it, at no cost to frees into slabs; then it
 *    sees WHERE_MIXED and calls beam__gpa_free_in_chunk, which finds the
 *    sub-slab and makes every check on it. A pointer into a free page
 *    fails them and goes on to the general path, which reports it; one
 *    into a page not ours goes to the large table, like any pointer the
 *    map does not know.
 *  - Segments: the first is slack alone (one 64 KiB request, all of it
 *    sub-slab room); the next grow by an eighth of the instance's slabs
 *    (a quarter from 32 on), so what a segment holds unused stays a small
 *    part of the whole. With the pool empty, a heap that is not busy
 *    takes the slack's room (a sub-slab of up to half a chunk) before
 *    asking the backing for more, while the instance has under 2 MiB of
 *    slabs (beyond, the slack is a small part, and frees into sub-slabs
 *    would cost big heaps time). Refills take pool slabs of one segment
 *    (st->fill), its warm ones first, until it has none, or only cold
 *    ones while the pool's first is warm (gpa_slab.c pool_pick), so that
 *    a small live set after a burst keeps few segments, not one each: the
 *    pool's first slab alone was in the segment the refill's reclaim-stack
 *    parking was emptying. From 2 MiB on, a sub-slab goes in a lent pool
 *    slab rather than in another segment's slack while the pool has one
 *    (gpa_slab.c sub_find).
 *  - Sub-slabs save memory, not time: a free into one is a call more
 *    than one into a slab (beam__gpa_free_in_chunk, after the inline free),
 *    and a class with more blocks than its sub-slab holds has them spread
 *    over several, detached as they filled, whose frees take the stash.
 *    So a busy class of a heap (its thread has freed GPA_CLASS_BUSY_FREES
 *    blocks of it into sub-slabs since the heap was last stripped)
 *    *graduates*: it retires its current sub-slab (detached, back when
 *    every block in it is free) and takes whole slabs from then on,
 *    passing over the class's partial sub-slabs (kept apart, for heaps
 *    that still take sub-slabs and for a refill short of memory; a
 *    collection gives the empty ones back). The
 *    other classes keep their sub-slabs, so a thread busy with a few
 *    classes does not hold a whole slab for every class it touched once
 *    (SQLite's figures: README, "C libraries"). The count is low because
 *    a thread that starts small again, new or collected, frees that many
 *    blocks of each class it uses through sub-slabs before it is fast
 *    (with 16,384, two pinned threads made 1.2-1.4x the throughput of
 *    one instead of 2-2.5x). A heap with a
 *    graduated class takes segments of three slabs at least, and no
 *    sub-slab in place of a whole slab when the pool is empty; its other
 *    classes' sub-slabs may still use the slack. (Frees count in the
 *    freeing thread's heap: one that frees what other threads allocated
 *    may graduate classes it never allocates, which costs it only that
 *    minimum segment size.) Collection (stripping) makes the heap small
 *    again.
 *    A thread's floor is therefore what it holds in the classes it does
 *    not use much, plus a slab for each busy one.
 *    So a thread holding a few blocks costs one 64 KiB request and some
 *    8 KiB of metadata, not a slab per class: the per-thread floor (bench
 *    `mem`: held - 1.5 x live, the worst of five small live sets) was about
 *    130 KiB in the bench's first draw of each set (2.2 MiB before sub-slabs),
 *    140-816 KiB over 20 other draws (the bench now takes the median of
 *    nine: 475 KiB). 64 threads sharing an instance in the bench held
 *    391-402 KiB a thread with 256 KiB of sub-slabs a heap, 144-185 KiB
 *    with 512; with 256 KiB, 0.6-1.4 MiB a thread on a 64-scheduler node
 *    (not measured since; README, "What a small live set costs").
 *
 * Locks, and the order every path obeys (debug builds check it, see
 * gpa_lock and GPA_ASSERT_NO_LOCK):
 *
 *  1. A thread holds at most one of the allocator's locks at a time: an
 *     instance lock, or the registry lock. Both are leaves.
 *  2. Nothing is called while an instance lock is held that could take a
 *     lock: not the backing allocator (memory from it is taken before the
 *     lock; memory for it is queued on a gpa_defer list and given back
 *     after the unlock), not another instance, not the registry, not the
 *     report hook.
 *  3. The registry lock only maps a thread-local slot to a live instance
 *     and pins it (st->pins); the work on the instance follows after the
 *     registry lock is released, and deinit waits for the pins to go.
 *  So composition of any depth (GPA over GPA over GPA, resources over the
 *  process-wide GPA, leak_check instances everywhere) cannot deadlock, and
 *  no thread re-enters a lock it holds.
 *  The one thread that holds more is one that forks: its fork handler
 *  takes the registry, then every instance's lock (fork.c), which rules
 *  1 and 2 let it do without a cycle: each holder it waits for waits for
 *  none of them.
 *  An instance keeps all it has in blocks of its backing, so the deinit
 *  of an instance first deinitialises every live instance directly over
 *  it (found in the registry, rule 3's lock only; gpa.c,
 *  deinit_instances_over), with no lock held.
 *
 * Taking a heap from an idle thread (gpa_heap.c, collection): a heap's
 * owner marks itself busy for the length of each call (h->busy, a count,
 * in the general paths; h->fast_busy, a flag, in the inline ones) and
 * checks h->revoked; a collector, under the instance lock, sets revoked,
 * issues a process-wide memory barrier (os/barrier.h), and reads both.
 * Idle: the heap is the collector's until it clears revoked; busy: it
 * backs off. The owner pays two plain stores and a load per call; the
 * barrier is the collector's.
 *
 * The stash: a free into a slab the freeing thread's heap does not own
 * (another heap's, or one of its own former current slabs that it did not
 * keep: a sub-slab, one requeued meanwhile, one past GPA_KEPT_MAX) is an
 * atomic push on the slab's thread_free, and a locked instruction waits
 * for every store before it, the store to the freed block (a cache miss,
 * with many blocks live) included: such frees would run one miss at a
 * time. So the heap's thread tags the block free and puts it on its heap's
 * stash (plain stores); the stash is pushed to the blocks' slabs, one
 * atomic push each, once it holds GPA_STASH_MAX blocks (their lines are in
 * cache by then), before every refill, and whenever the heap is stripped
 * (retired or collected). A thread with no heap of the instance gets one
 * at its GPA_FREE_STREAK-th free into it in a row, in an empty slot
 * (beam__gpa_heap_for_free: a consumer of another thread's blocks); such a
 * heap, until it allocates, stashes nothing: each free is an atomic push
 * at once, counted in the heap. Without a heap (no empty slot, no memory)
 * it is the same push, counted in the instance's shared counters. Stashed
 * blocks are free to every check (their tag is set) and counted as freed, but
 * still used in their slab, which therefore stays out of the pool. The stash is
 * owner-only inside the busy bracket (a collector's while the heap is revoked),
 * like cur[]. It is not a cache to allocate from: blocks handed out from it
 * never go home, and in a class whose blocks outgrow a slab the frees and
 * allocations then switch between slab and stash unpredictably (measured:
 * README, "Where the time goes").
 *
 * Invariants (asserted in debug builds):
 *  - slab->base is 64 KiB aligned, a sub-slab's 4 KiB aligned and aligned
 *    to the largest power of two dividing its size (up to 8 KiB), so that
 *    a class serves the alignments its size has; blocks are at base + k *
 *    size for k < (bump - base) / size; size is a multiple of 16; end is
 *    at most base + its span (64 KiB, or the sub-slab's pages).
 *  - WHERE_MIXED only on a map entry, of a chunk cut into sub-slabs: its
 *    owner is the instance of every page of it that is ours; fast_span 0,
 *    bump == base == end, subs and pages[] valid, heap, used and size
 *    meaningless (pages[] stands in for them). A sub-slab's pages all map
 *    to its first page; a page no sub-slab holds is GPA_PAGE_FREE when it
 *    is ours, GPA_PAGE_NONE when not. A slack chunk's entry has one owner
 *    instance (claimed by compare-and-swap, released with the segment)
 *    and at most two segments of it (the claimer's and one joiner's).
 *  - A sub-slab in use has its pages taken in its chunk and its st set;
 *    released (used == 0, via beam__gpa_slab_release), its pages are free
 *    again. A lent chunk with no page taken is back in the pool; a segment
 *    goes back to the backing only with every slab in the pool and every
 *    page of its slack free.
 *  - where == CUR iff heap is a heap's plain address (gpa_is_owner) iff
 *    the slab is that heap's cur[cls] (sub-slabs included); where == KEPT
 *    iff heap == gpa_kept_by(h) iff the slab is on h->kept[cls], and then
 *    it has room.
 *    Otherwise exactly one of: in the pool (POOL), detached with FULL_BIT
 *    set and in no list (FULL), on the reclaim stack (RECLAIM), in
 *    partial[cls] or, a sub-slab, partial_sub[cls] (PARTIAL); heap is
 *    NULL or, FULL or RECLAIM, gpa_left_by(h) of the heap that left it.
 *  - FULL_BIT is set only on detaching, only when thread_free is empty,
 *    and cleared only by kept_reattach (the slab goes KEPT), or by the
 *    push that brings the count of frees waiting in
 *    thread_free to requeue, which then puts the slab on the reclaim stack:
 *    so a slab is on that stack at most once. A FULL slab therefore has
 *    more than nblocks - requeue live blocks: what it keeps out of reach
 *    is at most 1/8 of it, but for a sub-slab retired at graduation,
 *    whose mark is its live blocks (it comes back only when empty).
 *  - thread_free is a pointer (blocks are 16-aligned and below 2^48: the
 *    address map serves nothing above) with FULL_BIT in bit 0 and the
 *    number of blocks on the list in bits 48-63 (at most 4096 per slab).
 *  - A medium slab (WHERE_MEDIUM, cls GPA_MEDIUM_CLS) has no heap, no free
 *    list, fast_span 0 and bump == end == base (so no class check, fast or
 *    general, passes a pointer of it: its frees go to gpa_medium.c by
 *    its where); used counts its blocks, those in st->medium_cache (set
 *    in pages_cached) included, and it is in st->medium[requeue] when
 *    requeue (its longest free run) is not 0. It goes back to the pool
 *    when used reaches 0. All of it is the lock's.
 *  - fast_span != 0 only on a formatted, untracked slab outside the pool,
 *    so only with st != NULL (the fast free relies on it, gpa_fast.h).
 *  - used counts blocks handed out minus frees collected; thread_free holds
 *    frees not yet collected. A slab in the pool has used == 0.
 */
#ifndef BEAM_ALLOC_GPA_INTERNAL_H
#define BEAM_ALLOC_GPA_INTERNAL_H

#include "asan.h"
#include "internal.h"
#include "os/lock.h"
#include "os/tls.h"

#define GPA_SLAB_SHIFT 16
#define GPA_SLAB_SIZE ((size_t)1 << GPA_SLAB_SHIFT)
#define GPA_CLASSES 32
#define GPA_MIN_BLOCK 16
#define GPA_FULL_BIT ((uintptr_t)1)
#define GPA_TF_COUNT_SHIFT 48
#define GPA_TF_ONE ((uintptr_t)1 << GPA_TF_COUNT_SHIFT)
#define GPA_TF_PTR(tf) ((void **)((tf) & (GPA_TF_ONE - 1) & ~GPA_FULL_BIT))
#define GPA_TF_COUNT(tf) ((uint32_t)((tf) >> GPA_TF_COUNT_SHIFT))
#define GPA_TLS_SLOTS 8
#define GPA_MAX_SEGMENT_SLABS 63  /* (a bit each in a segment's masks) */
#define GPA_TOMBSTONE ((void *)1) /* a deleted gpa_large slot */
#define GPA_STASH_MAX 64          /* blocks a heap's stash holds */
#define GPA_FREE_STREAK 16        /* frees in a row that make a heap */
/* Kept slabs a heap holds: GPA_KEPT_CLASS per class, and beyond, once the
 * process barrier is known to work (beam__gpa_shed_kept can then give back
 * those other threads empty in an idle heap), GPA_KEPT_MAX in all. With
 * 100,000 blocks live a busy class has some 100 slabs: capped at 32, most
 * were not kept, their frees took the stash and refills found kept slabs
 * with few free blocks. */
#define GPA_KEPT_CLASS 32
#define GPA_KEPT_MAX 1024
/* Refills of a heap between its looks at st->shed_wanted (a power of two;
 * gpa.c alloc_slow). */
#define GPA_SHED_REFILLS 256
/* Idle heaps a shed takes at most (a read of up to GPA_KEPT_MAX kept
 * slabs each, under the lock): the rest wait for the next shed. */
#define GPA_SHED_HEAPS 4
/* st->shed_wanted: a push noted a kept slab half free or more (gpa.c
 * slab_push), and a look's shed left heaps of its round (gpa_heap.c). */
#define GPA_SHED_PUSHED 1u
#define GPA_SHED_MORE 2u
/* The least time between two refills' sheds of other heaps (a barrier
 * each, which interrupts every processor): 100 ms. */
#define GPA_SHED_GAP_NS 100000000u
/* The window over which an instance that shrinks and grows again measures
 * what it needs (gpa_slab.c keep_decay): a second, the beam_alloc
 * collector's idle time. What a registered instance keeps beyond its need
 * for longer than that the collector would take anyway; and a second holds
 * many rounds of a workload that repeats (the bench's are milliseconds). */
#define GPA_KEEP_WINDOW_MS 1000u
/* Sub-slabs (see "Small first slabs" above): pages of 4 KiB, 16 a chunk. */
#define GPA_PAGE_SHIFT 12
#define GPA_PAGE_SIZE ((size_t)1 << GPA_PAGE_SHIFT)
#define GPA_PAGES ((unsigned)(GPA_SLAB_SIZE / GPA_PAGE_SIZE))
#define GPA_PAGE_FREE 0xFE /* mixed[].start: ours, in no sub-slab */
#define GPA_PAGE_NONE 0xFF /* mixed[].start: not ours (slack's neighbour) */
/* Medium blocks: above the slab classes, up to a slab, as runs of the same
 * pages in a medium slab (gpa_medium.c). */
#define GPA_MEDIUM_MAX GPA_SLAB_SIZE
#define GPA_MEDIUM_CLS 0xffff /* slab->cls of a medium slab */
/* Freed medium blocks kept whole for reuse (gpa_medium.c): at most this
 * many of each length in pages; one is kept only if they then come to no
 * more than 1/SHARE of the live medium bytes, and they are given back down
 * to that once the live bytes fall until they are over 2/SHARE. */
#define GPA_MEDIUM_CACHE 8
#define GPA_MEDIUM_CACHE_SHARE 16

enum gpa_where {
    WHERE_POOL,    /* free for any class */
    WHERE_CUR,     /* a heap's current slab for its class */
    WHERE_KEPT,    /* a heap's, not current: on its kept list */
    WHERE_FULL,    /* detached, exhausted, FULL_BIT set */
    WHERE_RECLAIM, /* on the instance's reclaim stack */
    WHERE_PARTIAL, /* ownerless, in partial[cls] or partial_sub[cls] */
    WHERE_MIXED,   /* a map entry only: its chunk is cut into sub-slabs */
    WHERE_MEDIUM,  /* pages of medium blocks (gpa_medium.c), lock held */
};

/* Per-block record in BEAM_GPA_TRACK_SITES mode (len == 0: free). */
typedef struct gpa_block_info {
    uint32_t len;
    uint32_t alignment;
    uintptr_t site;
} gpa_block_info;

struct gpa_heap;
struct gpa_segment;
struct gpa_mixed;
typedef struct beam_gpa_state gpa_state;

typedef struct gpa_slab {
    /* The first cache line holds all the fast paths read or write
     * (gpa_fast.h), and nothing other threads write: owner-only while CUR
     * (the lock's while ownerless), or written once per formatting.
     * (Aligned: slabs are packed in the address map.) A map entry of a
     * chunk cut into sub-slabs (WHERE_MIXED) has no free list, owner, count
     * or size of its own: in their place it keeps what the inline free
     * needs to find the sub-slab, on this same line. */
    _Alignas(64) union {
        void **free;            /* free list, linked through word 0 */
        struct gpa_mixed *subs; /* WHERE_MIXED: its sub-slabs */
    };
    char *bump; /* next never-used block (read by scans) */
    char *base;
    gpa_state *_Atomic st; /* NULL: not part of any instance */
    union {
        struct {
            /* owner: the heap while CUR, tagged (gpa_kept_by,
             * gpa_left_by) while KEPT or FULL, else NULL */
            _Atomic(struct gpa_heap *) heap;
            uint32_t used; /* see the invariants */
            uint32_t size; /* block size of the class */
        };
        /* WHERE_MIXED: page -> first page of its sub-slab, GPA_PAGE_FREE
         * or GPA_PAGE_NONE (frees read it without the lock). */
        uint8_t pages[GPA_PAGES];
    };
    union {
        uint32_t recip; /* ceil(2^32 / size): offset / size without a divide */
        /* A medium slab (WHERE_MEDIUM, lock held), which divides nothing:
         * bit p of pages_used is set while page p is part of a block, of
         * pages_start while a block starts there. A block ends where the
         * next starts or at the next free page. */
        struct {
            uint16_t pages_used, pages_start;
        };
    };
    uint16_t prev_size; /* size of the class below (0 for the first): a
                           length belongs here iff prev_size < len <= size */
    uint16_t fast_span; /* size - prev_size, or 0 when tracked (info): the
                           fast paths' class check and "untracked" test in
                           one (gpa_fast.h) */
    uint16_t cls;
    _Atomic uint8_t where; /* enum gpa_where */
    uint16_t requeue;      /* frees waiting that bring a FULL slab back;
                              a medium slab's longest free run (its list) */
    uint16_t pages_cached; /* medium: the blocks (by first page) that are
                              freed but kept whole in st->medium_cache */
    /* The rest: colder, or shared. */
    _Alignas(64) _Atomic uintptr_t thread_free; /* remote frees | count |
                                                   FULL_BIT */
    char *end;                     /* bump limit: base + nblocks * size */
    struct gpa_slab *next, *prev;  /* pool or partial list (lock) */
    struct gpa_slab *reclaim_next; /* reclaim stack */
    struct gpa_segment *seg;
    gpa_block_info *info; /* TRACK_SITES only */
    /* A sub-slab: its chunk. A map entry: its chunk's sub-slabs while
     * WHERE_MIXED, and kept (for reuse) while the segment lives. */
    _Atomic(struct gpa_mixed *) mixed;
} gpa_slab;
_Static_assert(offsetof(gpa_slab, recip) == 48,
               "a mixed chunk's page table takes no room of its own");
_Static_assert(offsetof(gpa_slab, thread_free) == 64,
               "the fast paths' fields fit one cache line");

/* A chunk cut into sub-slabs: a slab lent out of the pool, or a piece of a
 * segment's slack. Metadata, from the backing; lives as long as its
 * segment. Lock held. (Which page is in which sub-slab is in the chunk's
 * map entry, pages[], where the inline free finds it.) */
typedef struct gpa_mixed {
    gpa_slab sub[GPA_PAGES]; /* the sub-slab whose first page is k */
    gpa_slab *entry;         /* the chunk's map entry */
    char *base;              /* the chunk, 64 KiB aligned */
    struct gpa_mixed *next;  /* in st->mixed while in use */
    struct gpa_segment *seg;
    void *raw;       /* what the backing returned (aligned inside); NULL
                        for a segment's own (room) */
    uint16_t usable; /* pages that are ours */
    uint16_t taken;  /* pages in sub-slabs */
    bool slack;      /* in a segment's slack (else a lent pool slab) */
    unsigned joined_k;
    struct gpa_segment *joined; /* a segment whose slack shares the chunk
                                   (its pages usable too), or NULL */
    bool listed;                /* on st->mixed */
} gpa_mixed;

typedef struct gpa_segment {
    gpa_mixed room[2]; /* for the slack's two chunks, when claimed */
    struct gpa_segment *next;
    void *raw; /* what the backing returned */
    size_t raw_len;
    char *base; /* first slab, 64 KiB aligned */
    unsigned nslabs;
    uint64_t pooled;     /* bit i: slab i is in the pool */
    uint64_t warm;       /* bit i: slab i was taken from the pool once
                            (its pages are likely resident) */
    gpa_mixed *slack[2]; /* &room[k] when the chunk was claimed, another
                            segment's when this one joined it, else NULL */
    uint16_t own[2];     /* this segment's pages in those chunks */
    char *chunk[2];      /* the chunks */
    void *meta;          /* what the backing returned for this header */
} gpa_segment;

typedef struct gpa_large {
    void *ptr;  /* NULL: empty; GPA_TOMBSTONE: deleted */
    size_t len; /* as the user last allocated or resized it */
    size_t alignment;
    uintptr_t site;
    size_t backing_len; /* as the backing allocator holds it (>= len) */
} gpa_large;

/* Freed large blocks an instance keeps for reuse (lock held): a hit skips
 * the backing allocator, which inside a BEAM is enif_alloc's few hundred
 * ns. 512 KiB in all: a block must be within an eighth of a request's
 * length to serve it, so a big one kept waits for its own size, counted by
 * the VM meanwhile. With 1 MiB, SQLite's sorter, whose buffer doubles from
 * 64 KiB to 2 MiB, left its freed 1 MiB buffer here through the next
 * sort's growth: the VM-counted peak of bench-sqlite was 10,727 KiB, 9,703
 * with 512 KiB (1.62 and 1.47 times SQLite's highwater). */
#define GPA_LARGE_CACHE 16
#define GPA_LARGE_CACHE_BYTES ((size_t)1 << 19)
/* The last large blocks freed, so that a second free of one is named a
 * double free rather than a foreign pointer. */
#define GPA_LARGE_FREED_RING 64

/* Safe mode's byte patterns: after a block's length (the canary), in new
 * and in freed blocks. Distinct, and none a plausible pointer or small
 * integer. A large block gets this many canary bytes. */
#define GPA_CANARY 0xA5
#define GPA_FRESH_FILL 0xAA
#define GPA_FREED_FILL 0xDD
#define GPA_LARGE_CANARY 16

/* Safe mode's checks: the first byte of p in [from, to) that is not byte,
 * or to when all are. (Freed bytes are read: poisoned under ASan.) */
static inline BEAM__NO_ASAN size_t gpa_first_other(const unsigned char *p,
                                                   size_t from, size_t to,
                                                   unsigned char byte) {
    while (from < to && p[from] == byte)
        from++;
    return from;
}

typedef struct gpa_heap {
    /* This heap's allocations and frees, first: the inline free's
     * publication call then takes the heap's address as it is, and the
     * counters share a cache line with the bracket below, which every
     * inline call writes too (they were two lines further on, across a
     * line boundary). That line is the heap's first: heaps are 64-byte
     * aligned (heap_create; a backing gives 16 at most, and a heap at 32
     * mod 64, as malloc placed a worker thread's, had it across two). */
    _Alignas(64) beam__counters stats;
    /* Owner-written, collector-read (see "Taking a heap" above). */
    _Atomic uint32_t busy;
    _Atomic uint32_t revoked;
    _Atomic uint32_t fast_busy; /* the fast paths' bracket (a flag) */
    gpa_slab *cur[GPA_CLASSES]; /* never NULL: empty sentinel at first */
    uint8_t subs[GPA_CLASSES];  /* sub-slabs taken per class */
    /* This thread's frees into sub-slabs per class, up to
     * GPA_CLASS_BUSY_FREES: then the class graduates (gpa.c). */
    uint16_t sub_frees[GPA_CLASSES];
    bool graduated;     /* a class graduated: segments of whole slabs */
    unsigned sub_total; /* pages of sub-slabs taken (gpa_slab.c) */
    unsigned refills;   /* alloc_slow calls, to pace trimming; 0: the
                           heap never allocated (its frees stash
                           nothing: beam__gpa_free_elsewhere) */
    /* The stash (see "The stash" above): blocks this heap's thread freed
     * into slabs the heap does not own, linked through word 0. */
    void **stash;
    unsigned stash_n;
    gpa_state *st;
    struct gpa_heap *next, *prev; /* in st->heaps (lock) */
    /* Slabs this heap took back after they filled (see "Kept slabs"):
     * newest at head, oldest at tail, linked through next and prev
     * (gpa_kept_add, gpa_kept_unlink); owner-only like cur. */
    struct {
        gpa_slab *head, *tail;
        uint32_t n;
    } kept[GPA_CLASSES];
    uint32_t kept_n;      /* kept slabs in all classes, up to GPA_KEPT_MAX */
    bool kept_wants_more; /* a class was refused more than GPA_KEPT_CLASS
                             for want of the barrier (gpa.c) */
    /* h->refills at the owner's last look (every GPA_SHED_REFILLS), read
     * by sheds (gpa_heap.c heap_looked): a heap that looked since the last
     * shed is busy, and sheds its own kept slabs. */
    _Atomic uint32_t looked;
    uint32_t looked_seen; /* looked as a shed last read it (lock) */
    bool looked_read;     /* a shed read it */
    uint32_t shed_round;  /* st->shed_round when a look's shed took it (lock) */
    void *mem; /* the backing's block the heap was aligned in: its free's */
} gpa_heap;
/* What every inline call writes besides cur[cls], on the first line. */
_Static_assert(_Alignof(gpa_heap) == 64 &&
                   offsetof(gpa_heap, fast_busy) + sizeof(uint32_t) <= 64 &&
                   offsetof(gpa_heap, revoked) + sizeof(uint32_t) <= 64,
               "a heap's counters and bracket share its first cache line");

struct beam_gpa_state {
    /* Every fast path of every thread reads the fields up to pins. The
     * state is only as aligned as the backing makes it (16 bytes), so a
     * line of theirs could be shared with something written: the lock, or
     * what the backing placed next to the state. The gaps keep their lines
     * theirs (measured: growing the state by 256 bytes made immediate
     * alloc+free on dirty schedulers 1.09 -> 1.26x mimalloc, median of 8
     * alternated runs; with the gaps 1.07). */
    char gap_before[64];
    beam_allocator_t backing;
    uint64_t id; /* unique per state: thread-local slots check it */
    /* What the inline allocation compares a slot's id with: id when
     * untracked, else GPA_NO_ID, which no slot holds (ids count from 1, an
     * empty slot's is 0): a tracked instance, whose slabs note every
     * block, then leaves every allocation to the general path at the test
     * the fast path makes anyway, not at a test of the slab's own. */
    uint64_t fast_id;
    uint32_t reg;     /* index in the registry */
    uintptr_t cookie; /* free-block tag key */
    bool track;       /* BEAM_GPA_TRACK_SITES or BEAM_GPA_SAFE */
    bool safe;        /* BEAM_GPA_SAFE */
    bool free_heaps;  /* a thread that only frees may get a heap (its
                         backings are: beam__gpa_heap_for_free) */
    unsigned flags;   /* beam_gpa_init_ex's: frames kept (frames.h) */
    char gap_after[64];
    _Atomic uint32_t pins; /* threads retiring a heap of it (gpa_heap.c) */
    beam__lock lock;
    /* Lock held: */
    gpa_segment *segments;
    size_t slabs; /* in all segments */
    gpa_slab *pool;
    size_t pool_count;
    /* The segment pool slabs are taken from first (gpa_slab.c
     * pool_pick). */
    gpa_segment *fill;
    gpa_slab *partial[GPA_CLASSES];
    gpa_mixed *mixed; /* chunks cut into sub-slabs */
    /* Medium slabs by their longest free run: medium[k] lists those whose
     * longest run is k pages (a full one is in no list). */
    gpa_slab *medium[GPA_PAGES + 1];
    uint32_t medium_lists; /* bit k: medium[k] is not empty */
    /* What the instance keeps against shrinking and growing again
     * (gpa_slab.c note_growth, keep_decay): no segment goes back below
     * keep_slabs slabs. (These fields sit in what was padding: the state
     * is no byte bigger.) */
    uint32_t keep_slabs;
    /* Freed medium blocks kept whole (gpa_medium.c): medium_cached[n]
     * blocks of n pages, the i-th at page medium_cache_at[n][i] of slab
     * medium_cache[n][i]; medium_cache_bytes: their pages, in bytes. */
    gpa_slab *medium_cache[GPA_PAGES + 1][GPA_MEDIUM_CACHE];
    uint8_t medium_cache_at[GPA_PAGES + 1][GPA_MEDIUM_CACHE];
    uint8_t medium_cached[GPA_PAGES + 1];
    /* (keep_slabs:) a segment went back since the instance last grew;
     * keep_shed stopped at its bound, wholly free segments may be left
     * that could go; slab releases counted (gpa_slab.c KEEP_TICK: a
     * divisor of 256); the most slabs in use (out of the pool) since
     * keep_since. */
    bool gave_back;
    bool keep_shedding;
    uint8_t keep_ticks;
    uint32_t demand;
    size_t medium_cache_bytes;
    size_t medium_live; /* pages of the live medium blocks, in bytes */
    gpa_heap *heaps;
    gpa_large *large;
    size_t large_cap, large_count, large_used; /* used: live + tombstones */
    gpa_large cache[GPA_LARGE_CACHE];          /* freed, not in the table */
    unsigned cache_n;
    size_t cache_bytes;
    struct {
        const void *ptr;
        uintptr_t site;
    } freed_ring[GPA_LARGE_FREED_RING]; /* the last large blocks freed */
    unsigned freed_next;
    size_t backing_bytes; /* segments and large blocks, cache included */
    /* Rounds of looks' sheds (gpa_heap.c beam__gpa_shed_look): one starts
     * when a look takes the flag a push raised, and takes each idle heap
     * once, GPA_SHED_HEAPS a look. */
    uint32_t shed_round;
    /* (keep_slabs:) when the window demand covers started, in ms of
     * CLOCK_MONOTONIC (modulo 2^32: windows are compared by difference). */
    uint32_t keep_since;
    /* Lock-free: */
    _Atomic(gpa_slab *) reclaim; /* pushed by frees, popped under the lock */
    /* GPA_SHED_PUSHED: a push may have left a kept slab with no live block
     * (gpa.c slab_push, kept_emptied); GPA_SHED_MORE: a look's shed left
     * idle heaps of its round for the next. A heap's next refill that
     * looks (every GPA_SHED_REFILLS) gives such slabs back
     * (beam__gpa_shed_look). */
    _Atomic uint32_t shed_wanted;
    /* CLOCK_MONOTONIC ns before which no refill's look takes other heaps
     * (beam__gpa_shed_look). */
    _Atomic uint64_t shed_due;
    _Atomic size_t misuse;
    /* The kind of the first misuse (a static string): a leak_check call
     * raises with it when the misuse was on another thread. */
    _Atomic(const char *) first_misuse_kind;
    /* Its report line (a copy from the system allocator, published with
     * release; freed with the state): what a fault-injection check lists
     * for a misuse on another thread, whose line the calling thread's
     * record never saw. A pointer, not the 512 bytes in place: the state
     * that much bigger made the raw allocator's alloc+free on normal
     * schedulers 1.10-1.12x enif_alloc -> 1.24x (alternated make bench
     * runs), the VM's allocators placing things otherwise. */
    _Atomic(char *) first_misuse_line;
    _Atomic size_t meta_bytes; /* heaps, tables: metadata from the backing */
    size_t meta_align;         /* least alignment of metadata requests (see
                                  gpa_meta_alignment); set once at creation */
    /* Stats beyond the heaps': retired heaps', large and medium blocks'
     * counters (lock held; medium_counts publishes to peak.locked_part),
     * and what other threads' frees and in-place resizes changed (atomic,
     * any thread). */
    beam__counters retired, large_counts, medium_counts;
    _Atomic uint64_t remote_frees;
    _Atomic int64_t remote_bytes;
    beam__peak peak;
    /* The partial sub-slabs, apart: a graduated class's refill passes them
     * over without a walk (gpa_slab.c, partial_find). Lock held. */
    gpa_slab *partial_sub[GPA_CLASSES];
};

/* ---- size classes (compile-time tables, gpa.c) ------------------------- */

BEAM__HIDDEN extern const uint32_t beam__gpa_class_size[GPA_CLASSES];
/* Class of every small length (up to BEAM_GPA_SMALL_MAX) in 16-byte
 * steps: class_by_16[(len+15)/16]. The fast paths serve every one. */
BEAM__HIDDEN extern const uint8_t
    beam__gpa_class_by_16[BEAM_GPA_SMALL_MAX / 16 + 1];
/* Class for (len, alignment), or GPA_CLASSES when only the backing serves
 * it. */
BEAM__HIDDEN unsigned beam__gpa_class_for(size_t len, size_t alignment);

/* cur[] of a new heap points here: nothing free, nothing to bump, so the
 * first allocation of each class takes the slow path without a NULL test. */
BEAM__HIDDEN extern gpa_slab beam__gpa_empty_slab;

/* ---- debug checks --------------------------------------------------------
 * Compiled in test, sanitizer and fuzz builds (BEAM_ALLOC_DEBUG), out of
 * release builds. */
#ifdef BEAM_ALLOC_DEBUG
#define GPA_ASSERT(c)                                                          \
    ((c) ? (void)0 : beam__assert_fail(#c, __FILE__, __LINE__))
/* The instance lock this thread holds, if any (lock order rule 1). */
BEAM__HIDDEN extern BEAM_THREAD_LOCAL const gpa_state *beam__gpa_lock_held;
#define GPA_ASSERT_NO_LOCK() GPA_ASSERT(beam__gpa_lock_held == NULL)
#define GPA_ASSERT_LOCKED(st) GPA_ASSERT(beam__gpa_lock_held == (st))
#else
#define GPA_ASSERT(c) ((void)0)
#define GPA_ASSERT_NO_LOCK() ((void)0)
#define GPA_ASSERT_LOCKED(st) ((void)0)
#endif

static inline void gpa_lock(gpa_state *st) {
    GPA_ASSERT_NO_LOCK();
    beam__lock_take(&st->lock);
#ifdef BEAM_ALLOC_DEBUG
    beam__gpa_lock_held = st;
#endif
}

static inline void gpa_unlock(gpa_state *st) {
    GPA_ASSERT_LOCKED(st);
#ifdef BEAM_ALLOC_DEBUG
    beam__gpa_lock_held = NULL;
#endif
    beam__lock_drop(&st->lock);
}

/* ---- the backing allocator: never with a lock held (rule 2) ------------ */

/* Every block the instance takes from its backing is at a pointer's
 * alignment at least, whatever alignment it stands for: an arena or a
 * fixed buffer hands a block at alignment 1 out at any address, and the
 * instance writes pointer-sized words into what it takes (a large block's
 * cleared tag word, gpa_defer's record when a piece goes back): at an odd
 * address, undefined behaviour (found by a bug hunt). A large block's
 * record keeps the alignment asked for, which its frees are checked
 * against; the calls below give the backing this one, each the same. */
static inline size_t gpa_backing_alignment(size_t alignment) {
    return alignment < BEAM_MAX_ALIGN ? BEAM_MAX_ALIGN : alignment;
}

static inline void *gpa_backing_alloc(gpa_state *st, size_t len,
                                      size_t alignment, uintptr_t ret) {
    GPA_ASSERT_NO_LOCK();
    return beam__parent_alloc(st->backing, len,
                              gpa_backing_alignment(alignment), ret);
}

static inline void gpa_backing_free(gpa_state *st, void *p, size_t len,
                                    size_t alignment, uintptr_t ret) {
    GPA_ASSERT_NO_LOCK();
    st->backing.vtable->free(st->backing.ctx, p, len,
                             gpa_backing_alignment(alignment), ret);
}

static inline bool gpa_backing_resize(gpa_state *st, void *p, size_t len,
                                      size_t alignment, size_t new_len,
                                      uintptr_t ret) {
    GPA_ASSERT_NO_LOCK();
    return beam__parent_resize(st->backing, p, len,
                               gpa_backing_alignment(alignment), new_len, ret);
}

static inline void *gpa_backing_remap(gpa_state *st, void *p, size_t len,
                                      size_t alignment, size_t new_len,
                                      uintptr_t ret) {
    GPA_ASSERT_NO_LOCK();
    return beam__parent_remap(st->backing, p, len,
                              gpa_backing_alignment(alignment), new_len, ret);
}

/* Metadata over a backing that is itself a general purpose allocator is
 * asked at an alignment none of its classes or pages serves, so that it
 * takes a block of that one's own backing apart (a large block) instead of
 * a place in its slabs: a heap made on a thread's first use, which lives
 * as long as the thread, landed in the slabs of a burst there and kept
 * whole segments from going back (13-17 MB for 8 KB live, in a stress
 * test). The alignment costs up to 16 KiB a piece, for nested instances
 * only, and only when the chain of backings ends in the large allocator,
 * which serves it (meta_align, set with the state, gpa_heap.c; a chain down
 * to the raw allocator keeps the natural alignments, rather than have a
 * refusal counted as a failure). Every metadata request and its free go
 * through this. */
#define GPA_NESTED_META_ALIGN ((size_t)16384)
static inline size_t gpa_meta_alignment(const gpa_state *st, size_t alignment) {
    return alignment < st->meta_align ? st->meta_align : alignment;
}

/* Metadata from the backing, counted in meta_bytes. */
static inline void *gpa_meta_alloc(gpa_state *st, size_t len,
                                   size_t alignment) {
    void *p = gpa_backing_alloc(st, len, gpa_meta_alignment(st, alignment), 0);
    if (p != NULL)
        beam__atomic_add_relaxed(&st->meta_bytes, len);
    return p;
}

/* ... and back, uncounted. */
static inline void gpa_meta_free(gpa_state *st, void *p, size_t len,
                                 size_t alignment) {
    beam__atomic_sub_relaxed(&st->meta_bytes, len);
    gpa_backing_free(st, p, len, gpa_meta_alignment(st, alignment), 0);
}

/* What goes back to the backing once the lock is released: each entry is
 * written into the memory it describes (every such piece is at least this
 * big: see GPA_DEFER_MIN). */
typedef struct gpa_defer {
    struct gpa_defer *next;
    size_t len;
    size_t alignment;
    bool meta;  /* counted in meta_bytes */
    bool noted; /* a large block: unnoted before it goes back */
} gpa_defer;
#define GPA_DEFER_MIN sizeof(gpa_defer)

static inline void gpa_defer_free(gpa_defer **list, void *p, size_t len,
                                  size_t alignment, bool meta) {
    GPA_ASSERT(len >= GPA_DEFER_MIN);
    gpa_defer *d = (gpa_defer *)p;
    d->next = *list;
    d->len = len;
    d->alignment = alignment;
    d->meta = meta;
    d->noted = false;
    *list = d;
}

/* Metadata on cache lines of its own (a heap, a mixed chunk's record, a
 * segment's header: 64-aligned), which the backing need not serve: it is
 * aligned by hand inside a piece GPA_LINE_META_LEN(len) long, asked at
 * BEAM_MAX_ALIGN. *raw is that piece, which its free takes; NULL when out
 * of memory. */
#define GPA_LINE_META_LEN(len) ((len) + 64 - BEAM_MAX_ALIGN)
static inline void *gpa_line_meta_alloc(gpa_state *st, size_t len, void **raw) {
    *raw = gpa_meta_alloc(st, GPA_LINE_META_LEN(len), BEAM_MAX_ALIGN);
    return *raw == NULL ? NULL : (void *)beam__align_up((uintptr_t)*raw, 64);
}
static inline void gpa_line_meta_free(gpa_state *st, void *raw, size_t len) {
    gpa_meta_free(st, raw, GPA_LINE_META_LEN(len), BEAM_MAX_ALIGN);
}
static inline void gpa_line_meta_defer(gpa_defer **list, void *raw,
                                       size_t len) {
    gpa_defer_free(list, raw, GPA_LINE_META_LEN(len), BEAM_MAX_ALIGN, true);
}

/* A large block (noted: beam__gpa_set_note) onto the list. */
static inline void gpa_defer_free_large(gpa_defer **list, gpa_large *e) {
    gpa_defer_free(list, e->ptr, e->backing_len, e->alignment, false);
    ((gpa_defer *)e->ptr)->noted = true;
}

/* Give the deferred pieces back (no lock held). */
BEAM__HIDDEN void beam__gpa_defer_run(gpa_state *st, gpa_defer *list);

/* ---- the address map ------------------------------------------------------
 * One gpa_slab per 64 KiB of a 48-bit address space, in leaves of 2^16
 * slabs (4 GiB of addresses, 8 MiB of zero pages until touched) under a
 * root of 2^16 leaf pointers. So pointer -> slab metadata is two loads and
 * never reads the pointer's memory. Leaves are made on demand and freed
 * when the library is unloaded (gpa_slab.c). */
#define GPA_MAP_BITS 16
#define GPA_MAP_SIZE ((size_t)1 << GPA_MAP_BITS)
/* The first address the map does not serve (2^48). */
#define GPA_MAP_END ((uintptr_t)1 << (GPA_SLAB_SHIFT + 2 * GPA_MAP_BITS))
BEAM__HIDDEN extern _Atomic(gpa_slab *) beam__gpa_map_root[GPA_MAP_SIZE];

/* The map entry of p, owned or not; NULL when no leaf covers p. */
static BEAM__ALWAYS_INLINE gpa_slab *beam__gpa_map_slot(const void *p) {
    /* (The root index tested by one compare, and the leaf index made
     * after the load: one register fewer live in the inline free.) */
    uintptr_t r = (uintptr_t)p >> (GPA_SLAB_SHIFT + GPA_MAP_BITS);
    if (BEAM__UNLIKELY(r >= GPA_MAP_SIZE))
        return NULL;
    gpa_slab *leaf = beam__atomic_load_acquire(&beam__gpa_map_root[r]);
    if (BEAM__UNLIKELY(leaf == NULL))
        return NULL;
    return &leaf[((uintptr_t)p >> GPA_SLAB_SHIFT) & (GPA_MAP_SIZE - 1)];
}

/* beam__gpa_map_slot for the inline free: the root index masked rather
 * than tested, one compare and branch fewer. A pointer at or above 2^48
 * gets the entry of another one, which the free's at-block test refuses
 * before it reads anything at the pointer: p is then above every bump.
 * What follows a miss tests p below GPA_MAP_END: the entry is then p's. */
static BEAM__ALWAYS_INLINE gpa_slab *gpa_map_slot_masked(const void *p) {
    uintptr_t r =
        ((uintptr_t)p >> (GPA_SLAB_SHIFT + GPA_MAP_BITS)) & (GPA_MAP_SIZE - 1);
    gpa_slab *leaf = beam__atomic_load_acquire(&beam__gpa_map_root[r]);
    if (BEAM__UNLIKELY(leaf == NULL))
        return NULL;
    return &leaf[((uintptr_t)p >> GPA_SLAB_SHIFT) & (GPA_MAP_SIZE - 1)];
}

/* The instance owning the slab s (NULL: none, or s NULL). Lock-free. */
static BEAM__ALWAYS_INLINE gpa_state *beam__gpa_owner(const gpa_slab *s) {
    return s == NULL ? NULL : beam__atomic_load_acquire(&s->st);
}

static inline gpa_slab *beam__gpa_seg_slab(const gpa_segment *seg, unsigned i) {
    return beam__gpa_map_slot(seg->base + (size_t)i * GPA_SLAB_SIZE);
}

static inline uint8_t gpa_where(const gpa_slab *s) {
    return beam__atomic_load_relaxed(&s->where);
}

/* Page k of the mixed chunk of map entry e: see pages[]. */
static BEAM__ALWAYS_INLINE uint8_t gpa_page(gpa_slab *e, unsigned k) {
    return beam__atomic_load_plain_relaxed(&e->pages[k]);
}

static inline void gpa_set_page(gpa_slab *e, unsigned k, uint8_t v) {
    beam__atomic_store_plain_relaxed(&e->pages[k], v);
}

/* The slab holding p: its map entry, or for a chunk cut into sub-slabs the
 * sub-slab of p's page; the entry itself (WHERE_MIXED, no block in it) for
 * a page of ours in no sub-slab; NULL for a page that is not ours (a
 * neighbour's, in a chunk a segment's slack shares). Lock-free. */
static inline gpa_slab *beam__gpa_slab_of(const void *p) {
    gpa_slab *e = beam__gpa_map_slot(p);
    if (BEAM__LIKELY(e == NULL ||
                     beam__atomic_load_acquire(&e->where) != WHERE_MIXED))
        return e;
    unsigned page =
        (unsigned)((uintptr_t)p >> GPA_PAGE_SHIFT) & (GPA_PAGES - 1);
    uint8_t k = gpa_page(e, page);
    if (BEAM__LIKELY(k < GPA_PAGES))
        return &e->subs->sub[k];
    return k == GPA_PAGE_FREE ? e : NULL;
}

/* Is p a general purpose instance's? In a slab in use (blocks, live or free) or
 * in a page of ours of a chunk cut into sub-slabs. Never true of memory
 * the backing has or lent to anyone else (a refusal would leak it): an
 * entry is unmapped (where, then its owner) before its memory goes back;
 * a slack chunk's pages that are not ours are GPA_PAGE_NONE, published
 * before WHERE_MIXED; a chunk just claimed (owner set, where still POOL)
 * and a pool slab, which holds no block, answer no. */
static BEAM__ALWAYS_INLINE bool gpa_map_holds(const void *p) {
    gpa_slab *e = beam__gpa_map_slot(p);
    if (BEAM__LIKELY(beam__gpa_owner(e) == NULL))
        return false;
    uint8_t where = beam__atomic_load_acquire(&e->where);
    if (where != WHERE_MIXED)
        return where != WHERE_POOL;
    unsigned page =
        (unsigned)((uintptr_t)p >> GPA_PAGE_SHIFT) & (GPA_PAGES - 1);
    bool ours = gpa_page(e, page) != GPA_PAGE_NONE;
    /* A raw block p next to a slack piece: once freed, its memory may go
     * to a new segment, whose map entry is this one (entry_reset). */
    beam__tsan_release(e);
    return ours;
}

/* The slab holding p if it is one of st's, else NULL: beam__gpa_slab_of
 * and the owner, made consistent (gpa.c). No lock held. */
BEAM__HIDDEN gpa_slab *beam__gpa_slab_mine(gpa_state *st, const void *p);

/* s is a sub-slab (not a map entry). */
static inline bool gpa_is_sub(gpa_slab *s) {
    struct gpa_mixed *m = beam__atomic_load_relaxed(&s->mixed);
    return m != NULL && s >= m->sub && s < m->sub + GPA_PAGES;
}

/* The invariants of a formatted slab (debug builds). */
#define GPA_ASSERT_SLAB(s)                                                     \
    do {                                                                       \
        GPA_ASSERT(((uintptr_t)(s)->base &                                     \
                    ((gpa_is_sub(s) ? GPA_PAGE_SIZE : GPA_SLAB_SIZE) - 1)) ==  \
                   0);                                                         \
        GPA_ASSERT((s)->size % GPA_MIN_BLOCK == 0 && (s)->size != 0);          \
        GPA_ASSERT((s)->bump >= (s)->base && (s)->bump <= (s)->end);           \
        GPA_ASSERT((s)->end <= (s)->base + GPA_SLAB_SIZE);                     \
        GPA_ASSERT((s)->used <= ((s)->end - (s)->base) / (s)->size);           \
        GPA_ASSERT((gpa_where(s) == WHERE_CUR) ==                              \
                   gpa_is_owner(beam__atomic_load_relaxed(&(s)->heap)));       \
    } while (0)

/* A slab's heap field while it is not current (see "Kept slabs"): the
 * low bits of a heap's address say which state; a plain heap address is
 * an owner, which the inline free compares with its own heap. */
#define GPA_HEAP_LEFT ((uintptr_t)1) /* detached FULL by this heap */
#define GPA_HEAP_KEPT ((uintptr_t)2) /* KEPT by this heap */
static inline gpa_heap *gpa_left_by(const gpa_heap *h) {
    return (gpa_heap *)((uintptr_t)h | GPA_HEAP_LEFT);
}
static inline gpa_heap *gpa_kept_by(const gpa_heap *h) {
    return (gpa_heap *)((uintptr_t)h | GPA_HEAP_KEPT);
}
static inline bool gpa_is_owner(const gpa_heap *h) {
    return h != NULL && ((uintptr_t)h & (GPA_HEAP_LEFT | GPA_HEAP_KEPT)) == 0;
}

static inline void gpa_set_where(gpa_slab *s, enum gpa_where w) {
    beam__atomic_store_relaxed(&s->where, (uint8_t)w);
}

/* ---- slabs (gpa_slab.c) ----------------------------------------------- */

/* Move the frees other threads pushed onto s's free list: by its owner, or
 * with the lock held for an ownerless slab. Returns how many. */
BEAM__HIDDEN uint32_t beam__gpa_slab_collect_remote(gpa_slab *s);
/* A slab of class cls for heap h, installed nowhere yet (where == CUR,
 * heap == h): adopted from the partial list, or from the pool, taking a
 * segment from the backing when needed. NULL when out of memory. No lock
 * held; takes it. */
BEAM__HIDDEN gpa_slab *beam__gpa_slab_acquire(gpa_heap *h, unsigned cls);
/* No lock held: the kept slabs of st that other threads emptied go back
 * to the instance, from mine (this thread's heap inside a call, or NULL)
 * and up to GPA_SHED_HEAPS other heaps whose owner is away (the process
 * barrier, once ready; gpa_heap.c): before the instance asks its backing
 * for a segment. */
BEAM__HIDDEN void beam__gpa_shed_kept(gpa_state *st, gpa_heap *mine);
/* Owner, at a refill every GPA_SHED_REFILLS, no lock held: when slab_push
 * noted a kept slab half free, h's own kept slabs that other threads
 * emptied go back (no barrier), and at most every GPA_SHED_GAP_NS those of
 * up to GPA_SHED_HEAPS quiet idle heaps (gpa_heap.c). */
BEAM__HIDDEN void beam__gpa_shed_look(gpa_heap *h);
/* Process barriers issued to take idle heaps (a collect's or a shed's;
 * atomic: under the locks of different instances): the tests count them,
 * each interrupts every processor. */
BEAM__HIDDEN extern _Atomic uint64_t beam__gpa_heap_barriers;
/* Idle heaps those barriers let the lock holder take, in all. */
BEAM__HIDDEN extern _Atomic uint64_t beam__gpa_heaps_taken;
/* Heaps stepped over, lock held, to find the end of an instance's list
 * (gpa_heap.c take_idle_heaps moves the heaps it took there): the tests
 * count them. */
BEAM__HIDDEN extern _Atomic uint64_t beam__gpa_heap_tail_steps;
/* Frees into sub-slabs after which a class of a heap graduates (see
 * "Small first slabs"): it takes whole slabs from then on. */
#define GPA_CLASS_BUSY_FREES 1024
_Static_assert(GPA_CLASS_BUSY_FREES <= UINT16_MAX,
               "gpa_heap.sub_frees counts up to it");
/* Class cls of h graduated: the count stops at the mark, and only a strip
 * of the heap resets it (one test for gpa.c's count and gpa_slab.c's
 * refill, which must agree). */
static inline bool gpa_class_graduated(const gpa_heap *h, unsigned cls) {
    return h->sub_frees[cls] >= GPA_CLASS_BUSY_FREES;
}
/* Sub-slabs a class of a heap takes, each twice the last, before it takes
 * whole slabs (gpa_slab.c; a class that graduates skips the rest). */
#define GPA_SUB_STEPS 4
/* s (ownerless or being given up by its owner, lock held) goes back to the
 * pool when it has no live block, else to its partial list. */
BEAM__HIDDEN void beam__gpa_slab_park(gpa_state *st, gpa_slab *s,
                                      gpa_defer **defer);
/* The requeue mark of s, a whole slab: the frees waiting in its
 * thread_free that bring it back from FULL (gpa_slab.c). */
BEAM__HIDDEN uint16_t beam__gpa_slab_mark(const gpa_slab *s);
/* s (being given up by its owner, lock held), with live blocks, to its
 * partial list, its remote frees left in thread_free for whoever takes it
 * (partial_take collects them): no list walked under the lock. */
BEAM__HIDDEN void beam__gpa_slab_park_pending(gpa_state *st, gpa_slab *s);
/* An empty slab back to the pool (lock held); a segment that empties goes
 * on defer. */
BEAM__HIDDEN void beam__gpa_slab_release(gpa_state *st, gpa_slab *s,
                                         gpa_defer **defer);
/* Lock held on entry and on return, though dropped meanwhile when the pool
 * is empty and a segment must be taken: a slab out of the pool, not yet
 * formatted (still WHERE_POOL). NULL when out of memory. */
BEAM__HIDDEN gpa_slab *beam__gpa_pool_take(gpa_state *st);
/* Detached slab s came back to life (a free took FULL off): on the
 * instance's reclaim stack. Lock-free, any thread. */
BEAM__HIDDEN void beam__gpa_reclaim_push(gpa_state *st, gpa_slab *s);
/* Lock held: take up to max slabs off the reclaim stack (SIZE_MAX: all)
 * and park them. */
BEAM__HIDDEN void beam__gpa_reclaim_drain(gpa_state *st, size_t max,
                                          gpa_defer **defer);
/* Lock held: collect every partial slab, release the empty ones, and give
 * every wholly free segment back. */
BEAM__HIDDEN void beam__gpa_slabs_trim(gpa_state *st, gpa_defer **defer);
/* The window over which an instance's need is measured for what it keeps
 * when it shrinks and grows again (gpa_slab.c keep_decay), in ms:
 * GPA_KEEP_WINDOW_MS; tests set a shorter one. */
BEAM__HIDDEN extern uint32_t beam__gpa_keep_window_ms;
/* CLOCK_MONOTONIC in ns (gpa_heap.c). For rare decisions only: not on a
 * path every allocation takes. */
BEAM__HIDDEN uint64_t beam__gpa_now_ns(void);
/* Deinit: every segment on defer. */
BEAM__HIDDEN void beam__gpa_segments_free_all(gpa_state *st, gpa_defer **defer);
/* Library unload: the map's leaves go (no instance may be live). */
BEAM__HIDDEN void beam__gpa_map_free(void);

/* ---- threads, heaps, registry (gpa_heap.c) --------------------------- */

/* Thread-local slots: which heap this thread uses for which instance. */
#define GPA_NO_ID UINT64_MAX /* st->fast_id of a tracked instance */
typedef struct gpa_tls_slot {
    gpa_state *st;
    uint64_t id;
    gpa_heap *heap;
    uint32_t reg;
} gpa_tls_slot;
BEAM__HIDDEN extern BEAM_THREAD_LOCAL gpa_tls_slot beam__gpa_tls[GPA_TLS_SLOTS];
/* In a NIF, the slots' cached offset (os/tls.h), learned by a thread's
 * first call of an instance: in static TLS the fast paths find them
 * without the linker's call. In a standalone build too where that call is
 * a plain one (clang: BEAM__TLS_PLAIN_CALL), which the inline fast paths
 * leave to the out-of-line ones (gpa_fast.h, gpa_inline_slot): without
 * the cache every call would. (gcc's standalone access needs none: a
 * program's linker makes its descriptor call the thread pointer plus a
 * constant.) */
#if defined(BEAM__HAVE_TLS_OFFSET) &&                                          \
    (!defined(BEAM_ALLOC_STANDALONE) || defined(BEAM__TLS_PLAIN_CALL))
#define GPA_TLS_OFFSET 1
BEAM__HIDDEN extern _Atomic intptr_t beam__gpa_tls_offset;
#endif

BEAM__HIDDEN gpa_state *beam__gpa_state_slow(beam_gpa_t *gpa);
/* A state made by it, out of the registry and unpublished (or given up by
 * deinit): its lock and its memory back to its backing (no lock held). */
BEAM__HIDDEN void beam__gpa_state_free(gpa_state *st);
/* This thread's heap of gpa, made when missing; NULL when out of memory. */
BEAM__HIDDEN gpa_heap *beam__gpa_heap_slow(beam_gpa_t *gpa);
/* The same for a state made already; the heap takes the first slot. */
BEAM__HIDDEN gpa_heap *beam__gpa_heap_of(gpa_state *st);
/* For a free: this thread's heap of st in any slot, else one made in an
 * empty slot when the thread has freed GPA_FREE_STREAK blocks of st in a
 * row; else NULL. */
BEAM__HIDDEN gpa_heap *beam__gpa_heap_for_free(gpa_state *st);
/* This thread's heap of st if it has one (never makes one). */
BEAM__HIDDEN gpa_heap *beam__gpa_heap_if_any(const gpa_state *st);
/* Push every block of h's stash to its slab (the owner inside the busy
 * bracket, or a collector holding the lock while h is idle). */
BEAM__HIDDEN void beam__gpa_stash_flush(gpa_state *st, gpa_heap *h);
/* Wait out a collector that is taking h's slabs (owner, inside a bracket
 * whose enter returned n). */
BEAM__HIDDEN void beam__gpa_heap_wait_revoked(gpa_heap *h, uint32_t n);
/* Give back what can be given back now (beam_gpa_collect). */
BEAM__HIDDEN void beam__gpa_collect_all(gpa_state *st);
/* Deinit: out of the registry, once no thread is retiring one of its heaps. */
BEAM__HIDDEN void beam__gpa_registry_remove(gpa_state *st);
/* Deinit of gpa: the next live instance over it, from registry index *at
 * (gpa_heap.c). */
BEAM__HIDDEN gpa_state *beam__gpa_registry_over(const beam_gpa_t *gpa,
                                                uint32_t *at,
                                                beam_gpa_t **made_for);
/* Registry entries those walks have read, in all (under the registry's
 * lock): what a deinit costs, for the tests, which count it rather than
 * time it on a shared machine. */
BEAM__HIDDEN extern uint64_t beam__gpa_registry_reads;
BEAM__HIDDEN void beam__gpa_heaps_free_all(gpa_state *st, gpa_defer **defer);
/* Library unload: the registry's table goes. */
BEAM__HIDDEN void beam__gpa_registry_free(void);
BEAM__HIDDEN bool beam__gpa_registry_empty(void);

/* A heap call's bracket (see "Taking a heap" above). enter, then check
 * revoked before touching h's slabs; leave when done.
 * The owner's side is ordered against the collector's by a process-wide
 * barrier (os/barrier.h), which TSan does not know: under TSan both sides
 * use sequentially consistent accesses instead. */
#ifdef BEAM__TSAN
#define gpa_busy_store(p, v) beam__atomic_store_seq_cst(p, v)
#define gpa_busy_load(p) beam__atomic_load_seq_cst(p)
#else
#define gpa_busy_store(p, v) beam__atomic_store_relaxed(p, v)
#define gpa_busy_load(p) beam__atomic_load_acquire(p)
#endif

/* busy counts brackets, not just one: a call can nest in another on the
 * same heap (a refill asks a backing that frees into this instance; a
 * report hook), and the inner leave must not end the outer call's claim.
 * Only the owner writes it: plain stores. */
static BEAM__ALWAYS_INLINE uint32_t gpa_heap_enter(gpa_heap *h) {
    uint32_t n = beam__atomic_load_relaxed(&h->busy);
    gpa_busy_store(&h->busy, n + 1);
    beam__atomic_compiler_fence();
    return n;
}

static BEAM__ALWAYS_INLINE bool gpa_heap_revoked(gpa_heap *h) {
    return gpa_busy_load(&h->revoked) != 0;
}

/* n: what the matching enter returned (brackets nest, so busy is n + 1
 * again by now: a store, without reading it back). */
static BEAM__ALWAYS_INLINE void gpa_heap_leave(gpa_heap *h, uint32_t n) {
    GPA_ASSERT(beam__atomic_load_relaxed(&h->busy) == n + 1);
    beam__atomic_store_release(&h->busy, n);
}

/* The inline fast paths' bracket (gpa_fast.h): they call nothing while
 * inside, so they never nest in one another, and a flag does for them
 * where busy needs a load and an add (immediate alloc+free: ~3% of the
 * pair, measured). One may run inside a general path's bracket (a report
 * hook or a backing that allocates from this instance): busy still holds
 * the outer call's claim. */
static BEAM__ALWAYS_INLINE void gpa_heap_enter_fast(gpa_heap *h) {
    GPA_ASSERT(beam__atomic_load_relaxed(&h->fast_busy) == 0);
    gpa_busy_store(&h->fast_busy, 1);
    beam__atomic_compiler_fence();
}

static BEAM__ALWAYS_INLINE void gpa_heap_leave_fast(gpa_heap *h) {
    beam__atomic_store_release(&h->fast_busy, 0);
}

/* Is h's owner inside a call, general or fast? The collector's look
 * (lock held; fenced: after its barrier, with gpa_busy_load), and the
 * owner's own, at a heap a call further up its stack may be using. */
static inline bool gpa_heap_in_call(gpa_heap *h, bool fenced) {
    if (fenced)
        return gpa_busy_load(&h->busy) != 0 ||
               gpa_busy_load(&h->fast_busy) != 0;
    return beam__atomic_load_relaxed(&h->busy) != 0 ||
           beam__atomic_load_relaxed(&h->fast_busy) != 0;
}

/* ---- medium blocks (gpa_medium.c) --------------------------------------- */

/* A block of len (BEAM_GPA_SMALL_MAX < len <= GPA_MEDIUM_MAX) at page
 * alignment, for an untracked instance; NULL when out of memory. No lock
 * held; takes it. */
BEAM__HIDDEN void *beam__gpa_medium_alloc(gpa_state *st, size_t len);
/* Free mem, in medium slab s of st (the map says so): checked under the
 * lock like any free (double, inside a block, wrong length). */
BEAM__HIDDEN void beam__gpa_medium_free(gpa_state *st, gpa_slab *s, void *mem,
                                        size_t len, size_t alignment,
                                        uintptr_t ret);
/* What a refused resize says, in the words of the call made: a resize, or
 * a remap or realloc, which would have gone on to copy the block (gpa.c). A
 * misuse is reported whatever the new length: a resize may fail for want
 * of room, and its caller would never learn that the block was wrong. */
typedef struct gpa_resize_words {
    const char *call;         /* the call, for beam__gpa_misuse_stateless */
    const char *not_live;     /* freed, foreign, or inside a block */
    const char *wrong_length; /* a live block, of another length */
} gpa_resize_words;

/* Resize mem in place (its run shrinks, or grows into the free pages after
 * it); false when it cannot. No live block at mem (freed, or foreign), or
 * one of other pages than len's, is a misuse, reported in said's words. */
BEAM__HIDDEN bool beam__gpa_medium_resize(gpa_state *st, gpa_slab *s, void *mem,
                                          size_t len, size_t alignment,
                                          size_t new_len, uintptr_t ret,
                                          const gpa_resize_words *said);
/* Lock held: the bytes of the live block that starts at p in s, or 0 when
 * s is not (or no longer) a medium slab of st or no live block starts
 * there (a freed block kept in the cache included). */
BEAM__HIDDEN size_t beam__gpa_medium_block(const gpa_state *st,
                                           const gpa_slab *s, const void *p);
/* Lock held: every freed block kept in the cache goes back to its slab
 * (beam_gpa_collect). */
BEAM__HIDDEN void beam__gpa_medium_flush(gpa_state *st, gpa_defer **defer);

/* ---- large blocks (gpa_large.c) ----------------------------------------- */

BEAM__HIDDEN void *beam__gpa_large_alloc(gpa_state *st, size_t len,
                                         size_t alignment, uintptr_t ret);
/* Free mem if it is one of st's large blocks (misuse of it reported). */
typedef enum gpa_large_freed {
    GPA_LARGE_FREED,    /* it was; it is freed */
    GPA_LARGE_NOT_OURS, /* it is not one of st's large blocks */
    GPA_LARGE_TWICE,    /* it was one, freed already: *site its allocation */
} gpa_large_freed;
BEAM__HIDDEN gpa_large_freed beam__gpa_large_free(gpa_state *st, void *mem,
                                                  size_t len, size_t alignment,
                                                  uintptr_t ret,
                                                  uintptr_t *site);
/* Safe mode, lock held: freed large blocks still cached that were written
 * to; up to max copied to out. */
BEAM__HIDDEN size_t beam__gpa_large_check_freed(gpa_state *st, gpa_large *out,
                                                size_t *at, size_t max);
/* Resize mem in place, false when it cannot; one of another length or
 * alignment is reported in said's words, as for a medium block. No large
 * block of st at mem (freed, or foreign): false and *not_ours, nothing
 * reported (the caller asks whether another copy of the library holds
 * it, and reports it if not: gpa.c). */
BEAM__HIDDEN bool beam__gpa_large_resize(gpa_state *st, void *mem, size_t len,
                                         size_t alignment, size_t new_len,
                                         uintptr_t ret,
                                         const gpa_resize_words *said,
                                         bool *not_ours);
BEAM__HIDDEN void *beam__gpa_large_remap(gpa_state *st, void *mem, size_t len,
                                         size_t alignment, size_t new_len,
                                         uintptr_t ret);
/* Lock held: the entry of p, or NULL. */
BEAM__HIDDEN gpa_large *beam__gpa_large_find(gpa_state *st, const void *p);
/* Lock held: the cache and (deinit) every live block and the table, onto
 * defer. */
BEAM__HIDDEN void beam__gpa_cache_flush(gpa_state *st, gpa_defer **defer);
/* Lock held: the large table back to the backing when no block in it is
 * live (collect). */
BEAM__HIDDEN void beam__gpa_large_trim(gpa_state *st, gpa_defer **defer);
BEAM__HIDDEN void beam__gpa_large_free_all(gpa_state *st, gpa_defer **defer);

/* Every instance's large blocks by address (addr_set.c), for the raw
 * and the large allocators' refusal; no lock held. A block is noted once
 * its backing gave it and unnoted before it goes back, so that the set
 * never holds an address the backing may hand to anyone else. One the
 * system allocator had no room to note goes unnoted, not refused: an
 * unnote of an address not noted changes nothing, or takes a parent
 * instance's note early; either way the set never holds memory no
 * instance has. */
static inline void beam__gpa_set_note(const void *p) {
    GPA_ASSERT_NO_LOCK();
    beam__set_note(BEAM__SET_GPA_LARGE, p);
}
static inline void beam__gpa_set_unnote(const void *p) {
    GPA_ASSERT_NO_LOCK();
    (void)beam__set_unnote(BEAM__SET_GPA_LARGE, p);
}
static inline bool beam__gpa_set_holds(const void *p) {
    return beam__set_holds(BEAM__SET_GPA_LARGE, p);
}

/* ---- leaks and misuse (gpa_report.c) ---------------------------------- */

/* This copy's text of a misuse kind another copy's allocators named
 * (their text: a copy may not keep another's), "misuse" when none of the
 * GPA's (nif/copies.c). */
BEAM__HIDDEN const char *beam__gpa_kind_named(const char *kind);
/* Report misuse (no lock held: the hook may do anything). */
BEAM__HIDDEN void beam__gpa_misuse(gpa_state *st, const char *what,
                                   const void *p, size_t len, size_t alignment,
                                   uintptr_t ret);
/* The same, naming where the block was allocated (0: unknown). */
BEAM__HIDDEN void beam__gpa_misuse_at(gpa_state *st, const char *what,
                                      const void *p, size_t len,
                                      size_t alignment, uintptr_t ret,
                                      uintptr_t alloc_site);
/* A write past the end of block p (len bytes at alignment), its padding's
 * byte changed, found as the block is freed (ret) in safe mode. A scratch
 * arena's chunk given back at a NIF call's end is named as that, with the
 * NIF's block in it (beam__call_end). */
BEAM__HIDDEN void beam__gpa_overrun(gpa_state *st, const void *p, size_t len,
                                    size_t alignment, size_t byte,
                                    uintptr_t ret, uintptr_t alloc_site);
/* A call given a block through an instance that has no state (never used,
 * or deinit): call names it ("free", "resize", "remap or realloc"). */
BEAM__HIDDEN void beam__gpa_misuse_stateless(unsigned flags, const char *call,
                                             const void *p, size_t len,
                                             size_t alignment, uintptr_t ret);
/* Walk live blocks (lock held). Up to `report` of them are copied into
 * out (so that they are reported after the unlock). */
typedef struct gpa_leak {
    const void *p;
    size_t len;
    size_t alignment;
    uintptr_t site;
    bool exact;
} gpa_leak;
BEAM__HIDDEN beam_gpa_usage beam__gpa_scan(gpa_state *st, gpa_leak *out,
                                           size_t report, size_t *reported);
BEAM__HIDDEN void beam__gpa_report_leaks(const gpa_leak *leaks, size_t n,
                                         size_t total);

/* ---- small helpers --------------------------------------------------------
 */

static inline gpa_state *beam__gpa_state_of(beam_gpa_t *gpa) {
    return beam__atomic_load_plain_acquire(&gpa->internal_state);
}

static BEAM__ALWAYS_INLINE uintptr_t beam__gpa_tag(const gpa_state *st,
                                                   const void *b) {
    return st->cookie ^ (uintptr_t)b;
}

/* Every block handed out gets its second word (the free tag's place)
 * cleared: a small one in gpa_hand_out, a medium run and a large block in
 * their paths. Memory keeps old tags: a medium block at a page where a
 * freed small block had been carried that block's tag, its own address's,
 * which a realloc copied into a small block, and once data came back to a
 * small block at that address its correct free looked like a double free
 * (found by a bug hunt). */
static inline void gpa_untag(void *p) {
    ((void **)p)[1] = NULL;
}

/* A freed small block's first two words, its free-list link and its free
 * tag, as the allocator reads and writes them. Under ASan all of a freed
 * block is poisoned (a NIF's use after free of its first field is the
 * commonest), and these go past it, out of line; a read of a block that
 * may be live (a free's double-free test) is one too. Without ASan each
 * is the plain access, as a macro: inline functions, even always inline,
 * changed clang's code (the order of a comparison's operands, a load
 * kept or made again). */
#ifdef BEAM__ASAN
static BEAM__ASAN_EXEMPT void *gpa_link(void *const *b) {
    return b[0];
}

static BEAM__ASAN_EXEMPT void gpa_set_link(void **b, void *next) {
    b[0] = next;
}

static BEAM__ASAN_EXEMPT uintptr_t gpa_tag_at(const void *b) {
    return (uintptr_t)((void *const *)b)[1];
}

static BEAM__ASAN_EXEMPT void gpa_set_tag(void **b, uintptr_t tag) {
    b[1] = (void *)tag;
}
#else
#define gpa_link(b) ((b)[0])
#define gpa_set_link(b, next) ((b)[0] = (next))
#define gpa_tag_at(b) ((uintptr_t)((void *const *)(b))[1])
#define gpa_set_tag(b, tag) ((b)[1] = (void *)(tag))
#endif

/* Index of the block at p (p known to be a block of s). */
static inline uint32_t beam__gpa_index_of(const gpa_slab *s, const void *p) {
    uint32_t off = (uint32_t)((uintptr_t)p - (uintptr_t)s->base);
    return (uint32_t)(((uint64_t)off * s->recip) >> 32);
}

/* Index of block p in slab s, or -1 when p is not at a block boundary of a
 * block handed out at some point (past bump, the free-tag word is
 * garbage). */
static BEAM__ALWAYS_INLINE long beam__gpa_block_index(const gpa_slab *s,
                                                      const void *p) {
    uint32_t off = (uint32_t)((uintptr_t)p - (uintptr_t)s->base);
    uint32_t idx = (uint32_t)(((uint64_t)off * s->recip) >> 32);
    if (idx * s->size != off ||
        (const char *)p >= beam__atomic_load_plain_relaxed(&s->bump))
        return -1;
    return (long)idx;
}

/* Is size a divisor of off, for off below 2^16 (any offset in a slab),
 * by the inverse recip = ceil(2^32 / size): for such offsets, and sizes
 * up to 2^16, the low 32 bits of off * recip are below recip exactly when
 * size divides off (Lemire, Kaser and Kurz, "Faster remainder by direct
 * computation", 2019; test_gpa_classes checks every class size against
 * every offset). */
static BEAM__ALWAYS_INLINE bool beam__gpa_divides(uint32_t recip,
                                                  uint32_t off) {
    return off * recip < recip;
}

/* beam__gpa_block_index(s, p) >= 0, for the inline free: a multiply and a
 * compare, no index and no multiply back, so one register fewer, which
 * spared the free's helper a saved register. p is in s's 64 KiB (found
 * by its map entry, or a sub-slab by its page table) and not below its
 * base: the offset fits 16 bits. (But for a stale free racing the reset
 * of its entry, a misuse: base is then NULL, and so is bump, which refuses
 * it. No assert: a debug build would abort where it must report; found
 * in review.) */
static BEAM__ALWAYS_INLINE bool
beam__gpa_at_block_off(const gpa_slab *s, const void *p, uint32_t off) {
    return beam__gpa_divides(s->recip, off) &&
           (const char *)p < beam__atomic_load_plain_relaxed(&s->bump);
}

static BEAM__ALWAYS_INLINE bool beam__gpa_at_block(const gpa_slab *s,
                                                   const void *p) {
    return beam__gpa_at_block_off(
        s, p, (uint32_t)((uintptr_t)p - (uintptr_t)s->base));
}

/* The same for s, p's map entry (a whole slab, 64 KiB aligned): the
 * offset is p's low 16 bits, without a load of base. (A map entry that is
 * no whole slab, or one being reset, has no block below its bump: p
 * fails all the same.) */
static BEAM__ALWAYS_INLINE bool beam__gpa_at_block_in_entry(const gpa_slab *s,
                                                            const void *p) {
    return beam__gpa_at_block_off(s, p, (uint16_t)(uintptr_t)p);
}

/* What a refused remap or realloc says (gpa.c, gpa_msize.c): nothing was
 * read from the block. */
#define GPA_SAID_MOVE_NOT_LIVE                                                 \
    "remap or realloc of a pointer that is not a live block (freed, "          \
    "foreign, or inside a block): nothing copied or freed"
#define GPA_SAID_MOVE_WRONG_LENGTH                                             \
    "remap or realloc with a wrong length or alignment: nothing copied or "    \
    "freed"

/* Block idx of s (an index beam__gpa_block_index gave, maybe -1) is a
 * block at all: s serves blocks (not the pool, not a chunk's map entry). */
static inline bool gpa_small_at_block(const gpa_slab *s, long idx) {
    return idx >= 0 && gpa_where(s) != WHERE_POOL &&
           gpa_where(s) != WHERE_MIXED;
}

/* ... and it is free: its recorded length is 0 (tracked), or, with
 * read_tag, its second word is the free tag. The tag is in the block's
 * memory: only a caller that owns the block (a free, a resize, a realloc)
 * may read it; a size query on a block another thread writes may not (a
 * data race), and goes without. */
static inline bool gpa_small_freed(const gpa_state *st, const gpa_slab *s,
                                   const void *p, long idx, bool read_tag) {
    return (s->info != NULL && s->info[idx].len == 0) ||
           (read_tag && gpa_tag_at(p) == beam__gpa_tag(st, p));
}

/* A link p read from a freed block of the tracked slab s (its first word,
 * which a write after free may have changed) names a freed block of s:
 * below bump at a block boundary, recorded free, tagged free. Only then
 * may it be followed (a free list's pop, the stash flush, the walk to a
 * remote list's tail). */
static inline bool gpa_link_at_freed(const gpa_slab *s, const void *p) {
    if ((const char *)p < s->base ||
        (const char *)p >= beam__atomic_load_plain_relaxed(&s->bump))
        return false;
    long idx = beam__gpa_block_index(s, p);
    return idx >= 0 && s->info[idx].len == 0;
}

static inline bool gpa_link_ok(const gpa_state *st, const gpa_slab *s,
                               const void *p) {
    return gpa_link_at_freed(s, p) && gpa_tag_at(p) == beam__gpa_tag(st, p);
}

/* A tracked instance's link that may lead out of its slab (a stash's, or
 * one looked at on its own): a freed small block of st in any of its
 * tracked slabs (a write after free into the first word of a stashed block
 * would send the walk, and the push, anywhere: found in review). tag: its
 * target's tag is checked too, as before a link is followed; without,
 * only where it points (the end-of-call check visits each block on its
 * own: a write into one block's tag is not blamed on the block linking to
 * it; found in review). */
static inline bool gpa_any_link_ok(const gpa_state *st, const void *p,
                                   bool tag) {
    const gpa_slab *s = beam__gpa_slab_of(p);
    return beam__gpa_owner(s) == st && s->info != NULL &&
           gpa_where(s) != WHERE_POOL && gpa_where(s) != WHERE_MIXED &&
           (tag ? gpa_link_ok(st, s, p) : gpa_link_at_freed(s, p));
}

/* Safe mode: byte `byte` of the freed block b of s (or of a cached large
 * block p of len bytes) was written while free, found when the allocation
 * at ret was to reuse it; alloc_site: where the block was allocated. */
BEAM__HIDDEN BEAM__NOINLINE void
beam__gpa_reuse_dirty(gpa_state *st, gpa_slab *s, void *b, size_t byte,
                      uintptr_t ret, uintptr_t alloc_site);
BEAM__HIDDEN BEAM__NOINLINE void
beam__gpa_large_reuse_dirty(gpa_state *st, const void *p, size_t len,
                            size_t byte, uintptr_t ret, uintptr_t alloc_site);

/* A free-list link found broken at the freed block b of s (gpa_link_ok):
 * reported as a write after free, where names where it was found. */
BEAM__HIDDEN BEAM__NOINLINE void beam__gpa_link_broken(gpa_state *st,
                                                       gpa_slab *s, void *b,
                                                       const char *where,
                                                       uintptr_t ret);

/* A live small block: what resize, realloc and size queries must see
 * before they believe a pointer (the free tells the two cases apart, for
 * its reports). */
static inline bool gpa_small_live(const gpa_state *st, const gpa_slab *s,
                                  const void *p, long idx, bool read_tag) {
    return gpa_small_at_block(s, idx) &&
           !gpa_small_freed(st, s, p, idx, read_tag);
}

/* ---- one list helper for slab lists (pool, partial) ------------------- */

static inline void gpa_list_push(gpa_slab **head, gpa_slab *s) {
    GPA_ASSERT(s->next == NULL && s->prev == NULL && *head != s);
    s->next = *head;
    if (s->next != NULL)
        s->next->prev = s;
    *head = s;
}

static inline void gpa_list_unlink(gpa_slab **head, gpa_slab *s) {
    GPA_ASSERT(s->prev != NULL ? s->prev->next == s : *head == s);
    GPA_ASSERT(s->next == NULL || s->next->prev == s);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
}

/* A heap's kept list of s's class (see "Kept slabs"): the lists above,
 * with a tail to take the oldest from. Owner (or a collector holding h). */
static inline void gpa_kept_add(gpa_heap *h, gpa_slab *s) {
    GPA_ASSERT(s->cls < GPA_CLASSES);
    if (h->kept[s->cls].tail == NULL)
        h->kept[s->cls].tail = s;
    gpa_list_push(&h->kept[s->cls].head, s);
    h->kept[s->cls].n++;
    h->kept_n++;
}

static inline void gpa_kept_unlink(gpa_heap *h, gpa_slab *s) {
    GPA_ASSERT(gpa_where(s) == WHERE_KEPT &&
               beam__atomic_load_relaxed(&s->heap) == gpa_kept_by(h));
    GPA_ASSERT(s->next != NULL || h->kept[s->cls].tail == s);
    if (h->kept[s->cls].tail == s)
        h->kept[s->cls].tail = s->prev;
    gpa_list_unlink(&h->kept[s->cls].head, s);
    h->kept[s->cls].n--;
    h->kept_n--;
}

#endif
