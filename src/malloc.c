/*
 * Malloc-style calls over any allocator: blocks that know their own size,
 * for C libraries whose hooks free without one (the contract is in
 * beam_alloc.h, section 8).
 *
 * Two ways to know a block's size:
 *
 *  - A general purpose allocator instance knows it already (the slab's
 *    class, or its large-block table: gpa_msize.c), so its blocks carry
 *    nothing extra. We allocate the class size (untracked) so that the
 *    length the instance counts at allocation is the one we give back at
 *    free, and its stats stay exact.
 *
 *  - Any other allocator gets a 16-byte header. The malloc contract is
 *    16-byte alignment, but the raw allocator serves 8 at most, so the
 *    parent block is asked at alignment 8 (which every allocator serves)
 *    and the user block placed 8 or 16 bytes in, whichever is 16-aligned:
 *
 *      base (8-aligned)                     user = base + off, 16-aligned
 *      |<- off - 8 unused ->|   word   |<- good bytes ... ->|<- 16 - off ->|
 *
 *    word = check << 48 | (off == 16) << 47 | good. good (the usable size,
 *    beam_mgood_size) is below 2^47; check is 16 bits of a hash of the
 *    user address and good, so a pointer that is not one of these blocks
 *    (a sized block, a stranger) is caught at its first use with odds of
 *    65535 in 65536, and reported instead of followed. A freed block's
 *    check is inverted, so a second free says "double free" when the
 *    parent left the word alone (malloc and enif_alloc reuse it for their
 *    free lists at once: then it is "not a live block", still reported and
 *    never passed on). The parent block is good + 16 bytes long.
 */
#include "internal.h"

#include "gpa_msize.h"
#include "malloc_hdr.h"
#include "os/probe.h"

#include <stdio.h>
#include <string.h>

/* ---- the header scheme -------------------------------------------------- */

#define HDR 16
#define GOOD_MAX (((uint64_t)1 << BEAM__HDR_GOOD_BITS) - 1)
#define OFF16 BEAM__HDR_OFF16

static inline size_t hdr_good(size_t n) {
    if (n > GOOD_MAX - HDR - 15)
        return 0;
    return n == 0 ? 16 : (size_t)beam__align_up(n, 16);
}

static inline uint64_t *word_of(const void *user) {
    return (uint64_t *)((uintptr_t)user - 8);
}

/* Put the header in the parent block base (8-aligned, good + 16 long). */
static inline void *hdr_place(void *base, size_t good) {
    size_t off = ((uintptr_t)base & 15) != 0 ? 8 : 16;
    char *user = (char *)base + off;
    *word_of(user) = beam__hdr_word(user, good, off);
    return user;
}

enum hdr_state { HDR_LIVE, HDR_FREED, HDR_BAD };

/* What header word w says of block p. */
static inline enum hdr_state hdr_decode(const void *p, uint64_t w, size_t *good,
                                        char **base) {
    uint64_t g = w & GOOD_MAX;
    uint64_t check = beam__hdr_check(p, g);
    *good = (size_t)g;
    *base = (char *)p - ((w & OFF16) ? 16 : 8);
    if (w >> 48 == check && g != 0)
        return HDR_LIVE;
    if (w >> 48 == (check ^ 0xFFFF) && g != 0)
        return HDR_FREED;
    return HDR_BAD;
}

/* hdr_read of a p at a page's start, whose word lies on the page before:
 * probed (a syscall), and HDR_BAD unread where that page is not readable.
 * A pointer these calls never returned (a foreign one at the start of a
 * mapping after an unmapped or PROT_NONE page) faulted there in
 * beam_mfree, beam_msize and beam_mrealloc over every allocator with
 * headers (found in a bug hunt). Apart, so that the common path keeps one
 * test. */
static BEAM__NOINLINE enum hdr_state
hdr_read_probed(const void *p, size_t *good, char **base) {
    uint64_t w;
    if (!beam__probe_read(word_of(p), &w, sizeof w))
        return HDR_BAD;
    return hdr_decode(p, w, good, base);
}

