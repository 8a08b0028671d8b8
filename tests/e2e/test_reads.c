/* End-to-end tests of the slow-link methods (readv, deref, read_string,
 * fill) against a real rmemd and a fixture whose memory is known: through
 * librmem for results, and over raw sockets for malformed or hostile input,
 * checking the exact error codes of proto/PROTOCOL.md. The agent runs with a
 * small max_read so that the library's splitting is exercised cheaply. */
#include "harness.h"
#include "rmem.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_READ (256u << 10)

static struct {
  h_agent agent;
  int agent_up;
  h_fixture fx;
  rmem_client *c;
  uint32_t pid;
  uint64_t page;
  uint64_t pattern, guard, rodata, scratch, edge;
  uint64_t chain, chain_data, chase, chase_n;
  uint64_t str8, str16, str16bad, strnoterm;
} S;

static uint8_t pattern_byte(uint64_t i) {
  return (uint8_t)((i * 7 + 3) & 0xff);
}

static int group_setup(void **state) {
  (void)state;
  S.page = (uint64_t)sysconf(_SC_PAGESIZE);
  static const char *const extra[] = {"--max-read", "262144", NULL};
  if (h_agent_start_args(&S.agent, NULL, extra) != 0)
    return -1;
  S.agent_up = 1;
  if (h_fixture_start(&S.fx, FIXTURE_TARGET_PATH, NULL) != 0)
    return -1;
  S.pid = (uint32_t)h_fixture_u64(&S.fx, "pid");
  S.pattern = h_fixture_u64(&S.fx, "pattern");
  S.guard = h_fixture_u64(&S.fx, "guard");
  S.rodata = h_fixture_u64(&S.fx, "rodata");
  S.scratch = h_fixture_u64(&S.fx, "scratch");
  S.edge = h_fixture_u64(&S.fx, "edge");
  S.chain = h_fixture_u64(&S.fx, "chain");
  S.chain_data = h_fixture_u64(&S.fx, "chain_data");
  S.chase = h_fixture_u64(&S.fx, "chase");
  S.chase_n = h_fixture_u64(&S.fx, "chase_n");
  S.str8 = h_fixture_u64(&S.fx, "str8");
  S.str16 = h_fixture_u64(&S.fx, "str16");
  S.str16bad = h_fixture_u64(&S.fx, "str16bad");
  S.strnoterm = h_fixture_u64(&S.fx, "strnoterm");
  int rc = rmem_connect(&S.c, "127.0.0.1", S.agent.port, 10000);
  if (rc != 0) {
    fprintf(stderr, "rmem_connect: %s\n", rmem_err_name(rc));
    return -1;
  }
  if (rmem_info(S.c)->max_read != MAX_READ) {
    fprintf(stderr, "max_read is %llu\n", (unsigned long long)rmem_info(S.c)->max_read);
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  return h_group_teardown(&S.c, &S.fx, &S.agent, &S.agent_up);
}

static void range_is(const rmem_range *r, uint64_t addr, uint64_t len, int code) {
  if (r->addr != addr || r->len != len || r->code != code)
    fail_msg("range 0x%" PRIx64 "+0x%" PRIx64 " %s, want 0x%" PRIx64 "+0x%" PRIx64 " %s", r->addr,
             r->len, rmem_err_name(r->code), addr, len, rmem_err_name(code));
}

/* Raw requests. */

static int connect_hello(void) {
  int fd = h_raw_connect(S.agent.port);
  assert_true(fd >= 0);
  assert_int_equal(h_raw_hello(fd, 1), 0);
  return fd;
}

/* Starts a request frame [0, msgid, method, {nparams pairs...}]. */
static void req_begin(codec_buf *b, msgpack_packer *pk, uint32_t msgid, const char *method,
                      uint32_t nparams) {
  codec_buf_init(b);
  codec_frame_begin(b, pk);
  codec_pack_request_head(pk, msgid, method, nparams);
}

static void kv_u64(msgpack_packer *pk, const char *key, uint64_t v) {
  codec_pack_str(pk, key);
  msgpack_pack_uint64(pk, v);
}

static void req_send(int fd, codec_buf *b) {
  assert_int_equal(codec_frame_end(b, 0), 0);
  assert_int_equal(h_raw_send_buf(fd, b), 0);
  codec_buf_free(b);
}

/* Receives one reply and checks its msgid (has_msgid 0: nil) and code; the
 * reply is left in `r` when `r` is not NULL. */
static void expect_reply(int fd, int has_msgid, uint32_t msgid, int code, const char *what,
                         h_resp *keep) {
  h_resp r;
  int rc = h_raw_recv(fd, 20000, &r);
  if (rc != 0)
    fail_msg("%s: no reply (%d)", what, rc);
  if (r.has_msgid != has_msgid || (has_msgid && r.msgid != msgid) || r.code != code)
    fail_msg("%s: got msgid %u code %s (%s), want %s", what, r.msgid, rmem_err_name(r.code),
             r.message, code ? rmem_err_name(code) : "success");
  if (code != 0 && strcmp(r.name, rmem_err_name(code)) != 0)
    fail_msg("%s: name %s", what, r.name);
  if (keep)
    *keep = r;
  else
    h_resp_free(&r);
}

#define expect_code(fd, msgid, code, what) expect_reply(fd, 1, msgid, code, what, NULL)

/* The connection is still open and in sync afterwards. */
static void expect_open(int fd) {
  assert_int_equal(h_send_hello(fd, 777, 1), 0);
  expect_code(fd, 777, 0, "hello afterwards");
}

/* hello */

static void test_methods_announced(void **state) {
  (void)state;
  const rmem_agent_info *info = rmem_info(S.c);
  const char *want[] = {"deref", "fill", "read_string", "readv"};
  for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
    int found = 0;
    for (size_t i = 0; i < info->nmethods; i++)
      found |= strcmp(info->methods[i], want[w]) == 0;
    if (!found)
      fail_msg("method '%s' not announced", want[w]);
  }
}

