/*
 * Helpers shared by the test NIFs: argument decoding that turns anything
 * out of range into badarg (ArgumentError in Elixir), and a report hook
 * that keeps the library's diagnostics for the tests to assert on instead
 * of letting them scroll past on stderr.
 *
 * Each test NIF is its own shared object with its own copy of beam_alloc,
 * so the statics here are per module.
 */
#ifndef NIF_UTIL_H
#define NIF_UTIL_H

#include <beam_alloc_nif.h>

#include <stdint.h>
#include <string.h>

/* A NIF and its twin name_dirty, which the module's table puts on a dirty
 * scheduler: both are body(env, argv), each a C function of its own so
 * that each table entry has its own. */
#define NIF_WITH_DIRTY_TWIN(name, body)                                        \
    BEAM_NIF(name) {                                                           \
        return body(env, argv);                                                \
    }                                                                          \
    BEAM_NIF(name##_dirty) {                                                   \
        return body(env, argv);                                                \
    }

/* A non-negative integer that fits size_t. */
static inline bool get_size(ErlNifEnv *env, ERL_NIF_TERM term, size_t *out) {
    ErlNifUInt64 v;
    if (!enif_get_uint64(env, term, &v) || v > SIZE_MAX)
        return false;
    *out = (size_t)v;
    return true;
}

/* An alignment: a power of two that fits size_t. */
static inline bool get_alignment(ErlNifEnv *env, ERL_NIF_TERM term,
                                 size_t *out) {
    return get_size(env, term, out) && *out != 0 && (*out & (*out - 1)) == 0;
}

static inline ERL_NIF_TERM make_bool(ErlNifEnv *env, bool b) {
    return enif_make_atom(env, b ? "true" : "false");
}

static inline ERL_NIF_TERM make_ok(ErlNifEnv *env, ERL_NIF_TERM value) {
    return enif_make_tuple2(env, enif_make_atom(env, "ok"), value);
}

static inline ERL_NIF_TERM make_address(ErlNifEnv *env, const void *p) {
    return enif_make_uint64(env, (ErlNifUInt64)(uintptr_t)p);
}

static inline bool same_allocator(beam_allocator_t a, beam_allocator_t b) {
    return a.vtable == b.vtable && a.ctx == b.ctx;
}

/* What an allocator is, as an atom: raw, large, gpa (the process-wide
 * instance), leak_check (a fresh instance), {arena, Parent} or other. */
static inline ERL_NIF_TERM kind_of(ErlNifEnv *env, beam_allocator_t a) {
    beam_arena_t probe;
    beam_arena_init(&probe, beam_raw_allocator);
    if (a.vtable == beam_arena_allocator(&probe).vtable)
        return enif_make_tuple2(env, enif_make_atom(env, "arena"),
                                kind_of(env, ((beam_arena_t *)a.ctx)->parent));
    if (same_allocator(a, beam_raw_allocator))
        return enif_make_atom(env, "raw");
    if (same_allocator(a, beam_large_allocator))
        return enif_make_atom(env, "large");
    if (same_allocator(a, beam_general_purpose_allocator))
        return enif_make_atom(env, "gpa");
    if (a.vtable == beam_general_purpose_allocator.vtable)
        return enif_make_atom(env, "leak_check");
    return enif_make_atom(env, "other");
}

/* %{names[i] => values[i]}, atoms for keys; badarg past MAP_MAX_KEYS. */
#define MAP_MAX_KEYS 16

static inline ERL_NIF_TERM make_map(ErlNifEnv *env, size_t n,
                                    const char *const names[],
                                    ERL_NIF_TERM values[]) {
    ERL_NIF_TERM keys[MAP_MAX_KEYS], map;
    if (n > MAP_MAX_KEYS)
        return enif_make_badarg(env);
    for (size_t i = 0; i < n; i++)
        keys[i] = enif_make_atom(env, names[i]);
    if (!enif_make_map_from_arrays(env, keys, values, n, &map))
        return enif_make_badarg(env);
    return map;
}

