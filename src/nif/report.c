/*
 * Reports inside a BEAM go to the Erlang logger: as a message
 * {beam_alloc_report, Module, Line, Pid, Ack} to the process registered as
 * 'Elixir.BeamAlloc.Reporter' (started by the beam_alloc application of a
 * Mix build) or beam_alloc_reporter (the same application built by
 * rebar3), which logs it and keeps the latest for tests. Without either (a
 * node that did not start the application) the line goes to stderr, as in
 * the standalone build.
 *
 * Who made a report: the calling process's pid goes in the message, and
 * the reporter reads that process's $callers and $ancestors (BeamAlloc.Case
 * gives a Task's reports to the test that started it). A Task is often gone
 * a few microseconds after its NIF call returns, before the reporter runs:
 * so a BEAM_NIF call that sent reports does not return until the reporter
 * has read them. Each message carries an acknowledgement, a resource whose
 * destructor runs when the reporter lets go of it (it collects its garbage
 * once it has read who sent what); the call, at its end, yields (rescheduling
 * itself, never blocking the scheduler) until then, for one second at most,
 * and not at all while ACK_BACKLOG_MAX of this library's reports wait to
 * be read (a flood: see unread_acks) or once the reporter has read
 * nothing for two seconds while calls waited, until it reads again
 * (reporter_stopped).
 *
 * A flood must not hoard the node's memory in the reporter's mailbox
 * either (200,000 double frees with the reporter behind: +386 MiB). So
 * every report a call makes carries such a resource, counted until the
 * reporter lets go of it, and past CALL_UNREAD_MAX unread a call's report
 * is not sent but counted on the call, which says how many at its end, as
 * a report of its own process (say_dropped): an async test's own misuse
 * is not lost behind another process's flood. Reports made off a call
 * (threads of the NIF's own, destructors, the load, upgrade and unload
 * callbacks) carry a token of the symbolizer's library instead, which
 * stays loaded (report_tokens.h); past OFF_CALL_UNREAD_MAX of them unread
 * they are dropped and counted too (report_off_call).
 *
 * The hook may run on any thread (never with a lock of beam_alloc's
 * allocators held), inside the allocator call that found the problem;
 * everything here allocates through ERTS only, never through beam_alloc.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* RTLD_NOLOAD */
#endif
#include "nif_internal.h"
#include "report_tokens.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* --- Acknowledgements ---------------------------------------------------- */

/* Shared by the resource (the reporter's reference) and the waiting call;
 * freed by whichever lets go last. */
typedef struct report_ack {
    atomic_int refs;
    atomic_bool read;
} report_ack;

/* ack NULL: a report that counts as unread but that no call waits for
 * (past ACK_BACKLOG_MAX, or the reporter stopped). */
typedef struct ack_resource {
    report_ack *ack;
} ack_resource;

/* The type in use, and the one the load in progress opened: in use only
 * once that load succeeds (a failed load takes its types back). */
static ErlNifResourceType *_Atomic ack_type;
static ErlNifResourceType *ack_type_opened;

/* The acknowledgement this thread's outermost BEAM_NIF call waits for is
 * beam__nif_here.pending (nif_internal.h). */

/* Reports of this library's calls sent and not yet read (their
 * resources), every thread's. A flood of reports (a misuse in a loop, on
 * many processes) puts the reporter behind, and every call waiting for it
 * yields in a loop, taking the schedulers from the very process it waits
 * for: each call would take its whole second. So past ACK_BACKLOG_MAX a
 * report's resource is one no call waits for (the report is sent all the
 * same; only the attribution to a Task that ends at once may be lost).
 * Past CALL_UNREAD_MAX a report is not sent at all, only counted (about
 * 2 KB a message waiting: 20 MiB at most); the line that says so may go
 * up to DROP_LINES_MAX past it (one a call), and past that its count waits
 * in unsaid_drops. (Checked, then counted: concurrent calls may pass the
 * bounds by one each.) */
