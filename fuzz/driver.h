/*
 * The shared libFuzzer driver: turns the input bytes into a sequence of
 * allocator operations and checks every answer against a model.
 *
 * The model is the set of live blocks, each (ptr, len, alignment, seed):
 * every live byte holds pattern(seed, offset), written when the block is
 * made or grows and verified before it is resized, moved or freed, on a
 * "check" operation and at the end. So a block handed out twice, a copy
 * that loses or shifts bytes, a failed grow that touched the old block or a
 * write past a block into its neighbour shows up as a pattern mismatch;
 * AddressSanitizer catches what escapes to the C library's heap.
 *
 * Checked on every call:
 *   - returned pointers are aligned; zero lengths give the aligned sentinel;
 *   - non-power-of-two alignments and lengths above PTRDIFF_MAX fail before
 *     the allocator is asked (NULL or false, nothing changed);
 *   - realloc and remap keep min(len, new_len) bytes; a failure (NULL or
 *     false) leaves the old block as it was;
 *   - each harness's expectations (hooks below): a request it knows must
 *     succeed succeeds, one that must fail fails, a fixed buffer places
 *     blocks exactly where its model says.
 * At the end every block is verified and freed; the harness then checks
 * its allocator gave everything back.
 *
 * Input layout: the harness reads its own set-up bytes first, then the
 * driver reads one opcode byte followed by that operation's argument bytes,
 * until the input runs out. A short read yields zeros, so every input is a
 * valid program.
 *
 * Request sizes stay in two bands: "sane" (at most FZ_SANE_MAX, which every
 * unbounded allocator must serve) and "hostile" (at least FZ_HUGE_MIN,
 * which nothing can serve: more than a process's whole address space, even
 * with memory overcommitted). Nothing in between is ever asked for, so the
 * fuzzer's malloc limit and the machine's memory are never the reason for
 * an answer.
 */
#ifndef BEAM_FUZZ_DRIVER_H
#define BEAM_FUZZ_DRIVER_H

#include <beam_alloc.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Failed requests are part of the game: the sanitizer's allocator must
 * answer NULL rather than abort. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    return "allocator_may_return_null=1";
}

