/*
 * The arena: bump allocation in chunks taken from the parent, everything
 * given back at once (the semantics of Zig's std.heap.ArenaAllocator).
 *
 * Only the newest chunk is bumped: a block that does not fit there starts a
 * new, larger chunk and the old chunk's tail is left unused. Each chunk is
 * one parent block of HEADER + cap bytes at CHUNK_ALIGN:
 *
 *   chunk   data = (unsigned char *)(chunk + 1)
 *   |header|<- end bytes handed out ->|<- cap - end free ->|
 *
 * Invariants: end <= cap; HEADER + cap <= BEAM__MAX_LEN; arena->used is the
 * sum of every chunk's end, so it counts alignment padding but not the
 * unused tails of older chunks.
 */
#include "internal.h"

#include <stdio.h>

struct beam_arena_chunk_internal {
    struct beam_arena_chunk_internal *next; /* the next older chunk */
    size_t cap;                             /* usable bytes after the header */
    size_t end;                             /* bytes handed out, from data_of */
    size_t last; /* where the newest block starts, or NO_LAST once given back
                    (then a block ending at end is taken for it, as before) */
};
typedef struct beam_arena_chunk_internal chunk_t;

#define HEADER sizeof(chunk_t)
#define NO_LAST SIZE_MAX
/* Data starts HEADER (a multiple of this) bytes into the parent block. */
#define CHUNK_ALIGN BEAM_ALIGNOF(chunk_t)
/* A page: small arenas stay cheap, and every parent serves it well. */
#define FIRST_CHUNK ((size_t)4096)

/* Asking the parent for more than BEAM_MAX_ALIGN would rule out the raw
 * allocator; larger alignments are padded inside the chunk instead. */
_Static_assert(CHUNK_ALIGN <= BEAM_MAX_ALIGN, "chunk header over-aligned");

static inline unsigned char *data_of(chunk_t *c) {
    return (unsigned char *)(c + 1);
}

/* Bump inside c, or NULL when the block does not fit. The padding comes
 * from the address alone, so no pointer past the chunk is ever formed. */
static void *bump(beam_arena_t *arena, chunk_t *c, size_t len,
                  size_t alignment) {
    size_t avail = c->cap - c->end;
    uintptr_t at = (uintptr_t)(data_of(c) + c->end);
    size_t pad = (size_t)(-at & (uintptr_t)(alignment - 1));
    if (pad > avail || len > avail - pad)
        return NULL;
    c->end += pad + len;
    c->last = c->end - len;
    arena->used += pad + len;
    return data_of(c) + c->last;
}

/* A chunk's parent length: HEADER + cap rounded up to CHUNK_ALIGN, so
 * that a bump-style parent (a fixed buffer) places the next chunk right
 * after it, with no padding between them that freeing the chunks newest
 * first could not give back. 0 when that overflows. */
static size_t chunk_total(size_t cap) {
    if (cap > BEAM__MAX_LEN - HEADER - (CHUNK_ALIGN - 1))
        return 0;
    return (size_t)beam__align_up(HEADER + cap, CHUNK_ALIGN);
}

/* Parent length of a chunk that holds len bytes at alignment wherever the
 * parent places it (data is CHUNK_ALIGN-aligned, so the padding is at most
 * alignment - CHUNK_ALIGN); 0 when that overflows. */
static size_t min_total(size_t len, size_t alignment) {
    size_t pad = alignment > CHUNK_ALIGN ? alignment - CHUNK_ALIGN : 0;
    if (len > BEAM__MAX_LEN - pad)
        return 0;
    return chunk_total(len + pad);
}

static chunk_t *push_chunk(beam_arena_t *arena, size_t total, uintptr_t ret) {
    chunk_t *c = beam__parent_alloc(arena->parent, total, CHUNK_ALIGN, ret);
    if (c == NULL)
        return NULL;
    c->next = arena->chunks;
    c->cap = total - HEADER;
    c->end = 0;
    c->last = NO_LAST;
    arena->chunks = c;
    return c;
}

/* A new newest chunk of at least min bytes. Doubling keeps the number of
 * parent calls logarithmic in what the arena holds; when the doubled size
 * is refused (a small fixed buffer, a tight parent), the bare minimum may
 * still fit. */
