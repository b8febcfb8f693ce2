/*
 * A thread-local object's address without the dynamic linker's call.
 *
 * In a dlopen'ed NIF every thread-local access is a TLS descriptor call:
 * _dl_tlsdesc_return when glibc placed the library in its static TLS, a
 * lookup otherwise (internal.h says when). Static TLS sits at one offset
 * from the thread pointer, the same on every thread (glibc sets the block
 * up in threads that already run when the library is loaded): the
 * descriptor's argument is that offset, which _dl_tlsdesc_return hands
 * back. Read once, it makes an access the thread pointer plus a constant:
 * two instructions, no call (measured in the BEAM, 64-byte alloc+free
 * through the GPA against mimalloc: 1.17-1.23x with the call, 1.07-1.09x
 * with initial-exec TLS, which is this access).
 *
 * The offset is taken only when the object's own descriptor says it is
 * static: its argument is exactly the object's distance from the thread
 * pointer on this thread. A dynamic descriptor's argument is a pointer,
 * never that distance; in an executable the linker rewrites the
 * descriptor's address into the offset itself (static too). Elsewhere
 * than x86-64 Linux, nothing is known and the ordinary access stays.
 */
#ifndef BEAM_ALLOC_OS_TLS_H
#define BEAM_ALLOC_OS_TLS_H

/* (Self-contained: internal.h includes it, for the thread-local counters
 * there.) */
#include <stdint.h>

#if defined(__x86_64__) && defined(__linux__)
#define BEAM__HAVE_TLS_OFFSET 1

/* x86-64 keeps the thread pointer at %fs:0. Not volatile: within one
 * thread it never changes, so the compiler may reuse it. */
static inline __attribute__((always_inline)) char *beam__thread_pointer(void) {
    char *tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    return tp;
}

/* The static offset of the thread-local object var (a plain identifier:
 * the assembler names it), or 0 when it is not in static TLS. Any thread,
 * any time; the answer is the same on every thread. */
#define BEAM__TLS_STATIC_OFFSET(var)                                           \
    beam__tls_static_offset((char *)&(var), ({                                 \
                                intptr_t desc_;                                \
                                __asm__("lea " #var "@TLSDESC(%%rip), %0"      \
                                        : "=r"(desc_));                        \
                                desc_;                                         \
                            }))

/* addr: the object's address on this thread; desc: the address of its
 * descriptor, or, rewritten by the linker of an executable, its offset. */
static inline intptr_t beam__tls_static_offset(char *addr, intptr_t desc) {
    intptr_t off = addr - beam__thread_pointer();
    if (desc == off)
        return off;
    /* A descriptor: {resolver, argument}. */
    return ((const intptr_t *)desc)[1] == off ? off : 0;
}

/* A thread-local object's offset, cached for every thread in an
 * _Atomic intptr_t: 0 until learned, BEAM__TLS_DYNAMIC once known not to
 * be static (an offset of an object aligned to 8 is never odd), else the
 * offset. BEAM__TLS_LEARN(cache, var) learns it, once, on any thread (the
 * slow path that first meets the object; it needs atomics.h);
 * beam__tls_cached(off), given the cache's value, is the object's address
 * on this thread, or NULL: then the ordinary access, the linker's call. */
#define BEAM__TLS_DYNAMIC 1
#define BEAM__TLS_LEARN(cache, var)                                            \
    do {                                                                       \
        if (beam__atomic_load_relaxed(&(cache)) == 0) {                        \
            intptr_t off_ = BEAM__TLS_STATIC_OFFSET(var);                      \
            beam__atomic_store_relaxed(&(cache),                               \
                                       off_ != 0 ? off_ : BEAM__TLS_DYNAMIC);  \
        }                                                                      \
    } while (0)

static inline __attribute__((always_inline)) char *
beam__tls_cached(intptr_t off) {
    /* One compare for both: 0 and 1 are the only values not above 1. */
    return (uintptr_t)off > BEAM__TLS_DYNAMIC ? beam__thread_pointer() + off
                                              : NULL;
}

/* Where the cache does not answer (not learned yet, or dynamic TLS), the
 * ordinary access. gcc makes it a TLS descriptor call (Makefile,
 * TLS_DIALECT), which keeps every register. clang (14, which does not
 * take -mtls-dialect=gnu2) makes it a plain call of __tls_get_addr, which
 * may clobber every caller-saved register: a fast path that holds one,
 * even on a branch it seldom takes, saves and restores callee-saved
 * registers on every call (beam_alloc_bytes pushed and popped 6, 63
 * instructions a small allocation against gcc's 44). Where
 * BEAM__TLS_PLAIN_CALL is defined, a fast path that should stay free of
 * calls leaves the access to an out-of-line path. */
#ifdef __clang__
#define BEAM__TLS_PLAIN_CALL 1
#endif
#endif

#endif
