/* System backend of the NIF build: ERTS's driver_alloc through enif_alloc,
 * so every byte is counted in :erlang.memory(:system). The non-fatal forms:
 * they return NULL on exhaustion instead of taking the node down. */
#include "../internal.h"

#include <erl_nif.h>

void *beam__sys_alloc(size_t len) {
    return enif_alloc(len);
}

void *beam__sys_realloc(void *mem, size_t len) {
    return enif_realloc(mem, len);
}

void beam__sys_free(void *mem) {
    enif_free(mem);
}
