/*
 * The general purpose allocator's types, in one place.
 *
 * Design (see gpa.c for the hot paths):
 *
 *  - A *slab* is 64 KiB, aligned to 64 KiB, holding blocks of one size class.
 *    Its metadata (struct gpa_slab) lives outside it, so blocks have no
 *    header. Slabs are carved out of *segments*: one request of
 *    (n + 1) * 64 KiB to the backing allocator at modest alignment, aligned
 *    inside; the unaligned slack at one end holds the segment's metadata.
 *  - Every thread has its own *heap* per instance. A heap owns slabs; only
 *    its thread touches their free list, bump pointer and counters. Other
 *    threads free into a slab's atomic thread_free stack (lock-free).
 *  - A global radix map from address >> 16 to slab tells, for any pointer,
 *    whether it is one of ours and which slab it is in, without reading the
 *    pointer's memory: foreign frees are reported, never followed.
 *  - A free block carries a tag in its second word: cookie ^ its address.
 *    That catches double frees and lets leak detection tell live blocks
 *    from free ones without any per-block bit. Allocation clears the tag.
 *    (A live-bit bitmap per slab was tried instead: it spares the free path
 *    one load of the block, but the extra read-modify-write on both paths
 *    measured ~4 ns slower per alloc/free pair on churn.)
 *  - Blocks above BEAM_GPA_SMALL_MAX (or with alignment no class can give)
 *    go to the backing allocator and are recorded in a hash table.
 *  - The instance lock guards segments, the slab pool, abandoned slabs,
 *    heaps and the large table; the fast paths never take it.
 *
 * Invariants:
 *  - slab->base is 64 KiB aligned; blocks are at base + k * size for
 *    k < (bump - base) / size; size is a multiple of 16.
 *  - A slab with a heap is in exactly one of: that heap's cur[cls], its
 *    avail[cls] list, its notify stack, or nowhere (full: thread_free has
 *    FULL_BIT set). A slab without a heap is in the pool or abandoned[cls].
 *  - used counts blocks handed out minus frees the owner has seen
 *    (thread_free blocks are still counted until collected).
 *  - FULL_BIT is set only by the owner (exhausted slab with empty
 *    thread_free) and cleared by whoever next pushes or un-fulls it; the
 *    one who clears it by pushing must requeue the slab (notify).
 */
#ifndef BEAM_ALLOC_GPA_INTERNAL_H
#define BEAM_ALLOC_GPA_INTERNAL_H

#include "internal.h"

#include <pthread.h>
#include <stdatomic.h>

#define GPA_SLAB_SHIFT 16
#define GPA_SLAB_SIZE ((size_t)1 << GPA_SLAB_SHIFT)
#define GPA_CLASSES 32
#define GPA_MIN_BLOCK 16
#define GPA_FULL_BIT ((uintptr_t)1)
#define GPA_TLS_SLOTS 8
#define GPA_MAX_SEGMENT_SLABS 63
#define GPA_TOMBSTONE ((void *)1) /* a deleted gpa_large slot */

enum gpa_where {
    WHERE_POOL,      /* no heap, free for any class */
    WHERE_CUR,       /* a heap's current slab for its class */
    WHERE_AVAIL,     /* in a heap's avail list */
    WHERE_NOTIFY,    /* on a heap's notify stack */
    WHERE_FULL,      /* owned, exhausted, FULL_BIT set */
    WHERE_ABANDONED, /* owner thread gone; in abandoned[cls] */
};

/* Per-block record in BEAM_GPA_TRACK_SITES mode (len == 0: free). */
typedef struct gpa_block_info {
    uint32_t len;
    uint32_t alignment;
    uintptr_t site;
} gpa_block_info;

struct gpa_heap;
struct gpa_segment;

typedef struct gpa_slab {
    /* Owner-only, hot. (Aligned: slabs are packed in the address map.) */
    _Alignas(64) void **free; /* free list, linked through word 0 */
    char *bump;               /* next never-used block */
    char *end;                /* bump limit: base + nblocks * size */
    uint32_t used;            /* live blocks as the owner knows them */
    uint32_t size;            /* block size of the class */
    uint32_t recip; /* ceil(2^32 / size): offset / size without a divide */
    uint16_t cls;
    _Atomic uint8_t where; /* enum gpa_where: see the invariants */
    /* Shared. */
    _Atomic uintptr_t thread_free;   /* remote frees | FULL_BIT */
    _Atomic(struct gpa_heap *) heap; /* owner; NULL in pool/abandoned */
    struct gpa_slab *next, *prev;    /* avail, pool or abandoned list */
    struct gpa_slab *notify_next;
    char *base;
    struct beam__gpa_state *st;
    struct gpa_segment *seg;
    gpa_block_info *info; /* TRACK_SITES only */
} gpa_slab;

typedef struct gpa_segment {
    struct gpa_segment *next;
    void *raw; /* what the backing returned */
    size_t raw_len;
    char *base; /* first slab, 64 KiB aligned */
    unsigned nslabs;
    unsigned nfree; /* slabs in the pool */
} gpa_segment;

