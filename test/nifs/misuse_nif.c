/*
 * Misuse of memory, one NIF per kind, for the diagnostics that fail a call
 * (test/misuse_test.exs). Reports go through the library's default hook,
 * so to BeamAlloc.Reporter, which writes their sites as source lines: the
 * tests find the lines marked SITE below in the reports. (Keep each marker
 * on the line of its call.) Loaded by BeamAlloc.Test.Misuse
 * (test/support/misuse.ex) through `use BeamAlloc.Nif`.
 */
#include "nif_util.h"

static ERL_NIF_TERM ok(ErlNifEnv *env) {
    return enif_make_atom(env, "ok");
}

static beam_allocator_t process_wide(void) {
    return beam_general_purpose_allocator;
}

/* The kinds of misuse, each on a fresh block of n bytes (enomem when there
 * is none). Macros rather than functions: the reports name the site of the
 * misusing call, and that must be the NIF's own line. */
#define NEW_BLOCK(p, n)                                                        \
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, n);           \
    if (p == NULL)                                                             \
    return beam_make_error(env, "enomem")

#define DOUBLE_FREE(n)                                                         \
    do {                                                                       \
        NEW_BLOCK(p, n);                                                       \
        beam_free(beam_allocator, p, n);                                       \
        beam_free(beam_allocator, p, n);                                       \
    } while (0)

#define WRITE_PAST_END(n)                                                      \
    do {                                                                       \
        NEW_BLOCK(p, n);                                                       \
        p[n] = 1;                                                              \
        beam_free(beam_allocator, p, n);                                       \
    } while (0)

#define WRONG_LENGTH(n, freed)                                                 \
    do {                                                                       \
        NEW_BLOCK(p, n);                                                       \
        beam_free(beam_allocator, p, freed);                                   \
    } while (0)

/* A double free of n bytes at alignment. */
#define DOUBLE_FREE_BYTES(n, alignment)                                        \
    do {                                                                       \
        void *p = beam_alloc_bytes(beam_allocator, n, alignment);              \
        if (p == NULL)                                                         \
            return beam_make_error(env, "enomem");                             \
        beam_free_bytes(beam_allocator, p, n, alignment);                      \
        beam_free_bytes(beam_allocator, p, n, alignment);                      \
    } while (0)

/* A block of n bytes at alignment, freed as if at another one. */
#define FREED_ALIGNED(n, alignment, freed)                                     \
    do {                                                                       \
        void *p = beam_alloc_bytes(beam_allocator, n, alignment);              \
        if (p == NULL)                                                         \
            return beam_make_error(env, "enomem");                             \
        beam_free_bytes(beam_allocator, p, n, freed);                          \
    } while (0)

/* Past the words the free list uses, so nothing but the poison changes:
 * found when the call ends. */
#define WRITE_AFTER_FREE(n, at)                                                \
    do {                                                                       \
        NEW_BLOCK(p, n);                                                       \
        beam_free(beam_allocator, p, n);                                       \
        volatile unsigned char *dangling = p;                                  \
        dangling[at] = 7;                                                      \
    } while (0)

/* A NIF under leak_check whose whole body is one misuse. */
#define MISUSE_NIF(name, misuse)                                               \
    BEAM_NIF(name, .leak_check = true) {                                       \
        misuse;                                                                \
        return ok(env);                                                        \
    }

/* --- One kind each, under leak_check ------------------------------------- */

MISUSE_NIF(double_free, DOUBLE_FREE(24))
MISUSE_NIF(write_past_end, WRITE_PAST_END(24))
MISUSE_NIF(wrong_length, WRONG_LENGTH(24, 16))
MISUSE_NIF(write_after_free, WRITE_AFTER_FREE(64, 20))
MISUSE_NIF(wrong_alignment, FREED_ALIGNED(64, 16, 8))

BEAM_NIF(foreign_free, .leak_check = true) {
    /* Memory of another allocator: the checking instance must not take
     * it (and must not touch it). One block of its own first, so that the
     * instance is set up and looks the pointer up. */
    void *own = beam_alloc_bytes(beam_allocator, 32, 8);
    void *other = beam_alloc_bytes(beam_raw_allocator, 32, 8);
    if (own == NULL || other == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, own, 32, 8);
    beam_free_bytes(beam_allocator, other, 32, 8);
    beam_free_bytes(beam_raw_allocator, other, 32, 8);
    return ok(env);
}

