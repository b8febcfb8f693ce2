/*
 * Frame capture for allocation sites (see frames.h).
 *
 * Capture walks frame pointers: two loads per frame, no unwinder, no
 * locks, no allocation on the common path (a per-thread cache, else a
 * lock-free depot lookup). An unwinder reading .eh_frame costs
 * microseconds per allocation; this costs the dependent loads of the walk,
 * about 15 ns for six frames (make bench: gpa_frames against gpa_track),
 * which safe mode's fills dwarf and tracked mode pays only when asked
 * (BEAM_GPA_FRAMES).
 * The price: frames of code built without frame pointers are skipped or
 * cut the walk short. The library builds with -fno-omit-frame-pointer, and
 * the guide asks the same of NIFs; the innermost frame (ret, passed down by
 * the calling helper) is exact either way.
 *
 * Safety: a frame pointer is followed only while it stays inside the
 * calling thread's stack, moves up, and is aligned; so code without frame
 * pointers (rbp holding anything) can end the walk early but never make it
 * read outside the stack.
 *
 * One exception: an allocation whose caller (ret) lies outside the module
 * this copy of beam_alloc is linked into comes from another library's code
 * (zstd, zlib, SQLite, libstdc++ calling the hooks), built without frame
 * pointers: the walk would skip from the hook to the NIF's own caller and
 * never name the NIF's line that called the library. Those stacks are
 * walked by the unwinder (_Unwind_Backtrace, from .eh_frame), found at run
 * time, so that nothing new is linked: microseconds, but only for those
 * allocations, and only in the modes that keep stacks.
 */
#define _GNU_SOURCE
#include "frames.h"
#include "gpa_internal.h" /* the instance registry, for the unload */

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#if defined(__linux__)
#include <dlfcn.h>
#include <link.h>
#include <unwind.h>
#define HAVE_UNWINDER 1
#endif

/* --- The calling thread's stack ------------------------------------------- */

typedef struct stack_bounds {
    uintptr_t lo, hi; /* hi == 0: unknown (yet), 1: cannot be known */
} stack_bounds;

static BEAM_THREAD_LOCAL stack_bounds bounds;

BEAM_THREAD_LOCAL uintptr_t beam__frames_stop;

static BEAM__NOINLINE void find_bounds(void) {
    bounds.hi = 1;
#if defined(__APPLE__)
    pthread_t self = pthread_self();
    uintptr_t top = (uintptr_t)pthread_get_stackaddr_np(self);
    bounds.lo = top - pthread_get_stacksize_np(self);
    bounds.hi = top;
#elif defined(__linux__)
    pthread_attr_t attr;
    void *addr;
    size_t size;
    /* Once per thread (it may read /proc/self/maps for the main thread). */
    if (pthread_getattr_np(pthread_self(), &attr) != 0)
        return;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0 && size != 0) {
        bounds.lo = (uintptr_t)addr;
        bounds.hi = (uintptr_t)addr + size;
    }
    pthread_attr_destroy(&attr);
#endif
    /* Elsewhere the stack is not known: one frame, the call site. */
}

/* The walk reads other frames' saved words, which ASan has no business
 * checking: the bounds keep every read inside this thread's stack. Its
 * callers carry the same attribute, since it is inlined into them. */
#if defined(__clang__) || defined(__GNUC__)
#define WALKS __attribute__((no_sanitize_address))
#define WALK_INLINE __attribute__((always_inline, no_sanitize_address))
#else
#define WALKS
#define WALK_INLINE
#endif

/* A return address as a frame record holds it. On arm64 built with
 * pointer authentication (-mbranch-protection=pac-ret or standard, the
 * default of some distributions' compilers), the saved return address
 * carries a signature in its upper bits on processors that have it
 * (Armv8.3 and later): taken off with xpaclri, which works on x30 alone
 * and is a no-op (a hint) on processors without it. ret needs none: the
 * compilers take it off __builtin_return_address. Found under qemu's
 * "max" processor (make cross-test): no frame matched ret, and every stack
 * was its call site alone. */
