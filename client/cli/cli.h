/* The rmem command-line tool: shared declarations.
 *
 * main.c parses options and dispatches; cmd_*.c run one command each; cli_out.c
 * holds the output helpers (JSON writer, human sizes, hexdump, tables). */
#ifndef RMEM_CLI_H
#define RMEM_CLI_H

#include "rmem.h"

#include <stdint.h>
#include <stdio.h>

/* Exit statuses, documented in `rmem --help`. */
enum {
  CLI_EXIT_OK = 0,
  CLI_EXIT_AGENT = 1,   /* The agent (or the local system) refused the operation. */
  CLI_EXIT_USAGE = 2,   /* Bad arguments. */
  CLI_EXIT_CONN = 3,    /* Cannot connect, timeout, closed, protocol violation. */
  CLI_EXIT_PARTIAL = 4, /* A read with holes or a write with failed ranges. */
};

typedef struct {
  const char *host;
  uint16_t port;
  int timeout_ms;
  int json;
  int help;
  /* Security: TLS, how to check the agent, how to prove who we are. */
  int tls;
  const char *ca_file;
  const char *pin;
  const char *cert_file;
  const char *key_file;
  const char *token_file;
  const char *token; /* From RMEM_TOKEN, when there is no token file. */
  int compress;      /* Offer lz4 for read data (--compress, RMEM_COMPRESS=1). */
  /* map */
  int map_free;
  int map_detail;
  /* read */
  const char *out_file;
  int uncached;
  const char *max_age; /* --max-age MS, as given. */
  /* cache */
  int cache_flush;
  /* write */
  const char *in_file;
  /* deref, string */
  const char *deref_len; /* --len N, as given. */
  const char *str_max;   /* --max N, as given. */
  int str_utf16;
  /* The command and its positional arguments. */
  const char *cmd;
  int nargs;
  char **args;
} cli_opts;

/* Connects as `o` says. On failure prints the error and returns NULL with the
 * exit status in *status. */
rmem_client *cli_connect(const cli_opts *o, int *status);

/* Prints "rmem: CONTEXT: NAME: description: detail" on stderr (and, with
 * --json, an error document on stdout unless `stdout_used`), and returns the
 * exit status for `code`. `c` may be NULL (the detail is then the last
 * connect error). */
int cli_fail(const cli_opts *o, rmem_client *c, int code, int stdout_used, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The same with an explicit detail instead of the client's last error. */
int cli_fail_detail(const cli_opts *o, int code, int stdout_used, const char *detail,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The exit status for an rmem error code. */
int cli_exit_status(int code);
/* Prints "rmem: " and a usage error on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Decodes hex digits spread over `n` arguments (blanks and a 0x at the start
 * of a word allowed) into *out (malloc'd). Returns the byte count, or -1
 * after a usage message naming `cmd`. */
long cli_parse_hex(const char *cmd, char **args, int n, unsigned char **out);

/* Argument parsing. Each returns 0, or -1 when `s` is not valid. */
int cli_parse_u64(const char *s, uint64_t *out); /* Decimal or 0x hex. */
int cli_parse_len(const char *s, uint64_t *out); /* Also k/m/g suffixes (KiB, MiB, GiB). */
int cli_parse_pid(const char *s, uint32_t *out); /* Decimal, 1..2^32-1. */
int cli_parse_timeout(const char *s, int *out);

/* Commands. Each returns an exit status. */
int cmd_ps(const cli_opts *o);
int cmd_map(const cli_opts *o);
int cmd_read(const cli_opts *o);
int cmd_write(const cli_opts *o);
int cmd_info(const cli_opts *o);
int cmd_cache(const cli_opts *o);
/* cmd_slow.c: requests that save round trips on slow links. */
int cmd_readv(const cli_opts *o);
int cmd_deref(const cli_opts *o);
int cmd_string(const cli_opts *o);
int cmd_fill(const cli_opts *o);

/* Output helpers (cli_out.c). */

/* A streaming JSON writer with indentation. Caller storage. */
typedef struct {
  FILE *f;
  int depth;
  int first;     /* The next value is the first in its container. */
  int after_key; /* A key was just written: the value follows on the same line. */
  int flat;      /* Depth of the innermost container printed on one line, or 0. */
} cli_json;

void json_init(cli_json *j, FILE *f);
void json_obj_begin(cli_json *j);
void json_obj_end(cli_json *j);
void json_arr_begin(cli_json *j);
void json_arr_end(cli_json *j);
/* An array printed on one line: ["a", "b"]. For short lists of scalars. */
void json_arr_begin_flat(cli_json *j);
void json_key(cli_json *j, const char *key);
void json_str(cli_json *j, const char *s); /* NULL prints null. */
void json_strn(cli_json *j, const char *s, size_t n);
void json_u64(cli_json *j, uint64_t v);
void json_i64(cli_json *j, int64_t v);
void json_bool(cli_json *j, int v);
void json_null(cli_json *j);
void json_addr(cli_json *j, uint64_t addr); /* "0x7f3a..." */
/* Starts a value that the caller writes to j->f itself (a long hex string). */
FILE *json_raw(cli_json *j);
/* Ends the document with a newline. */
void json_finish(cli_json *j);

/* Helpers that print a key and a value. */
void json_kv_str(cli_json *j, const char *key, const char *s);
void json_kv_u64(cli_json *j, const char *key, uint64_t v);
void json_kv_i64(cli_json *j, const char *key, int64_t v);
void json_kv_bool(cli_json *j, const char *key, int v);
void json_kv_addr(cli_json *j, const char *key, uint64_t v);

/* A range list as JSON: [{"addr": "0x..", "len": N, "code": -16, "name": "RMEM_EPROT"}]. */
void json_ranges(cli_json *j, const char *key, const rmem_ranges *r);

/* "4.0K", "1.2M", "3.5G", "512B". `out` holds at least 16 bytes. */
const char *cli_human(uint64_t bytes, char *out, size_t n);

/* Writes `s` for a table cell: control bytes become '?'. */
void cli_put_clean(FILE *f, const char *s);

/* An xxd-style hexdump of `len` bytes whose first byte is at target address
 * `addr`. Bytes inside `holes` print as "??". `width` is the number of hex
 * digits in the address column. */
void cli_hexdump(FILE *f, uint64_t addr, const unsigned char *p, size_t len,
                 const rmem_ranges *holes, int width);

/* Prints a one-line summary of `r` on stderr: "rmem: 2 holes: 0x.. +0x1000 RMEM_EPROT, ...". */
void cli_ranges_summary(const char *what, const rmem_ranges *r);

/* The display width of the terminal on stdout, or 0 when it is not one. */
int cli_term_width(void);

#endif