const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void) {
    return "print_stacktrace=1";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_SANE_MAX ((size_t)8 << 20) /* 8 MiB */
#define FZ_HUGE_MIN ((size_t)1 << 48) /* above any address space */
#define FZ_BUDGET ((size_t)32 << 20)  /* live bytes in the model */
#define FZ_MAX_BLOCKS 128
#define FZ_MAX_OPS 2000

static void fz_fail(const char *file, int line, const char *what) {
    fprintf(stderr, "fuzz: %s:%d: check failed: %s\n", file, line, what);
    abort();
}

#define FZ_ASSERT(cond)                                                        \
    do {                                                                       \
        if (!(cond))                                                           \
            fz_fail(__FILE__, __LINE__, #cond);                                \
    } while (0)

static inline bool fz_pow2(size_t x) {
    return x != 0 && (x & (x - 1)) == 0;
}

static inline bool fz_aligned(const void *p, size_t alignment) {
    return ((uintptr_t)p & (alignment - 1)) == 0;
}

/* ---- input ---------------------------------------------------------------
 */

typedef struct fz_reader {
    const uint8_t *p;
    size_t n;
} fz_reader;

static inline uint8_t fz_u8(fz_reader *r) {
    if (r->n == 0)
        return 0;
    r->n--;
    return *r->p++;
}

static inline uint16_t fz_u16(fz_reader *r) {
    uint16_t lo = fz_u8(r);
    return (uint16_t)(lo | (uint16_t)fz_u8(r) << 8);
}

static inline uint32_t fz_u32(fz_reader *r) {
    uint32_t lo = fz_u16(r);
    return lo | (uint32_t)fz_u16(r) << 16;
}

/* A length nothing can serve (each above PTRDIFF_MAX, or just under it,
 * or where len + alignment wraps). */
static size_t fz_hostile(fz_reader *r) {
    uint8_t k = fz_u8(r);
    uint8_t v = fz_u8(r);
    switch (k % 10) {
    case 0:
        return SIZE_MAX - v;
    case 1:
        return (size_t)PTRDIFF_MAX + 1 + v;
    case 2:
        return (size_t)PTRDIFF_MAX - v;
    case 3:
        return (size_t)PTRDIFF_MAX - ((size_t)1 << (v % 31)) + 1;
    case 4:
        return SIZE_MAX - ((size_t)1 << (v % 31)) + 2;
    case 5:
        return (size_t)1 << (48 + v % 15);
    case 6:
        return SIZE_MAX / 2 + v;
    case 7:
        return FZ_HUGE_MIN + ((size_t)v << 32);
    case 8:
        return (size_t)PTRDIFF_MAX - 8 - ((size_t)1 << (v % 31));
    default:
        return SIZE_MAX;
    }
}

static const size_t fz_edges[] = {
    1,    7,    8,    9,     15,    16,    17,   24,   31,   32,
    33,   48,   63,   64,    65,    127,   128,  129,  1023, 1024,
    1025, 4095, 4096, 4097,  4672,  4673,  5456, 5457, 6144, 6145,
    8191, 8192, 8193, 16384, 65535, 65536, 65537};

/* A request length: mostly small, some around the size-class and slab
 * boundaries, a few large, now and then 0 or hostile. */
static size_t fz_size(fz_reader *r) {
    uint8_t sel = fz_u8(r) & 31;
    if (sel < 2)
        return 0;
    if (sel < 14)
        return (size_t)fz_u8(r) + 1;
    if (sel < 20)
        return (size_t)(fz_u16(r) % 9000) + 1;
    if (sel < 25)
        return fz_edges[fz_u8(r) % (sizeof fz_edges / sizeof fz_edges[0])];
    if (sel < 29)
        return (size_t)(fz_u32(r) % (128u << 10)) + 1;
    if (sel < 30)
        return (size_t)(fz_u32(r) % (2u << 20)) + 1;
    return fz_hostile(r);
}

/* Calls made with an alignment that is not a power of two: the helpers
 * refuse each and report it once (a misuse of the caller's). A harness
 * that counts reports expects these; reset with each input. */
static size_t fz_bad_align_calls;

static const size_t fz_bad_aligns[] = {
    0, 3, 5, 6, 12, 24, 48, 100, 4097, 65535, (size_t)PTRDIFF_MAX, SIZE_MAX};

/* An alignment: mostly up to 16, some up to 2^16, a few up to 2^20, now and
 * then not a power of two. */
static size_t fz_align(fz_reader *r) {
    uint8_t sel = fz_u8(r) & 31;
    uint8_t v = fz_u8(r);
    if (sel < 18)
        return (size_t)1 << (v % 5);
    if (sel < 25)
        return (size_t)1 << (v % 13);
    if (sel < 29)
        return (size_t)1 << (v % 17);
    if (sel < 30)
        return (size_t)1 << (17 + v % 4);
    return fz_bad_aligns[v % (sizeof fz_bad_aligns / sizeof fz_bad_aligns[0])];
}

/* A new length for a block of len bytes. */
static size_t fz_new_len(fz_reader *r, size_t len) {
    uint8_t sel = fz_u8(r) & 15;
    switch (sel) {
    case 0:
        return 0;
    case 1:
        return len;
    case 2:
    case 3:
    case 4:
        return len > 1 ? len - 1 - fz_u16(r) % (len - 1) : 1;
    case 5:
        return len > 0 ? len - 1 : 0;
    case 6:
    case 7:
    case 8:
        return len + fz_u8(r) + 1;
    case 9:
    case 10:
        return len + fz_u16(r) + 1;
    case 11:
        return len * 2 + 1;
    case 12:
        return fz_edges[fz_u8(r) % (sizeof fz_edges / sizeof fz_edges[0])];
    case 13:
        return fz_size(r);
    case 14:
        return len + 1;
    default:
        return fz_hostile(r);
    }
}

/* ---- the model -----------------------------------------------------------
 */

typedef struct fz_block {
    unsigned char *ptr;
    size_t len;   /* 0: the zero-length sentinel */
    size_t align; /* always a power of two */
    size_t elem;  /* made by the array helpers with this element size, or 0 */
    uint8_t seed;
} fz_block;

typedef struct fz_model {
    fz_block b[FZ_MAX_BLOCKS];
    size_t n;
    size_t live_bytes; /* sum of len */
    uint8_t next_seed;
} fz_model;

static inline size_t fz_live_count(const fz_model *m) {
    size_t c = 0;
    for (size_t i = 0; i < m->n; i++)
        c += m->b[i].len != 0;
    return c;
}

/* The pattern: byte i of a block with seed s is fz_tab[(i + 257 s) mod P],
 * fz_tab a fixed pseudo-random table of period P (a prime near 64 KiB), so
 * blocks are written and compared with a few large memcpy and memcmp
 * calls; every block starts at another phase, and bytes copied to the
 * wrong offset do not match. */
#define FZ_PERIOD 65521u
static unsigned char fz_tab[2 * FZ_PERIOD];

static inline const unsigned char *fz_tab_at(uint8_t seed, size_t at) {
    return fz_tab + (at + 257u * seed) % FZ_PERIOD;
}

static inline size_t fz_stretch(size_t at, size_t to) {
    return to - at < FZ_PERIOD ? to - at : FZ_PERIOD;
}

static void fz_fill(const fz_block *b, size_t from, size_t to) {
    if (fz_tab[0] == 0) {
        uint32_t x = 2463534242u;
        for (size_t i = 0; i < FZ_PERIOD; i++) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            fz_tab[i] = fz_tab[i + FZ_PERIOD] = (unsigned char)(x >> 24);
        }
        fz_tab[0] = fz_tab[FZ_PERIOD] |= 1;
    }
    for (size_t at = from, n; at < to; at += n) {
        n = fz_stretch(at, to);
        memcpy(b->ptr + at, fz_tab_at(b->seed, at), n);
    }
}

static bool fz_range_ok(const fz_block *b, size_t from, size_t to) {
    for (size_t at = from, n; at < to; at += n) {
        n = fz_stretch(at, to);
        if (memcmp(b->ptr + at, fz_tab_at(b->seed, at), n) != 0)
            return false;
    }
    return true;
}

static void fz_verify_prefix(const fz_block *b, size_t len) {
    FZ_ASSERT(fz_range_ok(b, 0, len));
}

static void fz_verify(const fz_block *b) {
    fz_verify_prefix(b, b->len);
}

static void fz_verify_all(const fz_model *m) {
    for (size_t i = 0; i < m->n; i++)
        fz_verify(&m->b[i]);
}

static fz_block *fz_add(fz_model *m, void *p, size_t len, size_t align,
                        size_t elem) {
    FZ_ASSERT(m->n < FZ_MAX_BLOCKS);
    fz_block *b = &m->b[m->n++];
    b->ptr = p;
    b->len = len;
    b->align = align;
    b->elem = elem;
    b->seed = m->next_seed;
    m->next_seed = (uint8_t)(m->next_seed + 97);
    m->live_bytes += len;
    fz_fill(b, 0, len);
    return b;
}

static void fz_remove(fz_model *m, size_t i) {
    m->live_bytes -= m->b[i].len;
    m->b[i] = m->b[--m->n];
}

/* ---- what a harness provides ---------------------------------------------
 */

typedef enum { FZ_RESIZE, FZ_REMAP, FZ_REALLOC } fz_change;

/* Expectations answer FZ_MAY (no opinion), FZ_MUST_FAIL or FZ_MUST_WORK; a
 * harness that knows where the block must land sets *where. They are asked
 * only about calls that reach the allocator's vtable (non-zero lengths at
 * most PTRDIFF_MAX, a power-of-two alignment, a length that changes). */
enum { FZ_MAY = -1, FZ_MUST_FAIL = 0, FZ_MUST_WORK = 1 };

typedef struct fz_target fz_target;
struct fz_target {
    beam_allocator_t a;
    void *user;
    int (*expect_alloc)(fz_target *t, size_t len, size_t align, void **where);
    int (*expect_change)(fz_target *t, fz_change kind, const fz_block *b,
                         size_t new_len, void **where);
    /* Told before the driver frees a block of len > 0 (free, or a change to
     * length 0). */
    void (*on_free)(fz_target *t, const fz_block *b);
    /* Forget every block at once (arena and fixed buffer reset). */
    void (*reset)(fz_target *t, fz_reader *r);
    /* Bytes the allocator holds for the model; above FZ_BUDGET the driver
     * resets (when it can). */
    size_t (*footprint)(fz_target *t);
    /* Invariants against the model: after each operation (full == false,
     * keep it cheap) and on a check operation (full == true). */
    void (*check)(fz_target *t, const fz_model *m, bool full);
    /* A harness-specific operation (misuse). */
    void (*extra)(fz_target *t, fz_model *m, fz_reader *r);
};

static int fz_ask_alloc(fz_target *t, size_t len, size_t align, void **where) {
    *where = NULL;
    if (len == 0 || len > (size_t)PTRDIFF_MAX || !fz_pow2(align))
        return FZ_MAY;
    if (len >= FZ_HUGE_MIN)
        return FZ_MUST_FAIL;
    if (t->expect_alloc == NULL)
        return FZ_MAY;
    return t->expect_alloc(t, len, align, where);
}

static int fz_ask_change(fz_target *t, fz_change kind, const fz_block *b,
                         size_t new_len, void **where) {
    *where = NULL;
    if (b->len == 0 || new_len == 0 || new_len == b->len ||
        new_len > (size_t)PTRDIFF_MAX)
        return FZ_MAY;
    if (new_len >= FZ_HUGE_MIN)
        return FZ_MUST_FAIL;
    if (t->expect_change == NULL)
        return FZ_MAY;
    return t->expect_change(t, kind, b, new_len, where);
}

static void fz_check_answer(int expect, void *where, const void *p) {
    if (expect == FZ_MUST_FAIL)
        FZ_ASSERT(p == NULL);
    if (expect == FZ_MUST_WORK)
        FZ_ASSERT(p != NULL);
    if (where != NULL && p != NULL)
        FZ_ASSERT(p == where);
}

/* Between the sane and the hostile band nothing is asked for. */
static bool fz_askable(size_t len, const fz_model *m) {
    if (len > FZ_SANE_MAX && len < FZ_HUGE_MIN)
        return false;
    return len >= FZ_HUGE_MIN || m->live_bytes + len <= FZ_BUDGET;
}

static void fz_tell_free(fz_target *t, const fz_block *b) {
    if (t->on_free != NULL && b->len != 0)
        t->on_free(t, b);
}

/* ---- operations ----------------------------------------------------------
 */

static void fz_free_at(fz_target *t, fz_model *m, size_t i) {
    fz_block *b = &m->b[i];
    fz_verify(b);
    fz_tell_free(t, b);
    if (b->elem != 0)
        beam_free_array(t->a, b->ptr, b->len / b->elem, b->elem, b->align);
    else
        beam_free_bytes(t->a, b->ptr, b->len, b->align);
    fz_remove(m, i);
}

/* What every successful allocation must look like. */
static void fz_took(fz_model *m, void *p, size_t len, size_t align,
                    size_t elem) {
    FZ_ASSERT(fz_aligned(p, align));
    if (len == 0)
        FZ_ASSERT(p == (void *)(uintptr_t)(0 - (uintptr_t)align));
    fz_add(m, p, len, align, elem);
}

/* The block the input picks, in *i: false when there is none. */
static inline bool fz_pick(const fz_model *m, fz_reader *r, size_t *i) {
    if (m->n == 0)
        return false;
    *i = fz_u8(r) % m->n;
    return true;
}

static void fz_op_free(fz_target *t, fz_model *m, fz_reader *r);

/* The answer p to an allocation of len bytes (elem-byte elements when
 * elem != 0) against the model: NULL for a request nothing may serve (an
 * overflowed count, a bad alignment, more than PTRDIFF_MAX), a block for
 * length 0, what fz_ask_alloc expected otherwise; a block is taken. */
static void fz_alloc_answered(fz_model *m, void *p, bool impossible, size_t len,
                              size_t align, size_t elem, int expect,
                              void *where) {
    if (impossible || !fz_pow2(align) || len > (size_t)PTRDIFF_MAX) {
        FZ_ASSERT(p == NULL);
        return;
    }
    if (len == 0)
        FZ_ASSERT(p != NULL);
    fz_check_answer(expect, where, p);
    if (p != NULL)
        fz_took(m, p, len, align, elem);
}

static void fz_op_alloc(fz_target *t, fz_model *m, fz_reader *r) {
    if (m->n == FZ_MAX_BLOCKS) {
        fz_op_free(t, m, r); /* full: make room instead */
        return;
    }
    size_t len = fz_size(r);
    size_t align = fz_align(r);
    if (!fz_askable(len, m))
        return;
    void *where;
    int expect = fz_ask_alloc(t, len, align, &where);
    fz_bad_align_calls += !fz_pow2(align);
    void *p = beam_alloc_bytes(t->a, len, align);
    fz_alloc_answered(m, p, false, len, align, 0, expect, where);
}

static const size_t fz_elem_sizes[] = {
    1,        2, 4, 8, 12, 16, 24, 4096, SIZE_MAX / 4 + 1, SIZE_MAX / 8 + 1,
    SIZE_MAX, 3};

/* beam_alloc_array: count * size either fits or overflows to NULL. */
static void fz_op_alloc_array(fz_target *t, fz_model *m, fz_reader *r) {
    if (m->n == FZ_MAX_BLOCKS) {
        fz_op_free(t, m, r);
        return;
    }
    size_t size = fz_elem_sizes[fz_u8(r) % (sizeof fz_elem_sizes /
                                            sizeof fz_elem_sizes[0])];
    uint8_t sel = fz_u8(r);
    size_t n;
    switch (sel % 8) {
    case 0:
        n = SIZE_MAX / size + 1 + fz_u8(r);
        break;
    case 1:
        n = SIZE_MAX / 4;
        break;
    case 2:
        n = SIZE_MAX - fz_u8(r);
        break;
    case 3:
        n = 0;
        break;
    default:
        n = fz_u16(r) % 512;
        break;
    }
    size_t align = fz_align(r);
    size_t len;
    bool overflow = beam_mul_overflow(n, size, &len);
    if (!overflow && !fz_askable(len, m))
        return;
    void *where = NULL;
    int expect = overflow ? FZ_MUST_FAIL : fz_ask_alloc(t, len, align, &where);
    /* (An overflowing count fails first, unreported.) */
    fz_bad_align_calls += !overflow && !fz_pow2(align);
    void *p = beam_alloc_array(t->a, n, size, align);
    fz_alloc_answered(m, p, overflow, len, align, size, expect, where);
}

static void fz_op_free(fz_target *t, fz_model *m, fz_reader *r) {
    size_t i;
    if (fz_pick(m, r, &i))
        fz_free_at(t, m, i);
}

/* The block at i now has new_len bytes at p (the first min bytes kept). */
static void fz_changed(fz_model *m, size_t i, void *p, size_t new_len) {
    fz_block *b = &m->b[i];
    size_t keep = b->len < new_len ? b->len : new_len;
    FZ_ASSERT(fz_aligned(p, b->align));
    b->ptr = p;
    fz_verify_prefix(b, keep);
    m->live_bytes = m->live_bytes - b->len + new_len;
    b->len = new_len;
    b->elem = 0;
    fz_fill(b, keep, new_len);
}

/* Resize in place. Where the helpers answer without asking the allocator
 * (a length above PTRDIFF_MAX, a zero or unchanged length) the answer is
 * fixed by the contract; elsewhere the harness may know it. */
static void fz_op_resize(fz_target *t, fz_model *m, fz_reader *r) {
    size_t i;
    if (!fz_pick(m, r, &i))
        return;
    fz_block *b = &m->b[i];
    size_t new_len = fz_new_len(r, b->len);
    if (!fz_askable(new_len, m))
        return;
    fz_verify(b);
    void *where;
    int expect = fz_ask_change(t, FZ_RESIZE, b, new_len, &where);
    bool to_free = b->len != 0 && new_len == 0;
    if (to_free)
        fz_tell_free(t, b);
    bool ok = beam_resize_bytes(t->a, b->ptr, b->len, b->align, new_len);
    if (new_len > (size_t)PTRDIFF_MAX)
        FZ_ASSERT(!ok);
    else if (b->len == 0)
        FZ_ASSERT(ok == (new_len == 0));
    else if (new_len == 0 || new_len == b->len)
        FZ_ASSERT(ok);
    fz_check_answer(expect, NULL, ok ? b->ptr : NULL);
    if (!ok) {
        fz_verify(b);
        return;
    }
    if (to_free) {
        fz_remove(m, i);
        return;
    }
    if (b->len != 0)
        fz_changed(m, i, b->ptr, new_len);
}

/* Remap (may move, NULL: the caller copies) or realloc (remap, else
 * allocate, copy and free; typed through beam_realloc_array for blocks made
 * by beam_alloc_array). */
static void fz_op_remap(fz_target *t, fz_model *m, fz_reader *r, bool realloc) {
    size_t i;
    if (!fz_pick(m, r, &i))
        return;
    fz_block *b = &m->b[i];
    bool typed = realloc && b->elem != 0 && (fz_u8(r) & 1);
    size_t new_len, new_n = 0;
    bool overflow = false;
    if (typed) {
        new_n = fz_u8(r) & 1 ? fz_new_len(r, b->len / b->elem)
                             : fz_new_len(r, b->len) / b->elem;
        overflow = beam_mul_overflow(new_n, b->elem, &new_len);
    } else {
        new_len = fz_new_len(r, b->len);
    }
    if (!overflow && !fz_askable(new_len, m))
        return;
    fz_verify(b);
    void *where = NULL;
    int expect = FZ_MUST_FAIL;
    if (!overflow) {
        if (b->len == 0 && realloc)
            expect = fz_ask_alloc(t, new_len, b->align, &where);
        else
            expect = fz_ask_change(t, realloc ? FZ_REALLOC : FZ_REMAP, b,
                                   new_len, &where);
    }
    bool to_free = !overflow && b->len != 0 && new_len == 0;
    if (to_free)
        fz_tell_free(t, b);
    void *p;
    if (typed)
        p = beam_realloc_array(t->a, b->ptr, b->len / b->elem, new_n, b->elem,
                               b->align);
    else if (realloc)
        p = beam_realloc_bytes(t->a, b->ptr, b->len, b->align, new_len);
    else
        p = beam_remap_bytes(t->a, b->ptr, b->len, b->align, new_len);

    if (overflow || new_len > (size_t)PTRDIFF_MAX) {
        FZ_ASSERT(p == NULL);
    } else if (new_len == 0) {
        /* Freed (when it was a block), answered with the sentinel. */
        FZ_ASSERT(p == (void *)(uintptr_t)(0 - (uintptr_t)b->align));
        size_t align = b->align;
        fz_remove(m, i);
        fz_add(m, p, 0, align, 0);
        return;
    } else if (b->len == 0 && !realloc) {
        FZ_ASSERT(p == NULL);
    } else if (new_len == b->len) {
        FZ_ASSERT(p == b->ptr);
    }
    fz_check_answer(expect, where, p);
    if (p == NULL) {
        fz_verify(b);
        return;
    }
    if (b->len == 0) {
        /* realloc of the sentinel is an allocation. */
        size_t align = b->align;
        fz_remove(m, i);
        fz_took(m, p, new_len, align, 0);
        return;
    }
    fz_changed(m, i, p, new_len);
}

static void fz_op_reset(fz_target *t, fz_model *m, fz_reader *r) {
    fz_verify_all(m);
    t->reset(t, r);
    m->n = 0;
    m->live_bytes = 0;
}

/* Run the program in r against t, then verify and free every block. */
static void fz_run(fz_target *t, fz_reader *r) {
    static fz_model model;
    fz_model *m = &model;
    memset(m, 0, sizeof *m);
    m->next_seed = 1;
    for (size_t ops = 0; r->n > 0 && ops < FZ_MAX_OPS; ops++) {
        if (t->reset != NULL && t->footprint != NULL &&
            t->footprint(t) > FZ_BUDGET)
            fz_op_reset(t, m, r);
        switch (fz_u8(r) % 16) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4:
            fz_op_alloc(t, m, r);
            break;
        case 5:
            fz_op_alloc_array(t, m, r);
            break;
        case 6:
        case 7:
            fz_op_free(t, m, r);
            break;
        case 8:
        case 9:
            fz_op_resize(t, m, r);
            break;
        case 10:
            fz_op_remap(t, m, r, false);
            break;
        case 11:
        case 12:
            fz_op_remap(t, m, r, true);
            break;
        case 13:
            if (t->reset != NULL)
                fz_op_reset(t, m, r);
            else
                fz_op_free(t, m, r);
            break;
        case 14:
            fz_verify_all(m);
            if (t->check != NULL)
                t->check(t, m, true);
            break;
        default:
            if (t->extra != NULL)
                t->extra(t, m, r);
            else
                fz_op_alloc(t, m, r);
            break;
        }
        if (t->check != NULL)
            t->check(t, m, false);
    }
    fz_verify_all(m);
    if (t->check != NULL)
        t->check(t, m, true);
    while (m->n > 0)
        fz_free_at(t, m, m->n - 1);
    if (t->check != NULL)
        t->check(t, m, true);
}

#endif
