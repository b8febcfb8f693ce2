/*
 * NIFs for BeamAlloc.Testing.check_all_allocation_failures: correct ones,
 * and ones with each kind of bug it must catch (a leak on one failure path,
 * a swallowed failure, nondeterminism). Loaded by BeamAlloc.Test.Faults
 * (test/support/faults.ex).
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "nif_util.h"

#include "../../src/malloc_hdr.h" /* the word forged_new forges */

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <stdatomic.h>
#include <sys/mman.h>

static ERL_NIF_TERM ok(ErlNifEnv *env) {
    return enif_make_atom(env, "ok");
}

/* correct(n): n blocks of growing sizes, each checked, then a realloc
 * that grows the last one (a remap, or an alloc + copy); on any failure
 * every block taken so far goes back and the result is {:error, :enomem}. */
static ERL_NIF_TERM correct_impl(ErlNifEnv *env, const ERL_NIF_TERM argv[]) {
    size_t n;
    if (!get_size(env, argv[0], &n) || n == 0 || n > 64)
        return enif_make_badarg(env);
    uint64_t *blocks[64];
    size_t got;
    for (got = 0; got < n; got++) {
        blocks[got] = beam_alloc(beam_allocator, uint64_t, got + 1);
        if (blocks[got] == NULL)
            break;
        blocks[got][0] = got;
    }
    ERL_NIF_TERM result = ok(env);
    size_t last_len = n; /* elements of blocks[n - 1] */
    if (got < n) {
        result = beam_make_error(env, "enomem");
    } else {
        uint64_t *bigger =
            beam_realloc(beam_allocator, blocks[n - 1], n, 4 * n);
        if (bigger == NULL) {
            result = beam_make_error(env, "enomem");
        } else {
            blocks[n - 1] = bigger;
            last_len = 4 * n;
        }
    }
    for (size_t i = 0; i < got; i++)
        beam_free(beam_allocator, blocks[i], i == n - 1 ? last_len : i + 1);
    return result;
}

NIF_WITH_DIRTY_TWIN(correct, correct_impl)

/* many(n): n blocks of 16 bytes, each freed at once; a failure returns
 * {:error, :enomem}. More requests than a run used to take (3152). */
BEAM_NIF(many) {
    unsigned n;
    if (!enif_get_uint(env, argv[0], &n))
        return enif_make_badarg(env);
    for (unsigned i = 0; i < n; i++) {
        unsigned char *p = beam_alloc(beam_allocator, unsigned char, 16);
        if (p == NULL)
            return beam_make_error(env, "enomem");
        beam_free(beam_allocator, p, 16);
    }
    return ok(env);
}

/* uses_null(tag): the bug check_all_allocation_failures exists for: the
 * second allocation (make_header's) is used unchecked, so failing it
 * crashes the VM (SIGSEGV) instead of returning an error. The first is
 * handled. */
static __attribute__((noinline)) unsigned char *make_header(unsigned tag) {
    unsigned char *volatile header =
        beam_alloc(beam_allocator, unsigned char, 64); /* SITE: unchecked */
    header[0] = (unsigned char)tag;
    return header;
}

BEAM_NIF(uses_null) {
    unsigned tag;
    if (!enif_get_uint(env, argv[0], &tag))
        return enif_make_badarg(env);
    unsigned char *body = beam_alloc(beam_allocator, unsigned char, 40);
    if (body == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *header = make_header(tag);
    beam_free(beam_allocator, header, 64);
    beam_free(beam_allocator, body, 40);
    return ok(env);
}

/* exits_on_null(): its one request's failure ends the process with
 * exit(1), as libbrotlienc's encoder does (BROTLI_ENCODER_EXIT_ON_OOM, its
 * default): no signal for the crash note's handler. */
BEAM_NIF(exits_on_null) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 48);
    if (p == NULL)
        exit(1);
    beam_free(beam_allocator, p, 48);
    return ok(env);
}

/* uses_null_via(tag): uses_null's C function called from this BEAM_NIF's
 * body: the request fails in a call of uses_null nested in this one. The
 * crash names the NIF the VM called (uses_null_via/1), not the nested
 * call, which the copy alone knows of. */
BEAM_NIF(uses_null_via) {
    return uses_null(env, argc, argv);
}

/* hops_to_null(tag): uses_null's bug after a move of its own to a dirty
 * CPU scheduler (enif_schedule_nif under its own name); listed under a
 * dirty name too (hops_to_null_dirty/1). The continuation is the call
 * hops_to_null/1, which the crash names. */
