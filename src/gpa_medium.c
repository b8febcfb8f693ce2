/*
 * Medium blocks of the general purpose allocator: above the slab classes
 * (BEAM_GPA_SMALL_MAX) up to a slab (64 KiB), for untracked instances.
 *
 * A class per size would hold a slab per class in use: a dozen medium
 * sizes, a dozen slabs, mostly empty (the memory cost that kept such
 * classes out before). Here a *medium slab* is a pool slab cut into 16
 * pages of 4 KiB, and a block is a run of pages, of whatever length it
 * needs: blocks of all medium sizes share slabs. Before, such a block went
 * through the hash table of gpa_large.c to the backing allocator: a few
 * hundred ns of enif_alloc inside a BEAM on every cache miss.
 *
 * What a slab holds is 16-bit masks in its metadata (pages_used,
 * pages_start, and pages_cached for the cache below: gpa_internal.h), so
 * a free is checked without reading the block: a page that starts no
 * block is a double free or a pointer inside a block, and the run's length
 * in pages must be the one the length asks for (the medium analogue of the
 * class check). Slabs with free pages are
 * kept by their longest free run (st->medium[k]), so an allocation of n
 * pages takes the first slab of the first non-empty list from n up.
 *
 * A freed block is first offered to a cache of blocks kept whole for the
 * next allocation of as many pages (below): under churn, that skips the
 * search, the lists and the formatting of slabs that go back and forth to
 * the pool, which were most of a medium call's cost.
 *
 * Everything here is under the instance lock: medium blocks are rarer and
 * larger than small ones, and the lock is a leaf (rules in
 * gpa_internal.h). A slab whose last block goes back to its masks is
 * released to the pool at once, where small classes and other medium
 * blocks can take it (a block in the cache keeps its slab).
 */
#include "gpa_fast.h"

/* Pages a length takes. */
static size_t pages_for(size_t len) {
    /* (Any length: a free's may be absurd, and must not pass for the pages
     * of a block by wrapping.) */
    return (len >> GPA_PAGE_SHIFT) + ((len & (GPA_PAGE_SIZE - 1)) != 0);
}

static uint32_t free_pages(const gpa_slab *s) {
    return ~(uint32_t)s->pages_used & ((1u << GPA_PAGES) - 1);
}

/* The longest run of set bits in each byte value (a constant: no
 * constructor has to run before the first medium block). */
static const uint8_t byte_run[256] = {
    0, 1, 1, 2, 1, 1, 2, 3, 1, 1, 1, 2, 2, 2, 3, 4, 1, 1, 1, 2, 1, 1, 2, 3,
    2, 2, 2, 2, 3, 3, 4, 5, 1, 1, 1, 2, 1, 1, 2, 3, 1, 1, 1, 2, 2, 2, 3, 4,
    2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 5, 6, 1, 1, 1, 2, 1, 1, 2, 3,
    1, 1, 1, 2, 2, 2, 3, 4, 1, 1, 1, 2, 1, 1, 2, 3, 2, 2, 2, 2, 3, 3, 4, 5,
    2, 2, 2, 2, 2, 2, 2, 3, 2, 2, 2, 2, 2, 2, 3, 4, 3, 3, 3, 3, 3, 3, 3, 3,
    4, 4, 4, 4, 5, 5, 6, 7, 1, 1, 1, 2, 1, 1, 2, 3, 1, 1, 1, 2, 2, 2, 3, 4,
    1, 1, 1, 2, 1, 1, 2, 3, 2, 2, 2, 2, 3, 3, 4, 5, 1, 1, 1, 2, 1, 1, 2, 3,
    1, 1, 1, 2, 2, 2, 3, 4, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 5, 6,
    2, 2, 2, 2, 2, 2, 2, 3, 2, 2, 2, 2, 2, 2, 3, 4, 2, 2, 2, 2, 2, 2, 2, 3,
    2, 2, 2, 2, 3, 3, 4, 5, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4,
    4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 7, 8};

/* The longest run of set bits in the 16 bits of m: the longest in either
 * byte, or the run that crosses between them (the low byte's top ones and
 * the high byte's bottom ones). No loop: the length is random from call
 * to call, and a loop over it mispredicted its exit every time. */
