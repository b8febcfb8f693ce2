/*
 * Internal declarations shared by the sources of beam_alloc. Nothing here is
 * public: names carry the beam__ prefix and have hidden visibility.
 */
#ifndef BEAM_ALLOC_INTERNAL_H
#define BEAM_ALLOC_INTERNAL_H

#include "beam_alloc.h"

#include "atomics.h"
#include "misuse_kinds.h"

#include <pthread.h>
#include <stdarg.h>

/* gcc and clang only: the allocators rely on their builtins throughout. */
#define BEAM__HIDDEN __attribute__((visibility("hidden")))
#define BEAM__LIKELY(x) __builtin_expect(!!(x), 1)
#define BEAM__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define BEAM__NOINLINE __attribute__((noinline))
/* For the few helpers every fast path is made of: left to itself, the
 * compiler may call one out of line once a caller grows. */
#define BEAM__ALWAYS_INLINE inline __attribute__((always_inline))
#define BEAM__RET_ADDR() ((uintptr_t)__builtin_return_address(0))
/* A calling helper's own return address, read only where a call leaves
 * the inline paths (beam__ret_of, inlined into the helper: the builtin
 * then names the helper's caller). Read up front, it held a register and
 * the helper's frame through the fast paths: gcc then saved registers and
 * set up the frame on every call, three stores more per free, and stores
 * are what a churn over many live blocks waits on (each one queues behind
 * the freed block's cache miss). No code address is 1. */
#define BEAM__RET_LAZY ((uintptr_t)1)
static inline __attribute__((always_inline)) uintptr_t
beam__ret_of(uintptr_t ret) {
    return ret == BEAM__RET_LAZY ? BEAM__RET_ADDR() : ret;
}
#define BEAM__PRINTF(f, a) __attribute__((format(printf, f, a)))

#include "os/tls.h"

/* The system backend: enif_alloc & co. in the NIF build (backend/enif.c),
 * malloc & co. in the standalone build (backend/libc.c). Same contract as
 * malloc, except that alignment is only BEAM_MAX_ALIGN. */
BEAM__HIDDEN void *beam__sys_alloc(size_t len);
BEAM__HIDDEN void *beam__sys_realloc(void *mem, size_t len);
BEAM__HIDDEN void beam__sys_free(void *mem);

/* The vtables behind the built-in allocators (so static initialisers can
 * name them: a const object is not a constant expression in C). */
BEAM__HIDDEN extern const beam_allocator_vtable beam__raw_vtable;
BEAM__HIDDEN extern const beam_allocator_vtable beam__large_vtable;
BEAM__HIDDEN extern const beam_allocator_vtable beam__gpa_vtable;
BEAM__HIDDEN extern const beam_allocator_vtable beam__failing_vtable;
BEAM__HIDDEN extern const beam_allocator_vtable beam__arena_vtable;
BEAM__HIDDEN extern const beam_allocator_vtable beam__fixed_buffer_vtable;

/* The len bytes at mem lie in what one of arena's chunks handed out, or
 * in what fb handed out: for a malloc-style header's claim of its parent
 * block (malloc.c). */
BEAM__HIDDEN bool beam__arena_holds(const beam_arena_t *arena, const void *mem,
                                    size_t len);
BEAM__HIDDEN bool beam__fixed_buffer_holds(const beam_fixed_buffer_t *fb,
                                           const void *mem, size_t len);

/* Reporting (report.c): one formatted line through the report hook. */
#define BEAM__REPORT_LINE 1024
BEAM__HIDDEN void beam__report(const char *fmt, ...) BEAM__PRINTF(1, 2);
BEAM__HIDDEN void beam__report_line(const char *line);
/* A misuse of kind (NULL: a report only, no misuse) at the caller's call
 * ret: fmt's text, then " (called from SITE)". */
BEAM__HIDDEN void beam__report_misuse(const char *kind, uintptr_t ret,
                                      const char *fmt, ...) BEAM__PRINTF(3, 4);

/* Misuse the calling thread has reported (report.c). The NIF glue watches
 * it across a call: set watch_from = count before, and any misuse during
 * the call (by any allocator instance) shows as count > watch_from, kind
 * and line being the first one's. */
typedef struct beam__misuse_record {
    unsigned long count, watch_from;
    const char *kind; /* one of the kinds below (static text) */
} beam__misuse_record;
#define BEAM__MISUSE_LINE 512
BEAM__HIDDEN extern BEAM_THREAD_LOCAL beam__misuse_record beam__misuse;

/* A NIF call's end (glue.c), while the glue takes down the allocators it
 * put over the NIF's: a misuse found then (a scratch arena's chunk written
 * past, found as the arena gives it back to leak_check's instance) has the
 * glue's frames for its caller, while the call that did it has returned.
 * Its report names the call instead; and a scratch chunk, which the NIF
 * never allocated, as the chunk, with the last block allocated from it
 * (beam__arena_deinit_noting fills that in as it gives each back). */
