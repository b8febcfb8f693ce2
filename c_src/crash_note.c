/*
 * What a crash during a check says: the fatal-signal handler of the
 * fault-injection driver (beam_alloc_testing.c), a file of its own because
 * it runs in a signal handler of a dying VM, under rules nothing else in
 * the driver has (and its exit handler: a library that ends the process
 * with exit() on a failed allocation raises no signal). The driver only
 * calls the interface of crash_note.h:
 * take a slot when a session opens, say when a run begins and ends, which
 * request was failed, and give the slot back when the session closes.
 *
 * A NIF that does not handle a failed allocation most often dereferences
 * the NULL: the VM dies by a signal, and all the user saw was
 * "Segmentation fault" with nothing saying which allocation the check was
 * failing. So while a session is open, fatal signals first write (write(2)
 * of text made beforehand: nothing else is safe in a handler) what each
 * running session's run is doing, then take their course as before (the
 * previous action, restored or called: exit status, core dump and any
 * handler of the VM's or another library's unchanged).
 *
 * Each open session has a slot (CRASH_SLOTS at most; a session past them
 * has none, and its crash says nothing), which keeps the code that called
 * the check, given at open, for the note's last line. Its runs write it:
 * crash_note_run_begins says which run it is, and crash_note_request_failed
 * makes the text name the request failed (its number, size, site, the NIF
 * function of the call and how to get the source line).
 * crash_note_run_ends empties it. The handler writes every slot that is
 * not empty. A writer empties the state before writing the text and sets
 * it after: a handler on another thread meanwhile skips the slot.
 *
 * The site stays lib.so+0x.. in the text: a source line takes the
 * symbolizer's dirty NIF calls, which a check makes only for a problem it
 * reports (each one a wait for a scheduler on a busy VM: passing checks
 * took seconds), and a run cannot know beforehand that it will crash. So
 * the handler runs addr2line for the line (see crash_symbolize), with
 * everything it needs made ready before: its path found in PATH when the
 * session opens (LLVM's where there is one: find_symbolizer), its
 * arguments when the request is failed. Without addr2line the text says
 * the command that gives the line.
 *
 * A request of a C++ NIF is most often made in the standard library's code
 * instantiated in the NIF (std::vector's _M_realloc_insert): its return
 * address names alloc_traits.h and vector.tcc, not the author's line. So
 * addr2line is given the request's callers in the same object too, and the
 * text follows them up to the first in the author's code (authors_frame,
 * as beam_alloc_symbolizer's): a C request's first frame is
 * the author's, and its text is that frame's alone, as it always was. The
 * command given without addr2line stays the first frame's.
 *
 * The rules here:
 *
 *   - Async-signal-safety: crash_handler and everything it calls use only
 *     async-signal-safe functions (the one exception, pthread_self, is
 *     argued at crash_this_thread; fork is _Fork or the system call, which
 *     run no atfork handlers: fork_in_handler): no lock, no allocation, no
 *     stdio, no dl* call. Every text, path and argv it needs is made
 *     beforehand by the calls of crash_note.h, outside the handler.
 *   - Chaining: the signals then take their course as before: the previous
 *     action is called or restored (crash_chain), and our handler never
 *     chains back to itself nor goes in again over a handler another
 *     library put over it (crash_install).
 *   - Opens and closes (crash_note_open, crash_note_close) are serialised
 *     by the caller (the driver's registry_lock); the calls about one
 *     slot's runs by its session's lock.
 */
#define _GNU_SOURCE
#include "crash_note.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CRASH_SLOTS 32
#define CRASH_TEXT 2048
#define CRASH_PATH 1024
#define CRASH_CALLER 512
/* Frames given to addr2line at most: the driver's OWN_FRAMES. */
#define CRASH_FRAMES 8

enum crash_state { CRASH_IDLE, CRASH_RUNNING, CRASH_FAILED };

typedef struct crash_slot {
    atomic_bool taken;
    atomic_int state;
    /* The text, len bytes; a failed request's in two parts, split where
     * the handler puts how it failed (failure_words). */
    size_t len, split;
    char text[CRASH_TEXT];
    /* The failed request's source line: the absolute path of
     * find_symbolizer's addr2line ("": none in PATH at open), the library and
     * the offsets in it of the call and its callers there (lib "": not known),
     * argv for execve (-a: each frame's answer after its address) and the
     * command said without addr2line (the call's alone). */
    char tool[CRASH_PATH];
    char lib[CRASH_PATH];
    char offset[CRASH_FRAMES][2 + 16 + 1];
    char *argv[8 + CRASH_FRAMES];
    char *command[8];
    /* The thread of the run's latest request, and when it came (on
     * crash_clock; 0: none yet): see crash_handler. */
    pthread_t thread;
    atomic_ulong stamp;
    /* A NIF call of the session is under way (crash_note_call): an exit
     * outside one is no NIF's (see crash_at_exit). */
    atomic_bool in_call;
    /* The code that called the check ("": not known), set at open. */
    char caller[CRASH_CALLER];
} crash_slot;