/* readv */

static void test_readv(void **state) {
  (void)state;
  uint8_t a[100], b[7], c[64], d[32], e[16];
  rmem_iov iov[] = {
      {S.pattern + 1000, sizeof(a), a},
      {S.pattern + 3, sizeof(b), b}, /* Out of order, overlapping the next. */
      {S.pattern, sizeof(c), c},
      {S.edge + S.page - 16, sizeof(d), d}, /* Half into the unmapped page. */
      {S.guard + S.page, sizeof(e), e},     /* No access at all. */
  };
  memset(d, 0x55, sizeof(d));
  memset(e, 0x55, sizeof(e));
  rmem_ranges holes = {0};
  ssize_t n = rmem_readv(S.c, S.pid, iov, 5, &holes);
  assert_int_equal(n, sizeof(a) + sizeof(b) + sizeof(c) + 16);
  for (size_t i = 0; i < sizeof(a); i++)
    assert_int_equal(a[i], pattern_byte(1000 + i));
  for (size_t i = 0; i < sizeof(b); i++)
    assert_int_equal(b[i], pattern_byte(3 + i));
  for (size_t i = 0; i < sizeof(c); i++)
    assert_int_equal(c[i], pattern_byte(i));
  for (size_t i = 0; i < 16; i++) {
    assert_int_equal(d[i], 'E');
    assert_int_equal(d[16 + i], 0);
    assert_int_equal(e[i], 0);
  }
  assert_int_equal(holes.n, 2);
  range_is(&holes.v[0], S.edge + S.page, 16, RMEM_EUNMAPPED);
  range_is(&holes.v[1], S.guard + S.page, 16, RMEM_EPROT);
  rmem_ranges_free(&holes);

  /* Nothing readable at all: the call fails, and still says why. */
  rmem_iov bad[] = {{S.guard + S.page, 8, e}, {S.edge + S.page, 8, d}};
  assert_int_equal(rmem_readv(S.c, S.pid, bad, 2, &holes), RMEM_EFAULT);
  assert_int_equal(holes.n, 2);
  range_is(&holes.v[0], S.guard + S.page, 8, RMEM_EPROT);
  range_is(&holes.v[1], S.edge + S.page, 8, RMEM_EUNMAPPED);
  rmem_ranges_free(&holes);

  /* Nothing asked: nothing done. */
  assert_int_equal(rmem_readv(S.c, S.pid, iov, 0, NULL), 0);
}

/* Adjacent ranges with holes of the same reason stay apart. */
static void test_readv_holes_per_range(void **state) {
  (void)state;
  uint8_t a[8], b[8];
  rmem_iov iov[] = {{S.guard + S.page, 8, a}, {S.guard + S.page + 8, 8, b}, {S.pattern, 8, a}};
  rmem_ranges holes = {0};
  assert_int_equal(rmem_readv(S.c, S.pid, iov, 3, &holes), 8);
  assert_int_equal(holes.n, 2);
  range_is(&holes.v[0], S.guard + S.page, 8, RMEM_EPROT);
  range_is(&holes.v[1], S.guard + S.page + 8, 8, RMEM_EPROT);
  rmem_ranges_free(&holes);
}

/* More ranges than one request takes, and a range longer than max_read. */
static void test_readv_split(void **state) {
  (void)state;
  size_t n = 3 * RMEM_READV_MAX_RANGES + 5;
  rmem_iov *iov = calloc(n + 1, sizeof(*iov));
  uint8_t *small = malloc(n * 4);
  size_t big_len = 2 * MAX_READ + 100;
  uint8_t *big = malloc(big_len);
  assert_non_null(iov);
  assert_non_null(small);
  assert_non_null(big);
  for (size_t i = 0; i < n; i++) {
    iov[i].addr = S.pattern + (i * 13) % (3 * S.page - 4);
    iov[i].len = 4;
    iov[i].buf = small + 4 * i;
  }
  /* The big range starts in the pattern and runs on past whatever follows. */
  iov[n].addr = S.pattern;
  iov[n].len = big_len;
  iov[n].buf = big;
  rmem_ranges holes = {0};
  ssize_t got = rmem_readv(S.c, S.pid, iov, n + 1, &holes);
  assert_true(got >= (ssize_t)(4 * n + 3 * S.page));
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < 4; k++)
      assert_int_equal(small[4 * i + k], pattern_byte((i * 13) % (3 * S.page - 4) + k));
  for (size_t i = 0; i < 3 * S.page; i++)
    assert_int_equal(big[i], pattern_byte(i));
  /* The big range's holes are its own and match a plain read. */
  uint8_t *again = malloc(big_len);
  rmem_ranges h2 = {0};
  assert_non_null(again);
  ssize_t got2 = rmem_read(S.c, S.pid, S.pattern, again, big_len, &h2);
  assert_int_equal(got - (ssize_t)(4 * n), got2);
  assert_int_equal(holes.n, h2.n);
  for (size_t i = 0; i < h2.n; i++)
    range_is(&holes.v[i], h2.v[i].addr, h2.v[i].len, h2.v[i].code);
  rmem_ranges_free(&holes);
  rmem_ranges_free(&h2);
  free(again);
  free(iov);
  free(small);
  free(big);
}

static void pack_ranges(msgpack_packer *pk, const uint64_t *v, size_t n) {
  codec_pack_str(pk, "ranges");
  msgpack_pack_array(pk, n);
  for (size_t i = 0; i < n; i++) {
    msgpack_pack_map(pk, 2);
    kv_u64(pk, "addr", v[2 * i]);
    kv_u64(pk, "len", v[2 * i + 1]);
  }
}

