/*
 * <beam_alloc/hooks.h>: the hook functions other C libraries ask for,
 * ready-made, so that an adopter writes none. Header-only; it links
 * nothing. Three shapes:
 *
 * (b) Malloc-signature hooks with no context (cJSON_InitHooks,
 *     json_set_alloc_funcs, xmlMemSetup, expat's XML_Memory_Handling_Suite,
 *     curl_global_init_mem): BEAM_MALLOC_HOOKS(prefix, allocator) defines,
 *     in the including file, prefix_malloc, prefix_free, prefix_realloc,
 *     prefix_calloc and prefix_strdup with the C library's signatures, each
 *     on the allocator expression, evaluated at every call:
 *
 *         static beam_gpa_t json_gpa;          // the library's own instance
 *         static beam_allocator_t json_allocator;
 *         BEAM_MALLOC_HOOKS(my_json, json_allocator);   // the ; is needed
 *         // in load: beam_gpa_init(&json_gpa, beam_large_allocator) once,
 *         json_allocator = beam_gpa_allocator(&json_gpa);
 *         cJSON_Hooks h = {my_json_malloc, my_json_free};
 *         cJSON_InitHooks(&h);
 *         xmlMemSetup(my_json_free, my_json_malloc, my_json_realloc,
 *                     my_json_strdup);
 *
 *     Such hooks are the library's, process-wide: every thread, every
 *     call, and after the NIF call returns (an object kept in a resource,
 *     a cache the library fills), so the allocator must be one that lives
 *     as long and serves every thread: an instance of the library's own,
 *     or beam_general_purpose_allocator; not beam_allocator, which is the
 *     calling thread's, the call's own under leak_check (a block freed in
 *     another call goes to another allocator: misuse), unless the library
 *     makes and frees every block within one call. A variable as the
 *     expression lets a test NIF move the library onto beam_allocator for
 *     the length of a call (leak_check, check_all_allocation_failures), as
 *     README's SQLite test does. Set the hooks before the library's first
 *     allocation: a block it took from malloc before, freed through
 *     prefix_free, is reported (foreign pointer) and left to leak.
 *
 *     The same told the caller's file and line, OpenSSL's
 *     CRYPTO_set_mem_functions: BEAM_MALLOC_HOOKS_FILE_LINE(prefix,
 *     allocator) defines prefix_malloc, prefix_realloc and prefix_free
 *     with CRYPTO_malloc_fn's, CRYPTO_realloc_fn's and CRYPTO_free_fn's
 *     signatures (file and line unused: reports name the caller, for
 *     OpenSSL mostly a helper of its own: OPENSSL_LH_insert,
 *     CRYPTO_strndup, CRYPTO_zalloc):
 *
 *         BEAM_MALLOC_HOOKS_FILE_LINE(my_ssl, ssl_allocator);
 *         CRYPTO_set_mem_functions(my_ssl_malloc, my_ssl_realloc,
 *                                  my_ssl_free);   // 0: too late, see README
 *
 * (a) Hooks with a context pointer, void *(void *ctx, size_t n) and
 *     void (void *ctx, void *p) (brotli's brotli_alloc_func and
 *     brotli_free_func, protobuf-c's ProtobufCAllocator, zstd's
 *     ZSTD_customMem, LZ4F_CustomMem's customAlloc and customFree):
 *     beam_hook_malloc and beam_hook_free, ctx a const beam_allocator_t *
 *     that outlives what the library holds (as for beam_zlib_use):
 *
 *         beam_allocator_t a = beam_allocator;     // outlives the encoder
 *         BrotliEncoderCreateInstance(beam_hook_malloc, beam_hook_free, &a);
 *
 *     (brotli's encoder, built as it ships, calls exit(1) when such a hook
 *     returns NULL: check_all_allocation_failures over it ends the VM, so
 *     check its decoder only; see README.)
 *
 *     The context last, void *(size_t n, void *ctx) and void (void *p,
 *     void *ctx) (pcre2_general_context_create): beam_hook_malloc_ctx_last
 *     and beam_hook_free_ctx_last:
 *
 *         pcre2_general_context *g = pcre2_general_context_create(
 *             beam_hook_malloc_ctx_last, beam_hook_free_ctx_last, &a);
 *
 * Lua's lua_Alloc, which frees and reallocates with the block's size:
 *     beam_lua_alloc, ud a const beam_allocator_t *, on the sized calls
 *     (no 16-byte header over the raw allocator; a wrong size reported by
 *     a general purpose allocator), at alignment 8 (BEAM_MAX_ALIGN, what
 *     luaconf.h's LUAI_MAXALIGN needs on 32- and 64-bit targets alike,
 *     unless lua_Number is a long double, LUA_FLOAT_LONGDOUBLE: 16 on
 *     x86-64, which these blocks do not promise):
 *
 *         lua_State *L = lua_newstate(beam_lua_alloc, &a);
 *
 *     A shrink that moves the block (a general purpose instance's, to a
 *     smaller size class) allocates, so it can fail: NULL, the block
 *     untouched, under fault injection or out of memory. Lua 5.4 copes;
 *     Lua 5.1 to 5.3 and LuaJIT assume a shrink never fails (5.1's lmem.c:
 *     "any reallocation to an equal or smaller size cannot fail!"), and a
 *     failed one there is an assertion or a memory error raised inside the
 *     collector: give those beam_raw_allocator, whose shrinks stay in
 *     place (through a failing allocator too).
 *
 * Every hook names its caller in reports (BEAM_RET_ADDR: "leak ...
 * allocated from cJSON_ParseWithLengthOpts (libcjson.so.1+0x..)"). The
 * allocation hooks keep this copy of the NIF library mapped once they ran,
 * as zlib's and zstd's do (see <beam_alloc/zlib.h>): a C library keeps
 * its hook pointers after a hot upgrade's purge unloads the copy that set
 * them. Two NIF libraries of one VM that link the same shared C library
 * share its process-wide hooks: the last one set wins, over blocks the
 * other's allocator made (misuse reports, or a crash over the raw
 * allocator); give such a library its hooks in one NIF library only.
 *
 * Semantics are the malloc-style calls' (<beam_alloc.h>, section 8): blocks
 * aligned to 16, free(NULL) does nothing, realloc(NULL, n) allocates,
 * calloc overflow gives NULL, malloc(0) gives a smallest block (not NULL),
 * realloc(p, 0) shrinks p to a smallest block, where glibc frees
 * p and returns NULL, and strdup(NULL) gives NULL, where glibc's faults. A
 * block from these hooks is freed through them (or the library's own free,
 * cJSON_free, xmlFree): never with free(), which jansson's documentation tells
 * of json_dumps' result.
 */
