/*
 * <beam_alloc.hpp>: beam_alloc for C++17 code in NIFs.
 *
 *   beam::allocator<T>      an STL allocator over any beam_allocator_t:
 *                           std::vector<int, beam::allocator<int>> v;
 *   beam::memory_resource   a std::pmr::memory_resource over one:
 *                           beam::memory_resource r{beam_allocator};
 *                           std::pmr::vector<int> v{&r};
 *
 * (beam::memory_resource where the standard library has <memory_resource>,
 * as libc++ has from LLVM 16 only: then BEAM_HPP_HAS_PMR is defined.)
 *
 * Both default to the thread's beam_allocator as it is when they are
 * constructed (in a BEAM_NIF body: the call's allocator, leak-checked with
 * .leak_check = true; on a std::thread the NIF started: the raw allocator,
 * as every thread starts, so hand such a thread the call's), and keep that
 * allocator for life: a container built in one call and used in another keeps
 * freeing where it allocated. (Not past a leak_check call: its allocator goes
 * when the call returns. Nor past the library's unload, which tears down its
 * copy of the process-wide general purpose allocator: a global container on it
 * is destroyed later, when the VM unmaps the library, and its free is then
 * reported; empty it in the unload callback, as the README says.)
 *
 * Failure throws std::bad_alloc (std::bad_array_new_length on an overflowing
 * count), as the standard asks of allocators; beam::bad_alignment, a
 * std::bad_alloc with its own text, when the raw allocator (under any
 * wrapper) refused the type's alignment, above the 8 it serves
 * (alignas(16), long double, std::pmr::monotonic_buffer_resource): give
 * the NIF .allocator = large or gpa. Catch it in the body and
 * return an error term; one that leaves a BEAM_NIF body is raised to the
 * caller ("out of memory") rather than crossing the VM's C frames. (Built
 * with -fno-exceptions, a failure aborts, the VM with it, as with the
 * standard library's allocators, after writing what the exception would
 * have said to stderr: use the C interface where memory can run out, and
 * under fault injection.)
 *
 * Both pass sizes, so no header is added to any block; reports (leaks,
 * misuse) name the container code that called them.
 */
#ifndef BEAM_ALLOC_HPP
#define BEAM_ALLOC_HPP

/* (std::pmr is C++17's; clang++ 14 compiles C++14 unless told.) */
#if __cplusplus < 201703L
#error "<beam_alloc.hpp> needs C++17 or later: compile with -std=c++17"
#endif

#include "beam_alloc.h"

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
/* libc++ before 16 (Debian 12's libc++-14-dev, clang++ -stdlib=libc++) has
 * no <memory_resource>: beam::allocator is there all the same, and
 * beam::memory_resource only where std::pmr is (BEAM_HPP_HAS_PMR). */
#if __has_include(<memory_resource>)
#include <memory_resource>
#define BEAM_HPP_HAS_PMR 1
#endif
#include <type_traits>

#if defined(__GNUC__) || defined(__clang__)
#define BEAM_HPP_NOINLINE __attribute__((noinline))
#else
#define BEAM_HPP_NOINLINE
#endif

/* Built with -fno-exceptions an allocation that fails aborts, as the
 * standard library's own allocators then do (no container can take a
 * null block), but first says on stderr what the exception would have. */
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#define BEAM_HPP_THROW(e) throw e
#else
#define BEAM_HPP_THROW(e) ::beam::detail::abort_with(e)
#endif

namespace beam {

namespace detail {
/* -fno-exceptions: the text a throw of e would have carried, then abort
 * (the VM's stderr is the one place left to say why it stopped). */
[[noreturn]] inline void abort_with(const std::exception &e) noexcept {
    /* One write, so that other threads' output does not split it. */
    const char *own = beam_internal_cxx_own_text(e.what());
    std::fprintf(stderr,
                 BEAM_INTERNAL_CXX_TEXT
                 "%s%s%s; built without C++ exceptions: aborting\n",
                 own != nullptr ? "" : "a C++ allocation failed (",
                 own != nullptr ? own : e.what(), own != nullptr ? "" : ")");
    std::fflush(stderr);
    std::abort();
}
} // namespace detail

/** Thrown instead of std::bad_alloc when the raw allocator says no to an
 * alignment above BEAM_MAX_ALIGN, which it never serves: out of memory
 * would send its reader looking in the wrong place. A std::bad_alloc, so
 * that code catching that catches it too. */
class bad_alignment : public std::bad_alloc {
  public:
    explicit bad_alignment(std::size_t alignment) noexcept
        : alignment_(alignment) {
        std::snprintf(text_, sizeof text_,
                      BEAM_INTERNAL_CXX_TEXT
                      "alignment %zu is above what the raw "
                      "allocator serves (%d): give the NIF .allocator = a "
                      "large or general purpose allocator (one over the "
                      "large allocator: a general purpose allocator's "
                      "large blocks come from its backing)",
                      alignment, BEAM_MAX_ALIGN);
    }

