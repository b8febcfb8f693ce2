/*
 * beam_alloc.h: allocators for Erlang/Elixir NIFs written in C and C++.
 *
 * One interface (an allocator is a context pointer plus a const vtable, the
 * contract of Zig's std.mem.Allocator) and the allocators of the Zigler
 * allocator guide behind it:
 *
 *   beam_raw_allocator              enif_alloc; tracked by the VM; align <= 8
 *   beam_large_allocator            any power-of-two alignment, over raw
 *   beam_general_purpose_allocator  fast, thread-safe, leak detection
 *   beam_allocator                  thread-local, set on entry to each NIF
 *   arena / fixed buffer / failing  composable wrappers over any allocator
 *
 * Two builds share these sources: libbeam_alloc.a (backed by enif_alloc, for
 * NIFs) and libbeam_alloc_standalone.a (backed by malloc, for plain C, unit
 * tests, fuzzers and sanitizers). This header reads the same in both and
 * never includes <erl_nif.h>; the NIF glue (BEAM_NIF, BEAM_NIF_INIT, term
 * helpers, resource-scoped allocators) is in <beam_alloc_nif.h>.
 *
 * Sections:
 *   1. Portability macros
 *   2. The allocator interface (vtable contract)
 *   3. Calling helpers and typed macros
 *   4. The built-in allocators: raw, large, beam_allocator
 *   5. General purpose allocator
 *   6. Composable allocators: arena, fixed buffer, failing
 *   7. Diagnostics
 *   8. Malloc-style calls and shims (for C libraries' allocator hooks)
 *   9. Named stats
 */
#ifndef BEAM_ALLOC_H
#define BEAM_ALLOC_H

/* 64-bit targets only: the general purpose allocator packs a count into
 * the top 16 bits of a pointer-sized word, and its table from addresses to
 * slabs covers those below 2^48 in two levels. Said before any
 * #include, so that it is a build's first error even where the target's C
 * library is missing; the Makefile preprocesses this header before it
 * compiles anything, so that it is the only one. The pointer's size, as
 * GCC and clang (the compilers this header is for: it uses their
 * attributes) give it before any header: not __x86_64__ or __LP64__ (x32
 * defines __x86_64__ with 32-bit pointers), not long's size (32-bit on
 * 64-bit Windows), not UINTPTR_MAX (<stdint.h> first). The message names
 * Nerves' systems by architecture only: one board can have a 32-bit system
 * and a 64-bit one (the Zero 2 W), and the list changes. */
#if defined(__SIZEOF_POINTER__) && __SIZEOF_POINTER__ != 8
#error                                                                         \
    "beam_alloc needs a 64-bit target (tested on x86_64 Linux, and on aarch64 Linux under qemu): 32-bit ones are not supported, such as i386, x32 (-mx32) and 32-bit ARM (armv6/armv7, as Nerves' 32-bit Raspberry Pi systems); for a board that also has a 64-bit (aarch64) system, use that one"
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------------------
 * 1. Portability macros
 * ---------------------------------------------------------------------- */

