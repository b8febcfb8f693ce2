/*
 * The library's other copies in this process, as abi.h lets copies meet:
 * does a newer version of this copy's module run another copy? An old
 * copy's last unload asks (glue.c, kept_for_newer_version): a resource
 * type the newer version took over may still hold its blocks.
 *
 * Only names are gathered while the loader's list is walked (no dlopen
 * there: it takes the loader's lock); each object is then asked, by a
 * handle of its own (RTLD_NOLOAD: nothing is loaded), for the symbol every
 * BEAM_NIF_INIT library exports.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr, dl_iterate_phdr */
#endif
#include "nif_internal.h"

#include <dlfcn.h>
#include <string.h>
#if defined(__APPLE__)
#include <mach-o/dyld.h>
#else
#include <link.h>
#endif

typedef struct name_list {
    char **names;
    size_t n, cap;
} name_list;

/* A copy of name at the end of l; dropped when memory is short (the
 * answer is then "no newer copy" for it: the old behaviour). */
static void add_name(name_list *l, const char *name) {
    if (name == NULL || name[0] == '\0')
        return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **grown = beam__sys_alloc(cap * sizeof *grown);
        if (grown == NULL)
            return;
        if (l->n != 0)
            memcpy(grown, l->names, l->n * sizeof *grown);
        beam__sys_free(l->names);
        l->names = grown;
        l->cap = cap;
    }
    size_t len = strlen(name) + 1;
    char *copy = beam__sys_alloc(len);
    if (copy != NULL) {
        memcpy(copy, name, len);
        l->names[l->n++] = copy;
    }
}

#if defined(__APPLE__)
static void list_objects(name_list *l) {
    uint32_t n = _dyld_image_count();
    for (uint32_t i = 0; i < n; i++)
        add_name(l, _dyld_get_image_name(i));
}
#else
static int add_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    add_name(data, info->dlpi_name);
    return 0;
}

static void list_objects(name_list *l) {
    dl_iterate_phdr(add_object, l);
}
#endif

/* The hooks path exports itself (not a dependency's: dlsym searches those
 * too), when they are of a version this copy reads, else NULL. */
static const beam__fault_hooks *hooks_of(void *handle, const char *path) {
    void *sym = dlsym(handle, BEAM__FAULT_SYMBOL);
    Dl_info info;
    if (sym == NULL || dladdr(sym, &info) == 0 || info.dli_fname == NULL ||
        strcmp(info.dli_fname, path) != 0)
        return NULL;
    const void *(*get)(void);
    memcpy(&get, &sym, sizeof get);
    const beam__fault_hooks *h = get();
    return h != NULL && h->magic == BEAM__FAULT_MAGIC &&
                   h->version == BEAM__FAULT_VERSION &&
                   h->size >= BEAM__FAULT_HOOKS_V1_SIZE
               ? h
               : NULL;
}

/* Another copy h runs a newer version of module than this copy's, loaded
 * at mine: the same module, loaded since (or loading now: its stamp comes
 * when its load callback returns, and the VM may unload this copy during
 * that load, at a takeover). A copy too old to tell its stamp counts as
 * newer: keeping an old copy for nothing costs memory, not a crash. */
static bool newer_version(const beam__fault_hooks *h, const char *module,
                          int64_t mine) {
    if (h == &beam__fault_hooks_self || strcmp(h->module(), module) != 0)
        return false;
    if (h->size < BEAM__FAULT_HOOKS_V4_SIZE || h->loaded_at == NULL)
        return true;
    int64_t at = h->loaded_at();
    return at == INT64_MIN || at > mine;
}

bool beam__nif_newer_copy_runs(const char *module, int64_t mine) {
    name_list l = {NULL, 0, 0};
    list_objects(&l);
    bool found = false;
    for (size_t i = 0; i < l.n; i++) {
        void *handle =
            found ? NULL : dlopen(l.names[i], RTLD_LAZY | RTLD_NOLOAD);
        if (handle != NULL) {
            const beam__fault_hooks *h = hooks_of(handle, l.names[i]);
            found = h != NULL && newer_version(h, module, mine);
            dlclose(handle);
        }
        beam__sys_free(l.names[i]);
    }
    beam__sys_free(l.names);
    return found;
}
