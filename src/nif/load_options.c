/*
 * Per-NIF options from load_info: the map erlang:load_nif/2 passes to the
 * library's load (or upgrade) callback, e.g.
 *
 *     #{check_me => #{leak_check => true}, {basic, 0} => [{allocator, gpa}]}
 *
 * overrides the BEAM_NIF options of the functions it names. The parsed
 * result is one entry per function of the registered table; beam_nif_call
 * finds its entry as the leak messages find names (beam__nif_entry_of:
 * by function pointer and arity, and by scheduler for a function listed
 * under several names).
 *
 * Loads and upgrades happen before the module's NIFs can run, but code of
 * the old module instance may still be running during an upgrade: a new
 * table is published with one atomic store once the load has succeeded,
 * and an old one is never freed (one small block per upgrade).
 */
#include "nif_internal.h"

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

typedef struct override_table {
    const ErlNifFunc *funcs; /* the table the entries describe */
    int count;
    bool twins; /* funcs lists a function twice with one arity (a call of
                 * an entry that varies then asks its scheduler); without,
                 * a call's entry is the first match */
    /* The entries by C function, for every BEAM_NIF call's lookup: a scan
     * from the table's start cost a trivial NIF at the 100th entry 27 ns a
     * call more than one at the first (31 -> 58 ns a call in all). slot[h]
     * is 1 + an entry's index, 0 empty; linear probing, filled in index
     * order, so a probe meets one function's entries first to last; mask
     * + 1 slots, at least twice count. (Of twins that vary, a call
     * still scans: its pick asks the scheduler.) */
    unsigned mask;
    int *slot;
    beam__nif_override entry[]; /* entry[i] is funcs[i]'s */
} override_table;

static unsigned slot_home(const override_table *t, beam_nif_body_fn fn) {
    uintptr_t h = (uintptr_t)fn;
    h ^= (h >> 4) ^ (h >> 11) ^ (h >> 19);
    return (unsigned)h & t->mask;
}

static void slots_fill(override_table *t) {
    for (int i = 0; i < t->count; i++) {
        unsigned h = slot_home(t, (beam_nif_body_fn)t->funcs[i].fptr);
        while (t->slot[h] != 0)
            h = (h + 1) & t->mask;
        t->slot[h] = i + 1;
    }
}

/* The first entry of self with argc; else (a continuation, see below) the
 * first of self with any arity; else -1. Twins that vary pick again
 * (beam__nif_override_in). */
static int entry_by_function(const override_table *t, beam_nif_body_fn self,
                             int argc) {
    int any = -1;
    for (unsigned h = slot_home(t, self);; h = (h + 1) & t->mask) {
        const int i = t->slot[h] - 1;
        if (i < 0)
            return any;
        if ((beam_nif_body_fn)t->funcs[i].fptr != self)
            continue;
        if ((int)t->funcs[i].arity == argc)
            return i;
        if (any < 0)
            any = i;
    }
}

_Atomic(const override_table *) beam__nif_overrides;
/* The table a load or upgrade parsed, published only once the library's
 * own callback has accepted the load (beam__load_options_settle): a failed
 * upgrade leaves the code still running with its options (they changed
 * under it, leak_check and allocator included; found by a walkthrough).
 * Loads of one library are one at a time (the code server's). */
static override_table *pending;
static bool pending_set;

static void set_pending(override_table *t) {
    if (pending != NULL)
        enif_free(pending); /* (never published) */
    pending = t;
    pending_set = true;
}

void beam__load_options_settle(int result) {
    if (!pending_set)
        return;
    override_table *t = pending;
    pending = NULL;
    pending_set = false;
    if (result == 0)
        beam__atomic_store_release(&beam__nif_overrides, t);
    else if (t != NULL)
        enif_free(t); /* (never published) */
}

