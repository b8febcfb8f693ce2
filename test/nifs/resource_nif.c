/*
 * Resource-scoped allocators (beam_resource_*) as the tests use them: one
 * call makes a resource, later calls (from any process) allocate blocks
 * in it, write and read them, free them, release it. Loaded by
 * BeamAlloc.Test.Resource (test/support/resource.ex).
 *
 * Blocks are named by slot numbers, not addresses: each resource's user
 * area holds a table of slots, each a pointer to a block that carries its
 * own length. A slot is claimed by compare-and-swap, so processes can
 * allocate into one resource at once; who frees a slot is the tests'
 * business (one owner at a time, handed over by message).
 */
#include "nif_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define SLOTS 4096

typedef struct block {
    size_t len; /* data bytes */
    unsigned char data[];
} block;

/* The user area of every resource made here. */
typedef struct area {
    _Atomic(block *) slots[SLOTS];
    atomic_uint hint;       /* where the next claim starts looking */
    beam_failing_t failing; /* the parent, for new_failing/2 only */
} area;

#define BLOCK_ALIGN BEAM_ALIGNOF(block)

static size_t block_total(size_t len) {
    return sizeof(block) + len;
}

static bool get_kind(ErlNifEnv *env, ERL_NIF_TERM term,
                     beam_resource_kind *kind) {
    char name[16];
    if (!enif_get_atom(env, term, name, sizeof name, ERL_NIF_LATIN1))
        return false;
    if (strcmp(name, "gpa") == 0)
        *kind = BEAM_RESOURCE_GPA;
    else if (strcmp(name, "arena") == 0)
        *kind = BEAM_RESOURCE_ARENA;
    else
        return false;
    return true;
}

static ERL_NIF_TERM kind_atom(ErlNifEnv *env, beam_resource_kind kind) {
    return enif_make_atom(env, kind == BEAM_RESOURCE_GPA     ? "gpa"
                               : kind == BEAM_RESOURCE_ARENA ? "arena"
                                                             : "unknown");
}

/* The resource in argv[i], or badarg: wrong types must raise
 * ArgumentError, never crash. */
#define GET_RESOURCE(i, r)                                                     \
    beam_resource_t *r;                                                        \
    if (!beam_resource_get(env, argv[i], &r))                                  \
        return enif_make_badarg(env);                                          \
    area *r##_area = beam_resource_user_data(r);                               \
    (void)r##_area

static bool get_slot(ErlNifEnv *env, ERL_NIF_TERM term, unsigned *slot) {
    return enif_get_uint(env, term, slot) && *slot < SLOTS;
}

/* An allocation failed: say why. */
static ERL_NIF_TERM alloc_error(ErlNifEnv *env, beam_resource_t *r) {
    return beam_make_error(env, beam_resource_is_released(r) ? "released"
                                                             : "enomem");
}

/* new(kind) */
BEAM_NIF(new) {
    beam_resource_kind kind;
    if (!get_kind(env, argv[0], &kind))
        return enif_make_badarg(env);
    ERL_NIF_TERM term;
    if (!beam_resource_new(env, kind, beam_large_allocator, sizeof(area),
                           &term))
        return beam_make_error(env, "enomem");
    return make_ok(env, term);
}

/* new_here(kind), and the same in a leak_check and in a scratch call: over
 * beam_allocator, which in those two (and under fault injection) is the
 * call's own allocator, gone at its return: the resource takes the one
 * beam_allocator is without them (the raw allocator here). */
static ERL_NIF_TERM new_over_beam_allocator(ErlNifEnv *env,
                                            const ERL_NIF_TERM argv[]) {
    beam_resource_kind kind;
    if (!get_kind(env, argv[0], &kind))
        return enif_make_badarg(env);
    ERL_NIF_TERM term;
    if (!beam_resource_new(env, kind, beam_allocator, sizeof(area), &term))
        return beam_make_error(env, "enomem");
    return make_ok(env, term);
}

BEAM_NIF(new_here) {
    return new_over_beam_allocator(env, argv);
}
BEAM_NIF(new_here_checked, .leak_check = true) {
    return new_over_beam_allocator(env, argv);
}
BEAM_NIF(new_here_scratch, .scratch = true) {
    return new_over_beam_allocator(env, argv);
}

/* new_raw(kind): over beam_raw_allocator, with no user area (so no slots:
 * only for aligned/3). */
BEAM_NIF(new_raw) {
    beam_resource_kind kind;
    if (!get_kind(env, argv[0], &kind))
        return enif_make_badarg(env);
    ERL_NIF_TERM term;
    if (!beam_resource_new(env, kind, beam_raw_allocator, 0, &term))
        return beam_make_error(env, "enomem");
    return make_ok(env, term);
}

/* new_child(kind, parent): a resource over parent's allocator (a
 * connection's GPA with a request's arena over it, say). The parent's term
 * may go first: the child keeps the parent alive. A released parent
 * refuses the child: {error, enomem}, reported. new_bare_child: the same
 * with no user area (none of the slot NIFs apply to it), cheap enough for
 * chains of 100 000. */
static ERL_NIF_TERM child_of(ErlNifEnv *env, const ERL_NIF_TERM argv[],
                             size_t user_size) {
    beam_resource_kind kind;
    if (!get_kind(env, argv[0], &kind))
        return enif_make_badarg(env);
    GET_RESOURCE(1, parent);
    ERL_NIF_TERM term;
    if (!beam_resource_new(env, kind, beam_resource_allocator(parent),
                           user_size, &term))
        return beam_make_error(env, "enomem");
    return make_ok(env, term);
}

