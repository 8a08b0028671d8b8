/* The page cache's coherence rules, in process: the test reads and writes
 * its own memory through the agent's read and write methods (parse, then run
 * as a worker would), changes mappings under the cache, and drives the
 * freeze hook, which no method exposes yet. */
#include "cache.h"
#include "dispatch.h"
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const dispatch_limits limits = {
    .max_frame = 16u << 20, .max_read = 8u << 20, .max_write = 8u << 20, .max_inflight = 64};
static size_t page;
static uint32_t self;

/* Runs one request built by msg_*_req_pack through `m` and returns the reply
 * frame (free() it). */
static char *run(const dispatch_method *m, codec_buf *req, size_t *len) {
  assert_int_equal(codec_frame_end(req, 0), 0);
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg msg;
  assert_int_equal(codec_msg_decode(req->data + CODEC_FRAME_HDR, req->len - CODEC_FRAME_HDR, 65536,
                                    &up, &msg, NULL, 0),
                   0);
  dispatch_job *j = calloc(1, sizeof(*j) + m->priv_size);
  assert_non_null(j);
  j->msgid = msg.msgid;
  j->method = m;
  j->limits = &limits;
  j->priv = j + 1;
  assert_int_equal(m->parse(j, msg.params), 0);
  dispatch_job_run(j);
  msgpack_unpacked_destroy(&up);
  codec_buf_free(req);
  return dispatch_job_finish(j, len);
}

/* Reads through the read method; returns the bytes served from the cache. */
static uint64_t rd(uint64_t addr, void *out, size_t n, uint64_t max_age_ms, int uncached) {
  codec_buf b;
  codec_buf_init(&b);
  msgpack_packer pk;
  codec_frame_begin(&b, &pk);
  msg_read_req q = {
      .pid = self, .addr = addr, .len = n, .max_age_ms = max_age_ms, .uncached = uncached};
  msg_read_req_pack(&pk, 1, &q);
  size_t len;
  char *reply = run(&method_read, &b, &len);
  msgpack_unpacked up;
  msgpack_unpacked_init(&up);
  codec_msg m;
  assert_int_equal(
      codec_msg_decode(reply + CODEC_FRAME_HDR, len - CODEC_FRAME_HDR, 65536, &up, &m, NULL, 0), 0);
  assert_null(m.error);
  const char *data;
  size_t dlen;
  uint64_t cached = 0;
  codec_err err;
  assert_int_equal(msg_read_res_parse(m.result, &data, &dlen, NULL, NULL, &cached, &err), 0);
  assert_int_equal(dlen, n);
  memcpy(out, data, n);
  msgpack_unpacked_destroy(&up);
  free(reply);
  return cached;
}

/* Writes through the write method. */
static void wr(uint64_t addr, const void *data, size_t n) {
  codec_buf b;
  codec_buf_init(&b);
  msgpack_packer pk;
  codec_frame_begin(&b, &pk);
  msg_write_req q = {.pid = self, .addr = addr, .data = data, .len = n};
  msg_write_req_pack(&pk, 1, &q);
  size_t len;
  free(run(&method_write, &b, &len));
}

static void wait_maps(void) {
  usleep((CACHE_MAPS_MS + 30) * 1000);
}

/* A temporary file of one page of `c`, opened read-write. */
static int temp_file(int c) {
  char tmpl[] = "/tmp/test_page_cache.XXXXXX";
  int fd = mkstemp(tmpl);
  assert_true(fd >= 0);
  unlink(tmpl);
  char *buf = malloc(page);
  memset(buf, c, page);
  assert_int_equal(write(fd, buf, page), (ssize_t)page);
  free(buf);
  return fd;
}

static int setup(void **state) {
  (void)state;
  return cache_init(CACHE_DEFAULT_SIZE);
}

static int teardown(void **state) {
  (void)state;
  cache_close();
  return 0;
}

/* A read-only file page is served while its mapping is unchanged; a new
 * mapping at the same place, or a change of protection, is noticed once the
 * map is read again. */
static void test_mapping_changes(void **state) {
  (void)state;
  int fa = temp_file('A'), fb = temp_file('B');
  char *p = mmap(NULL, page, PROT_READ, MAP_PRIVATE, fa, 0);
  assert_true(p != MAP_FAILED);
  uint64_t a = (uintptr_t)p;
  char buf[64];
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), sizeof(buf));
  assert_int_equal(buf[0], 'A');

  /* Another file at the same address. */
  assert_true(mmap(p, page, PROT_READ, MAP_PRIVATE | MAP_FIXED, fb, 0) == p);
  wait_maps();
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(buf[0], 'B');
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), sizeof(buf));
  assert_int_equal(buf[0], 'B');

  /* Made writable: private memory, read live. */
  assert_int_equal(mprotect(p, page, PROT_READ | PROT_WRITE), 0);
  wait_maps();
  p[0] = 'C';
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(buf[0], 'C');
  /* Read-only again: the same line as before, but a new epoch, since the
   * change was seen in between. */
  assert_int_equal(mprotect(p, page, PROT_READ), 0);
  wait_maps();
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(buf[0], 'C');
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), sizeof(buf));

  /* Unmapped: a hole, nothing served. */
  munmap(p, page);
  wait_maps();
  codec_buf b;
  codec_buf_init(&b);
  msgpack_packer pk;
  codec_frame_begin(&b, &pk);
  msg_read_req q = {.pid = self, .addr = a, .len = 8};
  msg_read_req_pack(&pk, 1, &q);
  size_t len;
  char *reply = run(&method_read, &b, &len);
  assert_non_null(memmem(reply, len, "RMEM_EFAULT", 11));
  free(reply);
  close(fa);
  close(fb);
}