typedef struct beam__call_end {
    /* "found when the NIF call demo:overrun/0 returned" into buf: asked
     * by a report only */
    void (*found)(const struct beam__call_end *end, char *buf, size_t n);
    const void *call;  /* found's */
    const void *chunk; /* the scratch chunk being given back, or NULL */
    size_t data_at;    /* where its data starts, from the chunk */
    size_t last, end;  /* its last block: [last, end) of its data; last
                          SIZE_MAX when not known (that block was freed) */
    /* Whose arena the chunk is of, as the report says it ("the resource's
     * arena"); NULL: the call's scratch arena. */
    const char *arena_is;
} beam__call_end;
/* The NIF call whose end this thread is in (beam__call_end), or NULL.
 * The glue keeps it in the call's own state (nif/glue.c), which a
 * thread-local it has already points to: a field of its own here took 8
 * of the few bytes left of glibc's spare static TLS (README, Performance)
 * for a report that is seldom made. The standalone library makes no NIF
 * calls; its C tests stand one in. */
#ifdef BEAM_ALLOC_STANDALONE
BEAM__HIDDEN extern const beam__call_end *beam__call_end_for_tests;
static inline const beam__call_end *beam__call_ending(void) {
    return beam__call_end_for_tests;
}
#else
BEAM__HIDDEN const beam__call_end *beam__call_ending(void);
#endif
/* beam_arena_deinit at a NIF call's end: end names each chunk while the
 * arena gives it back (beam__call_end). */
BEAM__HIDDEN void beam__arena_deinit_noting(beam_arena_t *arena,
                                            beam__call_end *end);
/* "found when the NIF call ... returned" into buf, in place of "called
 * from <the glue>", when this thread is in a call's end; else NULL. */
BEAM__HIDDEN const char *beam__found_at_call_end(char *buf, size_t n);
/* "called from SITE" of the call that returns to ret, or the above at a
 * call's end: into buf, of BEAM__CALLER_SAID bytes. */
#define BEAM__CALLER_SAID 540
BEAM__HIDDEN const char *beam__caller_said(uintptr_t ret, char *buf, size_t n);
/* The first report line of the call: BEAM__MISUSE_LINE bytes of the
 * thread's cold block, NULL when that block cannot be had. Asked each time,
 * never kept: the block may be given back meanwhile (unload). */
BEAM__HIDDEN char *beam__misuse_line(void);
/* Report a free, resize, remap or realloc (call) refused as a misuse, with
 * its reason (what) and the caller's site (core.c). */
BEAM__HIDDEN void beam__report_refused(const char *call, void *mem, size_t len,
                                       size_t alignment, uintptr_t ret,
                                       const char *what);
/* The same under a kind of the caller's choosing (misuse_kinds.h). */
BEAM__HIDDEN void beam__report_refused_as(const char *kind, const char *call,
                                          void *mem, size_t len,
                                          size_t alignment, uintptr_t ret,
                                          const char *what);
/* beam__report_refused of a pointer that is none of the allocator's
 * blocks: a free's kind is a foreign free, a resize's or remap's the
 * resize kind's. */
BEAM__HIDDEN void beam__report_foreign(const char *call, void *mem, size_t len,
                                       size_t alignment, uintptr_t ret,
                                       const char *what);
/* A free, resize or remap (call) through the raw or the large allocator
 * (who) of what cannot be one of their blocks: true, and reported as a
 * misuse. That is an impossible block (a length of 0 or above
 * BEAM__MAX_LEN, or an address no block has): the helpers refuse those
 * before the vtable, a direct caller of it may not, and such a length,
 * counted, wrapped the live bytes (undefined behaviour) and the block was
 * given back. Or a block of a general purpose instance (of this copy of
 * the library: its address map says so, gpa_map_holds, or, above the slab
 * classes, its set of large blocks, beam__gpa_set_holds), as given to the
 * backend an address inside a segment would crash it or corrupt its heap,
 * and a large block would be freed under its instance. false for any other
 * block (core.c). */
BEAM__HIDDEN bool beam__refused_block(const char *call, const char *who,
                                      void *mem, size_t len, size_t alignment,
                                      uintptr_t ret);
/* Sets of addresses (addr_set.c), the first counting its notes of an
 * address, the other holding one at most (addr_set.c says why); any thread, no
 * lock of ours held (the sets' locks are leaves). unnote says whether p was
 * noted; holds takes no lock while the set is empty. free gives the set's
 * tables back (the library unloading). */
typedef enum beam__set_id {
    BEAM__SET_GPA_LARGE,         /* instances' large blocks (gpa_large.c) */
    BEAM__SET_LARGE_PAGE_STARTS, /* large.c's blocks that start a page */
    BEAM__SETS
} beam__set_id;
BEAM__HIDDEN void beam__set_note(beam__set_id id, const void *p);
BEAM__HIDDEN bool beam__set_unnote(beam__set_id id, const void *p);
/* Each set's count of addresses, on a cache line of its own: an ask's
 * test, inline, of every raw and large free for the first set. */