static inline WALK_INLINE uintptr_t saved_pc(uintptr_t pc) {
#if defined(__aarch64__)
    __asm__("mov x30, %1\n\thint #7\n\tmov %0, x30"
            : "=r"(pc)
            : "r"(pc)
            : "x30");
#endif
    return pc;
}

/* Walk up from the calling function's frame (walk is inlined: one frame
 * fewer to climb); out[0] = ret, then the return addresses above the frame
 * that returns to ret. */
static inline WALK_INLINE size_t walk(uintptr_t ret, uintptr_t *out, size_t n) {
    out[0] = ret;
    if (n <= 1 || ret == 0)
        return 1;
    if (BEAM__UNLIKELY(bounds.hi == 0))
        find_bounds();
    uintptr_t hi = bounds.hi;
    uintptr_t fp = (uintptr_t)__builtin_frame_address(0);
    /* Frames only move up from here: this one is the lowest to accept. */
    uintptr_t lo = fp;
    uintptr_t stop = beam__frames_stop;
    if (hi <= 1 || fp < bounds.lo || fp >= hi)
        return 1;
    size_t got = 1;
    bool found = false;
    /* The library's own frames between here and ret: a handful. */
    for (unsigned steps = 0; steps < 12 + BEAM__MAX_FRAMES && got < n;
         steps++) {
        if (fp < lo || fp > hi - 2 * sizeof(uintptr_t) ||
            (fp & (sizeof(uintptr_t) - 1)) != 0)
            break;
        const uintptr_t *frame = (const uintptr_t *)fp;
        uintptr_t next = frame[0], pc = saved_pc(frame[1]);
        /* pc returns into the frame at next: the glue's, past the stop.
         * And no frame of the body's lies at or above the glue's: fp is
         * there only from a body built without frame pointers whose rbp
         * held some pointer into the scheduler's stack (env), whose words
         * made a frame no code of the NIF's was. */
        if (found && stop != 0 && (next >= stop || fp >= stop))
            break;
        if (found) {
            if (pc == 0)
                break;
            out[got++] = pc;
        } else if (pc == ret) {
            found = true;
        } else if (steps >= 12) {
            break; /* ret is not on this chain (code without frames) */
        }
        if (next <= fp)
            break;
        fp = next;
    }
    return got;
}

#if HAVE_UNWINDER
/* --- Stacks through other libraries' code ---------------------------------
 * The text of this module (the NIF library, or the program) and the
 * unwinder's entry points, found once. */

static struct {
    pthread_once_t once;
    uintptr_t lo, hi; /* this module's executable segment(s) */
    _Unwind_Reason_Code (*backtrace)(_Unwind_Trace_Fn, void *);
    _Unwind_Ptr (*get_ip)(struct _Unwind_Context *);
    _Unwind_Word (*get_cfa)(struct _Unwind_Context *);
} unwinder = {.once = PTHREAD_ONCE_INIT};

static int own_segments(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    uintptr_t me = (uintptr_t)arg, lo = UINTPTR_MAX, hi = 0;
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        lo = a < lo ? a : lo;
        hi = a + ph->p_memsz > hi ? a + ph->p_memsz : hi;
    }
    if (me < lo || me >= hi)
        return 0;
    unwinder.lo = lo;
    unwinder.hi = hi;
    return 1;
}

