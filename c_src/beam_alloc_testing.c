/*
 * The fault-injection driver behind beam_alloc_testing (and its Elixir
 * front BeamAlloc.Testing): the NIF library of the Erlang module
 * beam_alloc_testing_nif (priv/beam_alloc_testing.so).
 *
 * A session belongs to one process, its owner. It attaches to the NIF
 * libraries built with beam_alloc that are loaded (see src/nif/abi.h
 * for how it finds them across RTLD_LOCAL copies), then runs plans: while a
 * run is on, every BEAM_NIF call the owner makes into an attached library
 * gets a plan allocator of the session's as beam_allocator, over the
 * allocator the call would have had (one per such allocator: see
 * plan_ctx). The plan allocator
 *
 *   - numbers every request for memory of the run (alloc, and resize or
 *     remap that grows: each can fail; a remap left to its caller and the
 *     allocation that makes the move count as the remap), across calls and
 *     libraries;
 *   - fails request number fail_index and every later one;
 *   - records each request's site (its ret_addr) in the first run, and in
 *     later runs compares the sites up to the failing one with it, which
 *     catches runs that do not repeat the first (nondeterminism);
 *   - tracks every live block with its site, its number, and the allocator
 *     it came from (frees go back there, whichever call makes them), so a
 *     run that leaves blocks behind is caught and the blocks named. A
 *     run's blocks still live at its end are leak suspects: one that a
 *     resource destructor frees later was no leak; one still live when the
 *     check asks (leaks/1, once, after waiting for destructors), or freed
 *     by a call of a later run, is a leak of its run. (So no run waits for
 *     destructors.)
 *
 * Other processes are never affected: they find no running session of
 * theirs and their calls go on as usual. Calls of the owner into libraries
 * the session did not attach are not counted.
 *
 * Locking: registry_lock guards the list of open sessions (enter looks the
 * calling pid up there); each session's lock guards everything in it. An
 * owner's calls are serialised by the VM, but a block may be freed on
 * another thread (a resource destructor), hence the session lock.
 *
 * A session is never freed, only emptied: an allocator value handed to a
 * NIF body ({plan, &plan_vtable}, plan a session's plan_ctx) may have been
 * stored and be used after the session closed, and must still lead
 * somewhere sound. A closed session passes requests straight to the
 * plan's allocator (the last call's for the running call's plan) and frees
 * of blocks it still knows to their own allocators (so it keeps the
 * records of blocks left live). Everything a closed session does not need
 * goes at close (its libraries, the first run's sites, the misuse records,
 * and the block table when no block is left live), so every check leaves
 * the struct session behind for the life of the VM, 616 bytes on 64-bit
 * Linux, and its plans, 40 bytes each (one per lasting allocator its calls
 * had, at most MAX_PLANS besides the process-wide ones: most checks have
 * one), plus enif_alloc's own few. Keep what only
 * runs need out of the struct: the misuse records alone (4.6 KB) once cost
 * every check 5 KB.
 */
#define _GNU_SOURCE
#include "../src/nif/abi.h"
#include "crash_note.h"
#include "nif_text.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#if defined(__APPLE__)
#include <mach-o/dyld.h>
#else
#include <link.h>
#endif

/* --- Sessions ------------------------------------------------------------ */

enum request_kind { REQ_ALLOC, REQ_RESIZE, REQ_REMAP };

/* Misuse kept per run, at most (the count is exact). */
#define MAX_MISUSE 8
enum run_mode { MODE_RECORD, MODE_COMPARE };

#define NEVER SIZE_MAX
#define TOMBSTONE ((void *)1)

typedef struct block {
    void *ptr; /* NULL: empty slot; TOMBSTONE: deleted */
    size_t len;
    size_t alignment;
    uintptr_t site;          /* as described (see described_site) */
    size_t index;            /* request number in its run */
    unsigned run;            /* run that made it; 0 once reported (a leak
                              * suspect while not its run's: see settle) */
    uint64_t scope;          /* call-local call it belongs to; 0: none */
    beam_allocator_t parent; /* vtable NULL: its allocator died */
} block;

/* A block of the run a call freed through an allocator that checks no
 * free, held until the call ends (session.freed, hold_freed). */
typedef struct freed_block {
    const void *ptr; /* NULL: none */
    size_t len, alignment;
    uintptr_t ret; /* the free's */
    beam_allocator_t parent;
} freed_block;
#define FREED_RING 64
#define FREED_MAX_LEN ((size_t)64 * 1024)

typedef struct attached_lib {
    const beam__fault_hooks *hooks;
    void *handle; /* dlopen reference that keeps the library mapped */
    char module[256];
    uintptr_t lo, hi; /* its loaded segments' span (0, 0: not known) */
    /* A call of the run went through this copy (end_run's called): a
     * reload of a module no run called explains none of the runs. */
    bool called;
} attached_lib;

typedef struct request_info {
    bool happened;
    size_t index;
    int kind;
    size_t len;
    uintptr_t site;     /* as described (see described_site) */
    uintptr_t expected; /* mismatch only: the first run's site (0: none) */
} request_info;

/* A request of the first run: where it returns to (what later runs must
 * repeat), and how it is described. */
typedef struct first_site {
    uintptr_t ret;
    uintptr_t site;
} first_site;

/* A remap that came back NULL, its parent's "allocate, copy and free
 * yourself" (or failed here): the allocation that follows from the same
 * site, of the new length, is that move, as beam_realloc makes it, and no
 * request of its own. So a realloc counts as the raw allocator's does
 * whichever allocator is under the plan (enif_realloc moves any block, a
 * general purpose allocator's remap no small one across its size
 * classes): a growth once (the remap), a shrink not at all, and the block
 * keeps its record (its number and site in messages). Any other request
 * forgets it. */
typedef struct pending_move {
    bool set;
    bool fails;   /* the remap was failed, or its block is gone: so is the
                   * allocation (and nothing is copied) */
    bool tracked; /* the block was the run's: the moved one is too */
    uintptr_t site;
    size_t len, alignment;
    /* The block's record, for the moved one: its number, site and run (a
     * block leaked in an earlier run stays that run's, with the length it
     * had then); from: its address. */
    size_t index;
    uintptr_t block_site;
    unsigned block_run;
    size_t block_len;
    void *from;
    /* Where the moved block goes: the allocator and scope of the old one
     * (the plan's when the session holds no block for it). */
    beam_allocator_t parent;
    unsigned scope;
} pending_move;

/* The old block of the move just made, which the same realloc frees next
 * (ret: where from). */
typedef struct moved_from {
    const void *ptr;
    uintptr_t ret;
} moved_from;

/* A thread's pending move and the old block of its move just made. A
 * realloc makes its remap, alloc and free on one thread; the requests
 * another thread makes in between (a worker the NIF started, a destructor
 * on another scheduler) neither complete nor forget it, nor take its free
 * for theirs (with one of each per session, a thread's request in between
 * made the move a request of its own, from the call's allocator). */
typedef struct move_slot {
    pthread_t thread;
    pending_move move;
    moved_from left;
} move_slot;

/* Threads with a realloc under way at once; more share the first slot
 * (as all did with one). */
#define MOVE_SLOTS 8

/* A leak of an earlier run, kept apart from the block table until the
 * check asks for the leaks: its block is gone from the table (a later
 * run's call freed it, or its memory went behind the session's back, a
 * leak_check instance freeing it at the end of its call, and the address
 * was handed out again), or the check is asking (take_leaks). */
typedef struct leak_record {
    unsigned run;
    size_t index;
    size_t len;
    uintptr_t site;
    /* The block's address when a leak_check call's instance kept it (the
     * instance reported it, at this address), else 0; and that call's
     * scope. */
    uintptr_t call_local;
    uint64_t scope;
} leak_record;

typedef struct misuse_record {
    char kind[64];
    char line[512];
    size_t after; /* requests made when the call that misused ended */
} misuse_record;

struct session;

/* What a plan allocator's ctx points at: its session, and the allocator
 * the plan stands for (parent; vtable NULL: the one of whichever call is
 * running, see driver_enter). A call whose allocator outlives it (raw,
 * general purpose, a named or a custom one) gets one of its own, so an
 * allocator a NIF keeps and uses in a later call still says which one it
 * was: with one plan allocator for every call, a free through a kept one
 * was taken for the later call's (reported as a free through another
 * allocator although correct), and a realloc through the later call's of
 * a kept block passed unreported. Never freed, as the session (a NIF may
 * keep it). */
typedef struct plan_ctx {
    struct session *s;
    beam_allocator_t parent;
    bool unchecked; /* parent checks no free (raw, large) */
    /* The overflow plan (parent's vtable NULL too): see MAX_PLANS. */
    bool overflow;
    bool process_wide; /* parent is: outside MAX_PLANS */
    struct plan_ctx *next;
} plan_ctx;

/* Allocators a session gives a plan of its own, at most, besides the
 * process-wide ones (raw, large, general purpose: a few a library, each
 * its own plan, BEAM__FAULT_PROCESS_WIDE). Past them (a NIF whose
 * .allocator makes a new one at each call), calls share the session's
 * overflow plan, which stands for whichever call runs and cannot tell
 * which allocator a NIF kept: it judges no free, resize or remap by the
 * allocator it came through (it may miss such a misuse, never invent
 * one). With the running call's plan instead, a raw allocator kept past
 * 16 others and freed through in a call of the general purpose one was
 * reported as a free through another allocator: found in review. */
#define MAX_PLANS 16

typedef struct session {
    pthread_mutex_t lock;
    ErlNifPid owner;
    bool running;
    bool closed;

    attached_lib *libs;
    size_t nlibs, libs_cap;

    /* The run. */
    unsigned run;
    int mode;
    size_t fail_index;
    size_t requests;
    request_info induced;
    request_info mismatch;
    /* The mismatch's request returned into another copy of the module the
     * first run's did (its library loaded again: a hot upgrade): 1 + that
     * copy's index in libs, 0 otherwise. (An index: attach grows libs.) */
    size_t mismatch_reloaded;
    bool lost; /* bookkeeping ran out of memory: results incomplete */
    /* The slot of the first thread with a move under way, and those of
     * others at once, MOVE_SLOTS - 1 made apart when one needs them (a
     * session lives on after its check: most never do) and freed at close
     * when none is busy. */
    move_slot move;
    move_slot *more;

    /* Misuse the run's calls reported (the first MAX_MISUSE of them).
     * Allocated apart, MAX_MISUSE records at open, and freed at close: they
     * are most of a session's size, and a closed one has no run. */
    misuse_record *misuse;
    size_t nmisuse;

    /* The crash slot the session's runs write (crash_note.h), or -1:
     * every slot was taken. */
    int crash;

    /* Sites of the first run's requests. */
    first_site *sites;
    size_t nsites, sites_cap;

    /* The calls in flight (the owner's, innermost), and the thread the
     * owner's outermost one runs on. */
    unsigned depth;
    pthread_t call_thread;
    beam_allocator_t parent;
    uint64_t scope;
    uint64_t next_scope;
    beam_allocator_t fallback; /* for requests outside any call */

    /* The plan of whichever call is running (for a call whose allocator
     * dies with it: scratch, leak_check), and those of lasting allocators
     * (plan_ctx), up to MAX_PLANS. */
    plan_ctx running_plan;
    plan_ctx overflow_plan;
    plan_ctx *plans;

    /* Live blocks: open addressing on ptr, linear probing. */
    block *blocks;
    size_t blocks_cap, blocks_live, blocks_used;

    /* While the call's allocator checks no free (unchecked: the raw or
     * the large one), the run's blocks the current outermost call frees,
     * the last FREED_RING of them, held until it ends: a second free of
     * one is a double free, caught (see hold_freed). */
    bool unchecked;
    freed_block *freed; /* FREED_RING, apart like misuse */
    unsigned freed_next;

    /* Leaks of earlier runs kept apart (leak_record). */
    leak_record *leaks;
    size_t nleaks, leaks_cap;
    bool leaks_lost; /* one could not be kept: the leaks are incomplete */
} session;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static session **open_sessions;
static size_t n_open, open_cap;

