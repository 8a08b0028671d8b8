/* TLS and authentication against real agents. The certificates are made at
 * run time by deploy/make-certs.sh (a CA, a server and a client certificate),
 * plus a second, unrelated CA and a self-signed certificate. Four agents:
 *
 *   T  TLS, token required            (the bystander stays connected to it)
 *   M  TLS, client certificates required (mutual TLS), a token configured too
 *   P  plaintext on 0.0.0.0 (--insecure-listen-any), token required
 *   S  TLS with a self-signed certificate, nothing required
 *
 * Each agent's log goes to a file, so that tests can check what was logged.
 * At the end every agent must exit 0 on SIGTERM (no leaks under ASan). */
#include "harness.h"
#include "msg.h"
#include "rmem.h"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOKEN "tls-test-secret-0123456789"
#define BULK_XOR 0x9e3779b97f4a7c15ull
#define BULK_MIB 16

typedef struct {
  h_agent a;
  int up;
  char log[160];
} agent;

static struct {
  char dir[64];
  char ca[128], cert[128], key[128];    /* make-certs.sh: CA, client cert and key. */
  char ca2[128], cert2[128], key2[128]; /* Another CA and a client cert it issued. */
  char self_crt[128], self_key[128];    /* Self-signed, unknown to every CA. */
  char token_file[128], bad_token_file[128];
  char pin[128];      /* The server certificate's SHA-256, with colons. */
  char self_pin[128]; /* The self-signed one's. */
  char ext_ip[64];    /* A non-loopback address of this machine, "" when none. */
  agent t, m, p, s;
  h_fixture fx, bulk, comp;
  int fx_up, bulk_up, comp_up;
  uint32_t pid, bulk_pid, comp_pid;
  uint64_t pattern, scratch, bulk_addr, comp_addr, comp_len;
  rmem_client *by; /* The bystander, on T over TLS. */
} S;

static void path(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", S.dir, name);
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  int st = system(cmd);
  if (st != 0)
    fprintf(stderr, "test_tls: '%s' failed (%d)\n", cmd, st);
  return st;
}

static int read_line(const char *file, char *out, size_t n) {
  FILE *f = fopen(file, "r");
  if (f == NULL || fgets(out, (int)n, f) == NULL) {
    if (f)
      fclose(f);
    return -1;
  }
  fclose(f);
  out[strcspn(out, "\r\n")] = '\0';
  return 0;
}

/* How many lines of the agent's log contain `needle`. */
static int log_count(const agent *g, const char *needle) {
  FILE *f = fopen(g->log, "r");
  if (f == NULL)
    return 0;
  char line[1024];
  int n = 0;
  while (fgets(line, sizeof(line), f))
    n += strstr(line, needle) != NULL;
  fclose(f);
  return n;
}

/* Waits up to 2 s for at least `n` such lines: the agent may log just after
 * the client has given up. */
static int log_wait(const agent *g, const char *needle, int n) {
  double end = h_now_ms() + 2000;
  int got;
  while ((got = log_count(g, needle)) < n && h_now_ms() < end)
    usleep(10000);
  return got;
}

/* Starts an agent whose stderr (its log) goes to a file. */
static int agent_start(agent *g, const char *name, const char *const *extra) {
  char file[64];
  snprintf(file, sizeof(file), "%s.log", name);
  path(g->log, sizeof(g->log), file);
  fflush(stderr);
  int save = dup(2);
  int fd = open(g->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
  if (save < 0 || fd < 0)
    return -1;
  dup2(fd, 2);
  close(fd);
  int rc = h_agent_start_args(&g->a, NULL, extra);
  fflush(stderr);
  dup2(save, 2);
  close(save);
  if (rc != 0) {
    fprintf(stderr, "test_tls: agent %s did not start; its log:\n", name);
    run("cat %s >&2", g->log);
    return -1;
  }
  g->up = 1;
  return 0;
}

static int agent_stop(agent *g) {
  if (!g->up)
    return 0;
  g->up = 0;
  int st = h_agent_stop(&g->a);
  if (st != 0) {
    fprintf(stderr, "test_tls: agent exited with %d; its log:\n", st);
    run("cat %s >&2", g->log);
  }
  return st;
}

/* A non-loopback IPv4 address of this machine, if it has one. */
static void find_ext_ip(void) {
  struct ifaddrs *ifa;
  if (getifaddrs(&ifa) != 0)
    return;
  for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
    if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_UP) &&
        !(i->ifa_flags & IFF_LOOPBACK)) {
      inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, S.ext_ip,
                sizeof(S.ext_ip));
      break;
    }
  }
  freeifaddrs(ifa);
}

