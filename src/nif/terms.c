/*
 * Term helpers for NIFs: the few constructors every NIF in this library's
 * tests and demos needs, and that users would otherwise rewrite in each
 * project. Only in the NIF build (needs erl_nif.h).
 */
#include "nif_internal.h"

#include <stdio.h>
#include <string.h>

/* Elements are read with memcpy: the caller's array need not be aligned for
 * the element type (it may be a slice of a byte buffer). */
static uint64_t load_uint(const unsigned char *p, size_t elem_size) {
    switch (elem_size) {
    case 1:
        return *p;
    case 2: {
        uint16_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    case 4: {
        uint32_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    default: {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    }
}

ERL_NIF_TERM beam_make_uint_list(ErlNifEnv *env, const void *p, size_t n,
                                 size_t elem_size) {
    if (elem_size != 1 && elem_size != 2 && elem_size != 4 && elem_size != 8)
        return enif_make_badarg(env);
    if (p == NULL && n != 0)
        return enif_make_badarg(env);
    const unsigned char *bytes = p;
    ERL_NIF_TERM list = enif_make_list(env, 0);
    /* Built from the tail so that no reversal pass is needed. */
    for (size_t i = n; i-- > 0;) {
        uint64_t v = load_uint(bytes + i * elem_size, elem_size);
        list = enif_make_list_cell(env, enif_make_uint64(env, (ErlNifUInt64)v),
                                   list);
    }
    return list;
}

ERL_NIF_TERM beam_make_error(ErlNifEnv *env, const char *reason) {
    return enif_make_tuple2(env, enif_make_atom(env, "error"),
                            enif_make_atom(env, reason));
}

/* The length of the valid UTF-8 sequence at p (n bytes left), 0 when
 * there is none (RFC 3629: no overlong forms, no surrogates, nothing above
 * U+10FFFF). */
static size_t utf8_sequence(const unsigned char *p, size_t n) {
    unsigned char c = p[0];
    size_t len = c < 0x80                 ? 1
                 : c >= 0xC2 && c <= 0xDF ? 2
                 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4
                                          : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F) ||
        (c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))
        return 0;
    return len;
}

/* Copy n bytes of text, each byte of no valid UTF-8 sequence written as
 * '?': messages become Elixir strings (an exception's message), and a C
 * library's text (a C++ what(), cut short in the middle of a character)
 * need not be UTF-8. */
static void copy_as_utf8(unsigned char *out, const char *text, size_t n) {
    const unsigned char *p = (const unsigned char *)text;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_sequence(p + i, n - i);
        if (len == 0) {
            out[i++] = '?';
            continue;
        }
        memcpy(out + i, p + i, len);
        i += len;
    }
}

/* "head: message" (head NULL: message alone; message NULL: "") as a
 * binary, in UTF-8; false without memory. */
static bool text_binary(ErlNifEnv *env, const char *head, const char *message,
                        ERL_NIF_TERM *text) {
    const char *sep = head != NULL ? ": " : "";
    if (head == NULL)
        head = "";
    if (message == NULL)
        message = "";
    size_t h = strlen(head), s = strlen(sep), len = strlen(message);
    unsigned char *buf = enif_make_new_binary(env, h + s + len, text);
    if (buf == NULL)
        return false;
    copy_as_utf8(buf, head, h);
    memcpy(buf + h, sep, s);
    copy_as_utf8(buf + h + s, message, len);
    return true;
}

static bool message_binary(ErlNifEnv *env, const char *message,
                           ERL_NIF_TERM *text) {
    return text_binary(env, NULL, message, text);
}

bool beam__error_term(ErlNifEnv *env, const char *tag, const char *message,
                      ERL_NIF_TERM *out) {
    ERL_NIF_TERM text;
    if (strlen(tag) > 255 || !message_binary(env, message, &text))
        return false;
    *out = enif_make_tuple2(env, enif_make_atom(env, tag), text);
    return true;
}