/* Read p's header: its usable size and the parent block's address. */
static inline enum hdr_state hdr_read(const void *p, size_t *good,
                                      char **base) {
    /* Never one of ours: not even read. (A block's header is the word
     * before it, in the parent's block: neither is in the first 64 KiB.) */
    if (((uintptr_t)p & 15) != 0 ||
        (intptr_t)p < (intptr_t)(BEAM__MIN_BLOCK_ADDR + sizeof(uint64_t)))
        return HDR_BAD;
    if (BEAM__UNLIKELY(!beam__probe_same_page(p, sizeof(uint64_t))))
        return hdr_read_probed(p, good, base);
    return hdr_decode(p, *word_of(p), good, base);
}

/* The misuse kind of a call given a bad pointer, as the sized calls count
 * theirs (so that leak_check, raise_on_misuse and the fault-injection
 * check see it). beam_msize's too: a query of a freed block is a use after
 * free, which let a leak_check call return (reported, not raised: found by
 * a bug hunt). */
static const char *bad_pointer_kind(const char *call, bool freed) {
    if (strcmp(call, "beam_mfree") == 0)
        return freed ? BEAM__KIND_DOUBLE_FREE : BEAM__KIND_FOREIGN_FREE;
    if (strcmp(call, "beam_mrealloc") == 0)
        return BEAM__KIND_RESIZE;
    return BEAM__KIND_BAD_SIZE_QUERY;
}

static BEAM__NOINLINE void report_ignored(const char *call, const void *p,
                                          const char *what, bool freed,
                                          uintptr_t ret) {
    beam__report_misuse(bad_pointer_kind(call, freed), ret,
                        "beam_alloc: %s of %p ignored: %s", call, p, what);
}

/* A freed block's header read by a free is a double free; read by a query
 * or a realloc, a use after free (not "double": nothing was freed twice). */
static const char *freed_text(const char *call) {
    return strcmp(call, "beam_mfree") == 0
               ? "double free (the block was freed already)"
               : "use after free (the block was freed already)";
}

static void report_bad(const char *call, const void *p, enum hdr_state why,
                       uintptr_t ret) {
    report_ignored(call, p,
                   why == HDR_FREED
                       ? freed_text(call)
                       : "not a live block of beam_malloc & co. over this "
                         "allocator (freed already, a sized block, or "
                         "foreign)",
                   why == HDR_FREED, ret);
}

/* The header paths serve every allocator but a GPA, a zero-initialised
 * one ({0}, no vtable) and the refusing one (what an instance's getter
 * gives for NULL) included: they serve nothing (hdr_malloc calls the
 * refusing allocator) and have no blocks, so the paths given a block test
 * for them before a header is read (the GPA paths compare the vtable with
 * the GPA's and need no test). Through the refusing allocator a header
 * was read: beam_msize of a stray pointer faulted (found in a bug hunt). */
static inline bool serves_nothing(beam_allocator_t a) {
    return BEAM__UNLIKELY(a.vtable == NULL ||
                          a.vtable == &beam__refusing_vtable);
}

static const char *no_blocks_said(beam_allocator_t a) {
    return a.vtable == NULL ? BEAM__SAID_NO_VTABLE
                            : "the allocator refuses every call (an "
                              "instance's getter given NULL) and has no "
                              "blocks";
}

/* The allocator whose blocks a's are: a, seen through a fault-injection
 * check's plan allocator (the one under it that p goes to: the plan
 * records a header block by its parent's start, 8 or 16 bytes before p,
 * and the driver looks there too) and failing allocators (the walk
 * bounded, as backing_serves_16's). */
static beam_allocator_t holder_of(beam_allocator_t a, const void *p) {
    beam_allocator_t under;
    if (beam__fault_under(a, p, &under))
        a = under;
    for (int hop = 0; hop < 8 && a.vtable == &beam__failing_vtable; hop++)
        a = ((const beam_failing_t *)a.ctx)->parent;
    return a;
}