/* --- The same kinds on blocks above the slab classes (large blocks) ----- */

#define LARGE 10000

MISUSE_NIF(large_double_free, DOUBLE_FREE(LARGE))
MISUSE_NIF(large_write_past_end, WRITE_PAST_END(LARGE))
MISUSE_NIF(large_wrong_length, WRONG_LENGTH(LARGE, LARGE - 1))
MISUSE_NIF(large_write_after_free, WRITE_AFTER_FREE(LARGE, 100))

/* Misuse, then an exception of its own: the misuse is the error raised. */
BEAM_NIF(double_free_and_badarg, .leak_check = true) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 8);
    if (p != NULL) {
        beam_free(beam_allocator, p, 8);
        beam_free(beam_allocator, p, 8);
    }
    return enif_make_badarg(env);
}

/* --- Without leak_check -------------------------------------------------- */

/* The process-wide instance sees a double free; the call goes on. (The
 * three differ only in their options.) */
BEAM_NIF(double_free_plain, .allocator = process_wide) {
    DOUBLE_FREE_BYTES(24, 8);
    return ok(env);
}

/* The same, asked to raise in C. */
BEAM_NIF(double_free_raising, .allocator = process_wide,
         .raise_on_misuse = true) {
    DOUBLE_FREE_BYTES(24, 8);
    return ok(env);
}

/* The same, asked to raise from Elixir (test/support/misuse.ex). */
BEAM_NIF(double_free_opted, .allocator = process_wide) {
    DOUBLE_FREE_BYTES(24, 8);
    return ok(env);
}

/* --- Sites as source lines ----------------------------------------------- */

static unsigned char *make_block(size_t n) {
    return beam_alloc(beam_allocator, unsigned char, n); /* SITE: helper */
}

/* Leaks one block and frees another twice: the reports must name the
 * lines of the leaking allocation, of the bad free and of the allocation
 * of the block freed twice. */
BEAM_NIF(leak_and_bad_free, .leak_check = true) {
    unsigned char *kept =
        beam_alloc(beam_allocator, unsigned char, 40); /* SITE: leak */
    unsigned char *twice = make_block(8);              /* SITE: caller */
    if (kept == NULL || twice == NULL)
        return beam_make_error(env, "enomem");
    kept[0] = 1;
    beam_free(beam_allocator, twice, 8);
    beam_free(beam_allocator, twice, 8); /* SITE: bad free */
    return ok(env);
}

/* Real calls (not inlined): the frames come from the stack itself, walked
 * through frame pointers. */
__attribute__((noinline)) static unsigned char *deep_alloc(size_t n) {
    unsigned char *p =
        beam_alloc(beam_allocator, unsigned char, n); /* SITE: deep */
    __asm__ volatile("" ::: "memory"); /* keeps the call a call */
    return p;
}

__attribute__((noinline)) static unsigned char *middle_alloc(size_t n) {
    unsigned char *p = deep_alloc(n); /* SITE: middle */
    __asm__ volatile("" ::: "memory");
    return p;
}

/* The same, inlined: the frames of one address, from the debug
 * information (inner <- middle <- the NIF). */
__attribute__((always_inline)) static inline unsigned char *
inlined_deep_alloc(size_t n) {
    return beam_alloc(beam_allocator, unsigned char, n); /* SITE: ideep */
}

__attribute__((always_inline)) static inline unsigned char *
inlined_middle_alloc(size_t n) {
    return inlined_deep_alloc(n); /* SITE: imiddle */
}

BEAM_NIF(leak_inlined, .leak_check = true) {
    unsigned char *p = inlined_middle_alloc(24); /* SITE: itop */
    if (p == NULL)
        return beam_make_error(env, "enomem");
    p[0] = 1;
    return ok(env);
}

BEAM_NIF(leak_deep, .leak_check = true) {
    unsigned char *p = middle_alloc(24); /* SITE: top */
    if (p == NULL)
        return beam_make_error(env, "enomem");
    p[0] = 1;
    return ok(env);
}

