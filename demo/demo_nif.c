/*
 * The NIF behind `make demo` (demo/demo.exs): one function per stop of the
 * tour, each returning plain terms for the script to print. The library's
 * reports (leaks) are caught by a report hook and handed to the script, so
 * they print where they belong instead of racing stdout on stderr.
 */
#include <beam_alloc_nif.h>

#include <string.h>

static ERL_NIF_TERM atom(ErlNifEnv *env, const char *name) {
    return enif_make_atom(env, name);
}

static ERL_NIF_TERM address(ErlNifEnv *env, const void *p) {
    return enif_make_uint64(env, (ErlNifUInt64)(uintptr_t)p);
}

static bool get_size(ErlNifEnv *env, ERL_NIF_TERM term, size_t *out) {
    ErlNifUInt64 v;
    if (!enif_get_uint64(env, term, &v) || v > SIZE_MAX)
        return false;
    *out = (size_t)v;
    return true;
}

/* --- Reports ------------------------------------------------------------
 * The hook may run on any thread with allocator locks held: it copies the
 * line into static storage and nothing more. */
#define REPORTS 32
#define REPORT_LEN 512
static ErlNifMutex *reports_lock;
static char reports[REPORTS][REPORT_LEN];
static unsigned report_count;

static void keep_report(void *user, const char *line) {
    (void)user;
    enif_mutex_lock(reports_lock);
    if (report_count < REPORTS) {
        strncpy(reports[report_count], line, REPORT_LEN - 1);
        reports[report_count][REPORT_LEN - 1] = '\0';
        report_count++;
    }
    enif_mutex_unlock(reports_lock);
}

/* take_reports(): the lines reported since the last call. */
static ERL_NIF_TERM take_reports(ErlNifEnv *env, int argc,
                                 const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    enif_mutex_lock(reports_lock);
    for (unsigned i = report_count; i-- > 0;) {
        size_t len = strlen(reports[i]);
        ERL_NIF_TERM bin;
        memcpy(enif_make_new_binary(env, len, &bin), reports[i], len);
        list = enif_make_list_cell(env, bin, list);
    }
    report_count = 0;
    enif_mutex_unlock(reports_lock);
    return list;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    reports_lock = enif_mutex_create((char *)"beam_alloc_demo_reports");
    if (reports_lock == NULL)
        return 1;
    beam_set_report_hook(keep_report, NULL);
    return 0;
}

/* raw_addresses(count, size): where the raw allocator puts count blocks of
 * size bytes (all live at once, then freed). */
BEAM_NIF(raw_addresses) {
    size_t count, size;
    if (!get_size(env, argv[0], &count) || !get_size(env, argv[1], &size) ||
        count == 0 || count > 64 || size == 0)
        return enif_make_badarg(env);
    void *blocks[64];
    ERL_NIF_TERM list = enif_make_list(env, 0);
    size_t made = 0;
    for (; made < count; made++) {
        blocks[made] = beam_alloc_bytes(beam_raw_allocator, size, 1);
        if (blocks[made] == NULL)
            break;
    }
    for (size_t i = made; i-- > 0;) {
        list = enif_make_list_cell(env, address(env, blocks[i]), list);
        beam_free_bytes(beam_raw_allocator, blocks[i], size, 1);
    }
    return made == count ? list : beam_make_error(env, "enomem");
}

/* raw_alloc_aligned(alignment): what the raw allocator says to it. */
BEAM_NIF(raw_alloc_aligned) {
    size_t alignment;
    if (!get_size(env, argv[0], &alignment))
        return enif_make_badarg(env);
    void *p = beam_alloc_bytes(beam_raw_allocator, 64, alignment);
    if (p == NULL)
        return atom(env, "null");
    ERL_NIF_TERM a = address(env, p);
    beam_free_bytes(beam_raw_allocator, p, 64, alignment);
    return a;
}

/* A megabyte held across calls, to watch :erlang.memory(:system). */
#define HELD_LEN ((size_t)1 << 20)
static unsigned char *held;

BEAM_NIF(raw_hold) {
    if (held == NULL)
        held = beam_alloc(beam_raw_allocator, unsigned char, HELD_LEN);
    return held != NULL ? atom(env, "ok") : beam_make_error(env, "enomem");
}

BEAM_NIF(raw_release) {
    beam_free(beam_raw_allocator, held, HELD_LEN);
    held = NULL;
    return atom(env, "ok");
}

/* large_aligned(size, alignment) */
BEAM_NIF(large_aligned) {
    size_t size, alignment;
    if (!get_size(env, argv[0], &size) || !get_size(env, argv[1], &alignment))
        return enif_make_badarg(env);
    void *p = beam_alloc_bytes(beam_large_allocator, size, alignment);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    memset(p, 0, size);
    ERL_NIF_TERM a = address(env, p);
    beam_free_bytes(beam_large_allocator, p, size, alignment);
    return a;
}

