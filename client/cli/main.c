/* rmem: the command-line client. Parses options (global ones may come before
 * or after the command), then runs one command. */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char usage_main[] =
    "Usage: rmem [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Inspect and patch the memory of processes on a machine running rmemd.\n"
    "\n"
    "Commands:\n"
    "  ps                            list processes\n"
    "  map PID [--free] [--detail]   show the memory map of PID\n"
    "  read PID ADDR LEN [-o FILE]   read memory: a hexdump, or raw bytes to FILE\n"
    "  write PID ADDR HEX...         write bytes given in hex\n"
    "  write PID ADDR --file FILE    write the bytes of FILE\n"
    "  readv PID ADDR:LEN...         read several ranges in one round trip\n"
    "  deref PID ADDR OFF...         follow a pointer chain, read at its end\n"
    "  string PID ADDR               read a NUL-terminated (or UTF-16) string\n"
    "  fill PID ADDR LEN HEX...      write a byte pattern repeated over a range\n"
    "  info                          show the agent's version, limits and methods\n"
    "  cache [--flush [PID]]         show the agent's page cache figures, or flush it\n"
    "  help [COMMAND]                show help, for one command with COMMAND\n"
    "\n"
    "Options (before or after the command):\n"
    "  --host HOST     agent host name or address (env RMEM_HOST; default 127.0.0.1)\n"
    "  --port PORT     agent TCP port (env RMEM_PORT; default 7467)\n"
    "  --timeout MS    fail when the agent makes no progress for MS milliseconds\n"
    "                  (default 10000; a negative value waits forever)\n"
    "  --json          print one JSON document on stdout instead of text\n"
    "  -h, --help      show this help; 'rmem COMMAND --help' for a command\n"
    "  -V, --version   print the version\n"
    "\n"
    "Security (the agent says what it requires: see 'rmem info'):\n"
    "  --tls           connect with TLS (env RMEM_TLS=1; implied by --ca and --pin)\n"
    "  --ca FILE       trust agent certificates issued by this CA (PEM; env RMEM_CA)\n"
    "  --pin SHA256    or accept exactly the agent certificate with this SHA-256\n"
    "                  (hex, colons allowed; env RMEM_PIN)\n"
    "  --cert FILE     client certificate for mutual TLS (PEM; env RMEM_CERT)\n"
    "  --key FILE      its private key (PEM; env RMEM_KEY)\n"
    "  --token-file FILE\n"
    "                  send the shared secret in FILE (env RMEM_TOKEN_FILE, or the\n"
    "                  secret itself in RMEM_TOKEN); never sent in the clear to a\n"
    "                  non-loopback address\n"
    "\n"
    "Slow links:\n"
    "  --compress      ask the agent to compress read data with lz4 (env\n"
    "                  RMEM_COMPRESS=1); it pays when the link is slower than a few\n"
    "                  hundred MB/s and the memory compresses. 'rmem info' shows\n"
    "                  whether the agent agreed\n"
    "\n"
    "Numbers: PID is decimal; ADDR and LEN are decimal or 0x-prefixed hex, and\n"
    "LEN may end in k, m or g (KiB, MiB, GiB).\n"
    "\n"
    "JSON: addresses are strings of hex digits (\"0x7f3a2c000000\"); sizes,\n"
    "lengths, offsets, counts, pids and error codes are numbers. When a command\n"
    "fails before printing anything, the document is\n"
    "  {\"error\": {\"code\": -5, \"name\": \"RMEM_ENOPROC\", \"message\": \"...\"}}\n"
    "\n"
    "Errors are reported on stderr in one line:\n"
    "  rmem: read 1234 0x1000+16: RMEM_EFAULT: unmapped or unreadable address: ...\n"
    "\n"
    "Exit status:\n"
    "  0  success\n"
    "  1  the agent returned an error for the operation (no such process,\n"
    "     permission denied, nothing readable, ...), or a local file error\n"
    "  2  usage error (bad arguments)\n"
    "  3  connection problem: cannot connect, timed out, connection closed,\n"
    "     protocol violation\n"
    "  4  partial success: a read with holes or a write with failed ranges\n";