static bool grow_array(void **array, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    void *p = enif_realloc(*array, n * elem);
    if (p == NULL)
        return false;
    *array = p;
    *cap = n;
    return true;
}

/* --- The block table ------------------------------------------------------ */

static size_t slot_of(const void *ptr, size_t cap) {
    uintptr_t h = (uintptr_t)ptr;
    h ^= h >> 17;
    h *= (uintptr_t)0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 7) & (cap - 1);
}

static block *find_block(session *s, const void *ptr) {
    if (s->blocks_cap == 0 || ptr == NULL)
        return NULL;
    for (size_t i = slot_of(ptr, s->blocks_cap);;
         i = (i + 1) & (s->blocks_cap - 1)) {
        block *b = &s->blocks[i];
        if (b->ptr == ptr)
            return b;
        if (b->ptr == NULL)
            return NULL;
    }
}

static void erase_block(session *s, block *b) {
    b->ptr = TOMBSTONE;
    s->blocks_live--;
}

static void place(block *table, size_t cap, const block *b) {
    size_t i = slot_of(b->ptr, cap);
    while (table[i].ptr != NULL)
        i = (i + 1) & (cap - 1);
    table[i] = *b;
}

/* Room for one more, rehashing away tombstones when the table fills. */
static bool reserve_block(session *s) {
    if ((s->blocks_used + 1) * 2 <= s->blocks_cap)
        return true;
    size_t cap = s->blocks_cap ? s->blocks_cap : 64;
    while ((s->blocks_live + 1) * 2 > cap / 2)
        cap *= 2;
    block *table = enif_alloc(cap * sizeof *table);
    if (table == NULL)
        return false;
    memset(table, 0, cap * sizeof *table);
    for (size_t i = 0; i < s->blocks_cap; i++)
        if (s->blocks[i].ptr != NULL && s->blocks[i].ptr != TOMBSTONE)
            place(table, cap, &s->blocks[i]);
    enif_free(s->blocks);
    s->blocks = table;
    s->blocks_cap = cap;
    s->blocks_used = s->blocks_live;
    return true;
}

/* A block of a run that has ended, not yet reported: a leak of that run,
 * unless a resource destructor frees it before the check asks (see
 * settle in beam_alloc_testing.erl). */
static bool suspect(const session *s, const block *b) {
    return b->run != 0 && !s->closed && (b->run != s->run || !s->running);
}

/* Suspect b is a leak of its run: its record is kept apart until the
 * check asks for the leaks. */
static void keep_leak(session *s, const block *b) {
    if (!grow_array((void **)&s->leaks, &s->leaks_cap, s->nleaks + 1,
                    sizeof *s->leaks)) {
        s->leaks_lost = true;
        return;
    }
    /* (driver_leave empties the parent of a leak_check call's blocks.) */
    uintptr_t call_local = b->parent.vtable == NULL ? (uintptr_t)b->ptr : 0;
    s->leaks[s->nleaks++] =
        (leak_record){b->run,  b->index,   b->len,
                      b->site, call_local, call_local ? b->scope : 0};
}

/* A slot of the table holding a suspect. */
static bool live_suspect(const session *s, const block *b) {
    return b->ptr != NULL && b->ptr != TOMBSTONE && suspect(s, b);
}

/* A record for the same address is stale: that block went back behind the
 * session's back (a leak_check instance freed it at the end of its call)
 * and the address was handed out again. A suspect's is a leak of its
 * run. */
static void drop_stale(session *s, block *stale) {
    if (suspect(s, stale))
        keep_leak(s, stale);
    erase_block(s, stale);
}

static void add_block(session *s, const block *b) {
    block *stale = find_block(s, b->ptr);
    if (stale != NULL) {
        drop_stale(s, stale);
        *stale = *b;
        s->blocks_live++;
        return;
    }
    if (!reserve_block(s)) {
        s->lost = true;
        return;
    }
    place(s->blocks, s->blocks_cap, b);
    s->blocks_live++;
    s->blocks_used++;
}

/* --- The plan allocator ------------------------------------------------- */

static bool counting(const session *s) {
    return s->running && !s->closed && s->depth > 0;
}

/* This thread runs the owner's call (not one the call started). */
static bool on_the_call_thread(const session *s) {
    return counting(s) && pthread_equal(pthread_self(), s->call_thread);
}

static beam_allocator_t current_parent(const session *s) {
    return s->depth > 0 && !s->closed ? s->parent : s->fallback;
}

/* The allocator plan c stands for: its own, or the running call's. */
static beam_allocator_t through(const plan_ctx *c) {
    return c->parent.vtable != NULL ? c->parent : current_parent(c->s);
}

/* The call-local scope of a block plan c takes: the running call's for
 * its plan, none for a lasting allocator's own, whose blocks outlive any
 * call. (With the call's, such a block taken in a scratch call went from
 * the table with the arena, its leak unreported, and one taken in a
 * leak_check call was taken for the instance's: its free went nowhere,
 * its realloc was refused as a misuse. Found in review.) */
static uint64_t scope_of(const plan_ctx *c) {
    return c->parent.vtable != NULL ? 0 : c->s->scope;
}

/* The attached library whose code holds pc, or NULL. */
static const attached_lib *lib_at(const session *s, uintptr_t pc) {
    for (size_t i = 0; i < s->nlibs; i++)
        if (pc >= s->libs[i].lo && pc < s->libs[i].hi)
            return &s->libs[i];
    return NULL;
}

static bool in_attached(const session *s, uintptr_t pc) {
    return lib_at(s, pc) != NULL;
}

/* 1 + the index of the copy holding now, when was is in another copy of
 * its module (the module's library loaded again between two runs), else
 * 0. */
static size_t other_copy(const session *s, uintptr_t was, uintptr_t now) {
    const attached_lib *a = lib_at(s, was), *b = lib_at(s, now);
    return a != NULL && b != NULL && a != b && strcmp(a->module, b->module) == 0
               ? (size_t)(b - s->libs) + 1
               : 0;
}

/* Every attached library's span is known (not on macOS): without them a
 * walk could not tell where the NIF's code begins. */
static bool spans_known(const session *s) {
    for (size_t i = 0; i < s->nlibs; i++)
        if (s->libs[i].lo >= s->libs[i].hi)
            return false;
    return true;
}

/* Frames a request made outside the NIF libraries is described by, at
 * most (the frames library's own limit). */
#define FOREIGN_FRAMES 16

/* Frames a request made in a NIF library is described by, at most: the
 * standard library's code instantiated in a C++ NIF (std::vector's
 * _M_realloc_insert, std::string's _M_construct) is the NIF library's
 * too, and its frames come before the author's line (the leak_check
 * default's six, and room for a map's node). */
#define OWN_FRAMES 8

/* n, less the frames past the last one in a NIF library: the VM's, below
 * the NIF (a C library's between the NIF's frames stay). */
static size_t up_to_last_attached(const session *s, const uintptr_t *pc,
                                  size_t n) {
    while (n > 1 && !in_attached(s, pc[n - 1]))
        n--;
    return n;
}

/* How a request returning to ret is named in problems: the calls that
 * led there. In a NIF library under the check, up to OWN_FRAMES of its
 * (the symbolizer shows the first alone when it is the author's line,
 * else the frames up to the author's first: beam_alloc_symbolizer's
 * resolve_request_site/1); else up to the first one in such a library: a
 * C library's request (zlib, zstd, SQLite, libstdc++ calling the NIF's
 * hooks) is then "deflateInit2_ (libz.so.1+0x8da6) <- ... <- the NIF's
 * line that called zlib", not zlib's function alone. Walks from here:
 * call it on the request's own path. */
static uintptr_t described_site(const session *s, uintptr_t ret) {
    if (ret == 0 || !spans_known(s))
        return ret;
    uintptr_t pc[FOREIGN_FRAMES];
    if (in_attached(s, ret)) {
        size_t own = beam__stack_above(ret, pc, OWN_FRAMES);
        return beam__trace_intern(pc, up_to_last_attached(s, pc, own));
    }
    size_t n = beam__stack_above(ret, pc, FOREIGN_FRAMES);
    for (size_t i = 1; i < n; i++)
        if (in_attached(s, pc[i])) {
            n = i + 1;
            break;
        }
    return beam__trace_intern(pc, n);
}

/* A site as a line of text names it (a misuse's, the crash note's): one
 * in a NIF library by its first frame alone, as before requests kept
 * frames there (such a line is resolved as it is, never shortened to the
 * author's frame as a request's site is). */
static uintptr_t line_site(const session *s, uintptr_t site) {
    uintptr_t first = 0;
    beam__site_copy(site, &first, 1);
    return in_attached(s, first) ? first : site;
}

/* --- What a crash during a check says ----------------------------------- */

/* See crash_note.c: the driver's part is the slot of each session's runs
 * and the names of the failed request (its site, its NIF function). */

static const char *kind_text(int kind) {
    return kind == REQ_ALLOC    ? "alloc"
           : kind == REQ_RESIZE ? "resize"
                                : "remap";
}

/* The NIF function a request returning to ret was made in: the outermost
 * frame in an attached library (the function the VM called), or 0. Past
 * other libraries' frames too: a request made in a callback they call
 * (qsort's compare, zlib's zalloc, a hooked library's malloc) has the
 * callback's frames first, and the NIF nearest below the callback's code
 * was named instead (another NIF, found in review). Within the
 * FOREIGN_FRAMES the walk gives at most (the frames library caps it there:
 * room for twice as many was never filled): a request deeper below the
 * NIF's entry (a long recursion) is named by the outermost frame seen. */
static uintptr_t nif_entry(const session *s, uintptr_t ret) {
    uintptr_t pc[FOREIGN_FRAMES];
    size_t n = beam__stack_above(ret, pc, sizeof pc / sizeof pc[0]);
    uintptr_t entry = 0;
    for (size_t i = 0; i < n; i++)
        if (in_attached(s, pc[i]))
            entry = pc[i];
    return entry;
}

/* Whether a call on this thread came in by entry f: one BEAM_NIF under a
 * normal and a dirty name is called by each on its own kind of scheduler. */
static bool entered_here(const ErlNifFunc *f) {
    int t = enif_thread_type();
    unsigned dirty =
        f->flags & (ERL_NIF_DIRTY_JOB_CPU_BOUND | ERL_NIF_DIRTY_JOB_IO_BOUND);
    return dirty == ERL_NIF_DIRTY_JOB_CPU_BOUND
               ? t == ERL_NIF_THR_DIRTY_CPU_SCHEDULER
           : dirty == ERL_NIF_DIRTY_JOB_IO_BOUND
               ? t == ERL_NIF_THR_DIRTY_IO_SCHEDULER
               : t != ERL_NIF_THR_DIRTY_CPU_SCHEDULER &&
                     t != ERL_NIF_THR_DIRTY_IO_SCHEDULER;
}

/* The call of the NIF function pc lies in, as the reports name it ("the
 * NIF call `MyNif.parse/1`", "the NIF call my_nif:parse/1", quoted where
 * the language quotes it: my_nif:'end'/1, MyNif."odd name"/1; it wrote
 * my_nif:end/1, and Elixir's without backquotes), into out: the
 * entry of the library's ErlNifFunc table (nif_init's) that starts nearest
 * below pc, named by the copy when a call of it runs on this thread (with
 * the call's arity). No debug information needed.
 * "" when not known. */
static void nif_name(const session *s, uintptr_t pc, char *out, size_t n) {
    out[0] = '\0';
    const attached_lib *lib = lib_at(s, pc);
    void *sym = lib != NULL ? dlsym(lib->handle, "nif_init") : NULL;
    if (sym == NULL)
        return;
    ErlNifEntry *(*init)(void);
    memcpy(&init, &sym, sizeof init);
    const ErlNifEntry *e = init();
    const ErlNifFunc *best = NULL;
    for (int i = 0; e != NULL && i < e->num_of_funcs; i++) {
        uintptr_t f = (uintptr_t)e->funcs[i].fptr;
        if (f <= pc && (best == NULL || f > (uintptr_t)best->fptr ||
                        (f == (uintptr_t)best->fptr && !entered_here(best) &&
                         entered_here(&e->funcs[i]))))
            best = &e->funcs[i];
    }
    if (best == NULL)
        return;
    /* The call itself, when the copy can name it: its argc tells the
     * entries of one C function under several arities apart. */
    const beam__fault_hooks *h = lib->hooks;
    if (h->size >= BEAM__FAULT_HOOKS_V9_SIZE && h->call_name != NULL &&
        h->call_name((uintptr_t)best->fptr, out, n))
        return;
    beam__nif_call_text(lib->module, best->name, best->arity, out, n);
}