/* The same with unsigned integers for values (counters, stats). */
static inline ERL_NIF_TERM make_uint_map(ErlNifEnv *env, size_t n,
                                         const char *const names[],
                                         const uint64_t values[]) {
    ERL_NIF_TERM terms[MAP_MAX_KEYS];
    if (n > MAP_MAX_KEYS)
        return enif_make_badarg(env);
    for (size_t i = 0; i < n; i++)
        terms[i] = enif_make_uint64(env, values[i]);
    return make_map(env, n, names, terms);
}

/* A block's contents: tag, tag + 1, ... so that whoever frees a block can
 * tell it was not overwritten meanwhile. */
static inline bool intact(const unsigned char *mem, size_t len,
                          unsigned char tag) {
    for (size_t i = 0; i < len; i++)
        if (mem[i] != (unsigned char)(tag + i))
            return false;
    return true;
}

static inline void fill(unsigned char *mem, size_t len, unsigned char tag) {
    for (size_t i = 0; i < len; i++)
        mem[i] = (unsigned char)(tag + i);
}

/* xorshift64*: enough to vary sizes, cheap, reproducible by seed. */
static inline uint64_t next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* --- Churn ----------------------------------------------------------------
 * A private workload inside one call, churn(Iterations, Seed): Iterations
 * times, a random one of nslots blocks of a is replaced by a new one
 * (lengths from len_of, given a random number), each block checked before
 * it is freed, all freed at the end. ok, {error, corrupted}, or
 * {error, enomem} when an allocation failed (*failed then true, for callers
 * that describe that failure their own way); badarg for bad arguments. */

#define CHURN_MAX_SLOTS 64

static inline ERL_NIF_TERM churn_blocks(ErlNifEnv *env, beam_allocator_t a,
                                        size_t nslots,
                                        size_t (*len_of)(uint64_t random),
                                        ERL_NIF_TERM iterations_arg,
                                        ERL_NIF_TERM seed_arg, bool *failed) {
    *failed = false;
    size_t iterations;
    ErlNifUInt64 seed;
    if (!get_size(env, iterations_arg, &iterations) ||
        !enif_get_uint64(env, seed_arg, &seed))
        return enif_make_badarg(env);
    struct {
        unsigned char *mem;
        size_t len;
        unsigned char tag;
    } slots[CHURN_MAX_SLOTS];
    memset(slots, 0, sizeof slots); /* (C++ has no {0} for all fields) */
    uint64_t state = seed | 1;
    bool corrupted = false;
    if (nslots > CHURN_MAX_SLOTS)
        nslots = CHURN_MAX_SLOTS;
    for (size_t i = 0; i < iterations && !*failed; i++) {
        uint64_t x = next_random(&state);
        size_t k = x % nslots;
        if (slots[k].mem != NULL) {
            corrupted |= !intact(slots[k].mem, slots[k].len, slots[k].tag);
            beam_free(a, slots[k].mem, slots[k].len);
            slots[k].mem = NULL;
        }
        size_t len = len_of(x);
        unsigned char *mem = beam_alloc(a, unsigned char, len);
        if (mem == NULL) {
            *failed = true;
            break;
        }
        slots[k].mem = mem;
        slots[k].len = len;
        slots[k].tag = (unsigned char)(x >> 40);
        fill(mem, len, slots[k].tag);
    }
    for (size_t k = 0; k < nslots; k++)
        if (slots[k].mem != NULL) {
            corrupted |= !intact(slots[k].mem, slots[k].len, slots[k].tag);
            beam_free(a, slots[k].mem, slots[k].len);
        }
    if (*failed)
        return beam_make_error(env, "enomem");
    return corrupted ? beam_make_error(env, "corrupted")
                     : enif_make_atom(env, "ok");
}

/* --- Waits for the reporter ---------------------------------------------
 * waits_ran_out/0, a plain NIF: how many calls of this module's copy of
 * beam_alloc waited their whole bound (a second) for the reporter to read
 * their reports (src/nif/report.c). Tests compare the count before and
 * after, where the calls' time would be the machine's load's to decide. */
