/*
 * Source lines for report sites: the NIF library of beam_alloc_symbolizer
 * (priv/beam_alloc_symbolize.so, loaded by erlang/beam_alloc_symbolizer.erl;
 * BeamAlloc.Symbolizer is its Elixir front).
 *
 * Reports name code the way the C side can cheaply and safely, on any
 * thread, inside an allocator call: "lib.so+0x1c1b", the offset of the call in
 * the object. BeamAlloc.Reporter turns those into "fun (file.c:42)" through
 * this library before it logs and keeps a report. So the DWARF work happens
 *
 *   - only when a report is made (never on an allocation path),
 *   - in the reporter process, on a dirty IO scheduler (resolve/2 is a
 *     dirty NIF): a large object's line table may take milliseconds to
 *     read the first time, and no normal scheduler waits for it,
 *   - in this process, through libdw (elfutils): no fork, no addr2line,
 *     nothing for a NIF author to link (the NIF libraries do not change;
 *     only this one links -ldw).
 *
 * Each object's debug information is opened once and kept (objects are
 * few: the NIF libraries of the node), and used only while the file's
 * GNU build ID is the loaded code's (for a library linked without one,
 * while the file at its path is the one its code was mapped from, by
 * inode: below): a library rebuilt on disk is opened
 * again, and one whose file no longer matches what is loaded is not
 * described at all (wrong lines would be worse than none). For the same
 * reason a base name that several loaded objects share (two applications'
 * nif.so) describes none of them: the C side names such an object by its
 * path (src/report.c), and a bare base name could be either. Built without
 * libdw (no elfutils/libdwfl.h), resolve/2 answers error and sites stay as they
 * are. *
 * It also makes the tokens that reports made off a call carry, so that a
 * flood of them cannot hoard the node's memory in the reporter's mailbox
 * (src/nif/report_tokens.h says why here: this library stays loaded).
 */
#define _GNU_SOURCE
#include <erl_nif.h>

#include "../src/nif/report_tokens.h"
#include "nif_text.h"

#if defined(__linux__)
#include <elf.h>
#include <link.h>
#else
/* libdw and the loader's list as used here are Linux's: sites stay as the
 * reports give them. */
#undef BEAM_HAVE_LIBDW
#endif
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#ifdef BEAM_HAVE_LIBDW
#include <dlfcn.h>
#include <dwarf.h>
#include <elfutils/libdwfl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#endif

static ERL_NIF_TERM error_term(ErlNifEnv *env) {
    return enif_make_atom(env, "error");
}

#ifdef BEAM_HAVE_LIBDW

/* --- The loaded object a report names ------------------------------------ *
 * Reports name an object by its base name ("nif.so"), or by its path when
 * another loaded object had the same base name then. A base name that more
 * than one loaded object carries names none of them: no line rather than
 * another library's. */

#define MAX_BUILD_ID 64

/* The loader's counts of objects loaded and unloaded so far (from
 * dl_iterate_phdr): while neither moves, every loaded object's code stays
 * mapped from the same file. */
typedef struct loads {
    unsigned long long adds, subs;
    bool known; /* (a loader that does not give them: never the same) */
} loads;

static bool same_loads(loads a, loads b) {
    return a.known && b.known && a.adds == b.adds && a.subs == b.subs;
}

typedef struct find {
    const char *name; /* a base name, or a path (it has a '/') */
    bool is_path;
    char path[4096];
    unsigned found; /* loaded objects that match */
    /* The loaded object's GNU build ID (0 bytes: it has none). */
    unsigned char id[MAX_BUILD_ID];
    size_t id_len;
    uintptr_t code; /* an address of its loaded code */
    /* Without a build ID: the inode of the file its code was mapped from. */
    ino_t ino;
    loads loads; /* when it was found */
} find;
/* The build ID note of a loaded object, from its PT_NOTE segments in
 * memory: what the file on disk must carry to describe this code. */
