/* Unit tests of the general purpose allocator's sub-slabs ("Small first
 * slabs" in src/gpa_internal.h): what a thread with a few blocks holds,
 * and that every check, report and walk covers blocks in sub-slabs. */
#define _GNU_SOURCE
#include "check.h"

#include <beam_alloc.h>

#include "gpa_internal.h"
#include "gpa_slab_kind.h"
#include "os/barrier.h"

#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static beam_gpa_t fresh(unsigned flags) {
    beam_gpa_t g;
    beam_gpa_init_ex(&g, beam_large_allocator, flags);
    return g;
}

/* What the large allocator (the backing) has handed out in all: what a
 * BEAM would count for the instance. */
static size_t backing_live(void) {
    beam_alloc_stats s;
    memset(&s, 0, sizeof s);
    beam_allocator_stats(beam_large_allocator, &s);
    return s.live_bytes;
}

TEST(gpa_sub_few_blocks_hold_little_and_deinit_gives_all_back) {
    size_t before = backing_live();
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    enum { N = 16 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        size_t len = 8 + (size_t)i * 32; /* 16 classes from 16 to 512 */
        CHECK((p[i] = beam_alloc_bytes(a, len, 8)) != NULL);
        CHECK(in_sub_slab(p[i]));
        memset(p[i], i, len);
    }
    /* One slab's worth from the backing (the first segment is slack
     * alone) and the metadata, or two when neighbours in the backing hold
     * part of the slack's chunks (another instance's segments can): not a
     * slab per class (16 classes, 1 MiB). */
    size_t held = backing_live() - before;
    CHECK(held < 256 * 1024);
    CHECK(held == beam_gpa_usage_of(&g).backing_bytes);
    for (int i = 0; i < N; i++)
        beam_free_bytes(a, p[i], 8 + (size_t)i * 32, 8);
    CHECK(!beam_gpa_deinit(&g));
    CHECK(backing_live() == before);
}

TEST(gpa_sub_mixed_sizes_stay_within_the_floor) {
    size_t before = backing_live();
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    enum { N = 64 };
    void *p[N];
    size_t len[N], live = 0;
    uint32_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        len[i] = 8 + (x >> 8) % 8185; /* 8 B to 8 KiB */
        CHECK((p[i] = beam_alloc_bytes(a, len[i], 8)) != NULL);
        live += len[i];
    }
    /* The bench's bound (held - 1.5 x live <= 256 KiB) depends on where
     * the backing puts segments (a slack chunk shared with another
     * segment's slack serves one of them only, as under the sanitizers'
     * allocators): a looser one here. A slab per class would be 1.9 MiB. */
    size_t held = backing_live() - before;
    CHECK(held < live + 512 * 1024);
    for (int i = 0; i < N; i++)
        beam_free_bytes(a, p[i], len[i], 8);
    CHECK(!beam_gpa_deinit(&g));
    CHECK(backing_live() == before);
}

/* One of the threads sharing an instance: 64 blocks of 8 B to 8 KiB drawn
 * from seed, held until the main thread has read what the instance holds
 * (held), then freed on this thread (release). */
typedef struct shared_floor {
    beam_gpa_t *gpa;
    uint32_t seed;
    pthread_barrier_t *held, *release;
    size_t live;
    bool ok;
} shared_floor;

static void *shared_floor_thread(void *arg) {
    shared_floor *f = (shared_floor *)arg;
    beam_allocator_t a = beam_gpa_allocator(f->gpa);
    enum { N = 64 };
    void *p[N];
    size_t len[N];
    uint32_t x = f->seed;
    f->live = 0;
    f->ok = true;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        len[i] = 8 + (x >> 8) % 8185; /* 8 B to 8 KiB */
        p[i] = beam_alloc_bytes(a, len[i], 8);
        f->ok = f->ok && p[i] != NULL;
        f->live += len[i];
    }
    pthread_barrier_wait(f->held);
    pthread_barrier_wait(f->release);
    for (int i = 0; i < N; i++)
        beam_free_bytes(a, p[i], len[i], 8);
    return NULL;
}

/* held - 1.5 x live a thread, in bytes, for nthreads (up to 8) threads
 * holding their sets (drawn from seed) in one fresh instance at once; -1
 * when a block could not be allocated or was left live. */
static double shared_floor_run(int nthreads, uint32_t seed) {
    enum { MAX_THREADS = 8 };
    beam_gpa_t g = fresh(0);
    shared_floor f[MAX_THREADS];
    pthread_t t[MAX_THREADS];
    pthread_barrier_t held, release;
    pthread_barrier_init(&held, NULL, (unsigned)nthreads + 1);
    pthread_barrier_init(&release, NULL, (unsigned)nthreads + 1);
    int started = 0;
    for (; started < nthreads && started < MAX_THREADS; started++) {
        f[started] = (shared_floor){.gpa = &g,
                                    .seed = seed + 1000003u * (unsigned)started,
                                    .held = &held,
                                    .release = &release};
        if (pthread_create(&t[started], NULL, shared_floor_thread,
                           &f[started]) != 0)
            break;
    }
    if (started < nthreads)
        abort(); /* the barriers would wait for ever */
    /* Every thread holds its set and waits: nothing moves while we read. */
    pthread_barrier_wait(&held);
    size_t backing = beam_gpa_usage_of(&g).backing_bytes, live = 0;
    bool ok = true;
    for (int i = 0; i < nthreads; i++) {
        live += f[i].live;
        ok = ok && f[i].ok;
    }
    pthread_barrier_wait(&release);
    for (int i = 0; i < nthreads; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&held);
    pthread_barrier_destroy(&release);
    ok = ok && beam_gpa_usage_of(&g).live_blocks == 0;
    ok = !beam_gpa_deinit(&g) && ok;
    return ok ? ((double)backing - 1.5 * (double)live) / nthreads : -1;
}

/* Issue 13's per-thread floor (held - 1.5 x live <= 256 KiB) when threads
 * share an instance, as a BEAM's schedulers share the process-wide one:
 * each thread's first sub-slabs of the classes it touches must fit in the
 * heap's sub-slab budget (SUB_BUDGET, gpa_slab.c); past it every class
 * took a whole 64 KiB slab: 232-417 KiB a thread with 64 pages (the worst
 * seed over 256 in 30 runs of 30), 59-149 with 128. The bench (paired
 * mem) runs 64 threads; 8 show it here in a few milliseconds. */
TEST(gpa_sub_threads_sharing_an_instance_stay_within_the_floor) {
    double worst = 0;
    for (uint32_t seed = 1; seed <= 5; seed++) {
        double extra = shared_floor_run(8, seed * 7919u);
        CHECK(extra != -1);
        if (extra > worst)
            worst = extra;
    }
    CHECK(worst <= 256 * 1024);
}

TEST(gpa_sub_blocks_keep_their_alignment) {
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    static const size_t aligns[] = {16, 32, 64, 256, 1024, 4096, 8192};
    void *p[7][3];
    for (int i = 0; i < 7; i++)
        for (int k = 0; k < 3; k++) {
            size_t len = aligns[i] * (size_t)(k + 1) / 2 + 1;
            if (len > BEAM_GPA_SMALL_MAX)
                len = aligns[i];
            p[i][k] = beam_alloc_bytes(a, len, aligns[i]);
            CHECK(p[i][k] != NULL && check_aligned(p[i][k], aligns[i]));
            memset(p[i][k], 0x33, len);
        }
    /* (Whether the 8 KiB-aligned ones land in a sub-slab depends on how
     * much of the slack's chunks the backing's neighbours hold: under
     * valgrind's malloc, after the other tests, sometimes none. Their
     * alignment is what must hold.) */
    for (int i = 0; i < 7; i++)
        for (int k = 0; k < 3; k++) {
            size_t len = aligns[i] * (size_t)(k + 1) / 2 + 1;
            if (len > BEAM_GPA_SMALL_MAX)
                len = aligns[i];
            beam_free_bytes(a, p[i][k], len, aligns[i]);
        }
    CHECK(beam_gpa_usage_of(&g).misuse_count == 0);
    CHECK(!beam_gpa_deinit(&g));
}

/* The first page of g's mixed chunks whose page-table entry is what (free,
 * or not ours), or NULL. */
static char *mixed_page(beam_gpa_t *g, uint8_t what) {
    for (gpa_mixed *m = beam__gpa_state_of(g)->mixed; m != NULL; m = m->next)
        for (unsigned k = 0; k < GPA_PAGES; k++)
            if (gpa_page(m->entry, k) == what)
                return m->base + k * GPA_PAGE_SIZE;
    return NULL;
}

TEST(gpa_sub_misuse_is_caught) {
    beam_gpa_t g = fresh(0);
    beam_gpa_t other = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    char *p = beam_alloc_bytes(a, 40, 8);
    char *q = beam_alloc_bytes(a, 40, 8);
    char *theirs = beam_alloc_bytes(beam_gpa_allocator(&other), 40, 8);
    CHECK(p != NULL && q != NULL && theirs != NULL);
    CHECK(in_sub_slab(p) && in_sub_slab(q) && in_sub_slab(theirs));
    /* A page of a mixed chunk that is ours but in no sub-slab, and, when
     * a chunk is shared with the slack's neighbour, a page that is not
     * ours: the address alone tells, without reading the memory. */
    CHECK(gpa_where(beam__gpa_map_slot(p)) == WHERE_MIXED);
    char *unused = mixed_page(&g, GPA_PAGE_FREE);
    char *neighbour = mixed_page(&g, GPA_PAGE_NONE);
    /* When the slack the backing left has no page to spare (seen under
     * valgrind in CI), sub-slabs of another class make a chunk that has. */
    void *more[8];
    int n_more = 0;
    while (unused == NULL && n_more < 8) {
        more[n_more] = beam_alloc_bytes(a, 1000, 8);
        CHECK(more[n_more] != NULL);
        n_more++;
        unused = mixed_page(&g, GPA_PAGE_FREE);
    }
    CHECK(unused != NULL);
    check_capture_reports();
    beam_free_bytes(a, p, 40, 8);
    beam_free_bytes(a, p, 40, 8);
    CHECK(check_report_count() == 1 && check_report_contains("double free"));
    beam_free_bytes(a, q + 16, 24, 8);
    CHECK(check_report_count() == 2 && check_report_contains("inside a block"));
    beam_free_bytes(a, unused, 40, 8);
    CHECK(check_report_count() == 3 && check_report_contains("unused memory"));
    beam_free_bytes(a, theirs, 40, 8);
    CHECK(check_report_count() == 4 &&
          check_report_contains("another allocator instance"));
    size_t expected = 4;
    if (neighbour != NULL) {
        beam_free_bytes(a, neighbour, 40, 8);
        CHECK(check_report_count() == 5 && check_report_contains("not own"));
        expected++;
    }
    for (int i = 0; i < n_more; i++)
        beam_free_bytes(a, more[i], 1000, 8);
    /* A wrong length is reported, and the block freed anyway. */
    beam_free_bytes(a, q, 700, 8);
    CHECK(check_report_count() == expected + 1 &&
          check_report_contains("wrong length"));
    check_release_reports();
    CHECK(beam_gpa_usage_of(&g).misuse_count == expected + 1);
    CHECK(beam_gpa_usage_of(&g).live_blocks == 0);
    /* The sub-slab's free list is intact. */
    void *x = beam_alloc_bytes(a, 40, 8);
    void *y = beam_alloc_bytes(a, 40, 8);
    CHECK(x != NULL && y != NULL && x != y && in_sub_slab(x));
    beam_free_bytes(a, x, 40, 8);
    beam_free_bytes(a, y, 40, 8);
    beam_free_bytes(beam_gpa_allocator(&other), theirs, 40, 8);
    CHECK(!beam_gpa_deinit(&g));
    CHECK(!beam_gpa_deinit(&other));
}

