/*
 * The interface between NIF libraries: each NIF library's private copy of
 * beam_alloc (src/nif/fault.c) and the fault-injection driver of
 * BeamAlloc.Testing / beam_alloc_testing (c_src/beam_alloc_testing.c), which
 * also reads each library's stats through it. Both sides include this
 * header, and only this one, to meet.
 *
 * Why an interface at all: every NIF library links libbeam_alloc.a
 * privately (--exclude-libs, -fvisibility=hidden) and the VM dlopens each
 * one RTLD_LOCAL, so every library has its own copy of this code and its
 * statics, and no copy can name a symbol of another. A test that fails
 * "allocation number i of this process" needs one counter across all of
 * them. So:
 *
 *   - BEAM_NIF_INIT exports one symbol from each library,
 *     beam_alloc_fault_hooks_v1, returning that copy's beam__fault_hooks;
 *   - the driver, a NIF library of its own, walks the loaded objects
 *     (dl_iterate_phdr), opens each with RTLD_NOLOAD and looks the symbol
 *     up by handle (which works for RTLD_LOCAL objects), and attaches
 *     itself to the copies it wants;
 *   - an attached copy asks the driver, in beam_nif_call, whether the
 *     calling process (enif_self) has a plan; if so, the call's
 *     beam_allocator is the driver's plan allocator over the call's own.
 *
 * Copies of different versions of the library may meet here: both structs
 * start with magic, version and size, and the driver skips a copy whose
 * hooks it does not know (as a copy refuses a driver it does not know).
 */
#ifndef BEAM_ALLOC_NIF_ABI_H
#define BEAM_ALLOC_NIF_ABI_H

#include <beam_alloc_nif.h>

#include "../misuse_kinds.h"

#include <stddef.h>
#include <stdint.h>

/* --- Fault injection: the versioned interface (nif_fault.c, driver) ----- */

#define BEAM__FAULT_MAGIC 0x62616c46u /* "Flab" */
#define BEAM__FAULT_VERSION 1u
#define BEAM__FAULT_SYMBOL "beam_alloc_fault_hooks_v1"

/* Flags of a call, for the driver. */
enum {
    /* The parent is this call's scratch arena: blocks die with the call. */
    BEAM__FAULT_SCRATCH = 1u << 0,
    /* The parent is the call's own (a leak_check instance): blocks still
     * live at the end are leaks, and the driver frees none of them
     * afterwards (the instance is kept, or, in older copies, gone). */
    BEAM__FAULT_CALL_LOCAL = 1u << 1,
    /* The parent checks no free (the raw or the large allocator): a block
     * the call frees twice would go to the system's free twice, and the
     * driver catches it. (A driver that does not know it ignores it.) */
    BEAM__FAULT_UNCHECKED = 1u << 2,
    /* The parent is one of the library's process-wide allocators (raw,
     * large, the general purpose instance): few, and live as long as the
     * library, so the driver gives each a plan allocator of its own
     * however many others the calls had (a NIF may keep one and free
     * through it in a call of another). (A driver that does not know it
     * ignores it.) */
    BEAM__FAULT_PROCESS_WIDE = 1u << 3,
};

/* The driver's state for one call, on beam_nif_call's stack. Opaque to the
 * glue: only the driver reads or writes it, between enter and leave. */
typedef struct beam__fault_frame {
    void *session;
    beam_allocator_t saved_parent;
    uint64_t saved_scope;
    uintptr_t reserved[4];
} beam__fault_frame;

struct beam__fault_hooks;

/* The driver, as a library copy sees it. */
typedef struct beam__fault_driver {
    uint32_t magic, version, size;
    /* A call of pid in library app begins, with parent as the allocator it
     * would use. When pid has a plan that covers app: true, *out is the
     * allocator for the call, and leave must follow when the body returns.
     * false: a normal call. Any thread, any process. */
    bool (*enter)(const ErlNifPid *pid, const struct beam__fault_hooks *app,
                  beam_allocator_t parent, unsigned flags,
                  beam__fault_frame *frame, beam_allocator_t *out);
    void (*leave)(beam__fault_frame *frame);
    /* A call of pid in library app misused memory (kind: the kind's text,
     * line: the first report line). Made once the call's cleanup is over,
     * after leave. Added last: copies check size before calling it. */
    void (*misuse)(const ErlNifPid *pid, const struct beam__fault_hooks *app,
                   const char *kind, const char *line);
    /* When a is the driver's plan allocator: true, and *out the allocator
     * under it that block p goes to (its own when p is a block the plan
     * knows, or lies in one that starts 8 or 16 bytes before it, past the
     * header beam_malloc & co. put there; else, and for p NULL, the one a
     * new block goes to). The malloc-style calls size their blocks by it
     * (a general purpose allocator's need no header), as they would
     * without the plan. Any thread, during the check or after it (a plan
     * allocator a NIF kept). Added last: copies check size before calling
     * it. */
    bool (*under)(beam_allocator_t a, const void *p, beam_allocator_t *out);
} beam__fault_driver;