static unsigned longest_run(uint32_t m) {
    uint32_t lo = m & 0xff, hi = (m >> 8) & 0xff;
    unsigned inner = byte_run[lo] > byte_run[hi] ? byte_run[lo] : byte_run[hi];
    unsigned cross = (unsigned)__builtin_clz(((~lo & 0xff) << 24) | 0x800000u) +
                     (unsigned)__builtin_ctz(~hi | 0x100u);
    return inner > cross ? inner : cross;
}

#ifdef BEAM_ALLOC_DEBUG
/* The same bit by bit: debug builds check the table's answer against it. */
static unsigned longest_run_slow(uint32_t m) {
    unsigned n = 0;
    for (; m != 0; n++)
        m &= m << 1;
    return n;
}
#endif

/* The first page of the first run of n free pages of s (there is one).
 * Bit p of m stays set while pages p .. p + have - 1 are all free; each
 * step adds up to have, so four steps reach any n up to 16, whatever n is
 * (no loop whose count varies, and so no mispredicted exit). */
static unsigned find_run(const gpa_slab *s, unsigned n) {
    GPA_ASSERT(n >= 1 && n <= GPA_PAGES);
    uint32_t m = free_pages(s);
    unsigned have = 1;
    for (unsigned i = 0; i < 4; i++) {
        unsigned step = n - have < have ? n - have : have;
        m &= m >> step;
        have += step;
    }
    GPA_ASSERT(m != 0);
    return (unsigned)__builtin_ctz(m);
}

/* Pages of the block that starts at page p: up to the next start or the
 * next free page (bits 16 and up of ~pages_used end every block). */
static unsigned block_pages(const gpa_slab *s, unsigned p) {
    uint32_t stop = ((uint32_t)s->pages_start | ~(uint32_t)s->pages_used) &
                    ~((2u << p) - 1);
    return (unsigned)__builtin_ctz(stop) - p;
}

/* Pages p .. p + n - 1 as a mask. */
static uint16_t run_mask(unsigned p, unsigned n) {
    return (uint16_t)(((1u << n) - 1) << p);
}

/* Lock held: take s out of medium[k], whose bit in medium_lists says
 * whether any slab is left in it. */
static void bin_unlink(gpa_state *st, gpa_slab *s, unsigned k) {
    GPA_ASSERT(st->medium_lists & (1u << k));
    gpa_list_unlink(&st->medium[k], s);
    if (st->medium[k] == NULL)
        st->medium_lists &= ~(1u << k);
}

/* Lock held: the pages of s changed, and its longest free run was old (0:
 * it was in no list). s is kept in the list of its longest free run (none
 * when full), and the run in s->requeue, which medium slabs do not
 * otherwise use. It moves only when that run changed: a change that
 * leaves it touches no neighbour's metadata. */
static void bin_move(gpa_state *st, gpa_slab *s, unsigned old) {
    GPA_ASSERT(s->requeue == old);
    unsigned k = longest_run(free_pages(s));
    GPA_ASSERT(k == longest_run_slow(free_pages(s)));
    if (k == old)
        return;
    if (old != 0)
        bin_unlink(st, s, old);
    s->requeue = (uint16_t)k;
    if (k != 0) {
        gpa_list_push(&st->medium[k], s);
        st->medium_lists |= 1u << k;
    }
}

/* A pool slab becomes a medium slab: no classes (fast_span 0: no length
 * passes the inline free's class test, which then sends the free to
 * beam__gpa_medium_free by the slab's where). size stays non-zero for a
 * class path that reads a stale state and divides by it. */
static void medium_format(gpa_slab *s) {
    GPA_ASSERT(gpa_where(s) == WHERE_POOL && s->used == 0);
    s->info = NULL;
    s->size = (uint32_t)GPA_PAGE_SIZE;
    s->cls = GPA_MEDIUM_CLS;
    s->free = NULL;
    /* No bump and no end: beam__gpa_block_index then refuses every
     * pointer, so a class path that read a stale state cannot take one. */
    s->end = s->base;
    beam__atomic_store_plain_relaxed(&s->bump, s->base);
    s->requeue = 0;
    s->prev_size = 0;
    s->fast_span = 0;
    s->pages_used = s->pages_start = 0;
    s->pages_cached = 0;
    beam__atomic_store_relaxed(&s->thread_free, 0);
    gpa_set_where(s, WHERE_MEDIUM);
}

