/* rmem readv, deref, string and fill: requests that save round trips (or
 * bytes) on slow links. */
#include "cli.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* Hex digits of the hexdump address column for [addr, addr + len). */
static int addr_width(uint64_t addr, uint64_t len) {
  int width = 8;
  for (uint64_t end = addr + (len ? len - 1 : 0); width < 16 && (end >> (4 * width)) != 0;)
    width++;
  return width;
}

static void json_hex(cli_json *j, const char *key, const unsigned char *p, size_t n) {
  static const char hex[] = "0123456789abcdef";
  json_key(j, key);
  FILE *f = json_raw(j);
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    fputc(hex[p[i] >> 4], f);
    fputc(hex[p[i] & 15], f);
  }
  fputc('"', f);
}

/* readv */

/* Parses "ADDR:LEN". */
static int parse_range(const char *s, uint64_t *addr, uint64_t *len) {
  const char *colon = strchr(s, ':');
  char buf[64];
  if (colon == NULL || (size_t)(colon - s) >= sizeof(buf))
    return -1;
  memcpy(buf, s, (size_t)(colon - s));
  buf[colon - s] = '\0';
  if (cli_parse_u64(buf, addr) != 0 || cli_parse_len(colon + 1, len) != 0)
    return -1;
  return 0;
}

/* The holes of `all` that lie inside [addr, addr + len), as a view. */
static rmem_ranges holes_in(const rmem_ranges *all, size_t *from, uint64_t addr, uint64_t len) {
  rmem_ranges v = {0};
  size_t i = *from;
  /* rmem_readv lists holes in iov order, each inside its own range. */
  v.v = all->v ? all->v + i : NULL;
  while (i < all->n && all->v[i].addr >= addr && all->v[i].addr - addr < len)
    i++;
  v.n = i - *from;
  *from = i;
  return v;
}

int cmd_readv(const cli_opts *o) {
  uint32_t pid;
  if (cli_parse_pid(o->args[0], &pid) != 0)
    return cli_usage_error("readv", "readv: '%s' is not a process id", o->args[0]);
  size_t n = (size_t)o->nargs - 1;
  rmem_iov *iov = calloc(n, sizeof(*iov));
  if (iov == NULL) {
    fputs("rmem: out of memory\n", stderr);
    return CLI_EXIT_AGENT;
  }
  int status = CLI_EXIT_OK;
  rmem_client *c = NULL;
  rmem_ranges holes = {0};
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t addr, len;
    const char *arg = o->args[i + 1];
    if (parse_range(arg, &addr, &len) != 0 || len == 0) {
      status = cli_usage_error("readv", "readv: '%s' is not ADDR:LEN with a positive LEN", arg);
      goto exit;
    }
    if (addr + (len - 1) < addr) {
      status = cli_usage_error("readv", "readv: '%s' goes past the address space", arg);
      goto exit;
    }
    if (len > SIZE_MAX / 4 - total) {
      status = cli_usage_error("readv", "readv: the ranges are too long in all");
      goto exit;
    }
    total += len;
    iov[i].addr = addr;
    iov[i].len = (size_t)len;
  }
  for (size_t i = 0; i < n; i++) {
    iov[i].buf = malloc(iov[i].len);
    if (iov[i].buf == NULL) {
      fprintf(stderr, "rmem: out of memory for %zu bytes\n", iov[i].len);
      status = CLI_EXIT_AGENT;
      goto exit;
    }
  }
  c = cli_connect(o, &status);
  if (c == NULL)
    goto exit;
  ssize_t got = rmem_readv(c, pid, iov, n, &holes);
  if (got < 0) {
    status = cli_fail(o, c, (int)got, 0, "readv %u (%zu ranges)", pid, n);
    goto exit;
  }
  cli_json j;
  if (o->json) {
    json_init(&j, stdout);
    json_obj_begin(&j);
    json_kv_u64(&j, "pid", pid);
    json_key(&j, "ranges");
    json_arr_begin(&j);
  }
  size_t from = 0;
  for (size_t i = 0; i < n; i++) {
    rmem_ranges h = holes_in(&holes, &from, iov[i].addr, iov[i].len);
    uint64_t bad = 0;
    for (size_t k = 0; k < h.n; k++)
      bad += h.v[k].len;
    if (o->json) {
      json_obj_begin(&j);
      json_kv_addr(&j, "addr", iov[i].addr);
      json_kv_u64(&j, "len", iov[i].len);
      json_kv_u64(&j, "read", iov[i].len - bad);
      json_hex(&j, "data", iov[i].buf, iov[i].len);
      json_ranges(&j, "holes", &h);
      json_obj_end(&j);
    } else {
      printf("0x%" PRIx64 "+%zu:\n", iov[i].addr, iov[i].len);
      cli_hexdump(stdout, iov[i].addr, iov[i].buf, iov[i].len, &h,
                  addr_width(iov[i].addr, iov[i].len));
    }
  }
  if (o->json) {
    json_arr_end(&j);
    json_obj_end(&j);
    json_finish(&j);
  }
  if (holes.n > 0) {
    char what[64];
    snprintf(what, sizeof(what), "readv %u", pid);
    cli_ranges_summary(what, &holes);
    status = CLI_EXIT_PARTIAL;
  }