static atomic_ulong crash_clock;

static crash_slot crash_slots[CRASH_SLOTS];

static const int crash_signals[] = {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE};
#define CRASH_SIGNALS (sizeof crash_signals / sizeof crash_signals[0])
static struct sigaction crash_previous[CRASH_SIGNALS];
static unsigned crash_installs; /* open sessions */
/* Ours was not on top at the last close: see crash_install. */
static bool crash_left_in[CRASH_SIGNALS];

static const char *signal_name(int sig) {
    switch (sig) {
    case SIGSEGV:
        return "SIGSEGV";
    case SIGBUS:
        return "SIGBUS";
    case SIGABRT:
        return "SIGABRT";
    case SIGILL:
        return "SIGILL";
    default:
        return "SIGFPE";
    }
}

static void write_all(const char *text, size_t len) {
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, text, len);
        if (w <= 0)
            return;
        text += w;
        len -= (size_t)w;
    }
}

static void write_text(const char *text) {
    write_all(text, strlen(text));
}

/* The default action for sig (sigaction is async-signal-safe). */
static void signal_default(int sig) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigaction(sig, &dfl, NULL);
}

/* A child process from a signal handler: _Fork runs no atfork handlers
 * (fork's may take locks the crashing thread holds) and is
 * async-signal-safe; where it is missing, the system call itself. */
static pid_t fork_in_handler(void) {
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
    return _Fork();
#elif defined(__linux__) && defined(SYS_fork)
    return (pid_t)syscall(SYS_fork);
#elif defined(__linux__)
    return (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
#else
    return fork();
#endif
}

/* How long addr2line may take before it is killed: a dying VM must not
 * hang on it. */
#define SYMBOLIZER_MS 10000

/* The child: addr2line with its output into out, in a process group of
 * its own (killed whole at the deadline: an alarm ended only the program
 * run, and a wrapper script's child kept the pipe open, the dying VM
 * waiting on it). Its signals as a new program's would be (the handler's
 * thread may block some; an ignored SIGALRM would keep the alarm, there
 * for a VM gone before the deadline, from ending it). Exits 127 when addr2line
 * cannot be run. */
static _Noreturn void symbolizer_child(const crash_slot *c, int out) {
    setpgid(0, 0);
    signal_default(SIGALRM);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(out, STDOUT_FILENO) == STDOUT_FILENO) {
        alarm(SYMBOLIZER_MS / 1000); /* when the VM is gone before that */
        execve(c->tool, c->argv, environ);
    }
    _exit(127);
}

/* Milliseconds left until SYMBOLIZER_MS after start (clock_gettime and
 * poll are async-signal-safe). */
static int ms_left(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (now.tv_sec - start->tv_sec) * 1000 +
              (now.tv_nsec - start->tv_nsec) / 1000000;
    return ms >= SYMBOLIZER_MS ? 0 : (int)(SYMBOLIZER_MS - ms);
}

/* Reads fd to its end into out (n bytes at most, the rest read and
 * dropped), or until the deadline, which kills process group group: how
 * many bytes were kept. */
static size_t read_to_end(int fd, pid_t group, char *out, size_t n) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    size_t len = 0;
    char drop[256];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int left = ms_left(&start), ready = left > 0 ? poll(&p, 1, left) : 0;
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready == 0) {
            kill(-group, SIGKILL);
            return len;
        }
        char *to = len < n ? out + len : drop;
        ssize_t r = read(fd, to, len < n ? n - len : sizeof drop);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return len;
        if (to != drop)
            len += (size_t)r;
    }
}

/* Runs c's addr2line, its output into out (n bytes at most): how many
 * bytes it wrote; 0 when it could not run. The output tells, not the exit
 * status: the VM ignores SIGCHLD, so waitpid, which still waits for the
 * child to end, finds it reaped already (ECHILD) and has no status. */
static size_t run_symbolizer(const crash_slot *c, char *out, size_t n) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return 0;
    pid_t pid = fork_in_handler();
    if (pid == 0)
        symbolizer_child(c, fds[1]);
    close(fds[1]);
    if (pid > 0)
        setpgid(pid, pid); /* (whichever of the two comes first) */
    size_t len = pid > 0 ? read_to_end(fds[0], pid, out, n) : 0;
    close(fds[0]);
    while (pid > 0 && waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return len;
}

/* The next line of text (ended by '\n', made a string), or NULL. */
static char *next_line(char **at) {
    char *line = *at, *end = strchr(line, '\n');
    if (end == NULL)
        return NULL;
    *end = '\0';
    *at = end + 1;
    return line;
}

static bool starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* addr2line -a's answer split in place, per address: frame i's lines are
 * line[at[i]] up to line[at[i + 1]], pairs of a function and its
 * file:line, the first the call's, each next one the function it is
 * inlined into and where. A line cut short at the buffer's end is
 * dropped. */
