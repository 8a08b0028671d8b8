/* cache_bench: what the agent's page cache saves on a 4 KiB read.
 *
 *   cache_bench [--iters N] [--runs R] [--rmemd PATH]
 *
 * 1. Agent side, in process: the read method's whole work for one request
 *    (parse, cache or target, reply frame), as a worker thread does it, for
 *    a page of a read-only file mapping of a child process: served from the
 *    cache, read with uncached, and with the cache off; next to a bare
 *    process_vm_readv of 4 KiB.
 * 2. End to end: repeated 4 KiB reads through librmem from an rmemd on
 *    127.0.0.1 (started here), cache hit against uncached.
 *
 * Figures are medians over R runs; build Release (tests/bench/run.sh does). */
#include "cache.h"
#include "dispatch.h"
#include "methods.h"
#include "msg.h"
#include "rmem.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LEN 4096

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return v[n / 2];
}

static void die(const char *what) {
  fprintf(stderr, "cache_bench: %s\n", what);
  exit(1);
}

/* A page of this program's own read-only data: the child, a fork, has it at
 * the same address in a read-only file mapping. */
static const char rodata[2 * LEN] __attribute__((aligned(LEN))) = "cache_bench read-only page";

static uint64_t file_page(void) {
  return (uint64_t)(uintptr_t)rodata;
}

static const dispatch_limits limits = {
    .max_frame = 16u << 20, .max_read = 8u << 20, .max_write = 8u << 20, .max_inflight = 64};

/* One read request as the agent handles it, minus the socket. */
typedef struct {
  msgpack_unpacked up;
  codec_msg msg;
  codec_buf req;
} request;

static void request_init(request *r, uint32_t pid, uint64_t addr, int uncached) {
  codec_buf_init(&r->req);
  msgpack_packer pk;
  codec_frame_begin(&r->req, &pk);
  msg_read_req q = {.pid = pid, .addr = addr, .len = LEN, .uncached = uncached};
  msg_read_req_pack(&pk, 1, &q);
  codec_frame_end(&r->req, 0);
  msgpack_unpacked_init(&r->up);
  if (codec_msg_decode(r->req.data + CODEC_FRAME_HDR, r->req.len - CODEC_FRAME_HDR, 65536, &r->up,
                       &r->msg, NULL, 0) != 0)
    die("cannot decode our own request");
}

static void request_free(request *r) {
  msgpack_unpacked_destroy(&r->up);
  codec_buf_free(&r->req);
}

/* Returns the bytes from the cache, to check that each case is what it says. */
static uint64_t handle(const request *r) {
  dispatch_job *j = calloc(1, sizeof(*j) + method_read.priv_size);
  j->msgid = 1;
  j->method = &method_read;
  j->limits = &limits;
  j->priv = j + 1;
  if (method_read.parse(j, r->msg.params) != 0)
    die("parse failed");
  dispatch_job_run(j);
  size_t n;
  char *reply = dispatch_job_finish(j, &n);
  /* The reply ends with "cached" and its value: 0 or 4096 (cd 10 00). */
  uint64_t cached = n > 3 && (unsigned char)reply[n - 3] == 0xcd ? LEN : 0;
  free(reply);
  return cached;
}

static double per_op_ns(const request *r, int iters, uint64_t want_cached) {
  if (handle(r) != want_cached)
    die("a case did not take the path it is named after");
  double t0 = now();
  for (int i = 0; i < iters; i++)
    handle(r);
  return (now() - t0) / iters * 1e9;
}

static double raw_ns(uint32_t pid, uint64_t addr, int iters) {
  char buf[LEN];
  struct iovec l = {buf, LEN}, rv = {(void *)(uintptr_t)addr, LEN};
  double t0 = now();
  for (int i = 0; i < iters; i++)
    if (process_vm_readv((pid_t)pid, &l, 1, &rv, 1, 0) != LEN)
      die("process_vm_readv failed");
  return (now() - t0) / iters * 1e9;
}