typedef struct beam__set_size {
    _Alignas(64) _Atomic size_t noted;
} beam__set_size;
BEAM__HIDDEN extern beam__set_size beam__set_sizes[BEAM__SETS];
BEAM__HIDDEN bool beam__set_lookup(beam__set_id id, const void *p);
static inline bool beam__set_holds(beam__set_id id, const void *p) {
    return beam__atomic_load_relaxed(&beam__set_sizes[id].noted) != 0 &&
           beam__set_lookup(id, p);
}
BEAM__HIDDEN void beam__set_free(beam__set_id id);
/* The bytes of set id's tables (for tests). */
BEAM__HIDDEN size_t beam__set_table_bytes(beam__set_id id);
/* When a is a fault-injection driver's plan allocator (one a call of this
 * copy was given, during a check or kept after it): true, and *out the
 * allocator under it that block p (NULL: a new block) goes to
 * (nif/fault.c), which the malloc-style calls size blocks by (malloc.c).
 * The standalone library has no check. */
#ifdef BEAM_ALLOC_STANDALONE
static inline bool beam__fault_under(beam_allocator_t a, const void *p,
                                     beam_allocator_t *out) {
    (void)a;
    (void)p;
    (void)out;
    return false;
}
#else
BEAM__HIDDEN bool beam__fault_under(beam_allocator_t a, const void *p,
                                    beam_allocator_t *out);
#endif
/* A free through the library's process-wide general purpose instance of a
 * block it does not hold: in a NIF library, another copy of the same
 * module's library may hold it (a resource an old version made, whose type
 * the new version took over, freed by the new destructor) and frees it
 * then: true (nif/copies.c). The same for a resize (remap: a remap or realloc)
 * of such a block: true when another copy of the module holds it, which checked
 * the call (a misuse it found is this thread's, as for a free); the resize is
 * then not made in place, and a realloc moves the block into this copy. And for
 * a size query (beam_msize, beam_mfree, beam_mrealloc): true when another copy
 * holds it live, *len and *alignment what its free takes. The standalone
 * library has one copy: never. */
#ifdef BEAM_ALLOC_STANDALONE
static inline bool beam__nif_free_in_other_copy(void *mem, size_t len,
                                                size_t alignment,
                                                uintptr_t ret) {
    (void)mem;
    (void)len;
    (void)alignment;
    (void)ret;
    return false;
}
static inline bool beam__nif_resize_in_other_copy(void *mem, size_t len,
                                                  size_t alignment, bool remap,
                                                  uintptr_t ret) {
    (void)mem;
    (void)len;
    (void)alignment;
    (void)remap;
    (void)ret;
    return false;
}
static inline bool beam__nif_size_in_other_copy(const void *mem, bool owned,
                                                size_t *len,
                                                size_t *alignment) {
    (void)mem;
    (void)owned;
    (void)len;
    (void)alignment;
    return false;
}
#else
BEAM__HIDDEN bool beam__nif_free_in_other_copy(void *mem, size_t len,
                                               size_t alignment, uintptr_t ret);
BEAM__HIDDEN bool beam__nif_resize_in_other_copy(void *mem, size_t len,
                                                 size_t alignment, bool remap,
                                                 uintptr_t ret);
BEAM__HIDDEN bool beam__nif_size_in_other_copy(const void *mem, bool owned,
                                               size_t *len, size_t *alignment);
#endif
/* A bump allocator's (who: "arena", "buffer") free or resize of a block
 * that ends where its newest block ends but does not start where that one
 * starts: a wrong length or address, refused (core.c). */
BEAM__HIDDEN void beam__report_not_newest(const char *call, void *mem,
                                          size_t len, size_t alignment,
                                          uintptr_t ret, const char *who);
/* The same for a block that starts where the newest starts, given with a
 * shorter or longer length than its own (newest_len): a wrong length,
 * refused. */
BEAM__HIDDEN void beam__report_newest_length(const char *call, void *mem,
                                             size_t len, size_t alignment,
                                             uintptr_t ret, const char *who,
                                             size_t newest_len);
/* fn was given a NULL instance: reported as a misuse at ret (core.c);
 * true then, and the caller does nothing. */
BEAM__HIDDEN bool beam__null_instance(const void *instance, const char *fn,
                                      uintptr_t ret);
/* What an allocator's getter gives for a NULL instance: every call
 * through it refused. */
#define BEAM__REFUSING_ALLOCATOR                                               \
    ((beam_allocator_t){NULL, &beam__refusing_vtable})
/* Count a misuse of kind (static text) reported as line. */
BEAM__HIDDEN void beam__misuse_note(const char *kind, const char *line);
/* Replace the default hook (kept out of the way of a user's hook), and
 * the plain stderr writer for hooks that fall back to it. */
BEAM__HIDDEN void beam__report_set_default(beam_report_fn fn);
BEAM__HIDDEN void beam__report_to_stderr(const char *line);
/* Describe a return address by its call: "lib.so+0x1c1b" (the offset of
 * the call in the object, as addr2line takes it), "fun (lib.so+0x1c1b)"
 * when the object exports a symbol there, else "0x...": buf of n bytes. */
BEAM__HIDDEN const char *beam__describe_addr(uintptr_t addr, char *buf,
                                             size_t n);

