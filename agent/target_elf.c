/* The target's pointer size, for following its pointers (deref). A 64-bit
 * agent serves 32-bit processes too, whose pointers are 4 bytes wide; the
 * ELF class of the running executable says which kind a process is. */
#include "target.h"

#include "rmem_error.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int target_ptr_size(uint32_t pid, codec_err *err) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%u/exe", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    /* Only a process that is gone is an error: one whose executable we may
     * not open (execute-only, kernel threads) may still have readable
     * memory, and its reads will say what is wrong. */
    snprintf(path, sizeof(path), "/proc/%u", pid);
    if ((e == ENOENT || e == ESRCH) && access(path, F_OK) != 0)
      return target__errno(ESRCH, pid, "executable", err);
    return (int)sizeof(void *);
  }
  unsigned char ident[EI_NIDENT];
  ssize_t n;
  do
    n = pread(fd, ident, sizeof(ident), 0);
  while (n < 0 && errno == EINTR);
  close(fd);
  if (n < EI_CLASS + 1 || memcmp(ident, ELFMAG, SELFMAG) != 0)
    return (int)sizeof(void *);
  if (ident[EI_CLASS] == ELFCLASS32)
    return 4;
  if (ident[EI_CLASS] == ELFCLASS64)
    return 8;
  return (int)sizeof(void *);
}
