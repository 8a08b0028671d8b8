/* End-to-end tests through the public client API: a real rmemd on
 * 127.0.0.1 (automatic port) and real fixture processes whose memory is known.
 * /proc/PID/maps and /proc/PID/smaps, read here, are the oracle for `map`; the
 * fixture's own `dump` command is the oracle for `write`. */
#include "harness.h"
#include "rmem.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define BULK_XOR 0x9e3779b97f4a7c15ull

static struct {
  h_agent agent;
  int agent_up;
  h_fixture fx;
  rmem_client *c;
  uint32_t pid;
  size_t page;
  uint64_t pattern, guard, rodata, scratch, edge, shmem, mapped;
  uint32_t tids[3];
  uint64_t tstacks[3];
  char exe[PATH_MAX];
} S;

static uint8_t pattern_byte(size_t i) {
  return (uint8_t)((i * 7 + 3) & 0xff);
}

/* The byte at `addr` of the bulk buffer: little-endian words of addr ^ XOR. */
static uint8_t bulk_byte(uint64_t addr) {
  uint64_t w = (addr & ~7ull) ^ BULK_XOR;
  return (uint8_t)(w >> (8 * (addr & 7)));
}

static const rmem_region *region_at(const rmem_memmap *m, uint64_t addr) {
  for (size_t i = 0; i < m->n; i++)
    if (m->regions[i].state != RMEM_STATE_FREE && addr >= m->regions[i].base &&
        addr - m->regions[i].base < m->regions[i].size)
      return &m->regions[i];
  return NULL;
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
  S.pattern = h_fixture_u64(&S.fx, "pattern");
  S.guard = h_fixture_u64(&S.fx, "guard");
  S.rodata = h_fixture_u64(&S.fx, "rodata");
  S.scratch = h_fixture_u64(&S.fx, "scratch");
  S.edge = h_fixture_u64(&S.fx, "edge");
  S.shmem = h_fixture_u64(&S.fx, "shmem");
  S.mapped = h_fixture_get(&S.fx, "mapped") ? h_fixture_u64(&S.fx, "mapped") : 0;
  for (int i = 0; i < 3; i++) {
    char k[16];
    snprintf(k, sizeof(k), "tid%d", i + 1);
    S.tids[i] = (uint32_t)h_fixture_u64(&S.fx, k);
    snprintf(k, sizeof(k), "tstack%d", i + 1);
    S.tstacks[i] = h_fixture_u64(&S.fx, k);
  }
  char link[64];
  snprintf(link, sizeof(link), "/proc/%u/exe", S.pid);
  ssize_t n = readlink(link, S.exe, sizeof(S.exe) - 1);
  if (n <= 0)
    return -1;
  S.exe[n] = 0;
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

/* hello */

static void test_hello(void **state) {
  (void)state;
  const rmem_agent_info *info = rmem_info(S.c);
  assert_non_null(info);
  assert_int_equal(info->version, 1);
  assert_memory_equal(info->agent, "rmemd/", 6);
  assert_string_equal(info->os, "linux");
  struct utsname u;
  assert_int_equal(uname(&u), 0);
  assert_string_equal(info->arch, u.machine);
  assert_int_equal(info->page_size, S.page);
  assert_int_equal(info->pointer_size, sizeof(void *));
  assert_true(info->max_frame > 0);
  assert_true(info->max_read > 0);
  assert_true(info->max_write > 0);
  assert_true(info->max_inflight > 0);
  const char *want[] = {"hello", "map", "ps", "read", "write"};
  for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
    int found = 0;
    for (size_t i = 0; i < info->nmethods; i++)
      found |= strcmp(info->methods[i], want[w]) == 0;
    if (!found)
      fail_msg("hello: method '%s' not announced", want[w]);
  }
  /* The spec says the list is sorted. */
  for (size_t i = 1; i < info->nmethods; i++)
    assert_true(strcmp(info->methods[i - 1], info->methods[i]) < 0);
}

/* ps */

static void test_ps(void **state) {
  (void)state;
  rmem_proc_list l;
  memset(&l, 0, sizeof(l));
  assert_int_equal(rmem_ps(S.c, &l), 0);
  assert_true(l.n > 2);
  const rmem_proc *p = NULL, *self = NULL;
  for (size_t i = 0; i < l.n; i++) {
    if (l.procs[i].pid == S.pid)
      p = &l.procs[i];
    if (l.procs[i].pid == (uint32_t)getpid())
      self = &l.procs[i];
  }
  assert_non_null(p);
  assert_non_null(self);
  assert_int_equal(p->ppid, (uint32_t)getpid());
  assert_int_equal(p->uid, (uint32_t)getuid());
  assert_string_equal(p->name, "fixture_target");
  assert_int_equal(p->threads, 4);
  /* Idle, blocked on its stdin; 'R' only if caught between two lines. */
  assert_true(p->state == 'S' || p->state == 'R');
  assert_true(p->rss > 0);
  assert_string_equal(p->exe, S.exe);
  assert_int_equal(p->argc, 1);
  assert_string_equal(p->argv[0], FIXTURE_TARGET_PATH);
  assert_false(p->cmdline_truncated);
  rmem_proc_list_free(&l);
}

/* A command line of 100 KB is cut at 4 KiB and flagged; an agent with a
 * small max_frame lists the processes in pieces that librmem joins. */
