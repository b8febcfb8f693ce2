/*
 * What a crash during a check says (crash_note.c): the fault-injection
 * driver's calls into its fatal-signal handler (and its exit handler).
 * Everything the handlers write is made by these calls, outside them.
 *
 * A slot is an int, -1 for none (every slot was taken: the session's crash
 * then says nothing); each call takes -1 and does nothing. Calls of
 * crash_note_open and crash_note_close are serialised by the caller; the
 * other calls about a slot by the lock of the session that has it.
 */
#ifndef BEAM_ALLOC_CRASH_NOTE_H
#define BEAM_ALLOC_CRASH_NOTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A session opens: a slot for its runs (or -1), and the handler in for
 * the first open session. caller (len bytes, no NUL needed; cut where
 * longer than the slot's room) says the code that called the check, as
 * its language writes it: a crash names it, the NIF alone not saying
 * which of many tests crashed. */
int crash_note_open(const char *caller, size_t len);

/* The session of slot closes: the slot given back, and the handler out
 * with the last open session (where it is still on top). */
void crash_note_close(int slot);

/* A run begins; fails: it fails request fail_index and every later one. */
void crash_note_run_begins(int slot, bool fails, size_t fail_index);

/* The run made a request on this thread (the handler names only the run
 * of the crashing thread's latest request). */
void crash_note_request(int slot);

/* The room (bytes, with the NUL) for the words that name the call in a
 * failed request's note (crash_note_failure's nif): 320 for M.f/arity, as
 * the note held before it had the words, and "the NIF call " with its
 * backquotes (15), rounded up to a multiple of 32. A longer call is cut by its
 * writer, glue.c's beam__nif_call_text, between two characters or escapes and
 * keeping its closing backquote. Nothing is shared with that writer but this
 * size, given at each call: it runs in the NIF's own copy of the library (the
 * call_name hook), of whatever version, which a constant of this build would
 * not reach. */
#define CRASH_NOTE_CALL 352

/* The run's failed request, as the crash names it. */
typedef struct crash_note_failure {
    size_t index;     /* its number in the run */
    const char *kind; /* "alloc", "resize" or "remap" */
    size_t len;       /* bytes asked for */
    const char *site; /* as described (lib.so+0x..) */
    const char *nif;  /* the call, "the NIF call `M.f/1`", "" when not known */
    bool off_call;    /* made on a thread other than the call's */
    /* Its return address, then its callers' (innermost first): for
     * addr2line, which follows them while they are in the same object, up
     * to the author's code (a request made in std::vector's code). */
    const uintptr_t *frames;
    size_t nframes; /* 1 at least */
} crash_note_failure;

void crash_note_request_failed(int slot, const crash_note_failure *f);

/* A NIF call of the session begins (in) or its last nested one returns:
 * an exit() is noted only during one, the VM's own halt being no NIF's. */
void crash_note_call(int slot, bool in);

/* The run ended: nothing to say until the next begins. */
void crash_note_run_ends(int slot);

#endif
