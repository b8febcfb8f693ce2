/*
 * bench/report.c: turns the raw rows of one `make bench` run into
 * bench/results/results.{md,csv}, the gnuplot input for the chart, and the
 * tables printed at the end of the run.
 *
 *   bench_report RAW.csv WORKLOADS.tsv MACHINE.txt OUTDIR WORKDIR
 *
 * RAW.csv rows (bench/workloads.c):
 *   setting,sched,allocator,workload,status,ops,values,note
 * values: the ns/op of each repetition, space-separated; for the
 * rss_mixed rows "peak_live rss_before rss_peak" in bytes.
 * WORKLOADS.tsv: name<TAB>description<TAB>ops (bench_sa_base workloads).
 */
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXROWS 1024
#define MAXV 16
#define MAXNAMES 32

typedef struct row {
    char setting[16], sched[16], alloc[32], wl[32], status[16];
    size_t ops;
    double v[MAXV];
    int nv;
    char note[256];
    double med, min, max;
} row;

static row rows[MAXROWS];
static int nrows;

static char wl_names[MAXNAMES][32], wl_desc[MAXNAMES][160];
static size_t wl_ops[MAXNAMES];
static int nwl;

static char al_names[MAXNAMES][32];
static int nal;

typedef struct ctx {
    const char *setting, *sched, *label, *ref2; /* ref2: enif or malloc */
} ctx;
static const ctx ctxs[] = {
    {"standalone", "-", "standalone C (libc backed)", "malloc"},
    {"beam", "normal", "BEAM, normal scheduler", "enif"},
    {"beam", "dirty", "BEAM, dirty CPU scheduler", "enif"},
};
#define NCTX 3

/* ---------------------------------------------------------------- input */

static char *field_sep(char **s, int sep) {
    char *start = *s, *c = strchr(start, sep);
    if (c) {
        *c = 0;
        *s = c + 1;
    } else {
        *s = start + strlen(start);
    }
    return start;
}

static char *field(char **s) {
    return field_sep(s, ',');
}

static void copy(char *dst, size_t n, const char *src) {
    size_t i = 0;
    for (; i + 1 < n && src[i]; i++)
        dst[i] = src[i];
    dst[i] = 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void add_alloc_name(const char *name) {
    for (int i = 0; i < nal; i++)
        if (strcmp(al_names[i], name) == 0)
            return;
    if (nal < MAXNAMES)
        copy(al_names[nal++], sizeof al_names[0], name);
}

/* Calls take(line) on each line of the file at path, without its line end,
 * while take returns true. */
static int read_lines(const char *path, bool (*take)(char *line)) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return -1;
    }
    char line[2048];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!take(line))
            break;
    }
    fclose(f);
    return 0;
}

/* A line of raw.csv into rows[]. */
static bool take_raw(char *line) {
    if (nrows >= MAXROWS)
        return false;
    if (line[0] == 0 || line[0] == '#')
        return true;
    row *r = &rows[nrows];
    memset(r, 0, sizeof *r);
    char *s = line;
    copy(r->setting, sizeof r->setting, field(&s));
    copy(r->sched, sizeof r->sched, field(&s));
    copy(r->alloc, sizeof r->alloc, field(&s));
    copy(r->wl, sizeof r->wl, field(&s));
    copy(r->status, sizeof r->status, field(&s));
    r->ops = (size_t)strtoull(field(&s), NULL, 10);
    char *vals = field(&s);
    copy(r->note, sizeof r->note, s);
    char *end;
    while (r->nv < MAXV) {
        double d = strtod(vals, &end);
        if (end == vals)
            break;
        r->v[r->nv++] = d;
        vals = end;
    }
    if (r->alloc[0] == 0 || r->wl[0] == 0)
        return true;
    if (strcmp(r->wl, "rss_mixed") != 0 && r->nv > 0) {
        double t[MAXV];
        memcpy(t, r->v, sizeof(double) * (size_t)r->nv);
        qsort(t, (size_t)r->nv, sizeof t[0], cmp_double);
        r->min = t[0];
        r->max = t[r->nv - 1];
        r->med =
            r->nv % 2 ? t[r->nv / 2] : (t[r->nv / 2 - 1] + t[r->nv / 2]) / 2;
    }
    add_alloc_name(r->alloc);
    nrows++;
    return true;
}

