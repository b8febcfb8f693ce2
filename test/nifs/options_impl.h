/*
 * Per-NIF options from load_info: NIFs that say what beam_allocator is for
 * their call, each with different C defaults, for the tests of
 * `use BeamAlloc.Nif, nifs: [...]` and erlang:load_nif/2 with a map. The
 * same functions are built into three libraries (options_nif.c,
 * options_erl_nif.c, load_info_nif.c), each for its own module: define
 * OPTIONS_MODULE, then include this.
 */
#include "nif_util.h"

static beam_allocator_t pick_large(void) {
    return beam_large_allocator;
}

/* C defaults: none, .allocator, .leak_check, .scratch. */
BEAM_NIF(kind) {
    return kind_of(env, beam_allocator);
}

BEAM_NIF(kind_large, .allocator = pick_large) {
    return kind_of(env, beam_allocator);
}

BEAM_NIF(kind_checked, .leak_check = true) {
    return kind_of(env, beam_allocator);
}

BEAM_NIF(kind_scratch, .scratch = true) {
    return kind_of(env, beam_allocator);
}

/* Two arities of one name. */
BEAM_NIF(two_0) {
    return kind_of(env, beam_allocator);
}

BEAM_NIF(two_1) {
    return kind_of(env, beam_allocator);
}

/* Leaks 8 bytes: RuntimeError under leak_check, :ok otherwise. */
BEAM_NIF(leaky) {
    uint64_t *p = beam_create(beam_allocator, uint64_t);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    *p = 1;
    return enif_make_atom(env, "ok");
}

BEAM_NIF(leaky_checked, .leak_check = true) {
    uint64_t *p = beam_create(beam_allocator, uint64_t);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    *p = 1;
    return enif_make_atom(env, "ok");
}

/* Listed under two names for one scheduler (the table below). */
BEAM_NIF(checked_twin, .leak_check = true) {
    uint64_t *p = beam_create(beam_allocator, uint64_t);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    *p = 1;
    return enif_make_atom(env, "ok");
}

/* parse_load_info(Term): beam_nif_load_options on a term, as if it were
 * load_info, with the reports it made: {Code, [Line]}. A term it refuses
 * leaves the library's options as they are; one it takes replaces them
 * (the tests call it with bad ones only). A raw NIF. */
static ERL_NIF_TERM parse_load_info(ErlNifEnv *env, int argc,
                                    const ERL_NIF_TERM argv[]) {
    (void)argc;
    take_reports(env, 0, argv);
    int code = beam_nif_load_options(env, argv[0]);
    return enif_make_tuple2(env, enif_make_int(env, code),
                            take_reports(env, 0, argv));
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    return capture_reports();
}

static ErlNifFunc funcs[] = {
    {"kind", 0, kind, 0},
    {"kind_large", 0, kind_large, 0},
    {"kind_checked", 0, kind_checked, 0},
    {"kind_scratch", 0, kind_scratch, 0},
    {"two", 0, two_0, 0},
    {"two", 1, two_1, 0},
    {"leaky", 0, leaky, 0},
    {"leaky_checked", 0, leaky_checked, 0},
    /* Twins: one C function under two names. leaky on a dirty scheduler
     * too, with options of its own; checked_twin twice on the same
     * scheduler, which load_info must give the same options. */
    {"leaky_dirty", 0, leaky, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"checked_twin", 0, checked_twin, 0},
    {"checked_twin_too", 0, checked_twin, 0},
    {"parse_load_info", 1, parse_load_info, 0},
    {"take_reports", 0, take_reports, 0},
};

/* One more level, so that OPTIONS_MODULE is expanded before BEAM_NIF_INIT
 * turns it into a string. */
#define OPTIONS_INIT(module) BEAM_NIF_INIT(module, funcs, load, NULL, NULL)
OPTIONS_INIT(OPTIONS_MODULE)