const beam__nif_override *beam__nif_override_in(const override_table *t,
                                                beam_nif_body_fn self,
                                                int argc) {
    /* A continuation: the NIF's own C function, scheduled (enif_schedule
     * _nif) with another number of arguments than its table entry's. Its
     * C options are the NIF's, and so are its load_info ones: without
     * them a continuation ran on the C default allocator and freed what
     * the first slice took from the NIF's (refused, and lost), or went
     * unchecked (bug hunt). One C function listed under several arities
     * takes the first entry's. */
    int i = entry_by_function(t, self, argc);
    /* Twins whose entries differ: the one of the call that scheduled
     * this one, for a continuation of its own (beam_nif_schedule);
     * otherwise the one for the scheduler the call runs on, by a scan
     * that asks the VM for it. Where every entry of the function is
     * alike, any of them is the answer: the scan cost every call of a
     * function listed normal and dirty ~14 ns once load_info named any
     * function, its own options set or not. */
    if (BEAM__UNLIKELY(t->twins) && i >= 0 && t->entry[i].varies) {
        const int as = beam__nif_continued_entry(self);
        if (as >= 0 && as < t->count &&
            (beam_nif_body_fn)t->funcs[as].fptr == self)
            return t->entry[as].set != 0 ? &t->entry[as] : NULL;
        i = beam__nif_entry_of(t->funcs, t->count, self, argc, true);
        if (i < 0)
            i = beam__nif_entry_of(t->funcs, t->count, self, -1, true);
    }
    return i >= 0 && t->entry[i].set != 0 ? &t->entry[i] : NULL;
}

/* --- Parsing -------------------------------------------------------------- */

/* Load failure codes (what {load_failed, "... (N)."} shows). */
enum {
    BAD_KEY = 0xba1,     /* a key that is neither Name nor {Name, Arity} */
    NO_SUCH_NIF = 0xba2, /* a key naming no function of the table */
    BAD_OPTIONS = 0xba3, /* a value that is neither a map nor a proplist */
    BAD_OPTION = 0xba4,  /* an unknown option name */
    BAD_VALUE = 0xba5,   /* a known option with a value it cannot take */
    NO_MEMORY = 0xba6,
    TWINS_DIFFER = 0xba7, /* one C function's names given options it mixes */
    /* 0xba8, 0xba9: glue.c's (nif_internal.h) */
    NOT_BEAM_NIF = 0xbaa, /* a key naming only plain functions of the table */
    TWICE = 0xbab,        /* an option given twice in one list */
};

typedef struct parse {
    ErlNifEnv *env;
    const ErlNifFunc *funcs;
    int count;
    override_table *table;
    bool own_keys; /* the options are load_info itself, not under beam_alloc */
} parse;

#define KNOWN_OPTIONS "allocator, leak_check, raise_on_misuse, scratch"

/* Report why the load fails (fmt takes enif_snprintf's %T for terms). The
 * terms are written as Erlang writes them, the module as its language
 * does. */
static int fail(int code, const char *fmt, ...) {
    char why[400], module[300];
    va_list ap;
    va_start(ap, fmt);
    enif_vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    beam__nif_module_text(module, sizeof module);
    beam__report("beam_alloc: cannot load the NIF library of %s: "
                 "load_info: %s",
                 module, why);
    return code;
}

static bool get_bool(ErlNifEnv *env, ERL_NIF_TERM t, bool *out) {
    char a[8];
    if (!enif_get_atom(env, t, a, sizeof a, ERL_NIF_LATIN1))
        return false;
    if (strcmp(a, "true") == 0)
        *out = true;
    else if (strcmp(a, "false") == 0)
        *out = false;
    else
        return false;
    return true;
}

static bool get_allocator(ErlNifEnv *env, ERL_NIF_TERM t,
                          beam_allocator_t *out) {
    char a[8];
    if (!enif_get_atom(env, t, a, sizeof a, ERL_NIF_LATIN1))
        return false;
    if (strcmp(a, "raw") == 0)
        *out = beam_raw_allocator;
    else if (strcmp(a, "large") == 0)
        *out = beam_large_allocator;
    else if (strcmp(a, "gpa") == 0)
        *out = beam_general_purpose_allocator;
    else
        return false;
    return true;
}

/* The options that are true or false: each one's field in an override and
 * the bit that says it is set. */
static const struct {
    const char *name;
    size_t offset; /* of its bool in beam__nif_override */
    unsigned bit;
} bool_options[] = {
    {"leak_check", offsetof(beam__nif_override, leak_check),
     BEAM__OVERRIDE_LEAK_CHECK},
    {"scratch", offsetof(beam__nif_override, scratch), BEAM__OVERRIDE_SCRATCH},
    {"raise_on_misuse", offsetof(beam__nif_override, raise_on_misuse),
     BEAM__OVERRIDE_RAISE_ON_MISUSE},
};

/* One option into ov. key names the function, for messages. An option a
 * property list gives twice fails: which one counts is a matter of
 * convention (proplists takes the first, a map built from the list the
 * last; this took the last, silently), so neither does (found in review;
 * use BeamAlloc.Nif refuses it too). */
