/* rmemd: the remote process-memory agent. Parses options, creates the one
 * loop, starts the server and runs until SIGINT or SIGTERM. */
#include "cache.h"
#include "log.h"
#include "rmem.h"
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
  fprintf(f,
          "Usage: rmemd [OPTIONS]\n"
          "\n"
          "The rmem agent: serves the memory of this machine's processes over TCP.\n"
          "\n"
          "  --listen ADDR        address to listen on (default 127.0.0.1)\n"
          "  --port PORT          TCP port, 0 picks a free one (default %d)\n"
          "  --port-file FILE     write the bound port to FILE once listening\n"
          "  --log-level LEVEL    error, warn, info or debug (default info)\n"
          "  --max-frame BYTES    longest frame accepted or sent, at least 64K\n"
          "                       (default 16M)\n"
          "  --max-read BYTES     longest single read (default max-frame / 2)\n"
          "  --max-inflight N     requests in flight per connection (default 64)\n"
          "  --max-output BYTES   unsent reply bytes per connection before\n"
          "                       backpressure (default 64 MiB)\n"
          "  --max-conns N        concurrent connections (default 1024)\n"
          "  --threads N          worker threads for target I/O (default 4)\n"
          "  --hello-timeout MS   close connections that have not said hello by then\n"
          "                       (default 10000)\n"
          "  --cache-size BYTES   size of the page cache, 0 turns it off (default 64M)\n"
          "  --tls-cert FILE      serve TLS with this certificate (PEM; may hold the chain)\n"
          "  --tls-key FILE       and this private key (PEM, unencrypted)\n"
          "  --tls-client-ca FILE require client certificates issued by this CA (PEM):\n"
          "                       mutual TLS, which also authenticates the client\n"
          "  --token-file FILE    require the shared secret in FILE (up to a final\n"
          "                       newline) in hello; accepted over TLS or from loopback\n"
          "  --insecure-listen-any\n"
          "                       allow a non-loopback address without TLS (the traffic\n"
          "                       and the target's memory are then open to the network)\n"
          "  --no-compress        decline clients' offers to compress read data (lz4);\n"
          "                       compression costs CPU here and pays on slow links\n"
          "  --version            print the version and exit\n"
          "  --help               print this help and exit\n"
          "\n"
          "Without TLS only loopback addresses are allowed. Clients that fail to\n"
          "authenticate get RMEM_EPERM, later and later, and are cut off after %d tries.\n"
          "\n"
          "Exit status: 0 after a clean shutdown on SIGINT or SIGTERM, 1 on a start-up\n"
          "error, 2 on a usage error.\n",
          RMEM_DEFAULT_PORT, AUTH_MAX_FAILURES);
}

/* Parses a count, or with `units` a size with an optional K, M or G suffix. */
static int parse_num(const char *s, int units, uint64_t min, uint64_t max, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || end == s || *s == '-')
    return -1;
  int shift = 0;
  if (units && *end) {
    const char *u = strchr("kKmMgG", *end);
    if (u == NULL)
      return -1;
    shift = 10 * (int)(1 + (u - "kKmMgG") / 2);
    end++;
  }
  if (*end || (shift && v > (UINT64_MAX >> shift)))
    return -1;
  v <<= shift;
  if (v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

static int write_port_file(const char *path, int port) {
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL)
    return -1;
  fprintf(f, "%d\n", port);
  /* Renamed into place so a reader never sees a half-written file. */
  if (fclose(f) != 0 || rename(tmp, path) != 0)
    return -1;
  return 0;
}

static server srv;
static uv_signal_t sigint_h, sigterm_h;

static uv_timer_t grace_h;

/* Jobs still running this long after a shutdown began are stuck on a target
 * (a D-state process, a FUSE-backed mapping): exit without them. */
#define SHUTDOWN_GRACE_MS 5000

static void on_grace(uv_timer_t *t) {
  log_error("work on a target is still blocked %d ms after shutdown; exiting anyway",
            SHUTDOWN_GRACE_MS);
  exit(1);
}

static void on_signal(uv_signal_t *h, int signum) {
  log_info("signal %d: shutting down", signum);
  server_stop(&srv);
  uv_close((uv_handle_t *)&sigint_h, NULL);
  uv_close((uv_handle_t *)&sigterm_h, NULL);
  /* Unreferenced: a loop with nothing else left ends without waiting for it. */
  uv_timer_init(h->loop, &grace_h);
  uv_timer_start(&grace_h, on_grace, SHUTDOWN_GRACE_MS, 0);
  uv_unref((uv_handle_t *)&grace_h);
}