static void agent_side(uint32_t pid, int iters, int runs) {
  double *hit = calloc((size_t)runs, sizeof(double)), *unc = calloc((size_t)runs, sizeof(double));
  double *off = calloc((size_t)runs, sizeof(double)), *raw = calloc((size_t)runs, sizeof(double));
  request rh, ru;
  request_init(&rh, pid, file_page(), 0);
  request_init(&ru, pid, file_page(), 1);
  for (int k = 0; k < runs; k++) {
    cache_init(CACHE_DEFAULT_SIZE);
    handle(&rh); /* Fills the cache. */
    hit[k] = per_op_ns(&rh, iters, LEN);
    unc[k] = per_op_ns(&ru, iters, 0);
    cache_init(0);
    off[k] = per_op_ns(&rh, iters, 0);
    raw[k] = raw_ns(pid, file_page(), iters);
  }
  cache_close();
  printf("agent side, one 4 KiB read request (parse, data, reply frame), %d x %d:\n", runs, iters);
  printf("  cache hit (read-only file page)   %8.0f ns\n", median(hit, runs));
  printf("  uncached: true (process_vm_readv) %8.0f ns\n", median(unc, runs));
  printf("  cache off (--cache-size 0)        %8.0f ns\n", median(off, runs));
  printf("  bare process_vm_readv of 4 KiB    %8.0f ns\n", median(raw, runs));
  request_free(&rh);
  request_free(&ru);
  free(hit);
  free(unc);
  free(off);
  free(raw);
}

/* Starts rmemd on 127.0.0.1 with an automatic port and a cache of
 * `cache_size` (a string, as for --cache-size); returns its pid. */
static pid_t start_agent(const char *path, const char *dir, const char *cache_size,
                         uint16_t *port) {
  char portfile[256];
  snprintf(portfile, sizeof(portfile), "%s/port", dir);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    execl(path, path, "--port", "0", "--port-file", portfile, "--log-level", "error",
          "--cache-size", cache_size, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 1000; i++) {
    FILE *f = fopen(portfile, "r");
    unsigned p = 0;
    if (f) {
      int ok = fscanf(f, "%u", &p) == 1;
      fclose(f);
      if (ok && p) {
        *port = (uint16_t)p;
        unlink(portfile);
        return pid;
      }
    }
    usleep(10000);
  }
  die("rmemd did not start");
  return -1;
}

/* Median microseconds per read over `runs` runs of `iters` reads, after
 * checking that a read takes the path it is named after. */
static double e2e_case(rmem_client *c, uint32_t pid, const rmem_read_opts *o, uint64_t want_cached,
                       int iters, int runs) {
  char buf[LEN];
  double *us = calloc((size_t)runs, sizeof(double));
  rmem_read_info info;
  /* The first read may fill the cache; the second must hit. */
  if (rmem_read_ex(c, pid, file_page(), buf, LEN, o, NULL, &info) != LEN ||
      rmem_read_ex(c, pid, file_page(), buf, LEN, o, NULL, &info) != LEN ||
      info.cached_bytes != want_cached)
    die("an end-to-end read did not take the path it is named after");
  for (int k = 0; k < runs; k++) {
    double t0 = now();
    for (int i = 0; i < iters; i++)
      if (rmem_read_ex(c, pid, file_page(), buf, LEN, o, NULL, NULL) != LEN)
        die("read failed");
    us[k] = (now() - t0) / iters * 1e6;
  }
  double m = median(us, runs);
  free(us);
  return m;
}

/* Median microseconds per read with `window` reads in flight (rmem_read_start
 * takes no options: the agent's default rules apply). */
