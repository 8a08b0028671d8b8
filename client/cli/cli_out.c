/* Output helpers for the rmem CLI: a JSON writer, human sizes, an xxd-style
 * hexdump and small table helpers. Everything writes to a FILE. */
#include "cli.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* JSON. */

void json_init(cli_json *j, FILE *f) {
  memset(j, 0, sizeof(*j));
  j->f = f;
  j->first = 1;
}

static void indent(cli_json *j) {
  fputc('\n', j->f);
  for (int i = 0; i < j->depth; i++)
    fputs("  ", j->f);
}

/* Writes the separator that goes before a value or a key. */
static void before_value(cli_json *j) {
  if (j->after_key) {
    j->after_key = 0;
    return;
  }
  if (!j->first)
    fputc(',', j->f);
  if (j->flat) {
    if (!j->first)
      fputc(' ', j->f);
  } else if (j->depth > 0) {
    indent(j);
  }
  j->first = 0;
}

static void open_container(cli_json *j, char c) {
  before_value(j);
  fputc(c, j->f);
  j->depth++;
  j->first = 1;
}

static void close_container(cli_json *j, char c) {
  int was_flat = j->flat != 0;
  if (j->flat == j->depth)
    j->flat = 0; /* The flat container itself ends on its own line. */
  j->depth--;
  if (!j->first && !was_flat)
    indent(j);
  fputc(c, j->f);
  j->first = 0;
}

void json_obj_begin(cli_json *j) {
  open_container(j, '{');
}

void json_obj_end(cli_json *j) {
  close_container(j, '}');
}

void json_arr_begin(cli_json *j) {
  open_container(j, '[');
}

void json_arr_begin_flat(cli_json *j) {
  open_container(j, '[');
  if (!j->flat)
    j->flat = j->depth;
}

void json_arr_end(cli_json *j) {
  close_container(j, ']');
}

/* Length of the valid UTF-8 sequence at p[0..n), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  size_t len;
  uint32_t min;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
    min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  uint32_t cp = c & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

/* Strings from the target are raw bytes; JSON must be UTF-8, so bytes that
 * are not valid UTF-8 become U+FFFD. */
static void put_string(FILE *f, const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  fputc('"', f);
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c == '"' || c == '\\') {
      fputc('\\', f);
      fputc((int)c, f);
      i++;
    } else if (c < 0x20) {
      switch (c) {
      case '\n':
        fputs("\\n", f);
        break;
      case '\t':
        fputs("\\t", f);
        break;
      case '\r':
        fputs("\\r", f);
        break;
      case '\b':
        fputs("\\b", f);
        break;
      case '\f':
        fputs("\\f", f);
        break;
      default:
        fprintf(f, "\\u%04x", c);
      }
      i++;
    } else if (c < 0x80) {
      fputc((int)c, f);
      i++;
    } else {
      size_t len = utf8_len(p + i, n - i);
      if (len == 0) {
        fputs("\\ufffd", f);
        i++;
      } else {
        fwrite(p + i, 1, len, f);
        i += len;
      }
    }
  }
  fputc('"', f);
}

void json_key(cli_json *j, const char *key) {
  before_value(j);
  put_string(j->f, key, strlen(key));
  fputs(": ", j->f);
  j->after_key = 1;
}

void json_strn(cli_json *j, const char *s, size_t n) {
  before_value(j);
  put_string(j->f, s, n);
}

void json_str(cli_json *j, const char *s) {
  if (s == NULL)
    json_null(j);
  else
    json_strn(j, s, strlen(s));
}

void json_u64(cli_json *j, uint64_t v) {
  before_value(j);
  fprintf(j->f, "%" PRIu64, v);
}

void json_i64(cli_json *j, int64_t v) {
  before_value(j);
  fprintf(j->f, "%" PRId64, v);
}

void json_bool(cli_json *j, int v) {
  before_value(j);
  fputs(v ? "true" : "false", j->f);
}

void json_null(cli_json *j) {
  before_value(j);
  fputs("null", j->f);
}

void json_addr(cli_json *j, uint64_t addr) {
  before_value(j);
  fprintf(j->f, "\"0x%" PRIx64 "\"", addr);
}

FILE *json_raw(cli_json *j) {
  before_value(j);
  return j->f;
}

void json_finish(cli_json *j) {
  fputc('\n', j->f);
}

void json_kv_str(cli_json *j, const char *key, const char *s) {
  json_key(j, key);
  json_str(j, s);
}

void json_kv_u64(cli_json *j, const char *key, uint64_t v) {
  json_key(j, key);
  json_u64(j, v);
}

void json_kv_i64(cli_json *j, const char *key, int64_t v) {
  json_key(j, key);
  json_i64(j, v);
}

void json_kv_bool(cli_json *j, const char *key, int v) {
  json_key(j, key);
  json_bool(j, v);
}

void json_kv_addr(cli_json *j, const char *key, uint64_t v) {
  json_key(j, key);
  json_addr(j, v);
}

void json_ranges(cli_json *j, const char *key, const rmem_ranges *r) {
  json_key(j, key);
  json_arr_begin(j);
  for (size_t i = 0; i < r->n; i++) {
    json_obj_begin(j);
    json_kv_addr(j, "addr", r->v[i].addr);
    json_kv_u64(j, "len", r->v[i].len);
    json_kv_i64(j, "code", r->v[i].code);
    json_kv_str(j, "name", rmem_err_name(r->v[i].code));
    json_obj_end(j);
  }
  json_arr_end(j);
}

/* Text. */

