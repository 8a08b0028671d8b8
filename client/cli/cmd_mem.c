/* rmem read and rmem write. */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Reads go to the agent in pieces of this size, so that any length fits in
 * memory and progress can be shown. A multiple of 16 keeps hexdump lines
 * continuous across pieces. */
#define READ_PIECE (32u << 20)
/* Reads longer than this show progress (to a file, on a terminal). */
#define PROGRESS_MIN (4u << 20)

/* Appends `src` to `dst`, joining a range that continues the last one. */
static int ranges_append(rmem_ranges *dst, const rmem_ranges *src) {
  for (size_t i = 0; i < src->n; i++) {
    const rmem_range *h = &src->v[i];
    if (dst->n > 0) {
      rmem_range *last = &dst->v[dst->n - 1];
      if (last->addr + last->len == h->addr && last->code == h->code) {
        last->len += h->len;
        continue;
      }
    }
    if (dst->n == dst->cap) {
      size_t cap = dst->cap ? 2 * dst->cap : 16;
      rmem_range *v = realloc(dst->v, cap * sizeof(*v));
      if (v == NULL)
        return -1;
      dst->v = v;
      dst->cap = cap;
    }
    dst->v[dst->n++] = *h;
  }
  return 0;
}

/* Where read bytes go: a hexdump, a raw file, or the JSON "data" string. */
typedef struct {
  const cli_opts *o;
  uint32_t pid;
  uint64_t addr, len;
  FILE *out; /* -o */
  int width; /* Hex digits of the hexdump's address column. */
  cli_json j;
  int started; /* Something went to stdout. */
  const rmem_ranges *holes;
} reader;

static void start_output(reader *r) {
  if (r->started)
    return;
  r->started = 1;
  if (!r->o->json)
    return;
  json_init(&r->j, stdout);
  json_obj_begin(&r->j);
  json_kv_u64(&r->j, "pid", r->pid);
  json_kv_addr(&r->j, "addr", r->addr);
  json_kv_u64(&r->j, "len", r->len);
  if (r->out == NULL) {
    json_key(&r->j, "data");
    fputc('"', json_raw(&r->j));
  }
}

/* Emits `n` bytes read at `a`. Returns 0, or -1 when the file write failed. */
static int emit(reader *r, uint64_t a, const unsigned char *p, size_t n) {
  start_output(r);
  if (r->out)
    return fwrite(p, 1, n, r->out) == n ? 0 : -1;
  if (r->o->json) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
      putchar(hex[p[i] >> 4]);
      putchar(hex[p[i] & 15]);
    }
    return 0;
  }
  cli_hexdump(stdout, a, p, n, r->holes, r->width);
  return 0;
}