/* Request r, returning to ret, was failed (session lock held): the crash
 * names it, and the frames its line is looked for in: in a NIF library,
 * those of its site (a request made in std::vector's code is followed to
 * the author's line); else ret's alone, as the text names it. */
static void crash_request_failed(const session *s, const request_info *r,
                                 uintptr_t ret) {
    if (s->crash < 0)
        return;
    char site[512], fn[CRASH_NOTE_CALL];
    beam__describe_site(line_site(s, r->site), site, sizeof site);
    /* Another thread (one the call started, a pool's) has no NIF function
     * on its stack: the one nearest below its code would be a guess,
     * another NIF as often. Who started it is not known either. */
    bool off_call = !on_the_call_thread(s);
    if (off_call)
        fn[0] = '\0';
    else
        nif_name(s, nif_entry(s, ret), fn, sizeof fn);
    /* (The site of a request in a NIF library holds its frames: the
     * failed request is walked for in every run, see request.) */
    uintptr_t pc[OWN_FRAMES] = {ret};
    size_t n =
        in_attached(s, ret) ? beam__site_copy(r->site, pc, OWN_FRAMES) : 1;
    crash_note_request_failed(
        s->crash, &(crash_note_failure){r->index, kind_text(r->kind), r->len,
                                        site, fn, off_call, pc, n > 0 ? n : 1});
}

/* Number a request returning to ret; true when it must fail. *site: how
 * it is described: as the first run's request of its number when it
 * returns to the same place (a walk per request of every run made checks
 * over SQLite 8 times slower), else walked for. The failed request is
 * walked for always, once a run: the same return address is reached from
 * more than one line (std::vector's code, from each of the author's
 * push_back calls), and a run that took another path there (threads,
 * state kept between calls) would name the first run's line. */
static bool request(session *s, int kind, size_t len, uintptr_t ret,
                    size_t *index, uintptr_t *site) {
    size_t i = s->requests++;
    *index = i;
    crash_note_request(s->crash);
    uintptr_t at = s->mode == MODE_COMPARE && i < s->nsites &&
                           s->sites[i].ret == ret && i != s->fail_index
                       ? s->sites[i].site
                       : described_site(s, ret);
    *site = at;
    if (s->mode == MODE_RECORD) {
        if (grow_array((void **)&s->sites, &s->sites_cap, s->nsites + 1,
                       sizeof *s->sites))
            s->sites[s->nsites++] = (first_site){ret, at};
        else
            s->lost = true;
    } else if (i <= s->fail_index && !s->mismatch.happened) {
        first_site expected = i < s->nsites ? s->sites[i] : (first_site){0, 0};
        if (expected.ret != ret) {
            s->mismatch = (request_info){true, i, kind, len, at, expected.site};
            s->mismatch_reloaded = other_copy(s, expected.ret, ret);
        }
    }
    if (i < s->fail_index)
        return false;
    if (!s->induced.happened) {
        s->induced = (request_info){true, i, kind, len, at, 0};
        crash_request_failed(s, &s->induced, ret);
    }
    return true;
}

/* A misuse in the run (lock held): a problem whatever the call returned. */
static void note_misuse(session *s, const char *kind, const char *line) {
    if (!s->running)
        return;
    if (s->nmisuse < MAX_MISUSE) {
        snprintf(s->misuse[s->nmisuse].kind, sizeof s->misuse[0].kind, "%s",
                 kind);
        snprintf(s->misuse[s->nmisuse].line, sizeof s->misuse[0].line, "%s",
                 line);
        s->misuse[s->nmisuse].after = s->requests;
    }
    s->nmisuse++;
}

static bool slot_busy(const move_slot *m) {
    return m->move.set || m->left.ptr != NULL;
}

static size_t n_slots(const session *s) {
    return s->more != NULL ? MOVE_SLOTS : 1;
}

static move_slot *slot_at(const session *s, size_t i) {
    return i == 0 ? (move_slot *)&s->move : &s->more[i - 1];
}

static bool any_slot_busy(const session *s) {
    for (size_t i = 0; i < n_slots(s); i++)
        if (slot_busy(slot_at(s, i)))
            return true;
    return false;
}

/* The calling thread's slot while it has a move under way, else NULL. */
static move_slot *own_slot(const session *s) {
    pthread_t self = pthread_self();
    for (size_t i = 0; i < n_slots(s); i++) {
        move_slot *m = slot_at(s, i);
        if (slot_busy(m) && pthread_equal(m->thread, self))
            return m;
    }
    return NULL;
}

/* A slot no thread has a move under way in: made apart when all are busy,
 * else NULL (out of memory, or all MOVE_SLOTS busy). */
static move_slot *free_slot(session *s) {
    for (size_t i = 0; i < n_slots(s); i++)
        if (!slot_busy(slot_at(s, i)))
            return slot_at(s, i);
    if (s->more != NULL)
        return NULL;
    s->more = enif_alloc((MOVE_SLOTS - 1) * sizeof *s->more);
    if (s->more == NULL)
        return NULL;
    memset(s->more, 0, (MOVE_SLOTS - 1) * sizeof *s->more);
    return s->more;
}

/* The calling thread's slot, taking a free one (the first, shared, when
 * none is) for a move it starts. */
static move_slot *claim_slot(session *s) {
    move_slot *m = own_slot(s);
    if (m == NULL)
        m = free_slot(s);
    if (m == NULL)
        m = &s->move;
    m->thread = pthread_self();
    return m;
}

/* The calling thread's pending remap is forgotten (a request of its own
 * came in between). */
static void forget_move(session *s) {
    move_slot *m = own_slot(s);
    if (m != NULL)
        m->move.set = false;
}

/* The allocation is the move a remap of this thread just left to its
 * caller (see pending_move), copied to *move; taken or not, the remap is
 * forgotten. */
static bool completes_move(session *s, size_t len, size_t alignment,
                           uintptr_t ret, pending_move *move) {
    move_slot *m = own_slot(s);
    if (m == NULL)
        return false;
    *move = m->move;
    m->move.set = false;
    return move->set && move->site == ret && move->len == len &&
           move->alignment == alignment;
}

/* A suspect's record went with its block to a new address (the move a
 * remap left to its caller): the old block's free is no leak's. */
static void moved_away(session *s, const void *from) {
    block *old = find_block(s, from);
    if (old != NULL && suspect(s, old))
        old->run = 0;
}

/* What a block's record keeps of a new length: a suspect keeps the one it
 * had when its run ended (its leak's). */
static size_t recorded_len(const session *s, const block *b, size_t new_len) {
    return suspect(s, b) ? b->len : new_len;
}

/* --- Double frees the call's allocator would not see -------------------- */