TEST(gpa_sub_tracked_misuse_and_leaks_are_exact) {
    beam_gpa_t g = fresh(BEAM_GPA_TRACK_SITES | BEAM_GPA_QUIET_LEAKS);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *p = beam_alloc_bytes(a, 24, 8);
    void *q = beam_alloc_bytes(a, 3000, 8);
    CHECK(p != NULL && q != NULL && in_sub_slab(p) && in_sub_slab(q));
    check_capture_reports();
    beam_free_bytes(a, p, 20, 8); /* same class, wrong exact length */
    CHECK(check_report_count() == 1 && check_report_contains("wrong length"));
    beam_free_bytes(a, p, 24, 8);
    CHECK(check_report_count() == 2 && check_report_contains("double free"));
    check_release_reports();
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_blocks == 1 && u.live_bytes == 3000);
    CHECK(beam_gpa_detect_leaks(&g));
    CHECK(beam_gpa_deinit(&g)); /* q leaked; deinit frees it */
}

TEST(gpa_sub_leaks_are_reported) {
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *p = beam_alloc_bytes(a, 100, 8);
    void *q = beam_alloc_bytes(a, 1000, 8);
    CHECK(p != NULL && q != NULL && in_sub_slab(p) && in_sub_slab(q));
    check_capture_reports();
    CHECK(beam_gpa_detect_leaks(&g));
    CHECK(check_report_count() == 2);
    CHECK(check_report_contains("leak: block of size class"));
    check_release_reports();
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_blocks == 2 && u.live_bytes == 112 + 1024);
    beam_free_bytes(a, p, 100, 8);
    beam_free_bytes(a, q, 1000, 8);
    CHECK(!beam_gpa_detect_leaks(&g));
    CHECK(!beam_gpa_deinit(&g));
}

TEST(gpa_sub_filling_moves_the_class_to_whole_slabs) {
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    enum { N = 4000 }; /* 64 B blocks: four sub-slabs hold 960 */
    static void *p[N];
    for (int i = 0; i < N; i++)
        CHECK((p[i] = beam_alloc_bytes(a, 64, 8)) != NULL);
    CHECK(in_sub_slab(p[0]));
    /* The first sub-slabs (one page, then two, four, eight) hold the first
     * 960; then whole slabs take over (a segment's slack, when the pool is
     * empty, still serves as sub-slabs before the backing is asked for
     * more, so not every block after those is in a whole slab). */
    size_t whole = 0;
    for (int i = 0; i < N; i++) {
        CHECK(i >= 960 || in_sub_slab(p[i]));
        whole += in_whole_slab(p[i]);
    }
    CHECK(whole >= 1024); /* a whole slab's worth at least */
    CHECK(beam_gpa_usage_of(&g).live_blocks == N);
    for (int i = 0; i < N; i++)
        beam_free_bytes(a, p[i], 64, 8);
    CHECK(beam_gpa_usage_of(&g).misuse_count == 0);
    CHECK(!beam_gpa_deinit(&g));
}

/* One block of len allocated and freed until its class is busy (it then
 * graduates); false when an allocation failed. */
static bool make_class_busy(beam_allocator_t a, size_t len) {
    for (int i = 0; i < GPA_CLASS_BUSY_FREES + 16; i++) {
        void *t = beam_alloc_bytes(a, len, 8);
        if (t == NULL)
            return false;
        beam_free_bytes(a, t, len, 8);
    }
    return true;
}

/* The setup of the tests of a graduated class's partial sub-slabs: n
 * blocks of 64 B, all in sub-slabs, then the first 32 (half the first
 * sub-slab, full and detached) freed, waiting in the heap's stash; false
 * when a block failed or missed a sub-slab. */
static bool sub_blocks_some_freed(beam_allocator_t a, void **p, int n) {
    for (int i = 0; i < n; i++)
        if ((p[i] = beam_alloc_bytes(a, 64, 8)) == NULL || !in_sub_slab(p[i]))
            return false;
    for (int i = 0; i < 32; i++)
        beam_free_bytes(a, p[i], 64, 8);
    return true;
}

static void free_64s(beam_allocator_t a, void **p, int from, int to) {
    for (int i = from; i < to; i++)
        beam_free_bytes(a, p[i], 64, 8);
}

TEST(gpa_sub_a_busy_class_graduates_to_whole_slabs) {
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *keep = beam_alloc_bytes(a, 64, 8);
    void *few = beam_alloc_bytes(a, 1000, 8);
    CHECK(keep != NULL && in_sub_slab(keep) && few != NULL && in_sub_slab(few));
    CHECK(make_class_busy(a, 64));
    /* The class freed that often graduated: its sub-slab is retired, its
     * blocks come from a whole slab. */
    void *more = beam_alloc_bytes(a, 64, 8);
    CHECK(more != NULL && in_whole_slab(more));
    /* Classes seldom freed keep their sub-slabs, new ones get them. */
    void *again_few = beam_alloc_bytes(a, 1000, 8);
    CHECK(again_few != NULL && in_sub_slab(again_few));
    void *big = beam_alloc_bytes(a, 300, 8);
    CHECK(big != NULL && in_sub_slab(big));
    beam_free_bytes(a, few, 1000, 8);
    beam_free_bytes(a, again_few, 1000, 8);
    /* The retired sub-slab still frees what it holds. */
    beam_free_bytes(a, keep, 64, 8);
    beam_free_bytes(a, big, 300, 8);
    beam_free_bytes(a, more, 64, 8);
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_blocks == 0 && u.misuse_count == 0);
    /* Collected, the heap starts small again. */
    beam_gpa_collect(&g);
    void *again = beam_alloc_bytes(a, 64, 8);
    CHECK(again != NULL && in_sub_slab(again));
    beam_free_bytes(a, again, 64, 8);
    CHECK(!beam_gpa_deinit(&g));
}

/* A free through an instance with no state of a small block whose slab's
 * map entry has no owner but a class and a bump (as while another
 * instance formats it, its owner set last) is reported, by the helpers
 * and by the vtable. The inline free left st to the owner test, which
 * NULL passed, and read the free tag through it: a crash. The entry is
 * made so by hand (a graduated class: the block's slab is its entry),
 * the owner cleared, then put back; the medium twin is in
 * test_gpa_medium.c. */
TEST(gpa_small_free_of_an_ownerless_entry_by_a_stateless_instance) {
    beam_gpa_t g = fresh(0), none = fresh(0); /* none: never used */
    beam_allocator_t a = beam_gpa_allocator(&g);
    beam_allocator_t na = beam_gpa_allocator(&none);
    CHECK(make_class_busy(a, 256));
    char *p = beam_alloc_bytes(a, 256, 8);
    CHECK(p != NULL && in_whole_slab(p));
    gpa_slab *e = beam__gpa_map_slot(p);
    CHECK(gpa_where(e) == WHERE_CUR && e->fast_span != 0);
    gpa_state *owner = beam__atomic_load_acquire(&e->st);
    beam__atomic_store_release(&e->st, NULL);
    check_capture_reports();
    beam_free_bytes(na, p, 256, 8);
    na.vtable->free(na.ctx, p, 256, 8, 0);
    bool said = check_report_count() == 2;
    check_release_reports();
    beam__atomic_store_release(&e->st, owner);
    CHECK(said);
    CHECK(beam_gpa_usage_of(&g).live_blocks == 1);
    beam_free_bytes(a, p, 256, 8);
    CHECK(beam_gpa_usage_of(&g).misuse_count == 0);
    CHECK(!beam_gpa_deinit(&g));
    CHECK(!beam_gpa_deinit(&none));
}

/* Map entries are 64-aligned, as gpa_slab declares: the fast paths' fields
 * are on its first line. Leaves came from calloc, 16-aligned: every entry
 * straddled two lines (found by a session 35 helper). */
TEST(gpa_map_entries_are_cache_line_aligned) {
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    CHECK(make_class_busy(a, 64));
    char *p = beam_alloc_bytes(a, 64, 8);
    CHECK(p != NULL);
    gpa_slab *e = beam__gpa_map_slot(p);
    CHECK(e != NULL && (uintptr_t)e % 64 == 0);
    CHECK((uintptr_t)&e->pages_cached / 64 == (uintptr_t)&e->free / 64);
    beam_free_bytes(a, p, 64, 8);
    CHECK(!beam_gpa_deinit(&g));
}

/* Found measuring churn over a backing that placed segments so that
 * sub-slabs served a class: a graduated class took partial sub-slabs back
 * from the list (they had room), and so stayed on sub-slabs, and the
 * chunk's slower free, for good. */
TEST(gpa_sub_a_graduated_class_takes_no_partial_sub_slab) {
    size_t before = backing_live();
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    enum { N = 96 }; /* the first sub-slab (one page) holds 64 of them */
    static void *p[N];
    /* The first refill after graduation puts the first sub-slab back on
     * the partial list, with room. */
    CHECK(sub_blocks_some_freed(a, p, N));
    CHECK(make_class_busy(a, 64));
    enum { M = 80 }; /* more than the passed-over sub-slab's room */
    static void *more[M];
    for (int i = 0; i < M; i++)
        CHECK((more[i] = beam_alloc_bytes(a, 64, 8)) != NULL &&
              in_whole_slab(more[i]));
    /* The sub-slabs passed over still free what they hold, and a
     * collection gives them back. */
    free_64s(a, p, 32, N);
    free_64s(a, more, 0, M);
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_blocks == 0 && u.misuse_count == 0);
    /* Empty, they go at the refills that pass them over. */
    gpa_state *st = beam__gpa_state_of(&g);
    unsigned cls = beam__gpa_class_for(64, 8);
    enum { R = 3 * 1024 }; /* three whole slabs: refills */
    static void *r[R];
    for (int i = 0; i < R; i++)
        CHECK((r[i] = beam_alloc_bytes(a, 64, 8)) != NULL);
    CHECK(st->partial_sub[cls] == NULL);
    free_64s(a, r, 0, R);
    beam_gpa_collect(&g);
    for (unsigned c = 0; c < GPA_CLASSES; c++)
        CHECK(st->partial_sub[c] == NULL);
    CHECK(!beam_gpa_deinit(&g));
    CHECK(backing_live() == before);
}