static void loaded_build_id(const struct dl_phdr_info *info, find *f) {
    f->id_len = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const unsigned char *p =
            (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
        const unsigned char *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            const unsigned char *name = p + sizeof *nh;
            const unsigned char *desc = name + ((nh->n_namesz + 3) & ~3u);
            const unsigned char *next = desc + ((nh->n_descsz + 3) & ~3u);
            if (next > end)
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 &&
                memcmp(name, "GNU", 4) == 0 && nh->n_descsz <= MAX_BUILD_ID) {
                memcpy(f->id, desc, nh->n_descsz);
                f->id_len = nh->n_descsz;
                return;
            }
            p = next;
        }
    }
}

static int match_object(struct dl_phdr_info *info, size_t size, void *data) {
    find *f = data;
    const char *name = info->dlpi_name;
    if (name == NULL || name[0] == '\0')
        return 0;
    const char *base = strrchr(name, '/');
    base = base != NULL ? base + 1 : name;
    if (strcmp(f->is_path ? name : base, f->name) != 0)
        return 0;
    if (f->found++ == 0) {
        if (size >=
            offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs)
            f->loads = (loads){info->dlpi_adds, info->dlpi_subs, true};
        snprintf(f->path, sizeof f->path, "%s", name);
        loaded_build_id(info, f);
        for (int i = 0; i < info->dlpi_phnum && f->code == 0; i++)
            if (info->dlpi_phdr[i].p_type == PT_LOAD &&
                (info->dlpi_phdr[i].p_flags & PF_X))
                f->code = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
    }
    return 0; /* on: is it the only one? */
}

/* --- Open objects: one Dwfl each, kept ----------------------------------- */

#define MAX_OBJECTS 64

static ErlNifMutex *lock;
typedef struct kept_object {
    char *path;
    Dwfl *dwfl;
    Dwfl_Module *mod;
    ino_t ino; /* the file opened */
    /* Without a build ID: its code's address and the loads at which the
     * file mapped there was last read to be ino (see mapped_inode). */
    uintptr_t code;
    loads seen;
} kept_object;
static kept_object objects[MAX_OBJECTS];
static int nobjects;

static char *debuginfo_path = NULL;
static const Dwfl_Callbacks callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = &debuginfo_path,
};

/* The module of path, opened at bias 0 so that addresses are the offsets
 * the reports give. Lock held. */
/* Does the opened file carry the loaded object's build ID? (No ID in the
 * loaded object: nothing to check.) */
static bool same_build(Dwfl_Module *mod, const find *f) {
    const unsigned char *bits;
    GElf_Addr vaddr;
    if (f->id_len == 0)
        return true;
    int n = dwfl_module_build_id(mod, &bits, &vaddr);
    return n > 0 && (size_t)n == f->id_len &&
           memcmp(bits, f->id, f->id_len) == 0;
}

/* --- Objects without a build ID ------------------------------------------ *
 * Nothing in such an object says which build it is: linked with
 * --build-id=none (or by a linker that adds none), rebuilt on disk while
 * the VM runs the old code, its file described the new code, and reports
 * named the new source's lines for the old code (a hunt: every line 3
 * off). The file the code was mapped from is then compared instead, as
 * the kernel's map of this process names it: a linker writes a new file,
 * and the old one, still mapped, is no longer at the path. By inode only:
 * the device the map names is not always the one stat gives (on btrfs,
 * stat gives the subvolume's, the map the file system's: every such
 * library was taken for changed and named no line, a review), and an
 * inode still mapped keeps its number from being reused. */

/* The inode of the file mapped at addr, from /proc/self/maps. */
static bool mapped_file(uintptr_t addr, ino_t *ino) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[4352];
    bool found = false;
    if (maps == NULL)
        return false;
    while (!found && fgets(line, sizeof line, maps) != NULL) {
        unsigned long lo, hi, ino_no;
        found =
            sscanf(line, "%lx-%lx %*s %*s %*s %lu", &lo, &hi, &ino_no) == 3 &&
            addr >= lo && addr < hi;
        if (found)
            *ino = (ino_t)ino_no;
    }
    fclose(maps);
    return found && *ino != 0;
}

/* f->ino, the inode of the file f's code was mapped from. Reading
 * /proc/self/maps reads every mapping of the VM, for each site of each
 * report in a flood: a kept object of f's path that saw its code at the
 * same address, with nothing loaded or unloaded since, has the answer
 * that read would give (the same object, mapped from the same file).
 * Lock held. */
