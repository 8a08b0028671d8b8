/* rmem_bench: prints throughput and latency figures for a running rmemd.
 * Not a timed test: run it through tests/bench/run.sh, which starts the agent
 * and the fixtures and passes their addresses here.
 *
 *   rmem_bench --port P --bulk-pid PID --bulk-addr A --bulk-len N --map-pid PID2
 *              [--tls --ca FILE | --pin SHA256] [--compress]
 *
 * --compress asks the agent for lz4 and adds what lz4 does on one core with
 * the bulk bytes, the most one worker thread of the agent can compress.
 *
 * Figures are medians over several runs; the machine is shared and noisy. */
#include "rmem.h"

#include <lz4.h>

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p) {
  qsort(v, n, sizeof(*v), cmp_double);
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i];
}

static void die(rmem_client *c, const char *what, long rc) {
  fprintf(stderr, "rmem_bench: %s: %s (%s)\n", what, rmem_strerror((int)rc), rmem_last_error(c));
  exit(1);
}

/* Bulk read with an explicit chunk size and window of requests in flight. */
static double bulk_read(rmem_client *c, uint32_t pid, uint64_t addr, char *buf, size_t len,
                        size_t chunk, int window) {
  uint32_t *ids = calloc((len + chunk - 1) / chunk, sizeof(*ids));
  size_t nchunks = (len + chunk - 1) / chunk, sent = 0, done = 0;
  double t0 = now();
  while (done < nchunks) {
    while (sent < nchunks && sent - done < (size_t)window) {
      size_t off = sent * chunk, n = len - off < chunk ? len - off : chunk;
      int rc = rmem_read_start(c, pid, addr + off, buf + off, n, &ids[sent]);
      if (rc < 0)
        die(c, "read_start", rc);
      sent++;
    }
    ssize_t rc = rmem_finish(c, ids[done], NULL);
    if (rc < 0)
      die(c, "finish", rc);
    done++;
  }
  double t = now() - t0;
  free(ids);
  return (double)len / t / 1e9;
}

/* The kernel's own copy speed, the ceiling for any agent. */
static double raw_copy(uint32_t pid, uint64_t addr, char *buf, size_t len) {
  double t0 = now();
  size_t done = 0;
  while (done < len) {
    size_t n = len - done < (8u << 20) ? len - done : (8u << 20);
    struct iovec l = {buf + done, n}, r = {(void *)(uintptr_t)(addr + done), n};
    if (process_vm_readv((pid_t)pid, &l, 1, &r, 1, 0) != (ssize_t)n)
      return 0;
    done += n;
  }
  return (double)len / (now() - t0) / 1e9;
}

/* lz4 on this thread over `len` bytes in blocks of `block`, as the agent
 * compresses one read: input GB/s, with the ratio (raw / compressed) and the
 * decompression speed. */
static void lz4_speed(const char *buf, size_t len, size_t block, double *c_gbps, double *ratio,
                      double *d_gbps) {
  int bound = LZ4_compressBound((int)block);
  char *out = malloc((size_t)bound), *back = malloc(block);
  size_t total = 0;
  double tc = 0, td = 0;
  for (size_t off = 0; off < len; off += block) {
    int n = len - off < block ? (int)(len - off) : (int)block;
    double t0 = now();
    int c = LZ4_compress_default(buf + off, out, n, bound);
    double t1 = now();
    if (c <= 0 || LZ4_decompress_safe(out, back, c, n) != n || memcmp(back, buf + off, n) != 0) {
      fprintf(stderr, "rmem_bench: lz4 round trip failed\n");
      exit(1);
    }
    td += now() - t1;
    tc += t1 - t0;
    total += (size_t)c;
  }
  *c_gbps = (double)len / tc / 1e9;
  *d_gbps = (double)len / td / 1e9;
  *ratio = (double)len / (double)total;
  free(out);
  free(back);
}

/* Loopback TCP ceiling: one thread sends `len` bytes, this one receives. */
struct tcp_arg {
  int port;
  size_t len;
};

