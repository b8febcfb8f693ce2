/*
 * NIFs for the tests that a node must survive (test/vm_test.exs): resource
 * allocators over the process-wide general purpose allocator grown from many
 * processes while leak_check NIFs run on the same schedulers; bursts of
 * blocks allocated on every scheduler and freed by other processes; and
 * load/purge cycles. Module BeamAlloc.Test.Vm.
 */
#include "nif_util.h"

#include <string.h>

/* gpa_resource(): a resource-scoped GPA over the process-wide instance. */
BEAM_NIF(gpa_resource) {
    ERL_NIF_TERM term;
    if (!beam_resource_new(env, BEAM_RESOURCE_GPA,
                           beam_general_purpose_allocator, 0, &term))
        return beam_make_error(env, "enomem");
    return make_ok(env, term);
}

/* Allocate and free through a with a few kept across the loop, some of
 * them large; true when every block read back what was written. */
static bool churn(beam_allocator_t a, size_t iterations, uint64_t seed,
                  size_t keep_at_end, void **kept, size_t *kept_len) {
    enum { SLOTS = 32 };
    unsigned char *mem[SLOTS] = {0};
    size_t len[SLOTS] = {0};
    uint64_t state = seed | 1;
    bool ok = true;
    for (size_t i = 0; i < iterations; i++) {
        uint64_t x = next_random(&state);
        size_t k = x % SLOTS;
        if (mem[k] != NULL) {
            ok = ok && mem[k][0] == (unsigned char)len[k] &&
                 mem[k][len[k] - 1] == (unsigned char)len[k];
            beam_free(a, mem[k], len[k]);
        }
        len[k] =
            (x >> 8) % 16 == 0 ? 8193 + (x >> 16) % 20000 : 1 + (x >> 16) % 700;
        mem[k] = beam_alloc(a, unsigned char, len[k]);
        if (mem[k] == NULL)
            return false;
        mem[k][0] = mem[k][len[k] - 1] = (unsigned char)len[k];
    }
    for (size_t k = 0; k < SLOTS; k++) {
        if (mem[k] == NULL)
            continue;
        if (k < keep_at_end) {
            kept[k] = mem[k];
            kept_len[k] = len[k];
            continue;
        }
        beam_free(a, mem[k], len[k]);
    }
    return ok;
}

/* grow(res, count, seed): count blocks in the resource's allocator, kept
 * (they go at release), so that it keeps asking its parent for more. */
static ERL_NIF_TERM grow_impl(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    beam_resource_t *r;
    size_t count;
    ErlNifUInt64 seed;
    if (!beam_resource_get(env, argv[0], &r) ||
        !get_size(env, argv[1], &count) ||
        !enif_get_uint64(env, argv[2], &seed))
        return enif_make_badarg(env);
    beam_allocator_t a = beam_resource_allocator(r);
    uint64_t state = seed | 1;
    for (size_t i = 0; i < count; i++) {
        uint64_t x = next_random(&state);
        size_t len = (x >> 8) % 32 == 0 ? 8193 + (x >> 16) % 20000
                                        : 1 + (x >> 16) % 2000;
        unsigned char *p = beam_alloc(a, unsigned char, len);
        if (p == NULL)
            return beam_make_error(env, "enomem");
        p[0] = p[len - 1] = (unsigned char)x;
    }
    return enif_make_atom(env, "ok");
}
NIF_WITH_DIRTY_TWIN(grow, grow_impl)

/* checked(iterations, seed): a leak_check call that also uses the
 * process-wide instance, each call a new instance on this thread. */