static void send_readv(int fd, uint32_t msgid, uint64_t pid, const uint64_t *v, size_t n) {
  codec_buf b;
  msgpack_packer pk;
  req_begin(&b, &pk, msgid, "readv", 2);
  kv_u64(&pk, "pid", pid);
  pack_ranges(&pk, v, n);
  req_send(fd, &b);
}

static void test_readv_wire(void **state) {
  (void)state;
  int fd = connect_hello();
  /* A range with nothing readable is an entry, not an error. */
  uint64_t v[] = {S.guard + S.page, 16, S.pattern, 4, S.pattern, 0};
  send_readv(fd, 10, S.pid, v, 3);
  h_resp r;
  expect_reply(fd, 1, 10, 0, "readv with an unreadable range", &r);
  const msgpack_object *res = codec_map_get(r.result, "results");
  assert_non_null(res);
  assert_int_equal(res->type, MSGPACK_OBJECT_ARRAY);
  assert_int_equal(res->via.array.size, 3);
  const msgpack_object *d0 = codec_map_get(&res->via.array.ptr[0], "data");
  assert_int_equal(d0->via.bin.size, 16);
  const msgpack_object *h0 = codec_map_get(&res->via.array.ptr[0], "holes");
  assert_int_equal(h0->via.array.size, 1);
  assert_int_equal(codec_map_get(&res->via.array.ptr[2], "data")->via.bin.size, 0);
  assert_int_equal(codec_map_get(&res->via.array.ptr[2], "holes")->via.array.size, 0);
  h_resp_free(&r);

  /* No ranges: an empty list. */
  send_readv(fd, 11, S.pid, v, 0);
  expect_reply(fd, 1, 11, 0, "readv of nothing", &r);
  assert_int_equal(codec_map_get(r.result, "results")->via.array.size, 0);
  h_resp_free(&r);

  /* Limits. */
  size_t many = RMEM_READV_MAX_RANGES + 1;
  uint64_t *lots = calloc(2 * 14000, sizeof(*lots));
  assert_non_null(lots);
  for (size_t i = 0; i < 14000; i++) {
    lots[2 * i] = S.pattern;
    lots[2 * i + 1] = 1;
  }
  send_readv(fd, 12, S.pid, lots, RMEM_READV_MAX_RANGES);
  expect_code(fd, 12, 0, "readv of exactly the most ranges");
  send_readv(fd, 13, S.pid, lots, many);
  expect_code(fd, 13, RMEM_ETOOBIG, "readv of too many ranges");
  /* Past the 65536-object limit of any request: the frame is refused whole. */
  send_readv(fd, 14, S.pid, lots, 14000);
  expect_reply(fd, 0, 0, RMEM_ETOOBIG, "readv past the object limit", NULL);
  free(lots);
  uint64_t over[] = {S.pattern, MAX_READ / 2, S.pattern, MAX_READ / 2 + 1};
  send_readv(fd, 15, S.pid, over, 2);
  expect_code(fd, 15, RMEM_ETOOBIG, "readv over max_read in all");
  uint64_t huge[] = {S.pattern, UINT64_MAX / 2};
  send_readv(fd, 16, S.pid, huge, 1);
  expect_code(fd, 16, RMEM_ETOOBIG, "readv of one huge range");
  uint64_t wrap[] = {S.pattern, 4, UINT64_MAX - 3, 8};
  send_readv(fd, 17, S.pid, wrap, 2);
  expect_code(fd, 17, RMEM_EPARAM, "readv of a wrapping range");
  uint64_t top[] = {UINT64_MAX - 7, 8};
  send_readv(fd, 18, S.pid, top, 1);
  h_resp t;
  expect_reply(fd, 1, 18, 0, "readv of the last 8 bytes of the address space", &t);
  h_resp_free(&t);
  send_readv(fd, 19, 0, v, 1);
  expect_code(fd, 19, RMEM_EPARAM, "readv of pid 0");
  send_readv(fd, 20, 0x7ffffff0, v, 1);
  expect_code(fd, 20, RMEM_ENOPROC, "readv of a missing pid");

  /* Bad types. */
  codec_buf b;
  msgpack_packer pk;
  req_begin(&b, &pk, 21, "readv", 2);
  kv_u64(&pk, "pid", S.pid);
  codec_pack_str(&pk, "ranges");
  msgpack_pack_map(&pk, 0);
  req_send(fd, &b);
  expect_code(fd, 21, RMEM_EPARAM, "readv with ranges a map");
  req_begin(&b, &pk, 22, "readv", 2);
  kv_u64(&pk, "pid", S.pid);
  codec_pack_str(&pk, "ranges");
  msgpack_pack_array(&pk, 2);
  msgpack_pack_map(&pk, 2);
  kv_u64(&pk, "addr", S.pattern);
  kv_u64(&pk, "len", 4);
  msgpack_pack_map(&pk, 1);
  kv_u64(&pk, "addr", S.pattern);
  req_send(fd, &b);
  expect_code(fd, 22, RMEM_EPARAM, "readv with a range without len");
  req_begin(&b, &pk, 23, "readv", 2);
  kv_u64(&pk, "pid", S.pid);
  codec_pack_str(&pk, "ranges");
  msgpack_pack_array(&pk, 1);
  msgpack_pack_array(&pk, 2);
  msgpack_pack_uint64(&pk, S.pattern);
  msgpack_pack_uint64(&pk, 4);
  req_send(fd, &b);
  expect_code(fd, 23, RMEM_EPARAM, "readv with a range as an array");
  req_begin(&b, &pk, 24, "readv", 2);
  kv_u64(&pk, "pid", S.pid);
  codec_pack_str(&pk, "ranges");
  msgpack_pack_array(&pk, 1);
  msgpack_pack_map(&pk, 2);
  codec_pack_str(&pk, "addr");
  msgpack_pack_int64(&pk, -4096);
  kv_u64(&pk, "len", 4);
  req_send(fd, &b);
  expect_code(fd, 24, RMEM_EPARAM, "readv with a negative addr");
  req_begin(&b, &pk, 25, "readv", 1);
  kv_u64(&pk, "pid", S.pid);
  req_send(fd, &b);
  expect_code(fd, 25, RMEM_EPARAM, "readv without ranges");
  expect_open(fd);
  close(fd);
}