#ifndef BEAM_ALLOC_HOOKS_H
#define BEAM_ALLOC_HOOKS_H

#include <beam_alloc.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BEAM_HOOKS_HOOK BEAM_INTERNAL_HOOK
/* BEAM_MALLOC_HOOKS' functions are defined in the user's file, where clang
 * warns of an unused static inline function (-Wunused-function, in -Wall):
 * marked unused there (a library may take malloc and free only). */
#if defined(__clang__)
#define BEAM_INTERNAL_MACRO_HOOK                                               \
    BEAM_INTERNAL_UNUSED static __attribute__((noinline))
#else
#define BEAM_INTERNAL_MACRO_HOOK BEAM_INTERNAL_HOOK
#endif

/** Defines prefix_malloc, prefix_free, prefix_realloc, prefix_calloc and
 * prefix_strdup (static) on the allocator expression allocator, a
 * beam_allocator_t evaluated at every call. Use at file scope. */
#define BEAM_MALLOC_HOOKS(prefix, allocator)                                   \
    BEAM_INTERNAL_MACRO_HOOK void *prefix##_malloc(size_t size) {              \
        beam_internal_keep_mapped_once();                                      \
        return beam_malloc_at((allocator), size, BEAM_RET_ADDR());             \
    }                                                                          \
    BEAM_INTERNAL_MACRO_HOOK void prefix##_free(void *p) {                     \
        beam_mfree_at((allocator), p, BEAM_RET_ADDR());                        \
    }                                                                          \
    BEAM_INTERNAL_MACRO_HOOK void *prefix##_realloc(void *p, size_t size) {    \
        beam_internal_keep_mapped_once();                                      \
        return beam_mrealloc_at((allocator), p, size, BEAM_RET_ADDR());        \
    }                                                                          \
    BEAM_INTERNAL_MACRO_HOOK void *prefix##_calloc(size_t count,               \
                                                   size_t size) {              \
        beam_internal_keep_mapped_once();                                      \
        return beam_calloc_at((allocator), count, size, BEAM_RET_ADDR());      \
    }                                                                          \
    BEAM_INTERNAL_MACRO_HOOK char *prefix##_strdup(const char *s) {            \
        /* (NULL: NULL, where strlen would fault.) */                          \
        if (s == BEAM_INTERNAL_NULL)                                           \
            return BEAM_INTERNAL_NULL;                                         \
        beam_internal_keep_mapped_once();                                      \
        size_t n = strlen(s) + 1;                                              \
        char *copy = BEAM_INTERNAL_AS(                                         \
            char *, beam_malloc_at((allocator), n, BEAM_RET_ADDR()));          \
        if (copy != BEAM_INTERNAL_NULL)                                        \
            memcpy(copy, s, n);                                                \
        return copy;                                                           \
    }                                                                          \
    /* Takes the user's ; (needed: the next declaration would not parse) */    \
    typedef int beam_internal_hooks_end_t