#ifdef __cplusplus
extern "C" {
#define BEAM_THREAD_LOCAL thread_local
#define BEAM_ALIGNOF(T) alignof(T)
#define BEAM_ALIGNOF_EXPR(e) alignof(decltype(e))
#define BEAM_CAST_LIKE(p, e) (static_cast<decltype(+(p))>(e))
/* What the headers' macros and inline functions expand to in a user's
 * code: the C++ forms, so that a C++ project building with
 * -Wold-style-cast or -Wzero-as-null-pointer-constant as errors can
 * include them (make header-test compiles test/header/sample_nif.c so). */
#define BEAM_INTERNAL_AS(T, e) (static_cast<T>(e))
#define BEAM_INTERNAL_NULL nullptr
/* A const allocator pointer as a C library's void * context (zlib's
 * opaque, zstd's customMem), which the hooks read back as const. */
#define BEAM_INTERNAL_UNCONST(a) (const_cast<beam_allocator_t *>(a))
#else
#define BEAM_THREAD_LOCAL _Thread_local
#define BEAM_ALIGNOF(T) _Alignof(T)
#define BEAM_ALIGNOF_EXPR(e) _Alignof(__typeof__(e))
#define BEAM_CAST_LIKE(p, e) ((__typeof__(p))(e))
#define BEAM_INTERNAL_AS(T, e) ((T)(e))
#define BEAM_INTERNAL_NULL NULL
/* (Through an integer: -Wcast-qual warns of a const dropped by a cast.) */
#define BEAM_INTERNAL_UNCONST(a) ((void *)(uintptr_t)(a))
#endif

#if defined(__GNUC__) || defined(__clang__)
#define BEAM_API __attribute__((visibility("default")))
#define BEAM_NODISCARD __attribute__((warn_unused_result))
#else
#define BEAM_API
#define BEAM_NODISCARD
#endif

/* The adapter headers' hooks (include/beam_alloc/): static, out of line so
 * that BEAM_RET_ADDR names the C library's caller, and quiet in a
 * translation unit that includes the header and never uses them (no
 * -Wunused-function). clang: inline, since its -Wused-but-marked-unused
 * (in -Weverything) warns of every use of a function marked unused; GCC
 * warns of an inline function marked noinline, and has no such warning. */
#if defined(__clang__)
#define BEAM_INTERNAL_HOOK static inline __attribute__((noinline))
#elif defined(__GNUC__)
#define BEAM_INTERNAL_HOOK static __attribute__((noinline, unused))
#else
#define BEAM_INTERNAL_HOOK static inline
#endif

/* Unused on purpose: a NIF body's env, argc and argv (BEAM_NIF), and the
 * hooks BEAM_MALLOC_HOOKS defines in a user's file (who may set a library's
 * malloc and free only). The standard attribute where there is one (C++17,
 * C23): clang's -Wused-but-marked-unused (in -Weverything) warns of every
 * use of what is marked __attribute__((unused)), not of [[maybe_unused]]. */
#if defined(__cplusplus) && __cplusplus >= 201703L
#define BEAM_INTERNAL_UNUSED [[maybe_unused]]
#elif !defined(__cplusplus) && defined(__has_c_attribute) &&                   \
    __STDC_VERSION__ > 201710L
/* (GCC knows the attribute in C11 too, where -Wpedantic warns of it.) */
#if __has_c_attribute(maybe_unused)
#define BEAM_INTERNAL_UNUSED [[maybe_unused]]
#endif
#endif
#if !defined(BEAM_INTERNAL_UNUSED) && (defined(__GNUC__) || defined(__clang__))
#define BEAM_INTERNAL_UNUSED __attribute__((unused))
#elif !defined(BEAM_INTERNAL_UNUSED)
#define BEAM_INTERNAL_UNUSED
#endif

/* Names: everything public starts with beam_ (macros BEAM_); every struct
 * and enum type has a name ending in _t (some also an older one without,
 * kept), function pointer types end in _fn; nothing a user sees contains a
 * double underscore. */

/** Largest alignment the raw allocator (enif_alloc) guarantees. */
#define BEAM_MAX_ALIGN 8

/* ------------------------------------------------------------------------
 * 2. The allocator interface
 *
 * An allocator is a context pointer and a const table of four functions.
 * The contract is Zig's std.mem.Allocator; the calling helpers of section 3
 * enforce the caller's side of it, so a vtable function may rely on:
 *   - len > 0 and new_len > 0 (zero lengths never reach a vtable through
 *     the helpers; a free of NULL with len 0, which a direct caller of
 *     the vtable may make, must do nothing, as the library's allocators'
 *     frees do; a resize or remap to 0 from such a caller the library's
 *     allocators refuse: false, NULL, nothing changed);
 *   - alignment is a power of two;
 *   - mem, len and alignment describe a live block of this allocator, with
 *     len as it was last allocated or resized.
 * A vtable function in turn must never return misaligned memory, never
 * abort on exhaustion, and on failure leave the old block untouched. Its
 * blocks are real addresses, never in the first page (4096 bytes): the
 * helpers refuse such a pointer passed with a length, as a misuse.
 *
 * Allocators compose: a GPA over an arena over a failing allocator, and so
 * on. A cycle (an allocator built, through others, on itself) would ask
 * itself for memory without end; the library's allocators count how deeply
 * they are nested on a thread, and a call nested more than 48 deep fails
 * (NULL, or false) with a report, as does a resource allocator reached
 * again through its own parent on the thread that holds it, or whose
 * lock is held by a thread that waits, through other allocators, for one
 * this thread holds (resources built on each other, used by several
 * threads at once: the thread that would close the cycle fails instead of
 * waiting). Cycles through locks of the caller's own, or through another
 * copy of the library, are not seen. A GPA, arena or failing allocator
 * given itself is refused at init already.
 *
 * A parent must outlive what is built on it: deinit the GPA or arena over
 * an arena or a GPA before that parent, whose deinit gives back the
 * memory the child still uses (the child is not told; its next call
 * would use memory that is gone). An arena's reset gives back its blocks
 * as well, a child's chunks or segments among them: deinit the child
 * first (or, for an arena, reset it with BEAM_ARENA_FREE_ALL: its default
 * reset keeps a chunk, which the parent's reset then hands out again).
 * ---------------------------------------------------------------------- */

typedef struct beam_allocator_vtable {
    /** New block of len bytes aligned to alignment, or NULL (out of memory,
     * or an alignment this allocator does not serve). */
    void *(*alloc)(void *ctx, size_t len, size_t alignment, uintptr_t ret_addr);
    /** Grow or shrink in place. true: the block at mem now has new_len
     * usable bytes. false: nothing changed. */
    bool (*resize)(void *ctx, void *mem, size_t len, size_t alignment,
                   size_t new_len, uintptr_t ret_addr);
    /** Like resize, but may move the block (contents preserved up to the
     * smaller length). NULL: nothing changed, the caller must allocate, copy
     * and free itself. */
    void *(*remap)(void *ctx, void *mem, size_t len, size_t alignment,
                   size_t new_len, uintptr_t ret_addr);
    /** Give the block back. mem NULL (len 0): nothing to do. */
    void (*free)(void *ctx, void *mem, size_t len, size_t alignment,
                 uintptr_t ret_addr);
} beam_allocator_vtable;
typedef beam_allocator_vtable beam_allocator_vtable_t;

/** An allocator: passed and copied by value, two words. A zero-initialised
 * one ({0}, no vtable) refuses every call: alloc and remap NULL, resize
 * false, a free of a block reported and ignored; an allocator built on it
 * (GPA, arena, failing) refuses every allocation, said in a report at
 * init. */
typedef struct beam_allocator {
    void *ctx;
    const beam_allocator_vtable *vtable;
} beam_allocator_t;

/* ------------------------------------------------------------------------
 * 3. Calling helpers and typed macros
 *
 * Use these rather than the vtable. They check what the vtable may assume:
 * a non-power-of-two alignment or a length above PTRDIFF_MAX fails (NULL or
 * false) before the allocator is asked; zero lengths are answered here. A
 * bad alignment (0 included), always a bug at the call, is also reported
 * (section 7) as a misuse of kind "alignment not a power of two", with the
 * caller's site; a length too large is not (input may ask for one).
 * ret_addr passed to the vtable is the helper's caller.
 * ---------------------------------------------------------------------- */

/** Allocate len bytes aligned to alignment. len == 0 returns a non-NULL
 * sentinel (never dereference it) that beam_free_bytes(a, p, 0, alignment)
 * accepts: the highest address aligned to alignment, as Zig's, where no
 * block can be (given back with a length, it is refused and reported). NULL
 * when the allocator cannot serve the request. */
BEAM_API BEAM_NODISCARD void *beam_alloc_bytes(beam_allocator_t a, size_t len,
                                               size_t alignment);

/** Resize in place. true: the block now has new_len bytes at the same
 * address (new_len == 0 frees it). false: nothing changed. */
BEAM_API BEAM_NODISCARD bool beam_resize_bytes(beam_allocator_t a, void *mem,
                                               size_t len, size_t alignment,
                                               size_t new_len);

/** Resize in place or move. NULL: nothing changed, the caller must copy. */
BEAM_API BEAM_NODISCARD void *beam_remap_bytes(beam_allocator_t a, void *mem,
                                               size_t len, size_t alignment,
                                               size_t new_len);

/** Remap, else allocate + copy + free. NULL on failure, and then the old
 * block is still valid and still owned by the caller. */
BEAM_API BEAM_NODISCARD void *beam_realloc_bytes(beam_allocator_t a, void *mem,
                                                 size_t len, size_t alignment,
                                                 size_t new_len);

/** Free a block. mem == NULL or len == 0 does nothing. */
BEAM_API void beam_free_bytes(beam_allocator_t a, void *mem, size_t len,
                              size_t alignment);

/* The typed forms. Counts are element counts; count * size overflow is
 * checked in one place (beam_mul_overflow) and gives NULL. */

/** true when a * b overflows size_t (then *out is unspecified). */
static inline bool beam_mul_overflow(size_t a, size_t b, size_t *out) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_mul_overflow(a, b, out);
#else
    *out = a * b;
    return a != 0 && *out / a != b;
#endif
}

BEAM_API BEAM_NODISCARD void *beam_alloc_array(beam_allocator_t a, size_t n,
                                               size_t size, size_t alignment);
BEAM_API void beam_free_array(beam_allocator_t a, void *p, size_t n,
                              size_t size, size_t alignment);
BEAM_API BEAM_NODISCARD void *beam_realloc_array(beam_allocator_t a, void *p,
                                                 size_t old_n, size_t new_n,
                                                 size_t size, size_t alignment);
/** max(alignment, natural); alignment itself when it is not a power of two
 * (so the call fails, and its report gives the alignment as written). */
static inline size_t beam_align_at_least(size_t alignment, size_t natural) {
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        return alignment;
    return alignment > natural ? alignment : natural;
}

/** n elements of T, aligned to T's alignment. NULL on overflow or OOM. */
#define beam_alloc(a, T, n)                                                    \
    BEAM_INTERNAL_AS(T *,                                                      \
                     beam_alloc_array((a), (n), sizeof(T), BEAM_ALIGNOF(T)))
/** n elements of T, aligned to max(alignment, alignof(T)). */
#define beam_alloc_aligned(a, T, n, alignment)                                 \
    BEAM_INTERNAL_AS(T *, beam_alloc_array((a), (n), sizeof(T),                \
                                           beam_align_at_least(                \
                                               (alignment), BEAM_ALIGNOF(T))))
/** Free what beam_alloc(a, T, n) returned. */
#define beam_free(a, p, n)                                                     \
    beam_free_array((a), (p), (n), sizeof(*(p)), BEAM_ALIGNOF_EXPR(*(p)))
/** Free what beam_alloc_aligned(a, T, n, alignment) returned. */
#define beam_free_aligned(a, p, n, alignment)                                  \
    beam_free_array((a), (p), (n), sizeof(*(p)),                               \
                    beam_align_at_least((alignment), BEAM_ALIGNOF_EXPR(*(p))))
/** Resize an array from old_n to new_n elements; NULL on failure (p stays
 * valid). */