/* Emits `n` unreadable (zero) bytes at `a`. */
static int emit_zero(reader *r, uint64_t a, uint64_t n) {
  static const unsigned char zero[64 << 10];
  while (n > 0) {
    size_t k = n < sizeof(zero) ? (size_t)n : sizeof(zero);
    if (emit(r, a, zero, k) != 0)
      return -1;
    a += k;
    n -= k;
  }
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void progress(uint64_t done, uint64_t len, double t0) {
  char a[16], b[16];
  double dt = now_s() - t0;
  fprintf(stderr, "\rrmem: read %s of %s (%d%%), %.2f GB/s ", cli_human(done, a, sizeof(a)),
          cli_human(len, b, sizeof(b)), (int)(100.0 * (double)done / (double)len),
          dt > 0 ? (double)done / dt / 1e9 : 0.0);
}

int cmd_read(const cli_opts *o) {
  uint32_t pid;
  uint64_t addr, len;
  if (cli_parse_pid(o->args[0], &pid) != 0)
    return cli_usage_error("read", "read: '%s' is not a process id", o->args[0]);
  if (cli_parse_u64(o->args[1], &addr) != 0)
    return cli_usage_error("read", "read: '%s' is not an address", o->args[1]);
  if (cli_parse_len(o->args[2], &len) != 0 || len == 0)
    return cli_usage_error("read", "read: '%s' is not a positive length", o->args[2]);
  if (addr + (len - 1) < addr)
    return cli_usage_error("read", "read: 0x%" PRIx64 "+%" PRIu64 " goes past the address space",
                           addr, len);
  if (len > SIZE_MAX / 2)
    return cli_usage_error("read", "read: length too large");
  if (o->json && o->out_file && strcmp(o->out_file, "-") == 0)
    return cli_usage_error("read", "read: --json and -o - would mix JSON and raw bytes");
  rmem_read_opts ropts = {.uncached = o->uncached};
  if (o->max_age && cli_parse_u64(o->max_age, &ropts.max_age_ms) != 0)
    return cli_usage_error("read", "read: --max-age: '%s' is not a number of milliseconds",
                           o->max_age);
  if (o->uncached && o->max_age)
    return cli_usage_error("read", "read: --uncached and --max-age contradict each other");

  reader r = {.o = o, .pid = pid, .addr = addr, .len = len, .width = 8};
  for (uint64_t end = addr + len - 1; r.width < 16 && (end >> (4 * r.width)) != 0;)
    r.width++;
  int to_stdout = o->out_file && strcmp(o->out_file, "-") == 0;
  if (o->out_file) {
    r.out = to_stdout ? stdout : fopen(o->out_file, "wb");
    if (r.out == NULL) {
      fprintf(stderr, "rmem: %s: %s\n", o->out_file, strerror(errno));
      return CLI_EXIT_AGENT;
    }
    if (to_stdout)
      r.started = 1;
  }
  rmem_ranges all = {0}, piece = {0};
  r.holes = &all;
  unsigned char *buf = NULL;
  int status = CLI_EXIT_OK;
  rmem_client *c = cli_connect(o, &status);
  if (c == NULL)
    goto exit;
  size_t psize = len < READ_PIECE ? (size_t)len : READ_PIECE;
  buf = malloc(psize);
  if (buf == NULL) {
    fprintf(stderr, "rmem: out of memory for a %zu-byte buffer\n", psize);
    status = CLI_EXIT_AGENT;
    goto exit;
  }
  int show = o->out_file && !to_stdout && len > PROGRESS_MIN && isatty(STDERR_FILENO);
  double t0 = now_s();
  uint64_t total = 0, deferred = 0; /* Unreadable bytes not emitted yet. */
  uint64_t cached = 0;
  char first_fault[512] = "";
  for (uint64_t off = 0; off < len; off += psize) {
    size_t n = len - off < psize ? (size_t)(len - off) : psize;
    uint64_t a = addr + off;
    piece.n = 0;
    rmem_read_info info = {0};
    ssize_t got = rmem_read_ex(c, pid, a, buf, n, &ropts, &piece, &info);
    cached += info.cached_bytes;
    if (got < 0 && got != RMEM_EFAULT) {
      if (show)
        fputs("\r\033[K", stderr);
      status =
          cli_fail(o, c, (int)got, r.started, "read %u 0x%" PRIx64 "+%" PRIu64, pid, addr, len);
      goto exit;
    }
    if (ranges_append(&all, &piece) != 0) {
      fputs("rmem: out of memory\n", stderr);
      status = CLI_EXIT_AGENT;
      goto exit;
    }
    if (got == RMEM_EFAULT) {
      if (first_fault[0] == '\0')
        snprintf(first_fault, sizeof(first_fault), "%s", rmem_last_error(c));
      /* Held back until something is readable, so that a read with nothing
       * readable prints only its error. */
      if (total == 0) {
        deferred += n;
        if (show)
          progress(off + n, len, t0);
        continue;
      }
    } else {
      total += (size_t)got;
    }
    int wrc = 0;
    if (deferred) {
      wrc = emit_zero(&r, addr, deferred);
      deferred = 0;
    }
    if (wrc == 0)
      wrc = emit(&r, a, buf, n);
    if (wrc != 0) {
      fprintf(stderr, "rmem: %s: %s\n", o->out_file, strerror(errno));
      status = CLI_EXIT_AGENT;
      goto exit;
    }
    if (show)
      progress(off + n, len, t0);
  }
  if (show)
    fputs("\r\033[K", stderr);
  if (total == 0) {
    /* Not one byte: the agent's message tells where and why. The output file
     * would hold nothing, so it goes. */
    if (r.out && !to_stdout) {
      fclose(r.out);
      r.out = NULL;
      unlink(o->out_file);
    }
    if (len > psize) {
      char detail[700];
      snprintf(detail, sizeof(detail), "nothing in the range is readable (first piece: %s)",
               first_fault);
      status = cli_fail_detail(o, RMEM_EFAULT, r.started, detail, "read %u 0x%" PRIx64 "+%" PRIu64,
                               pid, addr, len);
    } else {
      status =
          cli_fail(o, c, RMEM_EFAULT, r.started, "read %u 0x%" PRIx64 "+%" PRIu64, pid, addr, len);
    }
    goto exit;
  }
  if (o->json) {
    if (r.out == NULL)
      fputc('"', stdout);
    else
      json_kv_str(&r.j, "file", o->out_file);
    json_kv_u64(&r.j, "read", total);
    json_kv_u64(&r.j, "cached", cached);
    json_ranges(&r.j, "holes", &all);
    json_obj_end(&r.j);
    json_finish(&r.j);
  }
  if (all.n > 0) {
    char what[96];
    snprintf(what, sizeof(what), "read %u 0x%" PRIx64 "+%" PRIu64, pid, addr, len);
    cli_ranges_summary(what, &all);
    status = CLI_EXIT_PARTIAL;
  }

exit:
  if (r.out && !to_stdout && fclose(r.out) != 0 && status == CLI_EXIT_OK) {
    fprintf(stderr, "rmem: %s: %s\n", o->out_file, strerror(errno));
    status = CLI_EXIT_AGENT;
  }
  free(buf);
  rmem_ranges_free(&all);
  rmem_ranges_free(&piece);
  rmem_close(c);
  return status;
}

/* Reads a whole file. Returns 0 or -1 with errno set. */
static int read_file(const char *path, unsigned char **out, size_t *len) {
  FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
  if (f == NULL)
    return -1;
  size_t cap = 1 << 16, n = 0;
  unsigned char *p = malloc(cap);
  int rc = p ? 0 : -1;
  while (rc == 0) {
    if (n == cap) {
      unsigned char *q = realloc(p, cap * 2);
      if (q == NULL) {
        rc = -1;
        break;
      }
      p = q;
      cap *= 2;
    }
    size_t k = fread(p + n, 1, cap - n, f);
    n += k;
    if (k == 0) {
      if (ferror(f))
        rc = -1;
      break;
    }
  }
  int e = errno;
  if (f != stdin)
    fclose(f);
  if (rc != 0) {
    free(p);
    errno = e;
    return -1;
  }
  *out = p;
  *len = n;
  return 0;
}

int cmd_write(const cli_opts *o) {
  uint32_t pid;
  uint64_t addr;
  if (cli_parse_pid(o->args[0], &pid) != 0)
    return cli_usage_error("write", "write: '%s' is not a process id", o->args[0]);
  if (cli_parse_u64(o->args[1], &addr) != 0)
    return cli_usage_error("write", "write: '%s' is not an address", o->args[1]);
  unsigned char *data = NULL;
  size_t len = 0;
  if (o->in_file) {
    if (o->nargs > 2)
      return cli_usage_error("write", "write: give the bytes as HEX or with --file, not both");
    if (read_file(o->in_file, &data, &len) != 0) {
      fprintf(stderr, "rmem: %s: %s\n", o->in_file, strerror(errno));
      return CLI_EXIT_AGENT;
    }
  } else {
    if (o->nargs < 3)
      return cli_usage_error("write", "write: missing the bytes to write (HEX or --file FILE)");
    long n = cli_parse_hex("write", o->args + 2, o->nargs - 2, &data);
    if (n < 0)
      return CLI_EXIT_USAGE;
    len = (size_t)n;
  }
  int status = CLI_EXIT_OK;
  rmem_ranges failed = {0};
  rmem_client *c = NULL;
  if (len == 0) {
    status = cli_usage_error("write", "write: nothing to write");
    goto exit;
  }
  if (addr + (len - 1) < addr) {
    status = cli_usage_error("write", "write: the range goes past the address space");
    goto exit;
  }
  c = cli_connect(o, &status);
  if (c == NULL)
    goto exit;
  ssize_t n = rmem_write(c, pid, addr, data, len, &failed);
  if (n < 0) {
    status = cli_fail(o, c, (int)n, 0, "write %u 0x%" PRIx64 "+%zu", pid, addr, len);
    goto exit;
  }
  if (o->json) {
    cli_json j;
    json_init(&j, stdout);
    json_obj_begin(&j);
    json_kv_u64(&j, "pid", pid);
    json_kv_addr(&j, "addr", addr);
    json_kv_u64(&j, "len", len);
    json_kv_u64(&j, "written", (uint64_t)n);
    json_ranges(&j, "failed", &failed);
    json_obj_end(&j);
    json_finish(&j);
  } else {
    printf("wrote %zd of %zu bytes at 0x%" PRIx64 "\n", n, len, addr);
  }
  if (failed.n > 0) {
    char what[96];
    snprintf(what, sizeof(what), "write %u 0x%" PRIx64 "+%zu", pid, addr, len);
    cli_ranges_summary(what, &failed);
    status = CLI_EXIT_PARTIAL;
  }

exit:
  free(data);
  rmem_ranges_free(&failed);
  rmem_close(c);
  return status;
}