int main(int argc, char **argv) {
  const char *host = "127.0.0.1", *port_file = NULL;
  uint64_t port = RMEM_DEFAULT_PORT, max_frame = 16u << 20, max_read = 0, max_inflight = 64;
  uint64_t max_output = 64u << 20, max_conns = 1024, threads = 4, hello_timeout = 10000;
  uint64_t cache_size = CACHE_DEFAULT_SIZE;
  const char *tls_cert = NULL, *tls_key = NULL, *tls_client_ca = NULL, *token_file = NULL;
  int insecure = 0, no_compress = 0;
  enum {
    O_LISTEN = 256,
    O_PORT,
    O_PORTFILE,
    O_LOG,
    O_FRAME,
    O_READ,
    O_INFLIGHT,
    O_OUTPUT,
    O_CONNS,
    O_THREADS,
    O_HELLO_TIMEOUT,
    O_CACHE_SIZE,
    O_TLS_CERT,
    O_TLS_KEY,
    O_TLS_CLIENT_CA,
    O_TOKEN_FILE,
    O_INSECURE,
    O_NO_COMPRESS,
    O_VERSION,
    O_HELP
  };
  static const struct option opts[] = {
      {"listen", required_argument, 0, O_LISTEN},
      {"port", required_argument, 0, O_PORT},
      {"port-file", required_argument, 0, O_PORTFILE},
      {"log-level", required_argument, 0, O_LOG},
      {"max-frame", required_argument, 0, O_FRAME},
      {"max-read", required_argument, 0, O_READ},
      {"max-inflight", required_argument, 0, O_INFLIGHT},
      {"max-output", required_argument, 0, O_OUTPUT},
      {"max-conns", required_argument, 0, O_CONNS},
      {"threads", required_argument, 0, O_THREADS},
      {"hello-timeout", required_argument, 0, O_HELLO_TIMEOUT},
      {"cache-size", required_argument, 0, O_CACHE_SIZE},
      {"tls-cert", required_argument, 0, O_TLS_CERT},
      {"tls-key", required_argument, 0, O_TLS_KEY},
      {"tls-client-ca", required_argument, 0, O_TLS_CLIENT_CA},
      {"token-file", required_argument, 0, O_TOKEN_FILE},
      {"insecure-listen-any", no_argument, 0, O_INSECURE},
      {"no-compress", no_argument, 0, O_NO_COMPRESS},
      {"version", no_argument, 0, O_VERSION},
      {"help", no_argument, 0, O_HELP},
      {0, 0, 0, 0},
  };
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    int bad = 0;
    switch (o) {
    case O_LISTEN:
      host = optarg;
      break;
    case O_PORT:
      bad = parse_num(optarg, 0, 0, 65535, &port);
      break;
    case O_PORTFILE:
      port_file = optarg;
      break;
    case O_LOG:
      bad = (log_level = log_parse_level(optarg)) < 0 ? (log_level = LOG_INFO, -1) : 0;
      break;
    case O_FRAME:
      bad = parse_num(optarg, 1, 65536, UINT32_MAX, &max_frame);
      break;
    case O_READ:
      bad = parse_num(optarg, 1, 1, UINT32_MAX, &max_read);
      break;
    case O_INFLIGHT:
      bad = parse_num(optarg, 0, 1, 65536, &max_inflight);
      break;
    case O_OUTPUT:
      bad = parse_num(optarg, 1, 65536, UINT64_MAX / 2, &max_output);
      break;
    case O_CONNS:
      bad = parse_num(optarg, 0, 1, 1 << 20, &max_conns);
      break;
    case O_THREADS:
      bad = parse_num(optarg, 0, 1, 1024, &threads);
      break;
    case O_HELLO_TIMEOUT:
      bad = parse_num(optarg, 0, 1, 3600000, &hello_timeout);
      break;
    case O_CACHE_SIZE:
      bad = parse_num(optarg, 1, 0, 1ull << 40, &cache_size);
      break;
    case O_TLS_CERT:
      tls_cert = optarg;
      break;
    case O_TLS_KEY:
      tls_key = optarg;
      break;
    case O_TLS_CLIENT_CA:
      tls_client_ca = optarg;
      break;
    case O_TOKEN_FILE:
      token_file = optarg;
      break;
    case O_INSECURE:
      insecure = 1;
      break;
    case O_NO_COMPRESS:
      no_compress = 1;
      break;
    case O_VERSION:
      printf("rmemd %s\n", RMEM_VERSION);
      return 0;
    case O_HELP:
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "rmemd: bad value for --%s: '%s'\n", opts[o - O_LISTEN].name, optarg);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "rmemd: unexpected argument '%s'\n", argv[optind]);
    return 2;
  }
  /* A read reply carries max_read bytes plus its holes; keep half the frame. */
  if (max_read == 0)
    max_read = max_frame / 2;
  if (max_read > max_frame / 2) {
    fprintf(stderr, "rmemd: --max-read must be at most half of --max-frame\n");
    return 2;
  }
  if (!tls_cert != !tls_key) {
    fprintf(stderr, "rmemd: --tls-cert and --tls-key go together\n");
    return 2;
  }
  if (tls_client_ca && !tls_cert) {
    fprintf(stderr, "rmemd: --tls-client-ca needs --tls-cert and --tls-key\n");
    return 2;
  }
  uv_loop_t *loop = uv_default_loop();
  struct sockaddr_storage addr;
  int rc = server_resolve(loop, host, (int)port, &addr);
  if (rc != 0) {
    fprintf(stderr, "rmemd: --listen %s: %s\n", host, uv_strerror(rc));
    return 2;
  }
  int loopback = server_is_loopback(&addr);
  if (!loopback && !insecure && !tls_cert) {
    fprintf(stderr,
            "rmemd: refusing to listen on %s without TLS; use --tls-cert and --tls-key,\n"
            "       a loopback address, or --insecure-listen-any to expose process memory\n"
            "       in the clear\n",
            host);
    return 2;
  }
  char why[512];
  if (token_file && auth_token_load(&srv.auth, token_file, why, sizeof(why)) != 0) {
    fprintf(stderr, "rmemd: --token-file %s\n", why);
    return 1;
  }
  if (tls_cert && tls_config_new(&srv.tls, tls_cert, tls_key, tls_client_ca, why, sizeof(why))) {
    fprintf(stderr, "rmemd: TLS: %s\n", why);
    return 1;
  }
  srv.auth.tls = srv.tls != NULL;
  srv.auth.mtls = tls_client_ca != NULL;

  /* Size the thread pool before libuv starts it. */
  char nthreads[16];
  snprintf(nthreads, sizeof(nthreads), "%llu", (unsigned long long)threads);
  if (getenv("UV_THREADPOOL_SIZE") == NULL)
    setenv("UV_THREADPOOL_SIZE", nthreads, 1);
  signal(SIGPIPE, SIG_IGN);

  srv.limits.max_frame = max_frame;
  srv.limits.max_read = max_read;
  /* A write request carries its data plus a few dozen bytes of header. */
  srv.limits.max_write = max_frame - 4096;
  srv.limits.max_inflight = (uint32_t)max_inflight;
  srv.limits.max_output = max_output;
  srv.limits.no_compress = no_compress;
  srv.max_conns = max_conns;
  srv.hello_timeout_ms = hello_timeout;
  /* Before the first worker thread starts. */
  if (cache_init(cache_size) != 0) {
    fprintf(stderr, "rmemd: out of memory for a %llu-byte cache\n", (unsigned long long)cache_size);
    tls_config_free(srv.tls);
    return 1;
  }
  int bound = 0;
  rc = server_start(&srv, loop, &addr, &bound);
  if (rc < 0) {
    log_error("listen %s:%llu: %s", host, (unsigned long long)port, uv_strerror(rc));
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    tls_config_free(srv.tls);
    return 1;
  }
  if (!loopback && !srv.tls)
    log_warn("listening on %s WITHOUT TLS: anyone who can reach it can read and write memory",
             host);
  if (!loopback && srv.tls && !srv.auth.has_token && !srv.auth.mtls)
    log_warn("listening on %s with TLS but no authentication: anyone who can reach it can "
             "read and write memory (use --token-file or --tls-client-ca)",
             host);
  if (!loopback && !srv.tls && srv.auth.has_token)
    log_warn("--token-file without TLS: tokens are refused from non-loopback clients");
  log_info("rmemd %s listening on %s:%d%s%s", RMEM_VERSION, host, bound, srv.tls ? " with TLS" : "",
           srv.auth.mtls ? " (client certificates required)" : "");
  if (port_file && write_port_file(port_file, bound) != 0) {
    log_error("port file %s: %s", port_file, strerror(errno));
    server_stop(&srv);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    tls_config_free(srv.tls);
    return 1;
  }
  uv_signal_init(loop, &sigint_h);
  uv_signal_init(loop, &sigterm_h);
  uv_signal_start(&sigint_h, on_signal, SIGINT);
  uv_signal_start(&sigterm_h, on_signal, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  if (grace_h.loop != NULL) {
    uv_close((uv_handle_t *)&grace_h, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
  }
  rc = uv_loop_close(loop);
  if (rc != 0)
    log_warn("loop close: %s", uv_strerror(rc));
  cache_close();
  tls_config_free(srv.tls);
  log_info("stopped");
  return 0;
}