static const char usage_ps[] =
    "Usage: rmem ps [--json]\n"
    "\n"
    "List the processes on the agent's machine: PID, PPID, UID, state (S), thread\n"
    "count (THR), resident memory (RSS), name (comm) and command line. Kernel\n"
    "threads show their name in brackets.\n"
    "\n"
    "JSON: {\"procs\": [{\"pid\", \"ppid\", \"uid\", \"name\", \"state\", \"threads\",\n"
    "\"rss\" (bytes), \"exe\", \"cmdline\": [...]}]}\n";

static const char usage_map[] =
    "Usage: rmem map PID [--free] [--detail] [--json]\n"
    "\n"
    "Show the memory map of PID, one row per region, like VMMap:\n"
    "  Address range   start-end (end exclusive)\n"
    "  Size            region size (K, M, G are KiB, MiB, GiB)\n"
    "  Prot            r/w/x and p (private) or s (shared), as /proc/PID/maps\n"
    "  State           commit (accessible), reserve (no access: guard or\n"
    "                  reservation), free (a gap, only with --free)\n"
    "  Type            image (ELF file), mapped (other file, shared memory),\n"
    "                  private (anonymous)\n"
    "  Alloc base      first region of the same allocation (module, stack, arena)\n"
    "  Details         module name, main exe path, heap, stacks with thread ids,\n"
    "                  vdso, guard pages, file paths\n"
    "\n"
    "  --free     also list the free gaps between regions\n"
    "  --detail   add RSS, PSS, Dirty and Swap columns (from smaps)\n"
    "\n"
    "A last line sums up the regions and committed memory by type.\n"
    "\n"
    "JSON: {\"pid\", \"regions\": [{\"base\", \"end\", \"size\", \"prot\", \"shared\", \"state\",\n"
    "\"type\", \"alloc_base\", \"offset\", \"dev\", \"inode\", \"path\", \"deleted\", \"usage\",\n"
    "\"tid\", \"main\", \"details\", \"smaps\": {...}}], \"summary\": {...}}; fields that do\n"
    "not apply are left out.\n";

static const char usage_read[] =
    "Usage: rmem read PID ADDR LEN [-o FILE] [--uncached] [--max-age MS] [--json]\n"
    "\n"
    "Read LEN bytes at ADDR in process PID. Without -o, print a hexdump in the\n"
    "style of xxd whose address column is the target address; bytes that could\n"
    "not be read print as ??. The unreadable ranges (holes) are summed up on\n"
    "stderr, and the exit status is then 4.\n"
    "\n"
    "  -o, --output FILE   write the raw bytes to FILE ('-' for stdout); holes\n"
    "                      are zero-filled\n"
    "  --uncached          read live memory only, never the agent's cached copies\n"
    "  --max-age MS        also accept cached copies of any page read at most MS\n"
    "                      milliseconds ago (they may be that stale)\n"
    "\n"
    "Without either, the agent serves from its cache only pages of read-only\n"
    "file mappings (code, constants) whose mapping is unchanged; see 'rmem help\n"
    "cache'. Long reads to a file show progress on stderr when it is a terminal.\n"
    "\n"
    "JSON: {\"pid\", \"addr\", \"len\", \"data\" (hex string, holes as 00; absent with\n"
    "-o, which adds \"file\"), \"read\" (bytes read), \"cached\" (bytes of those\n"
    "served from the agent's cache), \"holes\": [{\"addr\", \"len\", \"code\",\n"
    "\"name\"}]}\n";