const char *cli_human(uint64_t bytes, char *out, size_t n) {
  static const char units[] = "KMGTPE";
  if (bytes < 1024) {
    snprintf(out, n, "%uB", (unsigned)bytes);
    return out;
  }
  double v = (double)bytes / 1024;
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  /* One decimal while it says something: 4.0K, 12.5M, then 132K. */
  if (v < 99.95)
    snprintf(out, n, "%.1f%c", v, units[u]);
  else
    snprintf(out, n, "%.0f%c", v, units[u]);
  return out;
}

void cli_put_clean(FILE *f, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    fputc(c < 0x20 || c == 0x7f ? '?' : c, f);
  }
}

int cli_term_width(void) {
  struct winsize ws;
  if (!isatty(STDOUT_FILENO) || ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0)
    return 0;
  return ws.ws_col;
}

void cli_hexdump(FILE *f, uint64_t addr, const unsigned char *p, size_t len,
                 const rmem_ranges *holes, int width) {
  size_t h = 0; /* First hole that may still cover a byte at or after the cursor. */
  char line[160];
  /* Runs of identical lines (zeros, a big hole) print once, then "*", as
   * hexdump and xxd -a do; the last line always prints. */
  char prev[160] = "";
  int starred = 0;
  for (size_t off = 0; off < len; off += 16) {
    size_t n = len - off < 16 ? len - off : 16;
    int pos = snprintf(line, sizeof(line), "%0*" PRIx64 ":", width, addr + off);
    char ascii[17];
    for (size_t i = 0; i < 16; i++) {
      if (i % 2 == 0)
        line[pos++] = ' ';
      if (i >= n) {
        line[pos++] = ' ';
        line[pos++] = ' ';
        ascii[i] = '\0';
        continue;
      }
      uint64_t a = addr + off + i;
      while (holes && h < holes->n && holes->v[h].addr + holes->v[h].len <= a)
        h++;
      int in_hole = holes && h < holes->n && holes->v[h].addr <= a;
      unsigned c = p[off + i];
      if (in_hole) {
        line[pos++] = '?';
        line[pos++] = '?';
        ascii[i] = ' ';
      } else {
        static const char hex[] = "0123456789abcdef";
        line[pos++] = hex[c >> 4];
        line[pos++] = hex[c & 15];
        ascii[i] = c >= 0x20 && c < 0x7f ? (char)c : '.';
      }
    }
    ascii[n] = '\0';
    line[pos++] = ' ';
    line[pos++] = ' ';
    line[pos] = '\0';
    const char *body = strchr(line, ':');
    char cur[160];
    snprintf(cur, sizeof(cur), "%s%s", body, ascii);
    if (n == 16 && off + 16 < len && off > 0 && strcmp(cur, prev) == 0) {
      if (!starred)
        fputs("*\n", f);
      starred = 1;
      continue;
    }
    starred = 0;
    memcpy(prev, cur, sizeof(prev));
    /* Hole lines end in blanks: trim them. */
    size_t end = strlen(ascii);
    while (end > 0 && ascii[end - 1] == ' ')
      ascii[--end] = '\0';
    if (end == 0)
      while (pos > 0 && line[pos - 1] == ' ')
        line[--pos] = '\0';
    fputs(line, f);
    fputs(ascii, f);
    fputc('\n', f);
  }
}

void cli_ranges_summary(const char *what, const rmem_ranges *r) {
  if (r->n == 0)
    return;
  uint64_t total = 0;
  for (size_t i = 0; i < r->n; i++)
    total += r->v[i].len;
  int rd = strncmp(what, "read", 4) == 0;
  fprintf(stderr, "rmem: %s: %" PRIu64 " bytes %s, %zu %s%s:", what, total,
          rd ? "unreadable" : "not written", r->n, rd ? "hole" : "failed range",
          r->n == 1 ? "" : "s");
  const size_t show = 8;
  for (size_t i = 0; i < r->n && i < show; i++)
    fprintf(stderr, "%s 0x%" PRIx64 " +0x%" PRIx64 " %s (%s)", i ? "," : "", r->v[i].addr,
            r->v[i].len, rmem_err_name(r->v[i].code), rmem_strerror(r->v[i].code));
  if (r->n > show)
    fprintf(stderr, ", and %zu more", r->n - show);
  fputc('\n', stderr);
}

static int hex_digit(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

long cli_parse_hex(const char *cmd, char **args, int n, unsigned char **out) {
  size_t cap = 0;
  for (int i = 0; i < n; i++)
    cap += strlen(args[i]) / 2 + 1;
  unsigned char *p = malloc(cap ? cap : 1);
  if (p == NULL)
    return -1;
  size_t len = 0;
  int hi = -1;
  for (int i = 0; i < n; i++) {
    const char *s = args[i];
    while (*s) {
      if (*s == ' ' || *s == '\t' || *s == '\n') {
        s++;
        continue;
      }
      /* A 0x prefix at the start of a word. */
      if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && hi < 0 &&
          (s == args[i] || s[-1] == ' ' || s[-1] == '\t' || s[-1] == '\n')) {
        s += 2;
        continue;
      }
      int d = hex_digit((unsigned char)*s);
      if (d < 0) {
        free(p);
        cli_usage_error(cmd, "%s: '%c' is not a hex digit", cmd, *s);
        return -1;
      }
      if (hi < 0) {
        hi = d;
      } else {
        p[len++] = (unsigned char)(hi << 4 | d);
        hi = -1;
      }
      s++;
    }
  }
  if (hi >= 0) {
    free(p);
    cli_usage_error(cmd, "%s: odd number of hex digits", cmd);
    return -1;
  }
  *out = p;
  return (long)len;
}