static void test_ps_long_and_pieces(void **state) {
  (void)state;
  static char big[100000];
  memset(big, 'x', sizeof(big) - 1);
  pid_t child = fork();
  assert_true(child >= 0);
  if (child == 0) {
    /* Its own process group, killed whole below, and no inherited stdout:
     * ctest waits for every holder of the test's output pipe. */
    setpgid(0, 0);
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 1);
    dup2(devnull, 2);
    /* "; true" keeps sh from exec'ing sleep, so its command line stays ours. */
    execl("/bin/sh", "sh", "-c", "sleep 30; true", "sh", big, (char *)NULL);
    _exit(127);
  }
  usleep(100000);
  h_agent small;
  const char *opts[] = {"--max-frame", "65536", NULL};
  assert_int_equal(h_agent_start_args(&small, NULL, opts), 0);
  rmem_client *sc;
  assert_int_equal(rmem_connect(&sc, "127.0.0.1", small.port, 10000), 0);
  rmem_proc_list l;
  memset(&l, 0, sizeof(l));
  assert_int_equal(rmem_ps(sc, &l), 0);
  const rmem_proc *p = NULL;
  size_t bytes = 0;
  for (size_t i = 0; i < l.n; i++) {
    if (i > 0)
      assert_true(l.procs[i - 1].pid < l.procs[i].pid);
    if (l.procs[i].pid == (uint32_t)child)
      p = &l.procs[i];
  }
  assert_non_null(p);
  assert_true(p->cmdline_truncated);
  for (size_t i = 0; i < p->argc; i++)
    bytes += strlen(p->argv[i]) + 1;
  assert_true(bytes <= 4096 + 1);
  assert_string_equal(p->argv[0], "sh");
  /* The same processes as one whole reply (give or take ones that came and went). */
  rmem_proc_list whole;
  memset(&whole, 0, sizeof(whole));
  assert_int_equal(rmem_ps(S.c, &whole), 0);
  assert_true(l.n + 5 >= whole.n && whole.n + 5 >= l.n);
  rmem_proc_list_free(&whole);
  rmem_proc_list_free(&l);
  rmem_close(sc);
  assert_int_equal(h_agent_stop(&small), 0);
  kill(-child, SIGKILL);
  waitpid(child, NULL, 0);
}

/* map */

static void test_map_matches_proc_maps(void **state) {
  (void)state;
  rmem_memmap m;
  memset(&m, 0, sizeof(m));
  assert_int_equal(rmem_map(S.c, S.pid, 0, &m), 0);
  h_mapline *o;
  long n = h_maps_read((pid_t)S.pid, &o);
  assert_true(n > 0);
  assert_int_equal(m.pid, S.pid);
  assert_int_equal(m.n, (size_t)n);
  for (long i = 0; i < n; i++) {
    const rmem_region *r = &m.regions[i];
    const h_mapline *l = &o[i];
    if (r->base != l->start || r->size != l->end - l->start || r->prot != l->prot ||
        r->shared != l->shared || r->deleted != l->deleted)
      fail_msg("region %ld: agent %" PRIx64 "+%" PRIx64 " prot %u shared %d deleted %d, "
               "maps %" PRIx64 "-%" PRIx64 " prot %u shared %d deleted %d",
               i, r->base, r->size, r->prot, r->shared, r->deleted, l->start, l->end, l->prot,
               l->shared, l->deleted);
    assert_int_not_equal(r->state, RMEM_STATE_FREE);
    if (l->inode != 0) {
      assert_int_equal(r->offset, l->offset);
      assert_int_equal(r->dev_major, l->dev_major);
      assert_int_equal(r->dev_minor, l->dev_minor);
      assert_int_equal(r->inode, l->inode);
    }
    if (l->path[0]) {
      assert_non_null(r->path);
      assert_string_equal(r->path, l->path);
    } else {
      assert_true(r->path == NULL || r->path[0] == 0);
    }
    assert_false(r->has_smaps);
  }
  free(o);
  rmem_memmap_free(&m);
}

