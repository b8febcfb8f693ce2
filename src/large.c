/*
 * The large allocator: any power-of-two alignment on top of the raw
 * allocator, so the memory is still the VM's to count.
 *
 * Alignments the raw allocator serves go straight through. Larger ones
 * over-allocate and align inside the raw block; a 16-byte header just below
 * the user pointer records where the raw block starts and how big it is:
 *
 *   raw                         user = align_up(raw + 16, alignment)
 *   |<- padding ->|base|total|<- len ... ->|<- slack ->|
 *
 * Invariants: user - raw >= 16; user + len <= raw + total;
 * total = len + alignment + 8 (raw is 8-aligned, so at most alignment - 8
 * bytes of padding precede the header). The slack lets a block grow in
 * place; remap may move the raw block and then re-aligns inside it.
 */
#include "internal.h"
#include "os/probe.h"

#include <string.h>

typedef struct large_header {
    void *raw;    /* start of the raw block */
    size_t total; /* its length */
} large_header;

#define HEADER_SIZE sizeof(large_header)

static inline large_header *header_of(void *user) {
    return (large_header *)user - 1;
}

/* Raw length for len bytes at alignment; 0 when it overflows. */
static size_t total_for(size_t len, size_t alignment) {
    if (alignment > BEAM__MAX_LEN - HEADER_SIZE)
        return 0;
    size_t extra = alignment + HEADER_SIZE - BEAM_MAX_ALIGN;
    if (len > BEAM__MAX_LEN - extra)
        return 0;
    return len + extra;
}

/* A block that starts a page (every block at an alignment of a page or
 * more) has its header on the page before. For a pointer this allocator
 * never returned (a C++ allocator's over-aligned type freed through
 * beam_free_bytes_at, say) at the start of a mapping after an unmapped or
 * PROT_NONE page, a read there faulted (found in a bug hunt). Such blocks
 * of ours are noted in a set (addr_set.c) from place() until they are
 * freed or moved; each call asks the set once, up front (header_direct; a
 * free takes the note as it asks, take_note, and asks again only for a
 * block not noted). A noted one's header is read as it is; any other
 * pointer's there is copied through os/probe.h, a syscall, paid only by
 * a misuse (or by a block of another copy of the library, or one the set
 * had no memory to note). Probing every such block's header instead cost
 * 2,900 ns an alloc and free at alignment 4096, not 50. */
#define PAGE_STARTS BEAM__SET_LARGE_PAGE_STARTS

static inline bool header_on_own_page(const void *user) {
    return BEAM__LIKELY(beam__probe_same_page(user, HEADER_SIZE));
}

/* The set's part of header_direct, out of line. */
static BEAM__NOINLINE bool noted_slow(void *mem) {
    return beam__set_holds(PAGE_STARTS, mem);
}

/* The header below mem, given at alignment, may be read as it is: it is
 * on mem's page (or there is none), or mem is noted. */
static inline bool header_direct(void *mem, size_t alignment) {
    if (alignment <= BEAM_MAX_ALIGN || header_on_own_page(mem))
        return true;
    return noted_slow(mem);
}

/* Before the backend may hand mem's memory on (a free, a moving remap):
 * mem's note taken, where it starts a page; true when it had one, which
 * the call puts back where it goes no further (a free refused, a remap
 * failed). A block it says true of has its header read directly. */
static inline bool take_note(void *mem, size_t alignment) {
    return alignment > BEAM_MAX_ALIGN && !header_on_own_page(mem) &&
           beam__set_unnote(PAGE_STARTS, mem);
}

/* A copy of the header below mem in *buf, or NULL when it is unreadable:
 * out of line, for a pointer that starts a page and is not noted. */
static BEAM__NOINLINE const large_header *header_probe(void *mem,
                                                       large_header *buf) {
    return beam__probe_read(header_of(mem), buf, HEADER_SIZE) ? buf : NULL;
}

/* The header below mem (direct: header_direct's answer), readable, or
 * NULL; *buf may hold a copy. */
static inline const large_header *header_read(void *mem, bool direct,
                                              large_header *buf) {
    return BEAM__LIKELY(direct) ? header_of(mem) : header_probe(mem, buf);
}

/* Header h (below mem, or a copy of it) names a raw block around mem:
 * 8-aligned, with room for the header below mem, reaching mem. Then
 * *offset is mem's distance from its start and *room the bytes from mem
 * to its end. */
