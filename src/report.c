/*
 * Where diagnostics go. One hook for the whole library, a line per call.
 * Allocators report from inside the call that found the misuse, but never
 * with one of their locks held (the GPA releases its instance lock first:
 * see the lock order in gpa_internal.h), so the hook may take locks of its
 * own; it must not allocate through the allocator that reports.
 *
 * The hook and its user pointer change together under a read-write lock
 * that every report holds while it calls the hook: a report never sees one
 * hook with the other's pointer, and once beam_set_report_hook returns, no
 * thread is still inside the old hook (its user data may be freed). Reports
 * are rare and the readers share the lock, so it costs them nothing that
 * matters. A hook must not set the hook (it would wait for itself).
 *
 * A fork does not take this lock (fork.c): a hook may read the named stats
 * or fork itself, and the fork handler, holding the named stats' lock (or
 * called from the hook), would wait for the hook for good. Instead a
 * writer publishes the hook, its user pointer and the default as one
 * state (states[] and at), so a fork in the middle of a change leaves the
 * child the old or the new one, never a mix; and the child makes the lock
 * anew, held for reading as often as its one thread is inside the hook.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>
#if defined(__linux__)
#include <link.h>
#endif
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void report_to_stderr(void *user, const char *line) {
    (void)user;
    fprintf(stderr, "%s\n", line);
}

/* The default: stderr, or inside a BEAM the logger (nif/report.c installs
 * it at load). A hook the user set stays in place either way. */
typedef struct hook_state {
    beam_report_fn fallback; /* the default */
    beam_report_fn fn;       /* the hook in place (the default included) */
    void *user;
} hook_state;

static struct {
    pthread_rwlock_t lock;
    hook_state states[2];
    _Atomic unsigned at; /* states[at] is in place; the other, a writer's */
} hook = {PTHREAD_RWLOCK_INITIALIZER,
          {{report_to_stderr, report_to_stderr, NULL}},
          0};

/* This thread's read holds of the lock (the child takes them again). */
static BEAM_THREAD_LOCAL unsigned reading;

static void read_lock(void) {
    pthread_rwlock_rdlock(&hook.lock);
    reading++;
}

static void read_unlock(void) {
    reading--;
    pthread_rwlock_unlock(&hook.lock);
}

/* Under the lock (either way): the state in place. */
static const hook_state *state_now(void) {
    return &hook.states[beam__atomic_load_acquire(&hook.at)];
}

/* Under the write lock: the state after `now`, filled in by the caller,
 * then put in place by publish. */
static hook_state *state_next(void) {
    hook_state *next = &hook.states[beam__atomic_load_relaxed(&hook.at) ^ 1];
    *next = *state_now();
    return next;
}

static void publish(void) {
    beam__atomic_store_release(&hook.at,
                               beam__atomic_load_relaxed(&hook.at) ^ 1);
}

/* Under the lock. What set/get return for the hook in place: NULL for the
 * default, so that setting it back restores the default. */
static void current_unsafe(beam_report_fn *fn, void **user) {
    const hook_state *now = state_now();
    bool is_default = now->fn == now->fallback;
    if (fn != NULL)
        *fn = is_default ? NULL : now->fn;
    if (user != NULL)
        *user = is_default ? NULL : now->user;
}

void beam_exchange_report_hook(beam_report_fn fn, void *user,
                               beam_report_fn *old_fn, void **old_user) {
    beam__fork_guard();
    pthread_rwlock_wrlock(&hook.lock);
    current_unsafe(old_fn, old_user);
    hook_state *next = state_next();
    next->fn = fn != NULL ? fn : next->fallback;
    next->user = fn != NULL ? user : NULL;
    publish();
    pthread_rwlock_unlock(&hook.lock);
}

beam_report_fn beam_set_report_hook(beam_report_fn fn, void *user) {
    beam_report_fn old;
    beam_exchange_report_hook(fn, user, &old, NULL);
    return old;
}

void beam_get_report_hook(beam_report_fn *fn, void **user) {
    read_lock();
    current_unsafe(fn, user);
    read_unlock();
}

void beam__report_set_default(beam_report_fn fn) {
    pthread_rwlock_wrlock(&hook.lock);
    hook_state *next = state_next();
    if (next->fn == next->fallback)
        next->fn = fn;
    next->fallback = fn;
    publish();
    pthread_rwlock_unlock(&hook.lock);
}

/* Nothing taken (see the top of the file). The child makes the lock anew:
 * the other threads' holds went with them, and a writer's, which an
 * unlock would not drop there either (glibc tells a writer's unlock by the
 * thread id, new in the child). Its one thread, if inside the hook (a
 * hook that forked), holds it again for reading. */
void beam__report_fork(beam__fork_phase phase) {
    if (phase != BEAM__FORK_CHILD)
        return;
    pthread_rwlock_init(&hook.lock, NULL);
    for (unsigned i = 0; i < reading; i++)
        pthread_rwlock_rdlock(&hook.lock);
}