static rmem_connect_options opts(uint16_t port) {
  return (rmem_connect_options){.host = "127.0.0.1", .port = port, .timeout_ms = 5000};
}

/* Connects over TLS to T, checked by CA, with the token. */
static int connect_t(rmem_client **c) {
  rmem_connect_options o = opts(S.t.a.port);
  o.tls = 1;
  o.ca_file = S.ca;
  o.token = TOKEN;
  return rmem_connect_opts(c, &o);
}

static int group_setup(void **state) {
  (void)state;
  signal(SIGPIPE, SIG_IGN);
  snprintf(S.dir, sizeof(S.dir), "/tmp/rmem-tls-XXXXXX");
  if (mkdtemp(S.dir) == NULL)
    return -1;
  char other[128], tok[128];
  path(other, sizeof(other), "other");
  if (run("%s %s >/dev/null 2>&1", MAKE_CERTS_PATH, S.dir) != 0 ||
      run("%s %s >/dev/null 2>&1", MAKE_CERTS_PATH, other) != 0)
    return -1;
  path(S.ca, sizeof(S.ca), "ca.crt");
  path(S.cert, sizeof(S.cert), "client.crt");
  path(S.key, sizeof(S.key), "client.key");
  path(S.ca2, sizeof(S.ca2), "other/ca.crt");
  path(S.cert2, sizeof(S.cert2), "other/client.crt");
  path(S.key2, sizeof(S.key2), "other/client.key");
  path(S.self_crt, sizeof(S.self_crt), "self.crt");
  path(S.self_key, sizeof(S.self_key), "self.key");
  path(tok, sizeof(tok), "server.pin");
  if (read_line(tok, S.pin, sizeof(S.pin)) != 0)
    return -1;
  if (run("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 "
          "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s "
          ">/dev/null 2>&1",
          S.self_key, S.self_crt) != 0)
    return -1;
  path(tok, sizeof(tok), "self.pin");
  if (run("openssl x509 -in %s -noout -fingerprint -sha256 | cut -d= -f2 >%s", S.self_crt, tok) !=
          0 ||
      read_line(tok, S.self_pin, sizeof(S.self_pin)) != 0)
    return -1;
  path(S.token_file, sizeof(S.token_file), "token");
  path(S.bad_token_file, sizeof(S.bad_token_file), "bad-token");
  if (run("umask 077; printf '%%s\\n' '%s' >%s; printf 'nope\\n' >%s", TOKEN, S.token_file,
          S.bad_token_file) != 0)
    return -1;
  find_ext_ip();

  char server_crt[128], server_key[128];
  path(server_crt, sizeof(server_crt), "server.crt");
  path(server_key, sizeof(server_key), "server.key");
  const char *t_args[] = {"--tls-cert", server_crt,        "--tls-key", server_key, "--token-file",
                          S.token_file, "--hello-timeout", "1000",      NULL};
  const char *m_args[] = {"--tls-cert", server_crt,     "--tls-key",  server_key, "--tls-client-ca",
                          S.ca,         "--token-file", S.token_file, NULL};
  const char *p_args[] = {"--listen",     "0.0.0.0",    "--insecure-listen-any",
                          "--token-file", S.token_file, NULL};
  const char *s_args[] = {"--tls-cert", S.self_crt, "--tls-key", S.self_key, NULL};
  if (agent_start(&S.t, "t", t_args) != 0 || agent_start(&S.m, "m", m_args) != 0 ||
      agent_start(&S.p, "p", p_args) != 0 || agent_start(&S.s, "s", s_args) != 0)
    return -1;

  if (h_fixture_start(&S.fx, FIXTURE_TARGET_PATH, NULL) != 0)
    return -1;
  S.fx_up = 1;
  S.pid = (uint32_t)h_fixture_u64(&S.fx, "pid");
  S.pattern = h_fixture_u64(&S.fx, "pattern");
  S.scratch = h_fixture_u64(&S.fx, "scratch");
  const char *bulk_args[] = {"--bulk", "16", NULL};
  if (h_fixture_start(&S.bulk, FIXTURE_REGIONS_PATH, bulk_args) != 0)
    return -1;
  S.bulk_up = 1;
  S.bulk_pid = (uint32_t)h_fixture_u64(&S.bulk, "pid");
  S.bulk_addr = h_fixture_u64(&S.bulk, "bulk");
  const char *comp_args[] = {"--bulk-compressible", "4", NULL};
  if (h_fixture_start(&S.comp, FIXTURE_REGIONS_PATH, comp_args) != 0)
    return -1;
  S.comp_up = 1;
  S.comp_pid = (uint32_t)h_fixture_u64(&S.comp, "pid");
  S.comp_addr = h_fixture_u64(&S.comp, "bulk");
  S.comp_len = h_fixture_u64(&S.comp, "bulk_len");

  int rc = connect_t(&S.by);
  if (rc != 0) {
    fprintf(stderr, "test_tls: bystander: %s: %s\n", rmem_err_name(rc), rmem_last_error(NULL));
    return -1;
  }
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  rmem_close(S.by);
  S.by = NULL;
  if (S.fx_up)
    h_fixture_stop(&S.fx);
  if (S.bulk_up)
    h_fixture_stop(&S.bulk);
  if (S.comp_up)
    h_fixture_stop(&S.comp);
  int bad = 0;
  bad |= agent_stop(&S.t) != 0;
  bad |= agent_stop(&S.m) != 0;
  bad |= agent_stop(&S.p) != 0;
  bad |= agent_stop(&S.s) != 0;
  /* RMEM_TEST_KEEP=1 keeps the certificates and the agents' logs. */
  if (S.dir[0] && getenv("RMEM_TEST_KEEP") == NULL)
    run("rm -rf %s", S.dir);
  else if (S.dir[0])
    fprintf(stderr, "test_tls: kept %s\n", S.dir);
  return bad ? -1 : 0;
}