#define beam_realloc(a, p, old_n, new_n)                                       \
    BEAM_CAST_LIKE(p,                                                          \
                   beam_realloc_array((a), (p), (old_n), (new_n),              \
                                      sizeof(*(p)), BEAM_ALIGNOF_EXPR(*(p))))
/** One T. */
#define beam_create(a, T) beam_alloc(a, T, 1)
/** Free what beam_create returned. */
#define beam_destroy(a, p) beam_free(a, p, 1)

/* ------------------------------------------------------------------------
 * 4. The built-in allocators
 * ---------------------------------------------------------------------- */

/** enif_alloc / enif_realloc / enif_free (malloc in the standalone build).
 * Memory is tracked by the VM (:erlang.memory(:system)). Alignments above
 * BEAM_MAX_ALIGN fail with NULL. Resize succeeds only when shrinking; remap
 * uses enif_realloc. Stateless: ctx is NULL. It keeps nothing about its
 * blocks, so a double or foreign free goes to enif_free as it is (the
 * general purpose allocator catches those), but for a block of a general
 * purpose allocator of the same library (one NIF freeing what another,
 * with a GPA as its allocator, took): a free, resize or remap of one is
 * refused with a report (a misuse), where enif_free would crash the VM.
 * The large allocator does the same. A slab's block is known by the GPA's
 * address map (some 19 instructions a free); a block above the slab
 * classes, which is the GPA backing's own, by a set of them all, asked
 * (under a mutex, one of 64 by address) by every free of BEAM_GPA_SMALL_MAX
 * bytes or more and every resize or remap while a GPA holds one. */
BEAM_API extern const beam_allocator_t beam_raw_allocator;

/* For <beam_alloc.hpp>, not to be called directly: true, once, when the
 * raw allocator's last refusal on this thread was of alignment, above
 * BEAM_MAX_ALIGN, in a call made with return address ret (through any
 * wrapper that passes it on: its C++ adapters then say so rather than out
 * of memory). */
BEAM_API bool beam_internal_raw_refused_alignment(size_t alignment,
                                                  uintptr_t ret);
/* For the adapter headers (include/beam_alloc/), not to be called
 * directly: keeps the shared object this copy of beam_alloc is linked into
 * (the NIF library) mapped until the process exits, its allocators
 * untouched by its last unload: hooks in it given to something that
 * outlives it (one libsqlite3 for every NIF library of the VM; a zlib
 * stream or zstd context in a resource whose type a new copy takes over)
 * stay callable after a hot upgrade or a purge. false when no dlopen holds
 * it (not a shared object); the allocators stay all the same. The first
 * call does the work; later ones only say what it did. */
BEAM_API bool beam_internal_keep_mapped(void);
/* How the C++ exceptions beam_alloc throws begin their what(): a NIF's
 * raise of one gives the text after it (beam_alloc_nif.h). */
#define BEAM_INTERNAL_CXX_TEXT "beam_alloc: "
#ifdef __cplusplus
/* The text after BEAM_INTERNAL_CXX_TEXT when what begins with it (an
 * exception of beam_alloc's own), else NULL. */
static inline const char *beam_internal_cxx_own_text(const char *what) {
    const char *p = BEAM_INTERNAL_CXX_TEXT;
    while (*p != '\0' && *what == *p) {
        p++;
        what++;
    }
    return *p == '\0' ? what : nullptr;
}
#endif

/** Any power-of-two alignment, on top of the raw allocator, so still tracked
 * by the VM. Alignments <= BEAM_MAX_ALIGN pass straight to the raw allocator
 * at no cost. Larger alignments cost a penalty: each block takes
 * len + alignment + 8 bytes from the raw allocator (a 4096-aligned 100-byte
 * block takes 4204 bytes). Shrinks in place; grows in place within the
 * slack; remap may move through enif_realloc. A free, resize or remap at
 * an alignment above BEAM_MAX_ALIGN is refused with a report (a misuse)
 * when the address is not aligned to it, or the block's header is not
 * found below it or cannot hold the length; a block allocated above
 * BEAM_MAX_ALIGN and freed at or below it cannot be told from a raw block,
 * and goes to enif_free as the raw allocator's do. Reading the header needs
 * its memory still mapped: a second free, resize or remap of a freed
 * block (or of a block's old address after a remap moved it) is refused
 * (reported as a double free, or a use after free) only
 * while the system keeps the freed memory (glibc's
 * malloc unmaps blocks of 128 KiB and more at once, enif_alloc its
 * single-block carriers); otherwise it faults, as a second free() would. */
BEAM_API extern const beam_allocator_t beam_large_allocator;

/** The allocator a NIF should use. Set on entry to every NIF declared with
 * BEAM_NIF (default beam_raw_allocator, or that NIF's .allocator option).
 * Raw NIFs do not set it, nor do BEAM_NIF_INIT's load, upgrade and unload
 * callbacks or resource destructors: there it holds whatever the thread
 * last had. Its initial value on every thread is beam_raw_allocator: a
 * thread a NIF starts (enif_thread_create) sees that, not the NIF's
 * allocator; pass it a copy (see .leak_check for how long one lasts). */
BEAM_API extern BEAM_THREAD_LOCAL beam_allocator_t beam_allocator;

