/* write: bytes into target memory through the debugger path. */
#include "cache.h"
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"
#include "target.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  uint32_t pid;
  uint64_t addr;
  char *data; /* Owned: a copy, since the frame's buffer is reused. */
  size_t len;
} write_job;

static int write_parse(dispatch_job *j, const msgpack_object *params) {
  write_job *w = j->priv;
  msg_write_req req;
  if (msg_write_req_parse(params, &req, &j->err) != 0)
    return -1;
  if (req.len > j->limits->max_write)
    return dispatch_fail(j, RMEM_ETOOBIG, "data of %zu bytes exceeds max_write %llu", req.len,
                         (unsigned long long)j->limits->max_write);
  if (dispatch_check_range(j, "write", req.addr, req.len) != 0)
    return -1;
  w->pid = req.pid;
  w->addr = req.addr;
  w->len = req.len;
  w->data = malloc(req.len ? req.len : 1);
  if (w->data == NULL)
    return dispatch_fail(j, RMEM_ENOMEM, "write: out of memory for %zu bytes", req.len);
  if (req.len)
    memcpy(w->data, req.data, req.len);
  j->cost = 64;
  return 0;
}

static void write_run(dispatch_job *j) {
  write_job *w = j->priv;
  rmem_ranges failed = {0};
  ssize_t n = target_write(w->pid, w->addr, w->data, w->len, &failed, &j->err);
  /* Even a failed write may have changed some bytes. */
  cache_invalidate(w->pid, w->addr, w->len);
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

static void write_cleanup(dispatch_job *j) {
  write_job *w = j->priv;
  free(w->data);
}

const dispatch_method method_write = {
    .name = "write",
    .priv_size = sizeof(write_job),
    .parse = write_parse,
    .run = write_run,
    .cleanup = write_cleanup,
};