/* deref */

static void test_deref_chain(void **state) {
  (void)state;
  const int64_t off[] = {0x10, 0x8, -0x20};
  char buf[16];
  rmem_deref_result r = {0};
  assert_int_equal(rmem_deref(S.c, S.pid, S.chain, off, 3, buf, sizeof(buf), &r), 0);
  assert_memory_equal(buf, "chain-target-ok!", 16);
  assert_false(r.broken);
  assert_int_equal(r.npointers, 3);
  assert_int_equal(r.pointers[0], S.chain + 0x100);
  assert_int_equal(r.pointers[1], S.chain + 0x200);
  assert_int_equal(r.pointers[2], S.chain + 0x340);
  assert_int_equal(r.addr, S.chain_data);
  assert_int_equal(r.holes.n, 0);

  /* No offsets: a plain read at addr. */
  assert_int_equal(rmem_deref(S.c, S.pid, S.chain_data, NULL, 0, buf, 5, &r), 0);
  assert_memory_equal(buf, "chain", 5);
  assert_int_equal(r.npointers, 0);
  assert_int_equal(r.addr, S.chain_data);

  /* No bytes: only where the chain leads. */
  assert_int_equal(rmem_deref(S.c, S.pid, S.chain, off, 3, NULL, 0, &r), 0);
  assert_int_equal(r.addr, S.chain_data);

  /* Final bytes that run into an unmapped page: holes, not a break. */
  const int64_t to_edge[] = {(int64_t)(S.edge + S.page - 4 - (S.chain + 0x100))};
  char edge[8];
  assert_int_equal(rmem_deref(S.c, S.pid, S.chain, to_edge, 1, edge, sizeof(edge), &r), 0);
  assert_memory_equal(edge, "EEEE\0\0\0\0", 8);
  assert_int_equal(r.holes.n, 1);
  range_is(&r.holes.v[0], S.edge + S.page, 4, RMEM_EUNMAPPED);
  rmem_deref_result_free(&r);
}

static void write_ptr(uint64_t at, uint64_t v) {
  assert_int_equal(rmem_write(S.c, S.pid, at, &v, sizeof(v), NULL), sizeof(v));
}

static void test_deref_broken(void **state) {
  (void)state;
  rmem_deref_result r = {0};
  char buf[16];
  const int64_t zero[] = {0, 0, 0};
  /* The first pointer is in a page with no access. */
  assert_int_equal(rmem_deref(S.c, S.pid, S.guard + S.page, zero, 1, buf, 8, &r), RMEM_EFAULT);
  assert_true(r.broken);
  assert_int_equal(r.step, 0);
  assert_int_equal(r.addr, S.guard + S.page);
  assert_int_equal(r.code, RMEM_EPROT);
  assert_int_equal(r.npointers, 0);
  assert_non_null(strstr(rmem_last_error(S.c), "step 0"));

  /* The second pointer points into an unmapped page. */
  write_ptr(S.scratch, S.edge + S.page);
  assert_int_equal(rmem_deref(S.c, S.pid, S.scratch, zero, 2, buf, 8, &r), RMEM_EFAULT);
  assert_int_equal(r.step, 1);
  assert_int_equal(r.npointers, 1);
  assert_int_equal(r.pointers[0], S.edge + S.page);
  assert_int_equal(r.addr, S.edge + S.page);
  assert_int_equal(r.code, RMEM_EUNMAPPED);

  /* The chain resolves, but nothing at its end is readable: step n. */
  const int64_t to_guard[] = {0x10, 0x8, (int64_t)(S.guard + S.page - (S.chain + 0x340))};
  assert_int_equal(rmem_deref(S.c, S.pid, S.chain, to_guard, 3, buf, 16, &r), RMEM_EFAULT);
  assert_int_equal(r.step, 3);
  assert_int_equal(r.npointers, 3);
  assert_int_equal(r.addr, S.guard + S.page);
  assert_int_equal(r.code, RMEM_EPROT);

  /* A pointer that straddles the end of the address space. */
  assert_int_equal(rmem_deref(S.c, S.pid, UINT64_MAX - 3, zero, 1, buf, 8, &r), RMEM_EFAULT);
  assert_int_equal(r.step, 0);
  assert_int_equal(r.code, RMEM_EUNMAPPED);
  rmem_deref_result_free(&r);
}

/* Arithmetic wraps modulo 2^64 for a 64-bit target. */
static void test_deref_wrap(void **state) {
  (void)state;
  if (sizeof(void *) != 8)
    skip();
  rmem_deref_result r = {0};
  char buf[8];
  write_ptr(S.scratch, UINT64_MAX - 0xf);
  const int64_t off[] = {0x20};
  assert_int_equal(rmem_deref(S.c, S.pid, S.scratch, off, 1, buf, 8, &r), RMEM_EFAULT);
  assert_int_equal(r.pointers[0], UINT64_MAX - 0xf);
  assert_int_equal(r.step, 1);
  assert_int_equal(r.addr, 0x10);
  /* A final range that would go past 2^64 is broken rather than wrapped. */
  const int64_t back[] = {0xc};
  assert_int_equal(rmem_deref(S.c, S.pid, S.scratch, back, 1, buf, 8, &r), RMEM_EFAULT);
  assert_int_equal(r.addr, UINT64_MAX - 3);
  assert_int_equal(r.step, 1);
  assert_int_equal(r.code, RMEM_EUNMAPPED);
  rmem_deref_result_free(&r);
}