/* Found in review: frees the inline path leaves to the general one (a
 * tracked instance's, all of them) count towards graduation too. */
TEST(gpa_sub_a_tracked_class_graduates_too) {
    beam_gpa_t g = fresh(BEAM_GPA_TRACK_SITES);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *first = beam_alloc_bytes(a, 64, 8);
    CHECK(first != NULL && in_sub_slab(first));
    beam_free_bytes(a, first, 64, 8);
    CHECK(make_class_busy(a, 64));
    void *more = beam_alloc_bytes(a, 64, 8);
    CHECK(more != NULL && in_whole_slab(more));
    beam_free_bytes(a, more, 64, 8);
    CHECK(beam_gpa_usage_of(&g).misuse_count == 0);
    CHECK(!beam_gpa_deinit(&g));
}

typedef struct sub_owner {
    beam_gpa_t *gpa;
    void *blocks[32];
    size_t lens[32];
    check_phase phase; /* 1: allocated, 2: may exit */
} sub_owner;

static void *allocate_few_then_idle(void *arg) {
    sub_owner *o = (sub_owner *)arg;
    beam_allocator_t a = beam_gpa_allocator(o->gpa);
    for (int i = 0; i < 32; i++) {
        o->lens[i] = 8 + (size_t)i * 100;
        o->blocks[i] = beam_alloc_bytes(a, o->lens[i], 8);
    }
    check_phase_set(&o->phase, 1);
    check_phase_wait(&o->phase, 2);
    return NULL;
}

TEST(gpa_sub_blocks_freed_elsewhere_and_idle_heaps_are_collected) {
    size_t before = backing_live();
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    /* This thread's heap first, so that the owner's sub-slabs are not
     * in the very first segment. */
    void *mine = beam_alloc_bytes(a, 16, 8);
    CHECK(mine != NULL);
    size_t base = beam_gpa_usage_of(&g).backing_bytes;
    sub_owner o;
    memset(&o, 0, sizeof o);
    o.gpa = &g;
    check_phase_init(&o.phase);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, allocate_few_then_idle, &o) == 0);
    check_phase_wait(&o.phase, 1);
    bool all = true;
    for (int i = 0; i < 32; i++) {
        all = all && o.blocks[i] != NULL;
    }
    /* Freed by this thread, into the idle owner's sub-slabs. */
    for (int i = 0; i < 32; i++)
        beam_free_bytes(a, o.blocks[i], o.lens[i], 8);
    beam_free_bytes(a, mine, 16, 8);
    beam_gpa_collect(&g);
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    check_phase_set(&o.phase, 2);
    pthread_join(t, NULL);
    /* (Whether the owner's blocks are in sub-slabs depends, like the
     * alignment test's, on the slack the backing's neighbours leave: not
     * always under valgrind's malloc after the other tests, which failed
     * one CI run in six. Collection must give everything back either
     * way.) */
    CHECK(all);
    CHECK(u.live_blocks == 0 && u.misuse_count == 0);
    /* Every segment went back: metadata (state, heaps) only. */
    CHECK(u.backing_bytes < base);
    CHECK(u.backing_bytes < 16 * 1024);
    CHECK(!beam_gpa_deinit(&g));
    CHECK(backing_live() == before);
}

static void *free_pair(void *arg) {
    void **x = (void **)arg;
    beam_free_bytes(beam_gpa_allocator((beam_gpa_t *)x[0]), x[1], 2000, 8);
    beam_free_bytes(beam_gpa_allocator((beam_gpa_t *)x[0]), x[2], 2000, 8);
    return NULL;
}

TEST(gpa_sub_cross_thread_frees_come_back) {
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    /* Two 2 KiB blocks fill their first sub-slab (one page). */
    void *x[3] = {&g, beam_alloc_bytes(a, 2000, 8),
                  beam_alloc_bytes(a, 2000, 8)};
    CHECK(x[1] != NULL && x[2] != NULL);
    CHECK(in_sub_slab(x[1]) &&
          beam__gpa_slab_of(x[1]) == beam__gpa_slab_of(x[2]));
    pthread_t t;
    CHECK(pthread_create(&t, NULL, free_pair, x) == 0);
    pthread_join(t, NULL);
    CHECK(beam_gpa_usage_of(&g).live_blocks == 0);
    /* The sub-slab has no room of its own: the refill collects what the
     * other thread freed, and hands it out again. */
    void *y = beam_alloc_bytes(a, 2000, 8);
    void *z = beam_alloc_bytes(a, 2000, 8);
    CHECK(y != NULL && z != NULL && y != z);
    CHECK((y == x[1] || y == x[2]) && (z == x[1] || z == x[2]));
    beam_free_bytes(a, y, 2000, 8);
    beam_free_bytes(a, z, 2000, 8);
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_blocks == 0 && u.misuse_count == 0);
    CHECK(!beam_gpa_deinit(&g));
}

TEST(gpa_sub_usable_size_and_resize_in_a_sub_slab) {
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    char *p = beam_malloc(a, 100);
    CHECK(p != NULL && in_sub_slab(p));
    CHECK(beam_msize(a, p) >= 100 && beam_msize(a, p) <= 112);
    char *q = beam_alloc_bytes(a, 100, 8);
    CHECK(q != NULL && in_sub_slab(q));
    CHECK(beam_resize_bytes(a, q, 100, 8, 110));
    CHECK(!beam_resize_bytes(a, q, 110, 8, 200));
    beam_free_bytes(a, q, 110, 8);
    beam_mfree(a, p);
    CHECK(beam_gpa_usage_of(&g).misuse_count == 0);
    CHECK(!beam_gpa_deinit(&g));
}

/* Found in review: over another instance, which serves a 64 KiB request as
 * one aligned slab of its own, the first segment (slack alone) had no room
 * at all, and the first block took a second segment on top. */
TEST(gpa_sub_over_another_instance_the_first_segment_is_usable) {
    beam_gpa_t y = fresh(0);
    beam_gpa_t x;
    beam_gpa_init_ex(&x, beam_gpa_allocator(&y), 0);
    beam_allocator_t a = beam_gpa_allocator(&x);
    void *p = beam_alloc_bytes(a, 40, 8);
    CHECK(p != NULL);
    gpa_state *st = beam__gpa_state_of(&x);
    size_t segments = 0;
    for (gpa_segment *s = st->segments; s != NULL; s = s->next)
        segments++;
    CHECK(segments == 1);
    /* One slab's worth and metadata, as over the large allocator. */
    CHECK(beam_gpa_usage_of(&x).backing_bytes < 160 * 1024);
    beam_free_bytes(a, p, 40, 8);
    CHECK(!beam_gpa_deinit(&x));
    CHECK(beam_gpa_usage_of(&y).live_blocks == 0);
    CHECK(!beam_gpa_deinit(&y));
}

/* A backing that puts each segment (a request of whole slabs) where the
 * test says, in a region of its own, and everything else (metadata) in
 * the large allocator: neighbours in the backing, made to order. (A
 * tracked instance's block records for 16-byte blocks are 64 KiB too:
 * the tests below allocate none. A refused request still counts in next,
 * so a test that expects fewer segments sees one asked for too many.) */
typedef struct placing {
    char *at[4]; /* where the next segments go, in order */
    int next;
} placing;

static void *placing_alloc(void *ctx, size_t len, size_t alignment,
                           uintptr_t ret) {
    placing *pl = ctx;
    if (len % GPA_SLAB_SIZE != 0)
        return beam_large_allocator.vtable->alloc(NULL, len, alignment, ret);
    return pl->next < 4 ? pl->at[pl->next++] : NULL;
}

static void placing_free(void *ctx, void *mem, size_t len, size_t alignment,
                         uintptr_t ret) {
    (void)ctx;
    if (len % GPA_SLAB_SIZE != 0)
        beam_large_allocator.vtable->free(NULL, mem, len, alignment, ret);
}

static const beam_allocator_vtable placing_vtable = {
    placing_alloc, check_no_resize, check_no_remap, placing_free};

/* An instance whose first segment (slack alone, one slab's worth) the
 * backing puts at at, holding a block so that its slack's two chunks are
 * claimed. */
typedef struct neighbour {
    placing where;
    beam_gpa_t g;
    void *block;
} neighbour;

static bool neighbour_settle(neighbour *n, char *at) {
    n->where = (placing){{at}, 0};
    beam_gpa_init_ex(&n->g, (beam_allocator_t){&n->where, &placing_vtable}, 0);
    n->block = beam_alloc_bytes(beam_gpa_allocator(&n->g), 64, 8);
    return n->block != NULL && in_sub_slab(n->block);
}

static bool neighbour_leave(neighbour *n) {
    beam_free_bytes(beam_gpa_allocator(&n->g), n->block, 64, 8);
    return !beam_gpa_deinit(&n->g);
}

/* Seen under valgrind in CI, made to order here: other instances' slack
 * holds both chunks of a fresh instance's first segment (slack alone), so
 * none of its slack is usable; then, when crowded, the slack of the
 * segment it takes next too. Its first blocks still go to sub-slabs (in
 * that segment's slack, or in its slab lent out), not in a whole slab. */
static void first_blocks_among_neighbours(unsigned flags, bool crowded) {
    enum { K = 64 * 1024 };
    char *region = aligned_alloc(K, 12 * K);
    CHECK(region != NULL);
    /* Chunks 0-1 and 2-3 claimed; this instance's slack segment between,
     * its next one either across chunks 5-7, between two more neighbours
     * (4-5 and 7-8), or across 9-11 with no neighbour. */
    /* Static: a failed check leaves early, and the instances left behind
     * must not point into a dead frame. */
    static neighbour n[4];
    static placing mine;
    static beam_gpa_t g;
    int settled = 0;
    char *at[4] = {region + K / 2, region + 5 * K / 2, region + 9 * K / 2,
                   region + 15 * K / 2};
    for (; settled < (crowded ? 4 : 2); settled++)
        CHECK(neighbour_settle(&n[settled], at[settled]));
    mine = (placing){{region + 3 * K / 2,
                      crowded ? region + 11 * K / 2 : region + 19 * K / 2},
                     0};
    beam_gpa_init_ex(&g, (beam_allocator_t){&mine, &placing_vtable}, flags);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *p = beam_alloc_bytes(a, 24, 8);
    void *q = beam_alloc_bytes(a, 3000, 8);
    CHECK(p != NULL && q != NULL);
    CHECK(mine.next == 2); /* the slack alone, then one slab's segment */
    CHECK(in_sub_slab(p) && in_sub_slab(q));
    beam_free_bytes(a, p, 24, 8);
    beam_free_bytes(a, q, 3000, 8);
    CHECK(!beam_gpa_deinit(&g));
    while (settled > 0)
        CHECK(neighbour_leave(&n[--settled]));
    free(region);
}