/* A free whose alignment is no power of two: the library ignores it and
 * reports it, a misuse like a wrong length (the block is left over). */
MISUSE_NIF(impossible_free, FREED_ALIGNED(24, 8, 3))

/* Called by nested_outer, a BEAM_NIF inside a BEAM_NIF: a misuse of its
 * own (it raises, and the outer call goes on). */
MISUSE_NIF(nested_inner, WRONG_LENGTH(24, 16))

/* A double free first, then a call with another kind of misuse: the outer
 * call raises with its own first one. */
BEAM_NIF(nested_outer, .leak_check = true) {
    DOUBLE_FREE(24);
    (void)nested_inner(env, 0, argv);
    return ok(env);
}

/* A thread the call starts and joins double-frees through the call's
 * allocator (a copy: beam_allocator is the calling thread's): the call
 * raises, though its own thread saw nothing. */
static void *double_free_on(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    void *p = beam_alloc_bytes(a, 24, 8);
    if (p != NULL) {
        beam_free_bytes(a, p, 24, 8);
        beam_free_bytes(a, p, 24, 8);
    }
    return NULL;
}

/* Runs fn on a thread of its own, given a copy of the call's allocator,
 * and waits for it. */
static ERL_NIF_TERM on_a_thread(ErlNifEnv *env, void *(*fn)(void *)) {
    beam_allocator_t a = beam_allocator;
    ErlNifTid tid;
    if (enif_thread_create("misuse", &tid, fn, &a, NULL) != 0)
        return enif_make_badarg(env);
    enif_thread_join(tid, NULL);
    return ok(env);
}

BEAM_NIF(thread_double_free, .leak_check = true) {
    return on_a_thread(env, double_free_on);
}

/* The same with a foreign free, in a call that allocates nothing itself
 * (its instance had no state to keep the misuse in). */
static void *foreign_free_on(void *arg) {
    static char not_ours[64];
    beam_free_bytes(*(beam_allocator_t *)arg, not_ours, 24, 8);
    return NULL;
}

BEAM_NIF(thread_foreign_free, .leak_check = true) {
    return on_a_thread(env, foreign_free_on);
}

/* branch_free(Which): two frees alike, of one pointer that the
 * allocator does not own, ending two branches. GCC at -O2 merges such
 * calls into one return address (-fcrossjumping, -ftree-tail-merge), and
 * so does clang (tail merging, sinking of common code): the report named
 * the other branch's line. Built without those, each its own. */
BEAM_NIF(branch_free, .leak_check = true) {
    int which;
    char local[16] = {0};
    if (!enif_get_int(env, argv[0], &which))
        return enif_make_badarg(env);
    void *own = beam_alloc_bytes(beam_allocator, 16, 8);
    if (own == NULL)
        return beam_make_error(env, "enomem");
    if (which == 1) {
        beam_free(beam_allocator, local, 16); /* SITE: branch one */
    } else if (which == 2) {
        beam_free(beam_allocator, local, 16); /* SITE: branch two */
    }
    beam_free_bytes(beam_allocator, own, 16, 8);
    return enif_make_int(env, local[0]);
}

/* --- A double free through the raw allocator ---------------------------- */

/* The raw allocator (the default) checks no free: under
 * check_all_allocation_failures the second free is caught (a misuse of
 * the run, not passed on). Outside a check it would reach enif_free twice:
 * the tests call it only inside one. */
/* raw_double_free's calls outside a check (beam_allocator the raw one),
 * in this copy of the library: copy_state/0 gives it with the copy's
 * identity (a module purged may or may not take its library with it). */
static int unchecked_double_frees;

BEAM_NIF(copy_state) {
    return enif_make_tuple2(
        env,
        enif_make_uint64(env, (ErlNifUInt64)(uintptr_t)&unchecked_double_frees),
        enif_make_int(env, unchecked_double_frees));
}

BEAM_NIF(raw_double_free) {
    if (beam_allocator.vtable == beam_raw_allocator.vtable)
        unchecked_double_frees++;
    void *p = beam_alloc_bytes(beam_allocator, 24, 8);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, p, 24, 8);
    beam_free_bytes(beam_allocator, p, 24, 8); /* SITE: raw twice */
    return ok(env);
}