static bool mapped_inode(find *f) {
    for (int i = 0; i < nobjects; i++)
        if (strcmp(objects[i].path, f->path) == 0 &&
            objects[i].code == f->code &&
            same_loads(objects[i].seen, f->loads)) {
            f->ino = objects[i].ino;
            return true;
        }
    return mapped_file(f->code, &f->ino);
}

/* Is f's file (at its path now) the one its code was mapped from? Only
 * asked of an object without a build ID (with one, the IDs are compared). */
static bool file_is_loaded(const find *f, struct stat *st) {
    return stat(f->path, st) == 0 && st->st_ino == f->ino;
}

/* The objects are kept in the order they were last used, least recently
 * first: a removal keeps that order (it moved the last into the gap, so
 * objects[0] was soon the one opened last, and with more than 64 libraries
 * in use each opening dropped one just opened: review). Lock held. */
static void drop_object(int i) {
    dwfl_end(objects[i].dwfl);
    enif_free(objects[i].path);
    memmove(&objects[i], &objects[i + 1],
            (size_t)(nobjects - i - 1) * sizeof objects[0]);
    nobjects--;
}

/* objects[i] used now: to the end. Lock held. */
static void touch_object(int i) {
    kept_object used = objects[i];
    memmove(&objects[i], &objects[i + 1],
            (size_t)(nobjects - i - 1) * sizeof objects[0]);
    objects[nobjects - 1] = used;
}

/* Marks, in the bool array data, the kept objects still loaded. */
static int mark_loaded(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    bool *loaded = data;
    if (info->dlpi_name != NULL)
        for (int i = 0; i < nobjects; i++)
            if (strcmp(objects[i].path, info->dlpi_name) == 0)
                loaded[i] = true;
    return 0;
}

/* Lets go of the objects no longer loaded. Lock held. */
static void prune_unloaded(void) {
    bool loaded[MAX_OBJECTS] = {false};
    dl_iterate_phdr(mark_loaded, loaded);
    for (int i = nobjects; i-- > 0;)
        if (!loaded[i])
            drop_object(i); /* those after i move down, checked already */
}

/* The module of the loaded object f, opened at bias 0 so that addresses
 * are the offsets the reports give; NULL when its file is not the code
 * that is loaded (rebuilt since: its lines would be wrong; *changed then
 * says so). Lock held. */
static Dwfl_Module *module_of(const find *f, bool *changed) {
    for (int i = 0; i < nobjects; i++) {
        if (strcmp(objects[i].path, f->path) != 0)
            continue;
        if (same_build(objects[i].mod, f) &&
            (f->id_len != 0 || objects[i].ino == f->ino)) {
            touch_object(i);
            return objects[nobjects - 1].mod;
        }
        /* Replaced on disk and loaded again: open the new file. */
        drop_object(i);
        break;
    }
    /* A new one to open: first let go of objects no longer loaded, then,
     * when still full, of the least recently used. Each keeps its file
     * mapped and its DWARF read: never dropped, a node that loaded 64
     * libraries in its life (hot upgrades to lib/app-VSN/priv, a test
     * loading copies) named no source line for any later one, silently,
     * and kept every file mapped, deleted or not (a release hunt). */
    prune_unloaded();
    if (nobjects == MAX_OBJECTS)
        drop_object(0);
    struct stat st = {0};
    *changed = f->id_len == 0 && !file_is_loaded(f, &st);
    if (*changed)
        return NULL; /* its lines would be another build's */
    Dwfl *dwfl = dwfl_begin(&callbacks);
    if (dwfl == NULL)
        return NULL;
    dwfl_report_begin(dwfl);
    Dwfl_Module *mod = dwfl_report_elf(dwfl, f->path, f->path, -1, 0, false);
    dwfl_report_end(dwfl, NULL, NULL);
    struct stat after;
    /* (Replaced while it was being opened: which one was read?) */
    *changed =
        mod != NULL && !(same_build(mod, f) &&
                         (f->id_len != 0 || (file_is_loaded(f, &after) &&
                                             after.st_mtime == st.st_mtime)));
    bool same = mod != NULL && !*changed;
    char *copy = same ? enif_alloc(strlen(f->path) + 1) : NULL;
    if (copy == NULL) {
        dwfl_end(dwfl);
        return NULL;
    }
    strcpy(copy, f->path);
    objects[nobjects] =
        (kept_object){.path = copy, .dwfl = dwfl, .mod = mod, .ino = st.st_ino};
    nobjects++;
    return mod;
}