/* The bystander still reads and maps correctly. */
static void check_bystander(void) {
  uint8_t buf[64];
  ssize_t got = rmem_read(S.by, S.pid, S.pattern + 5, buf, sizeof(buf), NULL);
  if (got != (ssize_t)sizeof(buf))
    fail_msg("bystander read: %zd %s", got, rmem_last_error(S.by));
  for (size_t i = 0; i < sizeof(buf); i++)
    assert_int_equal(buf[i], (uint8_t)(((i + 5) * 7 + 3) & 0xff));
  rmem_memmap map = {0};
  int rc = rmem_map(S.by, S.pid, 0, &map);
  if (rc != 0)
    fail_msg("bystander map: %s %s", rmem_err_name(rc), rmem_last_error(S.by));
  assert_true(map.n > 5);
  rmem_memmap_free(&map);
}

/* Fails unless `rc` is `code` and the connect message contains `needle`. */
static void expect_fail(int rc, int code, const char *needle) {
  const char *msg = rmem_last_error(NULL);
  if (rc != code || strstr(msg, needle) == NULL)
    fail_msg("expected %s with '%s', got %s: %s", rmem_err_name(code), needle, rmem_err_name(rc),
             msg);
}

/* TLS with CA verification: hello, a 16 MiB read across many records, a
 * write and a map. By host name too (DNS subjectAltName). */