#define CRASH_LINES 256
typedef struct crash_answer {
    char *line[CRASH_LINES];
    size_t at[CRASH_FRAMES + 1];
    size_t frames;
} crash_answer;

/* Is line, the answer's lines-th (its frames so far in a), an address: 0x
 * where a function could begin. A file:line may begin with 0x too (a
 * build's -ffile-prefix-map, its sources in a folder 0x...); a function
 * name cannot. */
static bool answer_address(const crash_answer *a, size_t lines,
                           const char *line) {
    return starts_with(line, "0x") &&
           (a->frames == 0 || (lines - a->at[a->frames - 1]) % 2 == 0);
}

static void split_answer(char *text, crash_answer *a) {
    size_t lines = 0;
    a->frames = 0;
    char *at = text, *line;
    while (lines < CRASH_LINES && (line = next_line(&at)) != NULL) {
        if (!answer_address(a, lines, line)) {
            if (a->frames > 0)
                a->line[lines++] = line;
        } else if (a->frames < CRASH_FRAMES) {
            a->at[a->frames++] = lines;
        } else {
            break;
        }
    }
    a->at[a->frames] = lines;
}

/* Frame i's function and file:line pairs. */
static size_t answer_levels(const crash_answer *a, size_t i) {
    return (a->at[i + 1] - a->at[i]) / 2;
}

/* /usr/lib/ or /usr/lib64/, then gcc/, clang/ or llvm.../: the compiler's
 * headers. */
static bool compilers_folder(const char *file) {
    const char *rest = starts_with(file, "/usr/lib/")     ? file + 9
                       : starts_with(file, "/usr/lib64/") ? file + 11
                                                          : NULL;
    if (rest == NULL)
        return false;
    return starts_with(rest, "gcc/") || starts_with(rest, "clang/") ||
           (starts_with(rest, "llvm") && strchr(rest, '/') != NULL);
}