static void unwinder_find(void) {
    dl_iterate_phdr(own_segments, (void *)(uintptr_t)&unwinder_find);
    /* libgcc_s is in the VM already (the JIT is C++); a C program may
     * need it loaded. Never unloaded: its functions stay in use. */
    void *lib = dlopen("libgcc_s.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL)
        lib = dlopen("libgcc_s.so.1", RTLD_NOW);
    void *from = lib != NULL ? lib : RTLD_DEFAULT;
    *(void **)&unwinder.get_ip = dlsym(from, "_Unwind_GetIP");
    *(void **)&unwinder.get_cfa = dlsym(from, "_Unwind_GetCFA");
    if (unwinder.get_ip != NULL && unwinder.get_cfa != NULL)
        *(void **)&unwinder.backtrace = dlsym(from, "_Unwind_Backtrace");
}

static bool own_pc(uintptr_t pc) {
    return pc >= unwinder.lo && pc < unwinder.hi;
}

/* ret is in another module's code, and the unwinder is there to walk it. */
static bool walk_by_unwinder(uintptr_t ret) {
    pthread_once(&unwinder.once, unwinder_find);
    return unwinder.backtrace != NULL && !own_pc(ret);
}

/* Frames the unwinder passes over, past the n kept, looking for this
 * module's first (see reach_own). */
#define REACH_MORE 64

typedef struct unwind_walk {
    uintptr_t ret, stop, *out;
    size_t n, got;
    unsigned steps;
    bool reach;       /* go on to this module's first frame (reach_own) */
    bool seeking;     /* the n are kept, none of them this module's */
    unsigned skipped; /* frames passed over since */
} unwind_walk;

/* The n frames kept hold one of this module's code (out[0], ret, never). */
static bool kept_own(const unwind_walk *w) {
    for (size_t i = 1; i < w->got; i++)
        if (own_pc(w->out[i]))
            return true;
    return false;
}

/* A library's calls from the NIF's line to its allocation can be more
 * than the n frames kept (SQLite's often are: 49 of 64 blocks of a leaked
 * connection named none of the NIF's lines at 6), and the NIF's line is
 * the one its author needs. So the walk goes on, at most REACH_MORE
 * frames and never past the glue's, to this module's first frame, and
 * keeps it last, after a gap marker in place of the library's frames it
 * leaves out: the first max(n - 2, 1) frames, the gap, the NIF's. At most
 * max(n, 3) in all. END: the walk is over. */
static _Unwind_Reason_Code reach_own(unwind_walk *w, uintptr_t pc) {
    if (!w->seeking) {
        if (!w->reach || kept_own(w))
            return _URC_END_OF_STACK;
        w->seeking = true;
    }
    if (pc == 0 || w->skipped >= REACH_MORE)
        return _URC_END_OF_STACK;
    if (!own_pc(pc)) {
        w->skipped++;
        return _URC_NO_REASON;
    }
    size_t keep = w->n > 3 ? w->n - 2 : 1;
    w->out[keep] = BEAM__FRAMES_GAP;
    w->out[keep + 1] = pc;
    w->got = keep + 2;
    return _URC_END_OF_STACK;
}

/* One frame, innermost first: skip the library's own up to ret, then keep
 * return addresses until n, or until the glue's frame, as walk does. The
 * context's CFA is that of the frame called from this one: the frame that
 * holds the address kept last, whose base (below its return address and
 * saved frame pointer) at or above the stop is the glue's, so that address
 * returns into the glue and goes too. */
static _Unwind_Reason_Code unwind_step(struct _Unwind_Context *ctx, void *arg) {
    unwind_walk *w = arg;
    uintptr_t pc = (uintptr_t)unwinder.get_ip(ctx);
    if (w->got == 0) {
        if (pc == w->ret)
            w->out[w->got++] = pc;
        else if (++w->steps > 12)
            return _URC_END_OF_STACK; /* ret is not on this stack */
        return _URC_NO_REASON;
    }
    uintptr_t base = (uintptr_t)unwinder.get_cfa(ctx) - 2 * sizeof(uintptr_t);
    if (w->stop != 0 && base >= w->stop) {
        if (w->got > 1 && !w->seeking)
            w->got--;
        return _URC_END_OF_STACK;
    }
    if (w->got == w->n)
        return reach_own(w, pc);
    if (pc == 0)
        return _URC_END_OF_STACK;
    w->out[w->got++] = pc;
    return _URC_NO_REASON;
}

/* reach: go on to this module's first frame when the n kept hold none
 * (reach_own): out has room for 3 frames then, whatever n. */
static BEAM__NOINLINE size_t unwind(uintptr_t ret, uintptr_t *out, size_t n,
                                    bool reach) {
    unwind_walk w = {ret, beam__frames_stop, out, n, 0, 0, reach, false, 0};
    unwinder.backtrace(unwind_step, &w);
    if (w.got == 0)
        out[w.got++] = ret;
    return w.got;
}

#else
static bool walk_by_unwinder(uintptr_t ret) {
    (void)ret;
    return false;
}
static size_t unwind(uintptr_t ret, uintptr_t *out, size_t n, bool reach) {
    (void)n;
    (void)reach;
    out[0] = ret;
    return 1;
}
#endif

/* walk, or the unwinder for a stack entered from another library (reach:
 * see unwind). */
static inline WALK_INLINE size_t walk_any(uintptr_t ret, uintptr_t *out,
                                          size_t n, bool reach) {
    if (n > 1 && ret != 0 && walk_by_unwinder(ret))
        return unwind(ret, out, n, reach);
    return walk(ret, out, n);
}

WALKS size_t beam__stack_above(uintptr_t ret, uintptr_t *out, size_t n) {
    if (n == 0)
        return 0;
    /* (Not on to this module's frame: out may hold n alone, and the fault
     * driver, whose copy's module is not the NIF's, finds its own.) */
    return walk_any(ret, out, n > BEAM__MAX_FRAMES ? BEAM__MAX_FRAMES : n,
                    false);
}

/* --- The depot ----------------------------------------------------------- *
 * Open addressing over a fixed table of entry pointers: readers probe with
 * acquire loads and no lock; inserts take the mutex, fill the entry, then
 * publish it with a release store. Entries come from chunks of the system
 * backend and are never freed; when the table or the byte budget is full,
 * capture falls back to the single frame. */

#define DEPOT_SLOTS 16384 /* power of two; 128 KiB of zero pages */
#define DEPOT_MAX_ENTRIES (DEPOT_SLOTS * 3 / 4)
#define DEPOT_CHUNK 65536
#define DEPOT_MAX_CHUNKS 64 /* 4 MiB of stacks at most */
#define CHUNK_HEADER 16     /* the link to the previous chunk */

static struct {
    _Atomic(beam__trace *) slot[DEPOT_SLOTS];
    pthread_mutex_t lock;
    size_t entries;
    char *chunk; /* current chunk: [chunk + used, chunk + DEPOT_CHUNK) free */
    size_t used;
    unsigned chunks;
} depot = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint32_t hash_of(const uintptr_t *pc, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint64_t)pc[i];
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    return (uint32_t)h;
}