static double e2e_pipelined(rmem_client *c, uint32_t pid, int window, int iters, int runs) {
  char *buf = malloc((size_t)window * LEN);
  uint32_t *ids = calloc((size_t)window, sizeof(*ids));
  double *us = calloc((size_t)runs, sizeof(double));
  for (int k = 0; k < runs; k++) {
    double t0 = now();
    int sent = 0, done = 0;
    while (done < iters) {
      while (sent < iters && sent - done < window) {
        if (rmem_read_start(c, pid, file_page(), buf + (size_t)(sent % window) * LEN, LEN,
                            &ids[sent % window]) != 0)
          die("read_start failed");
        sent++;
      }
      if (rmem_finish(c, ids[done % window], NULL) != LEN)
        die("pipelined read failed");
      done++;
    }
    us[k] = (now() - t0) / iters * 1e6;
  }
  double m = median(us, runs);
  free(us);
  free(ids);
  free(buf);
  return m;
}

static void end_to_end(const char *rmemd, uint32_t pid, int iters, int runs) {
  char dir[] = "/tmp/cache_bench.XXXXXX";
  if (mkdtemp(dir) == NULL)
    die("mkdtemp");
  uint16_t port = 0, port_off = 0;
  pid_t agent = start_agent(rmemd, dir, "64M", &port);
  pid_t agent_off = start_agent(rmemd, dir, "0", &port_off);
  rmem_client *c = NULL, *c_off = NULL;
  if (rmem_connect(&c, "127.0.0.1", port, 10000) != 0 ||
      rmem_connect(&c_off, "127.0.0.1", port_off, 10000) != 0)
    die("cannot connect to rmemd");
  rmem_read_opts live = {.uncached = 1};
  double hit = e2e_case(c, pid, NULL, LEN, iters, runs);
  double unc = e2e_case(c, pid, &live, 0, iters, runs);
  double off = e2e_case(c_off, pid, NULL, 0, iters, runs);
  printf("end to end through librmem over 127.0.0.1, one 4 KiB read at a time, %d x %d:\n", runs,
         iters);
  printf("  cache hit                         %8.1f us\n", hit);
  printf("  uncached: true                    %8.1f us\n", unc);
  printf("  cache off (--cache-size 0)        %8.1f us\n", off);
  double phit = e2e_pipelined(c, pid, 32, iters, runs);
  double poff = e2e_pipelined(c_off, pid, 32, iters, runs);
  printf("end to end, 32 reads in flight (rmem_read_start), per read:\n");
  printf("  cache hit                         %8.1f us\n", phit);
  printf("  cache off (--cache-size 0)        %8.1f us\n", poff);
  rmem_close(c);
  rmem_close(c_off);
  kill(agent, SIGTERM);
  kill(agent_off, SIGTERM);
  waitpid(agent, NULL, 0);
  waitpid(agent_off, NULL, 0);
  rmdir(dir);
}

int main(int argc, char **argv) {
  int iters = 200000, e2e_iters = 20000, runs = 5;
  const char *rmemd = RMEMD_PATH;
  static const struct option opts[] = {
      {"iters", required_argument, 0, 'i'},
      {"runs", required_argument, 0, 'r'},
      {"rmemd", required_argument, 0, 'd'},
      {0, 0, 0, 0},
  };
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'i':
      iters = atoi(optarg);
      e2e_iters = iters / 10 > 0 ? iters / 10 : 1;
      break;
    case 'r':
      runs = atoi(optarg);
      break;
    case 'd':
      rmemd = optarg;
      break;
    default:
      fprintf(stderr, "usage: cache_bench [--iters N] [--runs R] [--rmemd PATH]\n");
      return 2;
    }
  }
  if (iters < 1 || runs < 1)
    die("--iters and --runs must be positive");
  /* The target: a fork of this program, idle until we are done. */
  pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    for (;;)
      pause();
  }
  if (rodata[0] != 'c')
    die("rodata");
  agent_side((uint32_t)child, iters, runs);
  end_to_end(rmemd, (uint32_t)child, e2e_iters, runs);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  return 0;
}
