/* The memory map of a target: /proc/PID/maps parsed and annotated. */
#include "target.h"

#include "msg.h"
#include "rmem_error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

int target__errno(int e, uint32_t pid, const char *what, codec_err *err) {
  int code = rmem_err_from_errno(e);
  /* Clients print the code's own text before this message: do not repeat it. */
  if (code == RMEM_ENOPROC)
    return codec_fail(err, code, "pid %u", pid);
  return codec_fail(err, code, "%s of pid %u: %s", what, pid, strerror(e));
}

int target__read_file(const char *path, char **buf, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  size_t cap = 65536, n = 0;
  char *p = malloc(cap);
  int rc = 0;
  if (p == NULL) {
    rc = -ENOMEM;
    goto exit;
  }
  for (;;) {
    if (cap - n < 4096) {
      char *q = realloc(p, cap * 2);
      if (q == NULL) {
        rc = -ENOMEM;
        goto exit;
      }
      p = q;
      cap *= 2;
    }
    ssize_t r = read(fd, p + n, cap - n - 1);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      rc = -errno;
      goto exit;
    }
    if (r == 0)
      break;
    n += (size_t)r;
  }
  p[n] = '\0';
  *buf = p;
  *len = n;
  p = NULL;
exit:
  free(p);
  close(fd);
  return rc;
}

static uint64_t hex(const char **s) {
  uint64_t v = 0;
  const char *p = *s;
  for (;; p++) {
    unsigned c = (unsigned char)*p;
    if (c - '0' < 10)
      v = v << 4 | (c - '0');
    else if ((c | 0x20) - 'a' < 6)
      v = v << 4 | ((c | 0x20) - 'a' + 10);
    else
      break;
  }
  *s = p;
  return v;
}

static uint64_t dec(const char **s) {
  uint64_t v = 0;
  const char *p = *s;
  while ((unsigned)(*p - '0') < 10)
    v = v * 10 + (uint64_t)(*p++ - '0');
  *s = p;
  return v;
}

/* Parses "start-end perms offset maj:min inode   path" in place. */
static int parse_vma(char *line, target_vma *v) {
  const char *p = line;
  memset(v, 0, sizeof(*v));
  v->start = hex(&p);
  if (*p++ != '-')
    return -1;
  v->end = hex(&p);
  if (*p++ != ' ' || strlen(p) < 5)
    return -1;
  v->prot = (p[0] == 'r' ? RMEM_PROT_R : 0) | (p[1] == 'w' ? RMEM_PROT_W : 0) |
            (p[2] == 'x' ? RMEM_PROT_X : 0);
  v->shared = p[3] == 's';
  p += 5;
  v->offset = hex(&p);
  p++;
  v->dev_major = (uint32_t)hex(&p);
  if (*p == ':')
    p++;
  v->dev_minor = (uint32_t)hex(&p);
  p++;
  v->inode = dec(&p);
  while (*p == ' ')
    p++;
  v->path = p;
  return v->end > v->start ? 0 : -1;
}

static const struct {
  const char *key;
  size_t off;
} smaps_keys[] = {
    {"Rss", offsetof(rmem_smaps, rss)},
    {"Pss", offsetof(rmem_smaps, pss)},
    {"Shared_Clean", offsetof(rmem_smaps, shared_clean)},
    {"Shared_Dirty", offsetof(rmem_smaps, shared_dirty)},
    {"Private_Clean", offsetof(rmem_smaps, private_clean)},
    {"Private_Dirty", offsetof(rmem_smaps, private_dirty)},
    {"Referenced", offsetof(rmem_smaps, referenced)},
    {"Anonymous", offsetof(rmem_smaps, anonymous)},
    {"Swap", offsetof(rmem_smaps, swap)},
    {"SwapPss", offsetof(rmem_smaps, swap_pss)},
    {"AnonHugePages", offsetof(rmem_smaps, anon_huge)},
    {"Locked", offsetof(rmem_smaps, locked)},
};

static void parse_smaps_field(char *line, rmem_smaps *s) {
  char *colon = strchr(line, ':');
  if (colon == NULL)
    return;
  *colon = '\0';
  const char *val = colon + 1;
  while (*val == ' ' || *val == '\t')
    val++;
  if (strcmp(line, "VmFlags") == 0) {
    snprintf(s->vmflags, sizeof(s->vmflags), "%s", val);
    size_t n = strlen(s->vmflags);
    while (n > 0 && s->vmflags[n - 1] == ' ')
      s->vmflags[--n] = '\0';
    return;
  }
  for (size_t i = 0; i < sizeof(smaps_keys) / sizeof(smaps_keys[0]); i++) {
    if (strcmp(line, smaps_keys[i].key) == 0) {
      /* smaps reports kB. */
      *(uint64_t *)((char *)s + smaps_keys[i].off) = dec(&val) * 1024;
      return;
    }
  }
}