static inline bool same_pcs(const beam__trace *t, const uintptr_t *pc,
                            size_t n) {
    if (t->n != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (t->pc[i] != pc[i])
            return false;
    return true;
}

static bool same(const beam__trace *t, uint32_t hash, const uintptr_t *pc,
                 size_t n) {
    return t->hash == hash && same_pcs(t, pc, n);
}

static beam__trace *depot_find(uint32_t hash, const uintptr_t *pc, size_t n,
                               size_t *empty) {
    for (size_t i = hash & (DEPOT_SLOTS - 1);;
         i = (i + 1) & (DEPOT_SLOTS - 1)) {
        beam__trace *t = beam__atomic_load_acquire(&depot.slot[i]);
        if (t == NULL) {
            *empty = i;
            return NULL;
        }
        if (same(t, hash, pc, n))
            return t;
    }
}

void beam__frames_fork(beam__fork_phase phase) {
    beam__fork_mutex(&depot.lock, phase);
}

static BEAM__NOINLINE beam__trace *depot_insert(uint32_t hash,
                                                const uintptr_t *pc, size_t n) {
    size_t bytes = sizeof(beam__trace) + n * sizeof(uintptr_t);
    beam__trace *t = NULL;
    beam__fork_guard();
    pthread_mutex_lock(&depot.lock);
    size_t empty;
    /* Again under the lock: another thread may have added it. */
    t = depot_find(hash, pc, n, &empty);
    if (t == NULL && depot.entries < DEPOT_MAX_ENTRIES) {
        if (depot.chunk == NULL || depot.used + bytes > DEPOT_CHUNK) {
            char *c = depot.chunks < DEPOT_MAX_CHUNKS
                          ? (char *)beam__sys_alloc(DEPOT_CHUNK)
                          : NULL;
            if (c != NULL) {
                /* Chained through their first word, for the unload. */
                memcpy(c, &depot.chunk, sizeof depot.chunk);
                depot.chunk = c;
                depot.used = CHUNK_HEADER;
                depot.chunks++;
            }
        }
        if (depot.chunk != NULL && depot.used + bytes <= DEPOT_CHUNK) {
            t = (beam__trace *)(depot.chunk + depot.used);
            depot.used += bytes;
            t->hash = hash;
            t->n = (uint32_t)n;
            memcpy(t->pc, pc, n * sizeof *pc);
            depot.entries++;
            beam__atomic_store_release(&depot.slot[empty], t);
        }
    }
    pthread_mutex_unlock(&depot.lock);
    return t;
}

/* A NIF library's copy of this code goes away with the library, and the
 * depot with it, once no allocator instance is left whose sites could
 * point into it (as the GPA's own globals, gpa_heap.c). Nothing of this
 * copy runs after its destructors. */
__attribute__((destructor)) static void depot_unload(void) {
    if (!beam__gpa_registry_empty())
        return;
    char *c = depot.chunk;
    while (c != NULL) {
        char *prev;
        memcpy(&prev, c, sizeof prev);
        beam__sys_free(c);
        c = prev;
    }
    depot.chunk = NULL;
}

/* Each thread remembers the last stack it stored per call site (direct
 * mapped on ret): a program allocates from few stacks, again and again,
 * and a hit costs a compare of a few words instead of a hash and a probe
 * of the shared table. */
#define CACHE_SLOTS BEAM__TRACE_CACHE_SLOTS

/* The depot's entry for pc[0..n), tagged, or pc[0] when the depot is
 * full. c: the caller's cached entry for these frames' site, updated. */
static uintptr_t intern(const uintptr_t *pc, size_t n, const beam__trace **c) {
    if (BEAM__LIKELY(*c != NULL && same_pcs(*c, pc, n)))
        return (uintptr_t)*c | BEAM__SITE_TRACE;
    uint32_t hash = hash_of(pc, n);
    size_t empty;
    beam__trace *t = depot_find(hash, pc, n, &empty);
    if (BEAM__UNLIKELY(t == NULL))
        t = depot_insert(hash, pc, n);
    if (t == NULL)
        return pc[0];
    *c = t;
    return (uintptr_t)t | BEAM__SITE_TRACE;
}

WALKS uintptr_t beam__trace_capture(uintptr_t ret, unsigned depth) {
    uintptr_t pc[BEAM__MAX_FRAMES];
    size_t n = walk_any(
        ret, pc, depth > BEAM__MAX_FRAMES ? BEAM__MAX_FRAMES : depth, true);
    if (n <= 1)
        return ret;
    /* (The cache lives in the thread's cold block: without one, a dummy.) */
    beam__thread_cold *cold = beam__cold();
    const beam__trace *none = NULL;
    return intern(
        pc, n,
        cold != NULL
            ? &cold->trace_cache[(ret ^ (ret >> 6)) & (CACHE_SLOTS - 1)]
            : &none);
}

uintptr_t beam__trace_intern(const uintptr_t *pc, size_t n) {
    if (n <= 1)
        return n == 1 ? pc[0] : 0;
    const beam__trace *none = NULL;
    return intern(pc, n > BEAM__MAX_FRAMES ? BEAM__MAX_FRAMES : n, &none);
}

size_t beam__site_copy(uintptr_t site, uintptr_t *out, size_t n) {
    const uintptr_t *pcs = NULL;
    size_t k = beam__site_frames(&site, &pcs);
    k = k < n ? k : n;
    for (size_t i = 0; i < k; i++)
        out[i] = pcs[i];
    return k;
}

/* --- Text ---------------------------------------------------------------- */

#if HAVE_UNWINDER
static int code_segment(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    const uintptr_t call = *(const uintptr_t *)arg;
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && call >= a &&
            call - a < ph->p_memsz)
            return 1;
    }
    return 0;
}

