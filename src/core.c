/*
 * The calling helpers: the caller's half of the allocator contract. Every
 * check a vtable may rely on is made here, once, so that allocators stay
 * small: alignment is a power of two, lengths are non-zero and at most
 * PTRDIFF_MAX, counts times sizes do not overflow.
 *
 * These are out of line on purpose: __builtin_return_address(0) then names
 * the user's call site, which is what leak reports should show.
 *
 * The helpers skip the vtable for a general purpose allocator's small and
 * medium blocks and for the raw allocator (alloc_entry, free_entry).
 */
#include "gpa_fast.h"
#include "raw.h"

#include <stdio.h>

#include <string.h>

/* Zero-length blocks are never given to an allocator: they are this
 * sentinel, an address that is aligned, non-NULL and never dereferenced:
 * the highest one aligned to alignment, as Zig's is, in the top half of
 * the address space, which is the kernel's (x86-64, AArch64), so no block
 * of any allocator can be there, and the helpers tell it apart by its sign
 * whatever alignment a misuse gives it back with. */
static inline void *zero_len_block(size_t alignment) {
    return (void *)(uintptr_t)(0 - (uintptr_t)alignment);
}

/* An alignment that is not a power of two: a bug at the call, never an
 * answer the allocator gives (unlike a length too large for memory, which
 * input can ask for), so it is reported with the caller's site as well as
 * refused. */
static BEAM__NOINLINE void report_bad_alignment(const char *call, size_t len,
                                                size_t alignment,
                                                uintptr_t ret) {
    beam__report_misuse(BEAM__KIND_BAD_ALIGNMENT, ret,
                        "beam_alloc: %s of %zu bytes refused: alignment %zu "
                        "is not a power of two",
                        call, len, alignment);
}

/* A bad alignment first (reported), then len - 1 >= BEAM__MAX_LEN: len is
 * 0 or above the limit, in one test. Then what the
 * vtable would run: a GPA's general path directly (its fast paths have
 * had their try in alloc_entry), others, the raw allocator's edge cases
 * included, through the vtable. Out of line, like every call the entries
 * below make when their inline paths do not settle a call (the GPA's
 * medium and sub-slab ways, the raw allocator's own alloc and free, called
 * once the entry has checked the call), each a tail call, so
 * that the entries need no frame of their own and no copy of a on the
 * stack. It takes a's two words apart:
 * passed on whole, the struct went through the stack in every helper (gcc
 * 12: two stores, two loads and a frame adjustment per call, fast path
 * included). */
static BEAM__NOINLINE void *alloc_impl(void *ctx,
                                       const beam_allocator_vtable *vt,
                                       size_t len, size_t alignment,
                                       uintptr_t ret) {
    if (BEAM__UNLIKELY(!beam__is_pow2(alignment))) {
        report_bad_alignment("allocation", len, alignment, ret);
        return NULL;
    }
    if (BEAM__UNLIKELY(len - 1 >= BEAM__MAX_LEN))
        return len == 0 ? zero_len_block(alignment) : NULL;
    if (vt == &beam__gpa_vtable)
        return beam__gpa_alloc_general((beam_gpa_t *)ctx, len, alignment, ret);
    return beam__vtable_or_refusing(vt)->alloc(ctx, len, alignment, ret);
}

/* mem and len could be a block: a length from 1 to the limit, and an
 * address past the first 64 KiB and in the lower half (no allocator hands
 * one out elsewhere; the zero-length sentinels are in the upper half, one
 * signed compare for both). The
 * helpers rule the rest out without asking the allocator or reading the
 * memory; mem NULL or len 0, a call's "no block", fail it too, so callers
 * that accept those test them first. Two compares: the raw allocator's
 * inline free makes this very test. */
static BEAM__ALWAYS_INLINE bool real_block(const void *mem, size_t len) {
    return (intptr_t)mem >= (intptr_t)BEAM__MIN_BLOCK_ADDR &&
           len - 1 < BEAM__MAX_LEN;
}

/* A misuse like the GPA's wrong-length free (and counted as one, so that a
 * leak_check call raises with that kind, not as the leak it leaves). call:
 * "free", "resize", "remap" or "realloc"; what: the refusal's reason. */