/* Where BEAM_GPA_FRAMES(n) keeps n in the flags. */
#define BEAM__GPA_FRAMES_SHIFT 8
#define BEAM__GPA_FRAMES_MASK 31u

/* A broken internal invariant (debug builds): report where, and abort. */
BEAM__HIDDEN _Noreturn void beam__assert_fail(const char *what,
                                              const char *file, int line);

static inline bool beam__is_pow2(size_t x) {
    return x != 0 && (x & (x - 1)) == 0;
}

/* x is a power of two no greater than max: the fast paths' alignment
 * test, in two branches (x - 1 wraps for 0). clang (14) rewrites
 * x & (x - 1) == 0 as popcount(x) < 2 and, without -mpopcnt (not in the
 * x86-64 baseline), spells the popcount out in some 20 instructions: on
 * beam_free_bytes' fast path, 107 instructions where 87 do. The empty asm
 * hides from it that below is x - 1 (a constant x still folds). gcc keeps
 * the test as written, and its code as it was. */
static BEAM__ALWAYS_INLINE bool beam__is_pow2_at_most(size_t x, size_t max) {
    size_t below = x - 1;
#ifdef __clang__
    if (!__builtin_constant_p(x))
        __asm__("" : "+r"(below));
#endif
    return below < max && (x & below) == 0;
}

static inline uintptr_t beam__align_up(uintptr_t x, size_t alignment) {
    return (x + (alignment - 1)) & ~(uintptr_t)(alignment - 1);
}

/* Largest length any allocator accepts: objects larger than PTRDIFF_MAX
 * break pointer subtraction, so no allocator hands them out. */
#define BEAM__MAX_LEN ((size_t)PTRDIFF_MAX)

/* An allocator that refuses everything: alloc and remap NULL, resize
 * false, free a no-op (core.c). What a resource allocator of no resource
 * is, and what an instance given itself as its parent gets instead. A
 * zero-initialised allocator ({0}: no vtable) is taken for it: the
 * helpers' slow paths and the parent calls below test for NULL, so that
 * {0} fails every call instead of crashing (the fast paths compare the
 * vtable with known ones first and never read a NULL one). */
BEAM__HIDDEN extern const beam_allocator_vtable beam__refusing_vtable;

/* The vtable to call for an allocator's vtable vt: vt, or the refusing
 * one when vt is NULL (a zero-initialised allocator). For the slow paths
 * only: the fast paths compare vt with known ones first. */
static inline const beam_allocator_vtable *
beam__vtable_or_refusing(const beam_allocator_vtable *vt) {
    return BEAM__LIKELY(vt != NULL) ? vt : &beam__refusing_vtable;
}

/* What a composable allocator's deinit leaves as its parent (or backing):
 * the refusing allocator with the allocator itself as context, which no
 * init makes, so that later calls are refused and can tell why (a use
 * after deinit) until it is initialised again. */
static inline beam_allocator_t beam__deinited(const void *self) {
    beam_allocator_t a = {(void *)self, &beam__refusing_vtable};
    return a;
}
static inline bool beam__is_deinited(beam_allocator_t parent,
                                     const void *self) {
    return parent.vtable == &beam__refusing_vtable && parent.ctx == self;
}

/* What a free given a zero-initialised allocator says (core.c, malloc.c). */
#define BEAM__SAID_NO_VTABLE                                                   \
    "the allocator is zero-initialised (no vtable) and has no blocks"

/* The parent an allocator's init keeps: parent, or, when it is the
 * allocator itself (self, whose vtable is own) or zero-initialised, the
 * refusing allocator, with a report (who: the init; noun and role word
 * it: "instance", "backing allocator"). Built on itself it would ask
 * itself for memory without end; said at init, though the nesting count
 * below would catch it at the first allocation, as it catches longer
 * cycles (core.c). */
BEAM__HIDDEN beam_allocator_t beam__parent_not_self(
    beam_allocator_t parent, const void *self, const beam_allocator_vtable *own,
    const char *who, const char *noun, const char *role);

/* Allocators asking their parents, nested, on this thread: an arena for a
 * chunk, a failing or resource allocator for every call, a GPA for its
 * state, segments and large blocks. Only a cycle of allocators (one built,
 * through others, on itself) goes deeper than BEAM__NESTING_MAX; it would
 * recurse until the stack ran out. beam__nest_enter counts a parent call
 * in, or refuses it with a report (then the caller fails the call);
 * beam__nest_leave counts it out. Checked where it is cheap: the parent
 * calls that allocate or move memory, not the frees (a cycle never
 * allocated anything to free). */
#define BEAM__NESTING_MAX 48
typedef struct beam__nesting_state {
    unsigned depth;
    /* A call went too deep: every parent call of this descent fails at
     * once, so that retries (an arena's smaller chunk, at every level)
     * do not each go down again, which would take exponential time. */
    bool broken;
} beam__nesting_state;
BEAM__HIDDEN extern BEAM_THREAD_LOCAL beam__nesting_state beam__nesting;
BEAM__HIDDEN bool beam__nesting_refused(const char *why);
static inline bool beam__nest_enter(void) {
    beam__nesting_state *n = &beam__nesting;
    if (BEAM__UNLIKELY(n->depth >= BEAM__NESTING_MAX || n->broken))
        return beam__nesting_refused(NULL);
    n->depth++;
    return true;
}
static inline void beam__nest_leave(void) {
    beam__nesting_state *n = &beam__nesting;
    if (--n->depth == 0)
        n->broken = false;
}