BEAM_NIF(hops_to_null) {
    if (enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
        return enif_schedule_nif(env, "hops_to_null",
                                 ERL_NIF_DIRTY_JOB_CPU_BOUND, hops_to_null,
                                 argc, argv);
    return uses_null(env, argc, argv);
}

/* uses_null_in_thread(): the failed request is made, and its NULL used, on
 * a thread the NIF starts and joins: SIGSEGV there. The thread's stack has
 * no NIF function: the crash must not name one it guessed. */
static void *use_null_there(void *arg) {
    beam_allocator_t call = *(beam_allocator_t *)arg;
    unsigned char *volatile p =
        beam_alloc(call, unsigned char, 8); /* SITE: null in thread */
    p[0] = 1;
    beam_free(call, p, 8);
    return NULL;
}

BEAM_NIF(uses_null_in_thread) {
    beam_allocator_t call = beam_allocator;
    ErlNifTid tid;
    if (enif_thread_create("uses_null", &tid, use_null_there, &call, NULL) != 0)
        return enif_make_badarg(env);
    enif_thread_join(tid, NULL);
    return ok(env);
}

/* uses_null_in_callback(): the failed request is made, and its NULL used,
 * in a callback another library's code calls (libc's qsort here; zlib's
 * zalloc, a hooked library's malloc alike): the first of the NIF
 * library's frames above it is the callback, not the NIF, and the NIF
 * nearest below the callback's code is a guess. The crash names the NIF
 * the VM called. */
static beam_allocator_t sorting_allocator;

static int compare_using_null(const void *a, const void *b) {
    unsigned char *volatile p = beam_alloc(sorting_allocator, unsigned char,
                                           8); /* SITE: null in callback */
    p[0] = 1;
    beam_free(sorting_allocator, p, 8);
    return *(const int *)a - *(const int *)b;
}

BEAM_NIF(uses_null_in_callback) {
    sorting_allocator = beam_allocator;
    int v[] = {3, 1, 2};
    qsort(v, sizeof v / sizeof v[0], sizeof v[0], compare_using_null);
    return ok(env);
}

/* uses_null_in_body(): its one request, made in the body itself, used
 * unchecked: SIGSEGV when a check fails it. The crash names the NIF as
 * written, not the function BEAM_NIF makes of its body. */
BEAM_NIF(uses_null_in_body) {
    unsigned char *volatile p =
        beam_alloc(beam_allocator, unsigned char, 8); /* SITE: null in body */
    p[0] = 1;
    beam_free(beam_allocator, p, 8);
    return ok(env);
}

/* make_header's request used unchecked, by the NIFs below, each of its
 * own (the crash note names the first NIF of a C function). */
static ERL_NIF_TERM header_unchecked(ErlNifEnv *env,
                                     const ERL_NIF_TERM argv[]) {
    unsigned tag;
    if (!enif_get_uint(env, argv[0], &tag))
        return enif_make_badarg(env);
    beam_free(beam_allocator, make_header(tag), 64);
    return ok(env);
}

/* "uses null"(tag), a name Elixir writes quoted (Faults."uses null"/1).
 * The crash writes the name as the glue's reports do. */
BEAM_NIF(uses_null_quoted) {
    return header_unchecked(env, argv);
}

/* A name whose call the crash note cannot write whole: 156 backslashes
 * (two bytes each, escaped), "a", "\xc3\xa9" (the VM reads a NIF's name
 * as Latin-1: Elixir's "\u00c3\u00a9", each 2 bytes in UTF-8, the first
 * across the note's cut, CRASH_NOTE_CALL's) and "z". The note must cut it
 * before a whole character and keep the closing backquote. */
#define BS8 "\\\\\\\\\\\\\\\\"
#define BS52 BS8 BS8 BS8 BS8 BS8 BS8 "\\\\\\\\"
static const char long_name[] = BS52 BS52 BS52 "a\xc3\xa9z";

BEAM_NIF(uses_null_long_name) {
    return header_unchecked(env, argv);
}

/* Another: 80 \x01, a control character Elixir writes as a 4-byte
 * escape, the 79th across the note's cut. The note must cut it between
 * two escapes. */
#define C8 "\x01\x01\x01\x01\x01\x01\x01\x01"
static const char escapes_name[] = C8 C8 C8 C8 C8 C8 C8 C8 C8 C8;

BEAM_NIF(uses_null_escapes_name) {
    return header_unchecked(env, argv);
}

/* aborts(): the VM dies by SIGABRT, whatever the check fails (a crash that
 * is no failed allocation's). */
BEAM_NIF(aborts) {
    (void)env;
    (void)argv;
    abort();
}

/* divides(n): 1000 / n, a real SIGFPE for 0 (a fault, not a sent signal:
 * the VM ignores SIGFPE, which a fault overrides). */
BEAM_NIF(divides) {
    int n;
    if (!enif_get_int(env, argv[0], &n))
        return enif_make_badarg(env);
    volatile int num = 1000, den = n;
    return enif_make_int(env, num / den);
}

/* sends_itself(sig): the VM sends itself sig (kill: si_code SI_USER). */
BEAM_NIF(sends_itself) {
    int sig;
    if (!enif_get_int(env, argv[0], &sig))
        return enif_make_badarg(env);
    kill(getpid(), sig);
    return ok(env);
}

/* A crash reporter's SIGSEGV handler: says it ran, and returns, counting
 * on SA_RESETHAND for the fault to kill the VM when it comes again. */
static void resethand_handler(int sig, siginfo_t *info, void *uctx) {
    (void)sig;
    (void)info;
    (void)uctx;
    static const char said[] = "reporter's handler ran\n";
    ssize_t w = write(STDERR_FILENO, said, sizeof said - 1);
    (void)w;
}

/* install_reporter(): that handler for SIGSEGV, SA_SIGINFO|SA_RESETHAND. */
BEAM_NIF(install_reporter) {
    (void)argv;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = resethand_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    return ok(env);
}

/* A library that puts its own SIGSEGV action in for a while and then
 * puts back what it found: swap_segv() the first time saves the action and
 * sets the default; restore_segv() puts the saved one back. */
static struct sigaction saved_segv;
static atomic_bool segv_swapped;

BEAM_NIF(swap_segv) {
    (void)argv;
    bool no = false;
    if (atomic_compare_exchange_strong(&segv_swapped, &no, true)) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGSEGV, &dfl, &saved_segv);
    }
    return ok(env);
}

/* chain_segv(): the first time, a library's SIGSEGV handler goes in over
 * the action found, which it calls (a crash reporter that chains on). */
static struct sigaction chained_segv;
static atomic_bool segv_chained;

static void chaining_handler(int sig, siginfo_t *info, void *uctx) {
    if (chained_segv.sa_flags & SA_SIGINFO)
        chained_segv.sa_sigaction(sig, info, uctx);
    else if (chained_segv.sa_handler != SIG_DFL &&
             chained_segv.sa_handler != SIG_IGN)
        chained_segv.sa_handler(sig);
    else
        signal(sig, SIG_DFL);
}

BEAM_NIF(chain_segv) {
    (void)argv;
    bool no = false;
    if (atomic_compare_exchange_strong(&segv_chained, &no, true)) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = chaining_handler;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &chained_segv);
    }
    return ok(env);
}

BEAM_NIF(restore_segv) {
    (void)argv;
    sigaction(SIGSEGV, &saved_segv, NULL);
    return ok(env);
}

/* The same, but a failure raises RuntimeError instead of returning. */
BEAM_NIF(correct_raising) {
    unsigned char *a = beam_alloc(beam_allocator, unsigned char, 40);
    if (a == NULL)
        return beam_raise(env, "RuntimeError", "out of memory");
    unsigned char *b = beam_alloc(beam_allocator, unsigned char, 80);
    if (b == NULL) {
        beam_free(beam_allocator, a, 40);
        return beam_raise(env, "RuntimeError", "out of memory");
    }
    beam_free(beam_allocator, b, 80);
    beam_free(beam_allocator, a, 40);
    return ok(env);
}

/* leak_all_on_failure(N): N blocks of 16 bytes (N at most 64); a failure
 * returns at once, leaking every block before it. */
BEAM_NIF(leak_all_on_failure) {
    unsigned n;
    if (!enif_get_uint(env, argv[0], &n) || n > 64)
        return enif_make_badarg(env);
    unsigned char *blocks[64];
    for (unsigned i = 0; i < n; i++) {
        blocks[i] = beam_alloc(beam_allocator, unsigned char, 16);
        if (blocks[i] == NULL)
            return beam_make_error(env, "enomem"); /* the bug */
    }
    for (unsigned i = 0; i < n; i++)
        beam_free(beam_allocator, blocks[i], 16);
    return ok(env);
}

