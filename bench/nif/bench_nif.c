/*
 * bench/nif/bench_nif.c: the workloads of bench/workloads.c inside a real
 * BEAM, as a NIF over build/libbeam_alloc.a (beam_alloc backed by
 * enif_alloc). bench/nif/bench_nif.erl drives it; each cell is begun, run
 * and ended by separate NIF calls (one per repetition, each well under a
 * second), either all on a normal scheduler or all on a dirty CPU scheduler.
 * The second thread of the two-thread workloads is an enif_thread_create
 * thread.
 *
 * Peers inside the BEAM. mimalloc, jemalloc and tcmalloc (Debian's builds)
 * all export unprefixed malloc/free besides their own API. This NIF does not
 * link them: it dlopen()s each with RTLD_LOCAL and calls only its own API
 * (mi_malloc/mi_free, mallocx/sdallocx/rallocx, tc_malloc/tc_free) through
 * dlsym'ed pointers. With RTLD_LOCAL a library's symbols never join the
 * global scope, so the BEAM, libc and this NIF keep resolving malloc/free to
 * glibc (the "malloc" row is glibc's), while each peer's own calls bind to
 * itself; no block ever crosses from one implementation to another because
 * each workload frees with the API that allocated. (Linking a peer into the
 * NIF would make it a DT_NEEDED of an RTLD_LOCAL object: the same scoping,
 * but a NIF that fails to load when a peer is absent.)
 * All three use initial-exec TLS, which a dlopen'ed library takes from
 * glibc's small static-TLS surplus; jemalloc needs more than the default, so
 * bench/run.sh starts erl with GLIBC_TUNABLES=glibc.rtld.optional_static_tls
 * raised. A peer that still fails to load is reported as n/a with dlerror().
 * tcmalloc is libtcmalloc_minimal: the allocator without gperftools' heap
 * profiler and checker.
 */
#define _GNU_SOURCE

#include <erl_nif.h>

typedef struct bench_thread {
    ErlNifTid tid;
} bench_thread;

#define BENCH_HOST_NIF 1
#define BENCH_PEERS_DLOPEN 1
#define BENCH_WITH_MALLOC 1
#define BENCH_WITH_BEAM 1
#include "../workloads.c"
#include "../paired.c"

static int bench_host_thread_start(bench_thread *t, void *(*fn)(void *),
                                   void *arg) {
    return enif_thread_create((char *)"bench_worker", &t->tid, fn, arg, NULL);
}

static void bench_host_thread_join(bench_thread *t) {
    enif_thread_join(t->tid, NULL);
}

static ERL_NIF_TERM make_bin(ErlNifEnv *env, const char *s) {
    ERL_NIF_TERM t;
    size_t n = strlen(s);
    unsigned char *p = enif_make_new_binary(env, n, &t);
    memcpy(p, s, n);
    return t;
}

static bool get_str(ErlNifEnv *env, ERL_NIF_TERM t, char *buf, size_t len) {
    ErlNifBinary b;
    if (!enif_inspect_binary(env, t, &b) || b.size >= len)
        return false;
    memcpy(buf, b.data, b.size);
    buf[b.size] = 0;
    return true;
}

static bool get_scale(ErlNifEnv *env, ERL_NIF_TERM t, double *out) {
    if (enif_get_double(env, t, out))
        return *out > 0;
    int i;
    if (enif_get_int(env, t, &i) && i > 0) {
        *out = i;
        return true;
    }
    return false;
}

static ERL_NIF_TERM status_atom(ErlNifEnv *env, enum bench_status st) {
    return enif_make_atom(env, bench_status_names[st]);
}

static ERL_NIF_TERM nif_allocators(ErlNifEnv *env, int argc,
                                   const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (int i = BENCH_NALLOCS; i-- > 0;)
        list =
            enif_make_list_cell(env, make_bin(env, bench_allocs[i].name), list);
    return list;
}

static ERL_NIF_TERM nif_workloads(ErlNifEnv *env, int argc,
                                  const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (int i = W_COUNT; i-- > 0;)
        list =
            enif_make_list_cell(env, make_bin(env, bench_specs[i].name), list);
    return list;
}

/* [{Name, ok | Reason}] for the dlopen'ed peers. */
static ERL_NIF_TERM nif_peers(ErlNifEnv *env, int argc,
                              const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    struct bench_peer *ps[3] = {&bench_mi, &bench_je, &bench_tc};
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (int i = 3; i-- > 0;) {
        const char *e = BENCH_PEER_ERROR(*ps[i]);
        ERL_NIF_TERM v = e ? make_bin(env, e) : enif_make_atom(env, "ok");
        list = enif_make_list_cell(
            env, enif_make_tuple2(env, make_bin(env, ps[i]->name), v), list);
    }
    return list;
}

/* cell_begin(Alloc, Workload, Scale) -> ok | na | missing | error */
static ERL_NIF_TERM nif_cell_begin(ErlNifEnv *env, int argc,
                                   const ERL_NIF_TERM argv[]) {
    (void)argc;
    char an[64], wn[64];
    double scale;
    if (!get_str(env, argv[0], an, sizeof an) ||
        !get_str(env, argv[1], wn, sizeof wn) ||
        !get_scale(env, argv[2], &scale))
        return enif_make_badarg(env);
    int ai = bench_find_alloc(an), wi = bench_find_workload(wn);
    if (ai < 0 || wi < 0)
        return enif_make_badarg(env);
    if (bench_cell.open)
        bench_cell_end();
    return status_atom(env, bench_cell_begin(ai, wi, scale));
}