TEST(gpa_sub_first_blocks_with_all_slack_claimed_by_neighbours) {
    first_blocks_among_neighbours(0, false);
    first_blocks_among_neighbours(0, true);
}

TEST(gpa_sub_first_tracked_blocks_with_all_slack_claimed_by_neighbours) {
    first_blocks_among_neighbours(BEAM_GPA_TRACK_SITES, false);
    first_blocks_among_neighbours(BEAM_GPA_TRACK_SITES, true);
}

/* Found in review: short of memory, a graduated class is still served by
 * a partial sub-slab (passing them over must not have given them away).
 * One aligned segment, all of it slack; every later one refused. */
TEST(gpa_sub_short_of_memory_a_graduated_class_takes_a_partial_sub_slab) {
    enum { K = 64 * 1024, N = 900 };
    char *region = aligned_alloc(K, K);
    CHECK(region != NULL);
    static placing pl;
    static beam_gpa_t g;
    static void *p[N];
    pl = (placing){{region}, 0};
    beam_gpa_init_ex(&g, (beam_allocator_t){&pl, &placing_vtable}, 0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *x = beam_alloc_bytes(a, 1000, 8);
    CHECK(x != NULL && in_sub_slab(x));
    CHECK(sub_blocks_some_freed(a, p, N));
    CHECK(make_class_busy(a, 64));
    free_64s(a, p, 32, N);
    beam_free_bytes(a, x, 1000, 8);
    CHECK(beam_gpa_usage_of(&g).misuse_count == 0);
    CHECK(!beam_gpa_deinit(&g));
    free(region);
}

/* A backing that refuses once told to. */
static bool refusing;
static void *refusing_alloc(void *ctx, size_t len, size_t alignment,
                            uintptr_t ret) {
    (void)ctx;
    return refusing
               ? NULL
               : beam_large_allocator.vtable->alloc(NULL, len, alignment, ret);
}
static const beam_allocator_vtable refusing_vtable = {
    refusing_alloc, check_no_resize, check_no_remap, check_large_free};

/* Found in review: a tracked instance needs block records for a new slab;
 * refused them, a graduated class must still take the partial sub-slab
 * with room (which has its records). */
TEST(gpa_sub_tracked_short_of_memory_graduated_takes_a_partial_sub_slab) {
    enum { N = 96 };
    static beam_gpa_t g;
    static void *p[N];
    refusing = false;
    beam_gpa_init_ex(&g, (beam_allocator_t){NULL, &refusing_vtable},
                     BEAM_GPA_TRACK_SITES);
    beam_allocator_t a = beam_gpa_allocator(&g);
    CHECK(sub_blocks_some_freed(a, p, N));
    refusing = true;
    bool served = make_class_busy(a, 64);
    refusing = false;
    CHECK(served);
    free_64s(a, p, 32, N);
    CHECK(beam_gpa_usage_of(&g).misuse_count == 0);
    CHECK(!beam_gpa_deinit(&g));
}

/* A backing that puts the instance's segments at seg_at and its block of
 * NEAR_LEN bytes at near_at, in a page of a chunk the slack shares. */
enum { NEAR_LEN = 4040, NEAR_ALIGN = 16384 };
typedef struct near_place {
    char *seg_at, *near_at;
} near_place;

static void *near_alloc(void *ctx, size_t len, size_t alignment,
                        uintptr_t ret) {
    near_place *np = ctx;
    if (len % GPA_SLAB_SIZE == 0)
        return len == GPA_SLAB_SIZE ? np->seg_at : NULL;
    if (len == NEAR_LEN && alignment == NEAR_ALIGN)
        return np->near_at;
    return beam_large_allocator.vtable->alloc(NULL, len, alignment, ret);
}

static void near_free(void *ctx, void *mem, size_t len, size_t alignment,
                      uintptr_t ret) {
    near_place *np = ctx;
    if (mem != np->seg_at && mem != np->near_at)
        beam_large_allocator.vtable->free(NULL, mem, len, alignment, ret);
}

static const beam_allocator_vtable near_vtable = {near_alloc, check_no_resize,
                                                  check_no_remap, near_free};

typedef struct near_free_arg {
    beam_allocator_t a;
    void *block;
    atomic_bool done;
} near_free_arg;

static void *near_free_thread(void *arg) {
    near_free_arg *f = arg;
    beam_free_bytes(f->a, f->block, NEAR_LEN, NEAR_ALIGN);
    atomic_store(&f->done, true);
    return NULL;
}

/* Found by a stress test (GPA over GPA over GPA, deinitialised in the
 * wrong order, a collector on the lowest): one of an instance's large
 * blocks in a page of a chunk its slack shares (a neighbour's page) was
 * refused at its free ("its slab holds no block") and leaked, 4040 or
 * 4536 bytes at alignment 16384, when the chunk's entry was unmapped or
 * claimed meanwhile (a segment going or coming): the lock-free look read
 * the entry's where after the change and its owner before, or the other
 * way, a page of the instance with no block. Made to order here: the
 * free looks while the entry is half unmapped (where back to the pool,
 * the owner not yet cleared), with the lock held as entry_unmap holds it;
 * then the unmap is undone. The free must go to the large blocks, once
 * the entry is whole, and report nothing. */
TEST(gpa_sub_large_block_beside_the_slack_is_freed_while_the_chunk_changes) {
    enum { K = 64 * 1024 };
    char *region = aligned_alloc(K, 2 * K);
    CHECK(region != NULL);
    /* The segment (the slack alone) across the two chunks, the block in
     * the first chunk's first page, which the slack does not hold. */
    static near_place np;
    static beam_gpa_t g;
    np = (near_place){region + K / 2, region};
    beam_gpa_init(&g, (beam_allocator_t){&np, &near_vtable});
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *p = beam_alloc_bytes(a, 24, 8);
    void *x = beam_alloc_bytes(a, NEAR_LEN, NEAR_ALIGN);
    CHECK(p != NULL && in_sub_slab(p) && x == region);
    gpa_state *st = beam__gpa_state_of(&g);
    gpa_slab *e = beam__gpa_map_slot(x);
    CHECK(beam__gpa_owner(e) == st && gpa_where(e) == WHERE_MIXED &&
          beam__gpa_slab_of(x) == NULL);
    check_capture_reports();
    static near_free_arg f;
    f = (near_free_arg){a, x, false};
    pthread_t t;
    /* The lock itself, not gpa_lock: its debug bookkeeping is the
     * library's, which the plain test build links without. */
    beam__lock_take(&st->lock);
    gpa_set_where(e, WHERE_POOL);
    bool started = pthread_create(&t, NULL, near_free_thread, &f) == 0;
    /* Refused, the free ends at once; waiting for the lock, it does not. */
    for (int i = 0; started && i < 200 && !atomic_load(&f.done); i++)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    gpa_set_where(e, WHERE_MIXED);
    beam__lock_drop(&st->lock);
    if (started)
        pthread_join(t, NULL);
    size_t reports = check_report_count();
    beam_free_bytes(a, p, 24, 8);
    bool leaked = beam_gpa_deinit(&g);
    check_release_reports();
    free(region);
    CHECK(started);
    CHECK(reports == 0);
    CHECK(!leaked);
}

/* Of n + extra blocks of len allocated now, how many are among freed[0..n)
 * (they are freed again before it returns; one not allocated counts as not
 * handed back). */
static size_t handed_back(beam_allocator_t a, size_t len, void **freed,
                          size_t n, size_t extra) {
    void **more = calloc(n + extra, sizeof *more);
    size_t back = 0;
    for (size_t k = 0; more != NULL && k < n + extra; k++) {
        more[k] = beam_alloc_bytes(a, len, 8);
        for (size_t j = 0; more[k] != NULL && j < n; j++)
            back += more[k] == freed[j];
    }
    for (size_t k = 0; more != NULL && k < n + extra; k++)
        if (more[k] != NULL)
            beam_free_bytes(a, more[k], len, 8);
    free(more);
    return back;
}

/* One block freed by this thread into each of the first `want` whole full
 * slabs among blocks[0..n): their addresses in freed. */
static size_t free_one_per_slab(beam_allocator_t a, void **blocks, size_t n,
                                size_t len, size_t want, void **freed) {
    size_t k = 0;
    gpa_slab *last = NULL;
    for (size_t i = 0; i + 1024 < n && k < want; i++) {
        gpa_slab *s = beam__gpa_slab_of(blocks[i]);
        if (s == last || !in_whole_slab(blocks[i]))
            continue;
        last = s;
        if (freed != NULL)
            freed[k] = blocks[i];
        k++;
        beam_free_bytes(a, blocks[i], len, 8);
        blocks[i] = NULL;
    }
    return k;
}

/* A fresh instance (no flags) and its allocator, where the process barrier
 * works: false where it does not (then 32 kept slabs a class at most,
 * GPA_KEPT_CLASS, and no shed takes another thread's heap). */
static bool barrier_fresh(beam_gpa_t *g, beam_allocator_t *a) {
    beam__process_barrier_prepare();
    if (!beam__process_barrier_ready())
        return false;
    *g = fresh(0);
    *a = beam_gpa_allocator(g);
    return true;
}

/* A test's end: every block of g freed, and g deinit with no leak. */
static void all_freed_then_deinit(beam_gpa_t *g) {
    CHECK(beam_gpa_usage_of(g).live_blocks == 0);
    CHECK(!beam_gpa_deinit(g));
}

/* A heap keeps more than 32 full slabs of one class (beyond 32 a class,
 * the cap is on all classes together, where the barrier works): the owner frees
 * one block into each of 40 full whole slabs (sub-slabs, here or in a segment's
 * slack, are not kept), and every one of those blocks is handed out again by
 * the allocations that follow, the current slab's room first. (With 32 per
 * class, the frees beyond went to slabs left FULL, out of reach until an eighth
 * of their blocks were free.) */
#define UNCAPPED_N 20480 /* 256-byte blocks: 80 slabs' worth */
#define UNCAPPED_SLABS 40
TEST(gpa_kept_slabs_of_one_class_are_not_capped_at_32) {
    beam_gpa_t g;
    beam_allocator_t a;
    if (!barrier_fresh(&g, &a))
        return;
    static void *blocks[UNCAPPED_N], *freed[UNCAPPED_SLABS];
    for (size_t i = 0; i < UNCAPPED_N; i++)
        CHECK((blocks[i] = beam_alloc_bytes(a, 256, 8)) != NULL);
    size_t n =
        free_one_per_slab(a, blocks, UNCAPPED_N, 256, UNCAPPED_SLABS, freed);
    CHECK(n == UNCAPPED_SLABS);
    CHECK(handed_back(a, 256, freed, n, 256) == n);
    for (size_t i = 0; i < UNCAPPED_N; i++)
        if (blocks[i] != NULL)
            beam_free_bytes(a, blocks[i], 256, 8);
    all_freed_then_deinit(&g);
}

/* A backing of mappings of its own, whose pages a test may take away
 * (mprotect) and which it unmaps whatever their protection. A block aligned
 * to a page at most starts a page past 64 KiB: a segment's first slab is
 * then not at its start, where the free of the segment writes its record
 * (gpa_defer_free). */
static size_t map_round(size_t len) {
    return (len + GPA_PAGE_SIZE - 1) & ~(GPA_PAGE_SIZE - 1);
}

static void *map_alloc(void *ctx, size_t len, size_t alignment, uintptr_t ret) {
    (void)ctx, (void)ret;
    size_t al = alignment > GPA_SLAB_SIZE ? alignment : GPA_SLAB_SIZE;
    size_t want = map_round(len), all = want + 2 * al;
    char *raw = mmap(NULL, all, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return NULL;
    char *p = (char *)(((uintptr_t)raw + al - 1) & ~(uintptr_t)(al - 1));
    if (alignment <= GPA_PAGE_SIZE)
        p += GPA_PAGE_SIZE;
    if (p > raw)
        munmap(raw, (size_t)(p - raw));
    if (raw + all > p + want)
        munmap(p + want, (size_t)(raw + all - (p + want)));
    return p;
}

static void map_free(void *ctx, void *mem, size_t len, size_t alignment,
                     uintptr_t ret) {
    (void)ctx, (void)alignment, (void)ret;
    munmap(mem, map_round(len));
}

static const beam_allocator_vtable map_vtable = {map_alloc, check_no_resize,
                                                 check_no_remap, map_free};

#define UNREAD_N 20480 /* 256-byte blocks: 80 slabs' worth */
#define UNREAD_SLABS 40
static void *unread_blocks[UNREAD_N];

static void *unread_free_rest(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    for (size_t i = 0; i < UNREAD_N; i++)
        if (unread_blocks[i] != NULL)
            beam_free_bytes(a, unread_blocks[i], 256, 8);
    return NULL;
}

static sigjmp_buf unread_jump;
static void unread_fault(int sig) {
    (void)sig;
    siglongjmp(unread_jump, 1);
}

/* Kept slabs whose blocks other threads freed go back when their heap is
 * stripped without those blocks being read: every one waits in
 * thread_free, so the slab is empty. (The walk read each block, a likely
 * miss: with the kept cap per heap one class may have 1,024 such slabs,
 * 64 MiB, and stripping them held the instance lock ~10 ms, in the call
 * that evicted the heap or in a collect.) The kept slabs' pages are taken
 * away before the collect: reading them faults. */
TEST(gpa_kept_slabs_freed_elsewhere_go_back_unread) {
    beam_gpa_t g;
    beam_gpa_init(&g, (beam_allocator_t){NULL, &map_vtable});
    beam_allocator_t a = beam_gpa_allocator(&g);
    for (size_t i = 0; i < UNREAD_N; i++)
        CHECK((unread_blocks[i] = beam_alloc_bytes(a, 256, 8)) != NULL);
    char *kept[UNREAD_SLABS];
    size_t n = 0;
    gpa_slab *last = NULL;
    for (size_t i = 0; i < UNREAD_N && n < UNREAD_SLABS; i++) {
        gpa_slab *s = beam__gpa_slab_of(unread_blocks[i]);
        if (s == last || !in_whole_slab(unread_blocks[i]))
            continue;
        last = s;
        kept[n++] = s->base;
        beam_free_bytes(a, unread_blocks[i], 256, 8); /* kept: its own */
        unread_blocks[i] = NULL;
    }
    CHECK(n == UNREAD_SLABS);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, unread_free_rest, &a) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(beam_gpa_usage_of(&g).live_blocks == 0);
    for (size_t k = 0; k < n; k++)
        CHECK(mprotect(kept[k], GPA_SLAB_SIZE, PROT_NONE) == 0);
    struct sigaction on = {0}, old_segv, old_bus;
    on.sa_handler = unread_fault;
    sigaction(SIGSEGV, &on, &old_segv);
    sigaction(SIGBUS, &on, &old_bus);
    volatile bool faulted = true;
    if (sigsetjmp(unread_jump, 1) == 0) {
        beam_gpa_collect(&g);
        faulted = false;
    }
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    CHECK(!faulted);
    /* Pages still mapped (a segment still held) are given back their
     * protection; a faulted collect left the lock held: no deinit then. */
    for (size_t k = 0; k < n; k++)
        mprotect(kept[k], GPA_SLAB_SIZE, PROT_READ | PROT_WRITE);
    if (!faulted) {
        CHECK(beam_gpa_usage_of(&g).backing_bytes <= 64 * 1024);
        CHECK(!beam_gpa_deinit(&g));
    }
}

/* The kept cap is per heap: kept slabs of one class whose blocks other
 * threads freed, wholly free, must not take it all from the classes the
 * thread goes on using. A heap fills the cap with 256-byte slabs, another
 * thread frees their blocks, then the owner frees one block into each of 8
 * full 128-byte slabs: every one is handed out again by the allocations
 * that follow, the current slab's room first. (Before, the cap stayed full for
 * good, until a collect: the frees of every other class took the stash, 1.4x
 * slower churn with 100,000 blocks live, and the 64 MiB stayed with the idle
 * class.) */
#define CROWD_BIG 16384 /* 128-byte blocks: 32 slabs' worth */
#define CROWD_SLABS 8
static void *crowd_blocks[(GPA_KEPT_MAX + 40) * 256];

static void *crowd_free_rest(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    for (size_t i = 0; i < sizeof crowd_blocks / sizeof *crowd_blocks; i++)
        if (crowd_blocks[i] != NULL)
            beam_free_bytes(a, crowd_blocks[i], 256, 8);
    return NULL;
}

TEST(gpa_kept_slabs_emptied_elsewhere_leave_room_for_other_classes) {
    beam_gpa_t g;
    beam_allocator_t a;
    if (!barrier_fresh(&g, &a))
        return;
    size_t nbig = sizeof crowd_blocks / sizeof *crowd_blocks;
    for (size_t i = 0; i < nbig; i++)
        CHECK((crowd_blocks[i] = beam_alloc_bytes(a, 256, 8)) != NULL);
    CHECK(free_one_per_slab(a, crowd_blocks, nbig, 256, GPA_KEPT_MAX, NULL) ==
          GPA_KEPT_MAX);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, crowd_free_rest, &a) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    static void *blocks[CROWD_BIG];
    void *freed[CROWD_SLABS];
    for (size_t i = 0; i < CROWD_BIG; i++)
        CHECK((blocks[i] = beam_alloc_bytes(a, 128, 8)) != NULL);
    CHECK(free_one_per_slab(a, blocks, CROWD_BIG, 128, CROWD_SLABS, freed) ==
          CROWD_SLABS);
    CHECK(handed_back(a, 128, freed, CROWD_SLABS, 512) == CROWD_SLABS);
    for (size_t i = 0; i < CROWD_BIG; i++)
        if (blocks[i] != NULL)
            beam_free_bytes(a, blocks[i], 128, 8);
    all_freed_then_deinit(&g);
}