exit:
  for (size_t i = 0; i < n; i++)
    free(iov[i].buf);
  free(iov);
  rmem_ranges_free(&holes);
  rmem_close(c);
  return status;
}

/* deref */

/* Parses a signed offset: decimal or 0x hex, with an optional + or -. */
static int parse_offset(const char *s, int64_t *out) {
  int neg = *s == '-';
  if (*s == '-' || *s == '+')
    s++;
  uint64_t v;
  if (cli_parse_u64(s, &v) != 0)
    return -1;
  if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
    return -1;
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return 0;
}

static const char *reason(int code) {
  return code == RMEM_EPROT ? "no access" : code == RMEM_EIO ? "I/O error" : "not mapped";
}

int cmd_deref(const cli_opts *o) {
  uint32_t pid;
  uint64_t addr, len = 16;
  if (cli_parse_pid(o->args[0], &pid) != 0)
    return cli_usage_error("deref", "deref: '%s' is not a process id", o->args[0]);
  if (cli_parse_u64(o->args[1], &addr) != 0)
    return cli_usage_error("deref", "deref: '%s' is not an address", o->args[1]);
  if (o->deref_len && (cli_parse_len(o->deref_len, &len) != 0 || len > SIZE_MAX / 2))
    return cli_usage_error("deref", "deref: --len '%s' is not a length", o->deref_len);
  size_t n = (size_t)o->nargs - 2;
  int64_t *offsets = calloc(n, sizeof(*offsets));
  unsigned char *buf = malloc(len ? (size_t)len : 1);
  rmem_deref_result r = {0};
  rmem_client *c = NULL;
  int status = CLI_EXIT_OK;
  if (offsets == NULL || buf == NULL) {
    fputs("rmem: out of memory\n", stderr);
    status = CLI_EXIT_AGENT;
    goto exit;
  }
  for (size_t i = 0; i < n; i++) {
    if (parse_offset(o->args[i + 2], &offsets[i]) != 0) {
      status = cli_usage_error("deref", "deref: '%s' is not an offset", o->args[i + 2]);
      goto exit;
    }
  }
  c = cli_connect(o, &status);
  if (c == NULL)
    goto exit;
  int rc = rmem_deref(c, pid, addr, offsets, n, buf, (size_t)len, &r);
  if (rc != 0 && !r.broken) {
    status = cli_fail(o, c, rc, 0, "deref %u 0x%" PRIx64, pid, addr);
    goto exit;
  }
  /* The agent does the arithmetic at the target's width; this side sees
   * only the values, and 32-bit targets have none above 4 GiB. */
  int wide = addr > UINT32_MAX || r.addr > UINT32_MAX;
  for (size_t i = 0; i < r.npointers; i++)
    wide |= r.pointers[i] > UINT32_MAX;
  uint64_t mask = wide ? UINT64_MAX : UINT32_MAX;
  cli_json j;
  if (o->json) {
    json_init(&j, stdout);
    json_obj_begin(&j);
    json_kv_u64(&j, "pid", pid);
    json_kv_addr(&j, "addr", addr);
    json_key(&j, "offsets");
    json_arr_begin_flat(&j);
    for (size_t i = 0; i < n; i++)
      json_i64(&j, offsets[i]);
    json_arr_end(&j);
    json_key(&j, "steps");
    json_arr_begin(&j);
  }
  uint64_t p = addr;
  for (size_t i = 0; i < r.npointers; i++) {
    if (o->json) {
      json_obj_begin(&j);
      json_kv_addr(&j, "addr", p);
      json_kv_addr(&j, "pointer", r.pointers[i]);
      json_obj_end(&j);
    } else {
      printf("[%zu] 0x%" PRIx64 " -> 0x%" PRIx64 "\n", i, p, r.pointers[i]);
    }
    p = (r.pointers[i] + (uint64_t)offsets[i]) & mask;
  }
  if (o->json)
    json_arr_end(&j);
  if (r.broken) {
    if (o->json) {
      json_key(&j, "broken");
      json_obj_begin(&j);
      json_kv_u64(&j, "step", r.step);
      json_kv_addr(&j, "addr", r.addr);
      json_kv_i64(&j, "code", r.code);
      json_kv_str(&j, "name", rmem_err_name(r.code));
      json_obj_end(&j);
      json_obj_end(&j);
      json_finish(&j);
    } else if (r.step < n) {
      printf("[%zu] 0x%" PRIx64 " -> ?? (%s)\n", r.step, r.addr, reason(r.code));
    } else {
      printf("final 0x%" PRIx64 ": ?? (%s)\n", r.addr, reason(r.code));
    }
    status = cli_fail(o, c, RMEM_EFAULT, 1, "deref %u 0x%" PRIx64, pid, addr);
    goto exit;
  }
  if (o->json) {
    json_kv_addr(&j, "final", r.addr);
    json_kv_u64(&j, "len", len);
    json_hex(&j, "data", buf, (size_t)len);
    json_ranges(&j, "holes", &r.holes);
    json_obj_end(&j);
    json_finish(&j);
  } else {
    printf("final 0x%" PRIx64 "\n", r.addr);
    if (len > 0)
      cli_hexdump(stdout, r.addr, buf, (size_t)len, &r.holes, addr_width(r.addr, len));
  }
  if (r.holes.n > 0) {
    char what[96];
    snprintf(what, sizeof(what), "deref %u 0x%" PRIx64 " final 0x%" PRIx64 "+%" PRIu64, pid, addr,
             r.addr, len);
    cli_ranges_summary(what, &r.holes);
    status = CLI_EXIT_PARTIAL;
  }

exit:
  free(offsets);
  free(buf);
  rmem_deref_result_free(&r);
  rmem_close(c);
  return status;
}

