/*
 * Misuse and leaks reported through the library's default hook, which in a
 * BEAM sends them to BeamAlloc.Reporter and so to the logger. This module
 * installs no hook of its own (unlike the other test NIFs). Loaded by
 * BeamAlloc.Test.Report (test/support/report.ex).
 */
#include "nif_util.h"

/* A general purpose instance sees the same block twice; false when out of
 * memory. (Reports name it: "called from double_free".) */
static bool double_free(void) {
    beam_gpa_t gpa;
    beam_gpa_init(&gpa, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    void *p = beam_alloc_bytes(a, 24, 8);
    if (p != NULL) {
        beam_free_bytes(a, p, 24, 8);
        beam_free_bytes(a, p, 24, 8);
    }
    beam_gpa_deinit(&gpa);
    return p != NULL;
}

/* double_free(): a general purpose instance sees the same block twice. */
BEAM_NIF(double_free_nif) {
    return double_free() ? enif_make_atom(env, "ok")
                         : beam_make_error(env, "enomem");
}

/* overrun(): one byte past a 24-byte block, under leak_check's safe mode. */
BEAM_NIF(overrun, .leak_check = true) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 24);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    p[24] = 1;
    beam_free(beam_allocator, p, 24);
    return enif_make_atom(env, "ok");
}

/* leaky(): a leak_check NIF that leaks 40 bytes. */
BEAM_NIF(leaky, .leak_check = true) {
    void *p = beam_alloc(beam_allocator, unsigned char, 40);
    (void)p;
    return enif_make_atom(env, "ok");
}

/* double_frees(N): double_free/0 N times in one call (a misuse in a
 * loop): a flood of reports from a call (report_test). Dirty: it sends up
 * to N messages. */
BEAM_NIF(double_frees) {
    unsigned long n;
    if (!enif_get_ulong(env, argv[0], &n))
        return enif_make_badarg(env);
    ERL_NIF_TERM result = enif_make_atom(env, "ok");
    for (unsigned long i = 0; i < n; i++)
        result = double_free_nif(env, 0, argv);
    return result;
}

/* A thread of the NIF's own: N double frees, off any call (its reports
 * carry no call's resource). */
static void *double_frees_off_a_call(void *arg) {
    unsigned long n = *(unsigned long *)arg;
    for (unsigned long i = 0; i < n; i++)
        (void)double_free();
    return NULL;
}

/* thread_double_frees(N): double_frees_off_a_call on a thread this call
 * starts and joins: a flood of reports from a NIF's thread (report_test).
 * Dirty: it waits for the thread. A plain NIF, not a BEAM_NIF: the end of
 * a call of the library would say the drops, and report_test checks that
 * they are said with no call. */
static ERL_NIF_TERM thread_double_frees(ErlNifEnv *env, int argc,
                                        const ERL_NIF_TERM argv[]) {
    (void)argc;
    unsigned long n;
    if (!enif_get_ulong(env, argv[0], &n))
        return enif_make_badarg(env);
    ErlNifTid tid;
    if (enif_thread_create("report_flood", &tid, double_frees_off_a_call, &n,
                           NULL) != 0)
        return beam_make_error(env, "thread");
    enif_thread_join(tid, NULL);
    return enif_make_atom(env, "ok");
}

static ERL_NIF_TERM continued(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_atom(env, "continued");
}

/* double_free_then_yield(): a report, then the body yields to a
 * continuation (enif_schedule_nif), which the call's wait for the
 * reporter must leave alone. */
BEAM_NIF(double_free_then_yield) {
    /* (A nested BEAM_NIF call: the outer one waits, or not.) */
    ERL_NIF_TERM done = double_free_nif(env, argc, argv);
    if (!enif_is_identical(done, enif_make_atom(env, "ok")))
        return done;
    return enif_schedule_nif(env, "continued", 0, continued, argc, argv);
}

/* leaky_then_yield(): a leak_check call that leaks 40 bytes and yields: it
 * raises the leak instead of running its continuation. */
BEAM_NIF(leaky_then_yield, .leak_check = true) {
    void *p = beam_alloc(beam_allocator, unsigned char, 40);
    (void)p;
    return enif_schedule_nif(env, "continued", 0, continued, argc, argv);
}

static ERL_NIF_TERM raise_later(ErlNifEnv *env, int argc,
                                const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_raise_exception(env, enif_make_atom(env, "raised_later"));
}

/* yield_raise(Arg): yields to a continuation that raises raised_later,
 * which ERTS reports as raised by yield_raise(Arg). */
BEAM_NIF(yield_raise) {
    return enif_schedule_nif(env, "raise_later", 0, raise_later, argc, argv);
}

static ErlNifFunc funcs[] = {
    {"double_free", 0, double_free_nif, 0},
    {"double_free_then_yield", 0, double_free_then_yield, 0},
    {"overrun", 0, overrun, 0},
    {"leaky", 0, leaky, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"leaky_then_yield", 0, leaky_then_yield, 0},
    {"yield_raise", 1, yield_raise, 0},
    {"double_frees", 1, double_frees, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"thread_double_frees", 1, thread_double_frees,
     ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"waits_ran_out", 0, waits_ran_out, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Report, funcs, NULL, NULL, NULL)
