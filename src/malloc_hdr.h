/*
 * The header word of a malloc-style block over an allocator that does not
 * know its blocks (the scheme: malloc.c's opening comment). Apart so that
 * the tests that forge a word that passes the check (test/c/test_malloc.c,
 * test/nifs/faults_nif.c) write the one malloc.c checks, not a copy of
 * its hash.
 */
#ifndef BEAM_ALLOC_MALLOC_HDR_H
#define BEAM_ALLOC_MALLOC_HDR_H

#include <stddef.h>
#include <stdint.h>

#define BEAM__HDR_GOOD_BITS 47
#define BEAM__HDR_OFF16 ((uint64_t)1 << BEAM__HDR_GOOD_BITS)

/* 16 bits of a hash of the user address and good: a pointer that is not
 * one of these blocks passes with odds of 1 in 65536. */
static inline uint64_t beam__hdr_check(const void *user, uint64_t good) {
    uint64_t x = (uint64_t)(uintptr_t)user ^ (good * 0x9E3779B97F4A7C15ull);
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return x >> 48;
}

/* The word of live block user of good bytes, off (8 or 16) bytes into its
 * parent block. */
static inline uint64_t beam__hdr_word(const void *user, uint64_t good,
                                      size_t off) {
    return beam__hdr_check(user, good) << 48 |
           (off == 16 ? BEAM__HDR_OFF16 : 0) | good;
}

#endif