/* note_misuse of a line made from fmt. */
__attribute__((format(printf, 3, 4))) static void
note_misusef(session *s, const char *kind, const char *fmt, ...) {
    char line[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    note_misuse(s, kind, line);
}

/* A misuse's two sites as text: the call's, returning to ret, and the
 * block's other one (where it was freed before, or allocated). */
#define SITE_TEXT 256
static void describe_both(const session *s, uintptr_t ret, uintptr_t other,
                          char here[SITE_TEXT], char there[SITE_TEXT]) {
    beam__describe_site(in_attached(s, ret) ? ret : described_site(s, ret),
                        here, SITE_TEXT);
    beam__describe_site(line_site(s, other), there, SITE_TEXT);
}

/* Frees through plan c are watched for double frees: its allocator checks
 * none, in a counted call. */
static bool watching_frees(const plan_ctx *c) {
    bool unchecked = c->parent.vtable != NULL ? c->unchecked : c->s->unchecked;
    return unchecked && counting(c->s);
}

/* Held block f goes to its allocator now (lock held). */
static void release_freed(freed_block *f) {
    if (f->ptr == NULL)
        return;
    f->parent.vtable->free(f->parent.ctx, (void *)f->ptr, f->len, f->alignment,
                           f->ret);
    f->ptr = NULL;
}

/* Every held block to its allocator (lock held): the call that freed them
 * has ended, or the session closes. */
static void release_all_freed(session *s) {
    for (unsigned i = 0; s->freed != NULL && i < FREED_RING; i++)
        release_freed(&s->freed[i]);
}

/* A free of a block of len is held (hold_freed): the call's allocator
 * checks no free, and the block is small enough (blocks above
 * FREED_MAX_LEN go back at once); the run's or not (a block of the raw
 * allocator's own, freed through the call's: found by a bug hunt, freed
 * twice it crashed the VM in the check). A remap of such a block moves nothing:
 * in place, or NULL, and a realloc takes a new block and frees this one
 * through the session, which holds it, so that a free of the old pointer
 * after the move is caught too (the parent's remap would have given its
 * memory back at once). */
static bool would_hold(const plan_ctx *c, size_t len) {
    return watching_frees(c) && len <= FREED_MAX_LEN;
}

/* Block mem, freed by the current call through parent, which checks no
 * free (would_hold): held instead of given back, until the call
 * ends or FREED_RING later frees push it out, so that nobody can be handed
 * its address meanwhile and a second free of it is certainly a double
 * free (freed_twice). */
static void hold_freed(session *s, void *mem, size_t len, size_t alignment,
                       uintptr_t ret, beam_allocator_t parent) {
    freed_block *f = &s->freed[s->freed_next];
    release_freed(f);
    *f = (freed_block){mem, len, alignment, ret, parent};
    s->freed_next = (s->freed_next + 1) % FREED_RING;
}

static bool same_parent(beam_allocator_t a, beam_allocator_t b) {
    return a.vtable == b.vtable && a.ctx == b.ctx;
}

/* The live block of this run, from the call's own allocator, that mem
 * points inside (not at its start), or NULL. Not a block of an earlier
 * run (a suspect leak: its record keeps the length it was allocated with,
 * and its memory may be partly given back) nor one whose allocator died:
 * their records may cover memory that is someone else's now (found in
 * review). A walk of the table: only frees the session has no block for
 * ask, while the call's allocator checks no free. */
static const block *block_around(const session *s, const void *mem,
                                 beam_allocator_t now) {
    uintptr_t p = (uintptr_t)mem;
    for (size_t i = 0; i < s->blocks_cap; i++) {
        const block *b = &s->blocks[i];
        if (b->ptr == NULL || b->ptr == TOMBSTONE || suspect(s, b) ||
            b->parent.vtable == NULL || !same_parent(b->parent, now))
            continue;
        uintptr_t at = (uintptr_t)b->ptr;
        if (p > at && p - at < b->len)
            return b;
    }
    return NULL;
}

/* A free of mem, which the session has no block for, pointing inside one
 * of the run's blocks (a sized free of a beam_malloc block over the raw
 * allocator: its user pointer is past the header): true, reported as a
 * misuse of the run, and not passed on, as enif_free would crash the VM
 * on it (it did, in the check: found by a bug hunt). */
static bool freed_inside(const plan_ctx *c, void *mem, size_t len,
                         uintptr_t ret) {
    session *s = c->s;
    if (!watching_frees(c))
        return false;
    const block *b = block_around(s, mem, through(c));
    if (b == NULL)
        return false;
    char here[SITE_TEXT], made[SITE_TEXT];
    describe_both(s, ret, b->site, here, made);
    note_misusef(s, BEAM__KIND_FOREIGN_FREE,
                 "beam_alloc: fault injection: free of %p (length %zu), "
                 "%zu bytes inside a block of length %zu, called from %s; "
                 "the block was allocated from %s: not passed on (the "
                 "call's allocator, raw or large, checks no free, and "
                 "enif_free would crash on it)",
                 mem, len, (size_t)((uintptr_t)mem - (uintptr_t)b->ptr), b->len,
                 here, made);
    return true;
}

/* A free of mem, which the session holds no live block for: true when
 * mem is a block the call freed already and holds (hold_freed). Reported
 * as a misuse of the run, and not passed on: the raw allocator would hand
 * it to enif_free again, which crashes the VM sooner or later (a check
 * passed such a NIF, and its later runs crashed the VM; found by a bug
 * hunt). */
static bool freed_twice(const plan_ctx *c, void *mem, size_t len,
                        size_t alignment, uintptr_t ret) {
    session *s = c->s;
    if (!watching_frees(c))
        return false;
    const freed_block *f = NULL;
    for (unsigned i = 0; i < FREED_RING && f == NULL; i++)
        if (s->freed[i].ptr == mem)
            f = &s->freed[i];
    if (f == NULL)
        return false;
    char here[SITE_TEXT], before[SITE_TEXT];
    describe_both(s, ret, f->ret, here, before);
    note_misusef(s, BEAM__KIND_DOUBLE_FREE,
                 "beam_alloc: fault injection: double free: %p (length %zu, "
                 "alignment %zu), called from %s; freed before at %s (length "
                 "%zu): not passed on (the call's allocator, raw or large, "
                 "checks no free, and enif_free would take it twice)",
                 mem, len, alignment, here, before, f->len);
    return true;
}

static void *plan_alloc(void *ctx, size_t len, size_t alignment,
                        uintptr_t ret) {
    session *s = ((plan_ctx *)ctx)->s;
    pthread_mutex_lock(&s->lock);
    size_t index = 0;
    bool counted = counting(s);
    bool fails = false;
    bool track = counted;
    uintptr_t site = ret;
    unsigned run = s->run;
    size_t kept_len = len;
    pending_move pm;
    bool move = completes_move(s, len, alignment, ret, &pm);
    /* A move stays with the old block's allocator, as without the check
     * (the call's may be a fixed buffer or an arena that dies with it). */
    beam_allocator_t parent = move ? pm.parent : through(ctx);
    uint64_t scope = move ? pm.scope : scope_of(ctx);
    if (move && pm.fails) {
        fails = true;
    } else if (move) {
        track = pm.tracked;
        index = pm.index;
        site = pm.block_site;
        run = pm.block_run;
        kept_len = pm.block_len;
    } else if (counted) {
        fails = request(s, REQ_ALLOC, len, ret, &index, &site);
    }
    if (fails) {
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    void *p = parent.vtable->alloc(parent.ctx, len, alignment, ret);
    if (p != NULL && track) {
        block b = {p, kept_len, alignment, site, index, run, scope, parent};
        if (move)
            moved_away(s, pm.from);
        add_block(s, &b);
    } else if (p != NULL) {
        /* Not the run's: a record of the address is stale (see add_block),
         * and would take this block's free or remap for its own. */
        block *stale = find_block(s, p);
        if (stale != NULL)
            drop_stale(s, stale);
    }
    if (p != NULL && move)
        claim_slot(s)->left = (moved_from){pm.from, ret};
    pthread_mutex_unlock(&s->lock);
    return p;
}

/* The allocator mem came from: that of its block when the session holds
 * one (b), else the one plan c stands for. */
static beam_allocator_t parent_of(const plan_ctx *c, const block *b) {
    return b != NULL ? b->parent : through(c);
}

/* A resize or remap is a request like an allocation when it grows a block
 * in a counted scope: true when this one must fail. */
static bool growth_fails(session *s, int kind, size_t len, size_t new_len,
                         uintptr_t ret, size_t *index) {
    forget_move(s);
    uintptr_t site;
    return new_len > len && counting(s) &&
           request(s, kind, new_len, ret, index, &site);
}

/* A free (what: "free"), resize or remap in a call of the run's block b
 * (NULL: none) through plan c, which stands for another allocator than
 * the one b came from (a raw NIF freeing what one with the process-wide
 * GPA took, or the other way round; a realloc of a kept block through
 * the call's allocator, not the kept one): without the check that
 * allocator would refuse it or report it; the session, which sends the
 * block's requests where it came from, reports it instead (before, the
 * check passed such a call: found by a bug hunt). b's own allocator still
 * takes it, so that the check goes on without a crash. (Not asked of a
 * realloc's free of the block it moved, reported at its remap: see
 * ends_move.) */
static void check_through(const plan_ctx *c, const block *b, const char *what,
                          void *mem, size_t len, uintptr_t ret) {
    session *s = c->s;
    if (b == NULL || c->overflow || !counting(s) || b->parent.vtable == NULL ||
        same_parent(b->parent, through(c)))
        return;
    char here[SITE_TEXT], made[SITE_TEXT];
    describe_both(s, ret, b->site, here, made);
    note_misusef(s,
                 strcmp(what, "free") == 0 ? BEAM__KIND_FOREIGN_FREE
                                           : BEAM__KIND_RESIZE,
                 "beam_alloc: fault injection: %s of %p (length %zu) "
                 "through another allocator than the one it came from, called "
                 "from %s; the block was allocated from %s (without the "
                 "check, that allocator would refuse it or take it for "
                 "its own)",
                 what, mem, len, here, made);
}

/* A free, resize or remap (what: "free", "resize", "remap or realloc")
 * in a call, of the run's block b, through the allocator b came from, which
 * checks no free, at another alignment than b's where either is above
 * BEAM_MAX_ALIGN: the large allocator finds a block's header by its alignment,
 * and reads none at 8 or less. A block of 64 freed or remapped at 8 went to
 * enif_free or enif_realloc by its inner address and crashed the VM (bug
 * hunts, plain make and EUnit; a review, a remap of 100,000 bytes); one
 * freed at another alignment above 8 it refused unless the header's place
 * happened to suit that one, the block left live each run (a review: 40
 * bytes at 4096 freed at 16). Reported as a misuse of the run; the call
 * goes on at b's own alignment (the answer). Two alignments of 8 or less
 * are the same block to both allocators: passed. */
static size_t own_alignment(const plan_ctx *c, const block *b, const char *what,
                            void *mem, size_t alignment, uintptr_t ret) {
    if (b == NULL || !watching_frees(c) || b->alignment == alignment ||
        (b->alignment <= BEAM_MAX_ALIGN && alignment <= BEAM_MAX_ALIGN) ||
        !same_parent(b->parent, through(c)))
        return alignment;
    char here[SITE_TEXT], made[SITE_TEXT];
    describe_both(c->s, ret, b->site, here, made);
    note_misusef(c->s,
                 strcmp(what, "free") == 0 ? BEAM__KIND_WRONG_FREE
                                           : BEAM__KIND_RESIZE,
                 "beam_alloc: fault injection: %s of %p with alignment %zu, "
                 "called from %s; the block's alignment is %zu, allocated "
                 "from %s (the large allocator finds a block's header by "
                 "its alignment: passed on, it could crash the VM or leave "
                 "the block live)",
                 what, mem, alignment, here, b->alignment, made);
    return b->alignment;
}

static bool plan_resize(void *ctx, void *mem, size_t len, size_t alignment,
                        size_t new_len, uintptr_t ret) {
    session *s = ((plan_ctx *)ctx)->s;
    pthread_mutex_lock(&s->lock);
    block *b = find_block(s, mem);
    beam_allocator_t parent = parent_of(ctx, b);
    check_through(ctx, b, "resize", mem, len, ret);
    alignment = own_alignment(ctx, b, "resize", mem, alignment, ret);
    size_t index;
    bool ok =
        parent.vtable != NULL &&
        !growth_fails(s, REQ_RESIZE, len, new_len, ret, &index) &&
        parent.vtable->resize(parent.ctx, mem, len, alignment, new_len, ret);
    if (ok && b != NULL)
        b->len = recorded_len(s, b, new_len);
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static void *plan_remap(void *ctx, void *mem, size_t len, size_t alignment,
                        size_t new_len, uintptr_t ret) {
    session *s = ((plan_ctx *)ctx)->s;
    pthread_mutex_lock(&s->lock);
    block *b = find_block(s, mem);
    beam_allocator_t parent = parent_of(ctx, b);
    check_through(ctx, b, "remap or realloc", mem, len, ret);
    size_t given = alignment; /* the realloc's new block's */
    alignment = own_alignment(ctx, b, "remap or realloc", mem, alignment, ret);
    void *p = NULL;
    size_t index = 0;
    bool fails = growth_fails(s, REQ_REMAP, len, new_len, ret, &index);
    if (parent.vtable != NULL && !fails && would_hold(ctx, len))
        p = parent.vtable->resize(parent.ctx, mem, len, alignment, new_len, ret)
                ? mem
                : NULL;
    else if (parent.vtable != NULL && !fails)
        p = parent.vtable->remap(parent.ctx, mem, len, alignment, new_len, ret);
    /* A block left in a leak_check instance that ended with its call: its
     * memory went with the instance, and a copy would read it. */
    bool gone = b != NULL && b->parent.vtable == NULL;
    if (gone)
        note_misuse(s, BEAM__KIND_RESIZE,
                    "beam_alloc: fault injection: remap or realloc of a block "
                    "left in a leak_check call's allocator after that call "
                    "ended (its memory went with it): nothing copied");
    if (p == NULL && (counting(s) || gone || b != NULL))
        claim_slot(s)->move = (pending_move){
            .set = true,
            .fails = fails || gone,
            .tracked = b != NULL,
            .site = ret,
            .len = new_len,
            .alignment = given,
            .index = b != NULL ? b->index : index,
            .block_site = b != NULL ? b->site : ret,
            .block_run = b != NULL ? b->run : s->run,
            .block_len = b != NULL ? recorded_len(s, b, new_len) : new_len,
            .from = mem,
            .parent = parent,
            .scope = b != NULL ? b->scope : scope_of(ctx),
        };
    if (p != NULL && b != NULL) {
        block moved = *b;
        moved.ptr = p;
        moved.len = recorded_len(s, b, new_len);
        erase_block(s, b);
        add_block(s, &moved);
    }
    pthread_mutex_unlock(&s->lock);
    return p;
}

/* A suspect freed by a call of a later run is still a leak of its own run
 * (a block left in a global and freed by the next call); one freed
 * anywhere else, by a resource destructor, was not leaked. The owner's
 * calls run on one thread at a time: a destructor on another thread while
 * one runs is not that call's doing (the VM runs destructors as scheduler
 * work, never inside a NIF call). So is a free by a thread the call
 * started, or by the owner outside BEAM_NIF calls: such frees of an
 * earlier run's block pass for a destructor's. */
static bool freed_by_a_call(const session *s) {
    return on_the_call_thread(s);
}

/* The free of mem is the one a realloc of this thread makes of the block
 * it just moved (see plan_alloc), which ends that realloc: the library's
 * own, through the allocator the block was reallocated through, not the
 * NIF's. */
static bool ends_move(session *s, const void *mem, uintptr_t ret) {
    move_slot *m = own_slot(s);
    if (m == NULL || m->left.ptr != mem || m->left.ret != ret)
        return false;
    m->left = (moved_from){NULL, 0};
    return true;
}

/* A free in a call of the run's block b, through the allocator b came
 * from, with another length than b's, while that allocator checks no free
 * (raw, large): a general purpose allocator reports it, the raw allocator
 * passes it on and counts the wrong length off its stats (a check passed
 * it: found by a bug hunt). note_other_length reports it as a misuse of
 * the run, and the free goes on with b's own length (counts stay exact). Not
 * for a block of an earlier run (a suspect leak, whose record keeps the
 * length it was allocated with, not its resizes'), nor for a free through
 * another allocator (check_through's), nor on the alignment
 * (own_alignment's). */
static bool freed_with_other_length(const plan_ctx *c, const block *b,
                                    size_t len) {
    return watching_frees(c) && !suspect(c->s, b) && b->len != len &&
           same_parent(b->parent, through(c));
}

static void note_other_length(session *s, const block *b, void *mem, size_t len,
                              uintptr_t ret) {
    char here[SITE_TEXT], made[SITE_TEXT];
    describe_both(s, ret, b->site, here, made);
    note_misusef(s, BEAM__KIND_WRONG_FREE,
                 "beam_alloc: fault injection: free of %p with length %zu, "
                 "called from %s; the block's length is %zu, allocated from "
                 "%s (the call's allocator, raw or large, checks no free: its "
                 "stats would count the wrong length)",
                 mem, len, here, b->len, made);
}

static void plan_free(void *ctx, void *mem, size_t len, size_t alignment,
                      uintptr_t ret) {
    session *s = ((plan_ctx *)ctx)->s;
    if (mem == NULL)
        return; /* NULL: the contract's no-op, also through the vtable */
    pthread_mutex_lock(&s->lock);
    block *b = find_block(s, mem);
    beam_allocator_t parent = parent_of(ctx, b);
    bool realloc_own = ends_move(s, mem, ret);
    if (b != NULL) {
        if (!realloc_own)
            check_through(ctx, b, "free", mem, len, ret);
        if (freed_with_other_length(ctx, b, len)) {
            note_other_length(s, b, mem, len, ret);
            len = b->len;
        }
        /* (A realloc's free of the block it moved: its remap reported
         * the alignment.) */
        alignment = realloc_own
                        ? b->alignment
                        : own_alignment(ctx, b, "free", mem, alignment, ret);
    }
    if (b == NULL && (freed_twice(ctx, mem, len, alignment, ret) ||
                      freed_inside(ctx, mem, len, ret))) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    bool held = parent.vtable != NULL && would_hold(ctx, len);
    if (b != NULL) {
        if (suspect(s, b) && freed_by_a_call(s))
            keep_leak(s, b);
        erase_block(s, b);
    }
    if (held)
        hold_freed(s, mem, len, alignment, ret, parent);
    else if (parent.vtable != NULL)
        parent.vtable->free(parent.ctx, mem, len, alignment, ret);
    pthread_mutex_unlock(&s->lock);
}

static const beam_allocator_vtable plan_vtable = {plan_alloc, plan_resize,
                                                  plan_remap, plan_free};

/* --- What the library copies call --------------------------------------- */

/* The index in libs of the copy whose hooks are hooks, or nlibs. */
static size_t lib_index(const session *s, const beam__fault_hooks *hooks) {
    size_t i = 0;
    while (i < s->nlibs && s->libs[i].hooks != hooks)
        i++;
    return i;
}

static bool has_lib(const session *s, const beam__fault_hooks *hooks) {
    return lib_index(s, hooks) < s->nlibs;
}

/* The running session of pid that app's library takes part in; NULL when
 * there is none. */
static session *running_session(const ErlNifPid *pid,
                                const beam__fault_hooks *app) {
    session *s = NULL;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n_open && s == NULL; i++) {
        session *o = open_sessions[i];
        /* Only the owner's own calls read running and libs (which the
         * owner alone changes): others stop at the pid. */
        if (enif_compare_pids(&o->owner, pid) == 0 && o->running &&
            has_lib(o, app))
            s = o;
    }
    pthread_mutex_unlock(&registry_lock);
    return s;
}

/* The call's allocator (flags: the call's) dies with it: a scratch arena,
 * a leak_check instance. Its blocks take the call's scope. */
static bool dies_with_call(unsigned flags) {
    return (flags & (BEAM__FAULT_SCRATCH | BEAM__FAULT_CALL_LOCAL)) != 0;
}

/* The plan for a call whose allocator is parent (flags: the call's):
 * the running call's for one that dies with the call (a scratch arena, a
 * leak_check instance; a NIF that kept it misuses it anyway), else
 * parent's own, made at its first call (lock held). The overflow plan
 * when MAX_PLANS others are made (a process-wide allocator gets its own
 * all the same), or without memory for one. */
static plan_ctx *plan_for(session *s, beam_allocator_t parent, unsigned flags) {
    if (dies_with_call(flags))
        return &s->running_plan;
    bool unchecked = (flags & BEAM__FAULT_UNCHECKED) != 0;
    /* (Raw and large are unchecked: a copy of the library that sets no
     * PROCESS_WIDE still has them exempt.) */
    bool process_wide = unchecked || (flags & BEAM__FAULT_PROCESS_WIDE);
    unsigned others = 0;
    for (plan_ctx *c = s->plans; c != NULL; c = c->next) {
        if (same_parent(c->parent, parent))
            return c;
        others += !c->process_wide;
    }
    plan_ctx *c =
        process_wide || others < MAX_PLANS ? enif_alloc(sizeof *c) : NULL;
    if (c == NULL)
        return &s->overflow_plan;
    *c = (plan_ctx){s, parent, unchecked, false, process_wide, s->plans};
    s->plans = c;
    return c;
}

static bool driver_enter(const ErlNifPid *pid, const beam__fault_hooks *app,
                         beam_allocator_t parent, unsigned flags,
                         beam__fault_frame *frame, beam_allocator_t *out) {
    session *s = running_session(pid, app);
    if (s == NULL)
        return false;

    pthread_mutex_lock(&s->lock);
    size_t lib = lib_index(s, app);
    if (lib < s->nlibs)
        s->libs[lib].called = true;
    frame->session = s;
    frame->saved_parent = s->parent;
    frame->saved_scope = s->scope;
    frame->reserved[0] = flags;
    frame->reserved[1] = s->unchecked;
    s->parent = parent;
    s->unchecked = (flags & BEAM__FAULT_UNCHECKED) != 0;
    if (dies_with_call(flags)) {
        s->scope = ++s->next_scope;
    } else {
        s->scope = 0;
        s->fallback = parent;
    }
    if (s->depth++ == 0) {
        s->call_thread = pthread_self();
        crash_note_call(s->crash, true);
    }
    plan_ctx *plan = plan_for(s, parent, flags);
    pthread_mutex_unlock(&s->lock);
    *out = (beam_allocator_t){plan, &plan_vtable};
    return true;
}

static void driver_leave(beam__fault_frame *frame) {
    session *s = frame->session;
    unsigned flags = (unsigned)frame->reserved[0];
    pthread_mutex_lock(&s->lock);
    if (s->scope != 0)
        for (size_t i = 0; i < s->blocks_cap; i++) {
            block *b = &s->blocks[i];
            if (b->ptr == NULL || b->ptr == TOMBSTONE || b->scope != s->scope)
                continue;
            if (flags & BEAM__FAULT_SCRATCH)
                /* The arena takes them all back: not leaks. */
                erase_block(s, b);
            else
                /* Left in a leak_check instance: leaks of this run. The
                 * library's copy keeps such an instance (until unload), but
                 * an older copy let it go, and this driver cannot tell
                 * which: a later free goes nowhere (the block stays with
                 * the instance). */
                b->parent.vtable = NULL;
        }
    s->parent = frame->saved_parent;
    s->unchecked = frame->reserved[1] != 0;
    s->scope = frame->saved_scope;
    if (--s->depth == 0) {
        release_all_freed(s);
        crash_note_call(s->crash, false);
    }
    pthread_mutex_unlock(&s->lock);
}

/* A call of the owner misused memory: a problem of the run, whatever the
 * call returned (a NIF without leak_check keeps running after a misuse). */
static void driver_misuse(const ErlNifPid *pid, const beam__fault_hooks *app,
                          const char *kind, const char *line) {
    session *s = running_session(pid, app);
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    note_misuse(s, kind, line);
    pthread_mutex_unlock(&s->lock);
}

/* The block p is, or the one p lies in that starts 8 or 16 bytes before
 * it: beam_malloc & co. hand out a block of most allocators past a header
 * word (src/malloc.c), placed 8 or 16 bytes into the parent block this
 * table records. (Blocks do not overlap: one holds p at most. One left in
 * a leak_check call's instance, its memory gone, is passed over: p may
 * be another's now.) Found by p alone, such a block was taken for an
 * unknown one, which goes to the call's allocator: one kept and sized or
 * freed later, in a call whose allocator is a fixed buffer (or by a
 * destructor after one), lay outside that buffer, and beam_msize said 0
 * and beam_mfree left it live, each reported as a misuse; in a raw call,
 * the parent block's holds check was skipped, and a forged header's size
 * believed (found in review). */
static block *block_at_or_under_header(session *s, const void *p) {
    block *b = find_block(s, p);
    for (uintptr_t back = 8; b == NULL && p != NULL && back <= 16; back += 8) {
        block *h = find_block(s, (const void *)((uintptr_t)p - back));
        if (h != NULL && h->len > back && h->parent.vtable != NULL)
            b = h;
    }
    return b;
}

/* The allocator under plan allocator a that p (NULL: a new block) goes
 * to, as plan_alloc and plan_free choose it (p found as
 * block_at_or_under_header finds it): so that beam_malloc & co.
 * size their blocks by it, as they would without the check. Before, they
 * saw an allocator they did not know and gave every block a header: over
 * a general purpose allocator its free list then covered the header, so
 * a double beam_mfree was reported as a foreign free, and a leak_check
 * instance's canary lay past the header's rounding, so a 2-byte overflow
 * passed (found by a bug hunt). */
static bool driver_under(beam_allocator_t a, const void *p,
                         beam_allocator_t *out) {
    if (a.vtable != &plan_vtable)
        return false;
    session *s = ((plan_ctx *)a.ctx)->s;
    pthread_mutex_lock(&s->lock);
    *out = parent_of(a.ctx, block_at_or_under_header(s, p));
    pthread_mutex_unlock(&s->lock);
    return out->vtable != NULL;
}

static const beam__fault_driver driver = {
    BEAM__FAULT_MAGIC, BEAM__FAULT_VERSION, sizeof(beam__fault_driver),
    driver_enter,      driver_leave,        driver_misuse,
    driver_under,
};

/* --- Finding the libraries -------------------------------------------- */

/* A loaded object: its path, and the span of its loaded segments (0, 0:
 * not known). */
typedef struct object_name {
    char *name;
    uintptr_t lo, hi;
} object_name;

typedef struct name_list {
    object_name *names;
    size_t n, cap;
} name_list;

static void add_name(name_list *l, const char *name, uintptr_t lo,
                     uintptr_t hi) {
    if (name == NULL || name[0] == '\0' ||
        !grow_array((void **)&l->names, &l->cap, l->n + 1, sizeof *l->names))
        return;
    size_t len = strlen(name) + 1;
    char *copy = enif_alloc(len);
    if (copy == NULL)
        return;
    memcpy(copy, name, len);
    l->names[l->n++] = (object_name){copy, lo, hi};
}

#if defined(__APPLE__)
static void list_objects(name_list *l) {
    uint32_t n = _dyld_image_count();
    for (uint32_t i = 0; i < n; i++)
        add_name(l, _dyld_get_image_name(i), 0, 0);
}
#else
/* Names and spans only: no dlopen while the loader's list is being
 * walked. */
static int add_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (start < lo)
            lo = start;
        if (start + ph->p_memsz > hi)
            hi = start + ph->p_memsz;
    }
    if (hi == 0)
        lo = 0;
    add_name(data, info->dlpi_name, lo, hi);
    return 0;
}

