/*
 * word_freq: counts the words of standard input, most frequent first, on
 * beam_alloc's standalone library. The words live in an arena (freed in one
 * step), the table in a general purpose allocator instance that checks for
 * leaks at the end; --self-test runs the counting under the failing
 * allocator, failing each allocation in turn, and checks that every failure
 * is reported and leaks nothing.
 */
#include <beam_alloc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    const char *word;
    size_t count;
} entry;

typedef struct table {
    beam_allocator_t a;     /* the table's memory */
    beam_allocator_t words; /* the words' memory (an arena) */
    entry *items;
    size_t len, cap;
} table;

/* Adds one occurrence of word[0..n); false when memory ran out (the table
 * is unchanged). */
static bool count_word(table *t, const char *word, size_t n) {
    for (size_t i = 0; i < t->len; i++)
        if (strlen(t->items[i].word) == n &&
            memcmp(t->items[i].word, word, n) == 0) {
            t->items[i].count++;
            return true;
        }
    if (t->len == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 2;
        entry *grown = beam_realloc(t->a, t->items, t->cap, cap);
        if (grown == NULL)
            return false;
        t->items = grown;
        t->cap = cap;
    }
    char *copy = beam_alloc(t->words, char, n + 1);
    if (copy == NULL)
        return false;
    memcpy(copy, word, n);
    copy[n] = '\0';
    t->items[t->len++] = (entry){copy, 1};
    return true;
}

/* Counts the words of text into t; false when memory ran out. */
static bool count_words(table *t, const char *text) {
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ' ' && *p != '\n' && *p != '\t')
            p++;
        if (p > start && !count_word(t, start, (size_t)(p - start)))
            return false;
    }
    return true;
}

static void table_free(table *t) {
    beam_free(t->a, t->items, t->cap);
    *t = (table){t->a, t->words, NULL, 0, 0};
}

static int by_count(const void *x, const void *y) {
    const entry *a = x, *b = y;
    if (a->count != b->count)
        return a->count < b->count ? 1 : -1;
    return strcmp(a->word, b->word);
}

static const char sample[] = "b a c a b a";

/* Fails allocation 0, 1, ... of counting the sample in turn, with the
 * arena and the table both over the failing allocator: each run must
 * report the failure, and the leak-checking instance must be empty after
 * it. Returns the number of problems. */
static int self_test(void) {
    int problems = 0;
    for (size_t fail = 0;; fail++) {
        beam_gpa_t gpa;
        beam_gpa_init_ex(&gpa, beam_large_allocator, BEAM_GPA_TRACK_SITES);
        beam_failing_t failing;
        beam_failing_init(&failing, beam_gpa_allocator(&gpa), fail);
        beam_arena_t arena;
        beam_arena_init(&arena, beam_failing_allocator(&failing));
        table t = {beam_failing_allocator(&failing),
                   beam_arena_allocator(&arena), NULL, 0, 0};

        bool ok = count_words(&t, sample);
        table_free(&t);
        beam_arena_deinit(&arena);
        if (beam_gpa_deinit(&gpa)) {
            fprintf(stderr, "self-test: failing allocation %zu leaked\n", fail);
            problems++;
        }
        if (ok) {
            /* No allocation failed: every one has been tried. */
            printf("self-test: %zu allocation failures handled\n", fail);
            if (fail == 0) {
                fprintf(stderr, "self-test: nothing was allocated\n");
                problems++;
            }
            return problems;
        }
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--self-test") == 0)
        return self_test() == 0 ? 0 : 1;

    /* Standard input, read through the general purpose allocator. */
    beam_gpa_t gpa;
    beam_gpa_init_ex(&gpa, beam_large_allocator, BEAM_GPA_TRACK_SITES);
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    size_t len = 0, cap = 4096;
    char *text = beam_alloc(a, char, cap);
    for (size_t got; text != NULL &&
                     (got = fread(text + len, 1, cap - len - 1, stdin)) > 0;) {
        len += got;
        if (cap - len == 1) {
            char *grown = beam_realloc(a, text, cap, 2 * cap);
            if (grown == NULL)
                beam_free(a, text, cap);
            text = grown;
            cap *= 2;
        }
    }
    if (text == NULL) {
        fprintf(stderr, "word_freq: out of memory\n");
        return 1;
    }
    text[len] = '\0';

    beam_arena_t arena;
    beam_arena_init(&arena, a);
    table t = {a, beam_arena_allocator(&arena), NULL, 0, 0};
    int status = 0;
    if (count_words(&t, text)) {
        qsort(t.items, t.len, sizeof *t.items, by_count);
        for (size_t i = 0; i < t.len; i++)
            printf("%zu %s\n", t.items[i].count, t.items[i].word);
    } else {
        fprintf(stderr, "word_freq: out of memory\n");
        status = 1;
    }
    table_free(&t);
    beam_arena_deinit(&arena);
    beam_free(a, text, cap);

    beam_alloc_stats s;
    beam_allocator_stats(a, &s);
    fprintf(stderr, "word_freq: %zu allocations, peak %zu bytes\n",
            (size_t)s.allocations, (size_t)s.peak_bytes);
    /* true when anything is still live: a leak, reported on stderr */
    if (beam_gpa_deinit(&gpa))
        status = 1;
    return status;
}