/* string */

/* Length of the valid UTF-8 sequence at p[0..n), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n) {
  size_t len;
  uint32_t c;
  if (p[0] < 0x80)
    return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf) {
    len = 2;
    c = p[0] & 0x1f;
  } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
    len = 3;
    c = p[0] & 0x0f;
  } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    len = 4;
    c = p[0] & 0x07;
  } else {
    return 0;
  }
  if (len > n)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    c = c << 6 | (p[i] & 0x3f);
  }
  /* No overlong forms, surrogates or code points past U+10FFFF. */
  if ((len == 3 && c < 0x800) || (len == 4 && (c < 0x10000 || c > 0x10ffff)) ||
      (c >= 0xd800 && c <= 0xdfff))
    return 0;
  return len;
}

/* Prints text on one line: valid UTF-8 as it is, control bytes and invalid
 * bytes escaped, so that target bytes cannot drive the terminal. */
static void put_escaped(FILE *f, const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0; i < n;) {
    unsigned char ch = p[i];
    if (ch == '\\') {
      fputs("\\\\", f);
    } else if (ch == '\n') {
      fputs("\\n", f);
    } else if (ch == '\t') {
      fputs("\\t", f);
    } else if (ch == '\r') {
      fputs("\\r", f);
    } else if (ch < 0x20 || ch == 0x7f) {
      fprintf(f, "\\x%02x", ch);
    } else if (ch >= 0x80) {
      size_t k = utf8_seq(p + i, n - i);
      /* C1 controls (U+0080..U+009F) are escaped too. */
      if (k == 0 || (k == 2 && ch == 0xc2 && p[i + 1] < 0xa0)) {
        fprintf(f, "\\x%02x", ch);
      } else {
        fwrite(p + i, 1, k, f);
        i += k;
        continue;
      }
    } else {
      fputc(ch, f);
    }
    i++;
  }
}