/* cell_rep() -> NsPerOp :: float() | error */
static ERL_NIF_TERM nif_cell_rep(ErlNifEnv *env, int argc,
                                 const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    double v = bench_cell_rep();
    if (v < 0)
        return enif_make_atom(env, "error");
    return enif_make_double(env, v);
}

static ERL_NIF_TERM nif_cell_end(ErlNifEnv *env, int argc,
                                 const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return status_atom(env, bench_cell_end());
}

/* cell_row(Setting, Sched) -> CSV line of the cell just ended. */
static ERL_NIF_TERM nif_cell_row(ErlNifEnv *env, int argc,
                                 const ERL_NIF_TERM argv[]) {
    (void)argc;
    char setting[32], sched[32], row[1024];
    if (!get_str(env, argv[0], setting, sizeof setting) ||
        !get_str(env, argv[1], sched, sizeof sched) || bench_cell.d == NULL)
        return enif_make_badarg(env);
    bench_cell_row(row, sizeof row, setting, sched);
    return make_bin(env, row);
}

/* rss_row(Alloc, Scale) -> CSV line; meant for a fresh BEAM per allocator. */
static ERL_NIF_TERM nif_rss_row(ErlNifEnv *env, int argc,
                                const ERL_NIF_TERM argv[]) {
    (void)argc;
    char an[64], row[1024];
    double scale;
    if (!get_str(env, argv[0], an, sizeof an) ||
        !get_scale(env, argv[1], &scale))
        return enif_make_badarg(env);
    int ai = bench_find_alloc(an);
    if (ai < 0)
        return enif_make_badarg(env);
    bench_rss_row(row, sizeof row, "beam", "dirty", ai, scale);
    return make_bin(env, row);
}

/* paired_groups() -> [Name]: the paired groups that run in the BEAM. */
static ERL_NIF_TERM nif_paired_groups(ErlNifEnv *env, int argc,
                                      const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (int i = PAIRED_NGROUPS; i-- > 0;)
        if (paired_groups[i].where & PS_BEAM)
            list = enif_make_list_cell(
                env, make_bin(env, paired_groups[i].name), list);
    return list;
}

/* paired_begin(Group, Scale, Setting) -> Reps | error. The members are set
 * up and warmed up on the calling scheduler. */
static char paired_setting[32];
static ERL_NIF_TERM nif_paired_begin(ErlNifEnv *env, int argc,
                                     const ERL_NIF_TERM argv[]) {
    (void)argc;
    char gn[64];
    double scale;
    if (!get_str(env, argv[0], gn, sizeof gn) ||
        !get_scale(env, argv[1], &scale) ||
        !get_str(env, argv[2], paired_setting, sizeof paired_setting))
        return enif_make_badarg(env);
    int gi = paired_find_group(gn);
    if (gi < 0)
        return enif_make_badarg(env);
    if (pr.g != NULL) {
        FILE *null = fopen("/dev/null", "w");
        paired_end(null != NULL ? null : stderr);
        if (null != NULL)
            fclose(null);
    }
    if (paired_begin(gi, scale, paired_setting) != 0)
        return enif_make_atom(env, "error");
    return enif_make_int(env, paired_reps_for(gi));
}

/* paired_rep() -> ok | error: one repetition, every member once. */
static ERL_NIF_TERM nif_paired_rep(ErlNifEnv *env, int argc,
                                   const ERL_NIF_TERM argv[]) {
    (void)argc;
    (void)argv;
    return enif_make_atom(env, paired_rep() == 0 ? "ok" : "error");
}

/* paired_end(Path) -> ok: results appended to the file at Path. */
static ERL_NIF_TERM nif_paired_end(ErlNifEnv *env, int argc,
                                   const ERL_NIF_TERM argv[]) {
    (void)argc;
    char path[4096];
    if (!get_str(env, argv[0], path, sizeof path))
        return enif_make_badarg(env);
    FILE *f = fopen(path, "a");
    if (f == NULL)
        return enif_make_atom(env, "error");
    paired_end(f);
    fclose(f);
    return enif_make_atom(env, "ok");
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    (void)env;
    (void)priv;
    (void)info;
    bench_peers_open();
    return 0;
}

#define DIRTY ERL_NIF_DIRTY_JOB_CPU_BOUND
static ErlNifFunc funcs[] = {
    {"allocators", 0, nif_allocators, 0},
    {"workloads", 0, nif_workloads, 0},
    {"peers", 0, nif_peers, 0},
    {"cell_begin", 3, nif_cell_begin, 0},
    {"cell_rep", 0, nif_cell_rep, 0},
    {"cell_end", 0, nif_cell_end, 0},
    {"cell_begin_dirty", 3, nif_cell_begin, DIRTY},
    {"cell_rep_dirty", 0, nif_cell_rep, DIRTY},
    {"cell_end_dirty", 0, nif_cell_end, DIRTY},
    {"cell_row", 2, nif_cell_row, 0},
    {"rss_row", 2, nif_rss_row, DIRTY},
    {"paired_groups", 0, nif_paired_groups, 0},
    {"paired_begin", 3, nif_paired_begin, 0},
    {"paired_rep", 0, nif_paired_rep, 0},
    {"paired_end", 1, nif_paired_end, 0},
    {"paired_begin_dirty", 3, nif_paired_begin, DIRTY},
    {"paired_rep_dirty", 0, nif_paired_rep, DIRTY},
    {"paired_end_dirty", 1, nif_paired_end, DIRTY},
};

ERL_NIF_INIT(bench_nif, funcs, load, NULL, NULL, NULL)
