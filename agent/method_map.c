/* map: the annotated memory map of a process, whole in one reply unless it
 * would not fit a frame (then `next` says where to continue). */
#include "methods.h"
#include "msg.h"
#include "rmem_error.h"
#include "target.h"

#include <string.h>

typedef struct {
  msg_map_req req;
} map_job;

static int map_parse(dispatch_job *j, const msgpack_object *params) {
  map_job *m = j->priv;
  return msg_map_req_parse(params, &m->req, &j->err);
}

/* Room kept in a frame for everything but the regions. */
#define MAP_REPLY_SLACK 256

static void map_run(dispatch_job *j) {
  map_job *m = j->priv;
  unsigned flags = (m->req.free ? RMEM_MAP_FREE : 0) | (m->req.detail ? RMEM_MAP_DETAIL : 0);
  rmem_memmap map;
  if (target_map(m->req.pid, flags, m->req.start, &map, &j->err) != 0)
    return;
  /* Pack regions one by one into a scratch buffer, stopping before the frame
   * limit, then build the reply around the ones that fit. */
  codec_buf regions;
  codec_buf_init(&regions);
  msgpack_packer rpk;
  msgpack_packer_init(&rpk, &regions, codec_buf_write);
  size_t fit = 0;
  uint64_t budget = j->limits->max_frame - MAP_REPLY_SLACK;
  for (; fit < map.n; fit++) {
    size_t before = regions.len;
    msg_region_pack(&rpk, &map.regions[fit]);
    if (regions.oom)
      break;
    if (regions.len > budget) {
      regions.len = before;
      break;
    }
  }
  if (regions.oom) {
    dispatch_fail(j, RMEM_ENOMEM, "map: out of memory packing %zu regions", map.n);
  } else if (fit == 0 && map.n > 0) {
    dispatch_fail(j, RMEM_ETOOBIG, "map: one region does not fit max_frame");
  } else {
    msgpack_packer pk;
    int more = fit < map.n;
    codec_frame_begin(&j->out, &pk);
    msg_map_res_head(&pk, j->msgid, m->req.pid, fit, more);
    codec_buf_write(&j->out, regions.data, regions.len);
    msg_map_res_tail(&pk, more, more ? map.regions[fit].base : 0);
  }
  codec_buf_free(&regions);
  rmem_memmap_free(&map);
}

const dispatch_method method_map = {
    .name = "map",
    .priv_size = sizeof(map_job),
    .parse = map_parse,
    .run = map_run,
};
