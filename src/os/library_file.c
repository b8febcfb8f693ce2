/* (library_file.h) */
#define _GNU_SOURCE /* dladdr, st_mtim */
#include "library_file.h"

#include <dlfcn.h>
#include <stdio.h>
#include <sys/stat.h>

static bool file_id_at(const char *path, beam__file_id *id) {
    struct stat st;
    *id = (beam__file_id){0};
    if (stat(path, &st) != 0)
        return false;
    id->dev = (unsigned long long)st.st_dev;
    id->ino = (unsigned long long)st.st_ino;
    id->size = (unsigned long long)st.st_size;
#if defined(__APPLE__)
    id->mtime_sec = (long long)st.st_mtimespec.tv_sec;
    id->mtime_nsec = (long long)st.st_mtimespec.tv_nsec;
#else
    id->mtime_sec = (long long)st.st_mtim.tv_sec;
    id->mtime_nsec = (long long)st.st_mtim.tv_nsec;
#endif
    id->known = true;
    return true;
}

bool beam__library_file(const void *addr, char *path, size_t n,
                        beam__file_id *id) {
    Dl_info info;
    *id = (beam__file_id){0};
    if (n == 0 || dladdr(addr, &info) == 0 || info.dli_fname == NULL ||
        info.dli_fname[0] == '\0')
        return false;
    if ((size_t)snprintf(path, n, "%s", info.dli_fname) >= n)
        return false;
    return file_id_at(path, id);
}

bool beam__file_unchanged(const char *path, const beam__file_id *id) {
    beam__file_id now;
    if (!id->known || !file_id_at(path, &now))
        return true;
    return now.dev == id->dev && now.ino == id->ino && now.size == id->size &&
           now.mtime_sec == id->mtime_sec && now.mtime_nsec == id->mtime_nsec;
}
