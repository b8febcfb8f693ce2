/*
 * What the general purpose allocator tells its user: misuse as it happens,
 * and live blocks (leaks) on request. Slow paths only.
 */
#include "frames.h"
#include "gpa_internal.h"
#include "gpa_msize.h"

#include <stdio.h>
#include <string.h>

/* The kinds a failing call names (API.md, "Diagnostics that fail"), from
 * the report's own wording: the allocator's messages say more than the
 * kind, and stay free to. */
static const struct {
    const char *prefix, *kind;
} kinds[] = {
    {"double free", BEAM__KIND_DOUBLE_FREE},
    {"write past the end", "write past the end of a block"},
    {"free with a wrong length", BEAM__KIND_WRONG_FREE},
    {"write after free", "write after free"},
    {"free of a", BEAM__KIND_FOREIGN_FREE},
    {"resize ", BEAM__KIND_RESIZE},
    {"realloc ", BEAM__KIND_RESIZE},
    {"remap ", BEAM__KIND_RESIZE},
};
#define KIND_COUNT (sizeof kinds / sizeof kinds[0])

static const char *kind_of(const char *what) {
    for (size_t i = 0; i < KIND_COUNT; i++)
        if (strncmp(what, kinds[i].prefix, strlen(kinds[i].prefix)) == 0)
            return kinds[i].kind;
    return "misuse";
}

const char *beam__gpa_kind_named(const char *kind) {
    for (size_t i = 0; i < KIND_COUNT; i++)
        if (strcmp(kind, kinds[i].kind) == 0)
            return kinds[i].kind;
    return "misuse";
}

/* "length L, alignment A" of a call, or what beam_mfree gave: no length
 * (BEAM__GPA_LEN_UNSIZED). */
static const char *call_len(size_t len, size_t alignment, char *buf,
                            size_t size) {
    if (len == BEAM__GPA_LEN_UNSIZED)
        return "beam_mfree: no length";
    snprintf(buf, size, "length %zu, alignment %zu", len, alignment);
    return buf;
}

static void misuse_said(gpa_state *st, const char *what, const void *p,
                        const char *said_len, uintptr_t ret,
                        uintptr_t alloc_site, const char *ret_is);
static void misuse_told(gpa_state *st, const char *what, const void *p,
                        const char *said_len, uintptr_t ret,
                        uintptr_t alloc_site, const char *ret_is,
                        const char *origin);

/* How a report names its ret: the offending call's site, or, for a
 * misuse found when an allocation reused a freed block (a write after
 * free), the allocation's: it did nothing wrong, and "called from" had
 * readers look for the write at that line. */
#define CALLED_FROM "called from"
#define FOUND_BY "found by an allocation at"

/* What a write after free found at byte of a freed block says, found
 * where found says ("found when the block was reused", "found when the
 * NIF call ... returned"). */
static void changed_byte(char *what, size_t size, size_t byte,
                         const char *found) {
    snprintf(what, size,
             "write after free (byte %zu of the freed block changed; %s)", byte,
             found);
}
#define REUSED "found when the block was reused"

/* A freed small block's length is gone (its record says only "freed"):
 * the report names its class, not a length the caller never gave. */
static void misuse_in_freed(gpa_state *st, const char *what, const void *p,
                            size_t class_size, uintptr_t ret,
                            uintptr_t alloc_site) {
    char said[64];
    snprintf(said, sizeof said, "a freed block of size class %zu", class_size);
    misuse_said(st, what, p, said, ret, alloc_site,
                ret != 0 ? FOUND_BY : CALLED_FROM);
}

void beam__gpa_reuse_dirty(gpa_state *st, gpa_slab *s, void *b, size_t byte,
                           uintptr_t ret, uintptr_t alloc_site) {
    char what[160];
    changed_byte(what, sizeof what, byte, REUSED);
    misuse_in_freed(st, what, b, s->size, ret, alloc_site);
}

void beam__gpa_large_reuse_dirty(gpa_state *st, const void *p, size_t len,
                                 size_t byte, uintptr_t ret,
                                 uintptr_t alloc_site) {
    char what[160], said[64];
    changed_byte(what, sizeof what, byte, REUSED);
    snprintf(said, sizeof said,
             "a freed block of %zu bytes, its canary included", len);
    misuse_said(st, what, p, said, ret, alloc_site, FOUND_BY);
}