/* Three allocations; the third one's failure path forgets the first. */
BEAM_NIF(leaky_on_failure) {
    unsigned char *a = beam_alloc(beam_allocator, unsigned char, 16);
    if (a == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *b = beam_alloc(beam_allocator, unsigned char, 32);
    if (b == NULL) {
        beam_free(beam_allocator, a, 16);
        return beam_make_error(env, "enomem");
    }
    unsigned char *c = beam_alloc(beam_allocator, unsigned char, 64);
    if (c == NULL) {
        beam_free(beam_allocator, b, 32);
        return beam_make_error(env, "enomem"); /* the bug: a is lost */
    }
    beam_free(beam_allocator, c, 64);
    beam_free(beam_allocator, b, 32);
    beam_free(beam_allocator, a, 16);
    return ok(env);
}

/* Two allocations; the second one's failure is swallowed: :ok anyway. */
BEAM_NIF(swallows) {
    unsigned char *a = beam_alloc(beam_allocator, unsigned char, 8);
    if (a == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *b = beam_alloc(beam_allocator, unsigned char, 24);
    if (b != NULL) /* the bug: no else */
        beam_free(beam_allocator, b, 24);
    beam_free(beam_allocator, a, 8);
    return ok(env);
}

/* Allocates three blocks on even calls, one on odd ones. */
static unsigned long calls;

/* reset_nondeterministic(): the next call is an even one (a raw NIF). */
static ERL_NIF_TERM reset_nondeterministic(ErlNifEnv *env, int argc,
                                           const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    calls = 0;
    return ok(env);
}

BEAM_NIF(nondeterministic) {
    size_t n = calls++ % 2 == 0 ? 3 : 1;
    unsigned char *blocks[3];
    for (size_t i = 0; i < n; i++) {
        blocks[i] = beam_alloc(beam_allocator, unsigned char, 16);
        if (blocks[i] == NULL) {
            while (i-- > 0)
                beam_free(beam_allocator, blocks[i], 16);
            return beam_make_error(env, "enomem");
        }
    }
    for (size_t i = 0; i < n; i++)
        beam_free(beam_allocator, blocks[i], 16);
    return ok(env);
}

/* Grows a block step by step with beam_realloc: every growth is a request
 * that can fail, and a failed one leaves the old block to free. */
static ERL_NIF_TERM grow_impl(ErlNifEnv *env) {
    size_t len = 8;
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, len);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    for (int step = 0; step < 3; step++) {
        unsigned char *q = beam_realloc(beam_allocator, p, len, len * 4);
        if (q == NULL) {
            beam_free(beam_allocator, p, len);
            return beam_make_error(env, "enomem");
        }
        p = q;
        len *= 4;
    }
    beam_free(beam_allocator, p, len);
    return ok(env);
}

BEAM_NIF(grow) {
    return grow_impl(env);
}

/* The same over the process-wide general purpose allocator, whose remap
 * moves no small block: each growth is a remap that comes back NULL and
 * the allocation beam_realloc then makes, one request all the same. */
static beam_allocator_t process_wide_gpa(void) {
    return beam_general_purpose_allocator;
}

BEAM_NIF(grow_gpa, .allocator = process_wide_gpa) {
    return grow_impl(env);
}

/* A block shrunk, then grown, by beam_realloc, and left behind when the
 * allocation after them fails: the shrink is no request, the growth one,
 * and the block that leaks is allocation #0 (the moves keep its record),
 * over any allocator; the GPA's remap moves it both times. */
static ERL_NIF_TERM reshape_leaky_impl(ErlNifEnv *env) {
    unsigned char *p = beam_alloc(beam_allocator, unsigned char, 256);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *q = beam_realloc(beam_allocator, p, 256, 8);
    if (q == NULL) {
        beam_free(beam_allocator, p, 256);
        return beam_make_error(env, "enomem");
    }
    p = q;
    q = beam_realloc(beam_allocator, p, 8, 64);
    if (q == NULL) {
        beam_free(beam_allocator, p, 8);
        return beam_make_error(env, "enomem");
    }
    p = q;
    unsigned char *r = beam_alloc(beam_allocator, unsigned char, 16);
    if (r == NULL)
        return beam_make_error(env, "enomem"); /* leaks p */
    beam_free(beam_allocator, r, 16);
    beam_free(beam_allocator, p, 64);
    return ok(env);
}

BEAM_NIF(reshape_leaky) {
    return reshape_leaky_impl(env);
}

BEAM_NIF(reshape_leaky_gpa, .allocator = process_wide_gpa) {
    return reshape_leaky_impl(env);
}

/* A block kept (leaked) when the second allocation fails, in the first run
 * that fails it; every later run shrinks the kept block, a move over the
 * GPA. The kept block stays a leak of the run that lost it, over any
 * allocator: the move keeps its run, not only its number and site. */
typedef struct kept_block {
    unsigned char *p;
    size_t len;
} kept_block;
static kept_block kept_raw, kept_gpa;

static ERL_NIF_TERM keep_then_shrink_impl(ErlNifEnv *env, kept_block *k) {
    unsigned char *a = beam_alloc(beam_allocator, unsigned char, 256);
    if (a == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *b = beam_alloc(beam_allocator, unsigned char, 16);
    if (b == NULL) {
        if (k->p == NULL)
            *k = (kept_block){a, 256};
        else
            beam_free(beam_allocator, a, 256);
        return beam_make_error(env, "enomem");
    }
    beam_free(beam_allocator, b, 16);
    beam_free(beam_allocator, a, 256);
    if (k->p != NULL && k->len > 8) {
        unsigned char *q = beam_realloc(beam_allocator, k->p, k->len, 8);
        if (q != NULL)
            *k = (kept_block){q, 8};
    }
    return ok(env);
}

BEAM_NIF(keep_then_shrink) {
    return keep_then_shrink_impl(env, &kept_raw);
}

BEAM_NIF(keep_then_shrink_gpa, .allocator = process_wide_gpa) {
    return keep_then_shrink_impl(env, &kept_gpa);
}

/* A block left in a leak_check call's instance (it raises: a leak), kept
 * past the call; another call then grows it, which must copy nothing:
 * its memory went with the instance. Only under a check, which refuses
 * the growth: outside one, the realloc would read that memory. */
static unsigned char *left_behind;

BEAM_NIF(leave_behind, .leak_check = true) {
    left_behind = beam_alloc(beam_allocator, unsigned char, 16);
    return ok(env);
}

BEAM_NIF(grow_left_behind) {
    unsigned char *p = beam_realloc(beam_allocator, left_behind, 16, 4096);
    left_behind = NULL;
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free(beam_allocator, p, 4096);
    return ok(env);
}

/* A block kept when the second allocation fails and freed by the next
 * call: still the leak of the run that lost it, though no block is left
 * live when the check ends. */
static unsigned char *held;

BEAM_NIF(free_in_next_call) {
    if (held != NULL)
        beam_free(beam_allocator, held, 32);
    held = NULL;
    unsigned char *a = beam_alloc(beam_allocator, unsigned char, 32);
    if (a == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *b = beam_alloc(beam_allocator, unsigned char, 16);
    if (b == NULL) {
        held = a; /* the bug: freed only by the next call */
        return beam_make_error(env, "enomem");
    }
    beam_free(beam_allocator, b, 16);
    beam_free(beam_allocator, a, 32);
    return ok(env);
}

/* Scratch: never frees, the arena does; failures still surface. */
BEAM_NIF(scratch_work, .scratch = true) {
    for (int i = 1; i <= 4; i++)
        if (beam_alloc(beam_allocator, uint64_t, 100 * i) == NULL)
            return beam_make_error(env, "enomem");
    return ok(env);
}

/* leak_check: the forgotten block on the failure path also makes the call
 * raise RuntimeError. */
BEAM_NIF(checked_leaky, .leak_check = true) {
    unsigned char *a = beam_alloc(beam_allocator, unsigned char, 16);
    if (a == NULL)
        return beam_make_error(env, "enomem");
    unsigned char *b = beam_alloc(beam_allocator, unsigned char, 32);
    if (b == NULL)
        return beam_make_error(env, "enomem"); /* the bug: a is lost */
    beam_free(beam_allocator, b, 32);
    beam_free(beam_allocator, a, 16);
    return ok(env);
}

/* --- A block that lives across calls -------------------------------------
 * A resource holds a buffer and the allocator it came from; buffer_grow/1
 * grows it in a later call, and the destructor frees it whenever the
 * resource is collected. */

typedef struct buffer {
    beam_allocator_t allocator;
    unsigned char *data;
    size_t len;
} buffer;

static ErlNifResourceType *buffer_type;

static _Atomic unsigned long buffers_freed;

static void buffer_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    buffer *b = obj;
    beam_free(b->allocator, b->data, b->len);
    buffers_freed++;
}

/* buffers_freed(): how many buffers the destructor has freed. */
static ERL_NIF_TERM buffers_freed_nif(ErlNifEnv *env, int argc,
                                      const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_uint64(env, buffers_freed);
}

BEAM_NIF(buffer_new) {
    buffer *b = enif_alloc_resource(buffer_type, sizeof *b);
    if (b == NULL)
        return beam_make_error(env, "enomem");
    b->allocator = beam_allocator;
    b->len = 32;
    b->data = beam_alloc(beam_allocator, unsigned char, b->len);
    if (b->data == NULL)
        b->len = 0;
    ERL_NIF_TERM term = enif_make_resource(env, b);
    enif_release_resource(b);
    return b->data != NULL ? make_ok(env, term)
                           : beam_make_error(env, "enomem");
}

BEAM_NIF(buffer_grow) {
    buffer *b;
    if (!enif_get_resource(env, argv[0], buffer_type, (void **)&b))
        return enif_make_badarg(env);
    unsigned char *p = beam_realloc(b->allocator, b->data, b->len, b->len * 8);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    b->data = p;
    b->len *= 8;
    return ok(env);
}

/* --- A malloc-style block kept across calls of other allocators ---------
 * mbuffer_new/0 (the raw allocator) takes a beam_malloc block and keeps it
 * in a resource with the allocator it came from; mbuffer_size/1, a NIF
 * whose allocator is a fixed buffer, sizes it through that allocator, and
 * the destructor frees it through it, after that call. Without a check the
 * kept allocator is the raw one; under one it is the check's allocator,
 * whose current allocator is then the fixed buffer: the block's header
 * lies before the pointer, and the check knows the block by that start. */

typedef struct mbuffer {
    beam_allocator_t allocator;
    void *data;
} mbuffer;

static ErlNifResourceType *mbuffer_type;

static _Atomic unsigned long mbuffers_freed;

static void mbuffer_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    mbuffer *b = obj;
    if (b->data != NULL)
        mbuffers_freed++;
    beam_mfree(b->allocator, b->data);
}

/* mbuffers_freed(): how many blocks the destructor has freed. */
static ERL_NIF_TERM mbuffers_freed_nif(ErlNifEnv *env, int argc,
                                       const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_uint64(env, mbuffers_freed);
}

/* {ok, Resource} of type, holding a beam_malloc block of the call's. */
static ERL_NIF_TERM new_mbuffer(ErlNifEnv *env, ErlNifResourceType *type) {
    mbuffer *b = enif_alloc_resource(type, sizeof *b);
    if (b == NULL)
        return beam_make_error(env, "enomem");
    b->allocator = beam_allocator;
    b->data = beam_malloc(beam_allocator, 40);
    ERL_NIF_TERM term = enif_make_resource(env, b);
    enif_release_resource(b);
    return b->data != NULL ? make_ok(env, term)
                           : beam_make_error(env, "enomem");
}

BEAM_NIF(mbuffer_new) {
    return new_mbuffer(env, mbuffer_type);
}

/* A fixed buffer of its own for mbuffer_size/1, started afresh at each
 * call (the tests call it from one process). */
static _Alignas(16) unsigned char small_bytes[1024];
static beam_fixed_buffer_t small_buffer;

static beam_allocator_t small_fixed_buffer(void) {
    beam_fixed_buffer_init(&small_buffer, small_bytes, sizeof small_bytes);
    return beam_fixed_buffer_allocator(&small_buffer);
}

/* mbuffer_size(Buffer) -> beam_msize of its block, through its allocator. */
BEAM_NIF(mbuffer_size, .allocator = small_fixed_buffer) {
    mbuffer *b;
    if (!enif_get_resource(env, argv[0], mbuffer_type, (void **)&b))
        return enif_make_badarg(env);
    return enif_make_uint64(env, beam_msize(b->allocator, b->data));
}

/* --- A free inside a kept block of a general purpose allocator ----------
 * gmbuffer_new/0, over the process-wide general purpose allocator, takes a
 * beam_malloc block (no header: the instance knows its size) and keeps it
 * with its allocator; gmbuffer_free_inside/1, a raw NIF, hands beam_mfree
 * a pointer 16 bytes into it through that allocator: a misuse the instance
 * reports. The destructor frees the block. */

static ErlNifResourceType *gmbuffer_type;

static void gmbuffer_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    mbuffer *b = obj;
    beam_mfree(b->allocator, b->data);
}