static const char usage_cache[] =
    "Usage: rmem cache [--flush [PID]] [--json]\n"
    "\n"
    "Show the figures of the agent's page cache: its size limit, what it holds,\n"
    "and since the agent started, the pages served from it (hits), the pages\n"
    "that could have been but were read live (misses), and the pages dropped\n"
    "for room (evictions) or as no longer trustworthy (invalidations: writes,\n"
    "flushes, exited processes, changed mappings).\n"
    "\n"
    "The agent caches pages of read-only file mappings while their mapping is\n"
    "unchanged; other pages are served from the cache only to reads that accept\n"
    "an age (rmem read --max-age). Writes through the agent drop the pages they\n"
    "touch. Writes by anyone else into read-only file pages (another debugger's\n"
    "breakpoints, hot patches) are not seen: flush, or read with --uncached.\n"
    "\n"
    "  --flush [PID]   first drop the cached pages of PID, or of every process\n"
    "\n"
    "JSON: {\"flushed\" (only with --flush: the pid, or \"all\"), \"size_limit\",\n"
    "\"bytes\", \"pages\", \"hits\", \"misses\", \"evictions\", \"invalidations\"}\n";

static const char usage_write[] =
    "Usage: rmem write PID ADDR HEX... [--json]\n"
    "       rmem write PID ADDR --file FILE [--json]\n"
    "\n"
    "Write bytes at ADDR in process PID, given as hex digits (spaces and a 0x\n"
    "prefix are allowed: 'de ad be ef', '0xdeadbeef') or as the contents of a\n"
    "file. Writes go through the debugger path, so read-only pages are patched\n"
    "too; pages with no access at all are not. Ranges that failed are summed up\n"
    "on stderr, and the exit status is then 4.\n"
    "\n"
    "  -f, --file FILE   write the bytes of FILE\n"
    "\n"
    "JSON: {\"pid\", \"addr\", \"len\", \"written\", \"failed\": [{\"addr\", \"len\", \"code\",\n"
    "\"name\"}]}\n";

static const char usage_info[] =
    "Usage: rmem info [--json]\n"
    "\n"
    "Show what the agent announced when connecting: its version, the protocol\n"
    "version, OS and architecture, page and pointer size, its limits (max_frame,\n"
    "max_read, max_write, max_inflight), the methods it serves, whether the\n"
    "connection runs over TLS, what authentication it requires (none, token,\n"
    "mtls), and how read data is compressed (lz4 with --compress when the agent\n"
    "agrees, otherwise none).\n";

static const char usage_readv[] =
    "Usage: rmem readv PID ADDR:LEN [ADDR:LEN...] [--json]\n"
    "\n"
    "Read several ranges of process PID in one round trip (long lists are split\n"
    "and pipelined). Each range prints as a hexdump under a line 'ADDR+LEN:';\n"
    "bytes that could not be read print as ??. Ranges may overlap and come in\n"
    "any order. The unreadable ranges (holes) are summed up on stderr, and the\n"
    "exit status is then 4; when nothing at all could be read, it is 1.\n"
    "\n"
    "JSON: {\"pid\", \"ranges\": [{\"addr\", \"len\", \"read\" (bytes read), \"data\" (hex\n"
    "string, holes as 00), \"holes\": [{\"addr\", \"len\", \"code\", \"name\"}]}]}\n";

static const char usage_deref[] =
    "Usage: rmem deref PID ADDR OFF [OFF...] [--len N] [--json]\n"
    "\n"
    "Follow a pointer chain in process PID in one round trip, as a Cheat Engine\n"
    "pointer path: p = ADDR; for each offset OFF, p = [p] + OFF, where [p] is the\n"
    "pointer stored at p (4 bytes in 32-bit processes, 8 in 64-bit ones, and\n"
    "arithmetic wraps at that width); then read N bytes at p. Offsets are\n"
    "decimal or 0x hex with an optional sign: +0x10, -8, 0x18.\n"
    "\n"
    "Prints one line per step, '[i] P -> [P]', then the final address and a\n"
    "hexdump. When a pointer or the final bytes cannot be read, the chain is\n"
    "broken: the steps so far print, the error goes to stderr, and the exit\n"
    "status is 1. Holes in the final bytes give exit status 4.\n"
    "\n"
    "  --len N   bytes to read at the end of the chain (default 16; 0: none)\n"
    "\n"
    "JSON: {\"pid\", \"addr\", \"offsets\": [...], \"steps\": [{\"addr\", \"pointer\"}],\n"
    "\"final\", \"len\", \"data\" (hex string), \"holes\": [...]}; a broken chain has\n"
    "\"broken\": {\"step\", \"addr\", \"code\", \"name\"} instead of final, data, holes.\n";