/* An allocator's calls to its parent (a GPA's to its backing) that
 * allocate or move memory: the parent's vtable, counted in the nesting
 * and refused past it (NULL, false). Every such call goes through these.
 * A parent with no vtable (an arena or failing allocator left zeroed,
 * never initialised) is the refusing allocator. */
static inline void *beam__parent_alloc(beam_allocator_t parent, size_t len,
                                       size_t alignment, uintptr_t ret) {
    if (!beam__nest_enter())
        return NULL;
    void *p = beam__vtable_or_refusing(parent.vtable)
                  ->alloc(parent.ctx, len, alignment, ret);
    beam__nest_leave();
    return p;
}
static inline bool beam__parent_resize(beam_allocator_t parent, void *mem,
                                       size_t len, size_t alignment,
                                       size_t new_len, uintptr_t ret) {
    if (!beam__nest_enter())
        return false;
    bool ok = beam__vtable_or_refusing(parent.vtable)
                  ->resize(parent.ctx, mem, len, alignment, new_len, ret);
    beam__nest_leave();
    return ok;
}
static inline void *beam__parent_remap(beam_allocator_t parent, void *mem,
                                       size_t len, size_t alignment,
                                       size_t new_len, uintptr_t ret) {
    if (!beam__nest_enter())
        return NULL;
    void *p = beam__vtable_or_refusing(parent.vtable)
                  ->remap(parent.ctx, mem, len, alignment, new_len, ret);
    beam__nest_leave();
    return p;
}
/* A block back to the parent that gave it (not counted in the nesting: a
 * cycle never allocated anything to free). */
static inline void beam__parent_free(beam_allocator_t parent, void *mem,
                                     size_t len, size_t alignment,
                                     uintptr_t ret) {
    beam__vtable_or_refusing(parent.vtable)
        ->free(parent.ctx, mem, len, alignment, ret);
}

/* No allocator hands out a block in the first 64 KiB, which Linux keeps
 * unmapped by default (vm.mmap_min_addr, which some systems lower; macOS
 * the first 4 GiB), and no heap uses: a pointer there, or in the upper
 * half (where core.c's zero-length sentinels are), passed with a length,
 * is garbage or a sentinel, and the helpers reject it without reading
 * it. */
#define BEAM__MIN_BLOCK_ADDR ((uintptr_t)65536)

/* ---- stats (stats.c) ------------------------------------------------
 * Counters are written by one thread (or heap owner) and read by anyone:
 * relaxed atomics, so that a read is a race-free snapshot, at the cost of
 * nothing on x86 (plain loads and stores, no locked instructions). */

typedef struct beam__counters {
    _Atomic int64_t bytes; /* live bytes: allocated minus freed */
    _Atomic uint64_t allocs, frees, failed;
    int64_t mark; /* owner-only: what c has published to the peak, at most
                     bytes (see beam__publish) */
} beam__counters;

/* The shared side: a live-bytes total fed in steps, for the peak. */
typedef struct beam__peak {
    _Atomic int64_t published;
    _Atomic int64_t peak;
    /* The live bytes of one counter whose every change a lock serialises
     * (a GPA instance's medium blocks: beam__count_locked), published
     * exactly at each; every rise's total adds it. 0 for the rest. */
    _Atomic int64_t locked_part;
} beam__peak;

#define BEAM__PUBLISH_STEP ((int64_t)64 * 1024)
/* A fall is published this far below the live bytes, so that the small
 * falls after it, as churn makes them, need no publication of their own (a
 * locked add on a shared line, which also stalls the caller's pending
 * misses): with every fall published exactly, half the frees of a churn
 * published one. Less than a step: a thread's published part stays within
 * a step below its live bytes, as the peak's bound says. */
#define BEAM__PUBLISH_CUSHION ((int64_t)16 * 1024)

/* Add what c changed since its last publication to p: a rise exactly (and
 * raise p's peak), a fall with the cushion. */
BEAM__HIDDEN void beam__publish(beam__counters *c, beam__peak *p);

BEAM__HIDDEN void beam__peak_observe(beam__peak *p, int64_t live);
/* d bytes added to p's published total exactly, and the peak raised if
 * that total and p's locked_part pass it (every rise's total adds
 * locked_part: beam__publish's, an in-place resize's). */
static inline void beam__peak_add(beam__peak *p, int64_t d) {
    int64_t live = beam__atomic_add_relaxed(&p->published, d) + d;
    beam__peak_observe(p, live + beam__atomic_load_relaxed(&p->locked_part));
}
/* A stats read's peak_bytes, from p and the live total *out holds (which
 * feeds p: a read's peak is never below its live_bytes). */
BEAM__HIDDEN void beam__stats_peak_of_read(beam__peak *p,
                                           beam_alloc_stats *out);