BEAM_NIF(new_child) {
    return child_of(env, argv, sizeof(area));
}

BEAM_NIF(new_bare_child) {
    return child_of(env, argv, 0);
}

/* new_failing(kind, fail_index): over a failing allocator (a static of
 * this library, so it outlives every resource over it). For one test at a
 * time: the failing allocator is not thread-safe. */
static beam_failing_t failing;

BEAM_NIF(new_failing) {
    beam_resource_kind kind;
    size_t fail_index;
    if (!get_kind(env, argv[0], &kind) || !get_size(env, argv[1], &fail_index))
        return enif_make_badarg(env);
    beam_failing_init(&failing, beam_raw_allocator, fail_index);
    ERL_NIF_TERM term;
    if (!beam_resource_new(env, kind, beam_failing_allocator(&failing),
                           sizeof(area), &term))
        return beam_make_error(env, "enomem");
    return make_ok(env, term);
}

/* new_cycle(kind): a resource over an arena that is then made over the
 * resource's own allocator, a cycle: its first allocation used to recurse
 * (GPA kind) or wait for its own lock for ever (arena kind). The arena is
 * a static, re-made by each call (a call at a time: not thread-safe). */
static beam_arena_t cycle_arena;

BEAM_NIF(new_cycle) {
    beam_resource_kind kind;
    if (!get_kind(env, argv[0], &kind))
        return enif_make_badarg(env);
    beam_arena_init(&cycle_arena, beam_raw_allocator);
    ERL_NIF_TERM term;
    beam_resource_t *r = beam_resource_new(
        env, kind, beam_arena_allocator(&cycle_arena), sizeof(area), &term);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    beam_arena_init(&cycle_arena, beam_resource_allocator(r));
    return make_ok(env, term);
}

/* cross_cycle(): two arena resources built on each other. Each one's
 * parent is a rendezvous: an allocator that waits (up to 5 s) until both
 * threads have reached theirs, then asks the other resource. Two threads
 * allocate at once, one in each resource: each arena's first chunk takes
 * its thread, holding its own resource's lock, to the rendezvous, then to
 * the other resource, whose lock the other thread holds. They used to wait
 * for each other for ever. Now the one that closes the cycle fails; the
 * other then comes back to its own lock through the first resource's
 * parent and fails too. {ok, [Result1, Result2]} (each ok or enomem), or
 * {error, hung} when a thread is not done within 20 s (it is then left to
 * its fate, with its resources kept). A dirty IO NIF: it waits. One call
 * at a time: the rendezvous are statics. */
typedef struct rendezvous {
    atomic_bool here;
    struct rendezvous *other;
    beam_allocator_t target;
} rendezvous;

static rendezvous rendezvous_at[2];

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static void *rendezvous_alloc(void *ctx, size_t len, size_t alignment,
                              uintptr_t ret) {
    rendezvous *rv = ctx;
    atomic_store(&rv->here, true);
    for (int i = 0; i < 5000 && !atomic_load(&rv->other->here); i++)
        sleep_ms(1);
    return rv->target.vtable->alloc(rv->target.ctx, len, alignment, ret);
}

static bool rendezvous_resize(void *ctx, void *mem, size_t len,
                              size_t alignment, size_t new_len, uintptr_t ret) {
    (void)ctx, (void)mem, (void)len, (void)alignment, (void)new_len, (void)ret;
    return false;
}

static void *rendezvous_remap(void *ctx, void *mem, size_t len,
                              size_t alignment, size_t new_len, uintptr_t ret) {
    (void)ctx, (void)mem, (void)len, (void)alignment, (void)new_len, (void)ret;
    return NULL;
}

static void rendezvous_free(void *ctx, void *mem, size_t len, size_t alignment,
                            uintptr_t ret) {
    rendezvous *rv = ctx;
    rv->target.vtable->free(rv->target.ctx, mem, len, alignment, ret);
}

static const beam_allocator_vtable rendezvous_vtable = {
    rendezvous_alloc, rendezvous_resize, rendezvous_remap, rendezvous_free};

typedef struct cross_job {
    beam_resource_t *r;
    bool got;
    atomic_bool done;
} cross_job;

static cross_job cross_jobs[2];

static void *cross_job_run(void *arg) {
    cross_job *j = arg;
    beam_allocator_t a = beam_resource_allocator(j->r);
    void *p = beam_alloc_bytes(a, 1000, 8);
    j->got = p != NULL;
    if (p != NULL)
        beam_free_bytes(a, p, 1000, 8);
    atomic_store(&j->done, true);
    return NULL;
}

/* Both jobs done within ms milliseconds. */
static bool cross_jobs_done(int ms) {
    for (int waited = 0; waited < ms; waited += 10) {
        if (atomic_load(&cross_jobs[0].done) &&
            atomic_load(&cross_jobs[1].done))
            return true;
        sleep_ms(10);
    }
    return false;
}

