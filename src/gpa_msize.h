/*
 * What the malloc-style calls (malloc.c) ask of a general purpose allocator
 * instance: the size of a block from its address alone (gpa_msize.c).
 */
#ifndef BEAM_ALLOC_GPA_MSIZE_H
#define BEAM_ALLOC_GPA_MSIZE_H

#include "internal.h"

/* The length beam_mfree passes to the instance's free for a pointer that
 * is not a live block, so that the instance names the misuse (double
 * free, foreign pointer, ...): the call has no length, and the report says
 * so rather than print one. No caller's length is this (the helpers stop
 * lengths above PTRDIFF_MAX), and no check takes it for a block's. */
#define BEAM__GPA_LEN_UNSIZED SIZE_MAX

/* The length to allocate for a malloc-style block of n bytes from gpa: the
 * size class (untracked), n itself (tracked: exact lengths are checked),
 * or n rounded up to 16 above the classes. 0 when n is too large. */
BEAM__HIDDEN size_t beam__gpa_good_size(const beam_gpa_t *gpa, size_t n);

/* beam_malloc's block of n bytes on gpa itself (not through another
 * allocator, which counts the call): beam__gpa_good_size bytes at
 * alignment 16, as the instance's vtable alloc serves them, without its
 * indirect call. NULL when n is too large or memory runs out. */
BEAM__HIDDEN void *beam__gpa_malloc(beam_gpa_t *gpa, size_t n, uintptr_t ret);

/* The length and alignment gpa holds for the live block at p, as its free
 * wants them. false when p is not a block of gpa (not one of its blocks, or
 * one already freed): the caller lets the instance's free report it. The
 * process-wide instance answers for a live block another copy of the
 * module's library holds too (its free goes there: gpa.c).
 * owned: the caller owns the block (it frees or moves it), so its memory
 * may be read for the free tag; a size query passes false, and an
 * untracked small block freed already then still answers its class.
 * Lock-free for small blocks; takes the instance lock for medium and
 * large ones. */
BEAM__HIDDEN bool beam__gpa_block_size(beam_gpa_t *gpa, const void *p,
                                       bool owned, size_t *len,
                                       size_t *alignment);

/* beam_msize of p (not NULL) on gpa: beam__gpa_block_size's length for a
 * size query (owned false); when p is not a block of gpa, 0, the misuse
 * reported (beam__report_not_gpa_block; ret: the caller's call). Without
 * the free tag's read (another thread may own the block), a block freed
 * into a slab still in use answers its class size, as it always did. */
BEAM__HIDDEN size_t beam__gpa_msize(beam_gpa_t *gpa, const void *p,
                                    uintptr_t ret);

/* beam_mfree of p (not NULL) on gpa itself (not through another
 * allocator, which counts the call). The common case in one lookup: a
 * live block of one of gpa's untracked class slabs (every check of the
 * instance's inline free passes), freed as its class size, the length
 * beam_malloc asked for. Otherwise the sized way: beam__gpa_block_size,
 * then the instance's free, which reports what p is when it is no live
 * block of gpa. */
BEAM__HIDDEN void beam__gpa_mfree(beam_gpa_t *gpa, void *p, uintptr_t ret);

/* beam_mfree of p (not NULL) with the length gpa holds for it, freed
 * through a (gpa's own allocator, or a fault-injection check's plan
 * allocator over gpa, which counts the call); when gpa holds no live
 * block at p, gpa's own free reports what p is (its length unknown:
 * BEAM__GPA_LEN_UNSIZED). beam__gpa_mfree's way past its common case. */
BEAM__HIDDEN void beam__gpa_mfree_sized(beam_allocator_t a, beam_gpa_t *gpa,
                                        void *p, uintptr_t ret);

/* malloc.c's report of a malloc-style call (call: its name) given a p
 * that is not a live block of the instance. */
BEAM__HIDDEN void beam__report_not_gpa_block(const char *call, const void *p,
                                             uintptr_t ret);

/* gpa has no state: no block of it is live (none made yet, or its deinit
 * gave them all back). */
BEAM__HIDDEN bool beam__gpa_stateless(beam_gpa_t *gpa);

/* Before a block that cannot change size in place is moved (the GPA's
 * remap, which realloc calls before it copies len bytes out of p): true
 * when p is a live block of gpa holding at least len bytes; otherwise the
 * misuse is reported (ret: the caller's call) and nothing may be read
 * from p. */
BEAM__HIDDEN bool beam__gpa_realloc_ok(beam_gpa_t *gpa, const void *p,
                                       size_t len, size_t alignment,
                                       uintptr_t ret);

#endif