int cmd_string(const cli_opts *o) {
  uint32_t pid;
  uint64_t addr, max = 0;
  if (cli_parse_pid(o->args[0], &pid) != 0)
    return cli_usage_error("string", "string: '%s' is not a process id", o->args[0]);
  if (cli_parse_u64(o->args[1], &addr) != 0)
    return cli_usage_error("string", "string: '%s' is not an address", o->args[1]);
  if (o->str_max && (cli_parse_len(o->str_max, &max) != 0 || max == 0 || max > RMEM_STRING_MAX))
    return cli_usage_error("string", "string: --max '%s' is not a length from 1 to 1m", o->str_max);
  int status = CLI_EXIT_OK;
  rmem_string s = {0};
  rmem_client *c = cli_connect(o, &status);
  if (c == NULL)
    return status;
  unsigned flags = o->str_utf16 ? RMEM_STRING_UTF16 : 0;
  int rc = rmem_read_string(c, pid, addr, (size_t)max, flags, &s);
  if (rc != 0) {
    status = cli_fail(o, c, rc, 0, "string %u 0x%" PRIx64, pid, addr);
    goto exit;
  }
  if (o->json) {
    cli_json j;
    json_init(&j, stdout);
    json_obj_begin(&j);
    json_kv_u64(&j, "pid", pid);
    json_kv_addr(&j, "addr", addr);
    json_kv_str(&j, "encoding", o->str_utf16 ? "utf16" : "utf8");
    json_key(&j, "text");
    json_strn(&j, s.text, s.text_len);
    json_kv_u64(&j, "len", s.len);
    json_kv_bool(&j, "terminated", s.terminated);
    if (s.has_hole) {
      json_key(&j, "hole");
      json_obj_begin(&j);
      json_kv_addr(&j, "addr", s.hole_addr);
      json_kv_i64(&j, "code", s.hole_code);
      json_kv_str(&j, "name", rmem_err_name(s.hole_code));
      json_obj_end(&j);
    }
    json_obj_end(&j);
    json_finish(&j);
  } else {
    put_escaped(stdout, s.text, s.text_len);
    putchar('\n');
  }
  if (s.has_hole) {
    fprintf(stderr, "rmem: string %u 0x%" PRIx64 ": no terminator before 0x%" PRIx64 ": %s: %s\n",
            pid, addr, s.hole_addr, rmem_err_name(s.hole_code), rmem_strerror(s.hole_code));
    status = CLI_EXIT_PARTIAL;
  } else if (!s.terminated) {
    fprintf(stderr, "rmem: string %u 0x%" PRIx64 ": no terminator within %" PRIu64 " bytes\n", pid,
            addr, s.len);
  }

exit:
  rmem_string_free(&s);
  rmem_close(c);
  return status;
}

/* fill */

int cmd_fill(const cli_opts *o) {
  uint32_t pid;
  uint64_t addr, len;
  if (cli_parse_pid(o->args[0], &pid) != 0)
    return cli_usage_error("fill", "fill: '%s' is not a process id", o->args[0]);
  if (cli_parse_u64(o->args[1], &addr) != 0)
    return cli_usage_error("fill", "fill: '%s' is not an address", o->args[1]);
  if (cli_parse_len(o->args[2], &len) != 0 || len == 0 || len > SIZE_MAX / 2)
    return cli_usage_error("fill", "fill: '%s' is not a positive length", o->args[2]);
  if (addr + (len - 1) < addr)
    return cli_usage_error("fill", "fill: 0x%" PRIx64 "+%" PRIu64 " goes past the address space",
                           addr, len);
  unsigned char *pattern = NULL;
  long plen = cli_parse_hex("fill", o->args + 3, o->nargs - 3, &pattern);
  if (plen < 0)
    return CLI_EXIT_USAGE;
  if (plen == 0 || plen > RMEM_FILL_MAX_PATTERN) {
    free(pattern);
    return plen ? cli_usage_error("fill", "fill: the pattern is longer than %d bytes",
                                  RMEM_FILL_MAX_PATTERN)
                : cli_usage_error("fill", "fill: the pattern is empty");
  }
  int status = CLI_EXIT_OK;
  rmem_ranges failed = {0};
  rmem_client *c = cli_connect(o, &status);
  if (c == NULL)
    goto exit;
  ssize_t n = rmem_fill(c, pid, addr, (size_t)len, pattern, (size_t)plen, &failed);
  if (n < 0) {
    status = cli_fail(o, c, (int)n, 0, "fill %u 0x%" PRIx64 "+%" PRIu64, pid, addr, len);
    goto exit;
  }
  if (o->json) {
    cli_json j;
    json_init(&j, stdout);
    json_obj_begin(&j);
    json_kv_u64(&j, "pid", pid);
    json_kv_addr(&j, "addr", addr);
    json_kv_u64(&j, "len", len);
    json_hex(&j, "pattern", pattern, (size_t)plen);
    json_kv_u64(&j, "written", (uint64_t)n);
    json_ranges(&j, "failed", &failed);
    json_obj_end(&j);
    json_finish(&j);
  } else {
    printf("filled %zd of %" PRIu64 " bytes at 0x%" PRIx64 " with a %ld-byte pattern\n", n, len,
           addr, plen);
  }
  if (failed.n > 0) {
    char what[96];
    snprintf(what, sizeof(what), "fill %u 0x%" PRIx64 "+%" PRIu64, pid, addr, len);
    cli_ranges_summary(what, &failed);
    status = CLI_EXIT_PARTIAL;
  }

exit:
  free(pattern);
  rmem_ranges_free(&failed);
  rmem_close(c);
  return status;
}