/* beam_alloc's own headers, by the name of file (which ends at end). */
static bool beam_alloc_header(const char *file, const char *end) {
    const char *base = file;
    for (const char *p = file; p < end; p++)
        if (*p == '/')
            base = p + 1;
    size_t n = (size_t)(end - base);
    static const char *const names[] = {"beam_alloc.h", "beam_alloc.hpp",
                                        "beam_alloc_nif.h",
                                        "beam_alloc_nif.hpp"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (n == strlen(names[i]) && strncmp(base, names[i], n) == 0)
            return true;
    return strstr(file, "include/beam_alloc/") != NULL;
}

/* A header the author did not write, where is "file:line" (as
 * beam_alloc_symbolizer's library_header). */
static bool library_header(const char *where) {
    const char *end = strrchr(where, ':');
    return starts_with(where, "/usr/include/") ||
           starts_with(where, "/usr/local/include/") ||
           compilers_folder(where) || strstr(where, "/include/c++/") != NULL ||
           beam_alloc_header(where, end != NULL ? end : where + strlen(where));
}

/* Does where ("file:line") name a line. Where it does not, each tool
 * says so its own way: "??:0" or "??:?" without a file, and, for code
 * built without -g, its file from the symbol table with no line, binutils'
 * "c.c:?" and LLVM's "c.c:0". */
static bool has_line(const char *where) {
    const char *colon = strrchr(where, ':');
    return !starts_with(where, "??") && colon != NULL && colon[1] >= '1' &&
           colon[1] <= '9';
}

/* Does the level fn at where hold the author's code (as
 * beam_alloc_symbolizer's authors_frame): by its file where it has a line,
 * else by its function (not the standard library's namespaces). */
static bool authors_level(const char *fn, const char *where) {
    if (has_line(where))
        return !library_header(where);
    return strcmp(fn, "??") != 0 && !starts_with(fn, "std::") &&
           !starts_with(fn, "__gnu_cxx::") && !starts_with(fn, "__cxxabiv1::");
}

/* fn past the namespaces that qualify it ("(anonymous namespace)::",
 * "ns::"): a BEAM_NIF written in a namespace is X there too. */
static const char *unqualified(const char *fn) {
    static const char anonymous[] = "(anonymous namespace)::";
    for (;;) {
        size_t k = starts_with(fn, anonymous) ? sizeof anonymous - 3
                                              : strcspn(fn, ":(<> ");
        if (fn[k] != ':' || fn[k + 1] != ':')
            return fn;
        fn += k + 2;
    }
}

/* BEAM_NIF(X) makes X's body beam_nif_body_X and, in C++, a guard
 * beam_nif_guard_X around it: the names of X's code in addr2line's answer
 * (the guard's with its parameters, -C; in a namespace, qualified), where
 * reports say X (beam_alloc_symbolizer's function/1). Where X starts in
 * fn, or NULL for a name of no BEAM_NIF. */
static const char guard_prefix[] = "beam_nif_guard_";

static const char *made_by_beam_nif(const char *fn) {
    static const char *const made[] = {"beam_nif_body_", guard_prefix};
    const char *name = unqualified(fn);
    for (size_t i = 0; i < sizeof made / sizeof made[0]; i++)
        if (starts_with(name, made[i]))
            return name + strlen(made[i]);
    return NULL;
}

/* The first frame with a level of the author's code, or with the BEAM_NIF's
 * body or guard (the NIF's own frame: past it are beam_alloc's glue and
 * the VM), or the last frame when none has one (all are said). A level of
 * the author's can be missing where the NIF's frame is: binutils'
 * addr2line 2.40 gives clang's DWARF 5 without the functions inlined at a
 * call, only the body's at the header's line; the walk went on to the
 * glue's call_composed then. */
static size_t authors_frame(const crash_answer *a) {
    for (size_t i = 0; i < a->frames; i++)
        for (size_t j = a->at[i]; j + 1 < a->at[i + 1]; j += 2)
            if (authors_level(a->line[j], a->line[j + 1]) ||
                made_by_beam_nif(a->line[j]) != NULL)
                return i;
    return a->frames - 1;
}

/* The length of X in name, the rest of a BEAM_NIF function's name: X
 * alone, or with its parameters; 0 when a name follows them: a lambda or
 * a local class of the body ("X(...)::{lambda(int)#1}::operator()(int)
 * const") is not X. */
static size_t nif_name_length(const char *name) {
    size_t n = strcspn(name, "(");
    if (name[n] == '\0')
        return n;
    const char *close = strchr(name + n, ')'); /* (no parentheses inside) */
    return close != NULL && close[1] == '\0' ? n : 0;
}

/* The length of fn without the suffix of a copy the compiler made of the
 * function (gcc's .isra.0, .constprop.0, .part.0): a function that is not
 * inlined is named by its symbol, the copy's, binutils' addr2line writing
 * it "f(int) [clone .isra.0]", LLVM's "f(int) (.isra.0)" and, for C, where
 * the symbol does not demangle, "f.isra.0" (a C name has no '.'). Cut, as
 * the reports (DWARF's names) say f: the note said "made in
 * uses_null.constprop.0.isra.0" where LLVM's ran. */
static size_t without_copy_suffix(const char *fn) {
    const char *binutils = strstr(fn, " [clone .");
    if (binutils != NULL)
        return (size_t)(binutils - fn);
    size_t len = strlen(fn);
    const char *open = strrchr(fn, '(');
    if (open == NULL)
        return strcspn(fn, ".");
    if (open > fn && open[-1] == ' ' && open[1] == '.' && fn[len - 1] == ')')
        return (size_t)(open - 1 - fn);
    return len;
}

/* The length of where ("file:line") without the discriminator binutils'
 * addr2line writes after a line that has one ("c.c:5 (discriminator 1)",
 * gcc 14's DWARF): the reports say the line alone, and so does the note
 * (it said "at cxx_nif.cpp:184 (discriminator 1)" on Debian 13). */
static size_t without_discriminator(const char *where) {
    const char *d = strstr(where, " (discriminator ");
    return d != NULL ? (size_t)(d - where) : strlen(where);
}

/* Writes fn as its author named it. */
static void write_function(const char *fn) {
    const char *x = made_by_beam_nif(fn);
    size_t n = x != NULL ? nif_name_length(x) : 0;
    if (n == 0)
        write_text(fn);
    else
        write_all(x, n);
}

/* A level the body was inlined into: the guard, at the BEAM_NIF line. */
static bool guard_level(const crash_answer *a, size_t i, size_t j) {
    return j > a->at[i] && starts_with(unqualified(a->line[j]), guard_prefix);
}

/* Says frame i's levels; the first call's begins the text. */
static void say_frame(const crash_answer *a, size_t i) {
    for (size_t j = a->at[i]; j + 1 < a->at[i + 1]; j += 2) {
        if (guard_level(a, i, j))
            continue;
        write_text(j == 0          ? "beam_alloc: that request was made in "
                   : j == a->at[i] ? "beam_alloc:   called from "
                                   : "beam_alloc:   inlined into ");
        write_function(a->line[j]);
        write_text(" at ");
        write_text(a->line[j + 1]);
        write_text("\n");
    }
}

/* Says what addr2line -a -f -i wrote, frames up to the author's (see
 * crash_answer); false when it knew no line for the call (a library
 * without debug information: the note said "made in f at c.c:?", which
 * only looks like a line, where the command gives one once built with
 * -g). */
static bool say_source_line(char *text) {
    static crash_answer a; /* (its user holds symbolizing) */
    split_answer(text, &a);
    for (size_t i = 0; i < a.frames; i++) /* (each level's two lines) */
        for (size_t j = a.at[i]; j + 1 < a.at[i + 1]; j += 2) {
            a.line[j][without_copy_suffix(a.line[j])] = '\0';
            a.line[j + 1][without_discriminator(a.line[j + 1])] = '\0';
        }
    if (a.frames == 0 || answer_levels(&a, 0) == 0 || !has_line(a.line[1]))
        return false;
    for (size_t i = 0, last = authors_frame(&a); i <= last; i++)
        say_frame(&a, i);
    return true;
}

/* One handler at a time has the output buffer (static: the handler may be
 * on a small alternate stack); another one's crash says the command. */
static atomic_flag symbolizing = ATOMIC_FLAG_INIT;
static char symbolized[16384];

static bool crash_symbolize(const crash_slot *c) {
    if (c->tool[0] == '\0' || atomic_flag_test_and_set(&symbolizing))
        return false;
    size_t n = run_symbolizer(c, symbolized, sizeof symbolized - 1);
    symbolized[n] = '\0';
    bool said = say_source_line(symbolized);
    atomic_flag_clear(&symbolizing);
    return said;
}

/* The failed request's source line: addr2line's answer, or else the
 * command that gives it. */
static void crash_source_line(const crash_slot *c) {
    if (c->lib[0] == '\0' || crash_symbolize(c))
        return;
    write_text("beam_alloc: its source line:");
    for (char *const *arg = c->command; *arg != NULL; arg++) {
        write_text(" ");
        write_text(*arg);
    }
    write_text("\n");
}

/* The previous action takes the signal: a handler of its own is called;
 * the default is restored, and the signal raised again when it was sent
 * (abort(), kill) or, for a fault, met again when the handler returns
 * to the faulting instruction. */
static void crash_chain(size_t i, int sig, siginfo_t *info, void *uctx) {
    const struct sigaction *old = &crash_previous[i];
    /* What SA_RESETHAND does on delivery. A handler of the previous
     * action's with that flag counts on it (a crash reporter that writes
     * and returns): called with ours still in, it met the fault again and
     * again, each time after ours. */
    if (old->sa_flags & SA_RESETHAND)
        signal_default(sig);
    if (old->sa_flags & SA_SIGINFO) {
        old->sa_sigaction(sig, info, uctx);
        return;
    }
    if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
        old->sa_handler(sig);
        return;
    }
    sigaction(sig, old, NULL);
    if (info == NULL || info->si_code <= 0)
        raise(sig);
}

