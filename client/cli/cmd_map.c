/* rmem map: the memory map as a VMMap-style table, or as JSON. */
#include "cli.h"

#include <inttypes.h>
#include <string.h>

static const char *state_name(int s) {
  return s == RMEM_STATE_COMMIT ? "commit" : s == RMEM_STATE_RESERVE ? "reserve" : "free";
}

static const char *type_name(int t) {
  switch (t) {
  case RMEM_TYPE_IMAGE:
    return "image";
  case RMEM_TYPE_MAPPED:
    return "mapped";
  case RMEM_TYPE_PRIVATE:
    return "private";
  }
  return "";
}

static const char *usage_name(int u) {
  static const char *const names[] = {NULL,   "heap", "stack",    "thread_stack",
                                      "vdso", "vvar", "vsyscall", "module"};
  return u > 0 && u < (int)(sizeof(names) / sizeof(names[0])) ? names[u] : NULL;
}

static void prot_str(const rmem_region *r, char out[5]) {
  if (r->state == RMEM_STATE_FREE) {
    memcpy(out, "    ", 5);
    return;
  }
  out[0] = r->prot & RMEM_PROT_R ? 'r' : '-';
  out[1] = r->prot & RMEM_PROT_W ? 'w' : '-';
  out[2] = r->prot & RMEM_PROT_X ? 'x' : '-';
  out[3] = r->shared ? 's' : 'p';
  out[4] = '\0';
}

