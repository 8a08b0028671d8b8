/* read: target memory straight into the reply frame, with the holes. Short
 * reads go through the page cache (cache.h): page by page, a usable cached
 * copy is taken, runs of the other pages are read from the target, and the
 * whole pages read cleanly are offered back to the cache.
 *
 * On a connection that agreed on lz4 in hello, data that compresses well
 * replaces the raw bytes with an lz4 block, here in the worker thread. */
#include "cache.h"
#include "compress.h"
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"
#include "target.h"

#include <stdlib.h>
#include <string.h>

/* Longer reads go straight to the target and are not cached: they are bulk
 * copies, which would only push everything else out of the cache. */
#define READ_CACHE_MAX (256u << 10)

typedef struct {
  msg_read_req req;
  int lz4; /* The connection's choice when the request arrived. */
} read_job;

static int read_parse(dispatch_job *j, const msgpack_object *params) {
  read_job *r = j->priv;
  if (msg_read_req_parse(params, &r->req, &j->err) != 0)
    return -1;
  if (r->req.len > j->limits->max_read)
    return dispatch_fail(j, RMEM_ETOOBIG, "len %llu exceeds max_read %llu",
                         (unsigned long long)r->req.len, (unsigned long long)j->limits->max_read);
  if (dispatch_check_range(j, "read", r->req.addr, r->req.len) != 0)
    return -1;
  j->cost = r->req.len;
  r->lz4 = j->session && j->session->lz4; /* In-process tests parse without one. */
  return 0;
}

/* One read through the cache. Offsets are from the request's start. */
typedef struct {
  uint32_t pid;
  uint64_t addr;
  char *dst; /* The request's `len` bytes in the reply. */
  uint64_t page;
  rmem_ranges *holes;
  rmem_ranges tmp; /* The holes of one page read on its own. */
  unsigned char *pagebuf;
  codec_err *err;
  cache_read cr;
  uint64_t got; /* Bytes read or served. */
  uint64_t cached;
} reader;

/* target_read, where nothing readable is not an error: its holes say why. */
static ssize_t read_target(reader *rd, uint64_t addr, void *buf, size_t n, rmem_ranges *holes) {
  ssize_t got = target_read(rd->pid, addr, buf, n, holes, rd->err);
  if (got == RMEM_EFAULT) {
    rd->err->code = 0;
    got = 0;
  }
  if (got == RMEM_ENOPROC && rd->got > 0)
    got = codec_fail(rd->err, RMEM_EEXITED, "pid %u exited during the read", rd->pid);
  return got;
}

/* Reads whole pages at offset `off` into the reply and offers those that
 * no hole touches to the cache. */
static int read_pages(reader *rd, uint64_t off, uint64_t n) {
  size_t h0 = rd->holes->n;
  ssize_t got = read_target(rd, rd->addr + off, rd->dst + off, (size_t)n, rd->holes);
  if (got < 0)
    return (int)got;
  rd->got += (uint64_t)got;
  /* A new hole may have joined the one before, so look from there. */
  size_t hi = h0 > 0 ? h0 - 1 : 0;
  for (uint64_t p = 0; p < n && got > 0; p += rd->page) {
    uint64_t a = rd->addr + off + p, last = a + (rd->page - 1);
    while (hi < rd->holes->n &&
           rd->holes->v[hi].addr + (rd->holes->v[hi].len - 1) < a) /* Ends before the page. */
      hi++;
    if (hi == rd->holes->n || rd->holes->v[hi].addr > last)
      cache_read_store(&rd->cr, a, rd->dst + off + p);
  }
  return 0;
}

/* Reads the `n` bytes at offset `in` of the page at `page` (request offset
 * `off`) by reading the whole page, so that it can be cached. */
static int read_part(reader *rd, uint64_t page, uint64_t in, uint64_t n, uint64_t off) {
  if (rd->pagebuf == NULL && (rd->pagebuf = malloc(rd->page)) == NULL) {
    /* Not worth failing the read for: read just the bytes asked for. */
    ssize_t got = read_target(rd, rd->addr + off, rd->dst + off, (size_t)n, rd->holes);
    if (got >= 0)
      rd->got += (uint64_t)got;
    return got < 0 ? (int)got : 0;
  }
  rd->tmp.n = 0;
  ssize_t got = read_target(rd, page, rd->pagebuf, rd->page, &rd->tmp);
  if (got < 0)
    return (int)got;
  memcpy(rd->dst + off, rd->pagebuf + in, n);
  /* The page's holes, cut to the bytes asked for. */
  uint64_t lo = page + in, hi = lo + (n - 1), bad = 0;
  for (size_t i = 0; i < rd->tmp.n; i++) {
    const rmem_range *h = &rd->tmp.v[i];
    uint64_t a = h->addr > lo ? h->addr : lo, e = h->addr + (h->len - 1);
    e = e < hi ? e : hi;
    if (a > e)
      continue;
    if (msg_ranges_add(rd->holes, a, e - a + 1, h->code) != 0)
      return codec_fail(rd->err, RMEM_ENOMEM, "read: out of memory");
    bad += e - a + 1;
  }
  rd->got += n - bad;
  if (rd->tmp.n == 0)
    cache_read_store(&rd->cr, page, rd->pagebuf);
  return 0;
}

