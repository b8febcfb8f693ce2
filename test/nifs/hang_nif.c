/*
 * NIFs for the hang hunt (test/hang_test.exs): compositions of allocators
 * used at once from schedulers, dirty schedulers and threads of the
 * library's own, with release hooks that stop those threads, report
 * floods, yielding calls and a fork while all of it runs. Module
 * BeamAlloc.Test.Hang.
 */
#include "nif_util.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

/* A named instance over the process-wide one (BeamAlloc.stats/1 lists it,
 * BeamAlloc.collect/1 collects it). */
static beam_gpa_t named_gpa;

static beam_allocator_t named(void) {
    return beam_gpa_allocator(&named_gpa);
}

/* Blocks handed from one thread to another, freed by whoever takes them:
 * process-wide blocks, freed on another thread than their own. */
#define SLOTS 64
static _Atomic(unsigned char *) shared_slots[SLOTS];

/* A block of a at least 16 bytes that knows its length. */
static unsigned char *block_new(beam_allocator_t a, uint64_t *state) {
    uint64_t x = next_random(state);
    size_t len = x % 8 == 0 ? 8193 + (x >> 8) % 70000 : 16 + (x >> 8) % 600;
    unsigned char *p = beam_alloc(a, unsigned char, len);
    if (p != NULL)
        memcpy(p, &len, sizeof len);
    return p;
}

static void block_free(beam_allocator_t a, unsigned char *p) {
    if (p == NULL)
        return;
    size_t len;
    memcpy(&len, p, sizeof len);
    beam_free(a, p, len);
}

/* One round of a thread or a call: blocks of a kept in a local ring, one
 * block of the process-wide instance passed to whoever comes next. */
static void churn_round(beam_allocator_t a, _Atomic(unsigned char *) *slots,
                        uint64_t *state) {
    unsigned char *mine = block_new(a, state);
    size_t k = next_random(state) % SLOTS;
    block_free(a, atomic_exchange(&slots[k], mine));
    unsigned char *g = block_new(beam_general_purpose_allocator, state);
    block_free(beam_general_purpose_allocator,
               atomic_exchange(&shared_slots[next_random(state) % SLOTS], g));
    block_free(named(), block_new(named(), state));
}

/* --- Resources with threads of their own -------------------------------- */

#define MAX_THREADS 8
typedef struct workers {
    _Atomic bool stop;
    _Atomic bool stopped; /* the hook ran: the memory goes right after */
    int n;
    ErlNifTid tids[MAX_THREADS];
    beam_resource_t *r;
    _Atomic uint64_t rounds;
    _Atomic(unsigned char *) slots[SLOTS];
} workers;

static void *worker(void *arg) {
    workers *w = arg;
    uint64_t state = (uint64_t)(uintptr_t)&state;
    beam_allocator_t a = beam_resource_allocator(w->r);
    while (!atomic_load(&w->stop)) {
        churn_round(a, w->slots, &state);
        atomic_fetch_add(&w->rounds, 1);
    }
    return NULL;
}

/* The release hook: the threads go before the memory does. */
static void stop_workers(beam_resource_t *r) {
    workers *w = beam_resource_user_data(r);
    atomic_store(&w->stop, true);
    for (int i = 0; i < w->n; i++)
        enif_thread_join(w->tids[i], NULL);
    w->n = 0;
    atomic_store(&w->stopped, true);
}

static bool parent_of(ErlNifEnv *env, ERL_NIF_TERM kind, ERL_NIF_TERM over,
                      beam_allocator_t *out) {
    beam_resource_t *p;
    if (enif_is_identical(kind, enif_make_atom(env, "gpa")))
        *out = beam_general_purpose_allocator;
    else if (enif_is_identical(kind, enif_make_atom(env, "named")))
        *out = named();
    else if (enif_is_identical(kind, enif_make_atom(env, "raw")))
        *out = beam_raw_allocator;
    else if (enif_is_identical(kind, enif_make_atom(env, "beam")))
        *out = beam_allocator;
    else if (beam_resource_get(env, over, &p))
        *out = beam_resource_allocator(p); /* the caller keeps p alive */
    else
        return false;
    return true;
}

/* res_new(Kind, ParentKind, Over, Threads): a resource of Kind (gpa or
 * arena) over ParentKind (gpa, named, raw, beam, or res: Over's allocator,
 * which the caller keeps alive longer), with Threads threads churning
 * through it until its release hook stops them. */
