/*
 * Reading memory that may not be there (os/probe.h).
 */
#define _GNU_SOURCE /* process_vm_readv */

#include "probe.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/uio.h>
#endif

/* mincore says whether at's page is mapped, never reading it. */
static bool mapped_read(const void *at, void *out, size_t len) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    void *start = (void *)((uintptr_t)at & ~(page - 1));
#if defined(__APPLE__)
    char vec[1];
#else
    unsigned char vec[1];
#endif
    if (mincore(start, 1, vec) != 0)
        return false;
    memcpy(out, at, len);
    return true;
}

static bool probe_read(const void *at, void *out, size_t len) {
#if defined(__linux__)
    struct iovec local = {out, len};
    struct iovec remote = {(void *)(uintptr_t)at, len};
    ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    if (n == (ssize_t)len)
        return true;
    if (n >= 0 || errno == EFAULT)
        return false; /* (a part: the rest is not readable either) */
        /* ENOSYS, EPERM (seccomp): the kernel will not say; mincore does. */
#endif
    return mapped_read(at, out, len);
}

bool beam__probe_read(const void *at, void *out, size_t len) {
    int saved = errno; /* the caller's, not ours to change */
    bool ok = probe_read(at, out, len);
    errno = saved;
    return ok;
}
