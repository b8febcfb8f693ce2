/*
 * The examples of the allocator guide (shared/seed/allocators-guide.md),
 * one NIF per example, in the order the guide shows them. Loaded by
 * BeamAlloc.Test.Guide (test/support/guide.ex).
 */
#include "nif_util.h"

#include <stdlib.h>

/* --- Raw beam allocator ------------------------------------------------ */

BEAM_NIF(allocate_raw) {
    size_t count;
    if (!get_size(env, argv[0], &count))
        return enif_make_badarg(env);
    uint16_t *slice = beam_alloc(beam_raw_allocator, uint16_t, count);
    if (slice == NULL)
        return beam_make_error(env, "enomem");
    for (size_t i = 0; i < count; i++)
        slice[i] = (uint16_t)i;
    ERL_NIF_TERM list = beam_make_uint_list(env, slice, count, sizeof *slice);
    beam_free(beam_raw_allocator, slice, count);
    return list;
}

/* --- Tracking memory ---------------------------------------------------
 * Hidden globals, as in the guide, to hold memory across calls. The tests
 * call these from one process at a time; a second allocation before the
 * free is refused rather than leaked. */

#define GLOBAL_LEN 1000000

static unsigned char *global_raw;
static unsigned char *global_c;

BEAM_NIF(raw_global_alloc) {
    if (global_raw != NULL)
        return beam_make_error(env, "already_allocated");
    global_raw = beam_alloc(beam_raw_allocator, unsigned char, GLOBAL_LEN);
    if (global_raw == NULL)
        return beam_make_error(env, "enomem");
    return enif_make_atom(env, "ok");
}

BEAM_NIF(raw_global_free) {
    beam_free(beam_raw_allocator, global_raw, GLOBAL_LEN);
    global_raw = NULL;
    return enif_make_atom(env, "ok");
}

BEAM_NIF(c_malloc) {
    if (global_c != NULL)
        return beam_make_error(env, "already_allocated");
    global_c = malloc(GLOBAL_LEN);
    if (global_c == NULL)
        return beam_make_error(env, "enomem");
    return enif_make_atom(env, "ok");
}

BEAM_NIF(c_free) {
    free(global_c);
    global_c = NULL;
    return enif_make_atom(env, "ok");
}

/* --- Large allocator --------------------------------------------------- */

BEAM_NIF(allocate_large_aligned) {
    size_t count;
    if (!get_size(env, argv[0], &count))
        return enif_make_badarg(env);
    uint8_t *page =
        beam_alloc_aligned(beam_large_allocator, uint8_t, count, 4096);
    if (page == NULL)
        return beam_make_error(env, "enomem");
    ERL_NIF_TERM address = make_address(env, page);
    beam_free_aligned(beam_large_allocator, page, count, 4096);
    return address;
}

/* --- General purpose allocator ----------------------------------------- */

BEAM_NIF(leaks) {
    uint8_t *memory = beam_alloc(beam_general_purpose_allocator, uint8_t, 8);
    if (memory == NULL)
        return beam_make_error(env, "enomem");
    /* The guide frees with `defer`, which runs after the return expression
     * has been evaluated: the check still sees the block. */
    bool leaking =
        beam_gpa_detect_leaks(&beam_general_purpose_allocator_instance);
    beam_free(beam_general_purpose_allocator, memory, 8);
    return make_bool(env, leaking);
}

BEAM_NIF(noleak) {
    uint8_t *memory = beam_alloc(beam_general_purpose_allocator, uint8_t, 8);
    if (memory == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_general_purpose_allocator, memory, 8);
    return make_bool(
        env, beam_gpa_detect_leaks(&beam_general_purpose_allocator_instance));
}

/* --- beam_allocator ---------------------------------------------------- */

BEAM_NIF(basic) {
    uint16_t *slice = beam_alloc(beam_allocator, uint16_t, 4);
    if (slice == NULL)
        return beam_make_error(env, "enomem");
    for (size_t i = 0; i < 4; i++)
        slice[i] = (uint16_t)i;
    ERL_NIF_TERM list = beam_make_uint_list(env, slice, 4, sizeof *slice);
    beam_free(beam_allocator, slice, 4);
    return list;
}

/* --- Custom allocators ------------------------------------------------- */

BEAM_NIF(with_arena) {
    beam_arena_t arena;
    beam_arena_init(&arena, beam_allocator);
    beam_allocator_t allocator = beam_arena_allocator(&arena);

    ERL_NIF_TERM result;
    uint16_t *slice = beam_alloc(allocator, uint16_t, 4);
    if (slice != NULL) {
        for (size_t i = 0; i < 4; i++)
            slice[i] = (uint16_t)i;
        result = beam_make_uint_list(env, slice, 4, sizeof *slice);
        beam_free(allocator, slice, 4);
    } else {
        result = beam_make_error(env, "enomem");
    }
    beam_arena_deinit(&arena);
    return result;
}

static ErlNifFunc funcs[] = {
    {"allocate_raw", 1, allocate_raw, 0},
    {"raw_global_alloc", 0, raw_global_alloc, 0},
    {"raw_global_free", 0, raw_global_free, 0},
    {"c_malloc", 0, c_malloc, 0},
    {"c_free", 0, c_free, 0},
    {"allocate_large_aligned", 1, allocate_large_aligned, 0},
    {"leaks", 0, leaks, 0},
    {"noleak", 0, noleak, 0},
    {"basic", 0, basic, 0},
    {"with_arena", 0, with_arena, 0},
    {"take_reports", 0, take_reports, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Guide, funcs, load_capturing_reports, NULL,
              NULL)
