/*
 * The general purpose allocator under concurrent use from many Erlang
 * processes, on normal and dirty schedulers at once. Blocks are resources:
 * a process allocates one, hands it to another process, and that one
 * checks the contents and frees it, so blocks routinely die on another
 * thread than the one that made them (and, through the destructor, on
 * whichever thread the garbage collector runs). Loaded by
 * BeamAlloc.Test.Stress (test/support/stress.ex).
 */
#include "nif_util.h"

#include <stdatomic.h>

static ErlNifResourceType *block_type;

/* A handle to one block of the process-wide instance. Whoever swaps mem to
 * NULL first frees it: an explicit free, a second explicit free from
 * another process, or the destructor. */
typedef struct block {
    _Atomic(unsigned char *) mem;
    size_t len;
    unsigned char tag;
} block;

static void block_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    block *b = obj;
    unsigned char *mem = atomic_exchange(&b->mem, NULL);
    beam_free(beam_general_purpose_allocator, mem, b->len);
}

/* block_new(size, tag) */
static ERL_NIF_TERM new_block(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    size_t len;
    unsigned tag;
    if (!get_size(env, argv[0], &len) || len == 0 || len > (1u << 20) ||
        !enif_get_uint(env, argv[1], &tag) || tag > 255)
        return enif_make_badarg(env);
    unsigned char *mem =
        beam_alloc(beam_general_purpose_allocator, unsigned char, len);
    if (mem == NULL)
        return beam_make_error(env, "enomem");
    fill(mem, len, (unsigned char)tag);
    block *b = enif_alloc_resource(block_type, sizeof *b);
    if (b == NULL) {
        beam_free(beam_general_purpose_allocator, mem, len);
        return beam_make_error(env, "enomem");
    }
    atomic_init(&b->mem, mem);
    b->len = len;
    b->tag = (unsigned char)tag;
    ERL_NIF_TERM term = enif_make_resource(env, b);
    enif_release_resource(b);
    return make_ok(env, term);
}

/* block_free(block): :ok, :already_freed, or {:error, :corrupted} when
 * someone wrote over the block while it was live. */
static ERL_NIF_TERM free_block(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    block *b;
    if (!enif_get_resource(env, argv[0], block_type, (void **)&b))
        return enif_make_badarg(env);
    unsigned char *mem = atomic_exchange(&b->mem, NULL);
    if (mem == NULL)
        return enif_make_atom(env, "already_freed");
    bool ok = intact(mem, b->len, b->tag);
    beam_free(beam_general_purpose_allocator, mem, b->len);
    return ok ? enif_make_atom(env, "ok") : beam_make_error(env, "corrupted");
}

NIF_WITH_DIRTY_TWIN(block_new, new_block)
NIF_WITH_DIRTY_TWIN(block_free, free_block)

/* churn(iterations, seed): a private workload inside one call
 * (churn_blocks), mixed sizes from 1 byte to a few above the slab limit.
 * Keep iterations small on normal schedulers (a NIF should return within a
 * millisecond); dirty ones can take more. */

/* Mostly small blocks, one in sixteen up to 3 slabs' worth. */
static size_t churn_len(uint64_t r) {
    return (r >> 8) % 16 == 0 ? 1 + (r >> 16) % (3 * 8192)
                              : 1 + (r >> 16) % 512;
}

static ERL_NIF_TERM run_churn(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    bool failed;
    return churn_blocks(env, beam_general_purpose_allocator, 64, churn_len,
                        argv[0], argv[1], &failed);
}

NIF_WITH_DIRTY_TWIN(churn, run_churn)

/* --- The process-wide instance's state --------------------------------- */

BEAM_NIF(detect_leaks) {
    return make_bool(
        env, beam_gpa_detect_leaks(&beam_general_purpose_allocator_instance));
}

BEAM_NIF(live_blocks) {
    beam_gpa_usage u =
        beam_gpa_usage_of(&beam_general_purpose_allocator_instance);
    return enif_make_uint64(env, u.live_blocks);
}

BEAM_NIF(misuse_count) {
    beam_gpa_usage u =
        beam_gpa_usage_of(&beam_general_purpose_allocator_instance);
    return enif_make_uint64(env, u.misuse_count);
}

/* --- Named stats while other names come and go (stats_test.exs) -------- */

static beam_gpa_t named_gpa;
static void *named_block;
static atomic_bool names_stopping;

/* names_setup(): "stress_named" over an instance with one live block,
 * registered in the table's second slot, the first left free for
 * names_churn. */
BEAM_NIF(names_setup) {
    beam_gpa_init(&named_gpa, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&named_gpa);
    named_block = beam_alloc_bytes(a, 100, 8);
    atomic_store(&names_stopping, false);
    return make_bool(env, named_block != NULL &&
                              beam_stats_register("stress_gap", a) &&
                              beam_stats_register("stress_named", a) &&
                              beam_stats_unregister("stress_gap"));
}

/* names_churn() (dirty): "stress_gap" registered (in the first slot) and
 * unregistered until names_stop; the number of rounds. */
static ERL_NIF_TERM names_churn(ErlNifEnv *env, int argc,
                                const ERL_NIF_TERM argv[]) {
    (void)argc, (void)argv;
    beam_allocator_t a = beam_gpa_allocator(&named_gpa);
    uint64_t rounds = 0;
    while (!atomic_load(&names_stopping) &&
           beam_stats_register("stress_gap", a) &&
           beam_stats_unregister("stress_gap"))
        rounds++;
    return enif_make_uint64(env, rounds);
}

BEAM_NIF(names_stop) {
    atomic_store(&names_stopping, true);
    return enif_make_atom(env, "ok");
}

/* names_teardown(): true when the instance ends clean. */
BEAM_NIF(names_teardown) {
    beam_stats_unregister("stress_named");
    beam_free_bytes(beam_gpa_allocator(&named_gpa), named_block, 100, 8);
    return make_bool(env, !beam_gpa_deinit(&named_gpa));
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)priv;
    (void)info;
    block_type = enif_open_resource_type(env, NULL, "beam_alloc_stress_block",
                                         block_dtor, ERL_NIF_RT_CREATE, NULL);
    if (block_type == NULL)
        return 1;
    return capture_reports();
}

static ErlNifFunc funcs[] = {
    {"block_new", 2, block_new, 0},
    {"block_new_dirty", 2, block_new_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"block_free", 1, block_free, 0},
    {"block_free_dirty", 1, block_free_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"churn", 2, churn, 0},
    {"churn_dirty", 2, churn_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"detect_leaks", 0, detect_leaks, 0},
    {"live_blocks", 0, live_blocks, 0},
    {"misuse_count", 0, misuse_count, 0},
    {"take_reports", 0, take_reports, 0},
    {"names_setup", 0, names_setup, 0},
    {"names_churn", 0, names_churn, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"names_stop", 0, names_stop, 0},
    {"names_teardown", 0, names_teardown, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Stress, funcs, load, NULL, NULL)
