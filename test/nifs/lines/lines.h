/*
 * The NIFs of the lines/ libraries: one source, built by the Makefile with
 * the flags each library's name says (split DWARF, GCC's LTO, no -g, no
 * build ID, no frame pointers), so that test/lines_test.exs can compare
 * the lines their reports name with the markers here. Keep each marker on
 * its call's line.
 */
#ifdef LINES_SHIFTED
/* The same code as another build, its lines 1000 further on: what a NIF
 * rebuilt from an edited source would describe. */
#line 1000
#endif
#include <beam_alloc_nif.h>

/* Inlined into its callers at -O2: a report names it, then the caller's
 * line. */
static inline void lines_free(beam_allocator_t a, unsigned char *p) {
    beam_free(a, p, 24); /* SITE: inlined free */
}

BEAM_NIF(inlined_double_free, .leak_check = true) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 24);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    lines_free(beam_allocator, p);
    lines_free(beam_allocator, p); /* SITE: second free */
    return enif_make_atom(env, "ok");
}

/* Not inlined, and its last act the free: at -O2 a jump, and its frame
 * gone from the report, which named the NIF's line instead, unless the
 * NIF is built without sibling calls (beam_alloc.mk and the Mix compiler
 * build it so). */
static __attribute__((noinline)) void lines_drop(beam_allocator_t a,
                                                 unsigned char *p) {
    beam_free(a, p, 24); /* SITE: tail free */
}

BEAM_NIF(tail_double_free, .leak_check = true) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 24);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    lines_drop(beam_allocator, p);
    lines_drop(beam_allocator, p); /* SITE: second drop */
    return enif_make_atom(env, "ok");
}

BEAM_NIF(leak, .leak_check = true) {
    unsigned char *p =
        beam_alloc(beam_allocator, unsigned char, 24); /* SITE: leak */
    if (p != NULL)
        p[0] = 1;
    return enif_make_atom(env, "ok");
}

/* A free of memory the allocator does not own, env kept across it. Built
 * without frame pointers (omit_fp), the body keeps env in rbp (GCC 12 at
 * -O2 on x86-64; clang picks another register), which the walk took for
 * the body's frame: env lies above the glue's frame, on the
 * scheduler's stack, and its words made a frame of the report that no
 * code of the NIF's was ("<- 0x7eff72f801bf", or an address in beam.smp).
 */
static char lines_not_ours[64];

BEAM_NIF(foreign_free, .leak_check = true) {
    unsigned char *own = beam_alloc(beam_allocator, unsigned char, 24);
    if (own == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_allocator, own, 24);
    beam_free(beam_allocator, lines_not_ours, 24); /* SITE: foreign free */
    return enif_make_atom(env, "ok");
}

/* A free with p, the address of two of the body's own words (below the
 * glue's frame), kept across it: lines_words hides that p is w, so a
 * register the call keeps holds it, rbp for GCC 12 at -O2 without frame
 * pointers (omit_fp). The walk read the words as a frame, and the second,
 * a static's address, as a return address. */
static __attribute__((noinline)) uintptr_t *lines_words(uintptr_t *w) {
    w[0] = 1;
    w[1] = (uintptr_t)&lines_not_ours;
    __asm__ volatile("" : : "r"(w) : "memory");
    return w;
}

BEAM_NIF(stack_words_free, .leak_check = true) {
    uintptr_t w[2];
    uintptr_t *p = lines_words(w);
    beam_free(beam_allocator, lines_not_ours, 24); /* SITE: words free */
    return enif_make_uint64(env, p[0]);
}

/* The failed request's NULL used: under check_all_allocation_failures the
 * VM dies by SIGSEGV, and its crash note names a line of a library built
 * as this one is (test/fault_injection_crash_test.exs). */
BEAM_NIF(uses_null) {
    unsigned char *volatile p =
        beam_alloc(beam_allocator, unsigned char, 24); /* SITE: uses null */
    p[0] = 1;
    beam_free(beam_allocator, p, 24);
    return enif_make_atom(env, "ok");
}

static ErlNifFunc funcs[] = {
    {"inlined_double_free", 0, inlined_double_free, 0},
    {"tail_double_free", 0, tail_double_free, 0},
    {"leak", 0, leak, 0},
    {"uses_null", 0, uses_null, 0},
    {"foreign_free", 0, foreign_free, 0},
    {"stack_words_free", 0, stack_words_free, 0},
};
BEAM_NIF_INIT(LINES_MODULE, funcs, NULL, NULL, NULL)
