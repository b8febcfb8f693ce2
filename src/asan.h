/*
 * AddressSanitizer told which bytes of the general purpose allocator's
 * slabs are free (nothing otherwise). A slab is one block of the backing's,
 * so ASan saw every byte of it as addressable: a NIF built with ASan that
 * read or wrote a freed small block went unseen, where the same bug on
 * malloc's block is a heap-use-after-free report with both stacks.
 */
#ifndef BEAM_ALLOC_ASAN_H
#define BEAM_ALLOC_ASAN_H

/* gcc says so one way, clang another. */
#if defined(__SANITIZE_ADDRESS__)
#define BEAM__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BEAM__ASAN 1
#endif
#endif

#ifdef BEAM__ASAN
#include <sanitizer/asan_interface.h>
#define BEAM__ASAN_POISON(p, n) __asan_poison_memory_region((p), (n))
#define BEAM__ASAN_UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
/* For the allocator's own reads of freed bytes (safe mode's checks). */
#define BEAM__NO_ASAN __attribute__((no_sanitize_address))
/* A function that reads or writes poisoned bytes for the allocator (a
 * freed block's link or tag): out of line, since inlined its accesses
 * would be its caller's, checked. (Not inline: gcc refuses noinline on
 * an inline function; unused: a file may use none of them.) */
#define BEAM__ASAN_EXEMPT __attribute__((noinline, unused, no_sanitize_address))
#else
#define BEAM__ASAN_POISON(p, n) ((void)(p), (void)(n))
#define BEAM__ASAN_UNPOISON(p, n) ((void)(p), (void)(n))
#define BEAM__NO_ASAN
#endif

#endif