int target_vmas_load(uint32_t pid, int smaps, target_vmas *out, codec_err *err) {
  memset(out, 0, sizeof(*out));
  char path[64];
  snprintf(path, sizeof(path), "/proc/%u/%s", pid, smaps ? "smaps" : "maps");
  size_t len;
  int rc = target__read_file(path, &out->text, &len);
  if (rc < 0)
    return target__errno(-rc, pid, "memory map", err);
  size_t cap = 0;
  char *line = out->text;
  while (*line) {
    char *nl = strchr(line, '\n');
    if (nl)
      *nl = '\0';
    /* Region lines start with a lowercase hex address; smaps fields with a capital. */
    int is_region = (*line >= '0' && *line <= '9') || (*line >= 'a' && *line <= 'f');
    if (is_region) {
      if (out->n == cap) {
        cap = cap ? cap * 2 : 256;
        target_vma *v = realloc(out->v, cap * sizeof(*v));
        if (v == NULL) {
          target_vmas_free(out);
          return codec_fail(err, RMEM_ENOMEM, "memory map of pid %u: out of memory", pid);
        }
        out->v = v;
      }
      if (parse_vma(line, &out->v[out->n]) == 0) {
        out->v[out->n].has_smaps = smaps;
        out->n++;
      }
    } else if (smaps && out->n > 0) {
      parse_smaps_field(line, &out->v[out->n - 1].smaps);
    }
    if (nl == NULL)
      break;
    line = nl + 1;
  }
  /* The kernel lists a live process's map in address order; an empty map
   * means a zombie or a kernel thread. */
  return 0;
}

void target_vmas_free(target_vmas *m) {
  free(m->v);
  free(m->text);
  memset(m, 0, sizeof(*m));
}

size_t target_vmas_find(const target_vmas *m, uint64_t addr) {
  size_t lo = 0, hi = m->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (m->v[mid].end <= addr)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Stack pointers of the target's threads, from /proc/PID/task/TID/syscall. */
typedef struct {
  uint32_t tid;
  uint64_t sp;
} thread_sp;

static size_t load_thread_sps(uint32_t pid, thread_sp **out) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%u/task", pid);
  DIR *d = opendir(path);
  *out = NULL;
  if (d == NULL)
    return 0;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    unsigned long tid = strtoul(e->d_name, &end, 10);
    if (*end || tid == 0)
      continue;
    char file[96], text[256];
    snprintf(file, sizeof(file), "/proc/%u/task/%lu/syscall", pid, tid);
    /* A thread that is running has no saved stack pointer; look again a few
     * times before giving up on it. */
    for (int tries = 0; tries < 3; tries++) {
      int fd = open(file, O_RDONLY | O_CLOEXEC);
      if (fd < 0)
        break;
      ssize_t r = read(fd, text, sizeof(text) - 1);
      close(fd);
      if (r <= 0)
        break;
      text[r] = '\0';
      if (strncmp(text, "running", 7) == 0)
        continue;
      /* "nr args... sp pc" or "-1 sp pc": the stack pointer is the second-last field. */
      char *tok[9];
      int nt = 0;
      for (char *save, *t = strtok_r(text, " \n", &save); t && nt < 9;
           t = strtok_r(NULL, " \n", &save))
        tok[nt++] = t;
      if (nt < 3)
        break;
      if (n == cap) {
        cap = cap ? cap * 2 : 16;
        thread_sp *v = realloc(*out, cap * sizeof(*v));
        if (v == NULL)
          break;
        *out = v;
      }
      (*out)[n].tid = (uint32_t)tid;
      (*out)[n].sp = strtoull(tok[nt - 2], NULL, 16);
      n++;
      break;
    }
  }
  closedir(d);
  return n;
}

/* Whether the file behind a region starts with the ELF magic. Tries the
 * map_files link first (it works for deleted files and other mount
 * namespaces), then the path seen from the target's root. */
static int is_elf(uint32_t pid, const target_vma *v) {
  char path[PATH_MAX + 64];
  snprintf(path, sizeof(path), "/proc/%u/map_files/%llx-%llx", pid, (unsigned long long)v->start,
           (unsigned long long)v->end);
  struct stat st;
  if (stat(path, &st) != 0 && v->path[0] == '/') {
    snprintf(path, sizeof(path), "/proc/%u/root%s", pid, v->path);
    if (stat(path, &st) != 0)
      return 0;
  }
  /* Never open devices: opening some has side effects. */
  if (!S_ISREG(st.st_mode))
    return 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0)
    return 0;
  unsigned char magic[4];
  int elf = pread(fd, magic, 4, 0) == 4 && memcmp(magic, "\177ELF", 4) == 0;
  close(fd);
  return elf;
}