static void list_objects(name_list *l) {
    dl_iterate_phdr(add_object, l);
}
#endif

static const beam__fault_hooks *hooks_in(const char *path, void **handle) {
    *handle = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
    if (*handle == NULL)
        return NULL;
    const beam__fault_hooks *h = beam__fault_hooks_at(*handle, path);
    if (h != NULL)
        return h;
    dlclose(*handle);
    *handle = NULL;
    return NULL;
}

/* Is module one the caller asked for (wanted: a list of binaries, or the
 * atom all)? */
static bool wanted(ErlNifEnv *env, ERL_NIF_TERM list, const char *module) {
    if (enif_is_atom(env, list))
        return true;
    ERL_NIF_TERM head, tail = list;
    size_t len = strlen(module);
    while (enif_get_list_cell(env, tail, &head, &tail)) {
        ErlNifBinary bin;
        if (enif_inspect_binary(env, head, &bin) && bin.size == len &&
            memcmp(bin.data, module, len) == 0)
            return true;
    }
    return false;
}

/* Attach to every wanted library not attached yet. */
static void attach_libraries(ErlNifEnv *env, session *s, ERL_NIF_TERM list) {
    name_list l = {NULL, 0, 0};
    list_objects(&l);
    for (size_t i = 0; i < l.n; i++) {
        void *handle;
        const beam__fault_hooks *h = hooks_in(l.names[i].name, &handle);
        enif_free(l.names[i].name);
        if (h == NULL)
            continue;
        const char *module = h->module();
        pthread_mutex_lock(&s->lock);
        /* Not into a closed session: nothing would ever detach it, and
         * the library would stay attached to it, for no later session. */
        bool take = !s->closed && module[0] != '\0' && !has_lib(s, h) &&
                    wanted(env, list, module) &&
                    grow_array((void **)&s->libs, &s->libs_cap, s->nlibs + 1,
                               sizeof *s->libs) &&
                    h->attach(&driver);
        if (take) {
            attached_lib *lib = &s->libs[s->nlibs++];
            lib->hooks = h;
            lib->handle = handle;
            snprintf(lib->module, sizeof lib->module, "%s", module);
            lib->lo = l.names[i].lo;
            lib->hi = l.names[i].hi;
            lib->called = false;
        }
        pthread_mutex_unlock(&s->lock);
        if (!take)
            dlclose(handle);
    }
    enif_free(l.names);
}