/* How a failed request failed, said around its text, and the hint after
 * its line: a C request returned NULL, and a NIF that uses it faults; a
 * C++ allocator's threw std::bad_alloc, and one that nothing caught is
 * std::terminate's SIGABRT, as is a C NIF's abort or assert on the NULL:
 * for SIGABRT the words hold both. */
typedef struct failure_words {
    const char *failed, *handle, *hint;
} failure_words;

#define CRASH_README "see README, \"When a check crashes the VM\")\n"

static const failure_words *failure_words_for(int sig) {
    static const failure_words returned_null = {
        ", which returned NULL: ", ": handle the NULL there\n",
        "beam_alloc: (the NIF mishandles that failure, most often by using "
        "the NULL: " CRASH_README};
    static const failure_words aborted = {
        ", which failed (in C++ by throwing std::bad_alloc, in C by returning "
        "NULL): ",
        ": handle the failure there\n",
        "beam_alloc: (the NIF mishandles that failure: a SIGABRT is most "
        "often a std::bad_alloc that nothing caught (let out of a noexcept "
        "function or a thread of the NIF's, or thrown outside a BEAM_NIF "
        "body: std::terminate aborts), else an abort or assert on the "
        "NULL: " CRASH_README};
    return sig == SIGABRT ? &aborted : &returned_null;
}

/* The previous action's index for sig. */
static size_t crash_index(int sig) {
    size_t i = 0;
    while (i + 1 < CRASH_SIGNALS && crash_signals[i] != sig)
        i++;
    return i;
}

/* A signal sent (kill, raise; not a fault) that the previous action
 * ignores (the VM ignores SIGFPE): no crash, so nothing to say. */
static bool crash_ignored(size_t i, const siginfo_t *info) {
    const struct sigaction *old = &crash_previous[i];
    return !(old->sa_flags & SA_SIGINFO) && old->sa_handler == SIG_IGN &&
           (info == NULL || info->si_code <= 0);
}

/* The running slot whose request this thread made latest, or NULL.
 * pthread_self is not on POSIX's list of async-signal-safe functions, but
 * it reads the thread pointer (glibc, musl, macOS). */
static const crash_slot *crash_this_thread(void) {
    const crash_slot *latest = NULL;
    unsigned long best = 0;
    for (size_t i = 0; i < CRASH_SLOTS; i++) {
        const crash_slot *c = &crash_slots[i];
        unsigned long stamp = atomic_load(&c->stamp);
        if (atomic_load(&c->state) != CRASH_IDLE && stamp > best &&
            pthread_equal(c->thread, pthread_self())) {
            latest = c;
            best = stamp;
        }
    }
    return latest;
}

/* Which check it was: with many test files, the NIF alone does not say
 * which test crashed. */