/* Lock held: the run of pages pages at page at of s is free again in its
 * masks; s goes back to the pool when that was its last block. (The caller
 * counts the free: a cached block was counted when it was freed.) */
static void run_free(gpa_state *st, gpa_slab *s, unsigned at, unsigned pages,
                     gpa_defer **defer) {
    GPA_ASSERT(!(s->pages_cached & (1u << at)));
    unsigned old = s->requeue;
    s->pages_used &= (uint16_t)~run_mask(at, pages);
    s->pages_start &= (uint16_t) ~(1u << at);
    s->used--;
    if (s->used == 0) {
        GPA_ASSERT(s->pages_used == 0 && s->pages_start == 0 &&
                   s->pages_cached == 0);
        if (old != 0)
            bin_unlink(st, s, old);
        beam__gpa_slab_release(st, s, defer);
    } else {
        bin_move(st, s, old);
    }
}

/* ---- the cache of freed blocks ---------------------------------------------
 * A freed block kept whole, as it is, for the next allocation of as many
 * pages: at most GPA_MEDIUM_CACHE blocks of each length. One is kept only
 * if the cache then holds no more than 1/GPA_MEDIUM_CACHE_SHARE of the live
 * medium bytes, and once these fall until it holds more than twice that,
 * it gives blocks back down to its share (cache_check): what it holds stays
 * in proportion to what is in use, and is nothing when nothing is (the
 * last free empties it). A cached block keeps its pages in its slab's
 * masks and its place in used (so its slab stays out of the pool);
 * pages_cached marks it freed for every check (a second free of it is a
 * double free, its size is no block's). beam_gpa_collect empties the
 * cache, and an allocation that finds no run and no slab empties it and
 * tries again. */

static unsigned page_of(const gpa_slab *s, const void *p) {
    return (unsigned)((size_t)((const char *)p - s->base) >> GPA_PAGE_SHIFT);
}

/* Lock held: a cached block of n pages, out of the cache, or NULL; *sp,
 * *atp: its slab and first page. */
static BEAM__ALWAYS_INLINE char *cache_take(gpa_state *st, unsigned n,
                                            gpa_slab **sp, unsigned *atp) {
    if (st->medium_cached[n] == 0)
        return NULL;
    unsigned i = --st->medium_cached[n];
    gpa_slab *s = st->medium_cache[n][i];
    unsigned at = st->medium_cache_at[n][i];
    GPA_ASSERT(gpa_where(s) == WHERE_MEDIUM && (s->pages_cached & (1u << at)) &&
               (s->pages_start & (1u << at)) && block_pages(s, at) == n);
    s->pages_cached &= (uint16_t) ~(1u << at);
    st->medium_cache_bytes -= (size_t)n << GPA_PAGE_SHIFT;
    *sp = s;
    *atp = at;
    return s->base + ((size_t)at << GPA_PAGE_SHIFT);
}

/* Lock held: keep the freed block of pages pages at page at of s in the
 * cache; false when there is no room for it. */
static BEAM__ALWAYS_INLINE bool cache_put(gpa_state *st, gpa_slab *s,
                                          unsigned at, unsigned pages) {
    size_t bytes = (size_t)pages << GPA_PAGE_SHIFT;
    unsigned i = st->medium_cached[pages];
    if (i == GPA_MEDIUM_CACHE || st->medium_cache_bytes + bytes >
                                     st->medium_live / GPA_MEDIUM_CACHE_SHARE)
        return false;
    st->medium_cache[pages][i] = s;
    st->medium_cache_at[pages][i] = (uint8_t)at;
    st->medium_cached[pages] = (uint8_t)(i + 1);
    s->pages_cached |= (uint16_t)(1u << at);
    st->medium_cache_bytes += bytes;
    return true;
}

/* Lock held: cached blocks go back to their slabs, the longest first,
 * until the cache holds no more than budget bytes. */