/* --- Session lifetime --------------------------------------------------- */

static ErlNifResourceType *session_type;

typedef struct session_ref {
    session *s;
} session_ref;

static void close_session(session *s) {
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n_open; i++)
        if (open_sessions[i] == s) {
            open_sessions[i] = open_sessions[--n_open];
            break;
        }
    pthread_mutex_unlock(&registry_lock);

    pthread_mutex_lock(&s->lock);
    if (s->closed) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    s->closed = true;
    s->running = false;
    int crash = s->crash;
    s->crash = -1;
    attached_lib *libs = s->libs;
    size_t nlibs = s->nlibs;
    s->libs = NULL;
    s->nlibs = s->libs_cap = 0;
    enif_free(s->sites);
    s->sites = NULL;
    s->nsites = s->sites_cap = 0;
    /* (Read only while running, which a closed session never is again.) */
    enif_free(s->misuse);
    s->misuse = NULL;
    s->nmisuse = 0;
    release_all_freed(s);
    enif_free(s->freed);
    s->freed = NULL;
    if (!any_slot_busy(s)) {
        enif_free(s->more);
        s->more = NULL;
    }
    enif_free(s->leaks);
    s->leaks = NULL;
    s->nleaks = s->leaks_cap = 0;
    if (s->blocks_live == 0) {
        enif_free(s->blocks);
        s->blocks = NULL;
        s->blocks_cap = s->blocks_used = 0;
    }
    pthread_mutex_unlock(&s->lock);

    pthread_mutex_lock(&registry_lock);
    crash_note_close(crash);
    pthread_mutex_unlock(&registry_lock);

    for (size_t i = 0; i < nlibs; i++) {
        libs[i].hooks->detach(&driver);
        dlclose(libs[i].handle);
    }
    enif_free(libs);
}

static void session_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    session_ref *ref = obj;
    if (ref->s != NULL)
        close_session(ref->s);
}

/* --- The NIFs ------------------------------------------------------------ */

static ERL_NIF_TERM atom(ErlNifEnv *env, const char *name) {
    return enif_make_atom(env, name);
}

/* The session of argv[0], owned by the caller; NULL otherwise. */
static session *owned_session(ErlNifEnv *env, ERL_NIF_TERM term) {
    session_ref *ref;
    ErlNifPid self;
    if (!enif_get_resource(env, term, session_type, (void **)&ref) ||
        ref->s == NULL || enif_self(env, &self) == NULL ||
        enif_compare_pids(&ref->s->owner, &self) != 0)
        return NULL;
    return ref->s;
}

/* Lists s, opened by self, unless self has a session open already or the
 * list cannot grow. One critical section: with the check and the insert
 * apart (the allocations between them), two processes opening at once
 * both found room for one more and both wrote it, past the array's end
 * when it was full (static-analysis hunt; ASan saw the write). */
typedef enum { LISTED, ALREADY_OPEN, NO_ROOM } listing;

static listing list_session(session *s, const ErlNifPid *self,
                            const ErlNifBinary *caller) {
    listing out = LISTED;
    pthread_mutex_lock(&registry_lock);
    for (size_t i = 0; i < n_open && out == LISTED; i++)
        if (enif_compare_pids(&open_sessions[i]->owner, self) == 0)
            out = ALREADY_OPEN;
    if (out == LISTED && !grow_array((void **)&open_sessions, &open_cap,
                                     n_open + 1, sizeof *open_sessions))
        out = NO_ROOM;
    if (out == LISTED) {
        open_sessions[n_open++] = s;
        s->crash = crash_note_open((const char *)caller->data, caller->size);
    }
    pthread_mutex_unlock(&registry_lock);
    return out;
}

/* The parts of a session never listed (any of them NULL; s's lock not
 * made, or destroyed already). */
static void free_unlisted(session_ref *ref, session *s, misuse_record *misuse,
                          freed_block *freed) {
    if (freed != NULL)
        enif_free(freed);
    if (misuse != NULL)
        enif_free(misuse);
    if (s != NULL)
        enif_free(s);
    if (ref != NULL) {
        ref->s = NULL;
        enif_release_resource(ref);
    }
}

/* open() | open(Caller :: binary()) -> {ok, Session} | {error,
 * already_open | enomem}; Caller says the code that called the check, as a
 * crash during it names it (crash_note_open). */
static ERL_NIF_TERM nif_open(ErlNifEnv *env, int argc,
                             const ERL_NIF_TERM argv[]) {
    ErlNifPid self;
    ErlNifBinary caller = {.size = 0, .data = (unsigned char *)""};
    if (argc == 1 && !enif_inspect_binary(env, argv[0], &caller))
        return badarg_text(env, "open/1 takes a binary");
    if (enif_self(env, &self) == NULL)
        return enif_make_badarg(env);

    session_ref *ref = enif_alloc_resource(session_type, sizeof *ref);
    session *s = enif_alloc(sizeof *s);
    misuse_record *misuse = enif_alloc(MAX_MISUSE * sizeof *misuse);
    freed_block *freed = enif_alloc(FREED_RING * sizeof *freed);
    if (ref == NULL || s == NULL || misuse == NULL || freed == NULL) {
        free_unlisted(ref, s, misuse, freed);
        return enif_make_tuple2(env, atom(env, "error"), atom(env, "enomem"));
    }
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    s->owner = self;
    s->fallback = beam_raw_allocator;
    s->running_plan.s = s;
    s->overflow_plan = (plan_ctx){.s = s, .overflow = true};
    s->fail_index = NEVER;
    s->crash = -1;
    s->misuse = misuse;
    memset(freed, 0, FREED_RING * sizeof *freed);
    s->freed = freed;
    ref->s = s;

    listing listed = list_session(s, &self, &caller);
    if (listed != LISTED) {
        pthread_mutex_destroy(&s->lock);
        free_unlisted(ref, s, misuse, freed);
        return enif_make_tuple2(
            env, atom(env, "error"),
            atom(env, listed == ALREADY_OPEN ? "already_open" : "enomem"));
    }
    ERL_NIF_TERM term = enif_make_resource(env, ref);
    enif_release_resource(ref);
    return enif_make_tuple2(env, atom(env, "ok"), term);
}

/* What attach/2 takes: all, or a proper list of binaries. (Checked whole:
 * wanted() read any atom as all, and skipped other terms, so attach(S,
 * [my_nif]) attached nothing and said nothing.) */
static bool modules_arg(ErlNifEnv *env, ERL_NIF_TERM term) {
    if (enif_is_identical(term, atom(env, "all")))
        return true;
    ERL_NIF_TERM head;
    while (enif_get_list_cell(env, term, &head, &term))
        if (!enif_is_binary(env, head))
            return false;
    return enif_is_empty_list(env, term);
}

/* attach(Session, all | [ModuleName :: binary()]) -> [ModuleName]: every
 * library attached so far (dirty IO: it walks the loader's list); badarg
 * once the session is closed. */
static ERL_NIF_TERM nif_attach(ErlNifEnv *env, int argc,
                               const ERL_NIF_TERM argv[]) {
    (void)argc;
    session *s = owned_session(env, argv[0]);
    if (s == NULL || !modules_arg(env, argv[1]))
        return badarg_text(env, "attach/2 takes an open session of this "
                                "process and all or a list of module names");
    attach_libraries(env, s, argv[1]);
    pthread_mutex_lock(&s->lock);
    if (s->closed) {
        pthread_mutex_unlock(&s->lock);
        return badarg_text(env, "attach/2: the session is closed");
    }
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = s->nlibs; i-- > 0;)
        list =
            enif_make_list_cell(env, text_binary(env, s->libs[i].module), list);
    pthread_mutex_unlock(&s->lock);
    return list;
}

/* begin_run(Session, FailIndex | infinity, record | compare) -> ok */
static ERL_NIF_TERM nif_begin_run(ErlNifEnv *env, int argc,
                                  const ERL_NIF_TERM argv[]) {
    (void)argc;
    session *s = owned_session(env, argv[0]);
    /* infinity first: enif_get_uint64 writes its badarg code (3152 on
     * OTP 25) over index when it fails, which made every first run fail
     * its request 3152. */
    bool infinite = enif_is_identical(argv[1], atom(env, "infinity"));
    ErlNifUInt64 index = NEVER;
    char mode[8];
    if (s == NULL || (!infinite && !enif_get_uint64(env, argv[1], &index)) ||
        !enif_get_atom(env, argv[2], mode, sizeof mode, ERL_NIF_LATIN1) ||
        (strcmp(mode, "record") != 0 && strcmp(mode, "compare") != 0))
        return badarg_text(env, "begin_run/3 takes an open session of this "
                                "process, a failure index (0 to 2^64-1, or "
                                "infinity) and record or compare");

    pthread_mutex_lock(&s->lock);
    bool ok = !s->closed && !s->running;
    if (ok) {
        s->run++;
        s->mode = strcmp(mode, "record") == 0 ? MODE_RECORD : MODE_COMPARE;
        if (s->mode == MODE_RECORD)
            s->nsites = 0;
        s->fail_index = infinite || index > NEVER ? NEVER : (size_t)index;
        s->requests = 0;
        memset(&s->induced, 0, sizeof s->induced);
        memset(&s->mismatch, 0, sizeof s->mismatch);
        s->mismatch_reloaded = 0;
        for (size_t i = 0; i < s->nlibs; i++)
            s->libs[i].called = false;
        s->lost = false;
        for (size_t i = 0; i < n_slots(s); i++)
            slot_at(s, i)->move.set = false;
        s->nmisuse = 0;
        s->running = true;
        crash_note_run_begins(s->crash, s->fail_index != NEVER, s->fail_index);
    }
    pthread_mutex_unlock(&s->lock);
    return ok ? atom(env, "ok")
              : badarg_text(env, "begin_run/3: the session is closed, or "
                                 "a run is under way (end_run/1)");
}

static ERL_NIF_TERM site_term(ErlNifEnv *env, uintptr_t site) {
    char buf[512];
    if (site == 0)
        return atom(env, "undefined");
    return text_binary(env, beam__describe_site(site, buf, sizeof buf));
}

static ERL_NIF_TERM kind_term(ErlNifEnv *env, int kind) {
    return atom(env, kind_text(kind));
}

/* {Index, Kind, Len, Site} */
static ERL_NIF_TERM request_term(ErlNifEnv *env, const request_info *r) {
    if (!r->happened)
        return atom(env, "undefined");
    return enif_make_tuple4(
        env, enif_make_uint64(env, r->index), kind_term(env, r->kind),
        enif_make_uint64(env, r->len), site_term(env, r->site));
}

/* The caller's open session of term, locked, when it is running or not as
 * running says; NULL otherwise. */
static session *lock_owned(ErlNifEnv *env, ERL_NIF_TERM term, bool running) {
    session *s = owned_session(env, term);
    if (s == NULL)
        return NULL;
    pthread_mutex_lock(&s->lock);
    if (s->running != running || s->closed) {
        pthread_mutex_unlock(&s->lock);
        return NULL;
    }
    return s;
}

