/*
 * The NIF glue beyond the guide: what beam_allocator is in each kind of
 * NIF, custom allocators (alone and under leak_check), alignment limits,
 * impossible sizes, fault injection and the term helpers. Loaded by
 * BeamAlloc.Test.Glue (test/support/glue.ex).
 */
#include "nif_util.h"

/* --- beam_allocator in each kind of NIF -------------------------------- */

BEAM_NIF(allocator_is_raw) {
    return make_bool(env, same_allocator(beam_allocator, beam_raw_allocator));
}

/* The same body, registered dirty CPU and dirty IO in the table: a second
 * C function each, so that every table entry has its own fptr. */
BEAM_NIF(allocator_is_raw_dirty_cpu) {
    return make_bool(env, same_allocator(beam_allocator, beam_raw_allocator));
}

BEAM_NIF(allocator_is_raw_dirty_io) {
    return make_bool(env, same_allocator(beam_allocator, beam_raw_allocator));
}

BEAM_NIF(allocator_in_leak_check, .leak_check = true) {
    /* Neither the raw allocator nor the process-wide instance: a fresh
     * instance of this call. */
    bool fresh =
        !same_allocator(beam_allocator, beam_raw_allocator) &&
        !same_allocator(beam_allocator, beam_general_purpose_allocator);
    return make_bool(env, fresh);
}

/* Raw NIFs: plain functions in the table, not wrapped, so beam_allocator is
 * whatever this thread last had. */
static ERL_NIF_TERM raw_allocator_is_raw(ErlNifEnv *env, int argc,
                                         const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return make_bool(env, same_allocator(beam_allocator, beam_raw_allocator));
}

/* Allocates through whatever beam_allocator holds: if a finished
 * leak_check call had left it pointing at its dead stack instance, this
 * would crash the VM. */
static ERL_NIF_TERM raw_uses_allocator(ErlNifEnv *env, int argc,
                                       const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    uint64_t *block = beam_alloc(beam_allocator, uint64_t, 8);
    if (block == NULL)
        return beam_make_error(env, "enomem");
    for (size_t i = 0; i < 8; i++)
        block[i] = i;
    beam_free(beam_allocator, block, 8);
    return enif_make_atom(env, "ok");
}

/* --- Alignment and size limits ------------------------------------------ */

static bool get_kind(ErlNifEnv *env, ERL_NIF_TERM term, beam_allocator_t *a) {
    char name[16];
    if (!enif_get_atom(env, term, name, sizeof name, ERL_NIF_LATIN1))
        return false;
    if (strcmp(name, "raw") == 0)
        *a = beam_raw_allocator;
    else if (strcmp(name, "large") == 0)
        *a = beam_large_allocator;
    else if (strcmp(name, "gpa") == 0)
        *a = beam_general_purpose_allocator;
    else if (strcmp(name, "beam") == 0)
        *a = beam_allocator;
    else
        return false;
    return true;
}

/* alloc_aligned(kind, size, alignment): allocate, write every byte, free;
 * {:ok, address} so the test can check the alignment. */
BEAM_NIF(alloc_aligned) {
    beam_allocator_t a;
    size_t size, alignment;
    if (!get_kind(env, argv[0], &a) || !get_size(env, argv[1], &size) ||
        !get_alignment(env, argv[2], &alignment))
        return enif_make_badarg(env);
    unsigned char *p = beam_alloc_bytes(a, size, alignment);
    if (p == NULL) {
        /* Only the raw allocator turns alignments down; everything else
         * fails for want of memory. */
        bool unsupported =
            a.vtable == beam_raw_allocator.vtable && alignment > BEAM_MAX_ALIGN;
        return beam_make_error(env, unsupported ? "unsupported_alignment"
                                                : "enomem");
    }
    if (size > 0)
        memset(p, 0xA5, size);
    ERL_NIF_TERM address = make_address(env, p);
    beam_free_bytes(a, p, size, alignment);
    return make_ok(env, address);
}