/* A beam_malloc block freed with the sized free: over the raw allocator
 * its pointer is inside the header's block, and enif_free crashes on it;
 * a check reports it (it crashed the VM in the check). */
BEAM_NIF(raw_mfree_sized) {
    void *p = beam_malloc(beam_allocator, 24);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, p, 24, 8); /* SITE: sized mfree */
    return ok(env);
}

/* A raw block freed with a wrong length: the raw allocator cannot tell,
 * and would count 4000 bytes off its stats; a check reports it. */
BEAM_NIF(raw_wrong_length_free) {
    void *p = beam_alloc_bytes(beam_allocator, 24, 8);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, p, 4000, 8); /* SITE: wrong length */
    return ok(env);
}

/* A block freed, then one of the raw allocator's own (which a check does
 * not count) freed through beam_allocator: in a raw NIF one allocator, no
 * misuse, and a check passes it (the address of the first may come back
 * for the second: the check must not take that for a double free). */
BEAM_NIF(raw_free_then_reuse) {
    void *p = beam_alloc_bytes(beam_allocator, 24, 8);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, p, 24, 8);
    void *q = beam_alloc_bytes(beam_raw_allocator, 24, 8);
    if (q == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, q, 24, 8);
    return ok(env);
}

/* A block freed through its old pointer after a realloc moved it: the
 * realloc freed it already. Caught under a check like raw_double_free
 * (outside one it would reach enif_free twice). */
BEAM_NIF(raw_free_after_realloc) {
    char *p = beam_alloc_bytes(beam_allocator, 24, 8);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    char *q = beam_realloc_bytes(beam_allocator, p, 24, 8, 3000);
    if (q == NULL) {
        beam_free_bytes(beam_allocator, p, 24, 8);
        return beam_make_error(env, "enomem");
    }
    beam_free_bytes(beam_allocator, q, 3000, 8);
    beam_free_bytes(beam_allocator, p, 24, 8); /* SITE: stale free */
    return ok(env);
}

/* A block of the raw allocator's own (which a check does not count),
 * freed twice through beam_allocator: caught under a check too. */
BEAM_NIF(raw_own_double_free) {
    void *q = beam_alloc_bytes(beam_raw_allocator, 100, 8);
    if (q == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, q, 100, 8);
    beam_free_bytes(beam_allocator, q, 100, 8); /* SITE: own twice */
    return ok(env);
}

/* --- A block freed by the wrong NIF -------------------------------------- */

/* A block one NIF takes from the process-wide general purpose allocator
 * (keep_gpa_block(Len): a slab's block, or above the slab classes the
 * backing's own) and another, whose allocator is the raw one (the
 * default), frees: the raw allocator refuses it (enif_free of an address
 * inside the GPA's memory, or of one of its large blocks, would crash the
 * VM) and the call raises, naming the line; the block stays live for the
 * NIF that owns it. Under check_all_allocation_failures the check sends
 * that free to the GPA and reports it: forget_kept_block then drops the
 * pointer, so that the next run keeps a block again. */
static void *kept_block;
static size_t kept_len;

BEAM_NIF(keep_gpa_block, .allocator = process_wide) {
    unsigned long len;
    if (kept_block != NULL || !enif_get_ulong(env, argv[0], &len) || len == 0 ||
        len > ((size_t)1 << 24))
        return enif_make_badarg(env);
    kept_block = beam_alloc_bytes(beam_allocator, len, 8);
    if (kept_block == NULL)
        return beam_make_error(env, "enomem");
    kept_len = len;
    memset(kept_block, 0x5a, kept_len);
    return ok(env);
}

BEAM_NIF(free_kept_block_here, .raise_on_misuse = true) {
    void *p = kept_block;
    beam_free_bytes(beam_allocator, p, kept_len, 8); /* SITE: wrong nif */
    return ok(env);
}

BEAM_NIF(forget_kept_block) {
    kept_block = NULL;
    return ok(env);
}