static int parse_option(parse *p, ERL_NIF_TERM key, ERL_NIF_TERM name,
                        ERL_NIF_TERM value, beam__nif_override *ov) {
    char opt[24];
    size_t b = 0; /* bool_options' entry, for a true-or-false option */
    unsigned bit = 0;
    if (enif_get_atom(p->env, name, opt, sizeof opt, ERL_NIF_LATIN1)) {
        for (size_t i = 0; i < sizeof bool_options / sizeof bool_options[0];
             i++)
            if (strcmp(opt, bool_options[i].name) == 0) {
                b = i;
                bit = bool_options[i].bit;
            }
        if (bit == 0 && strcmp(opt, "allocator") == 0)
            bit = BEAM__OVERRIDE_ALLOCATOR;
    }
    if (bit == 0)
        return fail(BAD_OPTION,
                    "unknown option %T for %T (known: " KNOWN_OPTIONS ")", name,
                    key);
    if (ov->set & bit)
        return fail(TWICE, "%s is given twice for %T", opt, key);
    if (bit == BEAM__OVERRIDE_ALLOCATOR) {
        if (!get_allocator(p->env, value, &ov->allocator))
            return fail(BAD_VALUE,
                        "allocator for %T must be raw, large or gpa, got %T",
                        key, value);
    } else if (!get_bool(p->env, value,
                         (bool *)((char *)ov + bool_options[b].offset))) {
        return fail(BAD_VALUE, "%s for %T must be true or false, got %T", opt,
                    key, value);
    }
    ov->set |= bit;
    return 0;
}

/* A map or a proper list of {Name, Value} pairs, into ov. */
static int parse_options(parse *p, ERL_NIF_TERM key, ERL_NIF_TERM options,
                         beam__nif_override *ov) {
    ErlNifEnv *env = p->env;
    int rc = 0;
    if (enif_is_map(env, options)) {
        ErlNifMapIterator it;
        if (!enif_map_iterator_create(env, options, &it,
                                      ERL_NIF_MAP_ITERATOR_FIRST))
            return fail(BAD_OPTIONS, "the options of %T are not a map", key);
        ERL_NIF_TERM name, value;
        while (rc == 0 && enif_map_iterator_get_pair(env, &it, &name, &value)) {
            rc = parse_option(p, key, name, value, ov);
            enif_map_iterator_next(env, &it);
        }
        enif_map_iterator_destroy(env, &it);
        return rc;
    }
    unsigned len;
    if (!enif_get_list_length(env, options, &len))
        return fail(BAD_OPTIONS,
                    "the options of %T must be a map or a property list, got "
                    "%T",
                    key, options);
    ERL_NIF_TERM head, tail = options;
    while (rc == 0 && enif_get_list_cell(env, tail, &head, &tail)) {
        const ERL_NIF_TERM *pair;
        int arity;
        /* A bare atom is {Atom, true}, as in proplists (and in
         * beam_alloc_testing's options). */
        if (enif_is_atom(env, head)) {
            rc = parse_option(p, key, head, enif_make_atom(env, "true"), ov);
            continue;
        }
        if (!enif_get_tuple(env, head, &arity, &pair) || arity != 2)
            return fail(BAD_OPTIONS,
                        "the options of %T must be {Name, Value} pairs or "
                        "atoms, got %T",
                        key, head);
        rc = parse_option(p, key, pair[0], pair[1], ov);
    }
    return rc;
}

/* A key: Name or {Name, Arity}. arity -1: every arity. */
static bool get_key(ErlNifEnv *env, ERL_NIF_TERM key, char *name, size_t n,
                    int *arity) {
    const ERL_NIF_TERM *t;
    int size;
    *arity = -1;
    if (enif_get_atom(env, key, name, (unsigned)n, ERL_NIF_LATIN1))
        return true;
    return enif_get_tuple(env, key, &size, &t) && size == 2 &&
           enif_get_atom(env, t[0], name, (unsigned)n, ERL_NIF_LATIN1) &&
           enif_get_int(env, t[1], arity) && *arity >= 0;
}

/* f is what the key (name, and arity unless it is -1) names. */
static bool nif_matches(const ErlNifFunc *f, const char *name, int arity) {
    return strcmp(f->name, name) == 0 && (arity < 0 || (int)f->arity == arity);
}

/* Every BEAM_NIF's function in this library (BEAM_INTERNAL_NIF_MARK),
 * pushed by constructors as the library is loaded, before any other code
 * of it runs. */