static void cache_trim(gpa_state *st, size_t budget, gpa_defer **defer) {
    for (unsigned n = GPA_PAGES; n > 0 && st->medium_cache_bytes > budget;
         n--) {
        gpa_slab *s;
        unsigned at;
        while (st->medium_cache_bytes > budget &&
               cache_take(st, n, &s, &at) != NULL)
            run_free(st, s, at, n, defer);
    }
    GPA_ASSERT(st->medium_cache_bytes <= budget);
}

/* Lock held: the live bytes fell. Past twice its share of them, the cache
 * goes back to its share. (The margin keeps a cache at its share from
 * being trimmed at every fall of the live bytes under churn, where they go
 * up and down by a block a call; trimming at the share itself measured no
 * slower, so the margin is a choice, not a measured need.) */
static void cache_check(gpa_state *st, gpa_defer **defer) {
    size_t share = st->medium_live / GPA_MEDIUM_CACHE_SHARE;
    if (st->medium_cache_bytes > 2 * share)
        cache_trim(st, share, defer);
}

void beam__gpa_medium_flush(gpa_state *st, gpa_defer **defer) {
    GPA_ASSERT_LOCKED(st);
    cache_trim(st, 0, defer);
}

/* Lock held: a medium slab with a run of n free pages (left in its list:
 * bin_move moves it once its pages have changed, if it must); NULL when
 * out of memory. */
static gpa_slab *slab_with_run(gpa_state *st, unsigned n) {
    uint32_t lists = st->medium_lists >> n << n;
    if (lists != 0) {
        unsigned k = (unsigned)__builtin_ctz(lists);
        gpa_slab *s = st->medium[k];
        GPA_ASSERT(s != NULL && s->requeue == k);
        return s;
    }
    /* (The pool may drop the lock to grow; a slab freed into the lists
     * meanwhile is found by the next allocation.) */
    gpa_slab *s = beam__gpa_pool_take(st);
    if (s != NULL)
        medium_format(s);
    return s;
}

/* Lock held: a new block of n pages in a slab's free pages (the cache had
 * none); NULL when out of memory. */
static char *run_take(gpa_state *st, unsigned n, gpa_defer **defer) {
    gpa_slab *s = slab_with_run(st, n);
    if (s == NULL && st->medium_cache_bytes != 0) {
        /* Out of memory: the cached blocks may free a run, or a slab. */
        cache_trim(st, 0, defer);
        s = slab_with_run(st, n);
    }
    if (s == NULL)
        return NULL;
    unsigned at = find_run(s, n);
    GPA_ASSERT(at + n <= GPA_PAGES &&
               (free_pages(s) & run_mask(at, n)) == run_mask(at, n));
    s->pages_used |= run_mask(at, n);
    s->pages_start |= (uint16_t)(1u << at);
    s->used++;
    bin_move(st, s, s->requeue);
    return s->base + ((size_t)at << GPA_PAGE_SHIFT);
}

void *beam__gpa_medium_alloc(gpa_state *st, size_t len) {
    GPA_ASSERT(len > BEAM_GPA_SMALL_MAX && len <= GPA_MEDIUM_MAX && !st->track);
    unsigned n = (unsigned)pages_for(len);
    gpa_defer *defer = NULL;
    gpa_lock(st);
    gpa_slab *s;
    unsigned at;
    char *p = cache_take(st, n, &s, &at);
    if (p == NULL)
        p = run_take(st, n, &defer);
    if (p != NULL) {
        st->medium_live += (size_t)n << GPA_PAGE_SHIFT;
        beam__count_alloc_locked(&st->medium_counts, &st->peak, len);
    } else {
        beam__atomic_add_relaxed(&st->medium_counts.failed, 1);
    }
    gpa_unlock(st);
    if (defer != NULL)
        beam__gpa_defer_run(st, defer);
    if (p != NULL)
        gpa_untag(p);
    return p;
}

