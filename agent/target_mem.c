/* Reading and writing target memory. Reads use process_vm_readv, which
 * respects page protection as ReadProcessMemory does; writes fall back to
 * /proc/PID/mem (the debugger path) for pages that are readable but not
 * writable. Where a transfer stops, the maps say why, so every hole carries
 * a reason. */
#include "target.h"

#include "msg.h"
#include "rmem_error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static uint64_t page_size(void) {
  static long ps;
  if (ps == 0)
    ps = sysconf(_SC_PAGESIZE);
  return (uint64_t)ps;
}

/* Classifies the address `at` that a transfer could not cross: how many of
 * the `left` bytes from there fail (*n) and why. Works in lengths, not end
 * addresses, so a range that ends exactly at 2^64 does not wrap. */
static void classify(const target_vmas *m, uint64_t at, uint64_t left, uint32_t need, uint64_t *n,
                     int *code) {
  size_t i = target_vmas_find(m, at);
  uint64_t span;
  if (i == m->n || m->v[i].start > at) {
    *code = RMEM_EUNMAPPED;
    span = i == m->n ? left : m->v[i].start - at;
  } else if ((m->v[i].prot & need) == 0) {
    *code = RMEM_EPROT;
    span = m->v[i].end - at;
  } else {
    /* Mapped and accessible, yet the page could not be brought in. */
    *code = RMEM_EIO;
    span = page_size() - (at & (page_size() - 1));
  }
  *n = span < left && span > 0 ? span : left;
}

/* The message when not one byte could be transferred. */
int target_nothing_done(const rmem_ranges *r, size_t first, uint32_t pid, uint64_t addr,
                        uint64_t len, const char *verb, codec_err *err) {
  int code = r->n > first ? r->v[first].code : RMEM_EUNMAPPED;
  return codec_fail(err, RMEM_EFAULT, "%s pid %u 0x%llx+0x%llx: %s", verb, pid,
                    (unsigned long long)addr, (unsigned long long)len, msg_hole_reason(code));
}

ssize_t target_read_with(uint32_t pid, uint64_t addr, void *buf, size_t len, rmem_ranges *holes,
                         target_vmas *maps, codec_err *err) {
  size_t first_hole = holes->n;
  uint64_t done = 0, got = 0;
  ssize_t rc = 0;
  while (done < len) {
    struct iovec local = {(char *)buf + done, len - done};
    struct iovec remote = {(void *)(uintptr_t)(addr + done), len - done};
    ssize_t n = process_vm_readv((pid_t)pid, &local, 1, &remote, 1, 0);
    if (n < 0 && errno != EFAULT) {
      int e = errno;
      if (e == ESRCH && done > 0)
        rc = codec_fail(err, RMEM_EEXITED, "pid %u exited during the read", pid);
      else
        rc = target__errno(e, pid, "read", err);
      goto exit;
    }
    if (n > 0) {
      done += (uint64_t)n;
      got += (uint64_t)n;
      continue;
    }
    /* Stopped at addr + done: find out how far the hole goes and why. */
    if (maps->text == NULL) {
      rc = target_vmas_load(pid, 0, maps, err);
      if (rc < 0)
        goto exit;
    }
    uint64_t at = addr + done, hole;
    int code;
    classify(maps, at, len - done, RMEM_PROT_R, &hole, &code);
    memset((char *)buf + done, 0, hole);
    if (msg_ranges_add(holes, at, hole, code) != 0) {
      rc = codec_fail(err, RMEM_ENOMEM, "read: out of memory");
      goto exit;
    }
    done += hole;
  }
  rc = (ssize_t)got;
  if (got == 0 && len > 0)
    rc = target_nothing_done(holes, first_hole, pid, addr, len, "read", err);
exit:
  return rc;
}

ssize_t target_read(uint32_t pid, uint64_t addr, void *buf, size_t len, rmem_ranges *holes,
                    codec_err *err) {
  target_vmas maps = {0};
  ssize_t rc = target_read_with(pid, addr, buf, len, holes, &maps, err);
  target_vmas_free(&maps);
  return rc;
}

/* Where the bytes of a write come from: `buf` holds them all, or (period >
 * 0) a pattern of `period` bytes repeated, so that byte `off` of the write
 * is buf[off % period] and up to `cap` bytes can be taken from there. */