static const char usage_string[] =
    "Usage: rmem string PID ADDR [--max N] [--utf16] [--json]\n"
    "\n"
    "Read the string at ADDR in process PID: bytes up to a NUL or, with --utf16,\n"
    "UTF-16LE units up to a 0x0000 unit (converted to UTF-8; unpaired surrogates\n"
    "become U+FFFD). Reading stops at the terminator, after N bytes, or at the\n"
    "first unreadable page. The text prints on one line, with control bytes and\n"
    "invalid UTF-8 escaped (\\n, \\t, \\xNN) and backslashes doubled.\n"
    "\n"
    "  --max N   read at most N bytes of the target (default 4096; at most 1m)\n"
    "  --utf16   the string is UTF-16LE\n"
    "\n"
    "A string cut short by --max is noted on stderr (exit status 0); one that\n"
    "runs into an unreadable page too, with exit status 4.\n"
    "\n"
    "JSON: {\"pid\", \"addr\", \"encoding\", \"text\", \"len\" (bytes in the target),\n"
    "\"terminated\", \"hole\": {\"addr\", \"code\", \"name\"} (only when there is one)}\n";

static const char usage_fill[] =
    "Usage: rmem fill PID ADDR LEN HEX... [--json]\n"
    "\n"
    "Write the byte pattern HEX (1 to 4096 bytes, given as for write: 'de ad',\n"
    "'0x90') repeated over LEN bytes at ADDR in process PID, as WinDbg's f\n"
    "command does; only the pattern crosses the network. Pages are treated as\n"
    "write treats them. Ranges that failed are summed up on stderr, and the exit\n"
    "status is then 4.\n"
    "\n"
    "JSON: {\"pid\", \"addr\", \"len\", \"pattern\" (hex string), \"written\",\n"
    "\"failed\": [{\"addr\", \"len\", \"code\", \"name\"}]}\n";

static const char usage_help[] = "Usage: rmem help [COMMAND]\n"
                                 "\n"
                                 "Show the general help, or the help of COMMAND.\n";

typedef struct {
  const char *name;
  int (*run)(const cli_opts *o);
  const char *usage;
  int min_args, max_args; /* max_args -1: any number. */
} command;

static const command commands[] = {
    {"ps", cmd_ps, usage_ps, 0, 0},           {"map", cmd_map, usage_map, 1, 1},
    {"read", cmd_read, usage_read, 3, 3},     {"write", cmd_write, usage_write, 2, -1},
    {"info", cmd_info, usage_info, 0, 0},     {"help", NULL, usage_help, 0, 1},
    {"cache", cmd_cache, usage_cache, 0, 1},  {"readv", cmd_readv, usage_readv, 2, -1},
    {"deref", cmd_deref, usage_deref, 3, -1}, {"string", cmd_string, usage_string, 2, 2},
    {"fill", cmd_fill, usage_fill, 4, -1},
};

static const command *find_command(const char *name) {
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
    if (strcmp(commands[i].name, name) == 0)
      return &commands[i];
  }
  return NULL;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("rmem: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (cmd)
    fprintf(stderr, "\nTry 'rmem %s --help'.\n", cmd);
  else
    fputs("\nTry 'rmem --help'.\n", stderr);
  return CLI_EXIT_USAGE;
}

int cli_exit_status(int code) {
  switch (code) {
  case RMEM_ECONNECT:
  case RMEM_ECLOSED:
  case RMEM_ETIMEDOUT:
  case RMEM_EPROTO:
  case RMEM_EFRAME:
  case RMEM_EMALFORMED:
  case RMEM_ENOHELLO:
  case RMEM_EVERSION:
  case RMEM_ETLS:
    return CLI_EXIT_CONN;
  }
  return CLI_EXIT_AGENT;
}

