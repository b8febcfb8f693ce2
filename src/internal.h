/*
 * Internal declarations shared by the sources of beam_alloc. Nothing here is
 * public: names carry the beam__ prefix and have hidden visibility.
 */
#ifndef BEAM_ALLOC_INTERNAL_H
#define BEAM_ALLOC_INTERNAL_H

#include "beam_alloc.h"

#include <stdarg.h>

#if defined(__GNUC__) || defined(__clang__)
#define BEAM__HIDDEN __attribute__((visibility("hidden")))
#define BEAM__LIKELY(x) __builtin_expect(!!(x), 1)
#define BEAM__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define BEAM__NOINLINE __attribute__((noinline))
#define BEAM__RET_ADDR() ((uintptr_t)__builtin_return_address(0))
#define BEAM__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define BEAM__HIDDEN
#define BEAM__LIKELY(x) (x)
#define BEAM__UNLIKELY(x) (x)
#define BEAM__NOINLINE
#define BEAM__RET_ADDR() ((uintptr_t)0)
#define BEAM__PRINTF(f, a)
#endif

/* The system backend: enif_alloc & co. in the NIF build (backend_enif.c),
 * malloc & co. in the standalone build (backend_libc.c). Same contract as
 * malloc, except that alignment is only BEAM_MAX_ALIGN. */
BEAM__HIDDEN void *beam__sys_alloc(size_t len);
BEAM__HIDDEN void *beam__sys_realloc(void *mem, size_t len);
BEAM__HIDDEN void beam__sys_free(void *mem);

/* The vtables behind the built-in allocators (so static initialisers can
 * name them: a const object is not a constant expression in C). */
BEAM__HIDDEN extern const beam_allocator_vtable beam__raw_vtable;
BEAM__HIDDEN extern const beam_allocator_vtable beam__large_vtable;
BEAM__HIDDEN extern const beam_allocator_vtable beam__gpa_vtable;

/* Reporting (report.c): one formatted line through the report hook. */
BEAM__HIDDEN void beam__report(const char *fmt, ...) BEAM__PRINTF(1, 2);
/* Describe a code address ("lib.so(fun+0x1c)" or "0x..."): buf of n bytes. */
BEAM__HIDDEN const char *beam__describe_addr(uintptr_t addr, char *buf,
                                             size_t n);

static inline bool beam__is_pow2(size_t x) {
    return x != 0 && (x & (x - 1)) == 0;
}

static inline uintptr_t beam__align_up(uintptr_t x, size_t alignment) {
    return (x + (alignment - 1)) & ~(uintptr_t)(alignment - 1);
}

/* Largest length any allocator accepts: objects larger than PTRDIFF_MAX
 * break pointer subtraction, so no allocator hands them out. */
#define BEAM__MAX_LEN ((size_t)PTRDIFF_MAX)

#endif