static BEAM__NOINLINE chunk_t *grow(beam_arena_t *arena, size_t min,
                                    uintptr_t ret) {
    size_t want = FIRST_CHUNK;
    if (arena->chunks != NULL) {
        size_t last = HEADER + arena->chunks->cap;
        want = last <= BEAM__MAX_LEN / 2 ? 2 * last : 0;
        if (want != 0 && want < FIRST_CHUNK)
            want = FIRST_CHUNK;
    }
    if (want > min) {
        chunk_t *c = push_chunk(arena, want, ret);
        if (c != NULL)
            return c;
    }
    return push_chunk(arena, min, ret);
}

/* After beam_arena_deinit (beam__deinited) the arena's calls report their
 * use. Before, an allocation took a new chunk from the old parent, which
 * nothing would ever give back. */
static bool is_dead(const beam_arena_t *arena) {
    return beam__is_deinited(arena->parent, arena);
}

/* what: "allocation", "free", "resize", "reset". */
static BEAM__NOINLINE void report_dead(const char *what, const void *mem,
                                       size_t len, uintptr_t ret) {
    char block[64] = "";
    if (mem != NULL)
        snprintf(block, sizeof block, " at %p", mem);
    beam__report_misuse(BEAM__KIND_AFTER_DEINIT, ret,
                        "beam_alloc: %s of %zu bytes%s through an arena "
                        "after beam_arena_deinit: refused",
                        what, len, block);
}

static void *arena_alloc(void *ctx, size_t len, size_t alignment,
                         uintptr_t ret) {
    beam_arena_t *arena = ctx;
    if (BEAM__LIKELY(arena->chunks != NULL)) {
        void *p = bump(arena, arena->chunks, len, alignment);
        if (p != NULL)
            return p;
    }
    if (BEAM__UNLIKELY(is_dead(arena))) {
        report_dead("allocation", NULL, len, ret);
        return NULL;
    }
    size_t min = min_total(len, alignment);
    if (min == 0)
        return NULL;
    chunk_t *c = grow(arena, min, ret);
    return c != NULL ? bump(arena, c, len, alignment) : NULL;
}

/* Only the newest block ends at the newest chunk's bump pointer. Compared
 * as integers: mem may belong to another chunk, another object. The block
 * must fit in what the chunk handed out (len <= end), and its start is
 * computed from that, not mem + len, which wraps for a huge len: a bogus
 * free passed as the newest block and underflowed end and used. */
static bool ends_at_bump(const beam_arena_t *arena, const void *mem,
                         size_t len) {
    chunk_t *c = arena->chunks;
    return c != NULL && len <= c->end &&
           (uintptr_t)mem == (uintptr_t)(data_of(c) + (c->end - len));
}

/* Compared as integers too, and against each chunk's handed-out bytes
 * from their start: mem + len may wrap for a garbage len. */
bool beam__arena_holds(const beam_arena_t *arena, const void *mem, size_t len) {
    for (chunk_t *c = arena->chunks; c != NULL; c = c->next) {
        uintptr_t lo = (uintptr_t)data_of(c), at = (uintptr_t)mem;
        if (at >= lo && at - lo <= c->end)
            return len <= c->end - (at - lo);
    }
    return false;
}

/* A block that ends at the bump pointer (ends_at_bump) is the newest one
 * when it also starts where that one does, or when that is not known (the
 * newest was given back): a longer length given for an older block ends
 * there too, and rolling back over the newest (live) block would hand it
 * out again. */
static bool starts_newest(const chunk_t *c, size_t len) {
    return c->last == NO_LAST || c->end - len == c->last;
}

/* true (after a report) when mem and len are not inside the bytes the
 * arena handed out: a wrong old length, a pointer of elsewhere, a block of
 * a chunk given back. Asked of a resize (and so a remap) only: a true
 * shrink of such a block was a wrong answer, and realloc's fallback then
 * copied len bytes from it, past the chunk (a segfault, found in an
 * audit); a refused remap that reported a misuse is not copied from.
 * Frees do not look (guides/allocators.md): an older block's free does
 * nothing whoever's, and the walk over the chunks stays off that path. */
static bool refused_foreign(const beam_arena_t *arena, void *mem, size_t len,
                            size_t alignment, uintptr_t ret) {
    if (BEAM__LIKELY(beam__arena_holds(arena, mem, len)))
        return false;
    beam__report_foreign("resize", mem, len, alignment, ret,
                         "not a live block of this arena (outside the bytes "
                         "it handed out: a wrong length, another "
                         "allocator's block, or one reset away)");
    return true;
}

