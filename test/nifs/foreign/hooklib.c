/*
 * A C library of each allocator-hook shape <beam_alloc/hooks.h> serves,
 * built as a shared object of its own without frame pointers (as a
 * distribution's library is): what HooksNif wraps.
 *
 *   - global hooks without a context, set once for the process (cJSON's
 *     cJSON_InitHooks, libxml2's xmlMemSetup): hooklib_set_hooks;
 *   - hooks with a context pointer (brotli, protobuf-c):
 *     hooklib_ctx_words;
 *   - Lua's lua_Alloc, sized frees: hooklib_lua_words;
 *   - global hooks told the caller's file and line (OpenSSL's
 *     CRYPTO_set_mem_functions): hooklib_set_fl_hooks, hooklib_fl_words;
 *   - a context pointer passed last (pcre2's general context):
 *     hooklib_last_words.
 *
 * Each splits a text into words, copies them, joins them again with one
 * space and frees its working memory: allocation, growth, free(NULL) and
 * strdup as such libraries do them.
 */
#include <stddef.h>
#include <string.h>

#define HOOKLIB_API __attribute__((visibility("default")))

/* ---- global hooks (cJSON, libxml2) ---------------------------------- */

typedef void *(*hooklib_malloc_fn)(size_t);
typedef void (*hooklib_free_fn)(void *);
typedef void *(*hooklib_realloc_fn)(void *, size_t);
typedef void *(*hooklib_calloc_fn)(size_t, size_t);
typedef char *(*hooklib_strdup_fn)(const char *);

static struct {
    hooklib_malloc_fn malloc_fn;
    hooklib_free_fn free_fn;
    hooklib_realloc_fn realloc_fn;
    hooklib_calloc_fn calloc_fn;
    hooklib_strdup_fn strdup_fn;
} hooks;

HOOKLIB_API void hooklib_set_hooks(hooklib_malloc_fn m, hooklib_free_fn f,
                                   hooklib_realloc_fn r, hooklib_calloc_fn c,
                                   hooklib_strdup_fn s) {
    hooks.malloc_fn = m;
    hooks.free_fn = f;
    hooks.realloc_fn = r;
    hooks.calloc_fn = c;
    hooks.strdup_fn = s;
}

/* The words of text, each a strdup'd copy, in a table grown by realloc
 * from a calloc'd start. NULL when out of memory (nothing kept). */
static char **split(const char *text, size_t *count) {
    size_t cap = 2, n = 0;
    char **words = hooks.calloc_fn(cap, sizeof *words);
    char buf[256];
    const char *p = text;
    while (words != NULL && *p != '\0') {
        size_t len = strcspn(p, " ");
        if (len > 0 && len < sizeof buf) {
            memcpy(buf, p, len);
            buf[len] = '\0';
            if (n == cap) {
                char **grown = hooks.realloc_fn(words, 2 * cap * sizeof *words);
                if (grown == NULL)
                    goto fail;
                words = grown;
                cap *= 2;
            }
            if ((words[n] = hooks.strdup_fn(buf)) == NULL)
                goto fail;
            n++;
        }
        p += len + (p[len] == ' ');
    }
    *count = n;
    return words;
fail:
    while (n > 0)
        hooks.free_fn(words[--n]);
    hooks.free_fn(words);
    return NULL;
}

/* The words joined by one space, from the hooks (free it with
 * hooklib_release); NULL when out of memory. */
HOOKLIB_API char *hooklib_words(const char *text) {
    size_t n = 0, total = 1;
    char **words = split(text, &n);
    if (words == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        total += strlen(words[i]) + 1;
    char *out = hooks.malloc_fn(total);
    if (out != NULL) {
        out[0] = '\0';
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                strcat(out, " ");
            strcat(out, words[i]);
        }
    }
    for (size_t i = 0; i < n; i++)
        hooks.free_fn(words[i]);
    hooks.free_fn(words);
    hooks.free_fn(NULL); /* as libraries do */
    return out;
}

HOOKLIB_API void hooklib_release(char *s) {
    hooks.free_fn(s);
}

/* ---- a context pointer (brotli, protobuf-c) ------------------------- */

typedef void *(*hooklib_ctx_alloc_fn)(void *ctx, size_t n);
typedef void (*hooklib_ctx_free_fn)(void *ctx, void *p);

/* The words of copy (cut up in place) joined by one space into out (of
 * size cap, at least 1). */
static void join_words(char *copy, char *out, size_t cap) {
    size_t o = 0;
    for (char *w = strtok(copy, " "); w != NULL; w = strtok(NULL, " ")) {
        size_t n = strlen(w);
        if (o + n + 2 > cap)
            break;
        if (o > 0)
            out[o++] = ' ';
        memcpy(out + o, w, n);
        o += n;
    }
    out[o] = '\0';
}

/* The words of text joined by one space into out (of size cap), through a
 * copy of text the hooks hold; -1 when out of memory. */