/* The errors both languages name, each its own way: an Erlang name in an
 * Elixir module raises Elixir's exception, and Elixir's name in an Erlang
 * module raises the Erlang error (a NIF library shared by both showed
 * Erlang callers {'ArgumentError', ...}: found in a bug hunt). to_elixir:
 * the first way too ("error" goes to Elixir as any other lower-case name
 * does, RuntimeError "error: message"). */
static const struct {
    const char *erlang, *elixir;
    bool to_elixir;
} known_errors[] = {{"badarg", "ArgumentError", true},
                    {"badarith", "ArithmeticError", true},
                    {"system_limit", "SystemLimitError", true},
                    {"error", "RuntimeError", false}};
#define KNOWN_ERRORS (sizeof known_errors / sizeof known_errors[0])

/* beam_raise's reason in an Erlang module: {Name, Message}, a leading
 * "Elixir." dropped from the name and Elixir's names of Erlang's errors
 * turned back into them, what Erlang callers match. */
static bool erlang_error_term(ErlNifEnv *env, const char *exception,
                              const char *message, ERL_NIF_TERM *out) {
    static const char prefix[] = "Elixir.";
    if (exception == NULL)
        exception = "error";
    if (strncmp(exception, prefix, sizeof prefix - 1) == 0)
        exception += sizeof prefix - 1;
    for (size_t i = 0; i < KNOWN_ERRORS; i++)
        if (strcmp(exception, known_errors[i].elixir) == 0)
            exception = known_errors[i].erlang;
    return beam__error_term(env, exception, message, out);
}

ERL_NIF_TERM beam_raise(ErlNifEnv *env, const char *exception,
                        const char *message) {
    ERL_NIF_TERM reason;
    bool made = beam__module_is_erlang()
                    ? erlang_error_term(env, exception, message, &reason)
                    : beam__exception_term(env, exception, message, &reason);
    if (!made)
        return enif_make_badarg(env);
    return enif_raise_exception(env, reason);
}

/* An Erlang error name (lower case: no Elixir module) in an Elixir module:
 * the exception Elixir gives that error, else RuntimeError with the name
 * before the message (*head). beam_raise(env, "badarg", ...), the header's
 * own example, raised a struct of no module, %{__struct__:
 * :"Elixir.badarg"}, whose message Exception.message/1 could not read. */
static const char *elixir_name_of(const char *exception, const char **head) {
    *head = NULL;
    if (!(exception[0] >= 'a' && exception[0] <= 'z'))
        return exception;
    for (size_t i = 0; i < KNOWN_ERRORS; i++)
        if (known_errors[i].to_elixir &&
            strcmp(exception, known_errors[i].erlang) == 0)
            return known_errors[i].elixir;
    *head = exception;
    return "RuntimeError";
}

bool beam__exception_term(ErlNifEnv *env, const char *exception,
                          const char *message, ERL_NIF_TERM *out) {
    /* Elixir module atoms carry the "Elixir." prefix; accept the name
     * either way so callers can write what they see in Elixir. */
    static const char prefix[] = "Elixir.";
    char module[256];
    const char *head = NULL;
    if (exception == NULL)
        exception = "RuntimeError";
    else
        exception = elixir_name_of(exception, &head);
    /* A name cut to fit would raise a struct of another module. */
    int n = strncmp(exception, prefix, sizeof prefix - 1) == 0
                ? snprintf(module, sizeof module, "%s", exception)
                : snprintf(module, sizeof module, "%s%s", prefix, exception);
    if (n < 0 || n > 255) /* longer than any atom */
        return false;

    ERL_NIF_TERM text;
    if (head != NULL && strlen(head) > 255) /* longer than any atom */
        return false;
    if (!text_binary(env, head, message, &text))
        return false;

    /* An exception is a struct with __exception__: true; raised as an
     * error with that map as reason, Elixir rescues it as the struct. */
    ERL_NIF_TERM keys[3] = {enif_make_atom(env, "__struct__"),
                            enif_make_atom(env, "__exception__"),
                            enif_make_atom(env, "message")};
    ERL_NIF_TERM values[3] = {enif_make_atom(env, module),
                              enif_make_atom(env, "true"), text};
    return enif_make_map_from_arrays(env, keys, values, 3, out) != 0;
}