/* (ret, when not 0, is the allocation that was to reuse the block.) */
void beam__gpa_link_broken(gpa_state *st, gpa_slab *s, void *b,
                           const char *where, uintptr_t ret) {
    char what[224];
    snprintf(what, sizeof what, "write after free (%s)", where);
    long idx = beam__gpa_block_index(s, b);
    misuse_in_freed(st, what, b, s->size, ret,
                    idx >= 0 ? s->info[idx].site : 0);
}

void beam__gpa_misuse_at(gpa_state *st, const char *what, const void *p,
                         size_t len, size_t alignment, uintptr_t ret,
                         uintptr_t alloc_site) {
    char lens[64];
    misuse_said(st, what, p, call_len(len, alignment, lens, sizeof lens), ret,
                alloc_site, CALLED_FROM);
}

/* The write past a chunk of a scratch arena that end gives back, at
 * byte past of it: "the write was at byte B of X, the last block allocated
 * from it (N bytes)", where the NIF looks for it (the chunk it never
 * allocated, nor its length). */
static void chunk_write_said(const beam__call_end *end, size_t past, char *buf,
                             size_t n) {
    const unsigned char *data =
        (const unsigned char *)end->chunk + end->data_at;
    size_t at = past - end->data_at;
    if (end->last == SIZE_MAX) {
        snprintf(buf, n,
                 "the write was at byte %zu of its data, %p (its last "
                 "block was freed)",
                 at, (const void *)data);
        return;
    }
    size_t len = end->end - end->last;
    snprintf(buf, n,
             "the write was at byte %zu of %p, the last block allocated "
             "from it (%zu byte%s)",
             at - end->last, (const void *)(data + end->last), len,
             len == 1 ? "" : "s");
}

void beam__gpa_overrun(gpa_state *st, const void *p, size_t len,
                       size_t alignment, size_t byte, uintptr_t ret,
                       uintptr_t alloc_site) {
    char what[112];
    snprintf(what, sizeof what,
             "write past the end of a block (padding byte %zu changed; "
             "found at free)",
             byte);
    const beam__call_end *end = beam__call_ending();
    if (BEAM__LIKELY(end == NULL || end->chunk != p)) {
        beam__gpa_misuse_at(st, what, p, len, alignment, ret, alloc_site);
        return;
    }
    char write[160], said[240];
    chunk_write_said(end, len + byte, write, sizeof write);
    snprintf(said, sizeof said,
             "a chunk of %zu bytes of %s, not a block of the NIF's: %s", len,
             end->arena_is != NULL ? end->arena_is : "the call's scratch arena",
             write);
    misuse_told(st, what, p, said, ret, alloc_site, CALLED_FROM,
                "the chunk was taken by an allocation from");
}

/* Frames kept of the offending call: as many as the instance keeps of an
 * allocation (several in safe mode), taken here, on the misusing thread.
 * said_len: the block's length as the report gives it. */
static void misuse_said(gpa_state *st, const char *what, const void *p,
                        const char *said_len, uintptr_t ret,
                        uintptr_t alloc_site, const char *ret_is) {
    misuse_told(st, what, p, said_len, ret, alloc_site, ret_is,
                "the block was allocated from");
}

/* ", RET_IS FRAMES", or at a NIF call's end, where the frames are the
 * glue's, ", found when the NIF call ... returned". */
static void caller_said(const gpa_state *st, uintptr_t ret, const char *ret_is,
                        char *buf, size_t n) {
    char site[600], found[600];
    if (beam__found_at_call_end(found, sizeof found) != NULL) {
        snprintf(buf, n, ", %s", found);
        return;
    }
    uintptr_t pcs[BEAM__MAX_FRAMES];
    size_t k = beam__stack_above(ret, pcs, beam__frames_depth(st->flags));
    snprintf(buf, n, ", %s %s", ret_is,
             beam__describe_frames(pcs, k, site, sizeof site));
}