BEAM_NIF(free_kept_block_rightly, .allocator = process_wide) {
    const unsigned char *p = (const unsigned char *)kept_block;
    bool intact = p != NULL;
    for (size_t i = 0; intact && i < kept_len; i++)
        intact = p[i] == 0x5a;
    beam_free_bytes(beam_allocator, kept_block, kept_len, 8);
    kept_block = NULL;
    return intact ? ok(env) : enif_make_badarg(env);
}

/* A double free of a large allocator's block at alignment 64, of 100,000
 * bytes: above what a check holds (64 KiB), so the large allocator itself
 * refuses the second free, as a double free (it said "free with a wrong
 * length or alignment", with and without a check). */
static beam_allocator_t large_one(void) {
    return beam_large_allocator;
}

BEAM_NIF(large_aligned_double_free, .allocator = large_one) {
    DOUBLE_FREE_BYTES(100000, 64); /* SITE: large twice */
    return ok(env);
}

/* A large allocator's block at alignment 64 freed at alignment 8: the
 * large allocator cannot tell it from a raw block (no header read at 8)
 * and hands the inner pointer to enif_free, which crashed the VM, in a
 * check too (which judged lengths alone). */
BEAM_NIF(large_free_at_8, .allocator = large_one) {
    void *p = beam_alloc_bytes(beam_allocator, 40, 64);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, p, 40, 8); /* SITE: large at 8 */
    return ok(env);
}

/* A large allocator's block at alignment 4096 freed at 16: the large
 * allocator looks for its header where alignment 16 puts it, refuses the
 * free and leaves the block live (each run's, in a check). */
BEAM_NIF(large_free_at_16, .allocator = large_one) {
    void *p = beam_alloc_bytes(beam_allocator, 40, 4096);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, p, 40, 16); /* SITE: large at 16 */
    return ok(env);
}

/* A large allocator's block of 100,000 bytes (above what a check holds) at
 * alignment 64 remapped at 8: enif_realloc of its inner address, which
 * crashed the VM in a check. */
BEAM_NIF(large_remap_at_8, .allocator = large_one) {
    beam_allocator_t a = beam_allocator;
    size_t n = 100000;
    void *q, *p = beam_alloc_bytes(a, n, 64);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    q = beam_remap_bytes(a, p, n, 8, 3 * n); /* SITE: large remap at 8 */
    if (q == NULL)
        beam_free_bytes(a, p, n, 64);
    else
        beam_free_bytes(a, q, 3 * n, 64);
    return ok(env);
}

/* A beam_malloc block of the process-wide GPA freed twice with
 * beam_mfree: a double free, under check_all_allocation_failures too
 * (there it was "free of a pointer the allocator does not own": the
 * malloc-style calls gave the block a header, which the GPA's free list
 * covered). */
BEAM_NIF(mfree_twice, .allocator = process_wide) {
    void *p = beam_malloc(beam_allocator, 40);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_mfree(beam_allocator, p);
    beam_mfree(beam_allocator, p); /* SITE: mfree twice */
    return ok(env);
}

/* Two bytes past a beam_malloc block of 30 in a leak_check call: found at
 * the free, under check_all_allocation_failures too (there it passed:
 * the header's rounding to 16 held the two bytes before the canary). */
BEAM_NIF(malloc_overflow, .leak_check = true) {
    unsigned char *p = beam_malloc(beam_allocator, 30);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    p[30] = 1;
    p[31] = 2;
    beam_mfree(beam_allocator, p); /* SITE: malloc overflow */
    return ok(env);
}

/* A beam_malloc block kept with the allocator it came from, beam_allocator
 * itself (under a check, the plan allocator): freed through that allocator
 * by free_kept_malloc_block, later (after the check, too). Each call frees
 * the block the one before kept. */
static void *kept_malloc;
static beam_allocator_t kept_malloc_from;

BEAM_NIF(free_kept_malloc_block) {
    beam_mfree(kept_malloc_from, kept_malloc);
    kept_malloc = NULL;
    return ok(env);
}

BEAM_NIF(keep_malloc_block, .allocator = process_wide) {
    beam_mfree(kept_malloc_from, kept_malloc);
    kept_malloc_from = beam_allocator;
    kept_malloc = beam_malloc(beam_allocator, 40);
    return kept_malloc != NULL ? ok(env) : beam_make_error(env, "enomem");
}