typedef struct gpa_large {
    void *ptr;  /* NULL: empty; GPA_TOMBSTONE: deleted */
    size_t len; /* as the user last allocated or resized it */
    size_t alignment;
    uintptr_t site;
    size_t backing_len; /* as the backing allocator holds it (>= len) */
} gpa_large;

/* Freed large blocks a heap keeps for reuse (owner only): a hit skips the
 * backing allocator, which inside a BEAM is enif_alloc's few hundred ns. */
#define GPA_LARGE_CACHE 16
#define GPA_LARGE_CACHE_BYTES ((size_t)1 << 20)

typedef struct gpa_heap {
    gpa_slab *cur[GPA_CLASSES];       /* never NULL: empty sentinel at first */
    gpa_slab *avail[GPA_CLASSES];     /* doubly linked, head */
    _Atomic(gpa_slab *) notify;       /* slabs un-fulled by remote frees */
    beam__counters stats;             /* this heap's allocations and frees */
    gpa_large cache[GPA_LARGE_CACHE]; /* freed large blocks, not in table */
    unsigned cache_n;
    size_t cache_bytes;
    unsigned refills; /* alloc_slow calls, to pace trimming */
    struct beam__gpa_state *st;
    struct gpa_heap *next; /* in st->heaps */
} gpa_heap;

struct beam__gpa_state {
    beam_allocator_t backing;
    unsigned flags;
    uint64_t id;      /* unique per state: TLS slots check it */
    uintptr_t cookie; /* free-block tag key */
    bool track;       /* BEAM_GPA_TRACK_SITES or BEAM_GPA_SAFE */
    bool safe;        /* BEAM_GPA_SAFE */
    pthread_mutex_t lock;
    gpa_segment *segments;
    unsigned next_segment_slabs;
    gpa_slab *pool;
    size_t pool_count;
    gpa_slab *abandoned[GPA_CLASSES];
    gpa_heap *heaps;
    gpa_large *large;
    size_t large_cap, large_count, large_used; /* used: live + tombstones */
    size_t backing_bytes;
    _Atomic size_t misuse;
    _Atomic size_t meta_bytes; /* heaps, tables: metadata from the backing */
    /* Stats beyond the heaps': retired heaps' and large blocks' counters
     * (lock held), and what other threads' frees and in-place resizes
     * changed (atomic, any thread). */
    beam__counters retired, large_counts;
    _Atomic uint64_t remote_frees;
    _Atomic int64_t remote_bytes;
    beam__peak peak;
    struct beam__gpa_state *reg_next, *reg_prev; /* registry of live states */
};
typedef struct beam__gpa_state gpa_state;

/* Size classes (gpa.c). */
BEAM__HIDDEN extern const uint32_t beam__gpa_class_size[GPA_CLASSES];
BEAM__HIDDEN extern gpa_slab beam__gpa_empty_slab;

/* The address map: one gpa_slab per 64 KiB of a 48-bit address space, in
 * leaves of 2^16 slabs (4 GiB of addresses, 8 MiB of zero pages until
 * touched) under a root of 2^16 leaf pointers. So pointer -> slab metadata
 * is two loads and never reads the pointer's memory. A slab whose st is
 * NULL is not part of any instance. Leaves are made on demand and never
 * freed (gpa_segment.c). */
#define GPA_MAP_BITS 16
#define GPA_MAP_SIZE ((size_t)1 << GPA_MAP_BITS)
BEAM__HIDDEN extern _Atomic(gpa_slab *) beam__gpa_map_root[GPA_MAP_SIZE];

/* The map entry of p, owned or not; NULL when no leaf covers p. */
static inline gpa_slab *beam__gpa_map_slot(const void *p) {
    uintptr_t g = (uintptr_t)p >> GPA_SLAB_SHIFT;
    if (BEAM__UNLIKELY(g >> (2 * GPA_MAP_BITS)))
        return NULL;
    gpa_slab *leaf = atomic_load_explicit(
        &beam__gpa_map_root[g >> GPA_MAP_BITS], memory_order_acquire);
    if (BEAM__UNLIKELY(leaf == NULL))
        return NULL;
    return &leaf[g & (GPA_MAP_SIZE - 1)];
}

/* The instance owning the slab p is in (NULL: none). Lock-free. */
static inline gpa_state *beam__gpa_owner(const gpa_slab *s) {
    return s == NULL ? NULL : __atomic_load_n(&s->st, __ATOMIC_ACQUIRE);
}

/* The slab holding p when it belongs to st, else NULL. */
static inline gpa_slab *beam__gpa_slab_of(const void *p, const gpa_state *st) {
    gpa_slab *s = beam__gpa_map_slot(p);
    return s != NULL && beam__gpa_owner(s) == st ? s : NULL;
}

static inline gpa_slab *beam__gpa_seg_slab(const gpa_segment *seg, unsigned i) {
    return beam__gpa_map_slot(seg->base + (size_t)i * GPA_SLAB_SIZE);
}

/* Metadata from the backing allocator, counted in meta_bytes. Any thread,
 * with or without the lock. */
