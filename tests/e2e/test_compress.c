/* End-to-end tests of read compression (PROTOCOL.md, Compression): hello's
 * negotiation both ways, compressed and raw replies as they are on the wire,
 * bytes and holes identical to uncompressed reads through librmem, and a
 * fake agent whose lying or malformed compressed replies must not get past
 * the client (ASan watches the caller's exact-size buffers).
 *
 * Two agents: A compresses for clients that ask, N runs --no-compress. Two
 * fixtures: heap-like records that compress about 5 times, and random
 * 64-bit words that do not compress at all. */
#include "compress.h"
#include "harness.h"
#include "msg.h"
#include "rmem.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <lz4.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BULK_MIB 16

/* The words of fixture_regions --bulk-random. */
static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static struct {
  h_agent a, n;
  int a_up, n_up;
  h_fixture comp, rnd;
  int comp_up, rnd_up;
  uint32_t comp_pid, rnd_pid;
  uint64_t comp_addr, comp_len, guard, rnd_addr;
  uint64_t page;
} S;

static int group_setup(void **state) {
  (void)state;
  S.page = (uint64_t)sysconf(_SC_PAGESIZE);
  static const char *const no_compress[] = {"--no-compress", NULL};
  if (h_agent_start(&S.a, NULL) != 0)
    return -1;
  S.a_up = 1;
  if (h_agent_start_args(&S.n, NULL, no_compress) != 0)
    return -1;
  S.n_up = 1;
  static const char *const comp_args[] = {"--bulk-compressible", "16", NULL};
  if (h_fixture_start(&S.comp, FIXTURE_REGIONS_PATH, comp_args) != 0)
    return -1;
  S.comp_up = 1;
  S.comp_pid = (uint32_t)h_fixture_u64(&S.comp, "pid");
  S.comp_addr = h_fixture_u64(&S.comp, "bulk");
  S.comp_len = h_fixture_u64(&S.comp, "bulk_len");
  S.guard = h_fixture_u64(&S.comp, "guard");
  static const char *const rnd_args[] = {"--bulk-random", "16", NULL};
  if (h_fixture_start(&S.rnd, FIXTURE_REGIONS_PATH, rnd_args) != 0)
    return -1;
  S.rnd_up = 1;
  S.rnd_pid = (uint32_t)h_fixture_u64(&S.rnd, "pid");
  S.rnd_addr = h_fixture_u64(&S.rnd, "bulk");
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  if (S.comp_up)
    h_fixture_stop(&S.comp);
  if (S.rnd_up)
    h_fixture_stop(&S.rnd);
  int bad = 0;
  if (S.a_up)
    bad |= h_agent_stop(&S.a) != 0;
  if (S.n_up)
    bad |= h_agent_stop(&S.n) != 0;
  return bad ? -1 : 0;
}