/* A line of the workloads list (name, description, ops; tab-separated). */
static bool take_workload(char *line) {
    if (nwl >= MAXNAMES)
        return false;
    char *s = line;
    copy(wl_names[nwl], sizeof wl_names[0], field_sep(&s, '\t'));
    copy(wl_desc[nwl], sizeof wl_desc[0], field_sep(&s, '\t'));
    wl_ops[nwl] = (size_t)strtoull(field_sep(&s, '\t'), NULL, 10);
    if (wl_names[nwl][0])
        nwl++;
    return true;
}

/* Allocators in a fixed, readable order; unknown ones after. */
static void order_allocs(void) {
    static const char *pref[] = {
        "enif",  "malloc", "mimalloc",  "jemalloc",   "tcmalloc", "raw",
        "large", "gpa",    "gpa_track", "gpa_frames", "arena",    "bump"};
    char out[MAXNAMES][32];
    int n = 0;
    for (size_t p = 0; p < sizeof pref / sizeof pref[0]; p++)
        for (int i = 0; i < nal; i++)
            if (strcmp(al_names[i], pref[p]) == 0)
                copy(out[n++], sizeof out[0], al_names[i]);
    for (int i = 0; i < nal; i++) {
        bool seen = false;
        for (size_t p = 0; p < sizeof pref / sizeof pref[0]; p++)
            seen |= strcmp(al_names[i], pref[p]) == 0;
        if (!seen)
            copy(out[n++], sizeof out[0], al_names[i]);
    }
    memcpy(al_names, out, sizeof out);
    nal = n;
}

static const row *find(const ctx *c, const char *alloc, const char *wl) {
    for (int i = 0; i < nrows; i++)
        if (strcmp(rows[i].setting, c->setting) == 0 &&
            strcmp(rows[i].sched, c->sched) == 0 &&
            strcmp(rows[i].alloc, alloc) == 0 && strcmp(rows[i].wl, wl) == 0)
            return &rows[i];
    return NULL;
}

/* Median ns/op of an ok cell, or NAN. */
static double ns(const ctx *c, const char *alloc, const char *wl) {
    const row *r = find(c, alloc, wl);
    if (!r || strcmp(r->status, "ok") != 0 || r->nv == 0)
        return NAN;
    return r->med;
}

static double ratio(const ctx *c, const char *a, const char *b,
                    const char *wl) {
    return ns(c, a, wl) / ns(c, b, wl);
}

static bool ctx_present(const ctx *c) {
    for (int i = 0; i < nrows; i++)
        if (strcmp(rows[i].setting, c->setting) == 0 &&
            strcmp(rows[i].sched, c->sched) == 0)
            return true;
    return false;
}

/* RSS of an allocator in a setting: rss_delta / peak_live, or NAN. */
static double rss_ratio(const char *setting, const char *alloc, double *live,
                        double *delta) {
    for (int i = 0; i < nrows; i++) {
        const row *r = &rows[i];
        if (strcmp(r->wl, "rss_mixed") || strcmp(r->setting, setting) ||
            strcmp(r->alloc, alloc) || strcmp(r->status, "ok") || r->nv < 3)
            continue;
        *live = r->v[0];
        *delta = r->v[2] - r->v[1];
        return *delta / *live;
    }
    *live = *delta = NAN;
    return NAN;
}

/* --------------------------------------------------------------- tables */

#define TMAXR 40
#define TMAXC 16
typedef struct table {
    char title[256];
    int nr, nc; /* row 0 is the header */
    char cell[TMAXR][TMAXC][64];
} table;

static void tinit(table *t, const char *title, int nc) {
    memset(t, 0, sizeof *t);
    copy(t->title, sizeof t->title, title);
    t->nc = nc;
}

static void tset(table *t, int r, int c, const char *fmt, ...) {
    if (r >= TMAXR || c >= TMAXC)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->cell[r][c], sizeof t->cell[r][c], fmt, ap);
    va_end(ap);
    if (r + 1 > t->nr)
        t->nr = r + 1;
}