/* A chain that loops just follows the offsets; longer chains are split. */
static void test_deref_loop(void **state) {
  (void)state;
  write_ptr(S.scratch, S.scratch);
  size_t n = 2 * RMEM_DEREF_MAX_OFFSETS + 10;
  int64_t *off = calloc(n, sizeof(*off));
  assert_non_null(off);
  uint64_t v;
  rmem_deref_result r = {0};
  assert_int_equal(rmem_deref(S.c, S.pid, S.scratch, off, n, &v, sizeof(v), &r), 0);
  assert_int_equal(v, S.scratch);
  assert_int_equal(r.npointers, n);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(r.pointers[i], S.scratch);
  assert_int_equal(r.addr, S.scratch);
  /* A break in a later request counts its steps from the start. */
  off[RMEM_DEREF_MAX_OFFSETS + 3] = (int64_t)(S.guard + S.page - S.scratch);
  assert_int_equal(rmem_deref(S.c, S.pid, S.scratch, off, n, &v, sizeof(v), &r), RMEM_EFAULT);
  assert_int_equal(r.step, RMEM_DEREF_MAX_OFFSETS + 4);
  assert_int_equal(r.npointers, RMEM_DEREF_MAX_OFFSETS + 4);
  assert_int_equal(r.code, RMEM_EPROT);
  rmem_deref_result_free(&r);
  free(off);
}

/* A final read longer than max_read is split too. */
static void test_deref_long_read(void **state) {
  (void)state;
  const int64_t off[] = {0};
  write_ptr(S.scratch, S.pattern);
  size_t len = MAX_READ + 3 * S.page;
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  rmem_deref_result r = {0};
  assert_int_equal(rmem_deref(S.c, S.pid, S.scratch, off, 1, buf, len, &r), 0);
  for (size_t i = 0; i < 3 * S.page; i++)
    assert_int_equal(buf[i], pattern_byte(i));
  rmem_deref_result_free(&r);
  free(buf);
}

static double chase_deref_ms, chase_reads_ms;

/* The 1000-step list, in one request and in 1000 reads. */
static void test_deref_chase(void **state) {
  (void)state;
  size_t n = (size_t)S.chase_n;
  int64_t *off = calloc(n, sizeof(*off));
  assert_non_null(off);
  uint64_t node[2];
  rmem_deref_result r = {0};
  double t0 = h_now_ms();
  assert_int_equal(rmem_deref(S.c, S.pid, S.chase, off, n, node, sizeof(node), &r), 0);
  chase_deref_ms = h_now_ms() - t0;
  assert_int_equal(node[0], 0);
  assert_int_equal(node[1], n);
  assert_int_equal(r.addr, S.chase + 64 * n);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(r.pointers[i], S.chase + 64 * (i + 1));

  t0 = h_now_ms();
  uint64_t p = S.chase;
  for (size_t i = 0; i < n; i++) {
    uint64_t v;
    assert_int_equal(rmem_read(S.c, S.pid, p, &v, sizeof(v), NULL), sizeof(v));
    p = v;
  }
  assert_int_equal(rmem_read(S.c, S.pid, p, node, sizeof(node), NULL), sizeof(node));
  chase_reads_ms = h_now_ms() - t0;
  assert_int_equal(node[1], n);
  printf("# deref of %zu steps: %.3f ms in one request; %.3f ms in %zu reads\n", n, chase_deref_ms,
         chase_reads_ms, n + 1);
  rmem_deref_result_free(&r);
  free(off);
}

static void send_deref(int fd, uint32_t msgid, uint64_t pid, uint64_t addr, const int64_t *off,
                       size_t n, uint64_t len) {
  codec_buf b;
  msgpack_packer pk;
  req_begin(&b, &pk, msgid, "deref", 4);
  kv_u64(&pk, "pid", pid);
  kv_u64(&pk, "addr", addr);
  codec_pack_str(&pk, "offsets");
  msgpack_pack_array(&pk, n);
  for (size_t i = 0; i < n; i++)
    msgpack_pack_int64(&pk, off[i]);
  kv_u64(&pk, "len", len);
  req_send(fd, &b);
}