/* Kept slabs that other threads emptied while their heap is idle go back
 * before the instance asks its backing for more (beam__gpa_shed_kept): this
 * thread keeps 48 full 256-byte slabs (one block freed into each), another
 * frees the rest of their blocks, and while this thread idles a third
 * allocates as many blocks again: this thread's heap keeps none of them
 * after, and the backing grows by less than 32 slabs, what 32 kept slabs
 * per class held (0.9 MiB: segments given back and taken again, 0.2 with
 * one kept slab). Kept until a collect, they made it grow by 5.7 MiB;
 * 1,024 slabs of one class came to 64 MiB. */
#define SHED_SLABS 48

static void *shed_burst_again(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    for (size_t i = 0; i < UNREAD_N; i++)
        unread_blocks[i] = beam_alloc_bytes(a, 256, 8);
    return NULL;
}

static void shed_run(void *(*fn)(void *), beam_allocator_t *a) {
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fn, a) == 0);
    CHECK(pthread_join(th, NULL) == 0);
}

/* This thread keeps SHED_SLABS full 256-byte slabs of g (one block
 * freed into each), another thread frees the rest of their blocks; *done
 * stays false where there is no barrier (then 32 a class at most,
 * GPA_KEPT_CLASS), or when a check failed. */
static void shed_setup(beam_gpa_t *g, beam_allocator_t *a, bool *done) {
    *done = false;
    if (!barrier_fresh(g, a))
        return;
    for (size_t i = 0; i < UNREAD_N; i++)
        CHECK((unread_blocks[i] = beam_alloc_bytes(*a, 256, 8)) != NULL);
    CHECK(free_one_per_slab(*a, unread_blocks, UNREAD_N, 256, SHED_SLABS,
                            NULL) == SHED_SLABS);
    gpa_heap *h = beam__gpa_heap_if_any(beam__gpa_state_of(g));
    CHECK(h != NULL && h->kept_n == SHED_SLABS);
    shed_run(unread_free_rest, a);
    *done = true;
}

TEST(gpa_kept_slabs_emptied_elsewhere_go_back_before_the_backing_grows) {
    beam_gpa_t g;
    beam_allocator_t a;
    bool done;
    shed_setup(&g, &a, &done);
    if (!done)
        return;
    size_t held = beam_gpa_usage_of(&g).backing_bytes;
    shed_run(shed_burst_again, &a);
    for (size_t i = 0; i < UNREAD_N; i++)
        CHECK(unread_blocks[i] != NULL);
    gpa_heap *h = beam__gpa_heap_if_any(beam__gpa_state_of(&g));
    CHECK(h != NULL && h->kept_n == 0);
    CHECK(beam_gpa_usage_of(&g).backing_bytes <
          held + GPA_KEPT_CLASS * GPA_SLAB_SIZE);
    shed_run(unread_free_rest, &a);
    all_freed_then_deinit(&g);
}

/* The same, but the third thread never makes the instance grow: it churns
 * 64-byte blocks, and one of its refills that looks (every
 * GPA_SHED_REFILLS) finds the pushes noted (slab_push) and takes this idle
 * thread's emptied kept slabs back. (Before, they stayed until a collect.) */
#define SHED_CHURN 2048
static void *shed_churn(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    static void *blocks[SHED_CHURN];
    for (int round = 0; round < GPA_SHED_REFILLS; round++) {
        for (size_t i = 0; i < SHED_CHURN; i++)
            blocks[i] = beam_alloc_bytes(a, 64, 8);
        for (size_t i = 0; i < SHED_CHURN; i++)
            beam_free_bytes(a, blocks[i], 64, 8);
    }
    return NULL;
}

