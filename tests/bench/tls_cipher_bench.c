/* tls_cipher_bench: the ceiling TLS puts on one connection. The agent
 * encrypts every reply on its one loop thread, so the AEAD speed of one core
 * bounds bulk reads over TLS. Encrypts 256 MiB in 16 KiB records (the TLS
 * maximum, which rmemd's records reach) with each suite's cipher, as mbedTLS
 * does for a record: fresh nonce, 13 bytes of additional data, 16-byte tag.
 *
 *   tls_cipher_bench [MIB]
 *
 * Build it in a Release tree; figures are medians of 3 runs. */
#include <mbedtls/chachapoly.h>
#include <mbedtls/gcm.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RECORD (16u << 10)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef int (*seal_fn)(void *ctx, uint64_t seq, const unsigned char *in, unsigned char *out,
                       size_t n, unsigned char tag[16]);

static int seal_gcm(void *ctx, uint64_t seq, const unsigned char *in, unsigned char *out, size_t n,
                    unsigned char tag[16]) {
  unsigned char iv[12] = {1, 2, 3, 4}, ad[13] = {0};
  memcpy(iv + 4, &seq, 8);
  memcpy(ad, &seq, 8);
  return mbedtls_gcm_crypt_and_tag(ctx, MBEDTLS_GCM_ENCRYPT, n, iv, sizeof(iv), ad, sizeof(ad), in,
                                   out, 16, tag);
}

static int seal_chachapoly(void *ctx, uint64_t seq, const unsigned char *in, unsigned char *out,
                           size_t n, unsigned char tag[16]) {
  unsigned char nonce[12] = {9, 8, 7, 6}, ad[13] = {0};
  memcpy(nonce + 4, &seq, 8);
  memcpy(ad, &seq, 8);
  return mbedtls_chachapoly_encrypt_and_tag(ctx, n, nonce, ad, sizeof(ad), in, out, tag);
}

static double run(const char *name, seal_fn seal, void *ctx, const unsigned char *in,
                  unsigned char *out, size_t total) {
  double v[3];
  unsigned char tag[16];
  for (int r = 0; r < 3; r++) {
    double t0 = now();
    uint64_t seq = 0;
    for (size_t off = 0; off < total; off += RECORD, seq++) {
      if (seal(ctx, seq, in + off % (64u << 20), out, RECORD, tag) != 0) {
        fprintf(stderr, "%s: encryption failed\n", name);
        exit(1);
      }
    }
    v[r] = (double)total / (now() - t0) / 1e6;
  }
  qsort(v, 3, sizeof(v[0]), cmp);
  printf("%-32s %8.0f MB/s (%zu MiB in %u-byte records, median of 3)\n", name, v[1], total >> 20,
         RECORD);
  return v[1];
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? strtoul(argv[1], NULL, 0) : 256;
  if (mib == 0)
    mib = 256;
  size_t total = mib << 20;
  /* 64 MiB of source, cycled, so caches do not flatter the figure. */
  unsigned char *in = malloc(64u << 20), *out = malloc(RECORD);
  if (in == NULL || out == NULL)
    return 1;
  for (size_t i = 0; i < (64u << 20); i++)
    in[i] = (unsigned char)(i * 131 + 7);
  unsigned char key[32];
  for (int i = 0; i < 32; i++)
    key[i] = (unsigned char)(i * 17 + 3);

  mbedtls_chachapoly_context cp;
  mbedtls_chachapoly_init(&cp);
  mbedtls_chachapoly_setkey(&cp, key);
  run("ChaCha20-Poly1305 (negotiated)", seal_chachapoly, &cp, in, out, total);
  mbedtls_chachapoly_free(&cp);
  mbedtls_gcm_context gcm;
  mbedtls_gcm_init(&gcm);
  mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 128);
  run("AES-128-GCM", seal_gcm, &gcm, in, out, total);
  mbedtls_gcm_free(&gcm);
  mbedtls_gcm_init(&gcm);
  mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 256);
  run("AES-256-GCM", seal_gcm, &gcm, in, out, total);
  mbedtls_gcm_free(&gcm);
  free(in);
  free(out);
  return 0;
}