static void test_map_labels(void **state) {
  (void)state;
  rmem_memmap m;
  memset(&m, 0, sizeof(m));
  assert_int_equal(rmem_map(S.c, S.pid, 0, &m), 0);
  int heap = 0, stack = 0, vdso = 0, exe = 0, libc = 0;
  uint64_t libc_base = 0;
  for (size_t i = 0; i < m.n; i++) {
    const rmem_region *r = &m.regions[i];
    const char *path = r->path ? r->path : "";
    assert_true(r->alloc_base <= r->base);
    assert_int_equal(r->state, r->prot == 0 ? RMEM_STATE_RESERVE : RMEM_STATE_COMMIT);
    if (r->inode == 0 && path[0] == 0) {
      if (r->type != RMEM_TYPE_PRIVATE)
        fail_msg("anonymous region %" PRIx64 " has type %d, not private", r->base, r->type);
    }
    if (strcmp(path, "[heap]") == 0) {
      heap++;
      assert_int_equal(r->usage, RMEM_USAGE_HEAP);
      assert_int_equal(r->type, RMEM_TYPE_PRIVATE);
    } else if (strcmp(path, "[stack]") == 0) {
      stack++;
      assert_int_equal(r->usage, RMEM_USAGE_STACK);
      assert_int_equal(r->tid, S.pid);
      assert_int_equal(r->type, RMEM_TYPE_PRIVATE);
    } else if (strcmp(path, "[vdso]") == 0) {
      vdso++;
      assert_int_equal(r->usage, RMEM_USAGE_VDSO);
    } else if (strcmp(path, "[vvar]") == 0) {
      assert_int_equal(r->usage, RMEM_USAGE_VVAR);
    } else if (strcmp(path, "[vsyscall]") == 0) {
      assert_int_equal(r->usage, RMEM_USAGE_VSYSCALL);
    } else if (strcmp(path, S.exe) == 0) {
      exe++;
      assert_int_equal(r->usage, RMEM_USAGE_MODULE);
      assert_int_equal(r->main_exe, 1);
      assert_int_equal(r->type, RMEM_TYPE_IMAGE);
    } else if (strstr(path, "/libc.so") != NULL) {
      if (libc++ == 0)
        libc_base = r->base;
      assert_int_equal(r->usage, RMEM_USAGE_MODULE);
      assert_int_equal(r->main_exe, 0);
      assert_int_equal(r->type, RMEM_TYPE_IMAGE);
      if (r->alloc_base != libc_base)
        fail_msg("libc region %" PRIx64 " has alloc_base %" PRIx64 ", want %" PRIx64, r->base,
                 r->alloc_base, libc_base);
    } else if (r->main_exe) {
      /* Only the main executable's module (and its .bss) may say main. */
      assert_int_equal(r->inode, 0);
      assert_int_equal(r->usage, RMEM_USAGE_MODULE);
    }
    if (r->usage == RMEM_USAGE_THREAD_STACK) {
      int known = r->tid == S.tids[0] || r->tid == S.tids[1] || r->tid == S.tids[2];
      if (!known)
        fail_msg("thread stack %" PRIx64 " labelled with unknown tid %u", r->base, r->tid);
    }
  }
  assert_int_equal(heap, 1);
  assert_int_equal(stack, 1);
  assert_int_equal(vdso, 1);
  assert_true(exe >= 2);
  assert_true(libc >= 2);

  for (int t = 0; t < 3; t++) {
    const rmem_region *r = region_at(&m, S.tstacks[t]);
    assert_non_null(r);
    if (r->usage != RMEM_USAGE_THREAD_STACK || r->tid != S.tids[t])
      fail_msg("tstack%d %" PRIx64 ": region %" PRIx64 " usage %d tid %u, want thread_stack %u",
               t + 1, S.tstacks[t], r->base, r->usage, r->tid, S.tids[t]);
    assert_int_equal(r->type, RMEM_TYPE_PRIVATE);
  }

  const rmem_region *g = region_at(&m, S.guard + S.page);
  assert_non_null(g);
  assert_int_equal(g->base, S.guard + S.page);
  assert_int_equal(g->size, S.page);
  assert_int_equal(g->prot, 0);
  assert_int_equal(g->state, RMEM_STATE_RESERVE);
  assert_int_equal(g->type, RMEM_TYPE_PRIVATE);

  const rmem_region *ro = region_at(&m, S.rodata);
  assert_non_null(ro);
  assert_int_equal(ro->prot, RMEM_PROT_R);
  assert_int_equal(ro->state, RMEM_STATE_COMMIT);
  assert_int_equal(ro->type, RMEM_TYPE_PRIVATE);

  const rmem_region *p = region_at(&m, S.pattern);
  assert_non_null(p);
  assert_int_equal(p->prot, RMEM_PROT_R | RMEM_PROT_W);
  assert_int_equal(p->type, RMEM_TYPE_PRIVATE);
  assert_int_equal(p->shared, 0);

  /* A shared anonymous mapping is shared memory, not private. */
  const rmem_region *sh = region_at(&m, S.shmem);
  assert_non_null(sh);
  assert_int_equal(sh->shared, 1);
  assert_int_equal(sh->type, RMEM_TYPE_MAPPED);

  if (S.mapped) {
    const rmem_region *mf = region_at(&m, S.mapped);
    assert_non_null(mf);
    assert_int_equal(mf->type, RMEM_TYPE_MAPPED);
    assert_int_equal(mf->deleted, 1);
    assert_int_equal(mf->shared, 1);
    assert_true(mf->inode != 0);
    assert_non_null(mf->path);
    assert_memory_equal(mf->path, "/tmp/fixture_target.", 20);
    assert_null(strstr(mf->path, "(deleted)"));
  }
  rmem_memmap_free(&m);
}

static void test_map_free_gaps(void **state) {
  (void)state;
  rmem_memmap plain, m;
  memset(&plain, 0, sizeof(plain));
  memset(&m, 0, sizeof(m));
  assert_int_equal(rmem_map(S.c, S.pid, 0, &plain), 0);
  assert_int_equal(rmem_map(S.c, S.pid, RMEM_MAP_FREE, &m), 0);
  assert_true(m.n > plain.n);
  size_t k = 0, nfree = 0;
  for (size_t i = 0; i < m.n; i++) {
    const rmem_region *r = &m.regions[i];
    if (r->state == RMEM_STATE_FREE) {
      nfree++;
      assert_true(r->size > 0);
      assert_int_equal(r->prot, 0);
      assert_int_equal(r->shared, 0);
      assert_int_equal(r->type, RMEM_TYPE_NONE);
      assert_int_equal(r->usage, RMEM_USAGE_NONE);
      assert_int_equal(r->alloc_base, r->base);
      assert_null(r->path);
      /* Two gaps never touch. */
      if (i > 0)
        assert_int_not_equal(m.regions[i - 1].state, RMEM_STATE_FREE);
    } else {
      assert_true(k < plain.n);
      assert_int_equal(r->base, plain.regions[k].base);
      assert_int_equal(r->size, plain.regions[k].size);
      k++;
    }
  }
  assert_int_equal(k, plain.n);
  /* Between the first and last mapping, entries tile the space exactly. */
  size_t first = 0, last = m.n - 1;
  while (m.regions[first].state == RMEM_STATE_FREE)
    first++;
  while (m.regions[last].state == RMEM_STATE_FREE)
    last--;
  for (size_t i = first + 1; i <= last; i++) {
    const rmem_region *prev = &m.regions[i - 1], *r = &m.regions[i];
    /* The agent lists no gap below [vsyscall], which lies in kernel space. */
    if (r->usage == RMEM_USAGE_VSYSCALL && prev->state != RMEM_STATE_FREE)
      continue;
    if (prev->base + prev->size != r->base)
      fail_msg("entries %zu and %zu do not touch: %" PRIx64 "+%" PRIx64 " then %" PRIx64, i - 1, i,
               prev->base, prev->size, r->base);
  }
  /* Every gap between two mappings is listed. */
  size_t want = 0;
  for (size_t i = 1; i < plain.n; i++)
    want += plain.regions[i - 1].base + plain.regions[i - 1].size != plain.regions[i].base &&
            plain.regions[i].usage != RMEM_USAGE_VSYSCALL;
  size_t inner = 0;
  for (size_t i = 0; i < m.n; i++)
    inner += m.regions[i].state == RMEM_STATE_FREE && m.regions[i].base >= plain.regions[0].base &&
             m.regions[i].base < plain.regions[plain.n - 1].base;
  assert_int_equal(inner, want);
  assert_true(nfree >= want);
  rmem_memmap_free(&plain);
  rmem_memmap_free(&m);
}