/* sized_alloc(kind, count, elem_size): beam_alloc_array with a count the
 * test chooses, so count * size can overflow. */
BEAM_NIF(sized_alloc) {
    beam_allocator_t a;
    size_t count, elem_size;
    if (!get_kind(env, argv[0], &a) || !get_size(env, argv[1], &count) ||
        !get_size(env, argv[2], &elem_size) || elem_size == 0)
        return enif_make_badarg(env);
    void *p = beam_alloc_array(a, count, elem_size, 1);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_array(a, p, count, elem_size, 1);
    return enif_make_atom(env, "ok");
}

/* --- Fault injection ----------------------------------------------------
 * Two allocations through a failing allocator over beam_allocator; the
 * error path must give back what was taken, which leak_check verifies. */

BEAM_NIF(failing_alloc, .leak_check = true) {
    size_t fail_index;
    if (!get_size(env, argv[0], &fail_index))
        return enif_make_badarg(env);
    beam_failing_t failing;
    beam_failing_init(&failing, beam_allocator, fail_index);
    beam_allocator_t a = beam_failing_allocator(&failing);

    uint16_t *slice = beam_alloc(a, uint16_t, 4);
    if (slice == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *scratch = beam_alloc(a, unsigned char, 100);
    if (scratch == NULL) {
        beam_free(a, slice, 4);
        return beam_make_error(env, "enomem");
    }
    for (size_t i = 0; i < 4; i++)
        slice[i] = (uint16_t)i;
    ERL_NIF_TERM list = beam_make_uint_list(env, slice, 4, sizeof *slice);
    beam_free(a, scratch, 100);
    beam_free(a, slice, 4);
    return list;
}

/* --- A custom allocator ------------------------------------------------
 * Wraps the raw allocator and tells the calling process about every block:
 * {:alloc, len}, {:free, len}, {:resize | :remap, old_len, new_len}. The
 * process and env are per call, so they live in a thread-local that the
 * allocator function disarms on entry and the NIF body arms once it has the
 * pid. Blocks allocated before (a leak_check instance's state, made before
 * the body runs) are told when it arms, a few at most; anything else
 * outside that window goes unreported. */

#define PENDING_MAX 4

typedef struct messenger {
    ErlNifEnv *env;
    ErlNifPid pid;
    bool armed;
    unsigned pending;
    size_t pending_len[PENDING_MAX];
} messenger;

static BEAM_THREAD_LOCAL messenger this_thread_messenger;

static void tell(messenger *m, ERL_NIF_TERM msg) {
    if (m->armed)
        enif_send(m->env, &m->pid, NULL, msg);
}

static void *messaging_alloc(void *ctx, size_t len, size_t alignment,
                             uintptr_t ret) {
    messenger *m = ctx;
    void *p = beam_raw_allocator.vtable->alloc(NULL, len, alignment, ret);
    if (p != NULL && m->armed)
        tell(m, enif_make_tuple2(m->env, enif_make_atom(m->env, "alloc"),
                                 enif_make_uint64(m->env, len)));
    else if (p != NULL && m->pending < PENDING_MAX)
        m->pending_len[m->pending++] = len;
    return p;
}

static bool messaging_resize(void *ctx, void *mem, size_t len, size_t alignment,
                             size_t new_len, uintptr_t ret) {
    messenger *m = ctx;
    bool ok = beam_raw_allocator.vtable->resize(NULL, mem, len, alignment,
                                                new_len, ret);
    if (ok && m->armed)
        tell(m, enif_make_tuple3(m->env, enif_make_atom(m->env, "resize"),
                                 enif_make_uint64(m->env, len),
                                 enif_make_uint64(m->env, new_len)));
    return ok;
}

static void *messaging_remap(void *ctx, void *mem, size_t len, size_t alignment,
                             size_t new_len, uintptr_t ret) {
    messenger *m = ctx;
    void *p = beam_raw_allocator.vtable->remap(NULL, mem, len, alignment,
                                               new_len, ret);
    if (p != NULL && m->armed)
        tell(m, enif_make_tuple3(m->env, enif_make_atom(m->env, "remap"),
                                 enif_make_uint64(m->env, len),
                                 enif_make_uint64(m->env, new_len)));
    return p;
}

static void messaging_free(void *ctx, void *mem, size_t len, size_t alignment,
                           uintptr_t ret) {
    messenger *m = ctx;
    beam_raw_allocator.vtable->free(NULL, mem, len, alignment, ret);
    if (m->armed)
        tell(m, enif_make_tuple2(m->env, enif_make_atom(m->env, "free"),
                                 enif_make_uint64(m->env, len)));
}

static const beam_allocator_vtable messaging_vtable = {
    messaging_alloc, messaging_resize, messaging_remap, messaging_free};

static beam_allocator_t messaging_allocator(void) {
    this_thread_messenger.armed = false;
    this_thread_messenger.pending = 0;
    return (beam_allocator_t){&this_thread_messenger, &messaging_vtable};
}

static bool arm_messenger(ErlNifEnv *env) {
    messenger *m = &this_thread_messenger;
    if (enif_self(env, &m->pid) == NULL)
        return false;
    m->env = env;
    m->armed = true;
    for (unsigned i = 0; i < m->pending; i++)
        tell(m, enif_make_tuple2(env, enif_make_atom(env, "alloc"),
                                 enif_make_uint64(env, m->pending_len[i])));
    m->pending = 0;
    return true;
}

BEAM_NIF(allocator_is_custom, .allocator = messaging_allocator) {
    return make_bool(env, beam_allocator.vtable == &messaging_vtable &&
                              beam_allocator.ctx == &this_thread_messenger);
}

/* The body shared by the custom-allocator NIFs: n bytes through
 * beam_allocator, grown to 2n, written, and freed unless told to leak. */
static ERL_NIF_TERM churn_through_beam_allocator(ErlNifEnv *env,
                                                 ERL_NIF_TERM size_term,
                                                 bool leak) {
    size_t n;
    if (!get_size(env, size_term, &n) || n == 0 || n > SIZE_MAX / 2)
        return enif_make_badarg(env);
    if (!arm_messenger(env))
        return enif_make_badarg(env);
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, n);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *q = beam_realloc(beam_allocator, p, n, 2 * n);
    if (q == NULL) {
        beam_free(beam_allocator, p, n);
        return beam_make_error(env, "enomem");
    }
    memset(q, 0x5A, 2 * n);
    if (!leak)
        beam_free(beam_allocator, q, 2 * n);
    return enif_make_atom(env, "ok");
}

