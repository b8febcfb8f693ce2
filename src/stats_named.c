/*
 * Named stats: allocator instances a library lists under a name of its
 * choosing, so that BeamAlloc.stats/1 shows them (the NIF glue reads this
 * table through the fault hooks, src/nif/fault.c).
 *
 * A fixed table under a mutex: registration is rare, reads are for
 * humans, and nothing here may allocate (it would be counted in the very
 * stats being read).
 */
#include "internal.h"

#include <pthread.h>
#include <string.h>

typedef struct named {
    char name[BEAM_STATS_NAME_MAX + 1]; /* "" : free slot */
    beam_allocator_t a;
} named;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static named table[BEAM_STATS_NAMED_MAX];

/* An Elixir-friendly atom that cannot be mistaken for a built-in key. */
static bool valid_name(const char *s) {
    if (s == NULL || !(*s >= 'a' && *s <= 'z'))
        return false;
    size_t n = 0;
    for (const char *c = s; *c; c++, n++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
              (*c >= '0' && *c <= '9') || *c == '_'))
            return false;
    return n <= BEAM_STATS_NAME_MAX && strcmp(s, "raw") != 0 &&
           strcmp(s, "large") != 0 && strcmp(s, "general_purpose") != 0;
}

bool beam_stats_register(const char *name, beam_allocator_t a) {
    beam_alloc_stats probe;
    if (!valid_name(name) || a.vtable == NULL ||
        !beam_allocator_stats(a, &probe))
        return false;
    beam__fork_guard();
    pthread_mutex_lock(&lock);
    named *slot = NULL;
    for (size_t i = 0; i < BEAM_STATS_NAMED_MAX; i++) {
        if (strcmp(table[i].name, name) == 0) {
            slot = &table[i];
            break;
        }
        if (slot == NULL && table[i].name[0] == '\0')
            slot = &table[i];
    }
    if (slot != NULL) {
        strcpy(slot->name, name);
        slot->a = a;
    }
    pthread_mutex_unlock(&lock);
    return slot != NULL;
}

bool beam_stats_unregister(const char *name) {
    bool found = false;
    if (name == NULL || name[0] == '\0')
        return false;
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < BEAM_STATS_NAMED_MAX; i++)
        if (strcmp(table[i].name, name) == 0) {
            table[i].name[0] = '\0';
            found = true;
        }
    pthread_mutex_unlock(&lock);
    return found;
}

/* What a general purpose instance holds of its backing; 0 for others. */
static size_t backing_of(beam_allocator_t a) {
    return a.vtable == &beam__gpa_vtable
               ? beam_gpa_usage_of((beam_gpa_t *)a.ctx).backing_bytes
               : 0;
}

bool beam_stats_named(size_t i, char *name_out, beam_alloc_stats *out,
                      size_t *backing_bytes) {
    size_t seen = 0;
    bool found = false;
    /* Read under the lock, so that an unregister cannot pull the instance
     * away half way. */
    pthread_mutex_lock(&lock);
    for (size_t k = 0; k < BEAM_STATS_NAMED_MAX && !found; k++)
        if (table[k].name[0] != '\0' && seen++ == i) {
            found = true;
            /* (Each out parameter may be NULL: that one is skipped.) */
            if (out != NULL)
                beam_allocator_stats(table[k].a, out);
            if (backing_bytes != NULL)
                *backing_bytes = backing_of(table[k].a);
            if (name_out != NULL)
                strcpy(name_out, table[k].name);
        }
    pthread_mutex_unlock(&lock);
    return found;
}

size_t beam__stats_named_each(beam__named_fn *fn, void *arg) {
    size_t n = 0;
    pthread_mutex_lock(&lock);
    for (size_t k = 0; k < BEAM_STATS_NAMED_MAX; k++)
        if (table[k].name[0] != '\0') {
            beam_alloc_stats s;
            memset(&s, 0, sizeof s);
            beam_allocator_stats(table[k].a, &s);
            fn(arg, table[k].name, &s, backing_of(table[k].a));
            n++;
        }
    pthread_mutex_unlock(&lock);
    return n;
}

/* BeamAlloc.collect/1 (src/nif/fault.c): the registered general purpose
 * instances give back what they hold and do not need, as the process-wide
 * one does (SQLite's instance held 750 KB after its last connection
 * closed, and collect did not reach it). Under the lock, so that an
 * unregister (which comes before the instance's deinit) waits: the
 * instance's backing, which a collection gives memory back to, must not
 * call the functions of this file (header, section 9). */
void beam__stats_named_fork(beam__fork_phase phase) {
    beam__fork_mutex(&lock, phase);
}

void beam__stats_named_collect(void) {
    pthread_mutex_lock(&lock);
    for (size_t k = 0; k < BEAM_STATS_NAMED_MAX; k++)
        if (table[k].name[0] != '\0' && table[k].a.vtable == &beam__gpa_vtable)
            beam_gpa_collect((beam_gpa_t *)table[k].a.ctx);
    pthread_mutex_unlock(&lock);
}