/* c's live bytes moved by d; returns them after the change, for
 * beam__publish_due_at (one load of the counter, not two). */
static BEAM__ALWAYS_INLINE int64_t beam__count_bytes(beam__counters *c,
                                                     int64_t d) {
    return beam__atomic_bump_fetch(&c->bytes, d);
}

/* Hot-path counting: no publication (the caller publishes at its slow
 * points, which bound how far the peak can lag). */
static BEAM__ALWAYS_INLINE int64_t beam__count_alloc_fast(beam__counters *c,
                                                          size_t len) {
    beam__atomic_bump(&c->allocs, 1);
    return beam__count_bytes(c, (int64_t)len);
}

/* The same, for a caller that does not look at the live bytes after: one
 * add to memory on x86-64 (beam__atomic_bump), where beam__count_bytes
 * reads them back (beam__atomic_bump_fetch: a load, an add and a store;
 * an xadd there was four micro-ops). */
static BEAM__ALWAYS_INLINE void beam__count_alloc_blind(beam__counters *c,
                                                        size_t len) {
    beam__atomic_bump(&c->allocs, 1);
    beam__atomic_bump(&c->bytes, (int64_t)len);
}

static BEAM__ALWAYS_INLINE int64_t beam__count_free_fast(beam__counters *c,
                                                         size_t len) {
    beam__atomic_bump(&c->frees, 1);
    return beam__count_bytes(c, -(int64_t)len);
}

/* Publish a rise when it reaches a step, and a fall at once (a cushion
 * below, beam__publish): the published total then never exceeds what is
 * live, so neither does the peak taken from it (a thread's part lags its
 * live bytes by less than a step: the peak can be low, never high). A fall
 * is published only when the live bytes go below what was published, which
 * the cushion puts out of reach of churn's small moves. bytes: c's live
 * bytes as its owner last wrote them. */
static BEAM__ALWAYS_INLINE bool beam__publish_due_at(const beam__counters *c,
                                                     int64_t bytes) {
    /* d >= STEP || d < 0 for d = bytes - mark, in one unsigned compare,
     * which also keeps the difference defined when it wraps: the raw
     * allocator asks before its backend's call, where bytes can include
     * a length near the limit (due, as it wraps or not), and an unlisted
     * mark is far below any count (BEAM__MARK_UNLISTED). */
    return (uint64_t)bytes - (uint64_t)c->mark >= (uint64_t)BEAM__PUBLISH_STEP;
}

static inline void beam__count_alloc(beam__counters *c, beam__peak *p,
                                     size_t len) {
    if (BEAM__UNLIKELY(beam__publish_due_at(c, beam__count_alloc_fast(c, len))))
        beam__publish(c, p);
}

static BEAM__ALWAYS_INLINE void beam__count_free(beam__counters *c,
                                                 beam__peak *p, size_t len) {
    if (BEAM__UNLIKELY(beam__publish_due_at(c, beam__count_free_fast(c, len))))
        beam__publish(c, p);
}

/* c, p's locked_part counter (lock held), moved to bytes live: published
 * exactly, a plain store, and the peak raised if the total now passes it
 * (two loads and a compare; the compare-and-swap only past the peak). The
 * steps above would publish about every other medium call (blocks of 8-64
 * KiB against a 16 KiB cushion and a 64 KiB step): a branch mispredicted
 * as often, and a call and a locked add on a shared line when taken
 * (standalone paired churn of 1-64 KiB: 1.60x mimalloc with them, 1.52x
 * with no publication at all). */
static BEAM__ALWAYS_INLINE void beam__count_locked(beam__peak *p,
                                                   int64_t bytes) {
    beam__atomic_store_relaxed(&p->locked_part, bytes);
    int64_t live = beam__atomic_load_relaxed(&p->published) + bytes;
    if (BEAM__UNLIKELY(live > beam__atomic_load_relaxed(&p->peak)))
        beam__peak_observe(p, live);
}

static BEAM__ALWAYS_INLINE void
beam__count_alloc_locked(beam__counters *c, beam__peak *p, size_t len) {
    beam__count_locked(p, beam__count_alloc_fast(c, len));
}

static BEAM__ALWAYS_INLINE void
beam__count_free_locked(beam__counters *c, beam__peak *p, size_t len) {
    beam__count_locked(p, beam__count_free_fast(c, len));
}

/* A block changed size in place (or moved, counted as one block). */
static inline void beam__count_resize(beam__counters *c, beam__peak *p,
                                      size_t len, size_t new_len) {
    int64_t bytes = beam__count_bytes(c, (int64_t)new_len - (int64_t)len);
    if (BEAM__UNLIKELY(beam__publish_due_at(c, bytes)))
        beam__publish(c, p);
}

/* Add c into a beam_alloc_stats being folded. */
BEAM__HIDDEN void beam__stats_add(beam_alloc_stats *out,
                                  const beam__counters *c);
/* Fold c into the retired counters r (c's owner is going away). */
BEAM__HIDDEN void beam__counters_retire(beam__counters *r, beam__counters *c,
                                        beam__peak *p);