/* (A type of its own: mbuffers_freed counts mbuffer_new's blocks only.) */
BEAM_NIF(gmbuffer_new, .allocator = process_wide_gpa) {
    return new_mbuffer(env, gmbuffer_type);
}

/* gmbuffer_free_inside(Buffer) -> ok, beam_mfree of a pointer 16 bytes
 * into its block, through its allocator. */
BEAM_NIF(gmbuffer_free_inside) {
    mbuffer *b;
    if (!enif_get_resource(env, argv[0], gmbuffer_type, (void **)&b))
        return enif_make_badarg(env);
    beam_mfree(b->allocator, (char *)b->data + 16);
    return ok(env);
}

/* --- A forged header in a kept block of a fixed buffer -------------------
 * forged_new/0, whose allocator is a fixed buffer kept from call to call,
 * takes a sized block of 64 bytes and writes in it, 16 bytes in, a header
 * word that passes malloc.c's check (its own beam__hdr_word: what
 * garbage there does once in 65536), naming a parent block of 4096 bytes,
 * which the buffer never handed out; forged_size/1, a raw NIF, asks
 * beam_msize of the pointer after that word through the allocator kept
 * with the block: 0, a misuse the buffer's holds check finds. The
 * destructor frees the sized block. */

typedef struct forged {
    beam_allocator_t allocator;
    uint64_t *sized;
} forged;