/* pc, a frame's saved return address, returns into some module's code. A
 * body built without frame pointers can leave rbp at its own words (below
 * the glue's frame, so the walk cannot tell them from a frame), whose
 * second the walk kept as a return address: data ("<- nif.so+0x2ea9f", a
 * static of the NIF's) or a heap address. Asked here, when a report is
 * written, not on each allocation's walk. */
static bool returns_into_code(uintptr_t pc) {
    uintptr_t call = pc - 1;
    return dl_iterate_phdr(code_segment, &call) != 0;
}
#else
static bool returns_into_code(uintptr_t pc) {
    (void)pc;
    return true;
}
#endif

/* A frame, or a gap's marker (BEAM__FRAMES_GAP), which no symbolizer
 * takes for a site (nothing of it reads lib.so+0x..). */
static void describe_frame(uintptr_t pc, char *buf, size_t n) {
    if (beam__frames_gap(pc))
        snprintf(buf, n, "%s", BEAM__FRAMES_GAP_TEXT);
    else
        beam__describe_addr(pc, buf, n);
}

/* Appends frame text one to buf (len bytes of it used), after " <- "
 * unless first, whole or not at all: a site cut short ("lib.so+0x3c" of
 * "lib.so+0x3cc4") would name another line. room: bytes of buf it may
 * fill, the final NUL among them. */