static int fail_v(const cli_opts *o, int code, int stdout_used, const char *detail, const char *fmt,
                  va_list ap) {
  char ctx[256] = "";
  if (fmt)
    vsnprintf(ctx, sizeof(ctx), fmt, ap);
  const char *desc = rmem_strerror(code);
  if (detail == NULL || strcmp(detail, desc) == 0)
    detail = "";
  fprintf(stderr, "rmem: %s%s%s: %s%s%s\n", ctx, ctx[0] ? ": " : "", rmem_err_name(code), desc,
          detail[0] ? ": " : "", detail);
  if (o && o->json && !stdout_used) {
    cli_json j;
    json_init(&j, stdout);
    json_obj_begin(&j);
    json_key(&j, "error");
    json_obj_begin(&j);
    json_kv_i64(&j, "code", code);
    json_kv_str(&j, "name", rmem_err_name(code));
    char msg[1024];
    snprintf(msg, sizeof(msg), "%s%s%s", ctx, ctx[0] ? ": " : "", detail[0] ? detail : desc);
    json_kv_str(&j, "message", msg);
    json_obj_end(&j);
    json_obj_end(&j);
    json_finish(&j);
  }
  return cli_exit_status(code);
}

int cli_fail(const cli_opts *o, rmem_client *c, int code, int stdout_used, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int status = fail_v(o, code, stdout_used, rmem_last_error(c), fmt, ap);
  va_end(ap);
  return status;
}

int cli_fail_detail(const cli_opts *o, int code, int stdout_used, const char *detail,
                    const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int status = fail_v(o, code, stdout_used, detail, fmt, ap);
  va_end(ap);
  return status;
}

/* Reads the token from `path` into buf[RMEM_TOKEN_MAX + 1], without a final
 * newline. Returns 0 or -1 with errno (EMSGSIZE: too long; EINVAL: empty). */
static int read_token(const char *path, char *buf) {
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return -1;
  char tmp[RMEM_TOKEN_MAX + 3];
  size_t n = fread(tmp, 1, sizeof(tmp), f);
  int err = ferror(f) ? errno : 0;
  fclose(f);
  if (n > 0 && tmp[n - 1] == '\n')
    n--;
  if (n > 0 && tmp[n - 1] == '\r')
    n--;
  if (!err && n == 0)
    err = EINVAL;
  if (!err && n > RMEM_TOKEN_MAX)
    err = EMSGSIZE;
  if (!err) {
    memcpy(buf, tmp, n);
    buf[n] = '\0';
  }
  memset(tmp, 0, sizeof(tmp));
  errno = err;
  return err ? -1 : 0;
}

rmem_client *cli_connect(const cli_opts *o, int *status) {
  rmem_client *c = NULL;
  char token[RMEM_TOKEN_MAX + 1];
  rmem_connect_options co = {
      .host = o->host,
      .port = o->port,
      .timeout_ms = o->timeout_ms,
      .tls = o->tls,
      .ca_file = o->ca_file,
      .pin_sha256 = o->pin,
      .cert_file = o->cert_file,
      .key_file = o->key_file,
      .token = o->token,
      .compress = o->compress,
  };
  if (o->token_file) {
    if (read_token(o->token_file, token) != 0) {
      int e = errno;
      *status = cli_fail_detail(o, RMEM_EPARAM, 0,
                                e == EINVAL     ? "the file is empty"
                                : e == EMSGSIZE ? "the token is too long"
                                                : strerror(e),
                                "token file %s", o->token_file);
      return NULL;
    }
    co.token = token;
  }
  int rc = rmem_connect_opts(&c, &co);
  memset(token, 0, sizeof(token));
  if (rc != 0) {
    *status = cli_fail(o, NULL, rc, 0, NULL);
    return NULL;
  }
  return c;
}

/* Numbers. */