static inline bool header_names_raw_block(const large_header *h, void *mem,
                                          size_t *offset, size_t *room) {
    uintptr_t user = (uintptr_t)mem;
    uintptr_t raw = (uintptr_t)h->raw;
    if (raw % BEAM_MAX_ALIGN != 0 || raw > user - HEADER_SIZE ||
        h->total > BEAM__MAX_LEN || user - raw > h->total)
        return false;
    *offset = user - raw;
    *room = h->total - *offset;
    return true;
}

/* placed() by header h (mem's own, or a copy of it). */
static inline bool placed_by(const large_header *h, void *mem, size_t len,
                             size_t alignment) {
    size_t offset, room;
    return header_names_raw_block(h, mem, &offset, &room) &&
           offset <= alignment + HEADER_SIZE - BEAM_MAX_ALIGN && len <= room;
}

/* placed() of a header that is not direct: probed, out of line, so that
 * the common path stays a leaf. */
static BEAM__NOINLINE bool placed_probed(void *mem, size_t len,
                                         size_t alignment) {
    large_header buf;
    const large_header *h = header_probe(mem, &buf);
    return h != NULL && placed_by(h, mem, len, alignment);
}

/* mem, freed or resized at alignment (above BEAM_MAX_ALIGN), looks like a
 * block this allocator placed: aligned, and its header names a raw block
 * around it, at most alignment + 8 bytes below, with room for len. A block
 * allocated at 8 or less has no header: it is caught by its address alone
 * unless that happens to be aligned, and then by what the 16 bytes below
 * it hold (the raw allocator's own tag words, never such a header; reading
 * them is outside the block, which only a misuse does, and valgrind says
 * so). A header block freed at another alignment above 8 passes when its
 * address suits that one too: the header is right, and so is the free. The
 * other way round, a header block freed at 8 or less, cannot be told from
 * a raw block without a read outside every raw block, and goes to
 * enif_free. direct: header_direct's answer. */
static bool placed(void *mem, size_t len, size_t alignment, bool direct) {
    if ((uintptr_t)mem % alignment != 0)
        return false;
    if (BEAM__UNLIKELY(!direct))
        return placed_probed(mem, len, alignment);
    return placed_by(header_of(mem), mem, len, alignment);
}

/* A header's raw pointer once its block is freed: no raw block is there
 * (not 8-aligned), so a second free finds no header and is reported. Where
 * the header starts the raw block, the backend's own free-list words land
 * on it (glibc's: a mangled pointer and a key), which pass for no header
 * either (placed() checks the offset and length they would give); an
 * allocator that wrote something placed() takes for a header there is not
 * known. Only while the backend keeps the memory mapped (a read of memory
 * it gave back to the system faults, as its own free would). A remap that
 * moves a block marks its old address too (remap_moving). */
#define FREED_RAW ((void *)(uintptr_t)1)

/* The header alone often loses that mark: where it lies in the first
 * words of the raw block, the backend's free-list words land on it
 * (glibc's; erts's tree nodes: a double free of a 100,000-byte block at
 * alignment 64 was refused as a wrong length in two of three runs of the
 * misuse tests). A block long enough gets a second mark well inside
 * itself, where neither writes: a word at FREED_MARK_AT, a value of its
 * own address, cleared wherever it lies inside a block's raw memory when
 * the block is placed (place()) so that a live block's refused free (at
 * another alignment) finds no old one, however the block grew. */
#define FREED_MARK_AT 64

static inline bool has_mark_room(size_t len) {
    return len >= FREED_MARK_AT + sizeof(uintptr_t);
}

static inline uintptr_t *mark_of(void *user) {
    return (uintptr_t *)((char *)user + FREED_MARK_AT);
}

static inline uintptr_t freed_mark(const void *user) {
    return (uintptr_t)user ^ (uintptr_t)0x6c617267652d6672ull;
}

/* Puts the header of a block at alignment in raw (total bytes), whose
 * first kept bytes hold the caller's data (0 for a new block; a remap's
 * contents). The freed mark's word, where it lies in the raw block, is
 * zeroed past the kept bytes: memory a freed block had at this same
 * address may still hold its mark there, and a block shorter than the
 * mark's end that grows past it later (a resize within the slack, a remap)
 * would otherwise carry it: a refused free at another alignment was then
 * told as a double free of a live block. A block of 65 to 71 bytes keeps
 * its own bytes under the word's start: zeroing the last one is enough (a
 * little-endian word's top byte, never 0 in a mark: a user-space address's
 * is). A block that starts a page is noted (header_direct). */