static void *tcp_sender(void *p) {
  struct tcp_arg *a = p;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)a->port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
    return NULL;
  char *b = malloc(1 << 20);
  memset(b, 0x5a, 1 << 20);
  for (size_t sent = 0; sent < a->len;) {
    ssize_t n = send(fd, b, (a->len - sent) < (1u << 20) ? a->len - sent : (1u << 20), 0);
    if (n <= 0)
      break;
    sent += (size_t)n;
  }
  free(b);
  close(fd);
  return NULL;
}

static double tcp_ceiling(size_t len) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof(sa);
  if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 1) != 0 ||
      getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0)
    return 0;
  struct tcp_arg a = {ntohs(sa.sin_port), len};
  pthread_t t;
  pthread_create(&t, NULL, tcp_sender, &a);
  int fd = accept(lfd, NULL, NULL);
  char *b = malloc(4 << 20);
  double t0 = now();
  size_t got = 0;
  ssize_t n;
  while (got < len && (n = recv(fd, b, 4 << 20, 0)) > 0)
    got += (size_t)n;
  double gbps = (double)got / (now() - t0) / 1e9;
  pthread_join(t, NULL);
  free(b);
  close(fd);
  close(lfd);
  return gbps;
}

/* A linked list of n + 1 nodes, each starting with a pointer to the next:
 * one deref with n zero offsets against n + 1 dependent single reads. */
