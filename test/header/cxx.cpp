// <beam_alloc.hpp>, C++17: STL containers on beam::allocator and std::pmr
// containers on beam::memory_resource, over a general purpose allocator
// instance that must end with no block live. make header-test also builds
// it against libc++ 14 (clang++ -stdlib=libc++), which has no
// <memory_resource>: the header included it unconditionally, so no C++
// NIF built there; the pmr part is then left out.
#include <beam_alloc.hpp>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#if defined(__GLIBCXX__) && !defined(BEAM_HPP_HAS_PMR)
#error "libstdc++ has std::pmr: beam::memory_resource must be there"
#endif

struct alignas(16) wide {
    double d[2];
};

// 0 when a C++ allocation of over-aligned elements reads as it should: a
// raw allocator's refusal of this very request is a bad_alignment, through
// a failing allocator too; an injected failure is a bad_alloc, even after a
// refusal of that alignment that C code made (and handled) on this thread
// (which made it a bad_alignment; found in review).
static int over_aligned() {
    beam_failing_t pass;
    beam_failing_init(&pass, beam_raw_allocator, SIZE_MAX);
    beam_allocator_t refusing[] = {beam_raw_allocator,
                                   beam_failing_allocator(&pass)};
    for (beam_allocator_t a : refusing) {
        try {
            (void)beam::allocator<wide>(a).allocate(1);
            std::fputs("cxx.cpp: over-aligned allocation served\n", stderr);
            return 1;
        } catch (const beam::bad_alignment &e) {
            if (e.alignment() != 16)
                return 1;
        }
    }
    if (beam_alloc_bytes(beam_raw_allocator, 64, 16) != nullptr)
        return 1;
    beam_failing_t inject;
    beam_failing_init(&inject, beam_raw_allocator, 0);
    try {
        (void)beam::allocator<wide>(beam_failing_allocator(&inject)).allocate(1);
        return 1;
    } catch (const beam::bad_alignment &) {
        std::fputs("cxx.cpp: injected failure read as bad_alignment\n", stderr);
        return 1;
    } catch (const std::bad_alloc &) {
    }
    return 0;
}

int main() {
    beam_gpa_t gpa;
    beam_gpa_init_ex(&gpa, beam_large_allocator, BEAM_GPA_TRACK_SITES);
    beam_allocator_t a = beam_gpa_allocator(&gpa);
    {
        std::vector<int, beam::allocator<int>> v{beam::allocator<int>(a)};
        for (int i = 0; i < 10000; i++)
            v.push_back(i);
        using pair_alloc = beam::allocator<std::pair<const int, double>>;
        std::map<int, double, std::less<int>, pair_alloc> m{pair_alloc(a)};
        for (int i = 0; i < 1000; i++)
            m[i] = i * 0.5;
        if (v[9999] != 9999 || m[999] != 499.5 ||
            beam_gpa_usage_of(&gpa).live_blocks == 0) {
            std::fputs("cxx.cpp: containers\n", stderr);
            return 1;
        }
#ifdef BEAM_HPP_HAS_PMR
        beam::memory_resource r{a};
        std::pmr::vector<std::pmr::string> words{&r};
        for (int i = 0; i < 100; i++)
            words.emplace_back(std::string(40, char('a' + i % 26)));
        std::pmr::unsynchronized_pool_resource pool{&r};
        std::pmr::map<int, int> pm{&pool};
        for (int i = 0; i < 500; i++)
            pm[i] = i;
        if (words[27][0] != 'b' || pm[499] != 499) {
            std::fputs("cxx.cpp: pmr containers\n", stderr);
            return 1;
        }
#endif
        beam::allocator<long> huge{a};
        try {
            (void)huge.allocate(SIZE_MAX / 4);
            std::fputs("cxx.cpp: no bad_alloc\n", stderr);
            return 1;
        } catch (const std::bad_alloc &) {
        }
        if (!(beam::allocator<int>(a) == beam::allocator<char>(a)) ||
            beam::allocator<int>(a) == beam::allocator<int>(beam_raw_allocator))
            return 1;
    }
    if (beam_gpa_deinit(&gpa)) {
        std::fputs("cxx.cpp: leak\n", stderr);
        return 1;
    }
    return over_aligned();
}
