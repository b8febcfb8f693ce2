/* <beam_alloc.hpp> under the flags C++ NIFs are built with: make
 * header-test compiles it with -fno-exceptions and with -fno-rtti (the
 * adapter threw and used dynamic_cast unconditionally), and checks that
 * C++14 fails with a message that names C++17. Also strict, as
 * test/header/sample_nif.c is, for BEAM_NIF_INIT's NULL callbacks: clang++'s
 * -Wzero-as-null-pointer-constant is quiet about a system header's NULL in
 * a system macro (ERL_NIF_INIT), not once a macro of ours had put it in
 * parentheses. */
#include <beam_alloc.hpp>
#include <beam_alloc_nif.h>

#include <vector>

BEAM_NIF(sum_of_squares) {
    int n;
    if (!enif_get_int(env, argv[0], &n) || n < 0)
        return enif_make_badarg(env);
    std::vector<long, beam::allocator<long>> v;
    for (long i = 0; i < n; i++)
        v.push_back(i * i);
    beam::memory_resource r;
    std::pmr::vector<long> w{&r};
    w.assign(v.begin(), v.end());
    long sum = 0;
    for (long x : w)
        sum += x;
    return enif_make_long(env, r.is_equal(r) ? sum : -1);
}

static ErlNifFunc funcs[] = {{"sum_of_squares", 1, sum_of_squares, 0}};

BEAM_NIF_INIT(cxx_flags, funcs, NULL, NULL, NULL)