static beam_nif_mark *marks;
/* BEAM_NIF_INIT's constructor ran: the list is kept (without it, a table
 * of raw NIFs alone would read as no list; found in review). */
static bool marks_kept;

void beam_nif_internal_mark(beam_nif_mark *mark) {
    if (mark == NULL) {
        marks_kept = true;
        return;
    }
    mark->next = marks;
    marks = mark;
}

/* f is a BEAM_NIF's function, or there is no list to tell. */
static bool is_beam_nif(beam_nif_body_fn f) {
    if (!marks_kept)
        return true;
    for (const beam_nif_mark *m = marks; m != NULL; m = m->next)
        if (m->fn == f)
            return true;
    return false;
}

/* What a key names in the table: nothing, plain functions only (raw NIFs,
 * which options do not reach), or a BEAM_NIF. */
typedef enum { NAMES_NOTHING, NAMES_PLAIN, NAMES_BEAM_NIF } key_names;

static key_names names_of(const parse *p, const char *name, int arity) {
    key_names found = NAMES_NOTHING;
    for (int i = 0; i < p->count; i++) {
        if (!nif_matches(&p->funcs[i], name, arity))
            continue;
        if (is_beam_nif(p->funcs[i].fptr))
            return NAMES_BEAM_NIF;
        found = NAMES_PLAIN;
    }
    return found;
}

/* name is one of the options (leak_check, ...), not a function's. */
static bool is_option_name(const char *name) {
    for (size_t i = 0; i < sizeof bool_options / sizeof bool_options[0]; i++)
        if (strcmp(name, bool_options[i].name) == 0)
            return true;
    return strcmp(name, "allocator") == 0;
}

/* An entry of load_info (not under beam_alloc) that names no function and
 * cannot be options: a setting of the library's own, #{version => 1},
 * left to its load. A NIF that loaded with such a map under ERL_NIF_INIT
 * failed to load once renamed BEAM_NIF_INIT (found porting one). Options
 * are a map or a list, so an entry holding one, a typo of a function's
 * name, still fails, as does an option given at the top level. */
static bool own_setting(const parse *p, const char *name, int arity,
                        ERL_NIF_TERM value) {
    return p->own_keys && arity < 0 && !is_option_name(name) &&
           !enif_is_map(p->env, value) && !enif_is_list(p->env, value);
}

/* Apply one map entry. Name keys go in the first pass, {Name, Arity} keys
 * in the second, so that the more specific one wins. */
static int apply_entry(parse *p, ERL_NIF_TERM key, ERL_NIF_TERM options,
                       bool exact_pass) {
    char name[256];
    int arity;
    if (!get_key(p->env, key, name, sizeof name, &arity))
        return fail(BAD_KEY, "keys must be a NIF name or {Name, Arity}, got %T",
                    key);
    if ((arity >= 0) != exact_pass)
        return 0;
    /* The key first: options given at the top level (#{leak_check =>
     * true}) are keys that name no function, and saying so helps more than
     * a complaint about their value. */
    key_names names = names_of(p, name, arity);
    if (names == NAMES_NOTHING && own_setting(p, name, arity, options))
        return 0;
    if (names == NAMES_NOTHING)
        return fail(NO_SUCH_NIF,
                    "%T names no function of the NIF table (load_info maps "
                    "each function's name to its options: #{Fun => "
                    "#{leak_check => true}}; beside settings of your own, "
                    "under beam_alloc: #{beam_alloc => #{Fun => ...}})",
                    key);
    if (names == NAMES_PLAIN)
        return fail(NOT_BEAM_NIF,
                    "%T names only plain functions of the NIF table, which "
                    "options do not reach: define it with BEAM_NIF",
                    key);
    beam__nif_override ov;
    memset(&ov, 0, sizeof ov);
    int rc = parse_options(p, key, options, &ov);
    if (rc != 0)
        return rc;
    for (int i = 0; i < p->count; i++) {
        const ErlNifFunc *f = &p->funcs[i];
        if (!nif_matches(f, name, arity))
            continue;
        beam__nif_override *e = &p->table->entry[i];
        e->set |= ov.set;
        if (ov.set & BEAM__OVERRIDE_LEAK_CHECK)
            e->leak_check = ov.leak_check;
        if (ov.set & BEAM__OVERRIDE_SCRATCH)
            e->scratch = ov.scratch;
        if (ov.set & BEAM__OVERRIDE_ALLOCATOR)
            e->allocator = ov.allocator;
        if (ov.set & BEAM__OVERRIDE_RAISE_ON_MISUSE)
            e->raise_on_misuse = ov.raise_on_misuse;
    }
    return 0;
}