BEAM__NOINLINE void beam__report_refused_as(const char *kind, const char *call,
                                            void *mem, size_t len,
                                            size_t alignment, uintptr_t ret,
                                            const char *what) {
    char caller[BEAM__CALLER_SAID], line[BEAM__REPORT_LINE];
    snprintf(line, sizeof line,
             "beam_alloc: %s of %p ignored: %s (length %zu, alignment %zu; "
             "%s)",
             call, mem, what, len, alignment,
             beam__caller_said(ret, caller, sizeof caller));
    beam__misuse_note(kind, line);
    beam__report_line(line);
}

/* A refused call's kind: a free's is free_kind, a resize's, remap's or
 * realloc's the resize kind. */
static const char *refused_kind(const char *call, const char *free_kind) {
    return strcmp(call, "free") == 0 ? free_kind : BEAM__KIND_RESIZE;
}

BEAM__NOINLINE void beam__report_refused(const char *call, void *mem,
                                         size_t len, size_t alignment,
                                         uintptr_t ret, const char *what) {
    beam__report_refused_as(refused_kind(call, BEAM__KIND_WRONG_FREE), call,
                            mem, len, alignment, ret, what);
}

BEAM__NOINLINE void beam__report_foreign(const char *call, void *mem,
                                         size_t len, size_t alignment,
                                         uintptr_t ret, const char *what) {
    beam__report_refused_as(refused_kind(call, BEAM__KIND_FOREIGN_FREE), call,
                            mem, len, alignment, ret, what);
}

static BEAM__NOINLINE void report_gpa_block(const char *call, const char *who,
                                            void *mem, size_t len,
                                            size_t alignment, uintptr_t ret) {
    char what[200];
    snprintf(what, sizeof what,
             "a block of a general purpose allocator, given to the %s "
             "allocator (only its own allocator can %s it)",
             who, call);
    beam__report_foreign(call, mem, len, alignment, ret, what);
}

BEAM__NOINLINE void beam__report_not_newest(const char *call, void *mem,
                                            size_t len, size_t alignment,
                                            uintptr_t ret, const char *who) {
    char what[160];
    snprintf(what, sizeof what,
             "wrong length or address: the block named ends where the %s's "
             "newest (live) block ends, but does not start where it starts",
             who);
    beam__report_refused(call, mem, len, alignment, ret, what);
}

BEAM__NOINLINE void beam__report_newest_length(const char *call, void *mem,
                                               size_t len, size_t alignment,
                                               uintptr_t ret, const char *who,
                                               size_t newest_len) {
    char what[160];
    snprintf(what, sizeof what,
             "wrong length: the block named starts where the %s's newest "
             "(live) block starts, but that one is %zu bytes long",
             who, newest_len);
    beam__report_refused(call, mem, len, alignment, ret, what);
}

static void report_impossible(const char *call, void *mem, size_t len,
                              size_t alignment, uintptr_t ret) {
    beam__report_refused(call, mem, len, alignment, ret,
                         "impossible length or alignment, or an address no "
                         "block has");
}

bool beam__refused_block(const char *call, const char *who, void *mem,
                         size_t len, size_t alignment, uintptr_t ret) {
    if (BEAM__UNLIKELY(!real_block(mem, len))) {
        report_impossible(call, mem, len, alignment, ret);
        return true;
    }
    if (BEAM__LIKELY(!gpa_map_holds(mem) && !beam__gpa_set_holds(mem)))
        return false;
    report_gpa_block(call, who, mem, len, alignment, ret);
    return true;
}

/* Checks, then as alloc_impl. */
static BEAM__NOINLINE void free_impl(void *ctx, const beam_allocator_vtable *vt,
                                     void *mem, size_t len, size_t alignment,
                                     uintptr_t ret) {
    if (BEAM__UNLIKELY(!real_block(mem, len) || !beam__is_pow2(alignment))) {
        if (mem != NULL && len != 0)
            report_impossible("free", mem, len, alignment, ret);
        return;
    }
    if (vt == &beam__gpa_vtable)
        beam__gpa_free_general((beam_gpa_t *)ctx, mem, len, alignment, ret);
    else if (BEAM__UNLIKELY(vt == NULL))
        beam__report_refused("free", mem, len, alignment, ret,
                             BEAM__SAID_NO_VTABLE);
    else
        vt->free(ctx, mem, len, alignment, ret);
}