static ErlNifResourceType *forged_type;
static _Alignas(16) unsigned char kept_bytes[4096];
static beam_fixed_buffer_t kept_buffer; /* started at load */

static beam_allocator_t kept_fixed_buffer(void) {
    return beam_fixed_buffer_allocator(&kept_buffer);
}

static void forged_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    forged *f = obj;
    beam_free_bytes(f->allocator, f->sized, 64, 16);
}

BEAM_NIF(forged_new, .allocator = kept_fixed_buffer) {
    forged *f = enif_alloc_resource(forged_type, sizeof *f);
    if (f == NULL)
        return beam_make_error(env, "enomem");
    f->allocator = beam_allocator;
    f->sized = beam_alloc_bytes(beam_allocator, 64, 16);
    if (f->sized != NULL)
        f->sized[1] = beam__hdr_word(f->sized + 2, 4096, 16);
    ERL_NIF_TERM term = enif_make_resource(env, f);
    enif_release_resource(f);
    return f->sized != NULL ? make_ok(env, term)
                            : beam_make_error(env, "enomem");
}

/* forged_size(Forged) -> beam_msize of the pointer after the forged word. */
BEAM_NIF(forged_size) {
    forged *f;
    if (!enif_get_resource(env, argv[0], forged_type, (void **)&f))
        return enif_make_badarg(env);
    return enif_make_uint64(env, beam_msize(f->allocator, f->sized + 2));
}

/* --- Blocks of a general purpose allocator grown in a fixed buffer's call
 * gbuffer_new/0 (the process-wide general purpose allocator) keeps a sized
 * block and a beam_malloc block, each filled with a pattern, with that
 * allocator; gbuffer_grow/1, whose allocator is a fixed buffer started
 * afresh at each call, grows both through the kept allocator
 * (beam_realloc, beam_mrealloc: the instance moves small blocks), as
 * gbuffer_grow_scratch/1 (a scratch arena's call) and gbuffer_grow_raw/1
 * (a raw one) do; gbuffer_scribble/0, over the same fixed buffer, fills a
 * scratch block of it; gbuffer_free/1 (the instance) checks both patterns and
 * frees the blocks. Without a check the blocks move within the instance: :ok.
 * The destructor frees what gbuffer_free/1 did not. */

#define GBUFFER_SIZED 32
#define GBUFFER_SIZED_GROWN 256
#define GBUFFER_M 40
#define GBUFFER_M_GROWN 300

typedef struct gbuffer {
    beam_allocator_t allocator;
    unsigned char *sized;
    size_t sized_len;
    unsigned char *m;
    size_t m_len;
} gbuffer;

static ErlNifResourceType *gbuffer_type;

static void gbuffer_release(gbuffer *g) {
    beam_free(g->allocator, g->sized, g->sized_len);
    beam_mfree(g->allocator, g->m);
    g->sized = g->m = NULL;
}

static void gbuffer_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    gbuffer_release(obj);
}

static unsigned char gbuffer_byte(size_t i, unsigned salt) {
    return (unsigned char)(i * 7 + salt);
}

static void gbuffer_fill(unsigned char *p, size_t from, size_t to,
                         unsigned salt) {
    for (size_t i = from; i < to; i++)
        p[i] = gbuffer_byte(i, salt);
}

static bool gbuffer_intact(const unsigned char *p, size_t len, unsigned salt) {
    for (size_t i = 0; i < len; i++)
        if (p[i] != gbuffer_byte(i, salt))
            return false;
    return true;
}

BEAM_NIF(gbuffer_new, .allocator = process_wide_gpa) {
    gbuffer *g = enif_alloc_resource(gbuffer_type, sizeof *g);
    if (g == NULL)
        return beam_make_error(env, "enomem");
    *g = (gbuffer){beam_allocator, NULL, GBUFFER_SIZED, NULL, GBUFFER_M};
    g->sized = beam_alloc(beam_allocator, unsigned char, GBUFFER_SIZED);
    g->m = g->sized != NULL ? beam_malloc(beam_allocator, GBUFFER_M) : NULL;
    bool got = g->m != NULL;
    if (got) {
        gbuffer_fill(g->sized, 0, g->sized_len, 1);
        gbuffer_fill(g->m, 0, g->m_len, 5);
    }
    ERL_NIF_TERM term = enif_make_resource(env, g);
    enif_release_resource(g);
    return got ? make_ok(env, term) : beam_make_error(env, "enomem");
}

/* A fixed buffer of its own for gbuffer_grow/1 and gbuffer_scribble/0, started
 * afresh at each call, as a buffer on the call's stack would be (the tests
 * call them from one process). */