static bool same_allocator(const beam__nif_override *a,
                           const beam__nif_override *b) {
    unsigned set = a->set & BEAM__OVERRIDE_ALLOCATOR;
    return set == (b->set & BEAM__OVERRIDE_ALLOCATOR) &&
           (set == 0 || (a->allocator.ctx == b->allocator.ctx &&
                         a->allocator.vtable == b->allocator.vtable));
}

/* The same load_info entries (not the same options in effect: an entry
 * that repeats a C default still differs from none). */
static bool same_options(const beam__nif_override *a,
                         const beam__nif_override *b) {
    return a->set == b->set && same_allocator(a, b) &&
           (!(a->set & BEAM__OVERRIDE_LEAK_CHECK) ||
            a->leak_check == b->leak_check) &&
           (!(a->set & BEAM__OVERRIDE_SCRATCH) || a->scratch == b->scratch) &&
           (!(a->set & BEAM__OVERRIDE_RAISE_ON_MISUSE) ||
            a->raise_on_misuse == b->raise_on_misuse);
}

/* One C function under two names. On the same kind of scheduler a call
 * cannot tell which name it was called by, so such twins must have the
 * same load_info entries; on different kinds, a body that moves itself to
 * the other kind (enif_schedule_nif of itself, dirty) keeps its entry
 * through beam_nif_schedule, but not where erl_nif.h's own macro
 * bypasses it or past the table's 16th twin entry (glue.c's
 * CARRY_SLOTS): there it would free with the other
 * twin's allocator what it allocated here, so they must have the same
 * allocator. Otherwise the load fails, rather than one
 * name's options silently applying to both. Whether there are twins at
 * all is noted: without, a call's lookup stops at its first match. */
static int check_twins(const parse *p) {
    for (int i = 0; i < p->count; i++)
        for (int j = i + 1; j < p->count; j++) {
            const ErlNifFunc *a = &p->funcs[i], *b = &p->funcs[j];
            if (a->fptr != b->fptr || a->arity != b->arity)
                continue;
            p->table->twins = true;
            const beam__nif_override *x = &p->table->entry[i];
            const beam__nif_override *y = &p->table->entry[j];
            bool alike = beam__nif_entry_kind(a) == beam__nif_entry_kind(b);
            if (alike ? same_options(x, y) : same_allocator(x, y))
                continue;
            return fail(TWINS_DIFFER,
                        "%s/%u and %s/%u are one C function and get different "
                        "%s (%s; give each its own BEAM_NIF, or both the same "
                        "entries)",
                        a->name, a->arity, b->name, b->arity,
                        alike ? "entries" : "allocators",
                        alike ? "on the same kind of scheduler a call cannot "
                                "tell them apart"
                              : "a call that moves to the other kind of "
                                "scheduler would free with the other's "
                                "allocator");
        }
    return 0;
}

/* Which entries share their C function with an entry that says otherwise
 * (any arity: a continuation may come back with another): only their
 * calls need the scheduler's pick (beam__nif_override_in). */
static void mark_varying(const parse *p) {
    for (int i = 0; i < p->count; i++)
        for (int j = i + 1; j < p->count; j++) {
            beam__nif_override *x = &p->table->entry[i];
            beam__nif_override *y = &p->table->entry[j];
            if (p->funcs[i].fptr == p->funcs[j].fptr && !same_options(x, y))
                x->varies = y->varies = true;
        }
}

static int apply_pass(parse *p, ERL_NIF_TERM map, bool exact_pass) {
    ErlNifMapIterator it;
    if (!enif_map_iterator_create(p->env, map, &it, ERL_NIF_MAP_ITERATOR_FIRST))
        return NO_MEMORY;
    int rc = 0;
    ERL_NIF_TERM key, value;
    while (rc == 0 && enif_map_iterator_get_pair(p->env, &it, &key, &value)) {
        rc = apply_entry(p, key, value, exact_pass);
        enif_map_iterator_next(p->env, &it);
    }
    enif_map_iterator_destroy(p->env, &it);
    return rc;
}

/* The options in load_info: the map itself, or, when it has the key
 * beam_alloc, that key's value alone, so that a NIF whose load reads a map
 * of its own settings can take options too (#{beam_alloc => #{Fun =>
 * Options}, pool_size => 4}). false with a report when that value is not a
 * map. */