static const char *base_name(const char *path) {
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

/* The region that starts at `base`, by binary search (regions are sorted). */
static const rmem_region *find_base(const rmem_memmap *m, uint64_t base) {
  size_t lo = 0, hi = m->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (m->regions[mid].base < base)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < m->n && m->regions[lo].base == base ? &m->regions[lo] : NULL;
}

/* How a module is named in the details column. */
static void module_label(const rmem_region *r, char *out, size_t n) {
  if (r->main_exe)
    snprintf(out, n, "main exe %s%s", r->path, r->deleted ? " (deleted)" : "");
  else
    snprintf(out, n, "module %s%s", base_name(r->path), r->deleted ? " (deleted)" : "");
}

/* The Details column: what the region holds, in a few words. */
static void details(const rmem_memmap *m, size_t i, char *out, size_t n) {
  const rmem_region *r = &m->regions[i];
  out[0] = '\0';
  if (r->state == RMEM_STATE_FREE)
    return;
  switch (r->usage) {
  case RMEM_USAGE_HEAP:
    snprintf(out, n, "heap");
    return;
  case RMEM_USAGE_STACK:
    snprintf(out, n, "stack (main, tid %u)", r->tid);
    return;
  case RMEM_USAGE_THREAD_STACK:
    snprintf(out, n, "thread stack tid %u", r->tid);
    return;
  case RMEM_USAGE_VDSO:
    snprintf(out, n, "vdso");
    return;
  case RMEM_USAGE_VVAR:
    snprintf(out, n, "vvar");
    return;
  case RMEM_USAGE_VSYSCALL:
    snprintf(out, n, "vsyscall");
    return;
  }
  if (r->path && r->type == RMEM_TYPE_IMAGE) {
    module_label(r, out, n);
    return;
  }
  if (r->path) {
    snprintf(out, n, "%s%s", r->path, r->deleted ? " (deleted)" : "");
    return;
  }
  /* Anonymous memory: say what it belongs to. */
  const rmem_region *next = i + 1 < m->n ? &m->regions[i + 1] : NULL;
  if (r->state == RMEM_STATE_RESERVE && next && next->base == r->base + r->size &&
      next->alloc_base == r->alloc_base) {
    if (next->usage == RMEM_USAGE_THREAD_STACK) {
      snprintf(out, n, "guard (thread stack tid %u)", next->tid);
      return;
    }
    if (next->usage == RMEM_USAGE_STACK) {
      snprintf(out, n, "guard (main stack)");
      return;
    }
  }
  const rmem_region *head = r->alloc_base != r->base ? find_base(m, r->alloc_base) : NULL;
  if (head && head->type == RMEM_TYPE_IMAGE && head->path) {
    char label[300];
    module_label(head, label, sizeof(label));
    snprintf(out, n, "%s (.bss)", label);
    return;
  }
  if (r->state == RMEM_STATE_RESERVE)
    snprintf(out, n, head ? "reserved (tail of 0x%" PRIx64 ")" : "reserved", r->alloc_base);
}

typedef struct {
  size_t regions, gaps;
  uint64_t committed, image, mapped, private_, reserved, free;
  uint64_t rss, pss, dirty, swap;
} summary;

static summary summarize(const rmem_memmap *m) {
  summary s = {0};
  for (size_t i = 0; i < m->n; i++) {
    const rmem_region *r = &m->regions[i];
    if (r->state == RMEM_STATE_FREE) {
      s.gaps++;
      s.free += r->size;
      continue;
    }
    s.regions++;
    if (r->state == RMEM_STATE_RESERVE) {
      s.reserved += r->size;
    } else {
      s.committed += r->size;
      if (r->type == RMEM_TYPE_IMAGE)
        s.image += r->size;
      else if (r->type == RMEM_TYPE_MAPPED)
        s.mapped += r->size;
      else
        s.private_ += r->size;
    }
    if (r->has_smaps) {
      s.rss += r->smaps.rss;
      s.pss += r->smaps.pss;
      s.dirty += r->smaps.shared_dirty + r->smaps.private_dirty;
      s.swap += r->smaps.swap;
    }
  }
  return s;
}

static void map_json(const rmem_memmap *m, const summary *s, int detail) {
  cli_json j;
  json_init(&j, stdout);
  json_obj_begin(&j);
  json_kv_u64(&j, "pid", m->pid);
  json_key(&j, "regions");
  json_arr_begin(&j);
  for (size_t i = 0; i < m->n; i++) {
    const rmem_region *r = &m->regions[i];
    char prot[5], det[512];
    prot_str(r, prot);
    details(m, i, det, sizeof(det));
    json_obj_begin(&j);
    json_kv_addr(&j, "base", r->base);
    json_kv_addr(&j, "end", r->base + r->size);
    json_kv_u64(&j, "size", r->size);
    json_kv_str(&j, "prot", r->state == RMEM_STATE_FREE ? "----" : prot);
    json_kv_bool(&j, "shared", r->shared);
    json_kv_str(&j, "state", state_name(r->state));
    if (r->state != RMEM_STATE_FREE)
      json_kv_str(&j, "type", type_name(r->type));
    json_kv_addr(&j, "alloc_base", r->alloc_base);
    if (r->inode) {
      char dev[24];
      snprintf(dev, sizeof(dev), "%02x:%02x", r->dev_major, r->dev_minor);
      json_kv_u64(&j, "offset", r->offset);
      json_kv_str(&j, "dev", dev);
      json_kv_u64(&j, "inode", r->inode);
    }
    if (r->path)
      json_kv_str(&j, "path", r->path);
    if (r->deleted)
      json_kv_bool(&j, "deleted", 1);
    if (usage_name(r->usage))
      json_kv_str(&j, "usage", usage_name(r->usage));
    if (r->usage == RMEM_USAGE_STACK || r->usage == RMEM_USAGE_THREAD_STACK)
      json_kv_u64(&j, "tid", r->tid);
    if (r->main_exe)
      json_kv_bool(&j, "main", 1);
    if (det[0])
      json_kv_str(&j, "details", det);
    if (r->has_smaps) {
      const rmem_smaps *sm = &r->smaps;
      json_key(&j, "smaps");
      json_obj_begin(&j);
      json_kv_u64(&j, "rss", sm->rss);
      json_kv_u64(&j, "pss", sm->pss);
      json_kv_u64(&j, "shared_clean", sm->shared_clean);
      json_kv_u64(&j, "shared_dirty", sm->shared_dirty);
      json_kv_u64(&j, "private_clean", sm->private_clean);
      json_kv_u64(&j, "private_dirty", sm->private_dirty);
      json_kv_u64(&j, "referenced", sm->referenced);
      json_kv_u64(&j, "anonymous", sm->anonymous);
      json_kv_u64(&j, "swap", sm->swap);
      json_kv_u64(&j, "swap_pss", sm->swap_pss);
      json_kv_u64(&j, "anon_huge", sm->anon_huge);
      json_kv_u64(&j, "locked", sm->locked);
      json_kv_str(&j, "vmflags", sm->vmflags);
      json_obj_end(&j);
    }
    json_obj_end(&j);
  }
  json_arr_end(&j);
  json_key(&j, "summary");
  json_obj_begin(&j);
  json_kv_u64(&j, "regions", s->regions);
  if (s->gaps)
    json_kv_u64(&j, "free_gaps", s->gaps);
  json_kv_u64(&j, "committed", s->committed);
  json_kv_u64(&j, "image", s->image);
  json_kv_u64(&j, "mapped", s->mapped);
  json_kv_u64(&j, "private", s->private_);
  json_kv_u64(&j, "reserved", s->reserved);
  if (detail) {
    json_kv_u64(&j, "rss", s->rss);
    json_kv_u64(&j, "pss", s->pss);
    json_kv_u64(&j, "dirty", s->dirty);
    json_kv_u64(&j, "swap", s->swap);
  }
  json_obj_end(&j);
  json_obj_end(&j);
  json_finish(&j);
}

static void map_table(const rmem_memmap *m, const summary *s, int detail) {
  /* 12 hex digits cover user space; kernel-side pages (vsyscall) need 16. */
  int w = 12;
  for (size_t i = 0; i < m->n; i++) {
    if (m->regions[i].base + m->regions[i].size > (1ull << 48))
      w = 16;
  }
  printf("%-*s %7s %-4s %-7s %-7s %-*s", 2 * w + 1, "Address range", "Size", "Prot", "State",
         "Type", w, "Alloc base");
  if (detail)
    printf(" %7s %7s %7s %7s", "RSS", "PSS", "Dirty", "Swap");
  printf("  Details\n");
  char line[1024];
  for (size_t i = 0; i < m->n; i++) {
    const rmem_region *r = &m->regions[i];
    char size[16], prot[5], det[512];
    prot_str(r, prot);
    details(m, i, det, sizeof(det));
    int pos = snprintf(line, sizeof(line), "%0*" PRIx64 "-%0*" PRIx64 " %7s %-4s %-7s %-7s ", w,
                       r->base, w, r->base + r->size, cli_human(r->size, size, sizeof(size)), prot,
                       state_name(r->state), type_name(r->type));
    if (r->state == RMEM_STATE_FREE)
      pos += snprintf(line + pos, sizeof(line) - (size_t)pos, "%-*s", w, "");
    else
      pos += snprintf(line + pos, sizeof(line) - (size_t)pos, "%0*" PRIx64, w, r->alloc_base);
    if (detail) {
      /* Zero figures stay blank, so the ones that matter stand out. */
      const uint64_t v[4] = {r->smaps.rss, r->smaps.pss,
                             r->smaps.shared_dirty + r->smaps.private_dirty, r->smaps.swap};
      for (int k = 0; k < 4; k++) {
        char h[16] = "";
        if (r->has_smaps && v[k])
          cli_human(v[k], h, sizeof(h));
        pos += snprintf(line + pos, sizeof(line) - (size_t)pos, " %7s", h);
      }
    }
    while (!det[0] && pos > 0 && line[pos - 1] == ' ')
      line[--pos] = '\0';
    fputs(line, stdout);
    if (det[0]) {
      fputs("  ", stdout);
      cli_put_clean(stdout, det);
    }
    putchar('\n');
  }
  char a[16], b[16], c[16], d[16], e[16];
  printf("%zu regions", s->regions);
  if (s->gaps)
    printf(" and %zu free gaps", s->gaps);
  printf("; committed %s (image %s, mapped %s, private %s); reserved %s",
         cli_human(s->committed, a, sizeof(a)), cli_human(s->image, b, sizeof(b)),
         cli_human(s->mapped, c, sizeof(c)), cli_human(s->private_, d, sizeof(d)),
         cli_human(s->reserved, e, sizeof(e)));
  if (detail) {
    printf("; RSS %s, PSS %s, dirty %s, swap %s", cli_human(s->rss, a, sizeof(a)),
           cli_human(s->pss, b, sizeof(b)), cli_human(s->dirty, c, sizeof(c)),
           cli_human(s->swap, d, sizeof(d)));
  }
  putchar('\n');
}

int cmd_map(const cli_opts *o) {
  uint32_t pid;
  if (cli_parse_pid(o->args[0], &pid) != 0)
    return cli_usage_error("map", "map: '%s' is not a process id", o->args[0]);
  int status;
  rmem_client *c = cli_connect(o, &status);
  if (c == NULL)
    return status;
  unsigned flags = (o->map_free ? RMEM_MAP_FREE : 0) | (o->map_detail ? RMEM_MAP_DETAIL : 0);
  rmem_memmap m = {0};
  int rc = rmem_map(c, pid, flags, &m);
  if (rc != 0) {
    status = cli_fail(o, c, rc, 0, "map %u", pid);
  } else {
    summary s = summarize(&m);
    if (o->json)
      map_json(&m, &s, o->map_detail);
    else
      map_table(&m, &s, o->map_detail);
    status = CLI_EXIT_OK;
  }
  rmem_memmap_free(&m);
  rmem_close(c);
  return status;
}