int cli_parse_u64(const char *s, uint64_t *out) {
  if (s == NULL || *s == '\0' || *s == '-' || *s == '+' || *s == ' ')
    return -1;
  int base = 10;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
    if (*s == '\0' || *s == '-' || *s == '+' || *s == ' ')
      return -1;
  }
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, base);
  if (errno != 0 || *end != '\0')
    return -1;
  *out = v;
  return 0;
}

int cli_parse_len(const char *s, uint64_t *out) {
  size_t n = strlen(s);
  if (n == 0)
    return -1;
  /* None of k, m, g is a hex digit, so the suffix also works after 0x. */
  unsigned shift = 0;
  switch (s[n - 1]) {
  case 'k':
  case 'K':
    shift = 10;
    break;
  case 'm':
  case 'M':
    shift = 20;
    break;
  case 'g':
  case 'G':
    shift = 30;
    break;
  }
  char buf[64];
  if (n >= sizeof(buf))
    return -1;
  memcpy(buf, s, n + 1);
  if (shift)
    buf[n - 1] = '\0';
  uint64_t v;
  if (cli_parse_u64(buf, &v) != 0)
    return -1;
  if (shift && v > (UINT64_MAX >> shift))
    return -1;
  *out = v << shift;
  return 0;
}

int cli_parse_pid(const char *s, uint32_t *out) {
  if (s == NULL || *s < '0' || *s > '9')
    return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0' || v == 0 || v > UINT32_MAX)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

int cli_parse_timeout(const char *s, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *s == '\0' || *end != '\0' || v > INT_MAX || v < INT_MIN)
    return -1;
  *out = v < 0 ? -1 : (int)v;
  return 0;
}

static int parse_port(const char *s, uint16_t *out) {
  uint64_t v;
  if (cli_parse_u64(s, &v) != 0 || v == 0 || v > 65535)
    return -1;
  *out = (uint16_t)v;
  return 0;
}

/* Options. */

enum {
  OPT_HOST,
  OPT_PORT,
  OPT_TIMEOUT,
  OPT_JSON,
  OPT_HELP,
  OPT_VERSION,
  OPT_FREE,
  OPT_DETAIL,
  OPT_OUTPUT,
  OPT_FILE,
  OPT_UNCACHED,
  OPT_MAX_AGE,
  OPT_FLUSH,
  OPT_LEN,
  OPT_MAX,
  OPT_UTF16,
  OPT_TLS,
  OPT_CA,
  OPT_PIN,
  OPT_CERT,
  OPT_KEY,
  OPT_TOKEN_FILE,
  OPT_COMPRESS,
};

typedef struct {
  const char *lng;
  char shrt;
  int id;
  int has_arg;
  const char *only; /* The command it belongs to, or NULL for a global option. */
} option;

static const option options[] = {
    {"host", 0, OPT_HOST, 1, NULL},
    {"port", 0, OPT_PORT, 1, NULL},
    {"timeout", 0, OPT_TIMEOUT, 1, NULL},
    {"json", 0, OPT_JSON, 0, NULL},
    {"help", 'h', OPT_HELP, 0, NULL},
    {"version", 'V', OPT_VERSION, 0, NULL},
    {"free", 0, OPT_FREE, 0, "map"},
    {"detail", 0, OPT_DETAIL, 0, "map"},
    {"output", 'o', OPT_OUTPUT, 1, "read"},
    {"file", 'f', OPT_FILE, 1, "write"},
    {"uncached", 0, OPT_UNCACHED, 0, "read"},
    {"max-age", 0, OPT_MAX_AGE, 1, "read"},
    {"flush", 0, OPT_FLUSH, 0, "cache"},
    {"len", 0, OPT_LEN, 1, "deref"},
    {"max", 0, OPT_MAX, 1, "string"},
    {"utf16", 0, OPT_UTF16, 0, "string"},
    {"tls", 0, OPT_TLS, 0, NULL},
    {"ca", 0, OPT_CA, 1, NULL},
    {"pin", 0, OPT_PIN, 1, NULL},
    {"cert", 0, OPT_CERT, 1, NULL},
    {"key", 0, OPT_KEY, 1, NULL},
    {"token-file", 0, OPT_TOKEN_FILE, 1, NULL},
    {"compress", 0, OPT_COMPRESS, 0, NULL},
};

