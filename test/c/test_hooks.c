/* <beam_alloc/hooks.h> at the C level: the semantics each hook's C library
 * expects (malloc(0), realloc(NULL, n), realloc(p, 0), calloc overflow,
 * strdup, free(NULL), alignment; lua_Alloc's osize tag, nsize 0, grow and
 * shrink), counted to the byte on a tracked instance. */
#include "check.h"

#include <beam_alloc/hooks.h>

#include <stdint.h>
#include <string.h>

static beam_allocator_t hooks_allocator; /* read at every call */
BEAM_MALLOC_HOOKS(unit, hooks_allocator);

static size_t live_bytes(beam_allocator_t a) {
    beam_alloc_stats st;
    beam_allocator_stats(a, &st);
    return st.live_bytes;
}

static bool aligned16(const void *p) {
    return ((uintptr_t)p & 15u) == 0;
}

TEST(malloc_hooks_follow_the_c_library_semantics) {
    beam_gpa_t g;
    beam_gpa_init_ex(&g, beam_large_allocator, BEAM_GPA_TRACK_SITES);
    hooks_allocator = beam_gpa_allocator(&g);
    check_capture_reports();
    char *zero = unit_malloc(0); /* a smallest block, not NULL */
    CHECK(zero != NULL && aligned16(zero));
    char *p = unit_realloc(NULL, 5); /* realloc(NULL, n) allocates */
    CHECK(p != NULL && aligned16(p));
    memcpy(p, "abcd", 5);
    p = unit_realloc(p, 300); /* grows, contents kept */
    CHECK(p != NULL && aligned16(p) && strcmp(p, "abcd") == 0);
    char *shrunk = unit_realloc(p, 0); /* a smallest block, not a free */
    CHECK(shrunk != NULL);
    unsigned char *z = unit_calloc(7, 9);
    CHECK(z != NULL && aligned16(z));
    for (size_t i = 0; i < 63; i++)
        CHECK(z[i] == 0);
    CHECK(unit_calloc(SIZE_MAX / 2, 3) == NULL); /* overflow */
    char *s = unit_strdup("hooks");
    CHECK(s != NULL && strcmp(s, "hooks") == 0 && aligned16(s));
    unit_free(NULL); /* nothing */
    unit_free(zero);
    unit_free(shrunk);
    unit_free(z);
    unit_free(s);
    CHECK(check_report_count() == 0);
    CHECK(live_bytes(hooks_allocator) == 0);
    check_release_reports();
    CHECK(!beam_gpa_deinit(&g)); /* no block left */
}

TEST(malloc_hooks_read_the_allocator_at_every_call) {
    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, 0);
    hooks_allocator = beam_failing_allocator(&f);
    CHECK(unit_malloc(8) == NULL && unit_strdup("x") == NULL &&
          unit_calloc(1, 1) == NULL && unit_realloc(NULL, 1) == NULL);
    hooks_allocator = beam_raw_allocator;
    void *p = unit_malloc(8);
    CHECK(p != NULL);
    unit_free(p);
}

/* strdup of NULL: NULL, nothing allocated (it read the string at NULL: a
 * segfault, found in an audit of the public calls; glibc's strdup does
 * the same, but a hook can refuse as cheaply). */
TEST(malloc_hooks_strdup_of_null_gives_null) {
    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, SIZE_MAX);
    hooks_allocator = beam_failing_allocator(&f);
    CHECK(unit_strdup(NULL) == NULL);
    CHECK(f.alloc_index == 0);
    hooks_allocator = beam_raw_allocator;
}

TEST(lua_alloc_takes_osize_as_a_tag_when_ptr_is_null) {
    beam_gpa_t g;
    beam_gpa_init_ex(&g, beam_large_allocator, BEAM_GPA_TRACK_SITES);
    beam_allocator_t a = beam_gpa_allocator(&g);
    check_capture_reports();
    /* LUA_TTHREAD (8) and LUA_TTABLE (5) as osize: not sizes. */
    char *p = beam_lua_alloc(&a, NULL, 8, 200);
    CHECK(p != NULL && ((uintptr_t)p & (BEAM_MAX_ALIGN - 1)) == 0);
    memset(p, 'x', 200);
    CHECK(beam_lua_alloc(&a, NULL, 5, 0) == NULL); /* frees nothing */
    char *grown = beam_lua_alloc(&a, p, 200, 5000);
    CHECK(grown != NULL && grown[0] == 'x' && grown[199] == 'x');
    char *shrunk = beam_lua_alloc(&a, grown, 5000, 16);
    CHECK(shrunk != NULL && shrunk[0] == 'x' && shrunk[15] == 'x');
    CHECK(live_bytes(a) == 16);
    CHECK(beam_lua_alloc(&a, shrunk, 16, 0) == NULL);
    CHECK(live_bytes(a) == 0);
    CHECK(check_report_count() == 0);
    check_release_reports();
    CHECK(!beam_gpa_deinit(&g)); /* no block left */
}

TEST(lua_alloc_reports_a_wrong_size) {
    beam_gpa_t g;
    beam_gpa_init_ex(&g, beam_large_allocator, BEAM_GPA_TRACK_SITES);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *p = beam_lua_alloc(&a, NULL, 4, 40);
    CHECK(p != NULL);
    check_capture_reports();
    unsigned long outer = check_watch_misuse();
    CHECK(beam_lua_alloc(&a, p, 41, 0) == NULL);
    CHECK(check_misuse_seen() == 1);
    check_unwatch_misuse(outer);
    check_release_reports(); /* (freed all the same, as the instance does) */
    CHECK(!beam_gpa_deinit(&g)); /* no block left */
}

/* A shrink that moves the block (a general purpose instance's, to a smaller
 * size class) allocates, and so can fail: NULL, the block untouched. Lua
 * 5.4 copes; Lua 5.1 to 5.3 and LuaJIT assume a shrink never fails (see
 * beam_lua_alloc). */
TEST(lua_alloc_shrink_that_moves_can_fail_leaving_the_block) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_large_allocator);
    beam_failing_t f;
    beam_failing_init(&f, beam_gpa_allocator(&g), 1);
    beam_allocator_t a = beam_failing_allocator(&f);
    char *p = beam_lua_alloc(&a, NULL, 4, 64);
    CHECK(p != NULL);
    memset(p, 'y', 64);
    CHECK(beam_lua_alloc(&a, p, 64, 20) == NULL);
    CHECK(p[0] == 'y' && p[63] == 'y');
    CHECK(beam_lua_alloc(&a, p, 64, 0) == NULL);
    CHECK(f.allocations == f.deallocations);
    CHECK(!beam_gpa_deinit(&g)); /* no block left */
}

/* Over the raw allocator a shrink stays in place, fault injection or not:
 * what Lua 5.1 to 5.3 need. */
TEST(lua_alloc_shrink_over_the_raw_allocator_never_fails) {
    beam_failing_t f;
    beam_failing_init(&f, beam_raw_allocator, 1);
    beam_allocator_t a = beam_failing_allocator(&f);
    char *p = beam_lua_alloc(&a, NULL, 4, 5000);
    CHECK(p != NULL);
    memset(p, 'z', 5000);
    char *shrunk = beam_lua_alloc(&a, p, 5000, 20);
    CHECK(shrunk != NULL && shrunk[0] == 'z' && shrunk[19] == 'z');
    CHECK(beam_lua_alloc(&a, shrunk, 20, 0) == NULL);
    CHECK(f.allocations == f.deallocations);
}