/* misuse_said, origin saying where the block came from. */
static void misuse_told(gpa_state *st, const char *what, const void *p,
                        const char *said_len, uintptr_t ret,
                        uintptr_t alloc_site, const char *ret_is,
                        const char *origin) {
    char from[600], line[BEAM__REPORT_LINE];
    beam__atomic_add_relaxed(&st->misuse, 1);
    /* ret 0: found after the fact (a check at the end of a call), where
     * no call of the user's is at fault: no "called from". */
    char called[620] = "";
    if (ret != 0)
        caller_said(st, ret, ret_is, called, sizeof called);
    if (alloc_site != 0)
        snprintf(line, sizeof line,
                 "beam_alloc: general purpose allocator: %s: %p (%s)%s; "
                 "%s %s",
                 what, p, said_len, called, origin,
                 beam__describe_site(alloc_site, from, sizeof from));
    else
        snprintf(line, sizeof line,
                 "beam_alloc: general purpose allocator: %s: %p (%s)%s", what,
                 p, said_len, called);
    const char *kind = kind_of(what);
    const char *none = NULL;
    if (beam__atomic_cas_acq_rel(&st->first_misuse_kind, &none, kind)) {
        size_t n = strlen(line);
        char *copy = beam__sys_alloc(n + 1);
        if (copy != NULL) {
            memcpy(copy, line, n + 1);
            beam__atomic_store_release(&st->first_misuse_line, copy);
        }
    }
    beam__misuse_note(kind, line);
    beam__report_line(line);
}

const char *beam__gpa_first_misuse_line(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    return st != NULL ? beam__atomic_load_acquire(&st->first_misuse_line)
                      : NULL;
}

const char *beam__gpa_first_misuse(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    return st != NULL ? beam__atomic_load_acquire(&st->first_misuse_kind)
                      : NULL;
}

/* A call given a block through an instance without state: it never
 * allocated, or was deinitialised. The pointer comes first in the words:
 * a foreign free in a leak_check call that had allocated nothing read as
 * a fault of the allocator's. Nothing to count in; still a misuse of
 * the call, of the kind its words say (a free's, or a resize's). */
void beam__gpa_misuse_stateless(unsigned flags, const char *call, const void *p,
                                size_t len, size_t alignment, uintptr_t ret) {
    char site[600], what[100], lens[64], line[BEAM__REPORT_LINE];
    uintptr_t pcs[BEAM__MAX_FRAMES];
    size_t n = beam__stack_above(ret, pcs, beam__frames_depth(flags));
    snprintf(what, sizeof what, "%s of a pointer", call);
    snprintf(line, sizeof line,
             "beam_alloc: general purpose allocator: %s it does not own "
             "(the instance has no memory: nothing allocated yet, or "
             "deinit): %p (%s), called from %s",
             what, p, call_len(len, alignment, lens, sizeof lens),
             beam__describe_frames(pcs, n, site, sizeof site));
    beam__misuse_note(kind_of(what), line);
    beam__report_line(line);
}

void beam__gpa_misuse(gpa_state *st, const char *what, const void *p,
                      size_t len, size_t alignment, uintptr_t ret) {
    beam__gpa_misuse_at(st, what, p, len, alignment, ret, 0);
}

static void report_leak(size_t len, bool exact, size_t alignment, const void *p,
                        uintptr_t site_addr) {
    char site[600];
    if (exact)
        beam__report("beam_alloc: leak: %zu bytes (alignment %zu) at %p, "
                     "allocated from %s",
                     len, alignment, p,
                     beam__describe_site(site_addr, site, sizeof site));
    else
        beam__report("beam_alloc: leak: block of size class %zu at %p "
                     "(enable BEAM_GPA_TRACK_SITES for its site)",
                     len, p);
}

/* Calls fn on every slab of st that holds blocks: the segments' slabs and
 * the mixed chunks' sub-slabs (lock held). */
static void each_slab(gpa_state *st,
                      void (*fn)(gpa_state *, gpa_slab *, void *), void *ctx) {
    GPA_ASSERT_LOCKED(st);
    for (gpa_segment *seg = st->segments; seg != NULL; seg = seg->next)
        for (unsigned i = 0; i < seg->nslabs; i++) {
            gpa_slab *s = beam__gpa_seg_slab(seg, i);
            uint8_t w = gpa_where(s);
            if (w != WHERE_POOL && w != WHERE_MIXED)
                fn(st, s, ctx);
        }
    for (gpa_mixed *m = st->mixed; m != NULL; m = m->next)
        for (unsigned k = 0; k < GPA_PAGES; k++)
            if (gpa_page(m->entry, k) == k)
                fn(st, &m->sub[k], ctx);
}

typedef struct scan_ctx {
    beam_gpa_usage u;
    gpa_leak *out;
    size_t report, reported;
} scan_ctx;