typedef struct {
  uint64_t inode;
  uint32_t major, minor;
  int elf;
} file_kind;

static const char deleted_suffix[] = " (deleted)";

/* Fills one region from a vma: everything but alloc_base and thread stacks. */
static int fill_region(rmem_region *r, const target_vma *v, uint32_t pid) {
  memset(r, 0, sizeof(*r));
  r->base = v->start;
  r->size = v->end - v->start;
  r->prot = v->prot;
  r->shared = v->shared;
  r->offset = v->offset;
  r->inode = v->inode;
  r->dev_major = v->dev_major;
  r->dev_minor = v->dev_minor;
  r->state = v->prot ? RMEM_STATE_COMMIT : RMEM_STATE_RESERVE;
  r->alloc_base = v->start;
  r->has_smaps = v->has_smaps;
  r->smaps = v->smaps;
  size_t plen = strlen(v->path);
  if (plen > sizeof(deleted_suffix) - 1 &&
      strcmp(v->path + plen - (sizeof(deleted_suffix) - 1), deleted_suffix) == 0) {
    r->deleted = 1;
    plen -= sizeof(deleted_suffix) - 1;
  }
  if (plen) {
    r->path = strndup(v->path, plen);
    if (r->path == NULL)
      return RMEM_ENOMEM;
  }
  const char *p = v->path;
  if (v->inode != 0)
    r->type = RMEM_TYPE_MAPPED; /* Refined to image once the file is checked. */
  else if (v->shared)
    r->type = RMEM_TYPE_MAPPED;
  else
    r->type = RMEM_TYPE_PRIVATE;
  if (strcmp(p, "[heap]") == 0) {
    r->usage = RMEM_USAGE_HEAP;
  } else if (strcmp(p, "[stack]") == 0) {
    r->usage = RMEM_USAGE_STACK;
    r->tid = pid;
  } else if (strcmp(p, "[vdso]") == 0) {
    r->usage = RMEM_USAGE_VDSO;
    r->type = RMEM_TYPE_IMAGE;
  } else if (strncmp(p, "[vvar", 5) == 0) {
    r->usage = RMEM_USAGE_VVAR;
    r->type = RMEM_TYPE_MAPPED;
  } else if (strcmp(p, "[vsyscall]") == 0) {
    r->usage = RMEM_USAGE_VSYSCALL;
    r->type = RMEM_TYPE_MAPPED;
  }
  return 0;
}

static int is_plain_anon(const rmem_region *r) {
  return r->inode == 0 && !r->shared && r->path == NULL && r->usage == RMEM_USAGE_NONE;
}

/* Groups regions into allocations (see PROTOCOL.md, map, alloc_base). */
static void assign_alloc_bases(rmem_region *r, size_t n) {
  for (size_t i = 1; i < n; i++) {
    rmem_region *prev = &r[i - 1], *cur = &r[i];
    if (prev->base + prev->size != cur->base)
      continue;
    if (cur->inode != 0 && cur->inode == prev->inode && cur->dev_major == prev->dev_major &&
        cur->dev_minor == prev->dev_minor) {
      cur->alloc_base = prev->alloc_base;
    } else if (prev->type == RMEM_TYPE_IMAGE && prev->inode != 0 && (prev->prot & RMEM_PROT_W) &&
               is_plain_anon(cur) && cur->prot != 0) {
      cur->alloc_base = prev->alloc_base; /* .bss after a module's data segment. */
    } else if (cur->usage == RMEM_USAGE_THREAD_STACK && prev->prot == 0 && is_plain_anon(prev)) {
      prev->alloc_base = prev->base; /* The guard below a thread stack. */
      cur->alloc_base = prev->base;
    } else if (cur->prot == 0 && is_plain_anon(cur) &&
               (is_plain_anon(prev) || prev->usage == RMEM_USAGE_THREAD_STACK)) {
      cur->alloc_base = prev->alloc_base; /* A reservation's inaccessible tail. */
    }
  }
}