static const option *find_option(const char *arg, const char **value) {
  *value = NULL;
  if (arg[1] != '-') {
    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
      if (options[i].shrt && arg[1] == options[i].shrt) {
        if (arg[2] != '\0') {
          if (!options[i].has_arg)
            return NULL;
          *value = arg + 2; /* -oFILE */
        }
        return &options[i];
      }
    }
    return NULL;
  }
  const char *name = arg + 2;
  const char *eq = strchr(name, '=');
  size_t n = eq ? (size_t)(eq - name) : strlen(name);
  for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
    if (strlen(options[i].lng) == n && strncmp(options[i].lng, name, n) == 0) {
      if (eq) {
        if (!options[i].has_arg)
          return NULL;
        *value = eq + 1;
      }
      return &options[i];
    }
  }
  return NULL;
}

/* An environment variable, or NULL when unset or empty. */
static const char *env_str(const char *name) {
  const char *v = getenv(name);
  return v && *v ? v : NULL;
}

int main(int argc, char **argv) {
  cli_opts o = {.host = getenv("RMEM_HOST"), .port = RMEM_DEFAULT_PORT};
  if (o.host == NULL || *o.host == '\0')
    o.host = "127.0.0.1";
  const char *env_port = getenv("RMEM_PORT");
  if (env_port && *env_port && parse_port(env_port, &o.port) != 0)
    return cli_usage_error(NULL, "RMEM_PORT: '%s' is not a port number", env_port);
  const char *env_tls = getenv("RMEM_TLS");
  o.tls = env_tls && *env_tls && strcmp(env_tls, "0") != 0;
  const char *env_compress = getenv("RMEM_COMPRESS");
  o.compress = env_compress && *env_compress && strcmp(env_compress, "0") != 0;
  o.ca_file = env_str("RMEM_CA");
  o.pin = env_str("RMEM_PIN");
  o.cert_file = env_str("RMEM_CERT");
  o.key_file = env_str("RMEM_KEY");
  o.token_file = env_str("RMEM_TOKEN_FILE");
  if (o.token_file == NULL)
    o.token = env_str("RMEM_TOKEN");

  char **pos = calloc((size_t)argc + 1, sizeof(*pos));
  if (pos == NULL) {
    fputs("rmem: out of memory\n", stderr);
    return CLI_EXIT_AGENT;
  }
  int npos = 0, version = 0, status = CLI_EXIT_OK;
  const option *used[16];
  const char *used_text[16];
  int nused = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--") == 0) {
      while (++i < argc)
        pos[npos++] = argv[i];
      break;
    }
    /* A negative number ("-8", a deref offset) is an argument, not an option. */
    if (arg[0] != '-' || arg[1] == '\0' || (arg[1] >= '0' && arg[1] <= '9')) {
      pos[npos++] = argv[i];
      continue;
    }
    const char *value;
    const option *opt = find_option(arg, &value);
    if (opt == NULL) {
      status = cli_usage_error(npos ? pos[0] : NULL, "unknown option '%s'", arg);
      goto exit;
    }
    if (opt->has_arg && value == NULL) {
      if (i + 1 >= argc) {
        status = cli_usage_error(npos ? pos[0] : NULL, "option '%s' needs a value", arg);
        goto exit;
      }
      value = argv[++i];
    }
    if (nused < 16) {
      used[nused] = opt;
      used_text[nused++] = arg;
    }
    switch (opt->id) {
    case OPT_HOST:
      o.host = value;
      break;
    case OPT_PORT:
      if (parse_port(value, &o.port) != 0) {
        status = cli_usage_error(NULL, "--port: '%s' is not a port number", value);
        goto exit;
      }
      break;
    case OPT_TIMEOUT:
      if (cli_parse_timeout(value, &o.timeout_ms) != 0) {
        status = cli_usage_error(NULL, "--timeout: '%s' is not a number of milliseconds", value);
        goto exit;
      }
      if (o.timeout_ms == 0)
        o.timeout_ms = 10000;
      break;
    case OPT_JSON:
      o.json = 1;
      break;
    case OPT_HELP:
      o.help = 1;
      break;
    case OPT_VERSION:
      version = 1;
      break;
    case OPT_FREE:
      o.map_free = 1;
      break;
    case OPT_DETAIL:
      o.map_detail = 1;
      break;
    case OPT_OUTPUT:
      o.out_file = value;
      break;
    case OPT_FILE:
      o.in_file = value;
      break;
    case OPT_UNCACHED:
      o.uncached = 1;
      break;
    case OPT_MAX_AGE:
      o.max_age = value;
      break;
    case OPT_FLUSH:
      o.cache_flush = 1;
      break;
    case OPT_LEN:
      o.deref_len = value;
      break;
    case OPT_MAX:
      o.str_max = value;
      break;
    case OPT_UTF16:
      o.str_utf16 = 1;
      break;
    case OPT_TLS:
      o.tls = 1;
      break;
    case OPT_CA:
      o.ca_file = value;
      break;
    case OPT_PIN:
      o.pin = value;
      break;
    case OPT_CERT:
      o.cert_file = value;
      break;
    case OPT_KEY:
      o.key_file = value;
      break;
    case OPT_TOKEN_FILE:
      o.token_file = value;
      o.token = NULL;
      break;
    case OPT_COMPRESS:
      o.compress = 1;
      break;
    }
  }
  /* A way to check the agent's certificate only makes sense with TLS. */
  if (o.ca_file || o.pin)
    o.tls = 1;

  if (version && npos == 0) {
    printf("rmem %s (librmem %s, protocol %d)\n", RMEM_VERSION, RMEM_VERSION, 1);
    goto exit;
  }
  if (npos == 0) {
    if (o.help) {
      fputs(usage_main, stdout);
      goto exit;
    }
    fputs(usage_main, stderr);
    status = CLI_EXIT_USAGE;
    goto exit;
  }
  const command *cmd = find_command(pos[0]);
  if (cmd == NULL) {
    status = cli_usage_error(NULL, "unknown command '%s'", pos[0]);
    goto exit;
  }
  if (o.help) {
    fputs(cmd->usage, stdout);
    goto exit;
  }
  if (cmd->run == NULL) { /* help */
    if (npos > 2) {
      status = cli_usage_error("help", "too many arguments");
      goto exit;
    }
    const command *about = npos == 2 ? find_command(pos[1]) : NULL;
    if (npos == 2 && about == NULL) {
      status = cli_usage_error(NULL, "unknown command '%s'", pos[1]);
      goto exit;
    }
    fputs(about ? about->usage : usage_main, stdout);
    goto exit;
  }
  for (int i = 0; i < nused; i++) {
    if (used[i]->only && strcmp(used[i]->only, cmd->name) != 0) {
      status =
          cli_usage_error(cmd->name, "option '%s' does not apply to '%s'", used_text[i], cmd->name);
      goto exit;
    }
  }
  int nargs = npos - 1;
  if (nargs < cmd->min_args) {
    status = cli_usage_error(cmd->name, "%s: missing arguments", cmd->name);
    goto exit;
  }
  if (cmd->max_args >= 0 && nargs > cmd->max_args) {
    status = cli_usage_error(cmd->name, "%s: too many arguments", cmd->name);
    goto exit;
  }
  o.cmd = cmd->name;
  o.nargs = nargs;
  o.args = pos + 1;
  status = cmd->run(&o);

exit:
  free(pos);
  if (fflush(stdout) != 0 && status == CLI_EXIT_OK) {
    fprintf(stderr, "rmem: writing output: %s\n", strerror(errno));
    status = CLI_EXIT_AGENT;
  }
  return status;
}