/* The live blocks of medium slab s (lock held: its masks are the lock's):
 * each block's pages, as exact as an untracked small block's class. */
static void scan_medium(const gpa_state *st, const gpa_slab *s, scan_ctx *c) {
    for (unsigned p = 0; p < GPA_PAGES; p++) {
        const char *b = s->base + ((size_t)p << GPA_PAGE_SHIFT);
        size_t bytes = beam__gpa_medium_block(st, s, b);
        if (bytes == 0)
            continue;
        c->u.live_blocks++;
        c->u.live_bytes += bytes;
        if (c->reported < c->report)
            c->out[c->reported++] = (gpa_leak){b, bytes, 0, 0, false};
    }
}

/* Other threads may be allocating while this walks their slabs: it reads
 * bump pointers and free tags without their owners' consent. Both only ever
 * name memory that stays mapped while the instance lock is held, so the
 * worst outcome is a snapshot a moment old. (Those reads are the only
 * unsynchronised ones in the allocator; ThreadSanitizer is told so here
 * rather than by a suppression file.) */
#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize("thread")))
#endif
static void
scan_slab(gpa_state *st, gpa_slab *s, void *arg) {
    scan_ctx *c = (scan_ctx *)arg;
    if (gpa_where(s) == WHERE_MEDIUM) {
        scan_medium(st, s, c);
        return;
    }
    char *bump = beam__atomic_load_plain_relaxed(&s->bump);
    size_t n = (size_t)(bump - s->base) / s->size;
    for (size_t k = 0; k < n; k++) {
        void **b = (void **)(s->base + k * s->size);
        bool live = s->info != NULL ? s->info[k].len != 0
                                    : gpa_tag_at(b) != beam__gpa_tag(st, b);
        if (!live)
            continue;
        c->u.live_blocks++;
        c->u.live_bytes += s->info != NULL ? s->info[k].len : s->size;
        if (c->reported < c->report) {
            gpa_leak *l = &c->out[c->reported++];
            l->p = b;
            l->exact = s->info != NULL;
            l->len = l->exact ? s->info[k].len : s->size;
            l->alignment = l->exact ? s->info[k].alignment : 0;
            l->site = l->exact ? s->info[k].site : 0;
        }
    }
}

beam_gpa_usage beam__gpa_scan(gpa_state *st, gpa_leak *out, size_t report,
                              size_t *reported) {
    GPA_ASSERT_LOCKED(st);
    scan_ctx c = {
        {0, 0, st->backing_bytes + beam__atomic_load_relaxed(&st->meta_bytes),
         beam__atomic_load_relaxed(&st->misuse)},
        out,
        report,
        0};
    each_slab(st, scan_slab, &c);
    for (size_t i = 0; i < st->large_cap; i++) {
        gpa_large *e = &st->large[i];
        if (e->ptr == NULL || e->ptr == GPA_TOMBSTONE)
            continue;
        c.u.live_blocks++;
        c.u.live_bytes += e->len;
        if (c.reported < report)
            out[c.reported++] =
                (gpa_leak){e->ptr, e->len, e->alignment, e->site, true};
    }
    *reported = c.reported;
    return c.u;
}

void beam__gpa_report_leaks(const gpa_leak *leaks, size_t n, size_t total) {
    for (size_t i = 0; i < n; i++)
        report_leak(leaks[i].len, leaks[i].exact, leaks[i].alignment,
                    leaks[i].p, leaks[i].site);
    if (total > n)
        beam__report("beam_alloc: leak: ... and %zu more live blocks",
                     total - n);
}

/* Blocks reported at most per check (the count is exact). */
#define FREED_LISTED 16

typedef struct freed_bad {
    const void *p;
    size_t size, at;
    uintptr_t site;
} freed_bad;

typedef struct freed_ctx {
    freed_bad *out;
    size_t found;
} freed_ctx;

/* freed_head_changed's answer for a broken link: which of its bytes
 * changed is not known (what it held is not), only that one did. */
#define FREED_AT_LINK (SIZE_MAX - 1)

/* The first changed byte of a freed block's link and tag (its first 16
 * bytes, which hold no fill), or SIZE_MAX when both are as a free left
 * them: its tag, and a link that ends its list or leads to another freed
 * block of st (a write there went unseen unless the block was handed out
 * again; found by a walkthrough), whose own tag is its own check; or
 * FREED_AT_LINK. */
