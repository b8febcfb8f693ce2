/*
 * Which file a loaded library came from, and whether that file is still
 * the one on disk: what tells a NIF library that a new version of its
 * module, loading it from the same path, gets this old copy instead of the
 * rebuilt file (the dynamic linker hands back an object already loaded
 * under that name), and would run the old C code.
 *
 * And keeping this copy mapped for the process's life
 * (beam_internal_keep_mapped, beam_alloc.h), for hooks handed to a library
 * that outlives it.
 *
 * POSIX (dladdr, stat, dlopen); elsewhere nothing is known, and nothing is
 * said.
 */
#ifndef BEAM_ALLOC_OS_LIBRARY_FILE_H
#define BEAM_ALLOC_OS_LIBRARY_FILE_H

#include "../internal.h"

/* A file's identity as stat gives it: a rebuild writes a new file (a new
 * inode) or rewrites this one (a new size or modification time). */
typedef struct beam__file_id {
    bool known;
    unsigned long long dev, ino, size;
    long long mtime_sec, mtime_nsec;
} beam__file_id;

/* The file the loaded object holding addr came from, and its identity now:
 * path gets its name (as it was loaded). false: not known. */
BEAM__HIDDEN bool beam__library_file(const void *addr, char *path, size_t n,
                                     beam__file_id *id);

/* Is the file at path still the one id describes? true when nothing can be
 * told (either unknown): only a known change is a change. */
BEAM__HIDDEN bool beam__file_unchanged(const char *path,
                                       const beam__file_id *id);

/* Was beam_internal_keep_mapped called (whether or not a dlopen could
 * hold the mapping)? The copy's last unload then tears none of its
 * allocators down: another library's hooks in it (SQLite's, zlib's,
 * zstd's) may still use them. */
BEAM__HIDDEN bool beam__library_kept_mapped(void);

#endif