BEAM_NIF(custom_alloc, .allocator = messaging_allocator) {
    return churn_through_beam_allocator(env, argv[0], false);
}

BEAM_NIF(custom_alloc_dirty, .allocator = messaging_allocator) {
    return churn_through_beam_allocator(env, argv[0], false);
}

BEAM_NIF(composed_clean, .allocator = messaging_allocator, .leak_check = true) {
    return churn_through_beam_allocator(env, argv[0], false);
}

BEAM_NIF(composed_leaky, .allocator = messaging_allocator, .leak_check = true) {
    return churn_through_beam_allocator(env, argv[0], true);
}

/* --- Term helpers and names -------------------------------------------- */

/* uint_list(width): [0, 1, max] at width bytes per element; any width
 * other than 1, 2, 4 or 8 is beam_make_uint_list's to refuse. */
BEAM_NIF(uint_list) {
    size_t width;
    if (!get_size(env, argv[0], &width))
        return enif_make_badarg(env);
    union {
        uint8_t u8[3];
        uint16_t u16[3];
        uint32_t u32[3];
        uint64_t u64[3];
    } v;
    memset(&v, 0, sizeof v);
    switch (width) {
    case 1:
        v.u8[1] = 1, v.u8[2] = UINT8_MAX;
        break;
    case 2:
        v.u16[1] = 1, v.u16[2] = UINT16_MAX;
        break;
    case 4:
        v.u32[1] = 1, v.u32[2] = UINT32_MAX;
        break;
    case 8:
        v.u64[1] = 1, v.u64[2] = UINT64_MAX;
        break;
    }
    return beam_make_uint_list(env, &v, 3, width);
}