/* free_impl for a GPA, called where the helpers hold their arguments
 * (unused: the vtable's place). A call of its own: given the vtable, the
 * compiler kept its address in a register through the inline free (it had
 * it from the vtable test), and then had to save one more register on
 * every call. Not static, so that no compiler drops the unused argument
 * and moves the others. */
BEAM__HIDDEN BEAM__NOINLINE void
beam__gpa_free_impl(void *ctx, const void *unused, void *mem, size_t len,
                    size_t alignment, uintptr_t ret);
void beam__gpa_free_impl(void *ctx, const void *unused, void *mem, size_t len,
                         size_t alignment, uintptr_t ret) {
    (void)unused;
    free_impl(ctx, &beam__gpa_vtable, mem, len, alignment, ret);
}

/* Shared by remap and realloc: the cases the vtable never sees. Returns
 * true when it settled the call, with the answer in *out. */
static bool remap_edge(const char *call, beam_allocator_t a, void *mem,
                       size_t len, size_t alignment, size_t new_len,
                       uintptr_t ret, void **out) {
    *out = NULL;
    if (!beam__is_pow2(alignment)) {
        report_bad_alignment(call, new_len, alignment, ret);
        return true;
    }
    if (new_len > BEAM__MAX_LEN)
        return true;
    if (mem != NULL && len != 0 && !real_block(mem, len)) {
        report_impossible(call, mem, len, alignment, ret);
        return true;
    }
    if (new_len == 0) {
        free_impl(a.ctx, a.vtable, mem, len, alignment, ret);
        *out = zero_len_block(alignment);
        return true;
    }
    return false;
}

BEAM__NOINLINE bool beam__null_instance(const void *instance, const char *fn,
                                        uintptr_t ret) {
    if (BEAM__LIKELY(instance != NULL))
        return false;
    beam__report_misuse(BEAM__KIND_NULL_INSTANCE, ret,
                        "beam_alloc: %s given NULL for its instance: nothing "
                        "done",
                        fn);
    return true;
}

/* ---- the refusing allocator (internal.h) ---- */

static void *refuse_alloc(void *ctx, size_t len, size_t alignment,
                          uintptr_t ret) {
    (void)ctx, (void)len, (void)alignment, (void)ret;
    return NULL;
}
static bool refuse_resize(void *ctx, void *mem, size_t len, size_t alignment,
                          size_t new_len, uintptr_t ret) {
    (void)ctx, (void)mem, (void)len, (void)alignment, (void)new_len, (void)ret;
    return false;
}
static void *refuse_remap(void *ctx, void *mem, size_t len, size_t alignment,
                          size_t new_len, uintptr_t ret) {
    (void)ctx, (void)mem, (void)len, (void)alignment, (void)new_len, (void)ret;
    return NULL;
}
static void refuse_free(void *ctx, void *mem, size_t len, size_t alignment,
                        uintptr_t ret) {
    (void)ctx, (void)mem, (void)len, (void)alignment, (void)ret;
}
const beam_allocator_vtable beam__refusing_vtable = {
    refuse_alloc, refuse_resize, refuse_remap, refuse_free};

beam_allocator_t beam__parent_not_self(beam_allocator_t parent,
                                       const void *self,
                                       const beam_allocator_vtable *own,
                                       const char *who, const char *noun,
                                       const char *role) {
    const char *given;
    if (parent.vtable == NULL)
        given = "a zero-initialised allocator (no vtable)";
    else if (parent.vtable == own && parent.ctx == self)
        given = "itself";
    else
        return parent;
    beam__report("beam_alloc: %s: the %s at %p was given %s as its %s; it "
                 "refuses every allocation",
                 who, noun, self, given, role);
    beam_allocator_t refusing = {NULL, &beam__refusing_vtable};
    return refusing;
}