static rmem_client *connect_to(uint16_t port, int compress) {
  rmem_connect_options o = {
      .host = "127.0.0.1", .port = port, .timeout_ms = 10000, .compress = compress};
  rmem_client *c = NULL;
  int rc = rmem_connect_opts(&c, &o);
  if (rc != 0)
    fail_msg("connect: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  return c;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  assert_non_null(p);
  return p;
}

/* Each record of the compressible fixture starts with the address of the next. */
static void check_records(const char *buf, uint64_t addr, size_t len) {
  for (size_t off = (size_t)((128 - addr % 128) % 128); off + 8 <= len; off += 128) {
    uint64_t next;
    memcpy(&next, buf + off, 8);
    if (next != addr + off + 128)
      fail_msg("record at 0x%llx differs", (unsigned long long)(addr + off));
  }
}

/* A read that asks for lz4 gets it on compressible memory; one that does not
 * ask, or asks an agent that declines, gets raw data; the bytes are the same. */
static void test_negotiation(void **state) {
  rmem_client *plain = connect_to(S.a.port, 0), *lz = connect_to(S.a.port, 1);
  rmem_client *declined = connect_to(S.n.port, 1);
  assert_string_equal(rmem_info(plain)->compress, "");
  assert_string_equal(rmem_info(lz)->compress, "lz4");
  assert_string_equal(rmem_info(declined)->compress, "");

  size_t len = 4u << 20;
  char *want = xmalloc(len), *got = xmalloc(len);
  rmem_read_info info;
  assert_int_equal(rmem_read_ex(plain, S.comp_pid, S.comp_addr, want, len, NULL, NULL, &info),
                   (ssize_t)len);
  assert_int_equal(info.compressed_bytes, 0);
  assert_int_equal(info.decompressed_bytes, 0);
  check_records(want, S.comp_addr, len);

  assert_int_equal(rmem_read_ex(lz, S.comp_pid, S.comp_addr, got, len, NULL, NULL, &info),
                   (ssize_t)len);
  assert_int_equal(info.decompressed_bytes, len);
  if (info.compressed_bytes == 0 || info.compressed_bytes * 3 > len)
    fail_msg("%llu compressed bytes for %zu", (unsigned long long)info.compressed_bytes, len);
  assert_memory_equal(want, got, len);

  memset(got, 0, len);
  assert_int_equal(rmem_read_ex(declined, S.comp_pid, S.comp_addr, got, len, NULL, NULL, &info),
                   (ssize_t)len);
  assert_int_equal(info.compressed_bytes, 0);
  assert_memory_equal(want, got, len);

  /* rmem_read (no info) and a streamed read decompress too. */
  memset(got, 0, len);
  assert_int_equal(rmem_read(lz, S.comp_pid, S.comp_addr, got, len, NULL), (ssize_t)len);
  assert_memory_equal(want, got, len);
  free(want);
  free(got);
  rmem_close(plain);
  rmem_close(lz);
  rmem_close(declined);
}

/* Sends hello over a raw socket, offering lz4 or not; returns the result's
 * `compress` ("" when absent) in out[8]. */
static void raw_hello(int fd, uint32_t msgid, int offer, char *out) {
  codec_buf b = {0};
  msgpack_packer pk;
  codec_frame_begin(&b, &pk);
  msg_hello_req req = {.version = 1, .compress = offer ? MSG_COMPRESS_LZ4 : 0};
  msg_hello_req_pack(&pk, msgid, &req);
  assert_int_equal(codec_frame_end(&b, 0), 0);
  assert_int_equal(h_raw_send_buf(fd, &b), 0);
  codec_buf_free(&b);
  h_resp r;
  assert_int_equal(h_raw_recv(fd, 10000, &r), 0);
  assert_int_equal(r.code, 0);
  assert_int_equal(r.msgid, msgid);
  rmem_agent_info info;
  codec_err err;
  assert_int_equal(msg_hello_res_parse(r.result, &info, &err), 0);
  memcpy(out, info.compress, sizeof(info.compress));
  h_resp_free(&r);
}

/* Reads over a raw socket; checks the result's form and, when compressed,
 * that the block expands to the bytes of a librmem read (`want`). Returns
 * the block's length, or 0 for raw data. */
static size_t raw_read(int fd, uint32_t msgid, uint32_t pid, uint64_t addr, size_t len,
                       const char *want) {
  assert_int_equal(h_send_read(fd, msgid, pid, addr, len), 0);
  h_resp r;
  assert_int_equal(h_raw_recv(fd, 10000, &r), 0);
  assert_int_equal(r.code, 0);
  assert_int_equal(r.msgid, msgid);
  const char *data;
  size_t n;
  uint64_t lz4_len = 0;
  codec_err err;
  assert_int_equal(msg_read_res_parse(r.result, &data, &n, &lz4_len, NULL, NULL, &err), 0);
  if (lz4_len == 0) {
    assert_int_equal(n, len);
    assert_memory_equal(data, want, len);
  } else {
    /* lz4_len comes before data, so that a reader knows early. */
    assert_true(codec_str_eq(&r.result->via.map.ptr[0].key, "lz4_len"));
    assert_int_equal(lz4_len, len);
    assert_true(n * 8 <= len * 7);
    char *out = xmalloc(len);
    assert_int_equal(compress_lz4_unpack(data, n, out, len, &err), 0);
    assert_memory_equal(out, want, len);
    free(out);
  }
  h_resp_free(&r);
  return lz4_len ? n : 0;
}

/* What goes over the wire: compressed only when agreed, at least 4 KiB and
 * worth it; each hello decides anew. */
static void test_wire(void **state) {
  size_t len = 64u << 10;
  char *comp = xmalloc(len), *rnd = xmalloc(len);
  rmem_client *c = connect_to(S.a.port, 0);
  assert_int_equal(rmem_read(c, S.comp_pid, S.comp_addr, comp, len, NULL), (ssize_t)len);
  assert_int_equal(rmem_read(c, S.rnd_pid, S.rnd_addr, rnd, len, NULL), (ssize_t)len);
  rmem_close(c);

  int fd = h_raw_connect(S.a.port);
  assert_true(fd >= 0);
  char chosen[8];
  raw_hello(fd, 1, 1, chosen);
  assert_string_equal(chosen, "lz4");
  size_t n = raw_read(fd, 2, S.comp_pid, S.comp_addr, len, comp);
  if (n == 0 || n * 3 > len)
    fail_msg("a %zu-byte block for %zu compressible bytes", n, len);
  assert_int_equal(raw_read(fd, 3, S.comp_pid, S.comp_addr, COMPRESS_MIN, comp) > 0, 1);
  assert_int_equal(raw_read(fd, 4, S.comp_pid, S.comp_addr, COMPRESS_MIN - 1, comp), 0);
  assert_int_equal(raw_read(fd, 5, S.rnd_pid, S.rnd_addr, len, rnd), 0);
  /* A second hello without the offer turns it off. */
  raw_hello(fd, 6, 0, chosen);
  assert_string_equal(chosen, "");
  assert_int_equal(raw_read(fd, 7, S.comp_pid, S.comp_addr, len, comp), 0);
  raw_hello(fd, 8, 1, chosen);
  assert_true(raw_read(fd, 9, S.comp_pid, S.comp_addr, len, comp) > 0);
  close(fd);

  fd = h_raw_connect(S.n.port);
  assert_true(fd >= 0);
  raw_hello(fd, 1, 1, chosen);
  assert_string_equal(chosen, "");
  assert_int_equal(raw_read(fd, 2, S.comp_pid, S.comp_addr, len, comp), 0);
  close(fd);
  free(comp);
  free(rnd);
}

/* Memory that does not compress comes raw, byte for byte. */
static void test_incompressible(void **state) {
  rmem_client *lz = connect_to(S.a.port, 1);
  size_t len = (size_t)BULK_MIB << 20;
  uint64_t *buf = xmalloc(len);
  rmem_read_info info;
  assert_int_equal(rmem_read_ex(lz, S.rnd_pid, S.rnd_addr, buf, len, NULL, NULL, &info),
                   (ssize_t)len);
  assert_int_equal(info.compressed_bytes, 0);
  for (size_t i = 0; i < len / 8; i++)
    if (buf[i] != splitmix64(S.rnd_addr + 8 * i))
      fail_msg("word %zu differs", i);
  free(buf);
  rmem_close(lz);
}

/* Reads that are not page-aligned, and reads through the page cache (short
 * reads with an age), give the same bytes compressed. */
static void test_unaligned_and_cached(void **state) {
  rmem_client *plain = connect_to(S.a.port, 0), *lz = connect_to(S.a.port, 1);
  size_t len = 200000;
  uint64_t addr = S.comp_addr + S.page + 3;
  char *want = xmalloc(len), *got = xmalloc(len);
  assert_int_equal(rmem_read(plain, S.comp_pid, addr, want, len, NULL), (ssize_t)len);
  check_records(want, addr, len);
  rmem_read_opts aged = {.max_age_ms = 60000};
  rmem_read_info info;
  for (int i = 0; i < 2; i++) {
    memset(got, 0, len);
    assert_int_equal(rmem_read_ex(lz, S.comp_pid, addr, got, len, &aged, NULL, &info),
                     (ssize_t)len);
    assert_memory_equal(want, got, len);
    assert_true(info.compressed_bytes > 0);
  }
  assert_true(info.cached_bytes > 0); /* The second came from the cache. */
  free(want);
  free(got);
  rmem_close(plain);
  rmem_close(lz);
}

/* Holes stay in uncompressed coordinates: the same holes, and zeros, as a
 * raw read, on the cached path (short) and the direct one (long). */
static void test_holes(void **state) {
  rmem_client *plain = connect_to(S.a.port, 0), *lz = connect_to(S.a.port, 1);
  static const uint64_t before[] = {32u << 10, 1u << 20};
  for (size_t k = 0; k < sizeof(before) / sizeof(before[0]); k++) {
    uint64_t addr = S.guard - before[k];
    size_t len = (size_t)(before[k] + 2 * S.page);
    char *want = xmalloc(len), *got = xmalloc(len);
    rmem_ranges hw = {0}, hg = {0};
    ssize_t n = rmem_read(plain, S.comp_pid, addr, want, len, &hw);
    assert_int_equal(n, (ssize_t)(len - S.page));
    rmem_read_info info;
    memset(got, 0xaa, len);
    assert_int_equal(rmem_read_ex(lz, S.comp_pid, addr, got, len, NULL, &hg, &info), n);
    assert_true(info.compressed_bytes > 0);
    assert_int_equal(hg.n, 1);
    assert_int_equal(hg.v[0].addr, S.guard);
    assert_int_equal(hg.v[0].len, S.page);
    assert_int_equal(hg.v[0].code, RMEM_EPROT);
    assert_int_equal(hw.n, 1);
    assert_memory_equal(hw.v, hg.v, sizeof(rmem_range));
    assert_memory_equal(want, got, len);
    for (size_t i = 0; i < S.page; i++)
      assert_int_equal(got[before[k] + i], 0);
    rmem_ranges_free(&hw);
    rmem_ranges_free(&hg);
    free(want);
    free(got);
  }
  /* Nothing readable: the error is the same, with its holes. */
  char page[4096];
  rmem_ranges h = {0};
  assert_int_equal(rmem_read(lz, S.comp_pid, S.guard, page, sizeof(page), &h), RMEM_EFAULT);
  assert_int_equal(h.n, 1);
  assert_int_equal(h.v[0].code, RMEM_EPROT);
  rmem_ranges_free(&h);
  rmem_close(plain);
  rmem_close(lz);
}

/* A fake agent: says hello as told, then answers one read with a crafted reply. */
enum {
  FAKE_GOOD,         /* A valid compressed reply (the fake works). */
  FAKE_SHORT,        /* The block holds half the bytes announced. */
  FAKE_LONG,         /* The block holds twice the bytes announced. */
  FAKE_LEN_MISMATCH, /* lz4_len is not the request's len. */
  FAKE_GARBAGE,      /* Not an lz4 block at all. */
  FAKE_NOT_AGREED,   /* Compressed, though hello did not agree on it. */
  FAKE_DATA_FIRST,   /* data before lz4_len, len bytes long: direct placement bait. */
  FAKE_HELLO_ZSTD,   /* hello chooses an algorithm nobody offered. */
};

#define FAKE_LEN (64u << 10)

typedef struct {
  int lfd;
  uint16_t port;
  int scenario;
  pthread_t t;
} fake;

/* FAKE_LEN bytes that compress well, and a block of `n` of them. */
static char *fake_block(size_t n, size_t *blen) {
  char *data = xmalloc(n), *block = xmalloc((size_t)LZ4_compressBound((int)n));
  for (size_t i = 0; i < n; i++)
    data[i] = (char)(i % 64 < 8 ? i / 64 : 0);
  *blen = (size_t)LZ4_compress_default(data, block, (int)n, LZ4_compressBound((int)n));
  free(data);
  return block;
}

static void fake_reply(int fd, int scenario, uint32_t msgid) {
  codec_buf b = {0};
  msgpack_packer pk;
  codec_frame_begin(&b, &pk);
  size_t blen = 0;
  char *block = NULL;
  uint64_t lz4_len = FAKE_LEN;
  switch (scenario) {
  case FAKE_GOOD:
  case FAKE_NOT_AGREED:
    block = fake_block(FAKE_LEN, &blen);
    break;
  case FAKE_SHORT:
    block = fake_block(FAKE_LEN / 2, &blen);
    break;
  case FAKE_LONG:
    block = fake_block(2 * FAKE_LEN, &blen);
    break;
  case FAKE_LEN_MISMATCH:
    block = fake_block(2 * FAKE_LEN, &blen);
    lz4_len = 2 * FAKE_LEN;
    break;
  case FAKE_GARBAGE:
    blen = 1000;
    block = xmalloc(blen);
    memset(block, 0xff, blen);
    break;
  case FAKE_DATA_FIRST:
    blen = FAKE_LEN;
    block = xmalloc(blen);
    memset(block, 0x11, blen);
    break;
  }
  if (scenario == FAKE_DATA_FIRST) {
    codec_pack_result_head(&pk, msgid);
    msgpack_pack_map(&pk, 4);
    codec_pack_str(&pk, "data");
    msgpack_pack_bin(&pk, blen);
    msgpack_pack_bin_body(&pk, block, blen);
    codec_pack_str(&pk, "lz4_len");
    msgpack_pack_uint64(&pk, lz4_len);
    msg_read_res_tail(&pk, NULL, 0, 0);
  } else {
    msg_read_res_pack(&pk, msgid, block, blen, lz4_len, NULL, 0, 0);
  }
  free(block);
  if (codec_frame_end(&b, 0) == 0)
    h_raw_send_buf(fd, &b);
  codec_buf_free(&b);
}

static void *fake_run(void *arg) {
  fake *f = arg;
  int fd = accept(f->lfd, NULL, NULL);
  if (fd < 0)
    return NULL;
  h_resp r;
  if (h_raw_recv(fd, 10000, &r) == 0) {
    uint32_t id = r.msgid;
    h_resp_free(&r);
    rmem_agent_info info = {.version = 1,
                            .agent = "fake/0",
                            .os = "linux",
                            .arch = "x86_64",
                            .page_size = 4096,
                            .pointer_size = 8,
                            .max_frame = 16u << 20,
                            .max_read = 1u << 20,
                            .max_write = 1u << 20,
                            .max_inflight = 8,
                            .nmethods = 2,
                            .methods = {"hello", "read"},
                            .auth = "none"};
    if (f->scenario == FAKE_HELLO_ZSTD)
      snprintf(info.compress, sizeof(info.compress), "zstd");
    else if (f->scenario != FAKE_NOT_AGREED)
      snprintf(info.compress, sizeof(info.compress), "lz4");
    codec_buf b = {0};
    msgpack_packer pk;
    codec_frame_begin(&b, &pk);
    msg_hello_res_pack(&pk, id, &info);
    if (codec_frame_end(&b, 0) == 0)
      h_raw_send_buf(fd, &b);
    codec_buf_free(&b);
    if (h_raw_recv(fd, 10000, &r) == 0) {
      id = r.msgid;
      h_resp_free(&r);
      fake_reply(fd, f->scenario, id);
    }
  }
  h_raw_wait_closed(fd, 10000);
  close(fd);
  return NULL;
}

static void fake_start(fake *f, int scenario) {
  memset(f, 0, sizeof(*f));
  f->scenario = scenario;
  f->lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(f->lfd >= 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof(sa);
  assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(f->lfd, 1), 0);
  assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
  f->port = ntohs(sa.sin_port);
  assert_int_equal(pthread_create(&f->t, NULL, fake_run, f), 0);
}

static void fake_stop(fake *f) {
  pthread_join(f->t, NULL);
  close(f->lfd);
}

/* One read from a fake agent into an exact-size buffer; returns its result,
 * with the client's message in msg[512]. */
static ssize_t fake_read(int scenario, int offer, int *connect_rc, char *msg) {
  fake f;
  fake_start(&f, scenario);
  rmem_connect_options o = {
      .host = "127.0.0.1", .port = f.port, .timeout_ms = 10000, .compress = offer};
  rmem_client *c = NULL;
  ssize_t n = RMEM_ECONNECT;
  *connect_rc = rmem_connect_opts(&c, &o);
  if (*connect_rc == 0) {
    char *buf = xmalloc(FAKE_LEN);
    n = rmem_read(c, 1234, 0x10000, buf, FAKE_LEN, NULL);
    if (scenario == FAKE_GOOD && n == (ssize_t)FAKE_LEN)
      for (size_t i = 0; i < FAKE_LEN; i++)
        assert_int_equal(buf[i], (char)(i % 64 < 8 ? i / 64 : 0));
    free(buf);
    snprintf(msg, 512, "%s", rmem_last_error(c));
    /* The connection is unusable after a protocol violation. */
    if (n == RMEM_EPROTO)
      assert_int_equal(rmem_read(c, 1234, 0x10000, &(char){0}, 1, NULL), RMEM_EPROTO);
    rmem_close(c);
  }
  fake_stop(&f);
  return n;
}

static void test_fake_agent(void **state) {
  int crc;
  char msg[512];
  assert_int_equal(fake_read(FAKE_GOOD, 1, &crc, msg), (ssize_t)FAKE_LEN);
  static const struct {
    int scenario;
    const char *why;
  } bad[] = {
      {FAKE_SHORT, "holds 32768 bytes, not the 65536 announced"},
      {FAKE_LONG, "more than the 65536 bytes announced"},
      {FAKE_LEN_MISMATCH, "an lz4 block of 131072 bytes for a 65536-byte read"},
      {FAKE_GARBAGE, "malformed lz4 block"},
      {FAKE_NOT_AGREED, "not agreed on"},
      {FAKE_DATA_FIRST, "'lz4_len' 65536 with a 0-byte block"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    ssize_t n = fake_read(bad[i].scenario, 1, &crc, msg);
    assert_int_equal(crc, 0);
    if (n != RMEM_EPROTO || strstr(msg, bad[i].why) == NULL)
      fail_msg("scenario %d: %s: %s", bad[i].scenario, rmem_err_name((int)n), msg);
  }
  /* hello choosing what was not offered fails the connect. */
  fake_read(FAKE_HELLO_ZSTD, 1, &crc, msg);
  assert_int_equal(crc, RMEM_EPROTO);
  assert_non_null(strstr(rmem_last_error(NULL), "zstd"));
  fake_read(FAKE_GOOD, 0, &crc, msg);
  assert_int_equal(crc, RMEM_EPROTO);
  assert_non_null(strstr(rmem_last_error(NULL), "not offered"));
}

/* Both agents still run, and exit cleanly (no leaks under ASan). */
static void test_agents_exit_clean(void **state) {
  S.a_up = 0;
  assert_int_equal(h_agent_stop(&S.a), 0);
  S.n_up = 0;
  assert_int_equal(h_agent_stop(&S.n), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_negotiation),
      cmocka_unit_test(test_wire),
      cmocka_unit_test(test_incompressible),
      cmocka_unit_test(test_unaligned_and_cached),
      cmocka_unit_test(test_holes),
      cmocka_unit_test(test_fake_agent),
      cmocka_unit_test(test_agents_exit_clean),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