TEST(gpa_kept_slabs_emptied_elsewhere_go_back_at_another_threads_refill) {
    beam_gpa_t g;
    beam_allocator_t a;
    bool done;
    shed_setup(&g, &a, &done);
    if (!done)
        return;
    gpa_heap *h = beam__gpa_heap_if_any(beam__gpa_state_of(&g));
    shed_run(shed_churn, &a);
    CHECK(h->kept_n == 0);
    all_freed_then_deinit(&g);
}

/* Threads of g with a heap each that idles until idle_go is set: heaps a
 * shed may take. */
static atomic_int idle_go, idle_ready;

static void *idle_heap_thread(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    void *p = beam_alloc_bytes(a, 64, 8);
    atomic_store(&idle_ready, 1);
    while (!atomic_load(&idle_go))
        usleep(1000);
    beam_free_bytes(a, p, 64, 8);
    return NULL;
}

static void idle_heaps_start(pthread_t *th, int n, beam_allocator_t *a) {
    atomic_store(&idle_go, 0);
    for (int i = 0; i < n; i++) {
        atomic_store(&idle_ready, 0);
        CHECK(pthread_create(&th[i], NULL, idle_heap_thread, a) == 0);
        while (!atomic_load(&idle_ready))
            usleep(1000);
    }
}

static void idle_heaps_stop(pthread_t *th, int n) {
    atomic_store(&idle_go, 1);
    for (int i = 0; i < n; i++)
        CHECK(pthread_join(th[i], NULL) == 0);
}

/* A tracked instance keeps no slab, so it sheds nothing: each of its
 * growths revoked every idle heap and issued a process barrier (which
 * interrupts every processor) for nothing. Here 4 MiB of 1 KiB blocks
 * grow one while another thread's heap idles: no barrier. */
#define TRACKED_GROWTH 4096
TEST(gpa_tracked_instances_grow_without_a_shed) {
    beam__process_barrier_prepare();
    beam_gpa_t g = fresh(BEAM_GPA_TRACK_SITES);
    beam_allocator_t a = beam_gpa_allocator(&g);
    pthread_t th;
    idle_heaps_start(&th, 1, &a);
    static void *blocks[TRACKED_GROWTH];
    size_t held = beam_gpa_usage_of(&g).backing_bytes;
    uint64_t barriers = beam__gpa_heap_barriers;
    for (size_t i = 0; i < TRACKED_GROWTH; i++)
        CHECK((blocks[i] = beam_alloc_bytes(a, 1024, 8)) != NULL);
    CHECK(beam_gpa_usage_of(&g).backing_bytes > held + 2 * GPA_SLAB_SIZE);
    CHECK(beam__gpa_heap_barriers == barriers);
    for (size_t i = 0; i < TRACKED_GROWTH; i++)
        beam_free_bytes(a, blocks[i], 1024, 8);
    idle_heaps_stop(&th, 1);
    all_freed_then_deinit(&g);
}

/* Refills' sheds of other heaps come at most every GPA_SHED_GAP_NS an
 * instance: with other threads' frees into kept slabs all the time (the
 * flag, st->shed_wanted, nearly always up), one came every 256 refills of
 * every thread (39 a second with 8 threads), each a process barrier that
 * interrupts every processor. Here the flag is raised before every
 * refill of this thread (of 8 KiB blocks, 8 a slab) while another
 * thread's heap idles (LOOKS looks at least: a refill an iteration). */
#define LOOKS 64
static void refill_looks(beam_gpa_t *g, beam_allocator_t a, size_t *looks) {
    gpa_state *st = beam__gpa_state_of(g);
    void *b[9];
    unsigned refills = 0;
    for (size_t i = 0; i < LOOKS * GPA_SHED_REFILLS; i++) {
        if (looks != NULL)
            atomic_store(&st->shed_wanted, 1);
        for (int k = 0; k < 9; k++) /* one slab's worth and one more */
            CHECK((b[k] = beam_alloc_bytes(a, 8192, 8)) != NULL);
        for (int k = 0; k < 9; k++)
            beam_free_bytes(a, b[k], 8192, 8);
        if (i == 0)
            refills = beam__gpa_heap_if_any(st)->refills;
    }
    if (looks != NULL)
        *looks =
            (beam__gpa_heap_if_any(st)->refills - refills) / GPA_SHED_REFILLS;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

TEST(gpa_refills_shed_other_heaps_at_most_every_gap) {
    beam_gpa_t g;
    beam_allocator_t a;
    if (!barrier_fresh(&g, &a))
        return;
    pthread_t th;
    idle_heaps_start(&th, 1, &a);
    refill_looks(&g, a, NULL); /* its slabs: no growth below */
    size_t held = beam_gpa_usage_of(&g).backing_bytes;
    uint64_t barriers = beam__gpa_heap_barriers, t0 = now_ns();
    size_t looks = 0;
    refill_looks(&g, a, &looks);
    uint64_t took = now_ns() - t0;
    barriers = beam__gpa_heap_barriers - barriers;
    CHECK(beam_gpa_usage_of(&g).backing_bytes == held);
    CHECK(looks >= LOOKS - 1);
    CHECK(barriers >= 1 && barriers <= 1 + took / GPA_SHED_GAP_NS);
    idle_heaps_stop(&th, 1);
    all_freed_then_deinit(&g);
}

/* A shed takes at most GPA_SHED_HEAPS idle heaps under one hold of the
 * lock (a read of up to GPA_KEPT_MAX kept slabs each): one over 32 idle
 * heaps of 1,024 kept slabs held it 0.8 ms, up to 43 ms. The next shed
 * takes the next ones. Here 6 threads' heaps idle while this thread grows
 * the instance. */
#define IDLE_HEAPS 6
TEST(gpa_sheds_take_a_few_idle_heaps_a_time) {
    beam_gpa_t g;
    beam_allocator_t a;
    if (!barrier_fresh(&g, &a))
        return;
    pthread_t th[IDLE_HEAPS];
    idle_heaps_start(th, IDLE_HEAPS, &a);
    uint64_t barriers = beam__gpa_heap_barriers;
    uint64_t taken = beam__gpa_heaps_taken;
    size_t held = beam_gpa_usage_of(&g).backing_bytes;
    static void *blocks[TRACKED_GROWTH];
    for (size_t i = 0; i < TRACKED_GROWTH; i++)
        CHECK((blocks[i] = beam_alloc_bytes(a, 1024, 8)) != NULL);
    CHECK(beam_gpa_usage_of(&g).backing_bytes > held);
    barriers = beam__gpa_heap_barriers - barriers;
    taken = beam__gpa_heaps_taken - taken;
    CHECK(barriers >= 1 && taken >= 1);
    CHECK(taken <= barriers * GPA_SHED_HEAPS);
    for (size_t i = 0; i < TRACKED_GROWTH; i++)
        beam_free_bytes(a, blocks[i], 1024, 8);
    idle_heaps_stop(th, IDLE_HEAPS);
    all_freed_then_deinit(&g);
}

/* Idle heaps past the first GPA_SHED_HEAPS go back too: a refill's look
 * that took GPA_SHED_HEAPS quiet heaps, none passed over as busy, cleared
 * the flag, and no push raised it again (their slabs were wholly free
 * already): the others kept their emptied slabs until a growth or a
 * collect. Here 6 threads each keep 4 full 256-byte slabs (one block
 * freed into each), another thread frees the rest, and a third churns
 * 8 KiB blocks (a refill an iteration, no growth) for up to a second, ten
 * gaps: every idle heap's kept slabs go back. */
#define SPREAD_HEAPS 6
#define SPREAD_N 8192 /* 256-byte blocks: 32 slabs' worth */
#define SPREAD_KEPT 4
static struct spread_heap {
    beam_allocator_t a;
    void *blocks[SPREAD_N];
    gpa_heap *h;
    uint32_t kept;
} spread[SPREAD_HEAPS];

static void *spread_idle(void *arg) {
    struct spread_heap *sp = arg;
    for (size_t i = 0; i < SPREAD_N; i++)
        sp->blocks[i] = beam_alloc_bytes(sp->a, 256, 8);
    free_one_per_slab(sp->a, sp->blocks, SPREAD_N, 256, SPREAD_KEPT, NULL);
    sp->h = beam__gpa_heap_if_any(beam__gpa_state_of(sp->a.ctx));
    sp->kept = sp->h != NULL ? sp->h->kept_n : 0; /* checked: SPREAD_KEPT */
    atomic_fetch_add(&idle_ready, 1);
    while (!atomic_load(&idle_go))
        usleep(1000);
    return NULL;
}

static void *spread_free_rest(void *arg) {
    (void)arg;
    for (int t = 0; t < SPREAD_HEAPS; t++)
        for (size_t i = 0; i < SPREAD_N; i++)
            if (spread[t].blocks[i] != NULL)
                beam_free_bytes(spread[t].a, spread[t].blocks[i], 256, 8);
    return NULL;
}

static void *spread_churn(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    uint64_t taken = beam__gpa_heaps_taken, t0 = now_ns();
    void *b[9];
    while (beam__gpa_heaps_taken - taken < SPREAD_HEAPS &&
           now_ns() - t0 < 10 * (uint64_t)GPA_SHED_GAP_NS) {
        for (int k = 0; k < 9; k++) /* one slab's worth and one more */
            b[k] = beam_alloc_bytes(a, 8192, 8);
        for (int k = 0; k < 9; k++)
            if (b[k] != NULL) /* (a failure shows as a kept slab left) */
                beam_free_bytes(a, b[k], 8192, 8);
    }
    return NULL;
}

TEST(gpa_refills_shed_every_idle_heap_a_few_at_a_time) {
    beam_gpa_t g;
    beam_allocator_t a;
    if (!barrier_fresh(&g, &a))
        return;
    pthread_t th[SPREAD_HEAPS];
    atomic_store(&idle_go, 0);
    atomic_store(&idle_ready, 0);
    /* One after the other: a free while another thread's growth sheds
     * (revokes) the heap is pushed, and its slab not kept. */
    for (int t = 0; t < SPREAD_HEAPS; t++) {
        spread[t].a = a;
        CHECK(pthread_create(&th[t], NULL, spread_idle, &spread[t]) == 0);
        while (atomic_load(&idle_ready) < t + 1)
            usleep(1000);
    }
    for (int t = 0; t < SPREAD_HEAPS; t++)
        CHECK(spread[t].kept == SPREAD_KEPT);
    shed_run(spread_free_rest, &a);
    size_t held = beam_gpa_usage_of(&g).backing_bytes;
    shed_run(spread_churn, &a);
    CHECK(beam_gpa_usage_of(&g).backing_bytes <= held); /* no growth shed */
    for (int t = 0; t < SPREAD_HEAPS; t++)
        CHECK(spread[t].h->kept_n == 0);
    idle_heaps_stop(th, SPREAD_HEAPS);
    all_freed_then_deinit(&g);
}

/* A collect moves the idle heaps it took to the end of the list (so that
 * a shed, which takes a few, takes the next ones) in one walk: each move
 * walked to the end again, a collect of n idle heaps n * n / 2 steps under
 * the lock (2,000 idle threads: 1 to 1.8 s instead of 30 ms). Here 64. */
#define MOVED_HEAPS 64
TEST(gpa_collect_moves_idle_heaps_in_one_walk) {
    beam_gpa_t g;
    beam_allocator_t a;
    if (!barrier_fresh(&g, &a))
        return;
    pthread_t th[MOVED_HEAPS];
    idle_heaps_start(th, MOVED_HEAPS, &a);
    uint64_t taken = beam__gpa_heaps_taken;
    uint64_t steps = beam__gpa_heap_tail_steps;
    beam_gpa_collect(&g);
    taken = beam__gpa_heaps_taken - taken;
    steps = beam__gpa_heap_tail_steps - steps;
    CHECK(taken == MOVED_HEAPS);
    CHECK(steps <= MOVED_HEAPS);
    idle_heaps_stop(th, MOVED_HEAPS);
    all_freed_then_deinit(&g);
}

/* ---- a heap's layout ----------------------------------------------------- */

/* A backing that puts every block at a pointer's or 16 bytes' alignment 16
 * bytes past a cache line (as malloc placed a worker thread's heap at 32
 * mod 64 often), and larger alignments exactly. */
static atomic_long skew_live;

static void *skew_alloc(void *ctx, size_t len, size_t alignment,
                        uintptr_t ret) {
    (void)ctx, (void)ret;
    size_t al = alignment > 64 ? alignment : 64;
    void *raw = NULL;
    if (posix_memalign(&raw, al, len + (alignment <= 16 ? 64 : 0)) != 0)
        return NULL;
    atomic_fetch_add(&skew_live, 1);
    return alignment <= 16 ? (char *)raw + 16 : raw;
}

static void skew_free(void *ctx, void *mem, size_t len, size_t alignment,
                      uintptr_t ret) {
    (void)ctx, (void)len, (void)ret;
    atomic_fetch_sub(&skew_live, 1);
    free(alignment <= 16 ? (char *)mem - 16 : mem);
}

static const beam_allocator_vtable skew_vtable = {skew_alloc, check_no_resize,
                                                  check_no_remap, skew_free};

static bool heap_on_a_line(beam_gpa_t *g) {
    beam_allocator_t a = beam_gpa_allocator(g);
    void *p = beam_alloc_bytes(a, 100, 8);
    gpa_heap *h = beam__gpa_heap_if_any(beam__gpa_state_of(g));
    beam_free_bytes(a, p, 100, 8);
    return p != NULL && h != NULL && ((uintptr_t)h & 63) == 0;
}

static void *heap_on_a_line_thread(void *g) {
    return heap_on_a_line((beam_gpa_t *)g) ? g : NULL;
}

/* Every heap starts on a cache line, whatever its backing's alignment: the
 * counters and the bracket every inline call writes share its first line
 * (a heap 16 or 32 bytes past one had them across two), on any thread;
 * the backing gets back each block it gave. */
TEST(gpa_heaps_are_on_a_cache_line_whatever_the_backing) {
    beam_gpa_t g;
    beam_gpa_init(&g, (beam_allocator_t){NULL, &skew_vtable});
    CHECK(heap_on_a_line(&g));
    pthread_t t[3];
    void *ok[3];
    for (int i = 0; i < 3; i++)
        CHECK(pthread_create(&t[i], NULL, heap_on_a_line_thread, &g) == 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], &ok[i]);
        CHECK(ok[i] == &g);
    }
    all_freed_then_deinit(&g);
    CHECK(atomic_load(&skew_live) == 0);
}