/* ------------------------------------------------------------------------
 * 5. General purpose allocator
 *
 * Thread-safe, built for small-block churn: each thread gets its own heap
 * per instance, small blocks (<= BEAM_GPA_SMALL_MAX) come from 64 KiB slabs
 * of one size class carved out of larger chunks ("segments", which grow
 * with the instance up to 4 MiB) of the backing allocator (so memory stays
 * tracked by the VM when the backing is), with no per-block header. A
 * thread's first slabs of a class are smaller ("sub-slabs": a few 4 KiB
 * pages of a shared slab, or of the room a segment needs to align its
 * slabs): a thread with a few blocks of many sizes holds tens to hundreds
 * of KiB beyond 1.5 times their bytes, not a slab per class (more a thread
 * when many threads share the instance: README, "What a small live set
 * costs", has what a 64-scheduler node held). Medium
 * blocks, above BEAM_GPA_SMALL_MAX up to 64 KiB, are runs of 4 KiB pages in
 * slabs shared by all medium sizes (untracked instances; tracked ones
 * record them as large blocks). Larger blocks pass through to the backing
 * allocator at their alignment, so over the raw allocator (8 at most) one
 * at a larger alignment fails: back such an instance with the large
 * allocator. The instance keeps up to 16 freed ones (512 KiB in all with
 * what their alignment costs the backing) for reuse; one is not resized
 * or remapped below BEAM_GPA_SMALL_MAX bytes at an alignment of 8 or less
 * (the call fails, and a realloc moves it into a slab: the raw
 * allocator's free checks a block that small only against the slabs).
 * Small blocks freed by another thread go back without a lock. Misuse
 * (double free, a pointer it does not own, a wrong length or alignment) is
 * reported through the report hook (section 7), and the process keeps
 * running: a double or foreign free is ignored; a free of a live block
 * with a wrong length or alignment frees the block anyway (the report says
 * "freed anyway") unless the length names another kind of block (a medium
 * block freed with a small length, a small one with a length above the
 * classes: "not freed").
 *
 * Composition: an instance may be the backing of another, to any depth (GPA
 * over GPA over GPA), and any number of instances may be used from one
 * thread. No call holds a lock of the allocator while it calls the backing
 * allocator or another instance, so composition cannot deadlock.
 *
 * What is held, and when it goes back:
 *   - A thread's heap allocates from one slab per size class. It keeps
 *     empty ones for up to 4 classes (so alloc/free of one block does not
 *     cycle slabs). Its first ones of a class are
 *     sub-slabs of growing size (512 KiB of them at most per heap); a class
 *     whose blocks the heap's thread has freed 1024 times into sub-slabs
 *     takes whole slabs only (their frees are cheaper) until the heap is
 *     collected. A sub-slab that leaves its heap
 *     empty gives its pages back to their slab.
 *   - A slab that fills up leaves its heap. When the heap's own thread
 *     frees a block into it before other threads' frees requeue it, the
 *     heap takes it back (up to 32 such slabs per class) and allocates from
 *     it when its current slab of that class runs out; it goes back to the
 *     instance's pool the moment the heap's thread frees its last block,
 *     and to the instance when the heap is retired or collected. Until
 *     then its free blocks serve that heap alone: one whose last blocks
 *     other threads free stays with an idle heap (up to 32 slabs per
 *     class). Otherwise, once an eighth of its blocks are freed (by any
 *     thread) it is reusable by every heap; once all are free it goes back
 *     to the instance's pool when a heap refilling that class finds it, or
 *     at beam_gpa_collect (in a node running the beam_alloc application,
 *     its collector calls that on a NIF library's process-wide instance,
 *     its named ones and its live BEAM_RESOURCE_GPA resources' (no other
 *     instances), once the library has idled for a second holding 4 MiB
 *     beyond what it keeps live, or has held that much at 30 ticks in a
 *     row while busy, counted over the first two alone: README).
 *     (A full slab with fewer than an eighth free stays out of reach until
 *     then: at most an eighth of a slab per slab.)
 *   - Medium blocks belong to the instance, not to a heap. A medium block
 *     takes whole 4 KiB pages (8193 bytes take 12 KiB), and two blocks of
 *     just over 32 KiB cannot share a slab. A freed medium block is kept
 *     whole for the next allocation of as many pages while there is room:
 *     at most 8 of each length, kept only while they come to no more than
 *     1/16 of the live medium bytes, and given back to their slabs when
 *     the live bytes fall until they are over 1/8; so none once no medium
 *     block is live, and none after beam_gpa_collect. A kept block keeps
 *     its slab; a medium slab goes back to the pool the moment its last
 *     block is back in it.
 *   - A thread's frees into slabs its heap does not own wait on the heap
 *     (up to 63 blocks) and reach their slabs at its next refill, or when
 *     the heap is retired or collected. A thread with no heap of the
 *     instance puts its frees straight into their slabs. When it frees 16
 *     blocks of the instance in a row (a consumer of another thread's
 *     blocks) and one of its eight slots is empty, it gets a heap (some
 *     1.3 KiB from the backing, once, then linked under the instance's
 *     lock; only when the chain of backings ends in the raw or the large
 *     allocator), which
 *     counts its frees without shared atomics and, until it allocates,
 *     still puts them straight into their slabs.
 *   - A segment whose slabs are all free goes back to the backing allocator
 *     as soon as the pool holds 8 more free slabs than the segment has, and
 *     always at beam_gpa_collect. But an instance that takes a segment
 *     again after giving one back (a live set freed whole and built again,
 *     each round taking from the backing, as fresh pages, what the last
 *     round's frees gave it) keeps slabs against that: at first the most
 *     it had in use (out of its pool) since it was made, collected or last
 *     lowered what it keeps, but no more than twice what it then holds;
 *     then each new high it grows to. No segment goes back below that.
 *     Once a second has passed (from when it started keeping, then from
 *     each lowering), a give-back this stopped, or else one of its next
 *     16 slab releases, lowers what it keeps to the most slabs it had in
 *     use since the last lowering (a second, or longer when it released
 *     few slabs), and the segments beyond go, one a slab release: a
 *     workload that repeats keeps what it needs, one that shrank and
 *     goes on releasing slabs keeps its old need one to two seconds. What
 *     is kept never exceeds what the instance held at once;
 *     beam_gpa_collect ends it (until such a growth again). The limit: the
 *     second is looked at only there, so an instance that releases no
 *     slab after such a drain (idle, or allocating and freeing within
 *     the slabs it holds: small blocks in its heaps' current slabs) keeps
 *     up to what it last needed until up to 16 slab releases later or
 *     beam_gpa_collect. The
 *     beam_alloc collector collects the process-wide, named and resource
 *     instances of a library idle for a second; any other instance (a
 *     NIF's own beam_gpa_t, a plain C program's) needs its owner's
 *     collect.
 *   - So, without collect, an instance never holds more slabs of a class
 *     than it held at once with live blocks of that class, plus 33 per heap
 *     and class (its current slab and up to 32 kept ones). Where the
 *     process-wide barrier works (Linux 4.14 and later, not filtered), a
 *     heap keeps more, up to 1,024 in all classes; those whose blocks
 *     other threads freed go back before the instance takes more from its
 *     backing allocator: the calling thread's, and those of four heaps
 *     whose threads are not inside a call (as collect takes them), the
 *     next growth the next four. Once another thread's free left one half
 *     free, a thread's every 256th refill of small blocks gives back its
 *     own heap's, and, at most every 100 ms an instance, those of four
 *     idle heaps that came to no 256th refill since (the next such refill
 *     the next four). With collect,
 *     it holds the slabs with live blocks and the segments they are in (a
 *     segment goes back only when wholly free).
 *   - A thread that exits, or uses so many instances that one of its eight
 *     per-thread slots is reused (slots of instances already gone are reused
 *     first), gives its heap's slabs to the instance in a step per current
 *     or kept slab (at most 32 current and 1,024 kept), however much it
 *     allocated: the pause is bounded by that, not by what is held (1,024
 *     kept slabs added ~15 us to the evicting call, standalone).
 *
 * A beam_gpa_t is usable once beam_gpa_init returns (it allocates lazily)
 * and until beam_gpa_deinit; it may then be initialised again. Initialised
 * again without its deinit, it abandons what it held: its blocks and its
 * state stay allocated from the backing, unreported (init cannot tell an
 * instance in use from uninitialised memory, nor one whose backing is gone
 * from one whose backing lives). Its memory stays marked as an instance's
 * too: should its backing give that memory back anyway (an arena deinit
 * under it), the raw and the large allocator refuse, as a general purpose
 * allocator's, blocks the system later places there. The fields are
 * internal; set options through beam_gpa_init_ex.
 * ---------------------------------------------------------------------- */

/** Largest block served from a size class; above it, blocks up to 64 KiB
 * are runs of pages (untracked instances), larger ones go to the backing. */
#define BEAM_GPA_SMALL_MAX 8192

/** Options for beam_gpa_init_ex. */
enum beam_gpa_flags {
    /** Record each block's exact size and allocation site: leak reports name
     * the site, and frees with a wrong length are caught exactly rather
     * than by size class. Costs 16 bytes per small block, off the block. */
    BEAM_GPA_TRACK_SITES = 1u << 0,
    /** Do not print leak reports from beam_gpa_deinit/detect_leaks (misuse
     * reports are always made). */
    BEAM_GPA_QUIET_LEAKS = 1u << 1,
    /** Safe mode (implies BEAM_GPA_TRACK_SITES), for tests and debugging;
     * on in leak_check calls. Every small block gets at least one canary
     * byte after it, and every large one (above BEAM_GPA_SMALL_MAX) 16,
     * checked at free: a write past the end is reported with the allocation
     * and free sites. New blocks are filled with 0xAA, freed ones with 0xDD
     * (small ones all but their first 16 bytes; large ones while they wait
     * in the instance's cache of freed blocks), and a freed block is
     * checked when reused (and, in leak_check calls, at the end of the
     * call): a write after free is reported. A second free of a large
     * block is named a double free among the last 64 freed (and in every
     * mode, not only this one). Sites are 6 frames of the
     * stack (see BEAM_GPA_FRAMES). Costs a pass over each block at
     * allocation and at free. */
    BEAM_GPA_SAFE = 1u << 2,
};