/* A fixed buffer's blocks, headers and all, lie inside its buffer, which
 * the caller may have placed anywhere (at the start of a mapping, say):
 * a pointer that could have no header word there is not one of its
 * blocks, and the word before it is not read. Over a fixed buffer, or
 * failing allocators over one, and under a fault-injection check's plan
 * allocator too (a NIF's .allocator a fixed buffer: the VM died of the
 * read under the check, found in review). A sized block at the start of
 * a buffer after an unmapped page faulted in beam_msize, beam_mfree and
 * beam_mrealloc (found in a bug hunt). */
static bool outside_fixed_buffer(beam_allocator_t h, const void *p) {
    if (h.vtable != &beam__fixed_buffer_vtable)
        return false;
    const beam_fixed_buffer_t *fb = h.ctx;
    uintptr_t u = (uintptr_t)p, lo = (uintptr_t)fb->buffer;
    return u < lo + sizeof(uint64_t) || u - lo > fb->len;
}

/* Whether allocator h's handed-out memory holds the len bytes at mem, as
 * each kind that knows its blocks tells: a fixed buffer's and an arena's
 * handed-out bytes, a general purpose instance's live block (one over
 * the raw allocator, which gets headers). Other allocators (raw, large,
 * the user's) know no blocks: true. */
static bool holds(beam_allocator_t h, const void *mem, size_t len) {
    if (h.vtable == &beam__fixed_buffer_vtable)
        return beam__fixed_buffer_holds(h.ctx, mem, len);
    if (h.vtable == &beam__arena_vtable)
        return beam__arena_holds(h.ctx, mem, len);
    if (h.vtable == &beam__gpa_vtable) {
        size_t have, alignment;
        return beam__gpa_block_size(h.ctx, mem, false, &have, &alignment) &&
               have >= len;
    }
    return true;
}

/* A header that looks live may still be garbage: the word before a
 * pointer we never returned passes the check once in 65536. The parent
 * block the header names (base, good + HDR bytes) must be held by the
 * holder of a's blocks (under a fault-injection check, the one the plan
 * sent base to, which it knows by base, not by the user pointer), or it
 * is not ours. Before, such a header's size was believed: beam_msize
 * answered it, beam_mrealloc copied up to it, beam_mfree freed what it
 * named (found in a bug hunt). Where the holder knows no blocks, the
 * check is all there is. */
static BEAM__NOINLINE bool holder_disowns(beam_allocator_t a, const char *base,
                                          size_t good) {
    return !holds(holder_of(a, base), base, good + HDR);
}

/* hdr_read for a block of a: HDR_BAD, nothing read, for a pointer outside
 * a fixed buffer under a; HDR_BAD too for a live-looking header whose
 * parent block the allocator under a does not hold. */
static inline enum hdr_state hdr_read_of(beam_allocator_t a, const void *p,
                                         size_t *good, char **base) {
    beam_allocator_t h = holder_of(a, p);
    if (outside_fixed_buffer(h, p))
        return HDR_BAD;
    enum hdr_state st = hdr_read(p, good, base);
    /* (The raw and large allocators know no blocks: no call.) */
    if (st == HDR_LIVE && h.vtable != &beam__raw_vtable &&
        h.vtable != &beam__large_vtable && holder_disowns(a, *base, *good))
        return HDR_BAD;
    return st;
}

static void *hdr_malloc(beam_allocator_t a, size_t n, uintptr_t ret) {
    size_t good = hdr_good(n);
    if (good == 0)
        return NULL;
    void *base =
        beam__vtable_or_refusing(a.vtable)->alloc(a.ctx, good + HDR, 8, ret);
    return base != NULL ? hdr_place(base, good) : NULL;
}

static void hdr_free(beam_allocator_t a, void *p, uintptr_t ret) {
    if (serves_nothing(a)) {
        report_ignored("beam_mfree", p, no_blocks_said(a), false, ret);
        return;
    }
    size_t good;
    char *base;
    enum hdr_state st = hdr_read_of(a, p, &good, &base);
    if (st != HDR_LIVE) {
        report_bad("beam_mfree", p, st, ret);
        return;
    }
    *word_of(p) ^= (uint64_t)0xFFFF << 48; /* freed: a second free tells */
    a.vtable->free(a.ctx, base, good + HDR, 8, ret);
}