static _Alignas(16) unsigned char call_bytes[2048];
static beam_fixed_buffer_t call_buffer;

static beam_allocator_t call_fixed_buffer(void) {
    beam_fixed_buffer_init(&call_buffer, call_bytes, sizeof call_bytes);
    return beam_fixed_buffer_allocator(&call_buffer);
}

static bool get_gbuffer(ErlNifEnv *env, ERL_NIF_TERM term, gbuffer **g) {
    return enif_get_resource(env, term, gbuffer_type, (void **)g) &&
           (*g)->sized != NULL;
}

static ERL_NIF_TERM gbuffer_grow_impl(ErlNifEnv *env,
                                      const ERL_NIF_TERM argv[]) {
    gbuffer *g;
    if (!get_gbuffer(env, argv[0], &g))
        return enif_make_badarg(env);
    unsigned char *s =
        beam_realloc(g->allocator, g->sized, g->sized_len, GBUFFER_SIZED_GROWN);
    if (s == NULL)
        return beam_make_error(env, "enomem");
    g->sized = s;
    gbuffer_fill(s, g->sized_len, GBUFFER_SIZED_GROWN, 1);
    g->sized_len = GBUFFER_SIZED_GROWN;
    unsigned char *m = beam_mrealloc(g->allocator, g->m, GBUFFER_M_GROWN);
    if (m == NULL)
        return beam_make_error(env, "enomem");
    g->m = m;
    gbuffer_fill(m, g->m_len, GBUFFER_M_GROWN, 5);
    g->m_len = GBUFFER_M_GROWN;
    return ok(env);
}

BEAM_NIF(gbuffer_grow, .allocator = call_fixed_buffer) {
    return gbuffer_grow_impl(env, argv);
}

/* The same in a call of a scratch arena, and in a raw one. */
BEAM_NIF(gbuffer_grow_scratch, .scratch = true) {
    return gbuffer_grow_impl(env, argv);
}

BEAM_NIF(gbuffer_grow_raw) {
    return gbuffer_grow_impl(env, argv);
}

/* gbuffer_grow_threaded/1, in a fixed buffer's call, grows the sized block
 * as beam_realloc does, through the kept allocator's vtable (a remap that
 * declines, then alloc, copy and free), and between the remap and the
 * alloc waits for a thread it started that takes, grows (a move of its
 * own meanwhile) and frees a block of the kept allocator (a worker of the
 * NIF's, a destructor on another scheduler). The move is still this thread's:
 * without a check it stays within the instance. */
typedef struct side_work {
    beam_allocator_t allocator;
    bool got;
} side_work;

static void *side_alloc(void *arg) {
    side_work *w = arg;
    unsigned char *p = beam_alloc(w->allocator, unsigned char, 16);
    unsigned char *q =
        p != NULL ? beam_realloc(w->allocator, p, 16, 200) : NULL;
    w->got = q != NULL;
    if (q != NULL)
        beam_free(w->allocator, q, 200);
    else
        beam_free(w->allocator, p, 16);
    return NULL;
}

static bool side_thread(beam_allocator_t a) {
    side_work w = {a, false};
    pthread_t t;
    if (pthread_create(&t, NULL, side_alloc, &w) != 0)
        return false;
    pthread_join(t, NULL);
    return w.got;
}

BEAM_NIF(gbuffer_grow_threaded, .allocator = call_fixed_buffer) {
    gbuffer *g;
    if (!get_gbuffer(env, argv[0], &g))
        return enif_make_badarg(env);
    beam_allocator_t a = g->allocator;
    uintptr_t ret = (uintptr_t)__builtin_return_address(0);
    unsigned char *s = a.vtable->remap(a.ctx, g->sized, g->sized_len, 1,
                                       GBUFFER_SIZED_GROWN, ret);
    if (s == NULL) {
        if (!side_thread(a))
            return beam_make_error(env, "enomem");
        s = a.vtable->alloc(a.ctx, GBUFFER_SIZED_GROWN, 1, ret);
        if (s == NULL)
            return beam_make_error(env, "enomem");
        memcpy(s, g->sized, g->sized_len);
        a.vtable->free(a.ctx, g->sized, g->sized_len, 1, ret);
    }
    g->sized = s;
    gbuffer_fill(s, g->sized_len, GBUFFER_SIZED_GROWN, 1);
    g->sized_len = GBUFFER_SIZED_GROWN;
    return ok(env);
}

/* gbuffer_scribble(Buffer) -> :ok: fills a scratch block of the fixed
 * buffer, which the blocks must not lie in. */
BEAM_NIF(gbuffer_scribble, .allocator = call_fixed_buffer) {
    unsigned char *scratch = beam_alloc(beam_allocator, unsigned char, 1024);
    if (scratch == NULL)
        return beam_make_error(env, "enomem");
    memset(scratch, 0xAA, 1024);
    beam_free(beam_allocator, scratch, 1024);
    return ok(env);
}

/* gbuffer_free(Buffer) -> :ok, or :corrupt when a pattern changed; frees
 * the blocks (in a call of the blocks' own allocator: kbuffer_free/1 is
 * the one that frees through a kept allocator in a call of another). */
BEAM_NIF(gbuffer_free, .allocator = process_wide_gpa) {
    gbuffer *g;
    if (!get_gbuffer(env, argv[0], &g))
        return enif_make_badarg(env);
    bool intact = gbuffer_intact(g->sized, g->sized_len, 1) &&
                  gbuffer_intact(g->m, g->m_len, 5);
    gbuffer_release(g);
    return enif_make_atom(env, intact ? "ok" : "corrupt");
}

/* --- A raw block kept with its allocator, used in calls of another ------
 * kbuffer_new/0 (raw) keeps a sized block with the allocator it came from;
 * kbuffer_free/1 (the process-wide general purpose allocator) frees it
 * through that kept allocator: correct, without a report.
 * kbuffer_grow_wrong/1 (the same) grows it through its own call's
 * allocator instead, which does not own it: a misuse (the instance refuses
 * the remap and reports it: {:error, :enomem}); a grown block would belong
 * to the call's allocator, kept instead. The destructor frees what is left
 * through the kept allocator. */

#define KBUFFER_LEN 32
#define KBUFFER_GROWN 256

typedef struct kbuffer {
    beam_allocator_t allocator;
    void *block; /* NULL: freed */
    size_t len;
} kbuffer;

static ErlNifResourceType *kbuffer_type;