/* Per-thread state kept out of the thread-local block (thread_exit.c).
 * A dlopen'ed NIF reaches its thread-local variables through TLS
 * descriptors: when the library's whole thread-local block fits in the
 * static TLS glibc keeps spare for libraries loaded later
 * (glibc.rtld.optional_static_tls, 512 bytes by default), glibc places it
 * there and an access costs a couple of instructions; otherwise every
 * access is a call into the dynamic linker (_dl_tlsdesc_dynamic, ~15
 * instructions, two per GPA alloc+free). glibc decides at load time and
 * falls back by itself, so nothing can fail: the thread-local block just
 * holds only what the fast paths need, and the buffers go here, taken from
 * the system allocator on a thread's first use and given back when it
 * exits (or when the library is unloaded first). The spare is one budget
 * for the whole process: the first NIF library loaded gets the fast
 * access, later ones (and one whose own thread-locals push it past 512
 * bytes) the call. Before glibc 2.32 that spare was shared with libraries
 * built for initial-exec TLS; there a few NIF libraries could take what
 * such a library, dlopen'ed later, needs. */
#define BEAM__TRACE_CACHE_SLOTS 64
#define BEAM__NIF_NAME_MAX 1200
struct beam__trace;
typedef struct beam__thread_cold {
    char misuse_line[BEAM__MISUSE_LINE]; /* beam__misuse_line() */
    const struct beam__trace *trace_cache[BEAM__TRACE_CACHE_SLOTS]; /* frames.c
                                                                     */
    char nif_name[BEAM__NIF_NAME_MAX]; /* beam_nif_function_name */
    size_t raw_refused_alignment; /* raw.c: its last refusal, 0 once read */
    uintptr_t raw_refused_ret;    /* and that call's return address */
    /* gpa_heap.c: frees in a row into the instance of that id by this
     * thread, which has no heap of it. */
    uint64_t gpa_free_streak_id;
    unsigned gpa_free_streak;
    struct beam__thread_cold *prev, *next; /* every live one (thread_exit.c) */
} beam__thread_cold;
/* This thread's, made on first use; NULL when out of memory. */
BEAM__HIDDEN beam__thread_cold *beam__cold(void);
/* Give back every thread's cold block, for a library being unloaded while
 * its threads live on. Nothing of the library runs meanwhile but the
 * thread-exit hook of an exiting thread, which the list's lock and its
 * generation keep from freeing a block twice; a thread that runs the
 * library again (a copy that stays mapped) gets a new block. */
BEAM__HIDDEN void beam__cold_release_all(void);
/* How many cold blocks are live (tests). */
BEAM__HIDDEN size_t beam__cold_count(void);

/* Thread exit (thread_exit.c): arm the library's one exit hook for this
 * thread; when the thread ends it runs these cleanups, in this order. */
BEAM__HIDDEN void beam__thread_exit_arm(void);
BEAM__HIDDEN void beam__gpa_thread_exit(void);   /* gpa_heap.c */
BEAM__HIDDEN void beam__stats_thread_exit(void); /* stats.c */

/* fork() (fork.c): a thread that forks while another holds one of the
 * library's locks would leave it held for good in the child, whose one
 * thread then hangs at its next take. So the fork handlers take every lock
 * before the fork, in one order (fork.c says which and why it cannot
 * deadlock), and drop them after it in the parent and in the child.
 * beam__fork_guard registers them, once, from each first use of a lock;
 * each module's beam__..._fork takes its locks (BEAM__FORK_PREPARE) or
 * drops them (PARENT, CHILD: the child may also forget other threads). */
typedef enum beam__fork_phase {
    BEAM__FORK_PREPARE,
    BEAM__FORK_PARENT,
    BEAM__FORK_CHILD
} beam__fork_phase;
BEAM__HIDDEN void beam__fork_guard(void);
BEAM__HIDDEN void beam__stats_named_fork(beam__fork_phase phase);
BEAM__HIDDEN void beam__report_fork(beam__fork_phase phase);
BEAM__HIDDEN void beam__gpa_fork(beam__fork_phase phase); /* gpa_heap.c */
BEAM__HIDDEN void beam__set_fork(beam__fork_phase phase);
BEAM__HIDDEN void beam__frames_fork(beam__fork_phase phase);
BEAM__HIDDEN void beam__stats_fork(beam__fork_phase phase);
BEAM__HIDDEN void beam__cold_fork(beam__fork_phase phase); /* thread_exit.c */
/* A pthread mutex's part in a fork: taken before it, dropped after. */
static inline void beam__fork_mutex(pthread_mutex_t *m,
                                    beam__fork_phase phase) {
    if (phase == BEAM__FORK_PREPARE)
        pthread_mutex_lock(m);
    else
        pthread_mutex_unlock(m);
}

/* The raw and large allocators' counters of the calling thread: one
 * thread-local access, inline, rather than a call per count (they are
 * counted on every raw allocation and free). A thread's counters join the
 * list stats.c folds on its first allocation. */