static BEAM__ALWAYS_INLINE void *place(void *raw, size_t total,
                                       size_t alignment, size_t kept) {
    uintptr_t user = beam__align_up((uintptr_t)raw + HEADER_SIZE, alignment);
    large_header *h = header_of((void *)user);
    h->raw = raw;
    h->total = total;
    size_t mark_end = FREED_MARK_AT + sizeof(uintptr_t);
    if (kept < mark_end && user + mark_end <= (uintptr_t)raw + total) {
        size_t from = kept > FREED_MARK_AT ? kept : FREED_MARK_AT;
        memset((char *)user + from, 0, mark_end - from);
    }
    if (!header_on_own_page((void *)user))
        beam__set_note(PAGE_STARTS, (void *)user);
    return (void *)user;
}

/* What a header block of len bytes leaves behind when freed: the header's
 * mark and, where it has room, the second one. */
static void mark_freed(void *mem, size_t len) {
    header_of(mem)->raw = FREED_RAW;
    if (has_mark_room(len))
        *mark_of(mem) = freed_mark(mem);
}

/* A block refused at alignment (above BEAM_MAX_ALIGN) and len is one this
 * allocator freed: a double free (or a use after free). Reads where
 * placed() reads, and inside the block the caller names. A header that
 * places a live block here at this alignment refused only the length: a
 * wrong length, and the block may be shorter than the mark's offset (the
 * mark was read past its raw block, ASan's heap-buffer-overflow, where an
 * old block's mark would have made it a double free). So may a live block
 * given at another alignment as well as a wrong length: its header names
 * its raw block, and the mark is read only inside that. */
static bool freed_here(void *mem, size_t len, size_t alignment, bool direct) {
    if ((uintptr_t)mem % alignment != 0)
        return false;
    /* (Read once: placed() would probe a header that is not direct, and
     * the read below again. Unreadable: no block of ours was there.) */
    large_header buf;
    const large_header *h = header_read(mem, direct, &buf);
    if (h == NULL || placed_by(h, mem, 0, alignment))
        return false;
    if (h->raw == FREED_RAW)
        return true;
    size_t offset, room;
    if (!has_mark_room(len) ||
        (header_names_raw_block(h, mem, &offset, &room) &&
         !has_mark_room(room)))
        return false;
    return *mark_of(mem) == freed_mark(mem);
}

/* Alignments the backend serves need no header: straight through. */
static void *alloc_impl(size_t len, size_t alignment) {
    if (alignment <= BEAM_MAX_ALIGN)
        return beam__sys_alloc(len);
    size_t total = total_for(len, alignment);
    if (total == 0)
        return NULL;
    void *raw = beam__sys_alloc(total);
    if (raw == NULL)
        return NULL;
    return place(raw, total, alignment, 0);
}

static bool resize_impl(void *mem, size_t len, size_t alignment,
                        size_t new_len) {
    if (new_len == 0)
        return false; /* a direct vtable caller's: see raw_remap */
    if (alignment <= BEAM_MAX_ALIGN)
        return new_len <= len;
    large_header *h = header_of(mem);
    uintptr_t end = (uintptr_t)h->raw + h->total;
    return new_len <= end - (uintptr_t)mem;
}

/* A header block's remap beyond its slack: the backend's realloc, which
 * may move the raw block and then frees the old one. The old address gets
 * a free's marks before the call (a stale pointer freed, resized or
 * remapped later is then told as a use of a freed block: its header still
 * named the old raw block, placed() took it for a live one, and free()
 * aborted on it, "double free or corruption"); where the block stays, or
 * the call fails, they are taken back (the user's word under the mark
 * with them), and so is its note when it starts a page. */
static void *remap_moving(void *mem, size_t len, size_t alignment,
                          size_t new_len) {
    size_t total = total_for(new_len, alignment);
    if (total == 0)
        return NULL;
    large_header *h = header_of(mem);
    large_header was = *h;
    size_t offset = (uintptr_t)mem - (uintptr_t)was.raw;
    size_t kept = len < new_len ? len : new_len;
    uintptr_t word = has_mark_room(len) ? *mark_of(mem) : 0;
    mark_freed(mem, len);
    bool noted = take_note(mem, alignment);
    void *raw = beam__sys_realloc(was.raw, total);
    if (raw == NULL) {
        *h = was;
        if (has_mark_room(len))
            *mark_of(mem) = word;
        if (noted)
            beam__set_note(PAGE_STARTS, mem);
        return NULL;
    }
    /* The raw block may have moved to an address with another residue
     * modulo alignment: move the contents to the new aligned spot. */
    void *user =
        (void *)beam__align_up((uintptr_t)raw + HEADER_SIZE, alignment);
    if ((char *)user != (char *)raw + offset)
        memmove(user, (char *)raw + offset, kept);
    user = place(raw, total, alignment, kept);
    if (has_mark_room(kept))
        *mark_of(user) = word;
    return user;
}