static void check_smaps(const rmem_memmap *m, uint64_t addr, const char *what) {
  const rmem_region *r = region_at(m, addr);
  assert_non_null(r);
  assert_true(r->has_smaps);
  char vmflags[128] = "";
  long long rss = h_smaps_field((pid_t)S.pid, r->base, "Rss", vmflags, sizeof(vmflags));
  long long priv = h_smaps_field((pid_t)S.pid, r->base, "Private_Dirty", NULL, 0);
  long long anon = h_smaps_field((pid_t)S.pid, r->base, "Anonymous", NULL, 0);
  if ((long long)r->smaps.rss != rss || (long long)r->smaps.private_dirty != priv ||
      (long long)r->smaps.anonymous != anon)
    fail_msg("%s region %" PRIx64 ": agent rss %" PRIu64 " private_dirty %" PRIu64
             " anonymous %" PRIu64 ", smaps %lld %lld %lld",
             what, r->base, r->smaps.rss, r->smaps.private_dirty, r->smaps.anonymous, rss, priv,
             anon);
  assert_string_equal(r->smaps.vmflags, vmflags);
}

static void test_map_detail(void **state) {
  (void)state;
  rmem_memmap m;
  memset(&m, 0, sizeof(m));
  assert_int_equal(rmem_map(S.c, S.pid, RMEM_MAP_DETAIL, &m), 0);
  for (size_t i = 0; i < m.n; i++)
    assert_true(m.regions[i].has_smaps);
  check_smaps(&m, S.pattern, "pattern");
  check_smaps(&m, S.scratch, "scratch");
  check_smaps(&m, S.rodata, "rodata");
  check_smaps(&m, S.guard + S.page, "guard");
  check_smaps(&m, S.shmem, "shmem");
  const rmem_region *ro = region_at(&m, S.rodata);
  assert_true(ro->smaps.rss >= S.page);
  assert_non_null(strstr(ro->smaps.vmflags, "rd"));
  rmem_memmap_free(&m);
}

/* read */

static void test_read_pattern(void **state) {
  (void)state;
  size_t len = 3 * S.page;
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  rmem_ranges holes;
  memset(&holes, 0, sizeof(holes));
  assert_int_equal(rmem_read(S.c, S.pid, S.pattern, buf, len, &holes), (ssize_t)len);
  assert_int_equal(holes.n, 0);
  for (size_t i = 0; i < len; i++)
    if (buf[i] != pattern_byte(i))
      fail_msg("pattern byte %zu: %02x, want %02x", i, buf[i], pattern_byte(i));
  /* Unaligned starts and lengths, some crossing page boundaries. */
  const size_t cases[][2] = {{0, 1},     {1, 1},      {3, 5},       {7, 4089},
                             {4090, 20}, {4095, 2},   {4095, 4098}, {1, 3 * 4096 - 1},
                             {8191, 1},  {100, 8000}, {12287, 1},   {5, 0}};
  for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
    size_t off = cases[c][0] * S.page / 4096, n = cases[c][1] * S.page / 4096;
    if (off + n > len)
      continue;
    memset(buf, 0xEE, len);
    holes.n = 0;
    ssize_t got = rmem_read(S.c, S.pid, S.pattern + off, buf, n, &holes);
    if (got != (ssize_t)n)
      fail_msg("read +%zu len %zu: %zd (%s)", off, n, got, rmem_last_error(S.c));
    assert_int_equal(holes.n, 0);
    for (size_t i = 0; i < n; i++)
      if (buf[i] != pattern_byte(off + i))
        fail_msg("read +%zu len %zu: byte %zu is %02x", off, n, i, buf[i]);
  }
  rmem_ranges_free(&holes);
  free(buf);
}

static void test_read_guard(void **state) {
  (void)state;
  size_t len = 3 * S.page;
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  memset(buf, 0x11, len);
  rmem_ranges holes;
  memset(&holes, 0, sizeof(holes));
  ssize_t got = rmem_read(S.c, S.pid, S.guard, buf, len, &holes);
  assert_int_equal(got, (ssize_t)(2 * S.page));
  for (size_t i = 0; i < len; i++) {
    uint8_t want = i >= S.page && i < 2 * S.page ? 0 : 0xAA;
    if (buf[i] != want)
      fail_msg("guard byte %zu: %02x, want %02x", i, buf[i], want);
  }
  assert_int_equal(holes.n, 1);
  assert_int_equal(holes.v[0].addr, S.guard + S.page);
  assert_int_equal(holes.v[0].len, S.page);
  assert_int_equal(holes.v[0].code, RMEM_EPROT);

  /* A read of the guard page alone has nothing readable. */
  holes.n = 0;
  assert_int_equal(rmem_read(S.c, S.pid, S.guard + S.page, buf, 16, &holes), RMEM_EFAULT);
  /* A read that starts in the guard and ends after it. */
  holes.n = 0;
  got = rmem_read(S.c, S.pid, S.guard + 2 * S.page - 8, buf, 16, &holes);
  assert_int_equal(got, 8);
  assert_int_equal(holes.n, 1);
  assert_int_equal(holes.v[0].addr, S.guard + 2 * S.page - 8);
  assert_int_equal(holes.v[0].len, 8);
  assert_int_equal(holes.v[0].code, RMEM_EPROT);
  for (int i = 0; i < 16; i++)
    assert_int_equal(buf[i], i < 8 ? 0 : 0xAA);
  rmem_ranges_free(&holes);
  free(buf);
}