static bool append_frame(char *buf, size_t *len, size_t room, const char *one) {
    if (*len + 1 >= room)
        return false;
    int w = snprintf(buf + *len, room - *len, "%s%s", *len ? " <- " : "", one);
    if (w < 0 || (size_t)w >= room - *len) {
        buf[*len] = '\0';
        return false;
    }
    *len += (size_t)w;
    return true;
}

/* Room kept for the gap, between " <- "s, before the last frame. */
#define GAP_ROOM (sizeof " <-  <- " + sizeof BEAM__FRAMES_GAP_TEXT)

/* A trace that ends with a gap and this module's frame (reach_own) keeps
 * them when its text is too long for buf: the frame is the one the walk
 * went on for (the NIF's line), so the library's frames before the gap go
 * first, into it. */
const char *beam__describe_frames(const uintptr_t *all, size_t count, char *buf,
                                  size_t n) {
    size_t len = 0;
    buf[0] = '\0';
    if (count == 0)
        return beam__describe_addr(0, buf, n);
    /* The call (the first, exact) and the frames that return into code
     * (returns_into_code). */
    uintptr_t pcs[BEAM__MAX_FRAMES];
    size_t kept = 0;
    for (size_t i = 0; i < count && kept < BEAM__MAX_FRAMES; i++)
        if (i == 0 || beam__frames_gap(all[i]) || returns_into_code(all[i]))
            pcs[kept++] = all[i];
    count = kept;
    char one[512], last[512];
    bool gap = count >= 3 && beam__frames_gap(pcs[count - 2]);
    size_t head = gap ? count - 2 : count, room = n;
    if (gap) {
        describe_frame(pcs[count - 1], last, sizeof last);
        size_t tail = GAP_ROOM + strlen(last);
        room = tail < n / 2 ? n - tail : n / 2;
    }
    size_t i = 0;
    /* (The first frame, the call that allocated, in any room there is.) */
    for (; i < head; i++) {
        describe_frame(pcs[i], one, sizeof one);
        if (!append_frame(buf, &len, i == 0 ? n : room, one))
            break;
    }
    if (!gap || i == 0)
        return buf;
    if (append_frame(buf, &len, n, BEAM__FRAMES_GAP_TEXT))
        append_frame(buf, &len, n, last);
    return buf;
}

const char *beam__describe_site(uintptr_t site, char *buf, size_t n) {
    const uintptr_t *pcs = NULL;
    size_t count = beam__site_frames(&site, &pcs);
    return beam__describe_frames(pcs, count, buf, n);
}
