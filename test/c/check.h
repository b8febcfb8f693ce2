/*
 * A tiny test harness: TEST(name) { ... CHECK(cond); ... } registers itself;
 * the runner (check_main.c) runs every test whose name contains argv[1] and
 * ends with "N passed, N failed".
 */
#ifndef CHECK_H
#define CHECK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The checkers a run may be under, for tests whose case they change or
 * break (their own allocator, reads of freed memory): CHECK_ASAN and
 * CHECK_TSAN, 1 when built with that sanitizer, else 0;
 * check_under_valgrind(), at run time. */
#if defined(__SANITIZE_ADDRESS__)
#define CHECK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHECK_ASAN 1
#endif
#endif
#ifndef CHECK_ASAN
#define CHECK_ASAN 0
#endif
#if defined(__SANITIZE_THREAD__)
#define CHECK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHECK_TSAN 1
#endif
#endif
#ifndef CHECK_TSAN
#define CHECK_TSAN 0
#endif
bool check_under_valgrind(void);
/* A byte of freed memory read or written on purpose (a test of the
 * allocator's own checks), past ASan: the general purpose allocator
 * poisons its freed blocks under it (src/asan.h). */
unsigned char check_freed_peek(const void *p, size_t at);
void check_freed_poke(void *p, size_t at, unsigned char byte);
/* The same for the pointer-sized word at index word (a freed block's
 * free-list link, 0, or its tag, 1). */
uintptr_t check_freed_peek_word(const void *p, size_t word);
void check_freed_poke_word(void *p, size_t word, uintptr_t value);

typedef void (*check_fn)(void);
void check_register(const char *name, check_fn fn);
void check_fail(const char *file, int line, const char *what);

#define TEST(name)                                                             \
    static void test_##name(void);                                             \
    __attribute__((constructor)) static void register_##name(void) {           \
        check_register(#name, test_##name);                                    \
    }                                                                          \
    static void test_##name(void)

/* On failure: record it and leave the test function. */
#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            check_fail(__FILE__, __LINE__, #cond);                             \
            return;                                                            \
        }                                                                      \
    } while (0)

/* Reports made through beam_set_report_hook while capturing: count and last
 * line, so tests can assert that misuse was reported. */
void check_capture_reports(void);
void check_release_reports(void);
size_t check_report_count(void);
bool check_report_contains(const char *needle);
/* The last report (not any) names needle. */
bool check_last_report_has(const char *needle);
/* Exactly one report since capturing began, and it names needle. */
static inline bool check_said_once(const char *needle) {
    return check_report_count() == 1 && check_report_contains(needle);
}

/* The calling thread's misuse record (beam__misuse, internal.h), watched
 * as a NIF call watches it: check_watch_misuse starts a watch (the kind
 * kept is then the first misuse's) and returns the outer one, which
 * check_unwatch_misuse puts back; check_misuse_seen counts the misuse since
 * the watch began, check_misuse_kind names the first. */
unsigned long check_watch_misuse(void);
void check_unwatch_misuse(unsigned long outer);
unsigned long check_misuse_seen(void);
const char *check_misuse_kind(void);

/* A bump allocator a (an arena, a fixed buffer), fresh and empty: a wrong
 * length that makes an older block end where the newest ends is refused
 * with a report, never rolled back over the newest (live) block, and LIFO
 * frees still roll back. used(ctx): its bytes in use. */
struct beam_allocator;
void check_bump_wrong_length(struct beam_allocator a,
                             size_t (*used)(const void *ctx), const void *ctx);

/* The same, fresh and empty too: its newest block (96 bytes) given back
 * with wrong_len, a shorter or a longer length than its own, is refused
 * with a report that says wrong length (not a pointer of elsewhere, nor
 * silently kept until a reset), and its right length still frees it. */
void check_bump_newest_length(struct beam_allocator a,
                              size_t (*used)(const void *ctx), const void *ctx,
                              size_t wrong_len);

/* A backing's free that hands the block to beam_large_allocator: for test
 * backings that differ from it only in what they allocate. */
void check_large_free(void *ctx, void *mem, size_t len, size_t alignment,
                      uintptr_t ret);

/* A backing's resize and remap that never resize or move a block: for test
 * backings that hand out places of their own. */
bool check_no_resize(void *ctx, void *mem, size_t len, size_t alignment,
                     size_t new_len, uintptr_t ret);
void *check_no_remap(void *ctx, void *mem, size_t len, size_t alignment,
                     size_t new_len, uintptr_t ret);

/* A step two threads take together: one says it reached `at` (set), the
 * other waits until it has (wait). For a thread kept idle, alive, while the
 * test works on what it left. */
typedef struct check_phase {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int at;
} check_phase;

static inline void check_phase_init(check_phase *p) {
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->at = 0;
}

static inline void check_phase_set(check_phase *p, int at) {
    pthread_mutex_lock(&p->lock);
    p->at = at;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static inline void check_phase_wait(check_phase *p, int at) {
    pthread_mutex_lock(&p->lock);
    while (p->at != at)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
}

/* Runs fn(arg) in a child process (check_child.c) and waits for it, at
 * most 10 s: its exit status, or -1 when it did not exit by itself (no
 * fork, a signal, or it hung and was killed). check_wait_child: the wait
 * alone, for a child forked otherwise; check_child_exit: how a child
 * leaves (no destructors, no sanitizer's exit check). */
int check_in_child(int (*fn)(void *), void *arg);
int check_wait_child(pid_t pid);
_Noreturn void check_child_exit(int status);

static inline bool check_aligned(const void *p, size_t alignment) {
    return ((uintptr_t)p & (alignment - 1)) == 0;
}

#endif