/* gpa_leaks(): {while a block is live, after it is freed} */
BEAM_NIF(gpa_leaks) {
    beam_gpa_t *gpa = &beam_general_purpose_allocator_instance;
    uint8_t *memory = beam_alloc(beam_general_purpose_allocator, uint8_t, 8);
    if (memory == NULL)
        return beam_make_error(env, "enomem");
    bool before = beam_gpa_detect_leaks(gpa);
    beam_free(beam_general_purpose_allocator, memory, 8);
    bool after = beam_gpa_detect_leaks(gpa);
    return enif_make_tuple2(env, atom(env, before ? "true" : "false"),
                            atom(env, after ? "true" : "false"));
}

/* which_allocator(): what beam_allocator is in this NIF, and the list it
 * builds through it (the guide's basic/0). */
static ERL_NIF_TERM describe_beam_allocator(ErlNifEnv *env) {
    const char *name =
        beam_allocator.vtable == beam_raw_allocator.vtable
            ? "beam_raw_allocator"
        : beam_allocator.vtable == beam_general_purpose_allocator.vtable
            ? "a general purpose allocator"
            : "another allocator";
    uint16_t *slice = beam_alloc(beam_allocator, uint16_t, 4);
    if (slice == NULL)
        return beam_make_error(env, "enomem");
    for (uint16_t i = 0; i < 4; i++)
        slice[i] = i;
    ERL_NIF_TERM list = beam_make_uint_list(env, slice, 4, sizeof *slice);
    beam_free(beam_allocator, slice, 4);
    return enif_make_tuple2(env, atom(env, name), list);
}

BEAM_NIF(which_allocator) {
    return describe_beam_allocator(env);
}

BEAM_NIF(which_allocator_checked, .leak_check = true) {
    return describe_beam_allocator(env);
}

/* arena(count): count small arrays from one arena over beam_allocator,
 * {first array, bytes used, how many arrays} before a single deinit. */
BEAM_NIF(arena) {
    size_t count;
    if (!get_size(env, argv[0], &count) || count == 0 || count > 100000)
        return enif_make_badarg(env);
    beam_arena_t arena;
    beam_arena_init(&arena, beam_allocator);
    beam_allocator_t a = beam_arena_allocator(&arena);
    ERL_NIF_TERM first = enif_make_list(env, 0);
    for (size_t i = 0; i < count; i++) {
        uint16_t *slice = beam_alloc(a, uint16_t, 4);
        if (slice == NULL) {
            beam_arena_deinit(&arena);
            return beam_make_error(env, "enomem");
        }
        for (uint16_t j = 0; j < 4; j++)
            slice[j] = j;
        if (i == 0)
            first = beam_make_uint_list(env, slice, 4, sizeof *slice);
        /* no free: the arena gives everything back at once */
    }
    size_t used = beam_arena_used(&arena);
    beam_arena_deinit(&arena);
    return enif_make_tuple2(env, first, enif_make_uint64(env, used));
}

/* leaky(): forgets a block under leak_check. */
BEAM_NIF(leaky, .leak_check = true) {
    unsigned char *forgotten = beam_alloc(beam_allocator, unsigned char, 64);
    if (forgotten != NULL)
        memset(forgotten, 0, 64);
    return atom(env, "ok");
}

/* failing(fail_index): three allocations through a failing allocator; the
 * error path frees what it got (leak_check would raise otherwise). */
BEAM_NIF(failing, .leak_check = true) {
    size_t fail_index;
    if (!get_size(env, argv[0], &fail_index))
        return enif_make_badarg(env);
    beam_failing_t f;
    beam_failing_init(&f, beam_allocator, fail_index);
    beam_allocator_t a = beam_failing_allocator(&f);
    void *blocks[3] = {NULL, NULL, NULL};
    ERL_NIF_TERM result = atom(env, "ok");
    for (int i = 0; i < 3; i++) {
        blocks[i] = beam_alloc_bytes(a, 100, 8);
        if (blocks[i] == NULL) {
            result = beam_make_error(env, "enomem");
            break;
        }
    }
    for (int i = 0; i < 3; i++)
        beam_free_bytes(a, blocks[i], 100, 8);
    return result;
}

static ErlNifFunc funcs[] = {
    {"raw_addresses", 2, raw_addresses, 0},
    {"raw_alloc_aligned", 1, raw_alloc_aligned, 0},
    {"raw_hold", 0, raw_hold, 0},
    {"raw_release", 0, raw_release, 0},
    {"large_aligned", 2, large_aligned, 0},
    {"gpa_leaks", 0, gpa_leaks, 0},
    {"which_allocator", 0, which_allocator, 0},
    {"which_allocator_checked", 0, which_allocator_checked, 0},
    {"arena", 1, arena, 0},
    {"leaky", 0, leaky, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"failing", 1, failing, 0},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(Elixir.BeamAllocDemo, funcs, load, NULL, NULL)