/* raise_exception(module, message): beam_raise with the caller's strings. */
BEAM_NIF(raise_exception) {
    char module[256];
    ErlNifBinary message;
    if (!enif_get_atom(env, argv[0], module, sizeof module, ERL_NIF_LATIN1) ||
        !enif_inspect_binary(env, argv[1], &message))
        return enif_make_badarg(env);
    char *text = beam_alloc(beam_allocator, char, message.size + 1);
    if (text == NULL)
        return beam_make_error(env, "enomem");
    memcpy(text, message.data, message.size);
    text[message.size] = '\0';
    ERL_NIF_TERM raised = beam_raise(env, module, text);
    beam_free(beam_allocator, text, message.size + 1);
    return raised;
}

BEAM_NIF(error_tuple) {
    char reason[256];
    if (!enif_get_atom(env, argv[0], reason, sizeof reason, ERL_NIF_LATIN1))
        return enif_make_badarg(env);
    return beam_make_error(env, reason);
}

static ERL_NIF_TERM make_string(ErlNifEnv *env, const char *s) {
    if (s == NULL)
        return enif_make_atom(env, "nil");
    size_t len = strlen(s);
    ERL_NIF_TERM bin;
    memcpy(enif_make_new_binary(env, len, &bin), s, len);
    return bin;
}

BEAM_NIF(current_function) {
    return make_string(env, beam_nif_function_name());
}

/* current_function_of(...): one C function under two arities (optional
 * arguments handled by argc): its name in each. */
BEAM_NIF(current_function_of) {
    return make_string(env, beam_nif_function_name());
}

/* A raw NIF runs outside any BEAM_NIF call: no name to give. */
static ERL_NIF_TERM raw_current_function(ErlNifEnv *env, int argc,
                                         const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return make_string(env, beam_nif_module_name());
}

static ErlNifFunc funcs[] = {
    {"allocator_is_raw", 0, allocator_is_raw, 0},
    {"allocator_is_raw_dirty_cpu", 0, allocator_is_raw_dirty_cpu,
     ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"allocator_is_raw_dirty_io", 0, allocator_is_raw_dirty_io,
     ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"allocator_in_leak_check", 0, allocator_in_leak_check, 0},
    {"raw_allocator_is_raw", 0, raw_allocator_is_raw, 0},
    {"raw_uses_allocator", 0, raw_uses_allocator, 0},
    {"alloc_aligned", 3, alloc_aligned, 0},
    {"sized_alloc", 3, sized_alloc, 0},
    {"failing_alloc", 1, failing_alloc, 0},
    {"allocator_is_custom", 0, allocator_is_custom, 0},
    {"custom_alloc", 1, custom_alloc, 0},
    {"custom_alloc_dirty", 1, custom_alloc_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"composed_clean", 1, composed_clean, 0},
    {"composed_leaky", 1, composed_leaky, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"uint_list", 1, uint_list, 0},
    {"raise_exception", 2, raise_exception, 0},
    {"error_tuple", 1, error_tuple, 0},
    {"current_function", 0, current_function, 0},
    {"raw_current_function", 0, raw_current_function, 0},
    {"current_function_of", 1, current_function_of, 0},
    {"current_function_of", 2, current_function_of, 0},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Glue, funcs, load_capturing_reports, NULL,
              NULL)
