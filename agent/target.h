/* The target backend: the only code that touches another process. Every
 * function here blocks on /proc or on the target's memory, so it runs only in
 * worker threads, never on the loop thread.
 *
 * Functions return 0 (or a byte count) or a negative RMEM_E* code with a
 * message in `err`. Results are owned by the caller. */
#ifndef RMEM_TARGET_H
#define RMEM_TARGET_H

#include "codec.h"
#include "rmem.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One line of /proc/PID/maps, as parsed. `path` points into the buffer that
 * the maps list owns. */
typedef struct {
  uint64_t start, end, offset, inode;
  uint32_t dev_major, dev_minor;
  uint32_t prot;
  int shared;
  const char *path; /* NUL-terminated; "" for anonymous memory. */
  int has_smaps;
  rmem_smaps smaps;
} target_vma;

typedef struct {
  target_vma *v;
  size_t n;
  char *text; /* The file's bytes; paths point here. */
} target_vmas;

/* Reads /proc/PID/maps (or /proc/PID/smaps when `smaps`) in one pass. */
int target_vmas_load(uint32_t pid, int smaps, target_vmas *out, codec_err *err);
void target_vmas_free(target_vmas *m);
/* Index of the first vma with end > addr, or m->n. */
size_t target_vmas_find(const target_vmas *m, uint64_t addr);

/* The annotated memory map (the `map` method). `start` skips regions below
 * it. Fills `out` (regions' paths are malloc'd; free with rmem_memmap_free). */
int target_map(uint32_t pid, unsigned flags, uint64_t start, rmem_memmap *out, codec_err *err);

/* The process list (the `ps` method). */
int target_ps(rmem_proc_list *out, codec_err *err);

/* Reads target memory respecting page protection. Unreadable ranges are
 * zero-filled and appended to `holes`. Returns bytes read, or a negative code
 * (RMEM_EFAULT when nothing was readable). */
ssize_t target_read(uint32_t pid, uint64_t addr, void *buf, size_t len, rmem_ranges *holes,
                    codec_err *err);
/* target_read for requests that read many ranges: `maps` keeps the parsed
 * /proc/PID/maps between calls, loaded at the first hole only. Zero it
 * before the first call and free it with target_vmas_free after the last. */
ssize_t target_read_with(uint32_t pid, uint64_t addr, void *buf, size_t len, rmem_ranges *holes,
                         target_vmas *maps, codec_err *err);

/* Writes target memory through the debugger path for read-only pages; pages
 * with no access at all are not written. Failed ranges go to `failed`. */
ssize_t target_write(uint32_t pid, uint64_t addr, const void *buf, size_t len, rmem_ranges *failed,
                     codec_err *err);

/* Writes the `plen` bytes of `pattern` repeated over `len` bytes at `addr`
 * (pattern byte i % plen goes to addr + i), as target_write writes, in
 * chunks: nothing of size `len` is allocated. */
ssize_t target_fill(uint32_t pid, uint64_t addr, uint64_t len, const void *pattern, size_t plen,
                    rmem_ranges *failed, codec_err *err);

/* The target's pointer size in bytes (4 or 8), from its executable's ELF
 * class; the agent's own when the executable cannot be read as ELF. */
int target_ptr_size(uint32_t pid, codec_err *err);

/* A handle on one process that survives pid reuse, for the page cache: a
 * pidfd (close-on-exec, the caller closes it) and the start time (clock
 * ticks after boot, /proc/PID/stat field 22). A thread id that is not a
 * process id fails with RMEM_EPARAM. */
int target_pidfd_open(uint32_t pid, int *fd, uint64_t *start_time, codec_err *err);
/* 1 once the process behind `fd` has exited (even if not yet reaped), else
 * 0. Never blocks. */
int target_pidfd_exited(int fd);
/* The process (thread group) that thread `pid` belongs to, or 0 when unknown. */
uint32_t target_tgid(uint32_t pid);

/* The RMEM_EFAULT for a transfer that moved not one byte: says where, and
 * why from the first of its ranges in `r` (index `first` on). */
int target_nothing_done(const rmem_ranges *r, size_t first, uint32_t pid, uint64_t addr,
                        uint64_t len, const char *verb, codec_err *err);

/* Internal to the target module. */
int target__read_file(const char *path, char **buf, size_t *len);
int target__errno(int e, uint32_t pid, const char *what, codec_err *err);

#endif