#define ACK_BACKLOG_MAX 256
#define CALL_UNREAD_MAX 10000
#define DROP_LINES_MAX 1000
static _Atomic int unread_acks;
/* Calls' drops no call could say (past DROP_LINES_MAX): said (as
 * nobody's, by say_unsaid_drops) before the next report sent, or once the
 * reporter has let go of every call's report (ack_destroyed): a flood that
 * stops, with no report of the library after it, is said all the same, as
 * the symbolizer's library does for reports off a call. (Reports off a
 * call count theirs on their counter: report_off_call.) */
static _Atomic unsigned long unsaid_drops;
/* Reports of this library's calls the reporter let go of (off_call_budget). */
static _Atomic unsigned long calls_read;
/* A reporter that reads nothing for STOPPED_AFTER_USEC while calls wait
 * for it is stopped (suspended, stuck in a handler), not just slow: until
 * it reads again, reports carry no acknowledgement either. Without this,
 * each call that reported took its second, in turn, until the backlog
 * filled (256 s of calls a second long, found by a bug hunt); declared
 * stopped at the first wait that ran out, a reporter busy for 1.3 s lost
 * the next Task's report to its test (found in review). acks_read counts
 * the reads; silent_reads is acks_read + 1 as it was when a wait first ran
 * out without a read, silent_since when: any read since ends the silence,
 * so a read racing the marking cannot leave it stopped for good. */
#define STOPPED_AFTER_USEC 2000000
static _Atomic uint64_t acks_read;
static _Atomic uint64_t silent_reads;
static _Atomic int64_t silent_since;
/* Waits that ran out before the reporter read their report: what tests
 * count (beam__report_waits_ran_out) where a call's time would depend on
 * the machine's load. */
static _Atomic unsigned long waits_ran_out;

static bool reporter_stopped(void) {
    uint64_t s = beam__atomic_load_seq_cst(&silent_reads);
    return s != 0 && beam__atomic_load_seq_cst(&acks_read) == s - 1 &&
           enif_monotonic_time(ERL_NIF_USEC) -
                   beam__atomic_load_seq_cst(&silent_since) >=
               STOPPED_AFTER_USEC;
}

/* A wait ran out; n: acks_read as it was before the wait saw its ack
 * unread. */
static void note_silence(uint64_t n) {
    if (beam__atomic_load_seq_cst(&silent_reads) == n + 1)
        return; /* the silence began earlier */
    beam__atomic_store_seq_cst(&silent_since,
                               enif_monotonic_time(ERL_NIF_USEC));
    beam__atomic_store_seq_cst(&silent_reads, n + 1);
}

static void ack_release(report_ack *a) {
    if (beam__atomic_sub_acq_rel(&a->refs, 1) == 1)
        enif_free(a);
}

static void say_unsaid_drops(ErlNifEnv *caller);

static void ack_destroyed(ErlNifEnv *env, void *obj) {
    report_ack *a = ((ack_resource *)obj)->ack;
    if (a != NULL) {
        /* (read before acks_read: see wait_read.) */
        beam__atomic_store_seq_cst(&a->read, true);
        beam__atomic_add_seq_cst(&acks_read, 1);
        ack_release(a);
    }
    beam__atomic_add_relaxed(&calls_read, 1);
    /* The last unread: drops no call could say are said now (seq_cst, as
     * say_dropped's: one of the two sees the other's step). env is a
     * callback's, no process's: the line goes as a report off a call. */
    if (beam__atomic_sub_seq_cst(&unread_acks, 1) == 1)
        say_unsaid_drops(env);
}

void beam__report_ack_open(ErlNifEnv *env) {
    /* Named after this copy of the library: a module name may be loaded
     * with another library later (and the types of a module are looked up
     * by name), whose copy must not take this one's type over. */
    char name[64];
    snprintf(name, sizeof name, "beam_alloc_report_ack@%p", (void *)&ack_type);
    ack_type_opened = enif_open_resource_type(
        env, NULL, name, ack_destroyed,
        (ErlNifResourceFlags)(ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER), NULL);
}