static void test_deref_wire(void **state) {
  (void)state;
  int fd = connect_hello();
  int64_t *off = calloc(20000, sizeof(*off));
  assert_non_null(off);
  write_ptr(S.scratch, S.scratch);
  send_deref(fd, 30, S.pid, S.scratch, off, RMEM_DEREF_MAX_OFFSETS, 8);
  expect_code(fd, 30, 0, "deref of exactly the most offsets (a loop)");
  send_deref(fd, 31, S.pid, S.scratch, off, RMEM_DEREF_MAX_OFFSETS + 1, 8);
  expect_code(fd, 31, RMEM_ETOOBIG, "deref of too many offsets");
  send_deref(fd, 32, S.pid, S.scratch, off, 20000, 8);
  expect_code(fd, 32, RMEM_ETOOBIG, "deref of an absurd chain");
  send_deref(fd, 33, S.pid, S.scratch, off, 1, MAX_READ + 1);
  expect_code(fd, 33, RMEM_ETOOBIG, "deref with len over max_read");
  send_deref(fd, 34, 0, S.scratch, off, 1, 8);
  expect_code(fd, 34, RMEM_EPARAM, "deref of pid 0");
  send_deref(fd, 35, 0x7ffffff0, S.scratch, off, 1, 8);
  expect_code(fd, 35, RMEM_ENOPROC, "deref of a missing pid");
  /* The wire shape of a broken chain. */
  send_deref(fd, 36, S.pid, S.guard + S.page, off, 2, 8);
  h_resp r;
  expect_reply(fd, 1, 36, 0, "deref that breaks", &r);
  const msgpack_object *br = codec_map_get(r.result, "broken");
  assert_non_null(br);
  assert_null(codec_map_get(r.result, "data"));
  assert_int_equal(codec_map_get(br, "step")->via.u64, 0);
  assert_int_equal(codec_map_get(br, "addr")->via.u64, S.guard + S.page);
  assert_int_equal(codec_map_get(br, "code")->via.i64, RMEM_EPROT);
  assert_int_equal(codec_map_get(r.result, "pointers")->via.array.size, 0);
  h_resp_free(&r);

  codec_buf b;
  msgpack_packer pk;
  req_begin(&b, &pk, 37, "deref", 4);
  kv_u64(&pk, "pid", S.pid);
  kv_u64(&pk, "addr", S.scratch);
  codec_pack_str(&pk, "offsets");
  msgpack_pack_array(&pk, 2);
  msgpack_pack_int64(&pk, 8);
  codec_pack_str(&pk, "8");
  kv_u64(&pk, "len", 8);
  req_send(fd, &b);
  expect_code(fd, 37, RMEM_EPARAM, "deref with a string offset");
  req_begin(&b, &pk, 38, "deref", 4);
  kv_u64(&pk, "pid", S.pid);
  kv_u64(&pk, "addr", S.scratch);
  codec_pack_str(&pk, "offsets");
  msgpack_pack_array(&pk, 1);
  msgpack_pack_uint64(&pk, UINT64_MAX);
  kv_u64(&pk, "len", 8);
  req_send(fd, &b);
  expect_code(fd, 38, RMEM_EPARAM, "deref with an offset past int64");
  req_begin(&b, &pk, 39, "deref", 3);
  kv_u64(&pk, "pid", S.pid);
  kv_u64(&pk, "addr", S.scratch);
  kv_u64(&pk, "len", 8);
  req_send(fd, &b);
  expect_code(fd, 39, RMEM_EPARAM, "deref without offsets");
  req_begin(&b, &pk, 40, "deref", 4);
  kv_u64(&pk, "pid", S.pid);
  kv_u64(&pk, "addr", S.scratch);
  codec_pack_str(&pk, "offsets");
  msgpack_pack_int64(&pk, 8);
  kv_u64(&pk, "len", 8);
  req_send(fd, &b);
  expect_code(fd, 40, RMEM_EPARAM, "deref with offsets not an array");
  expect_open(fd);
  free(off);
  close(fd);
}

/* read_string */

static void test_string_utf8(void **state) {
  (void)state;
  rmem_string s = {0};
  /* max_len reaches into the inaccessible page after the string. */
  assert_int_equal(rmem_read_string(S.c, S.pid, S.str8, 0, 0, &s), 0);
  assert_string_equal(s.text, "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93");
  assert_int_equal(s.text_len, strlen(s.text));
  assert_int_equal(s.len, s.text_len);
  assert_true(s.terminated);
  assert_false(s.has_hole);
  /* Cut short by max_len. */
  assert_int_equal(rmem_read_string(S.c, S.pid, S.str8, 5, 0, &s), 0);
  assert_string_equal(s.text, "h\xc3\xa9ll");
  assert_int_equal(s.len, 5);
  assert_false(s.terminated);
  assert_false(s.has_hole);
  rmem_string_free(&s);
}

static void test_string_utf16(void **state) {
  (void)state;
  rmem_string s = {0};
  assert_int_equal(rmem_read_string(S.c, S.pid, S.str16, 0, RMEM_STRING_UTF16, &s), 0);
  assert_string_equal(s.text, "Gr\xc3\xbc\xc3\x9f"
                              "e \xf0\x9f\x98\x80");
  assert_int_equal(s.len, 16);
  assert_true(s.terminated);
  /* Unpaired surrogates become U+FFFD. */
  assert_int_equal(rmem_read_string(S.c, S.pid, S.str16bad, 0, RMEM_STRING_UTF16, &s), 0);
  assert_string_equal(s.text, "A\xef\xbf\xbd"
                              "B\xef\xbf\xbd");
  assert_int_equal(s.len, 8);
  assert_true(s.terminated);
  /* A high surrogate cut off by max_len is unpaired too; an odd max_len
   * reads whole units only. */
  assert_int_equal(rmem_read_string(S.c, S.pid, S.str16, 15, RMEM_STRING_UTF16, &s), 0);
  assert_string_equal(s.text, "Gr\xc3\xbc\xc3\x9f"
                              "e \xef\xbf\xbd");
  assert_int_equal(s.len, 14);
  assert_false(s.terminated);
  rmem_string_free(&s);
}