static ERL_NIF_TERM string_or_nil(ErlNifEnv *env, const char *s) {
    return s != NULL ? text_binary(env, s) : enif_make_atom(env, "nil");
}

static ERL_NIF_TERM frame_term(ErlNifEnv *env, const char *fun,
                               const char *file, int line) {
    return enif_make_tuple3(env, string_or_nil(env, fun),
                            string_or_nil(env, file),
                            enif_make_int(env, file != NULL ? line : 0));
}

/* Where an inlined call sits in its caller (DW_AT_call_file/line). */
static void call_site(Dwarf_Die *cudie, Dwarf_Die *inlined, const char **file,
                      int *line) {
    Dwarf_Attribute attr;
    Dwarf_Word idx = 0, no = 0;
    Dwarf_Files *files;
    size_t nfiles;
    *file = NULL;
    *line = 0;
    if (dwarf_formudata(dwarf_attr(inlined, DW_AT_call_file, &attr), &idx) !=
            0 ||
        dwarf_getsrcfiles(cudie, &files, &nfiles) != 0 || idx >= nfiles)
        return;
    *file = dwarf_filesrc(files, idx, NULL, NULL);
    if (dwarf_formudata(dwarf_attr(inlined, DW_AT_call_line, &attr), &no) == 0)
        *line = (int)no;
}

/* The compilation unit whose code holds addr, and its line (file NULL
 * when unknown). libdw answers from .debug_aranges when an object has
 * one, and then knows only the units listed there: clang lists none by
 * default, gcc lists its own, so in a NIF of clang-built sources linked
 * with a gcc-built libbeam_alloc.a it named one of beam_alloc's units or
 * none (a walkthrough's reports had no source lines). A unit that does
 * not hold addr sends the search through every unit. */
static Dwarf_Die *unit_at(Dwfl_Module *mod, Dwarf_Addr addr, Dwarf_Addr *bias,
                          const char **file, int *line) {
    *file = NULL;
    *line = 0;
    Dwarf_Die *cu = dwfl_module_addrdie(mod, addr, bias);
    if (cu != NULL && dwarf_haspc(cu, addr - *bias) == 1) {
        Dwfl_Line *l = dwfl_module_getsrc(mod, addr);
        Dwarf_Addr at;
        if (l != NULL)
            *file = dwfl_lineinfo(l, &at, line, NULL, NULL, NULL);
        return cu;
    }
    for (cu = dwfl_module_nextcu(mod, NULL, bias); cu != NULL;
         cu = dwfl_module_nextcu(mod, cu, bias))
        if (dwarf_haspc(cu, addr - *bias) == 1) {
            Dwarf_Line *l = dwarf_getsrc_die(cu, addr - *bias);
            if (l != NULL && dwarf_lineno(l, line) == 0)
                *file = dwarf_linesrc(l, NULL, NULL);
            return cu;
        }
    return NULL;
}

/* The unit whose DIEs describe the code of cu: cu itself, or, for the
 * skeleton a -gsplit-dwarf build leaves in the object, its split unit (in
 * the .dwo file or .dwp package): the skeleton has the line table but no
 * functions, so the scopes were none, and an inlined function's line was
 * named as the function it is inlined into, its caller's line lost. A
 * split unit that cannot be found leaves the skeleton (lines only). */
static Dwarf_Die code_unit(Dwarf_Die *cu) {
    Dwarf_Die split;
    uint8_t type;
    if (dwarf_cu_info(cu->cu, NULL, &type, NULL, &split, NULL, NULL, NULL) ==
            0 &&
        type == DW_UT_skeleton && split.cu != NULL)
        return split;
    return *cu;
}

/* DIEs that only group others (no code of their own): C++ member
 * functions may be defined inside them. */
static bool groups_scopes(int tag) {
    return tag == DW_TAG_namespace || tag == DW_TAG_class_type ||
           tag == DW_TAG_structure_type || tag == DW_TAG_union_type;
}