HOOKLIB_API int hooklib_ctx_words(hooklib_ctx_alloc_fn alloc,
                                  hooklib_ctx_free_fn release, void *ctx,
                                  const char *text, char *out, size_t cap) {
    size_t len = strlen(text);
    char *copy = alloc(ctx, len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, text, len + 1);
    join_words(copy, out, cap);
    release(ctx, copy);
    return 0;
}

/* ---- Lua's lua_Alloc ------------------------------------------------ */

typedef void *(*hooklib_lua_alloc_fn)(void *ud, void *ptr, size_t osize,
                                      size_t nsize);

/* As Lua does: a first block with ptr NULL and a type tag for osize, grown
 * and shrunk with its exact size, freed with nsize 0. The words of text
 * joined by one space into out; -1 when out of memory. */
HOOKLIB_API int hooklib_lua_words(hooklib_lua_alloc_fn f, void *ud,
                                  const char *text, char *out, size_t cap) {
    size_t size = 4, used = 0;
    char *buf = f(ud, NULL, 4 /* LUA_TSTRING */, size);
    if (buf == NULL)
        return -1;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == ' ' && (used == 0 || buf[used - 1] == ' '))
            continue;
        if (used + 1 == size) {
            char *grown = f(ud, buf, size, 2 * size);
            if (grown == NULL) {
                f(ud, buf, size, 0);
                return -1;
            }
            buf = grown;
            size *= 2;
        }
        buf[used++] = *p;
    }
    if (used > 0 && buf[used - 1] == ' ')
        used--;
    char *shrunk = f(ud, buf, size, used + 1); /* Lua shrinks its vectors */
    if (shrunk == NULL) {
        f(ud, buf, size, 0);
        return -1;
    }
    buf = shrunk;
    size = used + 1;
    buf[used] = '\0';
    if (used + 1 <= cap)
        memcpy(out, buf, used + 1);
    f(ud, buf, size, 0);
    return used + 1 <= cap ? 0 : -1;
}

/* ---- global hooks with file and line (OpenSSL) ---------------------- */

typedef void *(*hooklib_fl_malloc_fn)(size_t, const char *, int);
typedef void *(*hooklib_fl_realloc_fn)(void *, size_t, const char *, int);
typedef void (*hooklib_fl_free_fn)(void *, const char *, int);

static struct {
    hooklib_fl_malloc_fn malloc_fn;
    hooklib_fl_realloc_fn realloc_fn;
    hooklib_fl_free_fn free_fn;
} fl_hooks;

HOOKLIB_API void hooklib_set_fl_hooks(hooklib_fl_malloc_fn m,
                                      hooklib_fl_realloc_fn r,
                                      hooklib_fl_free_fn f) {
    fl_hooks.malloc_fn = m;
    fl_hooks.realloc_fn = r;
    fl_hooks.free_fn = f;
}

/* The words of text joined by one space (free it with
 * hooklib_fl_release), in a block grown from a small one by realloc, as
 * OpenSSL's BUF_MEM grows; NULL when out of memory. */
HOOKLIB_API char *hooklib_fl_words(const char *text) {
    size_t len = strlen(text);
    char *copy = fl_hooks.malloc_fn(len + 1, __FILE__, __LINE__);
    if (copy == NULL)
        return NULL;
    memcpy(copy, text, len + 1);
    char *out = fl_hooks.realloc_fn(NULL, 1, __FILE__, __LINE__);
    char *grown =
        out ? fl_hooks.realloc_fn(out, len + 1, __FILE__, __LINE__) : NULL;
    if (grown == NULL)
        fl_hooks.free_fn(out, __FILE__, __LINE__);
    else
        join_words(copy, grown, len + 1);
    fl_hooks.free_fn(copy, __FILE__, __LINE__);
    fl_hooks.free_fn(NULL, __FILE__, __LINE__); /* as OpenSSL does */
    return grown;
}

HOOKLIB_API void hooklib_fl_release(char *s) {
    fl_hooks.free_fn(s, __FILE__, __LINE__);
}

/* ---- a context pointer passed last (pcre2's general context) -------- */

typedef void *(*hooklib_last_alloc_fn)(size_t n, void *ctx);
typedef void (*hooklib_last_free_fn)(void *p, void *ctx);

/* As hooklib_ctx_words, the context last as pcre2 passes it; keep: the
 * copy is left allocated (a leak, for tests). */
HOOKLIB_API int hooklib_last_words(hooklib_last_alloc_fn alloc,
                                   hooklib_last_free_fn release, void *ctx,
                                   const char *text, char *out, size_t cap,
                                   int keep) {
    size_t len = strlen(text);
    char *copy = alloc(len + 1, ctx);
    if (copy == NULL)
        return -1;
    memcpy(copy, text, len + 1);
    join_words(copy, out, cap);
    if (!keep)
        release(copy, ctx);
    return 0;
}