BEAM_NIF(cross_cycle) {
    (void)argv;
    beam_resource_t *r[2];
    ERL_NIF_TERM terms[2];
    for (int i = 0; i < 2; i++) {
        atomic_store(&rendezvous_at[i].here, false);
        rendezvous_at[i].other = &rendezvous_at[1 - i];
        beam_allocator_t parent = {&rendezvous_at[i], &rendezvous_vtable};
        r[i] =
            beam_resource_new(env, BEAM_RESOURCE_ARENA, parent, 0, &terms[i]);
        if (r[i] == NULL)
            return beam_make_error(env, "enomem");
    }
    rendezvous_at[0].target = beam_resource_allocator(r[1]);
    rendezvous_at[1].target = beam_resource_allocator(r[0]);
    ErlNifTid tid[2];
    for (int i = 0; i < 2; i++) {
        cross_jobs[i].r = r[i];
        cross_jobs[i].got = false;
        atomic_store(&cross_jobs[i].done, false);
    }
    for (int i = 0; i < 2; i++)
        if (enif_thread_create("beam_alloc_cross", &tid[i], cross_job_run,
                               &cross_jobs[i], NULL) != 0) {
            /* One that started meets nobody: it fails alone (its own lock,
             * reached again), after the rendezvous gives up. */
            for (int k = 0; k < i; k++)
                enif_thread_join(tid[k], NULL);
            return enif_raise_exception(env, enif_make_atom(env, "thread"));
        }
    if (!cross_jobs_done(20000)) {
        beam_resource_keep(r[0]); /* the threads still use them */
        beam_resource_keep(r[1]);
        return beam_make_error(env, "hung");
    }
    for (int i = 0; i < 2; i++)
        enif_thread_join(tid[i], NULL);
    ERL_NIF_TERM results[2];
    for (int i = 0; i < 2; i++)
        results[i] = enif_make_atom(env, cross_jobs[i].got ? "ok" : "enomem");
    return make_ok(env, enif_make_list_from_array(env, results, 2));
}

/* Store b in a free slot; -1 when all are taken. */
static int claim(area *ar, block *b) {
    unsigned start = atomic_fetch_add(&ar->hint, 1);
    for (unsigned i = 0; i < SLOTS; i++) {
        unsigned k = (start + i) % SLOTS;
        block *expected = NULL;
        if (atomic_load_explicit(&ar->slots[k], memory_order_relaxed) == NULL &&
            atomic_compare_exchange_strong(&ar->slots[k], &expected, b))
            return (int)k;
    }
    return -1;
}

static ERL_NIF_TERM alloc_into(ErlNifEnv *env, beam_resource_t *r, size_t len) {
    area *ar = beam_resource_user_data(r);
    if (ar == NULL)
        return enif_make_badarg(env);
    beam_allocator_t a = beam_resource_allocator(r);
    block *b = beam_alloc_bytes(a, block_total(len), BLOCK_ALIGN);
    if (b == NULL)
        return alloc_error(env, r);
    b->len = len;
    memset(b->data, 0, len);
    int slot = claim(ar, b);
    if (slot < 0) {
        beam_free_bytes(a, b, block_total(len), BLOCK_ALIGN);
        return beam_make_error(env, "full");
    }
    return make_ok(env, enif_make_uint(env, (unsigned)slot));
}

/* alloc(res, size) -> {:ok, slot} */
BEAM_NIF(alloc) {
    GET_RESOURCE(0, r);
    size_t len;
    if (!get_size(env, argv[1], &len) || len > (1u << 26))
        return enif_make_badarg(env);
    return alloc_into(env, r, len);
}

/* The same inside a leak-checked call: blocks of a resource belong to the
 * resource, not to the call, so this must not raise. */
BEAM_NIF(alloc_checked, .leak_check = true) {
    GET_RESOURCE(0, r);
    size_t len;
    if (!get_size(env, argv[1], &len) || len > (1u << 26))
        return enif_make_badarg(env);
    return alloc_into(env, r, len);
}

/* Pin r and find the block in argv[1]; on failure *err is the answer. */
static block *pinned_block(ErlNifEnv *env, beam_resource_t *r, area *ar,
                           ERL_NIF_TERM slot_term, ERL_NIF_TERM *err) {
    unsigned slot;
    if (ar == NULL || !get_slot(env, slot_term, &slot)) {
        *err = enif_make_badarg(env);
        return NULL;
    }
    if (!beam_resource_pin(r)) {
        *err = beam_make_error(env, "released");
        return NULL;
    }
    block *b = atomic_load(&ar->slots[slot]);
    if (b == NULL) {
        beam_resource_unpin(r);
        *err = beam_make_error(env, "empty");
    }
    return b;
}

/* write(res, slot, offset, binary) */
BEAM_NIF(res_write) {
    GET_RESOURCE(0, r);
    size_t offset;
    ErlNifBinary bin;
    if (!get_size(env, argv[2], &offset) ||
        !enif_inspect_binary(env, argv[3], &bin))
        return enif_make_badarg(env);
    ERL_NIF_TERM err;
    block *b = pinned_block(env, r, r_area, argv[1], &err);
    if (b == NULL)
        return err;
    ERL_NIF_TERM result = enif_make_atom(env, "ok");
    if (offset > b->len || bin.size > b->len - offset)
        result = enif_make_badarg(env);
    else
        memcpy(b->data + offset, bin.data, bin.size);
    beam_resource_unpin(r);
    return result;
}