/* A write into a shared file mapping drops the cached pages of that file
 * wherever it is mapped, since they all see the write. */
static void test_shared_file_write(void **state) {
  (void)state;
  int fd = temp_file('S');
  char *ro = mmap(NULL, page, PROT_READ, MAP_SHARED, fd, 0);
  char *rw = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  assert_true(ro != MAP_FAILED && rw != MAP_FAILED);
  wait_maps();
  char buf[16];
  assert_int_equal(rd((uintptr_t)ro, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(rd((uintptr_t)ro, buf, sizeof(buf), 0, 0), sizeof(buf));
  wr((uintptr_t)rw, "new", 3);
  assert_int_equal(rd((uintptr_t)ro, buf, sizeof(buf), 0, 0), 0);
  assert_memory_equal(buf, "newS", 4);
  munmap(ro, page);
  munmap(rw, page);
  close(fd);
}

/* The freeze hook: private pages read while frozen are served whatever
 * their age, even when the memory changes (nothing may change a frozen
 * target); at thaw they count as read then. */
static void test_freeze(void **state) {
  (void)state;
  unsigned char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  unsigned char *sh = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED && sh != MAP_FAILED);
  uint64_t a = (uintptr_t)p;
  unsigned char buf[32];
  memset(p, 0x11, page);
  wait_maps();
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(cache_set_frozen(self, 1), 0);
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), sizeof(buf));
  memset(p, 0x22, page);
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), sizeof(buf));
  assert_int_equal(buf[0], 0x11);
  /* Shared memory may change under a frozen target: it still needs an age. */
  assert_int_equal(rd((uintptr_t)sh, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(rd((uintptr_t)sh, buf, sizeof(buf), 0, 0), 0);
  usleep(60 * 1000);
  assert_int_equal(cache_set_frozen(self, 0), 0);
  /* Read 60 ms ago, but valid at the thaw a moment ago. */
  assert_int_equal(rd(a, buf, sizeof(buf), 40, 0), sizeof(buf));
  assert_int_equal(buf[0], 0x11);
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(buf[0], 0x22);

  /* A copy from before the freeze is not trusted during it. */
  assert_int_equal(rd(a, buf, sizeof(buf), 60000, 0), sizeof(buf));
  memset(p, 0x33, page);
  assert_int_equal(cache_set_frozen(self, 1), 0);
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(buf[0], 0x33);
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), sizeof(buf));
  /* Writes through the agent still invalidate. */
  wr(a, "\x44", 1);
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);
  assert_int_equal(buf[0], 0x44);
  assert_int_equal(cache_set_frozen(self, 0), 0);
  assert_int_equal(rd(a, buf, sizeof(buf), 0, 0), 0);

  assert_true(cache_set_frozen(0x7ffffff0, 1) < 0);
  munmap(p, page);
  munmap(sh, page);
}

static int block_pipe[2];
static pid_t thread_tid;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void *blocker(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  thread_tid = gettid();
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
  char c;
  ssize_t n = read(block_pipe[0], &c, 1);
  (void)n;
  return NULL;
}

/* A read that began before a write must not store what it read; a write
 * through a thread id invalidates its process's pages. */
static void test_invalidation(void **state) {
  (void)state;
  unsigned char *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(p != MAP_FAILED);
  uint64_t a = (uintptr_t)p;
  unsigned char buf[16];
  memset(p, 0x55, page);
  cache_read r;
  cache_read_begin(&r, self, 60000, 0);
  assert_non_null(r.proc);
  cache_invalidate(self, a + 100, 1);
  cache_read_store(&r, a, p);
  cache_read_end(&r);
  assert_int_equal(rd(a, buf, sizeof(buf), 60000, 0), 0);
  assert_int_equal(rd(a, buf, sizeof(buf), 60000, 0), sizeof(buf));

  assert_int_equal(pipe(block_pipe), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, blocker, NULL), 0);
  pthread_mutex_lock(&mu);
  while (thread_tid == 0)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  rmem_cache_info s0, s1;
  cache_get_stats(&s0);
  cache_invalidate((uint32_t)thread_tid, a + page - 1, 1);
  cache_get_stats(&s1);
  assert_int_equal(s1.invalidations - s0.invalidations, 1);
  assert_int_equal(rd(a, buf, sizeof(buf), 60000, 0), 0);
  /* Reads by thread id are not cached (a thread has no process handle). */
  assert_int_equal(write(block_pipe[1], "x", 1), 1);
  pthread_join(t, NULL);
  close(block_pipe[0]);
  close(block_pipe[1]);
  munmap(p, page);
}

int main(void) {
  page = (size_t)sysconf(_SC_PAGESIZE);
  self = (uint32_t)getpid();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_mapping_changes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_shared_file_write, setup, teardown),
      cmocka_unit_test_setup_teardown(test_freeze, setup, teardown),
      cmocka_unit_test_setup_teardown(test_invalidation, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
