/* ps: the processes on the target box. */
#include "methods.h"
#include "msg.h"
#include "target.h"

static int ps_parse(dispatch_job *j, const msgpack_object *params) {
  return 0;
}

static void ps_run(dispatch_job *j) {
  rmem_proc_list l;
  if (target_ps(&l, &j->err) != 0)
    return;
  msgpack_packer pk;
  codec_frame_begin(&j->out, &pk);
  msg_ps_res_pack(&pk, j->msgid, l.procs, l.n);
  rmem_proc_list_free(&l);
}

const dispatch_method method_ps = {
    .name = "ps",
    .parse = ps_parse,
    .run = ps_run,
};
