/*
 * The library's other copies in this process, as abi.h lets copies meet,
 * for what a hot upgrade leaves between two copies of one module's
 * library: does a newer version of this copy's module run another copy
 * (an old copy's last unload asks: glue.c, kept_for_newer_version)? Does
 * another copy of the module hold a block this copy's process-wide
 * instance was asked to free (a resource type the new version took over,
 * freed through its own beam_general_purpose_allocator)? Or resize, move
 * or size it (a NIF that grows a buffer kept in such a resource)?
 *
 * Only names are gathered while the loader's list is walked (no dlopen
 * there: it takes the loader's lock); each object is then asked, by a
 * handle of its own (RTLD_NOLOAD: nothing is loaded), for the symbol every
 * BEAM_NIF_INIT library exports.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr, dl_iterate_phdr */
#endif
#include "../gpa_internal.h"
#include "../gpa_msize.h"
#include "nif_internal.h"

#include <dlfcn.h>
#include <stdio.h>
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

/* A copy of name at the end of l; dropped when memory is short (that
 * object is then not asked: taken for neither a newer copy nor the
 * holder of a block). */
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

const beam__fault_hooks *beam__fault_hooks_at(void *handle, const char *path) {
    void *sym = dlsym(handle, BEAM__FAULT_SYMBOL);
    Dl_info info;
    /* Only the object's own symbol: dlsym also searches its dependencies. */
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

bool beam__nif_each_object(bool (*visit)(const char *path, void *arg),
                           void *arg) {
    name_list l = {NULL, 0, 0};
    list_objects(&l);
    bool done = false;
    for (size_t i = 0; i < l.n; i++) {
        done = done || visit(l.names[i], arg);
        beam__sys_free(l.names[i]);
    }
    beam__sys_free(l.names);
    return done;
}

/* A visit of each_copy_of's: module, visit and its arg. */
typedef struct copy_visit {
    const char *module;
    bool (*visit)(const beam__fault_hooks *h, void *arg);
    void *arg;
} copy_visit;

static bool visit_copy(const char *path, void *arg) {
    const copy_visit *v = arg;
    void *handle = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
    if (handle == NULL)
        return false;
    const beam__fault_hooks *h = beam__fault_hooks_at(handle, path);
    bool done = h != NULL && h != &beam__fault_hooks_self &&
                strcmp(h->module(), v->module) == 0 && v->visit(h, v->arg);
    dlclose(handle);
    return done;
}

/* Calls visit with the hooks of every other copy of the library in the
 * process whose module is module, of a version this copy reads, until it
 * returns true: true then. Each copy stays mapped while it is visited (a
 * handle of ours). */
static bool each_copy_of(const char *module,
                         bool (*visit)(const beam__fault_hooks *h, void *arg),
                         void *arg) {
    copy_visit v = {module, visit, arg};
    return beam__nif_each_object(visit_copy, &v);
}

/* h, a copy of this copy's module, runs a newer version than this copy,
 * loaded at *mine: loaded since (or loading now: its stamp comes when its
 * load callback returns, and the VM may unload this copy during that
 * load, at a takeover). A copy too old to tell its stamp counts as newer:
 * keeping an old copy for nothing costs memory, not a crash. */
static bool newer_version(const beam__fault_hooks *h, void *mine) {
    if (h->size < BEAM__FAULT_HOOKS_V4_SIZE || h->loaded_at == NULL)
        return true;
    int64_t at = h->loaded_at();
    return at == INT64_MIN || at > *(const int64_t *)mine;
}

bool beam__nif_newer_copy_runs(const char *module, int64_t mine) {
    return each_copy_of(module, newer_version, &mine);
}

/* A call on a block another copy of the module may hold: a free, or the
 * check of a resize (remap: a remap or realloc), and what that copy
 * found wrong with it. */
typedef struct foreign_call {
    void *mem;
    size_t len, alignment;
    uintptr_t ret;
    bool remap;
    beam__taken_misuse misuse;
} foreign_call;

/* h, a copy of the same module, holds the block and frees it. */
static bool frees_it(const beam__fault_hooks *h, void *arg) {
    foreign_call *f = arg;
    return h->size >= BEAM__FAULT_HOOKS_V6_SIZE && h->gpa_free != NULL &&
           h->gpa_free(f->mem, f->len, f->alignment, f->ret, &f->misuse);
}

/* h, a copy of the same module, holds the block and checks the resize. */
static bool checks_it(const beam__fault_hooks *h, void *arg) {
    foreign_call *f = arg;
    return h->size >= BEAM__FAULT_HOOKS_V8_SIZE &&
           h->gpa_resize_check != NULL &&
           h->gpa_resize_check(f->mem, f->len, f->alignment, f->remap, f->ret,
                               &f->misuse);
}

/* beam__nif_here.taking: this thread serves another copy (a free, a
 * resize's check, a size query: beam__nif_take_*): a block that turns out
 * no instance's here is reported, not passed on (two copies passing each
 * other's blocks, each under its lock, could wait on each other). */

/* Asks the other copies of the module, by visit, until one holds arg's
 * block: true then. Not while this thread serves another copy. */
static bool ask_other_copies(bool (*visit)(const beam__fault_hooks *h,
                                           void *arg),
                             void *arg) {
    const char *module = beam__nif_module_atom();
    return !beam__nif_here.taking && module[0] != '\0' &&
           each_copy_of(module, visit, arg);
}

/* The same for a free or a resize's check: a misuse the copy found is
 * noted as this thread's. */
static bool call_other_copies(bool (*visit)(const beam__fault_hooks *h,
                                            void *arg),
                              foreign_call *f) {
    if (!ask_other_copies(visit, f))
        return false;
    /* Its misuse is this thread's call's too, as a block of this copy's
     * would have been (a leak_check call raises with it). */
    if (f->misuse.kind[0] != '\0') {
        f->misuse.line[sizeof f->misuse.line - 1] = '\0';
        beam__misuse_note(beam__gpa_kind_named(f->misuse.kind), f->misuse.line);
    }
    return true;
}

bool beam__nif_free_in_other_copy(void *mem, size_t len, size_t alignment,
                                  uintptr_t ret) {
    foreign_call f = {mem, len, alignment, ret, false, {"", ""}};
    return call_other_copies(frees_it, &f);
}

bool beam__nif_resize_in_other_copy(void *mem, size_t len, size_t alignment,
                                    bool remap, uintptr_t ret) {
    foreign_call f = {mem, len, alignment, ret, remap, {"", ""}};
    return call_other_copies(checks_it, &f);
}

/* A size query on a block another copy of the module may hold. */
typedef struct foreign_size {
    const void *mem;
    bool owned;
    size_t len, alignment;
} foreign_size;

/* h, a copy of the same module, holds the block live and sizes it. */
static bool sizes_it(const beam__fault_hooks *h, void *arg) {
    foreign_size *q = arg;
    return h->size >= BEAM__FAULT_HOOKS_V8_SIZE && h->gpa_size != NULL &&
           h->gpa_size(q->mem, q->owned, &q->len, &q->alignment);
}

bool beam__nif_size_in_other_copy(const void *mem, bool owned, size_t *len,
                                  size_t *alignment) {
    foreign_size q = {mem, owned, 0, 0};
    if (!ask_other_copies(sizes_it, &q))
        return false;
    *len = q.len;
    *alignment = q.alignment;
    return true;
}

_Static_assert(sizeof((beam__taken_misuse *)0)->line == BEAM__MISUSE_LINE,
               "a misuse line passes whole");
_Static_assert(sizeof BEAM__KIND_RESIZE <=
                   sizeof((beam__taken_misuse *)0)->kind,
               "the longest kind passes whole");

/* What another copy passes this one: a free, or the check of a resize or
 * a remap, made as a resize to the block's own length (remap: a remap),
 * which every built-in allocator answers for a live block by keeping it
 * as it is (core.c), and which reports what is wrong with the call (a
 * block freed, a wrong length or alignment) in that call's words. */
typedef enum taken_op { TAKE_FREE, TAKE_RESIZE, TAKE_REMAP } taken_op;

static void take_run(taken_op op, void *mem, size_t len, size_t alignment,
                     uintptr_t ret) {
    beam_allocator_t a = beam_general_purpose_allocator;
    /* A beam_mfree's free of a block no copy could size (freed already,
     * say) has no length: straight to the instance, as malloc.c's own
     * (gpa_mfree), which reports it as a double free or a foreign pointer
     * with "no length". Through core.c, SIZE_MAX was refused as an
     * impossible length, and the misuse misnamed. */
    if (op == TAKE_FREE && len == BEAM__GPA_LEN_UNSIZED)
        a.vtable->free(a.ctx, mem, len, alignment, ret);
    else if (op == TAKE_FREE)
        beam_free_bytes_at(a, mem, len, alignment, ret);
    else if (op == TAKE_RESIZE)
        (void)a.vtable->resize(a.ctx, mem, len, alignment, len, ret);
    else
        (void)a.vtable->remap(a.ctx, mem, len, alignment, len, ret);
}

/* The call, watched as a call watches its body (glue.c): the first misuse
 * it reports goes into misuse; a call of this copy's running below (its
 * first misuse, if it had one) finds the thread's record as it was. */
static void take_watched(taken_op op, void *mem, size_t len, size_t alignment,
                         uintptr_t ret, beam__taken_misuse *misuse) {
    beam__misuse_record *m = &beam__misuse;
    beam__nif_watch watch;
    beam__nif_watch_open(&watch);
    beam__nif_here.taking = true;
    take_run(op, mem, len, alignment, ret);
    beam__nif_here.taking = false;
    if (m->count != watch.before && m->kind != NULL) {
        const char *line = beam__misuse_line();
        snprintf(misuse->kind, sizeof misuse->kind, "%s", m->kind);
        snprintf(misuse->line, sizeof misuse->line, "%s",
                 line != NULL ? line : m->kind);
    }
    beam__nif_watch_close(&watch);
}

/* Does this copy's address map or set of large blocks know mem? */
static bool ours(const void *mem) {
    return gpa_map_holds(mem) || beam__gpa_set_holds(mem);
}

static bool take(taken_op op, void *mem, size_t len, size_t alignment,
                 uintptr_t ret, beam__taken_misuse *misuse) {
    misuse->kind[0] = '\0';
    if (!beam__nif_library_enter())
        return false;
    bool held = ours(mem);
    if (held)
        take_watched(op, mem, len, alignment, ret, misuse);
    beam__nif_library_leave();
    return held;
}

bool beam__nif_take_free(void *mem, size_t len, size_t alignment, uintptr_t ret,
                         beam__taken_misuse *misuse) {
    return take(TAKE_FREE, mem, len, alignment, ret, misuse);
}

bool beam__nif_take_resize_check(void *mem, size_t len, size_t alignment,
                                 bool remap, uintptr_t ret,
                                 beam__taken_misuse *misuse) {
    return take(remap ? TAKE_REMAP : TAKE_RESIZE, mem, len, alignment, ret,
                misuse);
}

bool beam__nif_take_size(const void *mem, bool owned, size_t *len,
                         size_t *alignment) {
    if (!beam__nif_library_enter())
        return false;
    bool live = false;
    if (ours(mem)) {
        beam__nif_here.taking = true;
        live = beam__gpa_block_size(&beam_general_purpose_allocator_instance,
                                    mem, owned, len, alignment);
        beam__nif_here.taking = false;
    }
    beam__nif_library_leave();
    return live;
}