void *beam__gpa_medium_alloc_entry(void *ctx, const beam_allocator_vtable *vt,
                                   size_t len, size_t alignment,
                                   uintptr_t ret) {
    GPA_ASSERT(vt == &beam__gpa_vtable &&
               beam__gpa_is_medium_call(len, alignment));
    (void)vt;
    beam_gpa_t *gpa = ctx;
    gpa_state *st = beam__gpa_state_of(gpa);
    if (BEAM__LIKELY(st != NULL && !st->track))
        return beam__gpa_medium_alloc(st, len);
    return beam__gpa_alloc_general(gpa, len, alignment, ret);
}

/* The pages of the live block that starts at p in s, and in *at its first
 * page; 0 when there is none (beam__gpa_medium_block says when). Inline
 * for the free's common case. */
static BEAM__ALWAYS_INLINE unsigned
live_run(const gpa_state *st, const gpa_slab *s, const void *p, unsigned *at) {
    /* Owner and state again, under the lock: a caller's look without it
     * may be stale (the slab gone back to the pool, or to another
     * instance). s->base only then: an entry being reset is not ours to
     * read. */
    if (beam__gpa_owner(s) != st || gpa_where(s) != WHERE_MEDIUM)
        return 0;
    size_t off = (size_t)((const char *)p - s->base);
    if (off >= GPA_SLAB_SIZE || (off & (GPA_PAGE_SIZE - 1)) != 0)
        return 0;
    *at = (unsigned)(off >> GPA_PAGE_SHIFT);
    if (!(s->pages_start & ~s->pages_cached & (1u << *at)))
        return 0;
    return block_pages(s, *at);
}

size_t beam__gpa_medium_block(const gpa_state *st, const gpa_slab *s,
                              const void *p) {
    unsigned at;
    return (size_t)live_run(st, s, p, &at) << GPA_PAGE_SHIFT;
}

/* What is wrong with a free of mem (len, alignment) in s, whose block
 * there has bytes (beam__gpa_medium_block), or NULL; *counted: the length
 * to count it freed with, 0 when it must not be freed. Lock held. */
static const char *free_problem(const gpa_state *st, const gpa_slab *s,
                                const void *mem, size_t bytes, size_t len,
                                size_t alignment, size_t *counted) {
    *counted = 0;
    if (beam__gpa_owner(s) != st || gpa_where(s) != WHERE_MEDIUM)
        return "double free, or a free of a pointer into unused memory";
    size_t off = (size_t)((const char *)mem - s->base);
    /* (mem's own entry: a medium slab is a whole 64 KiB one.) */
    GPA_ASSERT(off < GPA_SLAB_SIZE);
    if (bytes == 0) {
        if ((off & (GPA_PAGE_SIZE - 1)) == 0 &&
            (s->pages_cached & (1u << (off >> GPA_PAGE_SHIFT))))
            return "double free (the block was freed already)";
        if (s->pages_used & (1u << (off >> GPA_PAGE_SHIFT)))
            return "free of a pointer inside a block";
        return (off & (GPA_PAGE_SIZE - 1)) != 0
                   ? "free of a pointer into unused memory"
                   : "double free (the block's pages are free)";
    }
    /* A small length: the second free of a small block whose slab has
     * since become this medium one, most likely; freeing would free the
     * medium block that lives here now. */
    if (len <= BEAM_GPA_SMALL_MAX)
        return "double free, or a free with a wrong length (one no medium "
               "block has: not freed)";
    if (pages_for(len) != bytes >> GPA_PAGE_SHIFT) {
        /* Counted as the least the block can have been asked for, so the
         * live bytes never go below what is live. */
        *counted = bytes - GPA_PAGE_SIZE + 1;
        return "free with a wrong length or alignment (freed anyway)";
    }
    *counted = len;
    if (alignment > GPA_PAGE_SIZE)
        return "free with a wrong length or alignment (freed anyway)";
    return NULL;
}

/* Lock held: the live block of pages pages at page at of s is freed (its
 * free counted as counted bytes): kept in the cache, or back in its slab,
 * and then the cache perhaps over its share of what is live now. */
static BEAM__ALWAYS_INLINE void block_free(gpa_state *st, gpa_slab *s,
                                           unsigned at, unsigned pages,
                                           size_t counted, bool cache,
                                           gpa_defer **defer) {
    st->medium_live -= (size_t)pages << GPA_PAGE_SHIFT;
    beam__count_free_locked(&st->medium_counts, &st->peak, counted);
    if (cache && cache_put(st, s, at, pages))
        return;
    run_free(st, s, at, pages, defer);
    cache_check(st, defer);
}

