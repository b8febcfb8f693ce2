// The C++ part of the NIF library: the :beam_alloc compiler builds it with
// CXX and links the library with the C++ compiler.
#include "checksum.h"

#include <numeric>

extern "C" uint32_t example_adler32(const unsigned char *p, size_t n) {
    struct sums {
        uint32_t a, b;
    };
    const uint32_t mod = 65521;
    sums s =
        std::accumulate(p, p + n, sums{1, 0}, [&](sums acc, unsigned char c) {
            uint32_t a = (acc.a + c) % mod;
            return sums{a, (acc.b + a) % mod};
        });
    return (s.b << 16) | s.a;
}
