/* Unit tests of the general purpose allocator's size classes: the class
 * a length and alignment get is the smallest that holds the length and
 * keeps the alignment, by every path that picks one (the 16-byte table,
 * which covers every small length, and the step up for alignments above
 * 16). */
#include "check.h"

#include <beam_alloc.h>

#include <stdio.h>

#include "gpa_internal.h"

/* The smallest class of size >= len whose size the alignment divides, by
 * a plain search of the table; GPA_CLASSES when none. */
static unsigned smallest_fit(size_t len, size_t alignment) {
    for (unsigned c = 0; c < GPA_CLASSES; c++)
        if (beam__gpa_class_size[c] >= len &&
            beam__gpa_class_size[c] % alignment == 0)
            return c;
    return GPA_CLASSES;
}

TEST(gpa_classes_every_length_gets_the_smallest_class_that_fits) {
    bool ok = true;
    for (size_t len = 1; len <= BEAM_GPA_SMALL_MAX + 1 && ok; len++) {
        for (size_t al = 1; al <= 2 * BEAM_GPA_SMALL_MAX && ok; al *= 2) {
            unsigned want = al <= GPA_MIN_BLOCK ? smallest_fit(len, 1)
                                                : smallest_fit(len, al);
            if (len > BEAM_GPA_SMALL_MAX || al > BEAM_GPA_SMALL_MAX)
                want = GPA_CLASSES;
            unsigned got = beam__gpa_class_for(len, al);
            if (got != want) {
                fprintf(stderr,
                        "  length %zu alignment %zu: class %u, not %u\n", len,
                        al, got, want);
                ok = false;
            }
        }
        if (len <= BEAM_GPA_SMALL_MAX &&
            beam__gpa_class_by_16[(len + 15) >> 4] != smallest_fit(len, 1)) {
            fprintf(stderr, "  length %zu: the 16-byte table is wrong\n", len);
            ok = false;
        }
    }
    CHECK(ok);
}

/* The inline free's boundary test (beam__gpa_divides) against a plain
 * remainder, for every class size and every offset in a slab, with the
 * inverse as slabs are formatted. */
TEST(gpa_classes_boundary_test_is_exact_for_every_offset) {
    bool ok = true;
    for (unsigned c = 0; c < GPA_CLASSES && ok; c++) {
        uint32_t size = beam__gpa_class_size[c];
        uint32_t recip = (uint32_t)((((uint64_t)1 << 32) + size - 1) / size);
        for (uint32_t off = 0; off < GPA_SLAB_SIZE && ok; off++) {
            if (beam__gpa_divides(recip, off) != (off % size == 0)) {
                fprintf(stderr, "  size %u offset %u: wrong\n", size, off);
                ok = false;
            }
        }
    }
    CHECK(ok);
}

/* Blocks sit at multiples of their size from the slab's start: every
 * class size is a multiple of GPA_MIN_BLOCK, the classes grow, and no
 * slab leaves more than a page unused. */
TEST(gpa_classes_are_ordered_and_fill_their_slabs) {
    for (unsigned c = 0; c < GPA_CLASSES; c++) {
        uint32_t size = beam__gpa_class_size[c];
        CHECK(size % GPA_MIN_BLOCK == 0);
        CHECK(c == 0 || size > beam__gpa_class_size[c - 1]);
        CHECK(GPA_SLAB_SIZE % size <= GPA_PAGE_SIZE);
    }
    CHECK(beam__gpa_class_size[GPA_CLASSES - 1] == BEAM_GPA_SMALL_MAX);
}