/** Keep n frames (1 to 16) of each allocation's call stack for reports:
 * beam_gpa_init_ex(&gpa, backing, BEAM_GPA_TRACK_SITES | BEAM_GPA_FRAMES(6)).
 * Safe mode keeps 6 unless told otherwise; tracked mode 1 (the call site).
 * Frames come from frame pointers, two loads each: build the code whose
 * callers you want to see with -fno-omit-frame-pointer (frames of code built
 * without are skipped or end the stack early; the call site is always
 * exact). An allocation made from another library's code (zlib, zstd,
 * SQLite, libstdc++ calling your hooks), built without them, is walked by
 * the unwinder instead on Linux (microseconds, those allocations only), so
 * its stack reaches your line that called the library. Distinct stacks are
 * stored once each, process-wide. */
#ifdef __cplusplus
/* (A template: static_cast<unsigned> of an unsigned n is what g++'s
 * -Wuseless-cast warns of; a plain unsigned parameter would draw
 * -Wsign-conversion for an int n.) */
extern "C++" {
template <class N> constexpr unsigned beam_internal_gpa_frames(N n) noexcept {
    return (static_cast<unsigned>(n) & 31u) << 8;
}
}
#define BEAM_GPA_FRAMES(n) beam_internal_gpa_frames(n)
#else
#define BEAM_GPA_FRAMES(n) ((BEAM_INTERNAL_AS(unsigned, n) & 31u) << 8)
#endif

typedef struct beam_gpa {
    beam_allocator_t backing; /* where chunks and large blocks come from */
    unsigned flags;           /* enum beam_gpa_flags */
    struct beam_gpa_state *internal_state; /* made lazily; not for users */
    /* internal: allocations refused while no state could be made (the
     * backing refused even that), for beam_allocator_stats' failed */
    uint64_t internal_failed;
} beam_gpa_t;

/* Every function of this section and the next given NULL for its instance
 * reports a misuse ("NULL instance") and does nothing: false, 0, zeroed
 * usage, or (the allocator getters) an allocator that refuses every call. */

/** Prepare an instance over backing. Cannot fail (memory is taken lazily).
 * An instance given itself as backing refuses every allocation (and says
 * so in a report): it would have recursed without end. The same for a
 * zero-initialised backing ({0}). */
BEAM_API void beam_gpa_init(beam_gpa_t *gpa, beam_allocator_t backing);
/** beam_gpa_init with options (enum beam_gpa_flags, BEAM_GPA_FRAMES(n));
 * bits of neither are reported and ignored. */
BEAM_API void beam_gpa_init_ex(beam_gpa_t *gpa, beam_allocator_t backing,
                               unsigned flags);
/** The allocator interface of an instance. */
BEAM_API beam_allocator_t beam_gpa_allocator(beam_gpa_t *gpa);
/** true while any block is live; reports each live block (size, alignment
 * where known, and site when BEAM_GPA_TRACK_SITES is on). Safe to call while
 * other threads allocate; the answer is then a snapshot. */
BEAM_API bool beam_gpa_detect_leaks(beam_gpa_t *gpa);
/** Free everything the instance holds; true when any block was still live
 * (each is reported first). No other thread may use the instance during or
 * after this call, until it is initialised again: until then an allocation
 * through it fails and is reported as a misuse ("use of an allocator after
 * its deinit"). */
BEAM_API bool beam_gpa_deinit(beam_gpa_t *gpa);

/** Give back everything that can be given back now, from any thread: the
 * slabs of every heap whose thread is not inside a call of this instance at
 * that moment (idle schedulers, dirty ones included: on Linux, through a
 * process-wide memory barrier; elsewhere only the calling thread's heap),
 * frees other threads made are collected, the freed medium blocks kept for
 * reuse go back to their slabs, every slab without a live block goes to the
 * pool, the cached large blocks, every wholly free segment and, with no
 * large block live, the large blocks' table go back to the backing
 * allocator. Costs a walk over the instance's partly
 * used slabs and the frees waiting in them, under the instance's lock: call
 * it from a dirty scheduler or a process of its own when much is held.
 * Threads whose slabs were taken take slabs afresh on their next call. */
BEAM_API void beam_gpa_collect(beam_gpa_t *gpa);

/** Counters of an instance (a snapshot; exact when nothing runs
 * concurrently), counted by a walk over its slabs and large blocks under
 * its lock: some 6 ns a live block (57 ms with 10 million live, in the
 * BEAM), so call it from a dirty scheduler when much is held.
 * beam_allocator_stats reads running counters instead. */
typedef struct beam_gpa_usage {
    size_t live_blocks;   /* blocks allocated and not yet freed */
    size_t live_bytes;    /* their sizes (size-class sizes unless tracked) */
    size_t backing_bytes; /* bytes currently taken from the backing */
    size_t misuse_count;  /* double/foreign/mismatched frees seen so far */
} beam_gpa_usage;
typedef beam_gpa_usage beam_gpa_usage_t;
BEAM_API beam_gpa_usage beam_gpa_usage_of(beam_gpa_t *gpa);

/** The process-wide instance, over beam_large_allocator. */
BEAM_API extern beam_gpa_t beam_general_purpose_allocator_instance;
/** Its allocator interface. */
BEAM_API extern const beam_allocator_t beam_general_purpose_allocator;

/* ------------------------------------------------------------------------
 * 6. Composable allocators
 * ---------------------------------------------------------------------- */

/* Arena: bump allocation in chunks taken from the parent; individual frees
 * only reclaim the most recent block; everything goes back at reset/deinit.
 * A free or resize whose length would make an older block end where the
 * newest one does is refused and reported (it would hand the newest, live
 * block out again), and so is one of the newest block with a shorter or
 * longer length than its own (a wrong length; a shorter one's bytes would
 * stay taken, unsaid). The newest block's
 * start is all it keeps: once that block is freed, the one before it is not
 * known, and a block given with a length that ends at the top is taken back as
 * the caller says (as Zig's allocators do), until the next allocation. A
 * resize, remap or realloc of bytes the arena did not hand out (a wrong old
 * length, another allocator's block, one reset away) is refused and reported;
 * a free of them does nothing (frees do not look: it would cost a walk over
 * the chunks). Not thread-safe. Initialising an arena that holds chunks
 * abandons them (deinit it first). */
typedef struct beam_arena {
    beam_allocator_t parent;
    struct beam_arena_chunk_internal *chunks; /* internal: newest first */
    size_t used; /* internal: bytes used in chunks */
} beam_arena_t;

/** How beam_arena_reset treats the chunks it holds. */
typedef enum beam_arena_reset_mode {
    /** Give every chunk back to the parent. */
    BEAM_ARENA_FREE_ALL,
    /** Keep the capacity (one chunk as large as everything used) for the
     * next round; the default. */
    BEAM_ARENA_RETAIN_CAPACITY,
} beam_arena_reset_mode;
typedef beam_arena_reset_mode beam_arena_reset_mode_t;

/** An arena over parent. One given itself or a zero-initialised allocator
 * as parent refuses every allocation (and says so in a report), as does a
 * zeroed arena never initialised (without the report). */
BEAM_API void beam_arena_init(beam_arena_t *arena, beam_allocator_t parent);
BEAM_API beam_allocator_t beam_arena_allocator(beam_arena_t *arena);
/** Free every block of the arena at once. beam_arena_reset(&arena) retains
 * capacity; beam_arena_reset(&arena, mode) chooses. Returns false when
 * retaining capacity failed for want of memory (the arena is then empty
 * and usable, as after BEAM_ARENA_FREE_ALL), and for a mode that is
 * neither (reported as a misuse; nothing freed). */