typedef struct {
  const char *buf;
  size_t period;
  size_t cap;
} write_src;

/* The bytes from offset `off` on; trims *n to what is available there. */
static const char *src_at(const write_src *s, uint64_t off, uint64_t *n) {
  if (s->period == 0)
    return s->buf + off;
  if (*n > s->cap)
    *n = s->cap;
  return s->buf + off % s->period;
}

static ssize_t write_from(uint32_t pid, uint64_t addr, uint64_t len, const write_src *src,
                          rmem_ranges *failed, const char *verb, codec_err *err) {
  target_vmas m = {0};
  int have_maps = 0, memfd = -1;
  size_t first = failed->n;
  uint64_t done = 0, put = 0;
  ssize_t rc = 0;
  while (done < len) {
    uint64_t avail = len - done;
    const char *p = src_at(src, done, &avail);
    struct iovec local = {(void *)p, avail};
    struct iovec remote = {(void *)(uintptr_t)(addr + done), avail};
    ssize_t n = process_vm_writev((pid_t)pid, &local, 1, &remote, 1, 0);
    if (n < 0 && errno != EFAULT) {
      int e = errno;
      if (e == ESRCH && done > 0)
        rc = codec_fail(err, RMEM_EEXITED, "pid %u exited during the %s", pid, verb);
      else
        rc = target__errno(e, pid, verb, err);
      goto exit;
    }
    if (n > 0) {
      done += (uint64_t)n;
      put += (uint64_t)n;
      continue;
    }
    if (!have_maps) {
      rc = target_vmas_load(pid, 0, &m, err);
      if (rc < 0)
        goto exit;
      have_maps = 1;
    }
    uint64_t at = addr + done, hole;
    int code;
    /* Pages that are at least readable or executable take the debugger path;
     * pages with no access at all (guards, reservations) are left alone. */
    classify(&m, at, len - done, RMEM_PROT_R | RMEM_PROT_W | RMEM_PROT_X, &hole, &code);
    if (code == RMEM_EIO) {
      size_t i = target_vmas_find(&m, at);
      uint64_t vleft = m.v[i].end - at < avail ? m.v[i].end - at : avail;
      if (memfd < 0) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%u/mem", pid);
        memfd = open(path, O_RDWR | O_CLOEXEC);
      }
      ssize_t w = memfd >= 0 && at <= INT64_MAX ? pwrite(memfd, p, vleft, (off_t)at) : -1;
      if (w > 0) {
        done += (uint64_t)w;
        put += (uint64_t)w;
        continue;
      }
    }
    if (msg_ranges_add(failed, at, hole, code) != 0) {
      rc = codec_fail(err, RMEM_ENOMEM, "%s: out of memory", verb);
      goto exit;
    }
    done += hole;
  }
  rc = (ssize_t)put;
  if (put == 0 && len > 0)
    rc = target_nothing_done(failed, first, pid, addr, len, verb, err);
exit:
  if (memfd >= 0)
    close(memfd);
  target_vmas_free(&m);
  return rc;
}

ssize_t target_write(uint32_t pid, uint64_t addr, const void *buf, size_t len, rmem_ranges *failed,
                     codec_err *err) {
  write_src src = {.buf = buf};
  return write_from(pid, addr, len, &src, failed, "write", err);
}

/* Bytes of pattern handed to the kernel per system call. */
#define FILL_CHUNK (256u << 10)

ssize_t target_fill(uint32_t pid, uint64_t addr, uint64_t len, const void *pattern, size_t plen,
                    rmem_ranges *failed, codec_err *err) {
  if (plen == 0 || plen > FILL_CHUNK)
    return codec_fail(err, RMEM_EPARAM, "fill: pattern of %zu bytes", plen);
  /* Whole repetitions, plus one more so that any phase has `cap` bytes. */
  size_t cap = FILL_CHUNK / plen * plen;
  if (len < cap)
    cap = (size_t)len;
  char *buf = malloc(cap + plen);
  if (buf == NULL)
    return codec_fail(err, RMEM_ENOMEM, "fill: out of memory");
  for (size_t i = 0; i < cap + plen; i++)
    buf[i] = ((const char *)pattern)[i % plen];
  write_src src = {.buf = buf, .period = plen, .cap = cap ? cap : 1};
  ssize_t rc = write_from(pid, addr, len, &src, failed, "fill", err);
  free(buf);
  return rc;
}