static void *hdr_mrealloc(beam_allocator_t a, void *p, size_t n,
                          uintptr_t ret) {
    if (serves_nothing(a))
        return NULL;
    size_t good, new_good = hdr_good(n);
    char *base;
    enum hdr_state st = hdr_read_of(a, p, &good, &base);
    if (st != HDR_LIVE) {
        report_bad("beam_mrealloc", p, st, ret);
        return NULL;
    }
    if (new_good == 0)
        return NULL;
    if (new_good == good)
        return p;
    size_t keep = good < new_good ? good : new_good;
    char *q = a.vtable->remap(a.ctx, base, good + HDR, 8, new_good + HDR, ret);
    if (q != NULL) {
        /* Moved to an address of the other residue mod 16: the contents
         * shift to the new 16-aligned spot (the 16 spare bytes allow it). */
        size_t old_off = (size_t)((char *)p - base);
        size_t new_off = ((uintptr_t)q & 15) != 0 ? 8 : 16;
        /* Contents first: the new header word may sit on the old data. */
        if (new_off != old_off)
            memmove(q + new_off, q + old_off, keep);
        return hdr_place(q, new_good);
    }
    void *user = hdr_malloc(a, n, ret);
    if (user == NULL)
        return NULL;
    memcpy(user, p, keep);
    hdr_free(a, p, ret);
    return user;
}

/* ---- over a general purpose allocator: no header ------------------------ */

/* An instance passes blocks above its classes to its backing with our
 * alignment of 16. The large allocator, arenas and fixed buffers serve it;
 * beam_raw_allocator cannot, nor anything that passes the alignment on to
 * it: a failing allocator, another instance (blocks above 64 KiB came back
 * NULL over those; found in review). Over any other backing (one it does
 * not know: a resource's, one of the user's) the instance gets headers
 * like any other allocator, which is always safe. The walk is bounded:
 * allocators built on each other in a loop get headers too. */
static bool backing_serves_16(beam_allocator_t b) {
    for (int hop = 0; hop < 8; hop++) {
        if (b.vtable == &beam__large_vtable ||
            b.vtable == &beam__arena_vtable ||
            b.vtable == &beam__fixed_buffer_vtable)
            return true;
        if (b.vtable == &beam__failing_vtable)
            b = ((const beam_failing_t *)b.ctx)->parent;
        else if (b.vtable == &beam__gpa_vtable)
            b = ((const beam_gpa_t *)b.ctx)->backing;
        else
            return false;
    }
    return false;
}

static inline bool is_gpa(beam_allocator_t a) {
    return a.vtable == &beam__gpa_vtable &&
           backing_serves_16(((const beam_gpa_t *)a.ctx)->backing);
}

/* is_gpa's common case, an instance over the large allocator, told with
 * no call: the calls below then go to the instance in one tail call, and
 * save no registers on the way. */
static BEAM__ALWAYS_INLINE bool is_gpa_on_large(beam_allocator_t a) {
    return a.vtable == &beam__gpa_vtable &&
           ((const beam_gpa_t *)a.ctx)->backing.vtable == &beam__large_vtable;
}

/* For the calls on a block (free, realloc, size): is_gpa, or an instance
 * with no state, which has no live block, headers or not: its own path
 * reports the pointer. A deinit instance's backing refuses everything,
 * so is_gpa sent its blocks down the header path, which read the word
 * before each, memory deinit had given back (beam_mfree, beam_msize and
 * beam_mrealloc crashed on a block of 1 MiB; found in a bug hunt). */
static inline bool gpa_answers(beam_allocator_t a) {
    return is_gpa(a) || (a.vtable == &beam__gpa_vtable &&
                         beam__gpa_stateless((beam_gpa_t *)a.ctx));
}

/* The instance that sizes the blocks of a: a itself, or under a
 * fault-injection check (a the driver's plan allocator) the instance
 * under it that block p (NULL: a new block) goes to; NULL when blocks of
 * a get headers. test: is_gpa, or gpa_answers for the calls on a block.
 * The calls still go through a, which counts them. (Under the check every
 * block had a header: a double beam_mfree over a GPA was a foreign free,
 * the GPA's free list having covered the header, and a leak_check
 * instance's canary lay past the header's rounding; found by a bug
 * hunt.) */
