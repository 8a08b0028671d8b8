/* ps: the processes on the target box, in pid order, whole in one reply
 * unless it would not fit a frame (then `next` says where to continue). */
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"
#include "target.h"

typedef struct {
  uint32_t start;
} ps_job;

static int ps_parse(dispatch_job *j, const msgpack_object *params) {
  ps_job *p = j->priv;
  return msg_ps_req_parse(params, &p->start, &j->err);
}

/* Room kept in a frame for everything but the processes. */
#define PS_REPLY_SLACK 64

static void ps_run(dispatch_job *j) {
  ps_job *p = j->priv;
  rmem_proc_list l;
  if (target_ps(&l, &j->err) != 0)
    return;
  size_t first = 0;
  while (first < l.n && l.procs[first].pid < p->start)
    first++;
  /* Pack processes into a scratch buffer until the frame is full, then
   * build the reply around the ones that fit. */
  codec_buf procs;
  codec_buf_init(&procs);
  msgpack_packer ppk;
  msgpack_packer_init(&ppk, &procs, codec_buf_write);
  size_t fit = first;
  for (; fit < l.n && !procs.oom; fit++) {
    size_t before = procs.len;
    msg_proc_pack(&ppk, &l.procs[fit]);
    if (procs.len > j->limits->max_frame - PS_REPLY_SLACK) {
      procs.len = before;
      break;
    }
  }
  if (procs.oom) {
    dispatch_fail(j, RMEM_ENOMEM, "ps: out of memory packing %zu processes", l.n);
  } else {
    int more = fit < l.n;
    msgpack_packer pk;
    codec_frame_begin(&j->out, &pk);
    msg_ps_res_head(&pk, j->msgid, fit - first, more);
    codec_buf_write(&j->out, procs.data, procs.len);
    msg_ps_res_tail(&pk, more, more ? l.procs[fit].pid : 0);
  }
  codec_buf_free(&procs);
  rmem_proc_list_free(&l);
}

const dispatch_method method_ps = {
    .name = "ps",
    .priv_size = sizeof(ps_job),
    .parse = ps_parse,
    .run = ps_run,
};