#define beam_arena_reset(...)                                                  \
    BEAM_INTERNAL_ARENA_RESET_PICK(__VA_ARGS__, beam_arena_reset_mode_,        \
                                   beam_arena_reset_default_, unused_)         \
    (__VA_ARGS__)
#define BEAM_INTERNAL_ARENA_RESET_PICK(a1, a2, name, ...) name
BEAM_API bool beam_arena_reset_mode_(beam_arena_t *arena,
                                     beam_arena_reset_mode mode);
BEAM_API bool beam_arena_reset_default_(beam_arena_t *arena);
/** Give everything back to the parent. The arena may be initialised again;
 * until then every call through it is refused (NULL, false) and reported
 * as a misuse ("use of an allocator after its deinit"). */
BEAM_API void beam_arena_deinit(beam_arena_t *arena);
/** Bytes handed out since the last reset (including alignment padding). */
BEAM_API size_t beam_arena_used(const beam_arena_t *arena);

/* Fixed buffer: bump allocation inside a caller's buffer; the last block can
 * grow, shrink and be freed (a length that would make an older block end
 * where the newest does, or the newest block given with a shorter or longer
 * length than its own, is refused and reported, as in the arena). A
 * pointer outside the bytes it handed out (another allocator's, a block
 * freed already, or an older block given with a length that runs past
 * them) is refused (false, NULL) and reported as a misuse. Not
 * thread-safe. */
typedef struct beam_fixed_buffer {
    unsigned char *buffer;
    size_t len;
    size_t end_index;  /* bytes in use */
    size_t last_index; /* internal: where the newest block starts */
} beam_fixed_buffer_t;

BEAM_API void beam_fixed_buffer_init(beam_fixed_buffer_t *fb, void *buf,
                                     size_t len);
BEAM_API beam_allocator_t beam_fixed_buffer_allocator(beam_fixed_buffer_t *fb);
/** Forget every block: the whole buffer is free again. */
BEAM_API void beam_fixed_buffer_reset(beam_fixed_buffer_t *fb);

/* Failing: fault injection over any parent. Allocation number 0, 1, ...
 * succeeds through the parent until number fail_index, which and every later
 * one fails. Resize and remap to a larger size also fail once the failing
 * point is reached. Not thread-safe. Over itself or a zero-initialised
 * parent it refuses every allocation (and says so in a report). The
 * counters count calls: a free the parent reports as a misuse and ignores
 * (a double free) counts too, so after a reported misuse they no longer
 * balance to what is live. */
typedef struct beam_failing {
    beam_allocator_t parent;
    size_t fail_index;        /* first allocation number that fails */
    size_t alloc_index;       /* allocations attempted so far */
    size_t allocations;       /* allocations that succeeded */
    size_t deallocations;     /* frees passed to the parent */
    size_t allocated_bytes;   /* bytes allocated (by successful calls) */
    size_t freed_bytes;       /* bytes freed */
    bool has_induced_failure; /* a failure was injected */
} beam_failing_t;

BEAM_API void beam_failing_init(beam_failing_t *f, beam_allocator_t parent,
                                size_t fail_index);
BEAM_API beam_allocator_t beam_failing_allocator(beam_failing_t *f);

/* ------------------------------------------------------------------------
 * 7. Diagnostics
 *
 * Misuse and leak reports go through one hook: a whole line of text per call
 * (no trailing newline). The default writes to stderr; in a NIF library
 * built with BEAM_NIF_INIT it sends the line to BeamAlloc.Reporter (the
 * logger), which writes code sites as function (file.c:line). Sites in the
 * line itself are "lib.so+0x1c1b", the offset of the call in the object
 * (what addr2line -e lib.so takes), several frames deep with " <- "
 * between them in safe mode. The hook may be called from any thread, from
 * inside the allocator call that found the problem (or the leak check that
 * ends an instance), but never while a lock of the library's allocators is
 * held: it may take locks of its own. It must not allocate through the
 * allocator that is reporting (that instance may be mid-call or being torn
 * down).
 * ---------------------------------------------------------------------- */

typedef void (*beam_report_fn)(void *user, const char *line);
/** Install a report hook (NULL restores the default). Returns the old one
 * (NULL for the default). Safe while other threads report: a report calls
 * either hook with its own user pointer, and once this returns no thread is
 * still inside the old hook. A hook must not change the hook. */
BEAM_API beam_report_fn beam_set_report_hook(beam_report_fn fn, void *user);
/** The hook in place and its user pointer (both NULL for the default). */
BEAM_API void beam_get_report_hook(beam_report_fn *fn, void **user);
/** Install fn with user and give back, in one step, the hook it replaces
 * with its user pointer (old_fn and old_user may be NULL), so that a
 * caller can put exactly that back later:
 *
 *     beam_report_fn old; void *old_user;
 *     beam_exchange_report_hook(mine, &ctx, &old, &old_user);
 *     ...
 *     beam_set_report_hook(old, old_user);
 */
BEAM_API void beam_exchange_report_hook(beam_report_fn fn, void *user,
                                        beam_report_fn *old_fn,
                                        void **old_user);

/* Stats. The raw and large allocators and every general purpose allocator
 * instance count their calls, cheaply: each thread (or heap) keeps its own
 * counters and a read folds them. Bytes are the lengths callers asked for;
 * the VM's view (:erlang.memory(:system)) adds the allocators' overhead:
 * enif_alloc's per-block tags, the large allocator's alignment padding, the
 * general purpose allocator's partly used slabs (see backing_bytes of
 * beam_gpa_usage_of). */
typedef struct beam_alloc_stats {
    size_t live_bytes; /* allocated and not yet freed */
    size_t live_blocks;
    size_t peak_bytes;    /* highest live_bytes seen (see below) */
    uint64_t allocations; /* successful allocations (remaps not counted) */
    uint64_t frees;
    uint64_t failed; /* allocations the allocator answered with NULL
                        (not those the helpers refuse before asking it:
                        a bad alignment, a length above PTRDIFF_MAX) */
} beam_alloc_stats;
typedef beam_alloc_stats beam_alloc_stats_t;

/** The counters of a (an allocator's) instance: beam_raw_allocator,
 * beam_large_allocator (its own calls; large blocks are not also counted as
 * raw ones), and general purpose allocator instances. false, with *out
 * zeroed, for an allocator that keeps none (out NULL: only that answer). Exact
 * when nothing runs concurrently, a snapshot otherwise. peak_bytes is the
 * highest live total seen when threads publish their changes or a read adds
 * them up. A thread publishes every fall at once (16 KiB below, so that the
 * small falls after it need no publication of their own) and a rise when it
 * reaches 64 KiB (raw, large) or when a heap refills a slab (general
 * purpose; its medium blocks, above BEAM_GPA_SMALL_MAX up to 64 KiB, are
 * published exactly at every call), so the peak may be low by up to 64 KiB
 * (or a slab's worth of allocations and 16 KiB) per thread, the reading
 * one included (a rise it
 * took back before reaching a step was never
 * published: 20,000 bytes allocated and freed leave the peak at 0); a read's
 * total counts too, so the peak is never below the live_bytes it comes with,
 * and never falls. Read while nothing else runs, it is never above the true
 * peak; a read while threads allocate and free adds up counters taken at
 * slightly different times, and can raise it by what that total is off.
 * After a misuse the allocator reported, the counts are what it could
 * tell: a general purpose instance that is not tracked frees a block given
 * a wrong length (freed anyway) as the least its size class holds, the
 * length it was asked for not being kept, so its live_bytes stays up by
 * less than the step to the class below (at most 15 bytes for blocks up to
 * 128, under a quarter of the class's size above); tracked, the length is
 * known and the count exact. */