/* ---- nesting (internal.h) ---- */

BEAM_THREAD_LOCAL beam__nesting_state beam__nesting;

/* Said once per descent; always false, for beam__nest_enter to return.
 * why: what was seen, when not the depth. */
BEAM__NOINLINE bool beam__nesting_refused(const char *why) {
    if (beam__nesting.broken)
        return false;
    beam__nesting.broken = true;
    if (why != NULL)
        beam__report("beam_alloc: %s: a cycle (an allocator built, through "
                     "others, on itself). The call fails.",
                     why);
    else
        beam__report("beam_alloc: allocators nested more than %d deep on "
                     "this thread: a cycle (an allocator built, through "
                     "others, on itself)? The call fails.",
                     BEAM__NESTING_MAX);
    return false;
}

/* The helpers' entries. A general purpose allocator's small and medium
 * blocks and the raw allocator skip the vtable: the GPA's fast paths run
 * inline (gpa_fast.h), and a call none of them settles goes to
 * alloc_impl or free_impl, checks included. */
static BEAM__ALWAYS_INLINE void *alloc_entry(beam_allocator_t a, size_t len,
                                             size_t alignment, uintptr_t ret) {
    if (a.vtable == &beam__gpa_vtable) {
        void *p = beam__gpa_alloc_fast((beam_gpa_t *)a.ctx, len, alignment);
        if (BEAM__LIKELY(p != NULL))
            return p;
        if (beam__gpa_is_medium_call(len, alignment))
            return beam__gpa_medium_alloc_entry(a.ctx, a.vtable, len, alignment,
                                                beam__ret_of(ret));
    } else if (a.vtable == &beam__raw_vtable &&
               BEAM__LIKELY(len - 1 < BEAM__MAX_LEN &&
                            beam__raw_alignment(alignment))) {
        return beam__raw_alloc(len);
    }
    return alloc_impl(a.ctx, a.vtable, len, alignment, beam__ret_of(ret));
}

static BEAM__ALWAYS_INLINE void free_entry(beam_allocator_t a, void *mem,
                                           size_t len, size_t alignment,
                                           uintptr_t ret) {
    if (a.vtable == &beam__gpa_vtable) {
        if (BEAM__LIKELY(beam__gpa_free_fast((beam_gpa_t *)a.ctx, mem, len,
                                             alignment, ret)))
            return;
        beam__gpa_free_impl(a.ctx, NULL, mem, len, alignment,
                            beam__ret_of(ret));
        return;
    } else if (a.vtable == &beam__raw_vtable &&
               BEAM__LIKELY(real_block(mem, len) &&
                            beam__raw_alignment(alignment) &&
                            len < BEAM_GPA_SMALL_MAX && !gpa_map_holds(mem))) {
        beam__raw_free(mem, len);
        return;
    }
    free_impl(a.ctx, a.vtable, mem, len, alignment, beam__ret_of(ret));
}

void *beam_alloc_bytes(beam_allocator_t a, size_t len, size_t alignment) {
    return alloc_entry(a, len, alignment, BEAM__RET_LAZY);
}

bool beam_resize_bytes(beam_allocator_t a, void *mem, size_t len,
                       size_t alignment, size_t new_len) {
    uintptr_t ret = BEAM__RET_ADDR();
    if (!beam__is_pow2(alignment)) {
        report_bad_alignment("resize", new_len, alignment, ret);
        return false;
    }
    if (new_len > BEAM__MAX_LEN)
        return false;
    if (len == 0 || mem == NULL)
        return new_len == 0;
    if (!real_block(mem, len)) {
        report_impossible("resize", mem, len, alignment, ret);
        return false;
    }
    if (new_len == 0) {
        free_impl(a.ctx, a.vtable, mem, len, alignment, ret);
        return true;
    }
    /* The same length too: only the allocator knows whether mem is a live
     * block (a GPA refuses and reports a freed or foreign one), and every
     * built-in one keeps a live block as it is. The same for remap and
     * realloc. */
    return beam__vtable_or_refusing(a.vtable)->resize(a.ctx, mem, len,
                                                      alignment, new_len, ret);
}

