/* fill: a byte pattern repeated over a range (WinDbg's FillVirtual), written
 * as `write` writes, without the bytes crossing the link. */
#include "cache.h"
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"
#include "target.h"

#include <string.h>

typedef struct {
  uint32_t pid;
  uint64_t addr, len;
  size_t plen;
  char pattern[RMEM_FILL_MAX_PATTERN]; /* A copy: the frame's buffer is reused. */
} fill_job;

static int fill_parse(dispatch_job *j, const msgpack_object *params) {
  fill_job *f = j->priv;
  msg_fill_req req;
  if (msg_fill_req_parse(params, &req, &j->err) != 0)
    return -1;
  if (req.plen == 0)
    return dispatch_fail(j, RMEM_EPARAM, "parameter 'pattern' must not be empty");
  if (req.plen > RMEM_FILL_MAX_PATTERN)
    return dispatch_fail(j, RMEM_ETOOBIG, "pattern of %zu bytes exceeds the limit of %d", req.plen,
                         RMEM_FILL_MAX_PATTERN);
  if (req.len > RMEM_FILL_MAX)
    return dispatch_fail(j, RMEM_ETOOBIG, "len %llu exceeds the limit of %llu",
                         (unsigned long long)req.len, (unsigned long long)RMEM_FILL_MAX);
  if (dispatch_check_range(j, "fill", req.addr, req.len) != 0)
    return -1;
  f->pid = req.pid;
  f->addr = req.addr;
  f->len = req.len;
  f->plen = req.plen;
  memcpy(f->pattern, req.pattern, req.plen);
  j->cost = 64;
  return 0;
}

static void fill_run(dispatch_job *j) {
  fill_job *f = j->priv;
  rmem_ranges failed = {0};
  ssize_t n = target_fill(f->pid, f->addr, f->len, f->pattern, f->plen, &failed, &j->err);
  /* Even a failed fill may have changed some bytes. */
  cache_invalidate(f->pid, f->addr, f->len);
  msgpack_packer pk;
  if (n >= 0) {
    codec_frame_begin(&j->out, &pk);
    msg_write_res_pack(&pk, j->msgid, (uint64_t)n, failed.v, failed.n);
  } else if (n == RMEM_EFAULT) {
    /* Nothing written: the error carries the failed ranges and their reasons. */
    codec_frame_begin(&j->out, &pk);
    msg_fault_pack(&pk, j->msgid, j->err.msg, failed.v, failed.n);
    j->err.code = 0;
  }
  rmem_ranges_free(&failed);
}

const dispatch_method method_fill = {
    .name = "fill",
    .priv_size = sizeof(fill_job),
    .parse = fill_parse,
    .run = fill_run,
};
