/*
 * Report tokens: what a report made off a call (a thread of the NIF's own,
 * a destructor, the load, upgrade and unload callbacks) carries so that
 * its copy of beam_alloc can count the ones the reporter has not read
 * (src/nif/report.c). Both sides include this header, and only this one,
 * to meet: the symbolizer's library (c_src/beam_alloc_symbolize.c) makes
 * the tokens; every NIF library's copy of beam_alloc uses them.
 *
 * Why the symbolizer's library: a call's report carries a resource of its
 * copy's own type, but off a call that type may be freed memory. At a
 * purge the VM frees each resource type of the library that no live
 * resource holds, and only then runs the unload callback and closes the
 * library (erl_nif.c: erts_unload_nif); a destructor or a thread may run
 * after that purge too, with no callback to say so. A token made on such
 * a type crashed the VM when the reporter let go of it (run_resource_dtor:
 * deref_nifmod of the freed type's NULL owner). The symbolizer's token
 * type is never freed: its library keeps one token alive for good, which
 * keeps the type, and so the library, loaded (the VM closes a library only
 * once its types' resources are gone).
 *
 * The library exports BEAM__REPORT_TOKENS_SYMBOL; a copy finds it by the
 * loaded object's name, opens it RTLD_NOLOAD (its handle keeps it mapped)
 * and asks it for the table of a version it knows. The counter's layout is
 * the library's own: copies of other versions of beam_alloc depend on the
 * table alone.
 */
#ifndef BEAM_ALLOC_NIF_REPORT_TOKENS_H
#define BEAM_ALLOC_NIF_REPORT_TOKENS_H

#include <erl_nif.h>
#include <stdbool.h>

#define BEAM__REPORT_TOKENS_SYMBOL "beam_alloc_report_tokens"
#define BEAM__REPORT_TOKENS_OBJECT "/beam_alloc_symbolize.so"
#define BEAM__REPORT_TOKENS_VERSION 1u
/* The line that says n reports were dropped (an unsigned long). */
#define BEAM__REPORT_DROPPED_LINE                                              \
    "beam_alloc: %lu reports dropped (the reporter was behind)"

/* Counts one copy's tokens not yet let go of; in ERTS memory, freed when
 * its last holder (the copy, or a token) releases it. */
typedef struct beam__report_counter beam__report_counter;

typedef struct beam__report_tokens {
    unsigned version; /* BEAM__REPORT_TOKENS_VERSION */
    /* A counter held once by the caller; NULL when out of memory. */
    beam__report_counter *(*counter_new)(void);
    /* Its tokens made and not yet let go of. */
    unsigned long (*counter_unread)(beam__report_counter *c);
    /* Counts a report of c's copy not sent (too many unread), which
     * counter_take_dropped takes, or else the library says as soon as no
     * token of c is unread (the reporter caught up): a flood that stops,
     * with no report or call of the copy after it, is said all the same. */
    void (*counter_drop)(beam__report_counter *c);
    /* The drops counted and not yet said, now the caller's to say. */
    unsigned long (*counter_take_dropped)(beam__report_counter *c);
    void (*counter_release)(beam__report_counter *c);
    /* A token in msg_env, counted unread on c (which it holds) until the
     * term's last holder lets go of it; 0 when out of memory. */
    ERL_NIF_TERM (*token_new)(ErlNifEnv *msg_env, beam__report_counter *c);
} beam__report_tokens;

/* The reporter of the beam_alloc application (the Elixir one wins, as in
 * beam_alloc:take_reports/0), found from env (NULL off a call): both
 * sides send it lines. */
static inline bool
beam__report_find_reporter(ErlNifEnv *env, ErlNifEnv *msg_env, ErlNifPid *pid) {
    return enif_whereis_pid(
               env, enif_make_atom(msg_env, "Elixir.BeamAlloc.Reporter"),
               pid) ||
           enif_whereis_pid(env, enif_make_atom(msg_env, "beam_alloc_reporter"),
                            pid);
}

/* The exported function's type: the table of version, or NULL when the
 * library has none of that version (or no token type: out of memory). */
typedef const beam__report_tokens *beam__report_tokens_fn(unsigned version);
/* (Defined by the symbolizer's library alone; copies look it up.) */
beam__report_tokens_fn beam_alloc_report_tokens;

#endif