void beam__report_ack_loaded(int result) {
    if (result == 0 && ack_type_opened != NULL)
        beam__atomic_store_release(&ack_type, ack_type_opened);
    ack_type_opened = NULL;
}

/* The acknowledgement a call waits for, or NULL (none wanted or no
 * memory: the report is counted all the same). */
static report_ack *waited_ack(void) {
    if (beam__atomic_load_relaxed(&unread_acks) >= ACK_BACKLOG_MAX ||
        reporter_stopped())
        return NULL;
    report_ack *a = enif_alloc(sizeof *a);
    if (a != NULL) {
        beam__atomic_init(&a->refs, 2);
        beam__atomic_init(&a->read, false);
    }
    return a;
}

/* The resource of a message in msg_env that a call sends, counted unread
 * until the reporter lets go of it, and which the call waits for while
 * the reporter keeps up; the atom undefined when there is no call, or no
 * resource type.
 * Off a call (a thread of the NIF's own, a destructor, the load, upgrade
 * and unload callbacks) a report carries none: the type may be gone. The
 * VM frees a library's resource types when its module is purged and no
 * resource of them lives, and runs the unload callback only after that
 * (erl_nif.c: erts_unload_nif, steal_resource_type, close_dynlib); a
 * resource made then, on the freed type, crashed the VM when the reporter
 * let go of it (cxx_load_test's unload that throws: SIGSEGV in
 * run_resource_dtor). A destructor or a thread may run after that purge
 * too, with no callback to say so. So such reports carry the symbolizer
 * library's token instead (off_call_token). */
static ERL_NIF_TERM off_call_token(ErlNifEnv *msg_env);

static ERL_NIF_TERM new_ack(ErlNifEnv *msg_env, bool in_call) {
    ERL_NIF_TERM none = enif_make_atom(msg_env, "undefined");
    if (!in_call)
        return off_call_token(msg_env);
    ErlNifResourceType *type = beam__atomic_load_acquire(&ack_type);
    if (type == NULL)
        return none;
    ack_resource *r = enif_alloc_resource(type, sizeof *r);
    if (r == NULL)
        return none;
    report_ack *a = waited_ack();
    r->ack = a;
    beam__atomic_add_relaxed(&unread_acks, 1);
    ERL_NIF_TERM term = enif_make_resource(msg_env, r);
    enif_release_resource(r); /* the message's term holds it now */
    if (a != NULL) {
        beam__nif_thread *t = &beam__nif_here;
        if (t->pending != NULL)
            ack_release(t->pending);
        t->pending = a;
    }
    return term;
}

#define WAIT_USEC 1000000

/* wait(Ack, Deadline, Result, Raised): the rest of a call that reported.
 * (A process killed while it waits leaves its 8 bytes of the ack behind.) */
static ERL_NIF_TERM wait_read(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    ErlNifUInt64 ptr;
    ErlNifSInt64 deadline;
    int raised;
    if (argc != 4 || !enif_get_uint64(env, argv[0], &ptr) ||
        !enif_get_int64(env, argv[1], &deadline) ||
        !enif_get_int(env, argv[3], &raised))
        return enif_make_badarg(env);
    report_ack *a = (report_ack *)(uintptr_t)ptr;
    /* acks_read before read: a read that this load misses counts after n,
     * and so ends the silence note_silence marks. */
    uint64_t n = beam__atomic_load_seq_cst(&acks_read);
    if (!beam__atomic_load_seq_cst(&a->read)) {
        if (enif_monotonic_time(ERL_NIF_USEC) < deadline) {
            /* Let the reporter run (on this scheduler too). */
            enif_consume_timeslice(env, 100);
            return enif_schedule_nif(env, "beam_alloc_report_wait", 0,
                                     wait_read, argc, argv);
        }
        note_silence(n);
        beam__atomic_add_relaxed(&waits_ran_out, 1);
    }
    ack_release(a);
    return raised ? enif_raise_exception(env, argv[2]) : argv[2];
}

