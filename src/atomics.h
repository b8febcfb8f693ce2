/*
 * Every atomic operation of the library goes through these wrappers, one
 * per operation and memory order, so a reader sees the order in the name
 * and a grep for "beam__atomic_" finds every shared access.
 *
 * Two kinds of object:
 *  - _Atomic objects (almost all): C11 <stdatomic.h> underneath.
 *  - Plain objects that must stay plain (the *_plain wrappers): a field of
 *    a public struct (C++ includes the public header, and C++17 has no
 *    _Atomic), and fields whose only writer is their owner, read plainly
 *    on its fast path and atomically by scans. gcc/clang builtins
 *    underneath: clang rejects them on _Atomic objects, hence two sets.
 *
 * Compare-and-swap: the strong forms load with the same order on failure
 * as far as C11 allows (callers use the value seen); the weak forms sit in
 * retry loops that recompute from the value seen, which is read relaxed,
 * but by the acq_rel form (its caller reads what the winner published).
 */
#ifndef BEAM_ALLOC_ATOMICS_H
#define BEAM_ALLOC_ATOMICS_H

#include <stdatomic.h>
#include <stdint.h>

/* Built with ThreadSanitizer (gcc says so one way, clang another): the
 * code it cannot follow (inline asm here; a process-wide barrier, a
 * futex) then takes the ways it knows. */
#if defined(__SANITIZE_THREAD__)
#define BEAM__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define BEAM__TSAN 1
#endif
#endif

/* Orderings ThreadSanitizer cannot see, told to it (nothing otherwise):
 * the system allocator's, from a free of a block to the reuse of its
 * memory by another thread. */
#ifdef BEAM__TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define beam__tsan_acquire(p) __tsan_acquire((void *)(p))
#define beam__tsan_release(p) __tsan_release((void *)(p))
#else
#define beam__tsan_acquire(p) ((void)0)
#define beam__tsan_release(p) ((void)0)
#endif

#define BEAM__RLX memory_order_relaxed
#define BEAM__ACQ memory_order_acquire
#define BEAM__REL memory_order_release
#define BEAM__AR memory_order_acq_rel
#define BEAM__SC memory_order_seq_cst

/* ---- _Atomic objects ----------------------------------------------------- */

#define beam__atomic_init(p, v) atomic_init(p, v)

#define beam__atomic_load_relaxed(p) atomic_load_explicit(p, BEAM__RLX)
#define beam__atomic_load_acquire(p) atomic_load_explicit(p, BEAM__ACQ)
#define beam__atomic_load_seq_cst(p) atomic_load_explicit(p, BEAM__SC)

#define beam__atomic_store_relaxed(p, v) atomic_store_explicit(p, v, BEAM__RLX)
#define beam__atomic_store_release(p, v) atomic_store_explicit(p, v, BEAM__REL)
#define beam__atomic_store_seq_cst(p, v) atomic_store_explicit(p, v, BEAM__SC)

/* Read-modify-write: each returns the value before. */
#define beam__atomic_add_relaxed(p, v)                                         \
    atomic_fetch_add_explicit(p, v, BEAM__RLX)
#define beam__atomic_add_acquire(p, v)                                         \
    atomic_fetch_add_explicit(p, v, BEAM__ACQ)
#define beam__atomic_add_seq_cst(p, v) atomic_fetch_add_explicit(p, v, BEAM__SC)
#define beam__atomic_sub_relaxed(p, v)                                         \
    atomic_fetch_sub_explicit(p, v, BEAM__RLX)
#define beam__atomic_sub_release(p, v)                                         \
    atomic_fetch_sub_explicit(p, v, BEAM__REL)
#define beam__atomic_sub_acq_rel(p, v) atomic_fetch_sub_explicit(p, v, BEAM__AR)
#define beam__atomic_sub_seq_cst(p, v) atomic_fetch_sub_explicit(p, v, BEAM__SC)
#define beam__atomic_or_acq_rel(p, v) atomic_fetch_or_explicit(p, v, BEAM__AR)
#define beam__atomic_exchange_acquire(p, v)                                    \
    atomic_exchange_explicit(p, v, BEAM__ACQ)