/* Kept slabs that other threads nearly emptied while their heap idles: one
 * block of each still live. Beyond GPA_KEPT_CLASS of a class, such a slab
 * was left FULL (32 a class), and went back to the instance once an eighth
 * of its blocks were free (its requeue mark): a burst handed to other
 * threads held 32 slabs of its class in an idle heap. Kept beyond, nothing
 * but the heap's own refill of that class took them back (the shed takes
 * wholly free ones only): an idle heap held up to 1,024 slabs, 64 MiB, for
 * 1,024 live blocks. So the shed gives back those beyond GPA_KEPT_CLASS of
 * a class that are as free as that mark: this thread keeps 72 full 256-byte
 * slabs (one block freed into each, one more kept live), another frees the
 * rest of their blocks, and while this thread idles a third allocates as
 * many blocks again: this heap keeps 32 of that class at most after, and
 * the backing grows by less than 40 slabs (it grew by 72). */
#define FRAG_SLABS 72
#define FRAG_N 32768 /* 256-byte blocks: 128 slabs' worth */
static void *frag_live[FRAG_SLABS], *frag_blocks[FRAG_N];

static void *frag_free_rest(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    for (size_t i = 0; i < FRAG_N; i++)
        if (frag_blocks[i] != NULL)
            beam_free_bytes(a, frag_blocks[i], 256, 8);
    return NULL;
}

static void *frag_burst_again(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    for (size_t i = 0; i < FRAG_N; i++)
        frag_blocks[i] = beam_alloc_bytes(a, 256, 8);
    return NULL;
}

TEST(gpa_kept_slabs_nearly_emptied_elsewhere_go_back_before_the_backing_grows) {
    beam_gpa_t g;
    beam_allocator_t a;
    if (!barrier_fresh(&g, &a))
        return;
    for (size_t i = 0; i < FRAG_N; i++)
        CHECK((frag_blocks[i] = beam_alloc_bytes(a, 256, 8)) != NULL);
    size_t k = 0;
    gpa_slab *last = NULL;
    for (size_t i = 0; i + 1 < FRAG_N && k < FRAG_SLABS; i++) {
        gpa_slab *s = beam__gpa_slab_of(frag_blocks[i]);
        if (s == last || !in_whole_slab(frag_blocks[i]) ||
            beam__gpa_slab_of(frag_blocks[i + 1]) != s)
            continue;
        last = s;
        beam_free_bytes(a, frag_blocks[i], 256, 8); /* kept: its own */
        frag_blocks[i] = NULL;
        frag_live[k++] = frag_blocks[i + 1];
        frag_blocks[i + 1] = NULL;
    }
    CHECK(k == FRAG_SLABS);
    gpa_heap *h = beam__gpa_heap_if_any(beam__gpa_state_of(&g));
    CHECK(h != NULL && h->kept_n == FRAG_SLABS);
    shed_run(frag_free_rest, &a);
    size_t held = beam_gpa_usage_of(&g).backing_bytes;
    shed_run(frag_burst_again, &a);
    for (size_t i = 0; i < FRAG_N; i++)
        CHECK(frag_blocks[i] != NULL);
    CHECK(h->kept[beam__gpa_slab_of(frag_live[0])->cls].n <= GPA_KEPT_CLASS);
    CHECK(beam_gpa_usage_of(&g).backing_bytes <
          held + (FRAG_N / 256 - (FRAG_SLABS - GPA_KEPT_CLASS) + 8) *
                     GPA_SLAB_SIZE);
    shed_run(frag_free_rest, &a);
    for (size_t i = 0; i < FRAG_SLABS; i++)
        beam_free_bytes(a, frag_live[i], 256, 8);
    all_freed_then_deinit(&g);
}

/* A free by another thread into a kept slab reads nothing of the slab once
 * its block is pushed (slab_push): that push may be the slab's last, and
 * the slab then goes (a sub-slab's record with its chunk) and is formatted
 * again by whoever takes it. Here another thread frees the rest of a kept
 * slab's blocks and, without ending (its heap's retirement would take the
 * lock after it, and so order its reads before the collect), waits while
 * this thread collects, which gives the slab back: under ThreadSanitizer a
 * read after the push (its length, to note a kept slab half free) races
 * the slab's release. */
#define AFTER_N 4096 /* 256-byte blocks: 16 slabs' worth */
static void *after_blocks[AFTER_N];
static atomic_int after_pushed, after_go;

static void *after_free_rest(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    for (size_t i = 0; i < AFTER_N; i++)
        if (after_blocks[i] != NULL)
            beam_free_bytes(a, after_blocks[i], 256, 8);
    /* Relaxed: no order between this thread's reads and the collect. */
    atomic_store_explicit(&after_pushed, 1, memory_order_relaxed);
    while (atomic_load_explicit(&after_go, memory_order_relaxed) == 0)
        sched_yield();
    return NULL;
}

TEST(gpa_free_into_a_kept_slab_reads_nothing_after_its_push) {
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    for (size_t i = 0; i < AFTER_N; i++)
        CHECK((after_blocks[i] = beam_alloc_bytes(a, 256, 8)) != NULL);
    static void *mine[AFTER_N];
    size_t kept = AFTER_N;
    for (size_t i = AFTER_N / 2; i < AFTER_N && kept == AFTER_N; i++)
        if (in_whole_slab(after_blocks[i]) &&
            beam__gpa_slab_of(after_blocks[i - 1]) !=
                beam__gpa_slab_of(after_blocks[i]))
            kept = i;
    CHECK(kept < AFTER_N);
    gpa_slab *s = beam__gpa_slab_of(after_blocks[kept]);
    for (size_t i = 0; i < AFTER_N; i++)
        if (beam__gpa_slab_of(after_blocks[i]) != s) {
            mine[i] = after_blocks[i];
            after_blocks[i] = NULL;
        }
    beam_free_bytes(a, after_blocks[kept], 256, 8); /* kept: its own */
    after_blocks[kept] = NULL;
    CHECK(gpa_where(s) == WHERE_KEPT);
    atomic_store(&after_pushed, 0);
    atomic_store(&after_go, 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, after_free_rest, &a) == 0);
    while (atomic_load_explicit(&after_pushed, memory_order_relaxed) == 0)
        sched_yield();
    beam_gpa_collect(&g);
    atomic_store(&after_go, 1);
    CHECK(pthread_join(th, NULL) == 0);
    for (size_t i = 0; i < AFTER_N; i++)
        if (mine[i] != NULL)
            beam_free_bytes(a, mine[i], 256, 8);
    all_freed_then_deinit(&g);
}

/* Sheds against owners coming back: threads each allocate bursts of
 * 256-byte blocks, keep their slabs (one block freed into each), hand the
 * rest to the next thread to free, free some of their own blocks again
 * (plain pushes into kept slabs while another thread's shed may take
 * them), take medium blocks (a shed before the pool grows) and idle now
 * and then (their heaps taken by the sheds of the others). Every block is
 * freed once and the instance ends with nothing live; the sanitizers
 * watch the rest. */