unsigned long beam__report_waits_ran_out(void) {
    return beam__atomic_load_relaxed(&waits_ran_out);
}

static void say_dropped(ErlNifEnv *caller, unsigned long n);

ERL_NIF_TERM beam__report_wait(ErlNifEnv *env, ERL_NIF_TERM result,
                               unsigned long dropped) {
    beam__nif_thread *t = &beam__nif_here;
    if (dropped != 0)
        say_dropped(env, dropped);
    if (beam__atomic_load_relaxed(&unread_acks) < CALL_UNREAD_MAX)
        say_unsaid_drops(env);
    report_ack *a = t->pending;
    if (a == NULL)
        return result;
    t->pending = NULL;
    /* The body scheduled its continuation: the wait would replace it (a
     * second enif_schedule_nif) and then return the body's non-value as
     * its own result, for ever. So the call does not wait: its reports
     * reach the reporter all the same, but a Task that ends at once may
     * lose them to its test. */
    if (beam__scheduled(env, result)) {
        ack_release(a);
        return result;
    }
    ERL_NIF_TERM reason;
    int raised = enif_has_pending_exception(env, &reason);
    ERL_NIF_TERM args[4] = {
        enif_make_uint64(env, (ErlNifUInt64)(uintptr_t)a),
        enif_make_int64(env, enif_monotonic_time(ERL_NIF_USEC) + WAIT_USEC),
        raised ? reason : result, enif_make_int(env, raised)};
    return wait_read(env, 4, args);
}

/* --- The hook ------------------------------------------------------------ */

/* Sends line to the reporter from caller, a call's env (NULL off a call),
 * as the calling process's when mine; false when there is no reporter (or
 * no memory). */
static bool send_line(ErlNifEnv *caller, const char *line, bool mine) {
    ErlNifEnv *msg_env = enif_alloc_env();
    if (msg_env == NULL)
        return false;
    ErlNifPid pid;
    size_t len = strlen(line);
    ERL_NIF_TERM bin;
    unsigned char *data = enif_make_new_binary(msg_env, len, &bin);
    const char *module = beam__nif_module_atom();
    if (data == NULL || !beam__report_find_reporter(caller, msg_env, &pid)) {
        enif_free_env(msg_env);
        return false;
    }
    memcpy(data, line, len);
    /* The calling process, so that a test can take the reports its own
     * calls made (BeamAlloc.Case); undefined off a process. */
    ErlNifPid self;
    bool from_process = caller != NULL && enif_self(caller, &self) != NULL;
    ERL_NIF_TERM from = from_process && mine
                            ? enif_make_pid(msg_env, &self)
                            : enif_make_atom(msg_env, "undefined");
    ERL_NIF_TERM msg = enif_make_tuple5(
        msg_env, enif_make_atom(msg_env, "beam_alloc_report"),
        enif_make_atom(msg_env, module[0] != '\0' ? module : "undefined"), bin,
        from, new_ack(msg_env, from_process));
    bool sent = enif_send(caller, &pid, msg_env, msg);
    enif_free_env(msg_env);
    return sent;
}

static void send_or_print(ErlNifEnv *caller, const char *line, bool mine) {
    if (!send_line(caller, line, mine))
        beam__report_to_stderr(line);
}

static void send_dropped(ErlNifEnv *caller, unsigned long n, bool mine) {
    char line[96];
    snprintf(line, sizeof line, BEAM__REPORT_DROPPED_LINE, n);
    send_or_print(caller, line, mine);
}

/* The end of a call whose reports past CALL_UNREAD_MAX were dropped: n of
 * them, said from its process, so that its test counts them; past
 * DROP_LINES_MAX more, left to unsaid_drops (said here after all when the
 * reporter let go of every report meanwhile: see ack_destroyed). */
static void say_dropped(ErlNifEnv *caller, unsigned long n) {
    if (beam__atomic_load_relaxed(&unread_acks) >=
        CALL_UNREAD_MAX + DROP_LINES_MAX) {
        beam__atomic_add_seq_cst(&unsaid_drops, n);
        if (beam__atomic_load_seq_cst(&unread_acks) == 0)
            say_unsaid_drops(caller);
        return;
    }
    send_dropped(caller, n, true);
}

