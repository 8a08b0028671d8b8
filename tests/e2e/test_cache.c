/* The agent's page cache, end to end: a real rmemd and real fixtures. The
 * test changes the fixture's memory behind the agent's back (with
 * process_vm_writev, or /proc/PID/mem for read-only pages) to see exactly
 * which reads get fresh bytes and which get the documented stale ones. */
#include "harness.h"
#include "rmem.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

static struct {
  h_agent agent;
  int agent_up;
  h_fixture fx;
  rmem_client *c;
  uint32_t pid;
  size_t page;
  uint64_t scratch, pattern;
  uint64_t elf;      /* The fixture executable's first page: its ELF header. */
  uint64_t files[8]; /* Pages of read-only file mappings of the fixture. */
  size_t nfiles;
} S;

/* Memory of `pid`, read or written around the agent. */
static void peek(uint32_t pid, uint64_t addr, void *buf, size_t n) {
  struct iovec l = {buf, n}, r = {(void *)(uintptr_t)addr, n};
  assert_int_equal(process_vm_readv((pid_t)pid, &l, 1, &r, 1, 0), (ssize_t)n);
}

static void poke(uint32_t pid, uint64_t addr, const void *buf, size_t n) {
  struct iovec l = {(void *)buf, n}, r = {(void *)(uintptr_t)addr, n};
  assert_int_equal(process_vm_writev((pid_t)pid, &l, 1, &r, 1, 0), (ssize_t)n);
}

/* As a debugger patches code: through /proc/PID/mem, which writes read-only
 * pages too (a private copy of the page, the mapping unchanged). */
static void poke_mem(uint32_t pid, uint64_t addr, const void *buf, size_t n) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%u/mem", pid);
  int fd = open(path, O_RDWR | O_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, buf, n, (off_t)addr), (ssize_t)n);
  close(fd);
}

static ssize_t read_opts(rmem_client *c, uint32_t pid, uint64_t addr, void *buf, size_t len,
                         int uncached, uint64_t max_age_ms, uint64_t *cached) {
  rmem_read_opts o = {.uncached = uncached, .max_age_ms = max_age_ms};
  rmem_read_info info = {.cached_bytes = 12345};
  ssize_t n = rmem_read_ex(c, pid, addr, buf, len, &o, NULL, &info);
  if (cached)
    *cached = info.cached_bytes;
  return n;
}

/* Reads `len` bytes and checks the count and how many came from the cache. */
static void read_expect(uint64_t addr, void *buf, size_t len, int uncached, uint64_t max_age_ms,
                        uint64_t want_cached) {
  uint64_t cached;
  ssize_t n = read_opts(S.c, S.pid, addr, buf, len, uncached, max_age_ms, &cached);
  if (n != (ssize_t)len)
    fail_msg("read 0x%" PRIx64 "+%zu: %zd (%s)", addr, len, n, rmem_last_error(S.c));
  if (cached != want_cached)
    fail_msg("read 0x%" PRIx64 "+%zu (uncached %d, max_age %" PRIu64 "): %" PRIu64
             " bytes from the cache, want %" PRIu64,
             addr, len, uncached, max_age_ms, cached, want_cached);
}

static rmem_cache_info stats(rmem_client *c) {
  rmem_cache_info s;
  assert_int_equal(rmem_cache_stats(c, &s), 0);
  return s;
}

/* Pages of read-only file mappings of `pid`, as the agent classifies them. */
static size_t file_pages(uint32_t pid, uint64_t *out, size_t max, uint64_t *elf) {
  h_mapline *m;
  long n = h_maps_read((pid_t)pid, &m);
  assert_true(n > 0);
  char exe[PATH_MAX] = "", link[64];
  snprintf(link, sizeof(link), "/proc/%u/exe", pid);
  ssize_t k = readlink(link, exe, sizeof(exe) - 1);
  exe[k > 0 ? k : 0] = '\0';
  size_t got = 0;
  *elf = 0;
  for (long i = 0; i < n; i++) {
    const h_mapline *l = &m[i];
    if (!(l->prot & RMEM_PROT_R) || (l->prot & RMEM_PROT_W) || l->inode == 0 || l->shared)
      continue;
    if (*elf == 0 && l->offset == 0 && strcmp(l->path, exe) == 0)
      *elf = l->start;
    for (uint64_t a = l->start; a < l->end && got < max; a += S.page)
      out[got++] = a;
  }
  free(m);
  return got;
}