static bool holds_code(int tag) {
    return tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine ||
           tag == DW_TAG_lexical_block || tag == DW_TAG_entry_point ||
           tag == DW_TAG_try_block || tag == DW_TAG_catch_block;
}

/* The innermost DIE under parent whose code holds pc, into *out. For what
 * dwarf_getscopes does not answer: in a GCC -flto object a function's
 * concrete DIE refers to its abstract one in another unit (the early
 * debug information), which dwarf_getscopes looks for in the same unit
 * and, not finding it, answers no scope: the inlined functions were lost
 * as above. */
static bool innermost_at(Dwarf_Die *parent, Dwarf_Addr pc, Dwarf_Die *out,
                         unsigned depth) {
    Dwarf_Die child;
    if (depth > 64 || dwarf_child(parent, &child) != 0)
        return false;
    do {
        int tag = dwarf_tag(&child);
        if (holds_code(tag) && dwarf_haspc(&child, pc) == 1) {
            if (!innermost_at(&child, pc, out, depth + 1))
                *out = child;
            return true;
        }
        if (groups_scopes(tag) && innermost_at(&child, pc, out, depth + 1))
            return true;
    } while (dwarf_siblingof(&child, &child) == 0);
    return false;
}

/* The scopes at pc in unit, innermost first, as dwarf_getscopes_die gives
 * them: from the innermost scope up through its nesting in the code. */
static int scopes_at(Dwarf_Die *unit, Dwarf_Addr pc, Dwarf_Die **scopes) {
    Dwarf_Die innermost;
    Dwarf_Die *found = NULL;
    int n = dwarf_getscopes(unit, pc, &found);
    if (n > 0)
        innermost = found[0];
    free(found);
    if (n <= 0 && !innermost_at(unit, pc, &innermost, 0))
        return -1;
    /* Past an inlined function, dwarf_getscopes goes on into that
     * function's own definition, not to the function it was inlined into:
     * the callers are the innermost scope's nesting in the code itself
     * (dwarf_getscopes_die, as eu-addr2line -i walks it). With only the
     * first, a second inlined level was named as the outer function. */
    return dwarf_getscopes_die(&innermost, scopes);
}

/* --- C++ names from the symbol table -------------------------------------- *
 * Without -g a C++ function has only its symbol's mangled name
 * ("_ZL28beam_nif_guard_leak_templateP18enif_environment_tiPKm"), where
 * the debug information gives "leak_template". The C++ runtime's
 * demangler (the VM links libstdc++; looked up, so that nothing is linked
 * for it) gives "beam_nif_guard_leak_template(enif_environment_t*, int,
 * unsigned long const*)"; the parameters go, as in a DWARF name. */

typedef char *demangle_fn(const char *, char *, size_t *, int *);

/* The end of name without its last parenthesised list, where name ends
 * with one (maybe followed by " const", "&" ...). */
static size_t without_parameters(const char *name) {
    size_t end = strlen(name);
    while (end > 0 && name[end - 1] != ')')
        if (name[--end] == '>')
            return strlen(name); /* a template's argument, not a list */
    int depth = 0;
    for (size_t i = end; i-- > 0;) {
        depth += name[i] == ')' ? 1 : name[i] == '(' ? -1 : 0;
        if (depth == 0)
            return i > 0 ? i : strlen(name);
    }
    return strlen(name);
}

/* name demangled into buf (n bytes), or name itself. */
static const char *demangled(const char *name, char *buf, size_t n) {
    static demangle_fn *demangle;
    static bool looked;
    if (name == NULL || strncmp(name, "_Z", 2) != 0)
        return name;
    if (!looked) {
        *(void **)&demangle = dlsym(RTLD_DEFAULT, "__cxa_demangle");
        looked = true;
    }
    int status = -1;
    char *full = demangle != NULL ? demangle(name, NULL, NULL, &status) : NULL;
    if (full == NULL || status != 0) {
        free(full);
        return name;
    }
    size_t len = without_parameters(full);
    snprintf(buf, n, "%.*s", (int)len, full);
    free(full);
    return buf;
}

/* The frames at addr, innermost first: one per function inlined there,
 * then the function itself (what addr2line -i prints). Lock held. */