#define CHURN_THREADS 6
#define CHURN_ROUNDS 40
#define CHURN_BURST 2048 /* 8 slabs' worth */
#define CHURN_KEEP 8
#define CHURN_LAST (CHURN_KEEP * CHURN_BURST)
typedef struct churn_box {
    pthread_mutex_t lock;
    void *blocks[CHURN_BURST];
    void *last[CHURN_LAST];
    size_t n, n_last;
} churn_box;
static churn_box churn_boxes[CHURN_THREADS];
static beam_allocator_t churn_a;
static pthread_barrier_t churn_all;

/* The blocks another thread handed over through box, freed here. */
static void churn_drain(churn_box *box) {
    pthread_mutex_lock(&box->lock);
    for (size_t i = 0; i < box->n; i++)
        beam_free_bytes(churn_a, box->blocks[i], 256, 8);
    box->n = 0;
    pthread_mutex_unlock(&box->lock);
}

/* One round of thread t: its blocks of CHURN_KEEP rounds ago go first;
 * of this round's, one per 256 stays live for CHURN_KEEP rounds (so its
 * heap keeps some 64 slabs, beyond 32 a class where the barrier works). */
static void churn_round(unsigned t, void **all, unsigned round) {
    void **mine = all + (round % CHURN_KEEP) * CHURN_BURST;
    for (size_t i = 0; i < CHURN_BURST; i++)
        if (mine[i] != NULL)
            beam_free_bytes(churn_a, mine[i], 256, 8);
    for (size_t i = 0; i < CHURN_BURST; i++)
        CHECK((mine[i] = beam_alloc_bytes(churn_a, 256, 8)) != NULL);
    churn_box *next = &churn_boxes[(t + 1) % CHURN_THREADS];
    pthread_mutex_lock(&next->lock);
    for (size_t i = 0; i < CHURN_BURST; i++)
        if (i % 256 != 0 && i % 256 != 255 && next->n < CHURN_BURST) {
            next->blocks[next->n++] = mine[i];
            mine[i] = NULL;
        }
    pthread_mutex_unlock(&next->lock);
    for (size_t i = 0; i < CHURN_BURST; i += 256) { /* kept slabs */
        beam_free_bytes(churn_a, mine[i], 256, 8);
        mine[i] = NULL;
    }
    void *medium = beam_alloc_bytes(churn_a, 32 * 1024, 8);
    CHECK(medium != NULL);
    churn_drain(&churn_boxes[t]);
    if (round % 4 == t % 4)
        usleep(200); /* idle: a shed may take this heap */
    beam_free_bytes(churn_a, medium, 32 * 1024, 8);
}

/* Last, every thread keeps CHURN_KEEP bursts' slabs, one block of each
 * live, and hands the rest to the next thread; once all have, each frees
 * what it was handed (into the kept slabs of a thread that may be idle,
 * or coming back) while it churns 64-byte and medium blocks (sheds). */
static void churn_last(unsigned t, void **all) {
    for (unsigned round = 0; round < CHURN_KEEP; round++) {
        void **mine = all + round * CHURN_BURST;
        for (size_t i = 0; i < CHURN_BURST; i++)
            if (mine[i] != NULL)
                beam_free_bytes(churn_a, mine[i], 256, 8);
        for (size_t i = 0; i < CHURN_BURST; i++)
            CHECK((mine[i] = beam_alloc_bytes(churn_a, 256, 8)) != NULL);
    }
    for (size_t i = 0; i < CHURN_KEEP * CHURN_BURST; i += 256) {
        beam_free_bytes(churn_a, all[i], 256, 8);
        all[i] = NULL;
    }
    churn_box *next = &churn_boxes[(t + 1) % CHURN_THREADS];
    pthread_mutex_lock(&next->lock);
    for (size_t i = 0; i < CHURN_KEEP * CHURN_BURST; i++)
        if (all[i] != NULL && i % 256 != 255) {
            next->last[next->n_last++] = all[i];
            all[i] = NULL;
        }
    pthread_mutex_unlock(&next->lock);
    pthread_barrier_wait(&churn_all);
    churn_box *box = &churn_boxes[t];
    pthread_mutex_lock(&box->lock);
    for (size_t i = 0; i < box->n_last; i++) {
        beam_free_bytes(churn_a, box->last[i], 256, 8);
        if (i % 512 == 0)
            beam_free_bytes(churn_a, beam_alloc_bytes(churn_a, 32 * 1024, 8),
                            32 * 1024, 8);
        if (i % 64 == 0)
            beam_free_bytes(churn_a, beam_alloc_bytes(churn_a, 64, 8), 64, 8);
    }
    box->n_last = 0;
    pthread_mutex_unlock(&box->lock);
}

static void churn_run(unsigned t) {
    void **all = calloc(CHURN_KEEP * CHURN_BURST, sizeof *all);
    CHECK(all != NULL);
    for (unsigned round = 0; round < CHURN_ROUNDS; round++)
        churn_round(t, all, round);
    churn_last(t, all);
    for (size_t i = 0; i < CHURN_KEEP * CHURN_BURST; i++)
        if (all[i] != NULL)
            beam_free_bytes(churn_a, all[i], 256, 8);
    free(all);
}

static void *churn_thread(void *arg) {
    churn_run((unsigned)(uintptr_t)arg);
    return NULL;
}

TEST(gpa_sheds_race_owners_and_remote_frees) {
    beam__process_barrier_prepare();
    beam_gpa_t g = fresh(0);
    churn_a = beam_gpa_allocator(&g);
    pthread_t th[CHURN_THREADS];
    for (unsigned t = 0; t < CHURN_THREADS; t++) {
        pthread_mutex_init(&churn_boxes[t].lock, NULL);
        churn_boxes[t].n = churn_boxes[t].n_last = 0;
    }
    pthread_barrier_init(&churn_all, NULL, CHURN_THREADS);
    for (unsigned t = 0; t < CHURN_THREADS; t++)
        CHECK(pthread_create(&th[t], NULL, churn_thread,
                             (void *)(uintptr_t)t) == 0);
    for (unsigned t = 0; t < CHURN_THREADS; t++)
        CHECK(pthread_join(th[t], NULL) == 0);
    for (unsigned t = 0; t < CHURN_THREADS; t++) {
        churn_drain(&churn_boxes[t]);
        pthread_mutex_destroy(&churn_boxes[t].lock);
    }
    pthread_barrier_destroy(&churn_all);
    all_freed_then_deinit(&g);
}

/* A free by another thread reads nothing of a sub-slab after its push:
 * once pushed, the block may be the sub-slab's last, collected by another
 * thread, whose chunk's metadata then goes back to the backing with its
 * segment. A medium block takes a segment of whole slabs; a thread
 * allocates a few blocks of PUSH_LAST_CLASSES classes, which fill the
 * slack and then a pool slab lent as a chunk, and leaves; the medium block
 * is freed; a second thread frees every small block and then waits, with
 * nothing ordering what it did before the collect this thread makes
 * meanwhile (a relaxed flag), which gives the segment and the chunks'
 * metadata back. slab_push read the slab's owner and size after the push
 * (kept_emptied): ThreadSanitizer sees that read race the metadata's free
 * (found in review with a stress of remote frees, medium bursts and a
 * collector; over a backing that unmapped the metadata, a crash). Only
 * TSan sees it (make c-test-tsan), only in the first KiB of a freed
 * block (a lent chunk's first sub-slabs), and in some 60% of the rounds
 * (its history of an address is a few accesses): eight rounds. */
#define PUSH_LAST_CLASSES 24
#define PUSH_LAST_EACH 4
/* Fewer than GPA_FREE_STREAK: the other thread makes no heap, whose
 * bracket would order its reads before the collect. */
#define PUSH_LAST_OTHER 8
static void *push_last_blocks[PUSH_LAST_CLASSES][PUSH_LAST_EACH];
static bool push_last_other[PUSH_LAST_CLASSES][PUSH_LAST_EACH];
static atomic_int push_last_phase;

static size_t push_last_len(int c) {
    return 16 + (size_t)c * 16;
}

static void *push_last_fill(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    for (int c = 0; c < PUSH_LAST_CLASSES; c++)
        for (int i = 0; i < PUSH_LAST_EACH; i++)
            push_last_blocks[c][i] = beam_alloc_bytes(a, push_last_len(c), 8);
    return NULL;
}

/* The block is in a lent chunk's sub-slab (not the slack's). */
static bool push_last_lent(int c, int i) {
    gpa_slab *s = beam__gpa_slab_of(push_last_blocks[c][i]);
    return !beam__atomic_load_relaxed(&s->mixed)->slack;
}

static void *push_last_free(void *arg) {
    beam_allocator_t a = *(beam_allocator_t *)arg;
    for (int c = 0; c < PUSH_LAST_CLASSES; c++)
        for (int i = 0; i < PUSH_LAST_EACH; i++)
            if (push_last_other[c][i])
                beam_free_bytes(a, push_last_blocks[c][i], push_last_len(c), 8);
    atomic_store_explicit(&push_last_phase, 1, memory_order_relaxed);
    while (atomic_load_explicit(&push_last_phase, memory_order_relaxed) != 2)
        sched_yield();
    return NULL;
}

static void push_last_round(void) {
    beam_gpa_t g = fresh(0);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *m = beam_alloc_bytes(a, GPA_SLAB_SIZE, 8);
    CHECK(m != NULL);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, push_last_fill, &a) == 0);
    CHECK(pthread_join(th, NULL) == 0);
    /* The other thread frees a few blocks of lent chunks' sub-slabs, this
     * one the rest first. */
    int other = 0;
    for (int c = 0; c < PUSH_LAST_CLASSES; c++)
        for (int i = 0; i < PUSH_LAST_EACH; i++) {
            CHECK(push_last_blocks[c][i] != NULL &&
                  in_sub_slab(push_last_blocks[c][i]));
            push_last_other[c][i] =
                other < PUSH_LAST_OTHER && push_last_lent(c, i);
            if (push_last_other[c][i])
                other++;
            else
                beam_free_bytes(a, push_last_blocks[c][i], push_last_len(c), 8);
        }
    CHECK(other != 0); /* (what TSan can see) */
    beam_free_bytes(a, m, GPA_SLAB_SIZE, 8);
    atomic_store(&push_last_phase, 0);
    CHECK(pthread_create(&th, NULL, push_last_free, &a) == 0);
    while (atomic_load_explicit(&push_last_phase, memory_order_relaxed) != 1)
        sched_yield();
    size_t before = backing_live();
    beam_gpa_collect(&g);
    CHECK(backing_live() < before); /* the segment went */
    atomic_store_explicit(&push_last_phase, 2, memory_order_relaxed);
    CHECK(pthread_join(th, NULL) == 0);
    CHECK(!beam_gpa_deinit(&g));
}

TEST(gpa_sub_remote_free_reads_nothing_after_its_push) {
    for (int round = 0; round < 8; round++)
        push_last_round();
}