BEAM_API bool beam_allocator_stats(beam_allocator_t a, beam_alloc_stats *out);

/* ------------------------------------------------------------------------
 * 8. Malloc-style calls and shims
 *
 * For C libraries whose allocator hooks free without a size (SQLite's
 * sqlite3_mem_methods, zlib's zfree, zstd's ZSTD_customMem): the block
 * knows its own size. Ready-made hooks: <beam_alloc/sqlite3.h>,
 * <beam_alloc/zlib.h>, <beam_alloc/zstd.h>, <beam_alloc/hooks.h> (other
 * libraries, by the shape of their hooks), and <beam_alloc.hpp> for C++.
 *
 *   - Every block is aligned to 16 (alignof(max_align_t)) over every
 *     allocator, beam_raw_allocator included.
 *   - Over a general purpose allocator instance there is no per-block
 *     header: the instance knows each block's size (its slab's class, or
 *     its large-block table), so a malloc-style block costs what a sized one
 *     of beam_mgood_size(a, size) bytes does, and is counted as that many
 *     bytes in its stats. With BEAM_GPA_TRACK_SITES or BEAM_GPA_SAFE the
 *     block is exactly size bytes long, so overruns are caught to the byte.
 *     (An instance whose large blocks come from beam_raw_allocator, which
 *     cannot align them to 16, directly or through failing allocators or
 *     other instances, is treated as any other allocator; so is one over an
 *     allocator of your own, or a resource's. Over the large allocator, an
 *     arena or a fixed buffer, through those or not, it has no header.)
 *   - Over any other allocator, each block carries a 16-byte header (the
 *     least that keeps 16-byte alignment over an allocator that only gives
 *     8): the parent allocation is beam_mgood_size(a, size) + 16 bytes at
 *     alignment 8, the block starts 8 or 16 bytes in, and the word before
 *     it holds the size and a check of the block's address.
 *   - Sizes that overflow (count * size in beam_calloc, or a size beyond
 *     what the allocator can describe) give NULL; so does exhaustion. A
 *     size of 0 gives a block of beam_mgood_size(a, 0) bytes (not NULL).
 *
 * Mixing with the sized calls on one block:
 *   - General purpose allocator: well defined both ways. beam_mfree and
 *     beam_msize accept any live block of the instance, however it was
 *     allocated; and a malloc-style block p is, for the sized calls, the
 *     block (p, beam_msize(a, p), 16). A sized free with another length is
 *     the instance's usual "wrong length" misuse (reported exactly in
 *     tracked mode, by size class otherwise). Untracked, beam_mfree of a
 *     sized block counts its size class freed where the allocation
 *     counted its length, so live_bytes drifts by the difference, down
 *     (a read never gives less than 0); tracked, the exact length is
 *     known and nothing drifts.
 *   - Other allocators: beam_mfree, beam_mrealloc and beam_msize check the
 *     header; a block that does not carry a valid one (a sized block, one
 *     freed already, a pointer from elsewhere) is reported through the
 *     report hook (section 7) as misuse and left alone (msize answers 0,
 *     mrealloc NULL). The check is 16 bits of the address and size: a
 *     wrong pointer slips through once in 65536 (over a fixed buffer,
 *     an arena or a general purpose instance with headers, not even then:
 *     the parent block the header names must also be one the allocator
 *     holds; the raw and large allocators and yours know none). It does
 *     not say which allocator made the block where the allocator knows
 *     no blocks: one of another allocator that also writes headers (an
 *     arena's, given to the raw allocator) passes, and goes to the
 *     allocator named. Reading the header needs
 *     its memory still mapped: a block freed already whose memory the
 *     parent gave back to the system (glibc's malloc unmaps blocks of 128
 *     KiB and more; enif_alloc, its single-block carriers) faults instead,
 *     as a second free() would. (Over a fixed buffer, directly, through
 *     failing allocators or under check_all_allocation_failures, a pointer
 *     that could have no header word inside the buffer, outside it or in
 *     its first 8 bytes, is reported unread.) A pointer at a page's start,
 *     whose header word lies on the page before it, is probed first (a
 *     syscall, on that path only): one at the start of a mapping after an
 *     unmapped page (or, on Linux, a PROT_NONE one) is reported unread.
 *     An instance of the general
 *     purpose allocator (but one over beam_raw_allocator, which gets headers
 *     too) reads no freed block's memory it could have given back: over it,
 *     every double free is reported. A sized free of a malloc-style block
 *     hands the parent a pointer inside its block: the
 *     general purpose allocator reports that, the raw allocator cannot.
 *     Do not do it.
 * ---------------------------------------------------------------------- */

/** The calling function's return address, for the _at calls below: a shim
 * (a C library's allocator hook) passes it so that leak and misuse reports
 * name the library's function ("deflateInit2_ (libz.so.1+0x8d86)") rather
 * than the shim. Use it directly in the hook function (not in a helper it
 * calls), and keep the hook out of line. 0 where the compiler cannot tell. */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__cplusplus)
#define BEAM_RET_ADDR()                                                        \
    (reinterpret_cast<uintptr_t>(__builtin_return_address(0)))
#elif defined(__GNUC__) || defined(__clang__)
/* (Through a function: a call's result cast to an integer is what
 * -Wbad-function-cast warns of, even through a cast to void *.) */
static inline uintptr_t beam_internal_address(const void *p) {
    return (uintptr_t)p;
}
#define BEAM_RET_ADDR() beam_internal_address(__builtin_return_address(0))
#else
#define BEAM_RET_ADDR() BEAM_INTERNAL_AS(uintptr_t, 0)
#endif

/** malloc: size bytes aligned to 16; NULL when out of memory. */
BEAM_API BEAM_NODISCARD void *beam_malloc(beam_allocator_t a, size_t size);
/** calloc: count * size zeroed bytes; NULL on overflow or out of memory. */
BEAM_API BEAM_NODISCARD void *beam_calloc(beam_allocator_t a, size_t count,
                                          size_t size);
/** realloc: p NULL is beam_malloc. Grows or shrinks in place when the
 * allocator can, else moves (contents kept up to the smaller size). NULL
 * on failure, and then p is untouched and still the caller's. size 0 is
 * taken as the smallest block (never a free). */
BEAM_API BEAM_NODISCARD void *beam_mrealloc(beam_allocator_t a, void *p,
                                            size_t size);
/** free: p NULL does nothing. */
BEAM_API void beam_mfree(beam_allocator_t a, void *p);
/** Usable size of p (>= what was asked; writable up to it). 0 for NULL or
 * for a pointer that is not a live malloc-style block (then reported). Of
 * an untracked general purpose allocator, a freed small block answers its
 * size class: telling freed from live there reads the block, which
 * another thread may be writing. */
BEAM_API size_t beam_msize(beam_allocator_t a, const void *p);
/** What beam_msize would answer for a block of size bytes from a: the
 * allocator's size class (over a general purpose allocator), else size
 * rounded up to 16. 0 when no such block can exist. (SQLite's xRoundup.) */
BEAM_API size_t beam_mgood_size(beam_allocator_t a, size_t size);

/** The same, with the caller's return address for reports (ret_addr 0:
 * unknown). */
BEAM_API BEAM_NODISCARD void *beam_malloc_at(beam_allocator_t a, size_t size,
                                             uintptr_t ret_addr);
BEAM_API BEAM_NODISCARD void *beam_calloc_at(beam_allocator_t a, size_t count,
                                             size_t size, uintptr_t ret_addr);
BEAM_API BEAM_NODISCARD void *beam_mrealloc_at(beam_allocator_t a, void *p,
                                               size_t size, uintptr_t ret_addr);