static void crash_caller(const crash_slot *c) {
    if (c->caller[0] == '\0')
        return;
    write_text("beam_alloc: that check_all_allocation_failures was called "
               "from ");
    write_text(c->caller);
    write_text("\n");
}

/* What slot c says of the crash (state: c's, not idle): the VM's event
 * (what, then detail) and how the request failed (words). */
static void crash_write(const crash_slot *c, int state, const char *what,
                        const char *detail, const failure_words *words) {
    write_text("\nbeam_alloc: the VM ");
    write_text(what);
    write_text(detail);
    if (state != CRASH_FAILED) {
        write_all(c->text, c->len);
        crash_caller(c);
        return;
    }
    /* (Read once, and split kept below len: a run of the session's on
     * another thread may be writing the slot over meanwhile.) */
    size_t len = c->len, split = c->split < len ? c->split : len;
    write_all(c->text, split);
    write_text(words->failed);
    write_all(c->text + split, len - split);
    write_text(words->handle);
    crash_source_line(c);
    write_text(words->hint);
    crash_caller(c);
}

/* Every running session's slot is written; but with other checks running
 * meanwhile (async tests), only the one whose NIF call this thread is
 * running, where it is known: the others' text blamed their NIFs for
 * this crash. A scheduler thread runs one NIF call at a time, so that is
 * the slot whose request this thread made latest (another process's
 * check made its requests here before the call began). */
static void crash_handler(int sig, siginfo_t *info, void *uctx) {
    int saved = errno;
    size_t at = crash_index(sig);
    if (crash_ignored(at, info))
        return;
    const crash_slot *one = crash_this_thread();
    for (size_t i = 0; i < CRASH_SLOTS; i++) {
        const crash_slot *c = &crash_slots[i];
        int state = atomic_load(&c->state);
        if (state != CRASH_IDLE && (one == NULL || one == c))
            crash_write(c, state, "got ", signal_name(sig),
                        failure_words_for(sig));
    }
    errno = saved;
    crash_chain(at, sig, info, uctx);
}

/* A NIF, or a C library it calls, may end the process on a failed
 * allocation with exit() (libbrotlienc's encoder calls exit(1), its
 * BROTLI_ENCODER_EXIT_ON_OOM default): no signal, so the VM was gone with
 * a status and not a word. At exit the session says what it was doing, as
 * for a signal, but only one whose NIF call is under way and whose latest
 * request this thread made: the VM's own halt (halt/1, System.halt/1,
 * init:stop/0) calls exit() too, from a scheduler, while other processes'
 * checks run (async tests), and every running slot's note blamed a NIF
 * that had handled its failure and returned. Registered once, with the
 * first session. (glibc runs it at the library's dlclose too, the VM
 * going on: every slot is idle then, no session being open.) */
static void crash_at_exit(void) {
    static const failure_words exited = {
        ", which returned NULL: ",
        ": the NIF, or a C library it called, ended the process on that "
        "failure (libbrotlienc's encoder calls exit(1) on one): handle the "
        "NULL there, or keep such a library out of the check\n",
        "beam_alloc: (" CRASH_README};
    int saved = errno;
    const crash_slot *c = crash_this_thread();
    if (c != NULL && atomic_load(&c->in_call)) {
        int state = atomic_load(&c->state);
        if (state != CRASH_IDLE)
            crash_write(c, state, "exited", " (exit() was called)", &exited);
    }
    errno = saved;
}

static bool crash_is_ours(int sig) {
    struct sigaction now;
    return sigaction(sig, NULL, &now) == 0 && (now.sa_flags & SA_SIGINFO) &&
           now.sa_sigaction == crash_handler;
}

/* The handler goes in with the first open session, and out with the last:
 * a VM runs none outside checks. Out only where it
 * is still ours: a handler installed over it chains to it, which chains
 * on. Then ours is in that chain for good, and does not go in again over
 * what is on top: taken as ours's previous, that library's handler (or
 * ours, put back by it) led back to ours, round and round until the
 * stack overflowed. Where that library stopped chaining to it, a crash in
 * a later check says nothing: the price of never looping. SA_ONSTACK: a
 * thread with an alternate stack handles a stack overflow there; one
 * without (the VM's schedulers) cannot run the handler then, and dies by
 * the signal as it would have. */
static void crash_install(void) {
    static bool at_exit;
    if (crash_installs++ > 0)
        return;
    if (!at_exit)
        at_exit = atexit(crash_at_exit) == 0;
    struct sigaction ours;
    memset(&ours, 0, sizeof ours);
    ours.sa_sigaction = crash_handler;
    ours.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&ours.sa_mask);
    for (size_t i = 0; i < CRASH_SIGNALS; i++)
        if (!crash_left_in[i])
            sigaction(crash_signals[i], &ours, &crash_previous[i]);
}

