#ifndef ELIXIR_NIF_CHECKSUM_H
#define ELIXIR_NIF_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Adler-32 of p[0..n), as zlib and :erlang.adler32/1 compute it. */
uint32_t example_adler32(const unsigned char *p, size_t n);

#ifdef __cplusplus
}
#endif

#endif