static void pointer_chase(rmem_client *c, uint32_t pid, uint64_t head, size_t n, int runs) {
  int64_t *offs = calloc(n, sizeof(*offs));
  double d[100], s[100];
  uint64_t end_deref = 0, end_single = 0;
  for (int r = 0; r < runs; r++) {
    rmem_deref_result res = {0};
    uint64_t last;
    double t0 = now();
    int rc = rmem_deref(c, pid, head, offs, n, &last, sizeof(last), &res);
    d[r] = (now() - t0) * 1e3;
    if (rc != 0)
      die(c, "deref", rc);
    end_deref = res.addr;
    rmem_deref_result_free(&res);
    uint64_t p = head;
    t0 = now();
    for (size_t i = 0; i < n; i++) {
      uint64_t next;
      ssize_t got = rmem_read(c, pid, p, &next, sizeof(next), NULL);
      if (got != (ssize_t)sizeof(next))
        die(c, "chase read", got);
      p = next;
    }
    s[r] = (now() - t0) * 1e3;
    end_single = p;
  }
  free(offs);
  if (end_deref != end_single)
    fprintf(stderr, "rmem_bench: deref ended at 0x%llx, single reads at 0x%llx\n",
            (unsigned long long)end_deref, (unsigned long long)end_single);
  double md = pct(d, runs, 0.5), ms = pct(s, runs, 0.5);
  printf("deref    %zu-step pointer chase: deref %.2f ms, %zu single reads %.2f ms: %.0fx "
         "(median of %d)\n",
         n, md, n, ms, ms / md, runs);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1";
  int port = RMEM_DEFAULT_PORT, runs = 5;
  uint32_t bulk_pid = 0, map_pid = 0;
  uint64_t bulk_addr = 0, bulk_len = 256u << 20;
  rmem_connect_options co = {.timeout_ms = 30000};
  uint32_t chase_pid = 0;
  uint64_t chase_addr = 0;
  size_t chase_n = 0;
  static const struct option opts[] = {
      {"tls", no_argument, 0, 't'},
      {"ca", required_argument, 0, 'c'},
      {"pin", required_argument, 0, 'P'},
      {"host", required_argument, 0, 'h'},
      {"port", required_argument, 0, 'p'},
      {"bulk-pid", required_argument, 0, 'b'},
      {"bulk-addr", required_argument, 0, 'a'},
      {"bulk-len", required_argument, 0, 'l'},
      {"map-pid", required_argument, 0, 'm'},
      {"runs", required_argument, 0, 'r'},
      {"compress", no_argument, 0, 'z'},
      {"chase-pid", required_argument, 0, 'C'},
      {"chase-addr", required_argument, 0, 'A'},
      {"chase-n", required_argument, 0, 'N'},
      {0, 0, 0, 0},
  };
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'h':
      host = optarg;
      break;
    case 'p':
      port = atoi(optarg);
      break;
    case 'b':
      bulk_pid = (uint32_t)strtoul(optarg, NULL, 0);
      break;
    case 'a':
      bulk_addr = strtoull(optarg, NULL, 0);
      break;
    case 'l':
      bulk_len = strtoull(optarg, NULL, 0);
      break;
    case 'm':
      map_pid = (uint32_t)strtoul(optarg, NULL, 0);
      break;
    case 'r':
      runs = atoi(optarg);
      break;
    case 't':
      co.tls = 1;
      break;
    case 'c':
      co.tls = 1;
      co.ca_file = optarg;
      break;
    case 'P':
      co.tls = 1;
      co.pin_sha256 = optarg;
      break;
    case 'z':
      co.compress = 1;
      break;
    case 'C':
      chase_pid = (uint32_t)strtoul(optarg, NULL, 0);
      break;
    case 'A':
      chase_addr = strtoull(optarg, NULL, 0);
      break;
    case 'N':
      chase_n = (size_t)strtoul(optarg, NULL, 0);
      break;

    default:
      fprintf(stderr, "usage: rmem_bench --port P --bulk-pid PID --bulk-addr A [--bulk-len N] "
                      "--map-pid PID [--runs N] [--tls --ca FILE | --pin SHA256] "
                      "[--compress]\n");
      return 2;
    }
  }
  if (runs < 1 || runs > 100)
    runs = 5;
  rmem_client *c;
  co.host = host;
  co.port = (uint16_t)port;
  int rc = rmem_connect_opts(&c, &co);
  if (rc < 0)
    die(NULL, "connect", rc);
  const rmem_agent_info *info = rmem_info(c);
  printf("agent %s, max_read %llu, max_inflight %u%s, compression %s\n", info->agent,
         (unsigned long long)info->max_read, info->max_inflight, info->tls ? ", TLS" : "",
         info->compress[0] ? info->compress : "none");
  if (co.compress && !info->compress[0])
    fprintf(stderr, "rmem_bench: the agent declined compression\n");

  double v[100];
  if (bulk_pid) {
    char *buf = malloc(bulk_len);
    memset(buf, 0, bulk_len); /* Fault the destination in before timing. */
    for (int i = 0; i < runs; i++)
      v[i] = raw_copy(bulk_pid, bulk_addr, buf, bulk_len);
    printf("ceiling  kernel copy (process_vm_readv, 8 MiB): %7.2f GB/s median of %d\n",
           pct(v, runs, 0.5), runs);
    for (int i = 0; i < runs; i++)
      v[i] = tcp_ceiling(bulk_len);
    printf("ceiling  loopback TCP socket copy:               %7.2f GB/s median of %d\n",
           pct(v, runs, 0.5), runs);
    if (co.compress) {
      double cv[100], dv[100], ratio = 0;
      for (int i = 0; i < runs; i++)
        lz4_speed(buf, bulk_len, (size_t)info->max_read, &cv[i], &ratio, &dv[i]);
      printf("ceiling  lz4 on one core, %llu KiB blocks: compress %.2f GB/s, decompress %.2f "
             "GB/s, ratio %.2f, median of %d\n",
             (unsigned long long)(info->max_read >> 10), pct(cv, runs, 0.5), pct(dv, runs, 0.5),
             ratio, runs);
    }
    static const size_t chunks[] = {256u << 10, 1u << 20, 2u << 20, 4u << 20, 8u << 20};
    static const int windows[] = {2, 4, 8};
    double best = 0;
    size_t best_chunk = 0;
    int best_window = 0;
    for (size_t ci = 0; ci < sizeof(chunks) / sizeof(chunks[0]); ci++) {
      if (chunks[ci] > info->max_read)
        continue;
      for (size_t wi = 0; wi < sizeof(windows) / sizeof(windows[0]); wi++) {
        for (int i = 0; i < runs; i++)
          v[i] = bulk_read(c, bulk_pid, bulk_addr, buf, bulk_len, chunks[ci], windows[wi]);
        double m = pct(v, runs, 0.5);
        printf("bulk     read %llu MiB, chunk %5zu KiB, window %d:  %7.2f GB/s median of %d\n",
               (unsigned long long)(bulk_len >> 20), chunks[ci] >> 10, windows[wi], m, runs);
        if (m > best) {
          best = m;
          best_chunk = chunks[ci];
          best_window = windows[wi];
        }
      }
    }
    rmem_read_info ri = {0};
    for (int i = 0; i < runs; i++) {
      double t0 = now();
      ssize_t n = rmem_read_ex(c, bulk_pid, bulk_addr, buf, bulk_len, NULL, NULL, &ri);
      if (n < 0)
        die(c, "read", n);
      v[i] = (double)bulk_len / (now() - t0) / 1e9;
    }
    printf("bulk     rmem_read() default splitting:          %7.2f GB/s median of %d\n",
           pct(v, runs, 0.5), runs);
    if (co.compress)
      printf("bulk     of which lz4: %llu MiB in %.1f MiB on the wire (%.2fx)\n",
             (unsigned long long)(ri.decompressed_bytes >> 20),
             (double)ri.compressed_bytes / 1048576.0,
             ri.compressed_bytes ? (double)ri.decompressed_bytes / (double)ri.compressed_bytes
                                 : 0.0);
    printf("bulk     best: chunk %zu KiB, window %d: %.2f GB/s\n", best_chunk >> 10, best_window,
           best);

    enum { N = 20000 };
    static double lat[N];
    char small[8];
    for (int i = 0; i < 1000; i++)
      rmem_read(c, bulk_pid, bulk_addr, small, 8, NULL);
    for (int i = 0; i < N; i++) {
      double t0 = now();
      ssize_t n = rmem_read(c, bulk_pid, bulk_addr + (uint64_t)(i % 4096) * 8, small, 8, NULL);
      lat[i] = (now() - t0) * 1e6;
      if (n != 8)
        die(c, "small read", n);
    }
    double med = pct(lat, N, 0.5), p99 = pct(lat, N, 0.99);
    printf("small    8-byte read round trip: median %.1f us, p99 %.1f us (%d reads)\n", med, p99,
           N);

    enum { P = 200000, W = 64 };
    static char pbuf[W][8];
    uint32_t ids[W];
    for (int r = 0; r < runs; r++) {
      double t0 = now();
      for (int i = 0; i < P + W; i++) {
        if (i >= W && rmem_finish(c, ids[i % W], NULL) != 8)
          die(c, "pipelined finish", -1);
        if (i < P && (rc = rmem_read_start(c, bulk_pid, bulk_addr + (uint64_t)(i % 4096) * 8,
                                           pbuf[i % W], 8, &ids[i % W])) < 0)
          die(c, "pipelined start", rc);
      }
      v[r] = P / (now() - t0);
    }
    printf("small    pipelined 8-byte reads, window %d: %.0f reads/s median of %d\n", W,
           pct(v, runs, 0.5), runs);
    free(buf);
  }
  if (map_pid) {
    enum { M = 30 };
    double ms[M];
    size_t nregions = 0;
    for (int i = 0; i < M; i++) {
      rmem_memmap m = {0};
      double t0 = now();
      rc = rmem_map(c, map_pid, 0, &m);
      ms[i] = (now() - t0) * 1e3;
      if (rc < 0)
        die(c, "map", rc);
      nregions = m.n;
      rmem_memmap_free(&m);
    }
    printf("map      %zu regions: median %.2f ms, p90 %.2f ms (%d runs)\n", nregions,
           pct(ms, M, 0.5), pct(ms, M, 0.9), M);
    for (int i = 0; i < 10; i++) {
      rmem_memmap m = {0};
      double t0 = now();
      rc = rmem_map(c, map_pid, RMEM_MAP_DETAIL, &m);
      ms[i] = (now() - t0) * 1e3;
      if (rc < 0)
        die(c, "map detail", rc);
      rmem_memmap_free(&m);
    }
    printf("map      %zu regions with smaps detail: median %.2f ms (10 runs)\n", nregions,
           pct(ms, 10, 0.5));
  }
  if (chase_pid && chase_n > 0 && chase_n <= 100000)
    pointer_chase(c, chase_pid, chase_addr, chase_n, runs);
  rmem_close(c);
  return 0;
}
