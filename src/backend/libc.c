/* System backend of the standalone build: the C library's malloc. alloc
 * and free are sys_direct.h's, which the raw allocator's fast paths
 * inline: one definition, so that its blocks and these are one family. */
#include "../internal.h"
#include "../sys_direct.h"

#include <stdlib.h>

void *beam__sys_alloc(size_t len) {
    return beam__sys_alloc_direct(len);
}

void *beam__sys_realloc(void *mem, size_t len) {
    return realloc(mem, len);
}

void beam__sys_free(void *mem) {
    beam__sys_free_direct(mem);
}
