/* Process handles that survive pid reuse, for the page cache: a pidfd, which
 * keeps naming the same process after its pid is recycled, and the process's
 * start time. */
#include "target.h"

#include "rmem_error.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Field 22 of /proc/PID/stat: clock ticks after boot when the process started. */
static int read_start_time(uint32_t pid, uint64_t *out) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%u/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  ssize_t n;
  do
    n = read(fd, buf, sizeof(buf) - 1);
  while (n < 0 && errno == EINTR);
  int e = errno;
  close(fd);
  if (n < 0)
    return -e;
  buf[n] = '\0';
  /* comm may hold spaces and parentheses: fields resume after the last ')'.
   * Field 3 (state) is the first one there, so field 22 is the 20th. */
  char *p = strrchr(buf, ')');
  if (p == NULL)
    return -ESRCH;
  p++;
  for (int field = 3; field < 22; field++) {
    p = strchr(p + 1, ' ');
    if (p == NULL)
      return -ESRCH;
  }
  char *end;
  unsigned long long v = strtoull(p + 1, &end, 10);
  if (end == p + 1)
    return -ESRCH;
  *out = v;
  return 0;
}

int target_pidfd_open(uint32_t pid, int *fd, uint64_t *start_time, codec_err *err) {
  *fd = -1;
#ifdef SYS_pidfd_open
  /* pidfds are close-on-exec. */
  int pfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
#else
  int pfd = -1;
  errno = ENOSYS;
#endif
  if (pfd < 0) {
    int e = errno;
    /* EINVAL: a thread id that is not a process id. */
    if (e == EINVAL || e == ENOSYS)
      return codec_fail(err, RMEM_EPARAM, "pid %u: no process handle (%s)", pid, strerror(e));
    return target__errno(e, pid, "pidfd", err);
  }
  uint64_t st = 0;
  int rc = read_start_time(pid, &st);
  /* The start time read belongs to the pidfd's process only if that one is
   * still alive now: its pid cannot be reused before it is reaped. */
  if (rc == 0 && target_pidfd_exited(pfd))
    rc = -ESRCH;
  if (rc < 0) {
    close(pfd);
    return target__errno(-rc, pid, "stat", err);
  }
  *fd = pfd;
  *start_time = st;
  return 0;
}

int target_pidfd_exited(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int n;
  do
    n = poll(&p, 1, 0);
  while (n < 0 && errno == EINTR);
  return n > 0;
}

uint32_t target_tgid(uint32_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%u/status", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n;
  do
    n = read(fd, buf, sizeof(buf) - 1);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  const char *t = strstr(buf, "\nTgid:");
  return t ? (uint32_t)strtoul(t + 6, NULL, 10) : 0;
}