static ERL_NIF_TERM frames_at(ErlNifEnv *env, Dwfl_Module *mod,
                              Dwarf_Addr addr) {
    const char *file;
    int line;
    ERL_NIF_TERM frames[32];
    unsigned n = 0;
    Dwarf_Addr bias = 0;
    Dwarf_Die *cudie = unit_at(mod, addr, &bias, &file, &line);
    Dwarf_Die unit;
    Dwarf_Die *scopes = NULL;
    int nscopes = -1;
    if (cudie != NULL) {
        unit = code_unit(cudie);
        nscopes = scopes_at(&unit, addr - bias, &scopes);
    }
    bool outer_done = false;
    for (int i = 0; i < nscopes && n < 31; i++) {
        int tag = dwarf_tag(&scopes[i]);
        if (tag == DW_TAG_inlined_subroutine) {
            frames[n++] =
                frame_term(env, dwarf_diename(&scopes[i]), file, line);
            call_site(&unit, &scopes[i], &file, &line);
        } else if (tag == DW_TAG_subprogram) {
            frames[n++] =
                frame_term(env, dwarf_diename(&scopes[i]), file, line);
            outer_done = true;
            break;
        }
    }
    free(scopes);
    /* The function the code is in, when the scopes stopped short of it
     * (they may, past an inlined call) or there is no DWARF: the symbol
     * table's name, with the line where the last inlined call sits. */
    char name[1024];
    if (!outer_done)
        frames[n++] = frame_term(
            env, demangled(dwfl_module_addrname(mod, addr), name, sizeof name),
            file, line);
    return enif_make_list_from_array(env, frames, n);
}

/* resolve(Object, Offset) -> {ok, [{Function, File, Line}]} | error |
 * {error, changed} (the object's file is no longer the loaded code),
 * innermost first; Function and File are binaries or nil, Line 0 when
 * unknown. Object is a loaded object's base name, or its path; Offset is a
 * call's offset in it, as reports give them. error when no loaded object,
 * or more than one, has that name. */
static ERL_NIF_TERM resolve(ErlNifEnv *env, int argc,
                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    ErlNifBinary name;
    ErlNifUInt64 offset;
    char object[4096];
    if (!enif_inspect_binary(env, argv[0], &name) || name.size == 0 ||
        name.size >= sizeof object || !enif_get_uint64(env, argv[1], &offset))
        return enif_make_badarg(env);
    memcpy(object, name.data, name.size);
    object[name.size] = '\0';
    if (strlen(object) != name.size)
        return enif_make_badarg(env);
    find f = {.name = object, .is_path = strchr(object, '/') != NULL};
    dl_iterate_phdr(match_object, &f);
    /* None, or several by that base name: which one made the report is
     * not known, and a line from another would be wrong. */
    if (f.found != 1)
        return error_term(env);

    enif_mutex_lock(lock);
    bool changed = false;
    bool mapped = f.id_len != 0 || mapped_inode(&f);
    Dwfl_Module *mod = mapped ? module_of(&f, &changed) : NULL;
    if (mod != NULL && f.id_len == 0) {
        /* (module_of leaves the object it answers from last.) */
        objects[nobjects - 1].code = f.code;
        objects[nobjects - 1].seen = f.loads;
    }
    ERL_NIF_TERM frames =
        mod != NULL ? frames_at(env, mod, (Dwarf_Addr)offset) : 0;
    enif_mutex_unlock(lock);
    if (mod == NULL)
        return changed ? enif_make_tuple2(env, error_term(env),
                                          enif_make_atom(env, "changed"))
                       : error_term(env);
    return enif_make_tuple2(env, enif_make_atom(env, "ok"), frames);
}

/* Module versions using this library: a new version of
 * beam_alloc_symbolizer (c:l/1, a release upgrade) shares it with the old
 * one until that is purged, whose unload must then leave the lock and the
 * objects alone. Without an upgrade callback the new version loaded
 * without its NIF, and every report lost its source lines, silently
 * (found in a bug hunt). The VM runs these callbacks one at a time. */
static int users;

static int lines_load(void) {
    lock = enif_mutex_create("beam_alloc_symbolize");
    users = lock != NULL;
    return lock == NULL;
}

/* From the same file, a second user; from another (a release upgrade: the
 * new version in a new directory, a fresh copy of this library with its
 * own globals) the copy's first, which load() sets up: the copy had no
 * lock, and its first resolve aborted the VM (found in review). */