/* read(res, slot, offset, len) -> {:ok, binary} */
BEAM_NIF(res_read) {
    GET_RESOURCE(0, r);
    size_t offset, len;
    if (!get_size(env, argv[2], &offset) || !get_size(env, argv[3], &len))
        return enif_make_badarg(env);
    ERL_NIF_TERM err;
    block *b = pinned_block(env, r, r_area, argv[1], &err);
    if (b == NULL)
        return err;
    ERL_NIF_TERM result;
    if (offset > b->len || len > b->len - offset) {
        result = enif_make_badarg(env);
    } else {
        ERL_NIF_TERM bin;
        unsigned char *dst = enif_make_new_binary(env, len, &bin);
        memcpy(dst, b->data + offset, len);
        result = make_ok(env, bin);
    }
    beam_resource_unpin(r);
    return result;
}

/* resize(res, slot, new_len): beam_realloc_bytes on the block (moves it
 * when it must); contents kept up to the smaller length, the rest zeroed.
 * The caller owns the slot. */
BEAM_NIF(resize) {
    GET_RESOURCE(0, r);
    unsigned slot;
    size_t new_len;
    if (r_area == NULL || !get_slot(env, argv[1], &slot) ||
        !get_size(env, argv[2], &new_len) || new_len > (1u << 26))
        return enif_make_badarg(env);
    block *b = atomic_load(&r_area->slots[slot]);
    if (b == NULL)
        return beam_make_error(env, "empty");
    size_t old_len = b->len;
    block *nb =
        beam_realloc_bytes(beam_resource_allocator(r), b, block_total(old_len),
                           BLOCK_ALIGN, block_total(new_len));
    if (nb == NULL)
        return alloc_error(env, r);
    nb->len = new_len;
    if (new_len > old_len)
        memset(nb->data + old_len, 0, new_len - old_len);
    atomic_store(&r_area->slots[slot], nb);
    return enif_make_atom(env, "ok");
}

/* free(res, slot): after release the allocator ignores it (and so this
 * still answers :ok). */
BEAM_NIF(res_free) {
    GET_RESOURCE(0, r);
    unsigned slot;
    if (r_area == NULL || !get_slot(env, argv[1], &slot))
        return enif_make_badarg(env);
    block *b = atomic_exchange(&r_area->slots[slot], NULL);
    if (b == NULL)
        return beam_make_error(env, "empty");
    /* The length is read only while the block is surely there. */
    size_t total = 0;
    if (beam_resource_pin(r)) {
        total = block_total(b->len);
        beam_resource_unpin(r);
    }
    if (total != 0)
        beam_free_bytes(beam_resource_allocator(r), b, total, BLOCK_ALIGN);
    return enif_make_atom(env, "ok");
}

/* pin_forgotten(res): a pin without its unpin (a caller's bug: the
 * destructor reports it, naming this function). Pinned twice around a
 * balanced pair, so that the forgotten pin is the first, not the newest. */
BEAM_NIF(pin_forgotten) {
    GET_RESOURCE(0, r);
    if (!beam_resource_pin(r)) /* the forgotten pin */
        return beam_make_error(env, "released");
    if (beam_resource_pin(r))
        beam_resource_unpin(r);
    return enif_make_atom(env, "ok");
}

/* aligned(res, size, alignment) -> {:ok, aligned?} (the block is freed) */
BEAM_NIF(aligned) {
    GET_RESOURCE(0, r);
    size_t len, alignment;
    if (!get_size(env, argv[1], &len) ||
        !get_alignment(env, argv[2], &alignment))
        return enif_make_badarg(env);
    beam_allocator_t a = beam_resource_allocator(r);
    void *p = beam_alloc_bytes(a, len, alignment);
    if (p == NULL)
        return alloc_error(env, r);
    bool ok = ((uintptr_t)p & (alignment - 1)) == 0;
    if (len > 0)
        memset(p, 0xAB, len);
    beam_free_bytes(a, p, len, alignment);
    return make_ok(env, make_bool(env, ok));
}

BEAM_NIF(release) {
    GET_RESOURCE(0, r);
    beam_resource_release(r);
    return enif_make_atom(env, "ok");
}

/* new_hooked(kind): a resource whose release hook checks that a block
 * written at creation (slot 0) is still there, intact, then frees it (a
 * no-op by then) and counts the run: good (intact) or bad. hook_runs() ->
 * {good, bad}. set_hook_again(res): beam_resource_on_release on res now. */
static atomic_uint hook_good, hook_bad;
#define HOOK_LEN 256

static void check_on_release(beam_resource_t *r) {
    area *ar = beam_resource_user_data(r);
    block *b = atomic_load(&ar->slots[0]);
    bool intact = b != NULL && b->len == HOOK_LEN;
    for (size_t i = 0; intact && i < HOOK_LEN; i++)
        intact = b->data[i] == (unsigned char)i;
    beam_allocator_t a = beam_resource_allocator(r);
    if (b != NULL)
        beam_free_bytes(a, b, block_total(HOOK_LEN), BLOCK_ALIGN);
    atomic_fetch_add(intact ? &hook_good : &hook_bad, 1);
}