static inline beam_gpa_t *gpa_of(beam_allocator_t a, const void *p,
                                 bool (*test)(beam_allocator_t)) {
    if (test(a))
        return (beam_gpa_t *)a.ctx;
    beam_allocator_t under;
    if (beam__fault_under(a, p, &under) && test(under))
        return (beam_gpa_t *)under.ctx;
    return NULL;
}

static inline void *gpa_malloc(beam_allocator_t a, beam_gpa_t *gpa, size_t n,
                               uintptr_t ret) {
    /* On gpa itself, what its vtable's alloc would run, without the
     * indirect call; through a fault-injection check's plan allocator a,
     * which counts the call, its way. */
    if (a.ctx == gpa)
        return beam__gpa_malloc(gpa, n, ret);
    size_t good = beam__gpa_good_size(gpa, n);
    if (good == 0)
        return NULL;
    return a.vtable->alloc(a.ctx, good, 16, ret);
}

static void gpa_mfree(beam_allocator_t a, beam_gpa_t *gpa, void *p,
                      uintptr_t ret) {
    /* On gpa itself, one lookup for the common case; a, when a plan
     * allocator over gpa (a fault-injection check), counts the call: its
     * way. */
    if (a.ctx == gpa)
        beam__gpa_mfree(gpa, p, ret);
    else
        beam__gpa_mfree_sized(a, gpa, p, ret);
}

BEAM__NOINLINE void beam__report_not_gpa_block(const char *call, const void *p,
                                               uintptr_t ret) {
    beam__report_misuse(bad_pointer_kind(call, false), ret,
                        "beam_alloc: %s of %p: not a live block of this "
                        "general purpose allocator",
                        call, p);
}

static void *gpa_mrealloc(beam_allocator_t a, beam_gpa_t *gpa, void *p,
                          size_t n, uintptr_t ret) {
    size_t len, alignment;
    if (!beam__gpa_block_size(gpa, p, true, &len, &alignment)) {
        beam__report_not_gpa_block("beam_mrealloc", p, ret);
        return NULL;
    }
    size_t good = beam__gpa_good_size(gpa, n);
    if (good == 0)
        return NULL;
    if (good == len)
        return p;
    void *q = a.vtable->remap(a.ctx, p, len, alignment, good, ret);
    if (q != NULL)
        return q;
    q = a.vtable->alloc(a.ctx, good, 16, ret);
    if (q == NULL)
        return NULL;
    memcpy(q, p, len < good ? len : good);
    a.vtable->free(a.ctx, p, len, alignment, ret);
    return q;
}

/* ---- the calls ---------------------------------------------------------- */

/* Each call's common case, an instance over the large allocator, goes to
 * it in one tail call (is_gpa_on_large); the rest out of line. */
static BEAM__NOINLINE void *malloc_general(beam_allocator_t a, size_t n,
                                           uintptr_t ret) {
    beam_gpa_t *gpa = gpa_of(a, NULL, is_gpa);
    return gpa != NULL ? gpa_malloc(a, gpa, n, ret) : hdr_malloc(a, n, ret);
}

static inline void *malloc_impl(beam_allocator_t a, size_t n, uintptr_t ret) {
    if (BEAM__LIKELY(is_gpa_on_large(a)))
        return beam__gpa_malloc((beam_gpa_t *)a.ctx, n, ret);
    return malloc_general(a, n, ret);
}

static BEAM__NOINLINE void mfree_general(beam_allocator_t a, void *p,
                                         uintptr_t ret) {
    beam_gpa_t *gpa = gpa_of(a, p, gpa_answers);
    if (gpa != NULL)
        gpa_mfree(a, gpa, p, ret);
    else
        hdr_free(a, p, ret);
}

static inline void mfree_impl(beam_allocator_t a, void *p, uintptr_t ret) {
    if (p == NULL)
        return;
    if (BEAM__LIKELY(is_gpa_on_large(a)))
        beam__gpa_mfree((beam_gpa_t *)a.ctx, p, ret);
    else
        mfree_general(a, p, ret);
}

