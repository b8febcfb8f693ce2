// <beam_alloc.hpp>, C++17: STL containers on beam::allocator and std::pmr
// containers on beam::memory_resource, over a general purpose allocator
// instance that must end with no block live. make header-test also builds
// it against libc++ 14 (clang++ -stdlib=libc++), which has no
// <memory_resource>: the header included it unconditionally, so no C++
// NIF built there; the pmr part is then left out.
#include <beam_alloc.hpp>

#include <cstdio>
#include <map>
#include <memory>
#include <type_traits>
#include <utility>
#include <string>
#include <vector>

#if defined(__GLIBCXX__) && !defined(BEAM_HPP_HAS_PMR)
#error "libstdc++ has std::pmr: beam::memory_resource must be there"
#endif

// The allocator's traits, as containers read them: a container built on
// one allocator keeps freeing there (every propagate_* true: an assignment
// or swap takes the other's allocator, never frees through the wrong one),
// and instances are not interchangeable (is_always_equal false).
using int_alloc = beam::allocator<int>;
using int_traits = std::allocator_traits<int_alloc>;
static_assert(std::is_same<int_traits::rebind_alloc<double>,
                           beam::allocator<double>>::value,
              "rebind");
static_assert(int_traits::propagate_on_container_copy_assignment::value &&
                  int_traits::propagate_on_container_move_assignment::value &&
                  int_traits::propagate_on_container_swap::value,
              "propagate");
static_assert(!int_traits::is_always_equal::value, "is_always_equal");
static_assert(std::is_nothrow_copy_constructible<int_alloc>::value &&
                  std::is_nothrow_move_constructible<int_alloc>::value &&
                  std::is_nothrow_constructible<int_alloc,
                                                beam::allocator<char>>::value,
              "copies never throw");
static_assert(std::is_nothrow_default_constructible<int_alloc>::value,
              "default: the thread's beam_allocator");
static_assert(noexcept(std::declval<int_alloc &>().deallocate(nullptr, 1)),
              "deallocate");
static_assert(noexcept(int_alloc() == beam::allocator<char>()),
              "equality across value types");
#ifdef BEAM_HPP_HAS_PMR
static_assert(std::is_base_of<std::pmr::memory_resource,
                              beam::memory_resource>::value,
              "memory_resource");
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
        if (int_traits::max_size(int_alloc(a)) != SIZE_MAX / sizeof(int))
            return 1;
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