static void test_string_unterminated(void **state) {
  (void)state;
  rmem_string s = {0};
  assert_int_equal(rmem_read_string(S.c, S.pid, S.strnoterm, 4096, 0, &s), 0);
  assert_int_equal(s.len, 32);
  assert_int_equal(s.text_len, 32);
  assert_memory_equal(s.text, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 32);
  assert_false(s.terminated);
  assert_true(s.has_hole);
  assert_int_equal(s.hole_addr, S.strnoterm + 32);
  assert_int_equal(s.hole_code, RMEM_EPROT);
  /* UTF-16 from an odd address: the byte before the hole is not a unit. */
  assert_int_equal(rmem_read_string(S.c, S.pid, S.strnoterm + 1, 0, RMEM_STRING_UTF16, &s), 0);
  assert_int_equal(s.len, 30);
  assert_int_equal(s.text_len, 15 * 3);
  assert_true(s.has_hole);
  assert_int_equal(s.hole_addr, S.strnoterm + 32);
  /* Nothing readable: an error. */
  assert_int_equal(rmem_read_string(S.c, S.pid, S.strnoterm + 32, 0, 0, &s), RMEM_EFAULT);
  assert_int_equal(rmem_read_string(S.c, S.pid, S.edge + S.page, 0, 0, &s), RMEM_EFAULT);
  assert_null(s.text);
  /* Too long. */
  assert_int_equal(rmem_read_string(S.c, S.pid, S.str8, RMEM_STRING_MAX + 1, 0, &s), RMEM_ETOOBIG);
  assert_int_equal(rmem_read_string(S.c, S.pid, S.str8, MAX_READ + 1, 0, &s), RMEM_ETOOBIG);
  rmem_string_free(&s);
}

static void send_string(int fd, uint32_t msgid, uint64_t addr, int with_max, uint64_t max_len,
                        const char *encoding) {
  codec_buf b;
  msgpack_packer pk;
  req_begin(&b, &pk, msgid, "read_string", 2 + (with_max != 0) + (encoding != NULL));
  kv_u64(&pk, "pid", S.pid);
  kv_u64(&pk, "addr", addr);
  if (with_max)
    kv_u64(&pk, "max_len", max_len);
  if (encoding) {
    codec_pack_str(&pk, "encoding");
    codec_pack_str(&pk, encoding);
  }
  req_send(fd, &b);
}

static void test_string_wire(void **state) {
  (void)state;
  int fd = connect_hello();
  send_string(fd, 50, S.str8, 0, 0, NULL);
  h_resp r;
  expect_reply(fd, 1, 50, 0, "read_string", &r);
  assert_true(codec_map_get(r.result, "terminated")->via.boolean);
  assert_null(codec_map_get(r.result, "hole"));
  h_resp_free(&r);
  send_string(fd, 51, S.strnoterm, 1, 64, "utf8");
  expect_reply(fd, 1, 51, 0, "read_string into a hole", &r);
  const msgpack_object *hole = codec_map_get(r.result, "hole");
  assert_non_null(hole);
  assert_int_equal(codec_map_get(hole, "addr")->via.u64, S.strnoterm + 32);
  h_resp_free(&r);
  send_string(fd, 52, S.str8, 1, 0, NULL);
  expect_code(fd, 52, RMEM_EPARAM, "read_string with max_len 0");
  send_string(fd, 53, S.str8, 1, RMEM_STRING_MAX + 1, NULL);
  expect_code(fd, 53, RMEM_ETOOBIG, "read_string with max_len over 1 MiB");
  send_string(fd, 54, S.str8, 0, 0, "latin1");
  expect_code(fd, 54, RMEM_EPARAM, "read_string with an unknown encoding");
  send_string(fd, 55, UINT64_MAX - 10, 1, 64, NULL);
  expect_code(fd, 55, RMEM_EPARAM, "read_string that wraps");
  send_string(fd, 56, S.guard + S.page, 0, 0, "utf16");
  expect_code(fd, 56, RMEM_EFAULT, "read_string of an inaccessible page");
  codec_buf b;
  msgpack_packer pk;
  req_begin(&b, &pk, 57, "read_string", 3);
  kv_u64(&pk, "pid", S.pid);
  kv_u64(&pk, "addr", S.str8);
  codec_pack_str(&pk, "encoding");
  msgpack_pack_int64(&pk, 16);
  req_send(fd, &b);
  expect_code(fd, 57, RMEM_EPARAM, "read_string with an integer encoding");
  expect_open(fd);
  close(fd);
}

/* fill */

static void fixture_bytes(uint64_t addr, size_t len, uint8_t *out) {
  assert_int_equal(h_fixture_dump(&S.fx, addr, len, out), 0);
}

static void test_fill(void **state) {
  (void)state;
  static const uint8_t pat[] = {0xde, 0xad, 0xbe};
  rmem_ranges failed = {0};
  assert_int_equal(rmem_fill(S.c, S.pid, S.scratch + 5, 100, pat, 3, &failed), 100);
  assert_int_equal(failed.n, 0);
  uint8_t got[110];
  fixture_bytes(S.scratch, sizeof(got), got);
  for (size_t i = 0; i < sizeof(got); i++) {
    uint8_t want = i < 5 || i >= 105 ? got[i] : pat[(i - 5) % 3];
    assert_int_equal(got[i], want);
  }
  /* Read-only pages are written through the debugger path, as by write. */
  static const uint8_t ro[] = {'r', 'o'};
  assert_int_equal(rmem_fill(S.c, S.pid, S.rodata + 10, 6, ro, 2, NULL), 6);
  fixture_bytes(S.rodata + 8, 10, got);
  assert_memory_equal(got, "RRrororoRR", 10);
  rmem_ranges_free(&failed);
}

/* Across an inaccessible page: the rest is written, the page is listed. */
static void test_fill_partial(void **state) {
  (void)state;
  static const uint8_t pat[] = {0x11, 0x22, 0x33, 0x44, 0x55};
  rmem_ranges failed = {0};
  uint64_t start = S.guard + S.page - 16;
  ssize_t n = rmem_fill(S.c, S.pid, start, (size_t)S.page + 32, pat, 5, &failed);
  assert_int_equal(n, 32);
  assert_int_equal(failed.n, 1);
  range_is(&failed.v[0], S.guard + S.page, S.page, RMEM_EPROT);
  uint8_t got[16];
  fixture_bytes(S.guard + 2 * S.page, 16, got);
  /* The phase carries on across the page that was not written. */
  for (size_t i = 0; i < 16; i++)
    assert_int_equal(got[i], pat[(16 + S.page + i) % 5]);
  rmem_ranges_free(&failed);
}