static ERL_NIF_TERM checked_impl(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    size_t iterations;
    ErlNifUInt64 seed;
    if (!get_size(env, argv[0], &iterations) ||
        !enif_get_uint64(env, argv[1], &seed))
        return enif_make_badarg(env);
    bool ok = churn(beam_allocator, iterations, seed, 0, NULL, NULL) &&
              churn(beam_general_purpose_allocator, iterations / 4, seed + 1, 0,
                    NULL, NULL);
    return ok ? enif_make_atom(env, "ok") : beam_make_error(env, "failed");
}
BEAM_NIF(checked, .leak_check = true) {
    return checked_impl(env, argv);
}
BEAM_NIF(checked_dirty, .leak_check = true) {
    return checked_impl(env, argv);
}

/* hold(count, len): count blocks of len bytes from the process-wide
 * instance, their addresses in a binary (to be freed by someone else). */
static ERL_NIF_TERM hold_impl(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    size_t count, len;
    if (!get_size(env, argv[0], &count) || !get_size(env, argv[1], &len) ||
        len == 0)
        return enif_make_badarg(env);
    ERL_NIF_TERM bin;
    void **out =
        (void **)enif_make_new_binary(env, count * sizeof(void *), &bin);
    if (out == NULL)
        return enif_make_badarg(env);
    for (size_t i = 0; i < count; i++) {
        out[i] = beam_alloc_bytes(beam_general_purpose_allocator, len, 8);
        if (out[i] == NULL) {
            while (i-- > 0)
                beam_free_bytes(beam_general_purpose_allocator, out[i], len, 8);
            return beam_make_error(env, "enomem");
        }
        memset(out[i], 0x5a, len < 16 ? len : 16);
    }
    return bin;
}
NIF_WITH_DIRTY_TWIN(hold, hold_impl)

/* drop(binary, len): free what hold returned. */
BEAM_NIF(drop) {
    ErlNifBinary bin;
    size_t len;
    if (!enif_inspect_binary(env, argv[0], &bin) ||
        bin.size % sizeof(void *) != 0 || !get_size(env, argv[1], &len))
        return enif_make_badarg(env);
    void **p = (void **)bin.data;
    for (size_t i = 0; i < bin.size / sizeof(void *); i++)
        beam_free_bytes(beam_general_purpose_allocator, p[i], len, 8);
    return enif_make_atom(env, "ok");
}

static ERL_NIF_TERM usage_map(ErlNifEnv *env) {
    beam_gpa_usage u =
        beam_gpa_usage_of(&beam_general_purpose_allocator_instance);
    static const char *const names[] = {"live_blocks", "live_bytes",
                                        "backing_bytes", "misuse_count"};
    uint64_t values[] = {u.live_blocks, u.live_bytes, u.backing_bytes,
                         u.misuse_count};
    return make_uint_map(env, 4, names, values);
}

/* collect(): beam_gpa_collect on the process-wide instance, then its usage. */
BEAM_NIF(collect) {
    beam_gpa_collect(&beam_general_purpose_allocator_instance);
    return usage_map(env);
}

BEAM_NIF(usage) {
    return usage_map(env);
}

/* leaky(): a leak_check NIF that leaks, for the module's name in the
 * message (BEAM_NIF_INIT below names the module through a macro). */
BEAM_NIF(leaky, .leak_check = true) {
    return beam_alloc_bytes(beam_allocator, 24, 8) != NULL
               ? enif_make_atom(env, "ok")
               : beam_make_error(env, "enomem");
}

static ErlNifFunc funcs[] = {
    {"gpa_resource", 0, gpa_resource, 0},
    {"grow", 3, grow, 0},
    {"grow_dirty", 3, grow_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"checked", 2, checked, 0},
    {"checked_dirty", 2, checked_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"hold", 2, hold, 0},
    {"hold_dirty", 2, hold_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"drop", 2, drop, 0},
    {"collect", 0, collect, 0},
    {"usage", 0, usage, 0},
    {"leaky", 0, leaky, 0},
};

/* The module's name through a macro, as build systems often pass it: it
 * must be expanded, not named "VM_MODULE". */
#define VM_MODULE Elixir.BeamAlloc.Test.Vm
BEAM_NIF_INIT(VM_MODULE, funcs, NULL, NULL, NULL)
