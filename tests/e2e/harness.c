#include "harness.h"

#include "rmem_error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

double h_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Waits for `pid` to exit, `timeout_ms` at most; then SIGKILLs it. Returns
 * the exit status, 128 + signal, or -1. */
static int reap(pid_t pid, int timeout_ms, const char *what) {
  double end = h_now_ms() + timeout_ms;
  int status;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
      break;
    if (r < 0 && errno != EINTR) {
      fprintf(stderr, "harness: waitpid %s: %s\n", what, strerror(errno));
      return -1;
    }
    if (h_now_ms() > end) {
      fprintf(stderr, "harness: %s (pid %d) did not exit in %d ms; killing it\n", what, (int)pid,
              timeout_ms);
      kill(pid, SIGKILL);
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      return -1;
    }
    sleep_ms(5);
  }
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return 128 + WTERMSIG(status);
  return -1;
}

/* Reads the port file; returns the port once it is complete, else 0. */
static uint16_t read_port(const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return 0;
  char buf[32];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = 0;
  char *end;
  unsigned long v = strtoul(buf, &end, 10);
  /* A port without its newline may still be being written. */
  if (end == buf || v == 0 || v > 65535 || (*end != '\n' && *end != 0))
    return 0;
  return (uint16_t)v;
}

int h_agent_start(h_agent *a, const char *const *prefix) {
  return h_agent_start_args(a, prefix, NULL);
}