/* Drops no call could say, said before the next report that is sent: as
 * nobody's (undefined), since they were many calls'. */
static void say_unsaid_drops(ErlNifEnv *caller) {
    if (beam__atomic_load_seq_cst(&unsaid_drops) == 0)
        return;
    unsigned long n = beam__atomic_exchange_acq_rel(&unsaid_drops, 0);
    if (n != 0)
        send_dropped(caller, n, false);
}

/* --- Reports off a call ------------------------------------------------- */

/* Past OFF_CALL_UNREAD_MAX of this copy's reports off a call unread (their
 * tokens), such a report is not sent but counted on the copy's counter
 * (about 2 KB a message waiting: 2 MiB at most), and said by the next such
 * report sent or, with none, by the symbolizer's library once the last
 * token waiting goes (a flood that stopped: the library may never report
 * or be called again). Without the symbolizer's
 * library (not built, not loadable) no token counts them: then past
 * OFF_CALL_BUDGET sent since the reporter last let go of a report of this
 * library's calls, they go to stderr instead, which hoards nothing. */
#define OFF_CALL_UNREAD_MAX 1000
#define OFF_CALL_BUDGET 1000
/* While the symbolizer's library is not found, it is looked for again
 * after LOOKUP_AGAIN_USEC (a walk of the loader's list). */
#define LOOKUP_AGAIN_USEC 1000000

/* The symbolizer library's table, found by the first report off a call.
 * Its handle is never closed: it keeps the library mapped whatever the VM
 * does with it (the table is its code). Several threads may look at once:
 * each finds the same table, and an extra handle costs nothing. */
static const beam__report_tokens *_Atomic report_tokens;
static _Atomic int64_t report_tokens_missed_at;
/* This copy's counter: made at first use and never released (16 bytes a
 * copy). Releasing it in the unload callback would race the NIF's own
 * threads, which may still report while the unload stops them, and the
 * tokens still waiting hold it anyway. */
static beam__report_counter *_Atomic report_counter;

static bool tokens_in(const char *path, void *arg) {
    size_t len = strlen(path), end = strlen(BEAM__REPORT_TOKENS_OBJECT);
    if (len < end || strcmp(path + len - end, BEAM__REPORT_TOKENS_OBJECT) != 0)
        return false;
    void *handle = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    void *sym =
        handle != NULL ? dlsym(handle, BEAM__REPORT_TOKENS_SYMBOL) : NULL;
    beam__report_tokens_fn *get;
    memcpy(&get, &sym, sizeof get);
    const beam__report_tokens *t =
        sym != NULL ? get(BEAM__REPORT_TOKENS_VERSION) : NULL;
    if (t == NULL) {
        if (handle != NULL)
            dlclose(handle);
        return false;
    }
    *(const beam__report_tokens **)arg = t;
    return true;
}

/* Microseconds of CLOCK_MONOTONIC. Not enif_monotonic_time: off the VM's
 * schedulers (a thread of the NIF's own, where reports off a call come
 * from) it is ERL_NIF_TIME_ERROR, so a thread's miss and every later look
 * were at the same time, and the thread never looked again (report_test:
 * past 1,000 reports, all went to stderr for good). */
