/* A thread-local object's static offset (src/os/tls.h), on which the NIF
 * build's fast paths find their thread's slots: it must be the object's
 * distance from the thread pointer on every thread, or 0. This executable
 * is linked with the object in its own static TLS (the linker rewrites the
 * descriptor's address into the offset); a dlopen'ed NIF reads the offset
 * from the descriptor, whose two answers are tested here with made-up
 * descriptors (every BEAM test runs the real ones: the first NIF library
 * loaded gets static TLS, later ones dynamic). */
#include "check.h"

#include <beam_alloc.h>

#include <pthread.h>
#include <string.h>

#include "gpa_internal.h"
#include "os/tls.h"

#ifdef BEAM__HAVE_TLS_OFFSET
static __thread char tls_probe[48];

static void *address_here(void *arg) {
    intptr_t off = *(const intptr_t *)arg;
    return beam__thread_pointer() + off == tls_probe ? (void *)1 : NULL;
}

TEST(os_tls_offset_is_the_same_on_every_thread) {
    intptr_t off = BEAM__TLS_STATIC_OFFSET(tls_probe);
    CHECK(off != 0);
    CHECK(beam__thread_pointer() + off == tls_probe);
    pthread_t th;
    void *same = NULL;
    CHECK(pthread_create(&th, NULL, address_here, &off) == 0);
    CHECK(pthread_join(th, &same) == 0);
    CHECK(same != NULL);
}

TEST(os_tls_offset_comes_only_from_a_static_descriptor) {
    char *addr = tls_probe + 8;
    intptr_t off = addr - beam__thread_pointer();
    /* _dl_tlsdesc_return's argument is the offset itself... */
    intptr_t static_desc[2] = {0, off};
    CHECK(beam__tls_static_offset(addr, (intptr_t)static_desc) == off);
    /* ...a dynamic descriptor's is a pointer to its module and offset. */
    intptr_t dynamic_arg[2] = {3, 8};
    intptr_t dynamic_desc[2] = {0, (intptr_t)dynamic_arg};
    CHECK(beam__tls_static_offset(addr, (intptr_t)dynamic_desc) == 0);
    /* An executable's linker hands the offset in the descriptor's place. */
    CHECK(beam__tls_static_offset(addr, off) == off);
}
#endif

#ifdef GPA_TLS_OFFSET
/* The GPA's slots' offset, where this build caches it: learned in an
 * executable (else every inline fast path would miss), and, not
 * answering (a library in dynamic TLS, a first call), the fast paths
 * with clang find no slot inline (gpa_inline_slot) and miss to the
 * out-of-line paths, which must settle every call as they do. Each free
 * is judged by the running counters: beam_gpa_usage_of walks the slabs
 * and reads a block's free tag, which the inline free sets before it
 * looks for the slot, so a free the miss path dropped (the block never
 * back on a list, its slab's count never lowered) passed for done there
 * (a review's mutant). The checks come after the offset is put back: a
 * failed one leaves the test, and every later test would have run
 * without the inline paths. */
#define TLS_MISS_BLOCKS 512
TEST(gpa_fast_paths_with_and_without_the_cached_offset) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void *first = beam_alloc_bytes(a, 8, 8);
    CHECK(first != NULL);
    intptr_t learned = beam__atomic_load_relaxed(&beam__gpa_tls_offset);
    /* (Static here: an offset, not 0 or BEAM__TLS_DYNAMIC.) */
    CHECK(beam__tls_cached(learned) == (char *)&beam__gpa_tls[0]);
    beam__atomic_store_relaxed(&beam__gpa_tls_offset, BEAM__TLS_DYNAMIC);
    static unsigned char *p[TLS_MISS_BLOCKS];
    size_t got = 0, bytes = 8, intact = 0;
    for (size_t i = 0; i < TLS_MISS_BLOCKS; i++) {
        p[i] = beam_alloc_bytes(a, i + 1, 8);
        if (p[i] != NULL) {
            got++;
            bytes += i + 1;
            memset(p[i], (int)(i & 0xff), i + 1);
        }
    }
    beam_alloc_stats held, done;
    bool held_ok = beam_allocator_stats(a, &held);
    size_t walked = beam_gpa_usage_of(&g).live_blocks;
    for (size_t i = 0; i < TLS_MISS_BLOCKS; i++)
        if (p[i] != NULL) {
            intact += p[i][i] == (unsigned char)(i & 0xff);
            beam_free_bytes(a, p[i], i + 1, 8);
        }
    beam_free_bytes(a, first, 8, 8);
    bool done_ok = beam_allocator_stats(a, &done);
    /* Misuse is still caught on the way to the miss path. */
    check_capture_reports();
    if (p[7] != NULL)
        beam_free_bytes(a, p[7], 8, 8);
    bool double_free_said = check_said_once("double free");
    check_release_reports();
    beam__atomic_store_relaxed(&beam__gpa_tls_offset, learned);
    CHECK(got == TLS_MISS_BLOCKS && intact == TLS_MISS_BLOCKS);
    CHECK(walked == TLS_MISS_BLOCKS + 1);
    CHECK(held_ok && held.allocations == TLS_MISS_BLOCKS + 1 &&
          held.live_blocks == TLS_MISS_BLOCKS + 1 && held.live_bytes == bytes);
    CHECK(done_ok && done.frees == TLS_MISS_BLOCKS + 1 &&
          done.live_blocks == 0 && done.live_bytes == 0);
    CHECK(double_free_said);
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_blocks == 0 && u.misuse_count == 1);
    CHECK(!beam_gpa_deinit(&g));
}
#endif