static inline void *beam__gpa_meta_alloc(gpa_state *st, size_t len,
                                         size_t alignment) {
    void *p = st->backing.vtable->alloc(st->backing.ctx, len, alignment, 0);
    if (p != NULL)
        atomic_fetch_add_explicit(&st->meta_bytes, len, memory_order_relaxed);
    return p;
}

static inline void beam__gpa_meta_free(gpa_state *st, void *p, size_t len,
                                       size_t alignment) {
    st->backing.vtable->free(st->backing.ctx, p, len, alignment, 0);
    atomic_fetch_sub_explicit(&st->meta_bytes, len, memory_order_relaxed);
}

/* Segments and slabs (gpa_segment.c); instance lock held. */
BEAM__HIDDEN gpa_slab *beam__gpa_slab_take(gpa_state *st, unsigned cls);
BEAM__HIDDEN void beam__gpa_slab_release(gpa_state *st, gpa_slab *s);
BEAM__HIDDEN void beam__gpa_abandoned_unlink(gpa_state *st, gpa_slab *s);
/* Give every segment without a live block back to the backing. */
BEAM__HIDDEN void beam__gpa_segments_trim(gpa_state *st);
BEAM__HIDDEN void beam__gpa_segments_free_all(gpa_state *st);
/* Move remote frees onto the owner's list (owner only). */
BEAM__HIDDEN void beam__gpa_collect(gpa_slab *s);

/* Give a heap's cached large blocks back to the backing (lock held). */
BEAM__HIDDEN void beam__gpa_cache_flush(gpa_state *st, gpa_heap *h);

/* Threads and heaps (gpa_thread.c). */
BEAM__HIDDEN gpa_heap *beam__gpa_heap_slow(beam_gpa_t *gpa);
BEAM__HIDDEN gpa_state *beam__gpa_state_slow(beam_gpa_t *gpa);
BEAM__HIDDEN void beam__gpa_registry_remove(gpa_state *st);
BEAM__HIDDEN void beam__gpa_heaps_free_all(gpa_state *st);

/* Thread-local slots: which heap this thread uses for which instance. */
typedef struct gpa_tls_slot {
    gpa_state *st;
    uint64_t id;
    gpa_heap *heap;
} gpa_tls_slot;
BEAM__HIDDEN extern BEAM_THREAD_LOCAL gpa_tls_slot beam__gpa_tls[GPA_TLS_SLOTS];

/* Large blocks (gpa_large.c), instance lock held. */
BEAM__HIDDEN gpa_large *beam__gpa_large_find(gpa_state *st, const void *p);
BEAM__HIDDEN bool beam__gpa_large_insert(gpa_state *st, const gpa_large *e);
/* Make sure the next insert cannot need to grow the table. */
BEAM__HIDDEN bool beam__gpa_large_reserve(gpa_state *st);
BEAM__HIDDEN void beam__gpa_large_remove(gpa_state *st, gpa_large *e);

/* Leaks and misuse (gpa_report.c). */
BEAM__HIDDEN void beam__gpa_misuse(gpa_state *st, const char *what,
                                   const void *p, size_t len, size_t alignment,
                                   uintptr_t ret);
/* The same, naming where the block was allocated (0: unknown). */
BEAM__HIDDEN void beam__gpa_misuse_at(gpa_state *st, const char *what,
                                      const void *p, size_t len,
                                      size_t alignment, uintptr_t ret,
                                      uintptr_t alloc_site);
/* A free through an instance that has no state (never used, or deinit). */
BEAM__HIDDEN void beam__gpa_misuse_stateless(unsigned flags, const void *p,
                                             size_t len, size_t alignment,
                                             uintptr_t ret);
/* Walk live blocks (lock held); report up to `report` of them. */
BEAM__HIDDEN beam_gpa_usage beam__gpa_scan(gpa_state *st, size_t report);

static inline gpa_state *beam__gpa_state_of(beam_gpa_t *gpa) {
    return __atomic_load_n(&gpa->beam__state, __ATOMIC_ACQUIRE);
}

static inline uintptr_t beam__gpa_tag(const gpa_state *st, const void *b) {
    return st->cookie ^ (uintptr_t)b;
}

/* Index of the block at p (p known to be a block of s). */
static inline uint32_t beam__gpa_index_of(const gpa_slab *s, const void *p) {
    uint32_t off = (uint32_t)((uintptr_t)p - (uintptr_t)s->base);
    return (uint32_t)(((uint64_t)off * s->recip) >> 32);
}

/* Index of block p in slab s, or -1 when p is not at a block boundary. */
static inline long beam__gpa_block_index(const gpa_slab *s, const void *p) {
    uint32_t off = (uint32_t)((uintptr_t)p - (uintptr_t)s->base);
    uint32_t idx = (uint32_t)(((uint64_t)off * s->recip) >> 32);
    /* Below bump: a block handed out at some point, never one the slab has
     * not reached yet (its free-tag word would be garbage). */
    if (idx * s->size != off ||
        (const char *)p >= __atomic_load_n(&s->bump, __ATOMIC_RELAXED))
        return -1;
    return (long)idx;
}

#endif