static bool options_in(ErlNifEnv *env, ERL_NIF_TERM load_info,
                       ERL_NIF_TERM *out, int *rc) {
    ERL_NIF_TERM value;
    *rc = 0;
    *out = load_info;
    if (!enif_get_map_value(env, load_info, enif_make_atom(env, "beam_alloc"),
                            &value))
        return true;
    if (!enif_is_map(env, value)) {
        *rc = fail(BAD_OPTIONS,
                   "the options under beam_alloc must be a map of each "
                   "function's options, got %T",
                   value);
        return false;
    }
    *out = value;
    return true;
}

/* How many elements of a list load_info warn_list_options looks at. */
#define LIST_LOOKS 64

/* A list load_info is left to the library's own load (README), but one
 * that names a NIF ([{parse, [{leak_check, true}]}], as option values may
 * be property lists) reads like options whose author expects them applied:
 * say that they are not (found in a review: a leak went unraised). */
/* The function name of a list entry shaped like options, {Name, Options}
 * or {{Name, Arity}, Options} with Options a list or a map (a setting of
 * the library's own, {pool_size, 4}, is not), into name; false otherwise. */
static bool options_entry(ErlNifEnv *env, ERL_NIF_TERM entry, char *name,
                          unsigned size) {
    const ERL_NIF_TERM *pair, *key;
    int arity, key_arity;
    if (!enif_get_tuple(env, entry, &arity, &pair) || arity != 2 ||
        !(enif_is_list(env, pair[1]) || enif_is_map(env, pair[1])))
        return false;
    ERL_NIF_TERM atom = pair[0];
    if (enif_get_tuple(env, pair[0], &key_arity, &key) && key_arity == 2)
        atom = key[0];
    return enif_get_atom(env, atom, name, size, ERL_NIF_LATIN1) > 0;
}

static void warn_list_options(ErlNifEnv *env, ERL_NIF_TERM load_info) {
    int count;
    const ErlNifFunc *funcs = beam__nif_funcs(&count);
    ERL_NIF_TERM head, tail = load_info;
    for (int n = 0;
         n < LIST_LOOKS && enif_get_list_cell(env, tail, &head, &tail); n++) {
        char name[256], module[300];
        if (!options_entry(env, head, name, sizeof name))
            continue;
        for (int i = 0; i < count; i++) {
            if (strcmp(funcs[i].name, name) != 0)
                continue;
            beam__nif_module_text(module, sizeof module);
            beam__report("beam_alloc: the NIF library of %s got a list as "
                         "load_info, which is left to its own load: the "
                         "options it gives %s are not applied (beam_alloc's "
                         "need a map, #{%s => #{...}})",
                         module, name, name);
            return;
        }
    }
}

int beam_nif_load_options(ErlNifEnv *env, ERL_NIF_TERM load_info) {
    size_t size;
    int rc = 0;
    ERL_NIF_TERM whole = load_info;
    if (enif_is_list(env, load_info))
        warn_list_options(env, load_info);
    if (enif_is_map(env, load_info) &&
        !options_in(env, load_info, &load_info, &rc))
        return rc;
    if (!enif_is_map(env, load_info) ||
        !enif_get_map_size(env, load_info, &size) || size == 0) {
        set_pending(NULL);
        return 0;
    }
    parse p = {env, NULL, 0, NULL, load_info == whole};
    p.funcs = beam__nif_funcs(&p.count);
    unsigned slots = 2;
    while (slots < 2u * (unsigned)p.count)
        slots *= 2;
    size_t entries =
        sizeof(override_table) + (size_t)p.count * sizeof(beam__nif_override);
    size_t bytes = entries + slots * sizeof(int);
    p.table = enif_alloc(bytes);
    if (p.table == NULL)
        return fail(NO_MEMORY, "no memory for the options");
    memset(p.table, 0, bytes);
    p.table->funcs = p.funcs;
    p.table->count = p.count;
    p.table->mask = slots - 1;
    p.table->slot = (int *)(void *)((char *)p.table + entries);
    slots_fill(p.table);

    rc = apply_pass(&p, load_info, false);
    if (rc == 0)
        rc = apply_pass(&p, load_info, true);
    if (rc == 0)
        rc = check_twins(&p);
    if (rc == 0)
        mark_varying(&p);
    if (rc != 0) {
        enif_free(p.table);
        return rc;
    }
    set_pending(p.table);
    return 0;
}