/* One reading of named_all: a name, its counters, its backing bytes. Its
 * layout is shared by the copies: never changed. */
typedef struct beam__named_reading {
    char name[64];
    beam_alloc_stats stats;
    size_t backing_bytes;
} beam__named_reading;
_Static_assert(BEAM_STATS_NAME_MAX + 1 <= 64, "a name fits a reading");

/* The first misuse a copy's gpa_free (below) found in a free another copy
 * passed it: its kind (one of misuse_kinds.h's or gpa_report.c's, "" when
 * the free was right) and report line. The copy that asked notes it on
 * its own thread-local record, which its call watches: the copy that
 * freed reports on its own, which no call of the asking copy's watches
 * (a leak_check call returned :ok after such a misuse: found in review).
 * Its layout is shared by the copies: never changed. */
typedef struct beam__taken_misuse {
    char kind[64];
    char line[512];
} beam__taken_misuse;

/* What allocators hold of their parents (bytes), keep live (bytes) and
 * have done (allocations plus frees). Its layout is shared by the copies:
 * never changed. */
typedef struct beam__holding {
    uint64_t held, live, ops;
} beam__holding;

/* A library copy, as the driver sees it (what beam_alloc_fault_hooks_v1
 * returns). */
typedef struct beam__fault_hooks {
    uint32_t magic, version, size;
    /* The module atom's text (e.g. "Elixir.MyMod"); "" before load. */
    const char *(*module)(void);
    /* Start asking driver about calls: false when another driver is
     * attached (a second copy of the driver library). Nests: each attach
     * is undone by one detach. */
    bool (*attach)(const beam__fault_driver *driver);
    void (*detach)(const beam__fault_driver *driver);
    /* The library's allocator counters (BeamAlloc.stats/1): raw, large and
     * the process-wide general purpose allocator, plus what that instance
     * holds of the large allocator. Added last: the size field tells. */
    void (*stats)(beam_alloc_stats out[3], size_t *gpa_backing_bytes);
    /* The library's named stats (beam_stats_register): the i-th name, its
     * counters and backing bytes; false past the last. Added last: the
     * size field tells. */
    bool (*named_stats)(size_t i, char *name, beam_alloc_stats *out,
                        size_t *backing_bytes);
    /* beam_gpa_collect on the library's general purpose instances
     * (beam_alloc:collect/1): its live BEAM_RESOURCE_GPA resources', the
     * process-wide one, the named ones and the leak_check ones kept
     * (fault.c, hooks_collect). Added last: the size field tells. */
    void (*collect)(void);
    /* The VM's monotonic time (ns) of the last load or upgrade of a module
     * instance into this copy that succeeded, INT64_MIN before one. The
     * module runs the copy loaded last, which is not the last the dynamic
     * linker mapped when it loads a file whose copy is still mapped: the VM
     * hands it that copy. Older drivers read that copy's stats alone;
     * today's sums every copy's and reads no stamp (copies keep it for
     * the older ones). Added last: the size field tells. */
    int64_t (*loaded_at)(void);
    /* Every named stat of the library at once (beam_stats_register), read
     * under the table's lock: up to max into out; returns how many. Read
     * name by name (named_stats, a lock each), a name registered or
     * unregistered between two reads shifted the rest: one was read twice
     * (and summed twice) or missed. Added last: the size field tells. */
    size_t (*named_all)(beam__named_reading *out, size_t max);
    /* Free mem through the copy's process-wide general purpose instance
     * (ret: the caller, for its reports) when the copy's allocators hold
     * it (its address map or its large blocks say so), while they are
     * up: true then, and misuse says what the free did wrong, if anything.
     * Another copy of the same module asks when its own process-wide
     * instance was given a block it does not hold: a resource made by an
     * old version, whose type the new version took over, freed by the new
     * destructor (copies.c). Added last: the size field tells. */
    bool (*gpa_free)(void *mem, size_t len, size_t alignment, uintptr_t ret,
                     beam__taken_misuse *misuse);
    /* What the library's BEAM_RESOURCE_GPA resources hold of their
     * parents, keep live and have done, summed: the auto collector read
     * the process-wide and named instances alone, so a resource's freed
     * burst stayed held until BeamAlloc.collect/1 or its release. Added
     * last: the size field tells. */
    void (*resources_holding)(beam__holding *out);
    /* The length and alignment of mem as the copy's process-wide instance
     * holds it (what its free takes), when the copy's allocators hold mem
     * as a live block of that instance, while they are up: true then.
     * Nothing is reported. owned: the caller owns the block (it frees or
     * moves it), as for beam__gpa_block_size. Another copy of the same
     * module asks, as for gpa_free, when its own process-wide instance
     * was asked the size of a block it does not hold (beam_msize,
     * beam_mfree, beam_mrealloc). Added last: the size field tells. */
    bool (*gpa_size)(const void *mem, bool owned, size_t *len,
                     size_t *alignment);
    /* The check of a resize (remap: a remap or realloc) of mem, len bytes
     * at alignment, through the copy's process-wide instance, when the
     * copy's allocators hold mem, while they are up: true then, nothing
     * changed, and misuse says what the instance found wrong with the call
     * (a block freed, a wrong length or alignment), as gpa_free's. Another
     * copy of the same module asks, as for gpa_free, when its own instance
     * was asked to resize a block it does not hold: it then answers "not
     * in place", and a realloc moves the block into that copy, whose free
     * of it comes back through gpa_free (copies.c). Before, the resize was
     * reported as a pointer it does not own and a realloc failed. Added
     * last (with gpa_size): the size field tells. */
    bool (*gpa_resize_check)(void *mem, size_t len, size_t alignment,
                             bool remap, uintptr_t ret,
                             beam__taken_misuse *misuse);
    /* The innermost BEAM_NIF call running on the calling thread, when it
     * is one of fn (an ErlNifFunc entry's fptr), named as the copy's
     * reports name it, into buf of n bytes: true then; false when none
     * runs there or it is another function's (a BEAM_NIF calling
     * another's C function). The call knows its argc: the driver, naming
     * a call by its code address, cannot tell the entries of one C
     * function listed under several arities apart ({"parse", 1, parse},
     * {"parse", 2, parse}: a crash in parse/2 said parse/1). Added last:
     * the size field tells. */
    bool (*call_name)(uintptr_t fn, char *buf, size_t n);
} beam__fault_hooks;