int h_agent_start_args(h_agent *a, const char *const *prefix, const char *const *extra) {
  memset(a, 0, sizeof(*a));
  signal(SIGPIPE, SIG_IGN);
  snprintf(a->dir, sizeof(a->dir), "/tmp/rmem-e2e-XXXXXX");
  if (mkdtemp(a->dir) == NULL) {
    perror("harness: mkdtemp");
    return -1;
  }
  /* An agent running as another user must be able to write the port file. */
  chmod(a->dir, 0777);
  snprintf(a->portfile, sizeof(a->portfile), "%s/port", a->dir);

  const char *argv[32];
  size_t k = 0;
  for (size_t i = 0; prefix && prefix[i] && k < 20; i++)
    argv[k++] = prefix[i];
  argv[k++] = RMEMD_PATH;
  argv[k++] = "--listen";
  argv[k++] = "127.0.0.1";
  argv[k++] = "--port";
  argv[k++] = "0";
  argv[k++] = "--port-file";
  argv[k++] = a->portfile;
  argv[k++] = "--log-level";
  argv[k++] = "warn";
  for (size_t i = 0; extra && extra[i] && k < 31; i++)
    argv[k++] = extra[i];
  argv[k] = NULL;

  pid_t pid = fork();
  if (pid < 0) {
    perror("harness: fork");
    return -1;
  }
  if (pid == 0) {
    /* Do not outlive a test that crashed or timed out. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
      dup2(devnull, 0);
    execvp(argv[0], (char *const *)argv);
    fprintf(stderr, "harness: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  a->pid = pid;
  double end = h_now_ms() + 10000;
  while (h_now_ms() < end) {
    a->port = read_port(a->portfile);
    if (a->port)
      return 0;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      fprintf(stderr, "harness: rmemd exited early (status 0x%x)\n", status);
      a->pid = 0;
      return -1;
    }
    sleep_ms(10);
  }
  fprintf(stderr, "harness: rmemd did not write %s within 10 s\n", a->portfile);
  h_agent_stop(a);
  return -1;
}

int h_agent_stop(h_agent *a) {
  int rc = -1;
  if (a->pid > 0) {
    kill(a->pid, SIGTERM);
    rc = reap(a->pid, 10000, "rmemd");
    a->pid = 0;
  }
  if (a->portfile[0])
    unlink(a->portfile);
  if (a->dir[0])
    rmdir(a->dir);
  a->portfile[0] = a->dir[0] = 0;
  return rc;
}

/* Reads one line from the fixture into `line` (without the newline), waiting
 * `timeout_ms` at most. Returns 0, H_CLOSED or H_TIMEOUT. */
static int fixture_line(h_fixture *f, char *line, size_t n, int timeout_ms) {
  double end = h_now_ms() + timeout_ms;
  for (;;) {
    char *nl = memchr(f->buf, '\n', f->buflen);
    if (nl) {
      size_t len = (size_t)(nl - f->buf);
      size_t copy = len < n - 1 ? len : n - 1;
      memcpy(line, f->buf, copy);
      line[copy] = 0;
      f->buflen -= len + 1;
      memmove(f->buf, nl + 1, f->buflen);
      return 0;
    }
    if (f->buflen == sizeof(f->buf)) {
      /* A line longer than the buffer: hand out what we have. */
      size_t copy = f->buflen < n - 1 ? f->buflen : n - 1;
      memcpy(line, f->buf, copy);
      line[copy] = 0;
      f->buflen -= copy;
      memmove(f->buf, f->buf + copy, f->buflen);
      return 0;
    }
    int left = (int)(end - h_now_ms());
    if (left <= 0)
      return H_TIMEOUT;
    struct pollfd p = {f->out_fd, POLLIN, 0};
    int r = poll(&p, 1, left);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return H_TIMEOUT;
    ssize_t got = read(f->out_fd, f->buf + f->buflen, sizeof(f->buf) - f->buflen);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return H_CLOSED;
    f->buflen += (size_t)got;
  }
}

int h_fixture_start(h_fixture *f, const char *path, const char *const *args) {
  memset(f, 0, sizeof(*f));
  f->in_fd = f->out_fd = -1;
  signal(SIGPIPE, SIG_IGN);
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) != 0)
    return -1;
  if (pipe2(out, O_CLOEXEC) != 0) {
    close(in[0]);
    close(in[1]);
    return -1;
  }
  const char *argv[16];
  size_t k = 0;
  argv[k++] = path;
  for (size_t i = 0; args && args[i] && k < 15; i++)
    argv[k++] = args[i];
  argv[k] = NULL;
  pid_t pid = fork();
  if (pid < 0) {
    perror("harness: fork");
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
    return -1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(in[0], 0);
    dup2(out[1], 1);
    execv(path, (char *const *)argv);
    fprintf(stderr, "harness: exec %s: %s\n", path, strerror(errno));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  f->pid = pid;
  f->in_fd = in[1];
  f->out_fd = out[0];
  char line[256];
  for (;;) {
    int rc = fixture_line(f, line, sizeof(line), 30000);
    if (rc != 0) {
      fprintf(stderr, "harness: %s did not become ready (%s)\n", path,
              rc == H_CLOSED ? "it exited" : "timeout");
      h_fixture_kill(f);
      return -1;
    }
    if (strcmp(line, "ready") == 0)
      return 0;
    char *eq = strchr(line, '=');
    if (eq == NULL || f->nkv == sizeof(f->keys) / sizeof(f->keys[0]))
      continue;
    *eq = 0;
    snprintf(f->keys[f->nkv], sizeof(f->keys[0]), "%.31s", line);
    snprintf(f->vals[f->nkv], sizeof(f->vals[0]), "%.79s", eq + 1);
    f->nkv++;
  }
}

const char *h_fixture_get(const h_fixture *f, const char *key) {
  for (size_t i = 0; i < f->nkv; i++)
    if (strcmp(f->keys[i], key) == 0)
      return f->vals[i];
  return NULL;
}

uint64_t h_fixture_u64(const h_fixture *f, const char *key) {
  const char *v = h_fixture_get(f, key);
  if (v == NULL) {
    fprintf(stderr, "harness: fixture printed no '%s'\n", key);
    abort();
  }
  return strtoull(v, NULL, 0);
}

int h_fixture_cmd(h_fixture *f, const char *cmd, char *reply, size_t n) {
  if (f->in_fd < 0)
    return -1;
  size_t len = strlen(cmd);
  char *line = malloc(len + 2);
  if (line == NULL)
    return -1;
  memcpy(line, cmd, len);
  line[len] = '\n';
  int rc = h_raw_send(f->in_fd, line, len + 1) == 0 ? 0 : -1;
  free(line);
  if (rc != 0)
    return -1;
  return fixture_line(f, reply, n, 10000) == 0 ? 0 : -1;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c |= 0x20;
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Dumps at most this many bytes per command, so a reply line fits f->buf. */
#define DUMP_CHUNK 1024

static int dump_chunk(h_fixture *f, uint64_t addr, size_t len, unsigned char *out) {
  char cmd[64];
  snprintf(cmd, sizeof(cmd), "dump 0x%" PRIx64 " %zu", addr, len);
  char reply[2 * DUMP_CHUNK + 16];
  if (h_fixture_cmd(f, cmd, reply, sizeof(reply)) != 0 || strncmp(reply, "hex=", 4) != 0 ||
      strlen(reply) != 4 + 2 * len) {
    fprintf(stderr, "harness: bad dump reply: %.80s\n", reply);
    return -1;
  }
  for (size_t i = 0; i < len; i++) {
    int hi = hexval(reply[4 + 2 * i]), lo = hexval(reply[5 + 2 * i]);
    if (hi < 0 || lo < 0)
      return -1;
    out[i] = (unsigned char)(hi << 4 | lo);
  }
  return 0;
}

int h_fixture_dump(h_fixture *f, uint64_t addr, size_t len, void *out) {
  unsigned char *o = out;
  for (size_t off = 0; off < len; off += DUMP_CHUNK) {
    size_t n = len - off < DUMP_CHUNK ? len - off : DUMP_CHUNK;
    if (dump_chunk(f, addr + off, n, o + off) != 0)
      return -1;
  }
  return 0;
}

int h_fixture_stop(h_fixture *f) {
  int rc = -1;
  if (f->in_fd >= 0) {
    h_raw_send(f->in_fd, "exit\n", 5);
    close(f->in_fd);
    f->in_fd = -1;
  }
  if (f->out_fd >= 0) {
    close(f->out_fd);
    f->out_fd = -1;
  }
  if (f->pid > 0) {
    rc = reap(f->pid, 5000, "fixture");
    f->pid = 0;
  }
  return rc;
}

void h_fixture_kill(h_fixture *f) {
  if (f->pid > 0)
    kill(f->pid, SIGKILL);
  h_fixture_stop(f);
}

/* Raw sockets. */

int h_raw_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    perror("harness: connect");
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

int h_raw_send(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK)
      w = write(fd, c, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return H_CLOSED;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

int h_raw_send_frame(int fd, const void *payload, size_t n) {
  unsigned char hdr[CODEC_FRAME_HDR];
  codec_frame_put_len(hdr, (uint32_t)n);
  int rc = h_raw_send(fd, hdr, sizeof(hdr));
  if (rc == 0 && n > 0)
    rc = h_raw_send(fd, payload, n);
  return rc;
}

int h_raw_send_buf(int fd, const codec_buf *b) {
  if (b->oom)
    return -1;
  return h_raw_send(fd, b->data, b->len);
}

/* Receives exactly n bytes by the deadline. */
static int recv_all(int fd, void *p, size_t n, double deadline) {
  char *c = p;
  while (n > 0) {
    int left = (int)(deadline - h_now_ms());
    if (left <= 0)
      return H_TIMEOUT;
    struct pollfd pf = {fd, POLLIN, 0};
    int r = poll(&pf, 1, left);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return H_TIMEOUT;
    ssize_t got = recv(fd, c, n, 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return H_CLOSED;
    c += got;
    n -= (size_t)got;
  }
  return 0;
}

void h_resp_free(h_resp *r) {
  if (r->payload) {
    msgpack_unpacked_destroy(&r->up);
    free(r->payload);
  }
  memset(r, 0, sizeof(*r));
}

int h_raw_recv(int fd, int timeout_ms, h_resp *r) {
  memset(r, 0, sizeof(*r));
  double deadline = h_now_ms() + timeout_ms;
  unsigned char hdr[CODEC_FRAME_HDR];
  int rc = recv_all(fd, hdr, sizeof(hdr), deadline);
  if (rc != 0)
    return rc;
  uint32_t n = codec_frame_len(hdr);
  if (n == 0 || n > 64u << 20) {
    fprintf(stderr, "harness: reply frame of %u bytes\n", n);
    return H_BADREPLY;
  }
  r->payload = malloc(n);
  if (r->payload == NULL)
    return H_BADREPLY;
  r->len = n;
  msgpack_unpacked_init(&r->up);
  rc = recv_all(fd, r->payload, n, deadline);
  if (rc != 0) {
    h_resp_free(r);
    return rc;
  }
  codec_msg m;
  char why[128];
  if (codec_msg_decode(r->payload, n, 1u << 24, &r->up, &m, why, sizeof(why)) != 0) {
    fprintf(stderr, "harness: undecodable reply: %s\n", why);
    h_resp_free(r);
    return H_BADREPLY;
  }
  r->type = m.type;
  r->has_msgid = m.has_msgid;
  r->msgid = m.msgid;
  r->result = m.result;
  if (m.error) {
    const msgpack_object *code = codec_map_get(m.error, "code");
    const msgpack_object *name = codec_map_get(m.error, "name");
    const msgpack_object *msg = codec_map_get(m.error, "message");
    if (code == NULL || (code->type != MSGPACK_OBJECT_NEGATIVE_INTEGER &&
                         code->type != MSGPACK_OBJECT_POSITIVE_INTEGER)) {
      fprintf(stderr, "harness: error map without an integer code\n");
      h_resp_free(r);
      return H_BADREPLY;
    }
    r->code = (int)code->via.i64;
    if (r->code == 0)
      r->code = RMEM_EINTERNAL; /* An error must not carry code 0. */
    if (name && name->type == MSGPACK_OBJECT_STR)
      snprintf(r->name, sizeof(r->name), "%.*s", (int)name->via.str.size, name->via.str.ptr);
    if (msg && msg->type == MSGPACK_OBJECT_STR)
      snprintf(r->message, sizeof(r->message), "%.*s", (int)msg->via.str.size, msg->via.str.ptr);
  }
  return 0;
}

int h_raw_wait_closed(int fd, int timeout_ms) {
  double deadline = h_now_ms() + timeout_ms;
  char buf[4096];
  for (;;) {
    int left = (int)(deadline - h_now_ms());
    if (left <= 0)
      return 0;
    struct pollfd pf = {fd, POLLIN, 0};
    int r = poll(&pf, 1, left);
    if (r < 0 && errno == EINTR)
      continue;
    if (r == 0)
      return 0;
    ssize_t got = recv(fd, buf, sizeof(buf), 0);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return 1;
  }
}

/* Builds one request frame and sends it. `fill` packs the params map's
 * `nparams` pairs. */
typedef void (*pack_fn)(msgpack_packer *pk, const void *arg);

static int send_request(int fd, uint32_t msgid, const char *method, uint32_t nparams, pack_fn fill,
                        const void *arg) {
  codec_buf b;
  codec_buf_init(&b);
  msgpack_packer pk;
  codec_frame_begin(&b, &pk);
  codec_pack_request_head(&pk, msgid, method, nparams);
  if (fill)
    fill(&pk, arg);
  int rc = codec_frame_end(&b, 0);
  if (rc == 0)
    rc = h_raw_send_buf(fd, &b);
  codec_buf_free(&b);
  return rc;
}

static void pack_hello(msgpack_packer *pk, const void *arg) {
  codec_pack_str(pk, "version");
  msgpack_pack_uint64(pk, *(const uint64_t *)arg);
  codec_pack_str(pk, "client");
  codec_pack_str(pk, "rmem-e2e-harness");
}

int h_send_hello(int fd, uint32_t msgid, uint64_t version) {
  return send_request(fd, msgid, "hello", 2, pack_hello, &version);
}

int h_raw_hello(int fd, uint32_t msgid) {
  if (h_send_hello(fd, msgid, CODEC_PROTOCOL_VERSION) != 0)
    return -1;
  h_resp r;
  int rc = h_raw_recv(fd, 10000, &r);
  if (rc != 0) {
    fprintf(stderr, "harness: no hello reply (%d)\n", rc);
    return -1;
  }
  rc = r.type == CODEC_RESPONSE && r.has_msgid && r.msgid == msgid && r.code == 0 && r.result ? 0
                                                                                              : -1;
  if (rc != 0)
    fprintf(stderr, "harness: bad hello reply: code %d %s\n", r.code, r.message);
  h_resp_free(&r);
  return rc;
}

typedef struct {
  uint64_t pid, addr, len;
  const void *data;
} rw_args;

static void pack_read(msgpack_packer *pk, const void *arg) {
  const rw_args *a = arg;
  codec_pack_str(pk, "pid");
  msgpack_pack_uint64(pk, a->pid);
  codec_pack_str(pk, "addr");
  msgpack_pack_uint64(pk, a->addr);
  codec_pack_str(pk, "len");
  msgpack_pack_uint64(pk, a->len);
}

int h_send_read(int fd, uint32_t msgid, uint64_t pid, uint64_t addr, uint64_t len) {
  rw_args a = {pid, addr, len, NULL};
  return send_request(fd, msgid, "read", 3, pack_read, &a);
}

static void pack_write(msgpack_packer *pk, const void *arg) {
  const rw_args *a = arg;
  codec_pack_str(pk, "pid");
  msgpack_pack_uint64(pk, a->pid);
  codec_pack_str(pk, "addr");
  msgpack_pack_uint64(pk, a->addr);
  codec_pack_str(pk, "data");
  msgpack_pack_bin(pk, a->len);
  msgpack_pack_bin_body(pk, a->data, a->len);
}

int h_send_write(int fd, uint32_t msgid, uint64_t pid, uint64_t addr, const void *data,
                 size_t len) {
  rw_args a = {pid, addr, len, data};
  return send_request(fd, msgid, "write", 3, pack_write, &a);
}

static void pack_map(msgpack_packer *pk, const void *arg) {
  codec_pack_str(pk, "pid");
  msgpack_pack_uint64(pk, *(const uint64_t *)arg);
}

int h_send_map(int fd, uint32_t msgid, uint64_t pid) {
  return send_request(fd, msgid, "map", 1, pack_map, &pid);
}

/* /proc/PID/maps as the oracle. */

static int parse_mapline(const char *line, h_mapline *m) {
  memset(m, 0, sizeof(*m));
  char perms[8];
  unsigned long long start, end, offset, inode;
  unsigned maj, min;
  int pos = 0;
  if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu%n", &start, &end, perms, &offset, &maj, &min,
             &inode, &pos) != 7)
    return -1;
  m->start = start;
  m->end = end;
  m->offset = offset;
  m->inode = inode;
  m->dev_major = maj;
  m->dev_minor = min;
  m->prot = (perms[0] == 'r' ? 1u : 0u) | (perms[1] == 'w' ? 2u : 0u) | (perms[2] == 'x' ? 4u : 0u);
  m->shared = perms[3] == 's';
  const char *p = line + pos;
  while (*p == ' ')
    p++;
  snprintf(m->path, sizeof(m->path), "%s", p);
  size_t n = strlen(m->path);
  while (n > 0 && m->path[n - 1] == '\n')
    m->path[--n] = 0;
  static const char del[] = " (deleted)";
  if (n >= sizeof(del) - 1 && strcmp(m->path + n - (sizeof(del) - 1), del) == 0) {
    m->deleted = 1;
    m->path[n - (sizeof(del) - 1)] = 0;
  }
  return 0;
}

long h_maps_read(pid_t pid, h_mapline **out) {
  *out = NULL;
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  size_t n = 0, cap = 0;
  h_mapline *v = NULL;
  char line[4096 + 512];
  while (fgets(line, sizeof(line), f)) {
    if (n == cap) {
      cap = cap ? 2 * cap : 256;
      h_mapline *nv = realloc(v, cap * sizeof(*v));
      if (nv == NULL) {
        free(v);
        fclose(f);
        return -1;
      }
      v = nv;
    }
    if (parse_mapline(line, &v[n]) == 0)
      n++;
  }
  fclose(f);
  *out = v;
  return (long)n;
}

long h_maps_find(const h_mapline *m, long n, uint64_t addr) {
  for (long i = 0; i < n; i++)
    if (addr >= m[i].start && addr < m[i].end)
      return i;
  return -1;
}

long long h_smaps_field(pid_t pid, uint64_t start, const char *field, char *vmflags, size_t vflen) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  char line[4096 + 512];
  int in = 0;
  long long val = -1;
  size_t flen = strlen(field);
  while (fgets(line, sizeof(line), f)) {
    /* Region headers start "start-end perms"; field lines start "Name:". */
    size_t tok = strcspn(line, " ");
    if (memchr(line, ':', tok) == NULL) {
      unsigned long long s, e;
      if (sscanf(line, "%llx-%llx", &s, &e) != 2)
        continue;
      if (in)
        break;
      in = s == start;
      continue;
    }
    if (!in)
      continue;
    if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
      unsigned long long kb;
      if (sscanf(line + flen + 1, "%llu", &kb) == 1)
        val = (long long)kb * 1024;
    } else if (vmflags && strncmp(line, "VmFlags:", 8) == 0) {
      const char *p = line + 8;
      while (*p == ' ')
        p++;
      snprintf(vmflags, vflen, "%s", p);
      size_t n = strlen(vmflags);
      while (n > 0 && (vmflags[n - 1] == '\n' || vmflags[n - 1] == ' '))
        vmflags[--n] = 0;
    }
  }
  fclose(f);
  return val;
}

int h_group_teardown(rmem_client **c, h_fixture *fx, h_agent *agent, int *agent_up) {
  rmem_close(*c);
  *c = NULL;
  h_fixture_stop(fx);
  if (!*agent_up)
    return 0;
  *agent_up = 0;
  int st = h_agent_stop(agent);
  if (st != 0) {
    fprintf(stderr, "rmemd exited with status %d\n", st);
    return -1;
  }
  return 0;
}