static void crash_uninstall(void) {
    if (crash_installs == 0 || --crash_installs > 0)
        return;
    for (size_t i = 0; i < CRASH_SIGNALS; i++) {
        crash_left_in[i] = !crash_is_ours(crash_signals[i]);
        if (!crash_left_in[i])
            sigaction(crash_signals[i], &crash_previous[i], NULL);
    }
}

/* Is dir (len bytes)/name a program: its path then in out (n bytes at
 * most). */
static bool program_in(const char *dir, int len, const char *name, char *out,
                       size_t n) {
    int w = snprintf(out, n, "%.*s/%s", len, dir, name);
    return w > 0 && (size_t)w < n && access(out, X_OK) == 0;
}

/* The first LLVM whose llvm-addr2line is taken to read DWARF 5 (gcc's
 * default since gcc 11): an older one may answer no line, or a wrong one,
 * for a library binutils' reads. The version is the one in the program's
 * name: asking each program its version would start a process at every
 * check's open. */
#define LLVM_DWARF5 11

/* Is there a program llvm-addr2line-N, N >= min, in dir (len bytes): the
 * path of the highest N's then in out (n bytes at most). Debian's llvm-N
 * installs it so (clang-N recommends llvm-N-dev, which brings llvm-N),
 * the plain name being the llvm package's. */
static bool llvm_versioned_in(const char *dir, int len, unsigned long min,
                              char *out, size_t n) {
    static const char prefix[] = "llvm-addr2line-";
    char path[CRASH_PATH];
    if (snprintf(path, sizeof path, "%.*s", len, dir) >= (int)sizeof path)
        return false;
    DIR *d = opendir(path);
    unsigned long best = 0;
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
        const char *v = e->d_name + sizeof prefix - 1;
        char *end;
        if (!starts_with(e->d_name, prefix) || *v < '0' || *v > '9')
            continue;
        unsigned long version = strtoul(v, &end, 10);
        if (*end == '\0' && version >= min && version > best &&
            program_in(dir, len, e->d_name, path, sizeof path) &&
            strlen(path) < n) {
            best = version;
            strcpy(out, path);
        }
    }
    if (d != NULL)
        closedir(d);
    return best > 0;
}

/* The symbolizer's absolute path into out, "" when none (n bytes at
 * most): in the first directory of PATH that has one, llvm-addr2line
 * (else its highest llvm-addr2line-N of LLVM_DWARF5 or later), else
 * binutils' addr2line, else an older llvm-addr2line-N (better than no
 * line at all). LLVM's first: binutils' addr2line 2.40 reads clang's
 * DWARF 5 (its default since clang 14) without the functions inlined at a
 * call, and the note lost the author's helper inlined into a BEAM_NIF
 * body; LLVM's reads either compiler's. The first directory: one put
 * first in PATH chooses. Relative entries are passed over: a crash may
 * come after a change of directory. */
static void find_symbolizer(char *out, size_t n) {
    const char *p = getenv("PATH");
    while (p != NULL && *p != '\0') {
        const char *end = strchrnul(p, ':');
        int len = (int)(end - p);
        if (p[0] == '/' && (program_in(p, len, "llvm-addr2line", out, n) ||
                            llvm_versioned_in(p, len, LLVM_DWARF5, out, n) ||
                            program_in(p, len, "addr2line", out, n) ||
                            llvm_versioned_in(p, len, 1, out, n)))
            return;
        p = *end != '\0' ? end + 1 : end;
    }
    out[0] = '\0';
}

/* Copies caller (len bytes) into c's, cut to fit before a whole UTF-8
 * character (a cut inside one wrote invalid text). Only bytes before the
 * last are written: a handler reading it meanwhile (a session of the
 * slot's before, on another thread) still meets a NUL. */
static void crash_set_caller(crash_slot *c, const char *caller, size_t len) {
    size_t n = len < sizeof c->caller - 1 ? len : sizeof c->caller - 1;
    while (n < len && n > 0 && ((unsigned char)caller[n] & 0xC0) == 0x80)
        n--;
    memcpy(c->caller, caller, n);
    c->caller[n] = '\0';
}

/* A free slot for a new session, called from caller (len bytes), or -1. */
static int crash_take(const char *caller, size_t len) {
    for (int i = 0; i < CRASH_SLOTS; i++) {
        crash_slot *c = &crash_slots[i];
        bool free = false;
        if (atomic_compare_exchange_strong(&c->taken, &free, true)) {
            atomic_store(&c->state, CRASH_IDLE);
            atomic_store(&c->in_call, false);
            find_symbolizer(c->tool, CRASH_PATH);
            crash_set_caller(c, caller, len);
            return i;
        }
    }
    return -1;
}

static void crash_give_back(int i) {
    if (i < 0)
        return;
    atomic_store(&crash_slots[i].state, CRASH_IDLE);
    atomic_store(&crash_slots[i].taken, false);
}

/* Slot c's text from at (below its size) is fmt's, cut at its end: the
 * text's length. Made while the slot is idle. */
