/* The process list, from /proc. */
#include "target.h"

#include "rmem_error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Command lines are cut after this many bytes (cmdline_truncated). */
#define PS_CMDLINE_MAX 4096

/* Fills `p` from /proc/PID; returns 0, or -1 when the process vanished or
 * could not be read (it is then left out). */
static int read_proc(uint32_t pid, long page, rmem_proc *p) {
  char path[64], *text = NULL;
  size_t len;
  memset(p, 0, sizeof(*p));
  p->pid = pid;

  snprintf(path, sizeof(path), "/proc/%u/stat", pid);
  if (target__read_file(path, &text, &len) < 0)
    return -1;
  /* comm may hold spaces and parentheses: it ends at the last ')'. */
  char *lp = strchr(text, '('), *rp = strrchr(text, ')');
  if (lp == NULL || rp == NULL || rp < lp) {
    free(text);
    return -1;
  }
  p->name = strndup(lp + 1, (size_t)(rp - lp - 1));
  /* Fields after comm: state(3) ppid(4) ... num_threads(20) ... rss(24). */
  char *f[24] = {0};
  int nf = 0;
  for (char *save, *t = strtok_r(rp + 1, " ", &save); t && nf < 24; t = strtok_r(NULL, " ", &save))
    f[nf++] = t;
  if (nf >= 22) {
    p->state = f[0][0];
    p->ppid = (uint32_t)strtoul(f[1], NULL, 10);
    p->threads = (uint32_t)strtoul(f[17], NULL, 10);
    p->rss = (uint64_t)strtoll(f[21], NULL, 10) * (uint64_t)page;
  }
  free(text);
  text = NULL;

  snprintf(path, sizeof(path), "/proc/%u/status", pid);
  if (target__read_file(path, &text, &len) == 0) {
    char *uid = strstr(text, "\nUid:");
    if (uid)
      p->uid = (uint32_t)strtoul(uid + 5, NULL, 10);
    free(text);
    text = NULL;
  }

  char exe[PATH_MAX];
  snprintf(path, sizeof(path), "/proc/%u/exe", pid);
  ssize_t n = readlink(path, exe, sizeof(exe) - 1);
  exe[n > 0 ? n : 0] = '\0';
  p->exe = strdup(exe);

  /* Only the first PS_CMDLINE_MAX bytes: command lines can be megabytes. */
  char cmd[PS_CMDLINE_MAX + 1];
  snprintf(path, sizeof(path), "/proc/%u/cmdline", pid);
  size_t clen = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t r;
    while (clen < sizeof(cmd) &&
           ((r = read(fd, cmd + clen, sizeof(cmd) - clen)) > 0 || (r < 0 && errno == EINTR)))
      clen += r > 0 ? (size_t)r : 0;
    close(fd);
  }
  if (clen > PS_CMDLINE_MAX) {
    clen = PS_CMDLINE_MAX;
    p->cmdline_truncated = 1;
  }
  if (clen > 0) {
    size_t argc = 0;
    for (size_t i = 0; i < clen; i++)
      if (cmd[i] == '\0' || i == clen - 1)
        argc++;
    p->argv = calloc(argc, sizeof(char *));
    if (p->argv) {
      for (size_t i = 0; i < clen && p->argc < argc;) {
        size_t l = strnlen(cmd + i, clen - i);
        p->argv[p->argc] = strndup(cmd + i, l);
        if (p->argv[p->argc] == NULL)
          break;
        p->argc++;
        i += l + 1;
      }
    }
  }
  free(text);
  return p->name && p->exe ? 0 : -1;
}

static void proc_free(rmem_proc *p) {
  free(p->name);
  free(p->exe);
  for (size_t i = 0; i < p->argc; i++)
    free(p->argv[i]);
  free(p->argv);
}

static int proc_cmp(const void *a, const void *b) {
  uint32_t x = ((const rmem_proc *)a)->pid, y = ((const rmem_proc *)b)->pid;
  return x < y ? -1 : x > y;
}

int target_ps(rmem_proc_list *out, codec_err *err) {
  memset(out, 0, sizeof(*out));
  DIR *d = opendir("/proc");
  if (d == NULL)
    return codec_fail(err, rmem_err_from_errno(errno), "/proc: %s", strerror(errno));
  long page = sysconf(_SC_PAGESIZE);
  size_t cap = 0;
  int rc = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    unsigned long pid = strtoul(e->d_name, &end, 10);
    if (*end || pid == 0 || pid > UINT32_MAX)
      continue;
    if (out->n == cap) {
      cap = cap ? cap * 2 : 256;
      rmem_proc *v = realloc(out->procs, cap * sizeof(*v));
      if (v == NULL) {
        rc = codec_fail(err, RMEM_ENOMEM, "ps: out of memory");
        break;
      }
      out->procs = v;
    }
    rmem_proc *p = &out->procs[out->n];
    if (read_proc((uint32_t)pid, page, p) == 0)
      out->n++;
    else
      proc_free(p);
  }
  closedir(d);
  if (rc < 0)
    rmem_proc_list_free(out);
  else
    qsort(out->procs, out->n, sizeof(*out->procs), proc_cmp); /* For `start` continuations. */
  return rc;
}