/* Straight through, like the raw allocator's remap: the same length is
 * the block as it is, with no backend call. */
static void *remap_impl(void *mem, size_t len, size_t alignment,
                        size_t new_len) {
    if (new_len == 0)
        return NULL; /* a direct vtable caller's: see raw_remap */
    if (alignment <= BEAM_MAX_ALIGN)
        return new_len == len ? mem : beam__sys_realloc(mem, new_len);
    if (resize_impl(mem, len, alignment, new_len))
        return mem;
    return remap_moving(mem, len, alignment, new_len);
}

/* The vtable: the above, counted. */
static inline beam__counters *counters(void) {
    return beam__thread_counters(BEAM__LARGE);
}

static void *large_alloc(void *ctx, size_t len, size_t alignment,
                         uintptr_t ret) {
    (void)ctx;
    (void)ret;
    void *p = alloc_impl(len, alignment);
    if (BEAM__UNLIKELY(p == NULL)) {
        beam__atomic_bump(&counters()->failed, 1);
        return NULL;
    }
    beam__count_alloc(counters(), &beam__kind_peak[BEAM__LARGE], len);
    return p;
}

/* A call given a general purpose allocator's block, or a block placed at
 * another alignment: reported, refused. One this allocator freed
 * (freed_here) is told as a double free, or a use after free, not as a
 * wrong length: the kind leak_check and the fault-injection check raise
 * with. */
static bool misplaced(const char *call, void *mem, size_t len, size_t alignment,
                      bool direct, uintptr_t ret) {
    if (beam__refused_block(call, "large", mem, len, alignment, ret))
        return true;
    if (alignment <= BEAM_MAX_ALIGN || placed(mem, len, alignment, direct))
        return false;
    bool is_free = strcmp(call, "free") == 0;
    if (freed_here(mem, len, alignment, direct)) {
        beam__report_refused_as(
            is_free ? BEAM__KIND_DOUBLE_FREE : BEAM__KIND_RESIZE, call, mem,
            len, alignment, ret,
            is_free ? "double free (the block was freed already)"
                    : "use after free (the block was freed already)");
        return true;
    }
    beam__report_refused(call, mem, len, alignment, ret,
                         "not a block of the large allocator at this "
                         "alignment and length (freed already, or "
                         "another allocator's)");
    return true;
}

static bool large_resize(void *ctx, void *mem, size_t len, size_t alignment,
                         size_t new_len, uintptr_t ret) {
    (void)ctx;
    if (misplaced("resize", mem, len, alignment, header_direct(mem, alignment),
                  ret) ||
        !resize_impl(mem, len, alignment, new_len))
        return false;
    beam__count_resize(counters(), &beam__kind_peak[BEAM__LARGE], len, new_len);
    return true;
}

static void *large_remap(void *ctx, void *mem, size_t len, size_t alignment,
                         size_t new_len, uintptr_t ret) {
    (void)ctx;
    if (misplaced("remap", mem, len, alignment, header_direct(mem, alignment),
                  ret))
        return NULL;
    void *p = remap_impl(mem, len, alignment, new_len);
    if (p != NULL)
        beam__count_resize(counters(), &beam__kind_peak[BEAM__LARGE], len,
                           new_len);
    return p;
}

static void large_free(void *ctx, void *mem, size_t len, size_t alignment,
                       uintptr_t ret) {
    (void)ctx;
    if (mem == NULL)
        return; /* NULL: the contract's no-op, also through the vtable */
    bool noted = take_note(mem, alignment);
    if (misplaced("free", mem, len, alignment,
                  noted || header_direct(mem, alignment), ret)) {
        if (noted)
            beam__set_note(PAGE_STARTS, mem); /* (live, misused) */
        return;
    }
    void *raw = mem;
    if (alignment > BEAM_MAX_ALIGN) {
        raw = header_of(mem)->raw;
        mark_freed(mem, len);
    }
    beam__sys_free(raw);
    beam__count_free(counters(), &beam__kind_peak[BEAM__LARGE], len);
}

const beam_allocator_vtable beam__large_vtable = {large_alloc, large_resize,
                                                  large_remap, large_free};

const beam_allocator_t beam_large_allocator = {NULL, &beam__large_vtable};

/* The set of blocks that start a page back to the system when the library
 * unloads, or the process exits with other threads still calling in
 * (beam__set_free takes each stripe's lock). A call after it finds the set
 * empty and probes instead: slower, still right. */
__attribute__((destructor)) static void large_unload(void) {
    beam__set_free(BEAM__SET_LARGE_PAGE_STARTS);
}