static void kbuffer_dtor(ErlNifEnv *env, void *obj) {
    (void)env;
    kbuffer *k = obj;
    beam_free_bytes(k->allocator, k->block, k->len, 1);
}

static ERL_NIF_TERM kbuffer_new_impl(ErlNifEnv *env) {
    kbuffer *k = enif_alloc_resource(kbuffer_type, sizeof *k);
    if (k == NULL)
        return beam_make_error(env, "enomem");
    *k = (kbuffer){beam_allocator, NULL, KBUFFER_LEN};
    k->block = beam_alloc_bytes(beam_allocator, KBUFFER_LEN, 1);
    ERL_NIF_TERM term = enif_make_resource(env, k);
    enif_release_resource(k);
    return k->block != NULL ? make_ok(env, term)
                            : beam_make_error(env, "enomem");
}

BEAM_NIF(kbuffer_new) {
    return kbuffer_new_impl(env);
}

static bool get_kbuffer(ErlNifEnv *env, ERL_NIF_TERM term, kbuffer **k) {
    return enif_get_resource(env, term, kbuffer_type, (void **)k) &&
           (*k)->block != NULL;
}

BEAM_NIF(kbuffer_free, .allocator = process_wide_gpa) {
    kbuffer *k;
    if (!get_kbuffer(env, argv[0], &k))
        return enif_make_badarg(env);
    beam_free_bytes(k->allocator, k->block, k->len, 1);
    k->block = NULL;
    return ok(env);
}

BEAM_NIF(kbuffer_grow_wrong, .allocator = process_wide_gpa) {
    kbuffer *k;
    if (!get_kbuffer(env, argv[0], &k))
        return enif_make_badarg(env);
    void *p =
        beam_realloc_bytes(beam_allocator, k->block, k->len, 1, KBUFFER_GROWN);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    *k = (kbuffer){beam_allocator, p, KBUFFER_GROWN};
    return ok(env);
}

/* kbuffer_leaky_scratch/1, a scratch arena's call, takes a block through
 * the kept (raw) allocator, then one of the arena; when the second fails it
 * returns without freeing the first (the bug the check must catch: the
 * kept allocator's block outlives the arena). kbuffer_renew_checked/1, a
 * leak_check call, replaces the kept block by a new one of the kept
 * allocator; kbuffer_grow_kept/1 (the process-wide general purpose
 * allocator) then grows it through the kept allocator, as it must. */
BEAM_NIF(kbuffer_leaky_scratch, .scratch = true) {
    kbuffer *k;
    if (!get_kbuffer(env, argv[0], &k))
        return enif_make_badarg(env);
    void *a = beam_alloc_bytes(k->allocator, 16, 1);
    if (a == NULL)
        return beam_make_error(env, "enomem");
    if (beam_alloc_bytes(beam_allocator, 16, 1) == NULL)
        return beam_make_error(env, "enomem"); /* the bug: a is lost */
    beam_free_bytes(k->allocator, a, 16, 1);
    return ok(env);
}

BEAM_NIF(kbuffer_renew_checked, .leak_check = true) {
    kbuffer *k;
    if (!get_kbuffer(env, argv[0], &k))
        return enif_make_badarg(env);
    void *p = beam_alloc_bytes(k->allocator, KBUFFER_LEN, 1);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(k->allocator, k->block, k->len, 1);
    k->block = p;
    k->len = KBUFFER_LEN;
    return ok(env);
}

BEAM_NIF(kbuffer_grow_kept, .allocator = process_wide_gpa) {
    kbuffer *k;
    if (!get_kbuffer(env, argv[0], &k))
        return enif_make_badarg(env);
    void *p =
        beam_realloc_bytes(k->allocator, k->block, k->len, 1, KBUFFER_GROWN);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    k->block = p;
    k->len = KBUFFER_GROWN;
    return ok(env);
}

/* kbuffer_new_fixed/0 is kbuffer_new/0 with a lasting fixed buffer (the
 * one forged_new/0 uses) as its allocator: a custom allocator kept, to
 * be freed by kbuffer_free/1 through it. */
BEAM_NIF(kbuffer_new_fixed, .allocator = kept_fixed_buffer) {
    return kbuffer_new_impl(env);
}

/* --- Calls whose allocator is a new one each time ----------------------
 * rotating_work/0's allocator is the next of ROTATING fixed buffers, more
 * than a check gives plans of their own (MAX_PLANS, 16, in the driver):
 * past them the calls share one. Takes and frees one block. (The tests
 * call it from one process.) */
#define ROTATING 20
static _Alignas(16) unsigned char rotating_bytes[ROTATING][64];
static beam_fixed_buffer_t rotating_buffers[ROTATING];
static unsigned rotating_next;

static beam_allocator_t rotating_buffer(void) {
    unsigned i = rotating_next++ % ROTATING;
    beam_fixed_buffer_init(&rotating_buffers[i], rotating_bytes[i],
                           sizeof rotating_bytes[i]);
    return beam_fixed_buffer_allocator(&rotating_buffers[i]);
}

BEAM_NIF(rotating_work, .allocator = rotating_buffer) {
    void *p = beam_alloc_bytes(beam_allocator, 32, 8);
    if (p == NULL)
        return beam_make_error(env, "enomem");
    beam_free_bytes(beam_allocator, p, 32, 8);
    return ok(env);
}

/* Whether beam_allocator is the plain raw allocator (false while this
 * process runs a check: then it is the checker's). */
BEAM_NIF(allocator_is_raw) {
    return make_bool(env, same_allocator(beam_allocator, beam_raw_allocator));
}

/* A fixed buffer right after an unmapped page, as the .allocator of
 * sized_at_guarded_start: its first block starts the mapping's readable
 * part, so the word before it is unmapped. One page, made at load; every
 * call starts the buffer afresh (the tests call it from one process). */
static unsigned char *guarded_page;
static beam_fixed_buffer_t guarded_buffer;

static beam_allocator_t guarded_fixed_buffer(void) {
    beam_fixed_buffer_init(&guarded_buffer, guarded_page, 4096);
    return beam_fixed_buffer_allocator(&guarded_buffer);
}

static bool map_guarded_page(void) {
    unsigned char *map = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED || mprotect(map, 4096, PROT_NONE) != 0)
        return false;
    guarded_page = map + 4096;
    return true;
}

/* sized_at_guarded_start() -> {Msize, Realloc}: a sized block at the start
 * of that buffer, asked for with the malloc-style calls (a misuse they
 * report: 0 and NULL, nothing read outside the buffer); {:error, :enomem}
 * when the
 * block is not given. Under a check, beam_allocator is the check's plan
 * allocator over the buffer. */