static void *calloc_impl(beam_allocator_t a, size_t count, size_t size,
                         uintptr_t ret) {
    size_t n;
    if (beam_mul_overflow(count, size, &n))
        return NULL;
    void *p = malloc_impl(a, n, ret);
    if (p != NULL)
        memset(p, 0, n);
    return p;
}

static void *mrealloc_impl(beam_allocator_t a, void *p, size_t n,
                           uintptr_t ret) {
    if (p == NULL)
        return malloc_impl(a, n, ret);
    beam_gpa_t *gpa = gpa_of(a, p, gpa_answers);
    return gpa != NULL ? gpa_mrealloc(a, gpa, p, n, ret)
                       : hdr_mrealloc(a, p, n, ret);
}

void *beam_malloc(beam_allocator_t a, size_t size) {
    return malloc_impl(a, size, BEAM__RET_ADDR());
}

void *beam_malloc_at(beam_allocator_t a, size_t size, uintptr_t ret_addr) {
    return malloc_impl(a, size, ret_addr);
}

void *beam_calloc(beam_allocator_t a, size_t count, size_t size) {
    return calloc_impl(a, count, size, BEAM__RET_ADDR());
}

void *beam_calloc_at(beam_allocator_t a, size_t count, size_t size,
                     uintptr_t ret_addr) {
    return calloc_impl(a, count, size, ret_addr);
}

void *beam_mrealloc(beam_allocator_t a, void *p, size_t size) {
    return mrealloc_impl(a, p, size, BEAM__RET_ADDR());
}

void *beam_mrealloc_at(beam_allocator_t a, void *p, size_t size,
                       uintptr_t ret_addr) {
    return mrealloc_impl(a, p, size, ret_addr);
}

void beam_mfree(beam_allocator_t a, void *p) {
    mfree_impl(a, p, BEAM__RET_ADDR());
}

void beam_mfree_at(beam_allocator_t a, void *p, uintptr_t ret_addr) {
    mfree_impl(a, p, ret_addr);
}

/* Apart from msize_impl, as hdr_free is from mfree_impl: the general
 * purpose allocator's path stays as short. */
static BEAM__NOINLINE size_t hdr_msize(beam_allocator_t a, const void *p,
                                       uintptr_t ret) {
    if (serves_nothing(a)) {
        report_ignored("beam_msize", p, no_blocks_said(a), false, ret);
        return 0;
    }
    size_t good;
    char *base;
    enum hdr_state st = hdr_read_of(a, p, &good, &base);
    if (st == HDR_LIVE)
        return good;
    report_bad("beam_msize", p, st, ret);
    return 0;
}

static BEAM__NOINLINE size_t msize_general(beam_allocator_t a, const void *p,
                                           uintptr_t ret) {
    beam_gpa_t *gpa = gpa_of(a, p, gpa_answers);
    return gpa != NULL ? beam__gpa_msize(gpa, p, ret) : hdr_msize(a, p, ret);
}

static inline size_t msize_impl(beam_allocator_t a, const void *p,
                                uintptr_t ret) {
    if (p == NULL)
        return 0;
    if (BEAM__LIKELY(is_gpa_on_large(a)))
        return beam__gpa_msize((beam_gpa_t *)a.ctx, p, ret);
    return msize_general(a, p, ret);
}

size_t beam_msize(beam_allocator_t a, const void *p) {
    return msize_impl(a, p, BEAM__RET_ADDR());
}

size_t beam_msize_at(beam_allocator_t a, const void *p, uintptr_t ret_addr) {
    return msize_impl(a, p, ret_addr);
}

static BEAM__NOINLINE size_t mgood_size_general(beam_allocator_t a,
                                                size_t size) {
    beam_gpa_t *gpa = gpa_of(a, NULL, is_gpa);
    return gpa != NULL ? beam__gpa_good_size(gpa, size) : hdr_good(size);
}

size_t beam_mgood_size(beam_allocator_t a, size_t size) {
    if (BEAM__LIKELY(is_gpa_on_large(a)))
        return beam__gpa_good_size((const beam_gpa_t *)a.ctx, size);
    return mgood_size_general(a, size);
}
