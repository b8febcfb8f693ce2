/* System backend of the NIF build: ERTS's driver_alloc through enif_alloc,
 * so every byte is counted in :erlang.memory(:system). The non-fatal forms:
 * they return NULL on exhaustion instead of taking the node down. alloc
 * and free are sys_direct.h's, which the raw allocator's fast paths
 * inline: one definition, so that its blocks and these are one family. */
#include "../internal.h"
#include "../sys_direct.h"

#include <erl_nif.h>

void *beam__sys_alloc(size_t len) {
    return beam__sys_alloc_direct(len);
}

void *beam__sys_realloc(void *mem, size_t len) {
    return enif_realloc(mem, len);
}

void beam__sys_free(void *mem) {
    beam__sys_free_direct(mem);
}
