/*
 * Misuse kinds named in more than one library: each NIF library's copy of
 * beam_alloc (internal.h) and the fault-injection driver, which records a
 * misuse of its own under the same kind (included by nif/abi.h, the one
 * header the driver meets the copies through). Plain text, no
 * dependencies: the standalone build includes it too.
 */
#ifndef BEAM_ALLOC_MISUSE_KINDS_H
#define BEAM_ALLOC_MISUSE_KINDS_H

/* The kind of a resize, remap or realloc given a block that is not live,
 * or a wrong length or alignment. */
#define BEAM__KIND_RESIZE                                                      \
    "resize or realloc with a wrong pointer, length or alignment"
/* The frees' kinds: the GPA's reports, the refused sized frees (core.c)
 * and the malloc-style calls (malloc.c) count under these. */
#define BEAM__KIND_DOUBLE_FREE "double free"
/* beam_msize given a pointer that is no live block of the allocator: a
 * freed one (a use after free), a sized block, a foreign pointer. */
#define BEAM__KIND_BAD_SIZE_QUERY                                              \
    "size query of a pointer that is not a live block"
#define BEAM__KIND_WRONG_FREE "free with a wrong length or alignment"
#define BEAM__KIND_FOREIGN_FREE "free of a pointer the allocator does not own"
/* An allocation, resize, remap or realloc asked for an alignment that is
 * not a power of two (0 included): refused (NULL, false) and reported. */
#define BEAM__KIND_BAD_ALIGNMENT "alignment not a power of two"
/* A call through an allocator after its deinit (an arena's). */
#define BEAM__KIND_AFTER_DEINIT "use of an allocator after its deinit"
/* beam_gpa_deinit of an instance while an instance over it (its backing
 * this one) is live: that one is deinitialised first. */
#define BEAM__KIND_DEINIT_ORDER "deinit of an instance that backs a live one"
/* A NULL instance given to an instance's function (init, deinit, ...):
 * nothing done, the answer of "nothing there" (false, 0, a refusing
 * allocator). */
#define BEAM__KIND_NULL_INSTANCE "NULL instance"
/* beam_arena_reset given a mode that is none of beam_arena_reset_mode's
 * (a cast integer): nothing freed, false. */
#define BEAM__KIND_BAD_MODE "reset with an unknown mode"

#endif
