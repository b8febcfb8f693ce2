// C++ containers on beam_alloc through <beam_alloc.hpp>: the NIFs of
// CxxNif. Both run leak-checked, so every container must give back all it
// took from the call's allocator before the call returns.
#include "nif_util.h"

#include <beam_alloc.hpp>

#include <map>
#include <memory>
#include <memory_resource>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// containers(N) -> Sum: a vector, a map and pmr containers (a pool over
// beam::memory_resource among them), all on the call's beam_allocator.
BEAM_NIF(containers, .leak_check = true) {
    int n;
    if (!enif_get_int(env, argv[0], &n) || n < 1)
        return enif_make_badarg(env);
    try {
        long long sum = 0;
        std::vector<int, beam::allocator<int>> v;
        for (int i = 0; i < n; i++)
            v.push_back(i);
        using pair_alloc = beam::allocator<std::pair<const int, long long>>;
        std::map<int, long long, std::less<int>, pair_alloc> m;
        for (int x : v)
            m[x % 1000] += x;
        for (const auto &kv : m)
            sum += kv.second;
        beam::memory_resource r;
        std::pmr::unsynchronized_pool_resource pool{&r};
        std::pmr::vector<std::pmr::string> words{&pool};
        for (int i = 0; i < n / 10; i++)
            words.emplace_back(std::to_string(i) + " and some more text");
        std::pmr::map<int, std::pmr::string> pm{&r};
        for (int i = 0; i < n / 10; i++)
            pm.emplace(i, words[(size_t)i]);
        sum += (long long)pm.size() + (long long)words.size();
        return enif_make_int64(env, sum);
    } catch (const std::bad_alloc &) {
        return beam_make_error(env, "enomem");
    }
}

// leak() -> raises: a block taken through beam::allocator and never given
// back is the call's leak.
BEAM_NIF(leak, .leak_check = true) {
    try {
        beam::allocator<double> a;
        double *p = a.allocate(100);
        p[0] = 1.0;
        return enif_make_atom(env, "ok");
    } catch (const std::bad_alloc &) {
        return beam_make_error(env, "enomem");
    }
}

// leak_in_containers() -> raises: a block a std::vector took and a block a
// std::pmr::vector took, both kept (the vectors are never destroyed): each
// report must name this function's line below the standard library's
// frames, which needs the NIF built with frame pointers, as users' are.
BEAM_NIF(leak_in_containers, .leak_check = true) {
    try {
        auto *v = new std::vector<int, beam::allocator<int>>();
        v->push_back(1);
        beam::memory_resource r;
        auto *pv = new std::pmr::vector<int>(&r);
        pv->push_back(2);
        return enif_make_atom(env, "ok");
    } catch (const std::bad_alloc &) {
        return beam_make_error(env, "enomem");
    }
}

// throws() -> raises: an exception leaves the body (it aborted the VM).
BEAM_NIF(throws) {
    throw std::runtime_error("boom");
}

// throws_later() -> raises: the exception leaves a continuation
// (enif_schedule_nif) that is a BEAM_NIF listed in no table, whose wrapper
// guards it as it guards a NIF (a plain C function scheduled has no guard:
// the exception would cross the VM's C frames and abort it).
BEAM_NIF(throws_later_slice) {
    throw std::runtime_error("later boom");
}

BEAM_NIF(throws_later) {
    return enif_schedule_nif(env, "throws_later", 0, throws_later_slice, argc,
                             argv);
}

// An .allocator function that throws: the call raises, its body never
// runs (the exception would have crossed the VM's C frames), plain and
// under leak_check alike.
static beam_allocator_t throwing_pick(void) {
    throw std::runtime_error("picker boom");
}

static int picked_body_ran;

BEAM_NIF(throws_in_allocator, .allocator = throwing_pick) {
    picked_body_ran++;
    return enif_make_int(env, picked_body_ran);
}

BEAM_NIF(throws_in_allocator_checked, .leak_check = true,
         .allocator = throwing_pick) {
    picked_body_ran++;
    return enif_make_int(env, picked_body_ran);
}

// picked_body_runs() -> how often those bodies ran (never, they should).
BEAM_NIF(picked_body_runs) {
    return enif_make_int(env, picked_body_ran);
}

