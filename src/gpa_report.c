/*
 * What the general purpose allocator tells its user: misuse as it happens,
 * and live blocks (leaks) on request. Slow paths only.
 */
#include "gpa_internal.h"

void beam__gpa_misuse_at(gpa_state *st, const char *what, const void *p,
                         size_t len, size_t alignment, uintptr_t ret,
                         uintptr_t alloc_site) {
    char site[160], from[160];
    atomic_fetch_add_explicit(&st->misuse, 1, memory_order_relaxed);
    if (alloc_site != 0)
        beam__report("beam_alloc: general purpose allocator: %s: %p (length "
                     "%zu, alignment %zu), called from %s; the block was "
                     "allocated from %s",
                     what, p, len, alignment,
                     beam__describe_addr(ret, site, sizeof site),
                     beam__describe_addr(alloc_site, from, sizeof from));
    else
        beam__report("beam_alloc: general purpose allocator: %s: %p (length "
                     "%zu, alignment %zu), called from %s",
                     what, p, len, alignment,
                     beam__describe_addr(ret, site, sizeof site));
}

void beam__gpa_misuse(gpa_state *st, const char *what, const void *p,
                      size_t len, size_t alignment, uintptr_t ret) {
    beam__gpa_misuse_at(st, what, p, len, alignment, ret, 0);
}

static void report_leak(size_t len, bool exact, size_t alignment, const void *p,
                        uintptr_t site_addr) {
    char site[160];
    if (exact)
        beam__report("beam_alloc: leak: %zu bytes (alignment %zu) at %p, "
                     "allocated from %s",
                     len, alignment, p,
                     beam__describe_addr(site_addr, site, sizeof site));
    else
        beam__report("beam_alloc: leak: block of size class %zu at %p "
                     "(enable BEAM_GPA_TRACK_SITES for its site)",
                     len, p);
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
beam_gpa_usage
beam__gpa_scan(gpa_state *st, gpa_leak *out, size_t report, size_t *reported) {
    GPA_ASSERT_LOCKED(st);
    beam_gpa_usage u = {
        0, 0,
        st->backing_bytes +
            atomic_load_explicit(&st->meta_bytes, memory_order_relaxed),
        atomic_load_explicit(&st->misuse, memory_order_relaxed)};
    *reported = 0;
    for (gpa_segment *seg = st->segments; seg != NULL; seg = seg->next) {
        for (unsigned i = 0; i < seg->nslabs; i++) {
            gpa_slab *s = beam__gpa_seg_slab(seg, i);
            if (gpa_where(s) == WHERE_POOL)
                continue;
            char *bump = __atomic_load_n(&s->bump, __ATOMIC_RELAXED);
            size_t n = (size_t)(bump - s->base) / s->size;
            for (size_t k = 0; k < n; k++) {
                void **b = (void **)(s->base + k * s->size);
                bool live = s->info != NULL
                                ? s->info[k].len != 0
                                : (uintptr_t)b[1] != beam__gpa_tag(st, b);
                if (!live)
                    continue;
                u.live_blocks++;
                u.live_bytes += s->info != NULL ? s->info[k].len : s->size;
                if (*reported < report) {
                    gpa_leak *l = &out[(*reported)++];
                    l->p = b;
                    l->exact = s->info != NULL;
                    l->len = l->exact ? s->info[k].len : s->size;
                    l->alignment = l->exact ? s->info[k].alignment : 0;
                    l->site = l->exact ? s->info[k].site : 0;
                }
            }
        }
    }
    for (size_t i = 0; i < st->large_cap; i++) {
        gpa_large *e = &st->large[i];
        if (e->ptr == NULL || e->ptr == GPA_TOMBSTONE)
            continue;
        u.live_blocks++;
        u.live_bytes += e->len;
        if (*reported < report)
            out[(*reported)++] =
                (gpa_leak){e->ptr, e->len, e->alignment, e->site, true};
    }
    return u;
}

void beam__gpa_report_leaks(const gpa_leak *leaks, size_t n, size_t total) {
    for (size_t i = 0; i < n; i++)
        report_leak(leaks[i].len, leaks[i].exact, leaks[i].alignment,
                    leaks[i].p, leaks[i].site);
    if (total > n)
        beam__report("beam_alloc: leak: ... and %zu more live blocks",
                     total - n);
}