/* The size of the hooks up to and with their member field (each a
 * function pointer): what a copy whose hooks end there has. */
#define BEAM__FAULT_HOOKS_SIZE_TO(field)                                       \
    (offsetof(beam__fault_hooks, field) + sizeof(void (*)(void)))
/* Up to call_name (copies before have none). */
#define BEAM__FAULT_HOOKS_V9_SIZE BEAM__FAULT_HOOKS_SIZE_TO(call_name)
/* Up to gpa_resize_check (copies before have neither it nor gpa_size). */
#define BEAM__FAULT_HOOKS_V8_SIZE BEAM__FAULT_HOOKS_SIZE_TO(gpa_resize_check)
/* Up to resources_holding (copies before have none). */
#define BEAM__FAULT_HOOKS_V7_SIZE BEAM__FAULT_HOOKS_SIZE_TO(resources_holding)
/* Up to gpa_free (copies before have none). */
#define BEAM__FAULT_HOOKS_V6_SIZE BEAM__FAULT_HOOKS_SIZE_TO(gpa_free)
/* Up to loaded_at (copies before named_all). */
#define BEAM__FAULT_HOOKS_V4_SIZE BEAM__FAULT_HOOKS_SIZE_TO(loaded_at)
/* Up to collect (copies before loaded_at). */
#define BEAM__FAULT_HOOKS_V3_SIZE BEAM__FAULT_HOOKS_SIZE_TO(collect)
/* Up to named_stats (copies before collect). */
#define BEAM__FAULT_HOOKS_V2_SIZE BEAM__FAULT_HOOKS_SIZE_TO(named_stats)
/* Up to stats, before named_stats: what every copy has. */
#define BEAM__FAULT_HOOKS_V1_SIZE BEAM__FAULT_HOOKS_SIZE_TO(stats)

/* From the library, which the driver links like any NIF: "lib.so+0x1c1b"
 * for the call that returns to a code address (buf of n bytes). */
const char *beam__describe_addr(uintptr_t addr, char *buf, size_t n);
/* From the library too (frames.h): the callers above ret, innermost first
 * (out[0] = ret); a site for frames the caller chose; a site's frames; a
 * site's text ("a <- b <- c"). */
size_t beam__stack_above(uintptr_t ret, uintptr_t *out, size_t n);
uintptr_t beam__trace_intern(const uintptr_t *pc, size_t n);
size_t beam__site_copy(uintptr_t site, uintptr_t *out, size_t n);
const char *beam__describe_site(uintptr_t site, char *buf, size_t n);
/* From the library too (nif/copies.c): the hooks of the object at path,
 * opened as handle, when it exports them itself (not a dependency's:
 * dlsym searches those too) and they are of a version this side reads;
 * NULL otherwise. Both sides find the copies with it. */
const beam__fault_hooks *beam__fault_hooks_at(void *handle, const char *path);
/* From the library too (nif/glue.c): a call of a NIF function as the
 * reports name it, in its module's language, quoted where it must be,
 * into buf of n bytes: "the NIF call `MyNif.parse/1`" (Elixir, and
 * MyNif."odd name"/1), "the NIF call my_nif:parse/1" (Erlang, and
 * my_nif:'end'/1). */
void beam__nif_call_text(const char *module, const char *fun, unsigned arity,
                         char *buf, size_t n);

#endif
