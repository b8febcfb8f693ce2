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

/* The name the object holding addr was loaded under, or NULL where none
 * is known (no object; the executable, which dladdr may name ""). */
static const char *object_name(const void *addr) {
    Dl_info info;
    if (dladdr(addr, &info) == 0 || info.dli_fname == NULL ||
        info.dli_fname[0] == '\0')
        return NULL;
    return info.dli_fname;
}

bool beam__library_file(const void *addr, char *path, size_t n,
                        beam__file_id *id) {
    *id = (beam__file_id){0};
    const char *name = n != 0 ? object_name(addr) : NULL;
    if (name == NULL || (size_t)snprintf(path, n, "%s", name) >= n)
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

/* 0 not asked yet, 1 kept, -1 asked but no dlopen holds the mapping:
 * written by the first call, read by the later ones (the adapter headers'
 * hooks ask again, cheaply) and by the last unload (glue.c), which leaves
 * the allocators to the hooks in either case: where no dlopen can hold
 * the mapping, the hooks are in code nothing unmaps (the executable;
 * musl, whose dlopen finds an object by its file, replaced since, and
 * which never unloads one), and they use them still. */
static _Atomic int kept_mapped;

static bool keep_mapped(void) {
    const char *name = object_name((const void *)beam_internal_keep_mapped);
    if (name == NULL)
        return false;
    /* A reference of our own, never given back, to the object the VM
     * already has (NOLOAD: by the name it was loaded under, whatever the
     * file holds now): the VM's dlclose at the unload leaves it mapped.
     * NODELETE says so to the linker as well. */
    return dlopen(name, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE) != NULL;
}

bool beam_internal_keep_mapped(void) {
    int state = beam__atomic_load_acquire(&kept_mapped);
    if (state == 0) {
        /* (Two first calls at once take two references: no matter.) */
        state = keep_mapped() ? 1 : -1;
        beam__atomic_store_release(&kept_mapped, state);
    }
    return state > 0;
}

bool beam__library_kept_mapped(void) {
    return beam__atomic_load_acquire(&kept_mapped) != 0;
}