#ifdef __cplusplus
extern "C" {
#endif
unsigned long beam__report_waits_ran_out(void);
#ifdef __cplusplus
}
#endif

static inline ERL_NIF_TERM waits_ran_out(ErlNifEnv *env, int argc,
                                         const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_uint64(env, beam__report_waits_ran_out());
}

/* --- Captured reports ---------------------------------------------------
 * A ring of the last REPORT_SLOTS lines. The hook may run on any thread and
 * with allocator locks held, so it only copies into static storage under a
 * mutex that nothing else takes while allocating. */

#define REPORT_SLOTS 64
/* A whole line, as the library makes it (BEAM__REPORT_LINE): a leak's
 * site of 16 frames is longer than 512. */
#define REPORT_LINE 1024

static ErlNifMutex *report_lock;
static char report_lines[REPORT_SLOTS][REPORT_LINE];
static unsigned report_head, report_count;

static inline void capture_report(void *user, const char *line) {
    (void)user;
    enif_mutex_lock(report_lock);
    unsigned slot = (report_head + report_count) % REPORT_SLOTS;
    strncpy(report_lines[slot], line, REPORT_LINE - 1);
    report_lines[slot][REPORT_LINE - 1] = '\0';
    if (report_count < REPORT_SLOTS)
        report_count++;
    else
        report_head = (report_head + 1) % REPORT_SLOTS;
    enif_mutex_unlock(report_lock);
}

/* For the module's load callback. */
static inline int capture_reports(void) {
    /* enif_mutex_create takes a char *: C++ will not pass a literal. */
    static char name[] = "beam_alloc_test_reports";
    report_lock = enif_mutex_create(name);
    if (report_lock == NULL)
        return 1;
    beam_set_report_hook(capture_report, NULL);
    return 0;
}

/* A load callback for modules that only need their reports captured. */
static inline int load_capturing_reports(ErlNifEnv *env, void **priv,
                                         ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    return capture_reports();
}

/* take_reports/0: the captured lines, oldest first, as binaries; clears
 * them. A raw NIF: it allocates nothing through beam_alloc. */
static inline ERL_NIF_TERM take_reports(ErlNifEnv *env, int argc,
                                        const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    enif_mutex_lock(report_lock);
    for (unsigned i = report_count; i-- > 0;) {
        const char *line = report_lines[(report_head + i) % REPORT_SLOTS];
        size_t len = strlen(line);
        ERL_NIF_TERM bin;
        memcpy(enif_make_new_binary(env, len, &bin), line, len);
        list = enif_make_list_cell(env, bin, list);
    }
    report_head = report_count = 0;
    enif_mutex_unlock(report_lock);
    return list;
}

/* A leak_check NIF's body that leaks one block (8 bytes) and returns ok. */
static inline ERL_NIF_TERM leak_one(ErlNifEnv *env) {
    uint64_t *leaked = beam_create(beam_allocator, uint64_t);
    if (leaked != NULL)
        *leaked = 1;
    return enif_make_atom(env, "ok");
}

/* The leak_check NIFs whose Elixir or Erlang names have characters beyond
 * ASCII, or a control character, each returning leak(env) (an ok after a
 * leak). The VM reads a table's names as Latin-1 (one byte, one
 * character); one C function each, as one listed under two names of one
 * arity is named by its first entry. */
#define ODD_CHAR_NIFS(leak)                                                    \
    BEAM_NIF(latin1_name, .leak_check = true) {                                \
        return leak(env);                                                      \
    }                                                                          \
    BEAM_NIF(times_name, .leak_check = true) {                                 \
        return leak(env);                                                      \
    }                                                                          \
    BEAM_NIF(control_name, .leak_check = true) {                               \
        return leak(env);                                                      \
    }
/* Their entries: h\xe9llo (héllo, which both languages write bare),
 * x\xd7y (× is no letter: quoted) and a\rb\x80 (escaped). */
#define ODD_CHAR_NIF_ENTRIES                                                   \
    {"h\xe9llo", 0, latin1_name, 0}, {"x\xd7y", 0, times_name, 0},             \
        {"a\rb\x80", 0, control_name, 0}

#endif
