/* Unit tests of what the general purpose allocator holds after a collect
 * when a small live set follows a large burst that other threads freed
 * (a soak audit's finding: the live set's slabs spread over every segment
 * of the burst, so none went back). */
#include "check.h"

#include <beam_alloc.h>

#include <pthread.h>
#include <stdlib.h>

enum {
    HOARD_BLOCK = 1024,
    HOARD_BURST = (64 << 20) / HOARD_BLOCK, /* 1,024 slabs */
    HOARD_LIVE = 3072,                      /* 3 MiB, 48 slabs */
};

typedef struct hoard_job {
    beam_allocator_t a;
    void **blocks;
    size_t n;
} hoard_job;

static void *hoard_alloc(void *arg) {
    hoard_job *job = (hoard_job *)arg;
    for (size_t i = 0; i < job->n; i++)
        job->blocks[i] = beam_alloc_bytes(job->a, HOARD_BLOCK, 8);
    return NULL;
}

/* Blocks allocated by a thread that then exits. */
static bool hoard_alloc_in_thread(beam_allocator_t a, void **blocks, size_t n) {
    hoard_job job = {a, blocks, n};
    pthread_t t;
    if (pthread_create(&t, NULL, hoard_alloc, &job) != 0)
        return false;
    pthread_join(t, NULL);
    for (size_t i = 0; i < n; i++)
        if (blocks[i] == NULL)
            return false;
    return true;
}

/* A thread allocates a burst and exits; this one frees it all (the slabs
 * go, one by one, on the reclaim stack); a second thread then allocates a
 * small live set and exits. Its refills park the stack 32 slabs at a time,
 * and each took the pool's first slab, the one just parked, in the segment
 * being emptied: the live set's 48 slabs kept most of the burst's segments
 * (57 MB held after the collect for 3 MiB live). With refills filling one
 * segment at a time, its first sub-slabs, in the slack of segments of the
 * burst, kept two or three more (12.6-16.8 MB); now two are left, 8.4 MB. */
TEST(gpa_hoard_small_live_set_after_remote_freed_burst_gives_back) {
    beam_gpa_t g;
    beam_gpa_init(&g, beam_large_allocator);
    beam_allocator_t a = beam_gpa_allocator(&g);
    void **burst = (void **)calloc(HOARD_BURST, sizeof *burst);
    void **live = (void **)calloc(HOARD_LIVE, sizeof *live);
    CHECK(burst != NULL && live != NULL);
    CHECK(hoard_alloc_in_thread(a, burst, HOARD_BURST));
    for (size_t i = 0; i < HOARD_BURST; i++)
        beam_free_bytes(a, burst[i], HOARD_BLOCK, 8);
    CHECK(hoard_alloc_in_thread(a, live, HOARD_LIVE));
    beam_gpa_collect(&g);
    beam_gpa_usage u = beam_gpa_usage_of(&g);
    CHECK(u.live_bytes == (size_t)HOARD_LIVE * HOARD_BLOCK);
    CHECK(u.backing_bytes <= 3 * u.live_bytes);
    for (size_t i = 0; i < HOARD_LIVE; i++)
        beam_free_bytes(a, live[i], HOARD_BLOCK, 8);
    beam_gpa_collect(&g);
    CHECK(beam_gpa_usage_of(&g).backing_bytes < ((size_t)64 << 10));
    beam_gpa_deinit(&g);
    free(burst);
    free(live);
}