static ERL_NIF_TERM map_of(ErlNifEnv *env, ERL_NIF_TERM keys[],
                           ERL_NIF_TERM values[], size_t n) {
    ERL_NIF_TERM map;
    if (!enif_make_map_from_arrays(env, keys, values, n, &map))
        return enif_make_badarg(env);
    return map;
}

/* The modules of the copies the run's calls went through (a module
 * twice when two of its copies served). */
static ERL_NIF_TERM called_term(ErlNifEnv *env, const session *s) {
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (size_t i = s->nlibs; i-- > 0;)
        if (s->libs[i].called)
            list = enif_make_list_cell(env, text_binary(env, s->libs[i].module),
                                       list);
    return list;
}

/* end_run(Session) -> #{run, requests, induced, mismatch, reloaded, called,
 *                        lost, misuse, misused}
 * The run's blocks still live are its leak suspects from now on (leaks/1
 * tells which stayed leaks). */
static ERL_NIF_TERM nif_end_run(ErlNifEnv *env, int argc,
                                const ERL_NIF_TERM argv[]) {
    (void)argc;
    session *s = lock_owned(env, argv[0], true);
    if (s == NULL)
        return badarg_text(env, "end_run/1 takes an open session of this "
                                "process with a run under way (begin_run/3)");
    s->running = false;
    crash_note_run_ends(s->crash);

    ERL_NIF_TERM mismatch = atom(env, "undefined");
    if (s->mismatch.happened)
        mismatch = enif_make_tuple2(env, request_term(env, &s->mismatch),
                                    site_term(env, s->mismatch.expected));

    ERL_NIF_TERM misuse = enif_make_list(env, 0);
    for (size_t i = s->nmisuse < MAX_MISUSE ? s->nmisuse : MAX_MISUSE; i-- > 0;)
        misuse = enif_make_list_cell(
            env,
            enif_make_tuple3(env, text_binary(env, s->misuse[i].kind),
                             text_binary(env, s->misuse[i].line),
                             enif_make_uint64(env, s->misuse[i].after)),
            misuse);

    ERL_NIF_TERM reloaded =
        s->mismatch_reloaded != 0
            ? text_binary(env, s->libs[s->mismatch_reloaded - 1].module)
            : atom(env, "undefined");

    ERL_NIF_TERM keys[] = {
        atom(env, "run"),      atom(env, "requests"), atom(env, "induced"),
        atom(env, "mismatch"), atom(env, "reloaded"), atom(env, "called"),
        atom(env, "lost"),     atom(env, "misuse"),   atom(env, "misused")};
    ERL_NIF_TERM values[] = {enif_make_uint(env, s->run),
                             enif_make_uint64(env, s->requests),
                             request_term(env, &s->induced),
                             mismatch,
                             reloaded,
                             called_term(env, s),
                             atom(env, s->lost ? "true" : "false"),
                             misuse,
                             enif_make_uint64(env, s->nmisuse)};
    pthread_mutex_unlock(&s->lock);
    return map_of(env, keys, values, sizeof keys / sizeof keys[0]);
}

/* live(Session) -> leak suspects still live (to wait for resource
 * destructors, which the VM runs a little after the collection that
 * released their resources). */
static ERL_NIF_TERM nif_live(ErlNifEnv *env, int argc,
                             const ERL_NIF_TERM argv[]) {
    (void)argc;
    session *s = owned_session(env, argv[0]);
    if (s == NULL)
        return badarg_text(env, "live/1 takes a session of this process");
    size_t live = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->blocks_cap; i++) {
        const block *b = &s->blocks[i];
        live += live_suspect(s, b);
    }
    pthread_mutex_unlock(&s->lock);
    return enif_make_uint64(env, live);
}

/* Blocks listed at most, per run (the count is always exact). */
#define MAX_REPORTED 100

static uint64_t run_key(const leak_record *r) {
    return r->run;
}
static uint64_t scope_key(const leak_record *r) {
    return r->scope;
}

/* qsort's order of records by key, then by number. */
static int by_key_then_index(const void *a, const void *b,
                             uint64_t (*key)(const leak_record *)) {
    const leak_record *x = a, *y = b;
    uint64_t kx = key(x), ky = key(y);
    if (kx != ky)
        return kx < ky ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int by_run_then_index(const void *a, const void *b) {
    return by_key_then_index(a, b, run_key);
}

/* Every leak, kept apart or a suspect still in the table (reported from
 * now on), sorted by run then number: the caller's to free (lock held). */
static leak_record *take_leaks(session *s, size_t *n) {
    for (size_t i = 0; i < s->blocks_cap; i++) {
        block *b = &s->blocks[i];
        if (!live_suspect(s, b))
            continue;
        keep_leak(s, b);
        b->run = 0; /* reported once */
    }
    leak_record *all = s->leaks;
    *n = s->nleaks;
    s->leaks = NULL;
    s->nleaks = s->leaks_cap = 0;
    if (*n > 1)
        qsort(all, *n, sizeof *all, by_run_then_index);
    return all;
}

/* Where the group of sorted records r that ends at end (not 0) begins:
 * the records before it with its last one's key. */
static size_t group_start(const leak_record *r, size_t end,
                          uint64_t (*key)(const leak_record *)) {
    size_t start = end - 1;
    while (start > 0 && key(&r[start - 1]) == key(&r[end - 1]))
        start--;
    return start;
}

/* Addresses listed at most per leak_check call (its count is exact). */
#define CALL_LOCAL_LISTED 4096

static int by_scope_then_index(const void *a, const void *b) {
    return by_key_then_index(a, b, scope_key);
}

/* [{Count, [Address]}], a leak_check call's blocks of records all[0..n)
 * (one run's): what its instance reported, which lists at most 64 blocks
 * in its own order, not the run's first MAX_REPORTED, then a line "... and
 * N more" (so the count, and every address up to CALL_LOCAL_LISTED). */
static ERL_NIF_TERM call_local_term(ErlNifEnv *env, const leak_record *all,
                                    size_t n) {
    ERL_NIF_TERM calls = enif_make_list(env, 0);
    leak_record *mine = enif_alloc((n ? n : 1) * sizeof *mine);
    if (mine == NULL)
        return calls; /* nothing consumed: the safe side */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].call_local != 0)
            mine[k++] = all[i];
    qsort(mine, k, sizeof *mine, by_scope_then_index);
    for (size_t end = k; end > 0;) {
        size_t start = group_start(mine, end, scope_key);
        size_t count = end - start;
        size_t shown = count < CALL_LOCAL_LISTED ? count : CALL_LOCAL_LISTED;
        ERL_NIF_TERM at = enif_make_list(env, 0);
        for (size_t i = start + shown; i-- > start;)
            at = enif_make_list_cell(
                env, enif_make_uint64(env, mine[i].call_local), at);
        calls = enif_make_list_cell(
            env, enif_make_tuple2(env, enif_make_uint64(env, count), at),
            calls);
        end = start;
    }
    enif_free(mine);
    return calls;
}

/* [{Run, Leaked, [{Index, Len, Site}], CallLocal}] of records sorted by
 * run, CallLocal the run's leak_check calls' blocks (call_local_term). */
static ERL_NIF_TERM runs_term(ErlNifEnv *env, const leak_record *all,
                              size_t n) {
    ERL_NIF_TERM runs = enif_make_list(env, 0);
    for (size_t end = n; end > 0;) {
        size_t start = group_start(all, end, run_key);
        size_t leaked = end - start;
        size_t shown = leaked < MAX_REPORTED ? leaked : MAX_REPORTED;
        ERL_NIF_TERM blocks = enif_make_list(env, 0);
        for (size_t i = start + shown; i-- > start;)
            blocks = enif_make_list_cell(
                env,
                enif_make_tuple3(env, enif_make_uint64(env, all[i].index),
                                 enif_make_uint64(env, all[i].len),
                                 site_term(env, all[i].site)),
                blocks);
        runs = enif_make_list_cell(
            env,
            enif_make_tuple4(env, enif_make_uint(env, all[start].run),
                             enif_make_uint64(env, leaked), blocks,
                             call_local_term(env, all + start, leaked)),
            runs);
        end = start;
    }
    return runs;
}

/* leaks(Session) -> #{runs => [{Run, Leaked, Blocks, CallLocal}], lost}:
 * the leaks of every run since the last call, Blocks the first MAX_REPORTED
 * of each ({Index, Len, Site}), CallLocal its leak_check calls' blocks
 * (call_local_term); lost: some could not be kept (out of memory; which
 * runs' is not known). Between runs. */
static ERL_NIF_TERM nif_leaks(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    session *s = lock_owned(env, argv[0], false);
    if (s == NULL)
        return badarg_text(env, "leaks/1 takes an open session of this "
                                "process between runs");
    size_t n;
    leak_record *all = take_leaks(s, &n);
    bool lost = s->leaks_lost;
    s->leaks_lost = false;
    pthread_mutex_unlock(&s->lock);
    ERL_NIF_TERM runs = runs_term(env, all, n);
    enif_free(all);
    ERL_NIF_TERM keys[] = {atom(env, "runs"), atom(env, "lost")};
    ERL_NIF_TERM values[] = {runs, atom(env, lost ? "true" : "false")};
    return map_of(env, keys, values, 2);
}

/* close(Session) -> ok (idempotent; the destructor does it too) */
static ERL_NIF_TERM nif_close(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    session_ref *ref;
    if (!enif_get_resource(env, argv[0], session_type, (void **)&ref))
        return badarg_text(env, "close/1 takes a session (open/0)");
    if (ref->s != NULL)
        close_session(ref->s);
    return atom(env, "ok");
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)priv;
    (void)info;
    session_type = enif_open_resource_type(
        env, NULL, "beam_alloc_testing_session", session_dtor,
        ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    return session_type == NULL;
}

/* A new version of beam_alloc_testing_nif (c:l/1, a release upgrade) over
 * the same library: it takes the session type over. Without an upgrade
 * callback the VM refused the load ("Upgrade not supported"). */
static int upgrade(ErlNifEnv *env, void **priv, void **old, ERL_NIF_TERM info) {
    (void)old;
    return load(env, priv, info);
}

/* --- Stats --------------------------------------------------------------
 * stats(module_name): the allocator counters of the NIF library loaded for
 * that module, found like the libraries a session attaches to, summed over
 * every copy of it still mapped (take_stats). */

static ERL_NIF_TERM stats_term(ErlNifEnv *env, const beam_alloc_stats *s,
                               const size_t *backing) {
    ERL_NIF_TERM keys[7] = {
        enif_make_atom(env, "live_bytes"),   enif_make_atom(env, "live_blocks"),
        enif_make_atom(env, "peak_bytes"),   enif_make_atom(env, "allocations"),
        enif_make_atom(env, "frees"),        enif_make_atom(env, "failed"),
        enif_make_atom(env, "backing_bytes")};
    ERL_NIF_TERM values[7] = {enif_make_uint64(env, s->live_bytes),
                              enif_make_uint64(env, s->live_blocks),
                              enif_make_uint64(env, s->peak_bytes),
                              enif_make_uint64(env, s->allocations),
                              enif_make_uint64(env, s->frees),
                              enif_make_uint64(env, s->failed),
                              backing != NULL ? enif_make_uint64(env, *backing)
                                              : 0};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, backing != NULL ? 7 : 6, &map);
    return map;
}

/* Calls visit(h, arg) with the hooks of each loaded library built with
 * beam_alloc, each held open for the call, in the dynamic linker's load
 * order, until visit returns true: whether it did. (A session's attach
 * walks the list itself: it keeps the handles it takes.) */
static bool each_library(bool (*visit)(const beam__fault_hooks *h, void *arg),
                         void *arg) {
    name_list l = {NULL, 0, 0};
    list_objects(&l);
    bool stopped = false;
    for (size_t i = 0; i < l.n && !stopped; i++) {
        void *handle = NULL;
        const beam__fault_hooks *h = hooks_in(l.names[i].name, &handle);
        if (h != NULL) {
            stopped = visit(h, arg);
            dlclose(handle);
        }
    }
    for (size_t i = 0; i < l.n; i++)
        enif_free(l.names[i].name);
    enif_free(l.names);
    return stopped;
}