/* A free with a problem, or one that may have one: every check, under a
 * lock of its own (what the common case saw without it may have changed
 * since), and the misuse reported after. */
static BEAM__NOINLINE void free_checked(gpa_state *st, gpa_slab *s, void *mem,
                                        size_t len, size_t alignment,
                                        uintptr_t ret) {
    gpa_defer *defer = NULL;
    size_t counted;
    gpa_lock(st);
    size_t bytes = beam__gpa_medium_block(st, s, mem);
    const char *problem =
        free_problem(st, s, mem, bytes, len, alignment, &counted);
    if (counted != 0)
        block_free(st, s, page_of(s, mem), (unsigned)(bytes >> GPA_PAGE_SHIFT),
                   counted, false, &defer);
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
    if (problem != NULL)
        beam__gpa_misuse(st, problem, mem, len, alignment, ret);
}

void beam__gpa_medium_free(gpa_state *st, gpa_slab *s, void *mem, size_t len,
                           size_t alignment, uintptr_t ret) {
    /* The common case in one pass under the lock: a block of this
     * instance's medium slab, starting at mem, of the pages len asks for.
     * Anything else, misuse included, goes to free_checked, which decides
     * it with the checks that name the problem. */
    gpa_defer *defer = NULL;
    gpa_lock(st);
    unsigned at;
    unsigned pages = live_run(st, s, mem, &at);
    if (BEAM__LIKELY(pages != 0 && len > BEAM_GPA_SMALL_MAX &&
                     alignment <= GPA_PAGE_SIZE && pages_for(len) == pages)) {
        block_free(st, s, at, pages, len, true, &defer);
        gpa_unlock(st);
        if (defer != NULL)
            beam__gpa_defer_run(st, defer);
        return;
    }
    gpa_unlock(st);
    free_checked(st, s, mem, len, alignment, ret);
}

bool beam__gpa_medium_resize(gpa_state *st, gpa_slab *s, void *mem, size_t len,
                             size_t alignment, size_t new_len, uintptr_t ret,
                             const gpa_resize_words *said) {
    /* A medium block stays medium in place. Whether mem is live is asked
     * whatever new_len is: a block that is not is a misuse to report,
     * even when the answer would have been no anyway. */
    bool fits = new_len > BEAM_GPA_SMALL_MAX && new_len <= GPA_MEDIUM_MAX &&
                alignment <= GPA_PAGE_SIZE;
    bool ok = false;
    gpa_defer *defer = NULL;
    gpa_lock(st);
    unsigned at = 0;
    unsigned have = live_run(st, s, mem, &at);
    unsigned want = fits ? (unsigned)pages_for(new_len) : 0;
    /* The block must be what the caller says it is, and a grown block may
     * take only free pages right after it. */
    if (fits && have != 0 && pages_for(len) == have && at + want <= GPA_PAGES &&
        (want <= have || (free_pages(s) & run_mask(at + have, want - have)) ==
                             run_mask(at + have, want - have))) {
        unsigned old = s->requeue;
        s->pages_used &= (uint16_t)~run_mask(at, have);
        s->pages_used |= run_mask(at, want);
        bin_move(st, s, old);
        st->medium_live = st->medium_live - ((size_t)have << GPA_PAGE_SHIFT) +
                          ((size_t)want << GPA_PAGE_SHIFT);
        /* (Shrunk, the live bytes may no longer allow what is cached.) */
        cache_check(st, &defer);
        beam__count_locked(&st->peak,
                           beam__count_bytes(&st->medium_counts,
                                             (int64_t)new_len - (int64_t)len));
        ok = true;
    }
    gpa_unlock(st);
    beam__gpa_defer_run(st, defer);
    if (have == 0)
        beam__gpa_misuse(st, said->not_live, mem, len, alignment, ret);
    else if (pages_for(len) != have || alignment > GPA_PAGE_SIZE)
        beam__gpa_misuse(st, said->wrong_length, mem, len, alignment, ret);
    return ok;
}