BEAM_NIF(new_hooked) {
    beam_resource_kind kind;
    if (!get_kind(env, argv[0], &kind))
        return enif_make_badarg(env);
    ERL_NIF_TERM term;
    beam_resource_t *r =
        beam_resource_new(env, kind, beam_large_allocator, sizeof(area), &term);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    block *b = beam_alloc_bytes(beam_resource_allocator(r),
                                block_total(HOOK_LEN), BLOCK_ALIGN);
    if (b == NULL)
        return alloc_error(env, r);
    b->len = HOOK_LEN;
    for (size_t i = 0; i < HOOK_LEN; i++)
        b->data[i] = (unsigned char)i;
    area *ar = beam_resource_user_data(r);
    atomic_store(&ar->slots[0], b);
    if (!beam_resource_on_release(r, check_on_release))
        return beam_make_error(env, "on_release");
    return make_ok(env, term);
}

/* hook_after_call(kind, how): a resource whose parent releases it from
 * inside the allocation that reaches the parent, as another thread's
 * release would land while a library's own thread is inside the
 * allocator. The hook must not run in that call (it would take down the
 * code that is calling), but at the next actor from outside: how is
 * release (a second release) or pin (a pin, which fails). -> {runs during
 * the call, runs after the outside actor}. */
static atomic_uint counted_hook_runs;
static beam_resource_t *release_me;

static void count_release(beam_resource_t *r) {
    (void)r;
    atomic_fetch_add(&counted_hook_runs, 1);
}

static void *releasing_alloc(void *ctx, size_t len, size_t alignment,
                             uintptr_t ret) {
    (void)ctx;
    if (release_me != NULL)
        beam_resource_release(release_me);
    return beam_alloc_bytes_at(beam_large_allocator, len, alignment, ret);
}

static bool releasing_resize(void *ctx, void *mem, size_t len, size_t alignment,
                             size_t new_len, uintptr_t ret) {
    (void)ctx;
    (void)ret;
    return beam_resize_bytes(beam_large_allocator, mem, len, alignment,
                             new_len);
}

static void *releasing_remap(void *ctx, void *mem, size_t len, size_t alignment,
                             size_t new_len, uintptr_t ret) {
    (void)ctx;
    (void)ret;
    return beam_remap_bytes(beam_large_allocator, mem, len, alignment, new_len);
}

static void releasing_free(void *ctx, void *mem, size_t len, size_t alignment,
                           uintptr_t ret) {
    (void)ctx;
    (void)ret;
    beam_free_bytes(beam_large_allocator, mem, len, alignment);
}

static const beam_allocator_vtable releasing_vtable = {
    releasing_alloc, releasing_resize, releasing_remap, releasing_free};

BEAM_NIF(hook_after_call) {
    beam_resource_kind kind;
    if (!get_kind(env, argv[0], &kind))
        return enif_make_badarg(env);
    bool by_pin = enif_is_identical(argv[1], enif_make_atom(env, "pin"));
    if (!by_pin && !enif_is_identical(argv[1], enif_make_atom(env, "release")))
        return enif_make_badarg(env);
    beam_allocator_t parent = {NULL, &releasing_vtable};
    beam_resource_t *r = beam_resource_new(NULL, kind, parent, 0, NULL);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    if (!beam_resource_on_release(r, count_release))
        return beam_make_error(env, "on_release");
    unsigned before = atomic_load(&counted_hook_runs);
    release_me = r;
    void *p = beam_alloc_bytes(beam_resource_allocator(r), 100000, 16);
    release_me = NULL;
    unsigned during = atomic_load(&counted_hook_runs) - before;
    bool released = beam_resource_is_released(r);
    if (by_pin && beam_resource_pin(r)) /* from outside: the hook runs */
        beam_resource_unpin(r);         /* (never: released) */
    else if (!by_pin)
        beam_resource_release(r); /* from outside: now the hook runs */
    unsigned after = atomic_load(&counted_hook_runs) - before;
    beam_resource_drop(r);
    (void)p; /* gone with the resource */
    if (!released)
        return beam_make_error(env, "not_released");
    return enif_make_tuple2(env, enif_make_uint(env, during),
                            enif_make_uint(env, after));
}

/* busy_at_gc(kind, hooked): a resource whose only term dies with the
 * calling process while a thread of the library is inside its allocator
 * (the first allocation, held 100 ms in the parent), as a worker pool's
 * thread that allocates on its own would be when the garbage collector
 * takes the pool. hooked: a release hook stops and joins the thread, the
 * documented way; else join_busy/0 joins it later. -> ok, once the thread
 * is inside. */
static atomic_int busy_inside;
static atomic_int busy_hook_runs;
static ErlNifTid busy_tid;
static atomic_bool busy_joinable;

static void *slow_alloc(void *ctx, size_t len, size_t alignment,
                        uintptr_t ret) {
    (void)ctx;
    atomic_store(&busy_inside, 1);
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return beam_alloc_bytes_at(beam_large_allocator, len, alignment, ret);
}

static const beam_allocator_vtable slow_vtable = {
    slow_alloc, releasing_resize, releasing_remap, releasing_free};

static void *busy_run(void *arg) {
    beam_resource_t *r = arg;
    void *p = beam_alloc_bytes(beam_resource_allocator(r), 64, 8);
    (void)p; /* gone with the resource */
    return NULL;
}

static void busy_join(void) {
    if (atomic_exchange(&busy_joinable, false))
        enif_thread_join(busy_tid, NULL);
}

static void busy_down(beam_resource_t *r) {
    (void)r;
    atomic_fetch_add(&busy_hook_runs, 1);
    busy_join();
}