static int group_setup(void **state) {
  (void)state;
  S.page = (size_t)sysconf(_SC_PAGESIZE);
  if (h_agent_start(&S.agent, NULL) != 0)
    return -1;
  S.agent_up = 1;
  if (h_fixture_start(&S.fx, FIXTURE_TARGET_PATH, NULL) != 0)
    return -1;
  S.pid = (uint32_t)h_fixture_u64(&S.fx, "pid");
  S.scratch = h_fixture_u64(&S.fx, "scratch");
  S.pattern = h_fixture_u64(&S.fx, "pattern");
  S.nfiles = file_pages(S.pid, S.files, 8, &S.elf);
  if (S.nfiles < 8 || S.elf == 0) {
    fprintf(stderr, "test_cache: the fixture has too few read-only file pages\n");
    return -1;
  }
  int rc = rmem_connect(&S.c, "127.0.0.1", S.agent.port, 10000);
  if (rc != 0) {
    fprintf(stderr, "rmem_connect: %s\n", rmem_err_name(rc));
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  return h_group_teardown(&S.c, &S.fx, &S.agent, &S.agent_up);
}

/* Every test starts from an empty cache. */
static int flush_all(void **state) {
  (void)state;
  return rmem_cache_flush(S.c, 0, NULL);
}

static void test_hello_lists_cache(void **state) {
  (void)state;
  const rmem_agent_info *info = rmem_info(S.c);
  int found = 0;
  for (size_t i = 0; i < info->nmethods; i++)
    found |= strcmp(info->methods[i], "cache") == 0;
  assert_true(found);
  rmem_cache_info s = stats(S.c);
  assert_int_equal(s.size_limit, 64u << 20);
}

/* Read-only file pages: the second read comes from the cache, whole or in
 * part, and the bytes are the target's. */
static void test_file_pages_hit(void **state) {
  (void)state;
  unsigned char *a = malloc(2 * S.page), *want = malloc(2 * S.page);
  rmem_cache_info s0 = stats(S.c);
  peek(S.pid, S.elf, want, S.page);
  read_expect(S.elf, a, S.page, 0, 0, 0);
  assert_memory_equal(a, want, S.page);
  memset(a, 0, S.page);
  read_expect(S.elf, a, S.page, 0, 0, S.page);
  assert_memory_equal(a, want, S.page);
  assert_memory_equal(a,
                      "\x7f"
                      "ELF",
                      4);
  /* Part of a cached page. */
  read_expect(S.elf + 100, a, 16, 0, 0, 16);
  assert_memory_equal(a, want + 100, 16);
  rmem_cache_info s1 = stats(S.c);
  assert_int_equal(s1.hits - s0.hits, 2);
  assert_int_equal(s1.misses - s0.misses, 1);
  assert_int_equal(s1.pages, 1);
  assert_int_equal(s1.bytes, S.page);

  /* A read across two pages, of which only the first is cached; a short
   * read of an uncached page caches the whole page. */
  uint64_t at = S.files[1] - 96;
  if (S.files[1] == S.files[0] + S.page) {
    assert_int_equal(rmem_cache_flush(S.c, 0, NULL), 0);
    read_expect(S.files[0], a, 8, 0, 0, 0);
    read_expect(at, a, 200, 0, 0, 96);
    peek(S.pid, at, want, 200);
    assert_memory_equal(a, want, 200);
    read_expect(at, a, 200, 0, 0, 200);
    assert_memory_equal(a, want, 200);
    read_expect(S.files[1], a, S.page, 0, 0, S.page);
  }
  free(a);
  free(want);
}

/* Anonymous memory is read live unless the read accepts an age. */
static void test_anon_never_cached(void **state) {
  (void)state;
  unsigned char a[64], b[64];
  rmem_cache_info s0 = stats(S.c);
  for (int i = 0; i < 3; i++)
    read_expect(S.scratch, a, sizeof(a), 0, 0, 0);
  memset(b, 0x5c, sizeof(b));
  poke(S.pid, S.scratch, b, sizeof(b));
  read_expect(S.scratch, a, sizeof(a), 0, 0, 0);
  assert_memory_equal(a, b, sizeof(b));
  /* Written through the agent: still live. */
  memset(b, 0x17, sizeof(b));
  assert_int_equal(rmem_write(S.c, S.pid, S.scratch, b, sizeof(b), NULL), sizeof(b));
  read_expect(S.scratch, a, sizeof(a), 0, 0, 0);
  assert_memory_equal(a, b, sizeof(b));
  /* Such reads are neither hits nor misses, and keep nothing. */
  rmem_cache_info s1 = stats(S.c);
  assert_int_equal(s1.hits, s0.hits);
  assert_int_equal(s1.misses, s0.misses);
  assert_int_equal(s1.pages, 0);
}

/* With max_age_ms, a copy younger than that is served, even when the memory
 * changed behind the agent's back: that is what the age allows. */
static void test_max_age(void **state) {
  (void)state;
  unsigned char a[32], old[32], fresh[32];
  memset(old, 0x11, sizeof(old));
  poke(S.pid, S.scratch, old, sizeof(old));
  read_expect(S.scratch, a, sizeof(a), 0, 60000, 0);
  assert_memory_equal(a, old, sizeof(old));
  memset(fresh, 0x22, sizeof(fresh));
  poke(S.pid, S.scratch, fresh, sizeof(fresh));
  read_expect(S.scratch, a, sizeof(a), 0, 60000, sizeof(a));
  assert_memory_equal(a, old, sizeof(old)); /* Stale, as allowed. */
  /* Without an age: live, and the copy is refreshed on the way. */
  read_expect(S.scratch, a, sizeof(a), 0, 0, 0);
  assert_memory_equal(a, fresh, sizeof(fresh));
  read_expect(S.scratch, a, sizeof(a), 0, 60000, sizeof(a));
  assert_memory_equal(a, fresh, sizeof(fresh));
  /* A copy older than the age is not served. */
  usleep(50 * 1000);
  poke(S.pid, S.scratch, old, sizeof(old));
  read_expect(S.scratch, a, sizeof(a), 0, 20, 0);
  assert_memory_equal(a, old, sizeof(old));
  read_expect(S.scratch, a, sizeof(a), 0, 60000, sizeof(a));
  assert_memory_equal(a, old, sizeof(old));
  /* Only the pages that have a young copy come from the cache. */
  assert_int_equal(rmem_cache_flush(S.c, S.pid, NULL), 0);
  read_expect(S.pattern + S.page, a, 8, 0, 60000, 0);
  read_expect(S.pattern + S.page - 8, a, 16, 0, 60000, 8);
  read_expect(S.pattern + S.page - 8, a, 16, 0, 60000, 16);
}

/* Writes through the agent drop the pages they touch. */
static void test_write_invalidates(void **state) {
  (void)state;
  unsigned char a[16], orig[7], patch[7] = {1, 2, 3, 4, 5, 6, 7};
  /* e_ident's padding (bytes 9 to 15 of the ELF header) is never used. */
  uint64_t pad = S.elf + 9;
  peek(S.pid, pad, orig, sizeof(orig));
  read_expect(S.elf, a, sizeof(a), 0, 0, 0);
  read_expect(S.elf, a, sizeof(a), 0, 0, sizeof(a));
  rmem_cache_info s0 = stats(S.c);
  assert_int_equal(rmem_write(S.c, S.pid, pad, patch, sizeof(patch), NULL), sizeof(patch));
  rmem_cache_info s1 = stats(S.c);
  assert_int_equal(s1.invalidations - s0.invalidations, 1);
  assert_int_equal(s1.pages, s0.pages - 1);
  read_expect(S.elf, a, sizeof(a), 0, 0, 0);
  assert_memory_equal(a + 9, patch, sizeof(patch));
  read_expect(S.elf, a, sizeof(a), 0, 0, sizeof(a));
  assert_memory_equal(a + 9, patch, sizeof(patch));
  assert_int_equal(rmem_write(S.c, S.pid, pad, orig, sizeof(orig), NULL), sizeof(orig));
  read_expect(S.elf, a, sizeof(a), 0, 0, 0);
  assert_memory_equal(a + 9, orig, sizeof(orig));

  /* An aged copy of anonymous memory goes too. */
  unsigned char b[16];
  read_expect(S.scratch, b, sizeof(b), 0, 60000, 0);
  read_expect(S.scratch, b, sizeof(b), 0, 60000, sizeof(b));
  memset(b, 0x33, sizeof(b));
  assert_int_equal(rmem_write(S.c, S.pid, S.scratch + 4, b, 4, NULL), 4);
  read_expect(S.scratch, a, sizeof(a), 0, 60000, 0);
  assert_memory_equal(a + 4, b, 4);

  /* A failed write elsewhere leaves the other pages alone. */
  assert_int_equal(rmem_cache_flush(S.c, S.pid, NULL), 0);
  read_expect(S.files[0], a, sizeof(a), 0, 0, 0);
  read_expect(S.files[0], a, sizeof(a), 0, 0, sizeof(a));
  rmem_ranges failed = {0};
  ssize_t n = rmem_write(S.c, S.pid, 8, b, 8, &failed);
  assert_int_equal(n, RMEM_EFAULT);
  rmem_ranges_free(&failed);
  read_expect(S.files[0], a, sizeof(a), 0, 0, sizeof(a));
}

/* uncached bypasses the cache for one read, and refreshes the copy. Writes
 * by anyone but the agent into read-only file pages are not seen until
 * then: the documented limit. */
/* A write through a shared mapping made after the writer's last map
 * snapshot still drops the cached copies of that file everywhere: the test
 * process is the target here, so it can map the file twice at will. */
static void test_write_through_new_shared_mapping(void **state) {
  (void)state;
  char path[] = "/tmp/rmem-cache-shared-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  static unsigned char page[4096];
  memset(page, 'A', sizeof(page));
  assert_int_equal(write(fd, page, sizeof(page)), (ssize_t)sizeof(page));
  unsigned char *ro = mmap(NULL, sizeof(page), PROT_READ, MAP_SHARED, fd, 0);
  assert_true(ro != MAP_FAILED);
  uint32_t self = (uint32_t)getpid();
  unsigned char got[16];
  rmem_read_info info = {0};
  assert_int_equal(rmem_read_ex(S.c, self, (uintptr_t)ro, got, sizeof(got), NULL, NULL, &info),
                   (ssize_t)sizeof(got));
  assert_int_equal(rmem_read_ex(S.c, self, (uintptr_t)ro, got, sizeof(got), NULL, NULL, &info),
                   (ssize_t)sizeof(got));
  assert_int_equal(info.cached_bytes, sizeof(got)); /* Read-only file page: cached. */
  unsigned char *rw = mmap(NULL, sizeof(page), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  assert_true(rw != MAP_FAILED);
  assert_int_equal(rmem_write(S.c, self, (uintptr_t)rw, "BBBB", 4, NULL), 4);
  assert_int_equal(ro[0], 'B');
  assert_int_equal(rmem_read_ex(S.c, self, (uintptr_t)ro, got, sizeof(got), NULL, NULL, &info),
                   (ssize_t)sizeof(got));
  assert_memory_equal(got, "BBBBAAAA", 8);
  assert_int_equal(info.cached_bytes, 0);
  munmap(rw, sizeof(page));
  munmap(ro, sizeof(page));
  close(fd);
}

static void test_uncached(void **state) {
  (void)state;
  unsigned char a[16], orig[7], patch[7] = {9, 8, 7, 6, 5, 4, 3};
  uint64_t pad = S.elf + 9;
  peek(S.pid, pad, orig, sizeof(orig));
  read_expect(S.elf, a, sizeof(a), 0, 0, 0);
  read_expect(S.elf, a, sizeof(a), 1, 0, 0);
  read_expect(S.elf, a, sizeof(a), 0, 0, sizeof(a));
  poke_mem(S.pid, pad, patch, sizeof(patch));
  read_expect(S.elf, a, sizeof(a), 0, 0, sizeof(a));
  assert_memory_equal(a + 9, orig, sizeof(orig)); /* Stale: not the agent's write. */
  read_expect(S.elf, a, sizeof(a), 1, 0, 0);
  assert_memory_equal(a + 9, patch, sizeof(patch));
  read_expect(S.elf, a, sizeof(a), 0, 0, sizeof(a));
  assert_memory_equal(a + 9, patch, sizeof(patch)); /* Refreshed. */
  /* uncached wins over max_age. */
  read_expect(S.elf, a, sizeof(a), 1, 60000, 0);
  poke_mem(S.pid, pad, orig, sizeof(orig));
  assert_int_equal(rmem_cache_flush(S.c, S.pid, NULL), 0);
  read_expect(S.elf, a, sizeof(a), 0, 0, 0);
  assert_memory_equal(a + 9, orig, sizeof(orig));
}

/* Flushing one process or all. */
static void test_flush(void **state) {
  (void)state;
  unsigned char a[16];
  read_expect(S.elf, a, sizeof(a), 0, 0, 0);
  read_expect(S.elf, a, sizeof(a), 0, 0, sizeof(a));
  rmem_cache_info s;
  assert_int_equal(rmem_cache_flush(S.c, (uint32_t)getpid(), &s), 0);
  assert_int_equal(s.pages, 1);
  read_expect(S.elf, a, sizeof(a), 0, 0, sizeof(a));
  assert_int_equal(rmem_cache_flush(S.c, S.pid, &s), 0);
  assert_int_equal(s.pages, 0);
  assert_int_equal(s.bytes, 0);
  read_expect(S.elf, a, sizeof(a), 0, 0, 0);
  read_expect(S.scratch, a, sizeof(a), 0, 60000, 0);
  assert_int_equal(stats(S.c).pages, 2);
  assert_int_equal(rmem_cache_flush(S.c, 0, &s), 0);
  assert_int_equal(s.pages, 0);
  read_expect(S.elf, a, sizeof(a), 0, 0, 0);
  read_expect(S.scratch, a, sizeof(a), 0, 60000, 0);
}

/* A small cache evicts the least recently used pages; a cache of 0 is off. */
static void test_evictions(void **state) {
  (void)state;
  char size[32];
  snprintf(size, sizeof(size), "%zu", 4 * S.page);
  const char *extra[] = {"--cache-size", size, NULL};
  h_agent small;
  assert_int_equal(h_agent_start_args(&small, NULL, extra), 0);
  rmem_client *c = NULL;
  assert_int_equal(rmem_connect(&c, "127.0.0.1", small.port, 10000), 0);
  unsigned char a[64];
  uint64_t cached;
  for (size_t i = 0; i < 8; i++) {
    assert_int_equal(read_opts(c, S.pid, S.files[i], a, sizeof(a), 0, 0, &cached), sizeof(a));
    assert_int_equal(cached, 0);
  }
  rmem_cache_info s = stats(c);
  assert_int_equal(s.size_limit, 4 * S.page);
  assert_int_equal(s.pages, 4);
  assert_int_equal(s.bytes, 4 * S.page);
  assert_int_equal(s.misses, 8);
  assert_int_equal(s.evictions, 4);
  assert_int_equal(s.hits, 0);
  /* The last four are there, the first four are not. */
  assert_int_equal(read_opts(c, S.pid, S.files[7], a, sizeof(a), 0, 0, &cached), sizeof(a));
  assert_int_equal(cached, sizeof(a));
  assert_int_equal(read_opts(c, S.pid, S.files[4], a, sizeof(a), 0, 0, &cached), sizeof(a));
  assert_int_equal(cached, sizeof(a));
  assert_int_equal(read_opts(c, S.pid, S.files[0], a, sizeof(a), 0, 0, &cached), sizeof(a));
  assert_int_equal(cached, 0);
  /* That pushed out the least recently used: files[5]; files[4] stays. */
  assert_int_equal(read_opts(c, S.pid, S.files[4], a, sizeof(a), 0, 0, &cached), sizeof(a));
  assert_int_equal(cached, sizeof(a));
  assert_int_equal(read_opts(c, S.pid, S.files[5], a, sizeof(a), 0, 0, &cached), sizeof(a));
  assert_int_equal(cached, 0);
  s = stats(c);
  assert_int_equal(s.hits, 3);
  assert_int_equal(s.evictions, 6);
  assert_int_equal(s.pages, 4);
  rmem_close(c);
  assert_int_equal(h_agent_stop(&small), 0);

  const char *off[] = {"--cache-size", "0", NULL};
  assert_int_equal(h_agent_start_args(&small, NULL, off), 0);
  assert_int_equal(rmem_connect(&c, "127.0.0.1", small.port, 10000), 0);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(read_opts(c, S.pid, S.elf, a, sizeof(a), 0, 60000, &cached), sizeof(a));
    assert_int_equal(cached, 0);
  }
  s = stats(c);
  assert_int_equal(s.size_limit, 0);
  assert_int_equal(s.pages + s.hits + s.misses, 0);
  assert_int_equal(rmem_cache_flush(c, 0, &s), 0);
  rmem_close(c);
  assert_int_equal(h_agent_stop(&small), 0);
}

/* Starts a fixture, with ns_last_pid set so that it gets `want` when that is
 * not 0 (best effort: another process may take the pid first). */
static int start_fixture(h_fixture *f, pid_t want) {
  if (want > 1) {
    FILE *ns = fopen("/proc/sys/kernel/ns_last_pid", "w");
    if (ns) {
      fprintf(ns, "%d", (int)want - 1);
      fclose(ns);
    }
  }
  return h_fixture_start(f, FIXTURE_TARGET_PATH, NULL);
}

/* An exited process's pages are never served, nor are they to a new process
 * that got the same pid. */
static void test_exited_and_recycled_pid(void **state) {
  (void)state;
  h_fixture g;
  unsigned char a[64], b[64];
  uint64_t cached, elf, files[1];
  assert_int_equal(start_fixture(&g, 0), 0);
  uint32_t pid = (uint32_t)h_fixture_u64(&g, "pid");
  assert_int_equal(file_pages(pid, files, 1, &elf), 1);
  assert_int_equal(read_opts(S.c, pid, elf, a, sizeof(a), 0, 0, &cached), sizeof(a));
  assert_int_equal(read_opts(S.c, pid, elf, a, sizeof(a), 0, 0, &cached), sizeof(a));
  assert_int_equal(cached, sizeof(a));
  uint64_t scratch = h_fixture_u64(&g, "scratch");
  assert_int_equal(read_opts(S.c, pid, scratch, a, sizeof(a), 0, 60000, &cached), sizeof(a));
  rmem_cache_info s0 = stats(S.c);
  h_fixture_kill(&g);
  assert_int_equal(read_opts(S.c, pid, elf, a, sizeof(a), 0, 0, &cached), RMEM_ENOPROC);
  assert_int_equal(read_opts(S.c, pid, scratch, a, sizeof(a), 0, 60000, &cached), RMEM_ENOPROC);
  rmem_cache_info s1 = stats(S.c);
  assert_int_equal(s1.pages, s0.pages - 2);
  assert_int_equal(s1.invalidations - s0.invalidations, 2);

  /* The same with a recycled pid: no read in between lets the agent notice
   * the exit before the new process is there. */
  int recycled = 0;
  for (int attempt = 0; attempt < 5 && !recycled; attempt++) {
    assert_int_equal(start_fixture(&g, 0), 0);
    pid = (uint32_t)h_fixture_u64(&g, "pid");
    assert_int_equal(file_pages(pid, files, 1, &elf), 1);
    scratch = h_fixture_u64(&g, "scratch");
    assert_int_equal(read_opts(S.c, pid, elf, a, sizeof(a), 0, 0, &cached), sizeof(a));
    assert_int_equal(read_opts(S.c, pid, elf, a, sizeof(a), 0, 0, &cached), sizeof(a));
    assert_int_equal(cached, sizeof(a));
    assert_int_equal(read_opts(S.c, pid, scratch, a, sizeof(a), 0, 60000, &cached), sizeof(a));
    h_fixture_kill(&g);
    h_fixture h;
    assert_int_equal(start_fixture(&h, (pid_t)pid), 0);
    if ((uint32_t)h_fixture_u64(&h, "pid") == pid) {
      recycled = 1;
      /* Whatever is at those addresses now is read live: the new process's
       * bytes, or nothing when it maps something else there. */
      uint64_t addrs[2] = {elf, scratch};
      h_mapline *m;
      long n = h_maps_read((pid_t)pid, &m);
      assert_true(n > 0);
      for (int i = 0; i < 2; i++) {
        ssize_t got = read_opts(S.c, pid, addrs[i], a, sizeof(a), 0, 60000, &cached);
        assert_int_equal(cached, 0);
        if (h_maps_find(m, n, addrs[i]) >= 0 && (m[h_maps_find(m, n, addrs[i])].prot & 1)) {
          assert_int_equal(got, sizeof(a));
          peek(pid, addrs[i], b, sizeof(b));
          assert_memory_equal(a, b, sizeof(b));
        } else {
          assert_int_equal(got, RMEM_EFAULT);
        }
      }
      free(m);
    }
    h_fixture_stop(&h);
  }
  if (!recycled)
    fprintf(stderr, "test_cache: could not get a pid recycled; that part was skipped\n");
}

/* Raw requests with bad parameters. */
typedef struct {
  const char *key;
  int kind; /* 'u' uint, 'i' negative int, 's' str, 'b' bool, 'n' nil */
  int64_t v;
} param;

static void raw_call(int fd, uint32_t msgid, const char *method, const param *p, size_t n,
                     h_resp *r) {
  codec_buf b;
  codec_buf_init(&b);
  msgpack_packer pk;
  codec_frame_begin(&b, &pk);
  codec_pack_request_head(&pk, msgid, method, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    codec_pack_str(&pk, p[i].key);
    switch (p[i].kind) {
    case 'u':
      msgpack_pack_uint64(&pk, (uint64_t)p[i].v);
      break;
    case 'i':
      msgpack_pack_int64(&pk, p[i].v);
      break;
    case 's':
      codec_pack_str(&pk, "x");
      break;
    case 'b':
      if (p[i].v)
        msgpack_pack_true(&pk);
      else
        msgpack_pack_false(&pk);
      break;
    default:
      msgpack_pack_nil(&pk);
    }
  }
  assert_int_equal(codec_frame_end(&b, 0), 0);
  assert_int_equal(h_raw_send_buf(fd, &b), 0);
  codec_buf_free(&b);
  assert_int_equal(h_raw_recv(fd, 10000, r), 0);
  assert_int_equal(r->msgid, msgid);
}

static void expect_eparam(int fd, uint32_t msgid, const char *method, const param *p, size_t n,
                          const char *needle) {
  h_resp r;
  raw_call(fd, msgid, method, p, n, &r);
  assert_int_equal(r.code, RMEM_EPARAM);
  if (strstr(r.message, needle) == NULL)
    fail_msg("%s: message '%s' lacks '%s'", method, r.message, needle);
  h_resp_free(&r);
}

static void test_bad_params(void **state) {
  (void)state;
  int fd = h_raw_connect(S.agent.port);
  assert_true(fd >= 0);
  assert_int_equal(h_raw_hello(fd, 1), 0);
  const param flush_int[] = {{"flush", 'u', 1}};
  expect_eparam(fd, 2, "cache", flush_int, 1, "'flush' must be a boolean");
  const param pid_str[] = {{"flush", 'b', 1}, {"pid", 's', 0}};
  expect_eparam(fd, 3, "cache", pid_str, 2, "'pid'");
  const param pid_neg[] = {{"flush", 'b', 1}, {"pid", 'i', -5}};
  expect_eparam(fd, 4, "cache", pid_neg, 2, "'pid' must not be negative");
  const param pid_zero[] = {{"flush", 'b', 1}, {"pid", 'u', 0}};
  expect_eparam(fd, 5, "cache", pid_zero, 2, "'pid' must not be 0");
  const param pid_big[] = {{"flush", 'b', 1}, {"pid", 'u', 1ll << 32}};
  expect_eparam(fd, 6, "cache", pid_big, 2, "'pid'");
  const param pid_alone[] = {{"pid", 'u', 5}};
  expect_eparam(fd, 7, "cache", pid_alone, 1, "'pid' applies only with 'flush'");
  const param age_neg[] = {
      {"pid", 'u', S.pid}, {"addr", 'u', (int64_t)S.elf}, {"len", 'u', 8}, {"max_age_ms", 'i', -1}};
  expect_eparam(fd, 8, "read", age_neg, 4, "'max_age_ms' must not be negative");
  const param unc_int[] = {
      {"pid", 'u', S.pid}, {"addr", 'u', (int64_t)S.elf}, {"len", 'u', 8}, {"uncached", 'u', 1}};
  expect_eparam(fd, 9, "read", unc_int, 4, "'uncached' must be a boolean");

  /* Nil and unknown fields are fine; the reply has every figure. */
  h_resp r;
  const param ok[] = {{"flush", 'n', 0}, {"pid", 'n', 0}, {"future", 'u', 1}};
  raw_call(fd, 10, "cache", ok, 3, &r);
  assert_int_equal(r.code, 0);
  static const char *const keys[] = {"size_limit", "bytes",     "pages",        "hits",
                                     "misses",     "evictions", "invalidations"};
  assert_int_equal(r.result->via.map.size, 7);
  for (size_t i = 0; i < 7; i++) {
    const msgpack_object *v = codec_map_get(r.result, keys[i]);
    assert_non_null(v);
    assert_int_equal(v->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
  }
  h_resp_free(&r);

  /* Every read result says how much came from the cache. */
  const param rd[] = {{"pid", 'u', S.pid}, {"addr", 'u', (int64_t)S.elf}, {"len", 'u', 8}};
  for (uint32_t i = 0; i < 2; i++) {
    raw_call(fd, 11 + i, "read", rd, 3, &r);
    assert_int_equal(r.code, 0);
    const msgpack_object *c = codec_map_get(r.result, "cached");
    assert_non_null(c);
    assert_int_equal(c->via.u64, i == 0 ? 0 : 8);
    h_resp_free(&r);
  }
  close(fd);
}

/* Threads read, write and flush at once. Each writes its own slot of one
 * page and must then read back its own bytes, even with an age: no read
 * that began before the write may leave an older copy behind. */
#define NTHREADS 4
#define ROUNDS 150

typedef struct {
  int idx;
  int failures;
  char why[160];
} worker;

static void *worker_main(void *arg) {
  worker *w = arg;
  rmem_client *c = NULL;
  if (rmem_connect(&c, "127.0.0.1", S.agent.port, 10000) != 0) {
    w->failures++;
    snprintf(w->why, sizeof(w->why), "connect failed");
    return NULL;
  }
  uint64_t slot = S.scratch + 64 + 8 * (uint64_t)w->idx;
  unsigned char elf[16], want_elf[16];
  peek(S.pid, S.elf, want_elf, sizeof(want_elf));
  for (int i = 0; i < ROUNDS && w->failures == 0; i++) {
    uint64_t v = (uint64_t)w->idx << 56 | (uint64_t)i, got = 0, cached;
    if (rmem_write(c, S.pid, slot, &v, sizeof(v), NULL) != (ssize_t)sizeof(v)) {
      w->failures++;
      snprintf(w->why, sizeof(w->why), "write: %s", rmem_last_error(c));
      break;
    }
    /* Others read the same page with an age at the same time. */
    if (read_opts(c, S.pid, S.scratch, elf, sizeof(elf), 0, 60000, &cached) !=
            (ssize_t)sizeof(elf) ||
        read_opts(c, S.pid, slot, &got, sizeof(got), 0, 60000, &cached) != (ssize_t)sizeof(got) ||
        got != v) {
      w->failures++;
      snprintf(w->why, sizeof(w->why), "round %d: read back %" PRIx64 ", wrote %" PRIx64, i, got,
               v);
    }
    if (read_opts(c, S.pid, S.elf, elf, sizeof(elf), i % 7 == 0, 0, &cached) !=
            (ssize_t)sizeof(elf) ||
        memcmp(elf, want_elf, sizeof(elf)) != 0) {
      w->failures++;
      snprintf(w->why, sizeof(w->why), "round %d: bad ELF header bytes", i);
    }
    if (i % 50 == 25 && rmem_cache_flush(c, w->idx % 2 ? S.pid : 0, NULL) != 0) {
      w->failures++;
      snprintf(w->why, sizeof(w->why), "flush: %s", rmem_last_error(c));
    }
  }
  rmem_close(c);
  return NULL;
}

static void test_concurrent(void **state) {
  (void)state;
  pthread_t t[NTHREADS];
  worker w[NTHREADS];
  for (int i = 0; i < NTHREADS; i++) {
    w[i] = (worker){.idx = i};
    assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
  }
  for (int i = 0; i < NTHREADS; i++) {
    pthread_join(t[i], NULL);
    if (w[i].failures)
      fail_msg("thread %d: %s", i, w[i].why);
  }
  rmem_cache_info s = stats(S.c);
  assert_true(s.hits > 0);
  assert_true(s.invalidations > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_hello_lists_cache, flush_all),
      cmocka_unit_test_setup(test_file_pages_hit, flush_all),
      cmocka_unit_test_setup(test_anon_never_cached, flush_all),
      cmocka_unit_test_setup(test_max_age, flush_all),
      cmocka_unit_test_setup(test_write_invalidates, flush_all),
      cmocka_unit_test_setup(test_write_through_new_shared_mapping, flush_all),
      cmocka_unit_test_setup(test_uncached, flush_all),
      cmocka_unit_test_setup(test_flush, flush_all),
      cmocka_unit_test_setup(test_evictions, flush_all),
      cmocka_unit_test_setup(test_exited_and_recycled_pid, flush_all),
      cmocka_unit_test_setup(test_bad_params, flush_all),
      cmocka_unit_test_setup(test_concurrent, flush_all),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