__attribute__((format(printf, 3, 4))) static size_t
crash_text(crash_slot *c, size_t at, const char *fmt, ...) {
    size_t room = sizeof c->text - at;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(c->text + at, room, fmt, ap);
    va_end(ap);
    return at + (n < 0 ? 0 : (size_t)n < room ? (size_t)n : room - 1);
}

/* How many of frames[0..n) are in the object at base, from the first (in
 * it): the call's and its callers' there, CRASH_FRAMES at most. */
static size_t frames_in(const void *base, const uintptr_t *frames, size_t n) {
    Dl_info info;
    size_t k = 1;
    while (k < n && k < CRASH_FRAMES && dladdr((void *)frames[k], &info) != 0 &&
           info.dli_fbase == base)
        k++;
    return k;
}

/* Slot c's addr2line arguments for the call of f: the library of its
 * return address and the offsets in it of the call and its callers there
 * (lib "" when not known). Made while the slot is idle. */
static void crash_line_args(crash_slot *c, const crash_note_failure *f) {
    Dl_info info;
    size_t n = 1;
    c->lib[0] = '\0';
    if (dladdr((void *)f->frames[0], &info) != 0 && info.dli_fname != NULL &&
        strlen(info.dli_fname) < sizeof c->lib) {
        strcpy(c->lib, info.dli_fname);
        n = frames_in(info.dli_fbase, f->frames, f->nframes);
        for (size_t k = 0; k < n; k++)
            snprintf(c->offset[k], sizeof c->offset[k], "0x%zx",
                     (size_t)(f->frames[k] - 1 - (uintptr_t)info.dli_fbase));
    }
    /* (argv[0] "addr2line" for LLVM's too: llvm-addr2line is
     * llvm-symbolizer, which takes addr2line's options and output by the
     * name it is run under.) */
    static char prog[] = "addr2line", fn[] = "-f", in[] = "-i", cxx[] = "-C",
                e[] = "-e", addr[] = "-a";
    char *command[] = {prog, fn, in, cxx, e, c->lib, c->offset[0], NULL};
    memcpy(c->command, command, sizeof command);
    char *argv[] = {prog, addr, fn, in, cxx, e, c->lib};
    memcpy(c->argv, argv, sizeof argv);
    size_t at = sizeof argv / sizeof argv[0];
    for (size_t k = 0; k < n; k++)
        c->argv[at + k] = c->offset[k];
    c->argv[at + n] = NULL;
}

/* --- The driver's calls (crash_note.h) ---------------------------------- */

int crash_note_open(const char *caller, size_t len) {
    int slot = crash_take(caller, len);
    crash_install();
    return slot;
}

void crash_note_close(int slot) {
    crash_give_back(slot);
    crash_uninstall();
}

/* A crash before the run's failing request is no failed allocation's. */
void crash_note_run_begins(int slot, bool fails, size_t fail_index) {
    if (slot < 0)
        return;
    crash_slot *c = &crash_slots[slot];
    atomic_store(&c->state, CRASH_IDLE);
    if (!fails)
        c->len = crash_text(c, 0,
                            " while check_all_allocation_failures was making "
                            "a run that fails no allocation (the first, which "
                            "counts them, or the last): no allocation had "
                            "been failed, so the crash is not a failed "
                            "allocation's\n");
    else
        c->len = crash_text(c, 0,
                            " while check_all_allocation_failures was making "
                            "the run that fails allocation request %zu, "
                            "before that request came: no allocation had "
                            "been failed yet, so the crash is not a failed "
                            "allocation's\n",
                            fail_index);
    c->split = c->len;
    atomic_store(&c->state, CRASH_RUNNING);
}

void crash_note_request(int slot) {
    if (slot < 0)
        return;
    crash_slot *c = &crash_slots[slot];
    c->thread = pthread_self();
    atomic_store(&c->stamp, atomic_fetch_add(&crash_clock, 1) + 1);
}

void crash_note_request_failed(int slot, const crash_note_failure *f) {
    if (slot < 0)
        return;
    crash_slot *c = &crash_slots[slot];
    atomic_store(&c->state, CRASH_IDLE);
    crash_line_args(c, f);
    c->split = crash_text(c, 0,
                          " while check_all_allocation_failures was failing "
                          "allocation request %zu (and every later one)",
                          f->index);
    c->len = crash_text(c, c->split, "%s of %zu bytes at %s%s%s", f->kind,
                        f->len, f->site,
                        f->off_call ? ", on a thread other than the NIF call's"
                        : f->nif[0] ? ", in "
                                    : "",
                        f->nif);
    atomic_store(&c->state, CRASH_FAILED);
}

void crash_note_call(int slot, bool in) {
    if (slot >= 0)
        atomic_store(&crash_slots[slot].in_call, in);
}

void crash_note_run_ends(int slot) {
    if (slot >= 0)
        atomic_store(&crash_slots[slot].state, CRASH_IDLE);
}
