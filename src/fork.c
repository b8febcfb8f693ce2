/*
 * fork() while other threads use the library. The child has one thread,
 * the one that forked: a lock another thread held at that moment would
 * stay held in the child for good, and the child's next call that takes
 * it (any allocation of an instance whose lock it was) would hang. So, as
 * glibc does for malloc, fork handlers take every lock of the library
 * before the fork and drop them after it, in the parent and in the child.
 * The heaps of the other threads stay in the child, idle: theirs is what
 * they held, which a collection can take back. (Inside a BEAM the memory
 * itself comes from enif_alloc, whose locks nothing here takes: a child
 * that reaches the VM's allocators may hang there, README says so.)
 *
 * The order, outermost first, each module's locks in its own turn:
 *  1. the named stats' table (stats_named.c): held while it calls into
 *     allocators (their stats, a collection of an instance), so before
 *     every lock those take;
 *  2. the registry, then every live instance's lock in registry order
 *     (gpa_heap.c): rules 1 and 2 of gpa_internal.h's lock order make
 *     each a leaf, never held while another of the library's is waited
 *     for (an instance lock's holder takes no other but the leaves
 *     below); the registry held keeps every instance in the table alive;
 *  3. the leaves: the address sets' stripes (addr_set.c), the stack depot
 *     (frames.c), the stats' thread list (stats.c), the cold blocks' list
 *     (thread_exit.c). Their holders take no lock of the library.
 * A thread that holds a lock waits, if ever, only for one later in the
 * order, so the forking thread, taking them in order, always gets each in
 * the end: no cycle. It is the order every path of the library keeps.
 * The report hook's lock is not taken: a report holds it while the hook
 * runs, and a hook may read the named stats or fork itself, so a fork
 * would wait for the hook and the hook for the fork (report.c keeps the
 * hook whole across a fork and makes the lock anew in the child).
 *
 * The handlers stay valid for the life of the code they point to: glibc
 * and bionic drop a library's handlers when it is unloaded (dlclose runs
 * __cxa_finalize, which unregisters them), FreeBSD does as well, and musl
 * never unmaps a library. Elsewhere a NIF library that registers them
 * keeps itself mapped (beam_internal_keep_mapped): its unload then tears
 * none of its allocators down, which costs only on such systems.
 */
#include "internal.h"

#include <pthread.h>

/* Each module's part, in the order above, outermost first. The report
 * hook's takes nothing before the fork (see above): its place is where
 * the child makes its lock anew, with the named stats' lock still held. */
static void (*const parts[])(beam__fork_phase) = {
    beam__stats_named_fork, beam__report_fork, beam__gpa_fork, beam__set_fork,
    beam__frames_fork,      beam__stats_fork,  beam__cold_fork};
#define PARTS (sizeof parts / sizeof parts[0])

static void prepare(void) {
    for (size_t i = 0; i < PARTS; i++)
        parts[i](BEAM__FORK_PREPARE);
}

/* In the reverse order (any order would do: nothing waits any more). */
static void after(beam__fork_phase phase) {
    for (size_t i = PARTS; i-- > 0;)
        parts[i](phase);
}

static void in_parent(void) {
    after(BEAM__FORK_PARENT);
}

static void in_child(void) {
    after(BEAM__FORK_CHILD);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void register_handlers(void) {
#if !defined(__linux__) && !defined(__FreeBSD__)
    (void)beam_internal_keep_mapped();
#endif
    (void)pthread_atfork(prepare, in_parent, in_child);
}

void beam__fork_guard(void) {
    pthread_once(&once, register_handlers);
}