/* with_module_hooks' visit: the libraries of the module named want. */
typedef struct module_visit {
    ErlNifBinary want;
    bool found;
    bool (*take)(const beam__fault_hooks *h, void *arg);
    void *arg;
} module_visit;

static bool visit_module(const beam__fault_hooks *h, void *arg) {
    module_visit *v = arg;
    const char *module = h->module();
    if (strlen(module) == v->want.size &&
        memcmp(module, v->want.data, v->want.size) == 0 && v->take(h, v->arg))
        v->found = true;
    return false;
}

/* Calls take(h, arg) with the hooks of every loaded library whose module
 * is named by the binary name, each held open for the call: whether one
 * took it. Two copies of a module's library are loaded at once after a
 * code upgrade to a new library file, while the old version is not purged,
 * a resource of the old copy keeps it mapped, or a C library's hooks in it
 * do (beam_internal_keep_mapped): stats/1 and collect/1 reach both (a
 * release hunt: reading and collecting the first copy found, the old one,
 * left 212 KB the running copy held). When none took it, *error is what
 * the NIF returns: {badarg, Text} for a name that is no binary, else
 * {error, not_found}. */
static bool with_module_hooks(ErlNifEnv *env, ERL_NIF_TERM name,
                              bool (*take)(const beam__fault_hooks *h,
                                           void *arg),
                              void *arg, ERL_NIF_TERM *error) {
    module_visit v = {.found = false, .take = take, .arg = arg};
    if (!enif_inspect_binary(env, name, &v.want)) {
        *error = badarg_text(env, "stats/1 and collect/1 take a module's "
                                  "name as a binary (atom_to_binary/1)");
        return false;
    }
    each_library(visit_module, &v);
    if (!v.found)
        *error = enif_make_tuple2(env, enif_make_atom(env, "error"),
                                  enif_make_atom(env, "not_found"));
    return v.found;
}

/* The allocators every library has: raw, large, general_purpose (the
 * hooks' stats order). */
#define STATS_KINDS 3
#define GPA_KIND 2

/* One key of stats/1: a reading of named_all (abi.h, its name unused for
 * the three kinds), its counters summed over the copies read. */
typedef beam__named_reading stats_sum;

/* The three every library has, then the named instances of every copy
 * read, one entry a name (enif_alloc'd, grown as names come). */
typedef struct stats_out {
    stats_sum kinds[STATS_KINDS];
    stats_sum *named;
    size_t n, cap;
    bool failed; /* out of memory */
} stats_out;

static void add_stats(stats_sum *to, const beam_alloc_stats *s,
                      size_t backing) {
    to->stats.live_bytes += s->live_bytes;
    to->stats.live_blocks += s->live_blocks;
    to->stats.peak_bytes += s->peak_bytes;
    to->stats.allocations += s->allocations;
    to->stats.frees += s->frees;
    to->stats.failed += s->failed;
    to->backing_bytes += backing;
}

/* The entry of name, added (zero) when new: NULL out of memory. */
static stats_sum *named_sum(stats_out *o, const char *name) {
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->named[i].name, name) == 0)
            return &o->named[i];
    if (o->n == o->cap) {
        size_t cap = o->cap == 0 ? BEAM_STATS_NAMED_MAX : 2 * o->cap;
        stats_sum *grown = enif_realloc(o->named, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        o->named = grown;
        o->cap = cap;
    }
    stats_sum *e = &o->named[o->n++];
    memset(e, 0, sizeof *e);
    strcpy(e->name, name);
    return e;
}

/* Copy h's named instances into out, each name once; how many. A copy
 * with named_all reads them all at once, under its table's lock. An older
 * one reads the i-th name a call at a time: a name registered or
 * unregistered between two calls shifts the rest by one, so a name read
 * at i may come again at i + 1 (it was summed twice); its first reading
 * is kept. (One there may still be missed.) */
static size_t named_of(const beam__fault_hooks *h,
                       stats_sum out[BEAM_STATS_NAMED_MAX]) {
    if (h->size > BEAM__FAULT_HOOKS_V4_SIZE) {
        size_t n = h->named_all(out, BEAM_STATS_NAMED_MAX);
        for (size_t k = 0; k < n; k++) /* (ended inside, whatever it says) */
            out[k].name[sizeof out[k].name - 1] = '\0';
        return n;
    }
    size_t n = 0;
    if (h->size < BEAM__FAULT_HOOKS_V2_SIZE)
        return 0;
    stats_sum e;
    memset(&e, 0, sizeof e);
    for (size_t k = 0; k < BEAM_STATS_NAMED_MAX &&
                       h->named_stats(k, e.name, &e.stats, &e.backing_bytes);
         k++) {
        bool again = false;
        for (size_t j = 0; j < n && !again; j++)
            again = strcmp(out[j].name, e.name) == 0;
        if (!again)
            out[n++] = e;
    }
    return n;
}

/* Adds copy h's counters: every copy of the module's library still mapped
 * counts, not only the one the module runs. An old copy's allocators still
 * hold what the old version left and what others use through it: after a
 * hot upgrade to another file, SQLite kept allocating through the old
 * copy's hooks from the old copy's instance (SQLite is one per process,
 * and the copy whose beam_sqlite3_use succeeded stays mapped), and a
 * stream in a resource the new copy took over did too (zlib, zstd):
 * reading the running copy alone, stats/1 said 0 live while SQLite held
 * hundreds of KB (a review). */
static bool take_stats(const beam__fault_hooks *h, void *arg) {
    stats_out *o = arg;
    beam_alloc_stats s[STATS_KINDS];
    size_t backing = 0;
    stats_sum named[BEAM_STATS_NAMED_MAX];
    h->stats(s, &backing);
    for (size_t k = 0; k < STATS_KINDS; k++)
        add_stats(&o->kinds[k], &s[k], k == GPA_KIND ? backing : 0);
    size_t n = named_of(h, named);
    for (size_t k = 0; k < n; k++) {
        stats_sum *e = named_sum(o, named[k].name);
        if (e == NULL)
            o->failed = true;
        else
            add_stats(e, &named[k].stats, named[k].backing_bytes);
    }
    return true;
}

static ERL_NIF_TERM stats_map(ErlNifEnv *env, const stats_out *o) {
    static const char *const kinds[STATS_KINDS] = {"raw", "large",
                                                   "general_purpose"};
    size_t n = STATS_KINDS + o->n;
    ERL_NIF_TERM *keys = enif_alloc(2 * n * sizeof *keys), map;
    if (keys == NULL)
        return enif_make_badarg(env);
    ERL_NIF_TERM *values = keys + n;
    for (size_t k = 0; k < n; k++) {
        const stats_sum *e =
            k < STATS_KINDS ? &o->kinds[k] : &o->named[k - STATS_KINDS];
        keys[k] = enif_make_atom(env, k < STATS_KINDS ? kinds[k] : e->name);
        /* Raw and large hold no backing of their own. */
        values[k] =
            stats_term(env, &e->stats, k < GPA_KIND ? NULL : &e->backing_bytes);
    }
    bool made = enif_make_map_from_arrays(env, keys, values, n, &map);
    enif_free(keys);
    return made ? enif_make_tuple2(env, enif_make_atom(env, "ok"), map)
                : enif_make_badarg(env);
}

static ERL_NIF_TERM nif_stats(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    stats_out o;
    memset(&o, 0, sizeof o);
    ERL_NIF_TERM result;
    if (with_module_hooks(env, argv[0], take_stats, &o, &result))
        result = o.failed ? enif_raise_exception(env, atom(env, "enomem"))
                          : stats_map(env, &o);
    if (o.named != NULL)
        enif_free(o.named);
    return result;
}

/* --- Collect ------------------------------------------------------------
 * collect(module_name): beam_gpa_collect on the process-wide general
 * purpose allocator of every copy of the NIF library loaded for that
 * module (an old one a resource keeps mapped after an upgrade too): ok, or
 * {error, not_found}. Dirty: a collection walks what the instance holds. */

/* Libraries older than the collect hook are passed over. */
static bool take_collect(const beam__fault_hooks *h, void *arg) {
    (void)arg;
    if (h->size < BEAM__FAULT_HOOKS_V3_SIZE)
        return false;
    h->collect();
    return true;
}

static ERL_NIF_TERM nif_collect(ErlNifEnv *env, int argc,
                                const ERL_NIF_TERM argv[]) {
    (void)argc;
    ERL_NIF_TERM error;
    return with_module_hooks(env, argv[0], take_collect, NULL, &error)
               ? enif_make_atom(env, "ok")
               : error;
}

/* --- Holdings -----------------------------------------------------------
 * holdings(): for every loaded library built with beam_alloc that can be
 * collected, what its general purpose allocators (the process-wide one,
 * its named instances and its GPA resources) hold of their backing, keep live,
 * and have done:
 * [{ModuleName, Held, Live, Ops}] (Ops: allocations plus frees, which stand
 * still while nothing uses them). beam_alloc_collector collects a library
 * that holds much more than it keeps live once its Ops stood still for a
 * while: memory other threads freed goes back to the VM without a call to
 * collect/1 (a hunt's idle VM held 199 MB with no block live). */

typedef beam__holding holding;

static void add_holding(holding *x, const beam_alloc_stats *s, size_t backing) {
    x->held += backing;
    x->live += s->live_bytes;
    x->ops += s->allocations + s->frees;
}

/* The library's general purpose allocators: the process-wide one, the
 * named instances and, from copies that tell, its GPA resources (a
 * resource's freed burst was held until its release). */
static holding holding_of(const beam__fault_hooks *h) {
    holding x = {0, 0, 0};
    beam_alloc_stats s[STATS_KINDS];
    size_t backing = 0;
    stats_sum named[BEAM_STATS_NAMED_MAX];
    h->stats(s, &backing);
    add_holding(&x, &s[GPA_KIND], backing);
    size_t n = named_of(h, named);
    for (size_t k = 0; k < n; k++)
        add_holding(&x, &named[k].stats, named[k].backing_bytes);
    if (h->size >= BEAM__FAULT_HOOKS_V7_SIZE) {
        holding r;
        h->resources_holding(&r);
        x.held += r.held;
        x.live += r.live;
        x.ops += r.ops;
    }
    return x;
}

typedef struct holdings_out {
    ErlNifEnv *env;
    ERL_NIF_TERM list;
} holdings_out;

static bool add_library_holding(const beam__fault_hooks *h, void *arg) {
    holdings_out *o = arg;
    const char *module = h->module();
    /* Libraries older than the collect hook, or not loaded yet. */
    if (h->size < BEAM__FAULT_HOOKS_V3_SIZE || module[0] == '\0')
        return false;
    holding x = holding_of(h);
    ERL_NIF_TERM name;
    size_t len = strlen(module);
    memcpy(enif_make_new_binary(o->env, len, &name), module, len);
    o->list = enif_make_list_cell(
        o->env,
        enif_make_tuple4(o->env, name, enif_make_uint64(o->env, x.held),
                         enif_make_uint64(o->env, x.live),
                         enif_make_uint64(o->env, x.ops)),
        o->list);
    return false;
}

static ERL_NIF_TERM nif_holdings(ErlNifEnv *env, int argc,
                                 const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    holdings_out o = {env, enif_make_list(env, 0)};
    each_library(add_library_holding, &o);
    return o.list;
}

static ErlNifFunc funcs[] = {
    {"stats", 1, nif_stats, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"collect", 1, nif_collect, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"holdings", 0, nif_holdings, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"open", 0, nif_open, 0},
    {"open", 1, nif_open, 0},
    {"attach", 2, nif_attach, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"begin_run", 3, nif_begin_run, 0},
    {"end_run", 1, nif_end_run, 0},
    {"live", 1, nif_live, 0},
    {"leaks", 1, nif_leaks, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"close", 1, nif_close, 0},
};

ERL_NIF_INIT(beam_alloc_testing_nif, funcs, load, NULL, upgrade, NULL)