BEAM_NIF(busy_at_gc) {
    beam_resource_kind kind;
    if (!get_kind(env, argv[0], &kind) || atomic_load(&busy_joinable))
        return enif_make_badarg(env);
    ERL_NIF_TERM term;
    beam_allocator_t parent = {NULL, &slow_vtable};
    beam_resource_t *r = beam_resource_new(env, kind, parent, 0, &term);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    if (enif_is_identical(argv[1], enif_make_atom(env, "true")))
        (void)beam_resource_on_release(r, busy_down);
    atomic_store(&busy_inside, 0);
    if (enif_thread_create("beam_alloc_busy", &busy_tid, busy_run, r, NULL) !=
        0)
        return beam_make_error(env, "thread");
    atomic_store(&busy_joinable, true);
    while (!atomic_load(&busy_inside)) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return enif_make_atom(env, "ok");
}

/* pool_at_gc(kind, n): a resource whose only term dies with the calling
 * process while n threads of the library allocate and free through it in
 * a loop, as a worker pool's threads do, until its release hook stops and
 * joins them (the documented way; after the release their calls fail at
 * once, and they go on until told to stop). -> ok, once every thread has
 * allocated. pool_late/0: the resource's entries that counted themselves
 * in flight after the release (beam__resource_late_entries), up to its
 * hook: what the destructor waited for before the hook for nothing; -1
 * while the hook has not run. */
#define POOL_MAX 16
static ErlNifTid pool_tids[POOL_MAX];
static unsigned pool_n;
static atomic_bool pool_stop;
static atomic_uint pool_started;
static _Atomic long long pool_late_entries = -1;

/* resource.c's, for tests (src/nif/nif_internal.h). */
size_t beam__resource_late_entries(beam_resource_t *r);

static void *pool_run(void *arg) {
    beam_allocator_t a = beam_resource_allocator(arg);
    bool counted = false;
    while (!atomic_load_explicit(&pool_stop, memory_order_relaxed)) {
        void *p = beam_alloc_bytes(a, 64, 8);
        if (p != NULL)
            beam_free_bytes(a, p, 64, 8);
        if (!counted) {
            atomic_fetch_add(&pool_started, 1);
            counted = true;
        }
    }
    return NULL;
}

static void pool_down(beam_resource_t *r) {
    atomic_store(&pool_stop, true);
    for (unsigned i = 0; i < pool_n; i++)
        enif_thread_join(pool_tids[i], NULL);
    pool_n = 0;
    atomic_store(&pool_late_entries, (long long)beam__resource_late_entries(r));
}

BEAM_NIF(pool_at_gc) {
    beam_resource_kind kind;
    unsigned n;
    if (!get_kind(env, argv[0], &kind) || !enif_get_uint(env, argv[1], &n) ||
        n > POOL_MAX || pool_n != 0)
        return enif_make_badarg(env);
    ERL_NIF_TERM term;
    beam_resource_t *r =
        beam_resource_new(env, kind, beam_large_allocator, 0, &term);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    (void)beam_resource_on_release(r, pool_down);
    atomic_store(&pool_stop, false);
    atomic_store(&pool_started, 0);
    atomic_store(&pool_late_entries, -1);
    for (; pool_n < n; pool_n++)
        if (enif_thread_create("beam_alloc_pool", &pool_tids[pool_n], pool_run,
                               r, NULL) != 0)
            return beam_make_error(env, "thread");
    while (atomic_load(&pool_started) < n) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return enif_make_atom(env, "ok");
}

BEAM_NIF(pool_late) {
    (void)argv;
    return enif_make_int64(env, atomic_load(&pool_late_entries));
}

/* join_busy(): joins busy_at_gc's thread if no hook did. -> hook runs. */
BEAM_NIF(join_busy) {
    (void)argv;
    busy_join();
    return enif_make_uint(env, (unsigned)atomic_load(&busy_hook_runs));
}

BEAM_NIF(hook_runs) {
    (void)argv;
    return enif_make_tuple2(env, enif_make_uint(env, atomic_load(&hook_good)),
                            enif_make_uint(env, atomic_load(&hook_bad)));
}

BEAM_NIF(set_hook_again) {
    GET_RESOURCE(0, r);
    return make_bool(env, beam_resource_on_release(r, check_on_release));
}

/* calls_after_release(res): on a fresh resource, allocate, release, then
 * every call: alloc and remap NULL, resize false, free a no-op. */
BEAM_NIF(calls_after_release) {
    GET_RESOURCE(0, r);
    beam_allocator_t a = beam_resource_allocator(r);
    void *p = beam_alloc_bytes(a, 64, 8);
    if (p == NULL)
        return alloc_error(env, r);
    beam_resource_release(r);
    if (beam_alloc_bytes(a, 64, 8) != NULL)
        return beam_make_error(env, "alloc");
    if (beam_resize_bytes(a, p, 64, 8, 32))
        return beam_make_error(env, "resize");
    if (beam_remap_bytes(a, p, 64, 8, 128) != NULL)
        return beam_make_error(env, "remap");
    beam_free_bytes(a, p, 64, 8);
    beam_resource_usage u = beam_resource_usage_of(r);
    if (!u.released || u.live_blocks != 0 || u.live_bytes != 0 ||
        u.parent_bytes != 0)
        return beam_make_error(env, "usage");
    return enif_make_atom(env, "ok");
}

