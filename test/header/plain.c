/* A plain C program: beam_alloc.h alone, no ERTS headers anywhere on the
 * include path, linked against the standalone library. */
#include <beam_alloc.h>

#include <stdio.h>

int main(void) {
    beam_gpa_t gpa;
    beam_gpa_init(&gpa, beam_raw_allocator);
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    int *xs = beam_alloc(a, int, 100);
    if (xs == NULL)
        return 1;
    xs[99] = 7;
    beam_free(a, xs, 100);
    if (beam_gpa_deinit(&gpa)) {
        fputs("plain.c: leak reported\n", stderr);
        return 1;
    }
    return 0;
}