enum { BEAM__RAW, BEAM__LARGE, BEAM__KINDS };
typedef struct beam__thread_stats {
    beam__counters kind[BEAM__KINDS];
    bool listed;
    /* raw.c: the length of the raw allocation under way, counted before
     * the backend's call, for its take-back should the call fail (kept
     * here, len lived in a saved register across every call). Below a
     * publication step: a count that publishes takes another path. */
    uint32_t raw_pending;
    struct beam__thread_stats *next, *prev;
} beam__thread_stats;
BEAM__HIDDEN extern BEAM_THREAD_LOCAL beam__thread_stats beam__stats_mine;
BEAM__HIDDEN BEAM__NOINLINE void beam__stats_list_thread(void);
/* In a NIF, beam__stats_mine's cached offset (os/tls.h), learned when a
 * thread is listed. Without it every count would start with the linker's
 * call (raw allocator: ~3% of an enif_alloc+enif_free). */
#if defined(BEAM__HAVE_TLS_OFFSET) && !defined(BEAM_ALLOC_STANDALONE)
#define BEAM__STATS_TLS_OFFSET 1
BEAM__HIDDEN extern _Atomic intptr_t beam__stats_tls_offset;
#endif

/* The calling thread's counters (listed or not). A library in dynamic TLS
 * (every beam_alloc NIF loaded after the first, as the per-thread state
 * above says) keeps the ordinary access, the linker's call. */
static BEAM__ALWAYS_INLINE beam__thread_stats *beam__thread_stats_here(void) {
    beam__thread_stats *t;
#ifdef BEAM__STATS_TLS_OFFSET
    t = (beam__thread_stats *)beam__tls_cached(
        beam__atomic_load_relaxed(&beam__stats_tls_offset));
    if (BEAM__LIKELY(t != NULL))
        return t;
#endif
    t = &beam__stats_mine;
    /* One thread-local access, not one per field (in a dlopen'ed NIF each
     * can be a call): the empty asm hands the compiler an address it
     * cannot recompute. */
    __asm__("" : "+r"(t));
    return t;
}

/* A thread's counters' mark while it is not listed: so far below any
 * count that every count is due to publish (beam__publish_due_at), and
 * the publishing paths list the thread first (beam__thread_counters), so
 * that the raw allocator's fast paths count into beam__thread_counters_any
 * with no test of their own for it. Listing sets the marks to 0, a
 * thread's exit back to this (stats.c). */
#define BEAM__MARK_UNLISTED (INT64_MIN / 4)

/* The calling thread's counters of kind, listed or not: for a count whose
 * publication, always due while the thread is not listed, goes through
 * beam__thread_counters first. */
static BEAM__ALWAYS_INLINE beam__counters *beam__thread_counters_any(int kind) {
    return &beam__thread_stats_here()->kind[kind];
}

/* The calling thread's counters of kind once it is listed, else NULL
 * (then beam__thread_counters lists it). */
static BEAM__ALWAYS_INLINE beam__counters *
beam__thread_counters_listed(int kind) {
    beam__thread_stats *t = beam__thread_stats_here();
    return BEAM__LIKELY(t->listed) ? &t->kind[kind] : NULL;
}

/* The calling thread's counters of kind, listing the thread first when
 * needed. */
BEAM__HIDDEN BEAM__NOINLINE beam__counters *
beam__thread_counters_slow(int kind);
static inline beam__counters *beam__thread_counters(int kind) {
    beam__counters *c = beam__thread_counters_listed(kind);
    return BEAM__LIKELY(c != NULL) ? c : beam__thread_counters_slow(kind);
}
BEAM__HIDDEN extern beam__peak beam__kind_peak[BEAM__KINDS];
BEAM__HIDDEN bool beam__gpa_stats(void *ctx, beam_alloc_stats *out);
/* beam_gpa_collect on every general purpose instance registered for named
 * stats (stats_named.c). */
BEAM__HIDDEN void beam__stats_named_collect(void);
/* Every registered name, its counters and backing bytes, through fn, all
 * under the table's lock (one consistent reading: the NIF glue's
 * named_all hook); returns how many (stats_named.c). fn must not call the
 * functions of stats_named.c. */
typedef void beam__named_fn(void *arg, const char *name,
                            const beam_alloc_stats *stats,
                            size_t backing_bytes);
BEAM__HIDDEN size_t beam__stats_named_each(beam__named_fn *fn, void *arg);
/* Safe mode: report every freed block written since it was freed
 * (gpa_report.c); the number found. */
BEAM__HIDDEN size_t beam__gpa_check_freed(beam_gpa_t *gpa);
/* The kind of gpa's first misuse, on any thread, or NULL: none yet
 * (gpa_report.c). */
BEAM__HIDDEN const char *beam__gpa_first_misuse(beam_gpa_t *gpa);
/* Its report line (valid while gpa is), or NULL: none, or not whole yet. */
BEAM__HIDDEN const char *beam__gpa_first_misuse_line(beam_gpa_t *gpa);
/* gpa's state made now rather than at its first allocation (false: no
 * memory for it), so that even a misuse before any allocation is counted
 * and kept by kind: without state there is nothing to keep it in (gpa.c). */
BEAM__HIDDEN bool beam__gpa_prepare(beam_gpa_t *gpa);

#endif