/* Adds free gaps between mappings. Takes ownership of *r on success. */
static int add_free_gaps(rmem_region **r, size_t *n) {
  size_t gaps = 0;
  for (size_t i = 1; i < *n; i++)
    if ((*r)[i - 1].base + (*r)[i - 1].size < (*r)[i].base && (*r)[i].usage != RMEM_USAGE_VSYSCALL)
      gaps++;
  if (gaps == 0)
    return 0;
  rmem_region *out = calloc(*n + gaps, sizeof(*out));
  if (out == NULL)
    return RMEM_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < *n; i++) {
    if (i > 0) {
      uint64_t end = (*r)[i - 1].base + (*r)[i - 1].size;
      if (end < (*r)[i].base && (*r)[i].usage != RMEM_USAGE_VSYSCALL) {
        rmem_region *g = &out[k++];
        g->base = end;
        g->size = (*r)[i].base - end;
        g->alloc_base = end;
        g->state = RMEM_STATE_FREE;
        g->type = RMEM_TYPE_NONE;
      }
    }
    out[k++] = (*r)[i];
  }
  free(*r);
  *r = out;
  *n = k;
  return 0;
}

int target_map(uint32_t pid, unsigned flags, uint64_t start, rmem_memmap *out, codec_err *err) {
  memset(out, 0, sizeof(*out));
  out->pid = pid;
  target_vmas m;
  thread_sp *sps = NULL;
  file_kind *files = NULL;
  size_t nfiles = 0;
  int rc = target_vmas_load(pid, (flags & RMEM_MAP_DETAIL) != 0, &m, err);
  if (rc < 0)
    return rc;

  char path[64];
  struct stat exe_st;
  snprintf(path, sizeof(path), "/proc/%u/exe", pid);
  int have_exe = stat(path, &exe_st) == 0;
  char exe_path[PATH_MAX];
  ssize_t exe_len = readlink(path, exe_path, sizeof(exe_path) - 1);
  exe_path[exe_len > 0 ? exe_len : 0] = '\0';
  size_t nsps = load_thread_sps(pid, &sps);

  out->regions = calloc(m.n ? m.n : 1, sizeof(*out->regions));
  if (out->regions == NULL) {
    rc = codec_fail(err, RMEM_ENOMEM, "map of pid %u: out of memory", pid);
    goto exit;
  }
  for (size_t i = 0; i < m.n; i++) {
    rmem_region *r = &out->regions[i];
    const target_vma *v = &m.v[i];
    if (fill_region(r, v, pid) != 0) {
      out->n = i + 1;
      rc = codec_fail(err, RMEM_ENOMEM, "map of pid %u: out of memory", pid);
      goto exit;
    }
    out->n = i + 1;
    if (v->inode != 0) {
      file_kind *f = NULL;
      for (size_t k = 0; k < nfiles && f == NULL; k++)
        if (files[k].inode == v->inode && files[k].major == v->dev_major &&
            files[k].minor == v->dev_minor)
          f = &files[k];
      if (f == NULL) {
        file_kind *nf = realloc(files, (nfiles + 1) * sizeof(*nf));
        if (nf != NULL) {
          files = nf;
          f = &files[nfiles++];
          f->inode = v->inode;
          f->major = v->dev_major;
          f->minor = v->dev_minor;
          f->elf = is_elf(pid, v);
        }
      }
      if (f && f->elf) {
        r->type = RMEM_TYPE_IMAGE;
        r->usage = RMEM_USAGE_MODULE;
        r->main_exe =
            (have_exe && exe_st.st_ino == v->inode && major(exe_st.st_dev) == v->dev_major &&
             minor(exe_st.st_dev) == v->dev_minor) ||
            (r->path && exe_path[0] && strcmp(r->path, exe_path) == 0);
      }
    }
    for (size_t k = 0; k < nsps; k++) {
      /* Only unlabelled anonymous memory: a stack pointer inside [heap] or a
       * module (green threads, sigaltstack) does not relabel it. */
      if (sps[k].sp >= v->start && sps[k].sp < v->end && r->usage == RMEM_USAGE_NONE &&
          r->inode == 0) {
        r->usage = RMEM_USAGE_THREAD_STACK;
        r->tid = sps[k].tid;
      }
    }
  }
  assign_alloc_bases(out->regions, out->n);
  if ((flags & RMEM_MAP_FREE) && add_free_gaps(&out->regions, &out->n) != 0) {
    rc = codec_fail(err, RMEM_ENOMEM, "map of pid %u: out of memory", pid);
    goto exit;
  }
  if (start > 0) {
    size_t skip = 0;
    /* A region that straddles `start` is listed, so continuations never lose it. */
    while (skip < out->n && out->regions[skip].base + out->regions[skip].size <= start)
      free(out->regions[skip++].path);
    memmove(out->regions, out->regions + skip, (out->n - skip) * sizeof(*out->regions));
    out->n -= skip;
  }
exit:
  if (rc < 0)
    rmem_memmap_free(out);
  free(files);
  free(sps);
  target_vmas_free(&m);
  return rc;
}
