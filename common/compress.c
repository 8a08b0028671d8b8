#include "compress.h"

#include "rmem_error.h"

#include <limits.h>
#include <stdint.h>
#include <lz4.h>

size_t compress_lz4_bound(size_t n) {
  if (n > LZ4_MAX_INPUT_SIZE)
    return 0;
  return (size_t)LZ4_compressBound((int)n);
}

size_t compress_lz4(const void *src, size_t n, void *dst, size_t cap) {
  if (n < COMPRESS_MIN || n > LZ4_MAX_INPUT_SIZE || cap < compress_lz4_bound(n))
    return 0;
  /* With a bound-sized output lz4 takes its faster, unchecked path. */
  int got = LZ4_compress_default(src, dst, (int)n, cap > INT_MAX ? INT_MAX : (int)cap);
  if (got <= 0 || (uint64_t)got * 8 > (uint64_t)n * 7)
    return 0;
  return (size_t)got;
}

int compress_lz4_unpack(const void *src, size_t n, void *dst, size_t len, codec_err *err) {
  if (n == 0 || n > INT_MAX || len > INT_MAX)
    return codec_fail(err, RMEM_EPROTO, "an lz4 block of %zu bytes for %zu bytes of data", n, len);
  int got = LZ4_decompress_safe(src, dst, (int)n, (int)len);
  if (got < 0)
    return codec_fail(err, RMEM_EPROTO,
                      "malformed lz4 block, or one holding more than the %zu bytes announced", len);
  if ((size_t)got != len)
    return codec_fail(err, RMEM_EPROTO, "lz4 block holds %d bytes, not the %zu announced", got,
                      len);
  return 0;
}