    const char *what() const noexcept override {
        return text_;
    }

    /** The alignment asked for. */
    std::size_t alignment() const noexcept {
        return alignment_;
    }

  private:
    std::size_t alignment_;
    char text_[256];
};

namespace detail {
/* What a C++ allocator throws when a request for alignment, made with
 * return address ret, failed: bad_alignment when the raw allocator refused
 * that request, itself or under a wrapper (fault injection's plan, a
 * budget); a failure a wrapper made up (an injected one) never reached it,
 * and is a bad_alloc. */
[[noreturn]] inline void throw_failed(std::size_t alignment, uintptr_t ret) {
    if (alignment > BEAM_MAX_ALIGN &&
        beam_internal_raw_refused_alignment(alignment, ret))
        BEAM_HPP_THROW(bad_alignment(alignment));
    BEAM_HPP_THROW(std::bad_alloc());
}
} // namespace detail

/** An STL allocator: every allocation of a container goes to the
 * beam_allocator_t it holds. */
template <class T> class allocator {
  public:
    using value_type = T;
    using propagate_on_container_copy_assignment = std::true_type;
    using propagate_on_container_move_assignment = std::true_type;
    using propagate_on_container_swap = std::true_type;
    using is_always_equal = std::false_type;

    /** Over the thread's beam_allocator as it is now. */
    allocator() noexcept : a_(beam_allocator) {}
    /** Over a. */
    allocator(beam_allocator_t a) noexcept : a_(a) {}
    template <class U>
    allocator(const allocator<U> &other) noexcept : a_(other.get()) {}

    /* Out of line, so that the return address is the container's code. */
    BEAM_HPP_NOINLINE T *allocate(std::size_t n) {
        std::size_t len;
        if (beam_mul_overflow(n, sizeof(T), &len))
            BEAM_HPP_THROW(std::bad_array_new_length());
        const uintptr_t ret = BEAM_RET_ADDR();
        void *p = beam_alloc_bytes_at(a_, len, alignof(T), ret);
        if (p == nullptr)
            detail::throw_failed(alignof(T), ret);
        return static_cast<T *>(p);
    }

    BEAM_HPP_NOINLINE void deallocate(T *p, std::size_t n) noexcept {
        beam_free_bytes_at(a_, p, n * sizeof(T), alignof(T), BEAM_RET_ADDR());
    }

    /** The beam_allocator_t behind it. */
    beam_allocator_t get() const noexcept {
        return a_;
    }

  private:
    beam_allocator_t a_;
};

template <class T, class U>
bool operator==(const allocator<T> &x, const allocator<U> &y) noexcept {
    return x.get().ctx == y.get().ctx && x.get().vtable == y.get().vtable;
}

template <class T, class U>
bool operator!=(const allocator<T> &x, const allocator<U> &y) noexcept {
    return !(x == y);
}

#ifdef BEAM_HPP_HAS_PMR
/** A polymorphic memory resource over a beam_allocator_t (for std::pmr
 * containers, and as the upstream of std::pmr pools). libstdc++'s pool
 * resources ask their upstream for chunks aligned to their block size, up
 * to 4096, and its monotonic_buffer_resource for 16: over the raw allocator
 * (8 at most) they throw bad_alignment; give them a large or general
 * purpose allocator. */
class memory_resource : public std::pmr::memory_resource {
  public:
    /** Over the thread's beam_allocator as it is now. */
    memory_resource() noexcept : a_(beam_allocator) {}
    /** Over a. */
    explicit memory_resource(beam_allocator_t a) noexcept : a_(a) {}

    beam_allocator_t get() const noexcept {
        return a_;
    }

  protected:
    BEAM_HPP_NOINLINE void *do_allocate(std::size_t bytes,
                                        std::size_t alignment) override {
        const uintptr_t ret = BEAM_RET_ADDR();
        void *p = beam_alloc_bytes_at(a_, bytes, alignment, ret);
        if (p == nullptr)
            detail::throw_failed(alignment, ret);
        return p;
    }

    BEAM_HPP_NOINLINE void do_deallocate(void *p, std::size_t bytes,
                                         std::size_t alignment) override {
        beam_free_bytes_at(a_, p, bytes, alignment, BEAM_RET_ADDR());
    }

    bool do_is_equal(
        const std::pmr::memory_resource &other) const noexcept override {
#if defined(__cpp_rtti) || defined(__GXX_RTTI)
        const memory_resource *o =
            dynamic_cast<const memory_resource *>(&other);
        return o != nullptr && o->a_.ctx == a_.ctx && o->a_.vtable == a_.vtable;
#else
        /* Without RTTI other's type is unknown: only itself is surely
         * equal (unequal resources copy where they could have moved). */
        return this == &other;
#endif
    }

  private:
    beam_allocator_t a_;
};
#endif /* BEAM_HPP_HAS_PMR */

} // namespace beam

#endif /* BEAM_ALLOC_HPP */
