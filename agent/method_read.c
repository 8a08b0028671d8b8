/* read: target memory straight into the reply frame, with the holes. */
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"
#include "target.h"

#include <stdlib.h>

typedef struct {
  msg_read_req req;
} read_job;

static int read_parse(dispatch_job *j, const msgpack_object *params) {
  read_job *r = j->priv;
  if (msg_read_req_parse(params, &r->req, &j->err) != 0)
    return -1;
  if (r->req.pid == 0)
    return dispatch_fail(j, RMEM_EPARAM, "parameter 'pid' must not be 0");
  if (r->req.len > j->limits->max_read)
    return dispatch_fail(j, RMEM_ETOOBIG, "len %llu exceeds max_read %llu",
                         (unsigned long long)r->req.len, (unsigned long long)j->limits->max_read);
  /* A range may end exactly at 2^64; only one that goes past it wraps. */
  if (r->req.len && r->req.addr + (r->req.len - 1) < r->req.addr)
    return dispatch_fail(j, RMEM_EPARAM, "addr 0x%llx + len 0x%llx wraps around",
                         (unsigned long long)r->req.addr, (unsigned long long)r->req.len);
  j->cost = r->req.len;
  return 0;
}

static void read_run(dispatch_job *j) {
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
  ssize_t n = target_read(r->req.pid, r->req.addr, j->out.data + j->out.len, len, &holes, &j->err);
  if (n >= 0) {
    j->out.len += len;
    msg_read_res_tail(&pk, holes.v, holes.n);
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
    .run = read_run,
};