BEAM_API void beam_mfree_at(beam_allocator_t a, void *p, uintptr_t ret_addr);
BEAM_API size_t beam_msize_at(beam_allocator_t a, const void *p,
                              uintptr_t ret_addr);

/** The sized calls of section 3 with the caller's return address, for
 * shims that know sizes (C++ allocators). */
BEAM_API BEAM_NODISCARD void *beam_alloc_bytes_at(beam_allocator_t a,
                                                  size_t len, size_t alignment,
                                                  uintptr_t ret_addr);
BEAM_API BEAM_NODISCARD void *
beam_realloc_bytes_at(beam_allocator_t a, void *mem, size_t len,
                      size_t alignment, size_t new_len, uintptr_t ret_addr);
BEAM_API void beam_free_bytes_at(beam_allocator_t a, void *mem, size_t len,
                                 size_t alignment, uintptr_t ret_addr);

/* For the adapter headers' hooks, not to be called directly: the allocator
 * a C library's context pointer (zlib's opaque, zstd's customMem.opaque)
 * points to. NULL (beam_zlib_use or beam_zstd_mem given NULL) is the
 * zero-initialised allocator, which refuses every allocation: the library
 * fails cleanly (Z_MEM_ERROR, a NULL context) where the hook dereferenced
 * NULL. */
static inline beam_allocator_t beam_internal_allocator_at(const void *opaque) {
    if (opaque == BEAM_INTERNAL_NULL) {
        beam_allocator_t none = {BEAM_INTERNAL_NULL, BEAM_INTERNAL_NULL};
        return none;
    }
    return *BEAM_INTERNAL_AS(const beam_allocator_t *, opaque);
}

/* For the adapter headers' allocation hooks, not to be called directly:
 * beam_internal_keep_mapped at their first call (in this translation
 * unit), then one load of a flag. The flag only spares calls (two first
 * calls at once both make it, which is harmless): the kept state is the
 * library's. Acquire and release, not relaxed: a hook that skips the call
 * on the flag relies on the first caller's dlopen and kept state for the
 * stream it makes, and the purge that reads that state comes after what
 * this thread does next, not necessarily after what the first caller did;
 * a relaxed flag may be seen before them on a weakly ordered CPU (the
 * same instructions on x86). */
static inline void beam_internal_keep_mapped_once(void) {
#if defined(__GNUC__) || defined(__clang__)
    static int asked;
    if (__atomic_load_n(&asked, __ATOMIC_ACQUIRE) != 0)
        return;
    (void)beam_internal_keep_mapped();
    __atomic_store_n(&asked, 1, __ATOMIC_RELEASE);
#else
    (void)beam_internal_keep_mapped(); /* (a load and a call after the first) */
#endif
}

/* ------------------------------------------------------------------------
 * 9. Named stats
 *
 * A NIF library's own allocator instances (a beam_gpa_t that SQLite runs
 * on, say) can be listed under a name: BeamAlloc.stats(MyNif) then has a
 * key of that name (an atom) next to :raw, :large and :general_purpose,
 * with the same counters (and :backing_bytes for a general purpose
 * allocator). In a plain C program beam_stats_named lists them.
 * ---------------------------------------------------------------------- */

/** Longest name, without the terminator. */
#define BEAM_STATS_NAME_MAX 63
/** Most names one library (one copy of beam_alloc) can register. */
#define BEAM_STATS_NAMED_MAX 16

/** List a's counters under name (letters, digits and _, starting with a
 * lowercase letter; not raw, large or general_purpose). a must keep stats
 * (beam_allocator_stats answers true for it: a general purpose allocator
 * instance, raw, large) and its instance must outlive the registration.
 * Registering a name again replaces its allocator. false: bad name, an
 * allocator without stats, or the table is full. Thread-safe (a mutex:
 * BeamAlloc.collect/1 collects registered instances under it, so their
 * backing allocators must not call these functions). */
BEAM_API bool beam_stats_register(const char *name, beam_allocator_t a);
/** Forget name (call before the instance's memory goes). false when it was
 * not registered. */
BEAM_API bool beam_stats_unregister(const char *name);
/** The i-th registered name (0-based), its counters in *out and, for a
 * general purpose allocator, its backing bytes in *backing_bytes (else 0);
 * name is copied into name_out (BEAM_STATS_NAME_MAX + 1 bytes); an out
 * parameter given as NULL is skipped. false past the last. */
BEAM_API bool beam_stats_named(size_t i, char *name_out, beam_alloc_stats *out,
                               size_t *backing_bytes);

#ifdef __cplusplus
} /* extern "C" */
#endif

/* The NIF glue lives in <beam_alloc_nif.h>. Without it, these names fail to
 * compile with a message that says so (and never silently mean something
 * else). */
#ifndef BEAM_ALLOC_NIF_H
#ifdef __cplusplus
#define BEAM_INTERNAL_STATIC_ASSERT static_assert
#else
#define BEAM_INTERNAL_STATIC_ASSERT _Static_assert
#endif
#define BEAM_NIF(...)                                                          \
    BEAM_INTERNAL_STATIC_ASSERT(0, "BEAM_NIF needs #include "                  \
                                   "<beam_alloc_nif.h>")
#define BEAM_NIF_INIT(...)                                                     \
    BEAM_INTERNAL_STATIC_ASSERT(                                               \
        0, "BEAM_NIF_INIT needs #include <beam_alloc_nif.h>")
/* The glue's functions and constants (term helpers, resource-scoped
 * allocators), used as expressions: a failed static assertion inside one
 * (C: in a struct's declaration under sizeof; C++: in a lambda), rather
 * than C's implicit declaration of an undeclared function, which compiles
 * with a warning, links, and truncates what the function returns.
 * <beam_alloc_nif.h> undefines each of them. */
#ifdef __cplusplus
#define BEAM_INTERNAL_NEEDS_NIF_H(name)                                        \
    ([] {                                                                      \
        static_assert(0, #name " needs #include <beam_alloc_nif.h>");          \
        return 0;                                                              \
    }())
#else
#define BEAM_INTERNAL_NEEDS_NIF_H(name)                                        \
    sizeof(struct {                                                            \
        _Static_assert(0, #name " needs #include <beam_alloc_nif.h>");         \
        int unused;                                                            \
    })
#endif
#define beam_make_uint_list(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_make_uint_list)
#define beam_make_error(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_make_error)
#define beam_raise(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_raise)
#define beam_nif_function_name(...)                                            \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_nif_function_name)
#define beam_nif_module_name(...)                                              \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_nif_module_name)
#define beam_resource_init(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_init)
#define beam_resource_new(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_new)
#define beam_resource_term(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_term)
#define beam_resource_get(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_get)
#define beam_resource_keep(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_keep)
#define beam_resource_drop(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_drop)
#define beam_resource_allocator(...)                                           \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_allocator)
#define beam_resource_user_data(...)                                           \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_user_data)
#define beam_resource_user_size(...)                                           \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_user_size)
#define beam_resource_pin(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_pin)
#define beam_resource_unpin(...) BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_unpin)
#define beam_resource_release(...)                                             \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_release)
#define beam_resource_on_release(...)                                          \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_on_release)
#define beam_resource_is_released(...)                                         \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_is_released)
#define beam_resource_usage_of(...)                                            \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_usage_of)
#define beam_resource_live_count(...)                                          \
    BEAM_INTERNAL_NEEDS_NIF_H(beam_resource_live_count)
#define BEAM_RESOURCE_GPA BEAM_INTERNAL_NEEDS_NIF_H(BEAM_RESOURCE_GPA)
#define BEAM_RESOURCE_ARENA BEAM_INTERNAL_NEEDS_NIF_H(BEAM_RESOURCE_ARENA)
#endif

#endif /* BEAM_ALLOC_H */