static size_t freed_head_changed(const gpa_state *st, void *const *b) {
    uintptr_t tag = beam__gpa_tag(st, b);
    uintptr_t have = gpa_tag_at(b);
    if (have != tag) {
        unsigned char want[sizeof tag], got[sizeof tag];
        memcpy(want, &tag, sizeof tag);
        memcpy(got, &have, sizeof tag);
        size_t i = 0;
        while (want[i] == got[i])
            i++;
        return sizeof(void *) + i;
    }
    if (gpa_link(b) != NULL && !gpa_any_link_ok(st, gpa_link(b), false))
        return FREED_AT_LINK;
    return SIZE_MAX;
}

/* A write after free is otherwise found only when the block is handed out
 * again, which a short call may never do: look at every freed block of a
 * safe instance once, at its end. Lock held; the reports are made after
 * the unlock (nothing that takes a lock runs under it). */
#if defined(__clang__) || defined(__GNUC__)
__attribute__((no_sanitize("thread")))
#endif
static void
check_freed_slab(gpa_state *st, gpa_slab *s, void *arg) {
    (void)st;
    freed_ctx *c = (freed_ctx *)arg;
    if (s->info == NULL)
        return;
    char *bump = beam__atomic_load_plain_relaxed(&s->bump);
    size_t n = (size_t)(bump - s->base) / s->size;
    for (size_t k = 0; k < n; k++) {
        if (s->info[k].len != 0)
            continue;
        const unsigned char *b = (const unsigned char *)(s->base + k * s->size);
        size_t at = freed_head_changed(st, (void *const *)b);
        if (at == SIZE_MAX)
            at =
                gpa_first_other(b, 2 * sizeof(void *), s->size, GPA_FREED_FILL);
        if (at == s->size)
            continue;
        if (c->found < FREED_LISTED)
            c->out[c->found] = (freed_bad){b, s->size, at, s->info[k].site};
        c->found++;
    }
}

static size_t check_freed_locked(gpa_state *st, freed_bad *out) {
    freed_ctx c = {out, 0};
    each_slab(st, check_freed_slab, &c);
    return c.found;
}

/* Where beam__gpa_check_freed's look found a write: at a NIF call's end,
 * the call by name, as a scratch chunk's report does (the leak check's
 * look comes after the call returned; its text alone left the reader to
 * work out which call). */
static const char *freed_found(char *buf, size_t n) {
    const char *at = beam__found_at_call_end(buf, n);
    return at != NULL ? at : "found at the end of the call";
}

/* Room for where (as much as caller_said gives it) and the rest. */
#define FREED_WHERE 600
#define FREED_WHAT (FREED_WHERE + 160)

size_t beam__gpa_check_freed(beam_gpa_t *gpa) {
    gpa_state *st = beam__gpa_state_of(gpa);
    if (st == NULL || !st->safe)
        return 0;
    freed_bad bad[FREED_LISTED];
    gpa_large large[FREED_LISTED];
    size_t large_at[FREED_LISTED];
    gpa_lock(st);
    size_t found = check_freed_locked(st, bad);
    size_t large_found =
        beam__gpa_large_check_freed(st, large, large_at, FREED_LISTED);
    gpa_unlock(st);
    if (found + large_found == 0)
        return 0;
    char where[FREED_WHERE], what[FREED_WHAT];
    const char *at = freed_found(where, sizeof where);
    for (size_t i = 0; i < large_found && i < FREED_LISTED; i++) {
        changed_byte(what, sizeof what, large_at[i], at);
        /* The block's own length, not its backing's (the canary
         * included: "length 20016" for a block of 20000). */
        char said[96];
        snprintf(said, sizeof said,
                 "a freed block of length %zu, alignment %zu", large[i].len,
                 large[i].alignment);
        misuse_said(st, what, large[i].ptr, said, 0, large[i].site,
                    CALLED_FROM);
    }
    for (size_t i = 0; i < found && i < FREED_LISTED; i++) {
        if (bad[i].at == FREED_AT_LINK)
            snprintf(what, sizeof what,
                     "write after free (bytes 0-%zu of the freed block, its "
                     "free-list link, changed; %s)",
                     sizeof(void *) - 1, at);
        else
            changed_byte(what, sizeof what, bad[i].at, at);
        misuse_in_freed(st, what, bad[i].p, bad[i].size, 0, bad[i].site);
    }
    return found + large_found;
}
