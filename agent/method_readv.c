/* readv: many ranges in one request, each answered as `read` answers it,
 * target memory straight into the reply frame. */
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"
#include "target.h"

#include <stdlib.h>

/* Reply bytes per result besides its data: map, keys, bin and array headers. */
#define READV_ENTRY_OVERHEAD 32

typedef struct {
  msg_readv_req req; /* Owns the ranges: the frame's buffer is reused. */
  uint64_t total;
} readv_job;

static int readv_parse(dispatch_job *j, const msgpack_object *params) {
  readv_job *r = j->priv;
  if (msg_readv_req_parse(params, &r->req, &j->err) != 0)
    return -1;
  uint64_t total = 0;
  for (size_t i = 0; i < r->req.n; i++) {
    const msg_span *s = &r->req.ranges[i];
    /* A range may end exactly at 2^64; only one that goes past it wraps. */
    if (s->len && s->addr + (s->len - 1) < s->addr)
      return dispatch_fail(j, RMEM_EPARAM, "range %zu: addr 0x%llx + len 0x%llx wraps around", i,
                           (unsigned long long)s->addr, (unsigned long long)s->len);
    /* Each len is checked first, so the sum of at most 4096 of them cannot wrap. */
    if (s->len > j->limits->max_read)
      return dispatch_fail(j, RMEM_ETOOBIG, "range %zu: len %llu exceeds max_read %llu", i,
                           (unsigned long long)s->len, (unsigned long long)j->limits->max_read);
    total += s->len;
    if (total > j->limits->max_read)
      return dispatch_fail(j, RMEM_ETOOBIG, "ranges of %llu bytes and more exceed max_read %llu",
                           (unsigned long long)total, (unsigned long long)j->limits->max_read);
  }
  r->total = total;
  j->cost = total + r->req.n * READV_ENTRY_OVERHEAD;
  return 0;
}

static void readv_run(dispatch_job *j) {
  readv_job *r = j->priv;
  msgpack_packer pk;
  codec_frame_begin(&j->out, &pk);
  msg_readv_res_head(&pk, j->msgid, r->req.n);
  /* Room for all data and a hole per range, so the common case never reallocates. */
  if (codec_buf_reserve(&j->out, r->total + r->req.n * (READV_ENTRY_OVERHEAD + 40) + 256) != 0) {
    dispatch_fail(j, RMEM_ENOMEM, "readv: out of memory for %llu bytes",
                  (unsigned long long)r->total);
    return;
  }
  rmem_ranges holes = {0};
  /* Parsed once for the whole request, at the first hole: 4096 ranges over
   * a 20,000-region map must not parse it 4096 times. */
  target_vmas maps = {0};
  for (size_t i = 0; i < r->req.n; i++) {
    const msg_span *s = &r->req.ranges[i];
    size_t len = (size_t)s->len;
    msg_readv_entry_head(&pk, len);
    if (codec_buf_reserve(&j->out, len) != 0) {
      dispatch_fail(j, RMEM_ENOMEM, "readv: out of memory for %zu bytes", len);
      break;
    }
    holes.n = 0;
    ssize_t n = target_read_with(r->req.pid, s->addr, j->out.data + j->out.len, len, &holes, &maps,
                                 &j->err);
    /* Nothing readable in one range is that range's answer, not the request's. */
    if (n == RMEM_EFAULT)
      j->err.code = 0;
    else if (n < 0)
      break;
    j->out.len += len;
    msg_readv_entry_tail(&pk, holes.v, holes.n);
  }
  target_vmas_free(&maps);
  rmem_ranges_free(&holes);
}

static void readv_cleanup(dispatch_job *j) {
  readv_job *r = j->priv;
  msg_readv_req_free(&r->req);
}

const dispatch_method method_readv = {
    .name = "readv",
    .priv_size = sizeof(readv_job),
    .parse = readv_parse,
    .run = readv_run,
    .cleanup = readv_cleanup,
};