/* beam_msize of a block freed already: a use after free, which raises like
 * the others (it was reported and the call returned: found by a bug hunt). */
BEAM_NIF(msize_after_free, .leak_check = true) {
    void *p = beam_malloc(beam_allocator, 40);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_mfree(beam_allocator, p);
    return enif_make_uint64(env, beam_msize(beam_allocator, p));
}

/* A double free on the error path only: when the second allocation
 * fails, the first block is freed twice. Only a fault injection check
 * runs that path, and turns its misuse into a problem of the check's
 * (the tests of BeamAlloc.Case and without_reports assert that error). */
BEAM_NIF(double_free_on_failure, .allocator = process_wide) {
    unsigned char *first = beam_alloc(beam_allocator, unsigned char, 24);
    if (first == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *second = beam_alloc(beam_allocator, unsigned char, 40);
    if (second == NULL) {
        beam_free(beam_allocator, first, 24);
        beam_free(beam_allocator, first, 24);
        return beam_make_error(env, "enomem");
    }
    beam_free(beam_allocator, second, 40);
    beam_free(beam_allocator, first, 24);
    return ok(env);
}

/* An instance of its own, deinitialised with a block live: a leak report. */
static void leak_in_own_instance(void) {
    beam_gpa_t own;
    beam_gpa_init(&own, beam_large_allocator);
    unsigned char *lost =
        beam_alloc(beam_gpa_allocator(&own), unsigned char, 8);
    (void)lost;
    (void)beam_gpa_deinit(&own);
}

/* leak_check: the first block is lost on the failure path (the call's
 * instance reports it, and the check lists it), where an instance of its
 * own is also deinitialised with a block live (a leak report the check
 * does not list). */
BEAM_NIF(checked_leak_on_failure, .leak_check = true) {
    unsigned char *first = beam_alloc(beam_allocator, unsigned char, 16);
    if (first == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *second = beam_alloc(beam_allocator, unsigned char, 32);
    if (second == NULL) {
        leak_in_own_instance();
        return beam_make_error(env, "enomem"); /* first is lost */
    }
    beam_free(beam_allocator, second, 32);
    beam_free(beam_allocator, first, 16);
    return ok(env);
}

/* leak_check: n 16-byte blocks (at most 256) lost when the allocation
 * after them fails (any earlier failure frees those made): more than the
 * 64 the call's instance lists, which it reports with a line "... and N
 * more live blocks". */
BEAM_NIF(checked_many_leaks_on_failure, .leak_check = true) {
    unsigned n;
    if (argc != 1 || !enif_get_uint(env, argv[0], &n) || n > 256)
        return enif_make_badarg(env);
    unsigned char *blocks[256];
    for (unsigned i = 0; i < n; i++) {
        blocks[i] = beam_alloc(beam_allocator, unsigned char, 16);
        if (blocks[i] == NULL) {
            while (i-- > 0)
                beam_free(beam_allocator, blocks[i], 16);
            return beam_make_error(env, "enomem");
        }
    }
    unsigned char *last = beam_alloc(beam_allocator, unsigned char, 32);
    if (last == NULL)
        return beam_make_error(env, "enomem"); /* all n are lost */
    beam_free(beam_allocator, last, 32);
    for (unsigned i = 0; i < n; i++)
        beam_free(beam_allocator, blocks[i], 16);
    return ok(env);
}

/* leak_check: leaks 100 64-byte blocks and then a 16-byte one, from a
 * slab its instance made first (for a 16-byte block freed at once): the
 * instance lists that block first, and the check does not (it lists a
 * run's first 100 by number). Any failure leaks what was made. */
BEAM_NIF(checked_leak_past_listed, .leak_check = true) {
    unsigned char *first = beam_alloc(beam_allocator, unsigned char, 16);
    if (first == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_allocator, first, 16);
    for (int i = 0; i < 100; i++)
        if (beam_alloc(beam_allocator, unsigned char, 64) == NULL)
            return beam_make_error(env, "enomem");
    if (beam_alloc(beam_allocator, unsigned char, 16) == NULL)
        return beam_make_error(env, "enomem");
    return ok(env);
}

/* As double_free_on_failure, and the error path also deinitialises an
 * instance of its own with a block live: a leak report, which the check
 * does not list (it sees no block of its own left). */
BEAM_NIF(double_free_and_leak_on_failure, .allocator = process_wide) {
    unsigned char *first = beam_alloc(beam_allocator, unsigned char, 24);
    unsigned char *second =
        first != NULL ? beam_alloc(beam_allocator, unsigned char, 40) : NULL;
    if (second != NULL) {
        beam_free(beam_allocator, second, 40);
        beam_free(beam_allocator, first, 24);
        return ok(env);
    }
    if (first != NULL) {
        leak_in_own_instance();
        beam_free(beam_allocator, first, 24);
        beam_free(beam_allocator, first, 24);
    }
    return beam_make_error(env, "enomem");
}

static ErlNifFunc funcs[] = {
    {"thread_double_free", 0, thread_double_free, 0},
    {"thread_foreign_free", 0, thread_foreign_free, 0},
    {"impossible_free", 0, impossible_free, 0},
    {"nested_outer", 0, nested_outer, 0},
    {"leak_deep", 0, leak_deep, 0},
    {"leak_inlined", 0, leak_inlined, 0},
    {"double_free", 0, double_free, 0},
    {"msize_after_free", 0, msize_after_free, 0},
    {"write_past_end", 0, write_past_end, 0},
    {"wrong_length", 0, wrong_length, 0},
    {"wrong_alignment", 0, wrong_alignment, 0},
    {"foreign_free", 0, foreign_free, 0},
    {"branch_free", 1, branch_free, 0},
    {"write_after_free", 0, write_after_free, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"large_double_free", 0, large_double_free, 0},
    {"large_write_past_end", 0, large_write_past_end, 0},
    {"large_wrong_length", 0, large_wrong_length, 0},
    {"large_write_after_free", 0, large_write_after_free, 0},
    {"double_free_and_badarg", 0, double_free_and_badarg, 0},
    {"double_free_plain", 0, double_free_plain, 0},
    {"double_free_raising", 0, double_free_raising, 0},
    {"double_free_opted", 0, double_free_opted, 0},
    {"double_free_on_failure", 0, double_free_on_failure, 0},
    {"checked_leak_on_failure", 0, checked_leak_on_failure, 0},
    {"checked_many_leaks_on_failure", 1, checked_many_leaks_on_failure, 0},
    {"checked_leak_past_listed", 0, checked_leak_past_listed, 0},
    {"double_free_and_leak_on_failure", 0, double_free_and_leak_on_failure, 0},
    {"keep_gpa_block", 1, keep_gpa_block, 0},
    {"free_kept_block_here", 0, free_kept_block_here, 0},
    {"free_kept_block_rightly", 0, free_kept_block_rightly, 0},
    {"leak_and_bad_free", 0, leak_and_bad_free, 0},
    {"raw_double_free", 0, raw_double_free, 0},
    {"copy_state", 0, copy_state, 0},
    {"raw_wrong_length_free", 0, raw_wrong_length_free, 0},
    {"raw_mfree_sized", 0, raw_mfree_sized, 0},
    {"raw_free_then_reuse", 0, raw_free_then_reuse, 0},
    {"raw_free_after_realloc", 0, raw_free_after_realloc, 0},
    {"raw_own_double_free", 0, raw_own_double_free, 0},
    {"forget_kept_block", 0, forget_kept_block, 0},
    {"large_aligned_double_free", 0, large_aligned_double_free, 0},
    {"large_free_at_8", 0, large_free_at_8, 0},
    {"large_free_at_16", 0, large_free_at_16, 0},
    {"large_remap_at_8", 0, large_remap_at_8, 0},
    {"mfree_twice", 0, mfree_twice, 0},
    {"malloc_overflow", 0, malloc_overflow, 0},
    {"keep_malloc_block", 0, keep_malloc_block, 0},
    {"free_kept_malloc_block", 0, free_kept_malloc_block, 0},
    {"waits_ran_out", 0, waits_ran_out, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Misuse, funcs, NULL, NULL, NULL)
