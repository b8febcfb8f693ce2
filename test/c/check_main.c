#include "check.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#include "internal.h"

#include <beam_alloc.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TESTS 1024

static struct {
    const char *name;
    check_fn fn;
} tests[MAX_TESTS];
static size_t test_count;
static bool current_failed;

void check_register(const char *name, check_fn fn) {
    if (test_count == MAX_TESTS) {
        fprintf(stderr, "too many tests\n");
        exit(2);
    }
    tests[test_count].name = name;
    tests[test_count].fn = fn;
    test_count++;
}

void check_fail(const char *file, int line, const char *what) {
    current_failed = true;
    fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", file, line, what);
}

static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static size_t reports;
static char last_report[512];
static char all_reports[16384];

static void capture(void *user, const char *line) {
    (void)user;
    pthread_mutex_lock(&report_lock);
    reports++;
    snprintf(last_report, sizeof last_report, "%s", line);
    size_t used = strlen(all_reports);
    snprintf(all_reports + used, sizeof all_reports - used, "%s\n", line);
    pthread_mutex_unlock(&report_lock);
}

void check_capture_reports(void) {
    pthread_mutex_lock(&report_lock);
    reports = 0;
    last_report[0] = all_reports[0] = '\0';
    pthread_mutex_unlock(&report_lock);
    beam_set_report_hook(capture, NULL);
}

void check_release_reports(void) {
    beam_set_report_hook(NULL, NULL);
}

size_t check_report_count(void) {
    pthread_mutex_lock(&report_lock);
    size_t n = reports;
    pthread_mutex_unlock(&report_lock);
    return n;
}

bool check_last_report_has(const char *needle) {
    pthread_mutex_lock(&report_lock);
    bool found = strstr(last_report, needle) != NULL;
    pthread_mutex_unlock(&report_lock);
    return found;
}

bool check_report_contains(const char *needle) {
    pthread_mutex_lock(&report_lock);
    bool found = strstr(all_reports, needle) != NULL;
    pthread_mutex_unlock(&report_lock);
    return found;
}

bool check_under_valgrind(void) {
#ifdef RUNNING_ON_VALGRIND
    return RUNNING_ON_VALGRIND;
#else
    return false;
#endif
}

#if CHECK_ASAN
#define CHECK_NO_ASAN __attribute__((noinline, no_sanitize_address))
#else
#define CHECK_NO_ASAN __attribute__((noinline))
#endif

CHECK_NO_ASAN unsigned char check_freed_peek(const void *p, size_t at) {
    return ((const volatile unsigned char *)p)[at];
}

CHECK_NO_ASAN void check_freed_poke(void *p, size_t at, unsigned char byte) {
    ((volatile unsigned char *)p)[at] = byte;
}

CHECK_NO_ASAN uintptr_t check_freed_peek_word(const void *p, size_t word) {
    return ((const volatile uintptr_t *)p)[word];
}

CHECK_NO_ASAN void check_freed_poke_word(void *p, size_t word,
                                         uintptr_t value) {
    ((volatile uintptr_t *)p)[word] = value;
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    size_t passed = 0, failed = 0;
    for (size_t i = 0; i < test_count; i++) {
        if (filter != NULL && strstr(tests[i].name, filter) == NULL)
            continue;
        current_failed = false;
        tests[i].fn();
        check_release_reports();
        if (current_failed) {
            failed++;
            printf("FAIL %s\n", tests[i].name);
        } else {
            passed++;
            printf("ok   %s\n", tests[i].name);
        }
        fflush(stdout);
    }
    printf("%zu passed, %zu failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}

void check_large_free(void *ctx, void *mem, size_t len, size_t alignment,
                      uintptr_t ret) {
    (void)ctx;
    beam_large_allocator.vtable->free(NULL, mem, len, alignment, ret);
}

bool check_no_resize(void *ctx, void *mem, size_t len, size_t alignment,
                     size_t new_len, uintptr_t ret) {
    (void)ctx, (void)mem, (void)len, (void)alignment, (void)new_len, (void)ret;
    return false;
}

void *check_no_remap(void *ctx, void *mem, size_t len, size_t alignment,
                     size_t new_len, uintptr_t ret) {
    (void)ctx, (void)mem, (void)len, (void)alignment, (void)new_len, (void)ret;
    return NULL;
}

void check_bump_wrong_length(beam_allocator_t a,
                             size_t (*used)(const void *ctx), const void *ctx) {
    check_capture_reports();
    unsigned char *x = beam_alloc_bytes(a, 96, 16);
    unsigned char *y = beam_alloc_bytes(a, 96, 16);
    CHECK(x != NULL && y == x + 96);
    memset(y, 0x5a, 96);
    beam_free_bytes(a, x, 192, 16);
    CHECK(check_said_once("newest (live) block"));
    CHECK(!beam_resize_bytes(a, x, 192, 16, 100));
    CHECK(used(ctx) == 192);
    unsigned char *z = beam_alloc_bytes(a, 32, 16);
    CHECK(z == y + 96 && y[0] == 0x5a && y[95] == 0x5a);
    beam_free_bytes(a, z, 32, 16);
    beam_free_bytes(a, y, 96, 16);
    beam_free_bytes(a, x, 96, 16);
    CHECK(used(ctx) == 0);
    CHECK(check_report_count() == 2);
    check_release_reports();
}

void check_bump_newest_length(beam_allocator_t a,
                              size_t (*used)(const void *ctx), const void *ctx,
                              size_t wrong_len) {
    unsigned char *x = beam_alloc_bytes(a, 96, 16);
    unsigned char *y = beam_alloc_bytes(a, 96, 16);
    CHECK(x != NULL && y == x + 96);
    unsigned long outer = check_watch_misuse();
    check_capture_reports();
    beam_free_bytes(a, y, wrong_len, 16);
    CHECK(check_said_once("starts where the"));
    CHECK(check_misuse_seen() == 1 &&
          strcmp(check_misuse_kind(),
                 "free with a wrong length or alignment") == 0);
    CHECK(used(ctx) == 192);
    /* Shrinking it from a wrong length is refused too (from a shorter one
     * it answered true and kept every byte), in the same words. */
    CHECK(!beam_resize_bytes(a, y, wrong_len, 16, 32));
    CHECK(check_report_count() == 2 &&
          check_last_report_has("starts where the") && used(ctx) == 192);
    beam_free_bytes(a, y, 96, 16);
    beam_free_bytes(a, x, 96, 16);
    CHECK(used(ctx) == 0 && check_report_count() == 2);
    check_release_reports();
    check_unwatch_misuse(outer);
}

unsigned long check_watch_misuse(void) {
    unsigned long outer = beam__misuse.watch_from;
    beam__misuse.watch_from = beam__misuse.count;
    return outer;
}

void check_unwatch_misuse(unsigned long outer) {
    beam__misuse.watch_from = outer;
}

unsigned long check_misuse_seen(void) {
    return beam__misuse.count - beam__misuse.watch_from;
}

const char *check_misuse_kind(void) {
    return beam__misuse.kind;
}