static int lines_upgrade(void) {
    if (lock == NULL)
        return lines_load();
    users++;
    return 0;
}

/* (Never once a copy of beam_alloc took the report tokens' table: the
 * token kept for good keeps the library loaded, pin_token_type.) */
static void unload(ErlNifEnv *env, void *priv) {
    (void)env;
    (void)priv;
    if (--users > 0)
        return;
    for (int i = 0; i < nobjects; i++) {
        dwfl_end(objects[i].dwfl);
        enif_free(objects[i].path);
    }
    nobjects = 0;
    enif_mutex_destroy(lock);
}

#else /* no libdw: sites stay as the reports give them */

static ERL_NIF_TERM resolve(ErlNifEnv *env, int argc,
                            const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return error_term(env);
}

/* Nothing kept: a new version of the module takes the library as it is. */
static int lines_load(void) {
    return 0;
}

static int lines_upgrade(void) {
    return 0;
}

#define unload NULL

#endif

/* --- Report tokens (src/nif/report_tokens.h) ----------------------------- */

struct beam__report_counter {
    atomic_ulong refs;
    atomic_ulong unread;
    atomic_ulong dropped;
};

/* c NULL: the token this library keeps for good (pin_token_type). */
typedef struct report_token {
    beam__report_counter *c;
} report_token;

/* The type opened by the load of this copy of the library (read by the
 * copies' threads), and whether it is pinned: 0 not yet, 1 pinning, 2
 * pinned. */
static ErlNifResourceType *_Atomic token_type;
static atomic_int token_type_pinned;

static beam__report_counter *counter_new(void) {
    beam__report_counter *c = enif_alloc(sizeof *c);
    if (c != NULL) {
        atomic_init(&c->refs, 1);
        atomic_init(&c->unread, 0);
        atomic_init(&c->dropped, 0);
    }
    return c;
}

static unsigned long counter_unread(beam__report_counter *c) {
    return atomic_load_explicit(&c->unread, memory_order_relaxed);
}

static void counter_release(beam__report_counter *c) {
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        enif_free(c);
}

static unsigned long counter_take_dropped(beam__report_counter *c) {
    if (atomic_load(&c->dropped) == 0)
        return 0;
    return atomic_exchange(&c->dropped, 0);
}

/* Says n drops of a copy to the reporter, from env (a destructor's, or
 * NULL off a call), as nobody's (module and pid undefined: this library
 * knows neither); stderr when there is no reporter. */
static void say_dropped(ErlNifEnv *env, unsigned long n) {
    char line[96];
    int len = snprintf(line, sizeof line, BEAM__REPORT_DROPPED_LINE, n);
    ErlNifEnv *msg_env = enif_alloc_env();
    ERL_NIF_TERM bin;
    unsigned char *data = msg_env != NULL
                              ? enif_make_new_binary(msg_env, (size_t)len, &bin)
                              : NULL;
    ErlNifPid pid;
    bool sent = false;
    if (data != NULL && beam__report_find_reporter(env, msg_env, &pid)) {
        memcpy(data, line, (size_t)len);
        ERL_NIF_TERM none = enif_make_atom(msg_env, "undefined");
        sent =
            enif_send(env, &pid, msg_env,
                      enif_make_tuple5(
                          msg_env, enif_make_atom(msg_env, "beam_alloc_report"),
                          none, bin, none, none));
    }
    if (msg_env != NULL)
        enif_free_env(msg_env);
    if (!sent)
        fprintf(stderr, "%s\n", line);
}

/* Said by whichever sees the other's step: a drop counted after the last
 * token went, or the last token going after a drop was counted (both
 * store then load, sequentially consistent: one of them sees it). */
static void say_if_caught_up(ErlNifEnv *env, beam__report_counter *c) {
    unsigned long n = counter_take_dropped(c);
    if (n != 0)
        say_dropped(env, n);
}

static void counter_drop(beam__report_counter *c) {
    atomic_fetch_add(&c->dropped, 1);
    if (atomic_load(&c->unread) == 0)
        say_if_caught_up(NULL, c);
}

