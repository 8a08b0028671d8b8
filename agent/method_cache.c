/* cache: the page cache's figures, after an optional flush. Runs in a
 * worker: a flush of a big cache frees many pages. */
#include "cache.h"
#include "methods.h"
#include "msg.h"

typedef struct {
  msg_cache_req req;
} cache_job;

static int cache_parse(dispatch_job *j, const msgpack_object *params) {
  cache_job *c = j->priv;
  if (msg_cache_req_parse(params, &c->req, &j->err) != 0)
    return -1;
  j->cost = 256;
  return 0;
}

static void cache_run(dispatch_job *j) {
  cache_job *c = j->priv;
  if (c->req.flush)
    cache_flush(c->req.pid);
  rmem_cache_info info;
  cache_get_stats(&info);
  msgpack_packer pk;
  codec_frame_begin(&j->out, &pk);
  msg_cache_res_pack(&pk, j->msgid, &info);
}

const dispatch_method method_cache = {
    .name = "cache",
    .priv_size = sizeof(cache_job),
    .parse = cache_parse,
    .run = cache_run,
};
