// <beam_alloc.hpp> built with -fno-exceptions: an allocation that fails
// aborts after writing what the exception would have said to stderr (make
// header-test runs it and checks the abort and the text). argv[1]: "oom"
// (a failing allocator under a vector) or "align" (an alignas(32) type on
// the raw allocator, which serves 8).
#include <beam_alloc.hpp>

#include <cstdio>
#include <cstring>
#include <vector>

struct alignas(32) wide {
    char bytes[32];
};

int main(int argc, char **argv) {
    if (argc > 1 && std::strcmp(argv[1], "oom") == 0) {
        beam_failing_t f;
        beam_failing_init(&f, beam_raw_allocator, 0);
        std::vector<int, beam::allocator<int>> v{
            beam::allocator<int>(beam_failing_allocator(&f))};
        v.push_back(1);
    } else if (argc > 1 && std::strcmp(argv[1], "align") == 0) {
        std::vector<wide, beam::allocator<wide>> v{
            beam::allocator<wide>(beam_raw_allocator)};
        v.push_back(wide{});
    }
    std::fputs("cxx_noexc: no abort\n", stderr);
    return 1;
}