/* Nothing writable: RMEM_EFAULT, and a big empty range is crossed at once. */
static void test_fill_unmapped(void **state) {
  (void)state;
  static const uint8_t pat[] = {0x90};
  rmem_ranges failed = {0};
  assert_int_equal(rmem_fill(S.c, S.pid, S.edge + S.page, 64, pat, 1, &failed), RMEM_EFAULT);
  assert_int_equal(failed.n, 1);
  range_is(&failed.v[0], S.edge + S.page, 64, RMEM_EUNMAPPED);
  rmem_ranges_free(&failed);

  /* A free gap of more than 2 GiB, filled in two requests of 1 GiB at most. */
  rmem_memmap m = {0};
  assert_int_equal(rmem_map(S.c, S.pid, RMEM_MAP_FREE, &m), 0);
  uint64_t gap = 0;
  for (size_t i = 0; i < m.n && gap == 0; i++)
    if (m.regions[i].state == RMEM_STATE_FREE && m.regions[i].size >= (3ull << 30))
      gap = m.regions[i].base + (1ull << 20);
  rmem_memmap_free(&m);
  assert_true(gap != 0);
  size_t len = (size_t)((2ull << 30) + 4096);
  double t0 = h_now_ms();
  assert_int_equal(rmem_fill(S.c, S.pid, gap, len, pat, 1, &failed), RMEM_EFAULT);
  double ms = h_now_ms() - t0;
  assert_int_equal(failed.n, 1);
  range_is(&failed.v[0], gap, len, RMEM_EUNMAPPED);
  if (ms > 2000)
    fail_msg("filling 2 GiB of nothing took %.0f ms", ms);
  rmem_ranges_free(&failed);
}

static void send_fill(int fd, uint32_t msgid, uint64_t addr, uint64_t len, const void *pat,
                      size_t plen) {
  codec_buf b;
  msgpack_packer pk;
  req_begin(&b, &pk, msgid, "fill", 4);
  kv_u64(&pk, "pid", S.pid);
  kv_u64(&pk, "addr", addr);
  kv_u64(&pk, "len", len);
  codec_pack_str(&pk, "pattern");
  msgpack_pack_bin(&pk, plen);
  msgpack_pack_bin_body(&pk, pat, plen);
  req_send(fd, &b);
}

static void test_fill_wire(void **state) {
  (void)state;
  int fd = connect_hello();
  static uint8_t pat[RMEM_FILL_MAX_PATTERN + 1];
  memset(pat, 0x5a, sizeof(pat));
  send_fill(fd, 60, S.scratch, 64, pat, RMEM_FILL_MAX_PATTERN);
  h_resp r;
  expect_reply(fd, 1, 60, 0, "fill with the longest pattern", &r);
  assert_int_equal(codec_map_get(r.result, "written")->via.u64, 64);
  h_resp_free(&r);
  send_fill(fd, 61, S.scratch, 0, pat, 1);
  expect_reply(fd, 1, 61, 0, "fill of nothing", &r);
  assert_int_equal(codec_map_get(r.result, "written")->via.u64, 0);
  h_resp_free(&r);
  send_fill(fd, 62, S.scratch, 64, pat, RMEM_FILL_MAX_PATTERN + 1);
  expect_code(fd, 62, RMEM_ETOOBIG, "fill with too long a pattern");
  send_fill(fd, 63, S.scratch, 64, pat, 0);
  expect_code(fd, 63, RMEM_EPARAM, "fill with an empty pattern");
  send_fill(fd, 64, S.scratch, RMEM_FILL_MAX + 1, pat, 1);
  expect_code(fd, 64, RMEM_ETOOBIG, "fill over 1 GiB");
  send_fill(fd, 65, UINT64_MAX - 7, 16, pat, 1);
  expect_code(fd, 65, RMEM_EPARAM, "fill that wraps");
  send_fill(fd, 66, S.edge + S.page, 16, pat, 1);
  expect_reply(fd, 1, 66, RMEM_EFAULT, "fill of unmapped memory", &r);
  h_resp_free(&r);
  codec_buf b;
  msgpack_packer pk;
  req_begin(&b, &pk, 67, "fill", 4);
  kv_u64(&pk, "pid", S.pid);
  kv_u64(&pk, "addr", S.scratch);
  kv_u64(&pk, "len", 8);
  codec_pack_str(&pk, "pattern");
  codec_pack_str(&pk, "ab");
  req_send(fd, &b);
  expect_code(fd, 67, RMEM_EPARAM, "fill with a str pattern");
  expect_open(fd);
  close(fd);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_methods_announced),
      cmocka_unit_test(test_readv),
      cmocka_unit_test(test_readv_holes_per_range),
      cmocka_unit_test(test_readv_split),
      cmocka_unit_test(test_readv_wire),
      cmocka_unit_test(test_deref_chain),
      cmocka_unit_test(test_deref_broken),
      cmocka_unit_test(test_deref_wrap),
      cmocka_unit_test(test_deref_loop),
      cmocka_unit_test(test_deref_long_read),
      cmocka_unit_test(test_deref_chase),
      cmocka_unit_test(test_deref_wire),
      cmocka_unit_test(test_string_utf8),
      cmocka_unit_test(test_string_utf16),
      cmocka_unit_test(test_string_unterminated),
      cmocka_unit_test(test_string_wire),
      cmocka_unit_test(test_fill),
      cmocka_unit_test(test_fill_partial),
      cmocka_unit_test(test_fill_unmapped),
      cmocka_unit_test(test_fill_wire),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