/** Defines prefix_malloc, prefix_realloc and prefix_free (static) with
 * OpenSSL's CRYPTO_set_mem_functions signatures, the malloc-style
 * arguments followed by the caller's file and line (unused), on the
 * allocator expression as BEAM_MALLOC_HOOKS. Use at file scope. */
#define BEAM_MALLOC_HOOKS_FILE_LINE(prefix, allocator)                         \
    BEAM_INTERNAL_MACRO_HOOK void *prefix##_malloc(                            \
        size_t size, const char *file, int line) {                             \
        (void)file, (void)line;                                                \
        beam_internal_keep_mapped_once();                                      \
        return beam_malloc_at((allocator), size, BEAM_RET_ADDR());             \
    }                                                                          \
    BEAM_INTERNAL_MACRO_HOOK void *prefix##_realloc(                           \
        void *p, size_t size, const char *file, int line) {                    \
        (void)file, (void)line;                                                \
        beam_internal_keep_mapped_once();                                      \
        return beam_mrealloc_at((allocator), p, size, BEAM_RET_ADDR());        \
    }                                                                          \
    BEAM_INTERNAL_MACRO_HOOK void prefix##_free(void *p, const char *file,     \
                                                int line) {                    \
        (void)file, (void)line;                                                \
        beam_mfree_at((allocator), p, BEAM_RET_ADDR());                        \
    }                                                                          \
    /* Takes the user's ; as BEAM_MALLOC_HOOKS does */                         \
    typedef int beam_internal_hooks_end_t

/** Allocation hook with a context: ctx is a const beam_allocator_t *
 * (NULL: every allocation fails). */
BEAM_HOOKS_HOOK void *beam_hook_malloc(void *ctx, size_t size) {
    /* The library may free after this copy's unload: see above. */
    beam_internal_keep_mapped_once();
    return beam_malloc_at(beam_internal_allocator_at(ctx), size,
                          BEAM_RET_ADDR());
}

/** Free hook paired with beam_hook_malloc: frees p (NULL: nothing) to
 * the allocator ctx points to, the one that allocated it. */
BEAM_HOOKS_HOOK void beam_hook_free(void *ctx, void *p) {
    beam_mfree_at(beam_internal_allocator_at(ctx), p, BEAM_RET_ADDR());
}

/** beam_hook_malloc with the context last (pcre2's general context). */
BEAM_HOOKS_HOOK void *beam_hook_malloc_ctx_last(size_t size, void *ctx) {
    beam_internal_keep_mapped_once();
    return beam_malloc_at(beam_internal_allocator_at(ctx), size,
                          BEAM_RET_ADDR());
}

/** beam_hook_free with the context last (pcre2's general context). */
BEAM_HOOKS_HOOK void beam_hook_free_ctx_last(void *p, void *ctx) {
    beam_mfree_at(beam_internal_allocator_at(ctx), p, BEAM_RET_ADDR());
}

/* Lua's blocks: LUAI_MAXALIGN is a double, a pointer, a long and Lua's
 * integer and number, 8 at most on the targets beam_alloc builds for; the
 * raw allocator serves no more. */
#define BEAM_INTERNAL_LUA_ALIGN BEAM_MAX_ALIGN

/** lua_Alloc over the allocator ud points to (a const beam_allocator_t *
 * that outlives the lua_State): nsize 0 frees ptr (osize bytes) and
 * answers NULL; ptr NULL allocates nsize bytes (osize is then a Lua type
 * tag, not a size); otherwise ptr is resized from osize to nsize. */
BEAM_HOOKS_HOOK void *beam_lua_alloc(void *ud, void *ptr, size_t osize,
                                     size_t nsize) {
    beam_allocator_t a = beam_internal_allocator_at(ud);
    if (nsize == 0) {
        if (ptr != BEAM_INTERNAL_NULL)
            beam_free_bytes_at(a, ptr, osize, BEAM_INTERNAL_LUA_ALIGN,
                               BEAM_RET_ADDR());
        return BEAM_INTERNAL_NULL;
    }
    beam_internal_keep_mapped_once();
    if (ptr == BEAM_INTERNAL_NULL)
        return beam_alloc_bytes_at(a, nsize, BEAM_INTERNAL_LUA_ALIGN,
                                   BEAM_RET_ADDR());
    return beam_realloc_bytes_at(a, ptr, osize, BEAM_INTERNAL_LUA_ALIGN, nsize,
                                 BEAM_RET_ADDR());
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BEAM_ALLOC_HOOKS_H */