#define beam__atomic_exchange_release(p, v)                                    \
    atomic_exchange_explicit(p, v, BEAM__REL)
#define beam__atomic_exchange_acq_rel(p, v)                                    \
    atomic_exchange_explicit(p, v, BEAM__AR)

/* Compare-and-swap: true when *p held *e and now holds d; otherwise *e
 * receives the value seen. Strong, or weak for retry loops. */
#define BEAM__CAS(kind, p, e, d, ok, seen)                                     \
    atomic_compare_exchange_##kind##_explicit(p, e, d, ok, seen)
#define beam__atomic_cas_acquire(p, e, d)                                      \
    BEAM__CAS(strong, p, e, d, BEAM__ACQ, BEAM__ACQ)
#define beam__atomic_cas_acq_rel(p, e, d)                                      \
    BEAM__CAS(strong, p, e, d, BEAM__AR, BEAM__ACQ)
#define beam__atomic_cas_weak_relaxed(p, e, d)                                 \
    BEAM__CAS(weak, p, e, d, BEAM__RLX, BEAM__RLX)
#define beam__atomic_cas_weak_release(p, e, d)                                 \
    BEAM__CAS(weak, p, e, d, BEAM__REL, BEAM__RLX)
#define beam__atomic_cas_weak_acq_rel(p, e, d)                                 \
    BEAM__CAS(weak, p, e, d, BEAM__AR, BEAM__ACQ)

/* A 64-bit counter with a single writer (a thread's own statistics, or
 * counters kept under a lock): no locked instruction, and readers on
 * other threads see whole values. On x86-64 one unlocked add to memory,
 * which is what a relaxed load and store amount to there, in one
 * instruction where the compiler makes three of an _Atomic (these run
 * on every allocation and free). ThreadSanitizer cannot see inside asm:
 * its builds, and other processors, take the relaxed load and store. */
#if defined(__x86_64__) && !defined(BEAM__TSAN)
#define beam__atomic_bump(p, by)                                               \
    do {                                                                       \
        _Static_assert(sizeof *(p) == 8, "a 64-bit counter");                  \
        __asm__("addq %1, %0" : "+m"(*(int64_t *)(p)) : "er"((int64_t)(by)));  \
    } while (0)
#else
#define beam__atomic_bump(p, by)                                               \
    beam__atomic_store_relaxed(p, beam__atomic_load_relaxed(p) + (by))
#endif
/* The value after is wanted: a relaxed load and store everywhere. On
 * x86-64 that is a load, an add and a store (three simple instructions);
 * an xadd was four micro-ops, and with the copy, negation and add back
 * around it four instructions in the inline free. */
static inline int64_t beam__atomic_bump_fetch(_Atomic int64_t *p, int64_t by) {
    int64_t after = beam__atomic_load_relaxed(p) + by;
    beam__atomic_store_relaxed(p, after);
    return after;
}

/* Keeps the compiler from moving memory accesses across it (the other
 * half of an ordering that a process-wide barrier provides). */
#define beam__atomic_compiler_fence() atomic_signal_fence(BEAM__SC)

/* ---- plain objects ------------------------------------------------------- */

#define beam__atomic_load_plain_relaxed(p) __atomic_load_n(p, __ATOMIC_RELAXED)
#define beam__atomic_load_plain_acquire(p) __atomic_load_n(p, __ATOMIC_ACQUIRE)
#define beam__atomic_store_plain_relaxed(p, v)                                 \
    __atomic_store_n(p, v, __ATOMIC_RELAXED)
#define beam__atomic_store_plain_release(p, v)                                 \
    __atomic_store_n(p, v, __ATOMIC_RELEASE)
#define beam__atomic_add_plain_relaxed(p, v)                                   \
    __atomic_fetch_add(p, v, __ATOMIC_RELAXED)
#define beam__atomic_cas_plain_acq_rel(p, expected, desired)                   \
    __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL,     \
                                __ATOMIC_ACQUIRE)

#endif