/* An address that /proc/PID/maps says is unmapped, with `len` bytes free. */
static uint64_t find_unmapped(pid_t pid, uint64_t len) {
  h_mapline *o;
  long n = h_maps_read(pid, &o);
  assert_true(n > 0);
  uint64_t cand[] = {0x10000, 0x1000, 0x200000};
  uint64_t addr = 0;
  for (size_t c = 0; c < sizeof(cand) / sizeof(cand[0]) && addr == 0; c++)
    if (h_maps_find(o, n, cand[c]) < 0 && h_maps_find(o, n, cand[c] + len - 1) < 0 &&
        (n == 0 || cand[c] + len <= o[0].start || cand[c] >= o[n - 1].end))
      addr = cand[c];
  free(o);
  assert_true(addr != 0);
  return addr;
}

static void test_read_unmapped(void **state) {
  (void)state;
  uint64_t addr = find_unmapped((pid_t)S.pid, 4096);
  uint8_t buf[64];
  rmem_ranges holes;
  memset(&holes, 0, sizeof(holes));
  assert_int_equal(rmem_read(S.c, S.pid, addr, buf, sizeof(buf), &holes), RMEM_EFAULT);
  assert_true(rmem_last_error(S.c)[0] != 0);
  /* The error still says why, for every byte. */
  assert_int_equal(holes.n, 1);
  assert_int_equal(holes.v[0].addr, addr);
  assert_int_equal(holes.v[0].len, sizeof(buf));
  assert_int_equal(holes.v[0].code, RMEM_EUNMAPPED);
  holes.n = 0;

  /* Only the guard page: nothing readable, and the reason is its protection. */
  assert_int_equal(rmem_read(S.c, S.pid, S.guard + S.page, buf, sizeof(buf), &holes), RMEM_EFAULT);
  assert_int_equal(holes.n, 1);
  assert_int_equal(holes.v[0].code, RMEM_EPROT);
  holes.n = 0;

  /* A read that runs off the end of a mapping into unmapped space. Prefer
   * the fixture's edge page; otherwise any mapping followed by a gap. */
  h_mapline *o;
  long n = h_maps_read((pid_t)S.pid, &o);
  uint64_t end = 0;
  long e = h_maps_find(o, n, S.edge);
  if (e >= 0 && h_maps_find(o, n, S.edge + S.page) < 0 && (o[e].prot & RMEM_PROT_R))
    end = S.edge + S.page;
  for (long i = 0; i + 1 < n && end == 0; i++)
    if ((o[i].prot & RMEM_PROT_R) && o[i].end < o[i + 1].start && o[i].end - o[i].start >= 256 &&
        o[i + 1].start - o[i].end >= 256)
      end = o[i].end;
  free(o);
  assert_true(end != 0);
  memset(buf, 0x11, sizeof(buf));
  ssize_t got = rmem_read(S.c, S.pid, end - 24, buf, sizeof(buf), &holes);
  assert_int_equal(got, 24);
  assert_int_equal(holes.n, 1);
  assert_int_equal(holes.v[0].addr, end);
  assert_int_equal(holes.v[0].len, sizeof(buf) - 24);
  assert_int_equal(holes.v[0].code, RMEM_EUNMAPPED);
  for (size_t i = 24; i < sizeof(buf); i++)
    assert_int_equal(buf[i], 0);
  if (end == S.edge + S.page)
    for (size_t i = 0; i < 24; i++)
      assert_int_equal(buf[i], 'E');
  rmem_ranges_free(&holes);
}

typedef struct {
  uint64_t next; /* The address the next piece must start at. */
  int pieces, bad, holes, stop_after, want_guard;
} stream_check;

static int stream_cb(void *ctx, uint64_t addr, const void *data, size_t len,
                     const rmem_range *holes, size_t nholes) {
  stream_check *sc = ctx;
  const uint8_t *p = data;
  if (addr != sc->next)
    sc->bad++;
  sc->next = addr + len;
  sc->pieces++;
  sc->holes += (int)nholes;
  for (size_t i = 0; i < len && !sc->want_guard; i++)
    if (p[i] != bulk_byte(addr + i))
      sc->bad++;
  if (sc->want_guard) {
    for (size_t i = 0; i < len; i++) {
      uint64_t a = addr + i;
      int in_hole = a >= S.guard + S.page && a < S.guard + 2 * S.page;
      if (p[i] != (in_hole ? 0 : 0xAA))
        sc->bad++;
    }
    for (size_t i = 0; i < nholes; i++)
      if (holes[i].addr != S.guard + S.page || holes[i].len != S.page ||
          holes[i].code != RMEM_EPROT)
        sc->bad++;
  }
  return sc->stop_after && sc->pieces >= sc->stop_after;
}

static void test_read_big(void **state) {
  (void)state;
  h_fixture bf;
  const char *args[] = {"--bulk", "64", NULL};
  assert_int_equal(h_fixture_start(&bf, FIXTURE_REGIONS_PATH, args), 0);
  uint32_t pid = (uint32_t)h_fixture_u64(&bf, "pid");
  uint64_t bulk = h_fixture_u64(&bf, "bulk");
  uint64_t bulk_len = h_fixture_u64(&bf, "bulk_len");
  const rmem_agent_info *info = rmem_info(S.c);
  /* Long enough that the client must split it into several requests. */
  uint64_t len = 3 * info->max_read + 12345;
  if (len < (8u << 20) + 3)
    len = (8u << 20) + 3;
  if (len > bulk_len - 8192)
    len = bulk_len - 8192;
  uint8_t *buf = malloc(len);
  assert_non_null(buf);
  uint64_t addr = bulk + 4096 + 5; /* Unaligned. */
  double t0 = h_now_ms();
  ssize_t got = rmem_read(S.c, pid, addr, buf, len, NULL);
  double ms = h_now_ms() - t0;
  assert_int_equal(got, (ssize_t)len);
  printf("# read %" PRIu64 " bytes (max_read %" PRIu64 ") in %.1f ms\n", len, info->max_read, ms);
  for (uint64_t i = 0; i < len; i++)
    if (buf[i] != bulk_byte(addr + i))
      fail_msg("bulk byte %" PRIu64 " (addr %" PRIx64 "): %02x, want %02x", i, addr + i, buf[i],
               bulk_byte(addr + i));
  free(buf);

  /* The same range streamed to a callback: every byte once, in order. */
  stream_check sc = {.next = addr, .bad = 0};
  got = rmem_read_stream(S.c, pid, addr, len, stream_cb, &sc);
  assert_int_equal(got, (ssize_t)len);
  assert_int_equal(sc.next, addr + len);
  assert_int_equal(sc.bad, 0);
  assert_true(sc.pieces > 1);
  /* A callback that says stop ends the stream; the client stays usable. */
  sc = (stream_check){.next = addr, .stop_after = 2};
  assert_int_equal(rmem_read_stream(S.c, pid, addr, len, stream_cb, &sc), RMEM_ECANCELED);
  uint8_t b8[8];
  assert_int_equal(rmem_read(S.c, pid, addr, b8, sizeof(b8), NULL), 8);
  assert_int_equal(h_fixture_stop(&bf), 0);
}

