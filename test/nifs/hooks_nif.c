/*
 * Three hook shapes through <beam_alloc/hooks.h>, with no shim written
 * here: the NIFs of HooksNif over test/nifs/foreign/hooklib.c, a library
 * of its own (no frame pointers) standing for cJSON/libxml2 (global
 * hooks), OpenSSL (global hooks told file and line), brotli/protobuf-c (a
 * context pointer), pcre2 (a context pointer passed last) and Lua
 * (lua_Alloc).
 *
 * The global hooks run on hooklib's own instance (hooklib_gpa), as in
 * production; global_words_on_call moves them onto the call's allocator
 * for its length (README's SQLite test pattern), so that leak_check and
 * check_all_allocation_failures reach hooklib's blocks.
 */
#include "nif_util.h"

#include <beam_alloc/hooks.h>

/* hooklib's interface (what its header would say). */
typedef void *(*hooklib_ctx_alloc_fn)(void *ctx, size_t n);
typedef void (*hooklib_ctx_free_fn)(void *ctx, void *p);
typedef void *(*hooklib_lua_alloc_fn)(void *ud, void *ptr, size_t osize,
                                      size_t nsize);
void hooklib_set_hooks(void *(*m)(size_t), void (*f)(void *),
                       void *(*r)(void *, size_t), void *(*c)(size_t, size_t),
                       char *(*s)(const char *));
char *hooklib_words(const char *text);
void hooklib_release(char *s);
int hooklib_ctx_words(hooklib_ctx_alloc_fn alloc, hooklib_ctx_free_fn release,
                      void *ctx, const char *text, char *out, size_t cap);
int hooklib_lua_words(hooklib_lua_alloc_fn f, void *ud, const char *text,
                      char *out, size_t cap);
void hooklib_set_fl_hooks(void *(*m)(size_t, const char *, int),
                          void *(*r)(void *, size_t, const char *, int),
                          void (*f)(void *, const char *, int));
char *hooklib_fl_words(const char *text);
void hooklib_fl_release(char *s);
int hooklib_last_words(void *(*alloc)(size_t, void *),
                       void (*release)(void *, void *), void *ctx,
                       const char *text, char *out, size_t cap, int keep);

static beam_gpa_t hooklib_gpa;
static bool hooklib_gpa_ready;
static beam_allocator_t hooklib_allocator; /* what the global hooks use */

BEAM_MALLOC_HOOKS(hooklib, hooklib_allocator);
BEAM_MALLOC_HOOKS_FILE_LINE(hooklib_fl, hooklib_allocator);

#define TEXT_MAX 1024

/* argv[0] as a NUL-terminated string in text (of TEXT_MAX bytes). */
static bool get_text(ErlNifEnv *env, ERL_NIF_TERM term, char *text) {
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, term, &bin) || bin.size >= TEXT_MAX)
        return false;
    memcpy(text, bin.data, bin.size);
    text[bin.size] = '\0';
    return true;
}

static ERL_NIF_TERM make_string(ErlNifEnv *env, const char *s) {
    ERL_NIF_TERM bin;
    size_t len = strlen(s);
    memcpy(enif_make_new_binary(env, len, &bin), s, len);
    return bin;
}

static ERL_NIF_TERM global_words(ErlNifEnv *env, ERL_NIF_TERM arg) {
    char text[TEXT_MAX];
    if (!get_text(env, arg, text))
        return enif_make_badarg(env);
    char *words = hooklib_words(text);
    if (words == NULL)
        return beam_make_error(env, "enomem");
    ERL_NIF_TERM result = make_string(env, words);
    hooklib_release(words);
    return result;
}

/* On hooklib's own instance, as in production. */
BEAM_NIF(global_words_nif) {
    return global_words(env, argv[0]);
}

/* On the call's allocator for the call's length: for tests only (no
 * other thread may use hooklib meanwhile). */
BEAM_NIF(global_words_on_call) {
    hooklib_allocator = beam_allocator;
    ERL_NIF_TERM result = global_words(env, argv[0]);
    hooklib_allocator = beam_gpa_allocator(&hooklib_gpa);
    return result;
}

/* A result never released: a leak in hooklib's blocks (on the call's
 * allocator, so that leak_check finds it). */
BEAM_NIF(global_leak, .leak_check = true) {
    hooklib_allocator = beam_allocator;
    char *words = hooklib_words("left behind");
    hooklib_allocator = beam_gpa_allocator(&hooklib_gpa);
    return words == NULL ? beam_make_error(env, "enomem")
                         : enif_make_atom(env, "ok");
}

