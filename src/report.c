/*
 * Where diagnostics go. One hook for the whole library, a line per call:
 * allocators report misuse while holding their locks, so the hook must be
 * cheap and must not allocate through the allocator that reports.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static void report_to_stderr(void *user, const char *line) {
    (void)user;
    fprintf(stderr, "%s\n", line);
}

/* The default: stderr, or inside a BEAM the logger (nif/report.c installs
 * it at load). A hook the user set stays in place either way. */
static beam_report_fn default_hook = report_to_stderr;
static beam_report_fn report_hook = report_to_stderr;
static void *report_user = NULL;

beam_report_fn beam_set_report_hook(beam_report_fn fn, void *user) {
    beam_report_fn old = report_hook;
    report_hook = fn != NULL ? fn : default_hook;
    report_user = fn != NULL ? user : NULL;
    return old == default_hook ? NULL : old;
}

void beam__report_set_default(beam_report_fn fn) {
    if (report_hook == default_hook)
        report_hook = fn;
    default_hook = fn;
}

void beam__report_to_stderr(const char *line) {
    report_to_stderr(NULL, line);
}

void beam__report(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    report_hook(report_user, line);
}

void beam__assert_fail(const char *what, const char *file, int line) {
    /* Straight to stderr: the hook may need the very state that broke. */
    fprintf(stderr, "beam_alloc: internal check failed: %s (%s:%d)\n", what,
            file, line);
    abort();
}

const char *beam__describe_addr(uintptr_t addr, char *buf, size_t n) {
    Dl_info info;
    if (addr == 0) {
        snprintf(buf, n, "unknown site");
        return buf;
    }
    if (dladdr((void *)addr, &info) != 0 && info.dli_fname != NULL) {
        const char *file = info.dli_fname;
        for (const char *s = file; *s; s++)
            if (*s == '/')
                file = s + 1;
        if (info.dli_sname != NULL)
            snprintf(buf, n, "%s(%s+0x%lx)", file, info.dli_sname,
                     (unsigned long)(addr - (uintptr_t)info.dli_saddr));
        else
            snprintf(buf, n, "%s+0x%lx", file,
                     (unsigned long)(addr - (uintptr_t)info.dli_fbase));
        return buf;
    }
    snprintf(buf, n, "0x%lx", (unsigned long)addr);
    return buf;
}