/* Streaming across the guard page: the hole arrives with its piece. */
static void test_read_stream_holes(void **state) {
  (void)state;
  stream_check sc = {.next = S.guard, .want_guard = 1};
  ssize_t got = rmem_read_stream(S.c, S.pid, S.guard, 3 * S.page, stream_cb, &sc);
  assert_int_equal(got, (ssize_t)(2 * S.page));
  assert_int_equal(sc.next, S.guard + 3 * S.page);
  assert_int_equal(sc.holes, 1);
  assert_int_equal(sc.bad, 0);
}

/* write */

static void test_write_scratch(void **state) {
  (void)state;
  uint8_t data[100], back[100], dumped[100];
  for (size_t i = 0; i < sizeof(data); i++)
    data[i] = (uint8_t)(0x40 + i);
  rmem_ranges failed;
  memset(&failed, 0, sizeof(failed));
  assert_int_equal(rmem_write(S.c, S.pid, S.scratch + 10, data, sizeof(data), &failed),
                   (ssize_t)sizeof(data));
  assert_int_equal(failed.n, 0);
  assert_int_equal(rmem_read(S.c, S.pid, S.scratch + 10, back, sizeof(back), NULL),
                   (ssize_t)sizeof(back));
  assert_memory_equal(back, data, sizeof(data));
  assert_int_equal(h_fixture_dump(&S.fx, S.scratch + 10, sizeof(dumped), dumped), 0);
  assert_memory_equal(dumped, data, sizeof(data));
  /* The bytes around it are untouched. */
  uint8_t around[2];
  assert_int_equal(h_fixture_dump(&S.fx, S.scratch + 9, 1, around), 0);
  assert_int_equal(h_fixture_dump(&S.fx, S.scratch + 110, 1, around + 1), 0);
  assert_int_equal(around[0], 0);
  assert_int_equal(around[1], 0);
  rmem_ranges_free(&failed);
}

static void test_write_rodata(void **state) {
  (void)state;
  const char patch[] = "patched by a debugger";
  rmem_ranges failed;
  memset(&failed, 0, sizeof(failed));
  assert_int_equal(rmem_write(S.c, S.pid, S.rodata + 5, patch, sizeof(patch), &failed),
                   (ssize_t)sizeof(patch));
  assert_int_equal(failed.n, 0);
  char dumped[sizeof(patch) + 2];
  assert_int_equal(h_fixture_dump(&S.fx, S.rodata + 4, sizeof(dumped), dumped), 0);
  assert_int_equal(dumped[0], 'R');
  assert_memory_equal(dumped + 1, patch, sizeof(patch));
  assert_int_equal(dumped[sizeof(dumped) - 1], 'R');
  /* The page is still read-only. */
  h_mapline *o;
  long n = h_maps_read((pid_t)S.pid, &o);
  long i = h_maps_find(o, n, S.rodata);
  assert_true(i >= 0);
  assert_int_equal(o[i].prot, RMEM_PROT_R);
  free(o);
  rmem_ranges_free(&failed);
}

static void test_write_guard(void **state) {
  (void)state;
  size_t len = 3 * S.page;
  uint8_t *data = malloc(len);
  uint8_t *dumped = malloc(S.page);
  assert_non_null(data);
  assert_non_null(dumped);
  memset(data, 0x55, len);
  rmem_ranges failed;
  memset(&failed, 0, sizeof(failed));
  /* The agent documents (agent/target.h) that pages with no access at all
   * are not written, even though /proc/PID/mem could force them. */
  ssize_t got = rmem_write(S.c, S.pid, S.guard, data, len, &failed);
  assert_int_equal(got, (ssize_t)(2 * S.page));
  assert_int_equal(failed.n, 1);
  assert_int_equal(failed.v[0].addr, S.guard + S.page);
  assert_int_equal(failed.v[0].len, S.page);
  assert_int_equal(failed.v[0].code, RMEM_EPROT);
  assert_int_equal(h_fixture_dump(&S.fx, S.guard, S.page, dumped), 0);
  assert_memory_equal(dumped, data, S.page);
  assert_int_equal(h_fixture_dump(&S.fx, S.guard + 2 * S.page, S.page, dumped), 0);
  assert_memory_equal(dumped, data, S.page);
  /* The guard page is still there, and still reads as a hole. */
  rmem_ranges holes;
  memset(&holes, 0, sizeof(holes));
  assert_int_equal(rmem_read(S.c, S.pid, S.guard + S.page, data, 8, &holes), RMEM_EFAULT);
  /* Writing only the guard page writes nothing. */
  failed.n = 0;
  assert_int_equal(rmem_write(S.c, S.pid, S.guard + S.page, data, 8, &failed), RMEM_EFAULT);
  rmem_ranges_free(&holes);
  rmem_ranges_free(&failed);
  free(data);
  free(dumped);
}