void beam__report_to_stderr(const char *line) {
    report_to_stderr(NULL, line);
}

void beam__report_line(const char *line) {
    beam__fork_guard();
    read_lock();
    const hook_state *now = state_now();
    now->fn(now->user, line);
    read_unlock();
}

void beam__report(const char *fmt, ...) {
    char line[BEAM__REPORT_LINE];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    beam__report_line(line);
}

void beam__report_misuse(const char *kind, uintptr_t ret, const char *fmt,
                         ...) {
    char site[BEAM__CALLER_SAID], line[BEAM__REPORT_LINE];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* The site after the text, cut like one snprintf of both would be. */
    size_t used = n < 0                     ? 0
                  : (size_t)n < sizeof line ? (size_t)n
                                            : sizeof line - 1;
    snprintf(line + used, sizeof line - used, " (%s)",
             beam__caller_said(ret, site, sizeof site));
    if (kind != NULL)
        beam__misuse_note(kind, line);
    beam__report_line(line);
}

void beam__assert_fail(const char *what, const char *file, int line) {
    /* Straight to stderr: the hook may need the very state that broke. */
    fprintf(stderr, "beam_alloc: internal check failed: %s (%s:%d)\n", what,
            file, line);
    abort();
}

/* --- Misuse seen by this thread ------------------------------------------ */

BEAM_THREAD_LOCAL beam__misuse_record beam__misuse;

char *beam__misuse_line(void) {
    beam__thread_cold *c = beam__cold();
    return c != NULL ? c->misuse_line : NULL;
}

void beam__misuse_note(const char *kind, const char *line) {
    beam__misuse_record *m = &beam__misuse;
    if (m->count == m->watch_from) {
        m->kind = kind;
        char *buf = beam__misuse_line();
        if (buf != NULL)
            snprintf(buf, BEAM__MISUSE_LINE, "%.*s", BEAM__MISUSE_LINE - 1,
                     line);
    }
    m->count++;
}

#ifdef BEAM_ALLOC_STANDALONE
const beam__call_end *beam__call_end_for_tests;
#endif

const char *beam__found_at_call_end(char *buf, size_t n) {
    const beam__call_end *end = beam__call_ending();
    if (end == NULL)
        return NULL;
    end->found(end, buf, n);
    return buf;
}

const char *beam__caller_said(uintptr_t ret, char *buf, size_t n) {
    if (beam__found_at_call_end(buf, n) != NULL)
        return buf;
    char site[512];
    snprintf(buf, n, "called from %s",
             beam__describe_addr(ret, site, sizeof site));
    return buf;
}

/* --- Code addresses ------------------------------------------------------ */

static const char *base_name(const char *path) {
    const char *base = path;
    for (const char *s = path; *s; s++)
        if (*s == '/')
            base = s + 1;
    return base;
}

#if defined(__linux__)
typedef struct same_base {
    const char *base;
    unsigned n;
} same_base;

static int count_same_base(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    same_base *s = data;
    if (info->dlpi_name != NULL && info->dlpi_name[0] != '\0' &&
        strcmp(base_name(info->dlpi_name), s->base) == 0)
        s->n++;
    return s->n > 1;
}
#endif

/* Is base the base name of more than one loaded object (two NIF libraries
 * both called nif.so, in two applications' priv)? Then only the path says
 * which one a site is in. Reports are rare: one walk of the loader's list
 * per site costs nothing that matters (dladdr takes the same lock). */
static bool base_is_shared(const char *base) {
#if defined(__linux__)
    same_base s = {base, 0};
    dl_iterate_phdr(count_same_base, &s);
    return s.n > 1;
#else
    (void)base;
    return false;
#endif
}

/* Sites are return addresses; the call is the instruction before. Any
 * address inside the call instruction names the call's line, and the
 * return address may already be the next line's. The object is named by
 * its base name ("lib.so+0x1c1b"), or by its path when another loaded
 * object has the same base name: whoever reads the site (the symbolizer,
 * addr2line) must not take one for the other. */
const char *beam__describe_addr(uintptr_t addr, char *buf, size_t n) {
    Dl_info info;
    if (addr == 0) {
        snprintf(buf, n, "unknown site");
        return buf;
    }
    uintptr_t call = addr - 1;
    if (dladdr((void *)call, &info) != 0 && info.dli_fname != NULL) {
        const char *file = base_name(info.dli_fname);
        if (file != info.dli_fname && base_is_shared(file))
            file = info.dli_fname;
        unsigned long off = (unsigned long)(call - (uintptr_t)info.dli_fbase);
        int w =
            info.dli_sname != NULL
                ? snprintf(buf, n, "%s (%s+0x%lx)", info.dli_sname, file, off)
                : snprintf(buf, n, "%s+0x%lx", file, off);
        /* Never a site cut short: its offset would name another line. */
        if (w >= 0 && (size_t)w < n)
            return buf;
    }
    snprintf(buf, n, "0x%lx", (unsigned long)call);
    return buf;
}
