/* Compression of read data (PROTOCOL.md, Compression). No I/O: bytes in,
 * bytes out. The agent compresses in its worker threads; librmem
 * decompresses straight into the caller's buffer.
 *
 * Blocks are lz4's block format (LZ4_compress_default), without a frame
 * header: the read result carries the uncompressed length beside them. */
#ifndef RMEM_COMPRESS_H
#define RMEM_COMPRESS_H

#include "codec.h"

#include <stddef.h>

/* The one algorithm there is, as named in hello. */
#define COMPRESS_LZ4_NAME "lz4"
/* Read data shorter than this is always sent raw: a block header and the
 * field that goes with it would eat most of the gain. */
#define COMPRESS_MIN 4096u

/* Room a block of `n` input bytes may need; 0 when `n` is over lz4's
 * limit (about 2 GiB), which no read reaches. */
size_t compress_lz4_bound(size_t n);
/* Compresses src[0..n) into dst[0..cap), cap from compress_lz4_bound.
 * Returns the block's length, or 0 when the block would not be worth
 * sending: longer than 7/8 of `n` (the data does not compress) or `n`
 * under COMPRESS_MIN. */
size_t compress_lz4(const void *src, size_t n, void *dst, size_t cap);
/* Decompresses the block src[0..n) into exactly `len` bytes at dst. The
 * block is untrusted: lz4 never writes past dst + len, and a block that is
 * malformed or holds any other length fails with RMEM_EPROTO (dst then
 * holds garbage). Returns 0 or RMEM_EPROTO. */
int compress_lz4_unpack(const void *src, size_t n, void *dst, size_t len, codec_err *err);

#endif