static void test_write_unmapped(void **state) {
  (void)state;
  uint64_t addr = find_unmapped((pid_t)S.pid, 4096);
  uint8_t data[32] = {1, 2, 3};
  rmem_ranges failed;
  memset(&failed, 0, sizeof(failed));
  assert_int_equal(rmem_write(S.c, S.pid, addr, data, sizeof(data), &failed), RMEM_EFAULT);
  rmem_ranges_free(&failed);
}

/* Errors about the process. */

static pid_t reaped_pid(void) {
  pid_t p = fork();
  assert_true(p >= 0);
  if (p == 0)
    _exit(0);
  int st;
  assert_int_equal(waitpid(p, &st, 0), p);
  return p;
}

static void test_bad_pids(void **state) {
  (void)state;
  uint8_t buf[16] = {0};
  uint32_t gone = (uint32_t)reaped_pid();
  assert_int_equal(rmem_read(S.c, gone, S.pattern, buf, sizeof(buf), NULL), RMEM_ENOPROC);
  assert_int_equal(rmem_write(S.c, gone, S.pattern, buf, sizeof(buf), NULL), RMEM_ENOPROC);
  rmem_memmap m;
  memset(&m, 0, sizeof(m));
  assert_int_equal(rmem_map(S.c, gone, 0, &m), RMEM_ENOPROC);
  assert_int_equal(rmem_read(S.c, 0x7ffffff0u, S.pattern, buf, sizeof(buf), NULL), RMEM_ENOPROC);
  assert_int_equal(rmem_read(S.c, 0, S.pattern, buf, sizeof(buf), NULL), RMEM_EPARAM);
  assert_int_equal(rmem_write(S.c, 0, S.pattern, buf, sizeof(buf), NULL), RMEM_EPARAM);
  assert_int_equal(rmem_map(S.c, 0, 0, &m), RMEM_EPARAM);
  rmem_memmap_free(&m);
}

static void test_target_exits(void **state) {
  (void)state;
  h_fixture f;
  assert_int_equal(h_fixture_start(&f, FIXTURE_TARGET_PATH, NULL), 0);
  uint32_t pid = (uint32_t)h_fixture_u64(&f, "pid");
  uint64_t pat = h_fixture_u64(&f, "pattern");
  uint8_t buf[32];
  assert_int_equal(rmem_read(S.c, pid, pat, buf, sizeof(buf), NULL), (ssize_t)sizeof(buf));
  assert_int_equal(buf[1], pattern_byte(1));
  h_fixture_kill(&f);
  assert_int_equal(rmem_read(S.c, pid, pat, buf, sizeof(buf), NULL), RMEM_ENOPROC);
  rmem_memmap m;
  memset(&m, 0, sizeof(m));
  assert_int_equal(rmem_map(S.c, pid, 0, &m), RMEM_ENOPROC);
  rmem_memmap_free(&m);
}

/* A large map. */

static void test_map_many_regions(void **state) {
  (void)state;
  h_fixture f;
  const char *args[] = {"10000", NULL};
  assert_int_equal(h_fixture_start(&f, FIXTURE_REGIONS_PATH, args), 0);
  uint32_t pid = (uint32_t)h_fixture_u64(&f, "pid");
  rmem_memmap m;
  memset(&m, 0, sizeof(m));
  double t0 = h_now_ms();
  assert_int_equal(rmem_map(S.c, pid, 0, &m), 0);
  double ms = h_now_ms() - t0;
  h_mapline *o;
  long n = h_maps_read((pid_t)pid, &o);
  printf("# map of %zu regions in %.1f ms\n", m.n, ms);
  assert_true(n >= 10000);
  assert_int_equal(m.n, (size_t)n);
  for (long i = 0; i < n; i++) {
    assert_int_equal(m.regions[i].base, o[i].start);
    assert_int_equal(m.regions[i].size, o[i].end - o[i].start);
    assert_int_equal(m.regions[i].prot, o[i].prot);
  }
  free(o);
  rmem_memmap_free(&m);

  /* An agent with a small max_frame sends the map in pieces (`next`), and
   * librmem joins them: the result is the same map. */
  h_agent small;
  const char *opts[] = {"--max-frame", "65536", NULL};
  assert_int_equal(h_agent_start_args(&small, NULL, opts), 0);
  rmem_client *sc;
  assert_int_equal(rmem_connect(&sc, "127.0.0.1", small.port, 10000), 0);
  rmem_memmap pieces;
  memset(&pieces, 0, sizeof(pieces));
  assert_int_equal(rmem_map(sc, pid, RMEM_MAP_FREE, &pieces), 0);
  rmem_memmap whole;
  memset(&whole, 0, sizeof(whole));
  assert_int_equal(rmem_map(S.c, pid, RMEM_MAP_FREE, &whole), 0);
  assert_true(whole.n > 10000);
  assert_int_equal(pieces.n, whole.n);
  for (size_t i = 0; i < whole.n; i++) {
    assert_int_equal(pieces.regions[i].base, whole.regions[i].base);
    assert_int_equal(pieces.regions[i].size, whole.regions[i].size);
    assert_int_equal(pieces.regions[i].state, whole.regions[i].state);
    assert_int_equal(pieces.regions[i].alloc_base, whole.regions[i].alloc_base);
  }
  rmem_memmap_free(&pieces);
  rmem_memmap_free(&whole);
  rmem_close(sc);
  assert_int_equal(h_agent_stop(&small), 0);

  /* With detail and free gaps too: still whole. */
  memset(&m, 0, sizeof(m));
  t0 = h_now_ms();
  assert_int_equal(rmem_map(S.c, pid, RMEM_MAP_DETAIL | RMEM_MAP_FREE, &m), 0);
  ms = h_now_ms() - t0;
  printf("# map (detail, free) of %zu entries in %.1f ms\n", m.n, ms);
  assert_true(m.n >= (size_t)n);
  rmem_memmap_free(&m);
  assert_int_equal(h_fixture_stop(&f), 0);
}

/* Pipelining: many requests out, replies collected in reverse order. */