/* hooklib_gpa's live bytes (0 once every result is released). */
BEAM_NIF(global_live_bytes) {
    beam_alloc_stats st;
    beam_allocator_stats(beam_gpa_allocator(&hooklib_gpa), &st);
    return enif_make_uint64(env, st.live_bytes);
}

/* OpenSSL's shape, on the call's allocator for the call's length (tests
 * only); leak: the result is never released. */
static ERL_NIF_TERM fl_words(ErlNifEnv *env, ERL_NIF_TERM arg, bool leak) {
    char text[TEXT_MAX];
    if (!get_text(env, arg, text))
        return enif_make_badarg(env);
    hooklib_allocator = beam_allocator;
    char *words = hooklib_fl_words(text);
    ERL_NIF_TERM result = words == NULL ? beam_make_error(env, "enomem")
                                        : make_string(env, words);
    if (!leak)
        hooklib_fl_release(words);
    hooklib_allocator = beam_gpa_allocator(&hooklib_gpa);
    return result;
}
BEAM_NIF(fl_words_checked) {
    return fl_words(env, argv[0], false);
}
BEAM_NIF(fl_leak, .leak_check = true) {
    return fl_words(env, argv[0], true);
}

/* pcre2's shape: the context last; leak: the library's copy is kept. */
static ERL_NIF_TERM last_words(ErlNifEnv *env, ERL_NIF_TERM arg, bool leak) {
    char text[TEXT_MAX], out[TEXT_MAX];
    if (!get_text(env, arg, text))
        return enif_make_badarg(env);
    beam_allocator_t a = beam_allocator;
    if (hooklib_last_words(beam_hook_malloc_ctx_last, beam_hook_free_ctx_last,
                           &a, text, out, sizeof out, leak) != 0)
        return beam_make_error(env, "enomem");
    return make_string(env, out);
}
BEAM_NIF(last_words_nif) {
    return last_words(env, argv[0], false);
}
BEAM_NIF(last_leak, .leak_check = true) {
    return last_words(env, argv[0], true);
}

BEAM_NIF(ctx_words) {
    char text[TEXT_MAX], out[TEXT_MAX];
    if (!get_text(env, argv[0], text))
        return enif_make_badarg(env);
    beam_allocator_t a = beam_allocator; /* outlives the library's use */
    if (hooklib_ctx_words(beam_hook_malloc, beam_hook_free, &a, text, out,
                          sizeof out) != 0)
        return beam_make_error(env, "enomem");
    return make_string(env, out);
}

BEAM_NIF(lua_words) {
    char text[TEXT_MAX], out[TEXT_MAX];
    if (!get_text(env, argv[0], text))
        return enif_make_badarg(env);
    beam_allocator_t a = beam_allocator;
    if (hooklib_lua_words(beam_lua_alloc, &a, text, out, sizeof out) != 0)
        return beam_make_error(env, "enomem");
    return make_string(env, out);
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
    /* Once: a copy loaded again from the same file is the kept one. */
    if (!hooklib_gpa_ready) {
        beam_gpa_init(&hooklib_gpa, beam_large_allocator);
        hooklib_gpa_ready = true;
    }
    hooklib_allocator = beam_gpa_allocator(&hooklib_gpa);
    beam_stats_register("hooklib", hooklib_allocator);
    hooklib_set_hooks(hooklib_malloc, hooklib_free, hooklib_realloc,
                      hooklib_calloc, hooklib_strdup);
    hooklib_set_fl_hooks(hooklib_fl_malloc, hooklib_fl_realloc,
                         hooklib_fl_free);
    return load_capturing_reports(env, priv, info);
}

/* clang-format off */
static ErlNifFunc funcs[] = {
    {"global_words", 1, global_words_nif, 0},
    {"global_words_checked", 1, global_words_on_call, 0},
    {"global_leak", 0, global_leak, 0},
    {"global_live_bytes", 0, global_live_bytes, 0},
    {"ctx_words", 1, ctx_words, 0},
    {"lua_words", 1, lua_words, 0},
    {"fl_words_checked", 1, fl_words_checked, 0},
    {"fl_leak", 1, fl_leak, 0},
    {"last_words", 1, last_words_nif, 0},
    {"last_leak", 1, last_leak, 0},
    {"take_reports", 0, take_reports, 0},
};
/* clang-format on */

BEAM_NIF_INIT(Elixir.HooksNif, funcs, load, NULL, NULL)