/* Reads a run of request bytes that the cache could not serve: partial
 * pages at its ends on their own, the whole pages between in one go. */
static int read_run(reader *rd, uint64_t off, uint64_t n) {
  while (n > 0) {
    uint64_t a = rd->addr + off, page = a & ~(rd->page - 1), in = a - page, k;
    int rc;
    if (in != 0 || n < rd->page) {
      k = rd->page - in < n ? rd->page - in : n;
      rc = read_part(rd, page, in, k, off);
    } else {
      k = n - n % rd->page;
      rc = read_pages(rd, off, k);
    }
    if (rc < 0)
      return rc;
    off += k;
    n -= k;
  }
  return 0;
}

static ssize_t read_cached(const msg_read_req *q, char *dst, rmem_ranges *holes, uint64_t *cached,
                           codec_err *err) {
  reader rd = {.pid = q->pid,
               .addr = q->addr,
               .dst = dst,
               .page = cache_page_size(),
               .holes = holes,
               .err = err};
  cache_read_begin(&rd.cr, q->pid, q->max_age_ms, q->uncached);
  if (rd.cr.proc == NULL) {
    cache_read_end(&rd.cr);
    return target_read(q->pid, q->addr, dst, (size_t)q->len, holes, err);
  }
  uint64_t run = 0, nrun = 0;
  int rc = 0;
  for (uint64_t off = 0; off < q->len && rc == 0;) {
    uint64_t a = q->addr + off, page = a & ~(rd.page - 1), in = a - page;
    uint64_t n = rd.page - in < q->len - off ? rd.page - in : q->len - off;
    if (cache_read_lookup(&rd.cr, page, dst + off, in, n)) {
      rc = nrun ? read_run(&rd, run, nrun) : 0;
      nrun = 0;
      rd.cached += n;
      rd.got += n;
    } else {
      if (nrun == 0)
        run = off;
      nrun += n;
    }
    off += n;
  }
  if (rc == 0 && nrun)
    rc = read_run(&rd, run, nrun);
  cache_read_end(&rd.cr);
  free(rd.pagebuf);
  rmem_ranges_free(&rd.tmp);
  if (rc < 0)
    return rc;
  *cached = rd.cached;
  if (rd.got == 0 && q->len > 0)
    return target_nothing_done(holes, 0, q->pid, q->addr, q->len, "read", err);
  return (ssize_t)rd.got;
}

/* The reply in j->out holds a raw result up to its `len` data bytes at
 * `data_at`. When they compress well, rebuilds it as a compressed result
 * (head and block; the caller packs the tail either way). Anything going
 * wrong here just leaves the raw reply. */
static void read_compress(dispatch_job *j, size_t data_at, size_t len) {
  size_t cap = compress_lz4_bound(len);
  char *block = cap ? malloc(cap) : NULL;
  if (block == NULL)
    return;
  size_t n = compress_lz4(j->out.data + data_at, len, block, cap);
  if (n > 0) {
    /* The raw bytes are no longer needed, and the buffer has room for the block. */
    msgpack_packer pk;
    j->out.len = 0;
    codec_frame_begin(&j->out, &pk);
    msg_read_res_lz4_head(&pk, j->msgid, len, n);
    codec_buf_write(&j->out, block, n);
  }
  free(block);
}

static void read_run_job(dispatch_job *j) {
  read_job *r = j->priv;
  size_t len = (size_t)r->req.len;
  msgpack_packer pk;
  codec_frame_begin(&j->out, &pk);
  msg_read_res_head(&pk, j->msgid, len);
  /* Room for the data and a few holes, so the common case never reallocates. */
  if (codec_buf_reserve(&j->out, len + 256) != 0) {
    dispatch_fail(j, RMEM_ENOMEM, "read: out of memory for %zu bytes", len);
    return;
  }
  rmem_ranges holes = {0};
  uint64_t cached = 0;
  char *dst = j->out.data + j->out.len;
  ssize_t n = cache_enabled() && len > 0 && len <= READ_CACHE_MAX
                  ? read_cached(&r->req, dst, &holes, &cached, &j->err)
                  : target_read(r->req.pid, r->req.addr, dst, len, &holes, &j->err);
  if (n >= 0) {
    j->out.len += len;
    if (r->lz4 && len >= COMPRESS_MIN)
      read_compress(j, (size_t)(dst - j->out.data), len);
    msg_read_res_tail(&pk, holes.v, holes.n, cached);
  } else if (n == RMEM_EFAULT) {
    /* Nothing readable: the error carries the holes, so every byte has a reason. */
    j->out.len = 0;
    codec_frame_begin(&j->out, &pk);
    msg_fault_pack(&pk, j->msgid, j->err.msg, holes.v, holes.n);
    j->err.code = 0;
  }
  rmem_ranges_free(&holes);
}

const dispatch_method method_read = {
    .name = "read",
    .priv_size = sizeof(read_job),
    .parse = read_parse,
    .run = read_run_job,
};
