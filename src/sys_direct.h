/*
 * The system backend's alloc and free as inline calls: enif_alloc and
 * enif_free in the NIF build, malloc and free in the standalone one. The
 * raw allocator's fast paths call them directly: through beam__sys_alloc,
 * in another object, each call was one more jump. backend/enif.c and
 * backend/libc.c define beam__sys_alloc and beam__sys_free by them, so
 * that the two ways to the backend cannot part (the raw allocator frees
 * by one a block the other allocated).
 */
#ifndef BEAM_ALLOC_SYS_DIRECT_H
#define BEAM_ALLOC_SYS_DIRECT_H

#include <stddef.h>

#ifdef BEAM_ALLOC_STANDALONE
#include <stdlib.h>
static inline void *beam__sys_alloc_direct(size_t len) {
    return malloc(len);
}
static inline void beam__sys_free_direct(void *mem) {
    free(mem);
}
#else
#include <erl_nif.h>
static inline void *beam__sys_alloc_direct(size_t len) {
    return enif_alloc(len);
}
static inline void beam__sys_free_direct(void *mem) {
    enif_free(mem);
}
#endif

#endif
