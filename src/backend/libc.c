/* System backend of the standalone build: the C library's malloc. */
#include "../internal.h"

#include <stdlib.h>

void *beam__sys_alloc(size_t len) {
    return malloc(len);
}

void *beam__sys_realloc(void *mem, size_t len) {
    return realloc(mem, len);
}

void beam__sys_free(void *mem) {
    free(mem);
}
