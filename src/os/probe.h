/*
 * Reading memory that may not be there, without faulting: for the words a
 * call reads before a pointer it was given (a malloc-style block's header,
 * the large allocator's), which for a pointer these calls never returned
 * (a foreign one, at the start of a mapping) lie on a page that may be
 * unmapped or PROT_NONE. Only such a pointer's page can be missing: a
 * caller asks only when the words it wants lie on another page than the
 * pointer (the pointer is at a page's start), so the common path pays one
 * test and the probe is a syscall on the rare one.
 *
 * On Linux: process_vm_readv of our own process, which copies what is
 * readable and says EFAULT for the rest (unmapped or PROT_NONE alike).
 * Where it is missing or refused (a seccomp policy), and elsewhere:
 * mincore, which tells mapped pages only (a PROT_NONE one still faults).
 */
#ifndef BEAM_ALLOC_OS_PROBE_H
#define BEAM_ALLOC_OS_PROBE_H

#include "../internal.h"

/* Where a page starts on every system we run on (pages are 4 KiB or a
 * multiple): words before a pointer not at such a boundary, within its
 * distance from it, lie on the pointer's own page. */
#define BEAM__PROBE_PAGE ((uintptr_t)4096)

/* true when the before bytes below at lie on at's own page. */
static inline bool beam__probe_same_page(const void *at, size_t before) {
    return ((uintptr_t)at & (BEAM__PROBE_PAGE - 1)) >= before;
}

/* Copies len bytes at at (one page at most, not crossing into another)
 * to out: true, or false with nothing read when that memory is not
 * readable. Any thread; errno is left as it was. */
BEAM__HIDDEN bool beam__probe_read(const void *at, void *out, size_t len);

#endif