// throws_text(Binary) -> raises a std::runtime_error whose what() is the
// binary's bytes: a long text is cut short with "...", bytes that are not
// UTF-8 become '?' (an Elixir message is a string).
BEAM_NIF(throws_text) {
    ErlNifBinary bin;
    if (!enif_inspect_binary(env, argv[0], &bin))
        return enif_make_badarg(env);
    throw std::runtime_error(
        std::string(reinterpret_cast<const char *>(bin.data), bin.size));
}

// grow(N) -> N: a vector grown to N elements, std::bad_alloc not caught:
// under fault injection each failure is an "out of memory" raise, and the
// unwinding frees what the vector held.
BEAM_NIF(grow, .leak_check = true) {
    int n;
    if (!enif_get_int(env, argv[0], &n) || n < 0)
        return enif_make_badarg(env);
    std::vector<int, beam::allocator<int>> v;
    for (int i = 0; i < n; i++)
        v.push_back(i);
    return enif_make_int(env, (int)v.size());
}

// push_at(Which) -> 1: a vector's first element pushed at one line of two
// (Which 1, else the other): the standard library's request, the same
// return address either way, reached from two lines of the author's.
BEAM_NIF(push_at) {
    int which;
    if (!enif_get_int(env, argv[0], &which))
        return enif_make_badarg(env);
    std::vector<int, beam::allocator<int>> v;
    if (which == 1)
        v.push_back(which + 1); /* SITE: push one */
    else
        v.push_back(which * 3); /* SITE: push other */
    return enif_make_int(env, (int)v.size());
}

// unguarded_push(N) -> N: N ints pushed onto a vector on the call's
// allocator by a noexcept function: under fault injection std::bad_alloc
// cannot leave it, so it is std::terminate, and the VM dies by SIGABRT
// (BEAM_NIF's guard never sees the exception). The request is made in
// std::vector's code; the crash must still name the push's line here.
static int push_noexcept(int n) noexcept {
    std::vector<int, beam::allocator<int>> v;
    for (int i = 0; i < n; i++)
        v.push_back(i); /* SITE: unguarded push */
    return (int)v.size();
}

BEAM_NIF(unguarded_push) {
    int n;
    if (!enif_get_int(env, argv[0], &n) || n < 0)
        return enif_make_badarg(env);
    return enif_make_int(env, push_noexcept(n));
}

// null_in_body() -> ok: its one request, made in the body itself, used
// unchecked: SIGSEGV when a check fails it. The crash names the NIF as
// written, not the functions BEAM_NIF makes of it.
BEAM_NIF(null_in_body) {
    char *volatile p =
        beam_alloc(beam_allocator, char, 8); /* SITE: null in body */
    p[0] = 1;
    beam_free(beam_allocator, p, 8);
    return enif_make_atom(env, "ok");
}

// null_in_namespace() -> ok: null_in_body's, in an anonymous namespace,
// whose functions addr2line names "(anonymous namespace)::beam_nif_body_
// null_in_namespace()" and so on: the crash names the NIF as written too.
namespace {
BEAM_NIF(null_in_namespace) {
    char *volatile p =
        beam_alloc(beam_allocator, char, 8); /* SITE: null in namespace */
    p[0] = 1;
    beam_free(beam_allocator, p, 8);
    return enif_make_atom(env, "ok");
}
} // namespace

// null_in_lambda() -> ok: its one request, made in a lambda of the body
// (not inlined), used unchecked: SIGSEGV when a check fails it. addr2line
// names the lambda's level "beam_nif_body_null_in_lambda(...)::{lambda(
// unsigned long)#1}::operator()(unsigned long) const": the lambda, not X.
BEAM_NIF(null_in_lambda) {
    auto make = [](size_t n) __attribute__((noinline)) {
        char *volatile p =
            beam_alloc(beam_allocator, char, n); /* SITE: null in lambda */
        p[0] = 1;
        return static_cast<char *>(p);
    };
    char *p = make(8);
    beam_free(beam_allocator, p, 8);
    return enif_make_atom(env, "ok");
}

// A type the raw allocator cannot align (it serves 8).
struct alignas(32) wide {
    double x[4];
};

// One wide element in a vector on beam::allocator, or (pmr) on
// beam::memory_resource: both over the call's allocator.
static int push_wide(bool pmr) {
    if (pmr) {
        beam::memory_resource r;
        std::pmr::vector<wide> v{&r};
        v.push_back(wide{});
        return (int)v.size();
    }
    std::vector<wide, beam::allocator<wide>> v;
    v.push_back(wide{});
    return (int)v.size();
}