static int64_t clock_usec(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const beam__report_tokens *tokens_table(void) {
    const beam__report_tokens *t = beam__atomic_load_acquire(&report_tokens);
    if (t != NULL)
        return t;
    int64_t now = clock_usec();
    int64_t missed = beam__atomic_load_relaxed(&report_tokens_missed_at);
    if (missed != 0 && now - missed < LOOKUP_AGAIN_USEC)
        return NULL;
    if (!beam__nif_each_object(tokens_in, &t)) {
        beam__atomic_store_relaxed(&report_tokens_missed_at, now);
        return NULL;
    }
    beam__atomic_store_release(&report_tokens, t);
    return t;
}

static beam__report_counter *copy_counter(const beam__report_tokens *t) {
    beam__report_counter *c = beam__atomic_load_acquire(&report_counter);
    if (c != NULL)
        return c;
    beam__report_counter *made = t->counter_new();
    if (made == NULL || beam__atomic_cas_acq_rel(&report_counter, &c, made))
        return made;
    t->counter_release(made); /* another thread's came first */
    return c;
}

/* The token of a report off a call, in msg_env; undefined without the
 * symbolizer's library (or memory). */
static ERL_NIF_TERM off_call_token(ErlNifEnv *msg_env) {
    const beam__report_tokens *t = beam__atomic_load_acquire(&report_tokens);
    beam__report_counter *c = beam__atomic_load_acquire(&report_counter);
    ERL_NIF_TERM token = t != NULL && c != NULL ? t->token_new(msg_env, c) : 0;
    return token != 0 ? token : enif_make_atom(msg_env, "undefined");
}

typedef enum off_call_verdict {
    OFF_CALL_SEND,
    OFF_CALL_DROP,
    OFF_CALL_PRINT
} off_call_verdict;

/* Without tokens: sent while the budget lasts (its start: calls_read as it
 * was, and the count since). The first report past it says so. */
static _Atomic unsigned long budget_reads, budget_sent;

static off_call_verdict off_call_budget(void) {
    unsigned long reads = beam__atomic_load_relaxed(&calls_read);
    if (beam__atomic_load_relaxed(&budget_reads) != reads) {
        beam__atomic_store_relaxed(&budget_reads, reads);
        beam__atomic_store_relaxed(&budget_sent, 0);
    }
    unsigned long sent = beam__atomic_add_relaxed(&budget_sent, 1);
    if (sent == OFF_CALL_BUDGET)
        send_or_print(NULL,
                      "beam_alloc: the reporter is behind and the "
                      "symbolizer's library (beam_alloc_symbolizer) is not "
                      "loaded to count what waits: reports made off a call "
                      "go to stderr until it reads again",
                      true);
    return sent < OFF_CALL_BUDGET ? OFF_CALL_SEND : OFF_CALL_PRINT;
}

/* *t and *c: the table and this copy's counter, NULL without them. */
static off_call_verdict off_call_admit(const beam__report_tokens **t,
                                       beam__report_counter **c) {
    *t = tokens_table();
    *c = *t != NULL ? copy_counter(*t) : NULL;
    if (*c == NULL)
        return off_call_budget();
    return (*t)->counter_unread(*c) >= OFF_CALL_UNREAD_MAX ? OFF_CALL_DROP
                                                           : OFF_CALL_SEND;
}

/* A report off a call: dropped and counted on the copy's counter while
 * the reporter is too far behind (the symbolizer's library says them once
 * it catches up, counter_drop), else sent after the drops not yet said. */
static void report_off_call(const char *line) {
    const beam__report_tokens *t;
    beam__report_counter *c;
    off_call_verdict v = off_call_admit(&t, &c);
    if (v == OFF_CALL_PRINT) {
        beam__report_to_stderr(line);
        return;
    }
    if (v == OFF_CALL_DROP) {
        t->counter_drop(c);
        return;
    }
    unsigned long dropped = c != NULL ? t->counter_take_dropped(c) : 0;
    if (dropped != 0)
        send_dropped(NULL, dropped, false);
    say_unsaid_drops(NULL);
    send_or_print(NULL, line, true);
}

void beam__report_to_logger(void *user, const char *line) {
    (void)user;
    /* The calling NIF's env when there is one; NULL from threads of our
     * own, destructors and load callbacks, where ERTS accepts it. */
    ErlNifEnv *caller = beam__nif_current_env();
    if (caller == NULL) {
        report_off_call(line);
        return;
    }
    if (beam__atomic_load_relaxed(&unread_acks) >= CALL_UNREAD_MAX) {
        beam__nif_count_dropped();
        return;
    }
    say_unsaid_drops(caller);
    send_or_print(caller, line, true);
}
