/*
 * A fault-injection driver of an older version, as a library copy meets
 * it: the interface's struct with a smaller size (the first version had
 * enter and leave only; misuse and under came later, each "added last",
 * and copies check the size before calling them). attach(Version) offers
 * this library's own copy such a driver; a BEAM_NIF call then enters and
 * leaves it. Loaded by BeamAlloc.Test.OldDriver (test/support/
 * old_driver.ex).
 */
#include "../../src/nif/abi.h"
#include "nif_util.h"

#include <stddef.h>

static unsigned enters, leaves, past_size;

static bool fake_enter(const ErlNifPid *pid, const beam__fault_hooks *app,
                       beam_allocator_t parent, unsigned flags,
                       beam__fault_frame *frame, beam_allocator_t *out) {
    (void)pid;
    (void)app;
    (void)flags;
    (void)frame;
    enters++;
    *out = parent;
    return true;
}

static void fake_leave(beam__fault_frame *frame) {
    (void)frame;
    leaves++;
}

/* Members past the driver's size: a copy that calls them read past the
 * older driver's struct. */
static void fake_misuse(const ErlNifPid *pid, const beam__fault_hooks *app,
                        const char *kind, const char *line) {
    (void)pid;
    (void)app;
    (void)kind;
    (void)line;
    past_size++;
}

static bool fake_under(beam_allocator_t a, const void *p,
                       beam_allocator_t *out) {
    (void)a;
    (void)p;
    (void)out;
    past_size++;
    return false;
}

static beam__fault_driver fake = {
    BEAM__FAULT_MAGIC, BEAM__FAULT_VERSION, 0,          fake_enter,
    fake_leave,        fake_misuse,         fake_under,
};

static const beam__fault_hooks *hooks(void) {
    return (const beam__fault_hooks *)beam_alloc_fault_hooks_v1();
}

/* attach(0 | 1 | 2): a driver with enter and leave only, with misuse
 * too, or the whole struct; true when this library's copy takes it. */
static ERL_NIF_TERM nif_attach(ErlNifEnv *env, int argc,
                               const ERL_NIF_TERM argv[]) {
    (void)argc;
    unsigned version;
    if (!enif_get_uint(env, argv[0], &version) || version > 2)
        return enif_make_badarg(env);
    const size_t sizes[] = {
        offsetof(beam__fault_driver, misuse),
        offsetof(beam__fault_driver, under),
        sizeof(beam__fault_driver),
    };
    fake.size = (uint32_t)sizes[version];
    enters = leaves = past_size = 0;
    bool ok = hooks()->attach(&fake);
    return enif_make_atom(env, ok ? "true" : "false");
}

static ERL_NIF_TERM nif_detach(ErlNifEnv *env, int argc,
                               const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    hooks()->detach(&fake);
    return enif_make_atom(env, "ok");
}

/* A BEAM_NIF call with malloc-style calls in it. */
BEAM_NIF(nif_call) {
    beam_mfree(beam_allocator, beam_malloc(beam_allocator, 100));
    return enif_make_atom(env, "ok");
}

/* {enters, leaves, calls of members past the driver's size} since the
 * last attach. */
static ERL_NIF_TERM nif_counts(ErlNifEnv *env, int argc,
                               const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_tuple3(env, enif_make_uint(env, enters),
                            enif_make_uint(env, leaves),
                            enif_make_uint(env, past_size));
}

static ErlNifFunc funcs[] = {
    {"attach", 1, nif_attach, 0},
    {"detach", 0, nif_detach, 0},
    {"call", 0, nif_call, 0},
    {"counts", 0, nif_counts, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.OldDriver, funcs, NULL, NULL, NULL)
