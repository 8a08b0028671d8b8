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
    "  info                          show the agent's version, limits and methods\n"
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
    "Usage: rmem read PID ADDR LEN [-o FILE] [--json]\n"
    "\n"
    "Read LEN bytes at ADDR in process PID. Without -o, print a hexdump in the\n"
    "style of xxd whose address column is the target address; bytes that could\n"
    "not be read print as ??. The unreadable ranges (holes) are summed up on\n"
    "stderr, and the exit status is then 4.\n"
    "\n"
    "  -o, --output FILE   write the raw bytes to FILE ('-' for stdout); holes\n"
    "                      are zero-filled\n"
    "\n"
    "Long reads to a file show progress on stderr when it is a terminal.\n"
    "\n"
    "JSON: {\"pid\", \"addr\", \"len\", \"data\" (hex string, holes as 00; absent with\n"
    "-o, which adds \"file\"), \"read\" (bytes read), \"holes\": [{\"addr\", \"len\",\n"
    "\"code\", \"name\"}]}\n";

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
    "max_read, max_write, max_inflight) and the methods it serves.\n";

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
    {"ps", cmd_ps, usage_ps, 0, 0},       {"map", cmd_map, usage_map, 1, 1},
    {"read", cmd_read, usage_read, 3, 3}, {"write", cmd_write, usage_write, 2, -1},
    {"info", cmd_info, usage_info, 0, 0}, {"help", NULL, usage_help, 0, 1},
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

rmem_client *cli_connect(const cli_opts *o, int *status) {
  rmem_client *c = NULL;
  int rc = rmem_connect(&c, o->host, o->port, o->timeout_ms);
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
};

typedef struct {
  const char *lng;
  char shrt;
  int id;
  int has_arg;
  const char *only; /* The command it belongs to, or NULL for a global option. */
} option;

static const option options[] = {
    {"host", 0, OPT_HOST, 1, NULL},         {"port", 0, OPT_PORT, 1, NULL},
    {"timeout", 0, OPT_TIMEOUT, 1, NULL},   {"json", 0, OPT_JSON, 0, NULL},
    {"help", 'h', OPT_HELP, 0, NULL},       {"version", 'V', OPT_VERSION, 0, NULL},
    {"free", 0, OPT_FREE, 0, "map"},        {"detail", 0, OPT_DETAIL, 0, "map"},
    {"output", 'o', OPT_OUTPUT, 1, "read"}, {"file", 'f', OPT_FILE, 1, "write"},
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

int main(int argc, char **argv) {
  cli_opts o = {.host = getenv("RMEM_HOST"), .port = RMEM_DEFAULT_PORT};
  if (o.host == NULL || *o.host == '\0')
    o.host = "127.0.0.1";
  const char *env_port = getenv("RMEM_PORT");
  if (env_port && *env_port && parse_port(env_port, &o.port) != 0)
    return cli_usage_error(NULL, "RMEM_PORT: '%s' is not a port number", env_port);

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
    if (arg[0] != '-' || arg[1] == '\0') {
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
    }
  }

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
