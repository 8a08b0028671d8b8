/* rmem cache: the agent's page cache figures, and flushing it. */
#include "cli.h"

#include <inttypes.h>

int cmd_cache(const cli_opts *o) {
  uint32_t pid = 0;
  if (o->nargs > 0 && !o->cache_flush)
    return cli_usage_error("cache", "cache: a PID goes with --flush");
  if (o->nargs > 0 && cli_parse_pid(o->args[0], &pid) != 0)
    return cli_usage_error("cache", "cache: '%s' is not a process id", o->args[0]);
  int status = CLI_EXIT_OK;
  rmem_client *c = cli_connect(o, &status);
  if (c == NULL)
    return status;
  rmem_cache_info s;
  int rc = o->cache_flush ? rmem_cache_flush(c, pid, &s) : rmem_cache_stats(c, &s);
  if (rc != 0) {
    if (o->cache_flush && pid)
      status = cli_fail(o, c, rc, 0, "cache --flush %u", pid);
    else
      status = cli_fail(o, c, rc, 0, o->cache_flush ? "cache --flush" : "cache");
    rmem_close(c);
    return status;
  }
  if (o->json) {
    cli_json j;
    json_init(&j, stdout);
    json_obj_begin(&j);
    if (o->cache_flush && pid)
      json_kv_u64(&j, "flushed", pid);
    else if (o->cache_flush)
      json_kv_str(&j, "flushed", "all");
    json_kv_u64(&j, "size_limit", s.size_limit);
    json_kv_u64(&j, "bytes", s.bytes);
    json_kv_u64(&j, "pages", s.pages);
    json_kv_u64(&j, "hits", s.hits);
    json_kv_u64(&j, "misses", s.misses);
    json_kv_u64(&j, "evictions", s.evictions);
    json_kv_u64(&j, "invalidations", s.invalidations);
    json_obj_end(&j);
    json_finish(&j);
  } else {
    char a[16], b[16];
    if (o->cache_flush && pid)
      printf("flushed pid %u\n", pid);
    else if (o->cache_flush)
      printf("flushed every process\n");
    if (s.size_limit == 0)
      printf("size limit     off\n");
    else
      printf("size limit     %s (%" PRIu64 " bytes)\n", cli_human(s.size_limit, a, sizeof(a)),
             s.size_limit);
    printf("held           %s in %" PRIu64 " pages\n", cli_human(s.bytes, b, sizeof(b)), s.pages);
    printf("hits           %" PRIu64 "\n", s.hits);
    printf("misses         %" PRIu64 "\n", s.misses);
    printf("evictions      %" PRIu64 "\n", s.evictions);
    printf("invalidations  %" PRIu64 "\n", s.invalidations);
  }
  rmem_close(c);
  return status;
}