static void test_pipelining(void **state) {
  (void)state;
  enum { N = 100, LEN = 64 };
  static uint8_t bufs[N][LEN];
  uint32_t ids[N];
  memset(bufs, 0, sizeof(bufs));
  for (int i = 0; i < N; i++) {
    int rc = rmem_read_start(S.c, S.pid, S.pattern + (uint64_t)i * 97, bufs[i], LEN, &ids[i]);
    assert_int_equal(rc, 0);
  }
  for (int i = N - 1; i >= 0; i--) {
    ssize_t got = rmem_finish(S.c, ids[i], NULL);
    if (got != LEN)
      fail_msg("request %d: %zd (%s)", i, got, rmem_last_error(S.c));
    for (int j = 0; j < LEN; j++)
      if (bufs[i][j] != pattern_byte((size_t)i * 97 + (size_t)j))
        fail_msg("request %d byte %d: %02x", i, j, bufs[i][j]);
  }
  /* Mixed reads and writes in one batch, writes to distinct bytes. */
  uint32_t wid[8], rid[8];
  uint8_t wdata[8][16], rdata[8][16];
  for (int i = 0; i < 8; i++) {
    memset(wdata[i], 0x80 + i, sizeof(wdata[i]));
    assert_int_equal(rmem_write_start(S.c, S.pid, S.scratch + 1024 + 16 * i, wdata[i], 16, &wid[i]),
                     0);
    assert_int_equal(rmem_read_start(S.c, S.pid, S.pattern + 16 * i, rdata[i], 16, &rid[i]), 0);
  }
  for (int i = 7; i >= 0; i--) {
    assert_int_equal(rmem_finish(S.c, rid[i], NULL), 16);
    assert_int_equal(rmem_finish(S.c, wid[i], NULL), 16);
    for (int j = 0; j < 16; j++)
      assert_int_equal(rdata[i][j], pattern_byte((size_t)(16 * i + j)));
  }
  uint8_t back[128];
  assert_int_equal(h_fixture_dump(&S.fx, S.scratch + 1024, sizeof(back), back), 0);
  for (int i = 0; i < 8; i++)
    assert_memory_equal(back + 16 * i, wdata[i], 16);
}

/* Concurrency: several clients at once. */

typedef struct {
  int errors;
  char why[160];
} worker_result;

static void *worker(void *arg) {
  worker_result *res = arg;
  rmem_client *c = NULL;
  int rc = rmem_connect(&c, "127.0.0.1", S.agent.port, 20000);
  if (rc != 0) {
    snprintf(res->why, sizeof(res->why), "connect: %s", rmem_err_name(rc));
    res->errors++;
    return NULL;
  }
  uint8_t buf[3 * 4096];
  size_t len = 3 * S.page < sizeof(buf) ? 3 * S.page : sizeof(buf);
  for (int it = 0; it < 20; it++) {
    memset(buf, 0, sizeof(buf));
    ssize_t got = rmem_read(c, S.pid, S.pattern, buf, len, NULL);
    if (got != (ssize_t)len) {
      snprintf(res->why, sizeof(res->why), "read: %zd %s", got, rmem_last_error(c));
      res->errors++;
      continue;
    }
    for (size_t i = 0; i < len; i++)
      if (buf[i] != pattern_byte(i)) {
        snprintf(res->why, sizeof(res->why), "read: byte %zu wrong", i);
        res->errors++;
        break;
      }
    rmem_memmap m;
    memset(&m, 0, sizeof(m));
    rc = rmem_map(c, S.pid, it % 2 ? RMEM_MAP_FREE : 0, &m);
    if (rc != 0 || m.n < 10) {
      snprintf(res->why, sizeof(res->why), "map: %s %s", rmem_err_name(rc), rmem_last_error(c));
      res->errors++;
    }
    rmem_memmap_free(&m);
  }
  rmem_close(c);
  return NULL;
}

static void test_concurrency(void **state) {
  (void)state;
  enum { T = 4 };
  pthread_t th[T];
  worker_result res[T];
  memset(res, 0, sizeof(res));
  for (int i = 0; i < T; i++)
    assert_int_equal(pthread_create(&th[i], NULL, worker, &res[i]), 0);
  for (int i = 0; i < T; i++)
    pthread_join(th[i], NULL);
  for (int i = 0; i < T; i++)
    if (res[i].errors)
      fail_msg("worker %d: %d errors, last: %s", i, res[i].errors, res[i].why);
  /* The shared client still works. */
  uint8_t b[8];
  assert_int_equal(rmem_read(S.c, S.pid, S.pattern, b, sizeof(b), NULL), 8);
}

/* Last: the agent exits 0 on SIGTERM (under ASan, no leaks). */
static void test_agent_exits_clean(void **state) {
  (void)state;
  rmem_close(S.c);
  S.c = NULL;
  S.agent_up = 0;
  assert_int_equal(h_agent_stop(&S.agent), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hello),
      cmocka_unit_test(test_ps),
      cmocka_unit_test(test_ps_long_and_pieces),
      cmocka_unit_test(test_map_matches_proc_maps),
      cmocka_unit_test(test_map_labels),
      cmocka_unit_test(test_map_free_gaps),
      cmocka_unit_test(test_map_detail),
      cmocka_unit_test(test_read_pattern),
      cmocka_unit_test(test_read_guard),
      cmocka_unit_test(test_read_unmapped),
      cmocka_unit_test(test_read_big),
      cmocka_unit_test(test_read_stream_holes),
      cmocka_unit_test(test_write_scratch),
      cmocka_unit_test(test_write_rodata),
      cmocka_unit_test(test_write_guard),
      cmocka_unit_test(test_write_unmapped),
      cmocka_unit_test(test_bad_pids),
      cmocka_unit_test(test_target_exits),
      cmocka_unit_test(test_map_many_regions),
      cmocka_unit_test(test_pipelining),
      cmocka_unit_test(test_concurrency),
      cmocka_unit_test(test_agent_exits_clean),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