static bool pmr_arg(ErlNifEnv *env, ERL_NIF_TERM t) {
    return enif_is_identical(t, enif_make_atom(env, "pmr"));
}

// overaligned(Way) -> raises: on the raw allocator (the default) the
// failure says it is the alignment, not memory. Way: pmr or vector.
BEAM_NIF(overaligned) {
    return enif_make_int(env, push_wide(pmr_arg(env, argv[0])));
}

// overaligned_caught(Way) -> caught: beam::bad_alignment is a std::bad_alloc.
BEAM_NIF(overaligned_caught) {
    try {
        push_wide(pmr_arg(env, argv[0]));
        return enif_make_atom(env, "not_thrown");
    } catch (const std::bad_alloc &) {
        return enif_make_atom(env, "caught");
    }
}

static beam_allocator_t pick_gpa(void) {
    return beam_general_purpose_allocator;
}

// overaligned_gpa(Way) -> 1: the general purpose allocator serves it.
BEAM_NIF(overaligned_gpa, .allocator = pick_gpa) {
    return enif_make_int(env, push_wide(pmr_arg(env, argv[0])));
}

// 100 ints in a std::pmr::vector on a pool resource over the call's
// allocator: libstdc++'s pools ask their upstream for chunks aligned to
// their block size (16 and up), which the raw allocator refuses.
static int pool_vector() {
    beam::memory_resource r;
    std::pmr::unsynchronized_pool_resource pool{&r};
    std::pmr::vector<int> v{&pool};
    for (int i = 0; i < 100; i++)
        v.push_back(i);
    return (int)v.size();
}

// pool_vector_raw() -> raises: the alignment, not out of memory.
BEAM_NIF(pool_vector_raw) {
    return enif_make_int(env, pool_vector());
}

// pool_vector_gpa() -> 100.
BEAM_NIF(pool_vector_gpa, .allocator = pick_gpa) {
    return enif_make_int(env, pool_vector());
}

// shared_and_thread() -> {ThreadDefault, 2 + 1000}: a std::allocate_shared
// object and a vector a std::thread fills through a copy of the call's
// allocator, all given back; ThreadDefault is what beam_allocator is on
// that thread (raw: every thread starts on it, not on the NIF's).
BEAM_NIF(shared_and_thread, .leak_check = true) {
    using bstring =
        std::basic_string<char, std::char_traits<char>, beam::allocator<char>>;
    auto shared = std::allocate_shared<bstring>(
        beam::allocator<bstring>(), "a string longer than the small buffer");
    beam_allocator_t call = beam_allocator;
    bool raw = false;
    size_t filled = 0;
    std::thread t([&] {
        raw = beam_allocator.vtable == beam_raw_allocator.vtable;
        std::vector<int, beam::allocator<int>> v{beam::allocator<int>(call)};
        for (int i = 0; i < 1000; i++)
            v.push_back(i);
        filled = v.size();
    });
    t.join();
    return enif_make_tuple2(
        env, enif_make_atom(env, raw ? "raw" : "other"),
        enif_make_uint64(env, shared.use_count() + 1 + filled));
}

static ErlNifFunc funcs[] = {
    {"containers", 1, containers, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"leak", 0, leak, 0},
    {"leak_in_containers", 0, leak_in_containers, 0},
    {"throws", 0, throws, 0},
    {"throws_later", 0, throws_later, 0},
    {"throws_text", 1, throws_text, 0},
    {"throws_in_allocator", 0, throws_in_allocator, 0},
    {"throws_in_allocator_checked", 0, throws_in_allocator_checked, 0},
    {"picked_body_runs", 0, picked_body_runs, 0},
    {"grow", 1, grow, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"push_at", 1, push_at, 0},
    {"unguarded_push", 1, unguarded_push, 0},
    {"null_in_body", 0, null_in_body, 0},
    {"null_in_lambda", 0, null_in_lambda, 0},
    {"null_in_namespace", 0, null_in_namespace, 0},
    {"take_reports", 0, take_reports, 0},
    {"overaligned", 1, overaligned, 0},
    {"overaligned_caught", 1, overaligned_caught, 0},
    {"overaligned_gpa", 1, overaligned_gpa, 0},
    {"pool_vector_raw", 0, pool_vector_raw, 0},
    {"pool_vector_gpa", 0, pool_vector_gpa, 0},
    {"shared_and_thread", 0, shared_and_thread, 0},
};

BEAM_NIF_INIT(Elixir.CxxNif, funcs, load_capturing_reports, NULL, NULL)