static void fmt_num(char *buf, size_t n, double v, const char *suffix) {
    if (isnan(v))
        snprintf(buf, n, "-");
    else if (v >= 100)
        snprintf(buf, n, "%.0f%s", v, suffix);
    else if (v >= 10)
        snprintf(buf, n, "%.1f%s", v, suffix);
    else
        snprintf(buf, n, "%.2f%s", v, suffix);
}

static void tnum(table *t, int r, int c, double v, const char *suffix) {
    char b[64];
    fmt_num(b, sizeof b, v, suffix);
    tset(t, r, c, "%s", b);
}

static void tmd(FILE *f, const table *t) {
    fprintf(f, "\n**%s**\n\n", t->title);
    for (int r = 0; r < t->nr; r++) {
        fprintf(f, "|");
        for (int c = 0; c < t->nc; c++)
            fprintf(f, " %s |", t->cell[r][c][0] ? t->cell[r][c] : " ");
        fprintf(f, "\n");
        if (r == 0) {
            fprintf(f, "|");
            for (int c = 0; c < t->nc; c++)
                fprintf(f, c == 0 ? "---|" : "---:|");
            fprintf(f, "\n");
        }
    }
}

static void ttext(FILE *f, const table *t) {
    int w[TMAXC] = {0};
    for (int r = 0; r < t->nr; r++)
        for (int c = 0; c < t->nc; c++) {
            int l = (int)strlen(t->cell[r][c]);
            if (l > w[c])
                w[c] = l;
        }
    fprintf(f, "\n%s\n", t->title);
    for (int r = 0; r < t->nr; r++) {
        for (int c = 0; c < t->nc; c++)
            fprintf(f, c == 0 ? "  %-*s" : "  %*s", w[c], t->cell[r][c]);
        fprintf(f, "\n");
    }
}

static void emit(FILE *md, const table *t) {
    tmd(md, t);
    ttext(stdout, t);
}

/* Row r of the headline table: what, where, the ratio of the median of
 * (a1, w1) to that of (a2, w2), and both medians as pair_fmt puts them. */
static void headline(table *t, int r, const char *what, const char *where,
                     const ctx *c, const char *a1, const char *w1,
                     const char *a2, const char *w2, const char *pair_fmt) {
    char a[32], b[32];
    double x = ns(c, a1, w1), y = ns(c, a2, w2);
    fmt_num(a, sizeof a, x, "");
    fmt_num(b, sizeof b, y, "");
    tset(t, r, 0, "%s", what);
    tset(t, r, 1, "%s", where);
    tnum(t, r, 2, x / y, "x");
    tset(t, r, 3, pair_fmt, a, b);
}

/* A cell's text in the ns table: the median, or why there is none. */
static void cell_text(char *buf, size_t n, const ctx *c, const char *a,
                      const char *wl) {
    const row *r = find(c, a, wl);
    if (!r)
        snprintf(buf, n, " ");
    else if (strcmp(r->status, "ok") == 0)
        fmt_num(buf, n, r->med, "");
    else if (strcmp(r->status, "na") == 0)
        snprintf(buf, n, "n/a");
    else if (strcmp(r->status, "missing") == 0)
        snprintf(buf, n, "missing");
    else
        snprintf(buf, n, "ERROR");
}

/* A cell of a table by context: the text for row name in context c. */
typedef void cell_fn(char *buf, size_t n, const ctx *c, const char *name);

/* A table with a row per name and a column per context from ctxs[from]
 * on, each cell from cell(); emitted. */
static void ctx_table(FILE *md, table *t, const char *title, const char *first,
                      int from, const char (*names)[32], int count,
                      cell_fn *cell) {
    tinit(t, title, NCTX - from + 1);
    tset(t, 0, 0, "%s", first);
    for (int k = from; k < NCTX; k++)
        tset(t, 0, k - from + 1, "%s", ctxs[k].label);
    for (int i = 0; i < count; i++) {
        tset(t, i + 1, 0, "%s", names[i]);
        for (int k = from; k < NCTX; k++) {
            char b[64];
            cell(b, sizeof b, &ctxs[k], names[i]);
            tset(t, i + 1, k - from + 1, "%s", b);
        }
    }
    emit(md, t);
}

/* 2-thread churn over 1-thread churn of allocator a. */
static void scaling_cell(char *buf, size_t n, const ctx *c, const char *a) {
    fmt_num(buf, n, ns(c, a, "churn_8_512") / ns(c, a, "mt2_churn_8_512"), "x");
}