BEAM_NIF(res_new) {
    unsigned threads;
    beam_allocator_t parent;
    if (!parent_of(env, argv[1], argv[2], &parent) ||
        !enif_get_uint(env, argv[3], &threads) || threads > MAX_THREADS)
        return enif_make_badarg(env);
    beam_resource_kind kind =
        enif_is_identical(argv[0], enif_make_atom(env, "gpa"))
            ? BEAM_RESOURCE_GPA
            : BEAM_RESOURCE_ARENA;
    ERL_NIF_TERM term;
    beam_resource_t *r =
        beam_resource_new(env, kind, parent, sizeof(workers), &term);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    workers *w = beam_resource_user_data(r);
    w->r = r;
    if (!beam_resource_on_release(r, stop_workers))
        return beam_make_error(env, "released");
    for (unsigned i = 0; i < threads; i++) {
        if (enif_thread_create("hang_worker", &w->tids[w->n], worker, w,
                               NULL) != 0)
            break;
        w->n++;
    }
    return make_ok(env, term);
}

static ERL_NIF_TERM churn_impl(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    beam_resource_t *r;
    unsigned n;
    if (!beam_resource_get(env, argv[0], &r) ||
        !enif_get_uint(env, argv[1], &n))
        return enif_make_badarg(env);
    uint64_t state = (uint64_t)(uintptr_t)&state ^ n;
    _Atomic(unsigned char *) local[SLOTS] = {NULL};
    if (!beam_resource_pin(r))
        return enif_make_atom(env, "released");
    beam_allocator_t a = beam_resource_allocator(r);
    for (unsigned i = 0; i < n; i++) {
        churn_round(a, local, &state);
        block_free(beam_allocator, block_new(beam_allocator, &state));
    }
    for (size_t k = 0; k < SLOTS; k++)
        block_free(a, atomic_load(&local[k]));
    beam_resource_unpin(r);
    return enif_make_atom(env, "ok");
}
NIF_WITH_DIRTY_TWIN(churn, churn_impl)

/* release(Res): now, on this scheduler: the hook joins the threads. A
 * release that lands while a thread is inside the allocator leaves the
 * hook and the memory to a later one (or to the destructor): released
 * again until the hook ran, so that a resource over this one's allocator
 * can go after it. */
BEAM_NIF(release) {
    beam_resource_t *r;
    if (!beam_resource_get(env, argv[0], &r))
        return enif_make_badarg(env);
    workers *w = beam_resource_user_data(r);
    unsigned tries = 0;
    for (;;) {
        beam_resource_release(r);
        tries++;
        if (atomic_load(&w->stopped))
            return enif_make_uint(env, tries);
        if (tries == 50000) /* a thread inside, off its core: 5 s */
            return enif_make_atom(env, "timeout");
        struct timespec t = {0, 100000};
        nanosleep(&t, NULL);
    }
}

/* --- Report floods ------------------------------------------------------ */

static void double_frees(unsigned n) {
    for (unsigned i = 0; i < n; i++) {
        void *p = beam_alloc(beam_general_purpose_allocator, uint64_t, 3);
        beam_free(beam_general_purpose_allocator, (uint64_t *)p, 3);
        beam_free(beam_general_purpose_allocator, (uint64_t *)p, 3);
    }
}

/* flood(N): N double frees, N reports, from this call. */
BEAM_NIF(flood) {
    unsigned n;
    if (!enif_get_uint(env, argv[0], &n))
        return enif_make_badarg(env);
    double_frees(n);
    return enif_make_atom(env, "ok");
}

static void *flood_thread(void *arg) {
    double_frees((unsigned)(uintptr_t)arg);
    return NULL;
}

/* thread_flood(Threads, N): N reports from each of Threads threads of
 * our own, joined here (a dirty scheduler). */
BEAM_NIF(thread_flood) {
    unsigned threads, n;
    ErlNifTid tids[MAX_THREADS];
    if (!enif_get_uint(env, argv[0], &threads) || threads > MAX_THREADS ||
        !enif_get_uint(env, argv[1], &n))
        return enif_make_badarg(env);
    unsigned made = 0;
    for (; made < threads; made++)
        if (enif_thread_create("hang_flood", &tids[made], flood_thread,
                               (void *)(uintptr_t)n, NULL) != 0)
            break;
    for (unsigned i = 0; i < made; i++)
        enif_thread_join(tids[i], NULL);
    return enif_make_uint(env, made);
}