/* true (after a report) when mem is where the newest block starts but len
 * is not its length: a wrong length. As the fixed buffer's (see there):
 * a free or shrink of it was a silent no-op, its bytes kept until reset.
 * Asked before refused_foreign, which a longer length fails too: it names
 * three causes where this one is known (the fixed buffer's named one,
 * and the wrong one: a pointer of elsewhere). */
static bool refused_newest_length(const beam_arena_t *arena, const char *call,
                                  void *mem, size_t len, size_t alignment,
                                  uintptr_t ret) {
    chunk_t *c = arena->chunks;
    if (BEAM__LIKELY(c == NULL || c->last == NO_LAST ||
                     (uintptr_t)mem != (uintptr_t)(data_of(c) + c->last)))
        return false;
    beam__report_newest_length(call, mem, len, alignment, ret, "arena",
                               c->end - c->last);
    return true;
}

static bool arena_resize(void *ctx, void *mem, size_t len, size_t alignment,
                         size_t new_len, uintptr_t ret) {
    beam_arena_t *arena = ctx;
    if (new_len == 0)
        return false; /* a direct vtable caller's (the contract: > 0) */
    /* Any block can shrink in place; only the newest gives bytes back.
     * (After deinit no block is the newest: the test is off that path.) */
    if (!ends_at_bump(arena, mem, len)) {
        if (BEAM__UNLIKELY(is_dead(arena))) {
            report_dead("resize", mem, len, ret);
            return false;
        }
        return !refused_newest_length(arena, "resize", mem, len, alignment,
                                      ret) &&
               !refused_foreign(arena, mem, len, alignment, ret) &&
               new_len <= len;
    }
    chunk_t *c = arena->chunks;
    if (BEAM__UNLIKELY(!starts_newest(c, len))) {
        beam__report_not_newest("resize", mem, len, alignment, ret, "arena");
        return false;
    }
    if (new_len <= len) {
        c->end -= len - new_len;
        arena->used -= len - new_len;
        return true;
    }
    if (new_len - len > c->cap - c->end)
        return false;
    c->end += new_len - len;
    arena->used += new_len - len;
    return true;
}

/* Moving would leave the old block's bytes stranded until reset: the
 * caller's alloc + copy does the same with no extra code here. */
static void *arena_remap(void *ctx, void *mem, size_t len, size_t alignment,
                         size_t new_len, uintptr_t ret) {
    return arena_resize(ctx, mem, len, alignment, new_len, ret) ? mem : NULL;
}

static void arena_free(void *ctx, void *mem, size_t len, size_t alignment,
                       uintptr_t ret) {
    beam_arena_t *arena = ctx;
    if (mem == NULL)
        return; /* NULL: the contract's no-op, also through the vtable */
    if (ends_at_bump(arena, mem, len)) {
        chunk_t *c = arena->chunks;
        if (BEAM__UNLIKELY(!starts_newest(c, len))) {
            beam__report_not_newest("free", mem, len, alignment, ret, "arena");
            return;
        }
        c->end -= len;
        c->last = NO_LAST;
        arena->used -= len;
    } else if (BEAM__UNLIKELY(is_dead(arena))) {
        report_dead("free", mem, len, ret);
    } else {
        (void)refused_newest_length(arena, "free", mem, len, alignment, ret);
    }
}

const beam_allocator_vtable beam__arena_vtable = {arena_alloc, arena_resize,
                                                  arena_remap, arena_free};

void beam_arena_init(beam_arena_t *arena, beam_allocator_t parent) {
    if (beam__null_instance(arena, "beam_arena_init", BEAM__RET_ADDR()))
        return;
    arena->parent = beam__parent_not_self(parent, arena, &beam__arena_vtable,
                                          "beam_arena_init", "arena", "parent");
    arena->chunks = NULL;
    arena->used = 0;
}

beam_allocator_t beam_arena_allocator(beam_arena_t *arena) {
    if (beam__null_instance(arena, "beam_arena_allocator", BEAM__RET_ADDR()))
        return BEAM__REFUSING_ALLOCATOR;
    beam_allocator_t a = {arena, &beam__arena_vtable};
    return a;
}

/* What a report made while c goes back to the parent says of it, at a NIF
 * call's end (beam__call_end): c's own blocks, which the parent knows
 * nothing of. Read then, before the parent frees (and poisons) it. */