/* Cross-thread frees of a: the ratio to mimalloc and (ns/op). */
static void xthread_cell(char *buf, size_t n, const ctx *c, const char *a) {
    char q[32], v[32];
    fmt_num(q, sizeof q, ratio(c, a, "mimalloc", "xthread_8_512"), "x");
    cell_text(v, sizeof v, c, a, "xthread_8_512");
    if (strcmp(q, "-") == 0)
        snprintf(buf, n, "%s", v);
    else
        snprintf(buf, n, "%s (%s)", q, v);
}

static void arena_cell(char *buf, size_t n, const ctx *c, const char *wl) {
    fmt_num(buf, n, ratio(c, "arena", "bump", wl), "x");
}

static void raw_cell(char *buf, size_t n, const ctx *c, const char *wl) {
    fmt_num(buf, n, ratio(c, "raw", "enif", wl), "x");
}

/* Opens dir/name for writing, its path in path (n bytes); when it cannot,
 * the report fails (exit status 1) with the reason on stderr. */
static FILE *create(char *path, size_t n, const char *dir, const char *name) {
    snprintf(path, n, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        exit(1);
    }
    return f;
}

/* ----------------------------------------------------------------- main */

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: bench_report RAW.csv WORKLOADS.tsv "
                        "MACHINE.txt OUTDIR WORKDIR\n");
        return 2;
    }
    if (read_lines(argv[1], take_raw) || read_lines(argv[2], take_workload))
        return 1;
    order_allocs();
    const char *outdir = argv[4], *workdir = argv[5];
    char path[1024];

    /* results.csv */
    FILE *csv = create(path, sizeof path, outdir, "results.csv");
    fprintf(csv, "setting,sched,allocator,workload,status,ops,median_ns_per_"
                 "op,min_ns_per_op,max_ns_per_op,reps_ns_per_op,vs_mimalloc,"
                 "vs_malloc,vs_enif,peak_live_bytes,rss_delta_bytes,"
                 "rss_over_live,note\n");
    for (int i = 0; i < nrows; i++) {
        const row *r = &rows[i];
        const ctx *c = NULL;
        for (int k = 0; k < NCTX; k++)
            if (!strcmp(ctxs[k].setting, r->setting) &&
                !strcmp(ctxs[k].sched, r->sched))
                c = &ctxs[k];
        fprintf(csv, "%s,%s,%s,%s,%s,%zu,", r->setting, r->sched, r->alloc,
                r->wl, r->status, r->ops);
        if (strcmp(r->wl, "rss_mixed") == 0) {
            double live, delta,
                q = rss_ratio(r->setting, r->alloc, &live, &delta);
            if (!isnan(q))
                fprintf(csv, ",,,,,,,%.0f,%.0f,%.3f,%s\n", live, delta, q,
                        r->note);
            else
                fprintf(csv, ",,,,,,,,,,%s\n", r->note);
            continue;
        }
        if (strcmp(r->status, "ok") == 0 && r->nv > 0) {
            fprintf(csv, "%.3f,%.3f,%.3f,", r->med, r->min, r->max);
            for (int k = 0; k < r->nv; k++)
                fprintf(csv, "%s%.3f", k ? " " : "", r->v[k]);
            double refs[3] = {NAN, NAN, NAN};
            if (c) {
                refs[0] = r->med / ns(c, "mimalloc", r->wl);
                refs[1] = r->med / ns(c, "malloc", r->wl);
                refs[2] = r->med / ns(c, "enif", r->wl);
            }
            for (int k = 0; k < 3; k++)
                if (isnan(refs[k]))
                    fprintf(csv, ",");
                else
                    fprintf(csv, ",%.3f", refs[k]);
        } else {
            fprintf(csv, ",,,,,,");
        }
        fprintf(csv, ",,,,%s\n", r->note);
    }
    fclose(csv);

    /* results.md */
    FILE *md = create(path, sizeof path, outdir, "results.md");
    fprintf(md, "# beam_alloc benchmarks\n\n"
                "Produced by `make bench` (bench/run.sh) in one run; "
                "numbers are ns per operation, median of the repetitions "
                "(see results.csv for every repetition). Lower is better; "
                "a ratio above 1 means slower than the reference.\n\n"
                "![chart](chart.png)\n\n## Machine\n\n```\n");
    FILE *mf = fopen(argv[3], "r");
    if (mf) {
        char line[512];
        while (fgets(line, sizeof line, mf))
            fputs(line, md);
        fclose(mf);
    }
    fprintf(md, "```\n\n## Workloads\n\n| workload | what | ops per "
                "repetition |\n|---|---|---:|\n");
    for (int w = 0; w < nwl; w++)
        fprintf(md, "| %s | %s | %zu |\n", wl_names[w], wl_desc[w], wl_ops[w]);
    fprintf(md, "| rss_mixed | 20000 live slots, mixed sizes (85%% 8-512 B, "
                "12%% 513 B-8 KiB, 3%% 8-64 KiB), every byte written, 300000 "
                "replacements; peak RSS growth / peak live bytes, one fresh "
                "process per allocator | 300000 |\n");
    fprintf(md,
            "\nAllocators: `enif` enif_alloc/enif_free called directly; "
            "`malloc` glibc; `mimalloc` mi_malloc/mi_free; `jemalloc` "
            "mallocx/sdallocx; `tcmalloc` tc_malloc/tc_free "
            "(libtcmalloc_minimal); `raw`, `large`, `gpa` "
            "(beam_gpa_init over large), `gpa_track` (BEAM_GPA_TRACK_SITES), "
            "`gpa_frames` (BEAM_GPA_TRACK_SITES | BEAM_GPA_FRAMES(6): six "
            "frames of each allocation's stack), "
            "`arena` (beam_arena_t over raw, reset between repetitions) "
            "through beam_alloc_bytes/beam_free_bytes/beam_realloc_bytes; "
            "`bump` a bare inline pointer bump in an mmap'ed region (the "
            "floor for the arena). Arena and bump never reuse freed memory "
            "(except the last block), so their op counts are capped to fit "
            "256 MiB per repetition; in the 2-thread workload each thread "
            "has its own arena / bump region. Peers run standalone in one "
            "executable each (Debian builds them to replace malloc), and "
            "inside the BEAM dlopen'ed with RTLD_LOCAL by the NIF (see "
            "bench/nif/bench_nif.c). Two-thread numbers need both cores: "
            "anything else running on the machine shows up there first.\n");

    /* Headline ratios. */
    fprintf(md, "\n## The ratios asked for\n");
    printf("\n==== beam_alloc benchmark: ratios ====\n");
    table t;
    tinit(&t, "Headline ratios (median ns/op; ratio = first / second)", 4);
    tset(&t, 0, 0, "comparison");
    tset(&t, 0, 1, "where");
    tset(&t, 0, 2, "ratio");
    tset(&t, 0, 3, "ns/op");
    int r = 1;
    const char *cs = "churn_8_512";
    for (int k = 0; k < NCTX; k++) {
        const ctx *c = &ctxs[k];
        if (!ctx_present(c))
            continue;
        const char *where = k == 0   ? "standalone"
                            : k == 1 ? "BEAM normal"
                                     : "BEAM dirty";
        const char *vs = "%s vs %s";
        headline(&t, r++, "GPA churn 8-512 B vs mimalloc", where, c, "gpa", cs,
                 "mimalloc", cs, vs);
        headline(&t, r++,
                 k == 0 ? "GPA churn 8-512 B vs glibc malloc"
                        : "GPA churn 8-512 B vs enif_alloc",
                 where, c, "gpa", cs, c->ref2, cs, vs);
        headline(&t, r++, "GPA tracking on vs off, churn 8-512 B", where, c,
                 "gpa_track", cs, "gpa", cs, vs);
        headline(&t, r++, "GPA tracked with 6 frames vs off, churn 8-512 B",
                 where, c, "gpa_frames", cs, "gpa", cs, vs);
        headline(&t, r++, "GPA 2-thread / 1-thread throughput", where, c, "gpa",
                 cs, "gpa", "mt2_churn_8_512", "1T %s, 2T %s per op");
        headline(&t, r++, "GPA cross-thread free vs mimalloc", where, c, "gpa",
                 "xthread_8_512", "mimalloc", "xthread_8_512", vs);
        headline(&t, r++, "arena vs bare bump, churn 8-512 B", where, c,
                 "arena", cs, "bump", cs, vs);
        if (k > 0)
            headline(&t, r++, "raw vs direct enif_alloc, churn 8-512 B", where,
                     c, "raw", cs, "enif", cs, vs);
    }
    for (int s = 0; s < 2; s++) {
        const char *setting = s == 0 ? "standalone" : "beam";
        double live, delta, q = rss_ratio(setting, "gpa", &live, &delta);
        char a[32], b[32];
        fmt_num(a, sizeof a, delta / 1048576.0, " MiB");
        fmt_num(b, sizeof b, live / 1048576.0, " MiB");
        tset(&t, r, 0, "GPA peak RSS / live bytes (mixed)");
        tset(&t, r, 1, "%s", s == 0 ? "standalone" : "BEAM");
        tnum(&t, r, 2, q, "x");
        tset(&t, r++, 3, "%s / %s", a, b);
    }
    emit(md, &t);

    /* 2 threads vs 1. */
    ctx_table(md, &t,
              "2-thread churn throughput / 1-thread (8-512 B; 2.0 = perfect "
              "scaling on 2 cores)",
              "allocator", 0, al_names, nal, scaling_cell);
    ctx_table(md, &t,
              "Producer/consumer cross-thread frees: ratio to mimalloc "
              "(ns/op in brackets)",
              "allocator", 0, al_names, nal, xthread_cell);
    ctx_table(md, &t, "arena (through the interface) / bare pointer bump",
              "workload", 0, wl_names, nwl, arena_cell);
    /* Only the BEAM contexts have enif. */
    ctx_table(md, &t,
              "raw (beam_raw_allocator through the interface) / direct "
              "enif_alloc",
              "workload", 1, wl_names, nwl, raw_cell);

    /* RSS. */
    tinit(&t,
          "Peak RSS growth / peak live bytes, mixed sizes (1.0 = no "
          "overhead)",
          3);
    tset(&t, 0, 0, "allocator");
    tset(&t, 0, 1, "standalone C");
    tset(&t, 0, 2, "BEAM (dirty CPU scheduler)");
    for (int a = 0; a < nal; a++) {
        tset(&t, a + 1, 0, "%s", al_names[a]);
        for (int s = 0; s < 2; s++) {
            double live, delta;
            double q = rss_ratio(s == 0 ? "standalone" : "beam", al_names[a],
                                 &live, &delta);
            char x[32], y[32], z[32];
            fmt_num(x, sizeof x, q, "x");
            fmt_num(y, sizeof y, delta / 1048576.0, "");
            fmt_num(z, sizeof z, live / 1048576.0, "");
            if (isnan(q))
                tset(&t, a + 1, s + 1, "-");
            else
                tset(&t, a + 1, s + 1, "%s (%s / %s MiB)", x, y, z);
        }
    }
    emit(md, &t);

    /* Full tables per context: ns/op, then the ratios. */
    fprintf(md, "\n## Every cell\n\n`n/a`: the allocator cannot do it "
                "(no alignment above 8, not thread-safe); `missing`: not in "
                "the library that was built; `-`: no reference value.\n");
    printf("\n==== ns/op (median) and ratios per setting ====\n");
    for (int k = 0; k < NCTX; k++) {
        const ctx *c = &ctxs[k];
        if (!ctx_present(c))
            continue;
        fprintf(md, "\n### %s\n", c->label);
        const char *refs[2] = {"mimalloc", c->ref2};
        for (int view = 0; view < 3; view++) {
            char title[200];
            if (view == 0)
                snprintf(title, sizeof title, "%s: ns/op (median)", c->label);
            else
                snprintf(title, sizeof title, "%s: ratio to %s", c->label,
                         refs[view - 1]);
            tinit(&t, title, nwl + 1);
            tset(&t, 0, 0, "allocator");
            for (int w = 0; w < nwl; w++)
                tset(&t, 0, w + 1, "%s", wl_names[w]);
            int rr = 1;
            for (int a = 0; a < nal; a++) {
                bool any = false;
                for (int w = 0; w < nwl; w++)
                    any |= find(c, al_names[a], wl_names[w]) != NULL;
                if (!any)
                    continue;
                tset(&t, rr, 0, "%s", al_names[a]);
                for (int w = 0; w < nwl; w++) {
                    char b[64];
                    if (view == 0) {
                        cell_text(b, sizeof b, c, al_names[a], wl_names[w]);
                        tset(&t, rr, w + 1, "%s", b);
                    } else {
                        tnum(&t, rr, w + 1,
                             ratio(c, al_names[a], refs[view - 1], wl_names[w]),
                             "");
                    }
                }
                rr++;
            }
            emit(md, &t);
        }
    }

    /* Notes. */
    fprintf(md, "\n## Notes from the run\n\n");
    for (int i = 0; i < nrows; i++) {
        if (rows[i].note[0] == 0)
            continue;
        bool dup = false;
        for (int j = 0; j < i && !dup; j++)
            dup = !strcmp(rows[j].alloc, rows[i].alloc) &&
                  !strcmp(rows[j].wl, rows[i].wl) &&
                  !strcmp(rows[j].note, rows[i].note) &&
                  !strcmp(rows[j].status, rows[i].status);
        if (!dup)
            fprintf(md, "- %s / %s (%s): %s\n", rows[i].alloc, rows[i].wl,
                    rows[i].status, rows[i].note);
    }
    int errors = 0;
    for (int i = 0; i < nrows; i++)
        if (strcmp(rows[i].status, "error") == 0) {
            errors++;
            fprintf(stderr, "bench: ERROR %s/%s %s %s: %s\n", rows[i].setting,
                    rows[i].sched, rows[i].alloc, rows[i].wl, rows[i].note);
        }
    fclose(md);

    /* Chart data and script. */
    char datpath[1024];
    FILE *dat = create(datpath, sizeof datpath, workdir, "chart.dat");
    fprintf(dat, "# alloc standalone beam_normal beam_dirty rss_sa rss_beam\n");
    for (int a = 0; a < nal; a++) {
        fprintf(dat, "%s", al_names[a]);
        for (int k = 0; k < NCTX; k++) {
            double v = ns(&ctxs[k], al_names[a], cs);
            if (isnan(v))
                fprintf(dat, " ?");
            else
                fprintf(dat, " %.3f", v);
        }
        for (int s = 0; s < 2; s++) {
            double live, delta;
            double q = rss_ratio(s == 0 ? "standalone" : "beam", al_names[a],
                                 &live, &delta);
            if (isnan(q))
                fprintf(dat, " ?");
            else
                fprintf(dat, " %.3f", q);
        }
        fprintf(dat, "\n");
    }
    fclose(dat);
    FILE *gp = create(path, sizeof path, workdir, "chart.gp");
    fprintf(gp,
            "set terminal pngcairo noenhanced size 1400,1000 font 'sans,11'\n"
            "set output '%s/chart.png'\n"
            "set datafile missing '?'\n"
            "set style data histograms\n"
            "set style histogram clustered gap 1\n"
            "set style fill solid 0.85 border -1\n"
            "set boxwidth 0.9\n"
            "set key top left\n"
            "set grid ytics\n"
            "set xtics rotate by -30\n"
            "set multiplot layout 2,1 title 'beam_alloc: make bench'\n"
            "set title 'churn 8-512 B, 1000 live slots: ns per free+alloc "
            "(median, log scale; lower is better)'\n"
            "set logscale y\n"
            "set ylabel 'ns/op'\n"
            "plot '%s' using 2:xtic(1) title 'standalone C', '' using 3 "
            "title 'BEAM normal scheduler', '' using 4 title 'BEAM dirty CPU "
            "scheduler'\n"
            "set title 'peak RSS growth / peak live bytes, mixed sizes (1.0 "
            "= no overhead; log scale; lower is better)'\n"
            "set ylabel 'RSS / live'\n"
            "set yrange [0.9:*]\n"
            "set ytics (1, 1.25, 1.5, 2, 3, 4, 8, 16, 32)\n"
            "plot '%s' using 5:xtic(1) title 'standalone C', '' using 6 "
            "title 'BEAM'\n"
            "unset multiplot\n",
            outdir, datpath, datpath);
    fclose(gp);
    return errors ? 3 : 0;
}