/* usage(res) -> %{kind:, released:, live_blocks:, live_bytes:,
 * parent_bytes:} */
static ERL_NIF_TERM usage_map(ErlNifEnv *env, beam_resource_usage u) {
    static const char *const names[] = {"kind", "released", "live_blocks",
                                        "live_bytes", "parent_bytes"};
    ERL_NIF_TERM values[] = {kind_atom(env, u.kind), make_bool(env, u.released),
                             enif_make_uint64(env, u.live_blocks),
                             enif_make_uint64(env, u.live_bytes),
                             enif_make_uint64(env, u.parent_bytes)};
    return make_map(env, 5, names, values);
}

BEAM_NIF(usage) {
    GET_RESOURCE(0, r);
    return usage_map(env, beam_resource_usage_of(r));
}

BEAM_NIF(live_count) {
    return enif_make_uint64(env, beam_resource_live_count());
}

/* is_resource(term): beam_resource_get on anything, never raising; a
 * false answer must also clear the out pointer. */
BEAM_NIF(is_resource) {
    beam_resource_t *r = (beam_resource_t *)&r; /* garbage to be replaced */
    bool ok = beam_resource_get(env, argv[0], &r);
    if (ok != (r != NULL))
        return enif_make_atom(env, "inconsistent");
    return make_bool(env, ok);
}

/* pin_across_release(res, slot): pin, release, read the block (still
 * valid), note parent bytes, unpin (the release completes). ->
 * {first_byte, released_while_pinned, parent_bytes_pinned,
 * parent_bytes_after} */
BEAM_NIF(pin_across_release) {
    GET_RESOURCE(0, r);
    ERL_NIF_TERM err;
    block *b = pinned_block(env, r, r_area, argv[1], &err);
    if (b == NULL)
        return err;
    beam_resource_release(r);
    bool released = beam_resource_is_released(r);
    unsigned first = b->len > 0 ? b->data[0] : 0;
    size_t pinned = beam_resource_usage_of(r).parent_bytes;
    /* No new allocation while released, pinned or not. */
    bool refused = beam_alloc_bytes(beam_resource_allocator(r), 8, 8) == NULL;
    beam_resource_unpin(r);
    size_t after = beam_resource_usage_of(r).parent_bytes;
    return enif_make_tuple5(
        env, enif_make_uint(env, first), make_bool(env, released),
        enif_make_uint64(env, pinned), enif_make_uint64(env, after),
        make_bool(env, refused));
}

/* A reference kept in C beyond any term: keep(res), then drop_kept(). */
static _Atomic(beam_resource_t *) kept;