static void note_chunk(beam__call_end *end, const chunk_t *c) {
    end->chunk = c;
    end->data_at = HEADER;
    end->last = c->last;
    end->end = c->end;
}

/* Newest first, which lets a bump-style parent (a fixed buffer) roll all
 * the way back. end: a NIF call's end, told of each chunk (else NULL). */
static void free_chunks_except(beam_arena_t *arena, chunk_t *keep,
                               beam__call_end *end, uintptr_t ret) {
    chunk_t *c = arena->chunks;
    while (c != NULL) {
        chunk_t *next = c->next;
        if (c != keep) {
            if (BEAM__UNLIKELY(end != NULL))
                note_chunk(end, c);
            beam__parent_free(arena->parent, c, HEADER + c->cap, CHUNK_ALIGN,
                              ret);
        }
        c = next;
    }
    if (end != NULL)
        end->chunk = NULL;
    arena->chunks = keep;
    if (keep != NULL) {
        keep->next = NULL;
        keep->end = 0;
        keep->last = NO_LAST;
    }
    arena->used = 0;
}

/* Retaining keeps one chunk that can hold everything used this round: the
 * oldest, when it can, else one new chunk as large as the largest (the
 * capacity is never shrunk: FREE_ALL is for that) replaces them all. Only
 * the oldest: under a bump-style parent (a fixed buffer) the chunks above
 * a kept one go back, but those below it stayed taken for good, even after
 * beam_arena_deinit (found in review). */
static bool reset_impl(beam_arena_t *arena, beam_arena_reset_mode mode,
                       uintptr_t ret) {
    if (beam__null_instance(arena, "beam_arena_reset", ret))
        return false;
    if (BEAM__UNLIKELY(is_dead(arena))) {
        report_dead("reset", NULL, arena->used, ret);
        return false;
    }
    if (BEAM__UNLIKELY(mode != BEAM_ARENA_FREE_ALL &&
                       mode != BEAM_ARENA_RETAIN_CAPACITY)) {
        /* (Taken as FREE_ALL before, without a word: a cast integer
         * meant as another option freed everything.) */
        beam__report_misuse(BEAM__KIND_BAD_MODE, ret,
                            "beam_alloc: beam_arena_reset of the arena at %p "
                            "with mode %d, none of beam_arena_reset_mode's: "
                            "nothing freed",
                            (void *)arena, (int)mode);
        return false;
    }
    size_t target = arena->used;
    chunk_t *oldest = NULL;
    size_t largest = 0;
    for (chunk_t *c = arena->chunks; c != NULL; c = c->next) {
        oldest = c;
        largest = c->cap > largest ? c->cap : largest;
    }
    bool retain = mode == BEAM_ARENA_RETAIN_CAPACITY;
    chunk_t *keep =
        retain && oldest != NULL && oldest->cap >= target ? oldest : NULL;
    bool replace = retain && keep == NULL && target > 0;
    free_chunks_except(arena, keep, NULL, ret);
    if (!replace)
        return true;
    /* Freed first: the old chunks and the new one never coexist. The
     * largest may now be refused where everything used still fits. */
    if (largest > target && push_chunk(arena, chunk_total(largest), ret))
        return true;
    size_t total = chunk_total(target);
    return total != 0 && push_chunk(arena, total, ret) != NULL;
}

bool beam_arena_reset_mode_(beam_arena_t *arena, beam_arena_reset_mode mode) {
    return reset_impl(arena, mode, BEAM__RET_ADDR());
}

bool beam_arena_reset_default_(beam_arena_t *arena) {
    return reset_impl(arena, BEAM_ARENA_RETAIN_CAPACITY, BEAM__RET_ADDR());
}

static void deinit_impl(beam_arena_t *arena, beam__call_end *end,
                        uintptr_t ret) {
    if (beam__null_instance(arena, "beam_arena_deinit", ret))
        return;
    free_chunks_except(arena, NULL, end, ret);
    arena->parent = beam__deinited(arena);
}

void beam_arena_deinit(beam_arena_t *arena) {
    deinit_impl(arena, NULL, BEAM__RET_ADDR());
}

void beam__arena_deinit_noting(beam_arena_t *arena, beam__call_end *end) {
    deinit_impl(arena, end, BEAM__RET_ADDR());
}

size_t beam_arena_used(const beam_arena_t *arena) {
    if (beam__null_instance(arena, "beam_arena_used", BEAM__RET_ADDR()))
        return 0;
    return arena->used;
}