/* --- Yielding calls ----------------------------------------------------- */

static ERL_NIF_TERM slice(ErlNifEnv *env, const ERL_NIF_TERM argv[],
                          beam_nif_body_fn self, const char *name) {
    unsigned n;
    if (!enif_get_uint(env, argv[0], &n))
        return enif_make_badarg(env);
    uint64_t state = n * 2654435761u + 1;
    unsigned char *kept[16];
    for (int i = 0; i < 16; i++)
        kept[i] = block_new(beam_allocator, &state);
    for (int i = 0; i < 16; i++)
        block_free(beam_allocator, kept[i]);
    if (n == 0)
        return enif_make_atom(env, "ok");
    ERL_NIF_TERM next = enif_make_uint(env, n - 1);
    return enif_schedule_nif(env, name, 0, self, 1, &next);
}

BEAM_NIF(yield_scratch, .scratch = true) {
    return slice(env, argv, yield_scratch, "yield_scratch");
}

BEAM_NIF(yield_checked, .leak_check = true) {
    return slice(env, argv, yield_checked, "yield_checked");
}

BEAM_NIF(yield_both, .leak_check = true, .scratch = true) {
    return slice(env, argv, yield_both, "yield_both");
}

/* --- fork --------------------------------------------------------------- */

static void child_work(void) {
    uint64_t state = 12345;
    beam_allocator_t all[] = {beam_general_purpose_allocator, named(),
                              beam_raw_allocator, beam_large_allocator,
                              beam_allocator};
    for (int round = 0; round < 200; round++)
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++)
            block_free(all[k], block_new(all[k], &state));
    beam_gpa_collect(&beam_general_purpose_allocator_instance);
    beam_gpa_collect(&named_gpa);
}

/* fork_child(Ms, Work): fork while the other threads run; the child
 * allocates and frees through every allocator of the library (Work true;
 * else nothing, the parent's fork handlers alone), says so on a pipe and
 * exits (the VM may reap it: SIGCHLD ignored, so no waitpid). ok, or
 * child_hung when it had not said so after Ms milliseconds (killed). */
BEAM_NIF(fork_child) {
    unsigned ms;
    int fds[2];
    if (!enif_get_uint(env, argv[0], &ms) || pipe(fds) != 0)
        return enif_make_badarg(env);
    bool work = enif_is_identical(argv[1], enif_make_atom(env, "true"));
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        if (work)
            child_work();
        ssize_t w = write(fds[1], "k", 1);
        _exit(w == 1 ? 0 : 1);
    }
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return beam_make_error(env, "fork");
    }
    struct pollfd p = {fds[0], POLLIN, 0};
    char c = 0;
    bool done = poll(&p, 1, (int)ms) == 1 && read(fds[0], &c, 1) == 1;
    close(fds[0]);
    if (done)
        return enif_make_atom(env, "ok");
    kill(pid, SIGKILL);
    return enif_make_tuple2(env, enif_make_atom(env, "child_hung"),
                            enif_make_int(env, (int)pid));
}

/* --- Module ------------------------------------------------------------- */

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    beam_gpa_init(&named_gpa, beam_general_purpose_allocator);
    return beam_stats_register("hang_named", named()) ? 0 : 1;
}

/* A hot upgrade from the same file: the copy, and all it runs, stays. */
static int upgrade(ErlNifEnv *env, void **priv, void **old_priv,
                   ERL_NIF_TERM info) {
    (void)env;
    (void)info;
    *priv = *old_priv;
    return 0;
}

static ErlNifFunc funcs[] = {
    {"res_new", 4, res_new, 0},
    {"churn", 2, churn, 0},
    {"churn_dirty", 2, churn_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"release", 1, release, 0},
    {"flood", 1, flood, 0},
    {"thread_flood", 2, thread_flood, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"yield_scratch", 1, yield_scratch, 0},
    {"yield_checked", 1, yield_checked, 0},
    {"yield_both", 1, yield_both, 0},
    {"fork_child", 2, fork_child, ERL_NIF_DIRTY_JOB_IO_BOUND},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Hang, funcs, load, upgrade, NULL)
