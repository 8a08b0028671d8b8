/* rmem ps and rmem info. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static int by_pid(const void *a, const void *b) {
  const rmem_proc *x = a, *y = b;
  return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static void ps_json(const rmem_proc_list *l) {
  cli_json j;
  json_init(&j, stdout);
  json_obj_begin(&j);
  json_key(&j, "procs");
  json_arr_begin(&j);
  for (size_t i = 0; i < l->n; i++) {
    const rmem_proc *p = &l->procs[i];
    json_obj_begin(&j);
    json_kv_u64(&j, "pid", p->pid);
    json_kv_u64(&j, "ppid", p->ppid);
    json_kv_u64(&j, "uid", p->uid);
    json_kv_str(&j, "name", p->name);
    json_key(&j, "state");
    json_strn(&j, &p->state, p->state ? 1 : 0);
    json_kv_u64(&j, "threads", p->threads);
    json_kv_u64(&j, "rss", p->rss);
    json_kv_str(&j, "exe", p->exe);
    json_key(&j, "cmdline");
    json_arr_begin_flat(&j);
    for (size_t k = 0; k < p->argc; k++)
      json_str(&j, p->argv[k]);
    json_arr_end(&j);
    json_obj_end(&j);
  }
  json_arr_end(&j);
  json_obj_end(&j);
  json_finish(&j);
}

/* Prints at most `*room` display bytes of `s` (room < 0: no limit). */
static void put_limited(const char *s, int *room) {
  for (; *s; s++) {
    if (*room == 0)
      return;
    unsigned char c = (unsigned char)*s;
    putchar(c < 0x20 || c == 0x7f ? '?' : c);
    /* Count UTF-8 lead bytes only, so multibyte names are not cut short. */
    if (*room > 0 && (c & 0xc0) != 0x80)
      (*room)--;
  }
}

static void ps_table(const rmem_proc_list *l) {
  int width = cli_term_width();
  printf("%7s %7s %6s S %4s %7s %-16s %s\n", "PID", "PPID", "UID", "THR", "RSS", "NAME", "COMMAND");
  for (size_t i = 0; i < l->n; i++) {
    const rmem_proc *p = &l->procs[i];
    char rss[16];
    int n = printf("%7u %7u %6u %c %4u %7s ", p->pid, p->ppid, p->uid, p->state ? p->state : '?',
                   p->threads, cli_human(p->rss, rss, sizeof(rss)));
    /* comm is at most 15 bytes. */
    char name[17];
    snprintf(name, sizeof(name), "%s", p->name);
    for (char *q = name; *q; q++)
      *q = (unsigned char)*q < 0x20 || *q == 0x7f ? '?' : *q;
    n += printf("%-16s ", name);
    int room = width > 0 ? (width > n ? width - n : 0) : -1;
    if (p->argc == 0) {
      put_limited("[", &room);
      put_limited(p->name, &room);
      put_limited("]", &room);
    }
    for (size_t k = 0; k < p->argc; k++) {
      if (k)
        put_limited(" ", &room);
      put_limited(p->argv[k], &room);
    }
    putchar('\n');
  }
}

int cmd_ps(const cli_opts *o) {
  int status;
  rmem_client *c = cli_connect(o, &status);
  if (c == NULL)
    return status;
  rmem_proc_list l = {0};
  int rc = rmem_ps(c, &l);
  if (rc != 0) {
    status = cli_fail(o, c, rc, 0, "ps");
  } else {
    qsort(l.procs, l.n, sizeof(*l.procs), by_pid);
    if (o->json)
      ps_json(&l);
    else
      ps_table(&l);
    status = CLI_EXIT_OK;
  }
  rmem_proc_list_free(&l);
  rmem_close(c);
  return status;
}

int cmd_info(const cli_opts *o) {
  int status;
  rmem_client *c = cli_connect(o, &status);
  if (c == NULL)
    return status;
  const rmem_agent_info *in = rmem_info(c);
  char server[300];
  snprintf(server, sizeof(server), strchr(o->host, ':') ? "[%s]:%u" : "%s:%u", o->host,
           (unsigned)o->port);
  if (o->json) {
    cli_json j;
    json_init(&j, stdout);
    json_obj_begin(&j);
    json_kv_str(&j, "server", server);
    json_kv_u64(&j, "version", in->version);
    json_kv_str(&j, "agent", in->agent);
    json_key(&j, "methods");
    json_arr_begin_flat(&j);
    for (size_t i = 0; i < in->nmethods; i++)
      json_str(&j, in->methods[i]);
    json_arr_end(&j);
    json_key(&j, "limits");
    json_obj_begin(&j);
    json_kv_u64(&j, "max_frame", in->max_frame);
    json_kv_u64(&j, "max_read", in->max_read);
    json_kv_u64(&j, "max_write", in->max_write);
    json_kv_u64(&j, "max_inflight", in->max_inflight);
    json_obj_end(&j);
    json_kv_str(&j, "os", in->os);
    json_kv_str(&j, "arch", in->arch);
    json_kv_u64(&j, "page_size", in->page_size);
    json_kv_u64(&j, "pointer_size", in->pointer_size);
    json_kv_bool(&j, "tls", in->tls);
    json_kv_str(&j, "auth", in->auth[0] ? in->auth : "none");
    json_kv_str(&j, "compress", in->compress[0] ? in->compress : "none");
    json_obj_end(&j);
    json_finish(&j);
  } else {
    char a[16], b[16], d[16];
    printf("server        %s\n", server);
    printf("agent         %s\n", in->agent);
    printf("protocol      %u\n", in->version);
    printf("os / arch     %s %s\n", in->os, in->arch);
    printf("page size     %u\n", in->page_size);
    printf("pointer size  %u\n", in->pointer_size);
    printf("transport     %s\n", in->tls ? "TLS" : "plaintext");
    printf("auth          %s\n", in->auth[0] ? in->auth : "none");
    printf("compression   %s\n", in->compress[0] ? in->compress : "none");
    printf("max_frame     %llu (%s)\n", (unsigned long long)in->max_frame,
           cli_human(in->max_frame, a, sizeof(a)));
    printf("max_read      %llu (%s)\n", (unsigned long long)in->max_read,
           cli_human(in->max_read, b, sizeof(b)));
    printf("max_write     %llu (%s)\n", (unsigned long long)in->max_write,
           cli_human(in->max_write, d, sizeof(d)));
    printf("max_inflight  %u\n", in->max_inflight);
    printf("methods      ");
    for (size_t i = 0; i < in->nmethods; i++)
      printf(" %s", in->methods[i]);
    putchar('\n');
  }
  rmem_close(c);
  return CLI_EXIT_OK;
}