static void test_tls_ca(void **state) {
  rmem_client *c;
  int rc = connect_t(&c);
  if (rc != 0)
    fail_msg("connect: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  const rmem_agent_info *info = rmem_info(c);
  assert_int_equal(info->tls, 1);
  assert_string_equal(info->auth, "token");

  size_t len = (size_t)BULK_MIB << 20;
  uint64_t *buf = malloc(len);
  assert_non_null(buf);
  ssize_t got = rmem_read(c, S.bulk_pid, S.bulk_addr, buf, len, NULL);
  if (got != (ssize_t)len)
    fail_msg("bulk read: %zd %s", got, rmem_last_error(c));
  for (size_t i = 0; i < len / 8; i++) {
    if (buf[i] != ((S.bulk_addr + 8 * i) ^ BULK_XOR))
      fail_msg("bulk word %zu differs", i);
  }
  free(buf);

  uint8_t w[4096], r[4096];
  for (size_t i = 0; i < sizeof(w); i++)
    w[i] = (uint8_t)(i * 13 + 1);
  assert_int_equal(rmem_write(c, S.pid, S.scratch, w, sizeof(w), NULL), (ssize_t)sizeof(w));
  assert_int_equal(rmem_read(c, S.pid, S.scratch, r, sizeof(r), NULL), (ssize_t)sizeof(r));
  assert_memory_equal(w, r, sizeof(w));

  rmem_memmap map = {0};
  assert_int_equal(rmem_map(c, S.pid, RMEM_MAP_DETAIL, &map), 0);
  assert_true(map.n > 5);
  rmem_memmap_free(&map);
  rmem_close(c);

  rmem_connect_options o = opts(S.t.a.port);
  o.host = "localhost";
  o.tls = 1;
  o.ca_file = S.ca;
  o.token = TOKEN;
  rc = rmem_connect_opts(&c, &o);
  if (rc != 0)
    fail_msg("connect to localhost: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  rmem_close(c);
  check_bystander();
}

/* lz4 inside TLS: data is compressed, then encrypted. The bytes are those
 * the bystander reads raw, and the bulk words (which lz4 halves) survive
 * many records. */
static void test_tls_lz4(void **state) {
  rmem_connect_options o = opts(S.t.a.port);
  o.tls = 1;
  o.ca_file = S.ca;
  o.token = TOKEN;
  o.compress = 1;
  rmem_client *c;
  int rc = rmem_connect_opts(&c, &o);
  if (rc != 0)
    fail_msg("connect: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  assert_int_equal(rmem_info(c)->tls, 1);
  assert_string_equal(rmem_info(c)->compress, "lz4");
  assert_string_equal(rmem_info(S.by)->compress, "");

  size_t len = (size_t)S.comp_len;
  char *want = malloc(len), *got = malloc(len);
  assert_true(want && got);
  assert_int_equal(rmem_read(S.by, S.comp_pid, S.comp_addr, want, len, NULL), (ssize_t)len);
  rmem_read_info info;
  assert_int_equal(rmem_read_ex(c, S.comp_pid, S.comp_addr, got, len, NULL, NULL, &info),
                   (ssize_t)len);
  if (info.compressed_bytes == 0 || info.compressed_bytes * 3 > len)
    fail_msg("%llu compressed bytes for %zu", (unsigned long long)info.compressed_bytes, len);
  assert_memory_equal(want, got, len);
  free(want);
  free(got);

  len = (size_t)BULK_MIB << 20;
  uint64_t *buf = malloc(len);
  assert_non_null(buf);
  assert_int_equal(rmem_read_ex(c, S.bulk_pid, S.bulk_addr, buf, len, NULL, NULL, &info),
                   (ssize_t)len);
  assert_int_equal(info.decompressed_bytes, len);
  for (size_t i = 0; i < len / 8; i++) {
    if (buf[i] != ((S.bulk_addr + 8 * i) ^ BULK_XOR))
      fail_msg("bulk word %zu differs", i);
  }
  free(buf);
  rmem_close(c);
  check_bystander();
}

/* A pin instead of a CA: with colons, or as plain lowercase hex. */
static void test_tls_pin(void **state) {
  rmem_connect_options o = opts(S.t.a.port);
  o.tls = 1;
  o.pin_sha256 = S.pin;
  o.token = TOKEN;
  rmem_client *c;
  int rc = rmem_connect_opts(&c, &o);
  if (rc != 0)
    fail_msg("pin: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  rmem_close(c);

  char plain[128];
  size_t n = 0;
  for (const char *p = S.pin; *p && n + 1 < sizeof(plain); p++)
    if (*p != ':')
      plain[n++] = (char)(*p | 0x20);
  plain[n] = '\0';
  o.pin_sha256 = plain;
  rc = rmem_connect_opts(&c, &o);
  if (rc != 0)
    fail_msg("plain pin: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  rmem_close(c);

  /* One digit off. */
  plain[0] = plain[0] == '0' ? '1' : '0';
  double t0 = h_now_ms();
  rc = rmem_connect_opts(&c, &o);
  expect_fail(rc, RMEM_ETLS, "does not match the pin");
  assert_true(h_now_ms() - t0 < 3000);
  /* Not a SHA-256 at all. */
  o.pin_sha256 = "12:34";
  expect_fail(rmem_connect_opts(&c, &o), RMEM_EPARAM, "not a SHA-256");
  /* TLS with nothing to check the agent by is refused before connecting. */
  o.pin_sha256 = NULL;
  expect_fail(rmem_connect_opts(&c, &o), RMEM_EPARAM, "a CA file or a pin");
  o.tls = 0;
  o.ca_file = S.ca;
  expect_fail(rmem_connect_opts(&c, &o), RMEM_EPARAM, "needs TLS");
  check_bystander();
}

/* The wrong CA, or a self-signed certificate nobody issued: refused, fast. */
static void test_tls_untrusted(void **state) {
  rmem_connect_options o = opts(S.t.a.port);
  o.tls = 1;
  o.ca_file = S.ca2;
  o.token = TOKEN;
  rmem_client *c;
  double t0 = h_now_ms();
  expect_fail(rmem_connect_opts(&c, &o), RMEM_ETLS, "not trusted");
  assert_true(h_now_ms() - t0 < 3000);

  o.port = S.s.a.port;
  o.ca_file = S.ca;
  o.token = NULL;
  expect_fail(rmem_connect_opts(&c, &o), RMEM_ETLS, "not trusted");
  /* The agent saw the client give up. */
  assert_true(log_wait(&S.s, "the client sent a fatal alert", 1) >= 1);
  /* The same self-signed agent by its pin, as a test rig would. */
  o.ca_file = NULL;
  o.pin_sha256 = S.self_pin;
  int rc = rmem_connect_opts(&c, &o);
  if (rc != 0)
    fail_msg("self-signed by pin: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  assert_string_equal(rmem_info(c)->auth, "none");
  rmem_close(c);
  check_bystander();
}

/* TLS client, plaintext agent: a quick, clear failure; one log line. */
static void test_tls_to_plaintext(void **state) {
  rmem_connect_options o = opts(S.p.a.port);
  o.tls = 1;
  o.ca_file = S.ca;
  int before = log_count(&S.p, "TLS client on a plaintext agent");
  rmem_client *c;
  double t0 = h_now_ms();
  expect_fail(rmem_connect_opts(&c, &o), RMEM_ETLS, "does not speak TLS");
  assert_true(h_now_ms() - t0 < 2000);
  assert_int_equal(log_count(&S.p, "TLS client on a plaintext agent"), before + 1);
  check_bystander();
}

/* Plaintext client, TLS agent: RMEM_ETLS in plaintext, then the close. */
static void test_plaintext_to_tls(void **state) {
  int before = log_count(&S.t, "plaintext client on a TLS agent");
  rmem_client *c;
  double t0 = h_now_ms();
  expect_fail(rmem_connect(&c, "127.0.0.1", S.t.a.port, 5000), RMEM_ETLS, "requires TLS");
  assert_true(h_now_ms() - t0 < 2000);
  assert_int_equal(log_count(&S.t, "plaintext client on a TLS agent"), before + 1);

  int fd = h_raw_connect(S.t.a.port);
  assert_true(fd >= 0);
  assert_int_equal(h_send_hello(fd, 1, 1), 0);
  h_resp r;
  assert_int_equal(h_raw_recv(fd, 2000, &r), 0);
  assert_int_equal(r.has_msgid, 0);
  assert_int_equal(r.code, RMEM_ETLS);
  assert_string_equal(r.name, "RMEM_ETLS");
  h_resp_free(&r);
  assert_int_equal(h_raw_wait_closed(fd, 2000), 1);
  close(fd);
  assert_int_equal(log_count(&S.t, "plaintext client on a TLS agent"), before + 2);
  check_bystander();
}

/* The start of a ClientHello: record header, then part of the handshake. */
static const uint8_t half_hello[] = {0x16, 0x03, 0x01, 0x00, 0x80, 0x01, 0x00, 0x00,
                                     0x7c, 0x03, 0x03, 0x11, 0x22, 0x33, 0x44, 0x55};

/* A handshake cut midway, one that stalls, and one that is garbage: each is
 * closed (the stalled one by the hello timeout) and nobody else notices. */
static void test_handshake_cut(void **state) {
  int fd = h_raw_connect(S.t.a.port);
  assert_true(fd >= 0);
  assert_int_equal(h_raw_send(fd, half_hello, sizeof(half_hello)), 0);
  close(fd);

  fd = h_raw_connect(S.t.a.port);
  assert_true(fd >= 0);
  static const uint8_t garbage[] = {0x16, 0x03, 0x03, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff};
  assert_int_equal(h_raw_send(fd, garbage, sizeof(garbage)), 0);
  double t0 = h_now_ms();
  assert_int_equal(h_raw_wait_closed(fd, 3000), 1);
  assert_true(h_now_ms() - t0 < 1000);
  close(fd);

  int before = log_count(&S.t, "TLS handshake not finished");
  fd = h_raw_connect(S.t.a.port);
  assert_true(fd >= 0);
  assert_int_equal(h_raw_send(fd, half_hello, sizeof(half_hello)), 0);
  t0 = h_now_ms();
  check_bystander(); /* Served while the stalled handshake waits. */
  assert_int_equal(h_raw_wait_closed(fd, 5000), 1);
  double waited = h_now_ms() - t0;
  close(fd);
  /* --hello-timeout 1000 on T. */
  if (waited < 700 || waited > 3000)
    fail_msg("stalled handshake closed after %.0f ms", waited);
  assert_int_equal(log_count(&S.t, "TLS handshake not finished"), before + 1);
  check_bystander();
}

/* Mutual TLS: no certificate, or one from another CA, is refused; the right
 * one authenticates without a token. */
static void test_mtls(void **state) {
  rmem_connect_options o = opts(S.m.a.port);
  o.tls = 1;
  o.ca_file = S.ca;
  rmem_client *c;
  double t0 = h_now_ms();
  expect_fail(rmem_connect_opts(&c, &o), RMEM_ETLS, "client certificate");
  assert_true(h_now_ms() - t0 < 3000);
  o.cert_file = S.cert2;
  o.key_file = S.key2;
  expect_fail(rmem_connect_opts(&c, &o), RMEM_ETLS, "TLS handshake");
  assert_true(log_wait(&S.m, "client certificate rejected", 1) >= 1);

  o.cert_file = S.cert;
  o.key_file = S.key;
  int rc = rmem_connect_opts(&c, &o);
  if (rc != 0)
    fail_msg("mtls: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  assert_string_equal(rmem_info(c)->auth, "mtls");
  rmem_memmap map = {0};
  rc = rmem_map(c, S.pid, 0, &map);
  if (rc != 0)
    fail_msg("map over mtls: %s: %s", rmem_err_name(rc), rmem_last_error(c));
  rmem_memmap_free(&map);
  rmem_close(c);
  check_bystander();
}

/* Token rules on the TLS agent: methods before authentication and a wrong
 * token get RMEM_EPERM; the right token works (test_tls_ca). */
static void test_token_tls(void **state) {
  rmem_connect_options o = opts(S.t.a.port);
  o.tls = 1;
  o.ca_file = S.ca;
  rmem_client *c;
  int rc = rmem_connect_opts(&c, &o);
  if (rc != 0)
    fail_msg("connect without token: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  assert_string_equal(rmem_info(c)->auth, "token");
  rmem_memmap map = {0};
  assert_int_equal(rmem_map(c, S.pid, 0, &map), RMEM_EPERM);
  assert_non_null(strstr(rmem_last_error(c), "authentication required"));
  uint8_t b[16];
  assert_int_equal(rmem_read(c, S.pid, S.pattern, b, sizeof(b), NULL), RMEM_EPERM);
  rmem_close(c);

  o.token = "wrong-token";
  expect_fail(rmem_connect_opts(&c, &o), RMEM_EPERM, "wrong token");
  assert_true(log_wait(&S.t, "wrong token (failure", 1) >= 1);
  check_bystander();
}

/* The rmem CLI over TLS, with the token from a file. */
static void test_cli(void **state) {
  char cmd[1024], out[4096];
  snprintf(cmd, sizeof(cmd), "%s --port %u --tls --ca %s --token-file %s --json info",
           RMEM_CLI_PATH, (unsigned)S.t.a.port, S.ca, S.token_file);
  FILE *f = popen(cmd, "r");
  assert_non_null(f);
  size_t n = fread(out, 1, sizeof(out) - 1, f);
  out[n] = '\0';
  assert_int_equal(pclose(f), 0);
  assert_non_null(strstr(out, "\"tls\": true"));
  assert_non_null(strstr(out, "\"auth\": \"token\""));
  /* A wrong token: exit status 1, the agent's reason on stderr. */
  snprintf(cmd, sizeof(cmd), "%s --port %u --pin %s --token-file %s info 2>&1", RMEM_CLI_PATH,
           (unsigned)S.t.a.port, S.pin, S.bad_token_file);
  f = popen(cmd, "r");
  assert_non_null(f);
  n = fread(out, 1, sizeof(out) - 1, f);
  out[n] = '\0';
  int st = pclose(f);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
  assert_non_null(strstr(out, "RMEM_EPERM"));
  check_bystander();
}

/* Sends hello with `token` (NULL: none) on a raw socket. */
static int send_hello_token(int fd, uint32_t msgid, const char *token) {
  msg_hello_req req = {.version = CODEC_PROTOCOL_VERSION};
  if (token) {
    req.has_token = 1;
    req.token_len = strlen(token);
    memcpy(req.token, token, req.token_len);
  }
  codec_buf b;
  codec_buf_init(&b);
  msgpack_packer pk;
  codec_frame_begin(&b, &pk);
  msg_hello_req_pack(&pk, msgid, &req);
  int rc = codec_frame_end(&b, 0) == 0 ? h_raw_send_buf(fd, &b) : -1;
  codec_buf_free(&b);
  return rc;
}

/* Waits for one reply; returns its code (0 for success) or fails. */
static int recv_code(int fd, uint32_t msgid, char *msg, size_t n) {
  h_resp r;
  int rc = h_raw_recv(fd, 5000, &r);
  if (rc != 0)
    fail_msg("no reply to #%u: %d", (unsigned)msgid, rc);
  assert_true(r.has_msgid);
  assert_int_equal(r.msgid, msgid);
  int code = r.code;
  if (msg)
    snprintf(msg, n, "%s", r.message);
  h_resp_free(&r);
  return code;
}

/* Plaintext with a token: fine from loopback, refused from elsewhere, by
 * the agent and before that by librmem. */
static void test_token_plaintext(void **state) {
  rmem_connect_options o = opts(S.p.a.port);
  o.token = TOKEN;
  rmem_client *c;
  int rc = rmem_connect_opts(&c, &o);
  if (rc != 0)
    fail_msg("loopback token: %s: %s", rmem_err_name(rc), rmem_last_error(NULL));
  assert_int_equal(rmem_info(c)->tls, 0);
  assert_string_equal(rmem_info(c)->auth, "token");
  rmem_memmap map = {0};
  assert_int_equal(rmem_map(c, S.pid, 0, &map), 0);
  rmem_memmap_free(&map);
  rmem_close(c);

  if (S.ext_ip[0] == '\0') {
    fprintf(stderr, "test_tls: no non-loopback address; skipping that part\n");
    return;
  }
  o.host = S.ext_ip;
  expect_fail(rmem_connect_opts(&c, &o), RMEM_EPERM, "in the clear");

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(S.p.a.port)};
  inet_pton(AF_INET, S.ext_ip, &sa.sin_addr);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  char msg[256];
  assert_int_equal(send_hello_token(fd, 7, TOKEN), 0);
  assert_int_equal(recv_code(fd, 7, msg, sizeof(msg)), RMEM_EPERM);
  assert_non_null(strstr(msg, "in the clear"));
  /* Without a token: hello works, the rest needs authentication. */
  assert_int_equal(send_hello_token(fd, 8, NULL), 0);
  assert_int_equal(recv_code(fd, 8, NULL, 0), 0);
  assert_int_equal(h_send_map(fd, 9, S.pid), 0);
  assert_int_equal(recv_code(fd, 9, msg, sizeof(msg)), RMEM_EPERM);
  assert_non_null(strstr(msg, "authentication required"));
  close(fd);
}

/* A hello without the token is answered, but the connection must not keep
 * its slot: it is closed when the hello timeout passes unauthenticated. */
static void test_unauthenticated_closed(void **state) {
  agent g = {0};
  const char *args[] = {"--token-file", S.token_file, "--hello-timeout", "300", NULL};
  assert_int_equal(agent_start(&g, "u", args), 0);
  int fd = h_raw_connect(g.a.port);
  assert_true(fd >= 0);
  assert_int_equal(send_hello_token(fd, 1, NULL), 0);
  assert_int_equal(recv_code(fd, 1, NULL, 0), 0);
  assert_int_equal(h_raw_wait_closed(fd, 3000), 1);
  close(fd);
  /* An authenticated one stays past the timeout. */
  int ok = h_raw_connect(g.a.port);
  assert_int_equal(send_hello_token(ok, 2, TOKEN), 0);
  assert_int_equal(recv_code(ok, 2, NULL, 0), 0);
  assert_int_equal(h_raw_wait_closed(ok, 600), 0);
  close(ok);
  assert_int_equal(h_agent_stop(&g.a), 0);
}

/* Wrong tokens are answered later and later without stalling anyone else,
 * logged with the peer, and the 5th closes the connection. */
static void test_failures_slowed(void **state) {
  int a = h_raw_connect(S.p.a.port), b = h_raw_connect(S.p.a.port);
  assert_true(a >= 0 && b >= 0);
  /* A success clears this address's count. */
  assert_int_equal(send_hello_token(b, 1, TOKEN), 0);
  assert_int_equal(recv_code(b, 1, NULL, 0), 0);
  double dt[6] = {0};
  char msg[256];
  for (uint32_t i = 1; i <= 5; i++) {
    double t0 = h_now_ms();
    assert_int_equal(send_hello_token(a, i, "not-the-token"), 0);
    if (i == 4) {
      /* Meanwhile another connection is answered at once. */
      double t1 = h_now_ms();
      assert_int_equal(h_send_hello(b, 100, 1), 0);
      assert_int_equal(recv_code(b, 100, NULL, 0), 0);
      double quick = h_now_ms() - t1;
      if (quick > 150)
        fail_msg("another connection waited %.0f ms", quick);
    }
    assert_int_equal(recv_code(a, i, msg, sizeof(msg)), RMEM_EPERM);
    assert_string_equal(msg, "wrong token");
    dt[i] = h_now_ms() - t0;
  }
  /* Nominal: 50, 100, 200, 400, 800 ms. */
  if (dt[1] < 30 || dt[4] < 300 || dt[4] < dt[1] + 200)
    fail_msg("delays %.0f %.0f %.0f %.0f %.0f ms do not grow", dt[1], dt[2], dt[3], dt[4], dt[5]);
  assert_int_equal(h_raw_wait_closed(a, 2000), 1);
  close(a);
  close(b);
  assert_true(log_count(&S.p, "wrong token (failure 4 from 127.0.0.1") >= 1);
  assert_true(log_count(&S.p, "5 failed authentications: closing") >= 1);
  check_bystander();
}

static void test_agents_exit_clean(void **state) {
  check_bystander();
  rmem_close(S.by);
  S.by = NULL;
  assert_int_equal(agent_stop(&S.t), 0);
  assert_int_equal(agent_stop(&S.m), 0);
  assert_int_equal(agent_stop(&S.p), 0);
  assert_int_equal(agent_stop(&S.s), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tls_ca),           cmocka_unit_test(test_tls_lz4),
      cmocka_unit_test(test_tls_pin),          cmocka_unit_test(test_tls_untrusted),
      cmocka_unit_test(test_tls_to_plaintext), cmocka_unit_test(test_plaintext_to_tls),
      cmocka_unit_test(test_handshake_cut),    cmocka_unit_test(test_mtls),
      cmocka_unit_test(test_token_tls),        cmocka_unit_test(test_cli),
      cmocka_unit_test(test_token_plaintext),  cmocka_unit_test(test_unauthenticated_closed),
      cmocka_unit_test(test_failures_slowed),  cmocka_unit_test(test_agents_exit_clean),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