BEAM_NIF(sized_at_guarded_start, .allocator = guarded_fixed_buffer) {
    void *sized = beam_alloc_bytes(beam_allocator, 32, 16);
    if (sized == NULL)
        return beam_make_error(env, "enomem");
    size_t msize = beam_msize(beam_allocator, sized);
    void *moved = beam_mrealloc(beam_allocator, sized, 64);
    beam_free_bytes(beam_allocator, sized, 32, 16);
    return enif_make_tuple2(env, enif_make_uint64(env, msize),
                            make_bool(env, moved != NULL));
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)priv;
    (void)info;
    buffer_type = enif_open_resource_type(env, NULL, "buffer", buffer_dtor,
                                          ERL_NIF_RT_CREATE, NULL);
    mbuffer_type = enif_open_resource_type(env, NULL, "mbuffer", mbuffer_dtor,
                                           ERL_NIF_RT_CREATE, NULL);
    forged_type = enif_open_resource_type(env, NULL, "forged", forged_dtor,
                                          ERL_NIF_RT_CREATE, NULL);
    gmbuffer_type = enif_open_resource_type(
        env, NULL, "gmbuffer", gmbuffer_dtor, ERL_NIF_RT_CREATE, NULL);
    gbuffer_type = enif_open_resource_type(env, NULL, "gbuffer", gbuffer_dtor,
                                           ERL_NIF_RT_CREATE, NULL);
    kbuffer_type = enif_open_resource_type(env, NULL, "kbuffer", kbuffer_dtor,
                                           ERL_NIF_RT_CREATE, NULL);
    beam_fixed_buffer_init(&kept_buffer, kept_bytes, sizeof kept_bytes);
    return buffer_type == NULL || kbuffer_type == NULL ||
           mbuffer_type == NULL || forged_type == NULL ||
           gmbuffer_type == NULL || gbuffer_type == NULL ||
           !map_guarded_page() || capture_reports();
}

static ErlNifFunc funcs[] = {
    {"correct", 1, correct, 0},
    {"correct_dirty", 1, correct_dirty, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"correct_raising", 0, correct_raising, 0},
    {"many", 1, many, 0},
    {"leaky_on_failure", 0, leaky_on_failure, 0},
    {"leak_all_on_failure", 1, leak_all_on_failure, 0},
    {"swallows", 0, swallows, 0},
    {"nondeterministic", 0, nondeterministic, 0},
    {"reset_nondeterministic", 0, reset_nondeterministic, 0},
    {"grow", 0, grow, 0},
    {"grow_gpa", 0, grow_gpa, 0},
    {"reshape_leaky", 0, reshape_leaky, 0},
    {"reshape_leaky_gpa", 0, reshape_leaky_gpa, 0},
    {"leave_behind", 0, leave_behind, 0},
    {"keep_then_shrink", 0, keep_then_shrink, 0},
    {"keep_then_shrink_gpa", 0, keep_then_shrink_gpa, 0},
    {"grow_left_behind", 0, grow_left_behind, 0},
    {"free_in_next_call", 0, free_in_next_call, 0},
    {"scratch_work", 0, scratch_work, 0},
    {"checked_leaky", 0, checked_leaky, 0},
    {"buffer_new", 0, buffer_new, 0},
    {"buffer_grow", 1, buffer_grow, 0},
    {"buffers_freed", 0, buffers_freed_nif, 0},
    {"mbuffer_new", 0, mbuffer_new, 0},
    {"mbuffer_size", 1, mbuffer_size, 0},
    {"mbuffers_freed", 0, mbuffers_freed_nif, 0},
    {"gmbuffer_new", 0, gmbuffer_new, 0},
    {"gmbuffer_free_inside", 1, gmbuffer_free_inside, 0},
    {"gbuffer_new", 0, gbuffer_new, 0},
    {"gbuffer_grow", 1, gbuffer_grow, 0},
    {"gbuffer_grow_scratch", 1, gbuffer_grow_scratch, 0},
    {"gbuffer_grow_raw", 1, gbuffer_grow_raw, 0},
    {"gbuffer_grow_threaded", 1, gbuffer_grow_threaded, 0},
    {"gbuffer_scribble", 0, gbuffer_scribble, 0},
    {"gbuffer_free", 1, gbuffer_free, 0},
    {"kbuffer_new", 0, kbuffer_new, 0},
    {"kbuffer_free", 1, kbuffer_free, 0},
    {"kbuffer_grow_wrong", 1, kbuffer_grow_wrong, 0},
    {"kbuffer_leaky_scratch", 1, kbuffer_leaky_scratch, 0},
    {"kbuffer_renew_checked", 1, kbuffer_renew_checked, 0},
    {"kbuffer_grow_kept", 1, kbuffer_grow_kept, 0},
    {"kbuffer_new_fixed", 0, kbuffer_new_fixed, 0},
    {"rotating_work", 0, rotating_work, 0},
    {"forged_new", 0, forged_new, 0},
    {"forged_size", 1, forged_size, 0},
    {"allocator_is_raw", 0, allocator_is_raw, 0},
    {"take_reports", 0, take_reports, 0},
    {"sized_at_guarded_start", 0, sized_at_guarded_start, 0},
    {"uses_null", 1, uses_null, 0},
    {"exits_on_null", 0, exits_on_null, 0},
    {"uses_null", 2, uses_null, 0},
    {"uses_null_via", 1, uses_null_via, 0},
    {"uses_null_dirty", 1, uses_null, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"hops_to_null", 1, hops_to_null, 0},
    {"hops_to_null_dirty", 1, hops_to_null, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"uses_null_in_thread", 0, uses_null_in_thread, 0},
    {"uses_null_in_callback", 0, uses_null_in_callback, 0},
    {"uses_null_in_body", 0, uses_null_in_body, 0},
    {"uses null", 1, uses_null_quoted, 0},
    {long_name, 1, uses_null_long_name, 0},
    {escapes_name, 1, uses_null_escapes_name, 0},
    {"aborts", 0, aborts, 0},
    {"divides", 1, divides, 0},
    {"sends_itself", 1, sends_itself, 0},
    {"install_reporter", 0, install_reporter, 0},
    {"swap_segv", 0, swap_segv, 0},
    {"restore_segv", 0, restore_segv, 0},
    {"chain_segv", 0, chain_segv, 0},
};

BEAM_NIF_INIT(Elixir.BeamAlloc.Test.Faults, funcs, load, NULL, NULL)