static void token_destroyed(ErlNifEnv *env, void *obj) {
    beam__report_counter *c = ((report_token *)obj)->c;
    if (c == NULL)
        return;
    if (atomic_fetch_sub(&c->unread, 1) == 1)
        say_if_caught_up(env, c);
    counter_release(c);
}

static ERL_NIF_TERM token_new(ErlNifEnv *msg_env, beam__report_counter *c) {
    report_token *t = enif_alloc_resource(atomic_load(&token_type), sizeof *t);
    if (t == NULL)
        return 0;
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->unread, 1, memory_order_relaxed);
    t->c = c;
    ERL_NIF_TERM term = enif_make_resource(msg_env, t);
    enif_release_resource(t); /* the message's term holds it now */
    return term;
}

/* Named after this copy of the library: a release upgrade loads another
 * copy (another file), whose load must not take this type over (its
 * destructor would then be that copy's code, on counters of this one's
 * layout); each copy keeps its own type, and its tokens. A new version of
 * the module over the same file (code:load_file, then a purge) is the same
 * copy: its upgrade takes the type over, the same object, so that the
 * purge of the old version does not free it while no token pins it yet
 * (the VM frees a purged module's types that no resource holds, though the
 * library stays mapped for the new version). */
static void token_type_open(ErlNifEnv *env, ErlNifResourceFlags flags) {
    char name[64];
    snprintf(name, sizeof name, "beam_alloc_report_token@%p",
             (void *)&token_type);
    ErlNifResourceType *type =
        enif_open_resource_type(env, NULL, name, token_destroyed, flags, NULL);
    if (type != NULL)
        atomic_store(&token_type, type);
}

/* The first copy that asks for the table makes the token this library
 * never releases: the VM frees a type of a purged module's library once
 * no resource of it lives, and closes the library once no type of it with
 * a destructor is left (erl_nif.c: erts_unload_nif, close_lib). With this
 * one alive neither happens, whatever becomes of beam_alloc_symbolizer:
 * the copies' tokens, made on any thread at any time, always find their
 * type and their destructor. (Made here, after the load committed the
 * type, not in the load: a load that fails takes its types back. And only
 * once a copy asks: a node that never makes a token may still purge this
 * library.) A copy that finds another pinning it asks again later. */
static bool pin_token_type(void) {
    int state = 0;
    if (atomic_compare_exchange_strong(&token_type_pinned, &state, 1)) {
        report_token *kept =
            enif_alloc_resource(atomic_load(&token_type), sizeof *kept);
        if (kept != NULL)
            kept->c = NULL;
        atomic_store(&token_type_pinned, kept != NULL ? 2 : 0);
    }
    return atomic_load(&token_type_pinned) == 2;
}

static const beam__report_tokens tokens = {
    BEAM__REPORT_TOKENS_VERSION, counter_new,     counter_unread, counter_drop,
    counter_take_dropped,        counter_release, token_new};

__attribute__((visibility("default"))) const beam__report_tokens *
beam_alloc_report_tokens(unsigned version) {
    if (version != BEAM__REPORT_TOKENS_VERSION ||
        atomic_load(&token_type) == NULL || !pin_token_type())
        return NULL;
    return &tokens;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)priv;
    (void)info;
    if (lines_load() != 0)
        return 1;
    /* Last: nothing after it fails, which would take the type back. */
    token_type_open(env, ERL_NIF_RT_CREATE);
    return 0;
}

static int upgrade(ErlNifEnv *env, void **priv, void **old, ERL_NIF_TERM info) {
    (void)priv;
    (void)old;
    (void)info;
    if (lines_upgrade() != 0)
        return 1;
    token_type_open(
        env, (ErlNifResourceFlags)(ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER));
    return 0;
}

/* with_libdw() -> boolean(): whether this library was built with libdw
 * (else every site stays as the reports give it). */
static ERL_NIF_TERM with_libdw(ErlNifEnv *env, int argc,
                               const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
#ifdef BEAM_HAVE_LIBDW
    return enif_make_atom(env, "true");
#else
    return enif_make_atom(env, "false");
#endif
}

static ErlNifFunc funcs[] = {
    {"resolve", 2, resolve, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"with_libdw", 0, with_libdw, 0},
};

ERL_NIF_INIT(beam_alloc_symbolizer, funcs, load, NULL, upgrade, unload)