void *beam_remap_bytes(beam_allocator_t a, void *mem, size_t len,
                       size_t alignment, size_t new_len) {
    uintptr_t ret = BEAM__RET_ADDR();
    void *out;
    if (remap_edge("remap", a, mem, len, alignment, new_len, ret, &out))
        return out;
    if (len == 0 || mem == NULL)
        return NULL;
    return beam__vtable_or_refusing(a.vtable)->remap(a.ctx, mem, len, alignment,
                                                     new_len, ret);
}

static void *realloc_impl(beam_allocator_t a, void *mem, size_t len,
                          size_t alignment, size_t new_len, uintptr_t ret) {
    void *out;
    if (remap_edge("realloc", a, mem, len, alignment, new_len, ret, &out))
        return out;
    if (len == 0 || mem == NULL)
        return alloc_entry(a, new_len, alignment, ret);
    /* The copy below reads len bytes of mem. The allocator checks the
     * block in its remap, itself or through its parent (a failing or
     * resource allocator over a GPA): a remap that reported a misuse
     * refused the block, and nothing is read from it. */
    const beam_allocator_vtable *vt = beam__vtable_or_refusing(a.vtable);
    unsigned long misuse = beam__misuse.count;
    out = vt->remap(a.ctx, mem, len, alignment, new_len, ret);
    if (out != NULL || beam__misuse.count != misuse)
        return out;
    out = vt->alloc(a.ctx, new_len, alignment, ret);
    if (out == NULL)
        return NULL;
    memcpy(out, mem, len < new_len ? len : new_len);
    vt->free(a.ctx, mem, len, alignment, ret);
    return out;
}

void *beam_realloc_bytes(beam_allocator_t a, void *mem, size_t len,
                         size_t alignment, size_t new_len) {
    return realloc_impl(a, mem, len, alignment, new_len, BEAM__RET_ADDR());
}

void beam_free_bytes(beam_allocator_t a, void *mem, size_t len,
                     size_t alignment) {
    free_entry(a, mem, len, alignment, BEAM__RET_LAZY);
}

void *beam_alloc_array(beam_allocator_t a, size_t n, size_t size,
                       size_t alignment) {
    size_t len;
    if (beam_mul_overflow(n, size, &len))
        return NULL;
    return alloc_entry(a, len, alignment, BEAM__RET_LAZY);
}

void beam_free_array(beam_allocator_t a, void *p, size_t n, size_t size,
                     size_t alignment) {
    size_t len;
    if (beam_mul_overflow(n, size, &len)) {
        uintptr_t ret = BEAM__RET_ADDR();
        /* A misuse with its site, as a wrong length is (under leak_check
         * it raises as such, not as the leak it leaves). */
        if (p != NULL)
            beam__report_misuse(BEAM__KIND_WRONG_FREE, ret,
                                "beam_alloc: free of %p ignored: %zu elements "
                                "of %zu bytes overflow",
                                p, n, size);
        return;
    }
    free_entry(a, p, len, alignment, BEAM__RET_LAZY);
}

void *beam_realloc_array(beam_allocator_t a, void *p, size_t old_n,
                         size_t new_n, size_t size, size_t alignment) {
    size_t old_len, new_len;
    if (beam_mul_overflow(old_n, size, &old_len) ||
        beam_mul_overflow(new_n, size, &new_len))
        return NULL;
    return realloc_impl(a, p, old_len, alignment, new_len, BEAM__RET_ADDR());
}

/* The same, for shims that pass their own caller's address. */
void *beam_alloc_bytes_at(beam_allocator_t a, size_t len, size_t alignment,
                          uintptr_t ret_addr) {
    return alloc_entry(a, len, alignment, ret_addr);
}

void *beam_realloc_bytes_at(beam_allocator_t a, void *mem, size_t len,
                            size_t alignment, size_t new_len,
                            uintptr_t ret_addr) {
    return realloc_impl(a, mem, len, alignment, new_len, ret_addr);
}

void beam_free_bytes_at(beam_allocator_t a, void *mem, size_t len,
                        size_t alignment, uintptr_t ret_addr) {
    free_entry(a, mem, len, alignment, ret_addr);
}