BEAM_NIF(keep) {
    GET_RESOURCE(0, r);
    beam_resource_keep(r);
    beam_resource_t *old = atomic_exchange(&kept, r);
    if (old != NULL)
        beam_resource_drop(old);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(drop_kept) {
    beam_resource_t *old = atomic_exchange(&kept, NULL);
    if (old == NULL)
        return beam_make_error(env, "none");
    beam_resource_drop(old);
    return enif_make_atom(env, "ok");
}

/* A resource made without a term, held by C only, then dropped: the
 * destructor runs (here or on another thread). -> live count right after
 * the new (before the drop). */
BEAM_NIF(new_dropped) {
    beam_resource_kind kind;
    if (!get_kind(env, argv[0], &kind))
        return enif_make_badarg(env);
    beam_resource_t *r =
        beam_resource_new(NULL, kind, beam_large_allocator, 0, NULL);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    void *p = beam_alloc_bytes(beam_resource_allocator(r), 1000, 8);
    size_t live = beam_resource_live_count();
    beam_resource_drop(r); /* p goes with it */
    return p != NULL ? enif_make_uint64(env, live)
                     : beam_make_error(env, "enomem");
}

/* dead_allocator() -> true when the allocator of NULL refuses everything */
BEAM_NIF(dead_allocator) {
    beam_allocator_t a = beam_resource_allocator(NULL);
    void *p = beam_alloc_bytes(a, 16, 8);
    beam_free_bytes(a, (void *)&a, 16, 8); /* a no-op, never a crash */
    beam_resource_usage u = beam_resource_usage_of(NULL);
    return make_bool(env, p == NULL && u.released && !beam_resource_pin(NULL));
}

/* overrun_torn_down(how): an arena resource over a checking instance of
 * the NIF's own (BEAM_GPA_SAFE), one byte allocated from it and the byte
 * just past its first chunk (4096 bytes, its data from byte 32) written:
 * found when its teardown gives the chunk back. how release: released
 * here (-> ok); then_misuse: released, then a double free of the
 * instance's (-> {ok, FunctionName}); in_thread: released by a thread of
 * the NIF's (-> {ok, InNoCallAfter}, release_off_a_call); else its term
 * returned ({ok, Res}), for the collector. */
static beam_gpa_t checking;
static pthread_once_t checking_once = PTHREAD_ONCE_INIT;

static void checking_init(void) {
    beam_gpa_init_ex(&checking, beam_large_allocator, BEAM_GPA_SAFE);
}

/* A thread of the NIF's (no call on it) releases r: the teardown's
 * report window stands a call in for the one it has not (beam__nif_in_end)
 * and must take it away again. Its stack where that stand-in was is then
 * zeroed, so a stand-in left behind would be a call of no name: true when
 * the thread is still in no call. */
typedef struct {
    beam_resource_t *r;
    bool no_call_after;
} release_off_call;

static __attribute__((noinline)) void scrub_stack(void) {
    volatile unsigned char junk[16384];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = 0;
}

static void *release_in_thread(void *arg) {
    release_off_call *w = arg;
    beam_resource_release(w->r);
    scrub_stack();
    w->no_call_after = beam_nif_function_name() == NULL;
    return NULL;
}

static ERL_NIF_TERM release_off_a_call(ErlNifEnv *env, beam_resource_t *r) {
    release_off_call w = {r, false};
    ErlNifTid tid;
    if (enif_thread_create("release_off_call", &tid, release_in_thread, &w,
                           NULL) != 0)
        return beam_make_error(env, "thread");
    enif_thread_join(tid, NULL);
    return make_ok(env, make_bool(env, w.no_call_after));
}

BEAM_NIF(overrun_torn_down) {
    char how[16];
    if (!enif_get_atom(env, argv[0], how, sizeof how, ERL_NIF_LATIN1))
        return enif_make_badarg(env);
    pthread_once(&checking_once, checking_init);
    ERL_NIF_TERM term;
    beam_resource_t *r = beam_resource_new(
        env, BEAM_RESOURCE_ARENA, beam_gpa_allocator(&checking), 0, &term);
    if (r == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *p = beam_alloc(beam_resource_allocator(r), unsigned char, 1);
    if (p == NULL)
        return alloc_error(env, r);
    p[4096 - 32] = 0xEE;
    if (strcmp(how, "in_thread") == 0)
        return release_off_a_call(env, r);
    if (strcmp(how, "release") != 0 && strcmp(how, "then_misuse") != 0)
        return make_ok(env, term);
    beam_resource_release(r); /* the release */
    if (strcmp(how, "then_misuse") != 0)
        return enif_make_atom(env, "ok");
    /* The call goes on after its teardown's report: a misuse of its own
     * now names its frames, and the call its name, as before the
     * teardown (beam__nif_in_end gave the call back as it was). */
    beam_allocator_t a = beam_gpa_allocator(&checking);
    unsigned char *q = beam_alloc(a, unsigned char, 24);
    if (q == NULL)
        return beam_make_error(env, "enomem");
    beam_free(a, q, 24);
    beam_free(a, q, 24); /* the double free */
    const char *name = beam_nif_function_name();
    return make_ok(env, enif_make_string(env, name != NULL ? name : "none",
                                         ERL_NIF_LATIN1));
}

/* --- churn(res, iterations, seed): many blocks in one call ------------- */

/* Mostly small, one in sixteen above the GPA's slab limit. */
static size_t churn_len(uint64_t x) {
    return (x >> 8) % 16 == 0 ? 8193 + (x >> 16) % 8192 : 1 + (x >> 16) % 512;
}

static ERL_NIF_TERM run_churn(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    GET_RESOURCE(0, r);
    bool failed;
    ERL_NIF_TERM result = churn_blocks(env, beam_resource_allocator(r), 32,
                                       churn_len, argv[1], argv[2], &failed);
    return failed ? alloc_error(env, r) : result;
}

NIF_WITH_DIRTY_TWIN(churn, run_churn)

static ErlNifFunc funcs[] = {
    {"new", 1, new, 0},
    {"new_raw", 1, new_raw, 0},
    {"new_here", 1, new_here, 0},
    {"new_here_checked", 1, new_here_checked, 0},
    {"new_here_scratch", 1, new_here_scratch, 0},
    {"new_failing", 2, new_failing, 0},
    {"new_child", 2, new_child, 0},
    {"new_bare_child", 2, new_bare_child, 0},
    {"new_cycle", 1, new_cycle, 0},
    {"cross_cycle", 0, cross_cycle, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"alloc", 2, alloc, 0},
    {"alloc_checked", 2, alloc_checked, 0},
    {"write", 4, res_write, 0},
    {"read", 4, res_read, 0},
    {"resize", 3, resize, 0},
    {"free", 2, res_free, 0},
    {"aligned", 3, aligned, 0},
    {"release", 1, release, 0},
    {"new_hooked", 1, new_hooked, 0},
    {"hook_runs", 0, hook_runs, 0},
    {"busy_at_gc", 2, busy_at_gc, 0},
    {"join_busy", 0, join_busy, 0},
    {"pool_at_gc", 2, pool_at_gc, 0},
    {"pool_late", 0, pool_late, 0},
    {"hook_after_call", 2, hook_after_call, 0},
    {"set_hook_again", 1, set_hook_again, 0},
    {"calls_after_release", 1, calls_after_release, 0},
    {"usage", 1, usage, 0},
    {"live_count", 0, live_count, 0},
    {"is_resource", 1, is_resource, 0},
    {"pin_across_release", 2, pin_across_release, 0},
    {"keep", 1, keep, 0},
    {"drop_kept", 0, drop_kept, 0},
    {"new_dropped", 1, new_dropped, 0},
    {"dead_allocator", 0, dead_allocator, 0},
    {"churn", 3, churn, 0},
    {"churn_dirty", 3, churn_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"take_reports", 0, take_reports, 0},
    {"pin_forgotten", 1, pin_forgotten, 0},
    {"overrun_torn_down", 1, overrun_torn_down, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Resource, funcs, load_capturing_reports,
              NULL, NULL)
